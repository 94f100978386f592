"""The shipped model (data/clip-shapes.bin) and the trainer that made it.

1. Zero-shot accuracy: 1,000 held-out pictures (`train pictures --split heldout`, a split training
   never draws from), `clip classify` with the prompt "a photo of a {colour} {shape}" over the 24
   colour x shape classes. Must not fall below the floor recorded for the shipped file.
2. Retrieval: 100 more held-out pictures and their captions through `clip embed`; image -> caption
   R@1 (a hit when the best caption is the picture's own, or the very same words).
3. Other renderers: pictures drawn here with Pillow's ImageDraw (not shapes.c), anti-aliased (drawn at
   4x and downsampled) or not, 64 to 512 pixels, square or not, solid or noisy backgrounds, shapes at
   different places and sizes, Pillow's colour names and their neighbours; accuracy per condition.
   Skipped without Pillow.
4. Outside clip: test/reference.py (float64, NumPy, written from modeling_clip.py) gives the same
   features as `clip embed --raw` on the shipped model (<= 1e-5).
5. The trainer: two threads and one give the same bits (a few steps of a small batch).
"""
import hashlib
import os
import shutil
import subprocess
import sys

from common import OUT, ROOT, Report, clip, need_module, run

np = need_module("numpy", "NumPy")
import reference  # noqa: E402 (NumPy first)

MODEL = os.path.join(ROOT, "data", "clip-shapes.bin")
TRAIN = os.path.join(ROOT, "train")
COLOURS = ["red", "green", "blue", "yellow", "orange", "purple"]
SHAPES = ["circle", "square", "triangle", "star"]
LABELS = [f"{c} {s}" for c in COLOURS for s in SHAPES]

# Floors recorded for the shipped file (measured: zero-shot 96.7%, R@1 76%, Pillow 99.6% in all and
# 92% to 100% per condition; README, "Training a small CLIP"), a few points below what it scored; a
# retrained or recomputed model below them fails. Issue 14's bar (zero-shot >= 90%) is below the floor.
FLOOR_ZERO_SHOT = 0.93
FLOOR_R1 = 0.65
FLOOR_OTHER_RENDERER = 0.80     # every condition of part 3
FLOOR_OTHER_RENDERER_ALL = 0.95  # all of part 3 together

R = Report("train")
if not os.path.exists(MODEL):
    print(f"FAIL {MODEL} is missing (make tiny-model)")
    sys.exit(1)
run(["make", "-s", "-C", ROOT, "train", "clip"])


def classify(paths, template="a photo of a {}"):
    """clip classify -> the best label of each path, in order"""
    out = {}
    for i in range(0, len(paths), 500):
        p = clip("classify", "-m", MODEL, "--labels", ",".join(LABELS), "--template", template, *paths[i:i + 500])
        for line in p.stdout.decode().splitlines():
            path, rest = line.split("\t")
            out[path] = rest.split(",")[0].rsplit(" ", 1)[0]
    return [out[p] for p in paths]


def held_out(first, count, name):
    d = os.path.join(OUT, name)
    tsv = os.path.join(d, "captions.tsv")
    if not os.path.exists(tsv) or os.path.getmtime(tsv) < os.path.getmtime(TRAIN):   # drawn by an older shapes.c
        shutil.rmtree(d, ignore_errors=True)
        run([TRAIN, "pictures", "--split", "heldout", "--first", str(first), "--count", str(count), "-o", d])
    rows = [line.split("\t") for line in open(os.path.join(d, "captions.tsv")).read().splitlines()[1:]]
    return [(os.path.join(d, r[1]), f"{r[2]} {r[3]}", r[5]) for r in rows]


