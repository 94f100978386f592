/* tensor.c - the arithmetic of a transformer layer, in float32.
 *
 * Everything here works on plain row-major float arrays and knows nothing of
 * CLIP: a matrix product shaped like torch.nn.Linear, LayerNorm, softmax,
 * multi-head attention and the two GELU flavours. The file has two parts:
 *
 *   1. Reference kernels (clip_ref_*): each a plain loop, the Hugging Face
 *      step and the shapes in a comment above it. Read these first. Every
 *      sum runs in one fixed order, in double (a product of two floats is
 *      exact in double), and is rounded to float once; threads may split
 *      rows or columns between them, never a sum. The result therefore
 *      depends neither on the vector width nor on the number of threads.
 *   2. Fast kernels: the same computations arranged for vector units, caches
 *      and threads. Each says what it computes that the reference computes,
 *      and how it is faster. Their sums run in other orders (in lanes, in
 *      blocks), so they round differently, by about 1e-7 relative.
 *
 * The public kernels (clip_linear, clip_layer_norm, ...) are the fast ones,
 * or, in a build with CLIP_REFERENCE defined (make REFERENCE=1), the
 * reference ones; the last section of the file says which. The model's
 * weights are read where they lie (mmap'ed), never copied.
 */
#include "clip.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The reference build's promise (the same bits on every machine) needs every
 * float and double operation rounded once, to its own type: i386's x87
 * keeps extended precision (FLT_EVAL_METHOD 2). make REFERENCE=1 adds
 * -msse2 -mfpmath=sse there. */
#if defined(CLIP_REFERENCE) && defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD != 0
#error "a reference build needs FLT_EVAL_METHOD 0 (on i386: -msse2 -mfpmath=sse)"
#endif

