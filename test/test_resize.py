#!/usr/bin/python3
"""test_resize.py - bicubic resizing and CLIPImageProcessor preprocessing (image.c).

    /usr/bin/python3 test/test_resize.py [--n N] [--seed S] [--skip-bench]

What is checked, through test/img_driver.c's `resize` and `preprocess` commands:

1. golden images (test/golden): the decoded RGB (by the local Pillow, or where
   it decodes differently by the driver, used only when its sha256 is the
   golden rgb_sha256) through
     - `resize pil` to resized_shape: sha256 must equal resized_sha256;
     - `preprocess pil`: identical to `*.pil.npy` (its sha256);
     - `preprocess torchvision`: within 1e-6 of `*.hf5.npy`, no grey-level flips
       (the golden array is REF_TORCH's output once that has hf5_sha256: the
       repository keeps only the sha256; where it does not, byte equality).
2. `resize pil` against the local Pillow (Image.resize(BICUBIC, reducing_gap=None))
   on N random images and target sizes (up, down, 1 pixel, extreme aspect
   ratios): zero differences.
3. `resize torch` against REF_TORCH below: an independent numpy model of
   PyTorch's uint8 antialiased bicubic (there is no PyTorch 2 here; Debian's
   1.13 has no uint8 antialias kernel). The model is itself checked: its
   Pillow variant must equal Pillow on every random case, and its PyTorch
   variant must reproduce every golden `*.hf5.npy`.
4. `preprocess` with random shortest edge / crop sizes (crop larger than the
   image: padding) against transformers' steps written out in numpy here.
5. the library API on bad arguments (a small C program), and timings of a
   3000x2000 image against Pillow's resize in the same run.

Two drivers are checked: one built with the house flags (-O2) and one with
-O3 -march=native -ffp-contract=fast (the Makefile's, but with contraction,
which would let a compiler fuse the weight arithmetic into fma: image.c must
give Pillow's bytes even so).
RESIZE_TEST_EXTRA_FLAGS="-m32 -O2" adds a third driver built with those flags, run
through RESIZE_TEST_EXTRA_RUNNER (e.g. qemu-i386) when set.
The `preprocess` command reads the image with decode/ppm.c
(RESIZE_TEST_IMAGE_C="FILE ..." links other image sources instead of the
Makefile's IMAGE_SRC).
The last line is `resize: N passed, M failed`. Needs NumPy and Pillow; skipped
without them (exit 77).
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time

from common import GOLDEN, ROOT, Report, make_var, need_module

np = need_module("numpy", "NumPy")
Image = need_module("PIL.Image", "Pillow")
OUT = os.path.join(ROOT, "test", "out", "resize")
CC = os.environ.get("CC", "cc")
# the image sources to link into the driver (the decoders are not under test here)
IMAGE_SRC = os.environ["RESIZE_TEST_IMAGE_C"].split() if os.environ.get("RESIZE_TEST_IMAGE_C") else make_var("IMAGE_SRC")
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
RESCALE = 1 / 255


# ----------------------------------------------------------------------------
# Reference models (numpy, written from the C++ sources, independent of the C)
# ----------------------------------------------------------------------------

def cubic_pil(x):
    # Pillow Resample.c bicubic_filter, a = -0.5
    if x < 0.0:
        x = -x
    if x < 1.0:
        return ((1.5 * x - 2.5) * x) * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * -0.5
    return 0.0


def cubic_torch(x):
    # UpSample.h cubic_convolution1/2 with A = -0.5 (HelperInterpCubic::aa_filter)
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2) * x - (a + 3)) * x * x + 1
    if x < 2.0:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return 0.0


def axis_coeffs(in_size, out_size, kind):
    """(taps index [out, k], int weights [out, k], precision) for one axis."""
    if kind == "pil":   # precompute_coeffs: box is float, scale = (in1 - in0) / out
        scale = float(np.float32(in_size)) / out_size
    else:               # area_pixel_compute_scale: in / out
        scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    inv = 1.0 / filterscale
    filt = cubic_pil if kind == "pil" else cubic_torch
    rows, wt_max = [], 0.0
    for i in range(out_size):
        center = (i + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        n = min(max(min(int(center + support + 0.5), in_size) - xmin, 0), ksize)
        w = [filt((j + xmin - center + 0.5) * inv) for j in range(n)]
        total = 0.0
        for v in w:
            total += v
        if total != 0.0:
            w = [v / total for v in w]
            wt_max = max([wt_max] + w)
        rows.append((xmin, w))
    if kind == "pil":
        prec = 22   # PRECISION_BITS
    else:           # _compute_index_ranges_int16_weights
        prec = 0
        while prec < 22 and int(0.5 + wt_max * (1 << (prec + 1))) < (1 << 15):
            prec += 1
    idx = np.zeros((out_size, ksize), np.int64)
    wts = np.zeros((out_size, ksize), np.int64)
    for i, (xmin, w) in enumerate(rows):
        for j, v in enumerate(w):
            v = v * (1 << prec)
            idx[i, j] = xmin + j
            wts[i, j] = int(-0.5 + v) if v < 0 else int(0.5 + v)
    return idx, wts, prec


def apply_axis(img, axis, coeffs):
    """One pass of integer convolution along axis 0 (rows) or 1 (columns)."""
    idx, wts, prec = coeffs
    src = np.moveaxis(img, axis, 0)
    out = np.empty((idx.shape[0],) + src.shape[1:], np.int64)
    step = max(1, 4000000 // max(1, idx.shape[0] * 3 * idx.shape[1]))
    for c0 in range(0, src.shape[1], step):
        part = src[:, c0:c0 + step]
        acc = np.full((idx.shape[0],) + part.shape[1:], 1 << (prec - 1), np.int64)
        for t in range(idx.shape[1]):
            acc += part[idx[:, t]] * wts[:, t][:, None, None]
        out[:, c0:c0 + step] = np.clip(acc >> prec, 0, 255)
    return np.moveaxis(out, 0, axis)


def ref_resize(a, w, h, kind):
    """REF_TORCH (kind 'torch') / the same scheme with Pillow's constants (kind 'pil'):
    horizontal pass then vertical, a pass skipped when its size does not change."""
    x = a.astype(np.int64)
    if w != a.shape[1]:
        x = apply_axis(x, 1, axis_coeffs(a.shape[1], w, kind))
    if h != a.shape[0]:
        x = apply_axis(x, 0, axis_coeffs(a.shape[0], h, kind))
    return x.astype(np.uint8)


def pillow_resize(a, w, h):
    return np.asarray(Image.fromarray(a).resize((w, h), Image.BICUBIC, reducing_gap=None))


def ref_preprocess(a, mode, shortest=224, crop=224):
    """transformers 5 CLIPImageProcessorPil (mode 'pil') / CLIPImageProcessor with the
    torchvision backend (mode 'torchvision'), step by step, for an HxWx3 uint8 image."""
    h, w = a.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(shortest * long / short)      # get_resize_output_image_size
    rw, rh = (shortest, new_long) if w <= h else (new_long, shortest)
    if mode == "pil":
        r = pillow_resize(a, rw, rh)
    else:
        r = ref_resize(a, rw, rh, "torch")
    img = np.transpose(r, (2, 0, 1))             # CHW
    if mode == "pil":                            # image_transforms.center_crop
        oh, ow = img.shape[1:]
        top, left = (oh - crop) // 2, (ow - crop) // 2
        if top >= 0 and left >= 0:
            img = img[:, top:top + crop, left:left + crop]
        else:
            nh, nw = max(crop, oh), max(crop, ow)
            big = np.zeros((3, nh, nw), img.dtype)
            tp, lp = math.ceil((nh - oh) / 2), math.ceil((nw - ow) / 2)
            big[:, tp:tp + oh, lp:lp + ow] = img
            top += tp
            left += lp
            img = big[:, max(0, top):min(nh, top + crop), max(0, left):min(nw, left + crop)]
        x = (img.astype(np.float64) * RESCALE).astype(np.float32)   # rescale
        x = ((x.T - MEAN) / STD).T                                   # normalize (float32)
    else:                                        # TorchvisionBackend.center_crop
        ih, iw = img.shape[1:]
        if crop > iw or crop > ih:
            l = (crop - iw) // 2 if crop > iw else 0
            t = (crop - ih) // 2 if crop > ih else 0
            rr = (crop - iw + 1) // 2 if crop > iw else 0
            b = (crop - ih + 1) // 2 if crop > ih else 0
            img = np.pad(img, ((0, 0), (t, b), (l, rr)))
            ih, iw = img.shape[1:]
        top, left = int((ih - crop) / 2.0), int((iw - crop) / 2.0)
        img = img[:, top:top + crop, left:left + crop]
        inv = np.float32(1.0 / RESCALE)          # fused: mean / rescale in float32
        m, s = MEAN * inv, STD * inv
        x = (img.astype(np.float32) - m[:, None, None]) / s[:, None, None]
    return x[None].astype(np.float32)


def grey_levels(x):
    """Pixel values back to grey levels (both pipelines are monotonic per channel)."""
    return np.rint(x[0].astype(np.float64) * (STD * 255)[:, None, None].astype(np.float64)
                   + (MEAN * 255)[:, None, None].astype(np.float64)).astype(np.int64)


# ----------------------------------------------------------------------------
# Driver plumbing
# ----------------------------------------------------------------------------

def sha256(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def golden_rgb(path, want_sha, exe):
    """The golden decoded RGB of an image: the local Pillow's, or where that differs (another
    libjpeg-turbo) the driver's; either only when its sha256 is rgb_sha256."""
    a = np.asarray(Image.open(path).convert("RGB"))
    if sha256(a) == want_sha:
        return a, "Pillow"
    out = os.path.join(OUT, "g_dec.npy")
    p = subprocess.run(exe + ["decode", path, out], capture_output=True, text=True)
    if p.returncode == 0:
        a = np.load(out)
        if sha256(a) == want_sha:
            return a, "the driver's decode"
    return None, "neither the local Pillow nor the driver decodes it to rgb_sha256"


