/* image_resize.c - bicubic resizing and CLIPImageProcessor preprocessing.
 *
 * Two references are reproduced bit for bit:
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
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "clip.h"

enum { RESIZE_PIL = 0, RESIZE_TORCH = 1 };

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
    int in_size, kind;
    double scale, support, invscale;
    int ksize;
} resize_plan;

/* Pillow precompute_coeffs / PyTorch _compute_index_ranges_weights, the
 * shared part: scale = in / out, support = 2 * max(scale, 1),
 * ksize = ceil(support) * 2 + 1. Pillow takes in_size from a float box, so
 * it is rounded to float first (exact below 2^24). */
static void resize_plan_init(resize_plan *p, int in_size, int out_size, int kind)
{
    double filterscale;
    p->in_size = in_size;
    p->kind = kind;
    if (kind == RESIZE_PIL)
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
        w[x] = p->kind == RESIZE_PIL ? resize_cubic_pil(arg) : resize_cubic_torch(arg);
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
                            int kind, char *err)
{
    resize_plan p;
    double *w;
    int i, j;

    memset(ax, 0, sizeof(*ax));
    resize_plan_init(&p, in_size, out_size, kind);
    if ((double)count * p.ksize > (double)RESIZE_MAX_COEFFS ||
        (size_t)count * (size_t)p.ksize > SIZE_MAX / sizeof(int32_t) / 2) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "cannot resize %d pixels to %d: the filter table would be too large.",
                          in_size, out_size);
        return CLIP_EINPUT;
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
        if (err) snprintf(err, CLIP_ERR_SIZE, "out of memory for the resize filter table.");
        return CLIP_ENOMEM;
    }

    if (kind == RESIZE_PIL) {
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
            if (kind == RESIZE_TORCH) k[j] = (int16_t)k[j];   /* stored as int16 */
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
                         int x0, int y0, int cw, int ch, int kind, uint8_t *dst, char *err)
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
        rc = resize_axis_init(&vax, src->h, out_h, y0, ch, kind, err);
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
            if (err) snprintf(err, CLIP_ERR_SIZE, "cannot resize %dx%d to %dx%d: the intermediate image would be too large.",
                              src->w, src->h, out_w, out_h);
            return CLIP_EINPUT;
        }
        rc = resize_axis_init(&hax, src->w, out_w, x0, cw, kind, err);
        if (rc) {
            resize_axis_free(&vax);
            return rc;
        }
        tmp = malloc((size_t)cw * (size_t)(row_hi - row_lo) * 3 + 1);
        if (!tmp) {
            resize_axis_free(&hax);
            resize_axis_free(&vax);
            if (err) snprintf(err, CLIP_ERR_SIZE, "out of memory for the resized image.");
            return CLIP_ENOMEM;
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
            if (err) snprintf(err, CLIP_ERR_SIZE, "out of memory for the resized image.");
            return CLIP_ENOMEM;
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
    if (!img || !img->rgb || img->w <= 0 || img->h <= 0) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "cannot %s an empty image.", what);
        return CLIP_EINPUT;
    }
    if ((double)img->w * img->h > (double)CLIP_MAX_PIXELS) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "cannot %s a %dx%d image: it has more than %ld pixels.",
                          what, img->w, img->h, (long)CLIP_MAX_PIXELS);
        return CLIP_EINPUT;
    }
    return CLIP_OK;
}

static int resize_full(const clip_image *src, int w, int h, clip_image *dst, int kind, char *err)
{
    uint8_t *rgb;
    int rc;

    if (!dst || dst == src) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "cannot resize: %s.",
                          dst ? "the output image must not be the input image" : "no output image was given");
        return CLIP_EINPUT;
    }
    dst->w = dst->h = 0;
    dst->rgb = NULL;
    rc = resize_check_image(src, "resize", err);
    if (rc) return rc;
    if (w <= 0 || h <= 0 || (double)w * h > (double)CLIP_MAX_PIXELS) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "cannot resize to %dx%d: the size must be from 1x1 to %ld pixels.",
                          w, h, (long)CLIP_MAX_PIXELS);
        return CLIP_EINPUT;
    }
    rgb = malloc((size_t)w * (size_t)h * 3);
    if (!rgb) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "out of memory for a %dx%d image.", w, h);
        return CLIP_ENOMEM;
    }
    rc = resize_region(src, w, h, 0, 0, w, h, kind, rgb, err);
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
    return resize_full(src, w, h, dst, RESIZE_PIL, err);
}

