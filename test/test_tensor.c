/* test_tensor.c - tensor.c's kernels, fast (clip_*) and reference (clip_ref_*), against
 * double-precision truths computed here on odd shapes. In a reference build
 * (-DCLIP_REFERENCE) the clip_* kernels are the reference ones. */
#include "../clip.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failed, passed;
static unsigned long long rng = 88172645463325252ULL;

static float frand(void)   /* uniform in [-1, 1) */
{
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

static float *rand_array(size_t n, float scale)
{
    float *a = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) a[i] = frand() * scale;
    return a;
}

/* max |got - want| / (1 + |want|) must stay under tol */
static void check(const char *what, const float *got, const double *want, size_t n, double tol)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]) / (1.0 + fabs(want[i]));
        if (!(e <= worst)) worst = e;   /* also catches NaN */
    }
    if (worst <= tol) { passed++; printf("ok   %-40s max rel err %.3g\n", what, worst); }
    else { failed++; printf("FAIL %-40s max rel err %.3g > %.3g\n", what, worst, tol); }
}

/* truth[n, out] = x w^T + b, each sum in double, in order, the bias added last */
static double *linear_truth(const float *x, const float *w, const float *b, int n, int in, int out)
{
    double *t = malloc((size_t)n * out * sizeof(double));
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            double s = 0.0;
            for (int k = 0; k < in; k++) s += (double)x[(size_t)i * in + k] * w[(size_t)o * in + k];
            t[(size_t)i * out + o] = b ? s + b[o] : s;
        }
    return t;
}

static void check_same(const char *what, const float *a, const float *b, size_t n)
{
    size_t i = 0;
    while (i < n && memcmp(&a[i], &b[i], sizeof(float)) == 0) i++;
    if (i == n) { passed++; printf("ok   %-40s bit for bit\n", what); }
    else { failed++; printf("FAIL %-40s differs at %zu: %.9g, %.9g\n", what, i, a[i], b[i]); }
}

static void test_linear(int n, int in, int out, int bias)
{
    float *x = rand_array((size_t)n * in, 1.0f), *w = rand_array((size_t)out * in, 0.05f), *b = rand_array(out, 0.1f);
    float *y = malloc((size_t)n * out * sizeof(float)), *r = malloc((size_t)n * out * sizeof(float));
    float *z = malloc((size_t)n * out * sizeof(float)), *rounded = malloc((size_t)n * out * sizeof(float));
    float *scratch = malloc((clip_linear_scratch(n, in) + 1) * sizeof(float));
    double *ref = linear_truth(x, w, bias ? b : NULL, n, in, out);
    clip_weight W = {CLIP_DTYPE_F32, w};
    char name[80];
    clip_linear(y, x, w, bias ? b : NULL, n, in, out);
    clip_ref_linear(r, x, w, bias ? b : NULL, n, in, out);
    clip_linear_weight(z, x, &W, bias ? b : NULL, n, in, out, scratch);
    snprintf(name, sizeof name, "linear %dx%d -> %d%s", n, in, out, bias ? " +bias" : "");
    check(name, y, ref, (size_t)n * out, 2e-6 * sqrt((double)in));
    snprintf(name, sizeof name, "ref_linear %dx%d -> %d%s", n, in, out, bias ? " +bias" : "");
    check(name, r, ref, (size_t)n * out, 1e-7);
    /* the reference is the in-order double sum, rounded once */
    for (size_t i = 0; i < (size_t)n * out; i++) rounded[i] = (float)ref[i];
    snprintf(name, sizeof name, "ref_linear %dx%d -> %d = in-order sum", n, in, out);
    check_same(name, r, rounded, (size_t)n * out);
    snprintf(name, sizeof name, "linear_weight %dx%d -> %d = linear", n, in, out);
    check_same(name, z, y, (size_t)n * out);
    free(x); free(w); free(b); free(y); free(r); free(z); free(rounded); free(scratch); free(ref);
}

