"""The Python binding (python/clipc.py) against the `clip` command and the goldens.

    /usr/bin/python3 test/test_python.py            the suite (with NumPy: ndarrays), then the same
                                                    suite again under `python3 -S` (no site
                                                    packages: no NumPy, lists)
    /usr/bin/python3 test/test_python.py --lists    the suite once, in this interpreter
    /usr/bin/python3 test/test_python.py --bench [--model M.bin] [--rounds R] [--calls file|pixels|text]
                                        [--no-trim] 200 calls by 1 or 4 Python threads, OpenMP threads
                                                    per call default or 1, timed (not a test);
                                                    --no-trim: glibc keeps freed memory (mallopt)

Checked, for the golden tiny models:
  - ids equal the golden tokenizer cases and Hugging Face's padded batches (padding=True and
    "max_length", with each model's pad token);
  - pixel_values equal the goldens bit for bit: every `pil` (.pil.npy) and `torchvision` (.hf5.npy)
    file; the same from bytes, (rgb, w, h), nested lists, ndarrays and PIL images;
  - features equal `clip embed --raw` bit for bit: texts, ids and images, one at a time and in
    batches (the command and the binding batch alike: 32 texts, 16 images a pass), and pixel values
    through `--pixel-values`; features and logits are within float rounding of the float64 goldens;
  - bad inputs raise ClipError (with the library's sentence), TypeError or ValueError;
  - four Python threads x 50 calls on one model give the results of one thread, bit for bit.
Expected values come from the `clip` command's .npy files and the goldens, read here with the
standard library; nothing expected is computed by the binding.
"""
import array
import ast
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

from common import GOLDEN, OUT, ROOT, Report, clip, converted, extract_golden, golden_pixels

sys.path.insert(0, os.path.join(ROOT, "python"))
import clipc  # noqa: E402

try:
    import numpy as np
except ImportError:
    np = None

MODELS = ["tiny-b32", "tiny-b16-gelu", "tiny-l14-336"]
IMAGES = os.path.join(GOLDEN, "images")
EXPECTED = os.path.join(IMAGES, "expected")
ARTICLE = ["a photo of a cat", "a photo of a dog", "a photo of an airplane", "一张彩色的猫图片"]
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# the golden texts whose strings are known (golden/README.md): rows 0-14 and 16 of golden.npz
TEXTS = ARTICLE + ["a photo of a " + c for c in CIFAR] + ["", "emoji 😀🐱 and ünïcödé"]
TEXT_ROWS = list(range(15)) + [16]
PHOTOS = ["chelsea.png", "astronaut.png", "cat_cifarlike_32.png", "cat_q90_420.jpg", "camera.png", "cat_wide_2000x20.png"]


# ---------------------------------------------------------------------------
# .npy and .npz with the standard library
# ---------------------------------------------------------------------------

TYPECODES = {"<f4": "f", "<f8": "d", "<i4": "i", "<i8": "q", "|u1": "B"}


def parse_npy(data):
    """bytes of a .npy file -> (shape, array.array of its values, raw little-endian bytes)"""
    hlen = int.from_bytes(data[8:10], "little") if data[6] == 1 else int.from_bytes(data[8:12], "little")
    start = 10 + hlen if data[6] == 1 else 12 + hlen
    head = ast.literal_eval(data[start - hlen:start].decode("latin1"))
    shape, raw, a = tuple(head["shape"]), data[start:], None
    if head["descr"] in TYPECODES:   # else (strings) the bytes only
        a = array.array(TYPECODES[head["descr"]])
        a.frombytes(raw)
        if head["fortran_order"]:   # golden logits [images, texts] are stored column by column
            assert len(shape) == 2
            a = array.array(a.typecode, (a[j * shape[0] + i] for i in range(shape[0]) for j in range(shape[1])))
            raw = a.tobytes()
    return shape, a, raw


def load_npy(path):
    with open(path, "rb") as f:
        return parse_npy(f.read())


def load_npz(path):
    with zipfile.ZipFile(path) as z:
        return {n[:-4]: parse_npy(z.read(n)) for n in z.namelist()}


