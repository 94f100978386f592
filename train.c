/* train.c - contrastive pre-training of a small CLIP, forward and backward in plain C.
 *
 * The article's second section, as a program: a batch of N pictures and their
 * captions goes through the two towers, the N x N matrix of cosine
 * similarities (times exp(logit_scale)) is scored with cross-entropy along
 * its rows (each caption should pick its picture) and along its columns (each
 * picture should pick its caption), and the gradient of that loss flows back
 * through every operation to every weight, which AdamW then moves.
 *
 * The model is exactly Hugging Face's CLIPModel (modeling_clip.py): pre-norm
 * encoder layers, q scaled by head_dim^-0.5, a class token, pre_layrnorm and
 * post_layernorm in the vision tower, final_layer_norm and pooling at the
 * end-of-text token in the text tower, projections without bias, a learnable
 * logit_scale. train.c writes what it learned as a Hugging Face folder
 * (model.safetensors, config.json, the tokenizer files), which convert.py
 * turns into a model file for `clip`, and which transformers loads as is.
 *
 * Layout, in the order of the computation (llm.c's train_gpt2.c style: every
 * operation a *_forward / *_backward pair, shapes in the comments; forwards
 * use tensor.c's kernels, backwards are plain loops):
 *
 *   the parameters        one float array, viewed as HF's named tensors
 *   operations            linear, layer norm, attention, activations
 *   encoder layer         CLIPEncoderLayer forward and backward
 *   towers                CLIPVisionTransformer, CLIPTextTransformer, projections
 *   loss                  CLIPModel's symmetric cross-entropy, logit_scale
 *   AdamW                 with warmup, cosine decay, gradient clipping
 *   vocabulary            a byte-level BPE learned from the captions (CLIP's format)
 *   data                  shapes.c's pictures -> clip_image_preprocess; captions -> clip_tokenize
 *   output                safetensors, JSON, the loss curve as SVG
 *   commands              train model | pictures | gradcheck
 *
 * Determinism: every parallel loop gives each output element to one thread,
 * which sums in a fixed order, and every picture is a function of its seed;
 * a run gives the same bits with any number of threads (on one build).
 */
#define _POSIX_C_SOURCE 200809L
#include "clip.h"
#include "shapes.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static const char *usage_text =
    "train - contrastive pre-training of a small CLIP in C (clip.c)\n"
    "\n"
    "usage:\n"
    "  train model     [-o DIR] [--seed N] [--steps N] [--batch N] [--lr X] [--curve FILE.svg] [-j N]\n"
    "  train pictures  [--split train|heldout] [--first K] [--count N] [--seed N] -o DIR\n"
    "  train gradcheck --act quick_gelu|gelu --pool argmax|eos -o DIR\n"
    "\n"
    "commands:\n"
    "  model      learn a vocabulary (byte-level BPE) from the captions, then train both towers on\n"
    "             freshly drawn pictures of coloured shapes; write a Hugging Face folder to DIR\n"
    "             (default build/clip-shapes): model.safetensors, config.json, preprocessor_config.json,\n"
    "             vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json, and\n"
    "             training_log.tsv. Then: python3 convert.py DIR -o model.bin\n"
    "  pictures   draw N captioned pictures as DIR/NNNNN.png and DIR/captions.tsv\n"
    "             (index, file, colour, shape, count, caption). The held-out split is never trained on.\n"
    "  gradcheck  a small random model, one batch, one backward: writes DIR/model.safetensors,\n"
    "             config.json, inputs.safetensors and grads.safetensors for test/test_gradcheck.py\n"
    "\n"
    "options (model):\n"
    "  -o DIR           output folder\n"
    "  --seed N         seed of the weights and of the stream of training pictures (default 1)\n"
    "  --steps N        optimizer steps (default 12000)\n"
    "  --batch N        pairs per step (default 64)\n"
    "  --lr X           peak learning rate (default 0.002)\n"
    "  --curve FILE     also draw the loss curve as an SVG file\n"
    "  --evals N        measure the held-out zero-shot accuracy N times (default 12)\n"
    "  --width D        width of both towers, a multiple of 32 (heads of 32, MLPs of 4 D; default 64)\n"
    "  --vision-layers N, --text-layers N   encoder layers (default 4 and 2)\n"
    "  --image-size S, --patch P   the vision tower's input side and patch side (default 32 and 8)\n"
    "  --quiet          no progress lines\n"
    "  -j, --threads N  worker threads (default: all cores); the result does not depend on it\n"
    "\n"
    "examples:\n"
    "  make train && ./train model -o build/clip-shapes && python3 convert.py build/clip-shapes -o shapes.bin\n"
    "  ./train pictures --split heldout --count 20 -o /tmp/pics\n"
    "\n"
    "exit status: 0 success, 1 bad input or a file that cannot be written, 2 bad usage\n";

/* ------------------------------------------------------------------------ */
/* Errors, memory, time                                                      */
/* ------------------------------------------------------------------------ */

#if defined(__GNUC__)
static void die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
#endif

