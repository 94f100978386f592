"""float16 and q8 model files (issue 17) against the float32 path of the same weights.

For every golden model, and for the full-size synthetic ViT-B/32 (not with CLIP_QUANT_TINY=1, as
test_builds.sh runs it: golden models only, and 40 CIFAR-like images instead of 200), convert.py --dtype f16 and q8 make the reduced files; then:
- accuracy: the cosine of each text's and image's features against the float32 file's, minimum
  over the golden texts and images (f16 >= 0.99999, q8 >= 0.999); the max abs difference of
  logits_per_image; how often the top CIFAR-10 prompt of `clip classify` agrees with float32's
  over 200 generated 32x32 images (CIFAR's size; a q8 file must agree on at least 95% of them);
- size: f16 <= 0.52 and q8 <= 0.30 of the float32 file (the full-size model: the tiny models'
  files are mostly position embeddings and layer norms that stay float32);
- the float16 checkpoint (tiny-b32-fp16) converted with --dtype f16 keeps its bits, and its
  features match Hugging Face's (which ran those float16 weights in float32) within the
  float32 tolerance of test_model;
- peak memory after one image (clip embed) at most the file size + 60 MB, full-size only;
- Node (make wasm's clip.js) and the page's module (web/clip.js) give native's `match`
  probabilities on the six golden images (q8: the same bits), within 1e-4.
Standard library only.
"""
import json
import math
import os
import shutil
import struct
import sys

from common import CLIP, OUT, ROOT, Report, clip, golden_arrays, golden_file, golden_model, golden_pixels, read_npy, run, write_npy

R = Report("quant")
TINY_ONLY = os.environ.get("CLIP_QUANT_TINY") == "1"
COS_MIN = {"f16": 0.99999, "q8": 0.999}
SIZE_MAX = {"f16": 0.52, "q8": 0.30}
AGREE_MIN = {"f16": 0.99, "q8": 0.95}
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FEATURES_TOL = 1e-5   # test_model's float32 tolerance on features
os.makedirs(OUT, exist_ok=True)


def convert(args, out):
    """convert.py ARGS -o OUT, once per change of convert.py"""
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(os.path.join(ROOT, "convert.py")):
        run([sys.executable, os.path.join(ROOT, "convert.py"), *args, "-o", out])
    return out


def rows(a):
    n = len(a.flat) // a.shape[0]
    return [a.flat[i * n:(i + 1) * n] for i in range(a.shape[0])]


def embed(model, ids, pixels, j):
    """(text features, image features), the raw projections, as lists of rows (j threads)"""
    t_out, i_out = os.path.join(OUT, "quant_t.npy"), os.path.join(OUT, "quant_i.npy")
    args = []
    for row in ids:
        args += ["--ids", " ".join(map(str, row))]
    clip("embed", "-m", model, "-j", j, "--raw", *args, "-o", t_out)
    clip("embed", "-m", model, "-j", j, "--raw", "--pixel-values", pixels, "-o", i_out)
    return rows(read_npy(t_out)), rows(read_npy(i_out))


def norm(v):
    s = math.sqrt(sum(x * x for x in v))
    return [x / s for x in v]


def cosine(a, b):
    return sum(x * y for x, y in zip(norm(a), norm(b)))


def logits(texts, images, scale):
    t = [norm(v) for v in texts]
    return [[scale * sum(x * y for x, y in zip(norm(i), u)) for u in t] for i in images]


def logit_scale(model):
    """exp(logit_scale), read from the file's tensor index (README, "The model file")"""
    with open(model, "rb") as f:
        idx_off, count = struct.unpack_from("<QI", f.read(512), 40)
        f.seek(idx_off)
        index = f.read(128 * count)
        for t in range(count):
            e = index[128 * t:128 * (t + 1)]
            if e[:96].rstrip(b"\0") == b"logit_scale":
                f.seek(struct.unpack_from("<Q", e, 120)[0])
                return math.exp(struct.unpack("<f", f.read(4))[0])
    raise RuntimeError(f"{model}: no logit_scale")


