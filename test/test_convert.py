"""convert.py: every golden model folder converted and read back independently.

The output file is parsed here with struct/numpy (not with convert.py's code) and
every tensor is compared with the source checkpoint, read here with numpy. Also:
sharded / bfloat16 / hand-built pytorch_model.bin inputs, the restricted
unpickler, the hub download path against a local HTTP server, error handling and
--synthetic. Needs NumPy (skipped without it, exit 77); convert.py itself is run
with `-S` (no site-packages), so it can only use the standard library.
"""
import atexit
import hashlib
import http.server
import json
import math
import mmap
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import types
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import GOLDEN, ROOT, Report, need_module  # noqa: E402

np = need_module("numpy", "NumPy")

CONVERT = os.path.join(ROOT, "convert.py")
MODELS = os.path.join(GOLDEN, "models")
R = Report("convert")
TMP = tempfile.mkdtemp(prefix="clip-convert-test-")
atexit.register(shutil.rmtree, TMP, True)


def convert(*args, env=None, python=None):
    """Run convert.py with the standard library only; return (rc, stdout, stderr)."""
    cmd = [python] if python else [sys.executable, "-S"]
    full_env = dict(os.environ)
    full_env.update(env or {})
    p = subprocess.run(cmd + [CONVERT, *map(str, args)], capture_output=True, env=full_env, timeout=300)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


# ---------------------------------------------------------------------------
# Independent readers: the model file and safetensors
# ---------------------------------------------------------------------------

def parse_model(path):
    """Parse a model file per the v1 format; raise AssertionError on any layout fault."""
    with open(path, "rb") as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    m = {}
    (magic, version, header_bytes, file_bytes, tok_off, tok_bytes, idx_off, n_tensors,
     flags) = struct.unpack_from("<8sIIQQQQII", data, 0)
    assert magic == b"CLIPCMOD", "magic"
    assert version == 1 and header_bytes == 512, "version/header_bytes"
    assert file_bytes == len(data), "file_bytes %d != size %d" % (file_bytes, len(data))
    assert tok_off % 8 == 0 and idx_off % 8 == 0, "section alignment"
    assert tok_off >= 512 and tok_off + tok_bytes <= idx_off, "tokenizer section placement"
    m["flags"] = flags
    m["i"] = struct.unpack_from("<64i", data, 56)
    m["f"] = struct.unpack_from("<64f", data, 56)
    assert all(v == 0 for v in m["i"][33:]), "reserved slots not zero"
    raw_name = data[312:440]
    assert raw_name[-1] == 0, "name not NUL terminated"
    m["name"] = raw_name.rstrip(b"\0").decode("utf-8")
    assert data[440:512] == bytes(72), "header tail not zero"

    tok = data[tok_off:tok_off + tok_bytes]
    n_vocab, n_merges, n_added, blob_bytes = struct.unpack_from("<4I", tok, 0)
    bos, eos, pad, unk, ctx = struct.unpack_from("<5i", tok, 16)
    assert tok_bytes == 36 + 4 * (n_vocab + 1) + 12 * n_merges + 4 * n_added + blob_bytes, "tokenizer_bytes"
    offs = np.frombuffer(tok, "<u4", n_vocab + 1, 36)
    assert offs[0] == 0 and offs[-1] == blob_bytes and np.all(np.diff(offs.astype(np.int64)) >= 0), "offsets"
    p = 36 + 4 * (n_vocab + 1)
    merges = np.frombuffer(tok, "<i4", 3 * n_merges, p).reshape(-1, 3)
    p += 12 * n_merges
    added = np.frombuffer(tok, "<i4", n_added, p)
    blob = tok[p + 4 * n_added:]
    assert len(blob) == blob_bytes
    m["tok_section"] = tok
    m["vocab"] = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_vocab)]
    m["merges"], m["added"] = merges, added
    m["special"] = dict(bos=bos, eos=eos, pad=pad, unk=unk, ctx=ctx)

    tensors, names, end = {}, [], idx_off + 128 * n_tensors
    for k in range(n_tensors):
        e = data[idx_off + 128 * k: idx_off + 128 * (k + 1)]
        assert e[95] == 0, "tensor name not NUL terminated"
        name = e[:96].rstrip(b"\0").decode("utf-8")
        dtype, ndim, s0, s1, s2, s3, off = struct.unpack_from("<6IQ", e, 96)
        shape = (s0, s1, s2, s3)[:ndim]
        assert dtype == 0 and ndim <= 4 and all(s == 0 for s in (s0, s1, s2, s3)[ndim:]), name
        assert off % 64 == 0 and off >= end, "tensor %s offset %d (previous end %d)" % (name, off, end)
        assert data[end:off] == bytes(off - end), "padding before %s not zero" % name
        n = int(np.prod(shape)) if ndim else 1
        end = off + 4 * n
        assert end <= len(data), "tensor %s runs past the file" % name
        tensors[name] = np.frombuffer(data, "<f4", n, off).reshape(shape)
        names.append(name)
    assert end == file_bytes, "file does not end at the last tensor"
    assert len(set(names)) == len(names), "duplicate tensor names"
    m["tensors"], m["names"] = tensors, names
    if len(data) < (100 << 20):
        m["data_region"] = data[idx_off:]       # index + tensor data (everything but header/tokenizer)
    return m