static void die(int code, const char *fmt, ...)
{
    va_list ap;
    fputs("train: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (code == 2) fputs("Try 'train --help' for more information.\n", stderr);
    exit(code);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) die(1, "out of memory (%zu bytes)", n * size);
    return p;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int thread_count(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* the rows [*r0, *r1) of n that thread `t` of `nt` owns (a fixed split) */
static void share(int n, int t, int nt, int *r0, int *r1)
{
    *r0 = (int)((long long)n * t / nt);
    *r1 = (int)((long long)n * (t + 1) / nt);
}

#ifdef _OPENMP
#define THREAD_ID omp_get_thread_num()
#define THREADS omp_get_num_threads()
#else
#define THREAD_ID 0
#define THREADS 1
#endif

/* splitmix64 and Box-Muller: the weights' initial values */
typedef struct { uint64_t s; } rng;

static uint64_t rng_next(rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static double rng_unit(rng *r) { return ((double)(rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }

static double rng_normal(rng *r)
{
    return sqrt(-2.0 * log(rng_unit(r))) * cos(6.283185307179586 * rng_unit(r));
}

/* ------------------------------------------------------------------------ */
/* The parameters: one float array, viewed as Hugging Face's tensors         */
/* ------------------------------------------------------------------------ */
/* The weights, their gradients and AdamW's two moments are four arrays of
 * the same layout. layout() walks the tensors in a fixed order, records each
 * one's name, shape and offset, and points a model_params at them in any of
 * the four arrays. Names are exactly those of CLIPModel's state dict. */
#define MAX_LAYERS 16
#define MAX_TENSORS (24 + 16 * 2 * MAX_LAYERS)

typedef struct {                   /* CLIPEncoderLayer; linear weights are [out, in] */
    float *ln1_w, *ln1_b;          /* layer_norm1 [d] */
    float *q_w, *q_b, *k_w, *k_b;  /* self_attn.{q,k}_proj [d, d], [d] */
    float *v_w, *v_b, *o_w, *o_b;  /* self_attn.{v,out}_proj [d, d], [d] */
    float *ln2_w, *ln2_b;          /* layer_norm2 [d] */
    float *fc1_w, *fc1_b;          /* mlp.fc1 [inter, d], [inter] */
    float *fc2_w, *fc2_b;          /* mlp.fc2 [d, inter], [d] */
} layer_params;

typedef struct {
    float *token_embedding;        /* [vocab, dt] */
    float *text_position;          /* [max_positions, dt] */
    layer_params text[MAX_LAYERS];
    float *final_ln_w, *final_ln_b;/* [dt] */
    float *text_projection;        /* [proj, dt] */
    float *class_embedding;        /* [dv] */
    float *patch_embedding;        /* [dv, 3, p, p] */
    float *vision_position;        /* [1 + g*g, dv] */
    float *pre_ln_w, *pre_ln_b;    /* pre_layrnorm [dv] */
    layer_params vision[MAX_LAYERS];
    float *post_ln_w, *post_ln_b;  /* post_layernorm [dv] */
    float *visual_projection;      /* [proj, dv] */
    float *logit_scale;            /* [] */
} model_params;

typedef struct {
    char name[96];
    int ndim, shape[4];
    size_t offset, count;
    int decay;                     /* AdamW weight decay applies (matrices, embeddings) */
} tensor_info;

typedef struct {
    clip_config c;                 /* clip.h's config: towers, sizes, eos_token_id, preprocessing */
    int n_tensors;
    tensor_info tensors[MAX_TENSORS];
    size_t n_params;
    float *w, *g, *m, *v;          /* weights, gradients, AdamW moments */
    model_params W, G;             /* views of w and g */
} model;

static float *add_tensor(model *m, float *base, int decay, int ndim, int s0, int s1, int s2, int s3, const char *fmt, ...)
{
    tensor_info *t = &m->tensors[m->n_tensors++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ndim = ndim;
    t->shape[0] = s0; t->shape[1] = s1; t->shape[2] = s2; t->shape[3] = s3;
    t->count = 1;
    for (int i = 0; i < ndim; i++) t->count *= (size_t)t->shape[i];
    t->offset = m->n_params;
    t->decay = decay;
    m->n_params += t->count;
    return base ? base + t->offset : NULL;
}

#define T1(ptr, d0, ...) (p->ptr = add_tensor(m, base, 0, 1, d0, 0, 0, 0, __VA_ARGS__))
#define T2(ptr, d0, d1, ...) (p->ptr = add_tensor(m, base, 1, 2, d0, d1, 0, 0, __VA_ARGS__))

static void layout_layers(model *m, float *base, layer_params *layers, const clip_tower_config *c, const char *tower)
{
    int d = c->hidden, f = c->intermediate;
    for (int l = 0; l < c->layers; l++) {
        layer_params *p = &layers[l];
        T1(ln1_w, d, "%s.encoder.layers.%d.layer_norm1.weight", tower, l);
        T1(ln1_b, d, "%s.encoder.layers.%d.layer_norm1.bias", tower, l);
        T2(q_w, d, d, "%s.encoder.layers.%d.self_attn.q_proj.weight", tower, l);
        T1(q_b, d, "%s.encoder.layers.%d.self_attn.q_proj.bias", tower, l);
        T2(k_w, d, d, "%s.encoder.layers.%d.self_attn.k_proj.weight", tower, l);
        T1(k_b, d, "%s.encoder.layers.%d.self_attn.k_proj.bias", tower, l);
        T2(v_w, d, d, "%s.encoder.layers.%d.self_attn.v_proj.weight", tower, l);
        T1(v_b, d, "%s.encoder.layers.%d.self_attn.v_proj.bias", tower, l);
        T2(o_w, d, d, "%s.encoder.layers.%d.self_attn.out_proj.weight", tower, l);
        T1(o_b, d, "%s.encoder.layers.%d.self_attn.out_proj.bias", tower, l);
        T1(ln2_w, d, "%s.encoder.layers.%d.layer_norm2.weight", tower, l);
        T1(ln2_b, d, "%s.encoder.layers.%d.layer_norm2.bias", tower, l);
        T2(fc1_w, f, d, "%s.encoder.layers.%d.mlp.fc1.weight", tower, l);
        T1(fc1_b, f, "%s.encoder.layers.%d.mlp.fc1.bias", tower, l);
        T2(fc2_w, d, f, "%s.encoder.layers.%d.mlp.fc2.weight", tower, l);
        T1(fc2_b, d, "%s.encoder.layers.%d.mlp.fc2.bias", tower, l);
    }
}

/* every tensor of CLIPModel, in a fixed order; base NULL only measures */
static void layout(model *m, float *base, model_params *p)
{
    const clip_config *c = &m->c;
    int dt = c->text.hidden, dv = c->vision.hidden, P = c->patch, g = c->image_size / P;
    m->n_tensors = 0;
    m->n_params = 0;
    T2(token_embedding, c->vocab_size, dt, "text_model.embeddings.token_embedding.weight");
    T2(text_position, c->max_positions, dt, "text_model.embeddings.position_embedding.weight");
    layout_layers(m, base, p->text, &c->text, "text_model");
    T1(final_ln_w, dt, "text_model.final_layer_norm.weight");
    T1(final_ln_b, dt, "text_model.final_layer_norm.bias");
    T2(text_projection, c->projection_dim, dt, "text_projection.weight");
    T1(class_embedding, dv, "vision_model.embeddings.class_embedding");
    p->patch_embedding = add_tensor(m, base, 1, 4, dv, 3, P, P, "vision_model.embeddings.patch_embedding.weight");
    T2(vision_position, 1 + g * g, dv, "vision_model.embeddings.position_embedding.weight");
    T1(pre_ln_w, dv, "vision_model.pre_layrnorm.weight");
    T1(pre_ln_b, dv, "vision_model.pre_layrnorm.bias");
    layout_layers(m, base, p->vision, &c->vision, "vision_model");
    T1(post_ln_w, dv, "vision_model.post_layernorm.weight");
    T1(post_ln_b, dv, "vision_model.post_layernorm.bias");
    T2(visual_projection, c->projection_dim, dv, "visual_projection.weight");
    p->logit_scale = add_tensor(m, base, 0, 0, 0, 0, 0, 0, "logit_scale");
}
#undef T1
#undef T2

static void fill_normal(rng *r, float *x, size_t n, double std)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)(std * rng_normal(r));
}

/* CLIPPreTrainedModel._init_weights with initializer_factor 1: embeddings
 * N(0, 0.02); the class token N(0, d^-0.5); q, k, v N(0, d^-0.5 (2 L)^-0.5),
 * out_proj N(0, d^-0.5); fc1 N(0, (2 d)^-0.5), fc2 N(0, d^-0.5 (2 L)^-0.5);
 * projections N(0, d^-0.5); layer norms 1 and 0; biases 0; logit_scale
 * ln(1 / 0.07) = 2.6592. */
static void init_layers(rng *r, layer_params *L, const clip_tower_config *c)
{
    int d = c->hidden, f = c->intermediate;
    double in_std = pow(d, -0.5) * pow(2.0 * c->layers, -0.5), out_std = pow(d, -0.5);
    for (int l = 0; l < c->layers; l++) {
        layer_params *p = &L[l];
        for (int i = 0; i < d; i++) p->ln1_w[i] = p->ln2_w[i] = 1.0f;
        fill_normal(r, p->q_w, (size_t)d * d, in_std);
        fill_normal(r, p->k_w, (size_t)d * d, in_std);
        fill_normal(r, p->v_w, (size_t)d * d, in_std);
        fill_normal(r, p->o_w, (size_t)d * d, out_std);
        fill_normal(r, p->fc1_w, (size_t)f * d, pow(2.0 * d, -0.5));
        fill_normal(r, p->fc2_w, (size_t)d * f, in_std);
    }
}

static void model_init(model *m, const clip_config *c, uint64_t seed)
{
    rng r = {seed * 0x2545f4914f6cdd1du + 17};
    int dt = c->text.hidden, dv = c->vision.hidden, P = c->patch, g = c->image_size / P;
    model_params *W = &m->W;
    m->c = *c;
    layout(m, NULL, &m->W);
    m->w = xcalloc(m->n_params, sizeof(float));
    m->g = xcalloc(m->n_params, sizeof(float));
    m->m = xcalloc(m->n_params, sizeof(float));
    m->v = xcalloc(m->n_params, sizeof(float));
    layout(m, m->w, &m->W);
    layout(m, m->g, &m->G);
    fill_normal(&r, W->token_embedding, (size_t)c->vocab_size * dt, 0.02);
    fill_normal(&r, W->text_position, (size_t)c->max_positions * dt, 0.02);
    init_layers(&r, W->text, &c->text);
    for (int i = 0; i < dt; i++) W->final_ln_w[i] = 1.0f;
    fill_normal(&r, W->text_projection, (size_t)c->projection_dim * dt, pow(dt, -0.5));
    fill_normal(&r, W->class_embedding, (size_t)dv, pow(dv, -0.5));
    fill_normal(&r, W->patch_embedding, (size_t)dv * 3 * P * P, 0.02);
    fill_normal(&r, W->vision_position, (size_t)(1 + g * g) * dv, 0.02);
    for (int i = 0; i < dv; i++) W->pre_ln_w[i] = W->post_ln_w[i] = 1.0f;
    init_layers(&r, W->vision, &c->vision);
    fill_normal(&r, W->visual_projection, (size_t)c->projection_dim * dv, pow(dv, -0.5));
    W->logit_scale[0] = 2.6592f;
}

static void model_free(model *m)
{
    free(m->w); free(m->g); free(m->m); free(m->v);
}

/* ------------------------------------------------------------------------ */
/* Operations: forward and backward                                          */
/* ------------------------------------------------------------------------ */
/* Every backward adds into its gradients (dinp += ..., dw += ...), as
 * llm.c's do: the caller zeroes a gradient once, and a tensor read by two
 * operations (the residual stream, ln1's output read by q, k and v) simply
 * collects both contributions. */

/* torch.nn.Linear: out[N, OC] = inp[N, C] @ w[OC, C]^T + b[OC] (b may be NULL) */
static void linear_forward(float *out, const float *inp, const float *w, const float *b, int N, int C, int OC)
{
    clip_linear(out, inp, w, b, N, C, OC);
}

/* The backward's matrix products, in plain loops shaped for the vector units:
 *   c[i][j] += sum over k < K of A(k, i) * b[k][j]    for i < M, j < N
 * where A(k, i) = a[k * sak + i * sai] (so either a or its transpose), b and
 * c row-major (rows ldb and ldc apart). A tile of 8 x 16 of c keeps its sums
 * in registers while k runs (eight multiply-adds of 16 lanes per k); threads
 * take whole tiles, and every sum runs over k in order, whatever the thread
 * count. Tiles at the edges take the same loop with their own bounds. */
#define TILE_I 8
#define TILE_J 16

#ifdef _OPENMP
#define LANES _Pragma("omp simd")
#else
#define LANES
#endif

static void tile_full(float *c, int ldc, const float *a, long sak, long sai, const float *b, int ldb, int K)
{
    float acc[TILE_I][TILE_J] = {{0}};
    for (int k = 0; k < K; k++) {
        const float *ak = a + k * sak, *bk = b + (size_t)k * ldb;
        for (int i = 0; i < TILE_I; i++) {
            float x = ak[i * sai];
            LANES
            for (int j = 0; j < TILE_J; j++) acc[i][j] += x * bk[j];
        }
    }
    for (int i = 0; i < TILE_I; i++)
        for (int j = 0; j < TILE_J; j++) c[(size_t)i * ldc + j] += acc[i][j];
}

static void tile_edge(float *c, int ldc, const float *a, long sak, long sai, const float *b, int ldb, int K, int mi, int nj)
{
    float acc[TILE_I][TILE_J] = {{0}};
    for (int k = 0; k < K; k++) {
        const float *ak = a + k * sak, *bk = b + (size_t)k * ldb;
        for (int i = 0; i < mi; i++)
            for (int j = 0; j < nj; j++) acc[i][j] += ak[i * sai] * bk[j];
    }
    for (int i = 0; i < mi; i++)
        for (int j = 0; j < nj; j++) c[(size_t)i * ldc + j] += acc[i][j];
}

static void matmul_accumulate(float *c, int ldc, const float *a, long sak, long sai, const float *b, int ldb,
                              int M, int N, int K)
{
    int ti = (M + TILE_I - 1) / TILE_I, tj = (N + TILE_J - 1) / TILE_J;
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (int t = 0; t < ti * tj; t++) {
        int i0 = t / tj * TILE_I, j0 = t % tj * TILE_J;
        int mi = M - i0 < TILE_I ? M - i0 : TILE_I, nj = N - j0 < TILE_J ? N - j0 : TILE_J;
        float *ct = c + (size_t)i0 * ldc + j0;
        const float *at = a + i0 * sai, *bt = b + j0;
        if (mi == TILE_I && nj == TILE_J) tile_full(ct, ldc, at, sak, sai, bt, ldb, K);
        else tile_edge(ct, ldc, at, sak, sai, bt, ldb, K, mi, nj);
    }
}

/* dinp[N, C] += dout[N, OC] @ w[OC, C]      (skipped when dinp is NULL)
 * dw[OC, C]  += dout^T @ inp[N, C]
 * db[OC]     += sum over the N rows of dout (skipped when db is NULL) */
static void linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                            const float *w, int N, int C, int OC)
{
    if (dinp) matmul_accumulate(dinp, C, dout, 1, OC, w, C, N, C, OC);
    matmul_accumulate(dw, C, dout, OC, 1, inp, C, OC, C, N);
    if (db) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
        for (int o0 = 0; o0 < OC; o0 += 16) {
            int w = OC - o0 < 16 ? OC - o0 : 16;
            double s[16] = {0};
            for (int n = 0; n < N; n++)
                for (int j = 0; j < w; j++) s[j] += dout[(size_t)n * OC + o0 + j];
            for (int j = 0; j < w; j++) db[o0 + j] += (float)s[j];
        }
    }
}

/* torch.nn.LayerNorm over the last dimension: out[N, C] = (inp - mean) * rstd * w + b */
static void layernorm_forward(float *out, const float *inp, const float *w, const float *b, int N, int C, float eps)
{
    clip_layer_norm(out, inp, w, b, N, C, eps);
}

/* mean and 1/sqrt(var + eps) of row x[C], in double as tensor.c takes them */
static void row_stats(const float *x, int C, float eps, double *mean, double *rstd)
{
    double s = 0.0, v = 0.0;
    for (int c = 0; c < C; c++) s += x[c];
    s /= C;
    for (int c = 0; c < C; c++) v += (x[c] - s) * (x[c] - s);
    *mean = s;
    *rstd = 1.0 / sqrt(v / C + eps);
}

/* With xhat = (inp - mean) * rstd and g = dout * w:
 *   dinp[N, C] += rstd * (g - mean(g) - xhat * mean(g * xhat))
 *   dw[C] += sum over rows of dout * xhat;  db[C] += sum over rows of dout
 * The statistics are recomputed (stats: scratch of 2N doubles). */
static void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                               const float *w, int N, int C, float eps, double *stats)
{
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *go = dout + (size_t)n * C;
        float *di = dinp + (size_t)n * C;
        double mean, rstd, sg = 0.0, sgx = 0.0;
        row_stats(x, C, eps, &mean, &rstd);
        stats[2 * n] = mean;
        stats[2 * n + 1] = rstd;
        for (int c = 0; c < C; c++) {
            double g = (double)go[c] * w[c];
            sg += g;
            sgx += g * (x[c] - mean) * rstd;
        }
        sg /= C;
        sgx /= C;
        for (int c = 0; c < C; c++)
            di[c] += (float)(rstd * ((double)go[c] * w[c] - sg - (x[c] - mean) * rstd * sgx));
    }
#ifdef _OPENMP
#pragma omp parallel
#endif
    {
        int c0, c1;
        share(C, THREAD_ID, THREADS, &c0, &c1);
        for (int c = c0; c < c1; c++) {
            double sw = 0.0, sb = 0.0;
            for (int n = 0; n < N; n++) {
                double g = dout[(size_t)n * C + c];
                sw += g * (inp[(size_t)n * C + c] - stats[2 * n]) * stats[2 * n + 1];
                sb += g;
            }
            dw[c] += (float)sw;
            db[c] += (float)sb;
        }
    }
}

/* CLIPAttention's core, per sequence b and head h (q already scaled by
 * head_dim^-0.5; q, k, v, ctx [B*T, H*hd], head h in columns h*hd..):
 *   att[b, h, i, :] = softmax over j of q_i . k_j   (j <= i when causal; 0 beyond)
 *   ctx_i = sum over j of att[b, h, i, j] v_j
 * att [B, H, T, T] is kept for the backward. The scores run over j in the
 * inner loop, from a transposed copy of k_h (kt: hd * T floats per thread),
 * so that they vectorize without reordering any sum. */
static void attention_forward(float *ctx, float *att, const float *q, const float *k, const float *v,
                              int B, int T, int H, int hd, int causal, float *kt_all)
{
    int d = H * hd;
#ifdef _OPENMP
#pragma omp parallel
#endif
    {
        float *kt = kt_all + (size_t)THREAD_ID * hd * T;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int bh = 0; bh < B * H; bh++) {
            size_t base = (size_t)(bh / H) * T * d + (size_t)(bh % H) * hd;
            for (int j = 0; j < T; j++)
                for (int c = 0; c < hd; c++) kt[(size_t)c * T + j] = k[base + (size_t)j * d + c];
            for (int i = 0; i < T; i++) {
                float *a = att + ((size_t)bh * T + i) * T, *o = ctx + base + (size_t)i * d;
                const float *qi = q + base + (size_t)i * d;
                int len = causal ? i + 1 : T;
                for (int j = 0; j < T; j++) a[j] = 0.0f;
                for (int c = 0; c < hd; c++) {
                    const float *kc = kt + (size_t)c * T;
                    float x = qi[c];
                    LANES
                    for (int j = 0; j < len; j++) a[j] += x * kc[j];
                }
                clip_softmax(a, 1, len);
                for (int c = 0; c < hd; c++) o[c] = 0.0f;
                for (int j = 0; j < len; j++) {
                    const float *vj = v + base + (size_t)j * d;
                    float w = a[j];
                    LANES
                    for (int c = 0; c < hd; c++) o[c] += w * vj[c];
                }
            }
        }
    }
}

/* With dp_ij = dctx_i . v_j and ds_ij = att_ij (dp_ij - sum_k att_ik dp_ik)
 * (the softmax's backward):
 *   dv_j += sum_i att_ij dctx_i;  dq_i += sum_j ds_ij k_j;  dk_j += sum_i ds_ij q_i
 * Each (b, h) writes only its own columns of its own rows. Scratch per
 * thread (work: (hd + 1) * T floats): v_h transposed, and dp. */
