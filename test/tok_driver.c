/* tok_driver.c - a small command-line front end to tokenizer.c for the tests.
 *
 *   tok_driver SECTION                      batch: records on stdin, one line out each
 *   tok_driver SECTION --bench FILE REPEAT  time clip_tokenize over the records of FILE
 *   tok_driver SECTION --random N SEED [NVOCAB]  N random byte strings: no crash, sane ids
 *   tok_driver SECTION --sections N SEED    N damaged copies of the section: load refuses
 *                                           or the tokenizer works; never a crash
 *   tok_driver SECTION --stress             a 100,000-character word and 1 MB of text
 *
 * A record is: u32 flags, u32 max_ids, u32 length, then length bytes (little-endian).
 * Batch output per record: "RET id id ...\n" (min(RET, max_ids) ids), or "-1 message\n".
 * SECTION is a tokenizer section as convert.py writes it into a model file.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../clip.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* processor time, so that a busy machine does not fail the time limits */
static double cpu_now(void)
{
    return (double)clock() / CLOCKS_PER_SEC;
}

static uint8_t *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0, got;
    if (!f)
        return NULL;
    for (;;) {
        if (n == cap) {
            uint8_t *p = realloc(buf, cap ? 2 * cap : 1 << 16);
            if (!p) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = p;
            cap = cap ? 2 * cap : 1 << 16;
        }
        got = fread(buf + n, 1, cap - n, f);
        if (got == 0)
            break;
        n += got;
    }
    fclose(f);
    /* an exact-size copy, so that the sanitizer sees any read past the end */
    {
        uint8_t *exact = malloc(n ? n : 1);
        if (exact)
            memcpy(exact, buf, n);
        free(buf);
        *size = n;
        return exact;
    }
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rng_state;
static uint32_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

static int batch(const clip_tokenizer *tok)
{
    uint8_t hdr[12];
    char *text = NULL;
    int32_t *ids = NULL;
    size_t cap_text = 0, cap_ids = 0;
    char err[CLIP_ERR_SIZE];
    while (fread(hdr, 1, 12, stdin) == 12) {
        uint32_t flags = get_u32(hdr), max_ids = get_u32(hdr + 4), len = get_u32(hdr + 8);
        int ret, i;
        if (len + 1 > cap_text) {
            char *p = realloc(text, len + 1);
            if (!p)
                return 1;
            text = p;
            cap_text = len + 1;
        }
        if (max_ids + 1 > cap_ids) {
            int32_t *p = realloc(ids, (max_ids + 1) * sizeof *ids);
            if (!p)
                return 1;
            ids = p;
            cap_ids = max_ids + 1;
        }
        if (len && fread(text, 1, len, stdin) != len)
            return 1;
        ret = clip_tokenize(tok, text, len, ids, (int)max_ids, (int)flags, err);
        if (ret < 0) {
            printf("-1 %s\n", err);
            continue;
        }
        printf("%d", ret);
        for (i = 0; i < ret && i < (int)max_ids; i++)
            printf(" %d", ids[i]);
        printf("\n");
    }
    free(text);
    free(ids);
    return 0;
}

static int bench(const uint8_t *section, size_t section_size, const clip_tokenizer *tok,
                 const char *path, int repeat)
{
    size_t size, pos, n_records = 0, i;
    uint8_t *data = read_file(path, &size);
    int32_t *ids;
    double t0, best = 1e30, load_best = 1e30;
    long long tokens = 0, bytes = 0;
    int r;
    char err[CLIP_ERR_SIZE];
    if (!data) {
        fprintf(stderr, "tok_driver: cannot read %s\n", path);
        return 1;
    }
    ids = malloc(sizeof *ids * (1 << 22));
    if (!ids)
        return 1;
    for (r = 0; r < repeat; r++) {
        long long tk = 0, by = 0;
        t0 = now();
        for (pos = 0, n_records = 0; pos + 12 <= size; n_records++) {
            uint32_t flags = get_u32(data + pos), len = get_u32(data + pos + 8);
            int ret = clip_tokenize(tok, (const char *)data + pos + 12, len, ids, 1 << 22, (int)flags, err);
            if (ret < 0) {
                fprintf(stderr, "tok_driver: %s\n", err);
                return 1;
            }
            tk += ret;
            by += len;
            pos += 12 + len;
        }
        t0 = now() - t0;
        if (t0 < best)
            best = t0;
        tokens = tk;
        bytes = by;
    }
    for (i = 0; i < 20; i++) {
        clip_tokenizer *t2;
        t0 = now();
        if (clip_tokenizer_load(&t2, section, section_size, err) != 0)
            return 1;
        t0 = now() - t0;
        clip_tokenizer_free(t2);
        if (t0 < load_best)
            load_best = t0;
    }
    printf("{\"records\": %lu, \"bytes\": %lld, \"tokens\": %lld, \"seconds\": %.6f, \"load_ms\": %.3f}\n",
           (unsigned long)n_records, bytes, tokens, best, load_best * 1e3);
    free(ids);
    free(data);
    return 0;
}