/* clip_linear3 against three clip_linear calls (the same sums: identical bits) and double */
static void test_linear3(int n, int in, int out)
{
    float *x = rand_array((size_t)n * in, 1.0f), *w[3], *b[3], *y[3], *single = malloc((size_t)n * out * sizeof(float));
    double *ref = NULL;
    int same = 1;
    char name[64];
    for (int p = 0; p < 3; p++) {
        w[p] = rand_array((size_t)out * in, 0.05f);
        b[p] = p == 1 ? NULL : rand_array(out, 0.1f);   /* k_proj-like part without a bias too */
        y[p] = malloc((size_t)n * out * sizeof(float));
    }
    clip_linear3(y, x, (const float *const *)w, (const float *const *)b, n, in, out);
    for (int p = 0; p < 3; p++) {
        clip_linear(single, x, w[p], b[p], n, in, out);
        for (size_t i = 0; i < (size_t)n * out; i++) same &= single[i] == y[p][i];
        free(ref);
        ref = linear_truth(x, w[p], b[p], n, in, out);
        snprintf(name, sizeof name, "linear3 %dx%d -> 3x%d, part %d", n, in, out, p);
        check(name, y[p], ref, (size_t)n * out, 2e-6 * sqrt((double)in));
    }
    snprintf(name, sizeof name, "linear3 %dx%d -> 3x%d", n, in, out);
    if (same) { passed++; printf("ok   %-40s identical to clip_linear\n", name); }
    else { failed++; printf("FAIL linear3 %dx%d -> 3x%d differs from clip_linear\n", n, in, out); }
    for (int p = 0; p < 3; p++) { free(w[p]); free(b[p]); free(y[p]); }
    free(x); free(single); free(ref);
}

static void test_layer_norm(int n, int d)
{
    float *x = rand_array((size_t)n * d, 3.0f), *g = rand_array(d, 1.0f), *b = rand_array(d, 1.0f);
    float *y = malloc((size_t)n * d * sizeof(float));
    double *ref = malloc((size_t)n * d * sizeof(double));
    char name[64];
    for (int i = 0; i < n; i++) x[(size_t)i * d] += 100.0f;   /* an outlier, as CLIP has */
    for (int i = 0; i < n; i++) {
        double m = 0, v = 0;
        for (int j = 0; j < d; j++) m += x[(size_t)i * d + j];
        m /= d;
        for (int j = 0; j < d; j++) v += (x[(size_t)i * d + j] - m) * (x[(size_t)i * d + j] - m);
        v /= d;
        for (int j = 0; j < d; j++) ref[(size_t)i * d + j] = (x[(size_t)i * d + j] - m) / sqrt(v + 1e-5) * g[j] + b[j];
    }
    clip_layer_norm(y, x, g, b, n, d, 1e-5f);
    snprintf(name, sizeof name, "layer_norm %dx%d", n, d);
    check(name, y, ref, (size_t)n * d, 1e-6);
    clip_ref_layer_norm(y, x, g, b, n, d, 1e-5f);
    snprintf(name, sizeof name, "ref_layer_norm %dx%d", n, d);
    check(name, y, ref, (size_t)n * d, 1e-7);
    free(x); free(g); free(b); free(y); free(ref);
}

/* the reference for one query row of head h: softmax(q_i . k_j, j < len) v, in double
 * (q, k, v rows d apart; p: len doubles of scratch) */
static void ref_attention_row(double *out, const float *qi, const float *k, const float *v, int len, int d,
                              int h, int hd, double *p)
{
    double mx = -1e300, sum = 0;
    for (int j = 0; j < len; j++) {
        double s = 0;
        for (int t = 0; t < hd; t++) s += (double)qi[h * hd + t] * k[(size_t)j * d + h * hd + t];
        p[j] = s;
        if (s > mx) mx = s;
    }
    for (int j = 0; j < len; j++) { p[j] = exp(p[j] - mx); sum += p[j]; }
    for (int t = 0; t < hd; t++) {
        double o = 0;
        for (int j = 0; j < len; j++) o += p[j] / sum * v[(size_t)j * d + h * hd + t];
        out[h * hd + t] = o;
    }
}