def read_safetensors(path):
    """name -> float32 numpy array, widened from F16 / BF16 here with numpy."""
    raw = open(path, "rb").read()
    n = struct.unpack_from("<Q", raw)[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        buf = raw[8 + n + a: 8 + n + b]
        dt = info["dtype"]
        if dt == "F32":
            x = np.frombuffer(buf, "<f4")
        elif dt == "F16":
            x = np.frombuffer(buf, "<f2").astype(np.float32)
        elif dt == "BF16":
            x = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            continue
        out[name] = x.reshape(info["shape"])
    return out


def write_safetensors(path, tensors):
    """tensors: name -> (safetensors dtype, bytes, shape)."""
    header, pos, blobs = {}, 0, []
    for name, (dt, buf, shape) in tensors.items():
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [pos, pos + len(buf)]}
        pos += len(buf)
        blobs.append(buf)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def f32_tensors(path):
    """A float32 safetensors file as name -> (dtype, bytes, shape)."""
    return {k: ("F32", np.ascontiguousarray(v, "<f4").tobytes(), v.shape) for k, v in read_safetensors(path).items()}


def folder_like(src, dst, skip=()):
    """A copy of a model folder made of symlinks, minus `skip`."""
    os.makedirs(dst)
    for f in os.listdir(src):
        if f not in skip and f != "golden.npz":
            os.symlink(os.path.join(src, f), os.path.join(dst, f))
    return dst


def same_arrays(a, b):
    return a.shape == b.shape and a.tobytes() == b.tobytes()


# ---------------------------------------------------------------------------
# 1. Every golden model folder
# ---------------------------------------------------------------------------

ACT = {"quick_gelu": 0, "gelu": 1}
parsed = {}
for name in sorted(os.listdir(MODELS)):
    folder = os.path.join(MODELS, name)
    out = os.path.join(TMP, name + ".bin")
    t0 = time.time()
    rc, so, se = convert(folder, "-o", out)
    secs = time.time() - t0
    if not R.check(rc == 0 and os.path.isfile(out), "%s: converts (rc %d, %.2f s) %s" % (name, rc, secs, se.strip())):
        continue
    try:
        m, fault = parse_model(out), None
    except AssertionError as e:
        m, fault = None, e
    if not R.check(fault is None, "%s: output layout valid (%s), %d bytes, %d tensors" % (
            name, fault or "parsed independently", os.path.getsize(out), len(m["names"]) if m else 0)):
        continue
    parsed[name] = m
    cfg = json.load(open(os.path.join(folder, "config.json")))
    tc, vc = cfg["text_config"], cfg["vision_config"]
    pp = json.load(open(os.path.join(folder, "preprocessor_config.json")))
    I, F = m["i"], m["f"]
    want_i = {0: cfg["projection_dim"], 1: vc["hidden_size"], 2: vc["num_attention_heads"],
              3: vc["num_hidden_layers"], 4: vc["intermediate_size"], 5: ACT[vc["hidden_act"]],
              7: vc["patch_size"], 8: vc["image_size"], 9: vc["num_channels"], 10: tc["hidden_size"],
              11: tc["num_attention_heads"], 12: tc["num_hidden_layers"], 13: tc["intermediate_size"],
              14: ACT[tc["hidden_act"]], 16: tc["vocab_size"], 17: tc["max_position_embeddings"],
              18: tc["eos_token_id"], 19: pp["size"]["shortest_edge"], 20: pp["crop_size"]["height"],
              21: pp["crop_size"]["width"], 22: int(pp["do_resize"]), 23: int(pp["do_center_crop"]),
              24: int(pp["do_rescale"]), 25: int(pp["do_normalize"])}
    want_f = {6: vc["layer_norm_eps"], 15: tc["layer_norm_eps"], 26: pp["rescale_factor"],
              27: pp["image_mean"][0], 28: pp["image_mean"][1], 29: pp["image_mean"][2],
              30: pp["image_std"][0], 31: pp["image_std"][1], 32: pp["image_std"][2]}
    bad = [k for k, v in want_i.items() if I[k] != v] + \
          [k for k, v in want_f.items() if F[k] != struct.unpack("<f", struct.pack("<f", v))[0]]
    R.check(not bad, "%s: header slots match config.json / preprocessor_config.json (bad slots %s)" % (name, bad))
    R.check(m["name"] == name and m["flags"] == 0, "%s: source name %r, flags %d" % (name, m["name"], m["flags"]))

    # Tokenizer section vs the folder's own files.
    if os.path.isfile(os.path.join(folder, "vocab.json")):
        vocab = json.load(open(os.path.join(folder, "vocab.json"), encoding="utf-8"))
        lines = open(os.path.join(folder, "merges.txt"), encoding="utf-8").read().split("\n")
        merges = [ln.split(" ") for ln in lines[1:] if ln]
    else:
        tj = json.load(open(os.path.join(folder, "tokenizer.json"), encoding="utf-8"))
        vocab = dict(tj["model"]["vocab"])
        vocab.update({t["content"]: t["id"] for t in tj["added_tokens"]})
        merges = [mm.split(" ") if isinstance(mm, str) else mm for mm in tj["model"]["merges"]]
    want_vocab = [None] * (max(vocab.values()) + 1)
    for s, i in vocab.items():
        want_vocab[i] = s
    R.check(m["vocab"] == want_vocab, "%s: %d vocab strings identical by id" % (name, len(want_vocab)))
    want_merges = np.array([[vocab[a], vocab[b], vocab[a + b]] for a, b in merges], np.int32).reshape(-1, 3)
    R.check(np.array_equal(m["merges"], want_merges), "%s: %d merges in rank order" % (name, len(want_merges)))
    tcfg = json.load(open(os.path.join(folder, "tokenizer_config.json")))
    sp = {k: vocab[tcfg[k + "_token"]] for k in ("bos", "eos", "pad", "unk")}
    sp["ctx"] = tcfg["model_max_length"]
    R.check(m["special"] == sp, "%s: special ids %s (want %s)" % (name, m["special"], sp))
    R.check(sorted(m["added"].tolist()) == sorted({sp["bos"], sp["eos"], sp["pad"], sp["unk"]}),
            "%s: added (special) ids %s" % (name, m["added"].tolist()))