def save_npy_f4(path, shape, values):
    head = "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }" % "".join("%d," % d for d in shape)
    head += " " * (63 - (len(head) + 10) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head.encode() + array.array("f", values).tobytes())


# ---------------------------------------------------------------------------
# Results, whatever their form
# ---------------------------------------------------------------------------

def shape_of(x):
    if np is not None and isinstance(x, np.ndarray):
        return tuple(x.shape)
    s = []
    while isinstance(x, list):
        s.append(len(x))
        x = x[0] if x else None
    return tuple(s)


def flat(x):
    if np is not None and isinstance(x, np.ndarray):
        return x.ravel().tolist()
    if isinstance(x, list):
        return [v for item in x for v in flat(item)]
    return [x]


def bits(x):
    """the float32 bytes of a result: equal bytes, equal bits"""
    return array.array("f", flat(x)).tobytes()


def max_err(x, ref):
    return max(abs(a - b) for a, b in zip(flat(x), ref))


def rows(values, shape):
    """a flat golden array -> its rows"""
    n = 1
    for d in shape[1:]:
        n *= d
    return [list(values[i * n:(i + 1) * n]) for i in range(shape[0])]


def clip_npy(*args):
    """run `clip ... -o TMP.npy` and read the file"""
    out = os.path.join(TMP, "out.npy")
    clip(*args, "-o", out)
    return load_npy(out)


def raises(exc, fn, *args, **kw):
    """the exception fn raised, if of type exc; None if it returned or raised another"""
    try:
        fn(*args, **kw)
    except exc as e:
        return e
    except Exception as e:   # noqa: BLE001 - reported as a failure
        print(f"     raised {type(e).__name__}: {e}")
        return None
    return None


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------

def check_tokenizer(R, model, b16):
    cases = json.load(open(os.path.join(GOLDEN, "tokenizer", "cases.json"), encoding="utf-8"))
    bad = [c["text"] for c in cases if model.tokenize(c["text"]) != c["fast"]]
    R.check(not bad, f"tokenize: {len(cases) - len(bad)} of {len(cases)} golden tokenizer cases give the golden ids"
            + (f" (first wrong: {bad[0][:40]!r})" if bad else ""))
    batch = model.tokenize([c["text"] for c in cases])
    R.check(batch == [c["fast"] for c in cases], "tokenize: the cases as one batch give the same ids")
    long = [c for c in cases if c["fast_untruncated_len"] > 77]
    R.check(long and all(len(model.tokenize(c["text"], truncation=False)) == c["fast_untruncated_len"] for c in long),
            f"tokenize(truncation=False): the untruncated lengths of the {len(long)} long cases")
    shape, ids, texts = padding_batch()
    R.check(model.tokenize(texts, padding=True) == rows(ids, shape),
            f"tokenize(padding=True): Hugging Face's batch_padding.npz ({shape[0]} texts padded to {shape[1]})")
    # tiny-b16-gelu pads with '!' (id 0): golden.npz holds its texts padded to the longest (77)
    g = load_npz(os.path.join(GOLDEN, "models", "tiny-b16-gelu", "golden.npz"))
    gids = rows(g["input_ids"][1], g["input_ids"][0])
    want = [gids[r] for r in TEXT_ROWS]
    got = b16.tokenize(TEXTS, padding=True)
    width = len(got[0])
    R.check(got == [r[:width] for r in want] and all(len(r) == width for r in got),
            f"tokenize(padding=True) with tiny-b16-gelu's pad token: the golden rows to the longest ({width})")
    R.check(b16.tokenize(TEXTS, padding="max_length") == want, "tokenize(padding='max_length'): the golden rows, 77 ids")
    cli = clip("tokenize", "-m", converted("tiny-b16-gelu"), "--pad", *TEXTS[:3]).stdout.decode().split("\n")
    R.check([list(map(int, line.split())) for line in cli[:3]] == b16.tokenize(TEXTS[:3], padding="max_length"),
            "tokenize(padding='max_length') equals `clip tokenize --pad`")