def build(name, flags):
    exe = os.path.join(OUT, name)
    cmd = [CC, "-std=c99", *flags, "-Wall", "-Wextra", "-pedantic", "-I" + ROOT,
           os.path.join(ROOT, "test", "img_driver.c"), *IMAGE_SRC, "-lm", "-o", exe]
    p = subprocess.run(cmd, capture_output=True, text=True)
    return exe if p.returncode == 0 else None, p.stderr


def write_ppm(path, a):
    with open(path, "wb") as f:
        f.write(b"P6\n%d %d\n255\n" % (a.shape[1], a.shape[0]))
        f.write(np.ascontiguousarray(a).tobytes())


def drv_resize(exe, src_npy, mode, w, h):
    out = os.path.join(OUT, "r_out.npy")
    p = subprocess.run(exe + ["resize", mode, src_npy, str(w), str(h), out], capture_output=True, text=True)
    if p.returncode != 0:
        return None, p.stderr.strip()
    return np.load(out), ""


def drv_preprocess(exe, ppm, mode, sizes=()):
    out = os.path.join(OUT, "p_out.npy")
    p = subprocess.run(exe + ["preprocess", mode, ppm, out, *map(str, sizes)], capture_output=True, text=True)
    if p.returncode != 0:
        return None, p.stderr.strip()
    return np.load(out), ""


