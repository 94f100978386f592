"""Shared helpers for the test suites (test/README.md documents them).

Standard library only: a suite that imports nothing else runs on a bare machine.

    where things are   ROOT, OUT (test/out), CLIP (the clip command, $CLIP_BIN), GOLDEN
    reporting          Report (check, skip, finish), need, need_module, SKIP
    golden data        GOLDEN, golden_file, golden_model (= converted), golden_arrays, golden_pixels
    arrays             read_npy, write_npy, load_npz, Array, max_abs_diff
    running            run, clip

The golden data is test/golden/*.tar.xz (made once by test/golden/make_subset.py from Hugging Face's
reference outputs), extracted on first use into test/out/golden/ (GOLDEN), again whenever an
archive changes.
"""
import array
import ast
import fcntl
import hashlib
import importlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "test", "out")
CLIP = os.environ.get("CLIP_BIN", os.path.join(ROOT, "clip"))
ARCHIVES = os.path.join(ROOT, "test", "golden")
GOLDEN = os.path.join(OUT, "golden")
SKIP = 77          # exit status of a suite that skipped all or part of its checks (test/run.sh)
os.makedirs(OUT, exist_ok=True)

# How to install each optional tool (Debian/Ubuntu); `make test-deps` installs them all.
INSTALL = {
    "NumPy": "apt-get install python3-numpy",
    "Pillow": "apt-get install python3-pil",
    "node": "apt-get install nodejs npm",
    "Hugging Face tokenizers for Node": "cd test && npm install",
    "playwright-core": "cd test && npm install",
    "cjpeg": "apt-get install libjpeg-turbo-progs",
    "emcc": "apt-get install emscripten node-acorn",
    "Chromium": "apt-get install chromium",
}

def make_var(name):
    """A list of sources from the Makefile (the one place they are listed), as paths:
    make_var("IMAGE_SRC") -> [ROOT/image.c, ROOT/decode/png.c, ...]."""
    p = subprocess.run(["make", "-s", "--no-print-directory", "-C", ROOT, "print-" + name],
                       capture_output=True, text=True, check=True)
    return [os.path.join(ROOT, s) for s in p.stdout.split()]



# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------

def install_hint(what):
    hint = INSTALL.get(what)
    return (hint + "; or `make test-deps` for everything") if hint else "make test-deps"


def need(what, install=None):
    """Skip the whole suite: print `skipped: needs WHAT (install: ...)` and exit with SKIP."""
    print(f"skipped: needs {what} (install: {install or install_hint(what)})")
    sys.exit(SKIP)


