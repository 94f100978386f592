#!/usr/bin/env python3
"""test_same_bits: the reference build gives the same bits on every machine (README, "The same bits
everywhere").

`make REFERENCE=1` is built for five targets, each from its own copy of the sources under
test/out/same_bits/TARGET/src (so the repository's own ./clip is left alone):

    x86-64-gcc    gcc, OpenMP, run with 2 threads          (the yardstick the others are compared with)
    x86-64-clang  clang, one thread
    i386          gcc -m32 (make adds -msse2 -mfpmath=sse), run natively or under qemu-i386
    aarch64       clang --target=aarch64-linux-gnu, run under qemu-aarch64 -L /usr/aarch64-linux-gnu
    wasm          emcc's build/wasm/clip.js (the clip command itself), run under node

Every target runs the same commands on every golden model (and, when convert.py offers --dtype, on
tiny-b32 converted to each dtype it lists):

    embed --raw of six golden images (both --resize modes) and of four texts, embed (L2-normalized),
    match --json (logits and probabilities as printed), and --dump of one image and one text
    (every stage, pixel_values to the projections, and the projection)

and on the full-size synthetic ViT-B/32 the two --dump runs: on the targets that run natively;
under an emulator (qemu, node: minutes per image) the text's only, both with CLIP_SAME_BITS_FULL=1,

and the sha256 of each output file must equal x86-64-gcc's, byte for byte. A target whose tool is
missing is skipped (`skipped: needs X (install: ...)`, exit 77 once the rest passed).
"""
import hashlib
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import OUT, ROOT, Report, golden_file, golden_model, run  # noqa: E402

R = Report("same_bits")
WORK = os.path.join(OUT, "same_bits")
MODELS = ["tiny-b32", "tiny-b16-gelu", "tiny-l14-336", "tiny-b32-fp16", "tiny-b32-pytorch-bin"]
IMAGES = ["chelsea.png", "astronaut.png", "cat_cifarlike_32.png", "cat_q90_420.jpg", "camera.png",
          "cat_wide_2000x20.png"]
TEXTS = ["a photo of a cat", "a photo of a dog", "一张彩色的猫图片", "a diagram, with commas; and 123 digits!"]
AARCH64_ROOT = "/usr/aarch64-linux-gnu"
CROSS = "apt-get install clang libc6-dev-arm64-cross libgcc-12-dev-arm64-cross binutils-aarch64-linux-gnu"


def sh_ok(cmd, **kw):
    try:
        return subprocess.run(cmd, capture_output=True, timeout=120, **kw).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def copy_sources(dst):
    """The sources a build needs, copied into dst (everything but tests, builds and the git folder)."""
    if os.path.exists(dst):
        shutil.rmtree(dst)
    skip = {"test", ".git", "build", "models", "clip", "libclip.a", "libclip.so", ".ci"}
    shutil.copytree(ROOT, dst, ignore=lambda d, names: [n for n in names if d == ROOT and n in skip])


# ---------------------------------------------------------------------------
# The targets: how to build each and how to run what it built
# ---------------------------------------------------------------------------

def probe_c(cc, name):
    """Does `cc` (a list) compile and link a C program? Returns the executable or None."""
    src = os.path.join(WORK, name + ".c")
    exe = os.path.join(WORK, name + ".probe")
    with open(src, "w") as f:
        f.write("#include <math.h>\n#include <stdio.h>\nint main(void) { printf(\"%g\\n\", sqrt(2.0)); return 0; }\n")
    return exe if sh_ok(cc + [src, "-o", exe, "-lm"]) else None


