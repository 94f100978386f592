"""WebAssembly: `make wasm` builds, and its output gives the native build's answers.

Under Node, build/wasm/clip.js (the `clip` command, host files through NODERAWFS) must give
identical token ids, identical decoded and preprocessed pixel bytes on every golden image,
embeddings within 1e-5 of native, the same `match` numbers and the same exit codes on errors.
The browser module web/clip.js (MEMFS) is loaded in Node too: a model written into MEMFS and
read through clip_load (mmap there), and one handed over in memory (clip_load_memory), must
give native's embeddings. Needs emcc, node and NumPy; skipped without them (exit 77).
"""
import json
import os
import shutil
import sys
import time

from common import CLIP, GOLDEN, OUT, ROOT, Report, converted, golden_pixels, need, need_module, run

EMCC = os.environ.get("EMCC", "emcc")
if not shutil.which(EMCC):
    need("emcc")
if not shutil.which("node"):
    need("node")
np = need_module("numpy", "NumPy")
R = Report("wasm")
NODE = ["node", "--no-experimental-fetch"]
WASM = os.path.join(ROOT, "build", "wasm", "clip.js")
IMAGES = os.path.join(GOLDEN, "images")
WOUT = os.path.join(OUT, "wasm")
os.makedirs(WOUT, exist_ok=True)
ARTICLE = ["a photo of a cat", "a photo of a dog", "a photo of an airplane", "一张彩色的猫图片"]

t0 = time.time()
p = run(["make", "-s", "-B", "wasm"], ok=False, cwd=ROOT)   # -B: always compile, so warnings are seen
if not R.check(p.returncode == 0 and os.path.exists(WASM) and os.path.exists(os.path.join(ROOT, "web", "clip.js")),
               f"make wasm builds build/wasm/clip.js and web/clip.js ({time.time() - t0:.0f} s)"):
    print(p.stdout.decode(errors="replace")[-3000:], p.stderr.decode(errors="replace")[-3000:])
    R.finish()
warnings = [l for l in p.stderr.decode(errors="replace").splitlines() if "warning:" in l]
R.check(not warnings, f"make wasm: no compiler warnings ({len(warnings)}: {warnings[:3]})")
if not os.path.exists(CLIP):
    run(["make", "-s", "clip"], cwd=ROOT)


def native(*args):
    return run([CLIP, *map(str, args)], ok=False)


def wasm(*args):
    return run([*NODE, WASM, *map(str, args)], ok=False)


def same_run(what, args, outs=()):
    """Run args natively (outputs *.native) and under Node (*.wasm); compare everything."""
    res = {}
    for build, fn in [("native", native), ("wasm", wasm)]:
        a = [x.replace("{OUT}", os.path.join(WOUT, f"{what}.{build}")) for x in args]
        for o in outs:
            path = os.path.join(WOUT, f"{what}.{build}{o}")
            if os.path.exists(path):
                os.remove(path)
        p = fn(*a)
        files = {}
        for o in outs:
            path = os.path.join(WOUT, f"{what}.{build}{o}")
            files[o] = open(path, "rb").read() if os.path.exists(path) else None
        res[build] = (p.returncode, p.stdout, p.stderr.decode(errors="replace"), files)
    return res["native"], res["wasm"]


# --- tokenize: every golden tokenizer text, both tokenizer flavours, with and without padding ---
cases = json.load(open(os.path.join(GOLDEN, "tokenizer", "cases.json"), encoding="utf-8"))
texts = [c["text"] for c in cases]
for name in ["tiny-b32", "tiny-b16-gelu"]:
    model = converted(name)
    for pad in [[], ["--pad"]]:
        n = native("tokenize", "-m", model, *pad, "--", *texts)
        w = wasm("tokenize", "-m", model, *pad, "--", *texts)
        nl, wl = n.stdout.decode().splitlines(), w.stdout.decode().splitlines()
        same = sum(a == b for a, b in zip(nl, wl))
        # cases.json holds the ids of the openai/clip-vit-base-patch32 tokenizer, as tiny-b32 has it
        golden = sum(l.split() == [str(i) for i in c["fast"]] for l, c in zip(wl, cases)) if name == "tiny-b32" and not pad else None
        bad = [texts[i] for i in range(min(len(nl), len(wl))) if nl[i] != wl[i]]
        R.check(n.returncode == 0 and w.returncode == 0 and len(nl) == len(wl) == len(texts) and same == len(texts),
                f"tokenize {name}{' --pad' if pad else ''}: {same}/{len(texts)} texts give identical ids"
                + (f" (and {golden}/{len(texts)} equal the golden ids)" if golden is not None else "")
                + (f"; differ: {bad[:3]!r}" if bad else ""))

