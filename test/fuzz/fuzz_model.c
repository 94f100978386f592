/* fuzz_model.c - libFuzzer target: a model file from anywhere.
 *
 *   bytes -> clip_load_memory (header, hyperparameters, tokenizer section,
 *            tensor index, every shape and offset checked against the file)
 *         -> when it loads: clip_tokenize + clip_encode_text on a short text,
 *            and for small vision towers clip_encode_image on a grey image.
 *
 * The file-size field (bytes 16..23) must equal the real size, which random
 * mutation almost never keeps; so each input is loaded twice: as it is, and
 * with that field set to the input's size, which lets the fuzzer reach the
 * checks behind it. Seeds: tiny models from test/fuzz/make_seeds.py.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "clip.h"

/* the bytes between the end of the input and the end of its aligned copy's
 * allocation are marked unreadable, so AddressSanitizer sees any read past
 * the model's last byte */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) __asan_poison_memory_region((p), (n))
#define UNPOISON(p, n) __asan_unpoison_memory_region((p), (n))
#endif
#endif
#ifndef POISON
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Run the towers only when a forward pass costs at most this many
 * multiply-adds (roughly), so each run stays fast. */
#define MAX_WORK 20000000.0

static void check_error(int rc, const char *err, const char *what)
{
    const char *end = memchr(err, 0, CLIP_ERR_SIZE);
    if (rc != CLIP_EINPUT && rc != CLIP_ENOMEM) {
        fprintf(stderr, "fuzz_model: %s returned %d\n", what, rc);
        abort();
    }
    if (!end || end == err) {
        fprintf(stderr, "fuzz_model: %s failed without a terminated message\n", what);
        abort();
    }
}

/* multiply-adds of one tower's forward pass over n tokens */
static double tower_work(const clip_tower_config *t, int n)
{
    double d = t->hidden, f = t->intermediate;
    return (double)t->layers * ((double)n * (4.0 * d * d + 2.0 * d * f) + 2.0 * (double)n * n * d);
}

static void run_text(clip_model *m, const clip_config *c)
{
    static const char text[] = "a photo of a cat, 2 dogs and \xe7\x8c\xab!";
    int32_t ids[80];
    char err[CLIP_ERR_SIZE];
    float *features;
    int n, rc;

    err[0] = 0;
    n = clip_tokenize(clip_get_tokenizer(m), text, sizeof text - 1, ids, 80, 0, err);
    if (n < 0) { check_error(CLIP_EINPUT, err, "clip_tokenize"); return; }
    if (n > 80) { fprintf(stderr, "fuzz_model: clip_tokenize gave %d ids for at most 80\n", n); abort(); }
    if (tower_work(&c->text, n) + (double)c->text.hidden * c->projection_dim > MAX_WORK) return;
    if (!(features = malloc((size_t)c->projection_dim * sizeof *features))) return;
    err[0] = 0;
    rc = clip_encode_text(m, ids, n, features, NULL, NULL, err);
    if (rc != CLIP_OK) check_error(rc, err, "clip_encode_text");   /* ids past the vocabulary, too many */
    else clip_normalize(features, c->projection_dim);
    free(features);
}

static void run_image(clip_model *m, const clip_config *c)
{
    int S = c->image_size, g = S / c->patch, n = 1 + g * g;
    size_t npix = (size_t)3 * S * S;
    char err[CLIP_ERR_SIZE];
    float *pixels, *features;
    int rc;

    if ((double)S * S > 65536.0) return;
    if (tower_work(&c->vision, n) + (double)g * g * 3 * c->patch * c->patch * c->vision.hidden > MAX_WORK) return;
    pixels = malloc(npix * sizeof *pixels);
    features = malloc((size_t)c->projection_dim * sizeof *features);
    if (pixels && features) {
        for (size_t i = 0; i < npix; i++) pixels[i] = (float)(i % 7) * 0.25f - 0.75f;
        err[0] = 0;
        rc = clip_encode_image(m, pixels, features, NULL, NULL, err);
        if (rc != CLIP_OK) check_error(rc, err, "clip_encode_image");
    }
    free(pixels);
    free(features);
}

static void load_and_run(const uint8_t *buf, size_t size)
{
    clip_model *m = (clip_model *)&m;   /* must be set to NULL on failure */
    char err[CLIP_ERR_SIZE];
    const clip_config *c;
    int rc;

    err[0] = 0;
    rc = clip_load_memory(&m, buf, size, err);
    if (rc != CLIP_OK) {
        check_error(rc, err, "clip_load_memory");
        if (m) { fprintf(stderr, "fuzz_model: a failed load returned a model\n"); abort(); }
        return;
    }
    c = clip_get_config(m);
    if (clip_file_size(m) != size || !clip_get_tokenizer(m) ||
        clip_tokenizer_context_length(clip_get_tokenizer(m)) < 2) {
        fprintf(stderr, "fuzz_model: a loaded model reports a bad size or tokenizer\n");
        abort();
    }
    (void)clip_logit_scale(m);
    run_text(m, c);
    run_image(m, c);
    clip_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* clip_load_memory wants 64-byte aligned data */
    uint8_t *raw = malloc(size + 64), *buf;
    if (!raw) return 0;
    buf = raw + (64 - (uintptr_t)raw % 64) % 64;
    if (size) memcpy(buf, data, size);
    POISON(buf + size, (size_t)(raw + size + 64 - (buf + size)));
    load_and_run(buf, size);
    if (size >= 24) {
        uint64_t s = size;
        for (int i = 0; i < 8; i++) buf[16 + i] = (uint8_t)(s >> (8 * i));
        if (memcmp(buf + 16, data + 16, 8) != 0) load_and_run(buf, size);
    }
    UNPOISON(raw, size + 64);
    free(raw);
    return 0;
}
