/* fuzz_image.c - libFuzzer target: the image path a user's file takes.
 *
 *   bytes -> clip_image_decode (PNG, JPEG, PPM/PGM, BMP; Pillow's convert("RGB"))
 *         -> clip_image_preprocess in both resize modes (CLIPImageProcessor)
 *         -> clip_png_encode, decoded again to the same pixels
 *
 * Built by `make fuzz T=image` (also T=png, T=jpeg: the same target run on
 * format-specific seeds). Every return code and message is checked against
 * clip.h's contract; a broken contract aborts, which libFuzzer reports.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "clip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Preprocess only images up to this many pixels, and to small crops (the
 * code paths of CLIP's 224 are the same; the arithmetic is 100 times more),
 * so each run stays fast. */
#define PREPROCESS_MAX_PIXELS (256L * 256L)

static void check_error(int rc, const char *err)
{
    const char *end = memchr(err, 0, CLIP_ERR_SIZE);
    if (rc != CLIP_EINPUT && rc != CLIP_ENOMEM) {
        fprintf(stderr, "fuzz_image: unexpected return code %d\n", rc);
        abort();
    }
    if (!end || end == err) {
        fprintf(stderr, "fuzz_image: a failure without a terminated message\n");
        abort();
    }
}

/* CLIPImageProcessor with `size` shortest edge and a crop_w x crop_h crop:
 * every output value must be finite (the inputs are bytes). */
static void preprocess(const clip_image *img, int size, int crop_w, int crop_h)
{
    static const clip_preprocess_config base = {
        224, 224, 224, 1, 1, 1, 1, 1.0f / 255.0f,   /* CLIP's settings, sizes replaced below */
        {0.48145466f, 0.4578275f, 0.40821073f}, {0.26862954f, 0.26130258f, 0.27577711f}
    };
    clip_preprocess_config cfg = base;
    size_t n = (size_t)3 * crop_w * crop_h;
    float *out = malloc(n * sizeof *out);
    char err[CLIP_ERR_SIZE];
    if (!out) return;
    cfg.shortest_edge = size;
    cfg.crop_w = crop_w;
    cfg.crop_h = crop_h;
    for (int mode = CLIP_RESIZE_PIL; mode <= CLIP_RESIZE_TORCHVISION; mode++) {
        int rc;
        err[0] = 0;
        rc = clip_image_preprocess(img, &cfg, mode, out, err);
        if (rc != CLIP_OK) {
            check_error(rc, err);   /* e.g. an image too elongated to resize */
            continue;
        }
        for (size_t i = 0; i < n; i++)
            if (!(out[i] > -10.0f && out[i] < 10.0f)) {
                fprintf(stderr, "fuzz_image: preprocess value %zu is %g\n", i, (double)out[i]);
                abort();
            }
    }
    free(out);
}

/* clip_png_encode, then decode that PNG: the same pixels must come back
 * (the fuzzed pixels are the worst case for the encoder's output bound). */
static void png_roundtrip(const clip_image *img)
{
    clip_image back = {0, 0, NULL};
    uint8_t *png = NULL;
    size_t n = 0;
    char err[CLIP_ERR_SIZE];
    int rc;
    err[0] = 0;
    rc = clip_png_encode(img, &png, &n, err);
    if (rc != CLIP_OK) {
        check_error(rc, err);
        return;
    }
    err[0] = 0;
    rc = clip_image_decode(png, n, &back, err);
    if (rc != CLIP_OK || back.w != img->w || back.h != img->h ||
        memcmp(back.rgb, img->rgb, (size_t)img->w * img->h * 3) != 0) {
        fprintf(stderr, "fuzz_image: the PNG of a %d x %d image does not decode to it (%s)\n", img->w, img->h, err);
        abort();
    }
    clip_image_free(&back);
    free(png);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    clip_image img = {0, 0, NULL};
    char err[CLIP_ERR_SIZE];
    unsigned sum = 0;
    int rc;

    err[0] = 0;
    rc = clip_image_decode(data, size, &img, err);
    if (rc != CLIP_OK) {
        check_error(rc, err);
        if (img.rgb) {
            fprintf(stderr, "fuzz_image: a failed decode left a pixel buffer\n");
            abort();
        }
        return 0;
    }
    if (img.w < 1 || img.h < 1 || !img.rgb || (double)img.w * img.h > (double)CLIP_MAX_PIXELS) {
        fprintf(stderr, "fuzz_image: decoded a %d x %d image with pixels %p\n", img.w, img.h, (void *)img.rgb);
        abort();
    }
    /* read every pixel: AddressSanitizer checks the buffer is w*h*3 bytes */
    for (size_t i = 0; i < (size_t)img.w * img.h * 3; i++) sum += img.rgb[i];
    /* which of the slower checks runs depends on the input's size, so that
     * each input gets the same checks every time and runs stay fast */
    if ((long)img.w * img.h <= PREPROCESS_MAX_PIXELS) {
        if (size % 2) preprocess(&img, 7, 5, 3);   /* a downscale, a crop inside the image */
        else preprocess(&img, 40, 45, 29);         /* an upscale of small images, a crop wider than the image */
        if (size % 4 == 0) png_roundtrip(&img);
    }
    clip_image_free(&img);
    return (int)(sum & 0);
}
