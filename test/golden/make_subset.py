#!/usr/bin/python3
"""Make the in-repository golden subset (test/golden/*.tar.xz) from the Hugging Face reference folder.

    /usr/bin/python3 test/golden/make_subset.py [--from ../shared/golden]

Run once, by a maintainer who has the full reference folder (115 MB, made with transformers 5.17,
tokenizers 0.23, Pillow 12.3, torch 2.11 CPU; see test/golden/README.md); it needs NumPy. It is the
only part of the repository that reads ../shared. The tests never run it: they extract the archives
it writes into test/out/golden/ (test/common.py), a folder laid out like the reference folder.

What it keeps and how (every step is checked here, and fails loudly if it does not hold):
  images/            every input file, byte for byte
  images/expected/index.json
                     Pillow's verdict per file as in the reference, plus `pil_sha256` and `hf5_sha256`:
                     the sha256 of the float32 bytes of NAME.pil.npy and NAME.hf5.npy (the arrays
                     themselves are dropped; the tests compare bytes). The .rgb.npy arrays are dropped
                     (`rgb_sha256` is their sha256 already).
  tokenizer/         vocab.json, merges.txt, tokenizer.json, the configs, cases.json and
                     batch_padding.npz, as they are
  models/NAME/       config and tokenizer files as they are; the weights (model.safetensors,
                     pytorch_model.bin) with every row of the token embedding that no golden input_ids
                     uses set to zero (the rows the goldens use are kept exactly, at the precision
                     Hugging Face ran them); golden.npz reduced to the arrays the tests compare
                     (see `reduce_golden`); golden.json: the images behind pixel_values and the
                     sha256 of each pixel_values row
Archives are solid xz (tar, fixed order and dates: the same input gives the same bytes), each under
4 MB, so files that repeat across model folders cost nothing.
"""
import argparse
import hashlib
import io
import json
import lzma
import os
import struct
import sys
import tarfile
import zipfile
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MAX_ARCHIVE = 4 * 1000 * 1000
EMBEDDING = "text_model.embeddings.token_embedding.weight"


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def npy_bytes(a):
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a))
    return buf.getvalue()


