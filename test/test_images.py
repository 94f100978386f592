#!/usr/bin/python3
"""test_images.py - golden and differential tests for the image code
(image.c and decode/) through test/img_driver.

    /usr/bin/python3 test/test_images.py [--corpus N] [--seed S] [--broken N] [--big]
                                         [--target native|m32|wasm] [--no-asan] [--keep] [-v]

The default run (40 corpus files, 100 damaged ones) takes well under a
minute; --corpus 300 --broken 2000 --big is the long one. --target m32
builds with gcc -m32 (32-bit size_t; run through qemu-i386 where needed),
--target wasm with emcc (run by node).

Sections (each reports its own pass/fail counts):
  golden decode      every golden image: sha256 of the RGB vs index.json,
                     bad files refused with exit 1 and no output
  golden resize      Pillow bicubic resize of each golden image vs resized_sha256
  golden pil         `preprocess pil` vs NAME.pil.npy: the sha256 of its bytes
  golden hf5         `preprocess torchvision` vs NAME.hf5.npy: the sha256 of its
                     bytes (transformers 5's values, exactly)
  encode             clip_png_encode output read back by Pillow and by the driver
  broken (asan)      cut / bit-flipped / damaged files through an ASan+UBSan
                     build: never a crash; PNG, BMP and PPM must also accept,
                     refuse and decode exactly as Pillow does
  hostile (asan)     oversized headers, zlib bombs, too much text, huge
                     chunk lengths: refused (or decoded) as Pillow does,
                     quickly; images over CLIP_MAX_PIXELS are refused
  differential       a seeded corpus (gen_png_corpus.py) decoded by Pillow and
                     by the driver; Pillow's resize and a numpy model of the
                     CLIP pipeline for `resize pil` and `preprocess pil`

The golden sections need only the standard library (the goldens are test/golden's,
extracted by test/common.py); the others need NumPy and Pillow, and are skipped
without them (exit 77). Drivers
are built into test/out/ (rebuilt when a source changes), generated files go
to test/out/run-* (removed afterwards unless --keep). Pillow (Debian's 9.4 in
/usr/bin/python3) is the oracle: no expected value comes from the C code.
The last line is `images: N passed, M failed`; the exit status is 1 when M > 0.
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
RUN = None  # this run's scratch folder under OUT, so that runs can overlap
sys.path.insert(0, HERE)
from common import GOLDEN, SKIP, install_hint, make_var, parse_npy  # noqa: E402

try:    # the Pillow differential sections: optional
    import numpy as np
    from PIL import Image
    import gen_png_corpus as gen
except ImportError as e:
    np = Image = gen = None
    MISSING = "NumPy" if e.name == "numpy" else "Pillow"

CLIP_MAX_PIXELS = 8192 * 8192
SOURCES = [os.path.join(REPO, "test", "img_driver.c")] + make_var("IMAGE_SRC")
if np is not None:
    MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
    STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
    Image.MAX_IMAGE_PIXELS = None
warnings.simplefilter("ignore")


class Section:
    def __init__(self, name):
        self.name, self.passed, self.failed, self.notes, self.t0 = name, 0, 0, [], time.time()

    def ok(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            if len(self.notes) < 12:
                self.notes.append(what)
            elif len(self.notes) == 12:
                self.notes.append("... (more failures not shown)")
        return cond

    def report(self):
        for n in self.notes:
            print("    FAIL %s" % n)
        print("section %-22s %4d passed, %4d failed  (%.1f s)" % (self.name + ":", self.passed, self.failed,
                                                                 time.time() - self.t0))
        sys.stdout.flush()


def build(asan, target="native"):
    """Compile the driver (again only when a source is newer than it) and
    return the command that runs it. target: native, m32 (gcc -m32, run
    through qemu-i386 when the kernel cannot) or wasm (emcc, run by node)."""
    os.makedirs(OUT, exist_ok=True)
    exe = os.path.join(OUT, "img_driver" + ("_asan" if asan else "") + ("" if target == "native" else "_" + target))
    cc = os.environ.get("CC", "cc")
    flags = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-I" + REPO]
    if asan:
        flags += ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                  "-fno-sanitize-recover=undefined"]
    else:
        flags += ["-O2"]
    if target == "m32":
        flags += ["-m32"]
    if target == "wasm":
        cc, exe = "emcc", exe + ".js"
        flags = [f for f in flags if f != "-O2"] + ["-O1", "-sNODERAWFS=1", "-sALLOW_MEMORY_GROWTH=1",
                                                  "-sMAXIMUM_MEMORY=2GB", "-sENVIRONMENT=node"]
    srcs = SOURCES + make_var("HEADERS")
    stamp = exe + ".cmd"
    cmd = ["nice", cc] + flags + SOURCES + ["-lm", "-o", exe]
    fresh = (os.path.exists(exe) and os.path.exists(stamp) and open(stamp).read() == " ".join(cmd)
             and all(os.path.getmtime(s) < os.path.getmtime(exe) for s in srcs))
    if not fresh:
        tmp = os.path.join(RUN, os.path.basename(exe))
        r = subprocess.run(cmd[:-1] + [tmp], capture_output=True, text=True)
        if r.returncode:
            print(r.stderr)
            sys.exit("test_images: cannot build %s" % exe)
        if target == "wasm":
            os.replace(tmp[:-3] + ".wasm", exe[:-3] + ".wasm")
            with open(tmp) as f:
                js = f.read().replace(os.path.basename(tmp)[:-3] + ".wasm", os.path.basename(exe)[:-3] + ".wasm")
            with open(tmp, "w") as f:
                f.write(js)
        os.replace(tmp, exe)
        with open(stamp, "w") as f:
            f.write(" ".join(cmd))
    if target == "wasm":
        return ["node", "--no-experimental-fetch", exe]
    if target == "m32":
        try:
            subprocess.run([exe], capture_output=True)
        except OSError:
            return ["qemu-i386", exe]
    return [exe]


class Driver:
    def __init__(self, cmd, stdlib=False):
        """stdlib: return arrays as common.Array (no NumPy) instead of numpy arrays."""
        self.cmd, self.stdlib = cmd, stdlib
        self.times = {}
        self.env = dict(os.environ, ASAN_OPTIONS="exitcode=86:detect_leaks=1:allocator_may_return_null=1",
                        UBSAN_OPTIONS="halt_on_error=1:exitcode=87:print_stacktrace=1")

    def run(self, args, out):
        """Run the driver; returns (status, array or None, stderr). status is
        'ok', 'refused' or 'crash: ...'. self.seconds: how long it ran."""
        if os.path.exists(out):
            os.remove(out)
        t = time.time()
        try:
            r = subprocess.run(self.cmd + args + [out], capture_output=True, text=True, timeout=300,
                               env=self.env)
        except subprocess.TimeoutExpired:
            return "crash: timeout", None, ""
        finally:
            self.seconds = time.time() - t
            self.times[out] = self.seconds
        if r.returncode == 0:
            if not os.path.exists(out):
                return "crash: exit 0 without an output file", None, r.stderr
            if out.endswith(".npy"):
                if self.stdlib:
                    with open(out, "rb") as f:
                        return "ok", parse_npy(f.read(), out), r.stderr
                return "ok", np.load(out), r.stderr
            return "ok", None, r.stderr
        if r.returncode == 1 and r.stderr.startswith("img_driver: error: ") and r.stderr.count("\n") == 1:
            if os.path.exists(out):
                return "crash: refused but wrote an output file", None, r.stderr
            return "refused", None, r.stderr
        return "crash: exit %d" % r.returncode, None, r.stderr[-2000:]


def sha(a):
    """sha256 of an array's bytes in C order (a common.Array or a numpy array)."""
    return hashlib.sha256(a.tobytes() if np is None or not isinstance(a, np.ndarray)
                          else np.ascontiguousarray(a).tobytes()).hexdigest()


