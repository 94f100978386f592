#!/usr/bin/python3
"""test_jpeg.py - the JPEG decoder (image.c) against Pillow, pixel for pixel.

    /usr/bin/python3 test/test_jpeg.py [--n N] [--seed S] [--fuzz F] [--skip-bench] [--wasm]

Every decode goes through test/img_driver.c's `decode` command. Expected pixels
come from the local Pillow (Debian's 9.4 with libjpeg-turbo 2.1.5, which gives
the golden pixels): Image.open(f).convert("RGB"), or the exception it raises.

1. golden images (test/golden, extracted by test/common.py): every .jpg,
   decoded sha256 against expected/index.json rgb_sha256 and size; files the
   index marks as errors must be refused.
2. a corpus made from --seed: N random images, 1x1 up to 3000x2000, quality
   1..100, written by Pillow (4:4:4, 4:2:2, 4:2:0, greyscale, CMYK, optimized,
   progressive) and by cjpeg/jpegtran (4:4:0, 4:1:1, odd and mixed sampling
   factors, restart intervals, progressive and multi-scan scripts, incomplete
   progressive files that trigger libjpeg's block smoothing, RGB JPEGs, 16-bit
   quantization tables, files with no Huffman tables), CMYK and YCCK files
   written through libjpeg (when its headers are installed), plus files cut
   short (with and without an EOI marker appended): our pixels must equal
   Pillow's, and we must refuse exactly what Pillow refuses. Arithmetic-coded
   files (cjpeg -arithmetic), which we do not support, must be refused clearly.
3. --fuzz F cut, bit-flipped and header-mutated files through a driver built
   with -fsanitize=address,undefined: no crash, no sanitizer report, exit 0 or
   1 only; and on x86-64 the same outcome as Pillow (refused by both, or
   identical pixels). On corrupt data libjpeg-turbo's results depend on its
   SIMD code, which we follow for x86; elsewhere this is only reported.
4. the image sources (image.c and decode/) compile without warnings (gcc
   and clang, -std=c99 -Wall -Wextra -pedantic); a 32-bit build (gcc -m32, run natively or under
   qemu-i386 when either works) and with --wasm an emscripten build (node)
   decode the golden files and part of the corpus identically; and the CPU
   time of decoding a 3000x2000 q90 4:2:0 JPEG, built with the house flags
   (-O2) and the Makefile's (-O3 -march=native), next to Pillow's
   Image.open().convert("RGB") in the same run (--skip-bench skips).

JPEG_TEST_IMAGE_C="FILE ..." links other image sources into the drivers
(default: the Makefile's IMAGE_SRC). Files go to
test/out/jpeg/. The last line is `jpeg: N passed, M failed`. Needs NumPy, Pillow
and cjpeg/jpegtran (libjpeg-turbo-progs); skipped without them (exit 77).
"""
import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time

from common import GOLDEN, ROOT, Report, make_var, need, need_module

np = need_module("numpy", "NumPy")
Image = need_module("PIL.Image", "Pillow")
for tool in ("cjpeg", "jpegtran"):
    if shutil.which(tool) is None:
        need("cjpeg", "apt-get install libjpeg-turbo-progs; or `make test-deps` for everything")

OUT = os.path.join(ROOT, "test", "out", "jpeg")
CC = os.environ.get("CC", "cc")
IMAGE_SRC = os.environ["JPEG_TEST_IMAGE_C"].split() if os.environ.get("JPEG_TEST_IMAGE_C") else make_var("IMAGE_SRC")
SOURCES = [os.path.join(ROOT, "test", "img_driver.c"), *IMAGE_SRC]

# libjpeg's SOF0/1/2 etc.: used to find where entropy-coded data starts
SOS = b"\xff\xda"

