"""An independent float64 CLIP forward pass in NumPy, reading a clip.c model file.

It mirrors Hugging Face's modeling_clip.py line by line (not clip.c), so it can check
full-size models for which no Hugging Face golden exists (e.g. convert.py --synthetic):

    python3 test/reference.py MODEL.bin --ids "49406 320 49407" --pixel-values px.npy
"""
import mmap
import struct
import sys

import numpy as np


def load(path, dtype=np.float64):
    """Parse the model file (README, "The model file"): config slots and tensors (as dtype)."""
    with open(path, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
        # as clip.c maps it: pages this reads back into the cache stay 2 MiB ones, so that a
        # benchmark's other side does not leave clip.c a file cached in 4 KiB pages
        mm.madvise(mmap.MADV_HUGEPAGE)
    raw = np.frombuffer(mm, dtype=np.uint8)
    head = bytes(raw[:512])
    assert head[:8] == b"CLIPCMOD", "not a clip.c model file"
    idx_off, count = struct.unpack_from("<QI", head, 40)
    s = lambda k: struct.unpack_from("<i", head, 56 + 4 * k)[0]
    f = lambda k: struct.unpack_from("<f", head, 56 + 4 * k)[0]
    cfg = dict(proj=s(0), v_d=s(1), v_heads=s(2), v_layers=s(3), v_act=s(5), v_eps=f(6), patch=s(7), size=s(8),
               t_d=s(10), t_heads=s(11), t_layers=s(12), t_act=s(14), t_eps=f(15), eos=s(18))
    tensors = {}
    for t in range(count):
        e = bytes(raw[idx_off + 128 * t: idx_off + 128 * (t + 1)])
        name = e[:96].rstrip(b"\0").decode()
        ndim = struct.unpack_from("<I", e, 100)[0]
        shape = struct.unpack_from("<4I", e, 104)[:ndim]
        off = struct.unpack_from("<Q", e, 120)[0]
        n = int(np.prod(shape)) if ndim else 1
        tensors[name] = np.frombuffer(raw, dtype="<f4", count=n, offset=off).reshape(shape).astype(dtype)
    return cfg, tensors


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def act(x, kind):
    if kind == 0:
        return x / (1 + np.exp(-1.702 * x))
    from math import erf
    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


def encoder(x, T, prefix, layers, heads, kind, eps, causal):
    n, d = x.shape
    hd = d // heads
    mask = np.triu(np.full((n, n), -np.inf), 1) if causal else np.zeros((n, n))
    for l in range(layers):
        p = f"{prefix}.encoder.layers.{l}."
        lin = lambda h, name: h @ T[p + name + ".weight"].T + T[p + name + ".bias"]
        h = layer_norm(x, T[p + "layer_norm1.weight"], T[p + "layer_norm1.bias"], eps)
        q = lin(h, "self_attn.q_proj") * hd ** -0.5
        k, v = lin(h, "self_attn.k_proj"), lin(h, "self_attn.v_proj")
        out = np.zeros_like(q)
        for i in range(heads):
            sl = slice(i * hd, (i + 1) * hd)
            s = q[:, sl] @ k[:, sl].T + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            out[:, sl] = (s / s.sum(-1, keepdims=True)) @ v[:, sl]
        x = x + lin(out, "self_attn.out_proj")
        h = layer_norm(x, T[p + "layer_norm2.weight"], T[p + "layer_norm2.bias"], eps)
        x = x + lin(act(lin(h, "mlp.fc1"), kind), "mlp.fc2")
    return x


def text_features(cfg, T, ids):
    ids = np.asarray(ids)
    x = T["text_model.embeddings.token_embedding.weight"][ids] + T["text_model.embeddings.position_embedding.weight"][: len(ids)]
    x = encoder(x, T, "text_model", cfg["t_layers"], cfg["t_heads"], cfg["t_act"], cfg["t_eps"], True)
    x = layer_norm(x, T["text_model.final_layer_norm.weight"], T["text_model.final_layer_norm.bias"], cfg["t_eps"])
    pool = int(ids.argmax()) if cfg["eos"] == 2 else int(np.nonzero(ids == cfg["eos"])[0][0])
    return x[pool] @ T["text_projection.weight"].T


def image_features(cfg, T, pixels):
    p, S = cfg["patch"], cfg["size"]
    g = S // p
    px = np.asarray(pixels, np.float64).reshape(3, g, p, g, p).transpose(1, 3, 0, 2, 4).reshape(g * g, 3 * p * p)
    w = T["vision_model.embeddings.patch_embedding.weight"].reshape(cfg["v_d"], -1)
    x = np.concatenate([T["vision_model.embeddings.class_embedding"][None], px @ w.T])
    x = x + T["vision_model.embeddings.position_embedding.weight"]
    x = layer_norm(x, T["vision_model.pre_layrnorm.weight"], T["vision_model.pre_layrnorm.bias"], cfg["v_eps"])
    x = encoder(x, T, "vision_model", cfg["v_layers"], cfg["v_heads"], cfg["v_act"], cfg["v_eps"], False)
    pooled = layer_norm(x[0], T["vision_model.post_layernorm.weight"], T["vision_model.post_layernorm.bias"], cfg["v_eps"])
    return pooled @ T["visual_projection.weight"].T


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--ids")
    ap.add_argument("--pixel-values")
    a = ap.parse_args()
    cfg, T = load(a.model)
    np.set_printoptions(precision=9, linewidth=200)
    if a.ids:
        print("text", text_features(cfg, T, [int(t) for t in a.ids.split()]))
    if a.pixel_values:
        print("image", image_features(cfg, T, np.load(a.pixel_values)[0]))
    sys.exit(0)
