"""Seed corpora for the fuzz targets: test/out/fuzz/TARGET/seeds/.

    /usr/bin/python3 test/fuzz/make_seeds.py [--force] TARGET ...   (image png jpeg model tokenizer, or all)

Small valid inputs of every kind the target parses, so the fuzzer starts deep inside the
decoders instead of at the magic bytes:
  png        every colour type and bit depth, palette + tRNS, Adam7, several IDATs, all filters
  jpeg       baseline, progressive, optimized Huffman, 4:4:4 / 4:2:2 / 4:2:0 / 4:1:1 / 4:4:0,
             greyscale, CMYK, restart markers (cjpeg from libjpeg-turbo-progs when installed)
  image      the above plus PPM/PGM/PBM (P1-P6, 16-bit) and BMP (1/4/8/16/24/32-bit, RLE4/RLE8,
             top-down), plus the small golden images (bad_* included)
  model      tiny model files written here (not by convert.py), a few shapes and activations
  tokenizer  the golden tokenizer test texts; also writes test/out/fuzz/tokenizer.section,
             the tokenizer section of the golden tiny-b32 model converted by convert.py
Seeds are written once; --force writes them again. Pixels come from the golden images
(test/golden, extracted by test/common.py), read with Pillow; nothing here is stored in the repository.
"""
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common import GOLDEN, OUT, converted  # noqa: E402

FUZZ = os.path.join(OUT, "fuzz")
IMAGES = os.path.join(GOLDEN, "images")


def source(w, h, name="chelsea.png"):
    """A w x h RGB crop of a golden photo (real texture, not flat colour)."""
    from PIL import Image   # here: test_hostile imports tiny_model without Pillow
    im = Image.open(os.path.join(IMAGES, name)).convert("RGB")
    return im.crop((100, 60, 100 + w, 60 + h))


# ---------------------------------------------------------------------------
# PNG, written by hand so every colour type, bit depth, filter and Adam7 is covered
# ---------------------------------------------------------------------------

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_pack_row(samples, depth):
    """Samples of one row (ints) -> bytes at the bit depth."""
    if depth == 16:
        return b"".join(struct.pack(">H", s) for s in samples)
    if depth == 8:
        return bytes(samples)
    out, acc, nbits = bytearray(), 0, 0
    for s in samples:
        acc = acc << depth | s
        nbits += depth
        if nbits == 8:
            out.append(acc)
            acc, nbits = 0, 0
    if nbits:
        out.append(acc << (8 - nbits))
    return bytes(out)


