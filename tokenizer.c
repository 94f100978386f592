/* tokenizer.c - CLIP's tokenizer: UTF-8 text -> token ids.
 *
 * Reproduces Hugging Face's CLIPTokenizer (tokenizers backend, the
 * tokenizer.json of openai/clip-vit-base-patch32), step by step:
 *
 *   1. added tokens   <|startoftext|>, <|endoftext|> are cut out of the raw
 *                     text first and map straight to their ids
 *   2. normalizer     NFC -> every run of white space becomes " " -> lowercase
 *   3. pre-tokenizer  regex <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d
 *                     |[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+ (matches kept, the rest
 *                     dropped), then ByteLevel: UTF-8 bytes -> GPT-2 byte alphabet
 *                     (the two literals, from tokenizer.json, only matter for
 *                     text like "<|ENDOFTEXT|>" that lowercasing turns into them)
 *   4. model          byte-level BPE, last symbol of a word carries "</w>"
 *   5. post-processor [bos] + ids + [eos]; truncation keeps the first
 *                     context_length - 2 ids; padding (on request) with pad_id
 *
 * Unicode versions: letters, digits, white space and lowercase follow the UCD
 * that unicode_tables.h was made from (15.0); Hugging Face's Oniguruma and
 * Rust know Unicode 16, so the few thousand characters assigned after 15.0
 * (CJK extension I, Garay, Egyptian hieroglyphs extended-A, ...) can
 * tokenize differently. NFC uses Unicode 9.0 data, as the crate
 * unicode-normalization-alignments in tokenizers does.
 *
 * Invalid UTF-8: the input is decoded the way Python's
 * bytes.decode("utf-8", errors="replace") does it: every maximal subpart of
 * an ill-formed sequence (Unicode 15, section 3.9, "U+FFFD substitution of
 * maximal subparts"; also what the WHATWG decoder does) becomes one U+FFFD.
 * So raw bytes tokenize exactly as Hugging Face tokenizes the string that
 * Python gets from them with errors="replace". Surrogate code points encoded
 * in UTF-8 (ED A0..BF ..) are ill-formed too.
 *
 * Unicode data comes from unicode_tables.h (see data/gen_unicode_tables.py
 * for which version each table follows).
 *
 * The serialized tokenizer section (written by convert.py) is, little-endian:
 *   u32 n_vocab, n_merges, n_added, blob_bytes
 *   i32 bos_id, eos_id, pad_id, unk_id, context_length
 *   u32 offsets[n_vocab + 1]      token i = blob[offsets[i] .. offsets[i+1])
 *   i32 merges[n_merges][3]       left, right, merged; rank order
 *   i32 added_ids[n_added]
 *   u8  blob[blob_bytes]
 */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "unicode_tables.h"

#define SECTION_HEADER 36
#define MAX_CONTEXT (1 << 20)
#define EMPTY_KEY UINT64_MAX

/* the CLIP BPE's end_of_word_suffix */
static const char end_of_word[] = "</w>";

typedef struct {
    uint64_t key;      /* (uint64_t)left << 32 | right, EMPTY_KEY if free */
    int32_t rank;      /* position in merges.txt; lower merges first */
    int32_t merged;    /* id of left + right */
} merge_slot;

typedef struct {
    int32_t id;
    uint32_t first;    /* index of its first code point in added_cps */
    uint32_t len;      /* number of code points */
    int32_t next;      /* next added token in the same first-character bucket */
} added_token;

struct clip_tokenizer {
    int n_vocab, n_merges, n_added;
    int bos_id, eos_id, pad_id, unk_id, context_length;
    int32_t byte_id[256];       /* id of the byte's symbol, -1 if not in vocab */
    int32_t byte_id_end[256];   /* id of the byte's symbol + "</w>" */
    merge_slot *merges;         /* open addressing, merge_mask + 1 slots */
    uint32_t merge_mask;
    added_token *added;
    uint32_t *added_cps;
    int32_t added_head[256];    /* bucket by (first code point & 255) */
};

/* a little-endian int32 (two's complement, whatever the machine's) */
static int32_t rd_i32(const uint8_t *p)
{
    uint32_t u = rd32le(p);
    return u <= INT32_MAX ? (int32_t)u : -(int32_t)(~u) - 1;
}

/* malloc(n * size), NULL when that overflows size_t (32-bit targets) */
static void *alloc_array(size_t n, size_t size)
{
    if (n == 0)
        n = 1;
    if (n > SIZE_MAX / size)
        return NULL;
    return malloc(n * size);
}

/* ---------------------------------------------------------------------- */
/* Unicode lookups (unicode_tables.h)                                      */
/* ---------------------------------------------------------------------- */

/* flags << 8 | canonical combining class of code point c (< 0x110000) */
static unsigned uni_props(uint32_t c)
{
    return uni_values[uni_stage2[((unsigned)uni_stage1[c >> UNI_SHIFT] << UNI_SHIFT) | (c & UNI_MASK)]];
}

