"""Compare clip.c with Hugging Face transformers, stage by stage.

    python3 test/hf_compare.py HF_FOLDER IMAGE TEXT [TEXT ...] [--resize pil|torchvision]

Converts HF_FOLDER with convert.py (into a temporary file), runs `clip embed --dump` on the
image and on each text, runs transformers' CLIPProcessor + CLIPModel (output_hidden_states=True)
on the same inputs, and prints the max abs difference per stage: ids, pixel values, every
layer's hidden state, pooled output, projection, logits. Where transformers (or torch/numpy) is
not installed it says so and exits 0 after writing clip.c's stages.
"""
import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIP = os.environ.get("CLIP_BIN", os.path.join(ROOT, "clip"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("image")
    ap.add_argument("texts", nargs="+")
    ap.add_argument("--resize", default="pil", choices=["pil", "torchvision"])
    ap.add_argument("--keep", help="write clip.c's stages to this folder and keep them")
    a = ap.parse_args()

    work = a.keep or tempfile.mkdtemp(prefix="hf_compare_")
    model = os.path.join(work, "model.bin")
    dump = os.path.join(work, "dump")
    for cmd in ([sys.executable, os.path.join(ROOT, "convert.py"), a.folder, "-o", model],
                [CLIP, "embed", "-m", model, "--resize", a.resize, "--image", a.image, "--raw", "--dump", dump,
                 *sum((["--text", t] for t in a.texts), [])]):
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"hf_compare: {os.path.basename(cmd[0])} failed: {p.stderr.strip()}")
    print(f"clip.c stages written to {dump} (text i in {dump}/i, the image in {dump}/{len(a.texts)})")

    try:
        import numpy as np
        import torch
        from PIL import Image
        from transformers import CLIPModel, CLIPProcessor
    except ImportError as e:
        print(f"hf_compare: {e.name} is not installed, so there is nothing to compare against; "
              f"install transformers, torch, numpy and Pillow to see the table")
        return 0

    kw = {}
    if a.resize == "pil":
        try:
            from transformers import CLIPImageProcessorPil
            kw["image_processor"] = CLIPImageProcessorPil.from_pretrained(a.folder)
        except ImportError:
            pass   # transformers 4.x: the default processor is the Pillow one
    proc = CLIPProcessor.from_pretrained(a.folder, **kw)
    hf = CLIPModel.from_pretrained(a.folder, torch_dtype=torch.float64).eval()
    img = Image.open(a.image).convert("RGB")
    inputs = proc(text=a.texts, images=img, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = hf(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                 pixel_values=inputs["pixel_values"].double(), output_hidden_states=True)
        image_features = hf.visual_projection(out.vision_model_output.pooler_output).numpy()
        text_features = hf.text_projection(out.text_model_output.pooler_output).numpy()
    load = lambda d, n: np.load(os.path.join(dump, str(d), n + ".npy"))
    rows = []
    ni = len(a.texts)
    rows.append(("pixel_values", np.abs(load(ni, "pixel_values") - inputs["pixel_values"].numpy()).max()))
    for l, h in enumerate(out.vision_model_output.hidden_states):
        rows.append((f"image_hidden_{l:02d}", np.abs(load(ni, f"image_hidden_{l:02d}") - h[0].numpy()).max()))
    rows.append(("image_pooled", np.abs(load(ni, "image_pooled")[0] - out.vision_model_output.pooler_output[0].numpy()).max()))
    rows.append(("image_features", np.abs(load(ni, "image_features")[0] - image_features[0]).max()))
    for t in range(ni):
        n = int(inputs["attention_mask"][t].sum())
        ids_ok = (load(t, "text_ids").astype(int) == inputs["input_ids"][t][:n].numpy()).all()
        rows.append((f"text {t} ids", 0.0 if ids_ok else float("inf")))
        for l, h in enumerate(out.text_model_output.hidden_states):
            rows.append((f"text {t} hidden_{l:02d}", np.abs(load(t, f"text_hidden_{l:02d}") - h[t][:n].numpy()).max()))
        rows.append((f"text {t} pooled", np.abs(load(t, "text_pooled")[0] - out.text_model_output.pooler_output[t].numpy()).max()))
        rows.append((f"text {t} features", np.abs(load(t, "text_features")[0] - text_features[t]).max()))
    te = np.stack([load(t, "text_features")[0] for t in range(ni)]).astype(np.float64)
    ie = load(ni, "image_features")[0].astype(np.float64)
    te /= np.linalg.norm(te, axis=1, keepdims=True)
    ie /= np.linalg.norm(ie)
    logits = hf.logit_scale.exp().item() * te @ ie
    rows.append(("logits_per_image", np.abs(logits - out.logits_per_image[0].numpy()).max()))
    print(f"{'stage':<24} max abs diff vs Hugging Face (float64)")
    for name, e in rows:
        print(f"{name:<24} {e:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
