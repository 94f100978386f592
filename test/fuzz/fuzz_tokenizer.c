/* fuzz_tokenizer.c - libFuzzer target: CLIPTokenizer on arbitrary bytes.
 *
 * A real tokenizer section (the CLIP BPE, written by test/fuzz/make_seeds.py
 * from a converted golden model to test/out/fuzz/tokenizer.section, or the
 * file named by $CLIP_FUZZ_SECTION) is loaded once; every input is then
 * tokenized with each flag combination and with buffers of several sizes,
 * and the results are checked against each other:
 *   - truncated: [bos] + ids + [eos], at most context_length ids
 *   - CLIP_TOKENIZE_PAD: the same, padded with pad to context_length
 *   - CLIP_TOKENIZE_NO_TRUNCATE: the same first ids, possibly more of them
 *   - both flags: padded to context_length, or the untruncated result
 *   - a short buffer: a prefix of the full result, never a write past it
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "clip.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static clip_tokenizer *tok;
static int ctx, bos, eos;

static void fail(const char *what)
{
    fprintf(stderr, "fuzz_tokenizer: %s\n", what);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *path = getenv("CLIP_FUZZ_SECTION");
    char err[CLIP_ERR_SIZE];
    int32_t ids[2];
    uint8_t *sec;
    long size;
    FILE *f;
    (void)argc; (void)argv;
    if (!path) path = "test/out/fuzz/tokenizer.section";
    if (!(f = fopen(path, "rb")) || fseek(f, 0, SEEK_END) || (size = ftell(f)) <= 0 || fseek(f, 0, SEEK_SET) ||
        !(sec = malloc((size_t)size)) || fread(sec, 1, (size_t)size, f) != (size_t)size) {
        fprintf(stderr, "fuzz_tokenizer: cannot read the tokenizer section %s "
                "(run test/fuzz/make_seeds.py, or set CLIP_FUZZ_SECTION)\n", path);
        exit(1);
    }
    fclose(f);
    if (clip_tokenizer_load(&tok, sec, (size_t)size, err)) {
        fprintf(stderr, "fuzz_tokenizer: %s: %s\n", path, err);
        exit(1);
    }
    free(sec);   /* the tokenizer keeps no pointer into its section */
    ctx = clip_tokenizer_context_length(tok);
    if (clip_tokenize(tok, "", 0, ids, 2, 0, err) != 2) {
        fprintf(stderr, "fuzz_tokenizer: the empty text does not give [bos, eos]: %s\n", err);
        exit(1);
    }
    bos = ids[0];
    eos = ids[1];
    return 0;
}

/* tokenize into a buffer of exactly max_ids ids (AddressSanitizer catches a
 * write past it); returns the count, -1 on error (message checked) */
static int tokenize(const char *text, size_t len, int32_t **ids, int max_ids, int flags)
{
    char err[CLIP_ERR_SIZE];
    int n;
    *ids = malloc((size_t)(max_ids ? max_ids : 1) * sizeof **ids);
    if (!*ids) fail("out of memory in the harness");
    err[0] = 0;
    n = clip_tokenize(tok, text, len, *ids, max_ids, flags, err);
    if (n < 0) {
        const char *end = memchr(err, 0, CLIP_ERR_SIZE);
        if (n != -1 || !end || end == err) fail("an error without a message");
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    int32_t *a, *p, *u, *s;
    int na, np, nu, nf, ns, i, small;

    /* truncated (what the model sees) */
    na = tokenize(text, size, &a, ctx, 0);
    if (na < 2 || na > ctx) fail("a truncated result outside 2..context_length");
    if (a[0] != bos || a[na - 1] != eos) fail("a result not framed by bos ... eos");
    for (i = 0; i < na; i++)
        if (a[i] < 0) fail("a negative id");

    /* padded: the same ids, then pad up to context_length */
    np = tokenize(text, size, &p, ctx, CLIP_TOKENIZE_PAD);
    if (np >= 0) {   /* -1 only for a tokenizer without a pad token */
        if (np != ctx || memcmp(p, a, (size_t)na * sizeof *a)) fail("padding changed the ids");
        for (i = na + 1; i < np; i++)
            if (p[i] != p[na]) fail("padding with different ids");
    }
    free(p);

    /* untruncated: the truncated result is its prefix, then eos */
    nu = tokenize(text, size, &u, ctx, CLIP_TOKENIZE_NO_TRUNCATE);
    if (nu < na || (nu > na && na != ctx)) fail("untruncated count disagrees with the truncated one");
    if (memcmp(u, a, (size_t)(na - 1) * sizeof *a)) fail("untruncated ids differ from the truncated ones");
    free(u);
    /* untruncated and padded: up to context_length, past it nothing to add */
    nf = tokenize(text, size, &u, nu > ctx ? nu : ctx, CLIP_TOKENIZE_NO_TRUNCATE | CLIP_TOKENIZE_PAD);
    if (nf != (nu > ctx ? nu : ctx)) fail("untruncated padding gave the wrong length");
    if (u[0] != bos || memcmp(u, a, (size_t)(na - 1) * sizeof *a) || (nu > ctx && u[nu - 1] != eos))
        fail("an untruncated padded result is not bos ... eos");
    free(u);

    /* short buffers: an error when truncating, a prefix when not */
    small = size ? data[0] % (na + 1) : 0;
    ns = tokenize(text, size, &s, small, 0);
    if (small < na ? ns != -1 : ns != na) fail("a short buffer was not refused");
    free(s);
    ns = tokenize(text, size, &s, small, CLIP_TOKENIZE_NO_TRUNCATE);
    if (ns < na || memcmp(s, a, (size_t)(small < na - 1 ? small : na - 1) * sizeof *a))
        fail("a short untruncated buffer is not a prefix");
    free(s);
    free(a);
    return 0;
}
