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
    printf("kernels: %s\n", clip_build_info());
    printf("tensor: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}