def pil_decode(path):
    """Pillow's answer: (RGB array, None) or (None, reason). Images over
    CLIP_MAX_PIXELS are refused by design."""
    try:
        with Image.open(path) as im:
            if im.size[0] * im.size[1] > CLIP_MAX_PIXELS:
                return None, "over CLIP_MAX_PIXELS"
            return np.asarray(im.convert("RGB")), None
    except Exception as e:  # what Pillow raises is the reference's refusal
        return None, "%s: %s" % (type(e).__name__, e)


def clip_resize_size(w, h, shortest):
    """transformers' get_resize_output_image_size for shortest_edge."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = shortest, int(shortest * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def ref_preprocess_pil(rgb, shortest=224, crop=224):
    """SPEC 3, `pil`: Pillow bicubic shortest-edge resize, center crop,
    x = float32(u8 * (1/255.0)) in double, then (x - mean) / std in float32."""
    h, w = rgb.shape[:2]
    nw, nh = clip_resize_size(w, h, shortest)
    im = Image.fromarray(rgb, "RGB")
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BICUBIC, reducing_gap=None)
    a = np.asarray(im)
    top, left = (nh - crop) // 2, (nw - crop) // 2
    a = a[top:top + crop, left:left + crop]
    x = (a.astype(np.float64) * (1 / 255.0)).astype(np.float32)
    x = (x - MEAN) / STD
    return x.transpose(2, 0, 1)[None].astype(np.float32)


# --------------------------------------------------------------------------

def golden_sections(drv, gdir, verbose):
    """Standard library only: the expected values are sha256 of Hugging Face's arrays."""
    idx = json.load(open(os.path.join(gdir, "images", "expected", "index.json")))
    out = os.path.join(RUN, "golden.npy")
    dec, res, pil, hf5 = Section("golden decode"), Section("golden resize"), Section("golden pil"), Section("golden hf5")
    for name in sorted(idx):
        e = idx[name]
        path = os.path.join(gdir, "images", name)
        stem = name.replace(".", "_")
        st, a, err = drv.run(["decode", path], out)
        if "error" in e:
            dec.ok(st == "refused", "%s: Pillow refuses (%s) but driver gave %s" % (name, e["error"][:60], st))
            continue
        if not dec.ok(st == "ok", "%s: %s %s" % (name, st, err.strip()[-200:])):
            continue
        good = sha(a) == e["rgb_sha256"]
        want_shape = (e["size"][1], e["size"][0], 3)
        detail = "shape %s, expected %s" % (a.shape, want_shape) if tuple(a.shape) != want_shape else ""
        dec.ok(good, "%s: decoded pixels differ from rgb_sha256 %s" % (name, detail))
        if verbose:
            print("    %s %s %s" % ("ok  " if good else "FAIL", name, e["mode"]))

        # the bicubic resize before the crop, from the golden image itself
        if "resized_shape" in e:
            rh, rw = e["resized_shape"][:2]
            st, r, err = drv.run(["resize", "pil", path, str(rw), str(rh)], out)
            res.ok(st == "ok" and sha(r) == e["resized_sha256"],
                   "%s: resize pil to %dx%d: %s %s" % (name, rw, rh, st, err.strip()[-120:]))

        for mode, sec, key in (("pil", pil, "pil"), ("torchvision", hf5, "hf5")):
            if key + "_sha256" not in e:
                continue
            if mode == "torchvision" and name == "cat_1x1.png":
                continue  # transformers 5 guesses the channel axis of a 1x1 image (golden README)
            st, x, err = drv.run(["preprocess", mode, path], out)
            if not sec.ok(st == "ok", "%s: preprocess %s: %s %s" % (name, mode, st, err.strip()[-150:])):
                continue
            if list(x.shape) != e[key + "_shape"]:
                sec.ok(False, "%s: preprocess %s shape %s, expected %s" % (name, mode, x.shape, e[key + "_shape"]))
                continue
            sec.ok(sha(x) == e[key + "_sha256"], "%s: preprocess %s: the float32 values differ from %s.%s.npy's "
                   "(sha256)" % (name, mode, stem, key))
    return [dec, res, pil, hf5]


