"""Shared helpers for the tests: where things are, running `clip`, converting models, reporting."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.environ.get("CLIP_GOLDEN", os.path.join(ROOT, "..", "shared", "golden"))
OUT = os.path.join(ROOT, "test", "out")
CLIP = os.environ.get("CLIP_BIN", os.path.join(ROOT, "clip"))
os.makedirs(OUT, exist_ok=True)


def make_var(name):
    """A list of sources from the Makefile (the one place they are listed), as paths:
    make_var("IMAGE_SRC") -> [ROOT/image.c, ROOT/decode/png.c, ...]."""
    p = subprocess.run(["make", "-s", "--no-print-directory", "-C", ROOT, "print-" + name],
                       capture_output=True, text=True, check=True)
    return [os.path.join(ROOT, s) for s in p.stdout.split()]


def need_golden():
    if not os.path.isdir(GOLDEN):
        print(f"FAIL golden data not found at {GOLDEN}: put the shared folder beside the repository "
              f"or set CLIP_GOLDEN to its golden/ folder")
        sys.exit(1)


def run(args, ok=True, **kw):
    """Run a command; return CompletedProcess. With ok=True a non-zero exit raises."""
    p = subprocess.run(args, capture_output=True, **kw)
    if ok and p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {p.returncode}: {p.stderr.decode(errors='replace')}")
    return p


def clip(*args, ok=True, **kw):
    return run([CLIP, *map(str, args)], ok=ok, **kw)


def converted(name):
    """Convert golden model `name` with convert.py once per test run; return the model file."""
    if os.environ.get("CLIP_MODELS_DIR"):   # already converted files (e.g. for another build)
        return os.path.join(os.environ["CLIP_MODELS_DIR"], name + ".bin")
    out = os.path.join(OUT, name + ".bin")
    src = os.path.join(GOLDEN, "models", name)
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(os.path.join(ROOT, "convert.py")):
        run([sys.executable, os.path.join(ROOT, "convert.py"), src, "-o", out])
    return out


class Report:
    def __init__(self, name=None):
        self.name, self.passed, self.failed = name, 0, 0

    def check(self, cond, what, quiet=False):
        if cond:
            self.passed += 1
            if not quiet:
                print(f"ok   {what}")
        else:
            self.failed += 1
            print(f"FAIL {what}")
        return cond

    def finish(self):
        print(f"{self.name}: {self.passed} passed, {self.failed} failed")
        sys.exit(1 if self.failed else 0)
