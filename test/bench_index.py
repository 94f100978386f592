"""Bench (not a test): clip index throughput against `clip embed` called once per file, and
clip search latency over 100,000 embeddings, with the full-size synthetic ViT-B/32.

  /usr/bin/python3 test/bench_index.py [MODEL ...]   (default: test/out/synthetic-b32.bin, made
                                                       with convert.py --synthetic ViT-B/32)
Environment: BENCH_PICTURES (default 64), BENCH_ROWS (default 100000).
Prints the machine's load average before and after: on a shared machine the numbers move with it.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

from common import CLIP, OUT, ROOT, run
from gen_pictures import make_folder

os.environ.setdefault("OMP_WAIT_POLICY", "passive")   # see test_index.py
WORK = os.path.join(OUT, "bench_index")
N_PICTURES = int(os.environ.get("BENCH_PICTURES", "64"))
N_ROWS = int(os.environ.get("BENCH_ROWS", "100000"))


def load():
    return " ".join(open("/proc/loadavg").read().split()[:3])


def synthetic_b32():
    path = os.path.join(OUT, "synthetic-b32.bin")
    if not os.path.exists(path):
        run([sys.executable, os.path.join(ROOT, "convert.py"), "--synthetic", "ViT-B/32", "-o", path])
    return path


def bench_model(model):
    name = os.path.basename(model)
    photos = os.path.join(WORK, "photos")
    good, broken = make_folder(photos, N_PICTURES, seed=3, broken_share=0.0)
    idx = os.path.join(WORK, "idx")
    shutil.rmtree(idx, ignore_errors=True)
    run([CLIP, "embed", "-m", model, "--image", os.fsdecode(good[0]), "-o", os.path.join(WORK, "warm.npy")])  # page cache
    print(f"{name}: {len(good)} pictures, load average before: {load()}")
    t = time.time()
    p = run([CLIP, "index", "-m", model, photos, "-o", idx])
    t_index = time.time() - t
    print(f"  clip index:               {t_index:7.2f} s  {len(good) / t_index:6.2f} images/s   ({p.stdout.decode().strip()})")
    t = time.time()
    for g in good:
        run([CLIP, "embed", "-m", model, "--image", os.fsdecode(g), "-o", os.path.join(WORK, "one.npy")])
    t_loop = time.time() - t
    print(f"  clip embed, one per file: {t_loop:7.2f} s  {len(good) / t_loop:6.2f} images/s")
    print(f"  ratio (loop time / index time): {t_loop / t_index:.2f}; load average after: {load()}")
    return idx


def bench_search(model, idx):
    """inflate a real index to N_ROWS random unit rows with NumPy, then time clip search"""
    big = os.path.join(WORK, "big")
    shutil.rmtree(big, ignore_errors=True)
    shutil.copytree(idx, big)
    meta = json.load(open(os.path.join(big, "index.json")))
    rng = np.random.default_rng(0)
    e = rng.standard_normal((N_ROWS, meta["dim"]), dtype=np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    np.save(os.path.join(big, "embeddings.npy"), e)
    with open(os.path.join(big, "paths.txt"), "w") as f:
        f.writelines(f"synthetic/{i:06d}.png\n" for i in range(N_ROWS))
    np.save(os.path.join(big, "files.npy"), np.zeros((N_ROWS, 2), np.int64))
    meta["count"] = N_ROWS
    json.dump(meta, open(os.path.join(big, "index.json"), "w"))
    pat = re.compile(r"index loaded in ([\d.]+) ms, query embedded in ([\d.]+) ms, ranked in ([\d.]+) ms")
    for query in (["a photo of a dog"], ["--image", os.path.join(ROOT, "data", "cat.png")]):
        times = []
        for _ in range(5):
            p = run([CLIP, "search", "-m", model, big, *query, "--top", "10", "--timing"])
            times.append([float(x) for x in pat.search(p.stderr.decode()).groups()])
        t = np.array(times)
        best = t.min(axis=0)
        print(f"  search {N_ROWS} x {meta['dim']} ({' '.join(query)[:24]!r}): rank {best[2]:.2f} ms "
              f"(median {np.median(t[:, 2]):.2f}), query embedding {best[1]:.1f} ms, index load {best[0]:.1f} ms; "
              f"answer after load {best[1] + best[2]:.1f} ms")
    print(f"  load average after: {load()}")


if __name__ == "__main__":
    os.makedirs(WORK, exist_ok=True)
    models = sys.argv[1:] or [synthetic_b32()]
    for m in models:
        bench_search(m, bench_model(m))
