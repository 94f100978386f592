"""gen_png_corpus.py - image files for the differential tests of image.c.

Writers (standard library + numpy, independent of the C code) for PNG in
every colour type / bit depth / filter / interlace combination, BMP in the
layouts Pillow reads (1/4/8-bit palettes, 16/24/32-bit, bit fields, OS/2
and V4/V5 headers, top-down, RLE4/RLE8), binary PPM/PGM/PBM with any
maxval, JPEG through Pillow, plus mutations (cuts, bit flips, damaged
chunks) for the broken-file tests. Pillow decides what each file should
decode to; nothing here computes expected pixels.

    corpus(n, seed, outdir) -> list of (path, kind)
    broken(paths, n, seed, outdir) -> list of (path, kind)
"""
import io
import os
import struct
import zlib

import numpy as np

PNG_SIG = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------
# PNG

def png_chunk(ctype, data, crc=None):
    if crc is None:
        crc = zlib.crc32(ctype + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", crc)


def _pack_rows(samples, bd):
    """samples: int array [h, n] of values < 2**bd -> uint8 [h, rowbytes]."""
    h, n = samples.shape
    if bd == 16:
        s = samples.astype(">u2")
        return s.view(np.uint8).reshape(h, 2 * n)
    if bd == 8:
        return samples.astype(np.uint8)
    per = 8 // bd
    pad = (-n) % per
    s = np.concatenate([samples, np.zeros((h, pad), samples.dtype)], axis=1).astype(np.uint8)
    s = s.reshape(h, -1, per)
    out = np.zeros(s.shape[:2], np.uint8)
    for i in range(per):
        out |= (s[:, :, i] << (8 - bd * (i + 1))).astype(np.uint8)
    return out


def _filter(rows, bpp, ftypes):
    """PNG filters (RFC 2083 6) applied to raw rows uint8 [h, n]."""
    h, n = rows.shape
    x = rows.astype(np.int32)
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    b = np.zeros_like(x)
    b[1:] = x[:-1]
    c = np.zeros_like(x)
    c[1:, bpp:] = x[:-1, :-bpp]
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    cand = np.stack([x, x - a, x - b, x - ((a + b) >> 1), x - paeth]) & 255
    out = cand[np.asarray(ftypes), np.arange(h)].astype(np.uint8)
    return np.concatenate([np.asarray(ftypes, np.uint8)[:, None], out], axis=1)


ADAM7 = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png_raw(samples, ct, bd, interlace, rng, filters="random"):
    """samples int [h, w, ch] -> the zlib input (filter bytes + rows)."""
    h, w, ch = samples.shape
    bpp = max(1, ch * bd // 8)
    parts = []
    images = [samples] if not interlace else [samples[r0::dr, c0::dc] for r0, c0, dr, dc in ADAM7]
    for sub in images:
        sh, sw = sub.shape[:2]
        if sh == 0 or sw == 0:
            continue
        rows = _pack_rows(sub.reshape(sh, sw * ch), bd)
        if filters == "random":
            ft = rng.integers(0, 5, sh)
        else:
            ft = np.full(sh, filters)
        parts.append(_filter(rows, bpp, ft).tobytes())
    return b"".join(parts)


def zcompress(raw, rng):
    level = int(rng.choice([0, 1, 6, 9, -1]))
    strategy = int(rng.choice([zlib.Z_DEFAULT_STRATEGY, zlib.Z_FILTERED, zlib.Z_HUFFMAN_ONLY,
                               zlib.Z_RLE, zlib.Z_FIXED]))
    wbits = int(rng.choice([15, 15, 9, 12]))
    co = zlib.compressobj(level, zlib.DEFLATED, wbits, 9, strategy)
    if rng.random() < 0.2 and len(raw) > 10:
        # several flushes: block boundaries and empty stored blocks
        cut = sorted(rng.integers(0, len(raw), 3))
        out = co.compress(raw[:cut[0]]) + co.flush(zlib.Z_SYNC_FLUSH)
        out += co.compress(raw[cut[0]:cut[1]]) + co.flush(zlib.Z_FULL_FLUSH)
        out += co.compress(raw[cut[1]:])
        return out + co.flush()
    return co.compress(raw) + co.flush()


def split_idat(z, rng):
    if len(z) < 2 or rng.random() < 0.5:
        return [z]
    k = int(rng.integers(2, 8))
    cuts = sorted(set(int(v) for v in rng.integers(0, len(z) + 1, k - 1)))
    pieces, prev = [], 0
    for cpos in cuts + [len(z)]:
        pieces.append(z[prev:cpos])
        prev = cpos
    return pieces


def smooth_field(h, w, ch, rng, maxval):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty((h, w, ch), np.float64)
    for c in range(ch):
        fx, fy = rng.uniform(0.2, 6, 2)
        ph = rng.uniform(0, 6.3, 2)
        v = 0.5 + 0.25 * np.sin(xx / max(w, 1) * fx * 6.28 + ph[0]) + 0.25 * np.cos(yy / max(h, 1) * fy * 6.28 + ph[1])
        v += rng.normal(0, rng.choice([0.0, 0.02, 0.2]), (h, w))
        out[..., c] = v
    return np.clip(np.rint(out * maxval), 0, maxval).astype(np.int64)


PNG_COMBOS = [(0, 1), (0, 2), (0, 4), (0, 8), (0, 16), (2, 8), (2, 16), (3, 1), (3, 2), (3, 4), (3, 8),
              (4, 8), (4, 16), (6, 8), (6, 16)]


def random_apng(rng, w, h):
    """An animated PNG written by Pillow: Pillow's frame 0 is the image."""
    from PIL import Image
    mode = str(rng.choice(["RGB", "RGBA", "P", "L"]))
    frames = [Image.fromarray(smooth_field(h, w, 3, rng, 255).astype(np.uint8)).convert(mode)
              for _ in range(int(rng.integers(2, 4)))]
    buf = io.BytesIO()
    default = bool(rng.random() < 0.5)
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:], default_image=default, duration=40)
    return buf.getvalue(), "apng %s %d frames%s" % (mode, len(frames), " default image" if default else "")


