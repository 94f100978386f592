#!/usr/bin/env python3
"""convert.py: turn a Hugging Face CLIP checkpoint into the single model file that clip.c reads.

Python 3 standard library only (no numpy, no torch, no safetensors package).
Run `python3 convert.py --help` for usage. The output format is described in
the comment above write_model() below.
"""

import argparse
import hashlib
import io
import itertools
import json
import math
import os
import pickle
import pickletools
import re
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from array import array
from collections import OrderedDict

HELP = """\
Convert a Hugging Face CLIP checkpoint (a CLIPModel folder, or a hub id that
is downloaded first) into one flat little-endian float32 file for clip.c.

What it reads from the folder:
  weights     model.safetensors (F32, F16 or BF16), or sharded
              model.safetensors.index.json + its shards, or pytorch_model.bin
              (the zip archive torch.save writes; read with a restricted
              unpickler that refuses anything but tensors), or sharded
              pytorch_model.bin.index.json + its shards
  config      config.json (CLIPModel: text_config, vision_config,
              projection_dim; missing keys take transformers' defaults)
  images      preprocessor_config.json (size, crop_size, mean, std, ...)
  tokenizer   vocab.json + merges.txt, or tokenizer.json alone, with
              tokenizer_config.json / special_tokens_map.json for the
              bos/eos/pad/unk tokens and model_max_length

What it writes (-o): header (hyperparameters and preprocessing settings),
the BPE tokenizer, a tensor index and every tensor CLIPModel needs, as
float32, 64-byte aligned, ready to mmap. Float16 and bfloat16 weights are
widened to float32 exactly. The file appears only when it is complete.

Examples:
  python3 convert.py ~/models/clip-vit-base-patch32 -o clip-b32.bin
  python3 convert.py openai/clip-vit-base-patch32 -o clip-b32.bin
  python3 convert.py --synthetic ViT-B/32 -o synthetic-b32.bin --seed 1
  python3 convert.py --synthetic ViT-L/14 --tokenizer ~/models/clip-vit-large-patch14 -o syn-l14.bin

--synthetic ARCH writes a full-size model with deterministic pseudo-random
weights (ARCH: ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14-336) for benchmarks and
tests; its tokenizer is byte-level only (no merges) unless --tokenizer names
a folder to take vocab/merges from.

Environment:
  HF_ENDPOINT     hub to download from (default https://huggingface.co);
                  files come from $HF_ENDPOINT/OWNER/NAME/resolve/main/FILE
  HF_TOKEN        sent as "Authorization: Bearer ..." for private or gated
                  repos (only to the hub's own host, not to redirects elsewhere)
  CLIP_CACHE_DIR  where downloads are kept (default
                  ${XDG_CACHE_HOME:-~/.cache}/clip.c); a hub id is stored in
                  CLIP_CACHE_DIR/OWNER/NAME and files already there are reused
                  (delete the folder to download again)

Exit status: 0 done, 1 bad input (the message says what and why), 2 bad usage.
"""

FORMAT_VERSION = 1
HEADER_BYTES = 512
INDEX_ENTRY_BYTES = 128
TENSOR_ALIGN = 64
NAME_FIELD = 96          # tensor index field "name", NUL padded
SOURCE_FIELD = 128       # header field "source": where the checkpoint came from
FLAG_SYNTHETIC = 1
I32_MAX = 2**31 - 1
U32_MAX = 2**32 - 1


class ConvertError(Exception):
    """Bad input: printed as `convert.py: error: MESSAGE`, exit status 1."""


def note(msg):
    print("convert.py: " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Small readers
# ---------------------------------------------------------------------------

def read_json(path, required=True):
    """A JSON object from a file; None when the file is absent and optional."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        if required:
            raise ConvertError("%s is missing from %s" % (name, os.path.dirname(path) or "."))
        return None
    try:
        with open(path, "rb") as f:
            obj = json.loads(f.read().decode("utf-8"))
    except UnicodeDecodeError:
        raise ConvertError("%s is not UTF-8 text" % path) from None
    except ValueError as e:
        raise ConvertError("%s is not valid JSON (%s)" % (path, e)) from None
    except RecursionError:
        raise ConvertError("%s nests too deeply to be a configuration file" % path) from None
    except OSError as e:
        raise ConvertError("cannot read %s (%s)" % (path, e.strerror or e)) from None
    if not isinstance(obj, dict):
        raise ConvertError("%s should hold a JSON object, not a %s" % (path, type(obj).__name__))
    return obj


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v):
    return (is_int(v) or isinstance(v, float)) and math.isfinite(v)


def product(shape):
    n = 1
    for d in shape:
        n *= d
    return n


# ---------------------------------------------------------------------------
# config.json -> hyperparameters (transformers' CLIPConfig, CLIPTextConfig,
# CLIPVisionConfig defaults where a key is missing)
# ---------------------------------------------------------------------------

TEXT_DEFAULTS = {
    "vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048,
    "num_attention_heads": 8, "num_hidden_layers": 12, "max_position_embeddings": 77,
    "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "eos_token_id": 49407,
}
VISION_DEFAULTS = {
    "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
    "num_hidden_layers": 12, "image_size": 224, "patch_size": 32, "num_channels": 3,
    "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
}
ACTIVATIONS = {"quick_gelu": 0, "gelu": 1}


def config_int(section, key, defaults, where, minimum=1):
    v = section.get(key, defaults[key])
    if not is_int(v) or v < minimum or v > I32_MAX:
        raise ConvertError("config.json: %s.%s is %r; expected an integer from %d to %d"
                           % (where, key, v, minimum, I32_MAX))
    return v


def config_tower(section, defaults, where):
    """One tower: hidden size, heads, layers, MLP size, activation, eps."""
    t = {}
    for key in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size"):
        t[key] = config_int(section, key, defaults, where)
    act = section.get("hidden_act", defaults["hidden_act"])
    if act not in ACTIVATIONS:
        raise ConvertError("config.json: %s.hidden_act is %r, but clip.c implements only "
                           "\"quick_gelu\" and \"gelu\"" % (where, act))
    t["hidden_act"] = ACTIVATIONS[act]
    eps = section.get("layer_norm_eps", defaults["layer_norm_eps"])
    if not is_number(eps) or eps <= 0 or eps > 1:
        raise ConvertError("config.json: %s.layer_norm_eps is %r; expected a small positive number"
                           % (where, eps))
    t["layer_norm_eps"] = float(eps)
    if t["hidden_size"] % t["num_attention_heads"]:
        raise ConvertError("config.json: %s.hidden_size %d is not a multiple of num_attention_heads %d"
                           % (where, t["hidden_size"], t["num_attention_heads"]))
    return t


def read_model_config(cfg):
    """CLIPModel's config.json -> dict with "text", "vision", "projection_dim"."""
    model_type = cfg.get("model_type", "clip")
    if model_type != "clip":
        raise ConvertError("config.json describes a %r model; convert.py reads CLIPModel checkpoints "
                           "(model_type \"clip\")" % (model_type,))
    sections = {}
    for tower in ("text", "vision"):
        sec = cfg.get(tower + "_config") or {}
        legacy = cfg.get(tower + "_config_dict") or {}   # older transformers wrote both
        if not isinstance(sec, dict) or not isinstance(legacy, dict):
            raise ConvertError("config.json: %s_config should be a JSON object" % tower)
        merged = dict(sec)
        merged.update(legacy)
        sections[tower] = merged
    text_sec, vision_sec = sections["text"], sections["vision"]

    text = config_tower(text_sec, TEXT_DEFAULTS, "text_config")
    text["vocab_size"] = config_int(text_sec, "vocab_size", TEXT_DEFAULTS, "text_config")
    text["max_position_embeddings"] = config_int(text_sec, "max_position_embeddings",
                                                 TEXT_DEFAULTS, "text_config")
    text["eos_token_id"] = config_int(text_sec, "eos_token_id", TEXT_DEFAULTS, "text_config", 0)
    if text["eos_token_id"] >= text["vocab_size"]:
        raise ConvertError("config.json: text_config.eos_token_id %d is not below vocab_size %d"
                           % (text["eos_token_id"], text["vocab_size"]))

    vision = config_tower(vision_sec, VISION_DEFAULTS, "vision_config")
    for key in ("image_size", "patch_size", "num_channels"):
        vision[key] = config_int(vision_sec, key, VISION_DEFAULTS, "vision_config")
    if vision["image_size"] % vision["patch_size"]:
        raise ConvertError("config.json: vision_config.image_size %d is not a multiple of patch_size %d"
                           % (vision["image_size"], vision["patch_size"]))
    if vision["num_channels"] != 3:
        raise ConvertError("config.json: vision_config.num_channels is %d; clip.c feeds RGB images (3)"
                           % vision["num_channels"])
    if (vision["image_size"] // vision["patch_size"]) ** 2 + 1 > I32_MAX:
        raise ConvertError("config.json: vision_config.image_size / patch_size is too large")

    proj = cfg.get("projection_dim", 512)
    if not is_int(proj) or proj < 1 or proj > I32_MAX:
        raise ConvertError("config.json: projection_dim is %r; expected a positive integer" % (proj,))
    return {"text": text, "vision": vision, "projection_dim": proj}


# ---------------------------------------------------------------------------
# preprocessor_config.json -> CLIPImageProcessor settings
# ---------------------------------------------------------------------------

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def read_preprocess_config(pp, default_size):
    """size.shortest_edge, crop_size, the do_* switches, rescale factor, mean, std."""
    where = "preprocessor_config.json"
    out = {}
    size = pp.get("size", default_size)
    if is_int(size):
        out["shortest_edge"] = size
    elif isinstance(size, dict) and "shortest_edge" in size:
        out["shortest_edge"] = size["shortest_edge"]
    else:
        raise ConvertError("%s: size is %s; clip.c resizes the shortest edge, so it needs "
                           "{\"shortest_edge\": N} or a single number" % (where, json.dumps(size)))
    crop = pp.get("crop_size", default_size)
    if is_int(crop):
        out["crop_h"] = out["crop_w"] = crop
    elif isinstance(crop, dict) and "height" in crop and "width" in crop:
        out["crop_h"], out["crop_w"] = crop["height"], crop["width"]
    else:
        raise ConvertError("%s: crop_size is %s; expected {\"height\": H, \"width\": W} or a single number"
                           % (where, json.dumps(crop)))
    for key in ("shortest_edge", "crop_h", "crop_w"):
        v = out[key]
        if not is_int(v) or v < 1 or v > 65536:
            raise ConvertError("%s: the image size %r is not an integer from 1 to 65536" % (where, v))
    for key in ("do_resize", "do_center_crop", "do_rescale", "do_normalize"):
        v = pp.get(key, True)
        if not isinstance(v, bool):
            raise ConvertError("%s: %s is %r; expected true or false" % (where, key, v))
        out[key] = int(v)
    rf = pp.get("rescale_factor", 1 / 255)
    if not is_number(rf) or rf <= 0:
        raise ConvertError("%s: rescale_factor is %r; expected a positive number" % (where, rf))
    out["rescale_factor"] = float(rf)
    for key, default in (("image_mean", CLIP_MEAN), ("image_std", CLIP_STD)):
        v = pp.get(key, default)
        if is_number(v):
            v = [v, v, v]
        if not isinstance(v, list) or len(v) != 3 or not all(is_number(x) for x in v):
            raise ConvertError("%s: %s is %s; expected three numbers (R, G, B)" % (where, key, json.dumps(v)))
        if key == "image_std" and any(x == 0 for x in v):
            raise ConvertError("%s: image_std has a zero, which would divide by zero" % where)
        out[key] = [float(x) for x in v]
    return out


# ---------------------------------------------------------------------------
# Tokenizer: vocab.json + merges.txt, or tokenizer.json, plus the special
# tokens of tokenizer_config.json / special_tokens_map.json (CLIPTokenizer)
# ---------------------------------------------------------------------------

MAX_VOCAB = 1 << 22


def token_content(v):
    """A special token as tokenizer_config.json gives it: "text" or {"content": "text"}."""
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) else None


def parse_merges(merges, where):
    """Merges as "a b" strings or ["a", "b"] pairs -> list of (a, b)."""
    pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]
    for i, p in enumerate(pairs):
        if not isinstance(p, list) or len(p) != 2 or not p[0] or not p[1] \
                or not isinstance(p[0], str) or not isinstance(p[1], str):
            raise ConvertError("%s: merge %d is %s; expected two symbols \"a b\""
                               % (where, i + 1, json.dumps(merges[i])[:60]))
    return pairs


