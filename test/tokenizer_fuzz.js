#!/usr/bin/env node
// Differential test of tokenizer.c against Hugging Face tokenizers (Rust, for
// Node: npm package @anush008/tokenizers, installed by `cd test && npm install`).
//
//   node test/tokenizer_fuzz.js N SEED --driver TOK_DRIVER --section SECTION [--tokenizer tokenizer.json] [--pad ID]
//   node test/tokenizer_fuzz.js 0 1 --codepoints --driver ... --section ...   every code point, in context
//   node test/tokenizer_fuzz.js 0 1 --bench --driver ... --section ...
//
// Generates N strings from SEED that mix many scripts and the corner cases of
// CLIP's normalizer and pre-tokenizer, plus raw byte strings (ill-formed UTF-8,
// which the C side gets as bytes and Hugging Face as the string the WHATWG
// decoder makes of them (BOM kept), U+FFFD per maximal subpart, as Python's
// errors="replace" does). Both tokenize each one; the ids must be equal:
// untruncated, truncated to the context (77) and padded. test_tokenizer.py runs
// this with the driver and section it builds. Exit status 1 on any mismatch.
'use strict';
const fs = require('fs');
const path = require('path');
const os = require('os');
const { execFileSync } = require('child_process');

const argv = process.argv.slice(2);
function opt(name, def) {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : def;
}
const COUNT = parseInt(argv[0] || '1000', 10);
const SEED = parseInt(argv[1] || '1', 10);
const DRIVER = opt('--driver', process.env.CLIP_TOK_DRIVER);
const SECTION = opt('--section', process.env.CLIP_TOK_SECTION);
// the golden data test/common.py extracts from test/golden/ (any test suite run does it)
const GOLDEN = path.join(__dirname, 'out', 'golden');
const TOKENIZER_JSON = opt('--tokenizer', path.join(GOLDEN, 'tokenizer', 'tokenizer.json'));
const CONTEXT = 77;
const PAD_ID = opt('--pad', null);   // tokenizer_config.json's pad token id; default <|endoftext|>
if (!DRIVER || !SECTION) {
  console.error('usage: node test/tokenizer_fuzz.js N SEED --driver TOK_DRIVER --section SECTION [--bench]');
  console.error('(python3 test/test_tokenizer.py --fuzz N --seed SEED builds both and runs this)');
  process.exit(2);
}
const { Tokenizer } = require(path.join(__dirname, 'node_modules', '@anush008', 'tokenizers'));
const hf = Tokenizer.fromFile(TOKENIZER_JSON);

// ---------------------------------------------------------------------------
// Random strings
// ---------------------------------------------------------------------------

let state = (BigInt(SEED) * 0x9E3779B97F4A7C15n + 1n) & 0xFFFFFFFFFFFFFFFFn;
function rnd32() { // xorshift64*
  state ^= state >> 12n; state ^= (state << 25n) & 0xFFFFFFFFFFFFFFFFn; state ^= state >> 27n;
  return Number(((state * 2685821657736338717n) & 0xFFFFFFFFFFFFFFFFn) >> 32n);
}
const rnd = (n) => rnd32() % n;
const pick = (a) => a[rnd(a.length)];
const range = (lo, hi) => String.fromCodePoint(lo + rnd(hi - lo + 1));
const chars = (s) => Array.from(s);

const LATIN = chars('àáâãäåæçèéêëìíîïðñòóôõöøùúûüýþÿÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖØÙÚÛÜÝÞŁŻĻŚĆŃĘĄőűŐŰşŞğĞčšžČŠŽřŘůŮạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹǅǈǋǲ');
const MARKS = [[0x300, 0x36F], [0x483, 0x489], [0x591, 0x5C7], [0x610, 0x61A], [0x64B, 0x65F], [0x6D6, 0x6ED],
  [0x93C, 0x94D], [0x951, 0x954], [0xE31, 0xE3A], [0xE47, 0xE4E], [0x1AB0, 0x1ACE], [0x1DC0, 0x1DFF],
  [0x20D0, 0x20F0], [0xFE20, 0xFE2F], [0x302A, 0x302F], [0x3099, 0x309A], [0x1D165, 0x1D169], [0x1D16D, 0x1D172],
  [0x0898, 0x089F], [0x10EFD, 0x10EFF], [0x0D3B, 0x0D3C], [0x0EBA, 0x0EBA], [0x11930, 0x11935], [0x0B3E, 0x0B57],
  [0x0BBE, 0x0BD7], [0x0CC2, 0x0CD6], [0x0D3E, 0x0D57], [0x0DCF, 0x0DDF], [0x102E, 0x102E], [0x1B35, 0x1B35]];