def random_image(rng, h, w):
    kind = rng.integers(4)
    if kind == 0:
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == 1:     # only 0 and 255: the strongest ringing, clipping on both sides
        return (rng.integers(0, 2, (h, w, 3)) * 255).astype(np.uint8)
    if kind == 2:     # smooth, with a little noise
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 // max(w, 1), y * 255 // max(h, 1), (x + y) * 127 // max(w + h, 1)], -1)
        return np.clip(base + rng.integers(-8, 9, (h, w, 3)), 0, 255).astype(np.uint8)
    return np.full((h, w, 3), rng.integers(0, 256, 3), np.uint8)


def random_case(rng, i):
    """(source h, w, target w, h), cycling through kinds of cases."""
    kind = i % 6
    r = lambda a, b: int(rng.integers(a, b + 1))
    if kind == 0:
        return r(1, 8), r(1, 8), r(1, 40), r(1, 40)
    if kind == 1:
        return r(1, 300), r(1, 300), r(1, 400), r(1, 400)
    if kind == 2:     # extreme aspect ratios
        if rng.integers(2):
            return 1, r(1, 3000), r(1, 600), r(1, 300)
        return r(1, 3000), r(2, 3), r(1, 300), r(1, 600)
    if kind == 3:     # strong downscale
        return r(400, 1200), r(400, 1200), r(1, 40), r(1, 40)
    if kind == 4:     # one side kept: a single pass
        h, w = r(1, 200), r(1, 200)
        return (h, w, w, r(1, 300)) if rng.integers(2) else (h, w, r(1, 300), h)
    return r(1, 200), r(1, 200), 1, 1 if rng.integers(2) else r(1, 100)