/* one random byte string: raw bytes, broken UTF-8, or text with specials */
static size_t random_text(uint8_t *buf, size_t cap)
{
    static const char *const pieces[] = {
        "<|endoftext|>", "<|startoftext|>", "<|endoftext|", "<|ENDOFTEXT|>", "'s", "'LL", " ",
        "\xc3\xa9", "e\xcc\x81", "\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8", "\xc4\xb0", "\xce\xa3",
        "\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7", "\xe3\x80\x80", "A", "z", "9", "!",
        "\xed\xa0\x80", "\xc0\x80", "\xe2\x82", "\xf4\x90\x80\x80", "\xff", "\x80", "\xf0\x9f\x98"
    };
    size_t n = 0, len = rnd() % 300;
    int kind = rnd() % 4;
    if (rnd() % 200 == 0)
        len = rnd() % 20000;
    if (len > cap - 32)
        len = cap - 32;
    while (n < len) {
        if (kind == 0) {
            buf[n++] = (uint8_t)rnd();
        } else if (kind == 1) {   /* a code point, sometimes out of range or a surrogate */
            uint32_t c = rnd() % 0x110800, k = rnd() % 8;
            if (k == 0)
                c = rnd() % 0x80;
            if (c < 0x80)
                buf[n++] = (uint8_t)c;
            else if (c < 0x800) {
                buf[n++] = (uint8_t)(0xC0 | c >> 6);
                buf[n++] = (uint8_t)(0x80 | (c & 63));
            } else if (c < 0x10000) {
                buf[n++] = (uint8_t)(0xE0 | c >> 12);
                buf[n++] = (uint8_t)(0x80 | (c >> 6 & 63));
                buf[n++] = (uint8_t)(0x80 | (c & 63));
            } else {
                buf[n++] = (uint8_t)(0xF0 | c >> 18);
                buf[n++] = (uint8_t)(0x80 | (c >> 12 & 63));
                buf[n++] = (uint8_t)(0x80 | (c >> 6 & 63));
                buf[n++] = (uint8_t)(0x80 | (c & 63));
            }
            if (k == 1 && n > 0)
                n--;   /* truncate the sequence */
        } else {
            const char *p = pieces[rnd() % (sizeof pieces / sizeof *pieces)];
            size_t l = strlen(p);
            memcpy(buf + n, p, l);
            n += l;
            if (kind == 3 && rnd() % 4 == 0)
                buf[n++] = (uint8_t)rnd();
        }
    }
    return n;
}