static void test_attention(int n, int heads, int hd, int causal)
{
    int d = heads * hd;
    float *q = rand_array((size_t)n * d, 1.0f), *k = rand_array((size_t)n * d, 1.0f), *v = rand_array((size_t)n * d, 1.0f);
    float *out = malloc((size_t)n * d * sizeof(float));
    float *scratch = malloc(clip_attention_scratch(n, heads, hd) * sizeof(float));   /* exactly what it asks */
    float *ref_scratch = malloc((size_t)heads * n * sizeof(float));
    double *ref = malloc((size_t)n * d * sizeof(double)), *p = malloc((size_t)n * sizeof(double));
    char name[80];
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < n; i++)
            ref_attention_row(ref + (size_t)i * d, q + (size_t)i * d, k, v, causal ? i + 1 : n, d, h, hd, p);
    clip_attention(out, q, k, v, n, heads, hd, causal, scratch);
    snprintf(name, sizeof name, "attention n=%d heads=%d hd=%d%s", n, heads, hd, causal ? " causal" : "");
    check(name, out, ref, (size_t)n * d, 1e-5);
    clip_ref_attention(out, q, k, v, n, heads, hd, causal, ref_scratch);
    snprintf(name, sizeof name, "ref_attention n=%d heads=%d hd=%d%s", n, heads, hd, causal ? " causal" : "");
    check(name, out, ref, (size_t)n * d, 1e-6);
    free(q); free(k); free(v); free(out); free(scratch); free(ref_scratch); free(ref); free(p);
}

/* one query row at position i against keys 0..len-1 (the pooled last layer) */
static void test_attention_query(int len, int heads, int hd)
{
    int d = heads * hd;
    float *q = rand_array(d, 1.0f), *k = rand_array((size_t)len * d, 1.0f), *v = rand_array((size_t)len * d, 1.0f);
    float *out = malloc(d * sizeof(float)), *scratch = malloc(len * sizeof(float));
    double *ref = malloc(d * sizeof(double)), *p = malloc(len * sizeof(double));
    char name[80];
    for (int h = 0; h < heads; h++) ref_attention_row(ref, q, k, v, len, d, h, hd, p);
    clip_attention_query(out, q, k, v, len, heads, hd, scratch);
    snprintf(name, sizeof name, "attention_query len=%d heads=%d hd=%d", len, heads, hd);
    check(name, out, ref, d, 1e-5);
    clip_ref_attention_query(out, q, k, v, len, heads, hd, scratch);
    snprintf(name, sizeof name, "ref_attention_query len=%d heads=%d hd=%d", len, heads, hd);
    check(name, out, ref, d, 1e-6);
    free(q); free(k); free(v); free(out); free(scratch); free(ref); free(p);
}

static void test_activations(void)
{
    size_t n = 10001;
    float *x = rand_array(n, 8.0f), *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    double *ra = malloc(n * sizeof(double)), *rb = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) {
        a[i] = b[i] = x[i];
        ra[i] = x[i] / (1.0 + exp(-1.702 * x[i]));
        rb[i] = 0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0)));
    }
    clip_quick_gelu(a, n);
    clip_gelu(b, n);
    check("quick_gelu", a, ra, n, 1e-7);
    check("gelu", b, rb, n, 1e-7);
    for (size_t i = 0; i < n; i++) a[i] = b[i] = x[i];
    clip_ref_quick_gelu(a, n);
    clip_ref_gelu(b, n);
    check("ref_quick_gelu", a, ra, n, 1e-7);
    check("ref_gelu", b, rb, n, 1e-7);
    free(x); free(a); free(b); free(ra); free(rb);
}

