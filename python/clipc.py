"""clipc: clip.c from Python, with Hugging Face's names.

Standard library only (ctypes): no compiler at install time, no dependency. NumPy is optional:
when it imports, features and pixel values come back as float32 ndarrays; otherwise as nested
lists of Python floats (each exactly the float32 the library computed).

    import clipc
    model = clipc.load("model.bin")                  # a file made by convert.py
    ids = model.tokenize(["a photo of a cat"])       # CLIPTokenizer(texts, truncation=True).input_ids
    pixels = model.preprocess(["cat.png"])           # CLIPImageProcessor(images).pixel_values
    t = model.get_text_features(["a photo of a cat", "a photo of a dog"])   # [2, D], not normalized
    i = model.get_image_features(["cat.png"])                              # [1, D]
    logits = model.logits_per_image(["cat.png"], ["a photo of a cat", "a photo of a dog"])  # [1, 2]

Images may be given as
  - a path (str or os.PathLike): PNG, JPEG, BMP or binary PPM/PGM, decoded by clip.c;
  - bytes, bytearray or memoryview: the same file formats in memory;
  - decoded 8-bit RGB: a (rgb_bytes, width, height) tuple (rows top to bottom, 3 bytes per pixel),
    a uint8 ndarray [H, W, 3], a nested list [H][W][3] of ints 0..255, or a PIL.Image (any mode,
    converted with .convert("RGB") as CLIPImageProcessor does; PIL is never imported here);
  - one image, or a list or tuple of them.
get_image_features also takes pixel values: a float ndarray [N, 3, S, S] or [3, S, S], or nested
lists of floats of those shapes (what preprocess returns).

Texts are str (one) or a list of str; get_text_features also takes token ids: one list of ints, a
list of lists, or an integer ndarray [N, L] (with attention_mask=, each row is cut to its mask's
length, as padded rows from tokenize(padding=True) are).

Errors of the library (a missing or corrupt file, too many tokens, an id outside the vocabulary)
raise ClipError carrying clip.c's sentence; arguments of the wrong type raise TypeError, of the
wrong shape or value ValueError.

The library is found, in this order: the file named by $CLIPC_LIB; libclip.so (libclip.dylib on
macOS) next to this module or in the folder above it (the repository root after `make`); then
ctypes.util.find_library("clip") (for example after `make install`).

Threads: ctypes releases the GIL during every library call, so Python threads can encode on one
model at once (the library keeps no state between calls). Each call also uses OpenMP threads
(all cores by default, or OMP_NUM_THREADS); load(path, threads=N) or model.threads = N sets them
for this model's calls. With several Python threads, threads=1 avoids running more threads than
cores.
"""
import ctypes
import ctypes.util
import os
import sys

try:
    import numpy as _np
except ImportError:   # lists instead of ndarrays
    _np = None

__all__ = ["load", "Model", "ClipError"]

_ERR_SIZE = 256                # CLIP_ERR_SIZE
_RESIZE = {"pil": 0, "torchvision": 1}   # CLIP_RESIZE_PIL, CLIP_RESIZE_TORCHVISION
_PAD, _NO_TRUNCATE = 1, 2      # CLIP_TOKENIZE_PAD, CLIP_TOKENIZE_NO_TRUNCATE
_IMAGE_BATCH = 16              # images per clip_encode_images call (as `clip embed --pixel-values`)
_TEXT_BATCH = 32               # texts per clip_encode_texts call (as `clip match` and `classify`)