static int find_u32(const uint32_t *keys, int n, int stride, uint32_t c)
{
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        uint32_t k = keys[(size_t)mid * stride];
        if (k == c)
            return mid;
        if (k < c)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

#define HANGUL_S 0xAC00
#define HANGUL_L 0x1100
#define HANGUL_V 0x1161
#define HANGUL_T 0x11A7
#define HANGUL_NV 21
#define HANGUL_NT 28
#define HANGUL_NS (19 * 21 * 28)

/* canonical composition of a starter and the next character, 0 if none */
static uint32_t compose_pair(uint32_t a, uint32_t b)
{
    int lo = 0, hi = UNI_NCOMP - 1;
    if (a >= HANGUL_L && a < HANGUL_L + 19 && b >= HANGUL_V && b < HANGUL_V + HANGUL_NV)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_NV + (b - HANGUL_V)) * HANGUL_NT;
    if (a >= HANGUL_S && a < HANGUL_S + HANGUL_NS && (a - HANGUL_S) % HANGUL_NT == 0 &&
        b > HANGUL_T && b < HANGUL_T + HANGUL_NT)
        return a + (b - HANGUL_T);
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const uint32_t *e = uni_comp + (size_t)mid * 3;
        if (e[0] == a && e[1] == b)
            return e[2];
        if (e[0] < a || (e[0] == a && e[1] < b))
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Loading the serialized section                                          */
/* ---------------------------------------------------------------------- */

static uint32_t hash_bytes(const uint8_t *s, size_t n)
{
    uint32_t h = 2166136261u;   /* FNV-1a */
    size_t i;
    for (i = 0; i < n; i++)
        h = (h ^ s[i]) * 16777619u;
    return h;
}

static uint32_t hash_pair(uint64_t key)
{
    key ^= key >> 31;
    key *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(key >> 32);
}

static const merge_slot *find_merge(const clip_tokenizer *tok, int32_t left, int32_t right)
{
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    uint32_t i = hash_pair(key) & tok->merge_mask;
    for (;;) {
        const merge_slot *s = &tok->merges[i];
        if (s->key == key)
            return s;
        if (s->key == EMPTY_KEY)
            return NULL;
        i = (i + 1) & tok->merge_mask;
    }
}

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the
 * others for 256, 257, ... in byte order */
static uint32_t byte_to_char(int b)
{
    int n = 0, i;
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
        return (uint32_t)b;
    for (i = 0; i < b; i++)
        if (!((i >= '!' && i <= '~') || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF)))
            n++;
    return 256 + (uint32_t)n;
}

static int utf8_put(uint8_t *out, uint32_t c)
{
    if (c < 0x80) {
        out[0] = (uint8_t)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (uint8_t)(0xC0 | c >> 6);
        out[1] = (uint8_t)(0x80 | (c & 63));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (uint8_t)(0xE0 | c >> 12);
        out[1] = (uint8_t)(0x80 | (c >> 6 & 63));
        out[2] = (uint8_t)(0x80 | (c & 63));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | c >> 18);
    out[1] = (uint8_t)(0x80 | (c >> 12 & 63));
    out[2] = (uint8_t)(0x80 | (c >> 6 & 63));
    out[3] = (uint8_t)(0x80 | (c & 63));
    return 4;
}

/* Decode one UTF-8 sequence at s[0..n) (n >= 1) into *c; returns the bytes
 * used. An ill-formed sequence gives U+FFFD and consumes its maximal
 * subpart (at least one byte). */
static size_t utf8_get(const uint8_t *s, size_t n, uint32_t *c)
{
    uint8_t b = s[0], lo = 0x80, hi = 0xBF;
    size_t need, i;
    uint32_t v;
    if (b < 0x80) {
        *c = b;
        return 1;
    }
    if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
        v = b & 0x1F;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        v = b & 0x0F;
        if (b == 0xE0)
            lo = 0xA0;
        if (b == 0xED)
            hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        v = b & 0x07;
        if (b == 0xF0)
            lo = 0x90;
        if (b == 0xF4)
            hi = 0x8F;
    } else {
        *c = 0xFFFD;
        return 1;
    }
    for (i = 1; i <= need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *c = 0xFFFD;
            return i;
        }
        v = v << 6 | (s[i] & 0x3F);
        lo = 0x80;
        hi = 0xBF;
    }
    *c = v;
    return need + 1;
}

/* string of token id */
#define TOKEN_STR(blob, off, id) ((blob) + (off)[(id)])
#define TOKEN_LEN(off, id) ((size_t)((off)[(id) + 1] - (off)[(id)]))

/* id of the token whose string is s[0..n), -1 if none (vocab hash table) */
static int32_t vocab_find(const int32_t *table, uint32_t mask, const uint8_t *blob,
                          const uint32_t *off, const uint8_t *s, size_t n)
{
    uint32_t i = hash_bytes(s, n) & mask;
    for (;;) {
        int32_t id = table[i];
        if (id < 0)
            return -1;
        if (TOKEN_LEN(off, id) == n && memcmp(TOKEN_STR(blob, off, id), s, n) == 0)
            return id;
        i = (i + 1) & mask;
    }
}

void clip_tokenizer_free(clip_tokenizer *tok)
{
    if (!tok)
        return;
    free(tok->merges);
    free(tok->added);
    free(tok->added_cps);
    free(tok);
}

/* The section's counts and where its parts are (see the top of the file). */
typedef struct {
    uint32_t n_vocab, n_merges, n_added, blob_bytes;
    const uint8_t *offsets, *merges, *added, *blob;
} section;

/* Job 1: the header. The counts must be plausible and add up to the
 * section's size exactly; the special ids must be ids of the vocabulary
 * (pad and unk may be -1: none). */