static void test_softmax(int n, int d)
{
    float *x = rand_array((size_t)n * d, 20.0f), *x2 = malloc((size_t)n * d * sizeof(float));
    double *ref = malloc((size_t)n * d * sizeof(double));
    char name[64];
    memcpy(x2, x, (size_t)n * d * sizeof(float));
    for (int i = 0; i < n; i++) {
        double mx = -1e300, s = 0;
        for (int j = 0; j < d; j++) if (x[(size_t)i * d + j] > mx) mx = x[(size_t)i * d + j];
        for (int j = 0; j < d; j++) s += exp(x[(size_t)i * d + j] - mx);
        for (int j = 0; j < d; j++) ref[(size_t)i * d + j] = exp(x[(size_t)i * d + j] - mx) / s;
    }
    clip_softmax(x, n, d);
    snprintf(name, sizeof name, "softmax %dx%d", n, d);
    check(name, x, ref, (size_t)n * d, 1e-6);
    clip_ref_softmax(x2, n, d);
    snprintf(name, sizeof name, "ref_softmax %dx%d", n, d);
    check(name, x2, ref, (size_t)n * d, 1e-6);
    free(x); free(x2); free(ref);
}

/* ------------------------------------------------------------------------ */
/* float16 and q8 weights (README, "The model file"), packed here from       */
/* values drawn here, the truths from those values                           */
/* ------------------------------------------------------------------------ */

/* a float16 with a random sign, exponent in [-6, 0] and mantissa; its value in *v */
static uint16_t rand_f16(double *v)
{
    unsigned e = 9 + (unsigned)((frand() + 1.0f) * 3.5f), m = (unsigned)((frand() + 1.0f) * 511.5f), neg = frand() < 0;
    *v = (neg ? -1.0 : 1.0) * ldexp(1.0 + m / 1024.0, (int)e - 15);
    return (uint16_t)(neg << 15 | e << 10 | m);
}

/* The q8 layout, written from README's table: value (o, k) at
 * (o/16) 16 in32 + (k/4) 64 + (o%16) 4 + k%4; its scale (float32, after
 * the out16 x in32 values) at ((o/16) (in32/32) + k/32) 16 + o%16. */
static uint8_t *pack_q8(const int8_t *q, const float *s, int out, int in)
{
    int in32 = (in + 31) / 32 * 32, out16 = (out + 15) / 16 * 16, nb = in32 / 32;
    uint8_t *w = calloc(1, clip_weight_bytes(CLIP_DTYPE_Q8, out, in));
    float *scales = (float *)(void *)(w + (size_t)out16 * in32);
    for (int o = 0; o < out; o++) {
        for (int k = 0; k < in; k++)
            w[(size_t)(o / 16) * 16 * in32 + (size_t)(k / 4) * 64 + (o % 16) * 4 + k % 4] = (uint8_t)q[(size_t)o * in + k];
        for (int b = 0; b < nb; b++) scales[((size_t)(o / 16) * nb + b) * 16 + o % 16] = s[(size_t)o * nb + b];
    }
    return w;
}

/* x quantized as clip_linear_weight's q8 products do (clip.h): per block of
 * 32, scale max|x| / 127, q = round-to-even(x * (127 / max|x|)) */
static void quantize_x(const float *x, int n, int in, int8_t *q, float *s)
{
    int in32 = (in + 31) / 32 * 32, nb = in32 / 32;
    for (int i = 0; i < n; i++)
        for (int b = 0; b < nb; b++) {
            float amax = 0.0f, inv;
            for (int k = b * 32; k < b * 32 + 32 && k < in; k++) amax = fmaxf(amax, fabsf(x[(size_t)i * in + k]));
            inv = amax > 0.0f ? 127.0f / amax : 0.0f;
            for (int k = b * 32; k < b * 32 + 32; k++) {
                float p = k < in ? x[(size_t)i * in + k] * inv : 0.0f;
                q[(size_t)i * in32 + k] = (int8_t)nearbyintf(p);
            }
            s[(size_t)i * nb + b] = amax / 127.0f;
        }
}

