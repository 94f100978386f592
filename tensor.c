/* tensor.c - the arithmetic of a transformer layer, in float32.
 *
 * Everything here works on plain row-major float arrays and knows nothing of
 * CLIP: a matrix product shaped like torch.nn.Linear, LayerNorm, softmax,
 * multi-head attention and the two GELU flavours. Reductions whose rounding
 * would otherwise grow with the length (LayerNorm statistics, softmax sums)
 * are carried in double, so results sit closer to a float64 reference than
 * PyTorch's own float32 ones; exponentials are taken in double too.
 *
 * Speed comes from loops that compilers vectorize on their own (plain C99,
 * no intrinsics: inner loops of fixed length over independent lanes) and
 * from OpenMP threads where there is enough work. The model's weights are
 * read where they lie (mmap'ed), once per call, never copied.
 */
#include "clip.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

void clip_set_threads(int n)
{
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* ------------------------------------------------------------------------ */
/* Matrix product C[m, n] = A[m, k] @ B[n, k]^T (+ bias[n])                  */
/* ------------------------------------------------------------------------ */
/* Both operands are k-contiguous, as torch.nn.Linear's input [m, in] and
 * weight [out, in] are. B (the weight) is the big operand, mmap'ed from the
 * model file; A (the activations) is small. Two kernels, both shaped so that
 * gcc and clang vectorize their inner loops over VL lanes and keep every
 * accumulator in a register:
 *
 * - strips (m >= 16): A is copied once per call into k-major order, a strip
 *   of w = 16, 32 or 48 rows at a time (pa[p][t] = A[i0 + t][p]). For a tile
 *   of NB rows of B and one strip, each k step broadcasts NB values of B,
 *   read in place from the weight, and multiplies them with the strip's row
 *   of pa: NB x w accumulators, no copy of the weight at all. Each KC block
 *   of k is summed on its own and then added up (shorter chains, less
 *   rounding).
 * - dots (m < 16, a short text): every output is a dot product of a row of
 *   A with a row of B; one row of A against 8 rows of B keeps VL partial
 *   sums per output, split by k modulo VL, and adds them pairwise at the
 *   end. Nothing is copied.
 *
 * Threads split the rows of B (the output columns); each weight is read once.
 * B may be several weights side by side (q_proj, k_proj and v_proj, which
 * read the same input): column j of the product is row j % n of part j / n,
 * written to that part's output. One copy of A and one split of the work
 * then serve all three. */

#define VL 16      /* lanes the kernels are shaped for: one AVX-512 register of floats */
#define NB 6       /* rows of B per strip tile */
#define SW 48      /* widest strip of A rows */
#define KC 256     /* k steps summed on their own */

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
                c0[t] += y0 * x[t]; c1[t] += y1 * x[t]; c2[t] += y2 * x[t];
                c3[t] += y3 * x[t]; c4[t] += y4 * x[t]; c5[t] += y5 * x[t];
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
            s00[l] += x0[l] * y0[l]; s01[l] += x0[l] * y1[l]; s02[l] += x0[l] * y2[l];
            s03[l] += x0[l] * y3[l]; s04[l] += x0[l] * y4[l]; s05[l] += x0[l] * y5[l];
            s10[l] += x1[l] * y0[l]; s11[l] += x1[l] * y1[l]; s12[l] += x1[l] * y2[l];
            s13[l] += x1[l] * y3[l]; s14[l] += x1[l] * y4[l]; s15[l] += x1[l] * y5[l];
        }
    }
    for (int i = 0; i < 2 * NB; i++) {
        const float *a = i < NB ? a0 : a1, *y = b[i % NB];
        float t = 0.0f;
        for (int p = kv; p < k; p++) t += a[p] * y[p];
        out[i] = sum_lanes(s[i]) + t;
    }
}

/* The strips: A's rows (all but up to 4 of them, see below) padded to a
 * multiple of VL, cut into strips of 48 lanes and, where that leaves 16 or
 * 32 over, one or two of 32 (a 16-lane strip has too few accumulators to
 * hide the latency of the multiply-adds). Strip s holds rows [i0, i0 + rows)
 * in w lanes, zero padded. When m is up to 4 rows past a multiple of VL,
 * those rows are left to plain dot products instead (50 rows = 48 + 2). */