def read_tokenizer(folder, context_default):
    """-> dict with vocab (list of strings by id), merges (id triples in rank
    order), added ids, bos/eos/pad/unk ids and the context length."""
    tok_cfg = read_json(os.path.join(folder, "tokenizer_config.json"), required=False) or {}
    special_map = read_json(os.path.join(folder, "special_tokens_map.json"), required=False) or {}
    vocab_path = os.path.join(folder, "vocab.json")
    merges_path = os.path.join(folder, "merges.txt")
    tj_path = os.path.join(folder, "tokenizer.json")

    added = {}   # id -> text of added (special) tokens
    if os.path.isfile(vocab_path) and os.path.isfile(merges_path):
        vocab = read_json(vocab_path)
        where_vocab = "vocab.json"
        try:
            with open(merges_path, "rb") as f:
                text = f.read().decode("utf-8")
        except UnicodeDecodeError:
            raise ConvertError("merges.txt is not UTF-8 text") from None
        except OSError as e:
            raise ConvertError("cannot read %s (%s)" % (merges_path, e.strerror or e)) from None
        lines = text.split("\n")
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        raw_merges = parse_merges([ln.rstrip("\r") for ln in lines if ln.strip("\r")], "merges.txt")
    elif os.path.isfile(tj_path):
        tj = read_json(tj_path)
        where_vocab = "tokenizer.json"
        model = tj.get("model")
        if not isinstance(model, dict) or model.get("type", "BPE") != "BPE":
            raise ConvertError("tokenizer.json: model should be a BPE tokenizer (CLIPTokenizer)")
        vocab = model.get("vocab")
        if not isinstance(vocab, dict):
            raise ConvertError("tokenizer.json: model.vocab should be a JSON object of token -> id")
        merges = model.get("merges", [])
        if not isinstance(merges, list):
            raise ConvertError("tokenizer.json: model.merges should be a list")
        raw_merges = parse_merges(merges, "tokenizer.json")
        for t in tj.get("added_tokens") or []:
            if not isinstance(t, dict) or not is_int(t.get("id")) or not isinstance(t.get("content"), str):
                raise ConvertError("tokenizer.json: added_tokens entries need an integer id and a content string")
            added[t["id"]] = t["content"]
    else:
        raise ConvertError("%s has no tokenizer: it needs vocab.json and merges.txt, or tokenizer.json"
                           % folder)

    # Added tokens listed by tokenizer_config.json (transformers 4.34+ layout).
    dec = tok_cfg.get("added_tokens_decoder") or {}
    if isinstance(dec, dict):
        for k, v in dec.items():
            content = token_content(v)
            if content is not None and re.fullmatch(r"[0-9]{1,9}", k):
                added[int(k)] = content

    # Vocabulary: id -> string; ids run 0..n-1, a missing id gets "".
    by_id = {}
    for s, i in vocab.items():
        if not is_int(i) or i < 0 or i >= MAX_VOCAB:
            raise ConvertError("%s: token %r has id %r; expected an integer from 0 to %d"
                               % (where_vocab, s, i, MAX_VOCAB - 1))
        if i in by_id:
            raise ConvertError("%s: id %d is given to both %r and %r" % (where_vocab, i, by_id[i], s))
        by_id[i] = s
    for i, s in added.items():
        if i < 0 or i >= MAX_VOCAB:
            raise ConvertError("added token %r has id %d, outside 0..%d" % (s, i, MAX_VOCAB - 1))
        if by_id.get(i, s) != s:
            raise ConvertError("added token %r has id %d, which the vocabulary gives to %r" % (s, i, by_id[i]))
        by_id[i] = s
    n_vocab = max(by_id) + 1 if by_id else 0
    ids = {s: i for i, s in by_id.items()}
    vocab_list = [by_id.get(i, "") for i in range(n_vocab)]

    # Merges in rank order, as (left id, right id, merged id).
    try:
        merge_ids = [(ids[a], ids[b], ids[a + b]) for a, b in raw_merges]
    except KeyError as e:
        rank = next(i for i, (a, b) in enumerate(raw_merges) if not (a in ids and b in ids and a + b in ids))
        raise ConvertError("merge %d (%s %s) uses %r, which is not in the vocabulary"
                           % (rank + 1, raw_merges[rank][0], raw_merges[rank][1], e.args[0])) from None

    # Special tokens (CLIPTokenizer defaults when not given).
    def special(key, default):
        v = token_content(tok_cfg.get(key))
        if v is None:
            v = token_content(special_map.get(key))
        return default if v is None else v

    special_ids = {}
    for key, default in (("bos_token", "<|startoftext|>"), ("eos_token", "<|endoftext|>"),
                         ("pad_token", "<|endoftext|>"), ("unk_token", "<|endoftext|>")):
        s = special(key, default)
        if s not in ids:
            if key in ("bos_token", "eos_token"):
                raise ConvertError("the %s %r is not in the vocabulary" % (key, s))
            special_ids[key] = -1
            continue
        special_ids[key] = ids[s]
        added[ids[s]] = s

    # Context length: model_max_length, bounded by the text model's positions.
    ctx = tok_cfg.get("model_max_length")
    if not is_int(ctx) or ctx < 2 or ctx > context_default:
        ctx = context_default
    return {
        "vocab": vocab_list, "merges": merge_ids, "added": sorted(added),
        "bos": special_ids["bos_token"], "eos": special_ids["eos_token"],
        "pad": special_ids["pad_token"], "unk": special_ids["unk_token"],
        "context_length": ctx,
    }