def padding_batch():
    """batch_padding.npz: the shape and ids of three texts padded to the longest, and the texts"""
    z = load_npz(os.path.join(GOLDEN, "tokenizer", "batch_padding.npz"))
    shape, _, raw = z["texts"]   # <U22: UTF-32 code units
    width = len(raw) // shape[0]
    texts = [raw[i * width:(i + 1) * width].decode("utf-32-le").rstrip("\0") for i in range(shape[0])]
    return z["input_ids"][0], z["input_ids"][1], texts


def check_pixels(R, model):
    """preprocess() against the sha256 of Hugging Face's pixel values (test/golden: pil_sha256, hf5_sha256)"""
    index = json.load(open(os.path.join(EXPECTED, "index.json")))
    for resize, key in (("pil", "pil_sha256"), ("torchvision", "hf5_sha256")):
        same, differ, refused = 0, [], 0
        for name in sorted(index):
            path = os.path.join(IMAGES, name)
            if "error" in index[name]:
                e = raises(clipc.ClipError, model.preprocess, path, resize=resize)
                refused += e is not None and str(e) != ""
                continue
            if key not in index[name] or (resize == "torchvision" and name == "cat_1x1.png"):
                continue   # transformers 5 guesses the channel axis of a 1x1 image (golden README)
            got = model.preprocess(path, resize=resize)
            if hashlib.sha256(bits(got)).hexdigest() == index[name][key]:
                same += 1
            else:
                differ.append(name)
        n_bad = sum("error" in e for e in index.values())
        R.check(not differ and same > 20, f"preprocess(resize={resize!r}): {same} golden images bit-equal to "
                f"Hugging Face's ({key})" + (f"; differ: {', '.join(differ[:4])}" if differ else ""))
        R.check(refused == n_bad, f"preprocess(resize={resize!r}): {refused} of {n_bad} broken golden files raise ClipError")

    # the same pixels from every kind of input, and from `clip preprocess`
    path = os.path.join(IMAGES, "cat_cifarlike_32.png")
    meta = index["cat_cifarlike_32.png"]
    rgb_file = os.path.join(TMP, "cifarlike_rgb.npy")
    clip("decode", path, "-o", rgb_file)
    (h, w, _), rgb, raw = load_npy(rgb_file)
    R.check(hashlib.sha256(raw).hexdigest() == meta["rgb_sha256"], "clip decode cat_cifarlike_32.png: Pillow's RGB (rgb_sha256)")
    nested = [[list(rgb[(y * w + x) * 3:(y * w + x) * 3 + 3]) for x in range(w)] for y in range(h)]
    kinds = {"bytes": open(path, "rb").read(), "bytearray": bytearray(open(path, "rb").read()),
             "(rgb, w, h)": (rgb.tobytes(), w, h), "nested list": nested}
    if np is not None:
        kinds["ndarray"] = np.frombuffer(rgb.tobytes(), np.uint8).reshape(h, w, 3)
        try:
            from PIL import Image
            kinds["PIL.Image (RGBA)"] = Image.open(path).convert("RGBA")
        except ImportError:
            pass
    for kind, image in kinds.items():
        R.check(hashlib.sha256(bits(model.preprocess(image))).hexdigest() == meta["pil_sha256"],
                f"preprocess({kind}) equals Hugging Face's pixel values (pil_sha256)")
    got = model.preprocess([path, kinds["bytes"], kinds["(rgb, w, h)"]], resize="torchvision")
    _, _, cli = clip_npy("preprocess", "-m", converted("tiny-b32"), "--resize", "torchvision", path)
    R.check(shape_of(got) == (3, 3, 224, 224) and bits(got) == cli * 3,
            "preprocess of three inputs: [3, 3, 224, 224], each equal to `clip preprocess --resize torchvision`")