static void attention_backward(float *dq, float *dk, float *dv, const float *dctx, const float *q, const float *k,
                               const float *v, const float *att, int B, int T, int H, int hd, int causal, float *work)
{
    int d = H * hd;
#ifdef _OPENMP
#pragma omp parallel
#endif
    {
        float *vt = work + (size_t)THREAD_ID * (hd + 1) * T, *dp = vt + (size_t)hd * T;
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (int bh = 0; bh < B * H; bh++) {
            size_t base = (size_t)(bh / H) * T * d + (size_t)(bh % H) * hd;
            for (int j = 0; j < T; j++)
                for (int c = 0; c < hd; c++) vt[(size_t)c * T + j] = v[base + (size_t)j * d + c];
            for (int i = 0; i < T; i++) {
                const float *a = att + ((size_t)bh * T + i) * T, *gi = dctx + base + (size_t)i * d;
                const float *qi = q + base + (size_t)i * d;
                float *dqi = dq + base + (size_t)i * d;
                int len = causal ? i + 1 : T;
                double sum = 0.0;
                for (int j = 0; j < len; j++) dp[j] = 0.0f;
                for (int c = 0; c < hd; c++) {
                    const float *vc = vt + (size_t)c * T;
                    float x = gi[c];
                    LANES
                    for (int j = 0; j < len; j++) dp[j] += x * vc[j];
                }
                for (int j = 0; j < len; j++) sum += (double)a[j] * dp[j];
                for (int j = 0; j < len; j++) {
                    const float *kj = k + base + (size_t)j * d;
                    float *dkj = dk + base + (size_t)j * d, *dvj = dv + base + (size_t)j * d;
                    float ds = (float)(a[j] * (dp[j] - sum)), w = a[j];
                    LANES
                    for (int c = 0; c < hd; c++) {
                        dqi[c] += ds * kj[c];
                        dkj[c] += ds * qi[c];
                        dvj[c] += w * gi[c];
                    }
                }
            }
        }
    }
}

/* ACT2FN[hidden_act] on n values: out = quick_gelu(inp) = inp * sigmoid(1.702 inp),
 * or gelu(inp) = inp * Phi(inp) (the exact, erf form) */
static void activation_forward(float *out, const float *inp, size_t n, int act)
{
    memcpy(out, inp, n * sizeof(float));
    if (act == CLIP_ACT_GELU) clip_gelu(out, n);
    else clip_quick_gelu(out, n);
}

/* dinp[n] = dout * act'(inp):
 *   quick_gelu' = s + 1.702 x s (1 - s), s = sigmoid(1.702 x)
 *   gelu'       = Phi(x) + x phi(x)
 * (in place: dinp may be dout) */
static void activation_backward(float *dinp, const float *dout, const float *inp, size_t n, int act)
{
#ifdef _OPENMP
#pragma omp parallel for schedule(static)
#endif
    for (size_t i = 0; i < n; i++) {
        double x = inp[i], dy;
        if (act == CLIP_ACT_GELU) {
            dy = 0.5 * (1.0 + erf(x * 0.70710678118654752440)) + x * exp(-0.5 * x * x) * 0.39894228040143267794;
        } else {
            double s = 1.0 / (1.0 + exp(-1.702 * x));
            dy = s + 1.702 * x * s * (1.0 - s);
        }
        dinp[i] = (float)(dout[i] * dy);
    }
}

/* out[n] = a + b (the residual connections); the backward passes dout to both */
static void residual_forward(float *out, const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* ------------------------------------------------------------------------ */
/* The encoder layer (CLIPEncoderLayer), forward and backward                */
/* ------------------------------------------------------------------------ */
/* What the forward keeps for the backward, per layer, for rows = B * T:
 * the layer's input is the previous layer's output (tower_acts.x). */
typedef struct {
    float *ln1;              /* [rows, d]   layer_norm1(x) */
    float *q, *k, *v;        /* [rows, d]   q_proj (scaled), k_proj, v_proj */
    float *att;              /* [B, H, T, T] attention probabilities */
    float *ctx;              /* [rows, d]   attention output, before out_proj */
    float *x_mid;            /* [rows, d]   x + out_proj(ctx) */
    float *ln2;              /* [rows, d]   layer_norm2(x_mid) */
    float *fc1;              /* [rows, I]   fc1 output, before the activation */
    float *act;              /* [rows, I]   after the activation */
} layer_acts;

/* The backward's scratch, sized for the larger tower. */
typedef struct {
    float *dh, *dq, *dk, *dv, *dctx;   /* [rows, d] */
    float *dfc;                        /* [rows, I] */
    float *dp;                         /* [threads, (hd + 1) * T] attention's scratch */
    double *stats;                     /* [2 * rows] */
} layer_scratch;

/* Pre-norm, as modeling_clip.py:
 *   x_mid = x + out_proj(attention(layer_norm1(x)))
 *   out   = x_mid + fc2(act(fc1(layer_norm2(x_mid))))
 * x, out [B*T, d]; tmp: [rows, d] scratch; work: threads * hd * T floats. */
static void layer_forward(float *out, const float *x, layer_acts *a, const layer_params *p, const clip_tower_config *c,
                          int B, int T, int causal, float *tmp, float *work)
{
    int d = c->hidden, hd = d / c->heads, rows = B * T;
    size_t nd = (size_t)rows * d;
    float scale = 1.0f / sqrtf((float)hd);
    layernorm_forward(a->ln1, x, p->ln1_w, p->ln1_b, rows, d, c->eps);
    linear_forward(a->q, a->ln1, p->q_w, p->q_b, rows, d, d);
    linear_forward(a->k, a->ln1, p->k_w, p->k_b, rows, d, d);
    linear_forward(a->v, a->ln1, p->v_w, p->v_b, rows, d, d);
    for (size_t i = 0; i < nd; i++) a->q[i] *= scale;
    attention_forward(a->ctx, a->att, a->q, a->k, a->v, B, T, c->heads, hd, causal, work);
    linear_forward(tmp, a->ctx, p->o_w, p->o_b, rows, d, d);
    residual_forward(a->x_mid, x, tmp, nd);
    layernorm_forward(a->ln2, a->x_mid, p->ln2_w, p->ln2_b, rows, d, c->eps);
    linear_forward(a->fc1, a->ln2, p->fc1_w, p->fc1_b, rows, d, c->intermediate);
    activation_forward(a->act, a->fc1, (size_t)rows * c->intermediate, c->act);
    linear_forward(tmp, a->act, p->fc2_w, p->fc2_b, rows, c->intermediate, d);
    residual_forward(out, a->x_mid, tmp, nd);
}

/* dx [B*T, d]: dL/d(out) on entry, dL/d(x) on return (the residual
 * connections pass it through; each branch adds its part). */
static void layer_backward(float *dx, const float *x, const layer_acts *a, const layer_params *p, layer_params *g,
                           const clip_tower_config *c, int B, int T, int causal, layer_scratch *s)
{
    int d = c->hidden, I = c->intermediate, hd = d / c->heads, rows = B * T;
    size_t nd = (size_t)rows * d, ni = (size_t)rows * I;
    float scale = 1.0f / sqrtf((float)hd);

    /* MLP branch: out = x_mid + fc2(act(fc1(ln2(x_mid)))) */
    memset(s->dfc, 0, ni * sizeof(float));
    linear_backward(s->dfc, g->fc2_w, g->fc2_b, dx, a->act, p->fc2_w, rows, I, d);
    activation_backward(s->dfc, s->dfc, a->fc1, ni, c->act);
    memset(s->dh, 0, nd * sizeof(float));
    linear_backward(s->dh, g->fc1_w, g->fc1_b, s->dfc, a->ln2, p->fc1_w, rows, d, I);
    layernorm_backward(dx, g->ln2_w, g->ln2_b, s->dh, a->x_mid, p->ln2_w, rows, d, c->eps, s->stats);

    /* attention branch: x_mid = x + out_proj(attention(q, k, v of ln1(x))) */
    memset(s->dctx, 0, nd * sizeof(float));
    linear_backward(s->dctx, g->o_w, g->o_b, dx, a->ctx, p->o_w, rows, d, d);
    memset(s->dq, 0, nd * sizeof(float));
    memset(s->dk, 0, nd * sizeof(float));
    memset(s->dv, 0, nd * sizeof(float));
    attention_backward(s->dq, s->dk, s->dv, s->dctx, a->q, a->k, a->v, a->att, B, T, c->heads, hd, causal, s->dp);
    for (size_t i = 0; i < nd; i++) s->dq[i] *= scale;
    memset(s->dh, 0, nd * sizeof(float));
    linear_backward(s->dh, g->q_w, g->q_b, s->dq, a->ln1, p->q_w, rows, d, d);
    linear_backward(s->dh, g->k_w, g->k_b, s->dk, a->ln1, p->k_w, rows, d, d);
    linear_backward(s->dh, g->v_w, g->v_b, s->dv, a->ln1, p->v_w, rows, d, d);
    layernorm_backward(dx, g->ln1_w, g->ln1_b, s->dh, x, p->ln1_w, rows, d, c->eps, s->stats);
}

/* ------------------------------------------------------------------------ */
/* The towers: CLIPVisionTransformer, CLIPTextTransformer, projections       */
/* ------------------------------------------------------------------------ */
/* One tower's activations for a batch of B sequences of T tokens. */
typedef struct {
    int B, T;
    float *embed;            /* [B*T, d]  embeddings (vision: before pre_layrnorm) */
    float *x[MAX_LAYERS + 1];/* [B*T, d]  the residual stream entering layer l, and leaving the last */
    layer_acts L[MAX_LAYERS];
    float *patches;          /* vision: [B*g*g, 3*p*p] the pixels of each patch (im2col) */
    float *patch_out;        /* vision: [B*g*g, d] */
    int *pool;               /* [B] the token pooled in each sequence */
    float *pooled_in;        /* [B, d] the pooled rows of the last x */
    float *pooled;           /* [B, d] after post_layernorm / final_layer_norm */
    float *features;         /* [B, proj] after visual_projection / text_projection */
    float *tmp;              /* [B*T, d] */
    float *work;             /* [threads, hd * T] attention's scratch */
} tower_acts;

static float *carve(float **cursor, size_t n)
{
    float *p = *cursor;
    *cursor += n;
    return p;
}

/* one allocation for everything; patch_len: 3*p*p for the vision tower, 0 for text */
static void tower_alloc(tower_acts *A, const clip_tower_config *c, int proj, int B, int T, int patch_len)
{
    size_t rows = (size_t)B * T, nd = rows * c->hidden, ni = rows * c->intermediate, att = (size_t)B * c->heads * T * T;
    size_t grid = patch_len ? (size_t)B * (T - 1) : 0;
    size_t total = nd * 2 + (c->layers + 1) * nd + c->layers * (nd * 7 + ni * 2 + att) + grid * (patch_len + c->hidden)
                   + (size_t)B * (2 * c->hidden + proj) + (size_t)thread_count() * c->hidden * T;
    float *cur = xcalloc(total, sizeof(float));
    A->B = B;
    A->T = T;
    A->embed = carve(&cur, nd);
    A->tmp = carve(&cur, nd);
    for (int l = 0; l <= c->layers; l++) A->x[l] = carve(&cur, nd);
    for (int l = 0; l < c->layers; l++) {
        layer_acts *a = &A->L[l];
        a->ln1 = carve(&cur, nd); a->q = carve(&cur, nd); a->k = carve(&cur, nd); a->v = carve(&cur, nd);
        a->ctx = carve(&cur, nd); a->x_mid = carve(&cur, nd); a->ln2 = carve(&cur, nd);
        a->fc1 = carve(&cur, ni); a->act = carve(&cur, ni); a->att = carve(&cur, att);
    }
    A->patches = carve(&cur, grid * patch_len);
    A->patch_out = carve(&cur, grid * c->hidden);
    A->pooled_in = carve(&cur, (size_t)B * c->hidden);
    A->pooled = carve(&cur, (size_t)B * c->hidden);
    A->features = carve(&cur, (size_t)B * proj);
    A->work = carve(&cur, (size_t)thread_count() * c->hidden * T);
    A->pool = xcalloc((size_t)B, sizeof(int));
}

static void tower_free(tower_acts *A)
{
    free(A->embed);
    free(A->pool);
}

/* the layers in turn: x[0] -> x[L] */
static void encoder_forward(tower_acts *A, const layer_params *layers, const clip_tower_config *c, int causal)
{
    for (int l = 0; l < c->layers; l++)
        layer_forward(A->x[l + 1], A->x[l], &A->L[l], &layers[l], c, A->B, A->T, causal, A->tmp, A->work);
}

static void encoder_backward(float *dx, const tower_acts *A, const layer_params *layers, layer_params *grads,
                             const clip_tower_config *c, int causal, layer_scratch *s)
{
    for (int l = c->layers - 1; l >= 0; l--)
        layer_backward(dx, A->x[l], &A->L[l], &layers[l], &grads[l], c, A->B, A->T, causal, s);
}

/* Pooling and projection, shared by both towers:
 *   pooled_in[b] = x_L[b, pool[b]];  pooled = layer_norm(pooled_in);  features = pooled @ proj^T */
static void head_forward(tower_acts *A, const float *ln_w, const float *ln_b, const float *proj,
                         const clip_tower_config *c, int P)
{
    int d = c->hidden;
    for (int b = 0; b < A->B; b++)
        memcpy(A->pooled_in + (size_t)b * d, A->x[c->layers] + ((size_t)b * A->T + A->pool[b]) * d, d * sizeof(float));
    layernorm_forward(A->pooled, A->pooled_in, ln_w, ln_b, A->B, d, c->eps);
    linear_forward(A->features, A->pooled, proj, NULL, A->B, d, P);
}

/* dfeatures [B, P] -> gradients of the projection and the layer norm, and
 * dx [B*T, d] (zeroed here): nonzero only at the pooled rows */
static void head_backward(float *dx, const float *dfeatures, const tower_acts *A, const float *ln_w, const float *proj,
                          float *g_ln_w, float *g_ln_b, float *g_proj, const clip_tower_config *c, int P, layer_scratch *s)
{
    int d = c->hidden;
    float *dpooled = s->dq, *dpin = s->dk;   /* [B, d] each, free at this point */
    memset(dpooled, 0, (size_t)A->B * d * sizeof(float));
    memset(dpin, 0, (size_t)A->B * d * sizeof(float));
    linear_backward(dpooled, g_proj, NULL, dfeatures, A->pooled, proj, A->B, d, P);
    layernorm_backward(dpin, g_ln_w, g_ln_b, dpooled, A->pooled_in, ln_w, A->B, d, c->eps, s->stats);
    memset(dx, 0, (size_t)A->B * A->T * d * sizeof(float));
    for (int b = 0; b < A->B; b++)
        memcpy(dx + ((size_t)b * A->T + A->pool[b]) * d, dpin + (size_t)b * d, d * sizeof(float));
}

/* CLIPVisionTransformer + visual_projection on pixels [B, 3, S, S]:
 *   patches: conv p x p, stride p, no bias = im2col [B*g*g, 3*p*p] @ patch_embedding^T
 *   embed[b] = [class_embedding; patches of b] + position_embedding   [B*(1+g*g), d]
 *   x0 = pre_layrnorm(embed) -> encoder -> post_layernorm(x_L[b, 0]) -> features [B, P] */
static void vision_forward(const model *m, tower_acts *A, const float *pixels)
{
    const clip_config *c = &m->c;
    const model_params *W = &m->W;
    int d = c->vision.hidden, p = c->patch, S = c->image_size, g = S / p, pp = 3 * p * p, B = A->B, T = A->T;
    for (int b = 0; b < B; b++)
        for (int gy = 0; gy < g; gy++)
            for (int gx = 0; gx < g; gx++) {
                float *row = A->patches + ((size_t)b * g * g + gy * g + gx) * pp;
                for (int ch = 0; ch < 3; ch++)
                    for (int ky = 0; ky < p; ky++)
                        memcpy(row + (ch * p + ky) * p, pixels + (((size_t)b * 3 + ch) * S + gy * p + ky) * S + gx * p,
                               p * sizeof(float));
            }
    linear_forward(A->patch_out, A->patches, W->patch_embedding, NULL, B * g * g, pp, d);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *src = t ? A->patch_out + ((size_t)b * g * g + t - 1) * d : W->class_embedding;
            residual_forward(A->embed + ((size_t)b * T + t) * d, src, W->vision_position + (size_t)t * d, d);
        }
    layernorm_forward(A->x[0], A->embed, W->pre_ln_w, W->pre_ln_b, B * T, d, c->vision.eps);
    encoder_forward(A, W->vision, &c->vision, 0);
    for (int b = 0; b < B; b++) A->pool[b] = 0;   /* the class token */
    head_forward(A, W->post_ln_w, W->post_ln_b, W->visual_projection, &c->vision, c->projection_dim);
}