typedef struct { int m, extra, strips, s48; } strip_layout;

static strip_layout strip_plan(int m)
{
    strip_layout L;
    int lanes;
    L.extra = m > VL && m % VL <= 4 ? m % VL : 0;
    L.m = m - L.extra;
    lanes = (L.m + VL - 1) / VL * VL;
    if (lanes <= 48) { L.s48 = lanes == 48; L.strips = 1; }
    else if (lanes % 48 == 0) { L.s48 = lanes / 48; L.strips = L.s48; }
    else if (lanes % 48 == 32) { L.s48 = lanes / 48; L.strips = L.s48 + 1; }
    else { L.s48 = lanes / 48 - 1; L.strips = L.s48 + 2; }
    return L;
}

static void strip_of(const strip_layout *L, int s, int *i0, int *rows, int *w)
{
    *i0 = s < L->s48 ? s * 48 : L->s48 * 48 + (s - L->s48) * 32;
    *w = s < L->s48 ? 48 : L->m - *i0 <= 16 ? 16 : 32;
    *rows = L->m - *i0 < *w ? L->m - *i0 : *w;
}

/* Threads take contiguous runs of GROUP tiles (48 columns of C: whole cache
 * lines of every row, so that no two threads write the same line), a static
 * share each: one parallel pass, no queue. Within a group, every strip of A
 * passes over the group's rows of B while they are in cache. */
#define GROUP 8

