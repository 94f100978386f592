#!/usr/bin/env python3
"""Generate unicode_tables.h for tokenizer.c from the Unicode Character Database.

    python3 data/gen_unicode_tables.py [UCD_DIR] > unicode_tables.h

UCD_DIR defaults to /usr/share/unicode (Debian/Ubuntu package `unicode-data`).
Python 3 standard library only. The tables reproduce what the Hugging Face
tokenizers library (Rust) uses for CLIP's normalizer and pre-tokenizer:

  * General_Category L* and N* and White_Space: Oniguruma's \\p{L}, \\p{N} and
    \\s (U+0009..000D, U+0085, Zs, Zl, Zp, which is the White_Space property),
    taken from the UCD version at hand.
  * Lowercase: Rust's char::to_lowercase, i.e. the simple mapping of
    UnicodeData.txt unless SpecialCasing.txt has an unconditional full mapping
    (only U+0130 maps to more than one character). No context rules.
  * NFC: canonical decompositions (fully expanded), canonical combining classes
    and the primary composites, as the crate unicode-normalization-alignments
    0.1.12 has them: its tables are Unicode 9.0 (it does not know combining
    classes or compositions of characters added later), so this script keeps
    only characters whose DerivedAge is <= NFC_VERSION. Decompositions and
    combining classes of assigned characters never change (Unicode stability
    policy), so filtering today's data by age gives yesterday's tables.
    Hangul syllables are handled algorithmically in tokenizer.c.
"""
import os
import sys

NFC_VERSION = (9, 0)