static int read_header(clip_tokenizer *tok, section *s, const uint8_t *sec, size_t size, char *err)
{
    uint64_t want;
    if (size < SECTION_HEADER)
        return clip_fail(err, CLIP_EINPUT, "tokenizer section is %lu bytes, shorter than its 36-byte header",
                         (unsigned long)size);
    s->n_vocab = rd32le(sec);
    s->n_merges = rd32le(sec + 4);
    s->n_added = rd32le(sec + 8);
    s->blob_bytes = rd32le(sec + 12);
    if (s->n_vocab == 0 || s->n_vocab > INT32_MAX / 2 || s->n_merges > INT32_MAX / 2 || s->n_added > INT32_MAX / 2)
        return clip_fail(err, CLIP_EINPUT, "tokenizer section has implausible counts (%lu tokens, %lu merges, %lu added tokens)",
                         (unsigned long)s->n_vocab, (unsigned long)s->n_merges, (unsigned long)s->n_added);
    want = SECTION_HEADER + 4 * ((uint64_t)s->n_vocab + 1) + 12 * (uint64_t)s->n_merges +
           4 * (uint64_t)s->n_added + s->blob_bytes;
    if (want != (uint64_t)size)
        return clip_fail(err, CLIP_EINPUT, "tokenizer section is %lu bytes but its counts say %llu",
                         (unsigned long)size, (unsigned long long)want);
    s->offsets = sec + SECTION_HEADER;
    s->merges = s->offsets + 4 * ((size_t)s->n_vocab + 1);
    s->added = s->merges + 12 * (size_t)s->n_merges;
    s->blob = s->added + 4 * (size_t)s->n_added;

    tok->n_vocab = (int)s->n_vocab;
    tok->n_merges = (int)s->n_merges;
    tok->n_added = (int)s->n_added;
    tok->bos_id = rd_i32(sec + 16);
    tok->eos_id = rd_i32(sec + 20);
    tok->pad_id = rd_i32(sec + 24);
    tok->unk_id = rd_i32(sec + 28);
    tok->context_length = rd_i32(sec + 32);
    if (tok->bos_id < 0 || tok->bos_id >= tok->n_vocab || tok->eos_id < 0 || tok->eos_id >= tok->n_vocab)
        return clip_fail(err, CLIP_EINPUT, "tokenizer: bos id %d or eos id %d is not a token id (vocabulary of %d)",
                         tok->bos_id, tok->eos_id, tok->n_vocab);
    if (tok->pad_id < -1 || tok->pad_id >= tok->n_vocab || tok->unk_id < -1 || tok->unk_id >= tok->n_vocab)
        return clip_fail(err, CLIP_EINPUT, "tokenizer: pad id %d or unk id %d is neither -1 nor a token id (vocabulary of %d)",
                         tok->pad_id, tok->unk_id, tok->n_vocab);
    if (tok->context_length < 2 || tok->context_length > MAX_CONTEXT)
        return clip_fail(err, CLIP_EINPUT, "tokenizer: context length %d is not between 2 and %d",
                         tok->context_length, MAX_CONTEXT);
    return CLIP_OK;
}

/* Job 2: the token strings' offsets into the blob, off[n_vocab + 1]: they
 * start at 0, never decrease, and end at the blob's end. */
static int read_offsets(const section *s, uint32_t *off, char *err)
{
    uint32_t i, prev = 0;
    for (i = 0; i <= s->n_vocab; i++) {
        off[i] = rd32le(s->offsets + 4 * (size_t)i);
        if ((i == 0 && off[i] != 0) || off[i] < prev || off[i] > s->blob_bytes)
            return clip_fail(err, CLIP_EINPUT, "tokenizer: string offset %lu (%lu) is out of order or past the %lu-byte blob",
                             (unsigned long)i, (unsigned long)off[i], (unsigned long)s->blob_bytes);
        prev = off[i];
    }
    if (off[s->n_vocab] != s->blob_bytes)
        return clip_fail(err, CLIP_EINPUT, "tokenizer: the strings end at byte %lu of a %lu-byte blob",
                         (unsigned long)off[s->n_vocab], (unsigned long)s->blob_bytes);
    return CLIP_OK;
}

/* Job 3: the vocabulary (HF BPE's vocab: string -> id), a hash table used
 * while loading only; every string must be unique. Then the ids of the 256
 * byte symbols, alone and as the last symbol of a word (+ "</w>"). */
static int index_vocab(clip_tokenizer *tok, const section *s, const uint32_t *off, int32_t *vtab, uint32_t vmask,
                       char *err)
{
    uint32_t i;
    memset(vtab, 0xFF, ((size_t)vmask + 1) * sizeof *vtab);
    for (i = 0; i < s->n_vocab; i++) {
        const uint8_t *str = TOKEN_STR(s->blob, off, i);
        size_t n = TOKEN_LEN(off, i);
        uint32_t h;
        if (n == 0)
            continue;   /* a missing id */
        h = hash_bytes(str, n) & vmask;
        while (vtab[h] >= 0) {
            int32_t o = vtab[h];
            if (TOKEN_LEN(off, o) == n && memcmp(TOKEN_STR(s->blob, off, o), str, n) == 0)
                return clip_fail(err, CLIP_EINPUT, "tokenizer: tokens %ld and %lu have the same string",
                                 (long)o, (unsigned long)i);
            h = (h + 1) & vmask;
        }
        vtab[h] = (int32_t)i;
    }
    for (i = 0; i < 256; i++) {
        uint8_t str[16];
        int n = utf8_put(str, byte_to_char((int)i));
        tok->byte_id[i] = vocab_find(vtab, vmask, s->blob, off, str, (size_t)n);
        memcpy(str + n, end_of_word, sizeof end_of_word - 1);
        tok->byte_id_end[i] = vocab_find(vtab, vmask, s->blob, off, str, (size_t)n + sizeof end_of_word - 1);
    }
    return CLIP_OK;
}