def encode_section(drv, sources):
    sec = Section("encode")
    out_png = os.path.join(RUN, "encoded.png")
    out = os.path.join(RUN, "encoded.npy")
    for path in sources:
        ref, why = pil_decode(path)
        if ref is None:
            continue
        st, _, err = drv.run(["encode", path], out_png)
        if not sec.ok(st == "ok", "encode %s: %s %s" % (os.path.basename(path), st, err.strip()[-150:])):
            continue
        back, why = pil_decode(out_png)
        sec.ok(back is not None and back.shape == ref.shape and (back == ref).all(),
               "encode %s: Pillow reads back %s" % (os.path.basename(path), why or "different pixels"))
        st, a, err = drv.run(["decode", out_png], out)
        sec.ok(st == "ok" and a.shape == ref.shape and (a == ref).all(),
               "encode %s: driver reads back %s" % (os.path.basename(path), st))
    return [sec]


def decode_all(drv, paths):
    """The driver's decode of each file, a few at a time (they mostly wait)."""
    def one(path):
        out = path + ".npy"
        res = drv.run(["decode", path], out)
        return res + (drv.times.get(out, 0.0),)
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, paths))


def compare_decode(sec, got, path, desc, strict, stats):
    """Check one driver result (from decode_all) against Pillow."""
    ref, why = pil_decode(path)
    st, a, err = got[:3]
    if st.startswith("crash"):
        sec.ok(False, "%s (%s): %s %s" % (os.path.basename(path), desc, st, err.strip()[-300:]))
        return
    if ref is None:
        stats["both refuse" if st == "refused" else "only we accept"] += 1
        sec.ok(st == "refused" or not strict, "%s (%s): Pillow refuses (%s) but the driver decodes it"
               % (os.path.basename(path), desc, why[:80]))
        return
    if st == "refused":
        stats["only Pillow accepts"] += 1
        sec.ok(not strict, "%s (%s): Pillow decodes it but the driver refuses: %s"
               % (os.path.basename(path), desc, err.strip()[-120:]))
        return
    same = a.shape == ref.shape and (a == ref).all()
    stats["same pixels" if same else "different pixels"] += 1
    detail = "shape %s vs %s" % (a.shape, ref.shape) if a.shape != ref.shape else \
        "%d values differ, max %d" % ((a != ref).sum(), np.abs(a.astype(int) - ref).max())
    sec.ok(same or not strict, "%s (%s): %s" % (os.path.basename(path), desc, detail))