def ranges(path):
    """Yield (first, last, fields) for every data line of a UCD file."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = [x.strip() for x in line.split(";")]
            r = fields[0].split("..")
            lo = int(r[0], 16)
            hi = int(r[1], 16) if len(r) > 1 else lo
            yield lo, hi, fields[1:]


def read_version(path):
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    # "# DerivedAge-15.0.0.txt"
    name = first.strip("# \n")
    return name.split("-", 1)[1].rsplit(".txt", 1)[0]


def main():
    ucd = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/unicode"
    version = read_version(os.path.join(ucd, "DerivedAge.txt"))

    age = {}
    for lo, hi, f in ranges(os.path.join(ucd, "DerivedAge.txt")):
        v = tuple(int(x) for x in f[0].split("."))
        for c in range(lo, hi + 1):
            age[c] = v

    # UnicodeData.txt: category, combining class, decomposition, lowercase
    gc, ccc, decomp, lower = {}, {}, {}, {}
    with open(os.path.join(ucd, "UnicodeData.txt"), encoding="utf-8") as f:
        first = None
        for line in f:
            p = line.rstrip("\n").split(";")
            c = int(p[0], 16)
            if p[1].endswith(", First>"):
                first = c
                continue
            span = range(first, c + 1) if p[1].endswith(", Last>") else [c]
            for x in span:
                gc[x] = p[2]
                if int(p[3]):
                    ccc[x] = int(p[3])
                if p[5] and not p[5].startswith("<"):
                    decomp[x] = [int(h, 16) for h in p[5].split()]
                if p[13]:
                    lower[x] = [int(p[13], 16)]

    # SpecialCasing.txt: unconditional full lowercase mappings
    for lo, hi, f in ranges(os.path.join(ucd, "SpecialCasing.txt")):
        if len(f) >= 4 and f[3]:
            continue  # conditional (final sigma, Turkish, Lithuanian, ...)
        low = [int(h, 16) for h in f[0].split()]
        if low != [lo]:
            lower[lo] = low
        else:
            lower.pop(lo, None)

    white = set()
    for lo, hi, f in ranges(os.path.join(ucd, "PropList.txt")):
        if f[0] == "White_Space":
            white.update(range(lo, hi + 1))
    onig_space = set(range(0x9, 0xE)) | {0x85}
    onig_space |= {c for c, g in gc.items() if g in ("Zs", "Zl", "Zp")}
    assert white == onig_space, "White_Space differs from Oniguruma's \\s"

    excluded = set()
    for lo, hi, f in ranges(os.path.join(ucd, "DerivedNormalizationProps.txt")):
        if f[0] == "Full_Composition_Exclusion":
            excluded.update(range(lo, hi + 1))

    # NFC data as of NFC_VERSION
    def old(c):
        return age.get(c, (99, 0)) <= NFC_VERSION

    ccc_old = {c: v for c, v in ccc.items() if old(c)}
    dec_old = {c: d for c, d in decomp.items() if old(c)}

    def full(c):
        if c not in dec_old:
            return [c]
        out = []
        for x in dec_old[c]:
            out += full(x)
        return out

    full_dec = {c: full(c) for c in dec_old}
    comp = {}
    for c, d in dec_old.items():
        if len(d) == 2 and c not in excluded:
            assert ccc_old.get(d[0], 0) == 0
            comp[(d[0], d[1])] = c
    comp_second = {b for (a, b) in comp}
    comp_second |= set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))

    # Per code point: flags << 8 | ccc
    F_LETTER, F_NUMBER, F_SPACE, F_LOWER, F_DECOMP, F_COMP2 = 1, 2, 4, 8, 16, 32
    N = 0x110000
    val = [0] * N
    for c, g in gc.items():
        v = 0
        if g[0] == "L":
            v |= F_LETTER
        if g[0] == "N":
            v |= F_NUMBER
        val[c] = v << 8
    for c in white:
        val[c] |= F_SPACE << 8
    for c, low in lower.items():
        if low != [c]:
            val[c] |= F_LOWER << 8
    for c in full_dec:
        val[c] |= F_DECOMP << 8
    for c in range(0xAC00, 0xAC00 + 11172):
        val[c] |= F_DECOMP << 8
    for c in comp_second:
        val[c] |= F_COMP2 << 8
    for c, v in ccc_old.items():
        val[c] |= v
    for c in range(0xD800, 0xE000):
        assert val[c] == 0
    # tokenizer.c skips lookups for code points below these
    assert min(full_dec) >= 0xC0 and min(comp_second) >= 0x300 and min(ccc_old) >= 0x300
    # tokenizer.c cuts long text before white space: it must never compose,
    # reorder, or come out of a decomposition of something else
    assert not (white & comp_second) and not (white & set(ccc_old))
    assert all(c in white for c, d in full_dec.items() if set(d) & white)

    # Three lookups: code point block -> block of value indices -> value.
    values = sorted(set(val))
    assert len(values) <= 256
    vindex = {v: i for i, v in enumerate(values)}
    val = [vindex[v] for v in val]
    best = None
    for shift in range(4, 11):
        bs = 1 << shift
        blocks, index = {}, []
        for start in range(0, N, bs):
            blk = tuple(val[start:start + bs])
            index.append(blocks.setdefault(blk, len(blocks)))
        size = len(index) * (1 if len(blocks) <= 256 else 2) + len(blocks) * bs
        if best is None or size < best[0]:
            best = (size, shift, blocks, index)
    _, shift, blocks, index = best
    stage2 = [0] * (len(blocks) * (1 << shift))
    for blk, i in blocks.items():
        stage2[i << shift:(i + 1) << shift] = blk
    s1type = "uint8_t" if len(blocks) <= 256 else "uint16_t"

    # Lowercase: sorted (cp, first) pairs; the multi-character ones apart.
    low1 = sorted((c, l[0]) for c, l in lower.items() if len(l) == 1 and l != [c])
    lowm = sorted((c, l) for c, l in lower.items() if len(l) > 1)
    assert all(len(l) <= 3 for c, l in lowm)

    # Decompositions: sorted code points, (offset << 3 | length), pool.
    dkeys = sorted(full_dec)
    pool, dinfo = [], []
    for c in dkeys:
        d = full_dec[c]
        assert 1 <= len(d) <= 7
        dinfo.append(len(pool) << 3 | len(d))
        pool += d
    assert len(pool) < (1 << 29)
    comps = sorted((a, b, c) for (a, b), c in comp.items())

    out = []
    w = out.append
    w("/* unicode_tables.h - generated by data/gen_unicode_tables.py; do not edit.\n")
    w(" *\n")
    w(" * Unicode Character Database %s (Debian package unicode-data):\n" % version)
    w(" * General_Category L and N, White_Space and lowercase mappings (Rust's\n")
    w(" * char::to_lowercase). NFC data (decompositions, combining classes,\n")
    w(" * compositions) only for characters assigned in Unicode %d.%d or earlier,\n" % NFC_VERSION)
    w(" * as the tables of the unicode-normalization-alignments crate that Hugging\n")
    w(" * Face tokenizers uses for NFC. Hangul syllables are algorithmic. */\n")
    w("#ifndef CLIP_UNICODE_TABLES_H\n#define CLIP_UNICODE_TABLES_H\n\n")
    w('#define UNI_VERSION "%s"\n' % version)
    w('#define UNI_NFC_VERSION "%d.%d.0"\n\n' % NFC_VERSION)
    w("/* uni_props(c) = uni_values[uni_stage2[(uni_stage1[c >> UNI_SHIFT] << UNI_SHIFT) | (c & UNI_MASK)]]:\n")
    w(" * flags << 8 | canonical combining class */\n")
    w("#define UNI_SHIFT %d\n#define UNI_MASK %d\n" % (shift, (1 << shift) - 1))
    w("#define UNI_LETTER %d   /* General_Category L* */\n" % F_LETTER)
    w("#define UNI_NUMBER %d   /* General_Category N* */\n" % F_NUMBER)
    w("#define UNI_SPACE %d    /* White_Space */\n" % F_SPACE)
    w("#define UNI_LOWER %d    /* lowercase differs from the character */\n" % F_LOWER)
    w("#define UNI_DECOMP %d  /* has a canonical decomposition */\n" % F_DECOMP)
    w("#define UNI_COMP2 %d   /* second character of some canonical composition */\n\n" % F_COMP2)

    def array(ctype, name, values, per_line=16):
        w("static const %s %s[%d] = {\n" % (ctype, name, len(values)))
        for i in range(0, len(values), per_line):
            w("    " + ",".join(str(v) for v in values[i:i + per_line]) + ",\n")
        w("};\n\n")

    array(s1type, "uni_stage1", index, 24)
    array("uint8_t", "uni_stage2", stage2, 32)
    array("uint16_t", "uni_values", values, 12)
    w("/* simple lowercase mappings: code point, lowercase, sorted */\n")
    array("uint32_t", "uni_lower1", [x for p in low1 for x in p], 12)
    w("/* full lowercase mappings to several characters: code point, n, chars */\n")
    array("uint32_t", "uni_lower_multi",
          [x for c, l in lowm for x in [c, len(l)] + l + [0] * (3 - len(l))], 10)
    w("#define UNI_NLOWER1 %d\n#define UNI_NLOWER_MULTI %d\n\n" % (len(low1), len(lowm)))
    w("/* full canonical decompositions: sorted code points, offset << 3 | length into the pool */\n")
    array("uint32_t", "uni_decomp_keys", dkeys, 12)
    array("uint32_t", "uni_decomp_info", dinfo, 12)
    array("uint32_t", "uni_decomp_pool", pool, 12)
    w("#define UNI_NDECOMP %d\n\n" % len(dkeys))
    w("/* primary composites: first, second, composite; sorted by (first, second) */\n")
    array("uint32_t", "uni_comp", [x for t in comps for x in t], 12)
    w("#define UNI_NCOMP %d\n\n" % len(comps))
    w("#endif\n")
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main()