/* Job 4: the merges (HF BPE's MergeMap: (left, right) -> (rank, merged)):
 * ids in range, merged = vocab[left + right]; a repeated pair takes the
 * later rank, as HF's hash map does. */
static int build_merges(clip_tokenizer *tok, const section *s, const uint32_t *off, char *err)
{
    uint32_t nslots, i;
    for (nslots = 16; nslots / 2 < s->n_merges; nslots *= 2)
        ;
    tok->merge_mask = nslots - 1;
    tok->merges = alloc_array(nslots, sizeof *tok->merges);
    if (!tok->merges)
        return clip_fail(err, CLIP_ENOMEM, "out of memory while loading the tokenizer");
    for (i = 0; i < nslots; i++)
        tok->merges[i].key = EMPTY_KEY;
    for (i = 0; i < s->n_merges; i++) {
        const uint8_t *m = s->merges + 12 * (size_t)i;
        int32_t a = rd_i32(m), b = rd_i32(m + 4), c = rd_i32(m + 8);
        uint64_t key;
        uint32_t h;
        size_t la, lb;
        if (a < 0 || a >= tok->n_vocab || b < 0 || b >= tok->n_vocab || c < 0 || c >= tok->n_vocab)
            return clip_fail(err, CLIP_EINPUT, "tokenizer merge %lu (%ld, %ld -> %ld): an id is outside the vocabulary of %d",
                             (unsigned long)i, (long)a, (long)b, (long)c, tok->n_vocab);
        la = TOKEN_LEN(off, a);
        lb = TOKEN_LEN(off, b);
        if (la == 0 || lb == 0 || TOKEN_LEN(off, c) != la + lb ||
            memcmp(TOKEN_STR(s->blob, off, c), TOKEN_STR(s->blob, off, a), la) != 0 ||
            memcmp(TOKEN_STR(s->blob, off, c) + la, TOKEN_STR(s->blob, off, b), lb) != 0)
            return clip_fail(err, CLIP_EINPUT, "tokenizer merge %lu: token %ld is not the concatenation of tokens %ld and %ld",
                             (unsigned long)i, (long)c, (long)a, (long)b);
        key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        h = hash_pair(key) & tok->merge_mask;
        while (tok->merges[h].key != EMPTY_KEY && tok->merges[h].key != key)
            h = (h + 1) & tok->merge_mask;
        tok->merges[h].key = key;
        tok->merges[h].rank = (int32_t)i;
        tok->merges[h].merged = c;
    }
    return CLIP_OK;
}

/* Job 5: the added tokens (HF AddedVocabulary): their strings as code
 * points, bucketed by the first one. */
static int read_added(clip_tokenizer *tok, const section *s, const uint32_t *off, char *err)
{
    size_t total = 0, n_cps = 0;
    uint32_t i, j;
    for (i = 0; i < 256; i++)
        tok->added_head[i] = -1;
    if (!s->n_added)
        return CLIP_OK;
    tok->added = alloc_array(s->n_added, sizeof *tok->added);
    if (!tok->added)
        return clip_fail(err, CLIP_ENOMEM, "out of memory while loading the tokenizer");
    for (i = 0; i < s->n_added; i++) {
        int32_t id = rd_i32(s->added + 4 * (size_t)i);
        if (id < 0 || id >= tok->n_vocab || TOKEN_LEN(off, id) == 0)
            return clip_fail(err, CLIP_EINPUT, "tokenizer: added token %lu has id %ld, which is not a token with a string",
                             (unsigned long)i, (long)id);
        total += TOKEN_LEN(off, id);
    }
    tok->added_cps = alloc_array(total, sizeof *tok->added_cps);
    if (!tok->added_cps)
        return clip_fail(err, CLIP_ENOMEM, "out of memory while loading the tokenizer");
    for (i = s->n_added; i-- > 0;) {
        int32_t id = rd_i32(s->added + 4 * (size_t)i);
        const uint8_t *str = TOKEN_STR(s->blob, off, id);
        size_t n = TOKEN_LEN(off, id), k = 0;
        added_token *t = &tok->added[i];
        t->id = id;
        t->first = (uint32_t)n_cps;
        while (k < n) {
            uint32_t c;
            size_t used = utf8_get(str + k, n - k, &c);
            if (c == 0xFFFD && !(used == 3 && str[k] == 0xEF && str[k + 1] == 0xBF && str[k + 2] == 0xBD))
                return clip_fail(err, CLIP_EINPUT, "tokenizer: added token %ld is not valid UTF-8", (long)id);
            tok->added_cps[n_cps++] = c;
            k += used;
        }
        t->len = (uint32_t)(n_cps - t->first);
        j = tok->added_cps[t->first] & 255;
        t->next = tok->added_head[j];
        tok->added_head[j] = (int32_t)i;
    }
    return CLIP_OK;
}

/* Parse and check the tokenizer section, then build what tokenizing needs:
 * the merge table, the byte-symbol ids and the added-token matcher. */
