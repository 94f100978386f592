"""train.c's backward pass against PyTorch's autograd, tensor by tensor.

`train gradcheck` builds a small CLIP (two towers of different widths, weights moved off their
initial values, random pixel values and ids), runs one forward and backward in float32 and writes
the weights, the inputs, the loss and every gradient. This test rebuilds the same model in PyTorch
from config.json and model.safetensors, written here from Hugging Face's modeling_clip.py
(CLIPModel with return_loss=True), computes the loss and its gradients in float64 with autograd, and
compares: for every parameter tensor, max |grad_c - grad_torch| / max |grad_torch| must stay below
1e-3 (train.c computes in float32; the reference in float64). The k_proj biases, whose gradient is
exactly zero (the softmax ignores a shift shared by a row), are measured against their weight's
gradient instead.

Two configurations: quick_gelu with pooling at the largest id (text_config.eos_token_id == 2, the
legacy rule), and gelu with pooling at the first eos id. The ids put the largest id and the eos id
at different positions, so a wrong pooling rule changes the gradients.
"""
import json
import os
import struct

from common import OUT, ROOT, Report, need_module, run

np = need_module("numpy", "NumPy")
torch = need_module("torch", "PyTorch", "apt-get install python3-torch")
F = need_module("torch.nn.functional", "PyTorch", "apt-get install python3-torch")

TOLERANCE = 1e-3
DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack_from("<Q", raw, 0)[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a: 8 + n + b], dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
    return out


def layer_norm(x, W, name, eps):
    return F.layer_norm(x, x.shape[-1:], W[name + ".weight"], W[name + ".bias"], eps)


def encoder(x, W, prefix, cfg, causal):
    """CLIPEncoder: pre-norm layers, q scaled by head_dim^-0.5, optional causal mask."""
    B, T, d = x.shape
    H = cfg["num_attention_heads"]
    hd = d // H
    act = (lambda v: v * torch.sigmoid(1.702 * v)) if cfg["hidden_act"] == "quick_gelu" else F.gelu
    mask = torch.zeros(T, T, dtype=x.dtype)
    if causal:
        mask = torch.triu(torch.full((T, T), float("-inf"), dtype=x.dtype), 1)
    eps = cfg["layer_norm_eps"]
    for l in range(cfg["num_hidden_layers"]):
        p = f"{prefix}.encoder.layers.{l}."
        lin = lambda h, n: F.linear(h, W[p + n + ".weight"], W[p + n + ".bias"])
        h = layer_norm(x, W, p + "layer_norm1", eps)
        q = (lin(h, "self_attn.q_proj") * hd ** -0.5).view(B, T, H, hd).transpose(1, 2)
        k = lin(h, "self_attn.k_proj").view(B, T, H, hd).transpose(1, 2)
        v = lin(h, "self_attn.v_proj").view(B, T, H, hd).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(-1, -2) + mask, dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(B, T, d)
        x = x + lin(ctx, "self_attn.out_proj")
        h = layer_norm(x, W, p + "layer_norm2", eps)
        x = x + lin(act(lin(h, "mlp.fc1")), "mlp.fc2")
    return x


def clip_loss(W, cfg, pixels, ids):
    """CLIPModel(input_ids, pixel_values, return_loss=True).loss"""
    tc, vc = cfg["text_config"], cfg["vision_config"]
    T = ids.shape[1]
    x = W["text_model.embeddings.token_embedding.weight"][ids] + W["text_model.embeddings.position_embedding.weight"][:T]
    x = encoder(x, W, "text_model", tc, True)
    x = layer_norm(x, W, "text_model.final_layer_norm", tc["layer_norm_eps"])
    if tc["eos_token_id"] == 2:
        pool = ids.argmax(dim=-1)
    else:
        pool = (ids == tc["eos_token_id"]).int().argmax(dim=-1)
    text = F.linear(x[torch.arange(ids.shape[0]), pool], W["text_projection.weight"])

    p = vc["patch_size"]
    patches = F.conv2d(pixels, W["vision_model.embeddings.patch_embedding.weight"], stride=p).flatten(2).transpose(1, 2)
    cls = W["vision_model.embeddings.class_embedding"].expand(pixels.shape[0], 1, -1)
    x = torch.cat([cls, patches], dim=1) + W["vision_model.embeddings.position_embedding.weight"]
    x = layer_norm(x, W, "vision_model.pre_layrnorm", vc["layer_norm_eps"])
    x = encoder(x, W, "vision_model", vc, False)
    pooled = layer_norm(x[:, 0], W, "vision_model.post_layernorm", vc["layer_norm_eps"])
    image = F.linear(pooled, W["visual_projection.weight"])

    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    logits_per_text = W["logit_scale"].exp() * text @ image.t()
    target = torch.arange(ids.shape[0])
    return (F.cross_entropy(logits_per_text, target) + F.cross_entropy(logits_per_text.t(), target)) / 2