static void gemm_strips(const gemm_cols *W, const float *A, int lda, int m, int k, float *pa)
{
    strip_layout L = strip_plan(m);
    int n = W->parts * W->n, kpieces = (k + 63) / 64, blocks = (n + NB - 1) / NB, groups = (blocks + GROUP - 1) / GROUP;
#ifdef _OPENMP
#pragma omp parallel if ((double)m * n * k > 200000.0)
#endif
    {
        float tile[NB * SW];
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int piece = 0; piece < L.strips * kpieces; piece++) {
            int p0 = piece % kpieces * 64, p1 = p0 + 64 < k ? p0 + 64 : k, i0, rows, w;
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
                    if (w == 48) gemm_strip_tile(tile, p, b, k, 48);
                    else if (w == 32) gemm_strip_tile(tile, p, b, k, 32);
                    else gemm_strip_tile(tile, p, b, k, 16);
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

/* out[r] = a . b[r] for r < 8: eight dot products of length k, VL lanes each */
static void gemm_dot_1x8(float out[8], const float *a, const float *const b[8], int k)
{
    const float *b0 = b[0], *b1 = b[1], *b2 = b[2], *b3 = b[3], *b4 = b[4], *b5 = b[5], *b6 = b[6], *b7 = b[7];
    float s0[VL] = {0}, s1[VL] = {0}, s2[VL] = {0}, s3[VL] = {0}, s4[VL] = {0}, s5[VL] = {0}, s6[VL] = {0}, s7[VL] = {0};
    float *s[8] = {s0, s1, s2, s3, s4, s5, s6, s7};
    int kv = k - k % VL;
    for (int p = 0; p < kv; p += VL) {
        const float *x = a + p;
        LANES
        for (int l = 0; l < VL; l++) {
            s0[l] += x[l] * b0[p + l]; s1[l] += x[l] * b1[p + l]; s2[l] += x[l] * b2[p + l]; s3[l] += x[l] * b3[p + l];
            s4[l] += x[l] * b4[p + l]; s5[l] += x[l] * b5[p + l]; s6[l] += x[l] * b6[p + l]; s7[l] += x[l] * b7[p + l];
        }
    }
    for (int r = 0; r < 8; r++) {
        float t = 0.0f;
        for (int p = kv; p < k; p++) t += a[p] * b[r][p];
        out[r] = sum_lanes(s[r]) + t;
    }
}

/* every row of A against a block of 8 rows of B, which stays in cache meanwhile */
static void gemm_dots(const gemm_cols *W, const float *A, int lda, int m, int k)
{
    int n = W->parts * W->n, blocks = (n + 7) / 8;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 2) if ((double)m * n * k > 200000.0)
#endif
    for (int jb = 0; jb < blocks; jb++) {
        int j0 = jb * 8, nb = n - j0 < 8 ? n - j0 : 8;
        const float *b[8];
        float out[8], bias[8], *c[8];
        cols_of(W, j0, 8, b, bias, c);
        for (int i = 0; i < m; i++) {
            gemm_dot_1x8(out, A + (size_t)i * lda, b, k);
            for (int r = 0; r < nb; r++) c[r][(size_t)i * W->ldc] = out[r] + bias[r];
        }
    }
}

#define MC 512   /* rows of A per pass: bounds the copy of A (MC x k floats) */

static void gemm_nt(const gemm_cols *W, const float *A, int lda, int m, int k)
{
    float *pa = NULL;
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
    /* passes of at most MC rows, as even as can be; each copied into strips
     * padded to a multiple of VL rows. Without memory for that, dots. */
    passes = (m + MC - 1) / MC;
    rows = (m + passes - 1) / passes;
    if ((size_t)k <= ((size_t)-1) / sizeof(float) / ((size_t)rows + VL))
        pa = malloc((size_t)((rows + VL - 1) / VL) * VL * k * sizeof(float));
    if (!pa) {
        gemm_dots(W, A, lda, m, k);
        return;
    }
    for (int i0 = 0; i0 < m; i0 += rows) {
        gemm_cols part = *W;
        for (int p = 0; p < W->parts; p++) part.C[p] = W->C[p] + (size_t)i0 * W->ldc;
        gemm_strips(&part, A + (size_t)i0 * lda, lda, m - i0 < rows ? m - i0 : rows, k, pa);
    }
    free(pa);
}

/* torch.nn.Linear: y[n, out] = x[n, in] @ w[out, in]^T + b[out] */
void clip_linear(float *y, const float *x, const float *w, const float *b, int n, int in, int out)
{
    gemm_cols W = {1, out, in, out, {w}, {b}, {y}};
    gemm_nt(&W, x, in, n, in);
}

/* three of them on the same x, all [out, in] (q_proj, k_proj, v_proj) */
void clip_linear3(float *const y[3], const float *x, const float *const w[3], const float *const b[3],
                  int n, int in, int out)
{
    gemm_cols W = {3, out, in, out, {w[0], w[1], w[2]}, {b[0], b[1], b[2]}, {y[0], y[1], y[2]}};
    gemm_nt(&W, x, in, n, in);
}

/* ------------------------------------------------------------------------ */
/* exp in double, shaped for vector units                                    */
/* ------------------------------------------------------------------------ */
/* libm's exp is a call per element; this one vectorizes. z = n ln2 + r with
 * |r| <= ln2/2, e^r by its Taylor series to r^13 (relative error below
 * 1e-16), 2^n built in the exponent bits from the integer that rounding
 * left in the low bits of z / ln2 + 1.5 * 2^52. Callers keep |z| <= 708
 * (NaN goes through as NaN, and no out-of-range conversion happens). */
static inline double exp_vec(double z)
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

#define F32_400 0x43c80000u   /* 400.0f */
#define F32_700 0x442f0000u   /* 700.0f */

/* ------------------------------------------------------------------------ */
/* torch.nn.LayerNorm(d, eps): (x - mean) / sqrt(var + eps) * gamma + beta   */
/* ------------------------------------------------------------------------ */
/* The sums run in double over 8 interleaved lanes (vectorized), added
 * pairwise at the end. Rows are independent and split between threads. */
static double sum_lanes8(double s[8])
{
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

void clip_layer_norm(float *y, const float *x, const float *gamma, const float *beta, int n, int d, float eps)
{
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 8) if ((double)n * d >= 65536.0)
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

/* softmax over the last dimension of x[n, d], in place; the sum in double,
 * over 8 interleaved lanes like LayerNorm's (so that it vectorizes) */
void clip_softmax(float *x, int n, int d)
{
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)i * d, m[8], max;
        double s[8] = {0}, inv;
        int j, dv = d - d % 8;
        for (int l = 0; l < 8; l++) m[l] = xi[0];
        for (j = 0; j < dv; j += 8)
            for (int l = 0; l < 8; l++) m[l] = xi[j + l] > m[l] ? xi[j + l] : m[l];
        for (; j < d; j++) m[0] = xi[j] > m[0] ? xi[j] : m[0];
        max = m[0];
        for (int l = 1; l < 8; l++) max = m[l] > max ? m[l] : max;
        for (j = 0; j < d; j++) xi[j] = (float)exp_vec(clamp_abs(xi[j] - max, F32_700, 1));
        for (j = 0; j < dv; j += 8)
            for (int l = 0; l < 8; l++) s[l] += xi[j + l];
        for (; j < d; j++) s[0] += xi[j];
        inv = 1.0 / sum_lanes8(s);
        for (j = 0; j < d; j++) xi[j] = (float)(xi[j] * inv);
    }
}