def kind_of(path):
    ext = os.path.splitext(path)[1].lower()
    return {".png": "png", ".bmp": "bmp", ".ppm": "ppm", ".pgm": "ppm", ".pbm": "ppm", ".jpg": "jpeg",
            ".jpeg": "jpeg"}.get(ext, "other")


def broken_sections(drv_asan, sources, n, seed):
    files = gen.broken(sources, n, seed, os.path.join(RUN, "broken"))
    results = decode_all(drv_asan, [p for p, _ in files])
    secs, stats = {}, {}
    for (path, desc), got in zip(files, results):
        k = kind_of(path)
        key = "broken jpeg (no crash)" if k == "jpeg" else "broken png/bmp/ppm"
        if key not in secs:
            secs[key] = Section(key)
            stats[key] = dict.fromkeys(["both refuse", "only we accept", "only Pillow accepts", "same pixels",
                                        "different pixels"], 0)
        compare_decode(secs[key], got, path, desc, k != "jpeg", stats[key])
    for key in secs:
        print("    %s vs Pillow: %s" % (key, ", ".join("%s %d" % kv for kv in stats[key].items())))
    return list(secs.values())


def hostile_section(drv_asan):
    sec = Section("hostile")
    stats = dict.fromkeys(["both refuse", "only we accept", "only Pillow accepts", "same pixels",
                           "different pixels"], 0)
    files = gen.hostile(os.path.join(RUN, "hostile"))
    for (path, desc), got in zip(files, decode_all(drv_asan, [p for p, _ in files])):
        compare_decode(sec, got, path, desc, True, stats)
        sec.ok(got[3] < 20, "%s (%s): the driver took %.1f s" % (os.path.basename(path), desc, got[3]))
        if os.path.exists(path + ".npy"):
            os.remove(path + ".npy")
    print("    hostile vs Pillow: %s" % ", ".join("%s %d" % kv for kv in stats.items()))
    return [sec]