void clip_set_threads(int n)
{
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

const char *clip_build_info(void)
{
    return
#ifdef CLIP_REFERENCE
        "reference kernels"
#else
        "fast kernels"
#if defined(__AVX512F__)
        " for AVX-512"
#elif defined(__AVX2__)
        " for AVX2"
#elif defined(__ARM_NEON)
        " for NEON"
#elif defined(__wasm_simd128__)
        " for WebAssembly SIMD"
#endif
#endif
#ifdef _OPENMP
        ", OpenMP threads"
#else
        ", one thread"
#endif
        ;
}

/* ------------------------------------------------------------------------ */
/* The transcendentals: every exp, and the reference kernels' erf           */
/* ------------------------------------------------------------------------ */
/* exp in double, written out so that compilers vectorize it (libm's exp is a
 * call per element): z = n ln2 + r with |r| <= ln2/2, e^r by its Taylor
 * series to r^13 (relative error below 1e-16), 2^n built in the exponent
 * bits from the integer that rounding left in the low bits of
 * z / ln2 + 1.5 * 2^52. Callers keep |z| <= 708 (NaN goes through as NaN,
 * and no out-of-range conversion happens). Only IEEE double additions and
 * multiplications: without FMA contraction, the same bits on every machine. */
static inline double tensor_exp(double z)
{
    double big = z * 1.4426950408889634074 + 0x1.8p52, n = big - 0x1.8p52;
    double r = (z - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10, p, s;
    uint64_t bits;
    p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    memcpy(&bits, &big, sizeof bits);
    bits = (bits - 0x4338000000000000u + 1023u) << 52;   /* (n + 1023) << 52 */
    memcpy(&s, &bits, sizeof s);
    return p * s;
}

#define EXP_LIMIT 700.0        /* |z| for tensor_exp is kept below this (e^700 ~ 1e304) */

/* e^z for the library's other callers (exp(logit_scale)): tensor_exp, so
 * that it too has the same bits on every machine */
double clip_exp(double z)
{
    return tensor_exp(z < -EXP_LIMIT ? -EXP_LIMIT : z > EXP_LIMIT ? EXP_LIMIT : z);
}

/* The normal CDF, Phi(x) = (1 + erf(x / sqrt 2)) / 2, for a float x (exact
 * GELU is x Phi(x)), without libm. With u = x / sqrt 2 and t = u^2 = x^2 / 2
 * (exact in double: x has 24 bits, so e^-t carries only tensor_exp's
 * rounding):
 *   |u| < 2:  erf(u) = 2/sqrt(pi) e^-t u sum_{n>=0} (2t)^n / (1 3 5 ... (2n+1))
 *                    = sqrt(2/pi) x e^-t sum_n x^(2n) / (1 3 5 ... (2n+1)),
 *             positive terms (no cancellation), summed n = 0, 1, ... until a
 *             term no longer changes the sum;
 *   |u| >= 2: erfc(|u|) = e^-t / sqrt(pi) / (u + (1/2) / (u + 1 / (u + (3/2) / (u + ...)))),
 *             Laplace's continued fraction, 64 levels evaluated from the
 *             bottom up (converged to double for u >= 2); Phi is then
 *             1 - erfc/2 or erfc/2, so that a large negative x keeps its
 *             tiny Phi instead of cancelling 1 + erf to zero.
 * Beyond t = 700 Phi is 0 or 1 (e^-700 / x underflows any product with a
 * float); NaN stays NaN. Only IEEE double additions, multiplications and
 * divisions, in one order: the same bits on every machine. */
#define CF_LEVELS 64
static inline double tensor_normal_cdf(float xf)
{
    double x = xf, x2 = x * x, t = 0.5 * x2, u, f, erfc;
    if (x != x) return x;
    if (x2 < 8.0) {
        double term = 1.0, sum = 1.0;
        for (int n = 1; term > sum * 0x1p-60; n++) {       /* at most 42 terms for x^2 < 8 */
            term = term * x2 / (2 * n + 1);
            sum += term;
        }
        return 0.5 * (1.0 + 0.79788456080286535588 * x * tensor_exp(-t) * sum);
    }
    if (t > EXP_LIMIT) return x > 0 ? 1.0 : 0.0;
    u = (x > 0 ? x : -x) * 0.70710678118654752440;
    f = u;
    for (int k = CF_LEVELS; k >= 1; k--) f = u + (0.5 * k) / f;
    erfc = tensor_exp(-t) * 0.56418958354775628695 / f;      /* 1 / sqrt(pi) */
    return x > 0 ? 1.0 - 0.5 * erfc : 0.5 * erfc;
}

#define SIGMOID_LIMIT 400.0    /* beyond |x| = 400, float(sigmoid(1.702 x)) is exactly 0 or 1 */

/* ------------------------------------------------------------------------ */
/* Weights in float16 and in 8-bit blocks (README, "The model file")         */
/* ------------------------------------------------------------------------ */
/* A weight [out, in] is float32 or float16 (row-major, as PyTorch has it), or
 * q8: blocks of Q8_BLOCK = 32 int8 values along `in`, one float32 scale per
 * block, the value being q * scale. For the vector units the q8 rows come in
 * groups of Q8_ROWS = 16, and a group keeps 4 consecutive values of each of
 * its 16 rows together: one 64-byte vector holds values k..k+3 of rows
 * o..o+15, the shape of a 4-way int8 dot product per lane (VNNI, NEON's
 * sdot). `in` is padded with zeros to a multiple of 32 and `out` to one of
 * 16 (in32, out16):
 *
 *   quants: out16 / 16 groups of [in32 / 4][16][4] int8      (out16 * in32 bytes)
 *   scales: out16 / 16 groups of [in32 / 32][16] float32     (after the quants)
 *
 * so value (o, k) is quants[(o/16) 16 in32 + (k/4) 64 + (o%16) 4 + k%4] and
 * its scale scales[((o/16) (in32/32) + k/32) 16 + o%16]. The matrix products
 * on q8 weights quantize the activations the same way (clip_quantize_rows),
 * so that each block is one exact int32 sum of 32 int8 products. */
#define Q8_BLOCK 32
#define Q8_ROWS 16
#define Q8_QUADS (Q8_BLOCK / 4)   /* 4-value steps per block */

static size_t pad_to(size_t v, size_t m) { return (v + m - 1) / m * m; }

size_t clip_weight_bytes(int dtype, int out, int in)
{
    if (out < 0 || in < 0) return 0;
    switch (dtype) {
    case CLIP_DTYPE_F32: return (size_t)out * in * 4;
    case CLIP_DTYPE_F16: return (size_t)out * in * 2;
    case CLIP_DTYPE_Q8: return pad_to((size_t)out, Q8_ROWS) * pad_to((size_t)in, Q8_BLOCK) / Q8_BLOCK * (Q8_BLOCK + 4);
    default: return 0;
    }
}

/* IEEE float16 -> float32, exactly: the 15 bits below the sign moved up 13
 * bits are the float32 of value * 2^-112 (subnormal halves included), which
 * one multiplication by 2^112 rebiases; infinities and NaNs are set apart. */
static inline float f16_to_f32(uint16_t h)
{
    uint32_t mag = (uint32_t)(h & 0x7fffu) << 13, u;
    float f;
    memcpy(&f, &mag, sizeof f);
    f *= 0x1p112f;
    memcpy(&u, &f, sizeof u);
    if ((h & 0x7c00u) == 0x7c00u) u = 0x7f800000u | mag;
    u |= (uint32_t)(h & 0x8000u) << 16;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* where the q8 value (o, k) and its scale lie */
static inline size_t q8_at(int o, int k, int in32)
{
    return (size_t)(o / Q8_ROWS) * Q8_ROWS * in32 + (size_t)(k / 4) * (4 * Q8_ROWS) + (size_t)(o % Q8_ROWS) * 4 + k % 4;
}
static inline const float *q8_scales(const void *w, int out, int in32)
{
    return (const float *)(const void *)((const int8_t *)w + pad_to((size_t)out, Q8_ROWS) * in32);
}
static inline size_t q8_scale_at(int o, int blk, int in32)
{
    return ((size_t)(o / Q8_ROWS) * (in32 / Q8_BLOCK) + blk) * Q8_ROWS + o % Q8_ROWS;
}

/* dst[in] = row `row` of w [out, in] in float32 (a token embedding's row):
 * exact, since float16 and q * scale (a float product of an int8) are */
void clip_weight_row(float *dst, const clip_weight *w, int row, int in, int out)
{
    if (w->dtype == CLIP_DTYPE_F16) {
        const uint16_t *h = (const uint16_t *)w->data + (size_t)row * in;
        for (int k = 0; k < in; k++) dst[k] = f16_to_f32(h[k]);
    } else if (w->dtype == CLIP_DTYPE_Q8) {
        int in32 = (int)pad_to((size_t)in, Q8_BLOCK);
        const int8_t *q = w->data;
        const float *s = q8_scales(w->data, out, in32);
        for (int k = 0; k < in; k++) dst[k] = q[q8_at(row, k, in32)] * s[q8_scale_at(row, k / Q8_BLOCK, in32)];
    } else {
        memcpy(dst, (const float *)w->data + (size_t)row * in, (size_t)in * sizeof(float));
    }
}

/* The activations a q8 product reads, quantized per block of 32 as the
 * weights are: for row i and block b, with amax the largest |x| in it,
 *   scale = amax / 127,  q = round-to-even(x * (127 / amax))   (all 0 if amax is 0)
 * both in float32, and asum = the sum of the block's q (which the VNNI
 * kernel needs). The rows are in32 bytes apart (zeros past `in`); the
 * scales and sums in32 / 32 apart. Every build computes these identically. */
typedef struct {
    int8_t *q;       /* [n, in32] */
    float *scale;    /* [n, in32 / 32] */
    int32_t *sum;    /* [n, in32 / 32] */
} q8_rows;

static size_t q8_rows_floats(int n, int in)
{
    size_t in32 = pad_to((size_t)(in > 0 ? in : 0), Q8_BLOCK);
    return (size_t)(n > 0 ? n : 0) * (in32 / 4 + 2 * in32 / Q8_BLOCK);
}

static q8_rows q8_rows_in(float *scratch, int n, int in)
{
    q8_rows r;
    size_t in32 = pad_to((size_t)in, Q8_BLOCK);
    r.q = (int8_t *)(void *)scratch;
    r.scale = scratch + (size_t)n * in32 / 4;
    r.sum = (int32_t *)(void *)(r.scale + (size_t)n * in32 / Q8_BLOCK);
    return r;
}

/* row i of x (in values) into r; the largest |x| as the largest of the bit
 * patterns below the sign (an integer maximum, which vectorizes; a NaN's
 * pattern is above every number's) */
static void quantize_row(const q8_rows *r, const float *x, int i, int in)
{
    int in32 = (int)pad_to((size_t)in, Q8_BLOCK), nb = in32 / Q8_BLOCK;
    for (int b = 0; b < nb; b++) {
        float v[Q8_BLOCK], amax, inv;
        uint32_t bits[Q8_BLOCK], top = 0;
        int8_t *q = r->q + (size_t)i * in32 + b * Q8_BLOCK;
        int32_t sum = 0, have = in - b * Q8_BLOCK < Q8_BLOCK ? in - b * Q8_BLOCK : Q8_BLOCK;
        memset(v, 0, sizeof v);
        memcpy(v, x + (size_t)i * in + b * Q8_BLOCK, (size_t)have * sizeof(float));
        memcpy(bits, v, sizeof v);
        for (int t = 0; t < Q8_BLOCK; t++) top = (bits[t] & 0x7fffffffu) > top ? bits[t] & 0x7fffffffu : top;
        memcpy(&amax, &top, sizeof amax);
        inv = top > 0 && top < 0x7f800000u ? 127.0f / amax : 0.0f;
        if (top >= 0x7f800000u) memset(v, 0, sizeof v);   /* inf or NaN: q 0, the scale inf or NaN */
        for (int t = 0; t < Q8_BLOCK; t++) {
            /* |p| <= 127 (and a hair); rounded to nearest even: below 2^22, adding 1.5 * 2^23
             * leaves no fraction bits (a loop that vectorizes, where nearbyintf is a call) */
            float p = v[t] * inv, big = p + 12582912.0f;   /* each stored as a float (x87: rounded) */
            p = big - 12582912.0f;
            q[t] = (int8_t)p;
            sum += q[t];
        }
        r->scale[(size_t)i * nb + b] = amax / 127.0f;
        r->sum[(size_t)i * nb + b] = sum;
    }
}

static void clip_quantize_rows(const q8_rows *r, const float *x, int n, int in)
{
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if ((double)n * in >= 32768.0)
#endif
    for (int i = 0; i < n; i++) quantize_row(r, x, i, in);
}

/* what a product whose working memory could not be allocated leaves in y:
 * NaN, which no real result is (the library's kernels return nothing) */
static void linear_failed(float *y, int n, int out)
{
    for (size_t i = 0; i < (size_t)n * out; i++) y[i] = NAN;
}

/* ======================================================================== */
/* Part 1: reference kernels                                                 */
/* ======================================================================== */
/* Plain loops over the textbook formulas. Each output is one sum, k = 0, 1,
 * ... in order, in double, rounded to float once. A product of two floats
 * is exact in double, so in the matrix products FMA contraction could not
 * change a sum either; LayerNorm's variance and tensor_exp multiply doubles,
 * which is why the reference build turns contraction off
 * (-ffp-contract=off). (On i386 without SSE2, x87 rounds each double twice:
 * a bit-reproducible i386 build needs -msse2 -mfpmath=sse.) Threads
 * (OpenMP) take whole output columns or heads. Values the model keeps in
 * float32 between steps (a score, a probability) are stored as float. */

#define REF_PARALLEL_MIN 100000.0   /* multiply-adds below which a reference kernel runs on one thread */

/* torch.nn.Linear (CLIP's q/k/v/out_proj, fc1, fc2, the projections):
 *   y[n, out] = x[n, in] @ w[out, in]^T + b[out]        (b may be NULL)
 * Threads split the output columns: each row of w is read once, and stays in
 * cache while every row of x passes over it. */
void clip_ref_linear(float *y, const float *x, const float *w, const float *b, int n, int in, int out)
{
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if ((double)n * in * out >= REF_PARALLEL_MIN)
#endif
    for (int o = 0; o < out; o++) {
        const float *wo = w + (size_t)o * in;
        for (int i = 0; i < n; i++) {
            const float *xi = x + (size_t)i * in;
            double s = 0.0;
            for (int k = 0; k < in; k++) s += (double)xi[k] * wo[k];
            if (b) s += b[o];
            y[(size_t)i * out + o] = (float)s;
        }
    }
}

/* torch.nn.LayerNorm(d, eps) over each row of x[n, d] (layer_norm1/2,
 * pre_layrnorm, post_layernorm, final_layer_norm):
 *   y = (x - mean) / sqrt(var + eps) * gamma + beta,  var biased (divided by d) */
void clip_ref_layer_norm(float *y, const float *x, const float *gamma, const float *beta, int n, int d, float eps)
{
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        double mean = 0.0, var = 0.0, inv;
        for (int j = 0; j < d; j++) mean += xi[j];
        mean /= d;
        for (int j = 0; j < d; j++) var += (xi[j] - mean) * (xi[j] - mean);
        var /= d;
        inv = 1.0 / sqrt(var + (double)eps);
        for (int j = 0; j < d; j++) y[(size_t)i * d + j] = (float)((xi[j] - mean) * inv * gamma[j] + beta[j]);
    }
}

/* softmax over each row of x[n, d], in place (the attention probabilities):
 *   x_j = exp(x_j - max) / sum_k exp(x_k - max) */
void clip_ref_softmax(float *x, int n, int d)
{
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)i * d, max = xi[0];
        double sum = 0.0;
        for (int j = 1; j < d; j++) max = xi[j] > max ? xi[j] : max;
        for (int j = 0; j < d; j++) {
            double z = (double)xi[j] - max;
            xi[j] = (float)tensor_exp(z < -EXP_LIMIT ? -EXP_LIMIT : z);
            sum += xi[j];
        }
        for (int j = 0; j < d; j++) xi[j] = (float)(xi[j] / sum);
    }
}

/* Scaled dot-product attention for one query row and one head
 * (CLIPAttention between the projections and out_proj):
 *   p[j] = softmax_j(q . k_j)  for j < len,   o = sum_j p[j] v_j
 * q, o: [hd]; k, v: [len] rows ld floats apart; p: len floats of scratch.
 * q already carries the 1/sqrt(hd) scale. */
static void ref_attention_row(float *o, const float *q, const float *k, const float *v, int ld, int len, int hd,
                              float *p)
{
    for (int j = 0; j < len; j++) {
        double s = 0.0;
        for (int t = 0; t < hd; t++) s += (double)q[t] * k[(size_t)j * ld + t];
        p[j] = (float)s;
    }
    clip_ref_softmax(p, 1, len);
    for (int t = 0; t < hd; t++) {
        double s = 0.0;
        for (int j = 0; j < len; j++) s += (double)p[j] * v[(size_t)j * ld + t];
        o[t] = (float)s;
    }
}

/* Every head for one query row q[heads * hd] against the first len rows of
 * k, v [len, heads * hd] -> out[heads * hd]; head h is columns [h hd, (h+1) hd).
 * scratch: len floats. (The pooled last layer asks this for one row.) */
void clip_ref_attention_query(float *out, const float *q, const float *k, const float *v,
                              int len, int heads, int head_dim, float *scratch)
{
    int d = heads * head_dim;
    for (int h = 0; h < heads; h++) {
        int c = h * head_dim;
        ref_attention_row(out + c, q + c, k + c, v + c, d, len, head_dim, scratch);
    }
}