def check_features(R, name, model):
    """features vs `clip embed --raw`, bit for bit; vs the goldens within rounding"""
    path = converted(name)
    g = load_npz(os.path.join(GOLDEN, "models", name, "golden.npz"))
    ishape, ids, _ = g["input_ids"]
    mask = rows(g["attention_mask"][1], g["attention_mask"][0])
    padded = rows(ids, ishape)
    id_rows = [r[:sum(m)] for r, m in zip(padded, mask)]

    texts = TEXTS + ["word " * 100]   # 17 texts, one truncated
    _, _, cli = clip_npy("embed", "-m", path, "--raw", *sum((["--text", t] for t in texts), []))
    got = model.get_text_features(texts)
    R.check(shape_of(got) == (17, model.projection_dim) and bits(got) == cli,
            f"{name}: get_text_features(17 texts) equals `clip embed --raw --text ...` bit for bit")
    many = [f"a photo of {i} cats" for i in range(40)]   # two passes: 32 + 8
    _, _, cli = clip_npy("embed", "-m", path, "--raw", *sum((["--text", t] for t in many), []))
    R.check(bits(model.get_text_features(many)) == cli, f"{name}: 40 texts (passes of 32 + 8) equal the command's")
    single = True
    for t in (texts[0], texts[3], texts[16]):
        _, _, cli = clip_npy("embed", "-m", path, "--raw", "--text", t)
        single &= bits(model.get_text_features(t)) == cli
    R.check(single, f"{name}: get_text_features(one text) equals `clip embed --raw --text` bit for bit (3 texts)")
    one_by_one = [v for t in texts for v in flat(model.get_text_features(t))]
    d = max_err(got, one_by_one)
    R.check(d <= 1e-5, f"{name}: batched vs one at a time: max abs diff {d:.3g} "
            "(float rounding of the batched matrix products)")

    _, _, cli = clip_npy("embed", "-m", path, "--raw", *sum((["--ids", " ".join(map(str, r))] for r in id_rows), []))
    got = model.get_text_features(id_rows)
    R.check(bits(got) == cli, f"{name}: get_text_features(golden ids) equals `clip embed --raw --ids` bit for bit")
    R.check(bits(model.get_text_features(padded, attention_mask=mask)) == cli,
            f"{name}: padded ids with attention_mask give the same features")
    fshape, f64, _ = g["text_features_f64"]
    e = max_err(got, f64)
    R.check(e <= 1e-5, f"{name}: text features vs float64 golden: max abs err {e:.3g}")

    files = [os.path.join(IMAGES, p) for p in PHOTOS]
    _, _, cli = clip_npy("embed", "-m", path, "--raw", *sum((["--image", f] for f in files), []))
    R.check(bits(model.get_image_features(files)) == cli,
            f"{name}: get_image_features(6 files) equals `clip embed --raw --image ...` bit for bit")
    _, _, cli = clip_npy("embed", "-m", path, "--raw", "--image", files[0])
    R.check(bits(model.get_image_features(files[0])) == cli,
            f"{name}: get_image_features(one file) equals `clip embed --raw --image` bit for bit")
    pshape, pv, praw = load_npy(golden_pixels(name, path)[0])   # stored, or made and checked by sha256
    pixels = rows(pv, pshape)   # as nested-free rows; reshaped below
    px_file = os.path.join(TMP, "px.npy")
    save_npy_f4(px_file, (20,) + pshape[1:], [v for i in range(20) for v in pixels[i % 6]])
    _, _, cli = clip_npy("embed", "-m", path, "--raw", "--pixel-values", px_file)
    S = pshape[2]
    as_lists = [[[p[(c * S + y) * S:(c * S + y + 1) * S] for y in range(S)] for c in range(3)] for p in pixels]
    got = model.get_image_features([as_lists[i % 6] for i in range(20)])
    R.check(bits(got) == cli, f"{name}: get_image_features(20 pixel values, passes of 16 + 4) equals "
            "`clip embed --raw --pixel-values` bit for bit")
    got = model.get_image_features(as_lists)
    e = max_err(got, g["image_features_f64"][1])
    R.check(e <= 1e-5, f"{name}: image features from the golden pixel values vs float64 golden: max abs err {e:.3g}")
    if np is not None:
        arr = np.frombuffer(praw, np.float32).reshape(pshape)
        R.check(bits(model.get_image_features(arr)) == bits(got), f"{name}: pixel values as an ndarray: the same features")

    logits = model.logits_per_image(as_lists, id_rows)
    e = max_err(logits, g["logits_per_image_f64"][1])
    R.check(shape_of(logits) == (6, 17) and e <= 1e-3,
            f"{name}: logits_per_image [6, 17] vs float64 golden: max abs err {e:.3g}")