static void test_linear_dtypes(int n, int in, int out)
{
    int in32 = (in + 31) / 32 * 32, nb = in32 / 32;
    float *x = rand_array((size_t)n * in, 2.0f), *b = rand_array((size_t)out, 1.0f), *y = malloc(sizeof(float) * n * out);
    float *wq_s = malloc(sizeof(float) * out * nb), *xs = malloc(sizeof(float) * n * nb), *row = malloc(sizeof(float) * in);
    float *scratch = malloc(sizeof(float) * clip_linear_scratch(n, in));
    double *truth = malloc(sizeof(double) * n * out), *wv = malloc(sizeof(double) * out * in);
    uint16_t *w16 = malloc(sizeof(uint16_t) * out * in);
    int8_t *q = malloc((size_t)out * in), *xq = malloc((size_t)n * in32);
    uint8_t *w8;
    char name[80];
    clip_weight W;
    int exact = 1;

    /* float16: the truth in double from the values of the halves */
    for (size_t i = 0; i < (size_t)out * in; i++) w16[i] = rand_f16(&wv[i]);
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            double t = 0.0;
            for (int k = 0; k < in; k++) t += (double)x[(size_t)i * in + k] * wv[(size_t)o * in + k];
            truth[(size_t)i * out + o] = t + b[o];
        }
    W.dtype = CLIP_DTYPE_F16;
    W.data = w16;
    snprintf(name, sizeof name, "linear f16 %dx%dx%d", n, in, out);
    clip_linear_weight(y, x, &W, b, n, in, out, scratch);
    check(name, y, truth, (size_t)n * out, 2e-6 * sqrt((double)in));
    snprintf(name, sizeof name, "ref_linear f16 %dx%dx%d", n, in, out);
    clip_ref_linear_weight(y, x, &W, b, n, in, out, NULL);
    check(name, y, truth, (size_t)n * out, 1e-7);

    /* q8: int8 values and scales drawn here; the truth from them and x quantized as clip.h says */
    for (size_t i = 0; i < (size_t)out * in; i++) q[i] = (int8_t)(frand() * 127.0f);
    for (size_t i = 0; i < (size_t)out * nb; i++) wq_s[i] = (frand() + 1.5f) * 0.01f;
    w8 = pack_q8(q, wq_s, out, in);
    quantize_x(x, n, in, xq, xs);
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            double t = 0.0;
            for (int blk = 0; blk < nb; blk++) {
                long dot = 0;
                for (int k = blk * 32; k < blk * 32 + 32 && k < in; k++) dot += (long)xq[(size_t)i * in32 + k] * q[(size_t)o * in + k];
                t += dot * ((double)xs[(size_t)i * nb + blk] * wq_s[(size_t)o * nb + blk]);
            }
            truth[(size_t)i * out + o] = t + b[o];
        }
    W.dtype = CLIP_DTYPE_Q8;
    W.data = w8;
    snprintf(name, sizeof name, "linear q8 %dx%dx%d", n, in, out);
    clip_linear_weight(y, x, &W, b, n, in, out, scratch);
    check(name, y, truth, (size_t)n * out, 2e-6 * sqrt((double)in));
    snprintf(name, sizeof name, "ref_linear q8 %dx%dx%d", n, in, out);
    clip_ref_linear_weight(y, x, &W, b, n, in, out, NULL);
    check(name, y, truth, (size_t)n * out, 1e-7);
    {   /* three q8 weights on one x: each as alone */
        float *y3[3] = {malloc(sizeof(float) * n * out), malloc(sizeof(float) * n * out), malloc(sizeof(float) * n * out)};
        const clip_weight *w3[3] = {&W, &W, &W};
        const float *b3[3] = {b, NULL, b};
        clip_linear3_weight(y3, x, w3, b3, n, in, out, NULL);
        for (int i = 0; i < n; i++)
            for (int o = 0; o < out; o++) truth[(size_t)i * out + o] -= b[o];
        snprintf(name, sizeof name, "linear3 q8 %dx%dx%d (no bias)", n, in, out);
        check(name, y3[1], truth, (size_t)n * out, 2e-6 * sqrt((double)in));
        for (int p = 0; p < 3; p++) free(y3[p]);
    }
    /* a row of each dtype, exactly */
    for (int o = 0; o < out; o++) {
        clip_weight_row(row, &W, o, in, out);
        for (int k = 0; k < in; k++) exact &= row[k] == (float)(q[(size_t)o * in + k] * wq_s[(size_t)o * nb + k / 32]);
        W.dtype = CLIP_DTYPE_F16;
        W.data = w16;
        clip_weight_row(row, &W, o, in, out);
        for (int k = 0; k < in; k++) exact &= row[k] == wv[(size_t)o * in + k];
        W.dtype = CLIP_DTYPE_Q8;
        W.data = w8;
    }
    if (exact) passed++;
    else failed++;
    printf("%s weight rows %dx%d (q8, f16): %s\n", exact ? "ok  " : "FAIL", out, in, exact ? "exact" : "differ");
    free(x); free(b); free(y); free(wq_s); free(xs); free(row); free(scratch); free(truth); free(wv); free(w16);
    free(q); free(xq); free(w8);
}