# a tiny timing harness: decode one file N times through the library (CPU time)
BENCH_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "clip.h"
int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "rb"); long n; unsigned char *b; int i, reps = atoi(argv[2]);
    double best = 1e30; char err[CLIP_ERR_SIZE]; clip_image img;
    if (!f) return 2;
    fseek(f, 0, SEEK_END); n = ftell(f); fseek(f, 0, SEEK_SET);
    b = malloc((size_t)n);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); fclose(f); return 2; }
    fclose(f);
    for (i = 0; i < reps; i++) {
        clock_t t0 = clock(); double t;
        if (clip_image_decode(b, (size_t)n, &img, err)) { fprintf(stderr, "%s\n", err); free(b); return 1; }
        t = (double)(clock() - t0) / CLOCKS_PER_SEC;
        if (t < best) best = t;
        clip_image_free(&img);
    }
    free(b);
    printf("%.6f\n", best);
    return 0;
}
"""

# a CMYK/YCCK JPEG writer through the system libjpeg (test helper only):
# ycck_enc W H QUALITY HxV YCCK(0|1) SEED OUT.jpg
YCCK_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <jpeglib.h>
int main(int argc, char **argv) {
    int w = atoi(argv[1]), h = atoi(argv[2]), q = atoi(argv[3]), hs, vs, x, y, c;
    unsigned seed = (unsigned)atoi(argv[6]);
    struct jpeg_compress_struct ci; struct jpeg_error_mgr je; FILE *f; JSAMPLE *row;
    if (sscanf(argv[4], "%dx%d", &hs, &vs) != 2 || !(f = fopen(argv[7], "wb"))) return 2;
    ci.err = jpeg_std_error(&je); jpeg_create_compress(&ci); jpeg_stdio_dest(&ci, f);
    ci.image_width = w; ci.image_height = h; ci.input_components = 4; ci.in_color_space = JCS_CMYK;
    jpeg_set_defaults(&ci); jpeg_set_colorspace(&ci, atoi(argv[5]) ? JCS_YCCK : JCS_CMYK);
    jpeg_set_quality(&ci, q, TRUE);
    ci.comp_info[0].h_samp_factor = hs; ci.comp_info[0].v_samp_factor = vs;
    jpeg_start_compress(&ci, TRUE);
    row = malloc((size_t)w * 4);
    for (y = 0; y < h; y++) {
        for (x = 0; x < w; x++)
            for (c = 0; c < 4; c++) {
                seed = seed * 1103515245u + 12345u;
                row[4 * x + c] = (JSAMPLE)(((x * (c + 1) * 7 + y * (5 - c) * 3) & 255) / 2 + ((seed >> 16) & 63));
            }
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci); jpeg_destroy_compress(&ci); fclose(f); free(row);
    return 0;
}
"""


def run(args, **kw):
    return subprocess.run(args, capture_output=True, **kw)


def build(rep):
    os.makedirs(OUT, exist_ok=True)
    drv = os.path.join(OUT, "img_driver")
    p = run([CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-I", ROOT, *SOURCES,
             "-lm", "-o", drv])
    if not rep.check(p.returncode == 0, "img_driver builds"):
        print(p.stderr.decode(errors="replace"))
        sys.exit(1)
    asan = os.path.join(OUT, "img_driver_asan")
    p = run(["gcc", "-std=c99", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
             "-fno-omit-frame-pointer", "-I", ROOT, *SOURCES, "-lm", "-o", asan])
    if not rep.check(p.returncode == 0, "img_driver builds with -fsanitize=address,undefined"):
        print(p.stderr.decode(errors="replace"))
        asan = None
    # the CMYK/YCCK writer, when libjpeg's headers are there
    ycck = os.path.join(OUT, "ycck_enc")
    open(ycck + ".c", "w").write(YCCK_C)
    if run([CC, "-O2", ycck + ".c", "-ljpeg", "-o", ycck]).returncode != 0:
        rep.skip("CMYK/YCCK files (written through libjpeg)", "libjpeg's headers", "apt-get install libjpeg-dev")
        ycck = None
    # warning-free with both compilers, as the house rules ask
    for cc in ("gcc", "clang"):
        if shutil.which(cc) is None:
            rep.skip(f"compiling image.c with {cc}", cc, f"apt-get install {cc}")
            continue
        flags = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"] + (["-O2"] if cc == "gcc" else [])
        objs = os.path.join(OUT, f"image_{cc}")
        os.makedirs(objs, exist_ok=True)
        p = run([cc, *flags, "-I", ROOT, "-c", *IMAGE_SRC], cwd=objs)
        rep.check(p.returncode == 0, f"image.c and decode/ compile warning-free with {cc}")
        if p.returncode:
            print(p.stderr.decode(errors="replace"))
    return drv, asan, ycck