int clip_tokenizer_load(clip_tokenizer **out, const uint8_t *sec, size_t size, char *err)
{
    clip_tokenizer *tok;
    section s;
    uint32_t *off = NULL, vmask = 0;
    int32_t *vtab = NULL;
    int rc;

    if (out)
        *out = NULL;
    if (!out || (!sec && size))
        return clip_fail(err, CLIP_EINPUT, "clip_tokenizer_load was called with a NULL pointer");
    if (!(tok = calloc(1, sizeof *tok)))
        return clip_fail(err, CLIP_ENOMEM, "out of memory while loading the tokenizer");
    memset(&s, 0, sizeof s);
    rc = read_header(tok, &s, sec, size, err);
    if (!rc) {
        for (vmask = 15; vmask / 2 < s.n_vocab; vmask = vmask * 2 + 1)
            ;
        off = alloc_array((size_t)s.n_vocab + 1, sizeof *off);
        vtab = alloc_array((size_t)vmask + 1, sizeof *vtab);
        if (!off || !vtab)
            rc = clip_fail(err, CLIP_ENOMEM, "out of memory while loading the tokenizer");
    }
    if (!rc) rc = read_offsets(&s, off, err);
    if (!rc) rc = index_vocab(tok, &s, off, vtab, vmask, err);
    if (!rc) rc = build_merges(tok, &s, off, err);
    if (!rc) rc = read_added(tok, &s, off, err);
    free(off);
    free(vtab);
    if (rc) {
        clip_tokenizer_free(tok);
        return rc;
    }
    *out = tok;
    return CLIP_OK;
}

int clip_tokenizer_context_length(const clip_tokenizer *tok)
{
    return tok ? tok->context_length : 0;
}

/* ---------------------------------------------------------------------- */
/* Tokenizing                                                              */
/* ---------------------------------------------------------------------- */

typedef struct {
    uint64_t key;   /* rank << 32 | position of the left symbol */
    int32_t merged;
} heap_entry;

/* a growable array: room for cap elements at p */
typedef struct {
    void *p;
    size_t cap;
} buffer;

/* scratch buffers of one clip_tokenize call */
typedef struct {
    const clip_tokenizer *tok;
    buffer cps;          /* uint32_t: the decoded input */
    buffer nfc;          /* uint32_t: NFC of one segment */
    buffer tmp;          /* uint32_t: canonical ordering scratch */
    buffer low;          /* uint32_t: white space collapsed, lowercased */
    buffer sym;          /* int32_t: BPE symbols of one word */
    buffer prev, next;   /* int32_t: each symbol's neighbours */
    buffer heap;         /* heap_entry: the merge queue */
    buffer ids;          /* int32_t: content ids */
    size_t n_ids;
    size_t limit;        /* stop after this many content ids */
    char *err;
} work;

static int out_of_memory(work *w)
{
    clip_fail(w->err, CLIP_ENOMEM, "out of memory while tokenizing");
    return -1;
}

/* Room for at least `need` elements of `size` bytes in b (the capacity
 * doubles, from 64); returns b->p, or NULL with the message set. */
static void *reserve(work *w, buffer *b, size_t need, size_t size)
{
    size_t n = b->cap ? b->cap : 64;
    void *p = NULL;
    if (need <= b->cap)
        return b->p;
    while (n < need && n <= SIZE_MAX / 2)
        n *= 2;
    if (n >= need && n <= SIZE_MAX / size)
        p = realloc(b->p, n * size);
    if (!p) {
        out_of_memory(w);
        return NULL;
    }
    b->p = p;
    b->cap = n;
    return p;
}

static void free_work(work *w)
{
    free(w->cps.p);
    free(w->nfc.p);
    free(w->tmp.p);
    free(w->low.p);
    free(w->sym.p);
    free(w->prev.p);
    free(w->next.p);
    free(w->heap.p);
    free(w->ids.p);
}

static int push_id(work *w, int32_t id)
{
    int32_t *ids;
    if (w->n_ids >= (size_t)INT_MAX - 2 - (size_t)w->tok->context_length) {
        clip_fail(w->err, CLIP_EINPUT, "the text gives more tokens than an int can count");
        return -1;
    }
    if (!(ids = reserve(w, &w->ids, w->n_ids + 1, sizeof *ids)))
        return -1;
    ids[w->n_ids++] = id;
    return 0;
}

/* Normalizer step 1, Unicode NFC (unicode-normalization-alignments):
 * full canonical decomposition, canonical ordering of each run of
 * non-starters (stable sort by combining class), canonical composition.
 * in[0..n) -> w->nfc, returns the length or -1. */