const SPACES = [0x9, 0xA, 0xB, 0xC, 0xD, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005,
  0x2006, 0x2007, 0x2008, 0x2009, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
  0x1C, 0x1D, 0x1E, 0x1F, 0x200B, 0x180E, 0xFEFF, 0x2060].map((c) => String.fromCodePoint(c));
const DIGITS = [[0x30, 0x39], [0x660, 0x669], [0x6F0, 0x6F9], [0x966, 0x96F], [0xE50, 0xE59], [0xFF10, 0xFF19],
  [0x1D7CE, 0x1D7FF], [0x2460, 0x249B], [0x2160, 0x2188], [0xB2, 0xB3], [0xBC, 0xBE], [0x1040, 0x1049],
  [0x10107, 0x10133], [0x1F100, 0x1F10C], [0x3007, 0x3007], [0x16AC0, 0x16AC9], [0x11F50, 0x11F59]];
const APOS = ["'s", "'S", "'t", "'T", "'re", "'RE", "'ve", "'Ve", "'m", "'M", "'ll", "'LL", "'Ll", "'d", "'D",
  "’s", "''", "'", "'x", "'''s", "n't", "N'T", "'s'", "'sss", "'lll", "'rex", "!'s", "a'b"];
const SPECIAL = ['<|endoftext|>', '<|startoftext|>', '<|endoftext|', '<|ENDOFTEXT|>', '<|StartOfText|>',
  '<|startoftext', '|>', '<|', '<|<|endoftext|>|>', '<|endoftext|><|endoftext|>', '<<|endoftext|>>',
  '<|endoftext|>\u0301', 'x<|startoftext|>y', '!<|ENDOFTEXT|>', '<|endoftext|>\u00A0 ', '＜|endoftext|＞',
  '<|end\u200Boftext|>', '<|ＥＮＤＯＦＴＥＸＴ|>', '<|ᴇɴᴅ|>', '<|endoftext|>s', "<|endoftext|>'s"];