def cifar_images(count=200):
    """count 32x32 PPM images, deterministic: smooth colour gradients and blobs (CIFAR's size)"""
    folder = os.path.join(OUT, "quant_cifar")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k in range(count):
        path = os.path.join(folder, f"img{k:03d}.ppm")
        paths.append(path)
        if os.path.exists(path):
            continue
        h = [((k + 1) * 2654435761 >> s) % 997 / 997.0 for s in range(0, 40, 3)]
        px = bytearray()
        for y in range(32):
            for x in range(32):
                for c in range(3):
                    v = 0.5 + 0.3 * math.sin(6.3 * (h[c] + x / 32.0 * (1 + 3 * h[c + 3]) + y / 32.0 * (1 + 3 * h[c + 6])))
                    v += 0.4 * math.exp(-((x - 32 * h[9]) ** 2 + (y - 32 * h[10]) ** 2) / (20 + 60 * h[11])) * (h[c + 1] - 0.5)
                    px.append(max(0, min(255, int(255 * v))))
        with open(path + ".tmp", "wb") as f:
            f.write(b"P6\n32 32\n255\n" + bytes(px))
        os.replace(path + ".tmp", path)
    return paths


def top_labels(model, images, j):
    out = clip("classify", "-m", model, "-j", j, "--labels", ",".join(CIFAR), "--template", "a photo of a {}", *images)
    return [line.split("\t")[1].split()[0] for line in out.stdout.decode().splitlines() if "\t" in line]


def compare(name, files, ids, pixels, images, full):
    """every check of one model: files = {dtype: path}; the tiny models on one thread (on a busy
    machine OpenMP's threads wait for each other longer than a tiny model computes)"""
    j = 2 if full else 1
    ref_t, ref_i = embed(files["f32"], ids, pixels, j)
    scale = logit_scale(files["f32"])
    ref_logits = logits(ref_t, ref_i, scale)
    ref_top = top_labels(files["f32"], images, j)
    f32_size = os.path.getsize(files["f32"])
    for d in ["f16", "q8"]:
        t, i = embed(files[d], ids, pixels, j)
        cos_t = min(cosine(a, b) for a, b in zip(t, ref_t))
        cos_i = min(cosine(a, b) for a, b in zip(i, ref_i))
        dl = max(abs(x - y) for a, b in zip(logits(t, i, scale), ref_logits) for x, y in zip(a, b))
        R.check(min(cos_t, cos_i) >= COS_MIN[d],
                f"{name} {d}: min cosine vs float32 over {len(t)} texts {cos_t:.7f}, {len(i)} images {cos_i:.7f} "
                f"(>= {COS_MIN[d]}); logits_per_image max abs diff {dl:.3g}")
        top = top_labels(files[d], images, j)
        agree = sum(a == b for a, b in zip(top, ref_top)) / len(ref_top)
        R.check(len(top) == len(ref_top) == len(images) and agree >= AGREE_MIN[d],
                f"{name} {d}: top-1 CIFAR-10 prompt agrees with float32 on {agree:.1%} of {len(images)} images "
                f"(>= {AGREE_MIN[d]:.0%})")
        ratio = os.path.getsize(files[d]) / f32_size
        if full:
            R.check(ratio <= SIZE_MAX[d], f"{name} {d}: file {os.path.getsize(files[d]) / 1e6:.1f} MB, "
                                          f"{ratio:.3f} of float32's {f32_size / 1e6:.1f} MB (<= {SIZE_MAX[d]})")
        else:
            print(f"note {name} {d}: file {ratio:.3f} of float32's (a tiny model's file is mostly its 1.5 MB tokenizer)")


def golden_ids(g):
    return [[int(t) for t in g["input_ids"][r].tolist()[:int(sum(g["attention_mask"][r].tolist()))]]
            for r in range(g["input_ids"].shape[0])]


images = cifar_images()
if TINY_ONLY:   # the build matrix, where emulated builds take minutes per 200 images
    images = images[:40]