# Tensor data against the checkpoints.
def compare_tensors(name, src):
    m = parsed.get(name)
    if m is None:
        R.check(False, "%s: no converted output to compare" % name)
        return
    floats = {k: v for k, v in src.items()}
    missing = sorted(set(floats) - set(m["names"]))
    extra = sorted(set(m["names"]) - set(floats))
    R.check(not missing and not extra, "%s: tensor names match the checkpoint (missing %s, extra %s)"
            % (name, missing[:3], extra[:3]))
    diff = [k for k in floats if k in m["tensors"] and not same_arrays(m["tensors"][k], floats[k])]
    R.check(not diff, "%s: all %d tensors bit-identical to the source as float32 (differ: %s)"
            % (name, len(floats), diff[:3]))


for name in ("tiny-b32", "tiny-b16-gelu", "tiny-l14-336", "tiny-b32-fp16"):
    compare_tensors(name, read_safetensors(os.path.join(MODELS, name, "model.safetensors")))
if "tiny-b32-fp16" in parsed:
    raw = open(os.path.join(MODELS, "tiny-b32-fp16", "model.safetensors"), "rb").read()
    R.check(b'"F16"' in raw[:9000] and b'"F32"' not in raw[:9000], "tiny-b32-fp16: source really is float16")
    fp16 = parsed["tiny-b32-fp16"]["tensors"]
    R.check(all(same_arrays(v, v.astype(np.float16).astype(np.float32)) for v in fp16.values()),
            "tiny-b32-fp16: every converted value is exactly a float16 value")
if "tiny-b32" in parsed and "tiny-b32-pytorch-bin" in parsed:
    a, b = parsed["tiny-b32"], parsed["tiny-b32-pytorch-bin"]
    R.check(a["data_region"] == b["data_region"],
            "tiny-b32 (safetensors) and tiny-b32-pytorch-bin (pytorch_model.bin): identical tensor index and data")
    R.check(a["tok_section"] == b["tok_section"] and a["i"] == b["i"],
            "tiny-b32 and tiny-b32-pytorch-bin: identical tokenizer section and header slots")
    compare_tensors("tiny-b32-pytorch-bin", read_safetensors(os.path.join(MODELS, "tiny-b32", "model.safetensors")))

# The same tokenizer from vocab.json + merges.txt and from tokenizer.json alone.
tj_only = folder_like(os.path.join(MODELS, "tiny-b32"), os.path.join(TMP, "b32-tokjson"),
                      skip=("vocab.json", "merges.txt", "special_tokens_map.json"))
rc, _, se = convert(tj_only, "-o", os.path.join(TMP, "b32-tokjson.bin"))
if R.check(rc == 0, "tiny-b32 with tokenizer.json only converts %s" % se.strip()) and "tiny-b32" in parsed:
    m = parse_model(os.path.join(TMP, "b32-tokjson.bin"))
    R.check(m["tok_section"] == parsed["tiny-b32"]["tok_section"],
            "tokenizer section from vocab.json+merges.txt == from tokenizer.json (%d bytes, byte-identical)"
            % len(m["tok_section"]))
tokdir = os.path.join(GOLDEN, "tokenizer")
if os.path.isdir(tokdir) and "tiny-b32" in parsed:
    gold_vocab = json.load(open(os.path.join(tokdir, "vocab.json"), encoding="utf-8"))
    R.check(parsed["tiny-b32"]["vocab"][49406] == "<|startoftext|>" and
            len(parsed["tiny-b32"]["vocab"]) == len(gold_vocab) == 49408,
            "tiny-b32 vocabulary has the 49408 tokens of golden/tokenizer")


# ---------------------------------------------------------------------------
# 2. Inputs built here: sharded safetensors, bfloat16, float16 bit patterns,
#    legacy config layouts
# ---------------------------------------------------------------------------

b32 = os.path.join(MODELS, "tiny-b32")
b32_f32 = f32_tensors(os.path.join(b32, "model.safetensors"))

shard_dir = folder_like(b32, os.path.join(TMP, "sharded"), skip=("model.safetensors",))
names = list(b32_f32)
write_safetensors(os.path.join(shard_dir, "model-00001-of-00002.safetensors"),
                  {k: b32_f32[k] for k in names[::2]})
