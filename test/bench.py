"""Speed: clip.c against PyTorch and OpenBLAS on the same machine, the same threads, the same weights.

    make bench                      (or: /usr/bin/python3 test/bench.py [--threads 2] [--rounds 2])

1. Makes (once, cached in test/out/) a full-size ViT-B/32 model with random weights:
   python3 convert.py --synthetic ViT-B/32 -o test/out/synthetic-b32.bin
2. `clip bench -m MODEL --json`: image (batch 1 and 16), text (7 and 77 tokens, 10 prompts),
   load time to the first text embedding, peak RSS.
3. The same forward pass in PyTorch (float32, torch.set_num_threads), on the model file's tensors:
   Hugging Face's CLIPModel written out (pre-norm layers, quick_gelu, eager attention).
4. The same towers in ONNX Runtime: exported once (torch.onnx.export, cached in test/out/) and run by
   test/bench_ort.js with onnxruntime-node on the CPU, the same number of intra-op threads
   (install: cd test && npm install --ignore-scripts onnxruntime-node; without it, that column is skipped).
5. The matrix product on CLIP's shapes: `clip bench MxKxN ...` against numpy's float32 matmul
   (OpenBLAS sgemm), both with the same number of threads.
Each side runs `--rounds` times, alternating, and keeps its best time: the machine may be shared.
PyTorch and NumPy run in child processes with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from
the environment (so that OpenBLAS picks its own kernels) and OPENBLAS_NUM_THREADS set.
Nothing is installed: a missing torch or numpy skips its column and says what to install.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "test", "out")
CLIP = os.environ.get("CLIP_BIN", os.path.join(ROOT, "clip"))
MODEL = os.path.join(OUT, "synthetic-b32.bin")
INSTALL = "apt-get install python3-torch python3-numpy libopenblas0-pthread"

# (name, M, K, N): CLIP ViT-B/32's matrix products. Vision: 50 tokens per image (49 patches + class),
# 800 rows for a batch of 16; text: 7 tokens (a short prompt), 77 (the full context).
GEMM_SHAPES = [("vision qkv/out", 50, 768, 768), ("vision fc1", 50, 768, 3072), ("vision fc2", 50, 3072, 768),
               ("patch embedding", 49, 3072, 768),
               ("vision qkv/out x16", 800, 768, 768), ("vision fc1 x16", 800, 768, 3072),
               ("vision fc2 x16", 800, 3072, 768), ("patch x16", 784, 3072, 768),
               ("text qkv/out", 7, 512, 512), ("text fc1", 7, 512, 2048), ("text fc2", 7, 2048, 512),
               ("text qkv/out 77", 77, 512, 512), ("text fc1 77", 77, 512, 2048), ("text fc2 77", 77, 2048, 512)]


def child_env(threads):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_json(args, env=None):
    p = subprocess.run(args, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (" ".join(args), p.returncode, p.stderr.strip()))
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# Child process: PyTorch forward pass (python3 test/bench.py --torch-child MODEL THREADS LENS)
# ---------------------------------------------------------------------------

def torch_towers(model):
    """(cfg, image, text): the two towers as functions of pixel values [b, 3, S, S] and ids [b, n]
    (with an optional padding mask [b, n] for a padded batch)"""
    import numpy as np
    import torch
    import torch.nn.functional as F

    # the model file as test/reference.py reads it, but kept in float32
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import reference
    cfg, T = reference.load(model, np.float32)
    T = {name: torch.from_numpy(np.ascontiguousarray(t)) for name, t in T.items()}

    def act(x, kind):
        return x * torch.sigmoid(1.702 * x) if kind == 0 else F.gelu(x)

    def encoder(x, prefix, layers, heads, kind, eps, mask):
        b, n = x.shape[0], x.shape[1]
        d = T[prefix + ".encoder.layers.0.layer_norm1.weight"].shape[0]   # a Python int (also when traced)
        hd = d // heads
        for l in range(layers):
            p = "%s.encoder.layers.%d." % (prefix, l)
            lin = lambda h, name: F.linear(h, T[p + name + ".weight"], T[p + name + ".bias"])
            h = F.layer_norm(x, (d,), T[p + "layer_norm1.weight"], T[p + "layer_norm1.bias"], eps)
            split = lambda t: t.view(b, n, heads, hd).transpose(1, 2)
            q = split(lin(h, "self_attn.q_proj") * hd ** -0.5)
            k, v = split(lin(h, "self_attn.k_proj")), split(lin(h, "self_attn.v_proj"))
            w = q @ k.transpose(-1, -2)
            if mask is not None:
                w = w + mask
            o = (torch.softmax(w, dim=-1) @ v).transpose(1, 2).reshape(b, n, d)
            x = x + lin(o, "self_attn.out_proj")
            h = F.layer_norm(x, (d,), T[p + "layer_norm2.weight"], T[p + "layer_norm2.bias"], eps)
            x = x + lin(act(lin(h, "mlp.fc1"), kind), "mlp.fc2")
        return x

    def image(px):
        b, p = px.shape[0], cfg["patch"]
        x = F.conv2d(px, T["vision_model.embeddings.patch_embedding.weight"], stride=p).flatten(2).transpose(1, 2)
        cls = T["vision_model.embeddings.class_embedding"].expand(b, 1, -1)
        x = torch.cat([cls, x], 1) + T["vision_model.embeddings.position_embedding.weight"]
        d = T["vision_model.pre_layrnorm.weight"].shape[0]
        x = F.layer_norm(x, (d,), T["vision_model.pre_layrnorm.weight"], T["vision_model.pre_layrnorm.bias"], cfg["v_eps"])
        x = encoder(x, "vision_model", cfg["v_layers"], cfg["v_heads"], cfg["v_act"], cfg["v_eps"], None)
        pooled = F.layer_norm(x[:, 0], (d,), T["vision_model.post_layernorm.weight"], T["vision_model.post_layernorm.bias"], cfg["v_eps"])
        return pooled @ T["visual_projection.weight"].T

    def text(ids, mask_pad=None):
        b, n = ids.shape[0], ids.shape[1]
        x = T["text_model.embeddings.token_embedding.weight"][ids] + T["text_model.embeddings.position_embedding.weight"][:n]
        mask = torch.full((n, n), float("-inf")).triu(1)[None, None]
        if mask_pad is not None:   # padded batch: keys past each text's length are masked too
            mask = mask + torch.where(mask_pad[:, None, None, :], 0.0, float("-inf"))
        d = T["text_model.final_layer_norm.weight"].shape[0]
        x = encoder(x, "text_model", cfg["t_layers"], cfg["t_heads"], cfg["t_act"], cfg["t_eps"], mask)
        x = F.layer_norm(x, (d,), T["text_model.final_layer_norm.weight"], T["text_model.final_layer_norm.bias"], cfg["t_eps"])
        pooled = x[torch.arange(b), ids.argmax(-1)]
        return pooled @ T["text_projection.weight"].T

    return cfg, image, text


def torch_child(model, threads, lens):
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    cfg, image, text = torch_towers(model)
    g = torch.Generator().manual_seed(0)
    S = cfg["size"]
    px1, px16 = torch.rand(1, 3, S, S, generator=g) * 4 - 2, torch.rand(16, 3, S, S, generator=g) * 4 - 2

    def ids_of(n):
        ids = torch.arange(n, dtype=torch.long)[None] * 7 % 49000 + 320
        ids[0, -1] = 49407
        return ids

    ids7, ids77 = ids_of(7), ids_of(77)
    nmax = max(lens)
    batch = torch.zeros(len(lens), nmax, dtype=torch.long)
    pad = torch.zeros(len(lens), nmax, dtype=torch.bool)
    for i, n in enumerate(lens):
        batch[i, :n] = ids_of(n)[0]
        pad[i, :n] = True
    singles = [ids_of(n) for n in lens]
    runs = [("image", lambda: image(px1)), ("image, batch of 16", lambda: image(px16)),
            ("text, 7 tokens", lambda: text(ids7)), ("text, 77 tokens", lambda: text(ids77)),
            ("10 texts (prompts)", lambda: [text(ids) for ids in singles]),   # one call each, as clip.c
            ("10 texts, one padded batch", lambda: text(batch, pad))]
    best = {name: 1e30 for name, _ in runs}
    cpu = dict(best)
    start = time.perf_counter()
    with torch.inference_mode():
        # the same inputs for clip.c, to check that both sides compute the same thing
        np.save(os.path.join(OUT, "bench_px.npy"), px1.numpy())
        np.save(os.path.join(OUT, "bench_torch_img.npy"), image(px1).numpy())
        np.save(os.path.join(OUT, "bench_torch_text.npy"), text(ids7).numpy())
        for fn in runs:   # warm up
            fn[1]()
        for rnd in range(50):
            for name, fn in runs:
                t, c = time.perf_counter(), time.process_time()
                fn()
                best[name] = min(best[name], time.perf_counter() - t)
                cpu[name] = min(cpu[name], time.process_time() - c)
            if rnd >= 2 and time.perf_counter() - start > 10:
                break
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "ids7": ids7[0].tolist(),
                      "runs": [{"name": k, "ms": v * 1e3, "cpu_ms": cpu[k] * 1e3} for k, v in best.items()]}))


# ---------------------------------------------------------------------------
# Child process: the same towers as ONNX files for ONNX Runtime
# (python3 test/bench.py --onnx-export MODEL IMAGE.onnx TEXT.onnx)
# ---------------------------------------------------------------------------

def onnx_export(model, image_path, text_path):
    """torch.onnx.export of torch_towers' functions (no onnx package needed): the weights become
    the graphs' initializers, float32 as in the model file; batch and sequence length are dynamic"""
    import torch

    cfg, image, text = torch_towers(model)

    class Tower(torch.nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)

    S = cfg["size"]
    ids = torch.arange(7, dtype=torch.long)[None] + 320
    ids[0, -1] = 49407
    for fn, x, name, axes, path in ((image, torch.zeros(1, 3, S, S), "pixel_values", {0: "batch"}, image_path),
                                    (text, ids, "input_ids", {0: "batch", 1: "sequence"}, text_path)):
        tmp = path + ".tmp"
        with torch.no_grad():
            torch.onnx.export(Tower(fn), (x,), tmp, input_names=[name], output_names=["embeds"],
                              dynamic_axes={name: axes, "embeds": {0: "batch"}}, opset_version=17,
                              do_constant_folding=True)
        os.replace(tmp, path)
    print(json.dumps({"torch": torch.__version__, "image": image_path, "text": text_path}))


