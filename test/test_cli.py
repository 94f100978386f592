"""The command line: the article's two experiments, error handling, exit codes.

Experiment 1 (`clip match`) and 2 (`clip classify`) on the golden tiny models must reproduce
the golden logits; bad input must give `clip: error: ...` with the documented exit code and no
output file; the --html page must carry the numbers. Standard library only; rendering the page
needs Chromium.
"""
import json
import math
import os
import random
import shutil
import struct
import subprocess
import zlib

from common import GOLDEN, OUT, ROOT, Report, clip, converted, golden_arrays, read_npy

R = Report("cli")
IMAGES = os.path.join(GOLDEN, "images")
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTICLE = ["a photo of a cat", "a photo of a dog", "a photo of an airplane", "一张彩色的猫图片"]
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def softmax(x):
    e = [math.exp(v - max(x)) for v in x]
    return [v / sum(e) for v in e]


def error_case(what, args, code, out=None, names=None):
    """args must exit with code and one `clip: error:` message (naming `names` when given), leaving no out."""
    p = clip(*args, ok=False)
    msg = p.stderr.decode(errors="replace")
    good = p.returncode == code and msg.startswith("clip: error: ") and msg.count("\n") <= 2
    if names:
        good = good and names in msg.split("\n")[0]
    if out:
        good = good and not os.path.exists(out) and not any(f.startswith(os.path.basename(out) + ".tmp") for f in os.listdir(os.path.dirname(out)))
    R.check(good, f"{what}: exit {p.returncode} (want {code}), message {msg.strip()[:100]!r}")


# --- experiment 1: clip match, against golden logits (transformers 5 preprocessing = torchvision) ---
for name in ["tiny-b32", "tiny-b16-gelu", "tiny-l14-336"]:
    g = golden_arrays(name)
    model = converted(name)
    for row, image in [(0, "chelsea.png"), (3, "cat_q90_420.jpg")]:
        p = clip("match", "-m", model, "--resize", "torchvision", "-i", os.path.join(IMAGES, image),
                 *sum((["-t", t] for t in ARTICLE), []), "--json")
        res = json.loads(p.stdout)
        logits = [r["logit"] for r in res["results"]]
        probs = [r["prob"] for r in res["results"]]
        want = g["logits_per_image_f64"][row].flat[:4].tolist()
        e_logit = max(abs(a - b) for a, b in zip(logits, want)) if len(logits) == 4 else math.inf
        e_prob = max(abs(a - b) for a, b in zip(probs, softmax(want))) if len(probs) == 4 else math.inf
        R.check(e_logit <= 1e-3 and e_prob <= 1e-4 and [r["text"] for r in res["results"]] == ARTICLE,
                f"match {name} {image}: logits err {e_logit:.2g}, probs err {e_prob:.2g}")

# --- experiment 2: clip classify with CIFAR-10 prompts, against golden logits ---
model = converted("tiny-b32")
g = golden_arrays("tiny-b32")
p = clip("classify", "-m", model, "--resize", "torchvision", "--labels", ",".join(CIFAR), "--top", "10",
         os.path.join(IMAGES, "chelsea.png"), os.path.join(IMAGES, "astronaut.png"))
lines = p.stdout.decode().strip().split("\n")
ok = len(lines) == 2
for row, line in enumerate(lines):
    got = {kv.rsplit(" ", 1)[0]: float(kv.rsplit(" ", 1)[1]) for kv in line.split("\t")[1].split(", ")}
    want = softmax(g["logits_per_image_f64"][row].flat[4:14].tolist())
    ok &= max(abs(got[c] - want[i]) for i, c in enumerate(CIFAR)) <= 1e-4
    ok &= line.split("\t")[1].split(" ")[0] == CIFAR[want.index(max(want))]
R.check(ok, "classify: CIFAR-10 prompt probabilities match the golden logits (top 10, two images)")

# --cifar10 on a file made here: the same predictions as classify on the same images as PNG files
rng = random.Random(7)
recs, pngs = [], []