def random_png(rng, w, h, force=None):
    """force: (colour type, bit depth, interlace) instead of random ones."""
    if force is None and rng.random() < 0.05:
        return random_apng(rng, w, h)
    ct = int(rng.choice([0, 2, 3, 4, 6]))
    bd = int(rng.choice({0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16]}[ct]))
    interlace = rng.random() < 0.3
    if force:
        ct, bd, interlace = force
    ch = CHANNELS[ct]
    chunks_before, chunks_after = [], []
    if ct == 3:
        nmax = 1 << bd
        samples = smooth_field(h, w, 1, rng, nmax - 1)
        if rng.random() < 0.3:
            samples = rng.integers(0, nmax, (h, w, 1))
        npal = int(rng.integers(1, nmax + 1))
        if rng.random() < 0.3:  # a short palette: indices beyond it
            npal = max(1, npal // 3)
        pal = rng.integers(0, 256, npal * 3).astype(np.uint8).tobytes()
        if rng.random() < 0.1:
            pal += bytes(int(rng.integers(1, 3)))  # length not a multiple of 3
        chunks_before.append(png_chunk(b"PLTE", pal))
        if rng.random() < 0.5:
            t = rng.integers(0, 256, int(rng.integers(1, npal + 1))).astype(np.uint8)
            if rng.random() < 0.5:
                t[:] = 255
                t[int(rng.integers(0, len(t)))] = 0
            chunks_before.append(png_chunk(b"tRNS", t.tobytes()))
    else:
        samples = smooth_field(h, w, ch, rng, (1 << bd) - 1)
        if ct in (0, 2) and rng.random() < 0.4:
            chunks_before.append(png_chunk(b"tRNS", rng.integers(0, 256, 2 * ch).astype(np.uint8).tobytes()))
        if ct in (2, 6) and rng.random() < 0.1:
            chunks_before.append(png_chunk(b"PLTE", rng.integers(0, 256, 30).astype(np.uint8).tobytes()))
    if rng.random() < 0.3:
        chunks_before.append(png_chunk(b"gAMA", struct.pack(">I", 45455)))
    if rng.random() < 0.2:
        chunks_before.append(png_chunk(b"pHYs", struct.pack(">IIB", 2835, 2835, 1)))
    if rng.random() < 0.2:
        chunks_before.append(png_chunk(b"tEXt", b"Comment\0made by gen_png_corpus"))
    if rng.random() < 0.2:
        chunks_before.append(png_chunk(b"zTXt", b"Title\0\0" + zlib.compress(b"x" * int(rng.integers(0, 5000)))))
    if rng.random() < 0.2:
        chunks_before.append(png_chunk(b"iTXt", b"Key\0\1\0en\0Key\0" + zlib.compress("caf\u00e9".encode())))
    if rng.random() < 0.1:
        chunks_before.append(png_chunk(b"prVt", b"private ancillary"))
    if rng.random() < 0.1:
        chunks_before.append(png_chunk(b"sRGB", b"\0"))
    if rng.random() < 0.1:
        chunks_before.append(png_chunk(b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000,
                                                              15000, 6000)))
    if rng.random() < 0.1:
        chunks_before.append(png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(bytes(200))))
    if rng.random() < 0.1:
        chunks_before.append(png_chunk(b"tIME", struct.pack(">HBBBBB", 2024, 1, 2, 3, 4, 5)))
    if rng.random() < 0.2:
        chunks_after.append(png_chunk(b"tEXt", b"After\0the image data"))
    raw = png_raw(samples, ct, bd, interlace, rng)
    z = zcompress(raw, rng)
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bd, ct, 0, 0, int(interlace)))
    idats = b"".join(png_chunk(b"IDAT", p) for p in split_idat(z, rng))
    data = PNG_SIG + ihdr + b"".join(chunks_before) + idats + b"".join(chunks_after) + png_chunk(b"IEND", b"")
    return data, "png ct%d bd%d%s" % (ct, bd, " adam7" if interlace else "")