def targets():
    """[(name, make arguments, make goal, built file, runner prefix)], skipping what this
    machine lacks (said through R.skip)."""
    out = []
    if shutil.which("gcc"):
        out.append(("x86-64-gcc", ["CC=gcc"], "clip", "clip", []))
    else:
        R.skip("x86-64 gcc", "gcc", "apt-get install gcc")
    if shutil.which("clang"):
        out.append(("x86-64-clang", ["CC=clang", "OPENMP="], "clip", "clip", []))
    else:
        R.skip("x86-64 clang", "clang", "apt-get install clang")

    probe = probe_c(["gcc", "-m32"], "i386") if shutil.which("gcc") else None
    if not probe:
        R.skip("i386", "gcc -m32", "apt-get install gcc-multilib")
    elif sh_ok([probe]):
        out.append(("i386", ["CC=gcc -m32", "OPENMP="], "clip", "clip", []))
    elif shutil.which("qemu-i386") and sh_ok(["qemu-i386", probe]):
        out.append(("i386", ["CC=gcc -m32", "OPENMP="], "clip", "clip", ["qemu-i386"]))
    else:
        R.skip("i386", "an i386 kernel or qemu-i386", "apt-get install qemu-user")

    cc = ["clang", "--target=aarch64-linux-gnu"]
    probe = probe_c(cc, "aarch64") if shutil.which("clang") else None
    if not probe:
        R.skip("aarch64", "clang --target=aarch64-linux-gnu with the arm64 C library", CROSS)
    elif not shutil.which("qemu-aarch64"):
        R.skip("aarch64", "qemu-aarch64", "apt-get install qemu-user")
    else:
        out.append(("aarch64", ["CC=clang --target=aarch64-linux-gnu", "OPENMP="], "clip", "clip",
                    ["qemu-aarch64", "-L", AARCH64_ROOT]))

    if not shutil.which("emcc"):
        R.skip("wasm", "emcc")
    elif not shutil.which("node"):
        R.skip("wasm", "node")
    else:
        out.append(("wasm", [], "build/wasm/clip.js", "build/wasm/clip.js", ["node", "--no-experimental-fetch"]))
    return out


def build(name, make_args, goal):
    src = os.path.join(WORK, name, "src")
    copy_sources(src)
    env = dict(os.environ, NODE_PATH=os.environ.get("NODE_PATH", "/usr/share/nodejs"))
    t = time.time()
    p = subprocess.run(["make", "-s", "-C", src, "REFERENCE=1", *make_args, goal], capture_output=True, env=env)
    ok = R.check(p.returncode == 0, f"{name}: make REFERENCE=1 {' '.join(make_args)} {goal}".rstrip())
    if not ok:
        print(p.stdout.decode(errors="replace")[-2000:], p.stderr.decode(errors="replace")[-2000:])
    return src, ok, time.time() - t


# ---------------------------------------------------------------------------
# What every target runs
# ---------------------------------------------------------------------------

def commands(model, images, texts, which):
    """[(output name, arguments, True when the output is stdout)] for the names in `which` (None:
    all); outputs are relative paths. dump_* also write the projection (-o DIR.npy)."""
    img_args = [a for i in images for a in ("--image", i)]
    txt_args = [a for t in texts for a in ("--text", t)]
    match_args = ["-i", images[0]] + [a for t in texts for a in ("-t", t)]
    cmds = [
        ("embed_raw_images_pil.npy", ["embed", "-m", model, "--raw", "--resize", "pil", *img_args], False),
        ("embed_raw_images_torchvision.npy", ["embed", "-m", model, "--raw", "--resize", "torchvision", *img_args], False),
        ("embed_raw_texts.npy", ["embed", "-m", model, "--raw", *txt_args], False),
        ("embed_normalized.npy", ["embed", "-m", model, *txt_args, *img_args], False),
        ("match.json", ["match", "-m", model, "--json", *match_args], True),
        ("dump_image", ["embed", "-m", model, "--raw", "--image", images[0], "--dump"], False),
        ("dump_text", ["embed", "-m", model, "--raw", "--text", texts[0], "--dump"], False),
    ]
    return [c for c in cmds if which is None or c[0] in which]


def run_target(name, runner, exe, cases):
    """Run every case; return {(case, output file): sha256} and the seconds it took."""
    hashes = {}
    t0 = time.time()
    env = dict(os.environ, OMP_NUM_THREADS="2")
    for case, model, images, texts, which in cases:
        out = os.path.join(WORK, name, "out", case)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.makedirs(out)
        for outname, args, stdout in commands(model, images, texts, which):
            path = os.path.join(out, outname)
            if outname.startswith("dump_"):
                args = args + [path, "-o", path + ".npy"]
            elif not stdout:
                args = args + ["-o", path]
            p = subprocess.run(runner + [exe, *args], capture_output=True, env=env)
            if p.returncode != 0:
                R.check(False, f"{name}: clip {' '.join(args[:1])} on {case} exited {p.returncode}: "
                               f"{p.stderr.decode(errors='replace').strip()[-300:]}")
                continue
            if stdout:
                with open(path, "wb") as f:
                    f.write(p.stdout)
            files = [path] if os.path.isfile(path) else [path + ".npy"] + sorted(
                os.path.join(dp, f) for dp, _, fs in os.walk(path) for f in fs)
            for f in files:
                with open(f, "rb") as fh:
                    hashes[(case, os.path.relpath(f, out))] = hashlib.sha256(fh.read()).hexdigest()
    return hashes, time.time() - t0