static int random_inputs(const clip_tokenizer *tok, int count, int ctx, int n_vocab_hint)
{
    static uint8_t buf[20100];
    static int32_t full[80000], cut[80000];
    static const int max_ids_choices[] = { 0, 1, 2, 5, 76, 77, 78, 200, 80000 };
    char err[CLIP_ERR_SIZE];
    int i, failures = 0;
    for (i = 0; i < count; i++) {
        size_t n = random_text(buf, sizeof buf);
        int flags = (int)(rnd() % 4), k;
        int max_ids = max_ids_choices[rnd() % 9];
        int ret = clip_tokenize(tok, (const char *)buf, n, cut, max_ids, flags, err);
        int ret_full = clip_tokenize(tok, (const char *)buf, n, full, 80000, CLIP_TOKENIZE_NO_TRUNCATE, err);
        int bad = 0;
        if (ret_full < 2)
            bad = 1;
        for (k = 0; !bad && k < ret_full && k < 80000; k++)
            if (full[k] < 0 || full[k] >= n_vocab_hint)
                bad = 1;
        if (!bad && ret >= 0) {
            int want = (flags & CLIP_TOKENIZE_NO_TRUNCATE) ? ret_full : (ret_full < ctx ? ret_full : ctx);
            if ((flags & CLIP_TOKENIZE_PAD) && want < ctx)
                want = ctx;
            if (ret != want)
                bad = 2;
            for (k = 0; !bad && k < ret && k < max_ids; k++) {
                int32_t expect;
                int content = (ret_full < ctx || (flags & CLIP_TOKENIZE_NO_TRUNCATE)) ? ret_full - 2 : ctx - 2;
                if (k <= content)
                    expect = full[k];
                else if (k == content + 1)
                    expect = full[ret_full - 1];
                else
                    expect = -2;   /* padding: checked below */
                if (expect != -2 && cut[k] != expect)
                    bad = 3;
            }
        } else if (!bad && ret < 0) {
            /* only a too-small buffer may fail */
            int need = ret_full < ctx ? ret_full : ctx;
            if ((flags & CLIP_TOKENIZE_PAD))
                need = ctx;
            if ((flags & CLIP_TOKENIZE_NO_TRUNCATE) || need <= max_ids)
                bad = 4;
        }
        if (bad) {
            failures++;
            if (failures <= 5)
                fprintf(stderr, "random input %d: check %d failed (ret %d, full %d, flags %d, max_ids %d)\n",
                        i, bad, ret, ret_full, flags, max_ids);
        }
    }
    printf("random: %d inputs, %d failures\n", count, failures);
    return failures != 0;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static int damaged_sections(const uint8_t *section, size_t size, int count)
{
    char err[CLIP_ERR_SIZE];
    int i, loaded = 0, refused = 0;
    uint32_t n_vocab = size >= 36 ? get_u32(section) : 0, n_merges = size >= 36 ? get_u32(section + 4) : 0;
    for (i = 0; i < count; i++) {
        size_t n = size, k;
        uint8_t *copy;
        clip_tokenizer *tok;
        int kind = (int)(rnd() % 5);
        if (kind == 0)
            n = rnd() % (size + 1);   /* truncated */
        copy = malloc(n ? n : 1);
        if (!copy)
            return 1;
        memcpy(copy, section, n);
        if ((kind == 1 || kind == 2) && n > 0) {   /* a few bytes changed, often in the header or offsets */
            int flips = 1 + (int)(rnd() % 4);
            for (k = 0; k < (size_t)flips; k++) {
                size_t at = (rnd() % 2) ? rnd() % (n < 4096 ? n : 4096) : rnd() % n;
                copy[at] = kind == 2 ? (uint8_t)rnd() : (uint8_t)(copy[at] ^ (1u << (rnd() % 8)));
            }
        } else if (kind >= 3 && n >= 36 && n_vocab > 0) {   /* still valid: other ids, context, merge order */
            size_t merges = 36 + 4 * ((size_t)n_vocab + 1);
            put_u32(copy + 24, rnd() % 2 ? (uint32_t)-1 : rnd() % n_vocab);   /* pad */
            put_u32(copy + 28, rnd() % 2 ? (uint32_t)-1 : rnd() % n_vocab);   /* unk */
            put_u32(copy + 32, 2 + rnd() % 100);                               /* context length */
            for (k = 0; n_merges > 1 && k < 1000; k++) {
                uint8_t t[12];
                size_t a = merges + 12 * (size_t)(rnd() % n_merges), b = merges + 12 * (size_t)(rnd() % n_merges);
                memcpy(t, copy + a, 12);
                memcpy(copy + a, copy + b, 12);
                memcpy(copy + b, t, 12);
            }
        }
        if (clip_tokenizer_load(&tok, copy, n, err) == 0) {
            int32_t ids[100];
            const char *text = "A photo of a <|endoftext|> cat's \xc3\xa9t\xc3\xa9 \xe4\xb8\xad \xff\xfe 12";
            loaded++;
            clip_tokenize(tok, text, strlen(text), ids, 100, 0, err);
            clip_tokenize(tok, text, strlen(text), ids, 100, CLIP_TOKENIZE_PAD | CLIP_TOKENIZE_NO_TRUNCATE, err);
            clip_tokenizer_free(tok);
        } else {
            refused++;
            if (strlen(err) == 0 || strlen(err) >= CLIP_ERR_SIZE)
                return 1;
        }
        free(copy);
    }
    printf("sections: %d damaged copies, %d refused, %d loaded\n", count, refused, loaded);
    return 0;
}

static int stress(const clip_tokenizer *tok)
{
    static const char *const words[] = {
        "a", "photo", "of", "the", "Cat", "caf\xc3\xa9", "\xe4\xb8\xad\xe6\x96\x87", "\xec\x95\x88\xeb\x85\x95",
        "\xd0\x9c\xd0\xbe\xd1\x81\xd0\xba\xd0\xb2\xd0\xb0", "42", "it's", "!!", "\xf0\x9f\x98\x80", "\xce\x9f\xce\x94\xce\xa3"
    };
    size_t n, cap = 1 << 20;
    char *text = malloc(cap + 64), err[CLIP_ERR_SIZE];
    int32_t *ids = malloc(sizeof *ids * (cap + 2));
    int ret;
    double t;
    if (!text || !ids)
        return 1;
    for (n = 0; n < 100000; n++)
        text[n] = (char)('a' + rnd() % 26);
    t = cpu_now();
    ret = clip_tokenize(tok, text, 100000, ids, (int)(cap + 2), CLIP_TOKENIZE_NO_TRUNCATE, err);
    printf("stress: a 100000-letter random word: %d ids in %.1f ms CPU\n", ret, (cpu_now() - t) * 1e3);
    if (ret < 0)
        return 1;
    memset(text, 'a', 100000);
    t = cpu_now();
    ret = clip_tokenize(tok, text, 100000, ids, (int)(cap + 2), CLIP_TOKENIZE_NO_TRUNCATE, err);
    printf("stress: 'a' x 100000: %d ids in %.1f ms CPU\n", ret, (cpu_now() - t) * 1e3);
    if (ret < 0)
        return 1;
    for (n = 0; n + 32 < cap;) {
        const char *w = words[rnd() % (sizeof words / sizeof *words)];
        size_t l = strlen(w);
        memcpy(text + n, w, l);
        n += l;
        text[n++] = ' ';
    }
    t = cpu_now();
    ret = clip_tokenize(tok, text, n, ids, (int)(cap + 2), CLIP_TOKENIZE_NO_TRUNCATE, err);
    printf("stress: %lu bytes of mixed text: %d ids in %.1f ms CPU\n", (unsigned long)n, ret, (cpu_now() - t) * 1e3);
    if (ret < 0)
        return 1;
    t = cpu_now();
    ret = clip_tokenize(tok, text, n, ids, 77, 0, err);
    printf("stress: the same, truncated to the context: %d ids in %.1f ms CPU\n", ret, (cpu_now() - t) * 1e3);
    for (n = 0; n + 2 < 200000; n += 2) {
        static const char marks[][2] = { { '\xcc', '\x81' }, { '\xcc', '\x96' }, { '\xcd', '\x85' } };
        const char *m = marks[rnd() % 3];
        text[n] = m[0];
        text[n + 1] = m[1];
    }
    t = cpu_now();
    ret = clip_tokenize(tok, text, n, ids, (int)(cap + 2), CLIP_TOKENIZE_NO_TRUNCATE, err);
    printf("stress: 100000 combining marks in random order: %d ids in %.1f ms CPU\n", ret, (cpu_now() - t) * 1e3);
    free(text);
    free(ids);
    return ret < 0;
}

int main(int argc, char **argv)
{
    size_t size;
    uint8_t *section;
    clip_tokenizer *tok;
    char err[CLIP_ERR_SIZE];
    int rc;
    if (argc < 2) {
        fprintf(stderr, "usage: tok_driver SECTION [--bench FILE REPEAT | --random N SEED | --sections N SEED | --stress]\n");
        return 2;
    }
    section = read_file(argv[1], &size);
    if (!section) {
        fprintf(stderr, "tok_driver: cannot read %s\n", argv[1]);
        return 2;
    }
    if (clip_tokenizer_load(&tok, section, size, err) != 0) {
        fprintf(stderr, "tok_driver: %s\n", err);
        free(section);
        return 1;
    }
    rng_state = 88172645463325252ull;
    if (argc >= 5 && (strcmp(argv[2], "--random") == 0 || strcmp(argv[2], "--sections") == 0))
        rng_state ^= (uint64_t)strtoull(argv[4], NULL, 10) * 0x9E3779B97F4A7C15ull;
    if (argc >= 5 && strcmp(argv[2], "--bench") == 0)
        rc = bench(section, size, tok, argv[3], atoi(argv[4]));
    else if (argc >= 5 && strcmp(argv[2], "--random") == 0)
        rc = random_inputs(tok, atoi(argv[3]), clip_tokenizer_context_length(tok),
                           argc >= 6 ? atoi(argv[5]) : 1 << 30);
    else if (argc >= 5 && strcmp(argv[2], "--sections") == 0)
        rc = damaged_sections(section, size, atoi(argv[3]));
    else if (argc >= 3 && strcmp(argv[2], "--stress") == 0)
        rc = stress(tok);
    else
        rc = batch(tok);
    clip_tokenizer_free(tok);
    free(section);
    return rc;
}