int main(void)
{
    test_linear(1, 1, 1, 0);
    test_linear(1, 1, 1, 1);
    test_linear(7, 513, 1, 1);
    test_linear(7, 513, 17, 1);
    test_linear(13, 7, 513, 0);
    test_linear(50, 768, 3072, 1);
    test_linear(50, 3072, 768, 1);
    test_linear(77, 512, 512, 1);
    /* every strip width (16..64 lanes), rows left to dot products, a partial last tile of B */
    for (int m = 15; m <= 22; m++) test_linear(m, 33, 13, m & 1);
    test_linear(49, 3072, 31, 0);
    test_linear(50, 40, 7, 1);
    test_linear(66, 17, 6, 1);
    test_linear(68, 64, 5, 0);
    test_linear(100, 300, 25, 1);
    test_linear(130, 257, 12, 1);
    test_linear(200, 1, 50, 1);
    test_linear(1100, 20, 7, 1);     /* rows in several passes */
    test_linear(800, 64, 13, 0);
    test_linear3(7, 512, 512);       /* dot products */
    test_linear3(50, 768, 768);      /* strips, two rows left over */
    test_linear3(77, 64, 100);       /* tiles that straddle two parts */
    test_linear3(16, 33, 5);
    test_layer_norm(1, 1);
    test_layer_norm(7, 513);
    test_layer_norm(50, 768);
    test_softmax(1, 1);
    test_softmax(7, 513);
    test_attention(1, 1, 1, 0);
    test_attention(7, 3, 17, 1);
    test_attention(50, 12, 64, 0);
    test_attention(77, 8, 64, 1);
    test_attention(5, 2, 64, 1);     /* 64-wide heads with a partial block of four rows */
    test_attention(13, 3, 64, 0);
    test_attention(17, 2, 32, 1);
    test_attention(65, 2, 64, 1);    /* keys in two blocks of 64 */
    test_attention(130, 2, 64, 0);   /* three blocks, none skipped */
    test_attention_query(1, 1, 1);
    test_attention_query(50, 12, 64);
    test_attention_query(7, 8, 64);
    test_attention_query(33, 3, 17);
    test_activations();
    /* float16 and q8: one row, a text, an image's 50 rows; in and out that pad (q8: 32, 16) */
    test_linear_dtypes(1, 32, 16);
    test_linear_dtypes(7, 512, 512);
    test_linear_dtypes(50, 768, 100);
    test_linear_dtypes(5, 48, 37);
    test_linear_dtypes(17, 100, 5);
    test_linear_dtypes(50, 3072, 48);
    printf("kernels: %s\n", clip_build_info());
    printf("tensor: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}
