"""Hostile input: broken, forged and malicious files must be refused cleanly.

Every case runs the `clip` command ($CLIP_BIN; `make test-asan` points it at the sanitized build)
and must finish within one second, without a crash and without a sanitizer report. Files that
must be refused give exit 1 and one `clip: error: ...` line and leave no output file. The files
are made here from the golden images and a converted golden model:

  images   cut and bit-flipped PNGs and JPEGs (Pillow decides whether each is still an image:
           if Pillow refuses it, clip must refuse it; if Pillow decodes it, clip must give the
           same pixels); headers claiming 65535 x 65535 pixels and worse (PNG IHDR, JPEG SOF,
           BMP, PPM); PNG decompression bombs (a small file whose IDAT inflates far past the
           promised size); random bytes; empty files
  models   truncated files, forged counts and offsets, negative and huge hyperparameters, bad
           tokenizer sections, tensors with wrong shapes, types or offsets; well-formed files whose
           attention would run for hours
  arrays   broken .npy pixel values (clip embed --pixel-values)

The model and array cases need only the standard library; the image cases ask Pillow (and NumPy)
for the verdict on each file, and are skipped without them (exit 77).
"""
import io
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

from common import CLIP, GOLDEN, OUT, ROOT, Report, converted

try:    # the image cases: optional
    import numpy as np
    from PIL import Image
    MISSING = None
except ImportError as e:
    MISSING = "NumPy" if e.name == "numpy" else "Pillow"

R = Report("hostile")
IMAGES = os.path.join(GOLDEN, "images")
# a folder of its own per run (several test runs may share test/out), removed when all pass
WORK = tempfile.mkdtemp(prefix="hostile.", dir=OUT)
LIMIT_S = 1.0          # each command must finish within this
LIMIT_RSS_MB = 1024    # and never hold more memory than this (peak resident set)
SANITIZER_MARKS = ("Sanitizer", "runtime error:", "==ERROR", "LeakSanitizer", "SUMMARY:")
rng = random.Random(20261126)
if not os.path.isfile(CLIP):
    print(f"FAIL no clip command at {CLIP}: run make (or make test-asan), or set CLIP_BIN")
    sys.exit(1)
with open(CLIP, "rb") as f:
    ASAN = b"__asan_init" in f.read()
# a backstop so that a runaway allocation cannot take the machine down: address space for plain
# builds, ASan's own RSS limit (it reserves terabytes of address space) for sanitized ones
HARD_LIMIT = 4 << 30
ENV = dict(os.environ)
if ASAN:
    ENV["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"), "hard_rss_limit_mb=4096"]))


def limit_memory():
    if not ASAN:
        resource.setrlimit(resource.RLIMIT_AS, (HARD_LIMIT, HARD_LIMIT))


def run_clip(args):
    """Run clip; return exit code (None if killed after 10 s), stderr, seconds, peak RSS in MB."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        p = subprocess.Popen([CLIP, *map(str, args)], stdout=out, stderr=err, env=ENV, preexec_fn=limit_memory)
        timer = threading.Timer(10.0, p.kill)
        timer.start()
        _, status, usage = os.wait4(p.pid, 0)
        timer.cancel()
        dt = time.monotonic() - t0
        code = p.returncode = os.waitstatus_to_exitcode(status)
        if code == -9 and dt >= 10.0:
            code = None
        err.seek(0)
        return code, err.read().decode(errors="replace"), dt, usage.ru_maxrss / 1024


def describe(code, err, dt, rss):
    first = err.strip().split("\n")[0][:110] if err.strip() else ""
    return f"exit {code}, {dt:.2f} s, {rss:.0f} MB, {first!r}"


def clean(err):
    return not any(m in err for m in SANITIZER_MARKS)


def expect_refused(what, args, out=None):
    """exit 1, one `clip: error:` line, no output file, no sanitizer report, under LIMIT_S."""
    if out and os.path.exists(out):
        os.unlink(out)
    code, err, dt, rss = run_clip(args)
    good = (code == 1 and err.startswith("clip: error: ") and err.count("\n") <= 2 and clean(err)
            and dt < LIMIT_S and rss < LIMIT_RSS_MB and not (out and os.path.exists(out)))
    R.check(good, f"{what}: {describe(code, err, dt, rss)}")
    if not clean(err):
        print(err[:3000])
    return good


def pillow_rgb(data):
    """Pillow's verdict: the RGB array, or None if Pillow refuses the file."""
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        return np.asarray(im.convert("RGB"))
    except Exception:
        return None