def npz_bytes(arrays):
    """An uncompressed .npz (np.load reads it; so does test/common.py's load_npz)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for k in sorted(arrays):
            info = zipfile.ZipInfo(k + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(info, npy_bytes(arrays[k]))
    return buf.getvalue()


# ---------------------------------------------------------------------------
# Weights: zero the token-embedding rows no golden text uses
# ---------------------------------------------------------------------------

def zero_safetensors(raw, keep):
    n = struct.unpack_from("<Q", raw)[0]
    header = json.loads(raw[8:8 + n])
    info = header[EMBEDDING]
    a, b = info["data_offsets"]
    rows, d = info["shape"]
    size = {"F32": 4, "F16": 2, "BF16": 2}[info["dtype"]]
    out = bytearray(raw)
    base = 8 + n + a
    assert b - a == rows * d * size
    for r in range(rows):
        if r not in keep:
            out[base + r * d * size: base + (r + 1) * d * size] = bytes(d * size)
    return bytes(out), raw[base:base + rows * d * size], bytes(out[base:base + rows * d * size])


def zero_torch_zip(raw, old, new):
    """pytorch_model.bin (torch.save's zip, entries stored) with the embedding storage `old`
    replaced by `new` in place: same layout, CRC-32 fixed in the local header, the data descriptor
    and the central directory."""
    z = zipfile.ZipFile(io.BytesIO(raw))
    out = bytearray(raw)
    hits = 0
    for info in z.infolist():
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != len(old):
            continue
        lh = info.header_offset
        assert raw[lh:lh + 4] == b"PK\x03\x04"
        name_len, extra_len = struct.unpack_from("<HH", raw, lh + 26)
        data = lh + 30 + name_len + extra_len
        if raw[data:data + len(old)] != old:
            continue
        hits += 1
        out[data:data + len(old)] = new
        crc = zlib.crc32(new) & 0xFFFFFFFF
        if struct.unpack_from("<I", raw, lh + 14)[0]:
            struct.pack_into("<I", out, lh + 14, crc)
        if info.flag_bits & 8:              # data descriptor after the data
            dd = data + len(old)
            dd += 4 if raw[dd:dd + 4] == b"PK\x07\x08" else 0
            assert struct.unpack_from("<I", raw, dd)[0] == info.CRC
            struct.pack_into("<I", out, dd, crc)
        pos = raw.rfind(b"PK\x05\x06")             # end of central directory
        cd_off = struct.unpack_from("<I", raw, pos + 16)[0]
        p = cd_off
        while raw[p:p + 4] == b"PK\x01\x02":
            n1, n2, n3 = struct.unpack_from("<HHH", raw, p + 28)
            if struct.unpack_from("<I", raw, p + 42)[0] == lh:
                struct.pack_into("<I", out, p + 16, crc)
                break
            p += 46 + n1 + n2 + n3
        else:
            raise AssertionError("central directory entry not found")
    assert hits == 1, "the embedding storage was found %d times in pytorch_model.bin" % hits
    check = zipfile.ZipFile(io.BytesIO(bytes(out)))
    assert check.testzip() is None, "CRC check failed after zeroing"
    return bytes(out)


# ---------------------------------------------------------------------------
# golden.npz: the arrays the tests compare
# ---------------------------------------------------------------------------

def level_tables(src):
    """Per resize mode, the 3 x 256 float32 values a pixel of each grey level takes (sorted)."""
    exp = os.path.join(src, "images", "expected")
    tables = {}
    for kind in ("pil", "hf5"):
        arrays = [np.load(os.path.join(exp, f)) for f in sorted(os.listdir(exp)) if f.endswith("." + kind + ".npy")]
        t = np.array([np.unique(np.concatenate([a[:, c].ravel() for a in arrays])) for c in range(3)], np.float32)
        assert t.shape == (3, 256), (kind, t.shape)
        tables[kind] = t
    return tables


def to_levels(pixels, table):
    levels = np.empty(pixels.shape, np.uint8)
    for c in range(3):
        idx = np.searchsorted(table[c], pixels[:, c])
        assert idx.max() < 256 and np.array_equal(table[c][idx], pixels[:, c]), "pixel value outside the table"
        levels[:, c] = idx
    back = table[np.arange(3)[None, :, None, None], levels.astype(np.int64)]
    assert back.dtype == np.float32 and back.tobytes() == np.ascontiguousarray(pixels, np.float32).tobytes()
    return levels


# The images behind every golden.npz's pixel_values, in row order (the reference README).
PIXEL_IMAGES = ["chelsea.png", "astronaut.png", "cat_cifarlike_32.png", "cat_q90_420.jpg", "camera.png",
                "cat_wide_2000x20.png"]


def reduce_golden(g, table, expected):
    """The arrays of golden.npz the tests compare, and nothing lost that they use:
    - pixel_values at 224 px (each row is also images/expected/NAME.hf5.npy, checked here) ->
      pixel_levels (uint8) + pixel_table (3 x 256 float32): pixel_values == pixel_table[c, pixel_levels]
      exactly (checked here). At 336 px (tiny-l14-336) only the sha256 of each row is kept, in
      golden.json: the tests make those rows with `clip preprocess` and use them only when every
      byte matches Hugging Face's;
    - text_hidden_*, text_last_hidden_* cut to the first text's real tokens (the rest is padding the
      tests never compare);
    - image_last_hidden_f64 dropped where it equals image_hidden_f64[-1] (restored on extraction);
    - text_hidden_f32 / image_hidden_f32 -> *_hidden_hf32_err: per stage, the max abs difference of
      Hugging Face's float32 run from its float64 run (the tests' "no worse than twice HF's float32
      error" bound), computed here from Hugging Face's own outputs."""
    out = {k: g[k] for k in g.files if not k.startswith(("pixel_values", "text_hidden", "image_hidden",
                                                          "text_last_hidden", "image_last_hidden"))}
    out["input_ids"] = g["input_ids"].astype(np.int64)
    out["attention_mask"] = g["attention_mask"].astype(np.int64)
    px = g["pixel_values"]
    if px.shape[-1] == 224:
        for i, a in enumerate(px):
            ref = np.load(os.path.join(expected, PIXEL_IMAGES[i].replace(".", "_") + ".hf5.npy"))
            assert np.array_equal(ref[0], a), "pixel_values row %d is not %s's hf5" % (i, PIXEL_IMAGES[i])
        out["pixel_levels"] = to_levels(px, table)
        out["pixel_table"] = table
    if "text_hidden_f64" in g.files:
        n0 = int(g["attention_mask"][0].sum())
        th64, th32 = g["text_hidden_f64"][:, :n0], g["text_hidden_f32"][:, :n0]
        ih64, ih32 = g["image_hidden_f64"], g["image_hidden_f32"]
        out["text_hidden_f64"] = th64
        out["image_hidden_f64"] = ih64
        out["text_hidden_hf32_err"] = np.abs(th32 - th64).reshape(len(th64), -1).max(axis=1)
        out["image_hidden_hf32_err"] = np.abs(ih32 - ih64).reshape(len(ih64), -1).max(axis=1)
        out["text_last_hidden_f64"] = g["text_last_hidden_f64"][:n0]
        if not np.array_equal(g["image_last_hidden_f64"], ih64[-1]):
            out["image_last_hidden_f64"] = g["image_last_hidden_f64"]
    return out


# ---------------------------------------------------------------------------
# Archives
# ---------------------------------------------------------------------------