int clip_resize_bicubic_torch(const clip_image *src, int w, int h, clip_image *dst, char *err)
{
    return resize_full(src, w, h, dst, RESIZE_TORCH, err);
}

/* ---------------------------------------------------------------------- */
/* CLIPImageProcessor                                                      */
/* ---------------------------------------------------------------------- */

/* transformers get_resize_output_image_size(default_to_square=False): the
 * short side becomes `size`, the long side int(size * long / short) (Python
 * true division of integers: correctly rounded, as a double division of
 * exactly representable values is). */
static int pp_resize_size(int w, int h, int size, int *rw, int *rh, char *err)
{
    int shortside = w <= h ? w : h, longside = w <= h ? h : w;
    double q = (double)((int64_t)size * longside) / (double)shortside;
    if (q >= (double)RESIZE_MAX_SIDE) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "the %dx%d image is too elongated: its long side would be resized to %.0f pixels.",
                          w, h, q);
        return CLIP_EINPUT;
    }
    if (w <= h) {
        *rw = size;
        *rh = (int)q;
    } else {
        *rw = (int)q;
        *rh = size;
    }
    return CLIP_OK;
}

/* Where a center crop of `crop` pixels takes its pixels from along an axis
 * of `size` pixels: crop position i shows resized position i + *offset when
 * that lies in 0 .. size-1, else padding (zero).
 *   larger image: offset = (size - crop) // 2 (numpy's //, and torchvision
 *     backend's int((size - crop) / 2.0), the same for non-negative values);
 *   smaller image: the image is padded by ceil(d / 2) before it (pil: numpy
 *     center_crop) or d // 2 (torchvision backend: tvF.pad with
 *     left = d // 2), d = crop - size. */
static int pp_crop_offset(int size, int crop, int mode)
{
    int d = crop - size;
    if (d <= 0) return (size - crop) / 2;
    return mode == CLIP_RESIZE_PIL ? -((d + 1) / 2) : -(d / 2);
}

/* The float rescale factor of the config stands for a double in Python:
 * 1/255 rounded to float is not 1/255. Recover 1/n when the float is the
 * rounding of 1/n, the way preprocessor configs write it. */
static double pp_rescale_factor(float f)
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
static float pp_mulf(float a, float b)
{
    volatile float p = a * b;
    return p;
}

/* The whole processor: resize (shortest edge), center crop, rescale,
 * normalize, CHW float output of crop_h x crop_w.
 *   pil: x = (float)(u8 * rescale) in double (transformers rescale), then
 *        (x - mean) / std in float (normalize, float32 numpy arrays).
 *   torchvision: (x - m) / s in float with m = float(mean) * float(1/rescale)
 *        and s likewise (TorchvisionBackend._fuse_mean_std_and_rescale_factor,
 *        then tvF.normalize on float32). */