# 1. zero-shot on 1,000 held-out pictures
pics = held_out(0, 1000, "heldout_zero_shot")
pred = classify([p for p, _, _ in pics])
truth = [t for _, t, _ in pics]
acc = np.mean([a == b for a, b in zip(pred, truth)])
colour_acc = np.mean([a.split()[0] == b.split()[0] for a, b in zip(pred, truth)])
shape_acc = np.mean([a.split()[1] == b.split()[1] for a, b in zip(pred, truth)])
R.check(acc >= FLOOR_ZERO_SHOT, f"zero-shot on 1000 held-out pictures, 24 classes: {100 * acc:.1f}% "
        f"(colour {100 * colour_acc:.1f}%, shape {100 * shape_acc:.1f}%; floor {100 * FLOOR_ZERO_SHOT:.1f}%, issue 14's bar 90%)")
per_class = {lab: np.mean([a == b for a, b in zip(pred, truth) if b == lab]) for lab in LABELS}
worst = sorted(per_class.items(), key=lambda kv: kv[1])[:3]
print("     weakest classes: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in worst))

# 2. image -> caption retrieval among 100 held-out pairs
pairs = held_out(1000, 100, "heldout_retrieval")
emb = os.path.join(OUT, "retrieval.npy")
args = []
for _, _, caption in pairs:
    args += ["--text", caption]
for path, _, _ in pairs:
    args += ["--image", path]
clip("embed", "-m", MODEL, *args, "-o", emb)
e = np.load(emb)
txt, img = e[:100], e[100:]
best = (img @ txt.T).argmax(1)
hits = [pairs[b][2] == pairs[i][2] for i, b in enumerate(best)]
strict = np.mean(best == np.arange(100))
r1 = np.mean(hits)
best_t = (txt @ img.T).argmax(1)
r1_t2i = np.mean(best_t == np.arange(100))
R.check(r1 >= FLOOR_R1, f"image -> caption R@1 among 100 held-out pairs: {100 * r1:.0f}% ({100 * strict:.0f}% counting "
        f"identical captions as misses; text -> image {100 * r1_t2i:.0f}%; floor {100 * FLOOR_R1:.0f}%)")

# 3. pictures drawn by another program: Pillow's ImageDraw
try:
    from PIL import Image, ImageDraw
except ImportError:
    R.skip("part 3 (pictures drawn by Pillow)", "Pillow")
    Image = None

PIL_NAMES = {"red": "red", "green": "green", "blue": "blue", "yellow": "yellow", "orange": "orange", "purple": "purple"}
NEIGHBOURS = {"red": ["crimson", "firebrick", "#e00000"], "green": ["lime", "forestgreen", "limegreen"],
              "blue": ["navy", "royalblue", "mediumblue"], "yellow": ["gold", "#ffee00", "yellow"],
              "orange": ["darkorange", "#ff8c1a", "orange"], "purple": ["darkviolet", "indigo", "darkorchid"]}


def polygon(shape, cx, cy, r):
    """the outline Pillow is asked to fill: a square, an apex-up triangle in its box, a 5-point star"""
    import math
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    pts = []
    for k in range(10):
        a = -math.pi / 2 + k * math.pi / 5
        rr = r if k % 2 == 0 else 0.42 * r
        pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def draw(shape, colour, size, bg="white", aa=True, where=(0.5, 0.5), radius=0.25, noise=0, rng=None):
    """one picture: a shape of `radius` (fraction of the short side) centered at `where` (fractions
    of the central square that survives the center crop); aa: drawn 4x larger, then downsampled"""
    w, h = size
    s = 4 if aa else 1
    if bg == "random":
        img = Image.fromarray(rng.integers(0, 256, (h * s, w * s, 3), dtype=np.uint8))
    else:
        img = Image.new("RGB", (w * s, h * s), bg)
    d = ImageDraw.Draw(img)
    side = min(w, h)
    cx = ((w - side) / 2 + where[0] * side) * s
    cy = ((h - side) / 2 + where[1] * side) * s
    r = radius * side * s
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        d.polygon(polygon(shape, cx, cy, r), fill=colour)
    if aa:
        img = img.resize((w, h), Image.LANCZOS)
    if noise:
        a = np.asarray(img).astype(np.float64) + rng.normal(0, noise, (h, w, 3))
        img = Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8))
    return img