const CASE = chars('İıΣσςẞßȺȾKΩÅǄǅǆᾈᾼΐΰﬀﬁﬃẚŉǰΆΈΉΊΌΎΏϴϹϾᏸᏹꭰⰀⴀᲐꙀꚘꞫꞲꟀ𐐀𐒰𐲀𑢠𖹀𞤀ῼͿԨꟇꟉꟵⱯⱰ');
const EMOJI = [[0x1F600, 0x1F64F], [0x1F300, 0x1F5FF], [0x1F900, 0x1F9FF], [0x2600, 0x26FF], [0x1FA70, 0x1FAFF]];
function emoji() {
  const k = rnd(6);
  if (k === 0) return range(0x1F1E6, 0x1F1FF) + range(0x1F1E6, 0x1F1FF);                  // flag
  if (k === 1) return range(0x1F466, 0x1F469) + '\u200D' + range(0x1F466, 0x1F469) + (rnd(2) ? '\u200D' + range(0x1F466, 0x1F469) : '');
  if (k === 2) return range(0x1F44A, 0x1F450) + range(0x1F3FB, 0x1F3FF);                  // skin tone
  if (k === 3) return '\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}'; // tag sequence
  if (k === 4) return range(0x2600, 0x26FF) + '\uFE0F';
  const r = pick(EMOJI);
  return range(r[0], r[1]);
}
function hangul() {
  const k = rnd(5);
  if (k === 0) return range(0xAC00, 0xD7A3);
  if (k === 1) return range(0x1100, 0x1112) + range(0x1161, 0x1175) + (rnd(2) ? range(0x11A7, 0x11C2) : '');
  if (k === 2) return range(0xAC00, 0xD7A3) + range(0x11A7, 0x11C3);                        // LV(T) + T
  if (k === 3) return range(0x1100, 0x115F) + range(0x1160, 0x11A7);                        // old jamo
  return range(0xA960, 0xA97C) + range(0xD7B0, 0xD7C6) + range(0x3131, 0x318E);
}
function marks(n) {
  let s = '';
  for (let i = 0; i < n; i++) { const r = pick(MARKS); s += range(r[0], r[1]); }
  return s;
}
// unicode_tables.h holds the Unicode version of the UCD it was made from
// (Debian's, 15.0); Hugging Face's Oniguruma and Rust know newer characters
// (16.0). Random code points are drawn only where both must agree: assigned
// in that version, or still unassigned in JavaScript's newer Unicode.
const UCD_VERSION = (() => {
  const m = /#define UNI_VERSION "(\d+)\.(\d+)/.exec(fs.readFileSync(path.join(__dirname, '..', 'unicode_tables.h'), 'utf8'));
  return [Number(m[1]), Number(m[2])];
})();
const ASSIGNED = (() => {
  const file = path.join(process.env.CLIP_UCD || '/usr/share/unicode', 'DerivedAge.txt');
  if (!fs.existsSync(file)) return null;
  const set = new Uint8Array(0x110000);
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^([0-9A-F]+)(?:\.\.([0-9A-F]+))?\s*;\s*(\d+)\.(\d+)/.exec(line);
    if (!m) continue;
    const major = Number(m[3]); const minor = Number(m[4]);
    if (major > UCD_VERSION[0] || (major === UCD_VERSION[0] && minor > UCD_VERSION[1])) continue;
    for (let c = parseInt(m[1], 16); c <= parseInt(m[2] || m[1], 16); c++) set[c] = 1;
  }
  return set;
})();
const UNASSIGNED = /^\p{Cn}$/u;
function comparable(c) {
  if (c >= 0xD800 && c < 0xE000) return false;
  if (!ASSIGNED) return c < 0x800;   // without DerivedAge.txt: old scripts only
  return ASSIGNED[c] === 1 || UNASSIGNED.test(String.fromCodePoint(c));
}
function anyChar() {
  for (;;) {
    const k = rnd(10);
    let c;
    if (k < 3) c = rnd(0x110000);
    else if (k < 6) c = rnd(0x3400);
    else if (k < 8) c = rnd(0x10000);
    else c = 0x10000 + rnd(0x30000);
    if (comparable(c)) return String.fromCodePoint(c);
  }
}
const WORDS = ['a', 'photo', 'of', 'the', 'cat', 'dog', 'Hello', 'WORLD', 'it', 'CamelCase', 'x', 'don', 'naïve',
  'café', 'Straße', 'İstanbul', 'ΟΔΥΣΣΕΥΣ', 'Москва', '日本語', '한국어', 'العربية', 'हिन्दी', 'ภาษาไทย', 'שלום',
  'ⅫⅫ', '1,000', '3.14', 'e-mail', 'user@example.com', 'https://x.org/a?b=c', '$100', '#tag', '@who', '...', '!?'];