# --- decode and preprocess (both resize modes): every golden image, byte for byte ---
model = converted("tiny-b32")
names = sorted(f for f in os.listdir(IMAGES) if os.path.isfile(os.path.join(IMAGES, f)))
counts = {"decode": [0, 0], "pil": [0, 0], "torchvision": [0, 0]}
failures = []
for f in names:
    img = os.path.join(IMAGES, f)
    for kind, args in [("decode", ["decode", img, "-o", "{OUT}.npy"]),
                       ("pil", ["preprocess", "-m", model, "--resize", "pil", img, "-o", "{OUT}.npy"]),
                       ("torchvision", ["preprocess", "-m", model, "--resize", "torchvision", img, "-o", "{OUT}.npy"])]:
        (nrc, _, nerr, nf), (wrc, _, werr, wf) = same_run(f"{kind}_{f}", args, [".npy"])
        good = nrc == wrc and nf[".npy"] == wf[".npy"] and (nrc == 0) == (nf[".npy"] is not None) and nerr == werr
        counts[kind][0 if nrc == 0 else 1] += good
        if not good:
            failures.append(f"{kind} {f}: exit {nrc}/{wrc}, bytes {'equal' if nf['.npy'] == wf['.npy'] else 'DIFFER'}, "
                            f"stderr {nerr.strip()[:80]!r} / {werr.strip()[:80]!r}")
for kind, (ok_runs, err_runs) in counts.items():
    R.check(ok_runs + err_runs == len(names),
            f"{kind}: {ok_runs + err_runs}/{len(names)} golden images identical to native "
            f"({ok_runs} decoded to the same bytes, {err_runs} refused with the same exit code and message)")
for line in failures:
    print("     ", line)

# --- embed --raw: texts, images, ids, pixel values on the golden tiny models, within 1e-5 ---
for name in ["tiny-b32", "tiny-b16-gelu", "tiny-l14-336", "tiny-b32-fp16"]:
    model = converted(name)
    g = np.load(os.path.join(GOLDEN, "models", name, "golden.npz"))
    px = os.path.join(WOUT, f"{name}_pixels.npy")
    np.save(px, np.load(golden_pixels(name, model)[0])[:2].astype(np.float32))
    ids = " ".join(str(i) for i in g["input_ids"][0][: int(g["attention_mask"][0].sum())])
    args = ["embed", "--raw", "-m", model, "--ids", ids, "--pixel-values", px,
            "--image", os.path.join(IMAGES, "chelsea.png"), "--image", os.path.join(IMAGES, "cat_q90_420.jpg"),
            *sum((["--text", t] for t in ARTICLE), []), "-o", "{OUT}.npy"]
    t = time.time()
    (nrc, _, nerr, nf), (wrc, _, werr, wf) = same_run(f"embed_{name}", args, [".npy"])
    secs = time.time() - t
    if not R.check(nrc == 0 and wrc == 0 and nf[".npy"] and wf[".npy"], f"embed {name}: both builds run ({nerr.strip()[:100]} {werr.strip()[:100]})"):
        continue
    a = np.load(os.path.join(WOUT, f"embed_{name}.native.npy"))
    b = np.load(os.path.join(WOUT, f"embed_{name}.wasm.npy"))
    err = np.abs(a - b).max() if a.shape == b.shape else np.inf
    # rows: ids, 4 texts, 2 images, 2 pixel values (golden inputs: text 0, images 0 and 1)
    gold = np.concatenate([g["text_features_f64"][:1], g["image_features_f64"][:2]])
    gerr = np.abs(b[[0, 7, 8]] - gold).max() if b.shape[0] == 9 else np.inf
    R.check(a.shape == b.shape == (9, a.shape[1]) and err <= 1e-5,
            f"embed --raw {name}: {a.shape[0]} rows, max |wasm - native| {err:.2g} (want <= 1e-5), "
            f"wasm vs golden f64 {gerr:.2g}; both builds {secs:.1f} s")