def write(name, data):
    path = os.path.join(WORK, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def check_image(name, data, model, deep=False):
    """Decode a hostile image: refused when Pillow refuses it, else Pillow's pixels. deep: also
    preprocess and embed it (which must then fail the same way)."""
    path = write(name, data)
    out = os.path.join(WORK, "out.npy")
    want = pillow_rgb(data)
    if want is None:
        expect_refused(f"decode {name}", ["decode", path, "-o", out], out)
        if deep:
            expect_refused(f"preprocess {name}", ["preprocess", "-m", model, path, "-o", out], out)
            expect_refused(f"embed {name}", ["embed", "-m", model, "--image", path, "-o", out], out)
        return
    if os.path.exists(out):
        os.unlink(out)
    code, err, dt, rss = run_clip(["decode", path, "-o", out])
    same = code == 0 and os.path.exists(out) and np.array_equal(np.load(out), want)
    R.check(same and clean(err) and dt < LIMIT_S and rss < LIMIT_RSS_MB,
            f"decode {name} (Pillow decodes it, {want.shape[1]}x{want.shape[0]}): same pixels {same}, "
            f"{describe(code, err, dt, rss)}")


# ---------------------------------------------------------------------------
# Image files
# ---------------------------------------------------------------------------

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(w, h, idat, depth=8, ctype=2, extra=b""):
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0)) +
            extra + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def jpeg_with_size(data, w, h):
    """The JPEG with the width and height in its SOF segment replaced."""
    i = 2
    while i + 4 <= len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            return data[:i + 5] + struct.pack(">HH", h, w) + data[i + 9:]
        i += 2 + length
    raise ValueError("no SOF")


def bmp_header(w, h, bpp=24, data=b"\0" * 64, compression=0):
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, bpp, compression, len(data), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + len(data), 0, 0, 54) + info + data


def image_cases(model):
    # cut and bit-flipped golden files: Pillow decides what each one is
    for src in ["cat_q90_420.jpg", "cat_progressive.jpg", "cat_q75_422.jpg", "cat_gray.jpg", "cat_optimized.jpg",
                "horse.png", "cat_cifarlike_32.png", "palette_color.png", "cat_p37.png", "green_palette.png"]:
        with open(os.path.join(IMAGES, src), "rb") as f:
            data = f.read()
        stem = src.replace(".", "_")
        ext = src.rsplit(".", 1)[1]
        for frac in (0.02, 0.3, 0.7, 0.995):
            check_image(f"{stem}_cut{int(frac * 1000)}.{ext}", data[:max(1, int(len(data) * frac))], model)
        for k in range(4):
            flipped = bytearray(data)
            # two flips in the first 600 bytes (headers, tables), one anywhere
            for pos in (rng.randrange(min(600, len(data))), rng.randrange(min(600, len(data))),
                        rng.randrange(len(data))):
                flipped[pos] ^= 1 << rng.randrange(8)
            check_image(f"{stem}_flip{k}.{ext}", bytes(flipped), model)

    # headers claiming enormous images, with almost no data behind them
    tiny = zlib.compress(b"\0" * 100)
    check_image("png_65535x65535.png", png(65535, 65535, tiny), model, deep=True)
    check_image("png_2147483647x1.png", png(2**31 - 1, 1, tiny), model)
    check_image("png_width_2_31.png", png(2**31, 1, tiny), model)
    check_image("png_zero_width.png", png(0, 10, tiny), model)
    check_image("png_16bit_rgba_65535x65535.png", png(65535, 65535, tiny, 16, 6), model)
    with open(os.path.join(IMAGES, "cat_q90_420.jpg"), "rb") as f:
        jpg = f.read()
    check_image("jpeg_sof_65535x65535.jpg", jpeg_with_size(jpg, 65535, 65535), model, deep=True)
    check_image("jpeg_sof_65535x1.jpg", jpeg_with_size(jpg, 65535, 1), model)
    check_image("jpeg_sof_zero_height.jpg", jpeg_with_size(jpg, 420, 0), model)
    check_image("bmp_65535x65535.bmp", bmp_header(65535, 65535), model, deep=True)
    check_image("bmp_65535x-65535.bmp", bmp_header(65535, -65535), model)
    check_image("bmp_height_int_min.bmp", bmp_header(1, -2**31), model)
    check_image("bmp_width_negative.bmp", bmp_header(-5, 5), model)
    check_image("bmp_32bpp_huge.bmp", bmp_header(2**30, 4, 32), model)
    check_image("bmp_rle8_65535x65535.bmp", bmp_header(65535, 65535, 8, b"\0\1" * 4, compression=1), model)
    check_image("ppm_65535x65535.ppm", b"P6\n65535 65535\n255\n" + b"\0" * 100, model, deep=True)
    check_image("pgm_huge_numbers.pgm", b"P5\n99999999999999999999 99999999999999999999\n255\n\0\0", model)
    check_image("ppm_maxval_0.ppm", b"P6\n2 2\n0\n" + b"\0" * 12, model)
    check_image("ppm_maxval_70000.ppm", b"P6\n2 2\n70000\n" + b"\0" * 24, model)
    check_image("ppm_truncated.ppm", b"P6\n200 200\n255\n" + b"\7" * 1000, model)

    # decompression bombs: a small file whose zlib stream inflates to far more than the image
    bomb = zlib.compress(b"\0" * (200 * 1024 * 1024), 9)    # 200 MB of zeros in ~200 KB
    check_image("bomb_100x100_200MB.png", png(100, 100, bomb), model, deep=True)
    check_image("bomb_65535x65535_200MB.png", png(65535, 65535, bomb), model, deep=True)
    bad_filter = zlib.compress(b"\0" + b"\0" * 300 + b"\x07" + b"\0" * (100 * 1024 * 1024), 9)
    check_image("bomb_bad_filter_100MB.png", png(100, 100, bad_filter), model, deep=True)
    many = png(8, 8, b"", extra=b"".join(png_chunk(b"IDAT", zlib.compress(b"\0" * 65536)[:40]) for _ in range(2000)))
    check_image("png_2000_idat_chunks.png", many, model)

    # random bytes, with and without a real format's magic
    for k, magic in enumerate([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"P6\n", b"P5 "]):
        check_image(f"random{k}.bin", magic + bytes(rng.randrange(256) for _ in range(3000)), model, deep=k < 2)
    check_image("empty.png", b"", model, deep=True)
    check_image("one_byte.jpg", b"\xff", model)

    # not files: an endless stream of zeros, a directory
    out = os.path.join(WORK, "out.npy")
    for path in ["/dev/zero", WORK]:
        if os.path.exists(path):
            expect_refused(f"decode {path}", ["decode", path, "-o", out], out)
            expect_refused(f"preprocess {path}", ["preprocess", "-m", model, path, "-o", out], out)