static long normalize_nfc(work *w, const uint32_t *in, size_t n)
{
    size_t i, m = 0, out, run;
    long starter = -1;
    int last = -1;
    uint32_t *d;
    if (n > SIZE_MAX / 4 / 3 || n > LONG_MAX / 3)
        return out_of_memory(w);
    if (!(d = reserve(w, &w->nfc, 3 * n + 1, sizeof *d)))
        return -1;

    /* decompose (Hangul algorithmically); a decomposition has up to 4 code
     * points, so the buffer grows as needed */
    for (i = 0; i < n; i++) {
        uint32_t c = in[i];
        if (m + 4 > w->nfc.cap && !(d = reserve(w, &w->nfc, m + 4, sizeof *d)))
            return -1;
        if (c >= 0xC0 && (uni_props(c) >> 8 & UNI_DECOMP)) {
            if (c >= HANGUL_S && c < HANGUL_S + HANGUL_NS) {
                uint32_t s = c - HANGUL_S;
                d[m++] = HANGUL_L + s / (HANGUL_NV * HANGUL_NT);
                d[m++] = HANGUL_V + s % (HANGUL_NV * HANGUL_NT) / HANGUL_NT;
                if (s % HANGUL_NT)
                    d[m++] = HANGUL_T + s % HANGUL_NT;
            } else {
                int k = find_u32(uni_decomp_keys, UNI_NDECOMP, 1, c);
                uint32_t info = k >= 0 ? uni_decomp_info[k] : 0, len = info & 7, j;
                const uint32_t *src = uni_decomp_pool + (info >> 3);
                if (k < 0)   /* flag without entry: cannot happen with generated tables */
                    d[m++] = c;
                if (m + len > w->nfc.cap && !(d = reserve(w, &w->nfc, m + len, sizeof *d)))
                    return -1;
                for (j = 0; j < len; j++)
                    d[m++] = src[j];
            }
        } else {
            d[m++] = c;
        }
    }

    /* canonical ordering: stable sort of each run of non-starters by class */
    for (i = 0; i < m; i = run) {
        size_t k;
        run = i + 1;
        if (d[i] < 0x300 || (uni_props(d[i]) & 255) == 0)
            continue;
        while (run < m && d[run] >= 0x300 && (uni_props(d[run]) & 255) != 0)
            run++;
        if (run - i <= 32) {
            for (k = i + 1; k < run; k++) {
                uint32_t c = d[k];
                unsigned cc = uni_props(c) & 255;
                size_t j = k;
                while (j > i && (uni_props(d[j - 1]) & 255) > cc) {
                    d[j] = d[j - 1];
                    j--;
                }
                d[j] = c;
            }
        } else {   /* counting sort: long runs stay linear */
            size_t count[257], len = run - i;
            uint32_t *t = reserve(w, &w->tmp, len, sizeof *t);
            if (!t)
                return -1;
            memset(count, 0, sizeof count);
            for (k = i; k < run; k++)
                count[(uni_props(d[k]) & 255) + 1]++;
            for (k = 1; k < 257; k++)
                count[k] += count[k - 1];
            for (k = i; k < run; k++)
                t[count[uni_props(d[k]) & 255]++] = d[k];
            memcpy(d + i, t, len * sizeof *t);
        }
    }

    /* compose: each character joins the last starter unless blocked by a
     * character of class 0 or of a class >= its own in between */
    for (i = 0, out = 0; i < m; i++) {
        uint32_t c = d[i];
        unsigned p = c < 0x300 ? 0 : uni_props(c);
        int cc = (int)(p & 255);
        if (starter >= 0 && (p >> 8 & UNI_COMP2) && (last < 0 || last < cc)) {
            uint32_t r = compose_pair(d[starter], c);
            if (r) {
                d[starter] = r;
                continue;
            }
        }
        if (cc == 0) {
            starter = (long)out;
            last = -1;
        } else if (starter >= 0) {
            last = cc;
        }
        d[out++] = c;
    }
    return (long)out;
}

/* Normalizer steps 2 and 3: Replace(\s+ -> " ") then Lowercase (Rust's
 * char::to_lowercase, no context rules). Lowercase never makes white space,
 * so one pass does both. w->nfc[0..n) -> w->low, returns the length or -1. */
static long normalize_space_lower(work *w, size_t n)
{
    size_t i, m = 0;
    int in_space = 0;
    const uint32_t *in = w->nfc.p;
    uint32_t *o;
    if (n > SIZE_MAX / 4 / 3 || n > LONG_MAX / 3)
        return out_of_memory(w);
    if (!(o = reserve(w, &w->low, 3 * n + 1, sizeof *o)))
        return -1;
    for (i = 0; i < n; i++) {
        uint32_t c = in[i];
        unsigned f;
        if (c < 0x80) {
            if (c == ' ' || (c >= 9 && c <= 13)) {
                if (!in_space)
                    o[m++] = ' ';
                in_space = 1;
                continue;
            }
            in_space = 0;
            o[m++] = (c >= 'A' && c <= 'Z') ? c + 32 : c;
            continue;
        }
        f = uni_props(c) >> 8;
        if (f & UNI_SPACE) {
            if (!in_space)
                o[m++] = ' ';
            in_space = 1;
            continue;
        }
        in_space = 0;
        if (f & UNI_LOWER) {
            int k = find_u32(uni_lower_multi, UNI_NLOWER_MULTI, 5, c);
            if (k >= 0) {
                const uint32_t *e = uni_lower_multi + (size_t)k * 5;
                uint32_t j;
                for (j = 0; j < e[1]; j++)
                    o[m++] = e[2 + j];
                continue;
            }
            k = find_u32(uni_lower1, UNI_NLOWER1, 2, c);
            if (k >= 0)
                c = uni_lower1[(size_t)k * 2 + 1];
        }
        o[m++] = c;
    }
    return (long)m;
}

/* min-heap on (rank, position), as HF's merge queue */
static void heap_push(heap_entry *h, size_t *n, heap_entry e)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h[parent].key <= e.key)
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = e;
}

static heap_entry heap_pop(heap_entry *h, size_t *n)
{
    heap_entry top = h[0], last = h[--*n];
    size_t i = 0, size = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= size)
            break;
        if (c + 1 < size && h[c + 1].key < h[c].key)
            c++;
        if (last.key <= h[c].key)
            break;
        h[i] = h[c];
        i = c;
    }
    if (size)
        h[i] = last;
    return top;
}

static void queue_pair(const clip_tokenizer *tok, heap_entry *h, size_t *nh,
                       int32_t left, int32_t right, size_t pos)
{
    const merge_slot *s = find_merge(tok, left, right);
    if (s) {
        heap_entry e;
        e.key = (uint64_t)(uint32_t)s->rank << 32 | (uint64_t)pos;
        e.merged = s->merged;
        heap_push(h, nh, e);
    }
}