static void vision_backward(model *m, const tower_acts *A, const float *dfeatures, float *dx, layer_scratch *s)
{
    const clip_config *c = &m->c;
    const model_params *W = &m->W;
    model_params *G = &m->G;
    int d = c->vision.hidden, p = c->patch, g = c->image_size / p, B = A->B, T = A->T;
    float *dembed = s->dctx, *dpatch = s->dh;
    head_backward(dx, dfeatures, A, W->post_ln_w, W->visual_projection, G->post_ln_w, G->post_ln_b,
                  G->visual_projection, &c->vision, c->projection_dim, s);
    encoder_backward(dx, A, W->vision, G->vision, &c->vision, 0, s);
    memset(dembed, 0, (size_t)B * T * d * sizeof(float));
    layernorm_backward(dembed, G->pre_ln_w, G->pre_ln_b, dx, A->embed, W->pre_ln_w, B * T, d, c->vision.eps, s->stats);
    /* class and position embeddings: sums over the batch; patches: gathered rows */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *src = dembed + ((size_t)b * T + t) * d;
            float *dst = t ? dpatch + ((size_t)b * g * g + t - 1) * d : G->class_embedding;
            if (t) memcpy(dst, src, d * sizeof(float));
            else for (int i = 0; i < d; i++) dst[i] += src[i];
            for (int i = 0; i < d; i++) G->vision_position[(size_t)t * d + i] += src[i];
        }
    linear_backward(NULL, G->patch_embedding, NULL, dpatch, A->patches, W->patch_embedding, B * g * g, 3 * p * p, d);
}

/* CLIPTextTransformer's pooling: with eos_token_id == 2 (configs older than
 * transformers 4.31) the position of the largest id (CLIP's eos has the
 * largest id), else the first position holding eos_token_id; the first
 * maximum or the last position when there is none, as clip.c does. */
static int pool_position(const int32_t *ids, int n, int eos_token_id)
{
    int at = 0;
    if (eos_token_id == 2) {
        for (int i = 1; i < n; i++) if (ids[i] > ids[at]) at = i;
        return at;
    }
    for (int i = 0; i < n; i++) if (ids[i] == eos_token_id) return i;
    return n - 1;
}

/* CLIPTextTransformer + text_projection on ids [B, T] (shorter texts padded
 * at the end: with the causal mask no earlier token sees them):
 *   embed = token_embedding[ids] + position_embedding[0..T)   [B*T, d]
 *   causal encoder -> final_layer_norm(x_L[b, pool[b]]) -> features [B, P]
 * (final_layer_norm is applied to the pooled rows only: the others are
 * never read.) */
static void text_forward(const model *m, tower_acts *A, const int32_t *ids)
{
    const clip_config *c = &m->c;
    const model_params *W = &m->W;
    int d = c->text.hidden, B = A->B, T = A->T;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++)
            residual_forward(A->x[0] + ((size_t)b * T + t) * d, W->token_embedding + (size_t)ids[b * T + t] * d,
                             W->text_position + (size_t)t * d, d);
        A->pool[b] = pool_position(ids + (size_t)b * T, T, c->eos_token_id);
    }
    encoder_forward(A, W->text, &c->text, 1);
    head_forward(A, W->final_ln_w, W->final_ln_b, W->text_projection, &c->text, c->projection_dim);
}

static void text_backward(model *m, const tower_acts *A, const int32_t *ids, const float *dfeatures, float *dx,
                          layer_scratch *s)
{
    const clip_config *c = &m->c;
    model_params *G = &m->G;
    int d = c->text.hidden, B = A->B, T = A->T;
    head_backward(dx, dfeatures, A, m->W.final_ln_w, m->W.text_projection, G->final_ln_w, G->final_ln_b,
                  G->text_projection, &c->text, c->projection_dim, s);
    encoder_backward(dx, A, m->W.text, G->text, &c->text, 1, s);
    for (int b = 0; b < B; b++)   /* in order: rows of one token's embedding add up the same way every run */
        for (int t = 0; t < T; t++) {
            const float *src = dx + ((size_t)b * T + t) * d;
            float *tok = G->token_embedding + (size_t)ids[b * T + t] * d, *pos = G->text_position + (size_t)t * d;
            for (int i = 0; i < d; i++) { tok[i] += src[i]; pos[i] += src[i]; }
        }
}

/* ------------------------------------------------------------------------ */
/* The loss: CLIPModel's symmetric cross-entropy                            */
/* ------------------------------------------------------------------------ */
/* For N pairs with image features I [N, P] and text features T [N, P]:
 *   i_n = I_n / |I_n|,  t_n = T_n / |T_n|,  s = exp(logit_scale)
 *   logits[a][b] = s * t_a . i_b                     (logits_per_text; its transpose is logits_per_image)
 *   loss = (CE over each row, target a) / 2 + (CE over each column, target b) / 2, means over N
 * Kept for the backward: the unit vectors, the logits and both softmaxes. */
typedef struct {
    int N, P;
    float *img, *txt;          /* [N, P] unit vectors */
    double *img_norm, *txt_norm;/* [N] */
    double *logits;            /* [N, N] */
    double *p_row, *p_col;     /* [N, N] softmax along rows (captions pick pictures), along columns */
    double loss, scale;
    int correct_i2t, correct_t2i;   /* argmax on the diagonal, for the log */
} contrastive;

static void contrastive_alloc(contrastive *L, int N, int P)
{
    L->N = N; L->P = P;
    L->img = xcalloc((size_t)N * P, sizeof(float));
    L->txt = xcalloc((size_t)N * P, sizeof(float));
    L->img_norm = xcalloc((size_t)N, sizeof(double));
    L->txt_norm = xcalloc((size_t)N, sizeof(double));
    L->logits = xcalloc((size_t)N * N, sizeof(double));
    L->p_row = xcalloc((size_t)N * N, sizeof(double));
    L->p_col = xcalloc((size_t)N * N, sizeof(double));
}

static void contrastive_free(contrastive *L)
{
    free(L->img); free(L->txt); free(L->img_norm); free(L->txt_norm);
    free(L->logits); free(L->p_row); free(L->p_col);
}

/* softmax of n values x[0], x[stride], ... into p (same positions); returns log of the sum of exp */
static double softmax_strided(double *p, const double *x, int n, int stride)
{
    double mx = x[0], sum = 0.0;
    for (int i = 1; i < n; i++) mx = x[(size_t)i * stride] > mx ? x[(size_t)i * stride] : mx;
    for (int i = 0; i < n; i++) sum += (p[(size_t)i * stride] = exp(x[(size_t)i * stride] - mx));
    for (int i = 0; i < n; i++) p[(size_t)i * stride] /= sum;
    return mx + log(sum);
}

static void unit_rows(float *out, double *norms, const float *x, int N, int P)
{
    for (int n = 0; n < N; n++) {
        double ss = 0.0;
        for (int j = 0; j < P; j++) ss += (double)x[(size_t)n * P + j] * x[(size_t)n * P + j];
        norms[n] = sqrt(ss) > 1e-12 ? sqrt(ss) : 1e-12;
        for (int j = 0; j < P; j++) out[(size_t)n * P + j] = (float)(x[(size_t)n * P + j] / norms[n]);
    }
}

static void contrastive_forward(contrastive *L, const float *img_features, const float *txt_features, float logit_scale)
{
    int N = L->N, P = L->P;
    double loss = 0.0;
    unit_rows(L->img, L->img_norm, img_features, N, P);
    unit_rows(L->txt, L->txt_norm, txt_features, N, P);
    L->scale = exp((double)logit_scale);
    for (int a = 0; a < N; a++)
        for (int b = 0; b < N; b++) {
            double dot = 0.0;
            for (int j = 0; j < P; j++) dot += (double)L->txt[(size_t)a * P + j] * L->img[(size_t)b * P + j];
            L->logits[(size_t)a * N + b] = L->scale * dot;
        }
    L->correct_i2t = L->correct_t2i = 0;
    for (int n = 0; n < N; n++) {
        int best_row = 0, best_col = 0;
        loss += softmax_strided(L->p_row + (size_t)n * N, L->logits + (size_t)n * N, N, 1) - L->logits[(size_t)n * N + n];
        loss += softmax_strided(L->p_col + n, L->logits + n, N, N) - L->logits[(size_t)n * N + n];
        for (int k = 1; k < N; k++) {
            if (L->logits[(size_t)n * N + k] > L->logits[(size_t)n * N + best_row]) best_row = k;
            if (L->logits[(size_t)k * N + n] > L->logits[(size_t)best_col * N + n]) best_col = k;
        }
        L->correct_t2i += best_row == n;
        L->correct_i2t += best_col == n;
    }
    L->loss = loss / (2.0 * N);
}

/* dlogits[a][b] = (p_row[a][b] - [a == b]) / 2N + (p_col[a][b] - [a == b]) / 2N, then
 *   dt_a = s * sum_b dlogits[a][b] i_b,  di_b = s * sum_a dlogits[a][b] t_a
 *   dT_n = (dt_n - t_n (t_n . dt_n)) / |T_n|   (the normalization's backward; likewise dI)
 *   dlogit_scale = sum of dlogits * logits      (d logits / d logit_scale = logits)
 * dimg, dtxt [N, P] are overwritten. */