# --------------------------------------------------------------------------
# BMP

def _bmp_rle(idx, rle4, rng):
    """Encode rows of palette indices (bottom-up order given) as RLE8/RLE4."""
    out = bytearray()
    for row in idx:
        row = [int(v) for v in row]
        i, n = 0, len(row)
        while i < n:
            j = i
            while j < n and j - i < 255 and row[j] == row[i]:
                j += 1
            run = j - i
            if rle4 and run < 255 and j + 1 < n and row[j + 1] == row[i]:
                # alternate nibble run: two values
                k = j
                while k < n and k - i < 255 and row[k] == (row[i] if (k - i) % 2 == 0 else row[j]):
                    k += 1
                out += bytes([k - i, (row[i] << 4) | row[j]])
                i = k
                continue
            if run >= 2 or rng.random() < 0.5 or n - i < 3:
                out += bytes([run, (row[i] << 4 | row[i]) if rle4 else row[i]])
                i = j
            else:
                m = min(n - i, int(rng.integers(3, 40)))
                vals = row[i:i + m]
                out += bytes([0, m])
                if rle4:
                    vals2 = vals + [0] * (len(vals) % 2)
                    body = bytes((vals2[k] << 4) | vals2[k + 1] for k in range(0, len(vals2), 2))
                else:
                    body = bytes(vals)
                out += body
                if len(body) % 2:
                    out += b"\0"
                i += m
        out += b"\0\0"
    out += b"\0\1"
    return bytes(out)