# --- match --json: the article's experiment 1 ---
model = converted("tiny-b32")
for resize in ["pil", "torchvision"]:
    args = ["match", "-m", model, "--resize", resize, "-i", os.path.join(IMAGES, "chelsea.png"),
            *sum((["-t", t] for t in ARTICLE), []), "--json"]
    n, w = native(*args), wasm(*args)
    try:
        rn, rw = json.loads(n.stdout), json.loads(w.stdout)
        ep = max(abs(x["prob"] - y["prob"]) for x, y in zip(rn["results"], rw["results"]))
        el = max(abs(x["logit"] - y["logit"]) for x, y in zip(rn["results"], rw["results"]))
        good = [r["text"] for r in rw["results"]] == ARTICLE and ep <= 1e-5 and el <= 1e-4
    except (ValueError, KeyError):
        good, ep, el = False, float("nan"), float("nan")
    R.check(good, f"match --json --resize {resize}: probs max diff {ep:.2g}, logits max diff {el:.2g}")

# --- errors: the same exit code, message and no output file ---
trunc = os.path.join(WOUT, "truncated.bin")
data = open(model, "rb").read()
open(trunc, "wb").write(data[: len(data) // 2])
garbage = os.path.join(WOUT, "garbage.bin")
open(garbage, "wb").write(b"not a model" * 100)
badpx = os.path.join(WOUT, "badshape.npy")
np.save(badpx, np.zeros((2, 3, 7, 7), np.float32))
img = os.path.join(IMAGES, "chelsea.png")
error_cases = [
    ("no command", []),
    ("unknown command", ["frobnicate"]),
    ("unknown option", ["embed", "-m", model, "--bogus"]),
    ("no model", ["embed", "--text", "x"]),
    ("missing model file", ["embed", "-m", os.path.join(WOUT, "nope.bin"), "--text", "x"]),
    ("model is a folder", ["info", "-m", WOUT]),
    ("truncated model", ["info", "-m", trunc]),
    ("foreign model file", ["embed", "-m", garbage, "--text", "x"]),
    ("missing image", ["match", "-m", model, "-i", os.path.join(WOUT, "nope.png"), "-t", "x"]),
    ("bad image", ["embed", "-m", model, "--image", os.path.join(IMAGES, "bad_garbage.jpg"), "-o", "{OUT}.npy"]),
    ("truncated png", ["preprocess", "-m", model, os.path.join(IMAGES, "bad_truncated.png"), "-o", "{OUT}.npy"]),
    ("bad pixel shape", ["embed", "-m", model, "--pixel-values", badpx, "-o", "{OUT}.npy"]),
    ("bad --ids", ["embed", "-m", model, "--ids", "49406 abc"]),
    ("id out of range", ["embed", "-m", model, "--ids", "49406 99999999 49407"]),
    ("bad --resize", ["preprocess", "-m", model, "--resize", "nearest", img, "-o", "{OUT}.npy"]),
    ("bad -j", ["embed", "-m", model, "-j", "0", "--text", "x"]),
    ("unwritable output", ["decode", img, "-o", os.path.join(WOUT, "no", "such", "dir.npy")]),
    ("match without captions", ["match", "-m", model, "-i", img]),
]
same_codes = 0
for what, args in error_cases:
    (nrc, _, nerr, nf), (wrc, _, werr, wf) = same_run("err_" + what.replace(" ", "_"), args, [".npy"])
    good = nrc == wrc != 0 and nerr == werr and nf[".npy"] is None and wf[".npy"] is None
    same_codes += good
    R.check(good, f"error '{what}': exit {nrc} native, {wrc} wasm, {nerr.strip().splitlines()[0][:90]!r}"
            + ("" if nerr == werr else f"; wasm says {werr.strip()[:90]!r}"))
print(f"      {same_codes}/{len(error_cases)} error cases give the same exit code and message, and no output file")

# --- the browser module under Node: MEMFS + clip_load (mmap), and clip_load_memory ---
MODULE_CHECK = r"""
const fs = require('fs');
const [modulePath, modelPath, imagePath, captionsJson] = process.argv.slice(1);
const captions = JSON.parse(captionsJson);
require(modulePath)().then((clip) => {
  const out = {};
  const D = () => clip._web_dim();
  const str = (s) => { const n = clip.lengthBytesUTF8(s) + 1, p = clip._malloc(n); clip.stringToUTF8(s, p, n); return p; };
  const error = () => clip.UTF8ToString(clip._web_error());
  const floats = (p, n) => Array.from(clip.HEAPF32.subarray(p / 4, p / 4 + n));
  function experiment(mode) {
    const n = captions.length, d = D();
    const img = clip._malloc(4 * d), txt = clip._malloc(4 * n * d), lg = clip._malloc(4 * n), pr = clip._malloc(4 * n);
    const bytes = fs.readFileSync(imagePath), ib = clip._malloc(bytes.length);
    clip.HEAPU8.set(bytes, ib);
    if (clip._web_embed_image(ib, bytes.length, mode, img) < 0) return { error: error() };
    for (let t = 0; t < n; t++) {
      const s = str(captions[t]);
      if (clip._web_embed_text(s, txt + 4 * t * d) < 0) return { error: error() };
      clip._free(s);
    }
    if (clip._web_match(img, txt, n, lg, pr) < 0) return { error: error() };
    const r = { image: floats(img, d), texts: floats(txt, n * d), logits: floats(lg, n), probs: floats(pr, n) };
    [img, txt, lg, pr, ib].forEach((p) => clip._free(p));
    return r;
  }
  const model = fs.readFileSync(modelPath);
  clip.FS.writeFile('/model.bin', model);
  const s = str('/model.bin');
  out.memfs_rc = clip._web_load_file(s);
  out.memfs_error = error();
  clip.FS.unlink('/model.bin');   // the mapping must outlive the file
  out.memfs = [experiment(0), experiment(1)];
  const p = clip._web_alloc(model.length);
  clip.HEAPU8.set(model, p);
  out.memory_rc = clip._web_load_memory(p, model.length);
  out.memory = [experiment(0), experiment(1)];
  const g = clip._web_alloc(model.length);
  clip.HEAPU8.set(model.subarray(0, model.length >> 1), g);
  out.truncated_rc = clip._web_load_memory(g, model.length >> 1);
  out.truncated_error = error();
  out.missing_rc = clip._web_load_file(str('/nope.bin'));
  out.missing_error = error();
  out.unloaded_rc = clip._web_embed_text(str('x'), clip._malloc(4 * 4096));
  out.unloaded_error = error();
  console.log(JSON.stringify(out));
}).catch((e) => { console.log(JSON.stringify({ fatal: String(e) })); process.exit(1); });
"""
model = converted("tiny-b32")
img = os.path.join(IMAGES, "cat_q90_420.jpg")
p = run([*NODE, "-e", MODULE_CHECK, os.path.join(ROOT, "web", "clip.js"), model, img, json.dumps(ARTICLE)], ok=False)
try:
    res = json.loads(p.stdout.decode().strip().splitlines()[-1])
except (ValueError, IndexError):
    res = {"fatal": p.stdout.decode(errors="replace")[-500:] + p.stderr.decode(errors="replace")[-500:]}
if R.check("fatal" not in res, f"web/clip.js loads under Node {res.get('fatal', '')}"):
    ref = {}
    for resize in ["pil", "torchvision"]:
        # rows: the 4 texts, then the image
        q = native("embed", "-m", model, "--resize", resize, "--image", img, *sum((["--text", t] for t in ARTICLE), []),
                   "-o", os.path.join(WOUT, f"module_{resize}.npy"))
        m = native("match", "-m", model, "--resize", resize, "-i", img, *sum((["-t", t] for t in ARTICLE), []), "--json")
        ref[resize] = (np.load(os.path.join(WOUT, f"module_{resize}.npy")), json.loads(m.stdout)["results"])
    for how in ["memfs", "memory"]:
        ok, worst = res[f"{how}_rc"] == 0, 0.0
        for mode, resize in enumerate(["pil", "torchvision"]):
            r = res[how][mode]
            if "error" in r:
                ok = False
                print("     ", how, resize, r["error"])
                continue
            emb = np.concatenate([np.array(r["texts"]).reshape(len(ARTICLE), -1), np.array([r["image"]])])
            worst = max(worst, np.abs(emb - ref[resize][0]).max(),
                        max(abs(x - y["prob"]) for x, y in zip(r["probs"], ref[resize][1])))
        R.check(ok and worst <= 1e-5, f"browser module, model via {'MEMFS + clip_load' if how == 'memfs' else 'clip_load_memory'}: "
                f"embeddings and probs (pil, torchvision) max diff from native {worst:.2g}"
                + ("" if res[f"{how}_rc"] == 0 else f" (load failed: {res.get('memfs_error')})"))
    R.check(res["truncated_rc"] < 0 and "truncated" in res["truncated_error"],
            f"browser module refuses a truncated model: {res['truncated_error']!r}")
    R.check(res["missing_rc"] < 0 and res["missing_error"].startswith("/nope.bin"),
            f"browser module reports a missing file: {res['missing_error']!r}")
    R.check(res["unloaded_rc"] < 0 and res["unloaded_error"] == "no model is loaded",
            f"browser module refuses to embed without a model: {res['unloaded_error']!r}")

R.finish()