def png_filter(row, prev, bpp, ftype):
    """Apply PNG filter ftype to one row (bytes) given the previous raw row."""
    out = bytearray()
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prev[i] if prev else 0
        c = prev[i - bpp] if prev and i >= bpp else 0
        if ftype == 0:
            p = 0
        elif ftype == 1:
            p = a
        elif ftype == 2:
            p = b
        elif ftype == 3:
            p = (a + b) // 2
        else:
            pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
            p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        out.append((x - p) & 255)
    return bytes([ftype]) + bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png_file(w, h, ctype, depth, pixels, interlace=0, plte=None, trns=None, idat_parts=1, extra=()):
    """pixels[y][x] = tuple of channel samples. Filters cycle 0..4 row by row."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    bpp = max(1, channels * depth // 8)
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    raw, k = bytearray(), 0
    for x0, y0, dx, dy in passes:
        xs, ys = list(range(x0, w, dx)), list(range(y0, h, dy))
        if not xs or not ys:
            continue
        prev = None
        for y in ys:
            row = png_pack_row([s for x in xs for s in pixels[y][x]], depth)
            raw += png_filter(row, prev, bpp, k % 5)
            prev, k = row, k + 1
    z = zlib.compress(bytes(raw), 9)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    body = png_chunk(b"IHDR", ihdr)
    for kind, data in extra:
        body += png_chunk(kind, data)
    if plte is not None:
        body += png_chunk(b"PLTE", plte)
    if trns is not None:
        body += png_chunk(b"tRNS", trns)
    step = max(1, -(-len(z) // idat_parts))
    for i in range(0, len(z), step):
        body += png_chunk(b"IDAT", z[i:i + step])
    return b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b"")


def png_seeds():
    w, h = 13, 9
    rgb = source(w, h).load()
    px = [[rgb[x, y] for x in range(w)] for y in range(h)]
    grey = [[(r * 299 + g * 587 + b * 114) // 1000 for r, g, b in row] for row in px]
    seeds = {}
    for interlace in (0, 1):
        tag = "_adam7" if interlace else ""
        for depth in (1, 2, 4, 8, 16):
            m = (1 << depth) - 1
            seeds["grey%d%s.png" % (depth, tag)] = png_file(
                w, h, 0, depth, [[(g * m // 255,) for g in row] for row in grey], interlace)
        for depth in (8, 16):
            s = 257 if depth == 16 else 1
            seeds["rgb%d%s.png" % (depth, tag)] = png_file(
                w, h, 2, depth, [[tuple(c * s for c in p) for p in row] for row in px], interlace)
            seeds["la%d%s.png" % (depth, tag)] = png_file(
                w, h, 4, depth, [[(g * s, (x * 20) * s & (255 * s)) for x, g in enumerate(row)] for row in grey],
                interlace)
            seeds["rgba%d%s.png" % (depth, tag)] = png_file(
                w, h, 6, depth, [[tuple(c * s for c in p) + ((y * 30 & 255) * s,) for p in row]
                                 for y, row in enumerate(px)], interlace)
        for depth in (1, 2, 4, 8):
            n = 1 << depth
            plte = b"".join(bytes(px[i % h][i % w]) for i in range(n))
            idx = [[((x + 3 * y) % n,) for x in range(w)] for y in range(h)]
            seeds["p%d%s.png" % (depth, tag)] = png_file(w, h, 3, depth, idx, interlace, plte=plte)
            seeds["p%d_trns%s.png" % (depth, tag)] = png_file(w, h, 3, depth, idx, interlace, plte=plte,
                                                             trns=bytes(range(0, 256, 256 // n))[:n])
        seeds["grey8_trns%s.png" % tag] = png_file(w, h, 0, 8, [[(g,) for g in row] for row in grey],
                                                  interlace, trns=struct.pack(">H", grey[0][0]))
        seeds["rgb8_trns%s.png" % tag] = png_file(w, h, 2, 8, px, interlace, trns=struct.pack(">3H", *px[0][0]))
    seeds["rgb8_split_idat.png"] = png_file(w, h, 2, 8, px, idat_parts=7,
                                            extra=[(b"gAMA", struct.pack(">I", 45455)),
                                                   (b"tEXt", b"Comment\0fuzz seed")])
    seeds["one_pixel.png"] = png_file(1, 1, 2, 8, [[(1, 2, 3)]])
    seeds["one_pixel_adam7.png"] = png_file(1, 1, 0, 1, [[(1,)]], interlace=1)
    seeds["tall_1x40_adam7.png"] = png_file(1, 40, 0, 8, [[(y * 6,)] for y in range(40)], interlace=1)
    for name, im in [("pil_rgb.png", source(31, 17)), ("pil_p.png", source(31, 17).quantize(37))]:
        b = io.BytesIO()
        im.save(b, "PNG")
        seeds[name] = b.getvalue()
    return seeds


# ---------------------------------------------------------------------------
# JPEG: Pillow, and cjpeg for restart markers and the rarer samplings
# ---------------------------------------------------------------------------

def jpeg_seeds():
    seeds = {}
    src = source(37, 21)
    for q in (50, 90):
        for sub in (0, 1, 2):
            for prog in (False, True):
                b = io.BytesIO()
                src.save(b, "JPEG", quality=q, subsampling=sub, progressive=prog)
                seeds["q%d_sub%d%s.jpg" % (q, sub, "_prog" if prog else "")] = b.getvalue()
    for name, im, kw in [("grey.jpg", src.convert("L"), {}), ("grey_prog.jpg", src.convert("L"), {"progressive": True}),
                         ("optimized.jpg", src, {"optimize": True}), ("cmyk.jpg", src.convert("CMYK"), {}),
                         ("tiny_1x1.jpg", source(1, 1), {}), ("q100.jpg", src, {"quality": 100})]:
        b = io.BytesIO()
        im.save(b, "JPEG", **kw)
        seeds[name] = b.getvalue()
    if shutil.which("cjpeg"):
        b = io.BytesIO()
        src.save(b, "PPM")
        with tempfile.NamedTemporaryFile(suffix=".ppm") as f:
            f.write(b.getvalue())
            f.flush()
            for name, args in [("restart1.jpg", ["-restart", "1B"]), ("restart_rows.jpg", ["-restart", "1"]),
                               ("sample_411.jpg", ["-sample", "4x1,1x1,1x1"]),
                               ("sample_440.jpg", ["-sample", "1x2,1x1,1x1"]),
                               ("sample_odd.jpg", ["-sample", "2x1,1x2,1x1"]),
                               ("prog_restart.jpg", ["-progressive", "-restart", "2B"]),
                               ("optimize_q30.jpg", ["-optimize", "-quality", "30"]),
                               ("grey_restart.jpg", ["-grayscale", "-restart", "3B"])]:
                p = subprocess.run(["cjpeg", *args, f.name], capture_output=True)
                if p.returncode == 0:
                    seeds[name] = p.stdout
    return seeds


# ---------------------------------------------------------------------------
# PPM/PGM/PBM and BMP
# ---------------------------------------------------------------------------

def ppm_seeds():
    w, h = 7, 5
    im = source(w, h)
    rgb = im.tobytes()
    grey = im.convert("L").tobytes()
    bits = im.convert("1")
    seeds = {
        "p6.ppm": b"P6\n%d %d\n255\n" % (w, h) + rgb,
        "p6_comment.ppm": b"P6 # seed\n%d\t%d # size\n255\n" % (w, h) + rgb,
        "p6_16bit.ppm": b"P6\n%d %d\n65535\n" % (w, h) + b"".join(struct.pack(">H", c * 257) for c in rgb),
        "p6_maxval1000.ppm": b"P6\n%d %d\n1000\n" % (w, h) + b"".join(struct.pack(">H", c * 3) for c in rgb),
        "p6_maxval15.ppm": b"P6\n%d %d\n15\n" % (w, h) + bytes(c >> 4 for c in rgb),
        "p5.pgm": b"P5\n%d %d\n255\n" % (w, h) + grey,
        "p5_16bit.pgm": b"P5\n%d %d\n65535\n" % (w, h) + b"".join(struct.pack(">H", c * 257) for c in grey),
        "p3.ppm": b"P3\n%d %d\n255\n" % (w, h) + " ".join(str(c) for c in rgb).encode() + b"\n",
        "p2.pgm": b"P2\n%d %d\n255\n" % (w, h) + " ".join(str(c) for c in grey).encode() + b"\n",
        "p1.pbm": b"P1\n%d %d\n" % (w, h) + " ".join("0" if bits.getpixel((x, y)) else "1"
                                                   for y in range(h) for x in range(w)).encode() + b"\n",
    }
    b = io.BytesIO()
    bits.save(b, "PPM")
    seeds["p4.pbm"] = b.getvalue()
    return seeds


def bmp_file(w, h, bpp, rows, palette=b"", compression=0, masks=b"", top_down=False, core=False):
    """rows: the pixel array bytes, already padded and in file order."""
    data = b"".join(rows)
    if core:
        info = struct.pack("<IHHHH", 12, w, h, 1, bpp)
    else:
        info = struct.pack("<IiiHHIIiiII", 40, w, -h if top_down else h, 1, bpp, compression, len(data),
                           2835, 2835, len(palette) // 4, 0) + masks
    off = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", off + len(data), 0, 0, off) + info + palette + data


def bmp_seeds():
    w, h = 9, 6
    im = source(w, h)
    px = im.load()
    seeds = {}
    for mode, name in [("1", "bmp1.bmp"), ("L", "bmp8_grey.bmp"), ("P", "bmp8_p.bmp"), ("RGB", "bmp24.bmp"),
                       ("RGBA", "bmp32.bmp")]:
        b = io.BytesIO()
        (im.convert(mode) if mode != "P" else im.quantize(16)).save(b, "BMP")
        seeds[name] = b.getvalue()
    pad = lambda r: r + bytes(-len(r) % 4)  # noqa: E731
    bgr = [pad(b"".join(bytes(px[x, y][::-1]) for x in range(w))) for y in range(h)]
    seeds["bmp24_topdown.bmp"] = bmp_file(w, h, 24, bgr, top_down=True)
    seeds["bmp24_core.bmp"] = bmp_file(w, h, 24, bgr[::-1], core=True)
    rgb565 = [pad(b"".join(struct.pack("<H", (px[x, y][0] >> 3) << 11 | (px[x, y][1] >> 2) << 5 | px[x, y][2] >> 3)
                           for x in range(w))) for y in range(h - 1, -1, -1)]
    seeds["bmp16_565.bmp"] = bmp_file(w, h, 16, rgb565, compression=3,
                                      masks=struct.pack("<3I", 0xF800, 0x07E0, 0x001F))
    rgb555 = [pad(b"".join(struct.pack("<H", (px[x, y][0] >> 3) << 10 | (px[x, y][1] >> 3) << 5 | px[x, y][2] >> 3)
                           for x in range(w))) for y in range(h - 1, -1, -1)]
    seeds["bmp16_555.bmp"] = bmp_file(w, h, 16, rgb555)
    palette = b"".join(bytes((i * 16, 255 - i * 16, i * 7, 0)) for i in range(16))
    p4 = [pad(bytes(((x + y) % 16) << 4 | ((x + 1 + y) % 16) for x in range(0, w, 2))) for y in range(h)]
    seeds["bmp4.bmp"] = bmp_file(w, h, 4, p4, palette=palette)
    # RLE8: per row an encoded run, an absolute run, end of line; then end of bitmap
    rle8 = [bytes((4, y, 0, 3, 1, 2, 3, 0, 2, 5, 0, 0)) for y in range(h)] + [bytes((0, 1))]
    seeds["bmp_rle8.bmp"] = bmp_file(w, h, 8, rle8, palette=palette, compression=1)
    rle8_delta = [bytes((3, 1, 0, 2, 2, 1, 5, 7, 0, 0)), bytes((9, 4, 0, 0)), bytes((0, 1))]
    seeds["bmp_rle8_delta.bmp"] = bmp_file(w, h, 8, rle8_delta, palette=palette, compression=1)
    rle4 = [bytes((5, 0x12, 0, 4, 0x34, 0x56, 0, 0)) for _ in range(h)] + [bytes((0, 1))]
    seeds["bmp_rle4.bmp"] = bmp_file(w, h, 4, rle4, palette=palette, compression=2)
    return seeds


def golden_small(limit=8192, ext=None):
    seeds = {}
    for name in sorted(os.listdir(IMAGES)):
        path = os.path.join(IMAGES, name)
        if os.path.isfile(path) and os.path.getsize(path) <= limit and (ext is None or name.endswith(ext)):
            with open(path, "rb") as f:
                seeds["golden_" + name] = f.read()
    return seeds


# ---------------------------------------------------------------------------
# Tiny models, laid out from the README's "The model file" (not with convert.py)
# ---------------------------------------------------------------------------

def byte_symbols():
    """GPT-2's byte -> unicode character table, in byte order."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def tiny_tokenizer(context):
    """Byte-level vocabulary, a few merges ("a"+"</w>"-words of the seed texts), bos/eos."""
    sym = byte_symbols()
    vocab = sym + [s + "</w>" for s in sym]
    merges = []
    ids = {s: i for i, s in enumerate(vocab)}
    for left, right in [("c", "a"), ("ca", "t</w>"), ("p", "h"), ("ph", "o"), ("pho", "t"), ("phot", "o</w>")]:
        merged = left + right
        if merged not in ids:
            ids[merged] = len(vocab)
            vocab.append(merged)
        merges.append((ids[left], ids[right], ids[merged]))
    bos, eos = len(vocab), len(vocab) + 1
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    blobs = [s.encode("utf-8") for s in vocab]
    offsets = [0]
    for b in blobs:
        offsets.append(offsets[-1] + len(b))
    blob = b"".join(blobs)
    sec = struct.pack("<4I5i", len(vocab), len(merges), 2, len(blob), bos, eos, eos, -1, context)
    sec += struct.pack("<%dI" % len(offsets), *offsets)
    sec += b"".join(struct.pack("<3i", *m) for m in merges)
    sec += struct.pack("<2i", bos, eos) + blob
    return sec, len(vocab)