if Image is not None:
    rng = np.random.default_rng(7)
    conditions = {
        "anti-aliased, white, 224x224": dict(size=(224, 224), aa=True),
        "aliased, white, 224x224": dict(size=(224, 224), aa=False),
        "aliased, white, 64x64": dict(size=(64, 64), aa=False),
        "anti-aliased, white, 96x96": dict(size=(96, 96), aa=True),
        "anti-aliased, white, 512x512": dict(size=(512, 512), aa=True),
        "aliased, white, 512x512": dict(size=(512, 512), aa=False),
        "landscape 320x200": dict(size=(320, 200), aa=True),
        "portrait 200x320": dict(size=(200, 320), aa=False),
        "wide 512x256": dict(size=(512, 256), aa=True),
        "black background": dict(size=(224, 224), bg="black"),
        "grey background": dict(size=(224, 224), bg="#808080"),
        "light tinted background": dict(size=(224, 224), bg="lavender"),
        "noisy grey background (sigma 40)": dict(size=(224, 224), bg="#808080", noise=40),
        "noisy white (sigma 25)": dict(size=(160, 160), bg="white", noise=25, aa=False),
        "random-pixel background": dict(size=(224, 224), bg="random"),
        "small shape (radius 12%)": dict(size=(224, 224), radius=0.12),
        "large shape (radius 42%)": dict(size=(224, 224), radius=0.42),
        "off center (corners and sides)": dict(size=(224, 224), radius=0.15, where="random"),
        "neighbouring colours (crimson, lime, navy, gold, ...)": dict(size=(224, 224), colours="neighbours"),
    }
    d = os.path.join(OUT, "other_renderer")
    os.makedirs(d, exist_ok=True)
    paths, truth, cond_of = [], [], []
    for ci, (cond, kw) in enumerate(conditions.items()):
        for rep in range(2):
            for colour in COLOURS:
                for shape in SHAPES:
                    k = dict(kw)
                    name = PIL_NAMES[colour]
                    if k.pop("colours", None) == "neighbours":
                        name = NEIGHBOURS[colour][(rep + SHAPES.index(shape)) % 3]
                    if k.get("where") == "random":
                        k["where"] = tuple(rng.choice([0.25, 0.5, 0.75], 2))
                        if k["where"] == (0.5, 0.5):
                            k["where"] = (0.25, 0.75)
                    img = draw(shape, name, rng=rng, **k)
                    p = os.path.join(d, f"{ci:02d}_{rep}_{colour}_{shape}.png")
                    img.save(p)
                    paths.append(p)
                    truth.append(f"{colour} {shape}")
                    cond_of.append(cond)
    pred = classify(paths)
    ok = np.array([a == b for a, b in zip(pred, truth)])
    for cond in conditions:
        sel = np.array([c == cond for c in cond_of])
        a = ok[sel].mean()
        R.check(a >= FLOOR_OTHER_RENDERER, f"Pillow, {cond}: {100 * a:.0f}% of {sel.sum()}")
    R.check(ok.mean() >= FLOOR_OTHER_RENDERER_ALL,
            f"Pillow, all {len(ok)} pictures: {100 * ok.mean():.1f}% (floor {100 * FLOOR_OTHER_RENDERER_ALL:.1f}%)")

# 4. the same features outside clip: test/reference.py in float64
cfg, T = reference.load(MODEL)
worst_t = worst_i = 0.0
for text in ["a photo of a red circle", "two blue squares", "a hexagon made of glass", "a purple star in the top left corner"]:
    ids = [int(x) for x in clip("tokenize", "-m", MODEL, text).stdout.split()]
    out = os.path.join(OUT, "train_ref_text.npy")
    clip("embed", "-m", MODEL, "--raw", "--text", text, "-o", out)
    worst_t = max(worst_t, np.abs(np.load(out)[0] - reference.text_features(cfg, T, ids)).max())
