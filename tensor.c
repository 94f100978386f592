/* tensor.c - the arithmetic of a transformer layer, in float32.
 *
 * Everything here works on plain row-major float arrays and knows nothing of
 * CLIP: a matrix product shaped like torch.nn.Linear, LayerNorm, softmax,
 * multi-head attention and the two GELU flavours. Reductions whose rounding
 * would otherwise grow with the length (LayerNorm statistics, softmax sums)
 * are carried in double, so results sit closer to a float64 reference than
 * PyTorch's own float32 ones.
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
 * weight [out, in] are. B is copied a panel of NR rows at a time into a
 * k-major block (packed[k][NR]), so that the micro-kernel can do rank-1
 * updates of an MR x NR tile of C held in registers: for every k, each of
 * the MR values of A is broadcast and multiplied with NR consecutive packed
 * values of B. Those inner loops have fixed trip counts and no dependence
 * between lanes, which is exactly what gcc and clang vectorize; the six rows
 * are written out as six accumulator arrays so that the compiler keeps them
 * in vector registers (MR is fixed at 6 by the code). The k loop runs in
 * blocks of KC so that a packed panel stays in L1/L2 cache. Threads split
 * the panels of B (the output columns). */

#define MR 6
#define NR 32
#define KC 256

/* C tile [mr, nr] (+)= A rows a[0..MR) [kc] x packed [kc][NR] (+ bias) */
static void gemm_tile(float *C, int ldc, const float *const a[MR], const float *packed, int kc,
                      int mr, int nr, int accumulate, const float *bias)
{
    float c0[NR] = {0}, c1[NR] = {0}, c2[NR] = {0}, c3[NR] = {0}, c4[NR] = {0}, c5[NR] = {0};
    float *acc[MR] = {c0, c1, c2, c3, c4, c5};
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
    for (int p = 0; p < kc; p++) {
        const float *b = packed + (size_t)p * NR;
        float x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p], x4 = a4[p], x5 = a5[p];
        for (int j = 0; j < NR; j++) {
            c0[j] += x0 * b[j]; c1[j] += x1 * b[j]; c2[j] += x2 * b[j];
            c3[j] += x3 * b[j]; c4[j] += x4 * b[j]; c5[j] += x5 * b[j];
        }
    }
    for (int i = 0; i < mr; i++) {
        float *c = C + (size_t)i * ldc;
        for (int j = 0; j < nr; j++) {
            float v = acc[i][j];
            if (accumulate) v += c[j];
            if (bias) v += bias[j];
            c[j] = v;
        }
    }
}

/* packed[p][j] = B[j0 + j][k0 + p], zero beyond the last row */
static void gemm_pack(float *packed, const float *B, int ldb, int j0, int nr, int k0, int kc)
{
    for (int j = 0; j < NR; j++) {
        if (j < nr) {
            const float *row = B + (size_t)(j0 + j) * ldb + k0;
            for (int p = 0; p < kc; p++) packed[(size_t)p * NR + j] = row[p];
        } else {
            for (int p = 0; p < kc; p++) packed[(size_t)p * NR + j] = 0.0f;
        }
    }
}

/* One panel of NR output columns, all m rows: C[:, j0..j0+nr). Each k block
 * is summed on its own and then added to C: shorter chains, less rounding. */
static void gemm_panel(float *C, int ldc, const float *A, int lda, const float *B, int ldb,
                       const float *bias, int m, int j0, int nr, int k, float *packed)
{
    for (int k0 = 0; k0 < k; k0 += KC) {
        int kc = k - k0 < KC ? k - k0 : KC;
        gemm_pack(packed, B, ldb, j0, nr, k0, kc);
        for (int i0 = 0; i0 < m; i0 += MR) {
            int mr = m - i0 < MR ? m - i0 : MR;
            const float *a[MR];
            /* rows past the end repeat the last row; their results are dropped */
            for (int i = 0; i < MR; i++) a[i] = A + (size_t)(i0 + (i < mr ? i : mr - 1)) * lda + k0;
            gemm_tile(C + (size_t)i0 * ldc + j0, ldc, a, packed, kc, mr, nr, k0 > 0,
                      k0 + kc >= k && bias ? bias + j0 : NULL);
        }
    }
}