def bytes_to_unicode():
    """GPT-2's byte-level alphabet: byte value -> printable character, in CLIP's vocab order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = list(bs)
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return [(b, chr(c)) for b, c in zip(bs, cs)]


def synthetic_tokenizer(vocab_size):
    """Byte-level tokenizer without merges: the 256 byte symbols, their </w>
    forms, unused fillers and the two special tokens at the end."""
    symbols = [c for _, c in bytes_to_unicode()]
    vocab = symbols + [s + "</w>" for s in symbols]
    while len(vocab) < vocab_size - 2:
        vocab.append("<|unused_%d|>" % len(vocab))
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    bos, eos = len(vocab) - 2, len(vocab) - 1
    return {"vocab": vocab, "merges": [], "added": [bos, eos], "bos": bos, "eos": eos,
            "pad": eos, "unk": eos, "context_length": 77}


def pack_tokenizer(tok):
    """The tokenizer section: counts, special ids, offsets, merges, added ids, blob."""
    try:
        blobs = [s.encode("utf-8") for s in tok["vocab"]]
    except UnicodeEncodeError:
        raise ConvertError("the vocabulary holds a token that is not valid Unicode text") from None
    offsets = [0]
    for b in blobs:
        offsets.append(offsets[-1] + len(b))
    blob = b"".join(blobs)
    if len(blob) > U32_MAX // 2:
        raise ConvertError("the vocabulary strings are too large for the model file")
    n_vocab, n_merges, n_added = len(blobs), len(tok["merges"]), len(tok["added"])
    flat = [x for m in tok["merges"] for x in m]
    return b"".join([
        struct.pack("<4I5i", n_vocab, n_merges, n_added, len(blob),
                    tok["bos"], tok["eos"], tok["pad"], tok["unk"], tok["context_length"]),
        struct.pack("<%dI" % (n_vocab + 1), *offsets),
        struct.pack("<%di" % len(flat), *flat),
        struct.pack("<%di" % n_added, *tok["added"]),
        blob,
    ])


# ---------------------------------------------------------------------------
# Element conversion: any supported dtype (little-endian bytes) -> float32 LE.
# Pure byte shuffling, so the host's byte order never matters.
# ---------------------------------------------------------------------------

DTYPE_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
CONVERTIBLE = ("F32", "F16", "BF16")


def exp8_of_f16(h):
    """float32 exponent for an f16 whose high byte is h (normal numbers only)."""
    e = (h >> 2) & 31
    return 0 if e == 0 else 255 if e == 31 else e + 112


# Lookup tables for f16 -> f32: the f32 is s | exp+112 | mantissa << 13.
F16_T1 = bytes(((lo & 7) << 5) for lo in range(256))                       # f32 byte 1 from f16 low byte
F16_T2L = bytes((lo >> 3) for lo in range(256))                            # f32 byte 2, low 5 bits
F16_T2H = bytes(((h & 3) << 5) | ((exp8_of_f16(h) & 1) << 7) for h in range(256))  # f32 byte 2, high 3 bits
F16_T3 = bytes((h & 0x80) | (exp8_of_f16(h) >> 1) for h in range(256))    # f32 byte 3
F16_SUB_HI = bytes((1 if (h & 0x7C) == 0 and h & 3 else 0) for h in range(256))    # subnormal whatever lo is
F16_ZERO_HI = bytes((1 if (h & 0x7C) == 0 and not h & 3 else 0) for h in range(256))  # subnormal if lo != 0
NONZERO = bytes([0]) + bytes([1]) * 255


def f16_to_f32(raw):
    """IEEE half -> float exactly, in bulk: normal numbers, zeros, inf and nan
    by table lookups on the byte lanes; subnormals one by one."""
    n = len(raw) // 2
    lo, hi = raw[0::2], raw[1::2]
    out = bytearray(4 * n)
    out[1::4] = lo.translate(F16_T1)
    b2 = int.from_bytes(lo.translate(F16_T2L), "little") | int.from_bytes(hi.translate(F16_T2H), "little")
    out[2::4] = b2.to_bytes(n, "little")
    out[3::4] = hi.translate(F16_T3)
    # Exponent 0 with a nonzero mantissa: m * 2^-24, renormalized (by struct).
    sub = int.from_bytes(hi.translate(F16_SUB_HI), "little") | (
        int.from_bytes(hi.translate(F16_ZERO_HI), "little") & int.from_bytes(lo.translate(NONZERO), "little"))
    if sub:
        for m in re.finditer(b"\x01", sub.to_bytes(n, "little")):
            i = m.start()
            out[4 * i:4 * i + 4] = struct.pack("<f", struct.unpack_from("<e", raw, 2 * i)[0])
    return out


def bf16_to_f32(raw):
    """bfloat16 is the high half of a float32: append two zero bytes below it."""
    out = bytearray(2 * len(raw))
    out[2::4] = raw[0::2]
    out[3::4] = raw[1::2]
    return out


def to_float32(raw, dtype):
    if dtype == "F32":
        return raw
    if dtype == "F16":
        return f16_to_f32(raw)
    if dtype == "BF16":
        return bf16_to_f32(raw)
    raise ConvertError("cannot convert %s to float32" % dtype)


def swap_bytes(raw, size):
    """Reverse every `size`-byte element (big-endian archives)."""
    if size == 1:
        return raw
    out = bytearray(len(raw))
    for k in range(size):
        out[k::size] = raw[size - 1 - k::size]
    return bytes(out)


# ---------------------------------------------------------------------------
# Checkpoint readers. Each gives {name: tensor} where a tensor has .shape,
# .dtype (safetensors names) and .read() -> little-endian bytes of that dtype.
# ---------------------------------------------------------------------------

class FileTensor:
    """A tensor stored as one contiguous byte range of a file (safetensors)."""

    def __init__(self, f, path, name, dtype, shape, start, nbytes):
        self.f, self.path, self.name = f, path, name
        self.dtype, self.shape, self.start, self.nbytes = dtype, shape, start, nbytes

    def read(self):
        try:
            self.f.seek(self.start)
            data = self.f.read(self.nbytes)
        except OSError as e:
            raise ConvertError("cannot read %s from %s (%s)" % (self.name, self.path, e.strerror or e)) from None
        if len(data) != self.nbytes:
            raise ConvertError("%s ended early while reading %s" % (self.path, self.name))
        return data


def open_safetensors(path, files):
    """safetensors: u64 header length, JSON header {name: {dtype, shape,
    data_offsets}}, then the data. Every entry is checked against the file."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ConvertError("cannot open %s (%s)" % (path, e.strerror or e)) from None
    files.append(f)
    size = os.fstat(f.fileno()).st_size
    base = os.path.basename(path)
    if size < 8:
        raise ConvertError("%s is too short to be a safetensors file (%d bytes)" % (base, size))
    (n,) = struct.unpack("<Q", f.read(8))
    if n < 2 or n > size - 8 or n > (100 << 20):
        raise ConvertError("%s has a corrupt header: its length field (%d bytes) does not fit in the "
                           "%d-byte file" % (base, n, size))
    try:
        header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ConvertError("%s has a corrupt header: it is not valid JSON" % base) from None
    if not isinstance(header, dict):
        raise ConvertError("%s has a corrupt header: it is not a JSON object" % base)
    data_start, data_len = 8 + n, size - 8 - n
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        bad = "%s has a corrupt header entry for %s" % (base, name)
        if not isinstance(info, dict):
            raise ConvertError(bad)
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or not isinstance(shape, list) or not all(is_int(d) and d >= 0 for d in shape):
            raise ConvertError(bad + ": dtype or shape is malformed")
        if not (isinstance(offs, list) and len(offs) == 2 and all(is_int(o) for o in offs)
                and 0 <= offs[0] <= offs[1] <= data_len):
            raise ConvertError(bad + ": data_offsets %s fall outside the %d data bytes"
                               % (json.dumps(offs)[:60], data_len))
        nbytes = offs[1] - offs[0]
        if dtype in DTYPE_SIZES and product(shape) * DTYPE_SIZES[dtype] != nbytes:
            raise ConvertError(bad + ": shape %s of %s needs %d bytes but data_offsets span %d"
                               % (shape, dtype, product(shape) * DTYPE_SIZES[dtype], nbytes))
        tensors[name] = FileTensor(f, base, name, dtype, shape, data_start + offs[0], nbytes)
    return tensors