def build_m32():
    """A 32-bit driver and how to run it, or (None, reason). Built with gcc (JPEG_TEST_M32_CC), not $CC:
    under `make test-asan` CC adds sanitizers, and a sanitized 32-bit driver under qemu-i386 takes hours."""
    exe = os.path.join(OUT, "img_driver_m32")
    p = run([os.environ.get("JPEG_TEST_M32_CC", "gcc"), "-m32", "-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-I", ROOT, *SOURCES,
             "-lm", "-o", exe])
    if p.returncode != 0:
        return None, ("gcc -m32", "apt-get install gcc-multilib")
    for runner in ([], ["qemu-i386"]):
        if runner and shutil.which(runner[0]) is None:
            continue
        try:
            if run(runner + [exe]).returncode == 1:  # usage message: it runs
                return runner + [exe], None
        except OSError:
            pass
    return None, ("a way to run 32-bit programs (qemu-i386)", "apt-get install qemu-user")


def build_wasm():
    """An emscripten driver run by node, or (None, reason)."""
    if shutil.which("emcc") is None or shutil.which("node") is None:
        return None, ("emcc and node", "apt-get install emscripten node-acorn nodejs")
    js = os.path.join(OUT, "img_driver_wasm.js")
    env = dict(os.environ, NODE_PATH=os.environ.get("NODE_PATH", "/usr/share/nodejs"))
    p = run(["emcc", "-std=c99", "-O3", "-msimd128", "-Wall", "-Wextra", "-pedantic", "-I", ROOT, *SOURCES,
             "-sNODERAWFS=1", "-sALLOW_MEMORY_GROWTH=1", "-sEXIT_RUNTIME=1", "-o", js], env=env)
    if p.returncode != 0:
        return None, ("a working emcc (it failed: %s)" % p.stderr.decode(errors="replace")[-300:],
                      "apt-get install emscripten node-acorn")
    return ["node", "--no-experimental-fetch", js], None


def decode(drv, path, env=None):
    """Our decode: (array, None) or (None, error message). drv: a path or a command list."""
    out = path + ".ours.npy"
    if os.path.exists(out):
        os.remove(out)
    cmd = drv if isinstance(drv, list) else [drv]
    p = run(cmd + ["decode", path, out], env=env)
    if p.returncode == 0:
        a = np.load(out)
        os.remove(out)
        return a, None
    msg = p.stderr.decode(errors="replace").strip()
    if os.path.exists(out):
        return None, "an output file was left behind after an error: " + msg
    if p.returncode != 1 or not msg.startswith("img_driver: error: "):
        return None, f"bad failure (exit {p.returncode}): {msg[:300]}"
    return None, msg


def pillow(path):
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB")), None
    except Exception as e:  # what Pillow raised: we must refuse the file too
        return None, f"{type(e).__name__}: {e}"


def compare(rep, drv, path, what, quiet=True):
    ours, oerr = decode(drv, path)
    ref, rerr = pillow(path)
    if ref is None:
        return rep.check(ours is None and oerr.startswith("img_driver: error: "),
                         f"{what}: refused like Pillow ({rerr[:60]}) -> {oerr or 'decoded'}", quiet)
    if ours is None:
        return rep.check(False, f"{what}: Pillow decodes it, we refused: {oerr}")
    if ours.shape != ref.shape:
        return rep.check(False, f"{what}: shape {ours.shape} vs Pillow {ref.shape}")
    diff = ours.astype(int) - ref.astype(int)
    bad = int(np.count_nonzero(diff))
    return rep.check(bad == 0, f"{what}: {bad} of {diff.size} values differ from Pillow"
                     f" (max {int(np.abs(diff).max()) if bad else 0})", quiet)


