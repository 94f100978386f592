/* scratch_driver.c MODEL: the encoders with caller-owned scratch (clip_encode_*_scratch)
 * against the ones that allocate it per call. Prints one "ok"/"FAIL" line per check and
 * exits with the number of failures.
 *
 * Built with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc (GNU ld) and -DCOUNT_ALLOCS, it
 * also counts the library's allocations during the scratch calls: there must be none. */
#include "../clip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failed;
static long allocs;

#ifdef COUNT_ALLOCS
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n) { allocs++; return __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t size) { allocs++; return __real_calloc(n, size); }
void *__wrap_realloc(void *p, size_t n) { allocs++; return __real_realloc(p, n); }
#endif

static void check(int ok, const char *what)
{
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    failed += !ok;
}

int main(int argc, char **argv)
{
    enum { IMAGES = 3, TEXTS = 3 };
    char err[CLIP_ERR_SIZE], what[CLIP_ERR_SIZE + 64];
    clip_model *m;
    clip_scratch s, small;
    uint32_t seed = 12345;
    int32_t ids[TEXTS][8] = {{49406, 320, 1125, 539, 320, 2368, 49407}, {49406, 49407}, {49406, 7, 8, 9, 49407}};
    const int32_t *rows[TEXTS] = {ids[0], ids[1], ids[2]};
    int lens[TEXTS] = {7, 2, 5};
    if (argc != 2) { fprintf(stderr, "usage: scratch_driver MODEL\n"); return 2; }
    if (clip_load(&m, argv[1], err)) { fprintf(stderr, "%s\n", err); return 2; }
    const clip_config *c = clip_get_config(m);
    int D = c->projection_dim, S = c->image_size;
    size_t npx = (size_t)3 * S * S, bytes = clip_scratch_size(m, IMAGES, TEXTS, 8);
    float *px = malloc(npx * IMAGES * sizeof(float)), *a = malloc((size_t)IMAGES * D * sizeof(float));
    float *b = malloc((size_t)IMAGES * D * sizeof(float));
    char *mem = malloc(bytes + 1);
    for (size_t i = 0; i < npx * IMAGES; i++) {
        seed = seed * 1664525u + 1013904223u;
        px[i] = (float)(seed >> 8) / 16777216.0f * 4.0f - 2.0f;
    }
    for (int t = 0; t < TEXTS; t++)
        for (int i = 0; i < lens[t]; i++) ids[t][i] %= c->vocab_size;
    s.data = mem + 1;   /* exactly the size asked for, at an odd address */
    s.size = bytes;

    /* images: a batch, then one, in the same scratch */
    allocs = 0;
    int rc = clip_encode_images_scratch(m, &s, px, IMAGES, a, NULL, NULL, err);
    long used = allocs;
    clip_encode_images(m, px, IMAGES, b, NULL, NULL, err);
    check(rc == 0 && !memcmp(a, b, (size_t)IMAGES * D * sizeof(float)),
          "3 images in caller's scratch: the same bits as clip_encode_images");
    allocs = 0;
    rc = clip_encode_images_scratch(m, &s, px + npx, 1, a, NULL, NULL, err);
    used += allocs;
    clip_encode_image(m, px + npx, b, NULL, NULL, err);
    check(rc == 0 && !memcmp(a, b, (size_t)D * sizeof(float)), "1 image in the same scratch: the same bits as clip_encode_image");

    /* texts: a batch, then one, in the same scratch */
    allocs = 0;
    rc = clip_encode_texts_scratch(m, &s, rows, lens, TEXTS, a, NULL, NULL, err);
    used += allocs;
    clip_encode_texts(m, rows, lens, TEXTS, b, err);
    check(rc == 0 && !memcmp(a, b, (size_t)TEXTS * D * sizeof(float)),
          "3 texts in the same scratch: the same bits as clip_encode_texts");
    allocs = 0;
    rc = clip_encode_texts_scratch(m, &s, rows, lens, 1, a, NULL, NULL, err);
    used += allocs;
    clip_encode_text(m, ids[0], lens[0], b, NULL, NULL, err);
    check(rc == 0 && !memcmp(a, b, (size_t)D * sizeof(float)), "1 text in the same scratch: the same bits as clip_encode_text");
#ifdef COUNT_ALLOCS
    snprintf(what, sizeof what, "no allocation in the four scratch calls (%ld)", used);
    check(used == 0, what);
    allocs = 0;
    clip_encode_texts(m, rows, lens, TEXTS, b, err);
    snprintf(what, sizeof what, "while clip_encode_texts allocates (%ld times): the count works", allocs);
    check(allocs > 0, what);
#else
    (void)used;
#endif

    /* a scratch one byte short of a batch is refused, and nothing is written */
    small.data = mem;
    small.size = clip_scratch_size(m, IMAGES, 0, 0) - 1;
    a[0] = 12345.0f;
    rc = clip_encode_images_scratch(m, &small, px, IMAGES, a, NULL, NULL, err);
    snprintf(what, sizeof what, "a scratch 1 byte short is refused: %d, '%s'", rc, err);
    check(rc == CLIP_EINPUT && strstr(err, "clip_scratch_size") && a[0] == 12345.0f, what);
    small.size = clip_scratch_size(m, 0, TEXTS, 7) - 1;
    rc = clip_encode_texts_scratch(m, &small, rows, lens, TEXTS, a, NULL, NULL, err);
    check(rc == CLIP_EINPUT && a[0] == 12345.0f, "a scratch 1 byte short of 3 texts of 7 tokens is refused");
    rc = clip_encode_texts_scratch(m, NULL, rows, lens, 1, a, NULL, NULL, err);
    check(rc == CLIP_EINPUT, "no scratch at all is refused");
    check(clip_scratch_size(m, 0x7fffffff, 0, 0) == 0, "a batch of 2^31 - 1 images: size 0 (too large)");

    /* clip_scratch_alloc gives a scratch that works */
    rc = clip_scratch_alloc(&s, m, 2, 0, 0, err);
    if (!rc) rc = clip_encode_images_scratch(m, &s, px, 2, a, NULL, NULL, err);
    clip_encode_images(m, px, 2, b, NULL, NULL, err);
    check(rc == 0 && !memcmp(a, b, (size_t)2 * D * sizeof(float)), "clip_scratch_alloc for 2 images: the same bits");
    clip_scratch_free(&s);
    check(s.data == NULL && s.size == 0, "clip_scratch_free empties it");

    free(px); free(a); free(b); free(mem);
    clip_free(m);
    return failed;
}