static void contrastive_backward(float *dimg, float *dtxt, float *dlogit_scale, const contrastive *L)
{
    int N = L->N, P = L->P;
    double *dl = xcalloc((size_t)N * N, sizeof(double)), ds = 0.0;
    for (int a = 0; a < N; a++)
        for (int b = 0; b < N; b++) {
            size_t ab = (size_t)a * N + b;
            dl[ab] = (L->p_row[ab] + L->p_col[ab] - 2.0 * (a == b)) / (2.0 * N);
            ds += dl[ab] * L->logits[ab];
        }
    *dlogit_scale += (float)ds;
    for (int side = 0; side < 2; side++) {
        const float *mine = side ? L->img : L->txt, *other = side ? L->txt : L->img;
        const double *norms = side ? L->img_norm : L->txt_norm;
        float *out = side ? dimg : dtxt;
        for (int n = 0; n < N; n++) {
            double du[1024], dot = 0.0;   /* P <= 1024 (checked when the config is made) */
            for (int j = 0; j < P; j++) du[j] = 0.0;
            for (int k = 0; k < N; k++) {
                double w = L->scale * (side ? dl[(size_t)k * N + n] : dl[(size_t)n * N + k]);
                for (int j = 0; j < P; j++) du[j] += w * other[(size_t)k * P + j];
            }
            for (int j = 0; j < P; j++) dot += du[j] * mine[(size_t)n * P + j];
            for (int j = 0; j < P; j++) out[(size_t)n * P + j] = (float)((du[j] - mine[(size_t)n * P + j] * dot) / norms[n]);
        }
    }
    free(dl);
}

/* ------------------------------------------------------------------------ */
/* AdamW (torch.optim.AdamW), with OpenAI CLIP's clamp of logit_scale        */
/* ------------------------------------------------------------------------ */
typedef struct {
    float lr, beta1, beta2, eps, weight_decay, clip_norm;
} adamw_config;

/* the global gradient norm, clipped to clip_norm (0: no clipping); returns the norm before */
static double clip_gradients(model *m, float clip_norm)
{
    double ss = 0.0, norm;
    for (size_t i = 0; i < m->n_params; i++) ss += (double)m->g[i] * m->g[i];
    norm = sqrt(ss);
    if (clip_norm > 0 && norm > clip_norm) {
        float f = (float)(clip_norm / norm);
        for (size_t i = 0; i < m->n_params; i++) m->g[i] *= f;
    }
    return norm;
}

/* step t (from 1): w -= lr * wd * w (matrices and embeddings only), then
 *   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *   w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * and logit_scale stays within [0, ln 100], as in OpenAI's training. */
static void adamw_update(model *m, const adamw_config *o, float lr, int t)
{
    double c1 = 1.0 - pow(o->beta1, t), c2 = 1.0 - pow(o->beta2, t);
    for (int k = 0; k < m->n_tensors; k++) {
        const tensor_info *ti = &m->tensors[k];
        float decay = ti->decay ? 1.0f - lr * o->weight_decay : 1.0f;
        float *w = m->w + ti->offset, *g = m->g + ti->offset, *mm = m->m + ti->offset, *vv = m->v + ti->offset;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (ti->count > 16384)
#endif
        for (size_t i = 0; i < ti->count; i++) {
            mm[i] = o->beta1 * mm[i] + (1.0f - o->beta1) * g[i];
            vv[i] = o->beta2 * vv[i] + (1.0f - o->beta2) * g[i] * g[i];
            w[i] = w[i] * decay - (float)(lr * (mm[i] / c1) / (sqrt(vv[i] / c2) + o->eps));
        }
    }
    if (m->W.logit_scale[0] > 4.6051702f) m->W.logit_scale[0] = 4.6051702f;
    if (m->W.logit_scale[0] < 0.0f) m->W.logit_scale[0] = 0.0f;
}

/* ------------------------------------------------------------------------ */
/* The vocabulary: a byte-level BPE learned from the captions                */
/* ------------------------------------------------------------------------ */
/* CLIP's format, so that tokenizer.c and CLIPTokenizer read it unchanged:
 * ids 0..255 are the 256 bytes as GPT-2's printable symbols (bytes_to_unicode,
 * in its order), 256..511 the same with "</w>" (a word's last symbol), then
 * one token per merge in rank order, then <|startoftext|> and <|endoftext|>
 * (the largest id, which argmax pooling relies on). Any text still tokenizes:
 * a word no merge covers falls back to its bytes.
 *
 * Learning: every word of the corpus (captions split at spaces: the grammar
 * has no digits or punctuation, so this is what CLIP's pre-tokenizer does
 * with them) starts as its bytes; the most frequent adjacent pair, counted
 * over all words with their frequencies, becomes one symbol everywhere; ties
 * go to the pair with the smaller ids. Until no pair occurs twice. */
#define BPE_MAX_VOCAB 2048
#define BPE_MAX_WORDS 4096
#define BPE_MAX_WORD 48

typedef struct {
    int n_vocab, n_merges, bos, eos;
    char *tokens[BPE_MAX_VOCAB];   /* UTF-8, as in vocab.json */
    int merges[BPE_MAX_VOCAB][3];  /* left id, right id, merged id; rank order */
} vocabulary;

typedef struct {
    char text[BPE_MAX_WORD];
    int sym[BPE_MAX_WORD], len;
    long count;
} bpe_word;

/* GPT-2's bytes_to_unicode: the printable bytes keep their code point, the
 * others get 256, 257, ... in byte order; order[i] is the byte of vocab id i */
static void byte_symbols(int order[256], int code[256])
{
    int n = 0, extra = 0, used[256] = {0};
    for (int b = 0; b < 256; b++)
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) { order[n++] = b; code[b] = b; used[b] = 1; }
    for (int b = 0; b < 256; b++)
        if (!used[b]) { order[n++] = b; code[b] = 256 + extra++; }
}

static char *utf8_symbol(int cp, const char *suffix)
{
    char *s = xcalloc(8 + strlen(suffix), 1);
    if (cp < 0x80) s[0] = (char)cp;
    else { s[0] = (char)(0xC0 | (cp >> 6)); s[1] = (char)(0x80 | (cp & 0x3F)); }
    strcat(s, suffix);
    return s;
}

static int vocab_find(const vocabulary *V, const char *s)
{
    for (int i = 0; i < V->n_vocab; i++) if (!strcmp(V->tokens[i], s)) return i;
    return -1;
}

/* count the words of `n` captions of the training stream */
static int corpus_words(bpe_word *words, uint64_t run, int n, const int byte_id[256])
{
    int nw = 0;
    for (int k = 0; k < n; k++) {
        shapes_scene sc;
        char *save = NULL, *w;
        shapes_describe(shapes_seed(SHAPES_TRAIN, run, (uint64_t)k), &sc);
        for (w = strtok_r(sc.caption, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
            int i = 0;
            while (i < nw && strcmp(words[i].text, w)) i++;
            if (i == nw) {
                if (nw == BPE_MAX_WORDS || strlen(w) >= BPE_MAX_WORD) continue;
                snprintf(words[nw].text, BPE_MAX_WORD, "%s", w);
                words[nw].len = (int)strlen(w);
                for (int j = 0; j < words[nw].len; j++)
                    words[nw].sym[j] = byte_id[(uint8_t)w[j]] + (j == words[nw].len - 1 ? 256 : 0);
                nw++;
            }
            words[i].count++;
        }
    }
    return nw;
}

/* replace every (l, r) in the word by id, left to right */
static void apply_merge(bpe_word *w, int l, int r, int id)
{
    int o = 0;
    for (int i = 0; i < w->len; i++) {
        if (i + 1 < w->len && w->sym[i] == l && w->sym[i + 1] == r) { w->sym[o++] = id; i++; }
        else w->sym[o++] = w->sym[i];
    }
    w->len = o;
}

static void learn_vocabulary(vocabulary *V, uint64_t run, int captions)
{
    int order[256], code[256], byte_id[256];
    bpe_word *words = xcalloc(BPE_MAX_WORDS, sizeof *words);
    long *pairs = xcalloc((size_t)BPE_MAX_VOCAB * BPE_MAX_VOCAB, sizeof(long));
    int nw;

    byte_symbols(order, code);
    memset(V, 0, sizeof *V);
    for (int i = 0; i < 256; i++) { V->tokens[i] = utf8_symbol(code[order[i]], ""); byte_id[order[i]] = i; }
    for (int i = 0; i < 256; i++) V->tokens[256 + i] = utf8_symbol(code[order[i]], "</w>");
    V->n_vocab = 512;
    nw = corpus_words(words, run, captions, byte_id);

    while (V->n_vocab < BPE_MAX_VOCAB - 2) {
        long best = 1;
        int bl = -1, br = -1, id;
        char *s;
        for (int k = 0; k < nw; k++)
            for (int i = 0; i + 1 < words[k].len; i++)
                pairs[(size_t)words[k].sym[i] * BPE_MAX_VOCAB + words[k].sym[i + 1]] += words[k].count;
        for (int k = 0; k < nw; k++)   /* read every counted pair, then clear it */
            for (int i = 0; i + 1 < words[k].len; i++) {
                int l = words[k].sym[i], r = words[k].sym[i + 1];
                long c = pairs[(size_t)l * BPE_MAX_VOCAB + r];
                if (c > best || (c == best && c > 1 && (l < bl || (l == bl && r < br)))) { best = c; bl = l; br = r; }
            }
        for (int k = 0; k < nw; k++)
            for (int i = 0; i + 1 < words[k].len; i++) pairs[(size_t)words[k].sym[i] * BPE_MAX_VOCAB + words[k].sym[i + 1]] = 0;
        if (bl < 0) break;   /* no pair occurs twice */
        s = xcalloc(strlen(V->tokens[bl]) + strlen(V->tokens[br]) + 1, 1);
        strcat(strcpy(s, V->tokens[bl]), V->tokens[br]);
        if ((id = vocab_find(V, s)) < 0) { id = V->n_vocab++; V->tokens[id] = s; }
        else free(s);
        V->merges[V->n_merges][0] = bl; V->merges[V->n_merges][1] = br; V->merges[V->n_merges][2] = id;
        V->n_merges++;
        for (int k = 0; k < nw; k++) apply_merge(&words[k], bl, br, id);
    }
    V->bos = V->n_vocab;
    V->tokens[V->n_vocab++] = utf8_symbol(0, "<|startoftext|>");
    V->eos = V->n_vocab;
    V->tokens[V->n_vocab++] = utf8_symbol(0, "<|endoftext|>");
    free(words);
    free(pairs);
}

static void vocabulary_free(vocabulary *V)
{
    for (int i = 0; i < V->n_vocab; i++) free(V->tokens[i]);
}

static void put32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24); }

/* the model file's tokenizer section (README, "The model file"), as convert.py
 * packs it, so that tokenizer.c tokenizes the captions exactly as `clip` will;
 * *section must outlive the tokenizer */
static clip_tokenizer *vocabulary_tokenizer(const vocabulary *V, int context_length, uint8_t **section)
{
    size_t blob = 0, size, off;
    uint8_t *sec, *p;
    clip_tokenizer *tok;
    char err[CLIP_ERR_SIZE];
    for (int i = 0; i < V->n_vocab; i++) blob += strlen(V->tokens[i]);
    size = 36 + 4 * (size_t)(V->n_vocab + 1) + 12 * (size_t)V->n_merges + 8 + blob;
    sec = p = xcalloc(size, 1);
    put32(p, V->n_vocab); put32(p + 4, V->n_merges); put32(p + 8, 2); put32(p + 12, (uint32_t)blob);
    put32(p + 16, V->bos); put32(p + 20, V->eos); put32(p + 24, V->eos); put32(p + 28, V->eos);
    put32(p + 32, context_length);
    p += 36;
    for (int i = 0, o = 0; i <= V->n_vocab; i++) { put32(p, o); p += 4; if (i < V->n_vocab) o += (int)strlen(V->tokens[i]); }
    for (int k = 0; k < V->n_merges; k++)
        for (int j = 0; j < 3; j++) { put32(p, V->merges[k][j]); p += 4; }
    put32(p, V->bos); put32(p + 4, V->eos); p += 8;
    for (int i = 0; i < V->n_vocab; i++) { off = strlen(V->tokens[i]); memcpy(p, V->tokens[i], off); p += off; }
    if (clip_tokenizer_load(&tok, sec, size, err)) die(1, "the learned vocabulary does not load: %s", err);
    *section = sec;
    return tok;
}

/* ------------------------------------------------------------------------ */
/* Data: pictures -> pixel values, captions -> token ids                     */
/* ------------------------------------------------------------------------ */
/* Pictures reach the model exactly as `clip` would give them to it: the
 * library's CLIPImageProcessor (shortest side to S with Pillow's bicubic,
 * center crop S x S, rescale, normalize with CLIP's mean and std), and the
 * captions go through the library's tokenizer with the learned vocabulary. */