def tiny_model(d=4, heads=2, layers=1, inter=8, patch=2, size=4, act=0, positions=8, proj=3, legacy=True):
    """A complete model file with small deterministic weights; legacy: eos_token_id 2 (pool at argmax)."""
    tok, n_vocab = tiny_tokenizer(positions)
    eos_id = 2 if legacy else n_vocab - 1
    tensors = []

    def layer_tensors(tower, n):
        for l in range(n):
            p = "%s.encoder.layers.%d." % (tower, l)
            tensors.extend([(p + "layer_norm1.weight", [d]), (p + "layer_norm1.bias", [d])])
            for q in ("q", "k", "v"):
                tensors.extend([(p + "self_attn.%s_proj.weight" % q, [d, d]), (p + "self_attn.%s_proj.bias" % q, [d])])
            tensors.extend([(p + "self_attn.out_proj.weight", [d, d]), (p + "self_attn.out_proj.bias", [d]),
                            (p + "layer_norm2.weight", [d]), (p + "layer_norm2.bias", [d]),
                            (p + "mlp.fc1.weight", [inter, d]), (p + "mlp.fc1.bias", [inter]),
                            (p + "mlp.fc2.weight", [d, inter]), (p + "mlp.fc2.bias", [d])])

    tensors += [("text_model.embeddings.token_embedding.weight", [n_vocab, d]),
                ("text_model.embeddings.position_embedding.weight", [positions, d])]
    layer_tensors("text_model", layers)
    tensors += [("text_model.final_layer_norm.weight", [d]), ("text_model.final_layer_norm.bias", [d]),
                ("text_projection.weight", [proj, d]),
                ("vision_model.embeddings.class_embedding", [d]),
                ("vision_model.embeddings.patch_embedding.weight", [d, 3, patch, patch]),
                ("vision_model.embeddings.position_embedding.weight", [1 + (size // patch) ** 2, d]),
                ("vision_model.pre_layrnorm.weight", [d]), ("vision_model.pre_layrnorm.bias", [d])]
    layer_tensors("vision_model", layers)
    tensors += [("vision_model.post_layernorm.weight", [d]), ("vision_model.post_layernorm.bias", [d]),
                ("visual_projection.weight", [proj, d]), ("logit_scale", [])]

    tok_off = 512
    idx_off = (tok_off + len(tok) + 7) // 8 * 8
    pos = idx_off + 128 * len(tensors)
    index, blobs = b"", []
    for t, (name, shape) in enumerate(tensors):
        pos = (pos + 63) // 64 * 64
        n = 1
        for s in shape:
            n *= s
        index += struct.pack("<96s6IQ", name.encode(), 0, len(shape), *(shape + [0] * (4 - len(shape))), pos)
        vals = [(((i * 7 + t * 13) % 17) - 8) / 16.0 for i in range(n)]
        if name.endswith("norm1.weight") or name.endswith("norm2.weight") or "layernorm.weight" in name \
                or "layrnorm.weight" in name or "final_layer_norm.weight" in name:
            vals = [1.0] * n
        blobs.append((pos, struct.pack("<%df" % n, *vals)))
        pos += 4 * n
    ints = [proj, d, heads, layers, inter, act, None, patch, size, 3,
            d, heads, layers, inter, act, None, n_vocab, positions, eos_id,
            size, size, size, 1, 1, 1, 1, None]
    slots = b""
    for i, v in enumerate(ints):
        slots += struct.pack("<f", 1e-5 if i in (6, 15) else 1 / 255) if v is None else struct.pack("<i", v)
    slots += struct.pack("<6f", 0.48145466, 0.4578275, 0.40821073, 0.26862954, 0.26130258, 0.27577711)
    slots += bytes(256 - len(slots))
    header = struct.pack("<8sIIQQQQII", b"CLIPCMOD", 1, 512, pos, tok_off, len(tok), idx_off, len(tensors), 1)
    header += slots + struct.pack("<128s", b"fuzz-seed")
    header += bytes(512 - len(header))
    out = bytearray(header + tok + bytes(idx_off - 512 - len(tok)) + index)
    for off, data in blobs:
        out += bytes(off - len(out)) + data
    return bytes(out)


def model_seeds():
    seeds = {
        "tiny_quick_gelu.bin": tiny_model(),
        "tiny_gelu_eos.bin": tiny_model(act=1, legacy=False),
        "tiny_2layers.bin": tiny_model(d=8, heads=4, layers=2, inter=4, patch=3, size=6, positions=5),
        "tiny_patch1.bin": tiny_model(d=2, heads=1, patch=1, size=3, proj=1, positions=3),
    }
    seeds["truncated.bin"] = seeds["tiny_quick_gelu.bin"][:3000]
    return seeds


# ---------------------------------------------------------------------------
# Tokenizer texts, and the real tokenizer section
# ---------------------------------------------------------------------------

def tokenizer_seeds():
    model = converted("tiny-b32")
    with open(model, "rb") as f:
        head = f.read(512)
        tok_off, tok_len = struct.unpack_from("<QQ", head, 24)
        f.seek(tok_off)
        section = f.read(tok_len)
    with open(os.path.join(FUZZ, "tokenizer.section"), "wb") as f:
        f.write(section)
    with open(os.path.join(GOLDEN, "tokenizer", "cases.json"), encoding="utf-8") as f:
        cases = json.load(f)
    seeds = {"case%03d.txt" % i: c["text"].encode("utf-8") for i, c in enumerate(cases)}
    seeds.update({
        "specials.txt": b"<|startoftext|>a photo<|endoftext|> of <|endoftext|",
        "bad_utf8.txt": b"caf\xc3 \xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf \xe2\x82",
        "combining.txt": "e\u0301\u0130\u03a3 \u1e9e\uac00\u1100\u1161\u11a8 ﬃ".encode("utf-8"),
        "spaces.txt": "a\u3000\u2028b\t\n\x0b\x0cc\u00a0\u0085d".encode("utf-8"),
        "long_word.txt": b"x" * 600 + b" " + "\U0001F600" .encode("utf-8") * 50,
        "nul.txt": b"a\0b\0\0c",
    })
    return seeds


MAKERS = {
    "png": lambda: {**png_seeds(), **golden_small(ext=".png")},
    "jpeg": lambda: {**jpeg_seeds(), **golden_small(ext=".jpg")},
    "image": lambda: {**png_seeds(), **jpeg_seeds(), **ppm_seeds(), **bmp_seeds(), **golden_small()},
    "model": model_seeds,
    "tokenizer": tokenizer_seeds,
}


def main():
    args = sys.argv[1:]
    force = "--force" in args
    targets = [a for a in args if a != "--force"] or ["all"]
    if targets == ["all"]:
        targets = list(MAKERS)
    for t in targets:
        if t not in MAKERS:
            sys.exit("make_seeds.py: unknown target %r (one of %s)" % (t, ", ".join(MAKERS)))
        d = os.path.join(FUZZ, t, "seeds")
        stale = t == "tokenizer" and not os.path.exists(os.path.join(FUZZ, "tokenizer.section"))
        if os.path.isdir(d) and os.listdir(d) and not force and not stale:
            continue
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        seeds = MAKERS[t]()
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print("make_seeds: %d %s seeds in %s (%d bytes)" % (len(seeds), t, d, sum(map(len, seeds.values()))))


if __name__ == "__main__":
    main()
