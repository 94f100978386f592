"""The web page: web/index.html in headless Chromium gives `clip match --json`'s probabilities.

web/ (after `make wasm`), a tiny model and two images are copied into a temporary folder and served
by `python3 -m http.server` on 127.0.0.1 (with the full-size synthetic ViT-B/32,
test/out/synthetic-b32.bin, when test_fullsize.py has made it: its probabilities are not
saturated; and its q8 file, when test_quant.py has made it); test/test_web.js (playwright-core) picks the files, clicks
Run and reads the table. The probabilities shown (4 decimals) must be within 1e-4 of native
`clip match --json`; a bad image must give an error message on the page. The page after the first
run is saved as test/out/web.png. Skipped (exit 77), with a message, without emcc, node, Chromium or
playwright-core (make test-deps installs them).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from common import CLIP, GOLDEN, OUT, ROOT, Report, converted, need, run

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
EMCC = os.environ.get("EMCC", "emcc")
for what, here in [("emcc", shutil.which(EMCC)), ("node", shutil.which("node")), ("Chromium", os.path.exists(CHROMIUM)),
                   ("playwright-core", os.path.isdir(os.path.join(ROOT, "test", "node_modules", "playwright-core")))]:
    if not here:
        need(what)
R = Report("web")
IMAGES = os.path.join(GOLDEN, "images")
ARTICLE = ["a photo of a cat", "a photo of a dog", "a photo of an airplane", "一张彩色的猫图片"]
OTHER = ["a tabby cat", "a red car", "an astronaut & a <rocket>"]

p = run(["make", "-s", "wasm"], ok=False, cwd=ROOT)
if not R.check(p.returncode == 0, "make wasm"):
    print(p.stderr.decode(errors="replace")[-3000:])
    R.finish()
if not os.path.exists(CLIP):
    run(["make", "-s", "clip"], cwd=ROOT)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def native_probs(model, image, resize, captions):
    p = run([CLIP, "match", "-m", model, "--resize", resize, "-i", image, *sum((["-t", t] for t in captions), []), "--json"])
    return [(r["text"], r["prob"], r["logit"]) for r in json.loads(p.stdout)["results"]]


site = tempfile.mkdtemp(prefix="clip-web-")
server = None
try:
    for f in ["index.html", "app.js", "clip.js", "clip.wasm"]:
        shutil.copy(os.path.join(ROOT, "web", f), site)
    files = {}
    for name in ["tiny-b32", "tiny-b16-gelu"]:
        files[name] = shutil.copy(converted(name), os.path.join(site, name + ".bin"))
    for name in ["chelsea.png", "cat_q90_420.jpg", "bad_garbage.jpg"]:
        files[name] = shutil.copy(os.path.join(IMAGES, name), os.path.join(site, name))
    synthetic = os.path.join(OUT, "synthetic-b32.bin")
    if os.path.exists(synthetic):   # 600 MB: linked, not copied
        files["synthetic-b32"] = os.path.join(site, "synthetic-b32.bin")
        os.symlink(synthetic, files["synthetic-b32"])
    else:
        print("note: test/out/synthetic-b32.bin not found (made by test_fullsize.py): no full-size model in the page")
    synthetic_q8 = os.path.join(OUT, "synthetic-b32-q8.bin")
    if os.path.exists(synthetic_q8):   # the q8 file (made by test_quant.py): the same bits as native q8
        files["synthetic-b32-q8"] = os.path.join(site, "synthetic-b32-q8.bin")
        os.symlink(synthetic_q8, files["synthetic-b32-q8"])
    else:
        print("note: test/out/synthetic-b32-q8.bin not found (made by test_quant.py): no q8 model in the page")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "--directory", site],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):   # wait until it listens
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    # (model, image, resize, captions typed or None for the page's default)
    steps = [("tiny-b32", "chelsea.png", "pil", None),
             ("tiny-b32", "cat_q90_420.jpg", "torchvision", OTHER),
             ("tiny-b16-gelu", "chelsea.png", "pil", ARTICLE),
             ("tiny-b16-gelu", "bad_garbage.jpg", "pil", ARTICLE)]
    if "synthetic-b32" in files:
        steps.append(("synthetic-b32", "chelsea.png", "pil", ARTICLE))
    if "synthetic-b32-q8" in files:
        steps += [("synthetic-b32-q8", "chelsea.png", "pil", ARTICLE), ("synthetic-b32-q8", "cat_q90_420.jpg", "pil", ARTICLE)]
    steps_file = os.path.join(site, "steps.json")
    json.dump([{"model": files[m], "image": files[i], "resize": "1" if r == "torchvision" else "0", "captions": c}
               for m, i, r, c in steps], open(steps_file, "w"))
    shot = os.path.join(OUT, "web.png")
    if os.path.exists(shot):
        os.remove(shot)
    t0 = time.time()
    p = run(["node", os.path.join(ROOT, "test", "test_web.js"), f"http://127.0.0.1:{port}/index.html", shot, steps_file],
            ok=False, timeout=600)
    secs = time.time() - t0
    lines = [json.loads(l) for l in p.stdout.decode().splitlines() if l.startswith("{")]
    problems = [l for l in lines if "pageerror" in l or "console" in l or "fatal" in l]
    shown = [l for l in lines if "status" in l]
    R.check(p.returncode == 0 and len(shown) == len(steps),
            f"the page ran {len(shown)}/{len(steps)} steps in headless Chromium ({secs:.1f} s) {p.stderr.decode()[-300:]}")
    R.check(not problems, f"no page errors {problems[:3]}")
    for (model, image, resize, captions), page in zip(steps, shown):
        what = f"{model} {image} --resize {resize}"
        if image.startswith("bad_"):
            R.check(page["error"] and image in page["status"] and not page["results"],
                    f"{what}: the page shows an error: {page['status']!r}")
            continue
        want = native_probs(files[model], files[image], resize, captions or ARTICLE)
        got = [(r["text"], r["prob"], r["logit"]) for r in page["results"]]
        texts_ok = [g[0] for g in got] == [w[0] for w in want]
        ep = max((abs(g[1] - w[1]) for g, w in zip(got, want)), default=float("inf"))
        el = max((abs(g[2] - w[2]) for g, w in zip(got, want)), default=float("inf"))
        R.check(not page["error"] and texts_ok and len(got) == len(want) and ep <= 1e-4 and el <= 1e-3,
                f"{what}: page probs {[round(g[1], 4) for g in got]}, native {[round(w[1], 6) for w in want]}, "
                f"max diff {ep:.2g} (want <= 1e-4), logits {el:.2g}; status {page['status']!r}")
    R.check(os.path.exists(shot) and os.path.getsize(shot) > 1000, f"screenshot saved to {os.path.relpath(shot, ROOT)}")
finally:
    if server:
        server.terminate()
        server.wait()
    shutil.rmtree(site, ignore_errors=True)
R.finish()