/* Multi-head attention over a whole sequence: q, k, v, out [n, heads * hd].
 * Row i sees keys 0..i when causal (the text tower), all n otherwise.
 * scratch: heads * n floats (a row of scores per head, so that threads can
 * take heads). */
void clip_ref_attention(float *out, const float *q, const float *k, const float *v,
                        int n, int heads, int head_dim, int causal, float *scratch)
{
    int d = heads * head_dim;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if ((double)heads * n * n * head_dim >= REF_PARALLEL_MIN)
#endif
    for (int h = 0; h < heads; h++) {
        int c = h * head_dim;
        for (int i = 0; i < n; i++)
            ref_attention_row(out + (size_t)i * d + c, q + (size_t)i * d + c, k + c, v + c, d,
                              causal ? i + 1 : n, head_dim, scratch + (size_t)h * n);
    }
}

/* ACT2FN["quick_gelu"] (OpenAI's checkpoints): x * sigmoid(1.702 x), the
 * sigmoid in double and rounded to float, as a float32 model has it */
void clip_ref_quick_gelu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double z = x[i] > SIGMOID_LIMIT ? SIGMOID_LIMIT : x[i] < -SIGMOID_LIMIT ? -SIGMOID_LIMIT : x[i];
        x[i] = x[i] * (float)(1.0 / (1.0 + tensor_exp(-1.702 * z)));
    }
}

/* ACT2FN["gelu"], the exact one: 0.5 x (1 + erf(x / sqrt 2)) = x Phi(x) */
void clip_ref_gelu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)(x[i] * tensor_normal_cdf(x[i]));
}

/* nn.Linear on a float16 weight: clip_ref_linear's sums, each w[o][k]
 * widened to float32 first (exactly) */
static void ref_linear_f16(float *y, const float *x, const uint16_t *w, const float *b, int n, int in, int out)
{
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if ((double)n * in * out >= REF_PARALLEL_MIN)
#endif
    for (int o = 0; o < out; o++) {
        const uint16_t *wo = w + (size_t)o * in;
        for (int i = 0; i < n; i++) {
            const float *xi = x + (size_t)i * in;
            double s = 0.0;
            for (int k = 0; k < in; k++) s += (double)xi[k] * f16_to_f32(wo[k]);
            if (b) s += b[o];
            y[(size_t)i * out + o] = (float)s;
        }
    }
}

/* nn.Linear on a q8 weight, the activations quantized (xq, clip_quantize_rows):
 *   y[i, o] = sum over blocks b of (sum over the block's k of xq[i,k] wq[o,k]) * xscale[i,b] * wscale[o,b]  + bias[o]
 * Each block's sum is exact in int32 (32 products of at most 127^2); the
 * blocks are added in order in double, each times the product of its two
 * scales (exact in double), then rounded to float once. */
static void ref_linear_q8(float *y, const q8_rows *xq, const void *w, const float *b, int n, int in, int out)
{
    int in32 = (int)pad_to((size_t)in, Q8_BLOCK), nb = in32 / Q8_BLOCK;
    const int8_t *wq = w;
    const float *ws = q8_scales(w, out, in32);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if ((double)n * in * out >= REF_PARALLEL_MIN)
#endif
    for (int o = 0; o < out; o++)
        for (int i = 0; i < n; i++) {
            const int8_t *xi = xq->q + (size_t)i * in32;
            double s = 0.0;
            for (int blk = 0; blk < nb; blk++) {
                int32_t dot = 0;
                for (int k = blk * Q8_BLOCK; k < (blk + 1) * Q8_BLOCK; k++) dot += xi[k] * wq[q8_at(o, k, in32)];
                s += dot * ((double)xq->scale[(size_t)i * nb + blk] * ws[q8_scale_at(o, blk, in32)]);
            }
            if (b) s += b[o];
            y[(size_t)i * out + o] = (float)s;
        }
}

/* y = x w^T + b for a weight of any dtype; scratch: clip_linear_scratch(n, in)
 * floats (the quantized activations of a q8 product), or NULL to allocate */
void clip_ref_linear_weight(float *y, const float *x, const clip_weight *w, const float *b, int n, int in, int out,
                            float *scratch)
{
    if (w->dtype == CLIP_DTYPE_F16) ref_linear_f16(y, x, w->data, b, n, in, out);
    else if (w->dtype == CLIP_DTYPE_Q8) {
        float *own = scratch ? NULL : malloc(q8_rows_floats(n, in) * sizeof(float) + 1);
        q8_rows xq;
        if (!scratch && !own) { linear_failed(y, n, out); return; }
        xq = q8_rows_in(scratch ? scratch : own, n, in);
        clip_quantize_rows(&xq, x, n, in);
        ref_linear_q8(y, &xq, w->data, b, n, in, out);
        free(own);
    } else clip_ref_linear(y, x, w->data, b, n, in, out);
}

/* In a reference build every public kernel below is its reference. */
#ifdef CLIP_REFERENCE

size_t clip_linear_scratch(int n, int in) { return q8_rows_floats(n, in); }
size_t clip_attention_scratch(int n, int heads, int head_dim) { (void)head_dim; return n > 0 && heads > 0 ? (size_t)heads * n : 0; }

void clip_linear_weight(float *y, const float *x, const clip_weight *w, const float *b, int n, int in, int out,
                        float *scratch)
{
    clip_ref_linear_weight(y, x, w, b, n, in, out, scratch);
}

void clip_linear3_weight(float *const y[3], const float *x, const clip_weight *const w[3], const float *const b[3],
                         int n, int in, int out, float *scratch)
{
    for (int p = 0; p < 3; p++) clip_linear_weight(y[p], x, w[p], b[p], n, in, out, scratch);
}

void clip_layer_norm(float *y, const float *x, const float *gamma, const float *beta, int n, int d, float eps)
{
    clip_ref_layer_norm(y, x, gamma, beta, n, d, eps);
}

void clip_softmax(float *x, int n, int d) { clip_ref_softmax(x, n, d); }

void clip_attention(float *out, const float *q, const float *k, const float *v,
                    int n, int heads, int head_dim, int causal, float *scratch)
{
    clip_ref_attention(out, q, k, v, n, heads, head_dim, causal, scratch);
}

void clip_attention_query(float *out, const float *q, const float *k, const float *v,
                          int len, int heads, int head_dim, float *scratch)
{
    clip_ref_attention_query(out, q, k, v, len, heads, head_dim, scratch);
}

void clip_quick_gelu(float *x, size_t n) { clip_ref_quick_gelu(x, n); }
void clip_gelu(float *x, size_t n) { clip_ref_gelu(x, n); }

#else /* the fast kernels */

/* ======================================================================== */
/* Part 2: fast kernels                                                      */
/* ======================================================================== */
/* Speed comes from loops that compilers vectorize on their own (plain C99,
 * no intrinsics: inner loops of fixed length over independent lanes) and
 * from OpenMP threads where there is enough work. */

/* The matrix products' multiply-adds: fused (fmaf, one rounding) where the
 * machine has FMA, else a product and then a sum. Nothing else is fused: the
 * Makefile builds with -ffp-contract=off, so that LayerNorm, softmax,
 * attention, the activations and q8's scaling round the same on every
 * machine and in WebAssembly (which has no FMA). A q8 model, whose products
 * are exact integer sums, then gives the same bits natively as in a browser;
 * a float32 or float16 model agrees to rounding. */
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
#define MADD(a, b, c) fmaf(a, b, c)
#else
#define MADD(a, b, c) ((a) * (b) + (c))
#endif

/* Lane loops are independent by construction; clang needs telling when it
 * cannot prove that the accumulators and the operands do not overlap. */
#ifdef _OPENMP
#define LANES _Pragma("omp simd")
#else
#define LANES
#endif
/* The attention kernels' sums fill most of the vector registers; gcc's
 * unroll-and-jam would double the operands in flight and spill sums to
 * memory (15% slower). */
#if defined(__GNUC__) && !defined(__clang__)
#define NO_JAM __attribute__((optimize("no-loop-unroll-and-jam")))
#else
#define NO_JAM
#endif

/* ------------------------------------------------------------------------ */
/* Matrix product: clip_ref_linear's y = x w^T + b                           */
/* ------------------------------------------------------------------------ */
/* In matrix terms C[m, n] = A[m, k] @ B[n, k]^T (+ bias[n]): A is x, the
 * activations (small), B is the weight (big, mmap'ed from the model file),
 * both k-contiguous. Two kernels, both shaped so that gcc and clang
 * vectorize their inner loops over VL lanes and keep every accumulator in a
 * register:
 *
 * - strips (m >= 16): A is copied once per call into k-major order, a strip
 *   of w = SW, SW - VL or VL rows at a time (pa[p][t] = A[i0 + t][p]). For a
 *   tile of NB rows of B and one strip, each k step broadcasts NB values of
 *   B, read in place from the weight, and multiplies them with the strip's
 *   row of pa: NB x w accumulators, no copy of the weight at all. Each KC
 *   block of k is summed on its own and then added up (shorter chains, less
 *   rounding).
 * - dots (m < 16, a short text): every output is a dot product of a row of
 *   A with a row of B; one row of A against DOT_ROWS rows of B keeps VL
 *   partial sums per output, split by k modulo VL, and adds them pairwise
 *   at the end. Nothing is copied.
 *
 * Against the reference: the same products, summed in float, in lanes and
 * blocks instead of one chain in double; about 300 GFLOP/s on two cores
 * where the reference reaches about 3. Threads split the rows of B (the output columns) as the
 * reference's do; each weight is read once. B may be several weights side
 * by side (q_proj, k_proj and v_proj, which read the same input): column j
 * of the product is row j % n of part j / n, written to that part's output.
 * One copy of A and one split of the work then serve all three. */