/* Model: BPE on one pre-token given as code points (HF BPE::merge_word
 * and Word::merge_all). Each UTF-8 byte of the word is one symbol, the
 * last one with "</w>"; a byte missing from the vocabulary becomes unk (or
 * is dropped without one). Then repeatedly merge the adjacent pair of
 * lowest rank (leftmost first) until none is in merges. */
static int bpe_word(work *w, const uint32_t *cps, size_t n)
{
    const clip_tokenizer *tok = w->tok;
    size_t nb = 0, i, nh = 0;
    int32_t *sym;
    if (n > INT32_MAX / 4) {
        clip_fail(w->err, CLIP_EINPUT, "a word of the text is longer than %ld characters", (long)(INT32_MAX / 4));
        return -1;
    }
    if (!(sym = reserve(w, &w->sym, 4 * n, sizeof *sym)))
        return -1;

    /* ByteLevel: the word's UTF-8 bytes, each one symbol */
    for (i = 0; i < n; i++) {
        uint8_t b[4];
        int k, len = utf8_put(b, cps[i]);
        for (k = 0; k < len; k++) {
            int last = i + 1 == n && k + 1 == len;
            int32_t id = last ? tok->byte_id_end[b[k]] : tok->byte_id[b[k]];
            if (id < 0)
                id = tok->unk_id;
            if (id >= 0)
                sym[nb++] = id;
        }
    }
    if (nb >= 2) {
        int32_t *prev = reserve(w, &w->prev, nb, sizeof *prev), *next = reserve(w, &w->next, nb, sizeof *next);
        heap_entry *heap = reserve(w, &w->heap, 3 * nb, sizeof *heap);
        if (!prev || !next || !heap)
            return -1;
        for (i = 0; i < nb; i++) {
            prev[i] = (int32_t)i - 1;
            next[i] = i + 1 < nb ? (int32_t)i + 1 : -1;
        }
        for (i = 0; i + 1 < nb; i++)
            queue_pair(tok, heap, &nh, sym[i], sym[i + 1], i);
        while (nh) {
            heap_entry top = heap_pop(heap, &nh);
            size_t pos = (size_t)(top.key & 0xFFFFFFFFu);
            int32_t right;
            const merge_slot *s;
            if (sym[pos] < 0 || next[pos] < 0)
                continue;   /* merged away, or the last symbol */
            right = next[pos];
            s = find_merge(tok, sym[pos], sym[right]);
            if (!s || s->merged != top.merged)
                continue;   /* stale entry */
            sym[pos] = top.merged;
            next[pos] = next[right];
            sym[right] = -1;
            if (next[pos] >= 0)
                prev[next[pos]] = (int32_t)pos;
            if (prev[pos] >= 0)
                queue_pair(tok, heap, &nh, sym[prev[pos]], sym[pos], (size_t)prev[pos]);
            if (next[pos] >= 0)
                queue_pair(tok, heap, &nh, sym[pos], sym[next[pos]], pos);
        }
    }
    for (i = 0; i < nb && w->n_ids < w->limit; i++)
        if (sym[i] >= 0 && push_id(w, sym[i]) < 0)
            return -1;
    return 0;
}

static int is_word_char(uint32_t c, unsigned mask)
{
    if (c < 0x80) {
        if ((c | 32) >= 'a' && (c | 32) <= 'z')
            return (mask & UNI_LETTER) != 0;
        if (c >= '0' && c <= '9')
            return (mask & UNI_NUMBER) != 0;
        if (c == ' ' || (c >= 9 && c <= 13))
            return (mask & UNI_SPACE) != 0;
        return 0;
    }
    return (uni_props(c) >> 8 & mask) != 0;
}

static int matches_ascii(const uint32_t *s, size_t n, const char *lit)
{
    size_t i;
    for (i = 0; lit[i]; i++)
        if (i >= n || s[i] != (uint32_t)(unsigned char)lit[i])
            return 0;
    return 1;
}

/* Pre-tokenizer: Split on CLIP's regex (matches kept), then ByteLevel with
 * its GPT-2 regex, which leaves every piece whole except the literal
 * special tokens: "<|endoftext|>" becomes "<|", "endoftext", "|>". */
static int pretokenize(work *w, const uint32_t *s, size_t n)
{
    static const char *const contractions[] = { "'s", "'t", "'re", "'ve", "'m", "'ll", "'d" };
    static const char *const specials[] = { "<|startoftext|>", "<|endoftext|>" };
    size_t i = 0, j;
    while (i < n && w->n_ids < w->limit) {
        uint32_t c = s[i];
        int k, done = 0;
        if (is_word_char(c, UNI_SPACE)) {
            i++;
            continue;
        }
        if (c == '<') {
            for (k = 0; k < 2 && !done; k++) {
                size_t len = strlen(specials[k]);
                if (matches_ascii(s + i, n - i, specials[k])) {
                    if (bpe_word(w, s + i, 2) < 0 || bpe_word(w, s + i + 2, len - 4) < 0 ||
                        bpe_word(w, s + i + len - 2, 2) < 0)
                        return -1;
                    i += len;
                    done = 1;
                }
            }
        } else if (c == '\'') {
            for (k = 0; k < 7 && !done; k++) {
                if (matches_ascii(s + i, n - i, contractions[k])) {
                    size_t len = strlen(contractions[k]);
                    if (bpe_word(w, s + i, len) < 0)
                        return -1;
                    i += len;
                    done = 1;
                }
            }
        }
        if (done)
            continue;
        j = i + 1;
        if (is_word_char(c, UNI_LETTER)) {
            while (j < n && is_word_char(s[j], UNI_LETTER))
                j++;
        } else if (!is_word_char(c, UNI_NUMBER)) {
            while (j < n && !is_word_char(s[j], UNI_LETTER | UNI_NUMBER | UNI_SPACE))
                j++;
        }
        if (bpe_word(w, s + i, j - i) < 0)
            return -1;
        i = j;
    }
    return 0;
}