for path, _, _ in pics[:4] + ([(paths[0], 0, 0)] if Image is not None else []):
    px = os.path.join(OUT, "train_ref_px.npy")
    out = os.path.join(OUT, "train_ref_image.npy")
    clip("preprocess", "-m", MODEL, path, "-o", px)
    clip("embed", "-m", MODEL, "--raw", "--image", path, "-o", out)
    worst_i = max(worst_i, np.abs(np.load(out)[0] - reference.image_features(cfg, T, np.load(px)[0])).max())
R.check(worst_t <= 1e-5 and worst_i <= 1e-5, f"clip vs test/reference.py (float64) on the shipped model: "
        f"text features max abs err {worst_t:.2g}, image features {worst_i:.2g}")

# 5. the trainer gives the same bits with 1 and 2 threads
digests = []
for threads in ["1", "2"]:
    d = os.path.join(OUT, f"train_threads_{threads}")
    run([TRAIN, "model", "--steps", "3", "--batch", "8", "--evals", "1", "--quiet", "-j", threads, "-o", d],
        env=dict(os.environ, OMP_WAIT_POLICY="passive"))   # a busy machine: threads sleep instead of spinning
    digests.append(hashlib.sha256(open(os.path.join(d, "model.safetensors"), "rb").read()).hexdigest())
R.check(digests[0] == digests[1], f"train model: the same weights with 1 and 2 threads ({digests[0][:16]}, {digests[1][:16]})")
# 6. the web page uses the shipped model when no model file is picked (test/test_web.js drives it)
import json
import socket
import tempfile
import time

missing = [w for w, here in [("emcc", shutil.which(os.environ.get("EMCC", "emcc"))), ("node", shutil.which("node")),
                             ("chromium", os.path.exists(os.environ.get("CHROMIUM", "/usr/bin/chromium"))),
                             ("playwright-core", os.path.isdir(os.path.join(ROOT, "test", "node_modules", "playwright-core")))]
           if not here]
if missing:
    R.skip("part 6 (the web page)", ", ".join(missing), "apt-get install emscripten node-acorn chromium; cd test && npm install")
else:
    run(["make", "-s", "-C", ROOT, "wasm"])
    site = tempfile.mkdtemp(prefix="clip-web-shapes-")
    server = None
    try:
        for f in ["index.html", "app.js", "clip.js", "clip.wasm", "clip-shapes.bin"]:
            shutil.copy(os.path.join(ROOT, "web", f), site)
        picture = shutil.copy(os.path.join(ROOT, "data", "shapes-demo.png"), site)
        with socket.socket() as so:
            so.bind(("127.0.0.1", 0))
            port = so.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory", site],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        captions = ["a photo of a red circle", "a photo of an orange star", "a photo of a blue square"]
        steps = os.path.join(site, "steps.json")
        json.dump([{"model": [], "image": picture, "resize": "0", "captions": captions}], open(steps, "w"))
        p = run(["node", os.path.join(ROOT, "test", "test_web.js"), f"http://127.0.0.1:{port}/index.html",
                 os.path.join(OUT, "web_shapes.png"), steps], ok=False, timeout=300)
        shown = [json.loads(l) for l in p.stdout.decode().splitlines() if l.startswith('{"status"')]
        native = json.loads(clip("match", "-m", MODEL, "-i", picture, *sum((["-t", t] for t in captions), []), "--json").stdout)
        want = [r["prob"] for r in native["results"]]
        got = [r["prob"] for r in shown[0]["results"]] if shown else []
        R.check(len(got) == len(want) and max(abs(a - b) for a, b in zip(got, want)) <= 1e-4,
                f"web page without a model file: the shipped model gives {got} (clip match: {[round(w, 4) for w in want]})")
    finally:
        if server:
            server.terminate()
            server.wait()
        shutil.rmtree(site, ignore_errors=True)
R.finish()