/* VL is the vector width the loops are shaped for; the others are facts of
 * the code below, not knobs: gemm_strip_tile and gemm_dot_2xnb spell out
 * NB = 6 rows of B (six accumulator arrays), gemm_dot_1x8 DOT_ROWS = 8, and
 * the strips are SW = 3 VL, 2 VL or VL rows wide (each row of a strip is one
 * lane of 3, 2 or 1 vectors). */
#define VL 16          /* lanes: one AVX-512 register of floats */
#define NB 6           /* rows of B per strip tile */
#define SW (3 * VL)    /* widest strip of A rows */
#define DOT_ROWS 8     /* rows of B per dot-product block */
#define KC 256         /* k steps summed on their own before they are added up */
#define PACK_K 64      /* k steps per piece of the copy of A (pieces are split between threads) */
#define GROUP 8        /* tiles of B per thread's unit of work (see gemm_strips) */
#define MC 512         /* rows of A per pass: bounds the copy of A (MC x k floats) */
#define GEMM_PARALLEL_MIN 200000.0   /* multiply-adds below which a product runs on one thread */
typedef char nb_is_six[NB == 6 ? 1 : -1];            /* the tile kernels' six named rows */
typedef char sw_is_three_vectors[SW == 3 * VL ? 1 : -1];

/* The weight side: `parts` matrices [n, k] (rows ldb apart), each with its
 * bias [n] (or NULL) and its output C [m, n] (rows ldc apart). */
typedef struct {
    int parts, n, ldb, ldc;
    const float *B[3], *bias[3];
    float *C[3];
} gemm_cols;

/* columns j0, j0 + 1, ... j0 + count - 1 of the product: their rows of B,
 * biases and columns of C (columns past the end repeat the last one, whose
 * results are dropped); one division, then a walk */
static void cols_of(const gemm_cols *W, int j0, int count, const float **b, float *bias, float **c)
{
    int last = W->parts * W->n - 1, p = (j0 < last ? j0 : last) / W->n, r = (j0 < last ? j0 : last) % W->n;
    for (int i = 0; i < count; i++) {
        b[i] = W->B[p] + (size_t)r * W->ldb;
        bias[i] = W->bias[p] ? W->bias[p][r] : 0.0f;
        c[i] = W->C[p] + r;
        if (j0 + i < last && ++r == W->n) { r = 0; p++; }
    }
}

/* pa[p][t] = A[i0 + t][p] for p in [p0, p1), t < w; zero for rows past `rows` */
static void gemm_pack_strip(float *pa, const float *A, int lda, int i0, int rows, int w, int p0, int p1)
{
    for (int t = 0; t < w; t++) {
        if (t < rows) {
            const float *a = A + (size_t)(i0 + t) * lda;
            for (int p = p0; p < p1; p++) pa[(size_t)p * w + t] = a[p];
        } else {
            for (int p = p0; p < p1; p++) pa[(size_t)p * w + t] = 0.0f;
        }
    }
}

/* tile[r][t] = sum over p < k of b[r][p] * pa[p][t], for r < NB, t < w (w <= SW) */
static void gemm_strip_tile(float *tile, const float *pa, const float *const b[NB], int k, int w)
{
    const float *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3], *b4 = b[4], *b5 = b[5];
    for (int j = 0; j < NB * w; j++) tile[j] = 0.0f;
    for (int k0 = 0; k0 < k; k0 += KC) {
        int k1 = k - k0 < KC ? k : k0 + KC;
        float c0[SW], c1[SW], c2[SW], c3[SW], c4[SW], c5[SW];
        for (int t = 0; t < w; t++) c0[t] = c1[t] = c2[t] = c3[t] = c4[t] = c5[t] = 0.0f;
        for (int p = k0; p < k1; p++) {
            const float *x = pa + (size_t)p * w;
            float y0 = b0[p], y1 = b1[p], y2 = b2[p], y3 = b3[p], y4 = b4[p], y5 = b5[p];
            LANES
            for (int t = 0; t < w; t++) {
                c0[t] = MADD(y0, x[t], c0[t]); c1[t] = MADD(y1, x[t], c1[t]); c2[t] = MADD(y2, x[t], c2[t]);
                c3[t] = MADD(y3, x[t], c3[t]); c4[t] = MADD(y4, x[t], c4[t]); c5[t] = MADD(y5, x[t], c5[t]);
            }
        }
        for (int t = 0; t < w; t++) {
            tile[t] += c0[t]; tile[w + t] += c1[t]; tile[2 * w + t] += c2[t];
            tile[3 * w + t] += c3[t]; tile[4 * w + t] += c4[t]; tile[5 * w + t] += c5[t];
        }
    }
}

/* C[i0 + t] in column r = tile[r][t] + bias[r] for t < rows, r < nb */
static void gemm_store_tile(float *const *c, const float *bias, int ldc, const float *tile, int w,
                            int i0, int rows, int nb)
{
    for (int t = 0; t < rows; t++)
        for (int r = 0; r < nb; r++) c[r][(size_t)(i0 + t) * ldc] = tile[r * w + t] + bias[r];
}

/* v[0] + ... + v[VL-1], adding halves (v is overwritten) */
static float sum_lanes(float *v)
{
    for (int l = 0; l < VL / 2; l++) v[l] += v[l + VL / 2];
    for (int l = 0; l < VL / 4; l++) v[l] += v[l + VL / 4];
    for (int l = 0; l < VL / 8; l++) v[l] += v[l + VL / 8];
    return v[0] + v[1];
}

/* a . b over len floats: VL interleaved partial sums, added pairwise */
static float dot_lanes(const float *a, const float *b, int len)
{
    float s[VL] = {0}, tail = 0.0f;
    int t, lv = len - len % VL;
    for (t = 0; t < lv; t += VL)
        for (int l = 0; l < VL; l++) s[l] += a[t + l] * b[t + l];
    for (; t < len; t++) tail += a[t] * b[t];
    return sum_lanes(s) + tail;
}

/* out[i][r] = a[i] . b[r] for i < 2, r < NB: the rows the strips leave over,
 * against one tile of B (twelve independent sums, VL lanes each) */
static void gemm_dot_2xnb(float out[2 * NB], const float *a0, const float *a1, const float *const b[NB], int k)
{
    const float *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3], *b4 = b[4], *b5 = b[5];
    float s00[VL] = {0}, s01[VL] = {0}, s02[VL] = {0}, s03[VL] = {0}, s04[VL] = {0}, s05[VL] = {0};
    float s10[VL] = {0}, s11[VL] = {0}, s12[VL] = {0}, s13[VL] = {0}, s14[VL] = {0}, s15[VL] = {0};
    float *s[2 * NB] = {s00, s01, s02, s03, s04, s05, s10, s11, s12, s13, s14, s15};
    int kv = k - k % VL;
    for (int p = 0; p < kv; p += VL) {
        const float *x0 = a0 + p, *x1 = a1 + p;
        const float *y0 = b0 + p, *y1 = b1 + p, *y2 = b2 + p, *y3 = b3 + p, *y4 = b4 + p, *y5 = b5 + p;
        LANES
        for (int l = 0; l < VL; l++) {
            s00[l] = MADD(x0[l], y0[l], s00[l]); s01[l] = MADD(x0[l], y1[l], s01[l]); s02[l] = MADD(x0[l], y2[l], s02[l]);
            s03[l] = MADD(x0[l], y3[l], s03[l]); s04[l] = MADD(x0[l], y4[l], s04[l]); s05[l] = MADD(x0[l], y5[l], s05[l]);
            s10[l] = MADD(x1[l], y0[l], s10[l]); s11[l] = MADD(x1[l], y1[l], s11[l]); s12[l] = MADD(x1[l], y2[l], s12[l]);
            s13[l] = MADD(x1[l], y3[l], s13[l]); s14[l] = MADD(x1[l], y4[l], s14[l]); s15[l] = MADD(x1[l], y5[l], s15[l]);
        }
    }
    for (int i = 0; i < 2 * NB; i++) {
        const float *a = i < NB ? a0 : a1, *y = b[i % NB];
        float t = 0.0f;
        for (int p = kv; p < k; p++) t = MADD(a[p], y[p], t);
        out[i] = sum_lanes(s[i]) + t;
    }
}

/* The strips: A's rows (all but up to 4 of them, see below) padded to a
 * multiple of VL, cut into strips of SW lanes and, where that leaves VL or
 * 2 VL over, one or two of 2 VL (a VL-lane strip has too few accumulators
 * to hide the latency of the multiply-adds). Strip s holds rows
 * [i0, i0 + rows) in w lanes, zero padded. When m is up to 4 rows past a
 * multiple of VL, those rows are left to plain dot products instead
 * (50 rows = 48 + 2). */
typedef struct { int m, extra, strips, wide; } strip_layout;   /* wide: strips of SW lanes */

static strip_layout strip_plan(int m)
{
    strip_layout L;
    int lanes;
    L.extra = m > VL && m % VL <= 4 ? m % VL : 0;
    L.m = m - L.extra;
    lanes = (L.m + VL - 1) / VL * VL;
    if (lanes <= SW) { L.wide = lanes == SW; L.strips = 1; }
    else if (lanes % SW == 0) { L.wide = lanes / SW; L.strips = L.wide; }
    else if (lanes % SW == 2 * VL) { L.wide = lanes / SW; L.strips = L.wide + 1; }
    else { L.wide = lanes / SW - 1; L.strips = L.wide + 2; }   /* SW + VL over: two of 2 VL */
    return L;
}

static void strip_of(const strip_layout *L, int s, int *i0, int *rows, int *w)
{
    *i0 = s < L->wide ? s * SW : L->wide * SW + (s - L->wide) * 2 * VL;
    *w = s < L->wide ? SW : L->m - *i0 <= VL ? VL : 2 * VL;
    *rows = L->m - *i0 < *w ? L->m - *i0 : *w;
}