# ----------------------------------------------------------------------------
# The API checks and timings (a small C program built against image.c)
# ----------------------------------------------------------------------------

API_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "clip.h"

static int fails;
static void expect(int cond, const char *what, const char *err)
{
    if (!cond) fails++;
    printf("%s %s%s%s\n", cond ? "ok  " : "FAIL", what, err ? ": " : "", err ? err : "");
}

int main(int argc, char **argv)
{
    char err[CLIP_ERR_SIZE];
    clip_preprocess_config cfg = {224, 224, 224, 1, 1, 1, 1, 1.0f / 255.0f,
                                  {0.48145466f, 0.4578275f, 0.40821073f},
                                  {0.26862954f, 0.26130258f, 0.27577711f}};
    clip_preprocess_config bad;
    clip_image im = {0, 0, NULL}, dst = {1, 1, NULL}, empty = {0, 0, NULL}, huge;
    static uint8_t px[3 * 64];
    float *out = malloc(3 * 224 * 224 * sizeof(float));
    int i, m, reps = argc > 1 ? atoi(argv[1]) : 0;
    const char *mode_name[2] = {"pil", "torchvision"};

    for (i = 0; i < 64 * 3; i++) px[i] = (uint8_t)(i * 37);
    im.w = 8; im.h = 8; im.rgb = px;

    err[0] = 0;
    expect(clip_resize_bicubic_pil(&empty, 4, 4, &dst, err) == CLIP_EINPUT && err[0] && !dst.rgb,
           "resize refuses an empty image", err);
    err[0] = 0;
    expect(clip_resize_bicubic_torch(&im, 0, 5, &dst, err) == CLIP_EINPUT && err[0], "resize refuses 0x5", err);
    err[0] = 0;
    expect(clip_resize_bicubic_pil(&im, 5, -1, &dst, err) == CLIP_EINPUT && err[0], "resize refuses 5x-1", err);
    err[0] = 0;
    expect(clip_resize_bicubic_pil(&im, 100000, 100000, &dst, err) == CLIP_EINPUT && err[0],
           "resize refuses 100000x100000 (more than CLIP_MAX_PIXELS)", err);
    expect(clip_resize_bicubic_pil(&im, 4, 4, NULL, NULL) == CLIP_EINPUT, "resize refuses a NULL output, err NULL", NULL);
    expect(clip_resize_bicubic_torch(NULL, 4, 4, &dst, NULL) == CLIP_EINPUT, "resize refuses a NULL image", NULL);
    /* pixels are not read before the size checks: a 1 x 16M image on 64 pixels */
    huge.w = 1; huge.h = 1 << 24; huge.rgb = px;
    err[0] = 0;
    expect(clip_image_preprocess(&huge, &cfg, CLIP_RESIZE_PIL, out, err) == CLIP_EINPUT && err[0],
           "preprocess refuses a 1x16777216 image (long side 3.7e9)", err);
    huge.w = 1 << 14; huge.h = 1 << 14;
    err[0] = 0;
    expect(clip_image_preprocess(&huge, &cfg, CLIP_RESIZE_PIL, out, err) == CLIP_EINPUT && err[0],
           "preprocess refuses 16384x16384 (more than CLIP_MAX_PIXELS)", err);
    bad = cfg; bad.std[1] = 0.0f; err[0] = 0;
    expect(clip_image_preprocess(&im, &bad, CLIP_RESIZE_PIL, out, err) == CLIP_EINPUT && err[0], "std 0 refused", err);
    bad = cfg; bad.crop_h = 0; err[0] = 0;
    expect(clip_image_preprocess(&im, &bad, CLIP_RESIZE_PIL, out, err) == CLIP_EINPUT && err[0], "crop 0 refused", err);
    bad = cfg; bad.shortest_edge = -3; err[0] = 0;
    expect(clip_image_preprocess(&im, &bad, CLIP_RESIZE_TORCHVISION, out, err) == CLIP_EINPUT && err[0],
           "shortest edge -3 refused", err);
    err[0] = 0;
    expect(clip_image_preprocess(&im, &cfg, 7, out, err) == CLIP_EINPUT && err[0], "mode 7 refused", err);
    expect(clip_image_preprocess(&im, NULL, 0, out, NULL) == CLIP_EINPUT, "NULL config refused", NULL);
    bad = cfg; bad.do_center_crop = 0; err[0] = 0;   /* 8x8 resizes to 224x224: no crop needed */
    expect(clip_image_preprocess(&im, &bad, CLIP_RESIZE_PIL, out, err) == CLIP_OK,
           "no center crop, resized size equal to the crop size: accepted", err[0] ? err : NULL);
    bad = cfg; bad.do_center_crop = 0; bad.crop_w = 100; err[0] = 0;
    expect(clip_image_preprocess(&im, &bad, CLIP_RESIZE_PIL, out, err) == CLIP_EINPUT && err[0],
           "no center crop with a size that is not the crop size refused", err);
    /* a 1 x 20000 strip: long side 4480000, only the crop is computed */
    {
        clip_image strip;
        strip.w = 20000; strip.h = 1; strip.rgb = malloc(20000 * 3);
        for (i = 0; i < 20000 * 3; i++) strip.rgb[i] = (uint8_t)(i * 7);
        for (m = 0; m < 2; m++) {
            clock_t t0 = clock();
            int rc = clip_image_preprocess(&strip, &cfg, m, out, err);
            printf("%s 20000x1 strip preprocess %s: %.1f ms\n", rc == 0 ? "ok  " : "FAIL", mode_name[m],
                   (double)(clock() - t0) * 1000.0 / CLOCKS_PER_SEC);
            if (rc) fails++;
        }
        free(strip.rgb);
    }

    if (reps > 0) {   /* timings on a 3000x2000 image */
        clip_image big;
        big.w = 3000; big.h = 2000; big.rgb = malloc((size_t)3000 * 2000 * 3);
        for (i = 0; i < 3000 * 2000 * 3; i++) big.rgb[i] = (uint8_t)((unsigned)i * 2654435761u >> 24);
        for (m = 0; m < 2; m++) {
            clock_t t0 = clock();
            for (i = 0; i < reps; i++) clip_image_preprocess(&big, &cfg, m, out, err);
            printf("time preprocess %s %.2f ms\n", mode_name[m],
                   (double)(clock() - t0) * 1000.0 / CLOCKS_PER_SEC / reps);
        }
        for (m = 0; m < 2; m++) {
            clock_t t0 = clock();
            for (i = 0; i < reps; i++) {
                if (m == 0) clip_resize_bicubic_pil(&big, 336, 224, &dst, err);
                else clip_resize_bicubic_torch(&big, 336, 224, &dst, err);
                free(dst.rgb);
            }
            printf("time resize %s %.2f ms\n", m ? "torch" : "pil",
                   (double)(clock() - t0) * 1000.0 / CLOCKS_PER_SEC / reps);
        }
        free(big.rgb);
    }
    free(out);
    return fails ? 1 : 0;
}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100, help="random resize cases")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-bench", action="store_true")
    args = ap.parse_args()
    rep = Report()
    t_start = time.time()

    exp = os.path.join(GOLDEN, "images", "expected")
    os.makedirs(OUT, exist_ok=True)

    # -- build --------------------------------------------------------------
    drivers = {}
    builds = [("O2", ["-O2"]), ("fast", ["-O3", "-march=native", "-ffp-contract=fast"])]
    if os.environ.get("RESIZE_TEST_EXTRA_FLAGS"):   # e.g. "-m32 -O2": a third driver
        builds.append(("extra", os.environ["RESIZE_TEST_EXTRA_FLAGS"].split()))
    for name, flags in builds:
        exe, msg = build("img_driver_" + name, flags)
        rep.check(exe is not None and "warning" not in msg,
                  f"img_driver builds ({name}: {' '.join(flags)}) without warnings" + (f"\n{msg}" if msg else ""))
        if exe:
            runner = os.environ.get("RESIZE_TEST_EXTRA_RUNNER", "").split() if name == "extra" else []
            drivers[name] = runner + [exe]
    if not drivers:
        print(f"resize: {rep.passed} passed, {rep.failed} failed")
        sys.exit(1)
    for cc in ("gcc", "clang"):
        objs = os.path.join(OUT, "objs_" + cc)
        os.makedirs(objs, exist_ok=True)
        if shutil.which(cc) is None:
            rep.skip(f"compiling image.c with {cc}", cc, f"apt-get install {cc}")
            continue
        p = subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-I" + ROOT, "-c",
                            *IMAGE_SRC], capture_output=True, text=True, cwd=objs)
        rep.check(p.returncode == 0 and not p.stderr.strip(), f"{cc} compiles image.c and decode/ warning-free"
                  + (f"\n{p.stderr}" if p.stderr.strip() else ""))

    # -- 1. golden images -----------------------------------------------------
    index = json.load(open(os.path.join(exp, "index.json")))
    n_img = 0
    stats = {"pil_max": 0.0, "hf5_max": 0.0, "hf5_flips": 0, "ref_hf5_max": 0.0}
    for name, e in index.items():
        if "resized_shape" not in e:
            continue
        a, how = golden_rgb(os.path.join(GOLDEN, "images", name), e["rgb_sha256"], next(iter(drivers.values())))
        if a is None:
            rep.check(False, f"{name}: no golden RGB to resize: {how}")
            continue
        n_img += 1
        src_npy = os.path.join(OUT, "g_in.npy")
        np.save(src_npy, a)
        ppm = os.path.join(OUT, "g_in.ppm")
        write_ppm(ppm, a)
        hh, ww = e["resized_shape"][:2]
        # the reference model's torch variant reproduces the golden (byte for byte: its sha256)
        ref_hf5 = None
        if "hf5_sha256" in e:
            r = ref_preprocess(a, "torchvision")
            same = list(r.shape) == e["hf5_shape"] and sha256(r) == e["hf5_sha256"]
            ref_hf5 = r if same else None
            if not same:
                stats["ref_hf5_max"] = float("inf")
            rep.check(same, f"REF_TORCH model + transformers steps reproduce {name} .hf5.npy "
                      f"(sha256 {'equal' if same else 'DIFFERS'})")
        for dname, exe in drivers.items():
            r, msg = drv_resize(exe, src_npy, "pil", ww, hh)
            rep.check(r is not None and list(r.shape) == e["resized_shape"]
                      and hashlib.sha256(r.tobytes()).hexdigest() == e["resized_sha256"],
                      f"[{dname}] {name}: resize pil {a.shape[1]}x{a.shape[0]} -> {ww}x{hh} matches resized_sha256 {msg}")
            pv, msg = drv_preprocess(exe, ppm, "pil")
            ok = pv is not None and list(pv.shape) == e["pil_shape"]
            same = ok and sha256(pv) == e["pil_sha256"]
            if not same:
                stats["pil_max"] = float("inf")
            rep.check(same, f"[{dname}] {name}: preprocess pil identical to .pil.npy (sha256 "
                      f"{'equal' if same else 'DIFFERS'}) {msg}")
            if "hf5_sha256" in e:
                tv, msg = drv_preprocess(exe, ppm, "torchvision")
                ok = tv is not None and list(tv.shape) == e["hf5_shape"]
                note = " (hf5 of a 1x1 image: the channel axis was guessed)" if name == "cat_1x1.png" else ""
                if ok and ref_hf5 is not None:      # the golden array itself (REF_TORCH's, same bytes)
                    d = float(np.abs(tv.astype(np.float64) - ref_hf5).max())
                    flips = int((grey_levels(tv) != grey_levels(ref_hf5)).sum())
                    good = d <= 1e-6 and flips == 0
                elif ok:                            # only the sha256 to compare with: exactly
                    good = sha256(tv) == e["hf5_sha256"]
                    d, flips = (0.0, 0) if good else (float("inf"), -1)
                else:
                    good, d, flips = False, float("inf"), -1
                stats["hf5_max"] = max(stats["hf5_max"], d)
                stats["hf5_flips"] += max(flips, 0)
                rep.check(good, f"[{dname}] {name}: preprocess torchvision vs .hf5.npy: max diff {d:.3g}, "
                          f"{flips} grey-level flips{note} {msg}")
    rep.check(n_img >= 30, f"{n_img} golden images checked")
    print(f"golden: {n_img} images; pil max diff {stats['pil_max']:.3g}; torchvision max diff "
          f"{stats['hf5_max']:.3g}, {stats['hf5_flips']} flips; model vs hf5 max diff {stats['ref_hf5_max']:.3g}")

    # -- 2./3. random resizes ---------------------------------------------------
    rng = np.random.default_rng(args.seed)
    counts = {k: [0, 0, 0] for k in ("pil", "torch", "model")}   # cases, mismatching cases, max |diff|
    src_npy = os.path.join(OUT, "rand_in.npy")
    for i in range(args.n):
        h, w, tw, th = random_case(rng, i)
        a = random_image(rng, h, w)
        np.save(src_npy, a)
        want_pil = pillow_resize(a, tw, th)
        want_torch = ref_resize(a, tw, th, "torch")
        model_pil = ref_resize(a, tw, th, "pil")
        desc = f"case {i}: {w}x{h} -> {tw}x{th}"
        md = int(np.abs(model_pil.astype(int) - want_pil).max())
        counts["model"][0] += 1
        counts["model"][1] += md != 0
        counts["model"][2] = max(counts["model"][2], md)
        rep.check(md == 0, f"model (pil variant) == Pillow, {desc}", quiet=True)
        for dname, exe in drivers.items():
            for mode, want in (("pil", want_pil), ("torch", want_torch)):
                got, msg = drv_resize(exe, src_npy, mode, tw, th)
                ok = got is not None and got.shape == want.shape
                d = int(np.abs(got.astype(int) - want).max()) if ok else 999
                counts[mode][0] += 1
                counts[mode][1] += d != 0
                counts[mode][2] = max(counts[mode][2], d)
                rep.check(d == 0, f"[{dname}] resize {mode} {desc}: max diff {d} {msg}", quiet=True)
    for k, label in (("pil", "C resize pil vs Pillow"), ("torch", "C resize torch vs REF_TORCH"),
                     ("model", "REF model (pil variant) vs Pillow")):
        c = counts[k]
        rep.check(c[1] == 0, f"{label}: {c[0]} random cases, {c[1]} mismatching, max diff {c[2]}")

    # -- 4. random preprocess sizes (padding included) ---------------------------
    pcount = [0, 0, 0.0]
    ppm = os.path.join(OUT, "rand_in.ppm")
    n_pre = max(4, args.n // 4)
    for i in range(n_pre):
        h, w = int(rng.integers(1, 260)), int(rng.integers(1, 260))
        shortest = int(rng.integers(1, 120))
        crop = int(rng.integers(1, 160)) if i % 2 else shortest + int(rng.integers(0, 3))
        a = random_image(rng, h, w)
        write_ppm(ppm, a)
        for mode in ("pil", "torchvision"):
            want = ref_preprocess(a, mode, shortest, crop)
            for dname, exe in drivers.items():
                got, msg = drv_preprocess(exe, ppm, mode, (shortest, crop))
                ok = got is not None and got.shape == want.shape
                d = float(np.abs(got.astype(np.float64) - want).max()) if ok else float("inf")
                pcount[0] += 1
                pcount[1] += d != 0
                pcount[2] = max(pcount[2], d)
                rep.check(d == 0, f"[{dname}] preprocess {mode} {w}x{h} shortest {shortest} crop {crop}: "
                          f"max diff {d:.3g} {msg}", quiet=True)
    rep.check(pcount[1] == 0, f"preprocess with random shortest/crop sizes vs transformers' steps: {pcount[0]} runs, "
              f"{pcount[1]} mismatching, max diff {pcount[2]:.3g}")

    # -- 5. API checks and timings --------------------------------------------------
    api_c = os.path.join(OUT, "resize_api.c")
    api = os.path.join(OUT, "resize_api")
    with open(api_c, "w") as f:
        f.write(API_C)
    p = subprocess.run([CC, "-std=c99", "-O2", "-I" + ROOT, api_c, *IMAGE_SRC,
                        "-lm", "-o", api], capture_output=True, text=True)
    if rep.check(p.returncode == 0, "API test program builds" + (f"\n{p.stderr}" if p.returncode else "")):
        reps = 0 if args.skip_bench else 5
        p = subprocess.run([api, str(reps)], capture_output=True, text=True)
        times = {}
        for line in p.stdout.splitlines():
            if line.startswith("time "):
                parts = line.split()
                times[parts[1] + " " + parts[2]] = float(parts[3])
            else:
                rep.check(line.startswith("ok"), "API: " + line[5:])
        rep.check(p.returncode == 0, "API program exits 0" + (f" ({p.stderr.strip()})" if p.stderr.strip() else ""))
        if times:
            big = np.frombuffer(((np.arange(3000 * 2000 * 3, dtype=np.uint64) * 2654435761) >> 24 & 255)
                                .astype(np.uint8).tobytes(), np.uint8).reshape(2000, 3000, 3)
            im = Image.fromarray(big)
            t0 = time.process_time()    # CPU time, as clock() in the C program
            for _ in range(reps):
                im.resize((336, 224), Image.BICUBIC, reducing_gap=None)
            t_pil = (time.process_time() - t0) * 1000 / reps
            print(f"timing (CPU time), 3000x2000 -> 336x224 (crop 224), mean of {reps}: "
                  f"C preprocess pil {times['preprocess pil']:.1f} ms, torchvision {times['preprocess torchvision']:.1f} ms; "
                  f"C full resize pil {times['resize pil']:.1f} ms, torch {times['resize torch']:.1f} ms; "
                  f"Pillow {Image.__version__} resize {t_pil:.1f} ms")

    print(f"({time.time() - t_start:.1f} s)")
    rep.finish()


if __name__ == "__main__":
    main()