static clip_preprocess_config preprocess_config(int size)
{
    clip_preprocess_config p = {size, size, size, 1, 1, 1, 1, 1.0f / 255.0f,
                                {0.48145466f, 0.4578275f, 0.40821073f}, {0.26862954f, 0.26130258f, 0.27577711f}};
    return p;
}

typedef struct {
    int B, T, cap;             /* pictures, tokens per caption (the longest), capacity */
    float *pixels;             /* [cap, 3, S, S] */
    int32_t *ids;              /* [B, T]: bos ... eos, then eos as padding */
    int32_t *raw;              /* [cap, context] */
    int *lens;                 /* [cap] */
    shapes_scene *scenes;      /* [cap] */
} batch;

static void batch_alloc(batch *bt, int cap, int S, int context)
{
    bt->cap = cap;
    bt->pixels = xcalloc((size_t)cap * 3 * S * S, sizeof(float));
    bt->ids = xcalloc((size_t)cap * context, sizeof(int32_t));
    bt->raw = xcalloc((size_t)cap * context, sizeof(int32_t));
    bt->lens = xcalloc((size_t)cap, sizeof(int));
    bt->scenes = xcalloc((size_t)cap, sizeof(shapes_scene));
}

static void batch_free(batch *bt)
{
    free(bt->pixels); free(bt->ids); free(bt->raw); free(bt->lens); free(bt->scenes);
}

/* Hard negatives. A batch of pictures drawn at random is told apart by colour
 * alone most of the time (1 in 6 of its other captions shares the colour),
 * and a model that has learned colour sits on that plateau: neither tower
 * gets a reason to see shape first. So the training stream comes in groups of
 * COLOUR_GROUP pictures of one colour: within a group only the shape (and count,
 * size, place) tells the captions apart. index[B] gets the picture numbers:
 * from *cursor on, each group takes the next pictures of its first picture's
 * colour (the others are skipped), so the stream stays a function of the seed. */
#ifndef COLOUR_GROUP
#define COLOUR_GROUP 16
#endif

static void hard_negative_indices(uint64_t *index, int B, uint64_t run, uint64_t *cursor)
{
    for (int g = 0; g < B; g += COLOUR_GROUP) {
        int colour = -1;
        for (int i = g; i < g + COLOUR_GROUP && i < B; (*cursor)++) {
            shapes_scene sc;
            shapes_describe(shapes_seed(SHAPES_TRAIN, run, *cursor), &sc);
            if (colour < 0) colour = sc.colour;
            if (sc.colour == colour) index[i++] = *cursor;
        }
    }
}

/* pictures index[0 .. B - 1] of a split, drawn and preprocessed in parallel */
static void make_batch(batch *bt, const clip_config *c, const clip_tokenizer *tok, int split, uint64_t run,
                       const uint64_t *index, int B)
{
    clip_preprocess_config pp = preprocess_config(c->image_size);
    int S = c->image_size, ctx = clip_tokenizer_context_length(tok), failed = 0;
    char why[CLIP_ERR_SIZE] = "";
    bt->B = B;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
    for (int i = 0; i < B; i++) {
        clip_image img;
        char err[CLIP_ERR_SIZE];
        shapes_scene *sc = &bt->scenes[i];
        int rc = shapes_draw(shapes_seed(split, run, index[i]), sc, &img, err);
        if (!rc) {
            rc = clip_image_preprocess(&img, &pp, CLIP_RESIZE_PIL, bt->pixels + (size_t)i * 3 * S * S, err);
            clip_image_free(&img);
        }
        if (!rc && (bt->lens[i] = clip_tokenize(tok, sc->caption, strlen(sc->caption), bt->raw + (size_t)i * ctx, ctx, 0, err)) < 0)
            rc = CLIP_EINPUT;
        if (rc) {
#ifdef _OPENMP
#pragma omp critical
#endif
            { failed = 1; snprintf(why, sizeof why, "%s", err); }
        }
    }
    if (failed) die(1, "cannot make a training picture: %s", why);
    bt->T = 0;
    for (int i = 0; i < B; i++) bt->T = bt->lens[i] > bt->T ? bt->lens[i] : bt->T;
    for (int i = 0; i < B; i++)
        for (int t = 0; t < bt->T; t++)
            bt->ids[(size_t)i * bt->T + t] = t < bt->lens[i] ? bt->raw[(size_t)i * ctx + t] : bt->raw[(size_t)i * ctx + bt->lens[i] - 1];
}

/* The forward alone, in chunks of the towers' capacity: features of `count`
 * pictures [count, 3, S, S] or of `count` texts ids [count, T]. */
static void encode_images(const model *m, tower_acts *A, const float *pixels, int count, float *features)
{
    int cap = A->B, S = m->c.image_size, P = m->c.projection_dim;
    for (int i = 0; i < count; i += cap) {
        A->B = count - i < cap ? count - i : cap;
        vision_forward(m, A, pixels + (size_t)i * 3 * S * S);
        memcpy(features + (size_t)i * P, A->features, (size_t)A->B * P * sizeof(float));
        A->B = cap;
    }
}

static void encode_texts(const model *m, tower_acts *A, const int32_t *ids, int count, int T, float *features)
{
    int cap = A->B, capT = A->T, P = m->c.projection_dim;
    for (int i = 0; i < count; i += cap) {
        A->B = count - i < cap ? count - i : cap;
        A->T = T;
        text_forward(m, A, ids + (size_t)i * T);
        memcpy(features + (size_t)i * P, A->features, (size_t)A->B * P * sizeof(float));
        A->B = cap;
        A->T = capT;
    }
}

/* Zero-shot classification as `clip classify` does it: the prompt "a photo
 * of a {colour} {shape}" for each of the 24 classes, the best cosine wins.
 * Returns the fraction of pictures whose colour and shape are both right. */
static double zero_shot_accuracy(const model *m, tower_acts *vis, tower_acts *txt, const clip_tokenizer *tok,
                                 const batch *pics, int count)
{
    int P = m->c.projection_dim, classes = COLOURS_N * SHAPES_N, ctx = clip_tokenizer_context_length(tok), T = 0;
    int32_t *ids = xcalloc((size_t)classes * ctx, sizeof(int32_t));
    int *lens = xcalloc((size_t)classes, sizeof(int)), correct = 0;
    float *tf = xcalloc((size_t)classes * P, sizeof(float)), *imf = xcalloc((size_t)count * P, sizeof(float));
    int32_t *packed;
    for (int k = 0; k < classes; k++) {
        char prompt[96];
        snprintf(prompt, sizeof prompt, "a photo of a %s %s", shapes_colour_names[k / SHAPES_N], shapes_shape_names[k % SHAPES_N]);
        lens[k] = clip_tokenize(tok, prompt, strlen(prompt), ids + (size_t)k * ctx, ctx, 0, NULL);
        T = lens[k] > T ? lens[k] : T;
    }
    packed = xcalloc((size_t)classes * T, sizeof(int32_t));
    for (int k = 0; k < classes; k++)
        for (int t = 0; t < T; t++) packed[(size_t)k * T + t] = ids[(size_t)k * ctx + (t < lens[k] ? t : lens[k] - 1)];
    encode_texts(m, txt, packed, classes, T, tf);
    encode_images(m, vis, pics->pixels, count, imf);
    for (int i = 0; i < count; i++) {
        int best = 0;
        double best_cos = -2.0;
        for (int k = 0; k < classes; k++) {
            double dot = 0.0, nt = 0.0, ni = 0.0;
            for (int j = 0; j < P; j++) {
                dot += (double)tf[(size_t)k * P + j] * imf[(size_t)i * P + j];
                nt += (double)tf[(size_t)k * P + j] * tf[(size_t)k * P + j];
                ni += (double)imf[(size_t)i * P + j] * imf[(size_t)i * P + j];
            }
            if (dot / sqrt(nt * ni) > best_cos) { best_cos = dot / sqrt(nt * ni); best = k; }
        }
        correct += best == pics->scenes[i].colour * SHAPES_N + pics->scenes[i].shape;
    }
    free(ids); free(lens); free(tf); free(imf); free(packed);
    return (double)correct / count;
}

/* ------------------------------------------------------------------------ */
/* Output: files appear whole (written to a temporary name, then renamed)    */
/* ------------------------------------------------------------------------ */
typedef struct {
    FILE *f;
    char path[4096], tmp[4200];
} out_file;

static void out_open(out_file *o, const char *dir, const char *name)
{
    if (dir) snprintf(o->path, sizeof o->path, "%s/%s", dir, name);
    else snprintf(o->path, sizeof o->path, "%s", name);
    snprintf(o->tmp, sizeof o->tmp, "%s.tmp.%ld", o->path, (long)getpid());
    if (!(o->f = fopen(o->tmp, "wb"))) die(1, "%s: %s", o->path, strerror(errno));
}

static void out_close(out_file *o)
{
    int bad = ferror(o->f);
    if (fclose(o->f) != 0 || bad) { remove(o->tmp); die(1, "%s: write error", o->path); }
    if (rename(o->tmp, o->path) != 0) { remove(o->tmp); die(1, "%s: %s", o->path, strerror(errno)); }
}

/* mkdir -p */
static void make_dir(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(path, 0777) != 0 && errno != EEXIST) die(1, "%s: %s", path, strerror(errno));
            *p = '/';
        }
    if (mkdir(path, 0777) != 0 && errno != EEXIST) die(1, "%s: %s", dir, strerror(errno));
}

/* the shortest decimal that reads back as the same float (1e-05, not 9.99999975e-06) */
static const char *float_text(float v, char *buf)
{
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, 32, "%.*g", p, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return buf;
}

/* one tensor of a safetensors file */
typedef struct {
    const char *name, *dtype;   /* "F32", "F64", "I64" */
    int ndim, shape[4];
    const void *data;
    size_t bytes;
} st_tensor;

/* safetensors: u64 header length, the JSON header (padded with spaces to a
 * multiple of 8), then the tensors' bytes back to back, in that order */
static void write_safetensors(const char *dir, const char *name, const st_tensor *t, int n)
{
    size_t cap = 256 + (size_t)n * 256, len = 0, off = 0;
    char *h = xcalloc(cap, 1);
    uint8_t n8[8];
    out_file o;
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        len += (size_t)snprintf(h + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name, t[i].dtype);
        for (int k = 0; k < t[i].ndim; k++) len += (size_t)snprintf(h + len, cap - len, k ? ",%d" : "%d", t[i].shape[k]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", off, off + t[i].bytes);
        off += t[i].bytes;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8) h[len++] = ' ';
    for (int k = 0; k < 8; k++) n8[k] = (uint8_t)((uint64_t)len >> (8 * k));
    out_open(&o, dir, name);
    fwrite(n8, 1, 8, o.f);
    fwrite(h, 1, len, o.f);
    for (int i = 0; i < n; i++) fwrite(t[i].data, 1, t[i].bytes, o.f);
    out_close(&o);
    free(h);
}

/* every parameter tensor of the model, out of `base` (its weights or gradients) */
static void write_params(const model *m, const float *base, const char *dir, const char *name)
{
    st_tensor *t = xcalloc((size_t)m->n_tensors, sizeof *t);
    for (int i = 0; i < m->n_tensors; i++) {
        const tensor_info *ti = &m->tensors[i];
        t[i] = (st_tensor){ti->name, "F32", ti->ndim, {ti->shape[0], ti->shape[1], ti->shape[2], ti->shape[3]},
                           base + ti->offset, ti->count * sizeof(float)};
    }
    write_safetensors(dir, name, t, m->n_tensors);
    free(t);
}

static void write_tower_config(FILE *f, const clip_tower_config *t, int P)
{
    char e[32];
    fprintf(f, "    \"hidden_act\": \"%s\",\n    \"hidden_size\": %d,\n    \"intermediate_size\": %d,\n"
               "    \"layer_norm_eps\": %s,\n    \"num_attention_heads\": %d,\n    \"num_hidden_layers\": %d,\n"
               "    \"projection_dim\": %d,\n",
            t->act == CLIP_ACT_GELU ? "gelu" : "quick_gelu", t->hidden, t->intermediate, float_text(t->eps, e),
            t->heads, t->layers, P);
}