/* Threads take contiguous runs of GROUP tiles (48 columns of C: whole cache
 * lines of every row, so that no two threads write the same line), a static
 * share each: one parallel pass, no queue. Within a group, every strip of A
 * passes over the group's rows of B while they are in cache. */
static void gemm_strips(const gemm_cols *W, const float *A, int lda, int m, int k, float *pa)
{
    strip_layout L = strip_plan(m);
    int n = W->parts * W->n, kpieces = (k + PACK_K - 1) / PACK_K, blocks = (n + NB - 1) / NB;
    int groups = (blocks + GROUP - 1) / GROUP;
#ifdef _OPENMP
#pragma omp parallel if ((double)m * n * k > GEMM_PARALLEL_MIN)
#endif
    {
        float tile[NB * SW];
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int piece = 0; piece < L.strips * kpieces; piece++) {
            int p0 = piece % kpieces * PACK_K, p1 = p0 + PACK_K < k ? p0 + PACK_K : k, i0, rows, w;
            strip_of(&L, piece / kpieces, &i0, &rows, &w);
            gemm_pack_strip(pa + (size_t)i0 * k, A, lda, i0, rows, w, p0, p1);
        }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int g = 0; g < groups; g++) {
            int jb1 = (g + 1) * GROUP < blocks ? (g + 1) * GROUP : blocks;
            const float *bg[GROUP * NB];   /* the group's columns */
            float biasg[GROUP * NB], *cg[GROUP * NB];
            cols_of(W, g * GROUP * NB, GROUP * NB, bg, biasg, cg);
            for (int s = 0; s < L.strips; s++) {
                int i0, rows, w;
                const float *p;
                strip_of(&L, s, &i0, &rows, &w);
                p = pa + (size_t)i0 * k;
                for (int jb = g * GROUP; jb < jb1; jb++) {
                    int j0 = jb * NB, nb = n - j0 < NB ? n - j0 : NB, t0 = (jb - g * GROUP) * NB;
                    const float *const *b = bg + t0;
                    const float *bias = biasg + t0;
                    float *const *c = cg + t0;
                    /* one copy of the kernel per width, every loop bound a constant */
                    if (w == SW) gemm_strip_tile(tile, p, b, k, SW);
                    else if (w == 2 * VL) gemm_strip_tile(tile, p, b, k, 2 * VL);
                    else gemm_strip_tile(tile, p, b, k, VL);
                    gemm_store_tile(c, bias, W->ldc, tile, w, i0, rows, nb);
                    for (int i = L.m; s == L.strips - 1 && i < m; i += 2) {   /* rows left over, two at a time */
                        float out[2 * NB];
                        const float *a0 = A + (size_t)i * lda, *a1 = i + 1 < m ? a0 + lda : a0;
                        gemm_dot_2xnb(out, a0, a1, b, k);
                        for (int t = 0; t < 2 && i + t < m; t++)
                            for (int r = 0; r < nb; r++) c[r][(size_t)(i + t) * W->ldc] = out[t * NB + r] + bias[r];
                    }
                }
            }
        }
    }
}

/* out[r] = a . b[r] for r < DOT_ROWS: eight dot products of length k, VL lanes each */
static void gemm_dot_1x8(float out[DOT_ROWS], const float *a, const float *const b[DOT_ROWS], int k)
{
    const float *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3], *b4 = b[4], *b5 = b[5], *b6 = b[6], *b7 = b[7];
    float s0[VL] = {0}, s1[VL] = {0}, s2[VL] = {0}, s3[VL] = {0}, s4[VL] = {0}, s5[VL] = {0}, s6[VL] = {0}, s7[VL] = {0};
    float *s[DOT_ROWS] = {s0, s1, s2, s3, s4, s5, s6, s7};
    int kv = k - k % VL;
    for (int p = 0; p < kv; p += VL) {
        const float *x = a + p;
        LANES
        for (int l = 0; l < VL; l++) {
            s0[l] = MADD(x[l], b0[p + l], s0[l]); s1[l] = MADD(x[l], b1[p + l], s1[l]);
            s2[l] = MADD(x[l], b2[p + l], s2[l]); s3[l] = MADD(x[l], b3[p + l], s3[l]);
            s4[l] = MADD(x[l], b4[p + l], s4[l]); s5[l] = MADD(x[l], b5[p + l], s5[l]);
            s6[l] = MADD(x[l], b6[p + l], s6[l]); s7[l] = MADD(x[l], b7[p + l], s7[l]);
        }
    }
    for (int r = 0; r < DOT_ROWS; r++) {
        float t = 0.0f;
        for (int p = kv; p < k; p++) t = MADD(a[p], b[r][p], t);
        out[r] = sum_lanes(s[r]) + t;
    }
}
typedef char dot_rows_is_eight[DOT_ROWS == 8 ? 1 : -1];   /* gemm_dot_1x8's eight named sums */

/* every row of A against a block of DOT_ROWS rows of B, which stays in cache meanwhile */
static void gemm_dots(const gemm_cols *W, const float *A, int lda, int m, int k)
{
    int n = W->parts * W->n, blocks = (n + DOT_ROWS - 1) / DOT_ROWS;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 2) if ((double)m * n * k > GEMM_PARALLEL_MIN)
#endif
    for (int jb = 0; jb < blocks; jb++) {
        int j0 = jb * DOT_ROWS, nb = n - j0 < DOT_ROWS ? n - j0 : DOT_ROWS;
        const float *b[DOT_ROWS];
        float out[DOT_ROWS], bias[DOT_ROWS], *c[DOT_ROWS];
        cols_of(W, j0, DOT_ROWS, b, bias, c);
        for (int i = 0; i < m; i++) {
            gemm_dot_1x8(out, A + (size_t)i * lda, b, k);
            for (int r = 0; r < nb; r++) c[r][(size_t)i * W->ldc] = out[r] + bias[r];
        }
    }
}

/* The copy of A for m rows of k: one pass's rows (at most MC) padded to a
 * multiple of VL (nothing for dot products, m < 16); or, for a q8 weight, the
 * quantized rows, whichever is larger. */
size_t clip_linear_scratch(int n, int in)
{
    int rows = n < MC ? n : MC;
    size_t pack = n < 16 || in <= 0 ? 0 : (size_t)((rows + VL - 1) / VL * VL) * (size_t)in, q8 = q8_rows_floats(n, in);
    return pack > q8 ? pack : q8;
}

/* pa: clip_linear_scratch(m, k) floats, or NULL to allocate them here
 * (without memory for that, dot products do it all) */
static void gemm_nt(const gemm_cols *W, const float *A, int lda, int m, int k, float *pa)
{
    float *own = NULL;
    int passes, rows;
    if (m <= 0 || W->n <= 0) return;
    if (k <= 0) {   /* empty sums */
        for (int p = 0; p < W->parts; p++)
            for (int i = 0; i < m; i++)
                for (int j = 0; j < W->n; j++) W->C[p][(size_t)i * W->ldc + j] = W->bias[p] ? W->bias[p][j] : 0.0f;
        return;
    }
    if (m < 16) {
        gemm_dots(W, A, lda, m, k);
        return;
    }
    if (!pa && (size_t)k <= ((size_t)-1) / sizeof(float) / ((size_t)MC + VL))
        pa = own = malloc(clip_linear_scratch(m, k) * sizeof(float));
    if (!pa) {
        gemm_dots(W, A, lda, m, k);
        return;
    }
    /* passes of at most MC rows, as even as can be */
    passes = (m + MC - 1) / MC;
    rows = (m + passes - 1) / passes;
    for (int i0 = 0; i0 < m; i0 += rows) {
        gemm_cols part = *W;
        for (int p = 0; p < W->parts; p++) part.C[p] = W->C[p] + (size_t)i0 * W->ldc;
        gemm_strips(&part, A + (size_t)i0 * lda, lda, m - i0 < rows ? m - i0 : rows, k, pa);
    }
    free(own);
}

/* ------------------------------------------------------------------------ */
/* float16 weights: ref_linear_f16's sums                                    */
/* ------------------------------------------------------------------------ */
/* Threads take blocks of DOT_ROWS rows of the weight; each block is widened
 * to float32 F16_CHUNK values at a time into a buffer on the stack, and
 * every row of x takes its dot products with the buffer while it is in L1
 * (gemm_dot_1x8). The sums are the dot kernel's, chunk by chunk. */
#define F16_CHUNK 256

static void linear_f16(float *y, const float *x, const uint16_t *w, const float *b, int n, int in, int out)
{
    int blocks = (out + DOT_ROWS - 1) / DOT_ROWS;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 2) if ((double)n * in * out > GEMM_PARALLEL_MIN)
