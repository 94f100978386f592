/* image.c - CLIPImageProcessor: an image file -> the pixel values CLIP's
 * vision tower takes, float [3, 224, 224] for CLIP's usual settings.
 *
 * The pipeline, in file order (each stage names the step it reproduces):
 *
 *   load         file -> bytes; the format from the first bytes (Image.open)
 *   decode       decode/: PNG, JPEG, BMP, PPM -> 8-bit RGB [H, W, 3], with
 *                Pillow's convert("RGB") applied row by row
 *   resize       shortest edge -> 224 with a bicubic filter, two ways:
 *                  pil          Pillow's img.resize(BICUBIC), fixed point
 *                               (OpenAI's CLIP, open_clip, transformers 4)
 *                  torchvision  PyTorch's interpolate(bicubic, antialias=True)
 *                               on uint8 (transformers 5's default)
 *                -> RGB [h', w'] with min(h', w') = 224
 *   center crop  -> RGB [224, 224]
 *   rescale, normalize   (x / 255 - mean) / std -> float [3, 224, 224] (CHW)
 *
 * clip_image_preprocess, at the end, runs resize, crop and normalize as one
 * step: it resizes only the pixels that the crop keeps.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "decode/decode.h"

/* ---------------------------------------------------------------------- */
/* The image                                                               */
/* ---------------------------------------------------------------------- */

int clip_image_alloc(clip_image *img, uint64_t w, uint64_t h, char *err)
{
    if (w == 0 || h == 0)
        return clip_fail(err, CLIP_EINPUT, "image has zero width or height");
    if (w > (uint64_t)CLIP_MAX_PIXELS || h > (uint64_t)CLIP_MAX_PIXELS / w)
        return clip_fail(err, CLIP_EINPUT, "image is %llu x %llu pixels, more than the limit of %ld pixels",
                         (unsigned long long)w, (unsigned long long)h, (long)CLIP_MAX_PIXELS);
    img->rgb = calloc((size_t)w * (size_t)h, 3);
    if (!img->rgb)
        return clip_fail(err, CLIP_ENOMEM, "out of memory for a %llu x %llu image",
                         (unsigned long long)w, (unsigned long long)h);
    img->w = (int)w;
    img->h = (int)h;
    return CLIP_OK;
}

void clip_image_free(clip_image *img)
{
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
    img->w = img->h = 0;
}

/* ---------------------------------------------------------------------- */
/* Load: a file's bytes, and its format (Image.open)                       */
/* ---------------------------------------------------------------------- */

typedef int (*image_decoder)(const uint8_t *data, size_t size, clip_image *img, char *err);

/* Image.open: the format from the first n bytes, as the plugins' _accept
 * functions see them; NULL when no format takes them. */
static image_decoder image_format(const uint8_t *d, size_t n)
{
    if (n >= 8 && !memcmp(d, "\x89PNG\r\n\x1a\n", 8)) return clip_png_decode;
    if (n >= 3 && d[0] == 0xff && d[1] == 0xd8 && d[2] == 0xff) return clip_jpeg_decode;
    if (n >= 2 && d[0] == 'B' && d[1] == 'M') return clip_bmp_decode;
    if (n >= 2 && d[0] == 'P' && d[1] >= '1' && d[1] <= '6') return clip_ppm_decode;
    return NULL;
}

/* No image within CLIP_MAX_PIXELS needs a larger file (an uncompressed
 * 16-bit RGBA PNG of 8192 x 8192 is 537 MB). */
#define LOAD_MAX_BYTES (1L << 30)

/* The rest of an open file after its first n bytes (already in head[n]):
 * *data (malloc'd) holds head and the rest, *size bytes in all. Sized from
 * the file's length when it has one (not a pipe), and never more than
 * LOAD_MAX_BYTES. */