/* config.json and preprocessor_config.json, as CLIPModel and CLIPImageProcessor read them */
static void write_configs(const model *m, const char *dir, int bos, int eos)
{
    const clip_config *c = &m->c;
    const clip_preprocess_config *p = &c->preprocess;
    out_file o;
    char a[32], b[32], d[32];
    out_open(&o, dir, "config.json");
    fprintf(o.f, "{\n  \"architectures\": [\"CLIPModel\"],\n  \"initializer_factor\": 1.0,\n  \"logit_scale_init_value\": 2.6592,\n"
                 "  \"model_type\": \"clip\",\n  \"projection_dim\": %d,\n  \"text_config\": {\n", c->projection_dim);
    write_tower_config(o.f, &c->text, c->projection_dim);
    fprintf(o.f, "    \"bos_token_id\": %d,\n    \"eos_token_id\": %d,\n    \"pad_token_id\": %d,\n"
                 "    \"max_position_embeddings\": %d,\n    \"model_type\": \"clip_text_model\",\n    \"vocab_size\": %d\n  },\n"
                 "  \"torch_dtype\": \"float32\",\n  \"vision_config\": {\n",
            bos, c->eos_token_id, eos, c->max_positions, c->vocab_size);
    write_tower_config(o.f, &c->vision, c->projection_dim);
    fprintf(o.f, "    \"image_size\": %d,\n    \"model_type\": \"clip_vision_model\",\n    \"num_channels\": 3,\n"
                 "    \"patch_size\": %d\n  }\n}\n", c->image_size, c->patch);
    out_close(&o);

    out_open(&o, dir, "preprocessor_config.json");
    fprintf(o.f, "{\n  \"crop_size\": {\"height\": %d, \"width\": %d},\n  \"do_center_crop\": true,\n  \"do_convert_rgb\": true,\n"
                 "  \"do_normalize\": true,\n  \"do_rescale\": true,\n  \"do_resize\": true,\n"
                 "  \"image_mean\": [%s, ", p->crop_h, p->crop_w, float_text(p->mean[0], a));
    fprintf(o.f, "%s, %s],\n  \"image_processor_type\": \"CLIPImageProcessor\",\n", float_text(p->mean[1], b), float_text(p->mean[2], d));
    fprintf(o.f, "  \"image_std\": [%s, ", float_text(p->std[0], a));
    fprintf(o.f, "%s, %s],\n  \"resample\": 3,\n  \"rescale_factor\": 0.00392156862745098,\n"
                 "  \"size\": {\"shortest_edge\": %d}\n}\n", float_text(p->std[1], b), float_text(p->std[2], d), p->shortest_edge);
    out_close(&o);
}