static void gemm_nt(float *C, int ldc, const float *A, int lda, const float *B, int ldb,
                    const float *bias, int m, int n, int k)
{
    int panels = (n + NR - 1) / NR;
    if (m <= 0 || n <= 0) return;
#ifdef _OPENMP
#pragma omp parallel if ((double)m * n * k > 200000.0)
#endif
    {
        float packed[KC * NR];
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int p = 0; p < panels; p++) {
            int j0 = p * NR, nr = n - j0 < NR ? n - j0 : NR;
            gemm_panel(C, ldc, A, lda, B, ldb, bias, m, j0, nr, k, packed);
        }
    }
}

/* torch.nn.Linear: y[n, out] = x[n, in] @ w[out, in]^T + b[out] */
void clip_linear(float *y, const float *x, const float *w, const float *b, int n, int in, int out)
{
    gemm_nt(y, out, x, in, w, in, b, n, out, in);
}

/* ------------------------------------------------------------------------ */
/* torch.nn.LayerNorm(d, eps): (x - mean) / sqrt(var + eps) * gamma + beta   */
/* ------------------------------------------------------------------------ */
void clip_layer_norm(float *y, const float *x, const float *gamma, const float *beta, int n, int d, float eps)
{
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float *yi = y + (size_t)i * d;
        double mean = 0.0, var = 0.0;
        for (int j = 0; j < d; j++) mean += xi[j];
        mean /= d;
        for (int j = 0; j < d; j++) var += (xi[j] - mean) * (xi[j] - mean);
        var /= d;
        double inv = 1.0 / sqrt(var + (double)eps);
        for (int j = 0; j < d; j++) yi[j] = (float)((xi[j] - mean) * inv) * gamma[j] + beta[j];
    }
}

/* softmax over the last dimension of x[n, d], in place */
void clip_softmax(float *x, int n, int d)
{
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)i * d, max = xi[0];
        double sum = 0.0;
        for (int j = 1; j < d; j++) if (xi[j] > max) max = xi[j];
        for (int j = 0; j < d; j++) { xi[j] = expf(xi[j] - max); sum += xi[j]; }
        for (int j = 0; j < d; j++) xi[j] = (float)(xi[j] / sum);
    }
}

/* ------------------------------------------------------------------------ */
/* Scaled dot-product attention, per head (CLIPAttention)                    */
/* ------------------------------------------------------------------------ */
/* q, k, v, out: [n, heads * head_dim], head h in columns [h*hd, (h+1)*hd).
 * q must already carry the 1/sqrt(head_dim) scale. For each head:
 * S = q_h k_h^T [n, n] (upper triangle masked when causal), P = softmax(S),
 * out_h = P v_h. scratch holds n * n floats. */
void clip_attention(float *out, const float *q, const float *k, const float *v,
                    int n, int heads, int head_dim, int causal, float *scratch)
{
    int d = heads * head_dim;
    for (int h = 0; h < heads; h++) {
        float *S = scratch;
        gemm_nt(S, n, q + h * head_dim, d, k + h * head_dim, d, NULL, n, n, head_dim);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n >= 64)
#endif
        for (int i = 0; i < n; i++) {
            int len = causal ? i + 1 : n;
            float *p = S + (size_t)i * n, *o = out + (size_t)i * d + h * head_dim;
            clip_softmax(p, 1, len);
            for (int t = 0; t < head_dim; t++) o[t] = 0.0f;
            for (int j = 0; j < len; j++) {
                const float *vj = v + (size_t)j * d + h * head_dim;
                float pj = p[j];
                for (int t = 0; t < head_dim; t++) o[t] += pj * vj[t];
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Activations (ACT2FN["quick_gelu"], ACT2FN["gelu"])                        */
/* ------------------------------------------------------------------------ */
void clip_quick_gelu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = x[i] * (float)(1.0 / (1.0 + exp(-1.702 * x[i])));
}

void clip_gelu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)(0.5 * x[i] * (1.0 + erf(x[i] * 0.70710678118654752440)));
}