static int is_space(uint32_t c)
{
    return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x80 && (uni_props(c) >> 8 & UNI_SPACE));
}

/* One piece of text between added tokens: normalize, pre-tokenize, BPE.
 * Long pieces go in chunks that end just before a run of white space: white
 * space never composes, reorders or joins a pre-token, so the chunks give
 * the same ids as the whole, with small buffers and an early stop. */
#define CHUNK 8192
static int encode_segment(work *w, const uint32_t *cps, size_t n)
{
    size_t start = 0, end;
    long m;
    while (start < n && w->n_ids < w->limit) {
        end = n;
        if (n - start > CHUNK) {
            end = start + CHUNK;
            while (end < n && !(is_space(cps[end]) && !is_space(cps[end - 1])))
                end++;
        }
        m = normalize_nfc(w, cps + start, end - start);
        if (m < 0)
            return -1;
        m = normalize_space_lower(w, (size_t)m);
        if (m < 0 || pretokenize(w, w->low.p, (size_t)m) < 0)
            return -1;
        start = end;
    }
    return 0;
}

/* the longest added token starting at s[0..n), or NULL (HF AddedVocabulary:
 * aho-corasick, leftmost-longest) */
static const added_token *match_added(const clip_tokenizer *tok, const uint32_t *s, size_t n)
{
    const added_token *best = NULL;
    int32_t i;
    for (i = tok->added_head[s[0] & 255]; i >= 0; i = tok->added[i].next) {
        const added_token *t = &tok->added[i];
        if (t->len <= n && (!best || t->len > best->len) &&
            memcmp(tok->added_cps + t->first, s, t->len * sizeof *s) == 0)
            best = t;
    }
    return best;
}

int clip_tokenize(const clip_tokenizer *tok, const char *text, size_t len,
                  int32_t *ids, int max_ids, int flags, char *err)
{
    work w;
    const uint8_t *s = (const uint8_t *)text;
    const int32_t *content_ids;
    uint32_t *cps;
    size_t n = 0, i, start, total, k, content;
    int result = -1;

    if (!tok || (!text && len) || (!ids && max_ids > 0) || max_ids < 0) {
        clip_fail(err, CLIP_EINPUT, "clip_tokenize was called with a NULL pointer or a negative buffer size");
        return -1;
    }
    if (flags & ~(CLIP_TOKENIZE_PAD | CLIP_TOKENIZE_NO_TRUNCATE)) {
        clip_fail(err, CLIP_EINPUT, "clip_tokenize was called with unknown flags 0x%x", (unsigned)flags);
        return -1;
    }
    if ((flags & CLIP_TOKENIZE_PAD) && tok->pad_id < 0) {
        clip_fail(err, CLIP_EINPUT, "this tokenizer has no pad token, so it cannot pad");
        return -1;
    }
    if (len > (size_t)INT_MAX) {
        clip_fail(err, CLIP_EINPUT, "the text is %lu bytes, more than the %d the tokenizer accepts",
                  (unsigned long)len, INT_MAX);
        return -1;
    }
    memset(&w, 0, sizeof w);
    w.tok = tok;
    w.err = err;
    w.limit = (flags & CLIP_TOKENIZE_NO_TRUNCATE) ? SIZE_MAX : (size_t)tok->context_length - 2;

    /* bytes -> code points, ill-formed UTF-8 -> U+FFFD */
    if (!(cps = reserve(&w, &w.cps, len + 1, sizeof *cps)))
        goto done;
    for (i = 0; i < len;)
        i += utf8_get(s + i, len - i, &cps[n++]);

    /* added tokens split the raw text; the pieces between are encoded */
    for (i = 0, start = 0; i < n && w.n_ids < w.limit; i++) {
        const added_token *t = tok->n_added ? match_added(tok, cps + i, n - i) : NULL;
        if (!t)
            continue;
        if (encode_segment(&w, cps + start, i - start) < 0)
            goto done;
        if (w.n_ids < w.limit && push_id(&w, t->id) < 0)
            goto done;
        i += t->len - 1;
        start = i + 1;
    }
    if (w.n_ids < w.limit && start < n && encode_segment(&w, cps + start, n - start) < 0)
        goto done;

    /* post-processor: [bos] + ids + [eos], then padding */
    content = w.n_ids < w.limit ? w.n_ids : w.limit;
    content_ids = w.ids.p;
    total = content + 2;
    if ((flags & CLIP_TOKENIZE_PAD) && total < (size_t)tok->context_length)
        total = (size_t)tok->context_length;
    if (total > (size_t)max_ids && !(flags & CLIP_TOKENIZE_NO_TRUNCATE)) {
        clip_fail(err, CLIP_EINPUT, "the ids buffer holds %d ids but the text needs %lu", max_ids, (unsigned long)total);
        goto done;
    }
    for (k = 0; k < total && k < (size_t)max_ids; k++) {
        if (k == 0)
            ids[k] = tok->bos_id;
        else if (k <= content)
            ids[k] = content_ids[k - 1];
        else if (k == content + 1)
            ids[k] = tok->eos_id;
        else
            ids[k] = tok->pad_id;
    }
    result = (int)total;
done:
    free_work(&w);
    return result;
}