def write_png(path, rgb, h, w):
    """rgb: h * w * 3 bytes, row by row."""
    raw = b"".join(b"\0" + rgb[y * w * 3:(y + 1) * w * 3] for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


for i in range(12):
    img = bytearray(rng.randrange(256) for _ in range(32 * 32 * 3))
    colour = [rng.randrange(255) for _ in range(3)]
    for y in range(8, 24):                      # a block of colour so images differ in structure
        for x in range(8, 24):
            img[(y * 32 + x) * 3:(y * 32 + x) * 3 + 3] = bytes(colour)
    label = i % 10
    recs.append(bytes([label]) + b"".join(bytes(img[c::3]) for c in range(3)))   # CIFAR: planes R, G, B
    path = os.path.join(OUT, f"cifar_{i}.png")
    write_png(path, bytes(img), 32, 32)
    pngs.append(path)
cifar = os.path.join(OUT, "cifar_test.bin")
open(cifar, "wb").write(b"".join(recs))
p = clip("classify", "-m", model, "--labels", ",".join(CIFAR), *pngs)
pred_png = [l.split("\t")[1].split(" ")[0] for l in p.stdout.decode().strip().split("\n")]
p = clip("classify", "-m", model, "--cifar10", cifar)
out = p.stdout.decode()
correct = sum(CIFAR[i % 10] == pred_png[i] for i in range(12))
R.check(f"12 images, accuracy {100 * correct / 12:.2f}% ({correct} correct)" in out and "confusion matrix" in out,
        f"--cifar10: same accuracy as classify on PNG copies ({correct}/12)")
matrix = [l.split()[1:] for l in out.split("predicted):\n")[1].strip().split("\n")[1:]]
ok = all(int(matrix[i % 10][CIFAR.index(pred_png[i])]) >= 1 for i in range(12))
R.check(ok and sum(int(v) for r in matrix for v in r) == 12, "--cifar10: confusion matrix holds every prediction")
p = clip("classify", "-m", model, "--cifar10", cifar, "--limit", "5")
R.check("5 images" in p.stdout.decode(), "--cifar10 --limit 5")

# --- the HTML page ---
html = os.path.join(OUT, "match.html")
p = clip("match", "-m", model, "-i", os.path.join(ROOT, "data", "cat.png"), "-t", "a cat", "-t", "a <dog> & co", "--html", html, "--json")
res = json.loads(p.stdout)
page = open(html, encoding="utf-8").read()
ok = page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>") and "data:image/png;base64," in page
ok &= all(f"{r['prob']:.4f}" in page for r in res["results"]) and "a &lt;dog&gt; &amp; co" in page
R.check(ok, "match --html: a self-contained page with the image and every probability")
if os.path.exists(CHROMIUM):   # render it once: not blank, the picture is there
    shot = os.path.join(OUT, "match_html.png")
    if os.path.exists(shot):
        os.remove(shot)
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--user-data-dir=" + os.path.join(OUT, "chromium-profile"), "--window-size=800,900",
                    "--screenshot=" + shot, "file://" + os.path.abspath(html)], capture_output=True, timeout=120)
    ok = os.path.exists(shot) and clip("decode", shot, "-o", os.path.join(OUT, "match_html.npy"), ok=False).returncode == 0
    if ok:   # not blank, has colour: the spread of all values, and how many pixels are not grey
        px = read_npy(os.path.join(OUT, "match_html.npy")).flat
        mean = sum(px) / len(px)
        std = math.sqrt(sum((v - mean) ** 2 for v in px) / len(px))
        def channel_std(r, g, b):
            m = (r + g + b) / 3
            return math.sqrt(((r - m) ** 2 + (g - m) ** 2 + (b - m) ** 2) / 3)
        coloured = sum(channel_std(*px[k:k + 3]) > 10 for k in range(0, len(px), 3))
        ok = std > 20 and coloured > 0.05 * len(px) / 3
    R.check(ok, "match --html renders in headless Chromium (screenshot test/out/match_html.png is not blank)")
else:
    R.skip("rendering the --html page", "Chromium")

# --- tokenize, info ---
p = clip("tokenize", "-m", model, "a photo of a cat", "")
R.check(p.stdout.decode() == "49406 320 1125 539 320 2368 49407\n49406 49407\n", "tokenize: golden ids")
p = clip("tokenize", "-m", model, "--pad", "hi")
ids = p.stdout.decode().split()
R.check(len(ids) == 77 and ids[:3] == ["49406", "1883", "49407"], "tokenize --pad: 77 ids")
R.check("quick_gelu" in clip("info", "-m", model).stdout.decode(), "info")