# ---------------------------------------------------------------------------
# Model files: forged from a converted golden model
# ---------------------------------------------------------------------------

def model_cases(model):
    with open(model, "rb") as f:
        good = f.read()
    tok_off, tok_len, idx_off = struct.unpack_from("<QQQ", good, 24)
    count = struct.unpack_from("<I", good, 48)[0]
    n_vocab = struct.unpack_from("<I", good, tok_off)[0]
    entries = {good[idx_off + 128 * i:idx_off + 128 * i + 96].rstrip(b"\0").decode(): idx_off + 128 * i
               for i in range(count)}

    def forged(name, edits, size=None):
        """Write the forged model to one scratch path (the files are megabytes); keep a failing one."""
        data = bytearray(good if size is None else good[:size])
        for off, fmt, value in edits:
            struct.pack_into(fmt, data, off, value)
        path = write("model_case.bin", bytes(data))
        ok = expect_refused(f"info -m {name}", ["info", "-m", path])
        ok &= expect_refused(f"embed -m {name}", ["embed", "-m", path, "--text", "a photo of a cat",
                                                  "-o", os.path.join(WORK, "out.npy")], os.path.join(WORK, "out.npy"))
        if not ok:
            os.replace(path, os.path.join(WORK, name))

    size_fix = lambda n: (16, "<Q", n)  # noqa: E731  (keeps the header's file size equal to the file)
    slot = lambda k: 56 + 4 * k  # noqa: E731
    tok = lambda k: tok_off + 4 * k  # noqa: E731
    emb = entries["text_model.embeddings.token_embedding.weight"]
    last = max(entries.values(), key=lambda e: struct.unpack_from("<Q", good, e + 120)[0])

    # truncated
    forged("truncated_half.bin", [], len(good) // 2)
    forged("truncated_100_bytes.bin", [], 100)
    forged("truncated_header_only.bin", [size_fix(512)], 512)
    forged("truncated_half_size_fixed.bin", [size_fix(len(good) // 2)], len(good) // 2)
    forged("truncated_last_tensor.bin", [size_fix(len(good) - 4)], len(good) - 4)
    forged("empty.bin", [], 0)
    # header
    forged("bad_magic.bin", [(0, "<8s", b"CLIPCMOE")])
    forged("version_2.bin", [(8, "<I", 2)])
    forged("header_size_0.bin", [(12, "<I", 0)])
    forged("file_size_huge.bin", [(16, "<Q", 2**64 - 1)])
    # section offsets and counts beyond the file
    forged("tensor_count_huge.bin", [(48, "<I", 0xFFFFFFFF)])
    forged("tensor_count_past_end.bin", [(48, "<I", (len(good) - idx_off) // 128 + 1)])
    forged("tensor_count_zero.bin", [(48, "<I", 0)])
    forged("index_offset_past_end.bin", [(40, "<Q", len(good) + 64)])
    forged("index_offset_huge.bin", [(40, "<Q", 2**63)])
    forged("index_offset_in_header.bin", [(40, "<Q", 0)])
    forged("tokenizer_offset_past_end.bin", [(24, "<Q", len(good) + 8)])
    forged("tokenizer_size_huge.bin", [(32, "<Q", 2**64 - 8)])
    forged("tokenizer_offset_wraps.bin", [(24, "<Q", 2**64 - 16), (32, "<Q", 32)])
    forged("tokenizer_size_short.bin", [(32, "<Q", tok_len - 1)])
    # hyperparameters: negative, zero, huge, inconsistent, not a number
    for name, k, fmt, v in [("projection_negative", 0, "<i", -1), ("vision_hidden_huge", 1, "<i", 2**31 - 1),
                            ("vision_heads_zero", 2, "<i", 0), ("vision_heads_not_divisor", 2, "<i", 7),
                            ("vision_layers_huge", 3, "<i", 1 << 30), ("vision_intermediate_negative", 4, "<i", -2**31),
                            ("vision_act_unknown", 5, "<i", 9), ("vision_eps_nan", 6, "<f", float("nan")),
                            ("patch_zero", 7, "<i", 0), ("patch_not_divisor", 7, "<i", 7),
                            ("image_size_negative", 8, "<i", -224), ("image_size_huge", 8, "<i", 2**31 - 1),
                            ("channels_4", 9, "<i", 4), ("text_hidden_negative", 10, "<i", -512),
                            ("text_layers_zero", 12, "<i", 0), ("text_eps_negative", 15, "<f", -1e-5),
                            ("vocab_negative", 16, "<i", -49408), ("vocab_huge", 16, "<i", 2**31 - 1),
                            ("max_positions_huge", 17, "<i", 2**31 - 1), ("max_positions_1", 17, "<i", 1),
                            ("eos_id_past_vocab", 18, "<i", 1 << 20), ("shortest_edge_negative", 19, "<i", -1),
                            ("crop_huge", 20, "<i", 2**31 - 1), ("std_zero", 30, "<f", 0.0),
                            ("std_nan", 31, "<f", float("nan"))]:
        forged(f"hparam_{name}.bin", [(slot(k), fmt, v)])
    # the tokenizer section
    forged("tok_n_vocab_huge.bin", [(tok(0), "<I", 0xFFFFFFFF)])
    forged("tok_n_vocab_zero.bin", [(tok(0), "<I", 0)])
    forged("tok_n_merges_past_section.bin", [(tok(1), "<I", 0x7FFFFFFF)])
    forged("tok_blob_bytes_wrong.bin", [(tok(3), "<I", 12345)])
    forged("tok_bos_negative.bin", [(tok(4), "<i", -7)])
    forged("tok_eos_past_vocab.bin", [(tok(5), "<i", n_vocab)])
    forged("tok_pad_past_vocab.bin", [(tok(6), "<i", 1 << 30)])
    forged("tok_context_huge.bin", [(tok(8), "<i", 2**31 - 1)])
    forged("tok_context_zero.bin", [(tok(8), "<i", 0)])
    forged("tok_string_offset_backwards.bin", [(tok(9 + 100), "<I", 0)])
    forged("tok_string_offset_past_blob.bin", [(tok(9 + 100), "<I", 0xFFFFFFF0)])
    merges = tok(9 + n_vocab + 1)
    forged("tok_merge_id_past_vocab.bin", [(merges + 4, "<i", n_vocab + 5)])
    forged("tok_merge_id_negative.bin", [(merges, "<i", -1)])
    # tensors: wrong shape, dimensions, type, offsets; missing
    forged("tensor_wrong_shape.bin", [(emb + 104, "<I", struct.unpack_from("<I", good, emb + 104)[0] + 1)])
    forged("tensor_wrong_shape_huge.bin", [(emb + 104, "<I", 0xFFFFFFFF), (emb + 108, "<I", 0xFFFFFFFF)])
    forged("tensor_ndim_5.bin", [(emb + 100, "<I", 5)])
    forged("tensor_ndim_huge.bin", [(emb + 100, "<I", 0xFFFFFFFF)])
    forged("tensor_dtype_f16.bin", [(emb + 96, "<I", 1)])
    forged("tensor_offset_past_end.bin", [(last + 120, "<Q", len(good) + 64)])
    forged("tensor_offset_near_end.bin", [(emb + 120, "<Q", (len(good) - 64) // 64 * 64)])
    forged("tensor_offset_huge.bin", [(emb + 120, "<Q", 2**64 - 64)])
    forged("tensor_offset_unaligned.bin", [(emb + 120, "<Q", struct.unpack_from("<Q", good, emb + 120)[0] + 4)])
    forged("tensor_offset_in_header.bin", [(emb + 120, "<Q", 0)])
    forged("tensor_missing.bin", [(emb, "<96s", b"text_model.embeddings.token_embedding.weighs")])
    forged("tensor_name_unterminated.bin", [(emb, "<96s", b"x" * 96)])
    # random bytes behind a valid-looking header
    head = bytearray(good[:512])
    forged("random_after_header.bin", [(0, "<512s", bytes(head))] +
           [(512 + 4 * i, "<I", rng.getrandbits(32)) for i in range((len(good) - 512) // 4)][:4096])
    path = write("random_model.bin", bytes(rng.getrandbits(8) for _ in range(4096)))
    expect_refused("info -m random_model.bin", ["info", "-m", path])

    # well-formed files whose attention would run for hours: tokens^2 work from a small file
    sys.path.insert(0, os.path.join(ROOT, "test", "fuzz"))
    from make_seeds import tiny_model
    out = os.path.join(WORK, "out.npy")
    path = write("vision_grid_256x256.bin", tiny_model(d=2, heads=1, patch=1, size=256))
    expect_refused("embed --image with 65537 image tokens (patch 1, image 256)",
                   ["embed", "-m", path, "--image", os.path.join(IMAGES, "cat_1x1.png"), "-o", out], out)
    path = write("text_positions_65536.bin", tiny_model(d=2, heads=1, positions=65536))
    expect_refused("embed --text with 65536 positions (more than the 16384 clip.c accepts)",
                   ["embed", "-m", path, "--text", "a " * 1000, "-o", out], out)


# ---------------------------------------------------------------------------
# Pixel-value arrays (clip embed --pixel-values)
# ---------------------------------------------------------------------------

def npy(header, data=b""):
    h = header.encode() + b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + data


def npy_cases(model):
    out = os.path.join(WORK, "out.npy")
    f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }"
    for name, data in [
            ("npy_short_data", npy(f4 % "(1, 3, 224, 224)", b"\0" * 1000)),
            ("npy_shape_overflow", npy(f4 % "(1073741824, 1073741824, 1073741824, 3)", b"\0" * 64)),
            ("npy_negative_shape", npy(f4 % "(-1, 3, 224, 224)", b"\0" * 64)),
            ("npy_wrong_shape", npy(f4 % "(2, 3, 7, 7)", b"\0" * (2 * 3 * 49 * 4))),
            ("npy_header_past_end", b"\x93NUMPY\x01\x00\xff\xff{'descr': '<f4'"),
            ("npy_int_dtype", npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1, 3, 224, 224), }", b"\0" * 64)),
            ("npy_truncated_magic", b"\x93NUM")]:
        path = write(name + ".npy", data)
        expect_refused(f"embed --pixel-values {name}.npy", ["embed", "-m", model, "--pixel-values", path, "-o", out], out)


def main():
    model = converted("tiny-b32")
    print(f"clip: {CLIP}")
    if MISSING:
        R.skip("the image cases", MISSING)
    else:
        image_cases(model)
    model_cases(model)
    npy_cases(model)
    if R.failed:
        print(f"the failing files are in {WORK}")
    else:
        shutil.rmtree(WORK, ignore_errors=True)
    R.finish()


if __name__ == "__main__":
    sys.exit(main())