/* a JSON string: the symbols are printable, but '"' and '\' are among them */
static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json (CLIPTokenizer's files) */
static void write_tokenizer_files(const vocabulary *V, const char *dir, int context)
{
    static const char *specials =
        "  \"bos_token\": \"<|startoftext|>\",\n  \"eos_token\": \"<|endoftext|>\",\n"
        "  \"pad_token\": \"<|endoftext|>\",\n  \"unk_token\": \"<|endoftext|>\"";
    out_file o;
    out_open(&o, dir, "vocab.json");
    fputc('{', o.f);
    for (int i = 0; i < V->n_vocab; i++) {
        fputs(i ? ", " : "", o.f);
        json_string(o.f, V->tokens[i]);
        fprintf(o.f, ": %d", i);
    }
    fputs("}\n", o.f);
    out_close(&o);

    out_open(&o, dir, "merges.txt");
    fputs("#version: 0.2\n", o.f);
    for (int k = 0; k < V->n_merges; k++) fprintf(o.f, "%s %s\n", V->tokens[V->merges[k][0]], V->tokens[V->merges[k][1]]);
    out_close(&o);

    out_open(&o, dir, "tokenizer_config.json");
    fprintf(o.f, "{\n  \"add_prefix_space\": false,\n%s,\n  \"clean_up_tokenization_spaces\": true,\n"
                 "  \"do_lower_case\": true,\n  \"errors\": \"replace\",\n  \"model_max_length\": %d,\n"
                 "  \"tokenizer_class\": \"CLIPTokenizer\"\n}\n", specials, context);
    out_close(&o);
    out_open(&o, dir, "special_tokens_map.json");
    fprintf(o.f, "{\n%s\n}\n", specials);
    out_close(&o);
}

/* The loss curve as SVG: the loss of every step (light), its running mean
 * over 25 steps (dark), and the held-out zero-shot accuracy (right axis). */
static void write_curve(const char *path, const float *loss, int steps, const int *acc_step, const double *acc, int n_acc,
                        const char *title)
{
    const double W = 720, H = 380, x0 = 60, x1 = 660, y0 = 40, y1 = 330;
    double top = 0.5;
    out_file o;
    for (int s = 0; s < steps; s++) top = loss[s] > top ? loss[s] : top;
    top = ceil(top);
#define SX(s) (x0 + (x1 - x0) * (double)(s) / (steps > 1 ? steps - 1 : 1))
#define SY(v) (y1 - (y1 - y0) * (v) / top)
    out_open(&o, NULL, path);
    fprintf(o.f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" font-size=\"12\">\n"
                 "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"%.0f\" y=\"22\" font-size=\"14\">%s</text>\n",
            W, H, x0, title);
    for (int k = 0; k <= 4; k++) {   /* grid: loss on the left, accuracy on the right */
        double v = top * k / 4, y = SY(v);
        fprintf(o.f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                     "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.2g</text>"
                     "<text x=\"%.1f\" y=\"%.1f\" fill=\"#c05621\">%d%%</text>\n",
                x0, y, x1, y, x0 - 6, y + 4, v, x1 + 6, y + 4, 25 * k);
    }
    for (int k = 0; k <= 4; k++) {
        int s = (int)((steps - 1) * (double)k / 4);
        fprintf(o.f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%d</text>\n", SX(s), y1 + 18, s + 1);
    }
    fprintf(o.f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n", (x0 + x1) / 2, y1 + 38);
    fprintf(o.f, "<polyline fill=\"none\" stroke=\"#b8c7dd\" stroke-width=\"1\" points=\"");
    for (int s = 0; s < steps; s++) fprintf(o.f, "%.1f,%.1f ", SX(s), SY(loss[s]));
    fprintf(o.f, "\"/>\n<polyline fill=\"none\" stroke=\"#2b6cb0\" stroke-width=\"2\" points=\"");
    for (int s = 0; s < steps; s++) {
        double sum = 0.0;
        int a = s >= 24 ? s - 24 : 0;
        for (int k = a; k <= s; k++) sum += loss[k];
        fprintf(o.f, "%.1f,%.1f ", SX(s), SY(sum / (s - a + 1)));
    }
    fprintf(o.f, "\"/>\n<polyline fill=\"none\" stroke=\"#c05621\" stroke-width=\"2\" points=\"");
    for (int k = 0; k < n_acc; k++) fprintf(o.f, "%.1f,%.1f ", SX(acc_step[k] - 1), y1 - (y1 - y0) * acc[k]);
    fprintf(o.f, "\"/>\n");
    for (int k = 0; k < n_acc; k++) fprintf(o.f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#c05621\"/>\n", SX(acc_step[k] - 1), y1 - (y1 - y0) * acc[k]);
    fprintf(o.f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#2b6cb0\">contrastive loss (mean of 25 steps)</text>\n"
                 "<text x=\"%.1f\" y=\"%.1f\" fill=\"#c05621\">held-out zero-shot accuracy</text>\n</svg>\n",
            x1 - 300, y0 + 16, x1 - 300, y0 + 32);
#undef SX
#undef SY
    out_close(&o);
}

/* ------------------------------------------------------------------------ */
/* train model                                                               */
/* ------------------------------------------------------------------------ */
typedef struct {
    const char *cmd, *out, *curve, *split;
    uint64_t seed;
    int steps, batch, threads, quiet, first, count, act, pool_argmax, evals, width, vision_layers, text_layers, patch, size;
    float lr;
} options;

/* the shipped model: a ViT of 32 x 32 pixels in 8 x 8 patches and a text
 * transformer over CLIP's 77 positions, both small enough to train in minutes;
 * width d (heads of 32), MLPs of 4 d */
static clip_config shipped_config(const options *o)
{
    clip_config c;
    int d = o->width;
    memset(&c, 0, sizeof c);
    c.vision = (clip_tower_config){d, d / 32, o->vision_layers, 4 * d, CLIP_ACT_QUICK_GELU, 1e-5f};
    c.text = (clip_tower_config){d, d / 32, o->text_layers, 4 * d, CLIP_ACT_QUICK_GELU, 1e-5f};
    c.patch = o->patch;
    c.image_size = o->size;
    c.channels = 3;
    c.max_positions = 77;
    c.projection_dim = d;
    c.preprocess = preprocess_config(c.image_size);
    return c;
}

/* the activations of both towers and the backward's scratch, for batches of B */
typedef struct {
    tower_acts vis, txt;
    layer_scratch s;
    float *dx_vis, *dx_txt, *dimg, *dtxt;
    contrastive loss;
} workspace;

static void workspace_alloc(workspace *w, const clip_config *c, int B)
{
    int g = c->image_size / c->patch, Tv = 1 + g * g, Tt = c->max_positions, T = Tv > Tt ? Tv : Tt;
    int d = c->vision.hidden > c->text.hidden ? c->vision.hidden : c->text.hidden;
    int I = c->vision.intermediate > c->text.intermediate ? c->vision.intermediate : c->text.intermediate;
    size_t rows = (size_t)B * T;
    tower_alloc(&w->vis, &c->vision, c->projection_dim, B, Tv, 3 * c->patch * c->patch);
    tower_alloc(&w->txt, &c->text, c->projection_dim, B, Tt, 0);
    w->s.dh = xcalloc(rows * d, sizeof(float));
    w->s.dq = xcalloc(rows * d, sizeof(float));
    w->s.dk = xcalloc(rows * d, sizeof(float));
    w->s.dv = xcalloc(rows * d, sizeof(float));
    w->s.dctx = xcalloc(rows * d, sizeof(float));
    w->s.dfc = xcalloc(rows * I, sizeof(float));
    w->s.dp = xcalloc((size_t)thread_count() * (d + 1) * T, sizeof(float));
    w->s.stats = xcalloc(2 * rows, sizeof(double));
    w->dx_vis = xcalloc((size_t)B * Tv * c->vision.hidden, sizeof(float));
    w->dx_txt = xcalloc((size_t)B * Tt * c->text.hidden, sizeof(float));
    w->dimg = xcalloc((size_t)B * c->projection_dim, sizeof(float));
    w->dtxt = xcalloc((size_t)B * c->projection_dim, sizeof(float));
    contrastive_alloc(&w->loss, B, c->projection_dim);
}

static void workspace_free(workspace *w)
{
    tower_free(&w->vis); tower_free(&w->txt);
    free(w->s.dh); free(w->s.dq); free(w->s.dk); free(w->s.dv); free(w->s.dctx); free(w->s.dfc);
    free(w->s.dp); free(w->s.stats);
    free(w->dx_vis); free(w->dx_txt); free(w->dimg); free(w->dtxt);
    contrastive_free(&w->loss);
}

/* One step's forward and backward on a batch: the loss, and every gradient in m->g. */
static double forward_backward(model *m, workspace *w, const float *pixels, const int32_t *ids, int B, int T)
{
    w->vis.B = w->txt.B = w->loss.N = B;
    w->txt.T = T;
    memset(m->g, 0, m->n_params * sizeof(float));
    vision_forward(m, &w->vis, pixels);
    text_forward(m, &w->txt, ids);
    contrastive_forward(&w->loss, w->vis.features, w->txt.features, m->W.logit_scale[0]);
    contrastive_backward(w->dimg, w->dtxt, m->G.logit_scale, &w->loss);
    text_backward(m, &w->txt, ids, w->dtxt, w->dx_txt, &w->s);
    vision_backward(m, &w->vis, w->dimg, w->dx_vis, &w->s);
    return w->loss.loss;
}

/* linear warmup over the first 5% of the steps, then a cosine down to 5% */
static float learning_rate(float peak, int step, int steps)
{
    int warm = steps / 20 > 1 ? steps / 20 : 1;
    if (step <= warm) return peak * step / warm;
    return (float)(peak * (0.05 + 0.95 * 0.5 * (1.0 + cos(3.14159265358979 * (step - warm) / (double)(steps - warm)))));
}

#define VALIDATION_FIRST 1000000   /* held-out pictures used while training; tests use 0.. */
#define VALIDATION_COUNT 480

static int cmd_model(const options *o)
{
    clip_config c = shipped_config(o);
    adamw_config opt = {o->lr, 0.9f, 0.98f, 1e-6f, 0.1f, 1.0f};
    vocabulary V;
    clip_tokenizer *tok;
    uint8_t *section;
    model m;
    workspace w;
    batch bt, val;
    float *loss = xcalloc((size_t)o->steps, sizeof(float));
    int acc_step[64], n_acc = 0, every = o->steps / o->evals > 0 ? o->steps / o->evals : 1;
    double acc[64], t_train = 0.0, t_start = now();
    uint64_t cursor = 0, *index = xcalloc(o->batch > VALIDATION_COUNT ? o->batch : VALIDATION_COUNT, sizeof(uint64_t));
    out_file log;

    make_dir(o->out);
    learn_vocabulary(&V, o->seed, 20000);
    tok = vocabulary_tokenizer(&V, c.max_positions, &section);
    c.vocab_size = V.n_vocab;
    c.eos_token_id = V.eos;
    snprintf(c.name, sizeof c.name, "clip.c train: shapes, seed %llu, %d steps of %d", (unsigned long long)o->seed, o->steps, o->batch);
    model_init(&m, &c, o->seed);
    workspace_alloc(&w, &c, o->batch);
    batch_alloc(&bt, o->batch, c.image_size, c.max_positions);
    batch_alloc(&val, VALIDATION_COUNT, c.image_size, c.max_positions);
    for (int i = 0; i < VALIDATION_COUNT; i++) index[i] = VALIDATION_FIRST + (uint64_t)i;
    make_batch(&val, &c, tok, SHAPES_HELDOUT, 0, index, VALIDATION_COUNT);
    if (!o->quiet)
        fprintf(stderr, "train: vocabulary of %d tokens (%d merges); %zu parameters; %d steps of %d pairs, %d threads\n",
                V.n_vocab, V.n_merges, m.n_params, o->steps, o->batch, thread_count());
    out_open(&log, o->out, "training_log.tsv");
    fprintf(log.f, "step\tloss\tlr\tlogit_scale\tgrad_norm\tseconds\theldout_accuracy\n");

    for (int step = 1; step <= o->steps; step++) {
        double t0 = now(), gnorm;
        float lr = learning_rate(o->lr, step, o->steps);
        hard_negative_indices(index, o->batch, o->seed, &cursor);
        make_batch(&bt, &c, tok, SHAPES_TRAIN, o->seed, index, o->batch);
        loss[step - 1] = (float)forward_backward(&m, &w, bt.pixels, bt.ids, o->batch, bt.T);
        gnorm = clip_gradients(&m, opt.clip_norm);
        adamw_update(&m, &opt, lr, step);
        t_train += now() - t0;
        fprintf(log.f, "%d\t%.6f\t%.6g\t%.5f\t%.4f\t%.3f\t", step, loss[step - 1], lr, m.W.logit_scale[0], gnorm, now() - t0);
        if ((step % every == 0 || step == o->steps) && n_acc < 64) {
            acc_step[n_acc] = step;
            acc[n_acc] = zero_shot_accuracy(&m, &w.vis, &w.txt, tok, &val, VALIDATION_COUNT);
            fprintf(log.f, "%.4f", acc[n_acc++]);
        }
        fputc('\n', log.f);
        if (!o->quiet && (step % 25 == 0 || step == o->steps || (n_acc && acc_step[n_acc - 1] == step))) {
            fprintf(stderr, "step %5d/%d  loss %.4f  lr %.2e  scale %.1f  %.1f pairs/s", step, o->steps, loss[step - 1],
                    lr, exp(m.W.logit_scale[0]), o->batch * step / t_train);
            if (n_acc && acc_step[n_acc - 1] == step) fprintf(stderr, "  held-out zero-shot %.1f%%", 100 * acc[n_acc - 1]);
            fputc('\n', stderr);
        }
    }
    out_close(&log);
    write_params(&m, m.w, o->out, "model.safetensors");
    write_configs(&m, o->out, V.bos, V.eos);
    write_tokenizer_files(&V, o->out, c.max_positions);
    if (o->curve) {
        char title[160];
        snprintf(title, sizeof title, "train model --seed %llu: %d steps of %d pairs, %.0f pairs/s on %d threads",
                 (unsigned long long)o->seed, o->steps, o->batch, o->steps * o->batch / t_train, thread_count());
        write_curve(o->curve, loss, o->steps, acc_step, acc, n_acc, title);
    }
    fprintf(stderr, "train: %d steps in %.0f s (%.1f pairs/s, %.0f s in all); held-out zero-shot accuracy %.1f%% on %d pictures; wrote %s\n",
            o->steps, t_train, o->steps * o->batch / t_train, now() - t_start, 100 * acc[n_acc - 1], VALIDATION_COUNT, o->out);
    workspace_free(&w);
    batch_free(&bt);
    batch_free(&val);
    model_free(&m);
    clip_tokenizer_free(tok);
    free(section);
    vocabulary_free(&V);
    free(loss);
    free(index);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* train pictures                                                            */
/* ------------------------------------------------------------------------ */
static int cmd_pictures(const options *o)
{
    int split = !strcmp(o->split, "heldout") ? SHAPES_HELDOUT : SHAPES_TRAIN;
    out_file tsv;
    make_dir(o->out);
    out_open(&tsv, o->out, "captions.tsv");
    fprintf(tsv.f, "index\tfile\tcolour\tshape\tcount\tcaption\n");
    for (int k = 0; k < o->count; k++) {
        uint64_t index = (uint64_t)o->first + k;
        shapes_scene sc;
        clip_image img;
        uint8_t *png = NULL;
        size_t size = 0;
        char err[CLIP_ERR_SIZE], name[64];
        out_file f;
        if (shapes_draw(shapes_seed(split, split == SHAPES_HELDOUT ? 0 : o->seed, index), &sc, &img, err) ||
            clip_png_encode(&img, &png, &size, err))
            die(1, "picture %llu: %s", (unsigned long long)index, err);
        snprintf(name, sizeof name, "%06llu.png", (unsigned long long)index);
        out_open(&f, o->out, name);
        fwrite(png, 1, size, f.f);
        out_close(&f);
        fprintf(tsv.f, "%llu\t%s\t%s\t%s\t%d\t%s\n", (unsigned long long)index, name, shapes_colour_names[sc.colour],
                shapes_shape_names[sc.shape], sc.count, sc.caption);
        free(png);
        clip_image_free(&img);
    }
    out_close(&tsv);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* train gradcheck                                                           */
/* ------------------------------------------------------------------------ */
/* A small model with two towers of different widths (so a mixed-up size
 * shows), perturbed away from its initial values (layer norms and biases are
 * not 1 and 0), random pixel values and ids, one forward and backward. The
 * test recomputes the loss and every gradient with PyTorch's autograd. */
static int cmd_gradcheck(const options *o)
{
    clip_config c;
    model m;
    workspace w;
    rng r = {12345};
    enum { B = 4, T = 7, V = 50 };
    float pixels[B * 3 * 16 * 16];
    int32_t ids[B * T];
    int64_t ids64[B * T];
    double loss;

    memset(&c, 0, sizeof c);
    c.vision = (clip_tower_config){16, 2, 2, 36, o->act, 1e-5f};
    c.text = (clip_tower_config){24, 3, 2, 40, o->act, 1e-5f};
    c.patch = 4; c.image_size = 16; c.channels = 3;
    c.vocab_size = V; c.max_positions = 10; c.projection_dim = 12;
    c.eos_token_id = o->pool_argmax ? 2 : V - 3;
    c.preprocess = preprocess_config(16);
    model_init(&m, &c, 7);
    for (int k = 0; k < m.n_tensors; k++) {   /* move every tensor off its initial value */
        float *p = m.w + m.tensors[k].offset;
        for (size_t i = 0; i < m.tensors[k].count; i++) p[i] += (float)(0.1 * rng_normal(&r));
    }
    m.W.logit_scale[0] = 1.5f;
    for (size_t i = 0; i < sizeof pixels / sizeof *pixels; i++) pixels[i] = (float)rng_normal(&r);
    /* bos V - 2 first; the eos id of the eos config (V - 3) at position 1 + b and
     * the largest id (V - 1) at 6 - b, so that the two pooling rules pick
     * different tokens; other ids random below V - 3 */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            ids[b * T + t] = t == 0 ? V - 2 : t == 1 + b ? V - 3 : t == 6 - b ? V - 1 : (int32_t)(rng_next(&r) % (V - 3));
    for (int i = 0; i < B * T; i++) ids64[i] = ids[i];

    workspace_alloc(&w, &c, B);
    loss = forward_backward(&m, &w, pixels, ids, B, T);
    make_dir(o->out);
    write_params(&m, m.w, o->out, "model.safetensors");
    write_params(&m, m.g, o->out, "grads.safetensors");
    write_configs(&m, o->out, V - 2, V - 3);
    {
        st_tensor in[3] = {{"pixel_values", "F32", 4, {B, 3, 16, 16}, pixels, sizeof pixels},
                           {"input_ids", "I64", 2, {B, T}, ids64, sizeof ids64},
                           {"loss", "F64", 0, {0}, &loss, sizeof loss}};
        write_safetensors(o->out, "inputs.safetensors", in, 3);
    }
    printf("gradcheck: %s, pooling at %s: loss %.9f, %d tensors, %zu parameters; wrote %s\n",
           o->act == CLIP_ACT_GELU ? "gelu" : "quick_gelu", o->pool_argmax ? "the largest id" : "the first eos",
           loss, m.n_tensors, m.n_params, o->out);
    workspace_free(&w);
    model_free(&m);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Command line                                                              */
/* ------------------------------------------------------------------------ */
static long number(const char *opt, const char *s, long lo, long hi)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) die(2, "%s needs a whole number from %ld to %ld, not '%s'", opt, lo, hi, s);
    return v;
}

int main(int argc, char **argv)
{
    options o = {NULL, NULL, NULL, "train", 1, 12000, 64, 0, 0, 0, 10, CLIP_ACT_QUICK_GELU, 1, 12, 64, 4, 2, 8, 32, 0.002f};
    int act_given = 0, pool_given = 0;
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    o.cmd = argv[1];
    if (strcmp(o.cmd, "model") && strcmp(o.cmd, "pictures") && strcmp(o.cmd, "gradcheck"))
        die(2, "unknown command '%s' (model, pictures or gradcheck)", o.cmd);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
#define VALUE() (i + 1 < argc ? argv[++i] : (die(2, "option %s needs a value", a), ""))
        if (!strcmp(a, "-o") || !strcmp(a, "--out")) o.out = VALUE();
        else if (!strcmp(a, "--seed")) o.seed = (uint64_t)number(a, VALUE(), 0, 1L << 20);
        else if (!strcmp(a, "--steps")) o.steps = (int)number(a, VALUE(), 1, 1000000);
        else if (!strcmp(a, "--batch")) o.batch = (int)number(a, VALUE(), 2, 1024);
        else if (!strcmp(a, "--first")) o.first = (int)number(a, VALUE(), 0, 1L << 30);
        else if (!strcmp(a, "--count")) o.count = (int)number(a, VALUE(), 1, 1000000);
        else if (!strcmp(a, "-j") || !strcmp(a, "--threads")) o.threads = (int)number(a, VALUE(), 1, 1024);
        else if (!strcmp(a, "--curve")) o.curve = VALUE();
        else if (!strcmp(a, "--evals")) o.evals = (int)number(a, VALUE(), 1, 64);
        else if (!strcmp(a, "--width")) {
            o.width = (int)number(a, VALUE(), 32, 1024);
            if (o.width % 32) die(2, "--width must be a multiple of 32 (heads of 32), not %d", o.width);
        }
        else if (!strcmp(a, "--vision-layers")) o.vision_layers = (int)number(a, VALUE(), 1, MAX_LAYERS);
        else if (!strcmp(a, "--text-layers")) o.text_layers = (int)number(a, VALUE(), 1, MAX_LAYERS);
        else if (!strcmp(a, "--patch")) o.patch = (int)number(a, VALUE(), 2, 64);
        else if (!strcmp(a, "--image-size")) o.size = (int)number(a, VALUE(), 16, 448);
        else if (!strcmp(a, "--quiet")) o.quiet = 1;
        else if (!strcmp(a, "--lr")) {
            const char *v = VALUE();
            char *end;
            o.lr = strtof(v, &end);
            if (*end || !(o.lr > 0 && o.lr < 1)) die(2, "--lr needs a number between 0 and 1, not '%s'", v);
        } else if (!strcmp(a, "--split")) {
            o.split = VALUE();
            if (strcmp(o.split, "train") && strcmp(o.split, "heldout")) die(2, "--split takes train or heldout, not '%s'", o.split);
        } else if (!strcmp(a, "--act")) {
            const char *v = VALUE();
            act_given = 1;
            if (!strcmp(v, "gelu")) o.act = CLIP_ACT_GELU;
            else if (strcmp(v, "quick_gelu")) die(2, "--act takes quick_gelu or gelu, not '%s'", v);
        } else if (!strcmp(a, "--pool")) {
            const char *v = VALUE();
            pool_given = 1;
            if (!strcmp(v, "eos")) o.pool_argmax = 0;
            else if (strcmp(v, "argmax")) die(2, "--pool takes argmax or eos, not '%s'", v);
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(usage_text, stdout); return 0; }
        else die(2, "unknown option '%s' for 'train %s'", a, o.cmd);
#undef VALUE
    }
    if (o.size % o.patch) die(2, "--image-size %d is not a multiple of --patch %d", o.size, o.patch);
    if (o.threads) {
#ifdef _OPENMP
        omp_set_num_threads(o.threads);
#endif
    }
    if (!strcmp(o.cmd, "model")) {
        if (!o.out) o.out = "build/clip-shapes";
        return cmd_model(&o);
    }
    if (!o.out) die(2, "train %s needs -o DIR", o.cmd);
    if (!strcmp(o.cmd, "pictures")) return cmd_pictures(&o);
    if (!act_given || !pool_given) die(2, "train gradcheck needs --act quick_gelu|gelu and --pool argmax|eos");
    return cmd_gradcheck(&o);
}
