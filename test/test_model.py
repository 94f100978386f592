"""The model against Hugging Face float64 goldens (SPEC §6).

For every folder of golden/models: convert it with convert.py, then run `clip embed --raw`
on the golden input_ids (the unpadded part of each row) and pixel_values, and `--dump` for the
first text and image. Features and pooled outputs must be within 1e-5 of the float64 reference
and no worse than twice Hugging Face's own float32 error; logits within 1e-3; every layer's
hidden state within 1e-4 (and within twice HF's float32 error plus 1e-6).
"""
import os
import sys

import numpy as np

from common import GOLDEN, OUT, ROOT, Report, clip, converted, need_golden, run

need_golden()
R = Report("model")
MODELS = os.environ.get("CLIP_TEST_MODELS", "tiny-b32 tiny-b16-gelu tiny-l14-336 tiny-b32-fp16 tiny-b32-pytorch-bin").split()


def err(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def compare(label, ours, g, key, tol=1e-5):
    ref, hf = g[key + "_f64"], g[key + "_f32"]
    ours = np.asarray(ours, np.float64).reshape(ref.shape)
    e, e_hf = err(ours, ref), err(hf, ref)
    R.check(e <= tol and e <= max(2 * e_hf, 1e-7), f"{label} {key}: max abs err {e:.3g} (HF float32: {e_hf:.3g})")


def embed_rows(model, flag, items, name):
    out = os.path.join(OUT, name + ".npy")
    args = ["embed", "-m", model, "--raw", "-o", out]
    for it in items:
        args += [flag, it]
    clip(*args)
    return np.load(out)


for name in MODELS:
    gname = "tiny-b32" if name == "tiny-b32-pytorch-bin" else name
    g = np.load(os.path.join(GOLDEN, "models", gname, "golden.npz"))
    model = converted(name)
    ids, mask = g["input_ids"], g["attention_mask"]
    texts = [" ".join(str(int(t)) for t in ids[i][: int(mask[i].sum())]) for i in range(len(ids))]
    px_path = os.path.join(OUT, name + "_pixels.npy")
    np.save(px_path, g["pixel_values"].astype(np.float32))

    tf = embed_rows(model, "--ids", texts, name + "_text")
    imf = clip("embed", "-m", model, "--raw", "--pixel-values", px_path, "-o", os.path.join(OUT, name + "_img.npy"))
    imf = np.load(os.path.join(OUT, name + "_img.npy"))
    compare(name, tf, g, "text_features")
    compare(name, imf, g, "image_features")
    te = tf / np.linalg.norm(tf.astype(np.float64), axis=1, keepdims=True)
    ie = imf / np.linalg.norm(imf.astype(np.float64), axis=1, keepdims=True)
    compare(name, te, g, "text_embeds")
    compare(name, ie, g, "image_embeds")
    # normalized output (no --raw) must equal the normalized raw rows
    tn = np.load(os.path.join(OUT, name + "_text.npy")) if False else None
    clip("embed", "-m", model, "--ids", texts[0], "-o", os.path.join(OUT, name + "_t0.npy"))
    compare(name + " (embed, normalized)", np.load(os.path.join(OUT, name + "_t0.npy"))[0], {"x_f64": g["text_embeds_f64"][0], "x_f32": g["text_embeds_f32"][0]}, "x")
    # logits: exp(logit_scale) * image_embeds @ text_embeds.T, from our embeddings
    info = clip("info", "-m", model).stdout.decode()
    scale = float(info.split("logit scale ")[1].split()[0])
    logits = scale * ie.astype(np.float64) @ te.astype(np.float64).T
    e = err(logits, g["logits_per_image_f64"])
    R.check(e <= 1e-3, f"{name} logits_per_image: max abs err {e:.3g}")

    if "text_hidden_f64" not in g.files:
        continue
    # --dump: every stage for the first text and the first image
    d = os.path.join(OUT, name + "_dump")
    clip("embed", "-m", model, "--raw", "--ids", texts[0], "--pixel-values", px_path, "--dump", d)
    n0 = int(mask[0].sum())
    th, ih = g["text_hidden_f64"], g["image_hidden_f64"]
    th32, ih32 = g["text_hidden_f32"], g["image_hidden_f32"]
    worst_t = worst_i = 0.0
    ok = True
    for layer in range(th.shape[0]):
        ours = np.load(os.path.join(d, "0", f"text_hidden_{layer:02d}.npy"))
        e, e_hf = err(ours, th[layer][:n0]), err(th32[layer][:n0], th[layer][:n0])
        ok &= e <= 1e-4 and e <= 2 * e_hf + 1e-6
        worst_t = max(worst_t, e)
    R.check(ok, f"{name} text hidden states, {th.shape[0]} stages: worst max abs err {worst_t:.3g}")
    ok = True
    for layer in range(ih.shape[0]):
        ours = np.load(os.path.join(d, "1", f"image_hidden_{layer:02d}.npy"))
        e, e_hf = err(ours, ih[layer]), err(ih32[layer], ih[layer])
        ok &= e <= 1e-4 and e <= 2 * e_hf + 1e-6
        worst_i = max(worst_i, e)
    R.check(ok, f"{name} image hidden states, {ih.shape[0]} stages: worst max abs err {worst_i:.3g}")
    e = err(np.load(os.path.join(d, "0", "text_last_hidden.npy")), g["text_last_hidden_f64"][:n0])
    R.check(e <= 1e-5, f"{name} text_last_hidden: max abs err {e:.3g}")
    e = err(np.load(os.path.join(d, "1", "image_last_hidden.npy")), g["image_last_hidden_f64"])
    R.check(e <= 1e-4, f"{name} image_last_hidden: max abs err {e:.3g}")
    e = err(np.load(os.path.join(d, "1", "image_pooled.npy"))[0], g["image_pooled_f64"][0])
    R.check(e <= 1e-5, f"{name} image_pooled (first image): max abs err {e:.3g}")
    e = err(np.load(os.path.join(d, "0", "text_pooled.npy"))[0], g["text_pooled_f64"][0])
    R.check(e <= 1e-5, f"{name} text_pooled (first text): max abs err {e:.3g}")


# Caller-owned scratch (clip_encode_*_scratch): test/scratch_driver.c, built with $CC and the
# kernel flags of this build ($CLIP_KERNELS, set by make), counting the library's allocations
# through GNU ld's --wrap where the linker has it.
def scratch_driver():
    cc = os.environ.get("CC", "cc").split()
    srcs = [os.path.join(ROOT, f) for f in ("test/scratch_driver.c", "clip.c", "tokenizer.c", "image.c", "tensor.c")]
    exe = os.path.join(OUT, "scratch_driver")
    base = [*cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", *os.environ.get("CLIP_KERNELS", "").split()]
    wrap = ["-DCOUNT_ALLOCS", "-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc"]
    p = run([*base, *wrap, *srcs, "-lm", "-o", exe], ok=False)
    if p.returncode != 0:
        print("note: the linker has no --wrap: the driver runs without counting allocations")
        p = run([*base, *srcs, "-lm", "-o", exe], ok=False)
    err = p.stderr.decode(errors="replace")
    R.check(p.returncode == 0 and "warning:" not in err, f"scratch_driver builds without warnings {err[-500:]}")
    return exe if p.returncode == 0 else None


exe = scratch_driver()
for name in ["tiny-b32", "tiny-l14-336"] if exe else []:
    p = run([exe, converted(name)], ok=False)
    lines = [l for l in p.stdout.decode().splitlines() if l[:4] in ("ok  ", "FAIL")]
    for l in lines:
        R.check(l.startswith("ok"), f"{name} scratch: {l[5:]}")
    R.check(p.returncode == 0 and lines, f"{name} scratch_driver exits {p.returncode} {p.stderr.decode()[-300:]}")

R.finish()