def random_bmp(rng, w, h, force=None):
    """force: (bits, header size) instead of random ones."""
    bits = int(rng.choice([1, 4, 8, 8, 16, 24, 24, 32]))
    header = int(rng.choice([40, 40, 40, 12, 64, 108, 124])) if bits not in (16, 32) else int(rng.choice([40, 108, 124]))
    if force:
        bits, header = force
    if header == 12 and bits in (16, 32):
        header = 40
    top_down = header != 12 and rng.random() < 0.3
    comp = 0
    masks = None
    rgb = smooth_field(h, w, 3, rng, 255).astype(np.uint8)
    palette = None
    pad = 3 if header == 12 else 4
    if bits <= 8:
        ncol = 1 << bits
        used = int(rng.integers(1, ncol + 1))
        idx = rng.integers(0, used, (h, w))
        if rng.random() < 0.5:
            idx = (smooth_field(h, w, 1, rng, used - 1)[..., 0]).astype(np.int64)
        kind = rng.random()
        if kind < 0.15:
            pal = np.repeat(np.arange(used, dtype=np.uint8)[:, None], 3, axis=1)  # grey ramp
        elif kind < 0.25 and bits == 1:
            pal = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)
        else:
            pal = rng.integers(0, 256, (used, 3)).astype(np.uint8)
        palette = pal
        if bits in (4, 8) and header != 12 and rng.random() < 0.3:
            comp = 2 if bits == 4 else 1
        colors_field = len(pal) if (len(pal) != ncol or rng.random() < 0.5) else 0
        if header == 12:
            colors_field = 0
            pal = np.concatenate([pal, np.zeros((ncol - len(pal), 3), np.uint8)])
            palette = pal
    if bits == 16:
        if rng.random() < 0.5:
            comp, masks = 3, (0xF800, 0x7E0, 0x1F, 0)
        elif rng.random() < 0.5:
            comp, masks = 3, (0x7C00, 0x3E0, 0x1F, 0)
    if bits == 32 and rng.random() < 0.6:
        comp = 3
        masks = [(0xFF0000, 0xFF00, 0xFF, 0), (0xFF000000, 0xFF0000, 0xFF00, 0),
                 (0xFF000000, 0xFF0000, 0xFF00, 0xFF), (0xFF, 0xFF00, 0xFF0000, 0xFF000000),
                 (0xFF0000, 0xFF00, 0xFF, 0xFF000000), (0, 0, 0, 0)][int(rng.integers(0, 6))]
        if header == 40 and masks[3]:
            header = 108
    if bits == 24 and header != 12 and rng.random() < 0.2:
        comp, masks = 3, (0xFF0000, 0xFF00, 0xFF, 0)

    # pixel rows, bottom-up unless top-down
    stride = ((w * bits + 31) >> 3) & ~3
    if bits <= 8:
        rows_idx = idx if top_down else idx[::-1]
    rows_rgb = rgb if top_down else rgb[::-1]
    if comp in (1, 2):
        body = _bmp_rle(rows_idx, comp == 2, rng)
    else:
        body = bytearray()
        for y in range(h):
            if bits <= 8:
                vals = rows_idx[y]
                if bits == 8:
                    line = vals.astype(np.uint8).tobytes()
                else:
                    line = _pack_rows(vals[None, :], bits)[0].tobytes()
            elif bits == 16:
                r, g, b = [rows_rgb[y, :, c].astype(np.uint32) for c in range(3)]
                if masks and masks[0] == 0xF800:
                    v = ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)
                else:
                    v = ((r >> 3) << 10) | ((g >> 3) << 5) | (b >> 3)
                line = v.astype("<u2").tobytes()
            elif bits == 24:
                line = rows_rgb[y, :, ::-1].tobytes()
            else:
                a = rng.integers(0, 256, w).astype(np.uint8)
                r, g, b = rows_rgb[y, :, 0], rows_rgb[y, :, 1], rows_rgb[y, :, 2]
                m = masks or (0xFF0000, 0xFF00, 0xFF, 0)
                px = np.zeros(w, np.uint32)
                for val, mk in ((r, m[0]), (g, m[1]), (b, m[2]), (a, m[3])):
                    if mk:
                        shift = (mk & -mk).bit_length() - 1
                        px |= val.astype(np.uint32) << shift
                if m == (0, 0, 0, 0):
                    px = b.astype(np.uint32) | (g.astype(np.uint32) << 8) | (r.astype(np.uint32) << 16) | (a.astype(np.uint32) << 24)
                line = px.astype("<u4").tobytes()
            body += line + bytes(stride - len(line))
        body = bytes(body)

    if header == 12:
        info = struct.pack("<IHHHH", 12, w, h, 1, bits)
    else:
        hh = (-h) & 0xFFFFFFFF if top_down else h
        info = struct.pack("<IiIHHIIiiII", header, w, hh, 1, bits, comp, len(body), 2835, 2835,
                           colors_field if bits <= 8 else 0, 0)
        if header >= 52 + 4:
            m = masks or (0, 0, 0, 0)
            extra = struct.pack("<IIII", *m)
            info += extra + bytes(header - len(info) - len(extra))
    extra_masks = b""
    if comp == 3 and header == 40:
        extra_masks = struct.pack("<III", *masks[:3])
    pal_bytes = b""
    if palette is not None:
        if pad == 4:
            pal_bytes = np.concatenate([palette[:, ::-1], np.zeros((len(palette), 1), np.uint8)], axis=1).tobytes()
        else:
            pal_bytes = palette[:, ::-1].tobytes()
    offset = 14 + len(info) + len(extra_masks) + len(pal_bytes)
    fh = b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset)
    data = fh + info + extra_masks + pal_bytes + body
    return data, "bmp %dbit hdr%d comp%d%s" % (bits, header, comp, " topdown" if top_down else "")