class ClipError(Exception):
    """An error reported by clip.c: str(e) is the library's sentence, e.code its CLIP_E* code
    (1 bad input, 2 out of memory, 3 a file could not be read)."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------
# clip.h, as ctypes declarations
# ---------------------------------------------------------------------------

class _Tower(ctypes.Structure):
    _fields_ = [("hidden", ctypes.c_int), ("heads", ctypes.c_int), ("layers", ctypes.c_int),
                ("intermediate", ctypes.c_int), ("act", ctypes.c_int), ("eps", ctypes.c_float)]


class _Preprocess(ctypes.Structure):
    _fields_ = [("shortest_edge", ctypes.c_int), ("crop_h", ctypes.c_int), ("crop_w", ctypes.c_int),
                ("do_resize", ctypes.c_int), ("do_center_crop", ctypes.c_int), ("do_rescale", ctypes.c_int),
                ("do_normalize", ctypes.c_int), ("rescale_factor", ctypes.c_float),
                ("mean", ctypes.c_float * 3), ("std", ctypes.c_float * 3)]


class _Config(ctypes.Structure):
    _fields_ = [("vision", _Tower), ("text", _Tower), ("patch", ctypes.c_int), ("image_size", ctypes.c_int),
                ("channels", ctypes.c_int), ("vocab_size", ctypes.c_int), ("max_positions", ctypes.c_int),
                ("eos_token_id", ctypes.c_int), ("projection_dim", ctypes.c_int), ("synthetic", ctypes.c_int),
                ("name", ctypes.c_char * 128), ("preprocess", _Preprocess)]


class _Image(ctypes.Structure):
    _fields_ = [("w", ctypes.c_int), ("h", ctypes.c_int), ("rgb", ctypes.POINTER(ctypes.c_uint8))]


_lib = None


def _candidates():
    if os.environ.get("CLIPC_LIB"):
        return [os.environ["CLIPC_LIB"]]
    name = "libclip.dylib" if sys.platform == "darwin" else "libclip.so"
    here = os.path.dirname(os.path.abspath(__file__))
    paths = [os.path.join(d, name) for d in (here, os.path.dirname(here))]
    found = ctypes.util.find_library("clip")
    return [p for p in paths if os.path.exists(p)] + ([found] if found else [])


def _library():
    """Load libclip once (CDLL: every call releases the GIL) and declare its functions."""
    global _lib
    if _lib is not None:
        return _lib
    paths = _candidates()
    if not paths:
        raise OSError("libclip not found: run `make` in the clip.c repository (it builds libclip.so "
                      "beside python/), or set CLIPC_LIB to the library's path")
    lib = ctypes.CDLL(paths[0])
    P, I, F, C, S = ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_char_p, ctypes.c_size_t
    fp, ip = P, ctypes.POINTER(ctypes.c_int32)   # float buffers are passed as addresses (_at)
    img = ctypes.POINTER(_Image)
    for name, res, args in [
        ("clip_load", I, [ctypes.POINTER(P), C, C]),
        ("clip_free", None, [P]),
        ("clip_get_config", ctypes.POINTER(_Config), [P]),
        ("clip_get_tokenizer", P, [P]),
        ("clip_logit_scale", F, [P]),
        ("clip_tokenize", I, [P, C, S, ip, I, I, C]),
        ("clip_tokenizer_context_length", I, [P]),
        ("clip_image_load", I, [C, img, C]),
        ("clip_image_decode", I, [P, S, img, C]),
        ("clip_image_free", None, [img]),
        ("clip_image_preprocess", I, [img, ctypes.POINTER(_Preprocess), I, fp, C]),
        ("clip_encode_texts", I, [P, ctypes.POINTER(ip), ctypes.POINTER(I), I, fp, C]),
        ("clip_encode_images", I, [P, fp, I, fp, P, P, C]),
        ("clip_linear", None, [fp, fp, fp, fp, I, I, I]),
        ("clip_normalize", None, [fp, I]),
        ("clip_set_threads", None, [I]),
    ]:
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    _lib = lib
    return lib


def _check(rc, err):
    if rc != 0:
        raise ClipError(err.value.decode("utf-8", "replace"), rc)


def _floats(n):
    return (ctypes.c_float * n)()


def _at(buf, k):
    """the address of float k of a ctypes float array (which the caller keeps alive)"""
    return ctypes.addressof(buf) + 4 * k


def _result(buf, shape):
    """A filled float buffer as an ndarray of `shape`, or as nested lists of floats."""
    if _np is not None:
        return _np.frombuffer(buf, dtype=_np.float32).reshape(shape)
    rows = [buf[i:i + shape[-1]] for i in range(0, len(buf), shape[-1])]
    for d in reversed(shape[1:-1]):
        rows = [rows[i:i + d] for i in range(0, len(rows), d)]
    return rows


def load(path, threads=None):
    """Open a model file made by convert.py (memory-mapped; nothing is copied)."""
    return Model(path, threads)


class Model:
    """A loaded clip.c model. Attributes: projection_dim, image_size, context_length, vocab_size,
    logit_scale (exp(logit_scale), as in the logits), name, threads (OpenMP threads per call, None
    for the library's default)."""

    def __init__(self, path, threads=None):
        self._lib = _library()
        self._m = None
        self.threads = threads
        err = ctypes.create_string_buffer(_ERR_SIZE)
        m = ctypes.c_void_p()
        _check(self._lib.clip_load(ctypes.byref(m), os.fsencode(path), err), err)
        self._m = m
        c = self._lib.clip_get_config(m).contents
        if c.channels != 3 or c.preprocess.crop_h != c.image_size or c.preprocess.crop_w != c.image_size:
            self.close()
            raise ClipError("clipc.py's copy of clip_config does not match this libclip: rebuild both together")
        self._config = c
        self._tok = self._lib.clip_get_tokenizer(m)
        self.projection_dim, self.image_size = c.projection_dim, c.image_size
        self.vocab_size, self.max_positions = c.vocab_size, c.max_positions
        self.context_length = self._lib.clip_tokenizer_context_length(self._tok)
        self.logit_scale = self._lib.clip_logit_scale(m)
        self.name = c.name.decode("utf-8", "replace")

    def close(self):
        if self._m is not None:
            self._lib.clip_free(self._m)
            self._m = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_m", None) is not None:
            self.close()

    def _model(self):
        if self._m is None:
            raise ValueError("this model is closed")
        if self.threads is not None:   # OpenMP's setting is per calling thread: set it for this one
            self._lib.clip_set_threads(int(self.threads))
        return self._m

    # -- CLIPTokenizer ------------------------------------------------------

    def _tokenize_one(self, text, flags):
        if not isinstance(text, str):
            raise TypeError("texts must be str, not %s" % type(text).__name__)
        data, err = text.encode("utf-8"), ctypes.create_string_buffer(_ERR_SIZE)
        size = self.context_length
        while True:
            ids = (ctypes.c_int32 * size)()
            n = self._lib.clip_tokenize(self._tok, data, len(data), ids, size, flags, err)
            if n < 0:
                raise ClipError(err.value.decode("utf-8", "replace"))
            if n <= size:
                return ids[:n]
            size = n   # untruncated and longer than the context: once more with room for all

    def tokenize(self, texts, padding=False, truncation=True):
        """The input_ids CLIPTokenizer gives: [bos] + BPE ids + [eos], cut to the context length
        (77) unless truncation=False. padding=True (or "longest") pads every text to the
        longest with the model's pad token, "max_length" to the context length. A str gives one
        list of ints, a list of str a list of them."""
        if padding not in (False, True, "longest", "max_length", "do_not_pad"):
            raise ValueError("padding must be False, True, 'longest' or 'max_length', not %r" % (padding,))
        one = isinstance(texts, str)
        batch = [texts] if one else _as_list(texts, "texts")
        flags = 0 if truncation else _NO_TRUNCATE
        rows = [self._tokenize_one(t, flags) for t in batch]
        if padding in (True, "longest", "max_length") and rows:
            pad = self._tokenize_one("", _PAD)[-1]   # [bos, eos, pad, ...]: the model's pad id
            width = max(len(r) for r in rows)
            if padding == "max_length":
                width = max(width, self.context_length)
            rows = [r + [pad] * (width - len(r)) for r in rows]
        return rows[0] if one else rows

    # -- CLIPImageProcessor -------------------------------------------------

    def _decoded(self, image, img):
        """Fill the clip_image img from one image; returns True when the library allocated its
        pixels (to be freed with clip_image_free), False when they are borrowed from Python."""
        err = ctypes.create_string_buffer(_ERR_SIZE)
        if isinstance(image, (str, os.PathLike)):
            _check(self._lib.clip_image_load(os.fsencode(image), ctypes.byref(img), err), err)
            return True
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            _check(self._lib.clip_image_decode(data, len(data), ctypes.byref(img), err), err)
            return True
        rgb, w, h = _rgb(image)
        img.w, img.h = w, h
        img.rgb = ctypes.cast(ctypes.c_char_p(rgb), ctypes.POINTER(ctypes.c_uint8))
        img._keep = rgb   # the bytes must live as long as img points into them
        return False

    def _pixels(self, images, resize):
        if resize not in _RESIZE:
            raise ValueError("resize must be 'pil' or 'torchvision', not %r" % (resize,))
        one = _is_image(images)
        batch = [images] if one else list(images) if _np is not None and isinstance(images, _np.ndarray) \
            else _as_list(images, "images")
        if not batch:
            raise ValueError("no images given")
        per = 3 * self.image_size * self.image_size
        out, err = _floats(len(batch) * per), ctypes.create_string_buffer(_ERR_SIZE)
        for i, image in enumerate(batch):
            img = _Image()
            owned = self._decoded(image, img)
            try:
                rc = self._lib.clip_image_preprocess(ctypes.byref(img), ctypes.byref(self._config.preprocess),
                                                     _RESIZE[resize], _at(out, i * per), err)
            finally:
                if owned:
                    self._lib.clip_image_free(ctypes.byref(img))
            _check(rc, err)
        return out, len(batch)

    def preprocess(self, images, resize="pil"):
        """pixel_values [N, 3, S, S] float32, as CLIPImageProcessor gives them: resize="pil" as
        Pillow (OpenAI's CLIP, transformers 4), "torchvision" as transformers 5's default."""
        out, n = self._pixels(images, resize)
        return _result(out, (n, 3, self.image_size, self.image_size))

    # -- CLIPModel ----------------------------------------------------------

    def get_text_features(self, texts_or_ids, attention_mask=None):
        """text_projection outputs [N, projection_dim] (not normalized), for texts (truncated
        to the context length) or token ids; up to 32 texts share each pass over the weights."""
        rows = self._ids(texts_or_ids, attention_mask)
        D, err = self.projection_dim, ctypes.create_string_buffer(_ERR_SIZE)
        out = _floats(len(rows) * D)
        for b0 in range(0, len(rows), _TEXT_BATCH):
            part = rows[b0:b0 + _TEXT_BATCH]
            arrays = [(ctypes.c_int32 * max(len(r), 1))(*r) for r in part]
            ptrs = (ctypes.POINTER(ctypes.c_int32) * len(part))(*arrays)
            lens = (ctypes.c_int * len(part))(*[len(r) for r in part])
            _check(self._lib.clip_encode_texts(self._model(), ptrs, lens, len(part), _at(out, b0 * D), err), err)
        return _result(out, (len(rows), D))

    def _ids(self, x, mask):
        """texts or ids -> a list of id lists"""
        if isinstance(x, str):
            x = [x]
        if _np is not None and isinstance(x, _np.ndarray):
            if x.dtype.kind not in "iu" or x.ndim not in (1, 2):
                raise TypeError("token ids must be an integer array [L] or [N, L], not %s %s"
                                % (x.dtype, list(x.shape)))
            x = x.tolist()
        x = _as_list(x, "texts or token ids")
        if not x:
            raise ValueError("no texts given")
        if all(isinstance(t, str) for t in x):
            if mask is not None:
                raise ValueError("attention_mask goes with token ids, not with texts")
            return [r[:self.max_positions] for r in self.tokenize(x)]
        if all(_is_int(t) for t in x):
            x = [x]
        rows = []
        for r in x:
            if isinstance(r, str) or not all(_is_int(t) for t in _as_list(r, "token ids")):
                raise TypeError("give texts (str) or token ids (lists of ints), not a mix")
            rows.append([_int32(t, i, self.vocab_size) for i, t in enumerate(r)])
        if mask is not None:
            mask = _to_list(mask)
            if _is_int(mask[0]) if mask else False:
                mask = [mask]
            if len(mask) != len(rows) or any(len(m) != len(r) for m, r in zip(mask, rows)):
                raise ValueError("attention_mask must have the shape of the ids")
            rows = [r[:sum(1 for v in m if v)] for r, m in zip(rows, mask)]
        return rows

    def get_image_features(self, images_or_pixel_values, resize="pil"):
        """visual_projection outputs [N, projection_dim] (not normalized) for images (through
        preprocess with `resize`) or pixel values; up to 16 images share each pass over the
        weights."""
        x = images_or_pixel_values
        S, D = self.image_size, self.projection_dim
        if _is_pixel_values(x):
            pixels, n = _pixel_buffer(x, S)
        else:
            pixels, n = self._pixels(x, resize)
        out, err = _floats(n * D), ctypes.create_string_buffer(_ERR_SIZE)
        for b0 in range(0, n, _IMAGE_BATCH):
            count = min(_IMAGE_BATCH, n - b0)
            _check(self._lib.clip_encode_images(self._model(), _at(pixels, b0 * 3 * S * S), count,
                                                _at(out, b0 * D), None, None, err), err)
        return _result(out, (n, D))

    def logits_per_image(self, images, texts, resize="pil"):
        """[N_images, N_texts]: exp(logit_scale) * cosine of each image's and text's features,
        as CLIPModel's logits_per_image (float32: the product of the normalized features, then
        the scale). images and texts are what get_image_features and get_text_features take."""
        img = _floats_of(self.get_image_features(images, resize))
        txt = _floats_of(self.get_text_features(texts))
        D = self.projection_dim
        ni, nt = len(img) // D, len(txt) // D
        for buf, n in ((img, ni), (txt, nt)):
            for r in range(n):
                self._lib.clip_normalize(_at(buf, r * D), D)
        out = _floats(ni * nt)
        self._lib.clip_linear(_at(out, 0), _at(img, 0), _at(txt, 0), None, ni, D, nt)
        if _np is not None:
            return _np.frombuffer(out, dtype=_np.float32).reshape(ni, nt) * _np.float32(self.logit_scale)
        for k in range(ni * nt):   # float32 product: the exact double product, rounded once
            out[k] = out[k] * self.logit_scale
        return _result(out, (ni, nt))


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------

def _as_list(x, what):
    if isinstance(x, (list, tuple)):
        return list(x)
    raise TypeError("%s must be given as a list, not %s" % (what, type(x).__name__))


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool) or (
        _np is not None and isinstance(v, _np.integer))


