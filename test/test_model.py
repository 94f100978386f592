"""The model against Hugging Face float64 goldens (SPEC §6). Standard library only.

For every golden model folder: convert it with convert.py, then run `clip embed --raw` on the
golden input_ids (the unpadded part of each row) and pixel_values, and `--dump` for the first
text and image. Features and pooled outputs must be within 1e-5 of the float64 reference and no
worse than twice Hugging Face's own float32 error; logits within 1e-3; every layer's hidden state
within 1e-4 (and within twice HF's float32 error plus 1e-6).

The pixel values are Hugging Face's (test/golden: stored for the 224-pixel models; for
tiny-l14-336 made by `clip preprocess` and used only when every row has the sha256 of HF's).
"""
import math
import os

from common import OUT, Report, clip, golden_arrays, golden_model, golden_pixels, make_var, max_abs_diff, read_npy, run

R = Report("model")
MODELS = os.environ.get("CLIP_TEST_MODELS", "tiny-b32 tiny-b16-gelu tiny-l14-336 tiny-b32-fp16 tiny-b32-pytorch-bin").split()


def compare(label, ours, g, key, tol=1e-5):
    ref, hf = g[key + "_f64"], g[key + "_f32"]
    e, e_hf = max_abs_diff(ours, ref), max_abs_diff(hf, ref)
    R.check(e <= tol and e <= max(2 * e_hf, 1e-7), f"{label} {key}: max abs err {e:.3g} (HF float32: {e_hf:.3g})")


def rows(a):
    return [a[i].flat for i in range(a.shape[0])]


def normalized(rs):
    out = []
    for r in rs:
        n = math.sqrt(sum(float(x) * float(x) for x in r))
        out.extend(float(x) / n for x in r)
    return out


def embed_rows(model, flag, items, name):
    out = os.path.join(OUT, name + ".npy")
    args = ["embed", "-m", model, "--raw", "-o", out]
    for it in items:
        args += [flag, it]
    clip(*args)
    return read_npy(out)


for name in MODELS:
    gname = "tiny-b32" if name == "tiny-b32-pytorch-bin" else name
    g = golden_arrays(gname)
    model = golden_model(name)
    ids, mask = g["input_ids"], g["attention_mask"]
    lengths = [int(sum(mask[i].flat)) for i in range(len(ids))]
    texts = [" ".join(str(int(t)) for t in ids[i].flat[:lengths[i]]) for i in range(len(ids))]
    try:
        px_path, px_note = golden_pixels(gname, model)
    except RuntimeError as e:
        px_path, px_note = None, str(e)
    R.check(px_path is not None, f"{name} pixel values: {px_note}")

    tf = embed_rows(model, "--ids", texts, name + "_text")
    compare(name, tf, g, "text_features")
    te = normalized(rows(tf))
    compare(name, te, g, "text_embeds")
    # normalized output (no --raw) must equal the normalized raw rows
    clip("embed", "-m", model, "--ids", texts[0], "-o", os.path.join(OUT, name + "_t0.npy"))
    t0 = read_npy(os.path.join(OUT, name + "_t0.npy"))[0]
    compare(name + " (embed, normalized)", t0, {"x_f64": g["text_embeds_f64"][0], "x_f32": g["text_embeds_f32"][0]}, "x")
    if px_path is None:
        continue
    clip("embed", "-m", model, "--raw", "--pixel-values", px_path, "-o", os.path.join(OUT, name + "_img.npy"))
    imf = read_npy(os.path.join(OUT, name + "_img.npy"))
    compare(name, imf, g, "image_features")
    ie = normalized(rows(imf))
    compare(name, ie, g, "image_embeds")
    # logits: exp(logit_scale) * image_embeds @ text_embeds.T, from our embeddings
    info = clip("info", "-m", model).stdout.decode()
    scale = float(info.split("logit scale ")[1].split()[0])
    d = imf.shape[1]
    n_img, n_txt = imf.shape[0], tf.shape[0]
    logits = [scale * sum(ie[i * d + k] * te[j * d + k] for k in range(d)) for i in range(n_img) for j in range(n_txt)]
    e = max_abs_diff(logits, g["logits_per_image_f64"])
    R.check(e <= 1e-3, f"{name} logits_per_image: max abs err {e:.3g}")

    if "text_hidden_f64" not in g:
        continue
    # --dump: every stage for the first text and the first image
    dump = os.path.join(OUT, name + "_dump")
    clip("embed", "-m", model, "--raw", "--ids", texts[0], "--pixel-values", px_path, "--dump", dump)
    for side, sub, key in (("text", "0", "text_hidden"), ("image", "1", "image_hidden")):
        ref, hf_err = g[key + "_f64"], g[key + "_hf32_err"]
        worst, ok = 0.0, True
        for layer in range(ref.shape[0]):
            ours = read_npy(os.path.join(dump, sub, f"{key}_{layer:02d}.npy"))
            e = max_abs_diff(ours, ref[layer])
            ok &= e <= 1e-4 and e <= 2 * hf_err.flat[layer] + 1e-6
            worst = max(worst, e)
        R.check(ok, f"{name} {side} hidden states, {ref.shape[0]} stages: worst max abs err {worst:.3g}")
    e = max_abs_diff(read_npy(os.path.join(dump, "0", "text_last_hidden.npy")), g["text_last_hidden_f64"])
    R.check(e <= 1e-5, f"{name} text_last_hidden: max abs err {e:.3g}")
    e = max_abs_diff(read_npy(os.path.join(dump, "1", "image_last_hidden.npy")), g["image_last_hidden_f64"])
    R.check(e <= 1e-4, f"{name} image_last_hidden: max abs err {e:.3g}")
    e = max_abs_diff(read_npy(os.path.join(dump, "1", "image_pooled.npy"))[0], g["image_pooled_f64"][0])
    R.check(e <= 1e-5, f"{name} image_pooled (first image): max abs err {e:.3g}")
    e = max_abs_diff(read_npy(os.path.join(dump, "0", "text_pooled.npy"))[0], g["text_pooled_f64"][0])
    R.check(e <= 1e-5, f"{name} text_pooled (first text): max abs err {e:.3g}")


# Caller-owned scratch (clip_encode_*_scratch): test/scratch_driver.c, built with $CC and the
# kernel flags of this build ($CLIP_KERNELS, set by make), counting the library's allocations
# through GNU ld's --wrap where the linker has it.
def scratch_driver():
    cc = os.environ.get("CC", "cc").split()
    srcs = [os.path.join(os.path.dirname(OUT), "scratch_driver.c")] + make_var("LIBSRC")
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
for name in [m for m in ("tiny-b32", "tiny-l14-336") if m in MODELS] if exe else []:
    p = run([exe, golden_model(name)], ok=False)
    lines = [l for l in p.stdout.decode().splitlines() if l[:4] in ("ok  ", "FAIL")]
    for l in lines:
        R.check(l.startswith("ok"), f"{name} scratch: {l[5:]}")
    R.check(p.returncode == 0 and bool(lines), f"{name} scratch_driver exits {p.returncode} {p.stderr.decode()[-300:]}")

R.finish()