def dtypes():
    """The dtypes convert.py offers beyond float32 (its --help lists --dtype with them)."""
    p = run([sys.executable, os.path.join(ROOT, "convert.py"), "--help"], ok=False)
    text = p.stdout.decode(errors="replace")
    if "--dtype" not in text:
        return []
    return [d for d in ("f16", "q8") if d in text.split("--dtype", 1)[1][:400]]


def cases_of():
    images = [golden_file("images/" + i) for i in IMAGES]
    small = [(m, golden_model(m), images, TEXTS, None) for m in MODELS]
    for d in dtypes():
        path = os.path.join(OUT, f"tiny-b32.{d}.bin")
        run([sys.executable, os.path.join(ROOT, "convert.py"), golden_file("models/tiny-b32"), "--dtype", d,
             "-o", path])
        small.append((f"tiny-b32-{d}", path, images, TEXTS, None))
    full = os.path.join(OUT, "synthetic-b32.bin")      # the file test_fullsize makes, made here if absent
    if not os.path.exists(full):
        run([sys.executable, os.path.join(ROOT, "convert.py"), "--synthetic", "ViT-B/32", "-o", full])
    # the full-size model: both towers' every stage on the native targets; under an emulator
    # (minutes per image) the text tower only, unless CLIP_SAME_BITS_FULL=1
    both = ("synthetic-ViT-B-32", full, images[:1], TEXTS[:1], ("dump_image", "dump_text"))
    text = ("synthetic-ViT-B-32", full, images[:1], TEXTS[:1], ("dump_text",))
    return small, [both], [both if os.environ.get("CLIP_SAME_BITS_FULL") == "1" else text]


def compare(name, hashes, ref, cases):
    """Per case and output this target ran: every file of the yardstick's has the same sha256 here."""
    for case, model, images, texts, which in cases:
        ran = {c[0] for c in commands(model, images, texts, which)}
        ran |= {k + ".npy" for k in ran if k.startswith("dump_")}
        kinds = sorted({k[1].split(os.sep)[0] for k in ref if k[0] == case} & ran)
        R.check(len(kinds) == len(ran), f"{name}: {case}: the yardstick has all {len(ran)} outputs", quiet=True)
        for kind in kinds:
            mine = {k: v for k, v in hashes.items() if k[0] == case and k[1].split(os.sep)[0] == kind}
            theirs = {k: v for k, v in ref.items() if k[0] == case and k[1].split(os.sep)[0] == kind}
            same = mine == theirs
            detail = f"{len(theirs)} file{'s' if len(theirs) > 1 else ''}"
            if not same:
                diff = sorted(k[1] for k in theirs if mine.get(k) != theirs[k])
                detail += f"; differ: {', '.join(diff[:6])}{' ...' if len(diff) > 6 else ''}"
            R.check(same, f"{name} == x86-64-gcc: {case} {kind} ({detail})")


def main():
    os.makedirs(WORK, exist_ok=True)
    small, full_native, full_emulated = cases_of()
    ref = None
    for name, make_args, goal, built, runner in targets():
        src, ok, build_s = build(name, make_args, goal)
        if not ok:
            continue
        exe = os.path.join(src, built)
        info = subprocess.run(runner + [exe, "--version"], capture_output=True).stdout.decode(errors="replace")
        R.check("reference kernels" in info, f"{name}: clip --version says reference kernels ({info.strip()})")
        cases = small + (full_native if not runner else full_emulated)
        hashes, run_s = run_target(name, runner, exe, cases)
        print(f"     {name}: built in {build_s:.0f} s, ran {len(cases)} models in {run_s:.0f} s, {len(hashes)} output files",
              flush=True)
        if ref is None:
            if name != "x86-64-gcc":
                R.check(False, "x86-64-gcc, the yardstick, did not build")
                break
            ref = hashes
            R.check(len(ref) > 0, f"x86-64-gcc wrote {len(ref)} output files")
            continue
        compare(name, hashes, ref, cases)
    R.finish()


main()