/* ------------------------------------------------------------------------ */
/* Scaled dot-product attention, per head (CLIPAttention)                    */
/* ------------------------------------------------------------------------ */
/* q, k, v, out: [n, heads * head_dim], head h in columns [h*hd, (h+1)*hd).
 * q must already carry the 1/sqrt(head_dim) scale. For each head:
 * S = q_h k_h^T [n, n], each row softmaxed over the keys it sees (j <= i
 * when causal, else all; the others weigh 0), then out_h = P v_h. Both
 * products keep their sums in registers: S takes two query rows against 64
 * keys at a time from a transposed copy of k_h; P v_h four rows at a time,
 * so that each row of v is read once per four. Heads are split between
 * threads, each with its own S. When S cannot be allocated, one thread does
 * row by row with scratch (n floats). */

#define HD 64   /* the head width of every CLIP model: P v_h keeps its sums in registers */
#define KB 64   /* keys per block of scores */

/* S[i][j] = q_i . k_j for i < n, j < ls (ls: n rounded up to KB; keys past n
 * are zeros), rows of S ls apart; kt holds hd * ls floats, k_h transposed.
 * Causal: blocks of keys that no row of the pair sees are skipped. */
static NO_JAM void attention_scores(float *S, int ls, const float *q, const float *k, int n, int d, int hd, int causal, float *kt)
{
    for (int j = 0; j < ls; j++)
        for (int c = 0; c < hd; c++) kt[(size_t)c * ls + j] = j < n ? k[(size_t)j * d + c] : 0.0f;
    for (int i0 = 0; i0 < n; i0 += 2) {
        const float *q0 = q + (size_t)i0 * d, *q1 = i0 + 1 < n ? q0 + d : q0;
        for (int j0 = 0; j0 < ls && (!causal || j0 <= i0 + 1); j0 += KB) {
            float a0[KB] = {0}, a1[KB] = {0};
            for (int c = 0; c < hd; c++) {
                const float *kc = kt + (size_t)c * ls + j0;
                float y0 = q0[c], y1 = q1[c];
                LANES
                for (int t = 0; t < KB; t++) { a0[t] += y0 * kc[t]; a1[t] += y1 * kc[t]; }
            }
            memcpy(S + (size_t)i0 * ls + j0, a0, sizeof a0);
            if (i0 + 1 < n) memcpy(S + (size_t)(i0 + 1) * ls + j0, a1, sizeof a1);
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

/* one head; q, k, v, out point at its first column, rows d apart; S holds
 * n * ls + hd * ls floats (ls: n rounded up to KB) */
static void attention_head(float *out, const float *q, const float *k, const float *v,
                           int n, int d, int hd, int causal, float *S)
{
    int ls = (n + KB - 1) / KB * KB;
    attention_scores(S, ls, q, k, n, d, hd, causal, S + (size_t)n * ls);
    for (int i = 0; i < n; i++) {
        float *p = S + (size_t)i * ls;
        int len = causal ? i + 1 : n;
        clip_softmax(p, 1, len);
        for (int j = len; j < n; j++) p[j] = 0.0f;
    }
    for (int i0 = 0; i0 < n; i0 += 4) {
        int len = causal ? (i0 + 4 < n ? i0 + 4 : n) : n;
        if (hd == HD) {
            float spare[HD], *o[4];
            const float *p[4];
            for (int r = 0; r < 4; r++) {   /* rows past the end: results dropped */
                int i = i0 + r < n ? i0 + r : i0;
                p[r] = S + (size_t)i * ls;
                o[r] = i0 + r < n ? out + (size_t)i * d : spare;
            }
            attention_pv4(o, p, v, d, len);
        } else {
            for (int i = i0; i < i0 + 4 && i < n; i++) {
                float *o = out + (size_t)i * d;
                const float *p = S + (size_t)i * ls;
                for (int t = 0; t < hd; t++) o[t] = 0.0f;
                for (int j = 0; j < len; j++)
                    for (int t = 0; t < hd; t++) o[t] += p[j] * v[(size_t)j * d + t];
            }
        }
    }
}

/* the same for one query row, with its scores in p (len floats) */
static void attention_row(float *o, const float *qi, const float *k, const float *v, int ld, int len, int hd, float *p)
{
    for (int j = 0; j < len; j++) p[j] = dot_lanes(qi, k + (size_t)j * ld, hd);
    clip_softmax(p, 1, len);
    for (int t = 0; t < hd; t++) o[t] = 0.0f;
    for (int j = 0; j < len; j++) {
        const float *vj = v + (size_t)j * ld;
        float pj = p[j];
        for (int t = 0; t < hd; t++) o[t] += pj * vj[t];
    }
}

/* one query row q[heads * head_dim] (already scaled) against keys and values
 * k, v [len, heads * head_dim]: out[heads * head_dim]; scratch holds len floats */
void clip_attention_query(float *out, const float *q, const float *k, const float *v,
                          int len, int heads, int head_dim, float *scratch)
{
    int d = heads * head_dim;
    for (int h = 0; h < heads; h++) {
        int off = h * head_dim;
        attention_row(out + off, q + off, k + off, v + off, d, len, head_dim, scratch);
    }
}

void clip_attention(float *out, const float *q, const float *k, const float *v,
                    int n, int heads, int head_dim, int causal, float *scratch)
{
    int d = heads * head_dim, threads = 1;
    size_t nn = 0;
    float *S = NULL;
    if (n <= 0 || heads <= 0) return;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    if (((double)n + head_dim) * (n + KB) * threads * sizeof(float) < (double)((size_t)-1 / 2)) {
        nn = ((size_t)n + head_dim) * ((n + KB - 1) / KB * KB);
        S = malloc(nn * threads * sizeof(float));
    }
    if (!S) {
        for (int i = 0; i < n; i++)
            clip_attention_query(out + (size_t)i * d, q + (size_t)i * d, k, v, causal ? i + 1 : n, heads, head_dim, scratch);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) if (heads > 1 && (double)heads * n * n * head_dim >= 100000.0)
#endif
    {
        float *mine = S;
#ifdef _OPENMP
        mine += nn * omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
#endif
        for (int h = 0; h < heads; h++) {
            int off = h * head_dim;
            attention_head(out + off, q + off, k + off, v + off, n, d, head_dim, causal, mine);
        }
    }
    free(S);
}

/* ------------------------------------------------------------------------ */
/* Activations (ACT2FN["quick_gelu"], ACT2FN["gelu"])                        */
/* ------------------------------------------------------------------------ */
/* Element-wise, in blocks split between threads. quick_gelu computes the
 * sigmoid in double: x * (float)(1 / (1 + exp(-1.702 x))); beyond |x| = 400
 * the float result no longer changes, so |x| is limited there for exp. */
#define ACT_BLOCK 4096

void clip_quick_gelu(float *x, size_t n)
{
    size_t blocks = (n + ACT_BLOCK - 1) / ACT_BLOCK;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 4) if (n >= 4 * ACT_BLOCK)
#endif
    for (size_t blk = 0; blk < blocks; blk++) {
        size_t i1 = n - blk * ACT_BLOCK < ACT_BLOCK ? n : blk * ACT_BLOCK + ACT_BLOCK;
        for (size_t i = blk * ACT_BLOCK; i < i1; i++)
            x[i] = x[i] * (float)(1.0 / (1.0 + exp_vec(-1.702 * clamp_abs(x[i], F32_400, 0))));
    }
}

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