# --------------------------------------------------------------------------
# PPM / PGM / PBM

def _ppm_ws(rng):
    s = bytes(rng.choice([b" ", b"\n", b"\t", b"\r\n", b"  "]))
    if rng.random() < 0.2:
        s += b"# a comment\n"
    return s


def random_ppm(rng, w, h, force=None):
    """force: (magic, maxval) instead of random ones."""
    magic = rng.choice([b"P4", b"P5", b"P6"])
    if force:
        magic = force[0]
    if magic == b"P4":
        bits = rng.integers(0, 2, (h, w))
        body = _pack_rows(bits, 1).tobytes()
        head = b"P4" + _ppm_ws(rng) + b"%d" % w + _ppm_ws(rng) + b"%d" % h + b"\n"
        return head + body, "pbm P4"
    maxval = int(rng.choice([255, 255, 1, 3, 15, 100, 254, 256, 1000, 4095, 65535, int(rng.integers(1, 65536))]))
    if force:
        maxval = force[1]
    ch = 3 if magic == b"P6" else 1
    v = smooth_field(h, w, ch, rng, maxval)
    if rng.random() < 0.1:
        v = np.minimum(v + rng.integers(0, 3, v.shape), 65535 if maxval > 255 else 255)  # values above maxval
    body = v.astype(">u2").tobytes() if maxval > 255 else v.astype(np.uint8).tobytes()
    head = magic + _ppm_ws(rng) + b"%d" % w + _ppm_ws(rng) + b"%d" % h + _ppm_ws(rng) + b"%d" % maxval + b"\n"
    return head + body, "ppm %s maxval %d" % (magic.decode(), maxval)


# --------------------------------------------------------------------------
# JPEG (through Pillow)

def random_jpeg(rng, w, h, force=None):
    from PIL import Image
    gray = rng.random() < 0.2
    arr = smooth_field(h, w, 1 if gray else 3, rng, 255).astype(np.uint8)
    im = Image.fromarray(arr[..., 0] if gray else arr, "L" if gray else "RGB")
    opts = {"quality": int(rng.integers(5, 101))}
    sub = int(rng.choice([0, 1, 2]))
    if not gray:
        opts["subsampling"] = sub
    if rng.random() < 0.3:
        opts["progressive"] = True
    if rng.random() < 0.3:
        opts["optimize"] = True
    buf = io.BytesIO()
    im.save(buf, "JPEG", **opts)
    return buf.getvalue(), "jpeg %s q%d%s" % ("gray" if gray else "sub%d" % sub, opts["quality"],
                                               " progressive" if opts.get("progressive") else "")


# --------------------------------------------------------------------------
# corpus and mutations

def random_size(rng, big):
    r = rng.random()
    if r < 0.15:
        return int(rng.integers(1, 4)), int(rng.integers(1, 4))
    if big and r > 0.9:
        return int(rng.integers(500, 3001)), int(rng.integers(300, 2001))
    if r > 0.8:
        return int(rng.integers(100, 700)), int(rng.integers(100, 500))
    return int(rng.integers(1, 120)), int(rng.integers(1, 90))