def safe_shard_name(name, index):
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", name):
        raise ConvertError("%s names the shard %r, which is not a plain file name" % (index, name))
    return name


def read_sharded(folder, index_name, open_one, files):
    """model.safetensors.index.json / pytorch_model.bin.index.json: weight_map name -> shard."""
    index = read_json(os.path.join(folder, index_name))
    wmap = index.get("weight_map")
    if not isinstance(wmap, dict) or not wmap:
        raise ConvertError("%s has no weight_map" % index_name)
    shards = {}
    tensors = {}
    for name, shard in wmap.items():
        shard = safe_shard_name(shard, index_name)
        if shard not in shards:
            path = os.path.join(folder, shard)
            if not os.path.isfile(path):
                raise ConvertError("%s lists the shard %s, which is missing from %s" % (index_name, shard, folder))
            shards[shard] = open_one(path, files)
        if name not in shards[shard]:
            raise ConvertError("%s says %s is in %s, but it is not there" % (index_name, name, shard))
        tensors[name] = shards[shard][name]
    return tensors


# --- pytorch_model.bin: torch.save's zip archive, restricted unpickler -------

TORCH_STORAGES = {
    "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16", "DoubleStorage": "F64",
    "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
    "ByteStorage": "U8", "BoolStorage": "BOOL",
}


class StorageType:
    """Stand-in for torch.FloatStorage and friends: only carries the dtype."""
    __slots__ = ("dtype",)

    def __init__(self, dtype):
        self.dtype = dtype


class Marker:
    """Stand-in for torch.Tensor / torch.nn.Parameter as a type argument."""
    __slots__ = ()


class Storage:
    """What persistent_load returns: where a storage's bytes live."""
    __slots__ = ("dtype", "key", "numel")

    def __init__(self, dtype, key, numel):
        self.dtype, self.key, self.numel = dtype, key, numel


class TorchTensor:
    """A view (offset, size, stride) into a storage of the archive."""
    __slots__ = ("storage", "offset", "shape", "stride", "archive", "name")

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride
        self.archive = self.name = None

    @property
    def dtype(self):
        return self.storage.dtype

    def read(self):
        return self.archive.read_view(self)


def bad_pickle(msg):
    raise ConvertError("pytorch_model.bin: " + msg)


def rebuild_tensor(storage, storage_offset, size, stride, *rest):
    """torch._utils._rebuild_tensor(_v2): a tensor viewing a storage."""
    if not isinstance(storage, Storage):
        bad_pickle("a tensor is built from something that is not a storage")
    if not (is_int(storage_offset) and storage_offset >= 0 and isinstance(size, (tuple, list))
            and isinstance(stride, (tuple, list)) and len(size) == len(stride)
            and all(is_int(d) and d >= 0 for d in size) and all(is_int(s) and s >= 0 for s in stride)):
        bad_pickle("a tensor has a malformed offset, size or stride")
    return TorchTensor(storage, storage_offset, list(size), list(stride))


def rebuild_parameter(data, *rest):
    """torch._utils._rebuild_parameter(_with_state): a Parameter is its data."""
    if not isinstance(data, TorchTensor):
        bad_pickle("a parameter wraps something that is not a tensor")
    return data


def rebuild_from_type(func, new_type, args, state):
    """torch._tensor._rebuild_from_type_v2: a tensor subclass around a plain tensor."""
    if func not in (rebuild_tensor, rebuild_parameter) or not isinstance(args, tuple):
        bad_pickle("a tensor subclass is rebuilt in an unexpected way")
    return func(*args)