write_safetensors(os.path.join(shard_dir, "model-00002-of-00002.safetensors"),
                  {k: b32_f32[k] for k in names[1::2]})
json.dump({"metadata": {}, "weight_map": {k: "model-0000%d-of-00002.safetensors" % (1 + i % 2)
                                          for i, k in enumerate(names)}},
          open(os.path.join(shard_dir, "model.safetensors.index.json"), "w"))
rc, _, se = convert(shard_dir, "-o", os.path.join(TMP, "sharded.bin"))
if R.check(rc == 0, "sharded model.safetensors.index.json converts %s" % se.strip()) and "tiny-b32" in parsed:
    R.check(parse_model(os.path.join(TMP, "sharded.bin"))["data_region"] == parsed["tiny-b32"]["data_region"],
            "sharded safetensors: identical tensors to the single-file conversion")

# bfloat16, and float16 with every one of the 65536 bit patterns in the token embedding.
bf_dir = folder_like(b32, os.path.join(TMP, "bf16"), skip=("model.safetensors",))
bf = {}
for k, (dt, buf, shape) in b32_f32.items():
    u = np.frombuffer(buf, "<u4")
    bf[k] = ("BF16", (u >> 16).astype("<u2").tobytes(), shape)
write_safetensors(os.path.join(bf_dir, "model.safetensors"), bf)
rc, _, se = convert(bf_dir, "-o", os.path.join(TMP, "bf16.bin"))
if R.check(rc == 0, "bfloat16 safetensors converts %s" % se.strip()):
    got = parse_model(os.path.join(TMP, "bf16.bin"))["tensors"]
    bad = [k for k, (dt, buf, shape) in bf.items()
           if not same_arrays(got[k], (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view("<f4").reshape(shape))]
    R.check(not bad, "bfloat16: every tensor widened exactly (bad %s)" % bad[:3])

f16_dir = folder_like(b32, os.path.join(TMP, "f16bits"), skip=("model.safetensors",))
f16 = {k: ("F16", np.frombuffer(buf, "<f4").astype("<f2").tobytes(), shape) for k, (dt, buf, shape) in b32_f32.items()}
emb = "text_model.embeddings.token_embedding.weight"
bits = np.frombuffer(f16[emb][1], "<u2").copy()
bits[:65536] = np.arange(65536, dtype=np.uint16)
f16[emb] = ("F16", bits.tobytes(), f16[emb][2])
write_safetensors(os.path.join(f16_dir, "model.safetensors"), f16)
rc, _, se = convert(f16_dir, "-o", os.path.join(TMP, "f16bits.bin"))
if R.check(rc == 0, "float16 safetensors with all 65536 bit patterns converts %s" % se.strip()):
    got = parse_model(os.path.join(TMP, "f16bits.bin"))["tensors"][emb].reshape(-1)
    want = bits.view("<f2").astype(np.float32)
    nan = np.isnan(want)
    ok = np.array_equal(np.isnan(got), nan) and np.array_equal(got[~nan].view("<u4"), want[~nan].view("<u4"))
    sub = np.count_nonzero((bits[:65536] & 0x7C00) == 0) - 2
    R.check(ok, "float16 -> float32: all 65536 patterns exact (incl. %d subnormals, +-0, +-inf; nan stays nan)" % sub)

# Legacy layouts: missing config keys (transformers defaults), int size/crop,
# pad token given as {"content": ...}, merges as ["a", "b"] pairs.
leg = folder_like(b32, os.path.join(TMP, "legacy"),
                  skip=("config.json", "preprocessor_config.json", "tokenizer_config.json",
                        "vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer.json"))
cfg = json.load(open(os.path.join(b32, "config.json")))
for key in ("hidden_act", "layer_norm_eps", "eos_token_id", "max_position_embeddings", "vocab_size"):
    del cfg["text_config"][key]
for key in ("hidden_act", "layer_norm_eps", "num_channels", "image_size"):
    del cfg["vision_config"][key]
json.dump(cfg, open(os.path.join(leg, "config.json"), "w"))
json.dump({"size": 224, "crop_size": 224, "do_resize": True, "image_mean": 0.5, "image_std": [0.25, 0.5, 1.0]},
          open(os.path.join(leg, "preprocessor_config.json"), "w"))
json.dump({"pad_token": {"content": "!", "special": True}, "model_max_length": 1000000000000000019884624838656},
          open(os.path.join(leg, "tokenizer_config.json"), "w"))
tj = json.load(open(os.path.join(b32, "tokenizer.json"), encoding="utf-8"))
tj["model"]["merges"] = [mm.split(" ") if isinstance(mm, str) else mm for mm in tj["model"]["merges"]]
json.dump(tj, open(os.path.join(leg, "tokenizer.json"), "w"))
rc, _, se = convert(leg, "-o", os.path.join(TMP, "legacy.bin"))
if R.check(rc == 0, "legacy config layout converts %s" % se.strip()):
    m = parse_model(os.path.join(TMP, "legacy.bin"))
    I, F = m["i"], m["f"]
    R.check((I[5], I[14], I[18], I[17], I[16], I[9], I[8]) == (0, 0, 49407, 77, 49408, 3, 224)
            and F[6] == F[15] == np.float32(1e-5),
            "missing config keys take transformers' defaults (quick_gelu, 1e-5, eos 49407, 77, 49408, 3, 224)")
    R.check((I[19], I[20], I[21], I[22], I[23], I[24], I[25]) == (224, 224, 224, 1, 1, 1, 1)
            and F[26] == np.float32(1 / 255) and F[27:33] == (0.5, 0.5, 0.5, 0.25, 0.5, 1.0),
            "preprocessor: int size/crop, scalar mean, CLIPImageProcessor defaults")
    R.check(m["special"]["pad"] == 0 and m["special"]["ctx"] == 77 and 0 in m["added"].tolist(),
            "pad token as {\"content\": \"!\"} -> id 0 (added); huge model_max_length -> 77")
    if "tiny-b32" in parsed:
        R.check(np.array_equal(m["merges"], parsed["tiny-b32"]["merges"]), "merges given as [\"a\", \"b\"] pairs")


# ---------------------------------------------------------------------------
# 3. pytorch_model.bin built here: strided views, shared storages, half
#    storages, an integer buffer, Parameters, big-endian byte order; and the
#    restricted unpickler refusing code
# ---------------------------------------------------------------------------

class FakeStorage:
    def __init__(self, kind, key, data):
        self.kind, self.key, self.data = kind, key, data


def fake_torch():
    """Modules named like torch's so that pickle writes the globals torch.save writes."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*a):
        raise RuntimeError("never called")

    def _rebuild_parameter(*a):
        raise RuntimeError("never called")

    for fn in (_rebuild_tensor_v2, _rebuild_parameter):
        fn.__module__, fn.__qualname__ = "torch._utils", fn.__name__
        setattr(utils, fn.__name__, fn)
    for kind in ("FloatStorage", "HalfStorage", "LongStorage"):
        cls = type(kind, (), {"__module__": "torch"})
        setattr(torch, kind, cls)
    torch._utils = utils
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    return torch, utils


class FakeTensor:
    def __init__(self, storage, offset, size, stride, param=False):
        self.args = (storage, offset, tuple(size), tuple(stride), False, {})
        self.param = param

    def __reduce__(self):
        utils = sys.modules["torch._utils"]
        t = (utils._rebuild_tensor_v2, self.args)
        if self.param:
            inner = FakeTensor.__new__(FakeTensor)
            inner.args, inner.param = self.args, False
            return (utils._rebuild_parameter, (inner, False, {}))
        return t


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            size = {"FloatStorage": 4, "HalfStorage": 2, "LongStorage": 8}[obj.kind]
            return ("storage", getattr(sys.modules["torch"], obj.kind), obj.key, "cpu", len(obj.data) // size)
        return None


def write_torch_zip(path, state, storages, big_endian=False, prefix="archive"):
    import io
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(state)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(prefix + "/data.pkl", buf.getvalue())
        z.writestr(prefix + "/byteorder", "big" if big_endian else "little")
        for s in storages:
            data = s.data
            if big_endian:
                size = {"FloatStorage": 4, "HalfStorage": 2, "LongStorage": 8}[s.kind]
                data = np.frombuffer(data, np.dtype("<u%d" % size)).astype(np.dtype(">u%d" % size)).tobytes()
            z.writestr(prefix + "/data/" + s.key, data)
        z.writestr(prefix + "/version", "3\n")


torch_mod, utils_mod = fake_torch()
src = read_safetensors(os.path.join(b32, "model.safetensors"))
want = {}
state, storages = {}, []
fc1, fc2 = "text_model.encoder.layers.0.mlp.fc1.weight", "text_model.encoder.layers.0.mlp.fc2.weight"
ln_w, ln_b = "vision_model.pre_layrnorm.weight", "vision_model.pre_layrnorm.bias"
half = "vision_model.encoder.layers.1.mlp.fc2.weight"
for i, (k, v) in enumerate(src.items()):
    if k in (ln_b,):
        continue
    if k == fc1:            # stored transposed: storage holds fc1.T, the tensor is a strided view
        s = FakeStorage("FloatStorage", "t%d" % i, np.ascontiguousarray(v.T).tobytes())
        state[k] = FakeTensor(s, 0, v.shape, (1, v.shape[0]))
    elif k == fc2:          # a column slice of a wider storage: offset 3, row stride 200
        wide = np.zeros((v.shape[0], 200), np.float32)
        wide[:, 3:3 + v.shape[1]] = v
        s = FakeStorage("FloatStorage", "t%d" % i, wide.tobytes())
        state[k] = FakeTensor(s, 3, v.shape, (200, 1))
    elif k == ln_w:         # weight and bias share one storage, the bias at an offset
        s = FakeStorage("FloatStorage", "t%d" % i, np.concatenate([v, src[ln_b]]).tobytes())
        state[k] = FakeTensor(s, 0, v.shape, (1,), param=True)
        state[ln_b] = FakeTensor(s, v.shape[0], src[ln_b].shape, (1,), param=True)
        want[ln_b] = src[ln_b]
    elif k == half:         # a float16 storage
        h = v.astype(np.float16)
        s = FakeStorage("HalfStorage", "t%d" % i, h.tobytes())
        state[k] = FakeTensor(s, 0, v.shape, (v.shape[1], 1))
        v = h.astype(np.float32)
    else:
        s = FakeStorage("FloatStorage", "t%d" % i, np.ascontiguousarray(v).tobytes())
        st = tuple(int(np.prod(v.shape[j + 1:])) for j in range(v.ndim))
        state[k] = FakeTensor(s, 0, v.shape, st)
    storages.append(s)
    want[k] = v
pos_ids = FakeStorage("LongStorage", "ids", np.arange(77, dtype="<i8").tobytes())
storages.append(pos_ids)
state["text_model.embeddings.position_ids"] = FakeTensor(pos_ids, 0, (1, 77), (77, 1))
for order in ("little", "big"):
    d = folder_like(b32, os.path.join(TMP, "torch-" + order), skip=("model.safetensors",))
    write_torch_zip(os.path.join(d, "pytorch_model.bin"), state, storages, big_endian=(order == "big"),
                    prefix="weird_name_" + order)
    rc, _, se = convert(d, "-o", os.path.join(TMP, "torch-%s.bin" % order))
    if R.check(rc == 0, "hand-built pytorch_model.bin (%s-endian) converts %s" % (order, se.strip()[:200])):
        got = parse_model(os.path.join(TMP, "torch-%s.bin" % order))["tensors"]
        bad = [k for k in want if not same_arrays(got[k], want[k])]
        R.check(not bad and set(got) == set(want),
                "pytorch_model.bin (%s-endian): transposed / offset / shared / half storages exact, "
                "position_ids skipped (bad %s)" % (order, bad[:3]))
for mod in ("torch", "torch._utils"):
    del sys.modules[mod]


class Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


marker = os.path.join(TMP, "pwned")
for label, payload in (("os.system", Evil(os.system, "touch " + marker)),
                       ("builtins.eval", Evil(eval, "open(%r, 'w').close()" % marker)),
                       ("builtins.exec (inside a state dict)", {"logit_scale": Evil(exec, "open(%r,'w')" % marker)})):
    d = folder_like(b32, os.path.join(TMP, "evil-%d" % len(os.listdir(TMP))), skip=("model.safetensors",))
    import io
    buf = io.BytesIO()
    pickle.Pickler(buf, protocol=2).dump(payload)
    with zipfile.ZipFile(os.path.join(d, "pytorch_model.bin"), "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
    out = os.path.join(TMP, "evil.bin")
    rc, _, se = convert(d, "-o", out)
    R.check(rc == 1 and "refusing" in se and se.startswith("convert.py: error:") and
            not os.path.exists(marker) and not os.path.exists(out),
            "restricted unpickler refuses a pickle calling %s: %s" % (label, se.strip()))

# A memo index of 2^31 - 1 would make the C unpickler allocate gigabytes: refused before unpickling.
d = folder_like(b32, os.path.join(TMP, "memo-bomb"), skip=("model.safetensors",))
with zipfile.ZipFile(os.path.join(d, "pytorch_model.bin"), "w") as z:
    z.writestr("archive/data.pkl", b"\x80\x02}r\xff\xff\xff\x7f.")
t0 = time.time()
rc, _, se = convert(d, "-o", os.path.join(TMP, "memo.bin"))
R.check(rc == 1 and "memo index" in se and time.time() - t0 < 10,
        "a pickle with a huge memo index is refused before unpickling: %s" % se.strip())


# ---------------------------------------------------------------------------
# 4. Hub download from a local HTTP server laid out as /{repo}/resolve/main/{file}
# ---------------------------------------------------------------------------

SEEN = []


class Hub(http.server.BaseHTTPRequestHandler):
    files = {}

    def log_message(self, *a):
        pass

    def do_GET(self):
        SEEN.append((self.path, self.headers.get("Authorization")))
        if self.path.endswith(("/resolve/main/model.safetensors", "/resolve/main/vocab.json")) \
                and not self.path.startswith("/lfs/"):
            # Large files redirect, as on the hub: model.safetensors to another host
            # name (the token must not follow), vocab.json within the same host.
            host = "localhost:%d" % port if self.path.endswith("safetensors") else ""
            self.send_response(302)
            self.send_header("Location", ("http://" + host if host else "") + "/lfs" + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path = self.files.get(self.path[4:] if self.path.startswith("/lfs/") else self.path)
        if path is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = open(path, "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


for f in os.listdir(b32):
    Hub.files["/test-org/tiny-clip/resolve/main/" + f] = os.path.join(b32, f)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
port = server.server_address[1]
threading.Thread(target=server.serve_forever, daemon=True).start()
hub_env = {"HF_ENDPOINT": "http://127.0.0.1:%d" % port, "HF_TOKEN": "test-token-123",
           "CLIP_CACHE_DIR": os.path.join(TMP, "cache")}
out = os.path.join(TMP, "hub.bin")
rc, _, se = convert("test-org/tiny-clip", "-o", out, env=hub_env)
if R.check(rc == 0, "hub id test-org/tiny-clip downloads and converts (rc %d) %s" % (rc, se.strip().splitlines()[-1:])) and "tiny-b32" in parsed:
    m = parse_model(out)
    R.check(m["data_region"] == parsed["tiny-b32"]["data_region"] and
            m["tok_section"] == parsed["tiny-b32"]["tok_section"] and m["name"] == "test-org/tiny-clip",
            "hub conversion equals the local conversion; name %r" % m["name"])
    progress = [ln for ln in se.splitlines() if "model.safetensors" in ln and "%" in ln and "MB/s" in ln]
    R.check(bool(progress), "progress line printed: %r" % (progress[-1] if progress else None))
    auth = {p: a for p, a in SEEN}
    R.check(auth.get("/test-org/tiny-clip/resolve/main/config.json") == "Bearer test-token-123" and
            auth.get("/lfs/test-org/tiny-clip/resolve/main/vocab.json") == "Bearer test-token-123",
            "HF_TOKEN sent as a Bearer header (also after a same-host redirect)")
    R.check("/lfs/test-org/tiny-clip/resolve/main/model.safetensors" in auth and
            auth["/lfs/test-org/tiny-clip/resolve/main/model.safetensors"] is None,
            "HF_TOKEN not sent to another host after a redirect")
    R.check(os.path.isfile(os.path.join(TMP, "cache", "test-org", "tiny-clip", "model.safetensors")),
            "downloads kept in CLIP_CACHE_DIR/OWNER/NAME")
out = os.path.join(TMP, "hub404.bin")
rc, _, se = convert("test-org/no-such-model", "-o", out, env=hub_env)
R.check(rc == 1 and se.startswith("convert.py: error:") and "not found" in se and len(se.strip().splitlines()) == 1
        and not os.path.exists(out), "a missing repo gives one sentence: %s" % se.strip())
server.shutdown()
server.server_close()
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
rc, _, se = convert("test-org/tiny-clip-2", "-o", out,
                    env=dict(hub_env, HF_ENDPOINT="http://127.0.0.1:%d" % dead))
R.check(rc == 1 and "HF_ENDPOINT" in se and len(se.strip().splitlines()) == 1 and not os.path.exists(out),
        "no network: one sentence saying what to do: %s" % se.strip())


# ---------------------------------------------------------------------------
# 5. Errors: exit 1 (bad input) or 2 (usage), one line, no output left behind
# ---------------------------------------------------------------------------

def expect_error(label, args, code=1, contains=""):
    outdir = tempfile.mkdtemp(dir=TMP)
    out = os.path.join(outdir, "model.bin")
    rc, so, se = convert(*args, "-o", out)
    lines = se.strip().splitlines()
    R.check(rc == code and len(lines) == 1 and lines[0].startswith("convert.py: error:") and contains in se
            and "Traceback" not in se and os.listdir(outdir) == [],
            "%s: exit %d, %s" % (label, rc, se.strip()))


expect_error("missing folder", [os.path.join(TMP, "no", "such", "folder")])
expect_error("folder without weights", [folder_like(b32, os.path.join(TMP, "noweights"), skip=("model.safetensors",))],
             contains="no weights")
raw = open(os.path.join(b32, "model.safetensors"), "rb").read()
n = struct.unpack_from("<Q", raw)[0]


def edit_header(old, new):
    """The tiny-b32 safetensors with one edit in its JSON header (length prefix kept right)."""
    h = raw[8:8 + n]
    assert old in h
    h = h.replace(old, new, 1)
    return struct.pack("<Q", len(h)) + h + raw[8 + n:]


corrupt = {
    "header length past the end": struct.pack("<Q", len(raw)) + raw[8:],
    "header not JSON": raw[:8] + b"x" + raw[9:],
    "offsets out of range": edit_header(b'"data_offsets":[4,9860]', b'"data_offsets":[4,999999999]'),
    "negative offset": edit_header(b'"data_offsets":[4,9860]', b'"data_offsets":[-4,9860]'),
    "unknown dtype": edit_header(b'"dtype":"F32","shape":[77,32]', b'"dtype":"F31","shape":[77,32]'),
    "truncated file": raw[:len(raw) // 2],
    "shape and byte length disagree": edit_header(b'"shape":[77,32]', b'"shape":[77,33]'),
}
for label, data in corrupt.items():
    d = folder_like(b32, os.path.join(TMP, "corrupt-%d" % len(os.listdir(TMP))), skip=("model.safetensors",))
    open(os.path.join(d, "model.safetensors"), "wb").write(data)
    expect_error("corrupt safetensors (%s)" % label, [d])
d = folder_like(b32, os.path.join(TMP, "missing-tensor"), skip=("model.safetensors",))
write_safetensors(os.path.join(d, "model.safetensors"),
                  {k: v for k, v in b32_f32.items() if k != "text_model.encoder.layers.1.mlp.fc2.bias"})
expect_error("missing tensor", [d], contains="text_model.encoder.layers.1.mlp.fc2.bias")
d = folder_like(b32, os.path.join(TMP, "bad-shape"), skip=("model.safetensors",))
t = dict(b32_f32)
t["visual_projection.weight"] = ("F32", bytes(4 * 24 * 63), (24, 63))
write_safetensors(os.path.join(d, "model.safetensors"), t)
expect_error("wrong tensor shape", [d], contains="visual_projection.weight")
for act in ("gelu_new", "relu"):
    d = folder_like(b32, os.path.join(TMP, "act-" + act), skip=("config.json",))
    cfg = json.load(open(os.path.join(b32, "config.json")))
    cfg["vision_config"]["hidden_act"] = act
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    expect_error("hidden_act %s" % act, [d], contains=act)
d = folder_like(os.path.join(MODELS, "tiny-l14-336"), os.path.join(TMP, "bad-crop"),
                skip=("preprocessor_config.json",))
os.symlink(os.path.join(b32, "preprocessor_config.json"), os.path.join(d, "preprocessor_config.json"))
expect_error("224-pixel crop for a 336-pixel model", [d], contains="336")
d = folder_like(b32, os.path.join(TMP, "bad-json"), skip=("config.json",))
open(os.path.join(d, "config.json"), "w").write("{not json")
expect_error("config.json not JSON", [d])
expect_error("usage: no input", [], code=2)
expect_error("usage: --seed without --synthetic", [b32, "--seed", "3"], code=2)
expect_error("usage: unknown --synthetic", ["--synthetic", "ViT-X/99"], code=2)
rc, so, se = convert("--help")
R.check(rc == 0 and all(s in so for s in ("HF_ENDPOINT", "HF_TOKEN", "CLIP_CACHE_DIR", "--synthetic",
                                          "model.safetensors", "pytorch_model.bin", "Examples")),
        "--help explains inputs, outputs, examples and environment")

# The `python3` on PATH (may differ from this interpreter) gives the same file.
path_py = shutil.which("python3")
if path_py and "tiny-b32" in parsed:
    out = os.path.join(TMP, "pathpy.bin")
    rc, _, se = convert(os.path.join(MODELS, "tiny-b32"), "-o", out, python=path_py)
    R.check(rc == 0 and open(out, "rb").read() == open(os.path.join(TMP, "tiny-b32.bin"), "rb").read(),
            "%s (%s) writes the identical file %s" % (path_py, subprocess.run(
                [path_py, "--version"], capture_output=True, text=True).stdout.strip(), se.strip()))


# ---------------------------------------------------------------------------
# 6. --synthetic ViT-B/32: full size, fast, plausible values
# ---------------------------------------------------------------------------

out = os.path.join(TMP, "synthetic-b32.bin")
t0 = time.time()
rc, so, se = convert("--synthetic", "ViT-B/32", "-o", out)
secs = time.time() - t0
if R.check(rc == 0, "--synthetic ViT-B/32 writes %.1f MB in %.1f s %s" % (
        os.path.getsize(out) / 1e6 if rc == 0 else 0, secs, se.strip())):
    R.check(secs < 30, "--synthetic ViT-B/32 takes under 30 s (%.1f s)" % secs)
    m = parse_model(out)
    I = m["i"]
    R.check(I[:5] == (512, 768, 12, 12, 3072) and I[7:14] == (32, 224, 3, 512, 8, 12, 2048)
            and I[16:22] == (49408, 77, 2, 224, 224, 224) and m["flags"] & 1
            and m["name"] == "synthetic ViT-B/32 (seed 0)",
            "synthetic header: ViT-B/32 shapes, flag bit 0, name %r" % m["name"])
    nparams = sum(int(np.prod(v.shape)) for v in m["tensors"].values())
    R.check(nparams == 151277313 and len(m["names"]) == 398,
            "synthetic ViT-B/32 has CLIPModel's 151277313 parameters in 398 tensors (%d in %d)"
            % (nparams, len(m["names"])))
    T = m["tensors"]
    w = np.abs(T["vision_model.encoder.layers.5.mlp.fc1.weight"])
    g = T["text_model.encoder.layers.3.layer_norm1.weight"]
    b = np.abs(T["vision_model.encoder.layers.0.self_attn.q_proj.bias"])
    std = float(T["text_model.embeddings.token_embedding.weight"][:1000].std())
    R.check(w.min() >= 2 ** -7 and w.max() < 2 ** -5 and g.min() >= 1 and g.max() < 1.0625
            and b.max() < 2 ** -9 and 0.01 < std < 0.03
            and T["logit_scale"] == np.float32(math.log(100)),
            "synthetic values: weights std %.4f, |w| in [2^-7, 2^-5), gains in [1, 1.0625), small biases, "
            "logit_scale ln 100" % std)
    # Deterministic: seed 0 gives SHAKE-256("0:" + name) bytes with the sign/exponent byte fixed.
    bias = "text_model.encoder.layers.0.mlp.fc1.bias"
    r = np.frombuffer(hashlib.shake_256(b"0:" + bias.encode()).digest(4 * 2048), np.uint8).reshape(-1, 4).copy()
    r[:, 0] = 0
    r[:, 3] = (r[:, 3] & 0x80) | 58
    R.check(same_arrays(T[bias], r.view("<f4").reshape(-1)), "synthetic weights are a documented function of the seed")
    R.check(not np.array_equal(T["text_model.encoder.layers.0.mlp.fc1.weight"][:4],
                               T["text_model.encoder.layers.1.mlp.fc1.weight"][:4]),
            "synthetic tensors differ from each other")
    R.check(len(m["vocab"]) == 49408 and m["vocab"][0] == "!" and m["vocab"][256] == "!</w>"
            and m["vocab"][49406:] == ["<|startoftext|>", "<|endoftext|>"] and len(m["merges"]) == 0
            and m["added"].tolist() == [49406, 49407] and m["special"]["bos"] == 49406
            and len(set(m["vocab"])) == 49408,
            "synthetic tokenizer: byte-level, 49408 distinct tokens, no merges, specials at 49406/49407")
    del m, T, w, g, b
    os.unlink(out)

R.finish()