def corpus(n, seed, outdir, kinds=("png", "bmp", "ppm", "jpeg"), big=False):
    """n files: first one of each PNG colour type / bit depth (Adam7 every
    other one), BMP depth and header, PPM magic and maxval kind, then random
    ones."""
    rng = np.random.default_rng(seed)
    os.makedirs(outdir, exist_ok=True)
    makers = {"png": (random_png, "png"), "bmp": (random_bmp, "bmp"), "ppm": (random_ppm, "ppm"),
              "jpeg": (random_jpeg, "jpg")}
    cover = [("png", (ct, bd, i % 2 == 1)) for i, (ct, bd) in enumerate(PNG_COMBOS)]
    cover += [("bmp", f) for f in [(1, 40), (4, 40), (8, 40), (16, 40), (24, 40), (32, 108), (8, 12), (4, 124)]]
    cover += [("ppm", f) for f in [(b"P4", 1), (b"P5", 255), (b"P5", 65535), (b"P5", 100), (b"P5", 1000),
                                   (b"P6", 255), (b"P6", 15), (b"P6", 65535)]]
    cover += [("jpeg", None)] * 4
    cover = [c for c in cover if c[0] in kinds]
    weights = {"png": 5, "bmp": 2, "ppm": 1, "jpeg": 2}
    ks = list(kinds)
    p = np.array([weights[k] for k in ks], np.float64)
    p /= p.sum()
    out = []
    for i in range(n):
        if i < len(cover):
            k, force = cover[i]
        else:
            k, force = ks[int(rng.choice(len(ks), p=p))], None
        w, h = random_size(rng, big)
        fn, ext = makers[k]
        data, desc = fn(rng, w, h, force)
        path = os.path.join(outdir, "c%05d.%s" % (i, ext))
        with open(path, "wb") as f:
            f.write(data)
        out.append((path, "%s %dx%d" % (desc, w, h)))
    return out


def _png_chunks(data):
    pos, chunks = 8, []
    while pos + 8 <= len(data):
        ln = struct.unpack(">I", data[pos:pos + 4])[0]
        chunks.append((pos, ln))
        pos += 12 + ln
    return chunks


def mutate(data, rng):
    """One damaged copy of a file and a word on what was done."""
    d = bytearray(data)
    r = rng.random()
    if r < 0.3 and len(d) > 1:
        cut = int(rng.integers(0, len(d)))
        if rng.random() < 0.5:
            cut = max(0, len(d) - int(rng.integers(1, min(len(d), 40) + 1)))
        return bytes(d[:cut]), "cut at %d of %d" % (cut, len(d))
    if r < 0.6 and len(d):
        k = int(rng.integers(1, 9))
        for _ in range(k):
            i = int(rng.integers(0, len(d)))
            d[i] ^= 1 << int(rng.integers(0, 8))
        return bytes(d), "%d bit flips" % k
    if r < 0.75 and len(d) > 4:
        i = int(rng.integers(0, len(d)))
        m = int(rng.integers(1, 16))
        d[i:i + m] = rng.integers(0, 256, len(d[i:i + m])).astype(np.uint8).tobytes()
        return bytes(d), "bytes overwritten at %d" % i
    if data[:8] == PNG_SIG:
        ch = _png_chunks(data)
        if ch:
            pos, ln = ch[int(rng.integers(0, len(ch)))]
            what = rng.random()
            if what < 0.3 and pos + 12 + ln <= len(d):
                d[pos + 8 + ln] ^= 0x55
                return bytes(d), "bad CRC in %r" % bytes(d[pos + 4:pos + 8])
            if what < 0.5:
                d[pos:pos + 4] = struct.pack(">I", int(rng.integers(0, max(2, 2 * ln + 20))))
                return bytes(d), "bad length in %r" % bytes(d[pos + 4:pos + 8])
            if what < 0.7:
                return bytes(d[:pos] + d[pos + 12 + ln:]), "chunk %r removed" % bytes(d[pos + 4:pos + 8])
            if what < 0.85 and ln > 2:
                i = pos + 8 + int(rng.integers(0, ln))
                d[i] ^= 1 << int(rng.integers(0, 8))
                seg = bytes(d[pos + 4:pos + 8 + ln])
                d[pos + 8 + ln:pos + 12 + ln] = struct.pack(">I", zlib.crc32(seg) & 0xFFFFFFFF)
                return bytes(d), "bit flip in %r with fixed CRC" % seg[:4]
            d[pos + 4:pos + 8] = bytes(rng.choice([b"IDAT", b"IEND", b"tRNS", b"PLTE", b"fcTL", b"gAMA", b"IHDR"]))
            return bytes(d), "chunk type changed"
    if len(d) > 2:
        i = int(rng.integers(0, min(len(d), 64)))
        d[i] = int(rng.integers(0, 256))
        return bytes(d), "header byte %d changed" % i
    return bytes(d), "unchanged"