#endif
    for (int jb = 0; jb < blocks; jb++) {
        int j0 = jb * DOT_ROWS, nb = out - j0 < DOT_ROWS ? out - j0 : DOT_ROWS;
        float buf[DOT_ROWS][F16_CHUNK], part[DOT_ROWS];
        const float *rows[DOT_ROWS];
        for (int r = 0; r < DOT_ROWS; r++) rows[r] = buf[r < nb ? r : 0];
        for (int i = 0; i < n; i++)
            for (int r = 0; r < nb; r++) y[(size_t)i * out + j0 + r] = b ? b[j0 + r] : 0.0f;
        for (int k0 = 0; k0 < in; k0 += F16_CHUNK) {
            int len = in - k0 < F16_CHUNK ? in - k0 : F16_CHUNK;
            for (int r = 0; r < nb; r++) {
                const uint16_t *h = w + (size_t)(j0 + r) * in + k0;
                for (int t = 0; t < len; t++) buf[r][t] = f16_to_f32(h[t]);
            }
            for (int i = 0; i < n; i++) {
                gemm_dot_1x8(part, x + (size_t)i * in + k0, rows, len);
                for (int r = 0; r < nb; r++) y[(size_t)i * out + j0 + r] += part[r];
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* q8 weights: ref_linear_q8's sums                                          */
/* ------------------------------------------------------------------------ */
/* A tile is QR rows of x against two groups of 16 rows of the weight (32
 * outputs): per block, the 32 x QR int32 sums of 32 int8 products (one
 * vector of 16 lanes per row of x and group on AVX-512, two on AVX2, four on
 * NEON and WebAssembly), then each converted to float and added times its
 * two scales into a float sum per output. The int32 sums are exact, as the
 * reference's; the float sums run over the blocks in order, in float instead
 * of double. Two groups share each load of x. Threads take pairs of groups,
 * whose weights stay in cache while every tile of x passes over them. */
#define QR 4   /* rows of x per tile */

/* isum[r][l] = sum over the block's 32 k of xq[r][k] * wq[l][k] for r < QR, l < 16;
 * wq: the block's 512 bytes, [8 quads][16 rows][4]; xq[r]: the block's 32 values */
#if defined(__AVX512F__) && defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>
#define Q8_KERNEL "AVX-512 VNNI"
/* vpdpbusd multiplies unsigned by signed bytes: the weight's bytes, their top
 * bit flipped, are w + 128 as unsigned, and the xq bytes (signed) come
 * broadcast 4 at a time, so that lane l sums (w + 128) x; 128 times the
 * block's sum of x (asum) comes off at the start. */
static void q8_tile(float acc[2][QR][Q8_ROWS], const int8_t *const xq[QR], const float *const xs[QR],
                    const int32_t *const xsum[QR], const int8_t *const wq[2], const float *const ws[2], int nb)
{
    __m512 f[2][QR];
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (int h = 0; h < 2; h++)
        for (int r = 0; r < QR; r++) f[h][r] = _mm512_loadu_ps(acc[h][r]);
    for (int blk = 0; blk < nb; blk++) {
        __m512i s[2][QR];   /* 2 QR independent chains of vpdpbusd */
        for (int r = 0; r < QR; r++) s[0][r] = s[1][r] = _mm512_set1_epi32(-128 * xsum[r][blk]);
        for (int q = 0; q < Q8_QUADS; q++) {
            size_t at = ((size_t)blk * Q8_QUADS + q) * 64;
            __m512i w0 = _mm512_xor_si512(_mm512_loadu_si512((const void *)(wq[0] + at)), flip);
            __m512i w1 = _mm512_xor_si512(_mm512_loadu_si512((const void *)(wq[1] + at)), flip);
            for (int r = 0; r < QR; r++) {
                int32_t a4;
                __m512i a;
                memcpy(&a4, xq[r] + (size_t)blk * Q8_BLOCK + 4 * q, 4);
                a = _mm512_set1_epi32(a4);
                s[0][r] = _mm512_dpbusd_epi32(s[0][r], w0, a);
                s[1][r] = _mm512_dpbusd_epi32(s[1][r], w1, a);
            }
        }
        for (int h = 0; h < 2; h++) {
            __m512 sw = _mm512_loadu_ps(ws[h] + (size_t)blk * Q8_ROWS);
            for (int r = 0; r < QR; r++)
                f[h][r] = _mm512_add_ps(f[h][r], _mm512_mul_ps(_mm512_cvtepi32_ps(s[h][r]),
                                                               _mm512_mul_ps(sw, _mm512_set1_ps(xs[r][blk]))));
        }
    }
    for (int h = 0; h < 2; h++)
        for (int r = 0; r < QR; r++) _mm512_storeu_ps(acc[h][r], f[h][r]);
}
#else
#if defined(__AVX2__)
#include <immintrin.h>
#define Q8_KERNEL "AVX2"
/* vpmaddubsw multiplies unsigned by signed bytes into pairs of int16: |x|
 * (at most 127) by w with x's sign (at most 127 in size), 2 x 127^2 fitting
 * an int16; vpmaddwd by ones adds the pairs into int32 lanes, 8 rows per
 * vector */
static void q8_block(int32_t isum[QR][Q8_ROWS], const int8_t *const xq[QR], const int8_t *wq)
{
    const __m256i ones = _mm256_set1_epi16(1);
    for (int r = 0; r < QR; r++) {
        __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
        for (int q = 0; q < Q8_QUADS; q++) {
            int32_t a4;
            __m256i a, ua, w0, w1;
            memcpy(&a4, xq[r] + 4 * q, 4);
            a = _mm256_set1_epi32(a4);
            ua = _mm256_abs_epi8(a);
            w0 = _mm256_loadu_si256((const __m256i *)(const void *)(wq + q * 64));
            w1 = _mm256_loadu_si256((const __m256i *)(const void *)(wq + q * 64 + 32));
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_maddubs_epi16(ua, _mm256_sign_epi8(w0, a)), ones));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_maddubs_epi16(ua, _mm256_sign_epi8(w1, a)), ones));
        }
        _mm256_storeu_si256((__m256i *)(void *)isum[r], lo);
        _mm256_storeu_si256((__m256i *)(void *)(isum[r] + 8), hi);
    }
}
#elif defined(__ARM_NEON)
#include <arm_neon.h>
/* each 16-byte quarter of a quad is 4 values of 4 rows */
#if defined(__ARM_FEATURE_DOTPROD)
#define Q8_KERNEL "NEON sdot"
static void q8_block(int32_t isum[QR][Q8_ROWS], const int8_t *const xq[QR], const int8_t *wq)
{
    for (int r = 0; r < QR; r++) {
        int32x4_t s[4] = {vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0), vdupq_n_s32(0)};
        for (int q = 0; q < Q8_QUADS; q++) {
            int32_t a4;
            int8x16_t a;
            memcpy(&a4, xq[r] + 4 * q, 4);
            a = vreinterpretq_s8_s32(vdupq_n_s32(a4));
            for (int v = 0; v < 4; v++) s[v] = vdotq_s32(s[v], vld1q_s8(wq + q * 64 + 16 * v), a);
        }
        for (int v = 0; v < 4; v++) vst1q_s32(isum[r] + 4 * v, s[v]);
    }
}
#else
#define Q8_KERNEL "NEON"
/* vmull_s8 makes 8 int16 products (2 rows x 4), vpadalq_s16 adds them in
 * pairs into int32 lanes (row, half); the halves are added at the end */
static void q8_block(int32_t isum[QR][Q8_ROWS], const int8_t *const xq[QR], const int8_t *wq)
{
    for (int r = 0; r < QR; r++) {
        int32x4_t lo[4], hi[4];
        for (int v = 0; v < 4; v++) lo[v] = hi[v] = vdupq_n_s32(0);
        for (int q = 0; q < Q8_QUADS; q++) {
            int32_t a4;
            int8x16_t a;
            memcpy(&a4, xq[r] + 4 * q, 4);
            a = vreinterpretq_s8_s32(vdupq_n_s32(a4));
            for (int v = 0; v < 4; v++) {
                int8x16_t w = vld1q_s8(wq + q * 64 + 16 * v);
                lo[v] = vpadalq_s16(lo[v], vmull_s8(vget_low_s8(w), vget_low_s8(a)));
                hi[v] = vpadalq_s16(hi[v], vmull_high_s8(w, a));
            }
        }
        for (int v = 0; v < 4; v++) vst1q_s32(isum[r] + 4 * v, vpaddq_s32(lo[v], hi[v]));
    }
}
#endif
#elif defined(__wasm_simd128__)
#include <wasm_simd128.h>
#define Q8_KERNEL "WebAssembly SIMD"
/* i32x4.dot_i16x8_s on the widened bytes adds products in pairs into int32
 * lanes (row, half); the halves are added at the end */
static void q8_block(int32_t isum[QR][Q8_ROWS], const int8_t *const xq[QR], const int8_t *wq)
{
    for (int r = 0; r < QR; r++) {
        v128_t lo[4], hi[4];
        for (int v = 0; v < 4; v++) lo[v] = hi[v] = wasm_i32x4_splat(0);
        for (int q = 0; q < Q8_QUADS; q++) {
            int32_t a4;
            v128_t a;
            memcpy(&a4, xq[r] + 4 * q, 4);
            a = wasm_i16x8_extend_low_i8x16(wasm_i32x4_splat(a4));
            for (int v = 0; v < 4; v++) {
                v128_t w = wasm_v128_load(wq + q * 64 + 16 * v);
                lo[v] = wasm_i32x4_add(lo[v], wasm_i32x4_dot_i16x8(wasm_i16x8_extend_low_i8x16(w), a));
                hi[v] = wasm_i32x4_add(hi[v], wasm_i32x4_dot_i16x8(wasm_i16x8_extend_high_i8x16(w), a));
            }
        }
        for (int v = 0; v < 4; v++)
            wasm_v128_store(isum[r] + 4 * v, wasm_i32x4_add(wasm_i32x4_shuffle(lo[v], hi[v], 0, 2, 4, 6),
                                                            wasm_i32x4_shuffle(lo[v], hi[v], 1, 3, 5, 7)));
    }
}
#else
#define Q8_KERNEL "portable"
/* plain loops, 16 lanes of int32 that compilers may vectorize */
static void q8_block(int32_t isum[QR][Q8_ROWS], const int8_t *const xq[QR], const int8_t *wq)
{
    for (int r = 0; r < QR; r++) {
        int32_t s[Q8_ROWS] = {0};
        for (int q = 0; q < Q8_QUADS; q++) {
            const int8_t *a = xq[r] + 4 * q, *w = wq + q * 64;
            for (int l = 0; l < Q8_ROWS; l++)
                s[l] += a[0] * w[4 * l] + a[1] * w[4 * l + 1] + a[2] * w[4 * l + 2] + a[3] * w[4 * l + 3];
        }
        memcpy(isum[r], s, sizeof s);
    }
}
#endif
/* the tile from the block sums, the scaling in plain loops */
static void q8_tile(float acc[2][QR][Q8_ROWS], const int8_t *const xq[QR], const float *const xs[QR],
                    const int32_t *const xsum[QR], const int8_t *const wq[2], const float *const ws[2], int nb)
{
    (void)xsum;
    for (int blk = 0; blk < nb; blk++) {
        const int8_t *xb[QR];
        for (int r = 0; r < QR; r++) xb[r] = xq[r] + (size_t)blk * Q8_BLOCK;
        for (int h = 0; h < 2; h++) {
            int32_t isum[QR][Q8_ROWS];
            const float *sw = ws[h] + (size_t)blk * Q8_ROWS;
            q8_block(isum, xb, wq[h] + (size_t)blk * Q8_QUADS * 64);
            for (int r = 0; r < QR; r++) {
                float sx = xs[r][blk];
                for (int l = 0; l < Q8_ROWS; l++) acc[h][r][l] += (float)isum[r][l] * (sx * sw[l]);
            }
        }
    }
}
#endif

