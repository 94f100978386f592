"""Full-size ViT-B/32 (12 layers each side) against an independent float64 forward pass.

No Hugging Face golden exists for a full-size model here, so `convert.py --synthetic ViT-B/32`
makes one with deterministic weights and test/reference.py (NumPy, float64, written from
modeling_clip.py and checked against the golden float64 outputs of the tiny models below)
is the reference. `clip embed --raw` must be within 1e-5 of it, for ids and for pixel values.
Needs NumPy (skipped without it, exit 77).
"""
import os
import subprocess
import sys

from common import GOLDEN, OUT, ROOT, Report, clip, converted, golden_pixels, need_module, run

np = need_module("numpy", "NumPy")
import reference  # noqa: E402  (NumPy)

R = Report("fullsize")

# the reference itself, against Hugging Face's float64 goldens of the tiny models
for name in ["tiny-b32", "tiny-b16-gelu", "tiny-l14-336"]:
    g = np.load(os.path.join(GOLDEN, "models", name, "golden.npz"))
    cfg, T = reference.load(converted(name))
    pixels = np.load(golden_pixels(name)[0])
    row = 16
    ids = g["input_ids"][row][: int(g["attention_mask"][row].sum())]
    e_t = np.abs(reference.text_features(cfg, T, ids) - g["text_features_f64"][row]).max()
    e_i = np.abs(reference.image_features(cfg, T, pixels[3]) - g["image_features_f64"][3]).max()
    R.check(e_t < 1e-8 and e_i < 1e-8, f"reference.py vs Hugging Face float64 on {name}: {e_t:.2g}, {e_i:.2g}")

model = os.path.join(OUT, "synthetic-b32.bin")
if not os.path.exists(model):
    run([sys.executable, os.path.join(ROOT, "convert.py"), "--synthetic", "ViT-B/32", "-o", model])
R.check("SYNTHETIC" in clip("info", "-m", model).stdout.decode(), "clip info says the file is synthetic")
cfg, T = reference.load(model)
g = np.load(os.path.join(GOLDEN, "models", "tiny-b32", "golden.npz"))
px = os.path.join(OUT, "fullsize_px.npy")
np.save(px, g["pixel_values"][:2])
for row in [0, 15, 16]:
    ids = [int(t) for t in g["input_ids"][row][: int(g["attention_mask"][row].sum())]]
    out = os.path.join(OUT, "fullsize_text.npy")
    clip("embed", "-m", model, "--raw", "--ids", " ".join(map(str, ids)), "-o", out)
    ref = reference.text_features(cfg, T, ids)
    e = np.abs(np.load(out)[0] - ref).max()
    R.check(e <= 1e-5, f"ViT-B/32 text of {len(ids)} tokens: max abs err {e:.3g} (values up to {np.abs(ref).max():.3g})")
out = os.path.join(OUT, "fullsize_image.npy")
clip("embed", "-m", model, "--raw", "--pixel-values", px, "-o", out)
ref = np.stack([reference.image_features(cfg, T, g["pixel_values"][k]) for k in range(2)])
e = np.abs(np.load(out) - ref).max()
R.check(e <= 1e-5, f"ViT-B/32 two images: max abs err {e:.3g} (values up to {np.abs(ref).max():.3g})")
R.finish()