def broken(sources, n, seed, outdir):
    rng = np.random.default_rng(seed)
    os.makedirs(outdir, exist_ok=True)
    out = []
    for i in range(n):
        src = sources[int(rng.integers(0, len(sources)))]
        with open(src, "rb") as f:
            data = f.read()
        bad, how = mutate(data, rng)
        ext = os.path.splitext(src)[1]
        path = os.path.join(outdir, "b%05d%s" % (i, ext))
        with open(path, "wb") as f:
            f.write(bad)
        out.append((path, "%s: %s" % (os.path.basename(src), how)))
    return out


def hostile(outdir):
    """Hand-made files that try to make a decoder allocate, loop or read
    too much: oversized headers, chunk lengths past the end, zlib bombs in
    text chunks, too much text, a palette of 257 entries, deep RLE deltas."""
    os.makedirs(outdir, exist_ok=True)
    files = []

    def put(name, data, desc):
        path = os.path.join(outdir, name)
        with open(path, "wb") as f:
            f.write(data)
        files.append((path, desc))

    def png(w, h, bd=8, ct=2, extra=b"", raw=None, il=0):
        ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bd, ct, 0, 0, il))
        body = zlib.compress(raw if raw is not None else b"\0" * 7)
        return PNG_SIG + ihdr + extra + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")

    put("h_png_huge.png", png(100000, 100000), "PNG 100000x100000")
    put("h_png_limit.png", png(8193, 8192, 1, 0), "PNG one row over CLIP_MAX_PIXELS")
    put("h_png_wide.png", png(0x7FFFFFFF, 1, 16, 6), "PNG 2^31-1 x 1, 16-bit RGBA")
    put("h_png_zero.png", png(0, 5), "PNG of width 0")
    d = bytearray(png(4, 4))
    d[33:37] = b"\xff\xff\xff\xf0"
    put("h_png_chunklen.png", bytes(d), "PNG IDAT length 0xfffffff0")
    put("h_png_ztxt_bomb.png", png(2, 2, extra=png_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"\0" * 1100000))),
        "PNG zTXt decompressing to 1.1 MB")
    put("h_png_itxt_bomb.png", png(2, 2, extra=png_chunk(b"iTXt", b"k\0\1\0\0\0" + zlib.compress(b"a" * 1100000))),
        "PNG iTXt decompressing to 1.1 MB")
    put("h_png_iccp_bomb.png", png(2, 2, extra=png_chunk(b"iCCP", b"p\0\0" + zlib.compress(b"\0" * 1100000))),
        "PNG iCCP decompressing to 1.1 MB")
    many = png_chunk(b"zTXt", b"k\0\0" + zlib.compress(b"\0" * 1048576)) * 65
    put("h_png_text_memory.png", png(2, 2, extra=many), "PNG 65 MiB of zTXt text")
    put("h_png_plte257.png", png(2, 2, 8, 3, extra=png_chunk(b"PLTE", bytes(771)), raw=b"\0\1\2\0\3\4"),
        "PNG palette of 257 entries")
    bomb = zlib.compress(b"\0" * (1 + 3 * 3000) * 2000, 9)
    put("h_png_zbomb.png", PNG_SIG + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 3000, 2000, 8, 2, 0, 0, 0))
        + png_chunk(b"IDAT", bomb) + png_chunk(b"IEND", b""), "PNG 3000x2000 from %d bytes of zlib" % len(bomb))
    extra_data = zlib.compress(b"\0" * (1 + 3 * 64) * 80)
    put("h_png_extra_rows.png", PNG_SIG + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 40, 8, 2, 0, 0, 0))
        + png_chunk(b"IDAT", extra_data) + png_chunk(b"IEND", b""), "PNG with twice the rows it declares")
    # Pillow feeds zlib 64 KiB at a time and stops at the last row, so a bad
    # Adler-32 (or the end of the stream) counts only when zlib reached it
    # in the same feed block; stored blocks put the bytes where wanted
    def stored_png(w, h, rows, adler_ok, split=None, cut=0):
        raw = b"".join(b"\0" + bytes([(r * 7 + c) & 255 for c in range(w)]) for r in range(rows))
        raw = raw[:len(raw) - cut]
        z = b"\x78\x01"
        for i in range(0, len(raw), 65535):
            part = raw[i:i + 65535]
            z += b"\0" + struct.pack("<HH", len(part), len(part) ^ 0xFFFF) + part
        tail = b"\1\0\0\xff\xff" + struct.pack(">I", zlib.adler32(raw) ^ (0 if adler_ok else 1))
        idat = [z + tail] if split is None else [z, tail]
        return (PNG_SIG + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + b"".join(png_chunk(b"IDAT", x) for x in idat) + png_chunk(b"IEND", b""))

    put("h_feed_adler_in_block.png", stored_png(2, 21840, 21840, False), "bad Adler-32 inside the first 64 KiB")
    put("h_feed_adler_next_block.png", stored_png(2, 21843, 21843, False), "bad Adler-32 just past 64 KiB")
    put("h_feed_adler_straddles.png", stored_png(2, 21842, 21842, False), "final block straddling 64 KiB")
    put("h_feed_short_stream.png", stored_png(2, 100, 50, True), "stream ends after row 50 of 100")
    put("h_feed_short_split.png", stored_png(2, 100, 50, True, split=True),
        "stream ends after row 50 of 100, end in the next IDAT")
    put("h_feed_short_partial.png", stored_png(2, 100, 50, True, cut=1), "stream ends inside row 50")
    put("h_bmp_huge.bmp", b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) +
        struct.pack("<IiiHHIIiiII", 40, 0x7FFFFFFF, 0x7FFFFFFF, 1, 24, 0, 0, 0, 0, 0, 0), "BMP 2^31-1 square")
    put("h_bmp_negw.bmp", b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) +
        struct.pack("<IiiHHIIiiII", 40, -5, 5, 1, 24, 0, 0, 0, 0, 0, 0) + bytes(100), "BMP width -5")
    put("h_bmp_rle_delta.bmp", b"BM" + struct.pack("<IHHI", 0, 0, 0, 54 + 8) +
        struct.pack("<IiiHHIIiiII", 40, 3000, 2000, 1, 8, 1, 0, 0, 0, 2, 0) + bytes(8) +
        b"\0\2\0\0\xff\xff" * 10 + b"\0\1", "BMP 3000x2000 RLE8 made of deltas")
    put("h_bmp_colors.bmp", b"BM" + struct.pack("<IHHI", 0, 0, 0, 0) +
        struct.pack("<IiiHHIIiiII", 40, 2, 2, 1, 8, 0, 0, 0, 0, 0xFFFFFFFF, 0) + bytes(64), "BMP 2^32-1 colours")
    put("h_ppm_huge.ppm", b"P6 100000 100000 255\n" + bytes(30), "PPM 100000x100000")
    put("h_ppm_token.ppm", b"P5 123456789012 1 255\n", "PPM 12-digit width")
    put("h_ppm_maxval0.ppm", b"P5 1 1 0\n\0", "PPM maxval 0")
    put("h_ppm_comment.ppm", b"P5 2#c\n3 1 255\n" + bytes(23), "PPM comment inside a number")
    return files