static int load_rest(FILE *f, const char *path, const uint8_t *head, size_t n, uint8_t **data, size_t *size,
                     char *err)
{
    uint8_t *buf;
    size_t cap = 0;
    if (n == 8 && fseek(f, 0, SEEK_END) == 0) {
        long len = ftell(f);
        if (len >= LOAD_MAX_BYTES)
            return clip_fail(err, CLIP_EINPUT, "%s: the file is larger than %ld bytes, more than any image needs",
                             path, LOAD_MAX_BYTES);
        if (len < (long)n || fseek(f, (long)n, SEEK_SET) != 0) return clip_fail(err, CLIP_EIO, "%s: read error", path);
        cap = (size_t)len + 1;
    }
    if (cap < ((size_t)1 << 16)) cap = (size_t)1 << 16;
    if (!(buf = malloc(cap))) return clip_fail(err, CLIP_ENOMEM, "%s: out of memory reading the file", path);
    memcpy(buf, head, n);
    for (;;) {
        size_t got;
        if (n == cap) {
            uint8_t *nb;
            size_t ncap = cap * 2 < (size_t)LOAD_MAX_BYTES ? cap * 2 : (size_t)LOAD_MAX_BYTES;
            if (cap >= (size_t)LOAD_MAX_BYTES) {
                free(buf);
                return clip_fail(err, CLIP_EINPUT, "%s: the file is larger than %ld bytes, more than any image needs",
                                 path, LOAD_MAX_BYTES);
            }
            if (!(nb = realloc(buf, ncap))) {
                free(buf);
                return clip_fail(err, CLIP_ENOMEM, "%s: out of memory reading the file", path);
            }
            buf = nb;
            cap = ncap;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        return clip_fail(err, CLIP_EIO, "%s: read error", path);
    }
    *data = buf;
    *size = n;
    return CLIP_OK;
}

int clip_image_load(const char *path, clip_image *img, char *err)
{
    FILE *f;
    uint8_t *data = NULL, head[8];
    size_t n, size = 0;
    char msg[CLIP_ERR_SIZE];
    int rc;

    if (!img) return clip_fail(err, CLIP_EINPUT, "no image to load into");
    img->w = img->h = 0;
    img->rgb = NULL;
    if (!path) return clip_fail(err, CLIP_EINPUT, "no image path given");
    f = fopen(path, "rb");
    if (!f) return clip_fail(err, CLIP_EIO, "%s: %s", path, strerror(errno));
    /* the first bytes name the format, as in Image.open: anything else is
     * refused before the rest is read (a directory, an endless /dev/zero) */
    errno = 0;
    n = fread(head, 1, sizeof head, f);
    if (ferror(f)) {
        int e = errno;
        fclose(f);
        return clip_fail(err, CLIP_EIO, "%s: %s", path, e ? strerror(e) : "read error");
    }
    if (n == sizeof head && !image_format(head, n)) {
        fclose(f);
        return clip_fail(err, CLIP_EINPUT, "%s: cannot identify image format (not PNG, JPEG, PPM/PGM/PBM or BMP)", path);
    }
    rc = load_rest(f, path, head, n, &data, &size, err);
    fclose(f);
    if (rc) return rc;
    rc = clip_image_decode(data, size, img, msg);
    free(data);
    if (rc) return clip_fail(err, rc, "%s: %s", path, msg);
    return CLIP_OK;
}

/* ---------------------------------------------------------------------- */
/* Decode: Image.open(f).convert("RGB") -> RGB [H, W, 3]                   */
/* ---------------------------------------------------------------------- */

/* The decoders write RGB directly: each applies Pillow's convert("RGB")
 * (Convert.c) to the mode Pillow would have opened the file in, as it
 * writes a row:
 *
 *   1         0 -> black, 1 -> white                 PNG 1-bit grey, PBM, BMP
 *   L         g -> (g, g, g); PNG's 2- and 4-bit grey  PNG, PGM, BMP, JPEG
 *             scaled by 85 and 17 first
 *   I         16-bit grey clipped at 255 (not scaled)  PNG 16-bit grey, PGM > 255
 *   P         looked up in the palette (PNG: also L     PNG, BMP
 *             and LA images that carry a PLTE)
 *   LA, RGBA  alpha dropped                            PNG
 *   RGB       as is; 16-bit samples keep their high    PNG, PPM, BMP, JPEG
 *             byte, BMP's 5-5-5 / 5-6-5 are widened
 *   CMYK      (inverted, as Adobe writes it)           JPEG
 *             r = k - k * c / 255 rounded as MULDIV255 (cmyk2rgb)
 *
 * YCbCr and YCCK JPEGs are turned into RGB and CMYK by libjpeg's jdcolor.c
 * before Pillow sees them (decode/jpeg.c does both). */
int clip_image_decode(const uint8_t *data, size_t size, clip_image *img, char *err)
{
    image_decoder decode;
    int rc;
    if (!img) return clip_fail(err, CLIP_EINPUT, "no image to decode into");
    img->w = img->h = 0;
    img->rgb = NULL;
    if (!data && size) return clip_fail(err, CLIP_EINPUT, "no image data");
    if (size == 0) return clip_fail(err, CLIP_EINPUT, "image file is empty");
    decode = image_format(data, size);
    if (!decode) return clip_fail(err, CLIP_EINPUT, "cannot identify image format (not PNG, JPEG, PPM/PGM/PBM or BMP)");
    rc = decode(data, size, img, err);
    if (rc) clip_image_free(img);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Resize: Pillow's and PyTorch's bicubic, RGB [H, W] -> RGB [h, w]        */
/* ---------------------------------------------------------------------- */
/* Two references are reproduced bit for bit:
 *
 *   pil          Pillow's img.resize((w, h), BICUBIC, reducing_gap=None)
 *                (src/libImaging/Resample.c, ImagingResample on 8-bit RGB),
 *                then transformers' numpy center crop, rescale, normalize.
 *   torchvision  PyTorch's interpolate(uint8, mode="bicubic", antialias=True)
 *                (aten/src/ATen/native/cpu/UpSampleKernel.cpp, the int16
 *                weight path that the AVX2 and the generic uint8 kernels
 *                share), then transformers 5's torchvision backend center
 *                crop and fused rescale + normalize.
 *
 * Both resizes are the same separable scheme: per output position a window
 * of input positions with cubic weights (support scaled by the downscale
 * factor, so downscaling antialiases), normalized to sum 1, turned into fixed
 * point, accumulated in integers, rounded and clipped to 0..255; first the
 * horizontal pass, then the vertical pass, and a pass whose size does not
 * change is skipped. They differ in the cubic polynomial's evaluation order
 * (same a = -0.5) and in the fixed-point precision (Pillow: always 22 bits;
 * PyTorch: int16 weights with as many bits as the largest weight allows).
 *
 * Every output pixel depends only on its own window, so a resize can be run
 * for a sub-rectangle of the output with the same result: preprocessing
 * computes only the pixels that survive the center crop.
 */

/* Refuse coefficient tables of more entries than this (1 GiB of int32):
 * only absurd aspect-ratio changes come near it. */
#define RESIZE_MAX_COEFFS (1L << 28)
/* Refuse resized sides longer than this. */
#define RESIZE_MAX_SIDE (1L << 26)

/* ---------------------------------------------------------------------- */
/* The cubic filters (a = -0.5)                                            */
/* ---------------------------------------------------------------------- */

/* a * b rounded to double. The weights must be the very doubles the
 * references compute, and a compiler allowed to contract (clang's default,
 * or -ffp-contract=fast) would fuse a product into the following addition
 * (fma) and change last bits; a product that goes through a volatile cannot
 * be fused. */
static double resize_mul(double a, double b)
{
    volatile double p = a * b;
    return p;
}

/* Pillow Resample.c bicubic_filter: support 2. */
static double resize_cubic_pil(double x)
{
    if (x < 0.0) x = -x;
    if (x < 1.0) return resize_mul(resize_mul(resize_mul(1.5, x) - 2.5, x), x) + 1.0;
    if (x < 2.0) return resize_mul(resize_mul(resize_mul(x - 5.0, x) + 8.0, x) - 4.0, -0.5);
    return 0.0;
}

/* PyTorch HelperInterpCubic::aa_filter<double, true>, i.e. UpSample.h's
 * cubic_convolution1 / cubic_convolution2 with A = -0.5: the same polynomial
 * as Pillow's, but the outer piece is evaluated in another order, so its
 * doubles (and sometimes the fixed-point weights) differ. */
static double resize_cubic_torch(double x)
{
    x = fabs(x);
    if (x < 1.0) return resize_mul(resize_mul(resize_mul(1.5, x) - 2.5, x), x) + 1.0;
    if (x < 2.0) return resize_mul(resize_mul(resize_mul(-0.5, x) + 2.5, x) - 4.0, x) + 2.0;
    return 0.0;
}

/* ---------------------------------------------------------------------- */
/* One axis: windows and fixed-point weights                               */
/* ---------------------------------------------------------------------- */

typedef struct {
    int count;          /* output positions computed */
    int ksize;          /* weights stored per position */
    int precision;      /* fixed-point bits of the weights */
    int *start;         /* [count] first input position of each window */
    int *taps;          /* [count] window length */
    int32_t *k;         /* [count * ksize] fixed-point weights */
} resize_axis;

typedef struct {
    int in_size, mode;
    double scale, support, invscale;
    int ksize;
} resize_plan;

/* Pillow precompute_coeffs / PyTorch _compute_index_ranges_weights, the
 * shared part: scale = in / out, support = 2 * max(scale, 1),
 * ksize = ceil(support) * 2 + 1. Pillow takes in_size from a float box, so
 * it is rounded to float first (exact below 2^24). */
static void resize_plan_init(resize_plan *p, int in_size, int out_size, int mode)
{
    double filterscale;
    p->in_size = in_size;
    p->mode = mode;
    if (mode == CLIP_RESIZE_PIL)
        p->scale = (double)((float)in_size - 0.0f) / out_size;
    else
        p->scale = (double)in_size / out_size;
    filterscale = p->scale < 1.0 ? 1.0 : p->scale;
    p->support = 2.0 * filterscale;
    p->invscale = 1.0 / filterscale;
    p->ksize = (int)ceil(p->support) * 2 + 1;
}

/* The window of output position i: center = (i + 0.5) * scale, inputs from
 * int(center - support + 0.5) to int(center + support + 0.5), clamped; the
 * filter at (x - center + 0.5) / filterscale, normalized to sum 1 (when the
 * sum is not 0). w holds ksize doubles. Returns the largest weight. */
static double resize_window(const resize_plan *p, int i, int *start, int *taps, double *w)
{
    double center = resize_mul(i + 0.5, p->scale);
    double lo = center - p->support + 0.5, hi = center + p->support + 0.5;
    double total = 0.0, wmax = 0.0;
    int xmin, xmax, x;

    /* (int) truncates toward zero as the C / C++ references do; negative
     * values clamp to 0 either way. */
    xmin = lo <= 0.0 ? 0 : (int)lo;
    xmax = hi >= (double)p->in_size ? p->in_size : (int)hi;
    if (xmin > p->in_size) xmin = p->in_size;
    xmax -= xmin;
    if (xmax < 0) xmax = 0;
    if (xmax > p->ksize) xmax = p->ksize;

    for (x = 0; x < xmax; x++) {
        double arg = resize_mul((double)(x + xmin) - center + 0.5, p->invscale);
        w[x] = p->mode == CLIP_RESIZE_PIL ? resize_cubic_pil(arg) : resize_cubic_torch(arg);
        total += w[x];
    }
    if (total != 0.0) {
        for (x = 0; x < xmax; x++) {
            w[x] /= total;
            if (w[x] > wmax) wmax = w[x];
        }
    }
    *start = xmin;
    *taps = xmax;
    return wmax;
}

/* double -> fixed point, rounded half away from zero, as both references
 * (normalize_coeffs_8bpc; the int16 conversion of
 * _compute_index_ranges_int16_weights) do. */
static int32_t resize_fixed(double w, int precision)
{
    double v = w * (double)(1L << precision);
    return v < 0 ? (int32_t)(-0.5 + v) : (int32_t)(0.5 + v);
}

static void resize_axis_free(resize_axis *ax)
{
    free(ax->start);
    free(ax->taps);
    free(ax->k);
    ax->start = ax->taps = NULL;
    ax->k = NULL;
}

/* Windows and fixed-point weights for output positions first .. first+count-1
 * of an in_size -> out_size axis.
 *   Pillow: PRECISION_BITS = 32 - 8 - 2 = 22.
 *   PyTorch: the largest p <= 22 with round(wt_max * 2^(p+1)) < 2^15, where
 *   wt_max is the largest normalized weight over the whole axis (so every
 *   output position is visited, not only the ones computed here). */
static int resize_axis_init(resize_axis *ax, int in_size, int out_size, int first, int count,
                            int mode, char *err)
{
    resize_plan p;
    double *w;
    int i, j;

    memset(ax, 0, sizeof(*ax));
    resize_plan_init(&p, in_size, out_size, mode);
    if ((double)count * p.ksize > (double)RESIZE_MAX_COEFFS ||
        (size_t)count * (size_t)p.ksize > SIZE_MAX / sizeof(int32_t) / 2) {
        return clip_fail(err, CLIP_EINPUT, "cannot resize %d pixels to %d: the filter table would be too large",
                         in_size, out_size);
    }
    ax->count = count;
    ax->ksize = p.ksize;
    w = malloc((size_t)p.ksize * sizeof(double));
    ax->start = malloc((size_t)count * sizeof(int) + 1);
    ax->taps = malloc((size_t)count * sizeof(int) + 1);
    ax->k = calloc((size_t)count * (size_t)p.ksize + 1, sizeof(int32_t));
    if (!w || !ax->start || !ax->taps || !ax->k) {
        free(w);
        resize_axis_free(ax);
        return clip_fail(err, CLIP_ENOMEM, "out of memory for the resize filter table");
    }

    if (mode == CLIP_RESIZE_PIL) {
        ax->precision = 22;
    } else {
        double wt_max = 0.0;
        int s, n;
        for (i = 0; i < out_size; i++) {
            double m = resize_window(&p, i, &s, &n, w);
            if (m > wt_max) wt_max = m;
        }
        for (ax->precision = 0; ax->precision < 22; ax->precision++)
            if ((long)(0.5 + wt_max * (double)(1L << (ax->precision + 1))) >= (1L << 15)) break;
        if (ax->precision < 1) ax->precision = 1;   /* only for absurd weights */
    }

    for (i = 0; i < count; i++) {
        int32_t *k = ax->k + (size_t)i * p.ksize;
        resize_window(&p, first + i, &ax->start[i], &ax->taps[i], w);
        for (j = 0; j < ax->taps[i]; j++) {
            k[j] = resize_fixed(w[j], ax->precision);
            if (mode == CLIP_RESIZE_TORCHVISION) k[j] = (int16_t)k[j];   /* stored as int16 */
        }
    }
    free(w);
    return CLIP_OK;
}

/* ---------------------------------------------------------------------- */
/* The two passes on 8-bit RGB                                             */
/* ---------------------------------------------------------------------- */

/* Round and clip a fixed-point sum: (acc >> precision) clamped to 0..255.
 * The sum is kept modulo 2^32 (unsigned, so wrap-around is defined): bit 31
 * set means a negative value. */
static uint8_t resize_clip8(uint32_t acc, int precision)
{
    uint32_t v;
    if (acc & 0x80000000u) return 0;
    v = acc >> precision;
    return v > 255 ? 255 : (uint8_t)v;
}

/* ImagingResampleHorizontal_8bpc: rows row0 .. row0+nrows-1 of src (stride
 * bytes apart, RGB) -> dst, ax->count pixels per row. */
static void resize_horizontal(const uint8_t *src, size_t stride, int row0, int nrows,
                              const resize_axis *ax, uint8_t *dst)
{
    uint32_t half = 1u << (ax->precision - 1);
    int y, i, t;
    for (y = 0; y < nrows; y++) {
        const uint8_t *line = src + (size_t)(row0 + y) * stride;
        uint8_t *out = dst + (size_t)y * ax->count * 3;
        for (i = 0; i < ax->count; i++) {
            const int32_t *k = ax->k + (size_t)i * ax->ksize;
            const uint8_t *p = line + (size_t)ax->start[i] * 3;
            uint32_t r = half, g = half, b = half;
            for (t = 0; t < ax->taps[i]; t++) {
                uint32_t kt = (uint32_t)k[t];
                r += p[0] * kt;
                g += p[1] * kt;
                b += p[2] * kt;
                p += 3;
            }
            out[3 * i + 0] = resize_clip8(r, ax->precision);
            out[3 * i + 1] = resize_clip8(g, ax->precision);
            out[3 * i + 2] = resize_clip8(b, ax->precision);
        }
    }
}

/* ImagingResampleVertical_8bpc: src rows (stride bytes apart, row 0 of src
 * is input row `row_base`) of `width` RGB pixels -> ax->count rows of dst.
 * acc is scratch for width * 3 sums. */
static void resize_vertical(const uint8_t *src, size_t stride, int row_base, int width,
                            const resize_axis *ax, uint8_t *dst, uint32_t *acc)
{
    size_t n = (size_t)width * 3, x;
    uint32_t half = 1u << (ax->precision - 1);
    int i, t;
    for (i = 0; i < ax->count; i++) {
        const int32_t *k = ax->k + (size_t)i * ax->ksize;
        uint8_t *out = dst + (size_t)i * n;
        for (x = 0; x < n; x++) acc[x] = half;
        for (t = 0; t < ax->taps[i]; t++) {
            const uint8_t *row = src + (size_t)(ax->start[i] - row_base + t) * stride;
            uint32_t kt = (uint32_t)k[t];
            for (x = 0; x < n; x++) acc[x] += row[x] * kt;
        }
        for (x = 0; x < n; x++) out[x] = resize_clip8(acc[x], ax->precision);
    }
}

/* ImagingResampleInner: the pixels [x0, x0+cw) x [y0, y0+ch) of the
 * out_w x out_h resize of src, into dst (cw x ch RGB). The vertical windows
 * are computed first so that the horizontal pass runs only on the input rows
 * they use (as Pillow does); skipped passes copy. */
static int resize_region(const clip_image *src, int out_w, int out_h,
                         int x0, int y0, int cw, int ch, int mode, uint8_t *dst, char *err)
{
    resize_axis hax, vax;
    int need_h = out_w != src->w, need_v = out_h != src->h;
    int row_lo = y0, row_hi = y0 + ch, i, rc;
    const uint8_t *mid;          /* the horizontally resampled rows row_lo.. */
    size_t mid_stride;
    uint8_t *tmp = NULL;
    uint32_t *acc = NULL;

    memset(&hax, 0, sizeof(hax));
    memset(&vax, 0, sizeof(vax));
    if (cw <= 0 || ch <= 0) return CLIP_OK;
    if (need_v) {
        rc = resize_axis_init(&vax, src->h, out_h, y0, ch, mode, err);
        if (rc) return rc;
        row_lo = vax.start[0];
        row_hi = vax.start[ch - 1] + vax.taps[ch - 1];
        for (i = 0; i < ch; i++) {
            if (vax.start[i] < row_lo) row_lo = vax.start[i];
            if (vax.start[i] + vax.taps[i] > row_hi) row_hi = vax.start[i] + vax.taps[i];
        }
        if (row_hi < row_lo) row_hi = row_lo;
    }

    if (need_h) {
        if ((double)cw * (row_hi - row_lo) > (double)CLIP_MAX_PIXELS) {
            resize_axis_free(&vax);
            return clip_fail(err, CLIP_EINPUT, "cannot resize %dx%d to %dx%d: the intermediate image would be too large",
                             src->w, src->h, out_w, out_h);
        }
        rc = resize_axis_init(&hax, src->w, out_w, x0, cw, mode, err);
        if (rc) {
            resize_axis_free(&vax);
            return rc;
        }
        tmp = malloc((size_t)cw * (size_t)(row_hi - row_lo) * 3 + 1);
        if (!tmp) {
            resize_axis_free(&hax);
            resize_axis_free(&vax);
            return clip_fail(err, CLIP_ENOMEM, "out of memory for the resized image");
        }
        resize_horizontal(src->rgb, (size_t)src->w * 3, row_lo, row_hi - row_lo, &hax, tmp);
        resize_axis_free(&hax);
        mid = tmp;
        mid_stride = (size_t)cw * 3;
    } else {
        mid = src->rgb + (size_t)row_lo * src->w * 3 + (size_t)x0 * 3;
        mid_stride = (size_t)src->w * 3;
    }

    if (need_v) {
        acc = malloc((size_t)cw * 3 * sizeof(uint32_t) + 1);
        if (!acc) {
            free(tmp);
            resize_axis_free(&vax);
            return clip_fail(err, CLIP_ENOMEM, "out of memory for the resized image");
        }
        resize_vertical(mid, mid_stride, row_lo, cw, &vax, dst, acc);
        free(acc);
        resize_axis_free(&vax);
    } else {
        for (i = 0; i < ch; i++)
            memcpy(dst + (size_t)i * cw * 3, mid + (size_t)(y0 + i - row_lo) * mid_stride, (size_t)cw * 3);
    }
    free(tmp);
    return CLIP_OK;
}

/* Checks shared by the public functions: a usable source image. */
static int resize_check_image(const clip_image *img, const char *what, char *err)
{
    if (!img || !img->rgb || img->w <= 0 || img->h <= 0)
        return clip_fail(err, CLIP_EINPUT, "cannot %s an empty image", what);
    if ((double)img->w * img->h > (double)CLIP_MAX_PIXELS)
        return clip_fail(err, CLIP_EINPUT, "cannot %s a %dx%d image: it has more than %ld pixels",
                         what, img->w, img->h, (long)CLIP_MAX_PIXELS);
    return CLIP_OK;
}

static int resize_full(const clip_image *src, int w, int h, clip_image *dst, int mode, char *err)
{
    uint8_t *rgb;
    int rc;

    if (!dst || dst == src)
        return clip_fail(err, CLIP_EINPUT, "cannot resize: %s",
                         dst ? "the output image must not be the input image" : "no output image was given");
    dst->w = dst->h = 0;
    dst->rgb = NULL;
    rc = resize_check_image(src, "resize", err);
    if (rc) return rc;
    if (w <= 0 || h <= 0 || (double)w * h > (double)CLIP_MAX_PIXELS)
        return clip_fail(err, CLIP_EINPUT, "cannot resize to %dx%d: the size must be from 1x1 to %ld pixels",
                         w, h, (long)CLIP_MAX_PIXELS);
    rgb = malloc((size_t)w * (size_t)h * 3);
    if (!rgb) return clip_fail(err, CLIP_ENOMEM, "out of memory for a %dx%d image", w, h);
    rc = resize_region(src, w, h, 0, 0, w, h, mode, rgb, err);
    if (rc) {
        free(rgb);
        return rc;
    }
    dst->w = w;
    dst->h = h;
    dst->rgb = rgb;
    return CLIP_OK;
}

int clip_resize_bicubic_pil(const clip_image *src, int w, int h, clip_image *dst, char *err)
{
    return resize_full(src, w, h, dst, CLIP_RESIZE_PIL, err);
}

int clip_resize_bicubic_torch(const clip_image *src, int w, int h, clip_image *dst, char *err)
{
    return resize_full(src, w, h, dst, CLIP_RESIZE_TORCHVISION, err);
}

/* ---------------------------------------------------------------------- */
/* CLIPImageProcessor: resize, center crop, rescale, normalize             */
/* ---------------------------------------------------------------------- */

/* transformers get_resize_output_image_size(default_to_square=False): the
 * short side becomes `size`, the long side int(size * long / short) (Python
 * true division of integers: correctly rounded, as a double division of
 * exactly representable values is). */
static int resize_output_size(int w, int h, int size, int *rw, int *rh, char *err)
{
    int shortside = w <= h ? w : h, longside = w <= h ? h : w;
    double q = (double)((int64_t)size * longside) / (double)shortside;
    if (q >= (double)RESIZE_MAX_SIDE)
        return clip_fail(err, CLIP_EINPUT, "the %dx%d image is too elongated: its long side would be resized to %.0f pixels",
                         w, h, q);
    if (w <= h) {
        *rw = size;
        *rh = (int)q;
    } else {
        *rw = (int)q;
        *rh = size;
    }
    return CLIP_OK;
}

/* center_crop: where a crop of `crop` pixels takes its pixels from along an
 * axis of `size` pixels: crop position i shows resized position i + offset
 * when that lies in 0 .. size-1, else padding (zero).
 *   larger image: offset = (size - crop) // 2 (numpy's //, and torchvision
 *     backend's int((size - crop) / 2.0), the same for non-negative values);
 *   smaller image: the image is padded by ceil(d / 2) before it (pil: numpy
 *     center_crop) or d // 2 (torchvision backend: tvF.pad with
 *     left = d // 2), d = crop - size. */
static int center_crop_offset(int size, int crop, int mode)
{
    int d = crop - size;
    if (d <= 0) return (size - crop) / 2;
    return mode == CLIP_RESIZE_PIL ? -((d + 1) / 2) : -(d / 2);
}

/* The crop on the resized image: crop pixel (i, j) is resized pixel
 * (i + oy, j + ox); of those, [x0, x1) x [y0, y1) lie inside the resized
 * rw x rh image (the only pixels resized), the rest is padding. */
typedef struct {
    int cw, ch, ox, oy;
    int x0, y0, x1, y1;
} crop_window;

/* The float rescale factor of the config stands for a double in Python:
 * 1/255 rounded to float is not 1/255. Recover 1/n when the float is the
 * rounding of 1/n, the way preprocessor configs write it. */
static double rescale_factor(float f)
{
    double r, n;
    if (!(f > 0.0f)) return (double)f;
    r = 1.0 / (double)f;
    n = floor(r + 0.5);
    if (n >= 1.0 && n < 1e9 && (float)(1.0 / n) == f) return 1.0 / n;
    return (double)f;
}

/* a * b rounded to float, never fused into a later subtraction (see
 * resize_mul). */
static float mul_float(float a, float b)
{
    volatile float p = a * b;
    return p;
}

/* rescale + normalize: the crop's uint8 pixels (region holds the resized
 * pixels of [x0, x1) x [y0, y1)) -> out[3, ch, cw] floats, padding a zero
 * pixel.
 *   pil: x = (float)(u8 * rescale) in double (transformers rescale), then
 *        (x - mean) / std in float (normalize, float32 numpy arrays).
 *   torchvision: (x - m) / s in float with m = float(mean) * float(1/rescale)
 *        and s likewise (TorchvisionBackend._fuse_mean_std_and_rescale_factor,
 *        then tvF.normalize on float32). */
static void rescale_normalize(const uint8_t *region, const crop_window *cr, const clip_preprocess_config *cfg,
                              int mode, float *out)
{
    size_t plane = (size_t)cr->cw * cr->ch;
    double rescale = cfg->do_rescale ? rescale_factor(cfg->rescale_factor) : 1.0;
    float mean[3], stdv[3];
    int c, i, j;
    for (c = 0; c < 3; c++) {
        mean[c] = cfg->mean[c];
        stdv[c] = cfg->std[c];
        if (mode == CLIP_RESIZE_TORCHVISION && cfg->do_rescale && cfg->do_normalize) {
            float inv = (float)(1.0 / rescale);
            mean[c] = mul_float(mean[c], inv);
            stdv[c] = mul_float(stdv[c], inv);
        }
    }
    for (c = 0; c < 3; c++) {
        for (i = 0; i < cr->ch; i++) {
            int y = i + cr->oy;
            for (j = 0; j < cr->cw; j++) {
                int x = j + cr->ox;
                int v = 0;
                float f;
                if (y >= cr->y0 && y < cr->y1 && x >= cr->x0 && x < cr->x1)
                    v = region[((size_t)(y - cr->y0) * (cr->x1 - cr->x0) + (x - cr->x0)) * 3 + c];
                if (mode == CLIP_RESIZE_PIL) {
                    f = cfg->do_rescale ? (float)(v * rescale) : (float)v;
                    if (cfg->do_normalize) {
                        float d = f - mean[c];
                        f = d / stdv[c];
                    }
                } else if (cfg->do_normalize) {
                    float d = (float)v - mean[c];
                    f = d / stdv[c];
                } else {
                    f = cfg->do_rescale ? mul_float((float)v, (float)rescale) : (float)v;
                }
                out[(size_t)c * plane + (size_t)i * cr->cw + j] = f;
            }
        }
    }
}

/* The arguments of clip_image_preprocess, checked before any work. */
static int preprocess_check(const clip_image *img, const clip_preprocess_config *cfg, int mode, const float *out,
                            char *err)
{
    int rc = resize_check_image(img, "preprocess", err), c;
    if (rc) return rc;
    if (!cfg || !out)
        return clip_fail(err, CLIP_EINPUT, "cannot preprocess: no %s was given", cfg ? "output buffer" : "config");
    if (mode != CLIP_RESIZE_PIL && mode != CLIP_RESIZE_TORCHVISION)
        return clip_fail(err, CLIP_EINPUT, "cannot preprocess: unknown resize mode %d", mode);
    if (cfg->crop_w <= 0 || cfg->crop_h <= 0 || cfg->crop_w > 65536 || cfg->crop_h > 65536 ||
        (double)cfg->crop_w * cfg->crop_h > (double)CLIP_MAX_PIXELS)
        return clip_fail(err, CLIP_EINPUT, "the crop size %dx%d is not valid (1 to 65536 a side)", cfg->crop_w, cfg->crop_h);
    if (cfg->do_resize && (cfg->shortest_edge <= 0 || cfg->shortest_edge > 65536))
        return clip_fail(err, CLIP_EINPUT, "the resize size (shortest edge %d) is not valid (1 to 65536)", cfg->shortest_edge);
    if (cfg->do_rescale && !(cfg->rescale_factor > 0.0f && cfg->rescale_factor < 1e30f))
        return clip_fail(err, CLIP_EINPUT, "the rescale factor %g is not valid", (double)cfg->rescale_factor);
    for (c = 0; c < 3; c++) {
        float m = cfg->mean[c], s = cfg->std[c];
        if (cfg->do_normalize && (s == 0.0f || s != s || m != m))
            return clip_fail(err, CLIP_EINPUT, "the normalization std %g (channel %d) is not valid", (double)s, c);
    }
    return CLIP_OK;
}

/* The whole processor, CLIPImageProcessor.preprocess on one image:
 * RGB [H, W] -> resize (shortest edge) -> center crop -> rescale, normalize
 * -> out[3, crop_h, crop_w]. Only the resized pixels that the crop keeps
 * are computed. */
int clip_image_preprocess(const clip_image *img, const clip_preprocess_config *cfg,
                          int mode, float *out, char *err)
{
    int rw, rh, rc;
    crop_window cr;
    uint8_t *region;

    rc = preprocess_check(img, cfg, mode, out, err);
    if (rc) return rc;

    /* resize: RGB [H, W] -> [rh, rw], the shortest edge cfg->shortest_edge */
    rw = img->w;
    rh = img->h;
    if (cfg->do_resize) {
        rc = resize_output_size(img->w, img->h, cfg->shortest_edge, &rw, &rh, err);
        if (rc) return rc;
    }

    /* center crop: [rh, rw] -> [crop_h, crop_w]; which resized pixels it keeps */
    cr.cw = cfg->crop_w;
    cr.ch = cfg->crop_h;
    if (cfg->do_center_crop) {
        cr.ox = center_crop_offset(rw, cr.cw, mode);
        cr.oy = center_crop_offset(rh, cr.ch, mode);
    } else {
        if (rw != cr.cw || rh != cr.ch)
            return clip_fail(err, CLIP_EINPUT, "without a center crop the image must come out at %dx%d, not %dx%d",
                             cr.cw, cr.ch, rw, rh);
        cr.ox = cr.oy = 0;
    }
    cr.x0 = cr.ox < 0 ? 0 : cr.ox;
    cr.y0 = cr.oy < 0 ? 0 : cr.oy;
    cr.x1 = cr.ox + cr.cw < rw ? cr.ox + cr.cw : rw;
    cr.y1 = cr.oy + cr.ch < rh ? cr.oy + cr.ch : rh;

    /* resize only those pixels (uint8) */
    region = malloc((size_t)(cr.x1 - cr.x0) * (size_t)(cr.y1 - cr.y0) * 3 + 1);
    if (!region) return clip_fail(err, CLIP_ENOMEM, "out of memory for the resized image");
    rc = resize_region(img, rw, rh, cr.x0, cr.y0, cr.x1 - cr.x0, cr.y1 - cr.y0, mode, region, err);

    /* rescale, normalize: uint8 [crop_h, crop_w, 3] -> float [3, crop_h, crop_w] */
    if (!rc) rescale_normalize(region, &cr, cfg, mode, out);
    free(region);
    return rc;
}