int clip_image_preprocess(const clip_image *img, const clip_preprocess_config *cfg,
                          int mode, float *out, char *err)
{
    int rw, rh, cw, ch, ox, oy, x0, x1, y0, y1, c, i, j, rc;
    size_t plane;
    uint8_t *region;
    double rescale = 1.0;
    float mean[3], stdv[3];

    rc = resize_check_image(img, "preprocess", err);
    if (rc) return rc;
    if (!cfg || !out) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "cannot preprocess: no %s was given.", cfg ? "output buffer" : "config");
        return CLIP_EINPUT;
    }
    if (mode != CLIP_RESIZE_PIL && mode != CLIP_RESIZE_TORCHVISION) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "cannot preprocess: unknown resize mode %d.", mode);
        return CLIP_EINPUT;
    }
    cw = cfg->crop_w;
    ch = cfg->crop_h;
    if (cw <= 0 || ch <= 0 || cw > 65536 || ch > 65536 || (double)cw * ch > (double)CLIP_MAX_PIXELS) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "the crop size %dx%d is not valid (1 to 65536 a side).", cw, ch);
        return CLIP_EINPUT;
    }
    if (cfg->do_resize && (cfg->shortest_edge <= 0 || cfg->shortest_edge > 65536)) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "the resize size (shortest edge %d) is not valid (1 to 65536).", cfg->shortest_edge);
        return CLIP_EINPUT;
    }
    if (cfg->do_rescale && !(cfg->rescale_factor > 0.0f && cfg->rescale_factor < 1e30f)) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "the rescale factor %g is not valid.", (double)cfg->rescale_factor);
        return CLIP_EINPUT;
    }
    for (c = 0; c < 3; c++) {
        mean[c] = cfg->mean[c];
        stdv[c] = cfg->std[c];
        if (cfg->do_normalize && (stdv[c] == 0.0f || stdv[c] != stdv[c] || mean[c] != mean[c])) {
            if (err) snprintf(err, CLIP_ERR_SIZE, "the normalization std %g (channel %d) is not valid.", (double)stdv[c], c);
            return CLIP_EINPUT;
        }
    }

    /* resize: shortest edge to cfg->shortest_edge */
    rw = img->w;
    rh = img->h;
    if (cfg->do_resize) {
        rc = pp_resize_size(img->w, img->h, cfg->shortest_edge, &rw, &rh, err);
        if (rc) return rc;
    }

    /* center crop: which resized pixels land in the crop */
    if (cfg->do_center_crop) {
        ox = pp_crop_offset(rw, cw, mode);
        oy = pp_crop_offset(rh, ch, mode);
    } else {
        if (rw != cw || rh != ch) {
            if (err) snprintf(err, CLIP_ERR_SIZE, "without a center crop the image must come out at %dx%d, not %dx%d.",
                              cw, ch, rw, rh);
            return CLIP_EINPUT;
        }
        ox = oy = 0;
    }
    x0 = ox < 0 ? 0 : ox;
    y0 = oy < 0 ? 0 : oy;
    x1 = ox + cw < rw ? ox + cw : rw;
    y1 = oy + ch < rh ? oy + ch : rh;

    /* resize only that region (uint8) */
    region = malloc((size_t)(x1 - x0) * (size_t)(y1 - y0) * 3 + 1);
    if (!region) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "out of memory for the resized image.");
        return CLIP_ENOMEM;
    }
    rc = resize_region(img, rw, rh, x0, y0, x1 - x0, y1 - y0,
                       mode == CLIP_RESIZE_PIL ? RESIZE_PIL : RESIZE_TORCH, region, err);
    if (rc) {
        free(region);
        return rc;
    }

    /* rescale + normalize into CHW floats; padding is a zero pixel */
    if (cfg->do_rescale) rescale = pp_rescale_factor(cfg->rescale_factor);
    if (mode == CLIP_RESIZE_TORCHVISION && cfg->do_rescale && cfg->do_normalize) {
        float inv = (float)(1.0 / rescale);
        for (c = 0; c < 3; c++) {
            mean[c] = pp_mulf(mean[c], inv);
            stdv[c] = pp_mulf(stdv[c], inv);
        }
    }
    plane = (size_t)cw * ch;
    for (c = 0; c < 3; c++) {
        for (i = 0; i < ch; i++) {
            int y = i + oy;
            for (j = 0; j < cw; j++) {
                int x = j + ox;
                int v = 0;
                float f;
                if (y >= y0 && y < y1 && x >= x0 && x < x1)
                    v = region[((size_t)(y - y0) * (x1 - x0) + (x - x0)) * 3 + c];
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
                    f = cfg->do_rescale ? pp_mulf((float)v, (float)rescale) : (float)v;
                }
                out[(size_t)c * plane + (size_t)i * cw + j] = f;
            }
        }
    }
    free(region);
    return CLIP_OK;
}