def need_module(module, what=None, install=None):
    """Import an optional module, or skip the suite saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        need(what or module, install)


def suite_name():
    base = os.path.basename(sys.argv[0])
    return base[5:-3] if base.startswith("test_") and base.endswith(".py") else base


class Report:
    """Counts checks. finish(): exit 1 when one failed, SKIP when a part was skipped, else 0."""

    def __init__(self, name=None):
        self.name = name or suite_name()
        self.passed, self.failed, self.skipped = 0, 0, []

    def check(self, cond, what, quiet=False):
        if cond:
            self.passed += 1
            if not quiet:
                print(f"ok   {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}")
        return bool(cond)

    def skip(self, part, what, install=None):
        """A part of the suite that cannot run here: said now, and in the last line."""
        line = f"{part}: needs {what} (install: {install or install_hint(what)})"
        print(f"skipped: {line}")
        self.skipped.append(line)

    def finish(self):
        tail = f", skipped: {'; '.join(self.skipped)}" if self.skipped else ""
        print(f"{self.name}: {self.passed} passed, {self.failed} failed{tail}")
        sys.exit(1 if self.failed else SKIP if self.skipped else 0)


# ---------------------------------------------------------------------------
# Running things
# ---------------------------------------------------------------------------

def run(args, ok=True, **kw):
    """Run a command; return CompletedProcess. With ok=True a non-zero exit raises."""
    p = subprocess.run(args, capture_output=True, **kw)
    if ok and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {p.returncode}: {p.stderr.decode(errors='replace')}")
    return p


def clip(*args, ok=True, **kw):
    return run([CLIP, *map(str, args)], ok=ok, **kw)


# ---------------------------------------------------------------------------
# .npy / .npz without NumPy
# ---------------------------------------------------------------------------

TYPECODES = {"f4": "f", "f8": "d", "u1": "B", "i1": "b", "u2": "H", "i2": "h", "u4": "I", "i4": "i",
             "u8": "Q", "i8": "q", "b1": "B"}


class Array:
    """An n-dimensional array read from a .npy: shape, dtype ('<f4' ...), flat (array.array, C order)."""

    def __init__(self, shape, dtype, flat):
        self.shape, self.dtype, self.flat = tuple(shape), dtype, flat

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, i):
        """Row i (a view is not needed: rows are small)."""
        n = 1
        for s in self.shape[1:]:
            n *= s
        if i < 0:
            i += self.shape[0]
        if not 0 <= i < self.shape[0]:
            raise IndexError(i)
        return Array(self.shape[1:], self.dtype, self.flat[i * n:(i + 1) * n])

    def tolist(self):
        return self.flat.tolist()

    def tobytes(self):
        data = array.array(self.flat.typecode, self.flat)
        if sys.byteorder == "big":
            data.byteswap()
        return data.tobytes()


def parse_npy(data, name="array"):
    """bytes of a .npy file -> Array."""
    if data[:6] != b"\x93NUMPY":
        raise ValueError(f"{name}: not a .npy file")
    major = data[6]
    hlen_size = 2 if major == 1 else 4
    hlen = int.from_bytes(data[8:8 + hlen_size], "little")
    start = 8 + hlen_size + hlen
    header = ast.literal_eval(data[8 + hlen_size:start].decode("latin1"))
    descr, shape = header["descr"], tuple(header["shape"])
    if header.get("fortran_order"):
        raise ValueError(f"{name}: Fortran order is not supported")
    kind = descr.lstrip("<>|=")
    if kind not in TYPECODES:
        raise ValueError(f"{name}: dtype {descr} is not supported")
    flat = array.array(TYPECODES[kind])
    if flat.itemsize != int(kind[1:]):
        raise ValueError(f"{name}: this Python's array type {flat.typecode} is not {kind}")
    count = 1
    for s in shape:
        count *= s
    flat.frombytes(data[start:start + count * flat.itemsize])
    if len(flat) != count:
        raise ValueError(f"{name}: {len(flat)} values for shape {shape}")
    if flat.itemsize > 1 and (descr[0] == ">") != (sys.byteorder == "big"):
        flat.byteswap()
    return Array(shape, descr, flat)


def read_npy(path):
    with open(path, "rb") as f:
        return parse_npy(f.read(), path)


def npy_bytes(shape, dtype, data):
    """A version-1 .npy file: dtype like '<f4', data the raw little-endian bytes in C order."""
    dims = "(%d,)" % shape[0] if len(shape) == 1 else "(%s)" % ", ".join(str(s) for s in shape)
    header = ("{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (dtype, dims)).encode("latin1")
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


def write_npy(path, a):
    """Write an Array (or (shape, dtype, bytes)) as .npy; to a temp name, then renamed."""
    shape, dtype, data = (a.shape, a.dtype, a.tobytes()) if isinstance(a, Array) else a
    with open(path + ".tmp", "wb") as f:
        f.write(npy_bytes(shape, dtype, data))
    os.replace(path + ".tmp", path)
    return path


def load_npz(path):
    """name -> Array for every array in an .npz (stored or deflated)."""
    with zipfile.ZipFile(path) as z:
        return {n[:-4]: parse_npy(z.read(n), n) for n in z.namelist() if n.endswith(".npy")}


def max_abs_diff(a, b):
    """max |a - b| over two equally long sequences (Array, array.array, list); inf if lengths differ."""
    a = a.flat if isinstance(a, Array) else a
    b = b.flat if isinstance(b, Array) else b
    if len(a) != len(b):
        return float("inf")
    return max((abs(x - y) for x, y in zip(a, b)), default=0.0)


# ---------------------------------------------------------------------------
# Golden data: test/golden/*.tar.xz -> test/out/golden/
# ---------------------------------------------------------------------------

def archives_stamp():
    h = hashlib.sha256()
    for name in sorted(os.listdir(ARCHIVES)):
        if name.endswith(".tar.xz"):
            with open(os.path.join(ARCHIVES, name), "rb") as f:
                h.update(name.encode() + b"\0" + hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def expand_golden_npz(folder):
    """golden.compact.npz -> golden.npz with the keys of the reference files the tests use:
    pixel_values rebuilt from pixel_levels + pixel_table (exactly; checked against golden.json's
    sha256), image_last_hidden_f64 restored as image_hidden_f64[-1] where make_subset.py left it out."""
    src = load_npz(os.path.join(folder, "golden.compact.npz"))
    with open(os.path.join(folder, "golden.json")) as f:
        meta = json.load(f)
    raw = {}
    with zipfile.ZipFile(os.path.join(folder, "golden.compact.npz")) as z:
        for n in z.namelist():
            raw[n] = z.read(n)
    if "pixel_levels" in src:
        levels, table = src.pop("pixel_levels"), src.pop("pixel_table")
        del raw["pixel_levels.npy"], raw["pixel_table.npy"]
        n, c, h, w = levels.shape
        tb = table.tobytes()
        lut = [[tb[(ch * 256 + v) * 4:(ch * 256 + v + 1) * 4] for v in range(256)] for ch in range(3)]
        lv = bytes(levels.flat)
        plane = h * w
        rows = []
        for i in range(n):
            row = b"".join(b"".join(map(lut[ch].__getitem__, lv[(i * c + ch) * plane:(i * c + ch + 1) * plane]))
                           for ch in range(c))
            if hashlib.sha256(row).hexdigest() != meta["pixel_sha256"][i]:
                raise RuntimeError(f"{folder}: pixel_values row {i} rebuilt wrongly")
            rows.append(row)
        raw["pixel_values.npy"] = npy_bytes((n, c, h, w), "<f4", b"".join(rows))
    if "image_hidden_f64" in src and "image_last_hidden_f64" not in src:
        last = src["image_hidden_f64"][-1]
        raw["image_last_hidden_f64.npy"] = npy_bytes(last.shape, "<f8", last.tobytes())
    with zipfile.ZipFile(os.path.join(folder, "golden.npz"), "w", zipfile.ZIP_STORED) as z:
        for k in sorted(raw):
            z.writestr(k, raw[k])
    os.remove(os.path.join(folder, "golden.compact.npz"))


def extract_golden():
    """Extract the archives into GOLDEN unless its stamp says they are already there."""
    stamp = archives_stamp()
    stamp_file = os.path.join(GOLDEN, ".stamp")

    def current():
        try:
            with open(stamp_file) as f:
                return f.read() == stamp
        except OSError:
            return False

    if current():
        return GOLDEN
    with open(os.path.join(OUT, "golden.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # another suite may be extracting right now
        if current():
            return GOLDEN
        tmp = tempfile.mkdtemp(prefix="golden.", dir=OUT)
        for name in sorted(os.listdir(ARCHIVES)):
            if name.endswith(".tar.xz"):
                with tarfile.open(os.path.join(ARCHIVES, name), "r:xz") as tar:
                    for m in tar.getmembers():
                        if not m.isfile() or m.name.startswith("/") or ".." in m.name.split("/"):
                            raise RuntimeError(f"{name}: unexpected member {m.name}")
                        dst = os.path.join(tmp, m.name)
                        os.makedirs(os.path.dirname(dst), exist_ok=True)
                        with tar.extractfile(m) as src, open(dst, "wb") as f:
                            shutil.copyfileobj(src, f)
        models = os.path.join(tmp, "models")
        for m in sorted(os.listdir(models)):
            if os.path.exists(os.path.join(models, m, "golden.compact.npz")):
                expand_golden_npz(os.path.join(models, m))
        with open(os.path.join(tmp, ".stamp"), "w") as f:
            f.write(stamp)
        if os.path.exists(GOLDEN):
            old = GOLDEN + ".old.%d" % os.getpid()
            os.rename(GOLDEN, old)
            shutil.rmtree(old, ignore_errors=True)
        os.rename(tmp, GOLDEN)
    return GOLDEN


def golden_file(relpath):
    """Path of a golden file (e.g. "images/chelsea.png", "tokenizer/cases.json",
    "models/tiny-b32/golden.npz"), extracted if need be."""
    extract_golden()
    path = os.path.join(GOLDEN, relpath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{relpath} is not in the golden data (test/golden/README.md lists it)")
    return path


def golden_arrays(name):
    """The golden outputs of model `name` (models/NAME/golden.npz) as name -> Array."""
    return load_npz(golden_file(os.path.join("models", name, "golden.npz")))


def golden_model(name):
    """Convert golden model folder `name` with convert.py (once per change); return the model file."""
    if os.environ.get("CLIP_MODELS_DIR"):   # already converted files (e.g. for another build)
        return os.path.join(os.environ["CLIP_MODELS_DIR"], name + ".bin")
    src = golden_file(os.path.join("models", name))
    out = os.path.join(OUT, name + ".bin")
    newest = max(os.path.getmtime(os.path.join(ROOT, "convert.py")), os.path.getmtime(os.path.join(GOLDEN, ".stamp")))
    if not os.path.exists(out) or os.path.getmtime(out) < newest:
        run([sys.executable, os.path.join(ROOT, "convert.py"), src, "-o", out])
    return out


converted = golden_model


def golden_pixels(name, model=None):
    """A .npy file with model `name`'s golden pixel_values [N, 3, S, S] (float32), and a note.

    Stored for the 224-pixel models; for the others (tiny-l14-336) made here by `clip preprocess
    --resize torchvision` from the same images, and accepted only when every row's bytes have the
    sha256 of Hugging Face's row (golden.json). Raises RuntimeError naming the rows that differ."""
    meta_path = golden_file(os.path.join("models", name, "golden.json"))
    with open(meta_path) as f:
        meta = json.load(f)
    out = os.path.join(OUT, f"{name}.golden_pixels.npy")
    with zipfile.ZipFile(golden_file(os.path.join("models", name, "golden.npz"))) as z:
        if "pixel_values.npy" in z.namelist():
            with open(out + ".tmp", "wb") as f:
                f.write(z.read("pixel_values.npy"))
            os.replace(out + ".tmp", out)
            return out, "stored"
    model = model or golden_model(name)
    rows, bad = [], []
    for i, image in enumerate(meta["pixel_images"]):
        tmp = os.path.join(OUT, f"{name}.pixels{i}.npy")
        clip("preprocess", "-m", model, "--resize", "torchvision", golden_file("images/" + image), "-o", tmp)
        a = read_npy(tmp)
        row = a.tobytes()
        if list(a.shape[1:]) != meta["pixel_shape"][1:] or hashlib.sha256(row).hexdigest() != meta["pixel_sha256"][i]:
            bad.append(image)
        rows.append(row)
        os.remove(tmp)
    if bad:
        raise RuntimeError(f"{name}: clip preprocess --resize torchvision does not give Hugging Face's pixel values "
                           f"for {', '.join(bad)} (test_images and test_resize say why)")
    write_npy(out, (tuple(meta["pixel_shape"]), "<f4", b"".join(rows)))
    return out, "made by clip preprocess, every row's sha256 equal to Hugging Face's"


if os.path.isdir(ARCHIVES):
    extract_golden()