# --- errors and exit codes ---
bad = os.path.join(OUT, "bad_model.bin")
data = open(model, "rb").read()
open(bad, "wb").write(data[: len(data) // 2])
error_case("truncated model", ["info", "-m", bad], 1)
open(bad, "wb").write(b"PK\x03\x04" + os.urandom(5000))
error_case("foreign model", ["info", "-m", bad], 1)
open(bad, "wb").write(b"")
error_case("empty model", ["info", "-m", bad], 1)
error_case("missing model", ["info", "-m", os.path.join(OUT, "no_such_model.bin")], 1)
forged = bytearray(data)
forged[48:52] = struct.pack("<I", 0x7FFFFFFF)          # a tensor count far beyond the file
open(bad, "wb").write(forged)
error_case("forged tensor count", ["info", "-m", bad], 1)
forged = bytearray(data)
forged[56 + 4:56 + 8] = struct.pack("<i", -64)           # a negative hidden size
open(bad, "wb").write(forged)
error_case("forged hidden size", ["info", "-m", bad], 1)
out = os.path.join(OUT, "should_not_exist.npy")
if os.path.exists(out):
    os.remove(out)
error_case("decode a broken PNG", ["decode", os.path.join(IMAGES, "bad_truncated.png"), "-o", out], 1, out)
error_case("decode a missing file", ["decode", os.path.join(OUT, "nope.png"), "-o", out], 1, out)
error_case("preprocess garbage", ["preprocess", "-m", model, os.path.join(IMAGES, "bad_garbage.jpg"), "-o", out], 1, out)
error_case("match without captions", ["match", "-m", model, "-i", os.path.join(IMAGES, "chelsea.png")], 2)
error_case("template without {}", ["classify", "-m", model, "--labels", "a,b", "--template", "a photo", "x.png"], 2)
open(os.path.join(OUT, "bad_cifar.bin"), "wb").write(b"\0" * 3074)
error_case("CIFAR file of the wrong size", ["classify", "-m", model, "--cifar10", os.path.join(OUT, "bad_cifar.bin")], 1)
error_case("unknown option", ["match", "--frobnicate"], 2)
error_case("unknown command", ["frobnicate"], 2)
error_case("no model", ["embed", "--text", "hi"], 2)
error_case("bad --ids", ["embed", "-m", model, "--ids", "49406 abc"], 2)
error_case("id out of vocabulary", ["embed", "-m", model, "--ids", "49406 99999999 49407"], 1)
error_case("bad thread count", ["bench", "-m", model, "-j", "0"], 2)
# --- each command refuses the options it does not use (exit 2, naming the option) ---
cat = os.path.join(ROOT, "data", "cat.png")
chelsea = os.path.join(IMAGES, "chelsea.png")
error_case("decode refuses --top", ["decode", "--top", "5", cat, "-o", out], 2, out, names="--top")
error_case("decode refuses --top before --labels", ["decode", "--top", "5", "--labels", "a,b", cat, "-o", out], 2, out,
           names="--top")
error_case("decode refuses -m", ["decode", "-m", model, cat, "-o", out], 2, out, names="-m")
error_case("preprocess refuses -j", ["preprocess", "-m", model, "-j", "2", cat, "-o", out], 2, out, names="-j")
error_case("embed refuses --top", ["embed", "-m", model, "--text", "hi", "--top", "3", "-o", out], 2, out, names="--top")
error_case("match refuses --raw", ["match", "-m", model, "-i", chelsea, "-t", "a cat", "--raw"], 2, names="--raw")
error_case("tokenize refuses --json", ["tokenize", "-m", model, "--json", "hi"], 2, names="--json")
error_case("info refuses --resize", ["info", "-m", model, "--resize", "pil"], 2, names="--resize")
error_case("info refuses an argument", ["info", "-m", model, "extra"], 2, names="extra")
error_case("bench refuses --pad", ["bench", "-m", model, "--pad"], 2, names="--pad")
error_case("classify --cifar10 refuses --top", ["classify", "-m", model, "--cifar10", cifar, "--top", "3"], 2, names="--top")
error_case("classify refuses --limit without --cifar10", ["classify", "-m", model, "--labels", "a,b", "--limit", "5", chelsea],
           2, names="--limit")
p = clip("decode", "--help")
h = p.stdout.decode()
R.check(p.returncode == 0 and "usage:" in h and "--output" in h and "--top" not in h and "--model" not in h,
        "decode --help: its usage and only the options it takes")
p = clip("help", "classify")
h = p.stdout.decode()
R.check(p.returncode == 0 and "--cifar10" in h and "--labels" in h and "--pad" not in h, "help classify")

p = clip("--help")
R.check(p.returncode == 0 and "usage:" in p.stdout.decode() and "examples:" in p.stdout.decode(), "--help")
R.check(clip("--version").stdout.decode().startswith("clip "), "--version")
R.check(clip(ok=False).returncode == 2, "no arguments: exit 2")

R.finish()