/* y[n, out] = xq (quantized x) @ w^T + b for `parts` q8 weights on the same x */
static void linear_q8(float *const y[3], const q8_rows *xq, const clip_weight *const w[3], const float *const b[3],
                      int parts, int n, int in, int out)
{
    int in32 = (int)pad_to((size_t)in, Q8_BLOCK), nb = in32 / Q8_BLOCK, groups = (out + Q8_ROWS - 1) / Q8_ROWS;
    int pairs = (groups + 1) / 2;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) if ((double)n * in * out * parts > GEMM_PARALLEL_MIN)
#endif
    for (int job = 0; job < parts * pairs; job++) {
        /* the pair's groups; an odd last group is computed twice and stored once */
        int p = job / pairs, g0 = 2 * (job % pairs), g[2] = {g0, g0 + 1 < groups ? g0 + 1 : g0};
        const int8_t *wq[2];
        const float *ws[2];
        for (int h = 0; h < 2; h++) {
            wq[h] = (const int8_t *)w[p]->data + (size_t)g[h] * Q8_ROWS * in32;
            ws[h] = q8_scales(w[p]->data, out, in32) + (size_t)g[h] * nb * Q8_ROWS;
        }
        for (int i0 = 0; i0 < n; i0 += QR) {
            float acc[2][QR][Q8_ROWS] = {{{0}}};
            const int8_t *rq[QR];
            const float *rs[QR];
            const int32_t *rsum[QR];
            for (int r = 0; r < QR; r++) {   /* rows past n repeat row i0; their sums are dropped */
                int i = i0 + r < n ? i0 + r : i0;
                rq[r] = xq->q + (size_t)i * in32;
                rs[r] = xq->scale + (size_t)i * nb;
                rsum[r] = xq->sum + (size_t)i * nb;
            }
            q8_tile(acc, rq, rs, rsum, wq, ws, nb);
            for (int h = 0; h < 2 && (h == 0 || g[1] != g[0]); h++) {
                int o0 = g[h] * Q8_ROWS, lanes = out - o0 < Q8_ROWS ? out - o0 : Q8_ROWS;
                for (int r = 0; r < QR && i0 + r < n; r++)
                    for (int l = 0; l < lanes; l++)
                        y[p][(size_t)(i0 + r) * out + o0 + l] = acc[h][r][l] + (b[p] ? b[p][o0 + l] : 0.0f);
            }
        }
    }
}

/* x quantized once (into scratch, or memory allocated here), then `parts`
 * q8 products on it */
static void linear_q8_parts(float *const y[3], const float *x, const clip_weight *const w[3], const float *const b[3],
                            int parts, int n, int in, int out, float *scratch)
{
    float *own = scratch ? NULL : malloc(q8_rows_floats(n, in) * sizeof(float) + 1);
    q8_rows xq;
    if (!scratch && !own) {
        for (int p = 0; p < parts; p++) linear_failed(y[p], n, out);
        return;
    }
    xq = q8_rows_in(scratch ? scratch : own, n, in);
    clip_quantize_rows(&xq, x, n, in);
    linear_q8(y, &xq, w, b, parts, n, in, out);
    free(own);
}

/* A weight becomes the kernels' argument here, by its dtype. */
void clip_linear_weight(float *y, const float *x, const clip_weight *w, const float *b, int n, int in, int out,
                        float *scratch)
{
    if (w->dtype == CLIP_DTYPE_F16) {
        linear_f16(y, x, w->data, b, n, in, out);
    } else if (w->dtype == CLIP_DTYPE_Q8) {
        float *const ys[3] = {y, NULL, NULL};
        const clip_weight *const ws[3] = {w, NULL, NULL};
        const float *const bs[3] = {b, NULL, NULL};
        linear_q8_parts(ys, x, ws, bs, 1, n, in, out, scratch);
    } else {
        gemm_cols W = {1, out, in, out, {(const float *)w->data}, {b}, {y}};
        gemm_nt(&W, x, in, n, in, scratch);
    }
}

/* three weights [out, in] on the same x (q_proj, k_proj, v_proj): one copy
 * of x (float32) or one quantization of it (q8) serves all three */
void clip_linear3_weight(float *const y[3], const float *x, const clip_weight *const w[3], const float *const b[3],
                         int n, int in, int out, float *scratch)
{
    int dtype = w[0]->dtype;
    if (w[1]->dtype != dtype || w[2]->dtype != dtype || dtype == CLIP_DTYPE_F16) {
        for (int p = 0; p < 3; p++) clip_linear_weight(y[p], x, w[p], b[p], n, in, out, scratch);
    } else if (dtype == CLIP_DTYPE_Q8) {
        linear_q8_parts(y, x, w, b, 3, n, in, out, scratch);
    } else {
        gemm_cols W = {3, out, in, out, {(const float *)w[0]->data, (const float *)w[1]->data, (const float *)w[2]->data},
                       {b[0], b[1], b[2]}, {y[0], y[1], y[2]}};
        gemm_nt(&W, x, in, n, in, scratch);
    }
}

/* ------------------------------------------------------------------------ */
/* LayerNorm and softmax: clip_ref_layer_norm's and clip_ref_softmax's sums  */
/* ------------------------------------------------------------------------ */
/* The same sums in double, over 8 interleaved lanes (so that they
 * vectorize), added pairwise at the end; LayerNorm's last step in float.
 * The integer clamp keeps the loop around tensor_exp vectorizable. */
#define NORM_PARALLEL_MIN 65536.0   /* elements below which LayerNorm runs on one thread */

static double sum_lanes8(double s[8])
{
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

/* |x| limited to the float whose bits are `limit` (NaN kept when keep_nan):
 * integer compares, so that compilers vectorize the loops around it */
static inline float clamp_abs(float x, uint32_t limit, int keep_nan)
{
    uint32_t u, a;
    memcpy(&u, &x, sizeof u);
    a = u & 0x7fffffffu;
    a = a < limit || (keep_nan && a > 0x7f800000u) ? a : limit;
    u = (u & 0x80000000u) | a;
    memcpy(&x, &u, sizeof x);
    return x;
}

#define F32_SIGMOID_LIMIT 0x43c80000u   /* SIGMOID_LIMIT, 400.0f */
#define F32_EXP_LIMIT 0x442f0000u       /* EXP_LIMIT, 700.0f */

void clip_layer_norm(float *y, const float *x, const float *gamma, const float *beta, int n, int d, float eps)
{
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 8) if ((double)n * d >= NORM_PARALLEL_MIN)
#endif
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float *yi = y + (size_t)i * d;
        double s[8] = {0}, mean, var, inv;
        int j, dv = d - d % 8;
        for (j = 0; j < dv; j += 8)
            for (int l = 0; l < 8; l++) s[l] += xi[j + l];
        for (; j < d; j++) s[0] += xi[j];
        mean = sum_lanes8(s) / d;
        for (int l = 0; l < 8; l++) s[l] = 0.0;
        for (j = 0; j < dv; j += 8)
            for (int l = 0; l < 8; l++) s[l] += (xi[j + l] - mean) * (xi[j + l] - mean);
        for (; j < d; j++) s[0] += (xi[j] - mean) * (xi[j] - mean);
        var = sum_lanes8(s) / d;
        inv = 1.0 / sqrt(var + (double)eps);
        for (j = 0; j < d; j++) yi[j] = (float)((xi[j] - mean) * inv) * gamma[j] + beta[j];
    }
}

/* one row of d floats, in place */
static void softmax_row(float *x, int d)
{
    float m[8], max;
    double s[8] = {0}, inv;
    int j, dv = d - d % 8;
    for (int l = 0; l < 8; l++) m[l] = x[0];
    for (j = 0; j < dv; j += 8)
        for (int l = 0; l < 8; l++) m[l] = x[j + l] > m[l] ? x[j + l] : m[l];
    for (; j < d; j++) m[0] = x[j] > m[0] ? x[j] : m[0];
    max = m[0];
    for (int l = 1; l < 8; l++) max = m[l] > max ? m[l] : max;
    for (j = 0; j < d; j++) x[j] = (float)tensor_exp(clamp_abs(x[j] - max, F32_EXP_LIMIT, 1));
    for (j = 0; j < dv; j += 8)
        for (int l = 0; l < 8; l++) s[l] += x[j + l];
    for (; j < d; j++) s[0] += x[j];
    inv = 1.0 / sum_lanes8(s);
    for (j = 0; j < d; j++) x[j] = (float)(x[j] * inv);
}

void clip_softmax(float *x, int n, int d)
{
    for (int i = 0; i < n; i++) softmax_row(x + (size_t)i * d, d);
}

/* ------------------------------------------------------------------------ */
/* Attention: clip_ref_attention's scores, softmax and weighted sum          */
/* ------------------------------------------------------------------------ */
/* Per head, QB query rows at a time: their scores against every key they
 * see (two rows against KB keys at a time, from a copy of k_h transposed,
 * the sums in registers), each row softmaxed, then the QB output rows
 * together (so that each row of v is read once per QB rows). Heads are
 * split between threads; each head has its own part of the caller's
 * scratch, so no thread count enters the memory needed. */