def check_thread_count(R, model):
    """OpenMP splits each output among threads, never a sum: threads=1 gives the same floats"""
    files = [os.path.join(IMAGES, p) for p in PHOTOS]
    texts = TEXTS * 3
    model.threads = None
    default = bits(model.get_image_features(files)) + bits(model.get_text_features(texts))
    model.threads = 1
    one = bits(model.get_image_features(files)) + bits(model.get_text_features(texts))
    model.threads = None
    R.check(one == default, "threads=1 gives the features of the default OpenMP threads, bit for bit (6 images, 48 texts)")


def check_errors(R, model):
    missing = os.path.join(TMP, "no-such-image.png")
    e = raises(clipc.ClipError, model.preprocess, missing)
    R.check(e is not None and missing in str(e) and e.code == 3, f"missing image file: ClipError {str(e)!r}")
    e = raises(clipc.ClipError, model.get_image_features,
               [os.path.join(IMAGES, "chelsea.png"), os.path.join(IMAGES, "bad_truncated.png")])
    R.check(e is not None and "bad_truncated.png" in str(e), f"corrupt image file: ClipError {str(e)!r}")
    e = raises(clipc.ClipError, model.preprocess, b"\x89PNG\r\n\x1a\n not really")
    R.check(e is not None and e.code == 1, f"corrupt image bytes: ClipError {str(e)!r}")
    e = raises(clipc.ClipError, clipc.load, os.path.join(IMAGES, "chelsea.png"))
    R.check(e is not None and "not a clip.c model" in str(e), f"an image as a model: ClipError {str(e)!r}")
    e = raises(clipc.ClipError, clipc.load, missing)
    R.check(e is not None and e.code == 3, f"missing model: ClipError {str(e)!r}")
    e = raises(clipc.ClipError, model.get_text_features, [[49406] + [320] * 80 + [49407]])
    R.check(e is not None and "between 1 and 77 tokens" in str(e), f"82 ids: ClipError {str(e)!r}")
    long = model.tokenize("word " * 100, truncation=False)
    e = raises(clipc.ClipError, model.get_text_features, long)
    R.check(len(long) == 102 and e is not None, f"an untruncated 102-id text: ClipError {str(e)!r}")
    for bad in ([49406, 49408, 49407], [49406, -1, 49407], [49406, 2 ** 40, 49407]):
        e = raises(clipc.ClipError, model.get_text_features, bad)
        R.check(e is not None and "outside the vocabulary" in str(e), f"id {bad[1]}: ClipError {str(e)!r}")
    e = raises(clipc.ClipError, model.get_text_features, [[]])
    R.check(e is not None, f"no ids: ClipError {str(e)!r}")
    S = model.image_size
    for what, value in [("[1, 3, 10, 10]", [[[[0.5] * 10] * 10] * 3]),
                        ("[2, 3, 224, 223]", [[[[0.5] * (S - 1)] * S] * 3] * 2),
                        ("[4, 224, 224]", [[[0.5] * S] * S] * 4)]:
        R.check(raises(ValueError, model.get_image_features, value) is not None, f"pixel values {what}: ValueError")
    if np is not None:
        R.check(raises(ValueError, model.get_image_features, np.zeros((2, 3, S, S + 1), np.float32)) is not None,
                "pixel values ndarray [2, 3, 224, 225]: ValueError")
        for what, value in [("a float32 image array", np.zeros((4, 4, 3), np.float32)),
                            ("a [4, 4] uint8 array", np.zeros((4, 4), np.uint8))]:
            R.check(raises(ValueError, model.preprocess, value) is not None, f"{what}: ValueError")
    for what, fn, args, exc in [
        ("tokenize(123)", model.tokenize, (123,), TypeError),
        ("tokenize([b'bytes'])", model.tokenize, ([b"bytes"],), TypeError),
        ("tokenize(padding='sideways')", model.tokenize, ("a", "sideways"), ValueError),
        ("get_text_features(3.5)", model.get_text_features, (3.5,), TypeError),
        ("get_text_features(['a', [1, 2]])", model.get_text_features, (["a", [49406, 49407]],), TypeError),
        ("get_text_features([1.0, 2.0])", model.get_text_features, ([1.0, 2.0],), TypeError),
        ("get_text_features([])", model.get_text_features, ([],), ValueError),
        ("preprocess(42)", model.preprocess, (42,), TypeError),
        ("preprocess([None])", model.preprocess, ([None],), TypeError),
        ("preprocess([])", model.preprocess, ([],), ValueError),
        ("preprocess((b'abc', 2, 2))", model.preprocess, ((b"abc", 2, 2),), ValueError),
        ("preprocess(nested list with 300)", model.preprocess, ([[[300, 0, 0]]],), ValueError),
        ("preprocess(nested list with 2 values a pixel)", model.preprocess, ([[[1, 2], [3, 4]]],), ValueError),
        ("preprocess(resize='lanczos')", model.preprocess, (os.path.join(IMAGES, "chelsea.png"), "lanczos"), ValueError),
        ("get_text_features(texts, attention_mask=...)", model.get_text_features, (["a"], [[1]]), ValueError),
    ]:
        R.check(raises(exc, fn, *args) is not None, f"{what}: {exc.__name__}")
    closed = clipc.load(converted("tiny-b32"))
    closed.close()
    R.check(raises(ValueError, closed.get_text_features, "a") is not None, "a closed model: ValueError")
    head = f"import sys; sys.path.insert(0, {os.path.join(ROOT, 'python')!r}); import clipc; "
    p = subprocess.run([sys.executable, "-S", "-c", head + f"clipc.load({converted('tiny-b32')!r})"],
                       env=dict(os.environ, CLIPC_LIB=missing), capture_output=True)
    R.check(p.returncode == 1 and b"OSError" in p.stderr, "CLIPC_LIB naming a missing file: OSError at load")
    lib = os.path.join(ROOT, "libclip.so" if sys.platform != "darwin" else "libclip.dylib")
    p = subprocess.run([sys.executable, "-S", "-c", head + f"m = clipc.load({converted('tiny-b32')!r}); "
                        "print(clipc._candidates(), len(m.tokenize('a cat')))"],
                       env=dict(os.environ, CLIPC_LIB=lib), capture_output=True, cwd=TMP)
    R.check(p.returncode == 0 and p.stdout.decode().strip() == f"[{lib!r}] 4", f"CLIPC_LIB={lib}: loaded from there")
    import ctypes
    R.check(isinstance(clipc._library(), ctypes.CDLL) and not isinstance(clipc._library(), ctypes.PyDLL),
            "the library is a ctypes.CDLL (each call releases the GIL), not a PyDLL")