# the golden models
for name in ["tiny-b32", "tiny-b16-gelu", "tiny-l14-336"]:
    g = golden_arrays(name)
    folder = golden_file(os.path.join("models", name))
    files = {"f32": golden_model(name)}
    for d in ["f16", "q8"]:
        files[d] = convert([folder, "--dtype", d], os.path.join(OUT, f"{name}-{d}.bin"))
    compare(name, files, golden_ids(g), golden_pixels(name, files["f32"])[0], images, False)

# the float16 checkpoint keeps its bits, and matches Hugging Face's float32 run of those weights
folder = golden_file(os.path.join("models", "tiny-b32-fp16"))
fp16 = convert([folder, "--dtype", "f16"], os.path.join(OUT, "tiny-b32-fp16-f16.bin"))
with open(os.path.join(folder, "model.safetensors"), "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    name = "vision_model.encoder.layers.0.mlp.fc1.weight"
    a, b = header[name]["data_offsets"]
    f.seek(8 + n + a)
    src = f.read(b - a)
out = clip("info", "-m", fp16).stdout.decode()
with open(fp16, "rb") as f:
    data = f.read()
R.check(header[name]["dtype"] == "F16" and src in data and "float16" in out,
        f"tiny-b32-fp16 --dtype f16: {name} keeps its float16 bits ({len(src)} bytes found in the file)")
g = golden_arrays("tiny-b32-fp16")
t, i = embed(fp16, golden_ids(g), golden_pixels("tiny-b32-fp16", fp16)[0], 1)
et = max(abs(x - y) for a, b in zip(t, rows(g["text_features_f32"])) for x, y in zip(a, b))
ei = max(abs(x - y) for a, b in zip(i, rows(g["image_features_f32"])) for x, y in zip(a, b))
R.check(max(et, ei) <= FEATURES_TOL, f"tiny-b32-fp16 --dtype f16 vs Hugging Face (float16 weights run in float32): "
                                     f"text features {et:.2g}, image features {ei:.2g} (<= {FEATURES_TOL})")

# the full-size synthetic ViT-B/32
if TINY_ONLY:   # chosen by the caller (test_builds.sh): not a skip
    print("note: CLIP_QUANT_TINY=1: the full-size ViT-B/32 part is not run")
else:
    files = {d: convert(["--synthetic", "ViT-B/32", "--dtype", d], os.path.join(OUT, f"synthetic-b32-{d}.bin"))
             for d in ["f16", "q8"]}
    files["f32"] = convert(["--synthetic", "ViT-B/32"], os.path.join(OUT, "synthetic-b32.bin"))
    g = golden_arrays("tiny-b32")
    compare("ViT-B/32", files, golden_ids(g), golden_pixels("tiny-b32")[0], images, True)
    px1 = os.path.join(OUT, "quant_px1.npy")
    p = read_npy(golden_pixels("tiny-b32")[0])
    write_npy(px1, ((1,) + p.shape[1:], "<f4", p[0].tobytes()))
    for d in ["f32", "f16", "q8"]:
        # the peak resident memory of a process that loads the file and embeds one image
        probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        kb = int(run([sys.executable, "-c", probe, CLIP, "embed", "-m", files[d], "--pixel-values", px1, "-j", "2",
                      "-o", os.path.join(OUT, "quant_rss.npy")]).stdout)
        size = os.path.getsize(files[d]) / 1048576.0
        R.check(kb / 1024.0 <= size + 60, f"ViT-B/32 {d}: peak RSS loading the file and embedding one image "
                                          f"{kb / 1024.0:.1f} MB (file {size:.1f} MB + 60)")

# Node: the WebAssembly build of `clip` (make wasm) on the q8 and f16 files, against native
ARTICLE = ["a photo of a cat", "a photo of a dog", "a photo of an airplane", "一张彩色的猫图片"]


def match(cmd, model, image):
    args = ["match", "-m", model, "-i", golden_file("images/" + image), "--json"]
    for t in ARTICLE:
        args += ["-t", t]
    return json.loads(run([*cmd, *args]).stdout)["results"]


WASM = os.path.join(ROOT, "build", "wasm", "clip.js")
# the browser page's module (web/clip.js) in Node: the model handed over in memory, as web/app.js does
PAGE = r"""
const fs = require('fs');
const [modulePath, modelPath, imagePath, captions] = process.argv.slice(1);
require(modulePath)().then((clip) => {
  const texts = JSON.parse(captions), n = texts.length;
  const model = fs.readFileSync(modelPath), p = clip._web_alloc(model.length);
  clip.HEAPU8.set(model, p);
  if (clip._web_load_memory(p, model.length) < 0) throw new Error(clip.UTF8ToString(clip._web_error()));
  const d = clip._web_dim(), img = clip._malloc(4 * d), txt = clip._malloc(4 * n * d);
  const lg = clip._malloc(4 * n), pr = clip._malloc(4 * n);
  const bytes = fs.readFileSync(imagePath), ib = clip._malloc(bytes.length);
  clip.HEAPU8.set(bytes, ib);
  if (clip._web_embed_image(ib, bytes.length, 0, img) < 0) throw new Error(clip.UTF8ToString(clip._web_error()));
  texts.forEach((t, i) => {
    const m = clip.lengthBytesUTF8(t) + 1, s = clip._malloc(m);
    clip.stringToUTF8(t, s, m);
    if (clip._web_embed_text(s, txt + 4 * i * d) < 0) throw new Error(clip.UTF8ToString(clip._web_error()));
  });
  if (clip._web_match(img, txt, n, lg, pr) < 0) throw new Error(clip.UTF8ToString(clip._web_error()));
  console.log(JSON.stringify(texts.map((t, i) => ({ text: t, prob: clip.HEAPF32[pr / 4 + i] }))));
}).catch((e) => { console.log(JSON.stringify({ fatal: String(e) })); process.exit(1); });
"""
if os.environ.get("CLIP_QUANT_NODE") == "0":   # chosen by the caller (test_builds.sh): not a skip
    print("note: CLIP_QUANT_NODE=0: the Node part is not run")
elif not shutil.which("node") or not shutil.which(os.environ.get("EMCC", "emcc")):
    R.skip("Node", "node and emscripten")
else:
    run(["make", "-s", "wasm"], cwd=ROOT)
    # The build's arithmetic is WebAssembly's outside the float32 matrix products (no FMA
    # contraction, the same sums in the same order), and q8's products are exact integer sums:
    # a q8 model gives the same bits in Node and in the page's module as in the native build
    # (an f16 one agrees to rounding: its products are fused natively).
    with open(golden_file(os.path.join("models", "tiny-b32", "golden.json"))) as f:
        images = json.load(f)["pixel_images"]
    models = [("tiny-b32", os.path.join(OUT, "tiny-b32-q8.bin")), ("tiny-b32", os.path.join(OUT, "tiny-b32-f16.bin"))]
    if not TINY_ONLY:
        models.append(("ViT-B/32", os.path.join(OUT, "synthetic-b32-q8.bin")))
    top = lambda r: max(r, key=lambda x: x["prob"])["text"]  # noqa: E731
    diff = lambda a, b: max(abs(x["prob"] - y["prob"]) for x, y in zip(a, b))  # noqa: E731
    for name, model in models:
        for image in images:
            native = match([CLIP], model, image)
            node = match(["node", "--no-experimental-fetch", WASM], model, image)
            page = json.loads(run(["node", "--no-experimental-fetch", "-e", PAGE, os.path.join(ROOT, "web", "clip.js"),
                                   model, golden_file("images/" + image), json.dumps(ARTICLE)]).stdout)
            for where, got in (("Node", node), ("the page's module (web/clip.js, loaded from memory)", page)):
                R.check(top(got) == top(native) and diff(got, native) <= 1e-4,
                        f"{name} {os.path.basename(model)} on {image} in {where}: top caption {top(got)!r} as native's "
                        f"({top(native)!r}), probabilities within {diff(got, native):.2g} (<= 1e-4)")
R.finish()