R = Report("gradcheck")
run(["make", "-s", "-C", ROOT, "train"])
for act, pool in [("quick_gelu", "argmax"), ("gelu", "eos")]:
    d = os.path.join(OUT, f"gradcheck_{act}_{pool}")
    print(run([os.path.join(ROOT, "train"), "gradcheck", "--act", act, "--pool", pool, "-o", d]).stdout.decode().strip())
    cfg = json.load(open(os.path.join(d, "config.json")))
    weights = read_safetensors(os.path.join(d, "model.safetensors"))
    grads = read_safetensors(os.path.join(d, "grads.safetensors"))
    inputs = read_safetensors(os.path.join(d, "inputs.safetensors"))
    W = {k: torch.tensor(v.astype(np.float64), requires_grad=True) for k, v in weights.items()}
    ids = torch.tensor(inputs["input_ids"])
    text_pool = ids.argmax(-1) if cfg["text_config"]["eos_token_id"] == 2 else (ids == cfg["text_config"]["eos_token_id"]).int().argmax(-1)
    other = (ids == 47).int().argmax(-1) if cfg["text_config"]["eos_token_id"] == 2 else ids.argmax(-1)
    R.check(bool((text_pool != other).all()), f"{act}/{pool}: the two pooling rules pick different tokens "
            f"({text_pool.tolist()} vs {other.tolist()})")
    loss = clip_loss(W, cfg, torch.tensor(inputs["pixel_values"].astype(np.float64)), ids)
    loss.backward()
    loss_c = float(inputs["loss"])
    R.check(abs(loss_c - loss.item()) <= 1e-5 * abs(loss.item()),
            f"{act}/{pool}: loss {loss_c:.9f} (train.c, float32) vs {loss.item():.9f} (PyTorch, float64)")
    R.check(set(grads) == set(W), f"{act}/{pool}: train.c has a gradient for each of the {len(W)} parameter tensors")
    worst = []
    for name in sorted(W):
        ref = W[name].grad.numpy()
        scale = np.abs(ref).max()
        if name.endswith("k_proj.bias"):
            # Exactly zero in exact arithmetic: adding b to every key adds q.b to every score of a
            # row, which the softmax ignores. Both sides hold rounding noise (PyTorch about 1e-18,
            # float32 about 1e-9), so the error is measured against the k_proj weight's gradients.
            zero_noise = scale
            scale = np.abs(W[name.replace(".bias", ".weight")].grad.numpy()).max()
            R.check(zero_noise < 1e-12 * scale, f"{act}/{pool}: {name}: PyTorch's gradient is 0 up to rounding "
                    f"({zero_noise:.1e})", quiet=True)
        err = np.abs(grads[name].astype(np.float64) - ref).max() / (scale if scale > 0 else 1.0)
        worst.append((err, name, scale))
        R.check(err <= TOLERANCE and scale > 0, f"{act}/{pool}: {name} max rel err {err:.2e} (|grad| up to {scale:.2e})",
                quiet=err <= TOLERANCE and scale > 0)
    worst.sort(reverse=True)
    print(f"{act}/{pool}: {len(worst)} tensors, max relative error {worst[0][0]:.2e} ({worst[0][1]}); "
          f"median {sorted(w[0] for w in worst)[len(worst) // 2]:.2e}")
    for err, name, scale in worst[:3]:
        print(f"    {err:.2e}  {name}")
R.finish()