# ---------------------------------------------------------------------------
# golden images

def test_golden(rep, drv):
    idir = os.path.join(GOLDEN, "images")
    index_path = os.path.join(idir, "expected", "index.json")
    index = json.load(open(index_path))
    names = sorted(n for n in index if n.lower().endswith((".jpg", ".jpeg")))
    rep.check(len(names) > 0, f"golden index lists {len(names)} JPEG files")
    for name in names:
        e = index[name]
        ours, err = decode(drv, os.path.join(idir, name))
        if "error" in e:
            rep.check(ours is None and err.startswith("img_driver: error: "),
                      f"golden {name}: refused (Pillow: {e['error'][:50]}) -> {err}")
            continue
        if ours is None:
            rep.check(False, f"golden {name}: {err}")
            continue
        sha = hashlib.sha256(np.ascontiguousarray(ours).tobytes()).hexdigest()
        ok = sha == e["rgb_sha256"] and list(ours.shape) == [e["size"][1], e["size"][0], 3]
        rep.check(ok, f"golden {name}: {ours.shape[1]}x{ours.shape[0]} sha256 "
                  f"{'matches' if sha == e['rgb_sha256'] else 'DIFFERS'}")


# ---------------------------------------------------------------------------
# corpus

def make_pixels(rng, w, h, channels):
    """Smooth waves, hard-edged rectangles and noise: every DCT frequency shows up."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, channels), np.float32)
    for c in range(channels):
        fx, fy, gx, gy = rng.uniform(0.002, 0.4, 4)
        img[..., c] = (128 + rng.uniform(20, 90) * np.sin(xx * fx + yy * fy + rng.uniform(0, 6.3))
                       + rng.uniform(0, 50) * np.cos(xx * gx - yy * gy))
    for _ in range(int(rng.integers(0, 8))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        img[y0:y0 + int(rng.integers(1, w + 1)), x0:x0 + int(rng.integers(1, h + 1))] = rng.uniform(0, 255, channels)
    img += rng.normal(0, rng.uniform(0, 30), img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_size(rng, big):
    if big:
        return int(rng.integers(1500, 3001)), int(rng.integers(1000, 2001))
    if rng.random() < 0.15:
        return int(rng.integers(1, 9)), int(rng.integers(1, 9))
    w = int(np.exp(rng.uniform(0, np.log(700))))
    h = int(np.exp(rng.uniform(0, np.log(500))))
    return max(w, 1), max(h, 1)


SAMPLINGS = ["1x1,1x1,1x1", "2x1,1x1,1x1", "2x2,1x1,1x1", "1x2,1x1,1x1", "4x1,1x1,1x1",
             "1x4,1x1,1x1", "4x2,1x1,1x1", "2x4,1x1,1x1", "3x1,1x1,1x1", "1x3,1x1,1x1",
             "3x2,1x1,1x1", "2x2,2x1,1x1", "2x2,1x2,1x1", "2x2,2x2,1x1", "1x1,2x2,2x2",
             "2x1,1x2,1x1", "4x2,2x1,1x1", "3x3,1x1,1x1", "2x2,1x1,2x2"]

SCRIPTS = {
    # sequential, one scan per component (libjpeg's multi-scan path)
    "seq-noninterleaved": "0: 0-63, 0, 0;\n1: 0-63, 0, 0;\n2: 0-63, 0, 0;\n",
    "seq-y-then-cbcr": "0: 0-63, 0, 0;\n1 2: 0-63, 0, 0;\n",
    # progressive, complete, spectral selection only
    "prog-spectral": "0 1 2: 0-0, 0, 0;\n0: 1-5, 0, 0;\n0: 6-63, 0, 0;\n1: 1-63, 0, 0;\n2: 1-63, 0, 0;\n",
    # progressive, complete, deep successive approximation
    "prog-approx": ("0 1 2: 0-0, 0, 2;\n0 1 2: 0-0, 2, 1;\n0 1 2: 0-0, 1, 0;\n"
                    "0: 1-9, 0, 3;\n0: 10-63, 0, 2;\n1: 1-63, 0, 1;\n2: 1-63, 0, 1;\n"
                    "0: 1-63, 3, 2;\n0: 1-63, 2, 1;\n0: 1-63, 1, 0;\n1: 1-63, 1, 0;\n2: 1-63, 1, 0;\n"),
    # progressive, incomplete: libjpeg applies block smoothing
    "prog-dc-only": "0 1 2: 0-0, 0, 0;\n",
    "prog-dc-approx-only": "0 1 2: 0-0, 0, 1;\n",
    "prog-partial": "0 1 2: 0-0, 0, 1;\n0: 1-5, 0, 2;\n1: 1-2, 0, 0;\n",
    "prog-partial-refine": "0 1 2: 0-0, 0, 1;\n0: 1-9, 0, 1;\n2: 1-63, 0, 0;\n0: 1-9, 1, 0;\n",
}
GRAY_SCRIPTS = {
    "gray-prog-dc-only": "0: 0-0, 0, 0;\n",
    "gray-prog-partial": "0: 0-0, 0, 1;\n0: 1-3, 0, 1;\n0: 4-63, 0, 0;\n",
    "gray-prog-full": "0: 0-0, 0, 1;\n0: 1-63, 0, 2;\n0: 0-0, 1, 0;\n0: 1-63, 2, 1;\n0: 1-63, 1, 0;\n",
}


def encode_case(rng, i, big, work, ycck=None):
    """Write one random JPEG; return (path, description, kind)."""
    w, h = random_size(rng, big)
    q = int(rng.integers(1, 101))
    r = rng.random()
    path = os.path.join(work, f"c{i:04d}.jpg")
    if ycck and r < 0.06:  # CMYK or YCCK through libjpeg, Adobe marker
        samp = ["1x1", "2x2", "2x1", "1x2"][int(rng.integers(0, 4))]
        kind = int(rng.integers(0, 2))
        p = run([ycck, str(w), str(h), str(q), samp, str(kind), str(int(rng.integers(1, 1 << 30))), path])
        if p.returncode != 0:
            return None, "ycck_enc failed", "skip"
        return path, f"libjpeg {'YCCK' if kind else 'CMYK'} {w}x{h} q{q} sample {samp}", "plain"
    if r < 0.4:  # Pillow's encoder
        mode = rng.choice(["RGB"] * 6 + ["L", "L", "CMYK"])
        pix = make_pixels(rng, w, h, {"RGB": 3, "L": 1, "CMYK": 4}[mode])
        im = Image.fromarray(pix[..., 0] if mode == "L" else pix, mode)
        opts = dict(quality=q, optimize=bool(rng.random() < 0.3), progressive=bool(rng.random() < 0.3))
        if mode == "RGB":
            opts["subsampling"] = int(rng.integers(0, 3))
        im.save(path, "JPEG", **opts)
        desc = f"pillow {mode} {w}x{h} q{q} " + " ".join(f"{k}={v}" for k, v in opts.items() if k != "quality")
        return path, desc, "plain"
    # cjpeg (and jpegtran)
    gray = rng.random() < 0.15
    pix = make_pixels(rng, w, h, 1 if gray else 3)
    src = os.path.join(work, f"c{i:04d}.{'pgm' if gray else 'ppm'}")
    Image.fromarray(pix[..., 0] if gray else pix).save(src)
    args = ["cjpeg", "-quality", str(q)]
    if gray:
        args.append("-grayscale")
        if rng.random() < 0.3:
            args += ["-sample", rng.choice(["2x2", "1x3", "4x1"])]
    else:
        if rng.random() < 0.1:
            args.append("-rgb")
        args += ["-sample", str(rng.choice(SAMPLINGS))]
    if rng.random() < 0.4:
        args += ["-restart", str(int(rng.integers(1, 4))) if rng.random() < 0.5 else f"{int(rng.integers(1, 40))}B"]
    if rng.random() < 0.3:
        args.append("-optimize")
    if rng.random() < 0.5:
        args.append("-baseline")  # else low qualities give 16-bit quantization tables
    script = None
    t = rng.random()
    if t < 0.3:
        args.append("-progressive")
    elif t < 0.5:
        name = str(rng.choice(sorted(GRAY_SCRIPTS if gray else SCRIPTS)))
        script = os.path.join(work, f"c{i:04d}.scans")
        open(script, "w").write((GRAY_SCRIPTS if gray else SCRIPTS)[name])
        args += ["-scans", script]
    elif t < 0.55:
        args.append("-arithmetic")
    args += ["-outfile", path, src]
    p = run(args)
    os.remove(src)
    if p.returncode != 0:  # e.g. a sampling cjpeg will not do (MCU too large)
        return None, " ".join(args[:-3]) + ": " + p.stderr.decode(errors="replace").strip()[:80], "skip"
    desc = " ".join(a for a in args[1:-3]) + (f" ({os.path.basename(open(script).name)})" if script else "")
    desc = f"cjpeg {w}x{h} {desc}"
    if script:
        desc += " " + name
    kind = "arith" if "-arithmetic" in args else "plain"
    # jpegtran: lossless transforms (transpose turns 4:2:2 into 4:4:0), re-scanning
    if kind == "plain" and rng.random() < 0.15:
        ops = [["-transpose"], ["-rotate", "90"], ["-progressive"], ["-restart", "2"], ["-optimize"]]
        op = ops[int(rng.integers(0, len(ops)))]
        p = run(["jpegtran", *op, "-outfile", path + ".t", path])
        if p.returncode == 0:
            os.replace(path + ".t", path)
            desc += " | jpegtran " + " ".join(op)
    if kind == "plain" and rng.random() < 0.05:
        # strip the DHT markers: libjpeg-turbo falls back to the standard tables
        # (only valid when the file used them, i.e. no -optimize/progressive)
        if "-optimize" not in args and "-progressive" not in args and script is None:
            data = open(path, "rb").read()
            out, pos = bytearray(data[:2]), 2
            while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0xDA:
                n = 2 + (data[pos + 2] << 8 | data[pos + 3])
                if data[pos + 1] != 0xC4:
                    out += data[pos:pos + n]
                pos += n
            out += data[pos:]
            open(path, "wb").write(bytes(out))
            desc += " | DHT stripped"
    return path, desc, kind


def cut_case(rng, src, dst):
    """src cut at a random point (mostly inside the scans), maybe EOI appended."""
    data = open(src, "rb").read()
    sos = data.find(SOS)
    lo = sos + 2 if sos > 0 and rng.random() < 0.85 else 2
    cut = int(rng.integers(lo, len(data)))
    eoi = rng.random() < 0.6
    open(dst, "wb").write(data[:cut] + (b"\xff\xd9" if eoi else b""))
    return f"cut at {cut}/{len(data)}{' + EOI' if eoi else ''}"


def test_corpus(rep, drv, n, seed, work, ycck, keep):
    """The random corpus; the first small files are kept in `keep` as
    (path, description) for the other builds."""
    rng = np.random.default_rng(seed)
    counts = {"plain": 0, "cut": 0, "arith": 0, "skip": 0}
    fails_before = rep.failed
    t0 = time.time()
    for i in range(n):
        big = i % 40 == 39
        path, desc, kind = encode_case(rng, i, big, work, ycck)
        counts[kind] += 1
        if kind == "skip":
            continue
        if kind == "arith":
            ours, err = decode(drv, path)
            rep.check(ours is None and "arithmetic" in (err or ""),
                      f"#{i} {desc}: arithmetic coding refused clearly ({err})", quiet=True)
        else:
            compare(rep, drv, path, f"#{i} {desc}")
            if rng.random() < 0.35:
                cpath = path[:-4] + "_cut.jpg"
                what = cut_case(rng, path, cpath)
                counts["cut"] += 1
                compare(rep, drv, cpath, f"#{i} {desc} {what}")
                os.remove(cpath)
        if len(keep) < 24 and not big and kind == "plain":
            keep.append((path, desc))
        else:
            os.remove(path)
    print(f"ok   corpus seed {seed}: {counts['plain']} encoded files, {counts['cut']} cut files, "
          f"{counts['arith']} arithmetic-coded, {counts['skip']} samplings cjpeg refused; "
          f"{rep.failed - fails_before} failures ({time.time() - t0:.1f} s)")


# ---------------------------------------------------------------------------
# robustness under AddressSanitizer + UndefinedBehaviorSanitizer

def mutate(rng, data):
    d = bytearray(data)
    sos = data.find(SOS)
    r = rng.random()
    if r < 0.3:  # cut
        return bytes(d[:int(rng.integers(0, len(d)))]), "cut"
    if r < 0.7:  # flip bits in the entropy-coded data
        lo = sos + 2 if sos > 0 else 2
        for _ in range(int(rng.integers(1, 6))):
            p = int(rng.integers(lo, len(d)))
            d[p] ^= 1 << int(rng.integers(0, 8))
        return bytes(d), "bit flips"
    # mutate header bytes (tables, frame and scan headers)
    hi = sos + 12 if sos > 0 else len(d)
    for _ in range(int(rng.integers(1, 4))):
        p = int(rng.integers(2, min(hi, len(d))))
        d[p] = int(rng.integers(0, 256)) if rng.random() < 0.7 else d[p] ^ (1 << int(rng.integers(0, 8)))
    return bytes(d), "header bytes"


def test_fuzz(rep, asan, count, seed, work, ycck):
    if asan is None:
        rep.check(False, "fuzzing needs the sanitizer build")
        return
    rng = np.random.default_rng(seed + 1000)
    strict = platform.machine().lower() in ("x86_64", "amd64")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1")
    bases = []
    for i in range(12):
        path, desc, kind = encode_case(rng, 10000 + i, False, work, ycck)
        if path and kind == "plain":
            bases.append(path)
    crashes = agree = refused_both = decoded_both = disagree = 0
    t0 = time.time()
    for i in range(count):
        src = bases[i % len(bases)]
        data, how = mutate(rng, open(src, "rb").read())
        path = os.path.join(work, "fuzz.jpg")
        open(path, "wb").write(data)
        out = path + ".ours.npy"
        p = run([asan, "decode", path, out], env=env)
        err = p.stderr.decode(errors="replace")
        if p.returncode not in (0, 1) or "runtime error" in err or "Sanitizer" in err:
            crashes += 1
            keep = os.path.join(OUT, f"crash_{seed}_{i}.jpg")
            shutil.copy(path, keep)
            rep.check(False, f"fuzz #{i} ({how}, from {os.path.basename(src)}): exit {p.returncode}, saved {keep}\n{err[-1500:]}")
            continue
        ours = np.load(out) if p.returncode == 0 else None
        if os.path.exists(out):
            os.remove(out)
        ref, _ = pillow(path)
        if ours is None and ref is None:
            refused_both += 1
            agree += 1
        elif ours is not None and ref is not None and ours.shape == ref.shape and np.array_equal(ours, ref):
            decoded_both += 1
            agree += 1
        else:
            disagree += 1
            keep = os.path.join(OUT, f"differs_{seed}_{i}.jpg")
            shutil.copy(path, keep)
            if strict:
                print(f"     fuzz #{i} ({how}): {'decoded' if ours is not None else 'refused'} by us, "
                      f"{'decoded' if ref is not None else 'refused'} by Pillow; saved {keep}")
    rep.check(crashes == 0, f"fuzz seed {seed}: {count} corrupt files under ASan+UBSan, {crashes} crashes "
              f"({time.time() - t0:.1f} s)")
    what = (f"fuzz seed {seed}: same outcome as Pillow on {agree} of {count} ({decoded_both} identical "
            f"pixels, {refused_both} refused by both), different on {disagree}")
    if strict:
        rep.check(disagree == 0, what)
    else:
        print(f"info {what} (not judged on {platform.machine()})")


def test_other_builds(rep, work, keep, wasm):
    """The 32-bit and (with --wasm) emscripten builds on the golden files
    and the kept corpus files: the same bytes as Pillow."""
    idir = os.path.join(GOLDEN, "images")
    files = [(os.path.join(idir, n), n) for n in sorted(os.listdir(idir))
             if n.lower().endswith(".jpg")] if os.path.isdir(idir) else []
    files += keep
    builds = [("32-bit",) + build_m32()]
    if wasm:
        builds.append(("wasm",) + build_wasm())
    for name, cmd, why in builds:
        if cmd is None:
            rep.skip(f"the {name} build", *why)
            continue
        same = 0
        t0 = time.time()
        for path, desc in files:
            ours, err = decode(cmd, path)
            ref, rerr = pillow(path)
            if (ours is None and ref is None) or (ours is not None and ref is not None and
                                                  ours.shape == ref.shape and np.array_equal(ours, ref)):
                same += 1
            else:
                rep.check(False, f"{name} build: {desc}: {err or 'pixels differ from Pillow'}")
        rep.check(same == len(files), f"{name} build ({' '.join(cmd[:-1] + [os.path.basename(cmd[-1])])}): "
                  f"{same} of {len(files)} files like Pillow ({time.time() - t0:.1f} s)")


# ---------------------------------------------------------------------------
# timing

def test_bench(rep, work):
    """CPU time (best of 5) of one 3000x2000 q90 4:2:0 decode: ours with the
    house flags and with the Makefile's, Pillow's open + convert("RGB")."""
    src = os.path.join(OUT, "jpeg_bench.c")
    open(src, "w").write(BENCH_C)
    exes = []
    for label, flags in (("-O2", ["-O2"]), ("-O3 -march=native", ["-O3", "-march=native"])):
        exe = os.path.join(OUT, "jpeg_bench" + flags[0])
        p = run([CC, "-std=c99", *flags, "-I", ROOT, src, *IMAGE_SRC, "-lm", "-o", exe])
        if rep.check(p.returncode == 0, f"timing harness builds with {label}"):
            exes.append((label, exe))
        else:
            print(p.stderr.decode(errors="replace"))
    rng = np.random.default_rng(7)
    pix = make_pixels(rng, 3000, 2000, 3)
    path = os.path.join(work, "bench.jpg")
    Image.fromarray(pix).save(path, "JPEG", quality=90, subsampling=2)
    data = open(path, "rb").read()
    best = 1e9
    for _ in range(5):
        t0 = time.process_time()
        with Image.open(io.BytesIO(data)) as im:
            im.convert("RGB")
        best = min(best, time.process_time() - t0)
    line = f"info 3000x2000 q90 4:2:0 ({len(data)} bytes), CPU time best of 5: Pillow {best * 1e3:.1f} ms"
    for label, exe in exes:
        p = run([exe, path, "5"])
        if rep.check(p.returncode == 0, f"timing harness ({label}) decodes the 3000x2000 file"):
            ours = float(p.stdout)
            line += f", ours {label} {ours * 1e3:.1f} ms ({ours / best:.2f}x)"
    print(line)
    os.remove(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100, help="random corpus files")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fuzz", type=int, default=120, help="corrupt files for the sanitizer build")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--wasm", action="store_true", help="also check an emscripten build (slow to build)")
    args = ap.parse_args()
    rep = Report()
    work = os.path.join(OUT, "work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work, exist_ok=True)
    drv, asan, ycck = build(rep)
    test_golden(rep, drv)
    keep = []
    test_corpus(rep, drv, args.n, args.seed, work, ycck, keep)
    test_other_builds(rep, work, keep, args.wasm)
    test_fuzz(rep, asan, args.fuzz, args.seed, work, ycck)
    if not args.skip_bench:
        test_bench(rep, work)
    shutil.rmtree(work, ignore_errors=True)
    rep.finish()


if __name__ == "__main__":
    main()