function atom() {
  const k = rnd(22);
  switch (k) {
    case 0: return pick(WORDS);
    case 1: return pick(LATIN);
    case 2: return pick(LATIN) + marks(1 + rnd(3));
    case 3: return String.fromCodePoint(0x61 + rnd(26)) + marks(1 + rnd(5));            // out-of-order marks
    case 4: return range(0x391, 0x3A9) + range(0x3B1, 0x3C9) + (rnd(2) ? 'Σ' : 'ς') + range(0x384, 0x3CE);
    case 5: return range(0x400, 0x4FF) + range(0x400, 0x52F);
    case 6: return range(0x4E00, 0x9FFF) + (rnd(3) ? '' : range(0xF900, 0xFAFF)) + (rnd(4) ? '' : range(0x20000, 0x2A6DF));
    case 7: return hangul();
    case 8: return range(0x600, 0x6FF) + range(0x750, 0x77F) + (rnd(2) ? marks(1) : '');
    case 9: return range(0x900, 0x97F) + range(0x900, 0x97F) + (rnd(3) ? '' : '\u093C');
    case 10: return range(0xE00, 0xE7F) + range(0xE00, 0xE7F);
    case 11: return emoji();
    case 12: return pick(SPACES).repeat(1 + rnd(3));
    case 13: { const r = pick(DIGITS); return range(r[0], r[1]) + (rnd(2) ? range(r[0], r[1]) : ''); }
    case 14: return pick(APOS);
    case 15: return pick(SPECIAL);
    case 16: return pick(CASE) + (rnd(2) ? pick(CASE) : '');
    case 17: return anyChar() + (rnd(2) ? anyChar() : '');
    case 18: return String.fromCodePoint(rnd(0x80));
    case 19: return chars('!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~¡¿«»“”‘’—–…·•©®™°±×÷§¶€£¥¢₹')[rnd(48)];
    case 20: return range(0x590, 0x5FF) + range(0x5D0, 0x5EA);
    default: return pick(WORDS).toUpperCase();
  }
}

function randomString() {
  if (rnd(500) === 0) { // long text: tokenizer.c works on it in chunks cut before white space
    let s = '';
    const n = 9000 + rnd(20000);
    while (s.length < n) s += atom() + (rnd(2) ? pick(SPACES) : '');
    return s;
  }
  const k = rnd(100);
  if (k === 0) { // a long word
    const n = 200 + rnd(5000);
    let s = '';
    const base = pick(['a', 'ab', 'é', '中', 'xyz', 'Σ', 'İ', 'ab\u0301', '!', '1', 'ᄀ']);
    if (rnd(2)) { while (s.length < n) s += base; } else { for (let i = 0; i < n; i++) s += String.fromCodePoint(0x61 + rnd(26)); }
    return s;
  }
  let s = '';
  const n = rnd(k < 80 ? 12 : 60);
  for (let i = 0; i < n; i++) {
    s += atom();
    if (rnd(3) === 0) s += ' ';
  }
  return s;
}

function randomBytes() {
  const pieces = [[0xED, 0xA0, 0x80], [0xC0, 0x80], [0xE2, 0x82], [0xF4, 0x90, 0x80, 0x80], [0xFF], [0x80],
    [0xF0, 0x9F, 0x98], [0xE0, 0x80, 0xAF], [0xF0, 0x8F, 0xBF, 0xBF], [0xC3, 0xA9], [0x65, 0xCC, 0x81],
    [0xF8, 0x88, 0x80, 0x80, 0x80], [0xEF, 0xBF, 0xBD], [0xC4, 0xB0], [0x27, 0x73], [0x20]];
  const out = [];
  const n = rnd(40);
  for (let i = 0; i < n; i++) {
    const k = rnd(4);
    if (k === 0) out.push(rnd(256));
    else if (k === 1) out.push(...pick(pieces));
    else if (k === 2) out.push(...Buffer.from(atom(), 'utf8'));
    else { const b = Buffer.from(atom(), 'utf8'); out.push(...b.subarray(0, Math.max(0, b.length - 1))); }
  }
  return Buffer.from(out);
}

// ---------------------------------------------------------------------------
// Running both sides
// ---------------------------------------------------------------------------

function record(bytes, flags, maxIds) {
  const h = Buffer.alloc(12);
  h.writeUInt32LE(flags, 0); h.writeUInt32LE(maxIds, 4); h.writeUInt32LE(bytes.length, 8);
  return Buffer.concat([h, bytes]);
}

function runDriver(records) {
  const out = execFileSync(DRIVER, [SECTION], { input: Buffer.concat(records), maxBuffer: 1 << 30 }).toString();
  const lines = out.split('\n'); lines.pop();
  return lines.map((l) => l.split(' ').map(Number));
}

async function hfIds(strings) {
  const out = [];
  for (let i = 0; i < strings.length; i += 500) {
    const encs = await hf.encodeBatch(strings.slice(i, i + 500), { addSpecialTokens: true });
    for (const e of encs) out.push(Array.from(e.getIds()));
  }
  return out;
}