#define HD 64    /* the head width of every CLIP model: attention_pv4 keeps its sums in registers */
#define KB 64    /* keys per block of scores */
#define QB 4     /* query rows per block: attention_pv4's four */
#define ATTENTION_PARALLEL_MIN 100000.0   /* heads x n x n x head_dim below which one thread does all heads */
typedef char qb_is_four[QB == 4 ? 1 : -1];

/* floats per head: k_h transposed (head_dim x ls) and QB rows of scores (ls
 * each), ls being n rounded up to KB */
size_t clip_attention_scratch(int n, int heads, int head_dim)
{
    size_t ls = (size_t)(n + KB - 1) / KB * KB;
    if (n <= 0 || heads <= 0 || head_dim <= 0) return 0;
    return (size_t)heads * ((size_t)head_dim + QB) * ls;
}

/* S[r][j] = q_{i0+r} . k_j for r < rows (<= QB), j < ls in blocks of KB keys
 * (keys past n are zeros in kt, k_h transposed: kt[c][j] = k_j[c]), rows of
 * S ls apart. Causal: blocks of keys that neither row of a pair sees are
 * skipped. */
static NO_JAM void attention_scores(float *S, int ls, const float *q, int i0, int rows, const float *kt, int d, int hd,
                                    int causal)
{
    for (int r = 0; r < rows; r += 2) {
        int i = i0 + r;
        const float *q0 = q + (size_t)i * d, *q1 = r + 1 < rows ? q0 + d : q0;
        for (int j0 = 0; j0 < ls && (!causal || j0 <= i + 1); j0 += KB) {
            float a0[KB] = {0}, a1[KB] = {0};
            for (int c = 0; c < hd; c++) {
                const float *kc = kt + (size_t)c * ls + j0;
                float y0 = q0[c], y1 = q1[c];
                LANES
                for (int t = 0; t < KB; t++) { a0[t] += y0 * kc[t]; a1[t] += y1 * kc[t]; }
            }
            memcpy(S + (size_t)r * ls + j0, a0, sizeof a0);
            if (r + 1 < rows) memcpy(S + (size_t)(r + 1) * ls + j0, a1, sizeof a1);
        }
    }
}

/* o_r = sum over j < len of p_r[j] * v_j, for the four rows r (HD wide) */
static NO_JAM void attention_pv4(float *const o[4], const float *const p[4], const float *v, int ld, int len)
{
    float o0[HD] = {0}, o1[HD] = {0}, o2[HD] = {0}, o3[HD] = {0};
    const float *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3];
    for (int j = 0; j < len; j++) {
        const float *vj = v + (size_t)j * ld;
        float w0 = p0[j], w1 = p1[j], w2 = p2[j], w3 = p3[j];
        for (int t = 0; t < HD; t++) {
            o0[t] += w0 * vj[t]; o1[t] += w1 * vj[t]; o2[t] += w2 * vj[t]; o3[t] += w3 * vj[t];
        }
    }
    memcpy(o[0], o0, sizeof o0); memcpy(o[1], o1, sizeof o1);
    memcpy(o[2], o2, sizeof o2); memcpy(o[3], o3, sizeof o3);
}

/* out_i = sum over j < len of S[r][j] v_j for the rows i = i0 + r, r < rows */
static void attention_pv(float *out, const float *S, int ls, const float *v, int i0, int rows, int d, int hd, int len)
{
    if (hd == HD) {
        float spare[HD], *o[QB];
        const float *p[QB];
        for (int r = 0; r < QB; r++) {   /* rows past the block: results dropped */
            p[r] = S + (size_t)(r < rows ? r : 0) * ls;
            o[r] = r < rows ? out + (size_t)(i0 + r) * d : spare;
        }
        attention_pv4(o, p, v, d, len);
        return;
    }
    for (int r = 0; r < rows; r++) {
        float *o = out + (size_t)(i0 + r) * d;
        const float *p = S + (size_t)r * ls;
        for (int t = 0; t < hd; t++) o[t] = 0.0f;
        for (int j = 0; j < len; j++)
            for (int t = 0; t < hd; t++) o[t] += p[j] * v[(size_t)j * d + t];
    }
}

/* one head; q, k, v, out point at its first column, rows d apart; scratch:
 * clip_attention_scratch(n, 1, hd) floats */
static void attention_head(float *out, const float *q, const float *k, const float *v,
                           int n, int d, int hd, int causal, float *scratch)
{
    int ls = (n + KB - 1) / KB * KB;
    float *kt = scratch, *S = scratch + (size_t)hd * ls;
    for (int j = 0; j < ls; j++)
        for (int c = 0; c < hd; c++) kt[(size_t)c * ls + j] = j < n ? k[(size_t)j * d + c] : 0.0f;
    for (int i0 = 0; i0 < n; i0 += QB) {
        int rows = n - i0 < QB ? n - i0 : QB, len = causal ? i0 + rows : n;   /* keys the block's rows see */
        attention_scores(S, ls, q, i0, rows, kt, d, hd, causal);
        for (int r = 0; r < rows; r++) {
            float *p = S + (size_t)r * ls;
            int seen = causal ? i0 + r + 1 : n;
            softmax_row(p, seen);
            for (int j = seen; j < len; j++) p[j] = 0.0f;
        }
        attention_pv(out, S, ls, v, i0, rows, d, hd, len);
    }
}

void clip_attention(float *out, const float *q, const float *k, const float *v,
                    int n, int heads, int head_dim, int causal, float *scratch)
{
    int d = heads * head_dim;
    size_t per_head = clip_attention_scratch(n, 1, head_dim);
    if (n <= 0 || heads <= 0) return;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) if (heads > 1 && (double)heads * n * n * head_dim >= ATTENTION_PARALLEL_MIN)
#endif
    for (int h = 0; h < heads; h++) {
        int c = h * head_dim;
        attention_head(out + c, q + c, k + c, v + c, n, d, head_dim, causal, scratch + (size_t)h * per_head);
    }
}

/* ref_attention_row's arithmetic with the fast dot product and softmax */
static void attention_row(float *o, const float *qi, const float *k, const float *v, int ld, int len, int hd, float *p)
{
    for (int j = 0; j < len; j++) p[j] = dot_lanes(qi, k + (size_t)j * ld, hd);
    softmax_row(p, len);
    for (int t = 0; t < hd; t++) o[t] = 0.0f;
    for (int j = 0; j < len; j++) {
        const float *vj = v + (size_t)j * ld;
        float pj = p[j];
        for (int t = 0; t < hd; t++) o[t] += pj * vj[t];
    }
}

void clip_attention_query(float *out, const float *q, const float *k, const float *v,
                          int len, int heads, int head_dim, float *scratch)
{
    int d = heads * head_dim;
    for (int h = 0; h < heads; h++) {
        int c = h * head_dim;
        attention_row(out + c, q + c, k + c, v + c, d, len, head_dim, scratch);
    }
}

/* ------------------------------------------------------------------------ */
/* Activations: clip_ref_quick_gelu and clip_ref_gelu                        */
/* ------------------------------------------------------------------------ */
/* The same formulas, element-wise, in blocks split between threads; the
 * integer clamp lets the quick_gelu loop vectorize with tensor_exp. */
#define ACT_BLOCK 4096   /* elements per thread's unit of work */

void clip_quick_gelu(float *x, size_t n)
{
    size_t blocks = (n + ACT_BLOCK - 1) / ACT_BLOCK;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 4) if (n >= 4 * ACT_BLOCK)
#endif
    for (size_t blk = 0; blk < blocks; blk++) {
        size_t i1 = n - blk * ACT_BLOCK < ACT_BLOCK ? n : blk * ACT_BLOCK + ACT_BLOCK;
        for (size_t i = blk * ACT_BLOCK; i < i1; i++)
            x[i] = x[i] * (float)(1.0 / (1.0 + tensor_exp(-1.702 * clamp_abs(x[i], F32_SIGMOID_LIMIT, 0))));
    }
}

/* libm's erf: a call per value, but 8 times faster than tensor_normal_cdf's
 * series; the fast build promises closeness, not the same bits */
void clip_gelu(float *x, size_t n)
{
    size_t blocks = (n + ACT_BLOCK - 1) / ACT_BLOCK;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 4) if (n >= ACT_BLOCK)
#endif
    for (size_t blk = 0; blk < blocks; blk++) {
        size_t i1 = n - blk * ACT_BLOCK < ACT_BLOCK ? n : blk * ACT_BLOCK + ACT_BLOCK;
        for (size_t i = blk * ACT_BLOCK; i < i1; i++)
            x[i] = (float)(0.5 * x[i] * (1.0 + erf(x[i] * 0.70710678118654752440)));
    }
}

#endif /* CLIP_REFERENCE */

/* ------------------------------------------------------------------------ */
/* float32 weights given as plain pointers (the original interface)          */
/* ------------------------------------------------------------------------ */

void clip_linear(float *y, const float *x, const float *w, const float *b, int n, int in, int out)
{
    clip_weight W = {CLIP_DTYPE_F32, w};
    clip_linear_weight(y, x, &W, b, n, in, out, NULL);
}

void clip_linear3(float *const y[3], const float *x, const float *const w[3], const float *const b[3],
                  int n, int in, int out)
{
    clip_weight W[3] = {{CLIP_DTYPE_F32, w[0]}, {CLIP_DTYPE_F32, w[1]}, {CLIP_DTYPE_F32, w[2]}};
    const clip_weight *const pw[3] = {&W[0], &W[1], &W[2]};
    clip_linear3_weight(y, x, pw, b, n, in, out, NULL);
}