def check_threads(R, model):
    """4 Python threads x 50 calls on one model: the features of the same calls made in turn"""
    png = [open(os.path.join(IMAGES, p), "rb").read() for p in PHOTOS[:4]]
    calls = [(i % 3, i) for i in range(200)]

    def call(kind, i):
        if kind == 0:
            return bits(model.get_text_features(TEXTS[i % len(TEXTS)]))
        if kind == 1:
            return bits(model.get_image_features(png[i % len(png)]))
        return bits(model.get_text_features([TEXTS[i % len(TEXTS)], TEXTS[(i + 5) % len(TEXTS)]]))

    for threads in (None, 1):
        model.threads = threads
        want = [call(*c) for c in calls]
        got = [None] * len(calls)
        errors = []

        def worker(t):
            try:
                for k in range(t, len(calls), 4):
                    got[k] = call(*calls[k])
            except Exception as e:   # noqa: BLE001 - reported below
                errors.append(repr(e))

        pool = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        same = sum(g == w for g, w in zip(got, want))
        R.check(same == 200 and not errors, f"4 Python threads x 50 calls (OpenMP threads {threads or 'default'}): "
                f"{same} of 200 results equal one thread's" + (f"; {errors[0]}" if errors else ""))
    model.threads = None


def suite(R):
    global TMP
    TMP = tempfile.mkdtemp(prefix="python-", dir=OUT)
    mode = "ndarrays (NumPy %s)" % np.__version__ if np is not None else "lists (no NumPy)"
    print(f"Python {sys.version.split()[0]}{' -S' if sys.flags.no_site else ''}: results as {mode}; "
          f"library {clipc._candidates()[0]}")
    models = {name: clipc.load(converted(name)) for name in MODELS}
    m = models["tiny-b32"]
    got = m.get_text_features(["a"])
    R.check(shape_of(got) == (1, 24) and (type(got).__name__ == "ndarray") == (np is not None),
            f"get_text_features returns {type(got).__name__} [1, 24]")
    check_tokenizer(R, m, models["tiny-b16-gelu"])
    check_pixels(R, m)
    for name in MODELS:
        check_features(R, name, models[name])
    check_thread_count(R, m)
    check_errors(R, m)
    check_threads(R, m)
    for model in models.values():
        model.close()
    for f in os.listdir(TMP):
        os.remove(os.path.join(TMP, f))
    os.rmdir(TMP)