def _int32(v, pos, vocab):
    v = int(v)
    if not -2**31 <= v < 2**31:   # what clip_encode_texts would say, for ids C's int32 cannot hold
        raise ClipError("token id %d at position %d is outside the vocabulary (0..%d)" % (v, pos, vocab - 1))
    return v


def _to_list(x):
    return x.tolist() if hasattr(x, "tolist") else list(x)


def _is_image(x):
    """One image (rather than a list of them)?"""
    if isinstance(x, (str, os.PathLike, bytes, bytearray, memoryview)) or _is_pil(x):
        return True
    if _np is not None and isinstance(x, _np.ndarray):
        return x.ndim != 4   # [N, H, W, 3]: N images; [H, W, 3] one; any other shape is refused
    if isinstance(x, tuple) and len(x) == 3 and isinstance(x[0], (bytes, bytearray, memoryview)):
        return True
    return (isinstance(x, list) and x and isinstance(x[0], list) and x[0]
            and isinstance(x[0][0], (list, tuple)) and x[0][0] and _is_int(x[0][0][0]))


def _is_pil(x):
    pil = sys.modules.get("PIL.Image")
    return pil is not None and isinstance(x, pil.Image)


def _rgb(image):
    """Decoded RGB -> (bytes, width, height)."""
    if _is_pil(image):
        image = image.convert("RGB")
        return image.tobytes(), image.size[0], image.size[1]
    if _np is not None and isinstance(image, _np.ndarray):
        if image.dtype != _np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError("an image array must be uint8 [H, W, 3], not %s %s"
                             % (image.dtype, list(image.shape)))
        h, w = image.shape[:2]
        return _np.ascontiguousarray(image).tobytes(), w, h
    if isinstance(image, tuple) and len(image) == 3:
        data, w, h = image
        if not isinstance(data, (bytes, bytearray, memoryview)) or not _is_int(w) or not _is_int(h):
            raise TypeError("decoded RGB is given as (bytes, width, height)")
        data = bytes(data)
        if w < 1 or h < 1 or len(data) != 3 * w * h:
            raise ValueError("%d bytes of RGB do not make a %d x %d image (%d bytes)"
                             % (len(data), w, h, 3 * w * h))
        return data, int(w), int(h)
    if isinstance(image, list):
        h, w = len(image), len(image[0]) if image else 0
        if not w or any(not isinstance(row, list) or len(row) != w for row in image):
            raise ValueError("a nested-list image must be [H][W][3] with rows of equal length")
        try:
            flat = bytes(v for row in image for px in row if len(px) == 3 or _bad_pixel() for v in px)
        except TypeError:
            raise TypeError("a nested-list image holds ints 0..255, [H][W][3]") from None
        except ValueError as e:
            raise ValueError("a nested-list image holds ints 0..255, [H][W][3] (%s)" % e) from None
        return flat, w, h
    raise TypeError("an image is a path, bytes, (rgb_bytes, width, height), a uint8 array [H, W, 3], "
                    "a nested list [H][W][3] or a PIL.Image, not %s" % type(image).__name__)