SAFE_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): rebuild_from_type,
    ("torch", "Tensor"): Marker(),
    ("torch.nn.parameter", "Parameter"): Marker(),
}
for _name, _dtype in TORCH_STORAGES.items():
    SAFE_GLOBALS[("torch", _name)] = StorageType(_dtype)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a state dict and nothing else: every global it names must be
    one of SAFE_GLOBALS (mapped to the stand-ins above), so no code can run."""

    def find_class(self, module, name):
        found = SAFE_GLOBALS.get((module, name))
        if found is None:
            raise ConvertError("pytorch_model.bin asks for %s.%s, which a PyTorch state dict never "
                               "needs; refusing to unpickle it (it could run code)" % (module, name))
        return found

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], StorageType) and isinstance(pid[2], str)
                and re.fullmatch(r"[A-Za-z0-9_]+", pid[2]) and is_int(pid[4]) and pid[4] >= 0):
            raise ConvertError("pytorch_model.bin has a malformed storage reference")
        return Storage(pid[1].dtype, pid[2], pid[4])


def check_pickle(data):
    """Walk the opcodes without executing any (pickletools): the stream must be
    well formed, and memo indices small, since a huge one makes the C unpickler
    allocate gigabytes before find_class is ever asked."""
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not (is_int(arg) and 0 <= arg < len(data)):
                raise ConvertError("pytorch_model.bin: data.pkl uses an implausible memo index %r" % (arg,))
    except ConvertError:
        raise
    except Exception as e:
        raise ConvertError("pytorch_model.bin: data.pkl is not a well-formed pickle (%s)"
                           % (str(e) or type(e).__name__)) from None


def unpickle_state_dict(data):
    check_pickle(data)
    try:
        obj = RestrictedUnpickler(io.BytesIO(data)).load()
    except ConvertError:
        raise
    except RecursionError:
        raise ConvertError("pytorch_model.bin: data.pkl nests too deeply") from None
    except Exception as e:
        raise ConvertError("pytorch_model.bin: data.pkl is not a readable state dict (%s)"
                           % (str(e) or type(e).__name__)) from None
    if isinstance(obj, dict) and not any(isinstance(v, TorchTensor) for v in obj.values()):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise ConvertError("pytorch_model.bin does not hold a state dict (a dict of tensors)")
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, TorchTensor)}


class TorchArchive:
    """torch.save's zip: PREFIX/data.pkl, PREFIX/data/KEY per storage,
    PREFIX/byteorder ("little" or "big"; absent means little)."""

    def __init__(self, path):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            with open(path, "rb") as f:
                head = f.read(2)
            if head == b"\x80\x02":
                raise ConvertError("%s uses PyTorch's legacy (pre-1.6) format; re-save it with a recent "
                                   "torch.save or as model.safetensors" % os.path.basename(path)) from None
            raise ConvertError("%s is not a torch.save zip archive" % os.path.basename(path)) from None
        except OSError as e:
            raise ConvertError("cannot open %s (%s)" % (path, e.strerror or e)) from None
        pkls = [n for n in self.zip.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ConvertError("%s has no single data.pkl, so it is not a torch.save archive"
                               % os.path.basename(path))
        self.prefix = pkls[0][:-len("data.pkl")]
        self.big_endian = False
        if self.prefix + "byteorder" in self.zip.namelist():
            order = self.read_entry(self.prefix + "byteorder").strip()
            if order not in (b"little", b"big"):
                raise ConvertError("%s has an unknown byteorder %r" % (os.path.basename(path), order[:20]))
            self.big_endian = order == b"big"
        info = self.zip.getinfo(pkls[0])
        if info.file_size > (256 << 20):
            raise ConvertError("%s: data.pkl is implausibly large (%d bytes)" % (os.path.basename(path), info.file_size))
        self.tensors = unpickle_state_dict(self.read_entry(pkls[0]))
        for name, t in self.tensors.items():
            t.archive, t.name = self, name

    def read_entry(self, name):
        try:
            return self.zip.read(name)
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError, OSError) as e:
            raise ConvertError("%s: cannot read %s (%s)" % (os.path.basename(self.path), name, e)) from None

    def read_view(self, t):
        size = DTYPE_SIZES[t.dtype]
        entry = self.prefix + "data/" + t.storage.key
        try:
            info = self.zip.getinfo(entry)
        except KeyError:
            raise ConvertError("pytorch_model.bin lacks the storage data/%s of %s" % (t.storage.key, t.name)) from None
        if info.file_size < t.storage.numel * size:
            raise ConvertError("pytorch_model.bin: storage data/%s of %s is shorter than its %d elements"
                               % (t.storage.key, t.name, t.storage.numel))
        numel = product(t.shape)
        if numel == 0:
            return b""
        last = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.stride))
        if last >= t.storage.numel:
            raise ConvertError("pytorch_model.bin: %s reaches past the end of its storage" % t.name)
        try:
            with self.zip.open(entry) as f:
                f.seek(t.offset * size)
                span = f.read((last + 1 - t.offset) * size)
        except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError, OSError) as e:
            raise ConvertError("pytorch_model.bin: cannot read the storage data/%s (%s)"
                               % (t.storage.key, e)) from None
        if len(span) != (last + 1 - t.offset) * size:
            raise ConvertError("pytorch_model.bin: storage data/%s ended early" % t.storage.key)
        expected, step = [], 1
        for n in reversed(t.shape):
            expected.insert(0, step)
            step *= n
        contiguous = all(n == 1 or s == e for n, s, e in zip(t.shape, t.stride, expected))
        data = span if contiguous else gather(span, size, t.shape, t.stride)
        return swap_bytes(data, size) if self.big_endian else data


def gather(span, size, shape, stride):
    """Copy a strided view into row-major order (elements moved as opaque
    integers of `size` bytes; span starts at the view's first element)."""
    code = {1: "B", 2: "H", 4: "I" if array("I").itemsize == 4 else "L", 8: "Q"}[size]
    src = array(code)
    src.frombytes(span)
    dims = [(n, s) for n, s in zip(shape, stride) if n != 1] or [(1, 1)]
    outer, (n_in, s_in) = dims[:-1], dims[-1]
    out = array(code)
    for idx in itertools.product(*(range(n) for n, _ in outer)):
        base = sum(i * s for i, (_, s) in zip(idx, outer))
        if s_in == 0:
            out.extend(array(code, [src[base]]) * n_in)
        else:
            out.extend(src[base:base + (n_in - 1) * s_in + 1:s_in])
    return out.tobytes()


def read_checkpoint(folder, files):
    """The weights of a folder, preferring safetensors."""
    def exists(name):
        return os.path.isfile(os.path.join(folder, name))

    if exists("model.safetensors"):
        return open_safetensors(os.path.join(folder, "model.safetensors"), files)
    if exists("model.safetensors.index.json"):
        return read_sharded(folder, "model.safetensors.index.json", open_safetensors, files)
    if exists("pytorch_model.bin"):
        return TorchArchive(os.path.join(folder, "pytorch_model.bin")).tensors
    if exists("pytorch_model.bin.index.json"):
        return read_sharded(folder, "pytorch_model.bin.index.json",
                            lambda path, files: TorchArchive(path).tensors, files)
    raise ConvertError("%s has no weights: expected model.safetensors, model.safetensors.index.json "
                       "or pytorch_model.bin" % folder)


# ---------------------------------------------------------------------------
# The tensors CLIPModel needs, with their shapes, derived from the config.
# ---------------------------------------------------------------------------

def expected_tensors(cfg):
    """[(name, shape)] in the order they are written: text tower, vision tower,
    projections, logit_scale."""
    out = []

    def encoder(prefix, t):
        d, ff = t["hidden_size"], t["intermediate_size"]
        for i in range(t["num_hidden_layers"]):
            p = "%s.encoder.layers.%d." % (prefix, i)
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                out.append((p + "self_attn.%s.weight" % proj, [d, d]))
                out.append((p + "self_attn.%s.bias" % proj, [d]))
            out.append((p + "layer_norm1.weight", [d]))
            out.append((p + "layer_norm1.bias", [d]))
            out.append((p + "mlp.fc1.weight", [ff, d]))
            out.append((p + "mlp.fc1.bias", [ff]))
            out.append((p + "mlp.fc2.weight", [d, ff]))
            out.append((p + "mlp.fc2.bias", [d]))
            out.append((p + "layer_norm2.weight", [d]))
            out.append((p + "layer_norm2.bias", [d]))

    text, vision = cfg["text"], cfg["vision"]
    td, vd, p = text["hidden_size"], vision["hidden_size"], vision["patch_size"]
    out.append(("text_model.embeddings.token_embedding.weight", [text["vocab_size"], td]))
    out.append(("text_model.embeddings.position_embedding.weight", [text["max_position_embeddings"], td]))
    encoder("text_model", text)
    out.append(("text_model.final_layer_norm.weight", [td]))
    out.append(("text_model.final_layer_norm.bias", [td]))
    out.append(("vision_model.embeddings.class_embedding", [vd]))
    out.append(("vision_model.embeddings.patch_embedding.weight", [vd, vision["num_channels"], p, p]))
    out.append(("vision_model.embeddings.position_embedding.weight",
                [(vision["image_size"] // p) ** 2 + 1, vd]))
    out.append(("vision_model.pre_layrnorm.weight", [vd]))
    out.append(("vision_model.pre_layrnorm.bias", [vd]))
    encoder("vision_model", vision)
    out.append(("vision_model.post_layernorm.weight", [vd]))
    out.append(("vision_model.post_layernorm.bias", [vd]))
    out.append(("visual_projection.weight", [cfg["projection_dim"], vd]))
    out.append(("text_projection.weight", [cfg["projection_dim"], td]))
    out.append(("logit_scale", []))
    return out


def match_tensors(cfg, tensors):
    """Pick every needed tensor from the checkpoint, checking dtype and shape."""
    picked = []
    for name, shape in expected_tensors(cfg):
        t = tensors.get(name)
        if t is None:
            raise ConvertError("the checkpoint has no tensor %s, which CLIPModel needs (shape %s)"
                               % (name, shape))
        got = list(t.shape)
        if name == "logit_scale" and got == [1]:
            got = []
        if got != shape:
            raise ConvertError("tensor %s has shape %s, but config.json implies %s" % (name, list(t.shape), shape))
        if t.dtype not in CONVERTIBLE:
            raise ConvertError("tensor %s is stored as %s; convert.py reads F32, F16 and BF16 weights"
                               % (name, t.dtype))
        picked.append((name, shape, t))
    unused = [n for n, t in tensors.items()
              if t.dtype in ("F64", "F32", "F16", "BF16") and n not in {p[0] for p in picked}]
    if unused:
        note("note: skipped %d floating-point tensor(s) that CLIPModel does not use (%s%s)"
             % (len(unused), unused[0], ", ..." if len(unused) > 1 else ""))
    return picked


# ---------------------------------------------------------------------------
# The model file (format v1; all little-endian): a header, the tokenizer
# section (pack_tokenizer()) at an 8-byte boundary, the tensor index, then the
# tensors (float32, row-major, PyTorch shapes, each 64-byte aligned); the file
# ends after the last tensor. The names below are README.md's ("The model
# file") and clip.c's (upper case there, after FIELD_, SLOT_ or ENTRY_).
# ---------------------------------------------------------------------------

# The header, HEADER_BYTES long: (name, byte offset, struct format); 440..511 are zero.
HEADER_FIELDS = [
    ("magic", 0, "8s"),              # b"CLIPCMOD"
    ("version", 8, "I"),             # FORMAT_VERSION
    ("header_bytes", 12, "I"),       # HEADER_BYTES
    ("file_bytes", 16, "Q"),         # the size of the whole file
    ("tokenizer_offset", 24, "Q"),   # where the tokenizer section starts
    ("tokenizer_bytes", 32, "Q"),    # and its length
    ("index_offset", 40, "Q"),       # where the tensor index starts
    ("tensor_count", 48, "I"),       # its entries
    ("flags", 52, "I"),              # FLAG_SYNTHETIC
    ("slots", 56, "256s"),           # the 64 slots of HEADER_SLOTS, 4 bytes each
    ("source", 312, "128s"),         # where the checkpoint came from, UTF-8, NUL padded
]

# The hyperparameter slots in order: (name, "i" for int32 or "f" for float32,
# how many slots); the rest of the 64 are zero.
HEADER_SLOTS = [
    ("projection_dim", "i", 1),
    ("vision_hidden_size", "i", 1), ("vision_num_attention_heads", "i", 1), ("vision_num_hidden_layers", "i", 1),
    ("vision_intermediate_size", "i", 1), ("vision_hidden_act", "i", 1), ("vision_layer_norm_eps", "f", 1),
    ("vision_patch_size", "i", 1), ("vision_image_size", "i", 1), ("vision_num_channels", "i", 1),
    ("text_hidden_size", "i", 1), ("text_num_attention_heads", "i", 1), ("text_num_hidden_layers", "i", 1),
    ("text_intermediate_size", "i", 1), ("text_hidden_act", "i", 1), ("text_layer_norm_eps", "f", 1),
    ("text_vocab_size", "i", 1), ("text_max_position_embeddings", "i", 1), ("text_eos_token_id", "i", 1),
    ("shortest_edge", "i", 1), ("crop_height", "i", 1), ("crop_width", "i", 1),
    ("do_resize", "i", 1), ("do_center_crop", "i", 1), ("do_rescale", "i", 1), ("do_normalize", "i", 1),
    ("rescale_factor", "f", 1),
    ("image_mean", "f", 3), ("image_std", "f", 3),
]
HEADER_SLOT_COUNT = 64

# A tensor index entry, INDEX_ENTRY_BYTES long: (name, byte offset, struct format)
INDEX_FIELDS = [
    ("name", 0, "96s"),      # the Hugging Face name, UTF-8, NUL padded (NAME_FIELD)
    ("dtype", 96, "I"),      # DTYPE_F32
    ("ndim", 100, "I"),      # at most 4
    ("shape", 104, "4I"),    # unused dimensions are 0
    ("offset", 120, "Q"),    # where the data starts in the file, TENSOR_ALIGN-aligned
]
DTYPE_F32 = 0


def pack_fields(fields, size, values):
    """Bytes of `size` with each named field of `fields` at its offset, the rest zero."""
    out = bytearray(size)
    for name, offset, fmt in fields:
        v = values[name]
        struct.pack_into("<" + fmt, out, offset, *(v if isinstance(v, (list, tuple)) else [v]))
    return bytes(out)


def field_offset(fields, name):
    return next(offset for n, offset, _ in fields if n == name)


def header_slots(cfg, pp):
    """The 64 hyperparameter slots, packed (HEADER_SLOTS)."""
    v, t = cfg["vision"], cfg["text"]
    values = {
        "projection_dim": cfg["projection_dim"],
        "vision_hidden_size": v["hidden_size"], "vision_num_attention_heads": v["num_attention_heads"],
        "vision_num_hidden_layers": v["num_hidden_layers"], "vision_intermediate_size": v["intermediate_size"],
        "vision_hidden_act": v["hidden_act"], "vision_layer_norm_eps": v["layer_norm_eps"],
        "vision_patch_size": v["patch_size"], "vision_image_size": v["image_size"],
        "vision_num_channels": v["num_channels"],
        "text_hidden_size": t["hidden_size"], "text_num_attention_heads": t["num_attention_heads"],
        "text_num_hidden_layers": t["num_hidden_layers"], "text_intermediate_size": t["intermediate_size"],
        "text_hidden_act": t["hidden_act"], "text_layer_norm_eps": t["layer_norm_eps"],
        "text_vocab_size": t["vocab_size"], "text_max_position_embeddings": t["max_position_embeddings"],
        "text_eos_token_id": t["eos_token_id"],
        "shortest_edge": pp["shortest_edge"], "crop_height": pp["crop_h"], "crop_width": pp["crop_w"],
        "do_resize": pp["do_resize"], "do_center_crop": pp["do_center_crop"],
        "do_rescale": pp["do_rescale"], "do_normalize": pp["do_normalize"],
        "rescale_factor": pp["rescale_factor"], "image_mean": pp["image_mean"], "image_std": pp["image_std"],
    }
    out = b""
    for name, kind, count in HEADER_SLOTS:
        out += struct.pack("<%d%s" % (count, kind), *(values[name] if count > 1 else [values[name]]))
    return out + bytes(4 * HEADER_SLOT_COUNT - len(out))


def align(n, a):
    return (n + a - 1) // a * a


class HugePageWriter:
    """A file written in whole 2 MiB pieces, each at a multiple of 2 MiB.
    Linux (6.x, ext4/xfs/tmpfs) then caches the file in 2 MiB folios, and
    clip's mmap of it maps 2 MiB at a time: in a virtual machine the first
    touch of the 151 MB of text weights costs about 3 ms instead of about
    40 ms of 4 KiB page faults. Elsewhere it is just a buffered write."""
    PIECE = 2 << 20

    def __init__(self, f):
        self.f, self.pending, self.pos = f, bytearray(), 0

    def tell(self):
        return self.pos + len(self.pending)

    def _put(self, piece):
        while len(piece):   # an unbuffered write may take part of it
            piece = piece[self.f.write(piece):]

    def write(self, data):
        view = memoryview(data).cast("B")
        if self.pending:
            take = min(len(view), self.PIECE - len(self.pending))
            self.pending += view[:take]
            view = view[take:]
            if len(self.pending) < self.PIECE:
                return
            self._put(memoryview(self.pending))
            self.pos += self.PIECE
            self.pending = bytearray()
        whole = len(view) - len(view) % self.PIECE
        for i in range(0, whole, self.PIECE):
            self._put(view[i:i + self.PIECE])
        self.pos += whole
        self.pending += view[whole:]

    def finish(self):
        self._put(memoryview(self.pending))
        self.pos += len(self.pending)
        self.pending = bytearray()


def write_model(out_path, cfg, pp, tok, picked, source_name, flags):
    """Lay the file out, then stream it to a temporary file beside out_path
    and rename it into place only when everything was written."""
    tok_bytes = pack_tokenizer(tok)
    if len(tok["vocab"]) > cfg["text"]["vocab_size"]:
        raise ConvertError("the tokenizer has %d tokens but the text model embeds only %d"
                           % (len(tok["vocab"]), cfg["text"]["vocab_size"]))
    tok_off = HEADER_BYTES
    index_off = align(tok_off + len(tok_bytes), 8)
    pos = index_off + INDEX_ENTRY_BYTES * len(picked)
    index = []
    for name, shape, _ in picked:
        encoded = name.encode("utf-8")
        if len(encoded) >= NAME_FIELD or len(shape) > 4:
            raise ConvertError("tensor %s does not fit the model file's index" % name)
        pos = align(pos, TENSOR_ALIGN)
        index.append(pack_fields(INDEX_FIELDS, INDEX_ENTRY_BYTES, {
            "name": encoded, "dtype": DTYPE_F32, "ndim": len(shape), "shape": shape + [0] * (4 - len(shape)),
            "offset": pos}))
        pos += 4 * product(shape)
    file_bytes = pos

    src = source_name.encode("utf-8", "replace")[:SOURCE_FIELD - 1]
    while src:
        try:
            src.decode("utf-8")
            break
        except UnicodeDecodeError:
            src = src[:-1]
    header = pack_fields(HEADER_FIELDS, HEADER_BYTES, {
        "magic": b"CLIPCMOD", "version": FORMAT_VERSION, "header_bytes": HEADER_BYTES, "file_bytes": file_bytes,
        "tokenizer_offset": tok_off, "tokenizer_bytes": len(tok_bytes), "index_offset": index_off,
        "tensor_count": len(picked), "flags": flags, "slots": header_slots(cfg, pp), "source": src})

    out_dir = os.path.dirname(os.path.abspath(out_path))
    try:
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix="." + os.path.basename(out_path) + ".", suffix=".part")
    except OSError as e:
        raise ConvertError("cannot write in %s (%s)" % (out_dir, e.strerror or e)) from None
    try:
        with os.fdopen(fd, "wb", buffering=0) as raw:
            f = HugePageWriter(raw)
            f.write(header)
            f.write(tok_bytes)
            f.write(bytes(index_off - f.tell()))
            f.write(b"".join(index))
            for (name, shape, t), entry in zip(picked, index):
                offset = struct.unpack_from("<Q", entry, field_offset(INDEX_FIELDS, "offset"))[0]
                f.write(bytes(offset - f.tell()))
                data = to_float32(t.read(), t.dtype)
                if len(data) != 4 * product(shape):
                    raise ConvertError("tensor %s has %d bytes of data, expected %d"
                                       % (name, len(data), 4 * product(shape)))
                f.write(data)
            f.finish()
            if f.tell() != file_bytes:
                raise ConvertError("internal size mismatch while writing %s" % out_path)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out_path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ConvertError("cannot write %s (%s)" % (out_path, e.strerror or e)) from None
        raise
    return file_bytes


# ---------------------------------------------------------------------------
# Hugging Face hub download (urllib; HF_ENDPOINT, HF_TOKEN, CLIP_CACHE_DIR)
# ---------------------------------------------------------------------------

HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


class SameHostAuthRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects, re-sending the token only to the host it was meant for."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        auth = req.unredirected_hdrs.get("Authorization")
        if new is not None and auth and \
                urllib.parse.urlsplit(new.full_url).netloc == urllib.parse.urlsplit(req.full_url).netloc:
            new.add_unredirected_header("Authorization", auth)
        return new


def human(n):
    return "%.1f MB" % (n / 1e6)


def hub_fetch(endpoint, repo, filename, folder, opener, token):
    """Download one file into the cache folder; False when the hub has no such file."""
    dest = os.path.join(folder, filename)
    if os.path.isfile(dest):
        return True
    url = "%s/%s/resolve/main/%s" % (endpoint, urllib.parse.quote(repo), urllib.parse.quote(filename))
    req = urllib.request.Request(url, headers={"User-Agent": "clip.c-convert/1"})
    if token:
        req.add_unredirected_header("Authorization", "Bearer " + token)
    try:
        resp = opener.open(req, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return False
        if e.code in (401, 403):
            raise ConvertError("%s refused %s/%s (HTTP %d): the repo may be private or gated, so set HF_TOKEN "
                               "to a token that can read it, or check the id"
                               % (endpoint, repo, filename, e.code)) from None
        raise ConvertError("downloading %s failed with HTTP %d %s" % (url, e.code, e.reason)) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise ConvertError("could not download %s (%s): check the network, set HF_ENDPOINT to a reachable "
                           "mirror, or download the model folder yourself and pass its path" % (url, reason)) from None
    total = resp.headers.get("Content-Length")
    total = int(total) if total and total.isdigit() else None
    tmp = dest + ".part"
    got, start, last_print = 0, time.time(), 0.0
    show = total is None or total > (1 << 20)
    tty = sys.stderr.isatty()
    try:
        with resp, open(tmp, "wb") as f:
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                now = time.time()
                if show and now - last_print >= (0.25 if tty else 5.0):
                    last_print = now
                    progress_line(filename, got, total, now - start, tty, final=False)
        if total is not None and got != total:
            raise ConvertError("the download of %s stopped after %d of %d bytes; run again to retry"
                               % (url, got, total))
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise ConvertError("downloading %s failed (%s): run again to retry, or set HF_ENDPOINT to a mirror"
                           % (url, getattr(e, "reason", None) or e)) from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if show:
        progress_line(filename, got, total, time.time() - start, tty, final=True)
    return True


def progress_line(filename, got, total, secs, tty, final):
    rate = got / secs / 1e6 if secs > 0 else 0.0
    pct = " (%d%%)" % (100 * got // total) if total else ""
    size = "%s / %s" % (human(got), human(total)) if total else human(got)
    line = "convert.py: downloading %s: %s%s, %.1f MB/s" % (filename, size, pct, rate)
    if tty:
        sys.stderr.write("\r" + line + ("\n" if final else ""))
    else:
        sys.stderr.write(line + "\n")
    sys.stderr.flush()


def cache_root():
    root = os.environ.get("CLIP_CACHE_DIR")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                            "clip.c")
    return root


def hub_fetch_shards(folder, index_name, repo, fetch):
    """Every shard named by a downloaded *.index.json."""
    wmap = read_json(os.path.join(folder, index_name)).get("weight_map")
    if not isinstance(wmap, dict):
        raise ConvertError("%s has no weight_map" % index_name)
    for shard in sorted(set(safe_shard_name(s, index_name) for s in wmap.values())):
        if not fetch(shard):
            raise ConvertError("%s lists %s, but %s has no such file" % (index_name, shard, repo))
    return folder


def hub_download(repo):
    """Download what convert.py reads from a hub repo; returns the cache folder."""
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    token = os.environ.get("HF_TOKEN") or None
    folder = os.path.join(cache_root(), *repo.split("/"))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ConvertError("cannot create the download cache %s (%s); set CLIP_CACHE_DIR to a writable folder"
                           % (folder, e.strerror or e)) from None
    opener = urllib.request.build_opener(SameHostAuthRedirect())

    def fetch(name):
        return hub_fetch(endpoint, repo, name, folder, opener, token)

    if not fetch("config.json"):
        raise ConvertError("%s was not found at %s (config.json: HTTP 404): check the hub id, or set HF_TOKEN "
                           "if the repo is private" % (repo, endpoint))
    for name in ("preprocessor_config.json", "tokenizer_config.json", "special_tokens_map.json"):
        fetch(name)
    if not (fetch("vocab.json") and fetch("merges.txt")):
        fetch("tokenizer.json")
    if fetch("model.safetensors"):
        return folder
    if fetch("model.safetensors.index.json"):
        return hub_fetch_shards(folder, "model.safetensors.index.json", repo, fetch)
    if fetch("pytorch_model.bin"):
        return folder
    if fetch("pytorch_model.bin.index.json"):
        return hub_fetch_shards(folder, "pytorch_model.bin.index.json", repo, fetch)
    raise ConvertError("%s has no weights convert.py can read (model.safetensors, "
                       "model.safetensors.index.json or pytorch_model.bin)" % repo)


# ---------------------------------------------------------------------------
# --synthetic: full-size CLIP architectures with deterministic random weights
# ---------------------------------------------------------------------------

SYNTHETIC = {
    # name: (vision hidden, heads, layers, mlp, patch, image), (text hidden, heads, layers, mlp), projection
    "ViT-B/32": ((768, 12, 12, 3072, 32, 224), (512, 8, 12, 2048), 512),
    "ViT-B/16": ((768, 12, 12, 3072, 16, 224), (512, 8, 12, 2048), 512),
    "ViT-L/14": ((1024, 16, 24, 4096, 14, 224), (768, 12, 12, 3072), 768),
    "ViT-L/14-336": ((1024, 16, 24, 4096, 14, 336), (768, 12, 12, 3072), 768),
}


def synthetic_config(arch):
    (vd, vh, vl, vff, patch, image), (td, th, tl, tff), proj = SYNTHETIC[arch]
    vision = {"hidden_size": vd, "num_attention_heads": vh, "num_hidden_layers": vl, "intermediate_size": vff,
              "hidden_act": 0, "layer_norm_eps": 1e-5, "patch_size": patch, "image_size": image, "num_channels": 3}
    text = {"hidden_size": td, "num_attention_heads": th, "num_hidden_layers": tl, "intermediate_size": tff,
            "hidden_act": 0, "layer_norm_eps": 1e-5, "vocab_size": 49408, "max_position_embeddings": 77,
            "eos_token_id": 2}
    pp = {"shortest_edge": image, "crop_h": image, "crop_w": image, "do_resize": 1, "do_center_crop": 1,
          "do_rescale": 1, "do_normalize": 1, "rescale_factor": 1 / 255,
          "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD)}
    return {"text": text, "vision": vision, "projection_dim": proj}, pp


# f32 byte 3 (sign, exponent high bits) from a random byte: |x| in [2^-7, 2^-5)
# for weights, [2^-11, 2^-9) for biases; layer-norm gains are 1 + [0, 1/16).
WEIGHT_T3 = bytes((r & 0x80) | 60 for r in range(256))
BIAS_T3 = bytes((r & 0x80) | 58 for r in range(256))
GAIN_T2 = bytes(0x80 | (r & 0x07) for r in range(256))
GAIN_T3 = bytes([0x3F]) * 256


class SyntheticTensor:
    """Pseudo-random float32 values from SHAKE-256(seed, name): random bytes
    become floats by fixing the exponent bits with bytes.translate."""
    dtype = "F32"

    def __init__(self, name, shape, seed):
        self.name, self.shape, self.seed = name, shape, seed

    def read(self):
        n = product(self.shape)
        if self.name == "logit_scale":
            return struct.pack("<f", math.log(100.0))
        out = bytearray(hashlib.shake_256(("%d:%s" % (self.seed, self.name)).encode()).digest(4 * n))
        out[0::4] = bytes(n)
        gain = self.name.endswith(".weight") and ("layer_norm" in self.name or "layrnorm" in self.name)
        if gain:
            out[2::4] = out[2::4].translate(GAIN_T2)
            out[3::4] = out[3::4].translate(GAIN_T3)
        elif self.name.endswith(".bias"):
            out[3::4] = out[3::4].translate(BIAS_T3)
        else:
            out[3::4] = out[3::4].translate(WEIGHT_T3)
        return out


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

class UsageError(Exception):
    """Bad usage: exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def parse_args(argv):
    p = Parser(prog="convert.py", description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
               usage="python3 convert.py HF_FOLDER_OR_HUB_ID -o MODEL.bin\n"
                     "       python3 convert.py --synthetic ARCH -o MODEL.bin [--seed N] [--tokenizer DIR]")
    p.add_argument("source", nargs="?", metavar="HF_FOLDER_OR_HUB_ID",
                   help="a Hugging Face CLIPModel folder, or a hub id such as openai/clip-vit-base-patch32")
    p.add_argument("-o", "--output", metavar="MODEL.bin", help="the model file to write (required)")
    p.add_argument("--synthetic", metavar="ARCH", help="write random weights for ARCH: " + ", ".join(SYNTHETIC))
    p.add_argument("--seed", type=int, help="seed for --synthetic (default 0)")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="with --synthetic: take the tokenizer from this folder instead of a byte-level one")
    a = p.parse_args(argv)
    if not a.source and a.synthetic is None:
        p.error("missing HF_FOLDER_OR_HUB_ID (a model folder or hub id) or --synthetic ARCH")
    if not a.output:
        p.error("missing -o MODEL.bin (where to write the model file)")
    if a.synthetic is not None:
        if a.source:
            p.error("give either a checkpoint or --synthetic ARCH, not both")
        arch = {k.lower(): k for k in SYNTHETIC}.get(a.synthetic.lower())
        if arch is None:
            p.error("--synthetic %s is unknown; choose one of %s" % (a.synthetic, ", ".join(SYNTHETIC)))
        a.synthetic = arch
        if a.seed is None:
            a.seed = 0
        if a.seed < 0 or a.seed > 2**63:
            p.error("--seed must be a non-negative integer")
    else:
        if a.seed is not None or a.tokenizer is not None:
            p.error("--seed and --tokenizer go with --synthetic")
    return a


def convert_folder(folder, name, output):
    """Read a Hugging Face folder and write the model file."""
    cfg = read_model_config(read_json(os.path.join(folder, "config.json")))
    pp_json = read_json(os.path.join(folder, "preprocessor_config.json"), required=False)
    pp = read_preprocess_config(pp_json or {}, 224 if pp_json is not None else cfg["vision"]["image_size"])
    size = cfg["vision"]["image_size"]
    if pp["do_center_crop"] and (pp["crop_h"], pp["crop_w"]) != (size, size):
        raise ConvertError("preprocessor_config.json crops images to %dx%d, but the vision model takes %dx%d"
                           % (pp["crop_w"], pp["crop_h"], size, size))
    files = []
    try:
        picked = match_tensors(cfg, read_checkpoint(folder, files))
        tok = read_tokenizer(folder, cfg["text"]["max_position_embeddings"])
        return write_model(output, cfg, pp, tok, picked, name, 0), len(picked)
    finally:
        for f in files:
            f.close()


def convert_synthetic(arch, seed, tokenizer_dir, output):
    cfg, pp = synthetic_config(arch)
    if tokenizer_dir:
        if not os.path.isdir(tokenizer_dir):
            raise ConvertError("the tokenizer folder %s does not exist" % tokenizer_dir)
        tok = read_tokenizer(tokenizer_dir, cfg["text"]["max_position_embeddings"])
    else:
        tok = synthetic_tokenizer(cfg["text"]["vocab_size"])
    picked = [(n, s, SyntheticTensor(n, s, seed)) for n, s in expected_tensors(cfg)]
    name = "synthetic %s (seed %d)" % (arch, seed)
    return write_model(output, cfg, pp, tok, picked, name, FLAG_SYNTHETIC), len(picked)


def main(argv):
    start = time.time()
    args = parse_args(argv)
    if os.path.isdir(args.output):
        raise ConvertError("-o %s is a folder; give the model file's name" % args.output)
    if args.synthetic:
        size, n = convert_synthetic(args.synthetic, args.seed, args.tokenizer, args.output)
    else:
        src = args.source
        if os.path.isdir(src):
            folder, name = src, os.path.basename(os.path.normpath(os.path.abspath(src)))
        elif os.path.exists(src):
            raise ConvertError("%s is a file; pass the folder that holds the checkpoint" % src)
        elif HUB_ID.fullmatch(src) and ".." not in src:
            folder, name = hub_download(src), src
        else:
            raise ConvertError("the folder %s does not exist (and it is not a hub id like "
                               "openai/clip-vit-base-patch32)" % src)
        size, n = convert_folder(folder, name, args.output)
    print("convert.py: wrote %s (%s, %d tensors) in %.1f s" % (args.output, human(size), n, time.time() - start))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UsageError as e:
        print("convert.py: error: %s (see python3 convert.py --help)" % " ".join(str(e).split()), file=sys.stderr)
        sys.exit(2)
    except ConvertError as e:
        print("convert.py: error: %s" % " ".join(str(e).split()), file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("convert.py: error: interrupted; nothing was written", file=sys.stderr)
        sys.exit(1)
    except MemoryError:
        print("convert.py: error: out of memory", file=sys.stderr)
        sys.exit(1)
    except Exception as e:   # a bug or an input case nobody foresaw: still one line, no traceback
        print("convert.py: error: unexpected %s (%s); please report it with the command you ran"
              % (type(e).__name__, " ".join(str(e).split())[:300]), file=sys.stderr)
        sys.exit(1)