function same(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

async function fuzz() {
  const inputs = [];   // {bytes, str}
  for (let i = 0; i < COUNT; i++) {
    if (rnd(10) === 0) {
      const bytes = randomBytes();
      const str = new TextDecoder('utf-8', { ignoreBOM: true }).decode(bytes);   // keep a BOM, as Python does
      if (!Array.from(str).every((ch) => comparable(ch.codePointAt(0)))) { i--; continue; }
      inputs.push({ bytes, str });
    } else {
      const str = randomString();
      inputs.push({ bytes: Buffer.from(str, 'utf8'), str });
    }
  }
  const records = [];
  for (const x of inputs) {
    records.push(record(x.bytes, 2, 1 << 20));     // NO_TRUNCATE
    records.push(record(x.bytes, 0, CONTEXT));     // truncated
    records.push(record(x.bytes, 1, CONTEXT));     // padded
  }
  const c = runDriver(records);
  const h = await hfIds(inputs.map((x) => x.str));
  const bad = [];
  const eos = h.length ? h[0][h[0].length - 1] : 0;
  for (let i = 0; i < inputs.length; i++) {
    const full = h[i];
    const cut = full.length <= CONTEXT ? full : full.slice(0, CONTEXT - 1).concat([eos]);
    const pad = cut.concat(Array(CONTEXT - cut.length).fill(PAD_ID === null ? eos : Number(PAD_ID)));
    const [cf, ct, cp] = [c[3 * i], c[3 * i + 1], c[3 * i + 2]];
    const ok = cf[0] === full.length && same(cf.slice(1), full) && ct[0] === cut.length && same(ct.slice(1), cut) &&
      cp[0] === CONTEXT && same(cp.slice(1), pad);
    if (!ok) bad.push({ i, str: inputs[i].str, bytes: inputs[i].bytes.toString('hex').slice(0, 200), hf: full.slice(0, 40), c: cf.slice(1, 41) });
  }
  console.log(`fuzz: ${inputs.length} strings (seed ${SEED}), ${bad.length} mismatches`);
  for (const b of bad.slice(0, 5)) console.log(JSON.stringify(b));
  return bad.length === 0;
}

// ---------------------------------------------------------------------------
// Throughput, both in this one run: 1 MB of mixed text, and many short captions
// ---------------------------------------------------------------------------

async function bench() {
  // Hugging Face's time grows faster than linearly with the length of one
  // string (128 KB in one call takes about a second), so the megabyte goes in
  // 1 KB pieces; one 64 KB call is timed on its own.
  const mixedText = (bytes) => {
    let s = '';
    while (Buffer.byteLength(s) < bytes) s += (rnd(10) < 6 ? pick(WORDS) : atom()) + ' ';
    return s;
  };
  const pieces = [];
  for (let i = 0; i < 1024; i++) pieces.push(mixedText(1024));
  const captions = [];
  const things = ['cat', 'dog', 'car', 'bird', 'man', 'woman', 'child', 'tree', 'house', 'plane', 'boat', 'horse'];
  const adjs = ['red', 'small', 'happy', 'old', 'shiny', 'blurry', 'beautiful', 'dark'];
  for (let i = 0; i < 20000; i++) {
    captions.push(`a ${pick(['photo', 'picture', 'drawing', 'painting'])} of a ${pick(adjs)} ${pick(things)} ` +
      `${pick(['on the beach', 'in a park', 'at night', 'next to a ' + pick(things), 'with ' + pick(adjs) + ' eyes'])}.`);
  }
  const cases = [['1 MB of mixed text in 1 KB pieces', pieces], ['64 KB of mixed text in one call', [mixedText(65536)]],
    ['20000 short captions', captions]];
  const results = [];
  for (const [name, texts] of cases) {
    // Hugging Face: best of 3, one call per text (encodeBatch when many)
    let best = Infinity; let tokens = 0;
    for (let r = 0; r < 3; r++) {
      const t = process.hrtime.bigint();
      let n = 0;
      if (texts.length === 1) {
        const e = await hf.encode(texts[0], null, { addSpecialTokens: true });
        n = e.getIds().length;
      } else {
        const encs = await hf.encodeBatch(texts, { addSpecialTokens: true });
        for (const e of encs) n += e.getLength();
      }
      const dt = Number(process.hrtime.bigint() - t) / 1e9;
      if (dt < best) best = dt;
      tokens = n;
    }
    // C: the driver times clip_tokenize itself (best of 3), NO_TRUNCATE
    const file = path.join(os.tmpdir(), `clip_tok_bench_${process.pid}.bin`);
    fs.writeFileSync(file, Buffer.concat(texts.map((s) => record(Buffer.from(s, 'utf8'), 2, 0))));
    const c = JSON.parse(execFileSync(DRIVER, [SECTION, '--bench', file, '3']).toString());
    fs.unlinkSync(file);
    results.push({ name, bytes: c.bytes, hf_tokens: tokens, c_tokens: c.tokens, hf_s: best, c_s: c.seconds, load_ms: c.load_ms });
  }
  for (const r of results) {
    console.log(`${r.name}: ${r.bytes} bytes, ${r.c_tokens} tokens (HF ${r.hf_tokens}); ` +
      `C ${(r.c_tokens / r.c_s / 1e6).toFixed(2)} M tokens/s (${(r.c_s * 1e3).toFixed(1)} ms), ` +
      `HF ${(r.hf_tokens / r.hf_s / 1e6).toFixed(2)} M tokens/s (${(r.hf_s * 1e3).toFixed(1)} ms); ` +
      `C/HF speed ratio ${(r.hf_s / r.c_s).toFixed(2)}`);
  }
  console.log(`C tokenizer load (49408 tokens, 48894 merges): ${results[0].load_ms.toFixed(2)} ms`);
  return results.every((r) => r.hf_tokens === r.c_tokens);
}

// ---------------------------------------------------------------------------
// Every code point, in context: "a" c c "1" c "'" c "A" c " "
// ---------------------------------------------------------------------------

async function codepoints() {
  const probe = (c) => { const x = String.fromCodePoint(c); return 'a' + x + x + '1' + x + "'" + x + 'A' + x + ' '; };
  const all = [];
  for (let c = 0; c < 0x110000; c++) if (c < 0xD800 || c >= 0xE000) all.push(c);
  const groups = [];
  for (let i = 0; i < all.length; i += 8) groups.push(all.slice(i, i + 8));
  const differ = async (list) => {
    const strs = list.map((g) => g.map(probe).join(''));
    const c = runDriver(strs.map((s) => record(Buffer.from(s, 'utf8'), 2, 1 << 16)));
    const h = await hfIds(strs);
    return list.filter((g, i) => !(c[i][0] === h[i].length && same(c[i].slice(1), h[i])));
  };
  let bad = [];
  for (let i = 0; i < groups.length; i += 20000) bad = bad.concat(await differ(groups.slice(i, i + 20000)));
  const single = await differ([].concat(...bad).map((c) => [c]));
  const cps = single.map((g) => g[0]);
  const unexpected = cps.filter(comparable);
  const hex = (c) => 'U+' + c.toString(16).toUpperCase().padStart(4, '0');
  console.log(`codepoints: ${all.length} code points, ${cps.length} tokenize differently; ` +
    `${cps.length - unexpected.length} of them are assigned after Unicode ${UCD_VERSION.join('.')}, ` +
    `${unexpected.length} are not`);
  if (cps.length) console.log('  newer: ' + cps.filter((c) => !comparable(c)).slice(0, 12).map(hex).join(' ') + ' ...');
  if (unexpected.length) console.log('  UNEXPECTED: ' + unexpected.slice(0, 40).map(hex).join(' '));
  return unexpected.length === 0;
}

(async () => {
  let ok = true;
  if (argv.includes('--codepoints')) ok = await codepoints();
  if (argv.includes('--bench')) ok = (await bench()) && ok;
  if (COUNT > 0) ok = (await fuzz()) && ok;
  process.exit(ok ? 0 : 1);
})().catch((e) => { console.error(e); process.exit(1); });
