#!/usr/bin/env python3
"""Tests of tokenizer.c against Hugging Face's CLIP tokenizer.

    python3 test/test_tokenizer.py                 the default run (under 30 s)
    python3 test/test_tokenizer.py --fuzz 100000   a long differential run
    python3 test/test_tokenizer.py --bench         throughput: C vs Hugging Face tokenizers
    python3 test/test_tokenizer.py --codepoints    every Unicode code point in context (about 2 min)

Python 3 standard library only. Builds test/tok_driver.c with ${CC:-cc}; the
golden data is test/golden's (test/common.py extracts it). The
tokenizer section is written here from golden/tokenizer/vocab.json and
merges.txt, in the format convert.py writes into model files. The
differential part needs node and `cd test && npm install` (the package
@anush008/tokenizers: Hugging Face tokenizers, Rust, for Node); without them
it is skipped, and so is the suite (exit 77, test/run.sh).
"""
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time

from common import GOLDEN, ROOT as REPO, SKIP, install_hint  # noqa: E402  (extracts the golden data)

CC = os.environ.get("CC", "cc")
PAD, NO_TRUNCATE = 1, 2
sys.path.insert(0, os.path.join(REPO, "test"))
from common import make_var  # noqa: E402

passed = failed = skipped = 0


def report(ok, name, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
    print("%s  %s%s" % ("ok  " if ok else "FAIL", name, (": " + detail) if detail else ""))
    sys.stdout.flush()


def skip(name, why):
    """why: (what is missing, how to install it)."""
    global skipped
    skipped += 1
    print("skipped: %s: needs %s (install: %s)" % (name, why[0], why[1]))
    sys.stdout.flush()


# ---------------------------------------------------------------------------
# The tokenizer section of a model file (the same bytes convert.py writes)
# ---------------------------------------------------------------------------

def special_content(value):
    """A special token in tokenizer_config.json: a string or {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value


def tokenizer_section(folder):
    """The section from vocab.json + merges.txt, or from tokenizer.json alone."""
    tokenizer_json = {}
    if os.path.exists(os.path.join(folder, "tokenizer.json")):
        with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
            tokenizer_json = json.load(f)
    if os.path.exists(os.path.join(folder, "vocab.json")):
        with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
            vocab = json.load(f)
        with open(os.path.join(folder, "merges.txt"), encoding="utf-8") as f:
            lines = f.read().split("\n")
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        merges = [tuple(line.split(" ")) for line in lines if line]
    else:
        vocab = tokenizer_json["model"]["vocab"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                  for m in tokenizer_json["model"]["merges"]]
    config = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                config.update(json.load(f))
    added = [t["id"] for t in tokenizer_json.get("added_tokens", [])]
    if not added:
        added = sorted({vocab[special_content(config[k])] for k in
                        ("bos_token", "eos_token", "unk_token", "pad_token")
                        if special_content(config.get(k)) in vocab})

    def token_id(key, default):
        name = special_content(config.get(key))
        return vocab[name] if name in vocab else default

    bos = token_id("bos_token", -1)
    eos = token_id("eos_token", -1)
    pad = token_id("pad_token", eos)
    unk = token_id("unk_token", -1)
    context = int(config.get("model_max_length", 77))
    if context > 1 << 20:
        context = 77
    n_vocab = max(list(vocab.values()) + added) + 1
    strings = [b""] * n_vocab
    for s, i in vocab.items():
        strings[i] = s.encode("utf-8")
    offsets = [0]
    for s in strings:
        offsets.append(offsets[-1] + len(s))
    blob = b"".join(strings)
    out = [struct.pack("<4I5i", n_vocab, len(merges), len(added), len(blob), bos, eos, pad, unk, context)]
    out.append(struct.pack("<%dI" % len(offsets), *offsets))
    out.append(b"".join(struct.pack("<3i", vocab[a], vocab[b], vocab[a + b]) for a, b in merges))
    out.append(struct.pack("<%di" % len(added), *added))
    out.append(blob)
    return b"".join(out), n_vocab


# ---------------------------------------------------------------------------
# The C driver
# ---------------------------------------------------------------------------

def build(out, extra=()):
    cmd = [CC, "-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic"] + list(extra) + [
        "-o", out, os.path.join(REPO, "test", "tok_driver.c"), *make_var("TOKENIZER_SRC")]
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode, (p.stdout + p.stderr).strip()


def record(data, flags=0, max_ids=77):
    return struct.pack("<3I", flags, max_ids, len(data)) + data


def run_batch(driver, section, records):
    p = subprocess.run([driver, section], input=b"".join(records), capture_output=True)
    if p.returncode != 0:
        raise RuntimeError("tok_driver failed: %s" % p.stderr.decode(errors="replace"))
    results = []
    for line in p.stdout.decode().split("\n")[:-1]:
        parts = line.split(" ")
        if parts[0] == "-1":
            results.append((-1, " ".join(parts[1:])))
        else:
            results.append((int(parts[0]), [int(x) for x in parts[1:]]))
    if len(results) != len(records):
        raise RuntimeError("tok_driver answered %d of %d records" % (len(results), len(records)))
    return results


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------

def test_golden_cases(driver, section, tokdir):
    with open(os.path.join(tokdir, "cases.json"), encoding="utf-8") as f:
        cases = json.load(f)
    records = []
    for c in cases:
        data = c["text"].encode("utf-8")
        records.append(record(data, 0, 77))
        records.append(record(data, NO_TRUNCATE, 100000))
        records.append(record(data, PAD, 77))
    res = run_batch(driver, section, records)
    bad = []
    for i, c in enumerate(cases):
        (n, ids), (nfull, full), (npad, padded) = res[3 * i:3 * i + 3]
        want = c["fast"]
        ok = n == len(want) and ids == want and nfull == c["fast_untruncated_len"]
        ok = ok and full[:1] == want[:1] and full[-1:] == want[-1:] and full[:len(want) - 1] == want[:-1]
        ok = ok and npad == 77 and padded == want + [49407] * (77 - len(want))
        if not ok:
            bad.append(c["text"])
    report(not bad, "golden cases.json: %d texts x 3 modes (truncated, untruncated length, padded)" % len(cases),
           "%d mismatches, first %r" % (len(bad), bad[:3]) if bad else "0 mismatches")


def test_api(driver, section, tokdir):
    with open(os.path.join(tokdir, "vocab.json"), encoding="utf-8") as f:
        word = json.load(f)["word</w>"]
    r = run_batch(driver, section, [
        record(b"a photo of a cat", 0, 5),                  # buffer too small
        record(b"word " * 100, NO_TRUNCATE, 10),            # reports the full count
        record(b"word " * 100, 0, 77),                      # truncated to 77
        record(b"", PAD, 77),
        record(b"a", 4, 77),                                # unknown flag
    ])
    ok = r[0][0] == -1 and "buffer" in r[0][1]
    ok = ok and r[1][0] == 102 and len(r[1][1]) == 10
    ok = ok and r[2][0] == 77 and r[2][1][0] == 49406 and r[2][1][-1] == 49407 and r[2][1][1:-1] == [word] * 75
    ok = ok and r[3] == (77, [49406] + [49407] * 76)
    ok = ok and r[4][0] == -1
    report(ok, "API: small buffer refused, NO_TRUNCATE count, truncation, padding, bad flags", "" if ok else repr(r)[:300])


def test_invalid_utf8(driver, section, count=3000, seed=1):
    """Raw bytes must tokenize as their Python decode(errors="replace") does."""
    rng = random.Random(seed)
    pieces = [b"\xed\xa0\x80", b"\xc0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\xff", b"\x80", b"\xf0\x9f\x98",
              b"\xe0\x80\xaf", b"\xf0\x8f\xbf\xbf", b"\xc3\xa9", b"e\xcc\x81", b"<|endoftext|>", b"<|endof\xff",
              b"'s", b" ", b"A", b"\xc4\xb0", b"\xf8\x88\x80\x80\x80", b"\xef\xbf\xbd"]
    records = []
    for _ in range(count):
        if rng.random() < 0.5:
            raw = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        else:
            raw = b"".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        records.append(record(raw, NO_TRUNCATE, 1000))
        records.append(record(raw.decode("utf-8", "replace").encode("utf-8"), NO_TRUNCATE, 1000))
    res = run_batch(driver, section, records)
    bad = [i for i in range(count) if res[2 * i] != res[2 * i + 1]]
    report(not bad, "invalid UTF-8 = Python's errors='replace' (%d random byte strings)" % count,
           "%d mismatches" % len(bad))


def test_sanitizers(tmp, section, n_vocab):
    driver = os.path.join(tmp, "tok_driver_asan")
    rc, msg = build(driver, ["-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"])
    if rc != 0:
        skip("the sanitizer build", ("a compiler with AddressSanitizer (%s says: %s)" % (CC, msg[:200]),
                                     "apt-get install gcc clang"))
        return
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="print_stacktrace=1")
    t = time.time()
    p = subprocess.run([driver, section, "--random", "3000", "7", str(n_vocab)], capture_output=True, text=True, env=env)
    report(p.returncode == 0 and "0 failures" in p.stdout,
           "ASan+UBSan: 3000 random byte strings, all flags and buffer sizes",
           (p.stdout.strip() + " " + p.stderr.strip()[:500] + " (%.1f s)" % (time.time() - t)))
    t = time.time()
    p = subprocess.run([driver, section, "--sections", "80", "11"], capture_output=True, text=True, env=env)
    report(p.returncode == 0 and "sections:" in p.stdout,
           "ASan+UBSan: 80 damaged tokenizer sections",
           (p.stdout.strip() + " " + p.stderr.strip()[:500] + " (%.1f s)" % (time.time() - t)))


def test_sections(driver, section):
    """Every truncation of a small section is refused, never read past."""
    with open(section, "rb") as f:
        data = f.read()
    n_vocab, n_merges, n_added, blob_bytes = struct.unpack("<4I", data[:16])
    tmp = section + ".bad"
    refused = 0
    cases = [data[:k] for k in (0, 1, 35, 36, 40, len(data) - 1)] + [data + b"\0"]
    bad = bytearray(data)
    struct.pack_into("<i", bad, 16, n_vocab)              # bos id out of range
    cases.append(bytes(bad))
    bad = bytearray(data)
    struct.pack_into("<I", bad, 36 + 4 * 5, 1 << 30)      # offset past the blob
    cases.append(bytes(bad))
    bad = bytearray(data)
    at = 36 + 4 * (n_vocab + 1)
    struct.pack_into("<i", bad, at + 8, 0)                # merge result is not left + right
    cases.append(bytes(bad))
    bad = bytearray(data)
    struct.pack_into("<i", bad, at + 12 * n_merges, -5)   # added id out of range
    cases.append(bytes(bad))
    bad = bytearray(data)
    struct.pack_into("<i", bad, 32, 1)                    # context length 1
    cases.append(bytes(bad))
    messages = []
    for c in cases:
        with open(tmp, "wb") as f:
            f.write(c)
        p = subprocess.run([driver, tmp], input="", capture_output=True, text=True)
        msg = p.stderr.strip()[12:]
        # the library's message style (internal.h): a lowercase sentence, no trailing period
        if p.returncode == 1 and p.stderr.startswith("tok_driver: ") and msg and not msg.endswith(".") \
                and not msg[0].isupper():
            refused += 1
            messages.append(msg)
    os.remove(tmp)
    report(refused == len(cases), "bad tokenizer sections refused with a message (%d of %d)" % (refused, len(cases)),
           "e.g. %r" % messages[-4:-3] if messages else "")


def test_stress(driver, section):
    p = subprocess.run([driver, section, "--stress"], capture_output=True, text=True)
    times = [float(line.rsplit(" in ", 1)[1].split(" ms")[0]) for line in p.stdout.splitlines() if " in " in line]
    # processor time (clock()), so that a busy machine does not fail the limit
    ok = p.returncode == 0 and len(times) == 5 and max(times) < 1000
    report(ok, "long inputs in well under a second each", "; ".join(p.stdout.strip().split("\n")).replace("stress: ", ""))


def node_ready():
    if shutil.which("node") is None:
        return "node", install_hint("node")
    if not os.path.isdir(os.path.join(REPO, "test", "node_modules", "@anush008", "tokenizers")):
        return "Hugging Face tokenizers for Node (@anush008/tokenizers)", install_hint("Hugging Face tokenizers for Node")
    return None


def test_differential(driver, section, tokdir, count, seed, pad=None, what=""):
    why = node_ready()
    if why:
        skip("differential test against Hugging Face tokenizers" + what, why)
        return
    t = time.time()
    cmd = ["node", os.path.join(REPO, "test", "tokenizer_fuzz.js"), str(count), str(seed),
           "--driver", driver, "--section", section, "--tokenizer", os.path.join(tokdir, "tokenizer.json")]
    p = subprocess.run(cmd + (["--pad", str(pad)] if pad is not None else []), capture_output=True, text=True)
    out = (p.stdout + p.stderr).strip()
    report(p.returncode == 0, "differential vs Hugging Face tokenizers%s: %d strings, seed %d (%.1f s)"
           % (what, count, seed, time.time() - t), out.split("\n")[-1] if p.returncode == 0 else out[-3000:])


def test_pad_token_model(driver, tmp, count, seed):
    """tiny-b16-gelu: tokenizer.json only, pad token "!" (id 0), itself an added token."""
    folder = os.path.join(GOLDEN, "models", "tiny-b16-gelu")
    if not os.path.exists(os.path.join(folder, "tokenizer.json")):
        report(False, "golden model tiny-b16-gelu not found at %s" % folder)
        return
    section = os.path.join(tmp, "tokenizer_b16.bin")
    data, _ = tokenizer_section(folder)
    with open(section, "wb") as f:
        f.write(data)
    pad = struct.unpack("<i", data[24:28])[0]
    test_differential(driver, section, folder, count, seed, pad, " (tiny-b16-gelu, pad and added token '!')")


def test_bench(driver, section, tokdir):
    why = node_ready()
    if why:
        skip("throughput benchmark", why)
        return
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", RAYON_NUM_THREADS="1")
    p = subprocess.run(["node", os.path.join(REPO, "test", "tokenizer_fuzz.js"), "0", "1", "--bench",
                        "--driver", driver, "--section", section,
                        "--tokenizer", os.path.join(tokdir, "tokenizer.json")],
                       capture_output=True, text=True, env=env)
    print(p.stdout.strip())
    report(p.returncode == 0, "throughput benchmark ran", p.stderr.strip()[-500:])


def main():
    args = sys.argv[1:]
    fuzz = int(args[args.index("--fuzz") + 1]) if "--fuzz" in args else 3000
    seed = int(args[args.index("--seed") + 1]) if "--seed" in args else 20240601
    tokdir = os.path.join(GOLDEN, "tokenizer")
    tmp = tempfile.mkdtemp(prefix="clip_tok_")
    try:
        section = os.path.join(tmp, "tokenizer.bin")
        data, n_vocab = tokenizer_section(tokdir)
        with open(section, "wb") as f:
            f.write(data)
        driver = os.path.join(tmp, "tok_driver")
        rc, msg = build(driver)
        report(rc == 0 and not msg, "build with %s -std=c99 -O2 -Wall -Wextra -pedantic, no warnings" % CC, msg[:2000])
        if rc != 0:
            return 1
        test_golden_cases(driver, section, tokdir)
        test_api(driver, section, tokdir)
        test_invalid_utf8(driver, section)
        test_sections(driver, section)
        test_stress(driver, section)
        test_sanitizers(tmp, section, n_vocab)
        if not node_ready() and not os.path.exists(os.path.join(os.environ.get("CLIP_UCD", "/usr/share/unicode"),
                                                                "DerivedAge.txt")):
            # tokenizer_fuzz.js then draws random code points below U+0800 only
            skip("random code points above U+07FF in the differential test",
                 ("the Unicode data files (DerivedAge.txt)", "apt-get install unicode-data"))
        test_differential(driver, section, tokdir, fuzz, seed)
        test_pad_token_model(driver, tmp, max(fuzz // 3, 1), seed + 1)
        if "--codepoints" in args:
            why = node_ready()
            if why:
                skip("every code point", why)
            else:
                p = subprocess.run(["node", os.path.join(REPO, "test", "tokenizer_fuzz.js"), "0", "1", "--codepoints",
                                    "--driver", driver, "--section", section,
                                    "--tokenizer", os.path.join(tokdir, "tokenizer.json")], capture_output=True, text=True)
                report(p.returncode == 0, "every code point in context vs Hugging Face", (p.stdout + p.stderr).strip())
        if "--bench" in args:
            test_bench(driver, section, tokdir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("tokenizer: %d passed, %d failed%s" % (passed, failed, ", %d parts skipped" % skipped if skipped else ""))
    return 1 if failed else SKIP if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