# ---------------------------------------------------------------------------
# Child process: OpenBLAS sgemm through numpy (python3 test/bench.py --numpy-child THREADS)
# ---------------------------------------------------------------------------

def numpy_child(threads):
    import numpy as np
    rng = np.random.default_rng(7)
    data = []
    for _, m, k, n in GEMM_SHAPES:
        a = rng.random((m, k), dtype=np.float32) - 0.5
        b = rng.random((n, k), dtype=np.float32) * 0.1 - 0.05   # a Linear weight [out, in]
        data.append((a, b, np.empty((m, n), np.float32)))
    best = [1e30] * len(data)
    start = time.perf_counter()
    for rnd in range(1000):
        for i, (a, b, c) in enumerate(data):
            np.matmul(a, b.T, out=c)
            for _ in range(3):
                t = time.perf_counter()
                np.matmul(a, b.T, out=c)
                best[i] = min(best[i], time.perf_counter() - t)
        if rnd >= 2 and time.perf_counter() - start > 4:
            break
    blas = ""
    try:
        info = np.show_config(mode="dicts") if "mode" in np.show_config.__code__.co_varnames else None
        blas = info["Build Dependencies"]["blas"]["name"] if info else ""
    except Exception:
        pass
    print(json.dumps({"numpy": np.__version__, "blas": blas or "numpy's BLAS",
                      "gemm": [{"m": m, "k": k, "n": n, "ms": t * 1e3} for (_, m, k, n), t in zip(GEMM_SHAPES, best)]}))


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------