# ---------------------------------------------------------------------------
# --bench: Python threads x OpenMP threads (timings; not a test)
# ---------------------------------------------------------------------------

def bench(path, rounds, calls):
    """200 calls by 1 or 4 Python threads, with the library's default OpenMP threads per call
    or threads=1; every setting `rounds` times, interleaved (the machine's load then falls on
    all alike)."""
    model = clipc.load(path)
    img = os.path.join(IMAGES, "cat_q90_420.jpg")
    pixels = model.preprocess(img)
    captions = [f"a photo of a {c}" for c in CIFAR]
    work = {"file": lambda k: (model.get_image_features(img), model.get_text_features(captions[k % 10])),
            "pixels": lambda k: model.get_image_features(pixels),
            "text": lambda k: model.get_text_features(captions[k % 10])}[calls]

    def run(n_threads):
        t0, c0 = time.perf_counter(), time.process_time()
        pool = [threading.Thread(target=lambda t=t: [work(k) for k in range(t, 200, n_threads)]) for t in range(n_threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return time.perf_counter() - t0, time.process_time() - c0

    work(0)
    what = {"file": "get_image_features(JPEG file) + get_text_features(caption)",
            "pixels": "get_image_features(pixel values)", "text": "get_text_features(caption)"}[calls]
    print(f"{os.path.basename(path)}: 200 calls of {what}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; wall s (CPU s)")
    results = {}
    for _ in range(rounds):
        for n_threads, omp in ((1, None), (1, 1), (4, None), (4, 1)):
            model.threads = omp
            results.setdefault((n_threads, omp), []).append(run(n_threads))
    for (n_threads, omp), t in results.items():
        print(f"  {n_threads} Python thread{'s' if n_threads > 1 else ' '} x OpenMP {omp or 'default'}: "
              + ", ".join("%.3f (%.3f)" % x for x in t))


def main():
    extract_golden()
    if "--bench" in sys.argv:
        args = sys.argv[sys.argv.index("--bench") + 1:]
        path = args[args.index("--model") + 1] if "--model" in args else converted("tiny-b32")
        if "--no-trim" in args:   # an experiment: keep freed memory (no page faults for the library's per-call buffers)
            import ctypes
            libc = ctypes.CDLL(None)
            libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD
            libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        bench(path, int(args[args.index("--rounds") + 1]) if "--rounds" in args else 3,
              args[args.index("--calls") + 1] if "--calls" in args else "file")
        return
    R = Report("python")
    suite(R)
    if "--lists" not in sys.argv:   # again without site packages: no NumPy, lists
        print("=== the same under python3 -S")
        p = subprocess.run([sys.executable, "-S", os.path.abspath(__file__), "--lists"])
        R.check(p.returncode == 0, f"python3 -S {os.path.basename(__file__)} --lists: exit {p.returncode}")
    R.finish()


if __name__ == "__main__":
    main()
