"""A realistic folder of pictures for test_index.py and bench_index.py, written without any imaging
library: PNG (zlib + struct), BMP, PPM, and JPEG through cjpeg where it is installed.

make_folder(root, n) writes about n pictures in nested folders, with unicode names (and one name
that is not UTF-8), ~5% broken files, a symlink loop, a second link to a folder, a link to a file
and a dangling link. It returns what a correct walk must find:
  good    - paths (bytes) of the pictures that decode, sorted by bytes
  broken  - paths (bytes) of the files that must fail, sorted by bytes
"""
import os
import random
import shutil
import struct
import subprocess
import zlib

import numpy as np


def png_bytes(rgb, gray=False, alpha=False):
    """8-bit PNG of an [h, w, 3] uint8 array (as grey, or with an alpha channel)."""
    h, w, _ = rgb.shape
    if gray:
        px, ctype = rgb.mean(axis=2).astype(np.uint8)[:, :, None], 0
    elif alpha:
        px, ctype = np.concatenate([rgb, np.full((h, w, 1), 200, np.uint8)], axis=2), 6
    else:
        px, ctype = rgb, 2
    raw = b"".join(b"\x00" + px[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def bmp_bytes(rgb):
    """24-bit bottom-up BMP."""
    h, w, _ = rgb.shape
    stride = (w * 3 + 3) // 4 * 4
    rows = b"".join(rgb[y, :, ::-1].tobytes().ljust(stride, b"\x00") for y in range(h - 1, -1, -1))
    head = struct.pack("<2sIHHI", b"BM", 54 + len(rows), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
    return head + info + rows


def ppm_bytes(rgb):
    h, w, _ = rgb.shape
    return b"P6\n%d %d\n255\n" % (w, h) + rgb.tobytes()


def picture(rng, w, h):
    """Something with structure: gradients, stripes, discs, checkers and noise, mixed."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    kind = rng.randrange(5)
    c1 = np.array([rng.randrange(256) for _ in range(3)], np.float64)
    c2 = np.array([rng.randrange(256) for _ in range(3)], np.float64)
    if kind == 0:
        t = (x / max(w - 1, 1) * rng.random() + y / max(h - 1, 1) * rng.random()) / 2
    elif kind == 1:
        t = (np.sin(x / rng.uniform(2, 20) + y / rng.uniform(2, 20)) + 1) / 2
    elif kind == 2:
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(5, max(w, h) / 2)
        t = ((x - cx) ** 2 + (y - cy) ** 2 < r * r).astype(np.float64)
    elif kind == 3:
        s = rng.randrange(4, 40)
        t = ((x // s + y // s) % 2).astype(np.float64)
    else:
        t = np.frombuffer(bytes(rng.randrange(256) for _ in range(w * h)), np.uint8).reshape(h, w) / 255.0
    img = c1 * (1 - t[:, :, None]) + c2 * t[:, :, None]
    return np.clip(img, 0, 255).astype(np.uint8)


FOLDERS = ["2019", "2020/01 winter", "2020/07 été", "2021/日本 旅行", "2021/日本 旅行/京都", "family/kids",
           "family/kids/birthday 🎂", "scans", "deep/a/b/c", "deep/a/b/c/d", "phone/DCIM/100APPLE"]
NAMES = ["img", "café", "写真", "naïve résumé", "quote\"s", "emoji 🐶", "back\\slash", "tab\there", "Ωmega"]


def broken_bytes(rng, kind, good_png, good_jpeg):
    if kind == 0:
        return good_png[:len(good_png) // 2]                       # truncated PNG
    if kind == 1:
        return b""                                                  # empty
    if kind == 2:
        return bytes(rng.randrange(256) for _ in range(300))       # garbage
    if kind == 3:
        b = bytearray(good_png)                                     # IHDR CRC broken
        b[29] ^= 0xff
        return bytes(b)
    if kind == 4 and good_jpeg:
        return good_jpeg[:len(good_jpeg) // 3]                      # truncated JPEG
    if kind == 5:
        return struct.pack("<2sIHHI", b"BM", 70, 0, 0, 54) + struct.pack("<IiiHHI", 40, 100000, 100000, 1, 24, 0)
    return b"P6\n12 12\n255\n" + b"\x01" * 10                       # PPM cut short


def make_folder(root, n, seed=1, broken_share=0.05):
    rng = random.Random(seed)
    cjpeg = shutil.which("cjpeg")
    if os.path.exists(root):
        shutil.rmtree(root)
    for f in FOLDERS:
        os.makedirs(os.path.join(root, f))
    good, broken = [], []
    n_broken = int(round(n * broken_share))
    exts = ["png", "png", "PNG", "bmp", "ppm"] + (["jpg", "jpeg", "JPG"] if cjpeg else [])
    last_png, last_jpeg = None, None
    for i in range(n):
        folder = FOLDERS[i % len(FOLDERS)]
        name = NAMES[rng.randrange(len(NAMES))] if rng.random() < 0.4 else "img"
        w, h = rng.randrange(24, 320), rng.randrange(24, 320)
        rgb = picture(rng, w, h)
        ext = exts[rng.randrange(len(exts))]
        path = os.fsencode(os.path.join(root, folder, f"{name} {i:04d}.{ext}"))
        if i == 7:   # a name that is not UTF-8 (Latin-1 e-acute)
            path = os.fsencode(os.path.join(root, folder)) + b"/caf\xe9 latin1 %04d.png" % i
            ext = "png"
        e = ext.lower()
        if e == "png":
            data = png_bytes(rgb, gray=i % 11 == 0, alpha=i % 13 == 0)
            last_png = data
        elif e == "bmp":
            data = bmp_bytes(rgb)
        elif e == "ppm":
            data = ppm_bytes(rgb)
        else:
            data = subprocess.run([cjpeg, "-quality", str(rng.randrange(60, 96))], input=ppm_bytes(rgb),
                                  capture_output=True, check=True).stdout
            last_jpeg = data
        with open(path, "wb") as f:
            f.write(data)
        good.append(path)
    for k in range(n_broken):   # broken files, spread over the folders, named like pictures
        folder = FOLDERS[(k * 5) % len(FOLDERS)]
        kind = k % 7
        ext = ["png", "png", "jpg", "png", "jpg", "bmp", "ppm"][kind]
        path = os.fsencode(os.path.join(root, folder, f"broken {k:03d}.{ext}"))
        with open(path, "wb") as f:
            f.write(broken_bytes(rng, kind, last_png, last_jpeg))
        broken.append(path)
    # links: a loop to the top, a loop from deep down, a second way into 2019, a file, nothing
    os.symlink("..", os.path.join(root, "2020", "loop"))
    os.symlink("../../../..", os.path.join(root, "deep", "a", "b", "c", "back to top"))
    os.symlink("2019", os.path.join(root, "zz alias of 2019"))
    first_2019 = sorted(p for p in good if p.startswith(os.fsencode(os.path.join(root, "2019")) + b"/"))[0]
    link = os.fsencode(os.path.join(root, "link to a picture.png"))
    os.symlink(os.path.relpath(first_2019, os.fsencode(root)), link)
    good.append(link)
    dangling = os.fsencode(os.path.join(root, "gone.png"))
    os.symlink("nowhere.png", dangling)
    broken.append(dangling)
    # files that are not pictures
    with open(os.path.join(root, "notes.txt"), "w") as f:
        f.write("not a picture\n")
    with open(os.path.join(root, "scans", "scan.pdf"), "wb") as f:
        f.write(b"%PDF-1.4\n")
    return sorted(good), sorted(broken)