def have(module):
    p = subprocess.run([sys.executable, "-c", "import " + module], capture_output=True)
    return p.returncode == 0


def fmt(v, spec):
    return format(v, spec) if v is not None else "-"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2,
                    help="threads for every side (default 2); with 1, processor times are compared too, "
                         "which hold on a busy machine")
    ap.add_argument("--rounds", type=int, default=2, help="alternating runs of each side; best kept (default 2)")
    ap.add_argument("--model", default=MODEL, help="model file (default: the synthetic ViT-B/32, made if missing)")
    ap.add_argument("--wait-policy", choices=["active", "passive"],
                    help="OMP_WAIT_POLICY for every side (on a machine shared with other work, passive "
                         "keeps idle threads from spinning on the cores the others need); passive also "
                         "turns ONNX Runtime's spinning off (session.intra_op.allow_spinning=0)")
    ap.add_argument("--torch-child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--numpy-child", help=argparse.SUPPRESS)
    ap.add_argument("--onnx-export", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.onnx_export:
        return onnx_export(*a.onnx_export)
    if a.torch_child:
        return torch_child(a.torch_child[0], int(a.torch_child[1]), [int(x) for x in a.torch_child[2].split(",")])
    if a.numpy_child:
        return numpy_child(int(a.numpy_child))

    if not os.path.exists(CLIP):
        sys.exit("bench: %s is missing; run make first" % CLIP)
    if a.model == MODEL and not os.path.exists(MODEL):
        print("bench: writing %s (once)" % MODEL, flush=True)
        os.makedirs(OUT, exist_ok=True)
        subprocess.run([sys.executable, os.path.join(ROOT, "convert.py"), "--synthetic", "ViT-B/32", "-o", MODEL], check=True)
        os.sync()   # written back, so that the first mapping of it is not slowed by writeback

    has_numpy, has_torch = have("numpy"), have("torch")
    if not has_numpy:
        print("bench: numpy is missing, so the OpenBLAS and PyTorch columns are skipped (%s)" % INSTALL)
    elif not has_torch:
        print("bench: torch is missing, so the PyTorch column is skipped (%s)" % INSTALL)
    has_torch = has_torch and has_numpy

    onnx = ort_ready(a.model, has_torch)
    if a.wait_policy:
        os.environ["OMP_WAIT_POLICY"] = a.wait_policy.upper()
    load0 = os.getloadavg()[0]
    t = str(a.threads)
    shapes = ["%dx%dx%d" % (m, k, n) for _, m, k, n in GEMM_SHAPES]
    env = child_env(a.threads)
    ours = ours_gemm = torch_res = blas = ort_res = None
    for rnd in range(a.rounds):
        print("bench: round %d of %d: clip.c" % (rnd + 1, a.rounds), end="", flush=True)
        # a pause first: the kernel is still handing back the last child's memory for a moment
        # after it exits, and that work would land in clip.c's start-up time
        time.sleep(1.0)
        r = run_json([CLIP, "bench", "-m", a.model, "-j", t, "--json"])
        ours = r if ours is None else merge(ours, r)
        g = run_json([CLIP, "bench", "-j", t, "--json"] + shapes)
        ours_gemm = g if ours_gemm is None else merge_gemm(ours_gemm, g)
        if has_torch:
            print(", PyTorch", end="", flush=True)
            lens = ",".join(str(n) for n in ours["lens"])
            time.sleep(1.0)
            r = run_json([sys.executable, os.path.abspath(__file__), "--torch-child", a.model, t, lens], env)
            torch_res = r if torch_res is None else merge(torch_res, r)
        if onnx and torch_res:   # after PyTorch, whose pixel values it reads
            print(", ONNX Runtime", end="", flush=True)
            time.sleep(1.0)
            r = run_json(["node", os.path.join(ROOT, "test", "bench_ort.js"), onnx[0], onnx[1], t,
                          os.path.join(OUT, "bench_px.npy"), ",".join(map(str, torch_res["ids7"]))], env)
            ort_res = r if ort_res is None else merge(ort_res, r)
        if has_numpy:
            print(", OpenBLAS", end="", flush=True)
            g = run_json([sys.executable, os.path.abspath(__file__), "--numpy-child", t], env)
            blas = g if blas is None else merge_gemm(blas, g)
        print(flush=True)

    report(a, ours, ours_gemm, torch_res, blas, ort_res)
    print("machine: %d cores, load average %.1f before and %.1f after; OMP_WAIT_POLICY=%s"
          % (os.cpu_count(), load0, os.getloadavg()[0], os.environ.get("OMP_WAIT_POLICY", "(default)")))
    if torch_res:
        check_same(a.model, torch_res, ort_res)


def ort_ready(model, has_torch):
    """(image.onnx, text.onnx) for ONNX Runtime, exported from the model file once (again when the
    model file is newer); None, saying why, when onnxruntime-node or what exports the towers is missing"""
    install = "cd test && npm install --ignore-scripts onnxruntime-node"
    node = subprocess.run(["node", "-e", "require.resolve('onnxruntime-node')"], cwd=os.path.join(ROOT, "test"),
                          capture_output=True) if shutil.which("node") else None
    if node is None or node.returncode != 0:
        print("bench: ONNX Runtime skipped: needs onnxruntime-node (install: %s%s)"
              % ("" if node else "apt-get install nodejs npm; ", install))
        return None
    stem = os.path.join(OUT, os.path.splitext(os.path.basename(model))[0])
    paths = (stem + ".image.onnx", stem + ".text.onnx")
    if all(os.path.exists(p) and os.path.getmtime(p) >= os.path.getmtime(model) for p in paths):
        return paths
    if not has_torch:
        print("bench: ONNX Runtime skipped: needs PyTorch to export the model (install: %s)" % INSTALL)
        return None
    print("bench: exporting %s.{image,text}.onnx with torch.onnx.export (once)" % stem, flush=True)
    run_json([sys.executable, os.path.abspath(__file__), "--onnx-export", model, paths[0], paths[1]])
    return paths


def check_same(model, torch_res, ort_res):
    """clip.c's features for the inputs PyTorch (and ONNX Runtime) timed: the sides must agree
    (float32 rounding apart)."""
    import numpy as np
    img, txt = os.path.join(OUT, "bench_clip_img.npy"), os.path.join(OUT, "bench_clip_text.npy")
    subprocess.run([CLIP, "embed", "-m", model, "--raw", "--pixel-values", os.path.join(OUT, "bench_px.npy"), "-o", img], check=True)
    subprocess.run([CLIP, "embed", "-m", model, "--raw", "--ids", " ".join(map(str, torch_res["ids7"])), "-o", txt], check=True)
    sides = [("PyTorch", np.load(os.path.join(OUT, "bench_torch_img.npy")), np.load(os.path.join(OUT, "bench_torch_text.npy")))]
    if ort_res:
        sides.append(("ONNX Runtime", np.array(ort_res["image_features"]), np.array(ort_res["text_features"])))
    for name, their_img, their_txt in sides:
        worst = 0.0
        for ours, theirs in ((np.load(img), their_img), (np.load(txt), their_txt)):
            a, b = ours.astype(np.float64).ravel(), theirs.astype(np.float64).ravel()
            worst = max(worst, float(np.abs(a - b).max() / np.abs(b).max()))
        print("same math: clip.c and %s features differ by at most %.2g of their largest value" % (name, worst))
        if worst > 1e-3:
            sys.exit("bench: clip.c and %s disagree: the timings do not compare the same computation" % name)


def merge(old, new):
    best = {r["name"]: r for r in old["runs"]}
    for r in new["runs"]:
        if r["ms"] < best[r["name"]]["ms"]:
            best[r["name"]] = r
    out = dict(new)
    out["runs"] = [best[r["name"]] for r in old["runs"]]
    for key in ("load_ms", "first_text_ms"):
        if key in old:
            out[key] = min(old[key], new[key])
    for key in ("rss_load_mb", "rss_one_image_mb", "rss_peak_mb"):
        if key in old:
            out[key] = max(old[key], new[key])
    return out


def merge_gemm(old, new):
    out = dict(new)
    out["gemm"] = [dict(o, ms=min(o["ms"], n["ms"])) for o, n in zip(old["gemm"], new["gemm"])]
    return out


def report(a, ours, ours_gemm, torch_res, blas, ort_res):
    print()
    print("model: %s (%s, %.0f MB), threads: %d" % (a.model, ours["model"], ours["file_mb"], a.threads))
    if torch_res:
        print("PyTorch %s with %d threads" % (torch_res["torch"], torch_res["threads"]))
    if ort_res:
        print("ONNX Runtime %s (onnxruntime-node, CPU) with %d intra-op threads, on torch.onnx.export's graphs of the "
              "same weights" % (ort_res["ort"], ort_res["threads"]))
    print()
    print("%-20s %10s %9s %10s %9s %11s %9s %8s %9s" % ("encoder", "clip.c ms", "GFLOP/s", "per second", "torch ms",
                                                       "clip/torch", "speed-up", "ORT ms", "clip/ORT"))
    tr = {r["name"]: r["ms"] for r in torch_res["runs"]} if torch_res else {}
    orr = {r["name"]: r["ms"] for r in ort_res["runs"]} if ort_res else {}
    for r in ours["runs"]:
        # our batch of ten against PyTorch's padded batch, as Hugging Face runs a list of texts
        ms, tms = r["ms"], tr.get("10 texts, one padded batch" if r["name"] == "10 texts, one batch" else r["name"])
        oms = orr.get(r["name"])
        print("%-20s %10.2f %9.1f %10.1f %9s %11s %9s %8s %9s" % (
            r["name"], ms, r["gflop"] / ms * 1e3, r["items"] / ms * 1e3, fmt(tms, ".2f"),
            fmt(ms / tms if tms else None, ".3f"), fmt(tms / ms if tms else None, ".1f") + ("x" if tms else ""),
            fmt(oms, ".2f"), fmt(ms / oms if oms else None, ".3f")))
    if a.threads == 1:   # processor time: the work itself, whatever else the machine is doing
        tc = {r["name"]: r["cpu_ms"] for r in torch_res["runs"]} if torch_res else {}
        print()
        print("%-20s %14s %14s %11s" % ("one thread", "clip.c cpu ms", "torch cpu ms", "clip/torch"))
        for r in ours["runs"]:
            c, tcm = r["cpu_ms"], tc.get(r["name"])
            print("%-20s %14.2f %14s %11s" % (r["name"], c, fmt(tcm, ".2f"), fmt(c / tcm if tcm else None, ".3f")))
    print()
    print("load (clip_load): %.2f ms; load to the first text embedding: %.2f ms%s" % (
        ours["load_ms"], ours["first_text_ms"],
        " (ONNX Runtime: %.0f ms, the text graph's session to its first text)" % ort_res["first_text_ms"] if ort_res else ""))
    print("peak RSS: %.1f MB after the first text, %.1f MB after one image (file %.1f MB: %+.1f MB), %.1f MB after everything"
          % (ours["rss_load_mb"], ours["rss_one_image_mb"], ours["file_mb"], ours["rss_one_image_mb"] - ours["file_mb"],
             ours["rss_peak_mb"]))
    print()
    print("%-20s %16s %9s %9s %12s %9s %11s" % ("matrix product", "M x K x N", "clip ms", "GFLOP/s", "OpenBLAS ms", "GFLOP/s", "clip/BLAS"))
    bl = {(g["m"], g["k"], g["n"]): g["ms"] for g in blas["gemm"]} if blas else {}
    for (name, m, k, n), g in zip(GEMM_SHAPES, ours_gemm["gemm"]):
        flop = 2.0 * m * k * n
        bms = bl.get((m, k, n))
        print("%-20s %16s %9.3f %9.1f %12s %9s %11s" % (
            name, "%dx%dx%d" % (m, k, n), g["ms"], flop / g["ms"] / 1e6, fmt(bms, ".3f"),
            fmt(flop / bms / 1e6 if bms else None, ".1f"), fmt(bms / g["ms"] if bms else None, ".2f")))
    if blas:
        print("(clip/BLAS: our throughput over OpenBLAS sgemm's, through numpy %s)" % blas["numpy"])


if __name__ == "__main__":
    main()