def write_archive(path, members):
    """members: list of (name, bytes), written in this order into a solid tar.xz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    xz = lzma.compress(buf.getvalue(), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                       preset=9 | lzma.PRESET_EXTREME)
    assert len(xz) < MAX_ARCHIVE, "%s would be %d bytes" % (path, len(xz))
    with open(path + ".tmp", "wb") as f:
        f.write(xz)
    os.replace(path + ".tmp", path)
    print("%-22s %8d bytes, %3d files, %9d bytes unpacked" % (os.path.basename(path), len(xz), len(members),
                                                             sum(len(d) for _, d in members)))
    return len(xz)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="src", default=os.path.join(ROOT, "..", "shared", "golden"),
                    help="the full reference folder (default ../shared/golden beside the repository)")
    args = ap.parse_args()
    src = os.path.abspath(args.src)
    read = lambda rel: open(os.path.join(src, rel), "rb").read()  # noqa: E731

    # -- images ----------------------------------------------------------------
    index = json.loads(read("images/expected/index.json"))
    for name, e in index.items():
        stem = os.path.join("images", "expected", name.replace(".", "_"))
        for kind in ("pil", "hf5"):
            p = os.path.join(src, stem + "." + kind + ".npy")
            if os.path.exists(p):
                a = np.load(p)
                assert a.dtype == np.float32
                e[kind + "_shape"] = list(a.shape)
                e[kind + "_sha256"] = sha256(np.ascontiguousarray(a).tobytes())
        p = os.path.join(src, stem + ".rgb.npy")
        if os.path.exists(p):
            assert sha256(np.ascontiguousarray(np.load(p)).tobytes()) == e["rgb_sha256"], name
    images = sorted(f for f in os.listdir(os.path.join(src, "images"))
                    if os.path.isfile(os.path.join(src, "images", f)))
    assert set(index) <= set(images)

    # -- models ----------------------------------------------------------------
    mdir = os.path.join(src, "models")
    models = sorted(os.listdir(mdir))
    keep = set()
    for m in models:
        if os.path.exists(os.path.join(mdir, m, "golden.npz")):
            keep |= set(np.unique(np.load(os.path.join(mdir, m, "golden.npz"))["input_ids"]).tolist())
    print("token-embedding rows kept (the ids of the golden input_ids): %d of 49408" % len(keep))
    tables = level_tables(src)
    weights, small, outputs = [], [], []
    zeroed_f32 = {}
    for m in models:
        for f in sorted(os.listdir(os.path.join(mdir, m))):
            rel = "models/%s/%s" % (m, f)
            if f == "model.safetensors":
                data, old, new = zero_safetensors(read(rel), keep)
                zeroed_f32[m] = (old, new)
                weights.append((rel, data))
            elif f == "golden.npz":
                g = np.load(os.path.join(mdir, m, f))
                px = np.ascontiguousarray(g["pixel_values"], np.float32)
                meta = {"pixel_images": PIXEL_IMAGES[:len(px)], "pixel_shape": list(px.shape),
                        "pixel_sha256": [sha256(row.tobytes()) for row in px],
                        "pixel_resize": "torchvision (the transformers 5 default processor)"}
                outputs.append(("models/%s/golden.json" % m, json.dumps(meta, indent=1).encode() + b"\n"))
                reduced = reduce_golden(g, tables["hf5"], os.path.join(src, "images", "expected"))
                outputs.append(("models/%s/golden.compact.npz" % m, npz_bytes(reduced)))
            elif f != "pytorch_model.bin":
                small.append((rel, read(rel)))
    for m in models:
        if os.path.exists(os.path.join(mdir, m, "pytorch_model.bin")):
            twin = m.replace("-pytorch-bin", "")      # tiny-b32-pytorch-bin holds tiny-b32's weights
            old, new = zeroed_f32[twin]
            weights.insert([w[0] for w in weights].index("models/%s/model.safetensors" % twin) + 1,
                            ("models/%s/pytorch_model.bin" % m, zero_torch_zip(read("models/%s/pytorch_model.bin" % m), old, new)))
    tok = [("tokenizer/" + f, read("tokenizer/" + f)) for f in sorted(os.listdir(os.path.join(src, "tokenizer")))]
    outputs.append(("images/expected/index.json", json.dumps(index, indent=1, sort_keys=True).encode() + b"\n"))
    # the README of the reference folder, as provenance
    outputs.append(("README.reference.md", read("README.md")))

    # -- write -----------------------------------------------------------------
    for f in os.listdir(HERE):
        if f.endswith(".tar.xz"):
            os.remove(os.path.join(HERE, f))
    total = write_archive(os.path.join(HERE, "tokenizer.tar.xz"), tok + small)
    total += write_archive(os.path.join(HERE, "weights.tar.xz"), weights)
    total += write_archive(os.path.join(HERE, "outputs.tar.xz"), outputs)
    # images: split by size into archives under 4 MB each
    groups, cur, cur_size = [], [], 0
    for f in images:
        data = read("images/" + f)
        est = len(lzma.compress(data, preset=6))
        if cur and cur_size + est > 0.9 * MAX_ARCHIVE:
            groups.append(cur)
            cur, cur_size = [], 0
        cur.append(("images/" + f, data))
        cur_size += est
    groups.append(cur)
    for i, g in enumerate(groups):
        total += write_archive(os.path.join(HERE, "images-%d.tar.xz" % (i + 1)), g)
    print("total %d bytes" % total)


if __name__ == "__main__":
    sys.exit(main())