def differential_sections(drv, n, seed, big):
    files = gen.corpus(n, seed, os.path.join(RUN, "corpus"), big=big)
    out = os.path.join(RUN, "diff.npy")
    results = decode_all(drv, [p for p, _ in files])
    secs, stats = {}, {}
    for (path, desc), got in zip(files, results):
        key = "differential " + kind_of(path)
        if key not in secs:
            secs[key] = Section(key)
            stats[key] = dict.fromkeys(["both refuse", "only we accept", "only Pillow accepts", "same pixels",
                                        "different pixels"], 0)
        compare_decode(secs[key], got, path, desc, True, stats[key])
        if os.path.exists(path + ".npy"):
            os.remove(path + ".npy")
    result = [secs[k] for k in sorted(secs)]

    # Pillow's bicubic resize (reducing_gap=None) on random sizes, both ways
    rng = np.random.default_rng(seed + 1)
    rs = Section("differential resize pil")
    src = os.path.join(RUN, "resize_src.npy")
    for i in range(max(4, n // 3)):
        h, w = int(rng.integers(1, 300)), int(rng.integers(1, 300))
        th, tw = int(rng.integers(1, 400)), int(rng.integers(1, 400))
        a = gen.smooth_field(h, w, 3, rng, 255).astype(np.uint8)
        np.save(src, a)
        ref = np.asarray(Image.fromarray(a, "RGB").resize((tw, th), Image.BICUBIC, reducing_gap=None))
        st, r, err = drv.run(["resize", "pil", src, str(tw), str(th)], out)
        rs.ok(st == "ok" and r.shape == ref.shape and (r == ref).all(),
              "resize pil %dx%d -> %dx%d: %s %s" % (w, h, tw, th, st,
                                                   err.strip()[-100:] if st != "ok" else
                                                   "%d values differ" % (r != ref).sum() if r.shape == ref.shape
                                                   else "shape %s" % (r.shape,)))
    result.append(rs)

    # the whole `pil` pipeline against its model in ref_preprocess_pil
    ps = Section("differential preprocess pil")
    for path, desc in files[:max(4, n // 3)]:
        rgb, why = pil_decode(path)
        if rgb is None:
            continue
        ref = ref_preprocess_pil(rgb)
        st, x, err = drv.run(["preprocess", "pil", path], out)
        ps.ok(st == "ok" and x.shape == ref.shape and (x == ref).all(),
              "preprocess pil %s (%s): %s %s" % (os.path.basename(path), desc, st,
                                                 err.strip()[-100:] if st != "ok" else ""))
    result.append(ps)
    return result, [p for p, _ in files]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=int, default=40, help="differential corpus size (default 40)")
    ap.add_argument("--seed", type=int, default=1, help="corpus and mutation seed (default 1)")
    ap.add_argument("--broken", type=int, default=100, help="number of damaged files (default 100)")
    ap.add_argument("--big", action="store_true", help="allow corpus images up to 3000x2000")
    ap.add_argument("--no-asan", action="store_true", help="run the broken files without sanitizers")
    ap.add_argument("--target", choices=["native", "m32", "wasm"], default="native",
                    help="m32: gcc -m32 (qemu-i386 if needed); wasm: emcc + node (both without sanitizers)")
    ap.add_argument("--keep", action="store_true", help="keep this run's files (test/out/run-*)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    gdir = GOLDEN
    t0 = time.time()
    global RUN
    os.makedirs(OUT, exist_ok=True)
    RUN = tempfile.mkdtemp(prefix="run-", dir=OUT)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        plain = pool.submit(build, False, args.target)
        asan = None if args.no_asan or args.target != "native" or np is None else pool.submit(build, True)
        exe = plain.result()
        exe_asan = asan.result() if asan else exe
    drv, drv_asan = Driver(exe), Driver(exe_asan)
    print("built drivers (%.1f s)" % (time.time() - t0))

    sections = golden_sections(Driver(exe, stdlib=True), gdir, args.verbose)
    for s in sections:
        s.report()
    if np is None:
        passed = sum(s.passed for s in sections)
        failed = sum(s.failed for s in sections)
        shutil.rmtree(RUN, ignore_errors=True)
        print("skipped: the differential, encode, broken and hostile sections: needs %s (install: %s)"
              % (MISSING, install_hint(MISSING)))
        print("images: %d passed, %d failed, skipped: the Pillow sections need %s" % (passed, failed, MISSING))
        sys.exit(1 if failed else SKIP)
    golden_files = sorted(os.path.join(gdir, "images", f) for f in os.listdir(os.path.join(gdir, "images"))
                          if not f.startswith(("bad_", "truncated")) and os.path.isfile(os.path.join(gdir, "images", f)))
    diff, corpus_files = differential_sections(drv, args.corpus, args.seed, args.big)
    for s in diff:
        s.report()
    enc = encode_section(drv, [p for p in golden_files if p.endswith((".png", ".bmp", ".ppm"))][:6] +
                         [p for p in corpus_files if not p.endswith(".jpg")][:10])
    for s in enc:
        s.report()
    small = [p for p in golden_files + corpus_files if os.path.getsize(p) < 400000]
    brk = broken_sections(drv_asan, small, args.broken, args.seed) + hostile_section(drv_asan)
    for s in brk:
        s.report()
    sections += diff + enc + brk
    passed = sum(s.passed for s in sections)
    failed = sum(s.failed for s in sections)
    print("time %.1f s" % (time.time() - t0))
    if args.keep:
        print("files kept in %s" % RUN)
    else:
        shutil.rmtree(RUN, ignore_errors=True)
    print("images: %d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