def _bad_pixel():
    raise ValueError("every pixel has 3 values")


def _is_pixel_values(x):
    if _np is not None and isinstance(x, _np.ndarray):
        return x.dtype.kind == "f"
    if isinstance(x, list):   # nested lists ending in floats, 3 or 4 deep
        v = x
        for _ in range(4):
            if not isinstance(v, list) or not v:
                return False
            v = v[0]
            if isinstance(v, float):
                return True
    return False


def _pixel_buffer(x, S):
    """pixel values [N, 3, S, S] or [3, S, S] -> (a float32 buffer, N)"""
    if _np is not None and isinstance(x, _np.ndarray):
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1:] != (3, S, S):
            raise ValueError("pixel values must have shape [N, 3, %d, %d] for this model, not %s"
                             % (S, S, list(x.shape)))
        return _floats_of(x), x.shape[0]
    depth, v = 0, x
    while isinstance(v, list) and v:
        depth, v = depth + 1, v[0]
    if depth == 3:
        x = [x]
    if depth not in (3, 4) or any(not isinstance(c, list) or len(c) != 3 for c in x):
        raise ValueError("pixel values must have shape [N, 3, %d, %d] for this model" % (S, S))
    buf, k = _floats(len(x) * 3 * S * S), 0
    for image in x:
        for plane in image:
            if not isinstance(plane, list) or len(plane) != S:
                raise ValueError("pixel values must have shape [N, 3, %d, %d] for this model" % (S, S))
            for row in plane:
                if not isinstance(row, list) or len(row) != S:
                    raise ValueError("pixel values must have shape [N, 3, %d, %d] for this model" % (S, S))
                try:
                    buf[k:k + S] = row
                except TypeError:
                    raise TypeError("pixel values must be floats") from None
                k += S
    return buf, len(x)


def _floats_of(features):
    """features (ndarray or nested lists) -> a fresh float32 buffer"""
    if _np is not None and isinstance(features, _np.ndarray):
        a = _np.ascontiguousarray(features, dtype=_np.float32)
        buf = _floats(a.size)
        ctypes.memmove(buf, a.ctypes.data, 4 * a.size)
        return buf
    flat = [v for row in features for v in row]
    buf = _floats(len(flat))
    buf[:] = flat
    return buf
