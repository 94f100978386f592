/* clip.c - the model: CLIPModel's two towers, then the loader of its file.
 *
 * Reproduces Hugging Face's CLIPModel (transformers/models/clip/modeling_clip.py):
 *   get_text_features:  CLIPTextTransformer   -> text_projection
 *   get_image_features: CLIPVisionTransformer -> visual_projection
 * In reading order: the weights, the encoder layer and the encoder both
 * towers share, the text tower, the vision tower, the scratch memory and the
 * public encode functions; then the model file (README.md, "The model
 * file"), whose weights are mmap'ed and never copied.
 */
#define _POSIX_C_SOURCE 200809L   /* mmap, open, fstat */
#define _DEFAULT_SOURCE           /* madvise, where the C library has it */
#include "clip.h"
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/mman.h>

/* ------------------------------------------------------------------------ */
/* The weights                                                               */
/* ------------------------------------------------------------------------ */
/* Linear weights, the projections, the patch embedding and the token
 * embedding are clip_weights [out, in] (a dtype: float32, float16 or q8, and
 * the data); biases, norms, the class and position embeddings are float32
 * arrays. */

typedef struct {                            /* one CLIPEncoderLayer */
    const float *ln1_w, *ln1_b;             /* layer_norm1 [d] */
    clip_weight q_w, k_w, v_w;              /* self_attn.{q,k,v}_proj [d, d] */
    const float *q_b, *k_b, *v_b;           /* [d] */
    clip_weight o_w;                        /* self_attn.out_proj [d, d] */
    const float *o_b;                       /* [d] */
    const float *ln2_w, *ln2_b;             /* layer_norm2 [d] */
    clip_weight fc1_w;                      /* mlp.fc1 [intermediate, d] */
    const float *fc1_b;                     /* [intermediate] */
    clip_weight fc2_w;                      /* mlp.fc2 [d, intermediate] */
    const float *fc2_b;                     /* [d] */
} clip_layer;

typedef struct {
    /* text_model */
    clip_weight token_embedding;            /* [vocab, d] */
    const float *text_position_embedding;   /* [max_positions, d] */
    clip_layer *text_layers;
    const float *final_ln_w, *final_ln_b;   /* final_layer_norm [d] */
    clip_weight text_projection;            /* [proj, d] */
    /* vision_model */
    clip_weight patch_embedding;            /* [d, 3, p, p], used as [d, 3 p p] */
    const float *class_embedding;           /* [d] */
    const float *vision_position_embedding; /* [1 + (S/p)^2, d] */
    const float *pre_ln_w, *pre_ln_b;       /* pre_layrnorm [d] */
    clip_layer *vision_layers;
    const float *post_ln_w, *post_ln_b;     /* post_layernorm [d] */
    clip_weight visual_projection;          /* [proj, d] */
    const float *logit_scale;               /* [] */
} clip_weights;

struct clip_model {
    clip_config config;
    clip_weights w;
    clip_tokenizer *tokenizer;
    const uint8_t *data;   /* the whole file */
    size_t size;
    int mapped;            /* data came from mmap */
    int owned;             /* data belongs to the model (mmap or malloc), not to the caller */
    size_t dtype_values[3], dtype_bytes[3];   /* the tensors' values and bytes per CLIP_DTYPE_* */
};

/* The working memory of one encode call: `batch` sequences of n tokens,
 * rows = batch * n, in a tower of width d (see lay_out, which sizes it). */
typedef struct {
    float *x;                   /* [rows, d] the hidden states */
    float *h, *q, *k, *v, *o;   /* [rows, d] each: a layer norm's output, query, key, value, attention output */
    float *f;                   /* [rows, intermediate] the MLP's hidden layer */
    float *attention;           /* clip_attention_scratch(n, heads, head_dim) floats */
    float *pack;                /* clip_linear_scratch for the largest product */
    float *patches;             /* [g * g, 3 p p] one image's patches (vision tower) */
    float *pooled;              /* [batch, d] the pooled rows */
    int *pool;                  /* [batch] which row of each sequence is pooled */
} buffers;

/* ------------------------------------------------------------------------ */
/* The encoder layer (CLIPEncoderLayer), shared by both towers               */
/* ------------------------------------------------------------------------ */

/* q, k, v = q_proj, k_proj, v_proj(layer_norm1(x)) on `rows` rows
 * (h: [rows, d], the layer norm's output) */
static void layer_qkv(float *q, float *k, float *v, float *h, const float *x, const clip_layer *L,
                      const clip_tower_config *c, int rows, float *pack)
{
    float *qkv[3] = {q, k, v};
    const clip_weight *w[3] = {&L->q_w, &L->k_w, &L->v_w};
    const float *bias[3] = {L->q_b, L->k_b, L->v_b};
    clip_layer_norm(h, x, L->ln1_w, L->ln1_b, rows, c->hidden, c->eps);
    clip_linear3_weight(qkv, h, w, bias, rows, c->hidden, c->hidden, pack);
}

/* CLIPMLP with its residual: x += fc2(act(fc1(layer_norm2(x)))) on `rows`
 * rows (h: [rows, d], f: [rows, intermediate]) */
static void layer_mlp(float *x, float *h, float *f, const clip_layer *L, const clip_tower_config *c, int rows,
                      float *pack)
{
    int d = c->hidden;
    clip_layer_norm(h, x, L->ln2_w, L->ln2_b, rows, d, c->eps);
    clip_linear_weight(f, h, &L->fc1_w, L->fc1_b, rows, d, c->intermediate, pack);
    if (c->act == CLIP_ACT_GELU) clip_gelu(f, (size_t)rows * c->intermediate);
    else clip_quick_gelu(f, (size_t)rows * c->intermediate);
    clip_linear_weight(h, f, &L->fc2_w, L->fc2_b, rows, c->intermediate, d, pack);
    for (size_t i = 0; i < (size_t)rows * d; i++) x[i] += h[i];
}

/* CLIPEncoderLayer, pre-norm, on x[batch * n, d] in place (batch sequences
 * of n tokens):
 *   x += out_proj(attention(q_proj, k_proj, v_proj(layer_norm1(x))))
 *   x += fc2(act(fc1(layer_norm2(x))))
 * q is scaled by 1/sqrt(head_dim) before the scores, as CLIPAttention does.
 * The matrix products run over all batch * n rows at once, so a batch
 * shares every read of the weights; attention runs per sequence. */
static void encoder_layer(float *x, const clip_layer *L, const clip_tower_config *c, int batch, int n,
                          int causal, const buffers *b)
{
    int d = c->hidden, hd = d / c->heads, rows = batch * n;
    size_t nd = (size_t)rows * d;
    float scale = 1.0f / sqrtf((float)hd);

    layer_qkv(b->q, b->k, b->v, b->h, x, L, c, rows, b->pack);
    for (size_t i = 0; i < nd; i++) b->q[i] *= scale;
    for (int s = 0; s < batch; s++) {
        size_t off = (size_t)s * n * d;
        clip_attention(b->o + off, b->q + off, b->k + off, b->v + off, n, c->heads, hd, causal, b->attention);
    }
    clip_linear_weight(b->h, b->o, &L->o_w, L->o_b, rows, d, d, b->pack);
    for (size_t i = 0; i < nd; i++) x[i] += b->h[i];
    layer_mlp(x, b->h, b->f, L, c, rows, b->pack);
}

/* The same layer when only row pool[s] of each sequence s is read after it
 * (the last layer: the towers pool one token). Keys and values are needed
 * for every token; the query, attention, out_proj and MLP only for the
 * batch pooled rows, gathered into xp: the same computation on those rows
 * (rounded differently, by about 1e-7: the kernels sum in other orders for
 * fewer rows) for much less work. The other rows of x are left as they
 * were. n >= 2 (xp and hp, batch rows each, share h). */
static void encoder_layer_pooled(float *x, const clip_layer *L, const clip_tower_config *c, int batch, int n,
                                 int causal, const buffers *b)
{
    int d = c->hidden, hd = d / c->heads, rows = batch * n;
    size_t bd = (size_t)batch * d;
    float *xp = b->h, *hp = b->h + bd;   /* h is free once q, k and v are made */
    float scale = 1.0f / sqrtf((float)hd);

    layer_qkv(b->q, b->k, b->v, b->h, x, L, c, rows, b->pack);
    for (int s = 0; s < batch; s++) {
        int ps = b->pool[s];
        size_t row = (size_t)s * n + ps, off = (size_t)s * n * d;
        for (int i = 0; i < d; i++) b->q[row * d + i] *= scale;
        clip_attention_query(b->o + (size_t)s * d, b->q + row * d, b->k + off, b->v + off, causal ? ps + 1 : n,
                             c->heads, hd, b->attention);
        memcpy(xp + (size_t)s * d, x + row * d, (size_t)d * sizeof(float));
    }
    clip_linear_weight(hp, b->o, &L->o_w, L->o_b, batch, d, d, b->pack);
    for (size_t i = 0; i < bd; i++) xp[i] += hp[i];
    layer_mlp(xp, hp, b->f, L, c, batch, b->pack);
    for (int s = 0; s < batch; s++)
        memcpy(x + ((size_t)s * n + b->pool[s]) * d, xp + (size_t)s * d, (size_t)d * sizeof(float));
}

/* ------------------------------------------------------------------------ */
/* The encoder (CLIPEncoder)                                                 */
/* ------------------------------------------------------------------------ */

/* The dump hook: x [batch, a, b] (shown as [a, b] for one sequence) */
static void dump_stage(clip_dump_fn dump, void *ctx, const char *name, const float *x, int batch, int a, int b)
{
    int shape[3] = {batch, a, b};
    if (!dump) return;
    if (batch == 1) dump(ctx, name, x, 2, shape + 1);
    else dump(ctx, name, x, 3, shape);
}

/* hidden_states[l] as "<tower>_hidden_NN" */
static void dump_hidden(clip_dump_fn dump, void *ctx, const char *tower, int l, const float *x, int batch, int n,
                        int d)
{
    char name[64];
    if (!dump) return;
    snprintf(name, sizeof name, "%s_hidden_%02d", tower, l);
    dump_stage(dump, ctx, name, x, batch, n, d);
}

/* CLIPEncoder on x[batch, n, d]: hidden_states[0] = x, then
 * hidden_states[l + 1] = layer l(hidden_states[l]) for each layer. */
static void encoder(float *x, const clip_layer *layers, const clip_tower_config *c, int batch, int n, int causal,
                    const buffers *b, const char *tower, clip_dump_fn dump, void *ctx)
{
    int last = c->layers - 1;

    /* 1. every layer but the last, on every token */
    for (int l = 0; l < last; l++) {
        dump_hidden(dump, ctx, tower, l, x, batch, n, c->hidden);
        encoder_layer(x, &layers[l], c, batch, n, causal, b);
    }
    dump_hidden(dump, ctx, tower, last, x, batch, n, c->hidden);

    /* 2. the last layer. After it the tower reads only the pooled row of
     * each sequence (b->pool), so unless a dump shows every row, only those
     * rows are computed: the pooled-last-layer shortcut. */
    if (dump || n < 2) {
        encoder_layer(x, &layers[last], c, batch, n, causal, b);
        dump_hidden(dump, ctx, tower, last + 1, x, batch, n, c->hidden);
    } else {
        encoder_layer_pooled(x, &layers[last], c, batch, n, causal, b);
    }
}

/* ------------------------------------------------------------------------ */
/* Text tower: CLIPTextTransformer + text_projection                         */
/* ------------------------------------------------------------------------ */

/* CLIPTextEmbeddings: x[t][i] = token_embedding[ids[t][i]] + position_embedding[i]
 * for i < n. Texts shorter than n are padded at the end with their last id:
 * with causal attention no real token sees a later one, so each text gets
 * what it would get alone (the matrix products may round differently for
 * more rows). */
static void text_embeddings(float *x, const clip_weights *w, const int32_t *const *ids, const int *lens, int count,
                            int n, int d, int vocab)
{
    for (int t = 0; t < count; t++)
        for (int i = 0; i < n; i++) {
            const float *pos = w->text_position_embedding + (size_t)i * d;
            float *xi = x + ((size_t)t * n + i) * d;
            clip_weight_row(xi, &w->token_embedding, ids[t][i < lens[t] ? i : lens[t] - 1], d, vocab);
            for (int j = 0; j < d; j++) xi[j] += pos[j];
        }
}

/* The pooling choice: legacy configs (eos_token_id == 2) take the position
 * of the largest id (the eos token has the largest id in CLIP's
 * vocabulary); others the first position holding eos_token_id (the last
 * position if there is none). */
static int text_pooled_position(const int32_t *ids, int len, int eos_token_id)
{
    int p = 0;
    if (eos_token_id == 2) {
        for (int i = 1; i < len; i++) if (ids[i] > ids[p]) p = i;
        return p;
    }
    for (int i = 0; i < len; i++) if (ids[i] == eos_token_id) return i;
    return len - 1;
}

/* count texts, ids[t][lens[t]], padded to n tokens -> features[count, proj]:
 *   embeddings -> encoder (causal) -> final_layer_norm -> pooling -> text_projection */
static void text_tower(const clip_model *m, const buffers *b, const int32_t *const *ids, const int *lens, int count,
                       int n, float *features, clip_dump_fn dump, void *ctx)
{
    const clip_config *c = &m->config;
    const clip_weights *w = &m->w;
    int d = c->text.hidden;

    text_embeddings(b->x, w, ids, lens, count, n, d, c->vocab_size);
    for (int t = 0; t < count; t++) b->pool[t] = text_pooled_position(ids[t], lens[t], c->eos_token_id);

    encoder(b->x, w->text_layers, &c->text, count, n, 1, b, "text", dump, ctx);

    /* final_layer_norm, then pooling: pooled[t] = last_hidden_state[t, pool[t]].
     * LayerNorm works row by row, so it is applied to the pooled rows only;
     * the dump shows it on every row (into h). */
    if (dump) {
        clip_layer_norm(b->h, b->x, w->final_ln_w, w->final_ln_b, count * n, d, c->text.eps);
        dump_stage(dump, ctx, "text_last_hidden", b->h, count, n, d);
    }
    for (int t = 0; t < count; t++)
        clip_layer_norm(b->pooled + (size_t)t * d, b->x + ((size_t)t * n + b->pool[t]) * d, w->final_ln_w,
                        w->final_ln_b, 1, d, c->text.eps);
    dump_stage(dump, ctx, "text_pooled", b->pooled, 1, count, d);

    /* text_projection, no bias */
    clip_linear_weight(features, b->pooled, &w->text_projection, NULL, count, d, c->projection_dim, b->pack);
    dump_stage(dump, ctx, "text_features", features, 1, count, c->projection_dim);
}

/* ------------------------------------------------------------------------ */
/* Vision tower: CLIPVisionTransformer + visual_projection                   */
/* ------------------------------------------------------------------------ */

/* CLIPVisionEmbeddings for one image px[3, S, S] -> x[1 + g*g, d], g = S / p:
 * patch_embedding, a p x p convolution with stride p and no bias, is the
 * matrix product of the flattened patches [g*g, 3 p p] with its weight
 * [d, 3 p p]; class_embedding goes in front (row 0), position_embedding is
 * added to every row. */
static void vision_embeddings(float *x, const clip_weights *w, const clip_config *c, const float *px,
                              const buffers *b)
{
    int d = c->vision.hidden, p = c->patch, S = c->image_size, g = S / p, pp = 3 * p * p;
    /* im2col: patch (gy, gx) -> row gy*g + gx, columns in (channel, ky, kx) order */
    for (int gy = 0; gy < g; gy++)
        for (int gx = 0; gx < g; gx++) {
            float *row = b->patches + (size_t)(gy * g + gx) * pp;
            for (int ch = 0; ch < 3; ch++)
                for (int ky = 0; ky < p; ky++)
                    memcpy(row + (ch * p + ky) * p, px + ((size_t)ch * S + gy * p + ky) * S + gx * p, p * sizeof(float));
        }
    clip_linear_weight(x + d, b->patches, &w->patch_embedding, NULL, g * g, pp, d, b->pack);
    memcpy(x, w->class_embedding, d * sizeof(float));
    for (size_t i = 0; i < (size_t)(1 + g * g) * d; i++) x[i] += w->vision_position_embedding[i];
}

/* pixels[count, 3, S, S] -> features[count, proj]:
 *   patch embedding -> class token + positions -> pre_layrnorm -> encoder
 *   -> post_layernorm(class token) -> visual_projection */
static void vision_tower(const clip_model *m, const buffers *b, const float *pixels, int count, float *features,
                         clip_dump_fn dump, void *ctx)
{
    const clip_config *c = &m->config;
    const clip_weights *w = &m->w;
    int d = c->vision.hidden, S = c->image_size, g = S / c->patch, n = 1 + g * g;

    for (int i = 0; i < count; i++)
        vision_embeddings(b->x + (size_t)i * n * d, w, c, pixels + (size_t)i * 3 * S * S, b);
    dump_stage(dump, ctx, "image_embeddings", b->x, count, n, d);
    clip_layer_norm(b->x, b->x, w->pre_ln_w, w->pre_ln_b, count * n, d, c->vision.eps);

    for (int i = 0; i < count; i++) b->pool[i] = 0;   /* pooling reads the class token */
    encoder(b->x, w->vision_layers, &c->vision, count, n, 0, b, "image", dump, ctx);
    dump_stage(dump, ctx, "image_last_hidden", b->x, count, n, d);

    /* post_layernorm on the pooled output, last_hidden_state[:, 0] */
    for (int i = 0; i < count; i++)
        clip_layer_norm(b->pooled + (size_t)i * d, b->x + (size_t)i * n * d, w->post_ln_w, w->post_ln_b, 1, d,
                        c->vision.eps);
    dump_stage(dump, ctx, "image_pooled", b->pooled, 1, count, d);

    /* visual_projection, no bias */
    clip_linear_weight(features, b->pooled, &w->visual_projection, NULL, count, d, c->projection_dim, b->pack);
    dump_stage(dump, ctx, "image_features", features, 1, count, c->projection_dim);
}

/* ------------------------------------------------------------------------ */
/* Scratch memory and the encode functions                                   */
/* ------------------------------------------------------------------------ */

/* the next region of `bytes` at a 64-byte boundary: its address in base, or
 * NULL when base is NULL (only counting) */
static void *region(char *base, double *at, double bytes)
{
    void *p = base ? base + (size_t)*at : NULL;
    *at += ceil(bytes / 64.0) * 64.0;
    return p;
}

/* The buffers of one call, laid out in mem (NULL: only counted); returns the
 * bytes they need, 63 of them to align the start. `batch` sequences of n
 * tokens in tower c; patches rows of patch_in values for the patch
 * embedding (0 for text). Added up in double (exact below 2^53), so that the
 * size cannot wrap around a 32-bit size_t and leave the memory short. */
static double lay_out(buffers *b, void *mem, const clip_tower_config *c, int batch, int n, int patches, int patch_in)
{
    double rows = (double)batch * n, at = 0.0, f = sizeof(float);
    int widest = c->intermediate > c->hidden ? c->intermediate : c->hidden;
    size_t pack = clip_linear_scratch(rows < INT_MAX ? (int)rows : INT_MAX, widest);
    size_t pack_patches = clip_linear_scratch(patches, patch_in);
    char *base = mem ? (char *)mem + (64 - (uintptr_t)mem % 64) % 64 : NULL;

    if (rows > INT_MAX) return HUGE_VAL;   /* more rows than the kernels count */
    b->x = region(base, &at, rows * c->hidden * f);
    b->h = region(base, &at, rows * c->hidden * f);
    b->q = region(base, &at, rows * c->hidden * f);
    b->k = region(base, &at, rows * c->hidden * f);
    b->v = region(base, &at, rows * c->hidden * f);
    b->o = region(base, &at, rows * c->hidden * f);
    b->f = region(base, &at, rows * c->intermediate * f);
    b->attention = region(base, &at, (double)clip_attention_scratch(n, c->heads, c->hidden / c->heads) * f);
    b->pack = region(base, &at, (double)(pack > pack_patches ? pack : pack_patches) * f);
    b->patches = region(base, &at, (double)patches * patch_in * f);
    b->pooled = region(base, &at, (double)batch * c->hidden * f);
    b->pool = region(base, &at, (double)batch * sizeof(int));
    return at + 63.0;
}

static double text_bytes(const clip_config *c, int count, int n)
{
    buffers b;
    return lay_out(&b, NULL, &c->text, count, n, 0, 0);
}

static double image_bytes(const clip_config *c, int count)
{
    buffers b;
    int p = c->patch, g = c->image_size / p;
    return lay_out(&b, NULL, &c->vision, count, 1 + g * g, g * g, 3 * p * p);
}

size_t clip_scratch_size(const clip_model *m, int max_images, int max_texts, int max_tokens)
{
    const clip_config *c = &m->config;
    double bytes = 0.0;
    if (max_tokens <= 0 || max_tokens > c->max_positions) max_tokens = c->max_positions;
    if (max_images > 0) bytes = image_bytes(c, max_images);
    if (max_texts > 0 && text_bytes(c, max_texts, max_tokens) > bytes) bytes = text_bytes(c, max_texts, max_tokens);
    return bytes < (double)((size_t)-1) ? (size_t)bytes : 0;
}

int clip_scratch_alloc(clip_scratch *s, const clip_model *m, int max_images, int max_texts, int max_tokens, char *err)
{
    s->size = clip_scratch_size(m, max_images, max_texts, max_tokens);
    s->data = s->size ? malloc(s->size) : NULL;
    if (!s->data) {
        s->size = 0;
        return clip_fail(err, CLIP_ENOMEM, "out of memory (scratch for %d images, %d texts of %d tokens)", max_images,
                         max_texts, max_tokens);
    }
    return CLIP_OK;
}

void clip_scratch_free(clip_scratch *s)
{
    free(s->data);
    s->data = NULL;
    s->size = 0;
}

/* lay the buffers out in s, if they fit */
static int use_scratch(buffers *b, const clip_scratch *s, double need, const clip_tower_config *c, int batch, int n,
                       int patches, int patch_in, char *err)
{
    if (!s || !s->data || need > (double)s->size) {
        return clip_fail(err, CLIP_EINPUT,
                "the scratch memory holds %zu bytes but this batch needs %.0f (see clip_scratch_size)",
                s && s->data ? s->size : (size_t)0, need);
    }
    lay_out(b, s->data, c, batch, n, patches, patch_in);
    return CLIP_OK;
}

/* every text 1..max_positions ids from the vocabulary; *n: the longest */
static int check_texts(const clip_config *c, const int32_t *const *ids, const int *lens, int count, int *n, char *err)
{
    *n = 0;
    if (count < 1) return clip_fail(err, CLIP_EINPUT, "no texts to encode");
    for (int t = 0; t < count; t++) {
        if (lens[t] < 1 || lens[t] > c->max_positions) {
            return clip_fail(err, CLIP_EINPUT,
                    "a text must have between 1 and %d tokens (got %d)", c->max_positions, lens[t]);
        }
        for (int i = 0; i < lens[t]; i++) {
            if (ids[t][i] < 0 || ids[t][i] >= c->vocab_size) {
                return clip_fail(err, CLIP_EINPUT,
                        "token id %ld at position %d is outside the vocabulary (0..%d)", (long)ids[t][i], i,
                        c->vocab_size - 1);
            }
        }
        *n = lens[t] > *n ? lens[t] : *n;
    }
    return CLIP_OK;
}

int clip_encode_texts_scratch(clip_model *m, clip_scratch *s, const int32_t *const *ids, const int *lens, int count,
                              float *features, clip_dump_fn dump, void *ctx, char *err)
{
    buffers b;
    int n, rc;
    if ((rc = check_texts(&m->config, ids, lens, count, &n, err)) ||
        (rc = use_scratch(&b, s, text_bytes(&m->config, count, n), &m->config.text, count, n, 0, 0, err)))
        return rc;
    text_tower(m, &b, ids, lens, count, n, features, dump, ctx);
    return CLIP_OK;
}

int clip_encode_images_scratch(clip_model *m, clip_scratch *s, const float *pixels, int count, float *features,
                               clip_dump_fn dump, void *ctx, char *err)
{
    const clip_config *c = &m->config;
    int p = c->patch, g = c->image_size / p;
    buffers b;
    int rc;
    if (count < 1) return clip_fail(err, CLIP_EINPUT, "no images to encode");
    if ((rc = use_scratch(&b, s, image_bytes(c, count), &c->vision, count, 1 + g * g, g * g, 3 * p * p, err)))
        return rc;
    vision_tower(m, &b, pixels, count, features, dump, ctx);
    return CLIP_OK;
}

/* scratch of `bytes` for one call */
static int scratch_for_call(clip_scratch *s, double bytes, char *err)
{
    s->size = bytes < (double)((size_t)-1) ? (size_t)bytes : 0;
    s->data = s->size ? malloc(s->size) : NULL;
    if (!s->data) {
        if (s->size) return clip_fail(err, CLIP_ENOMEM, "out of memory (%.0f bytes of activations)", bytes);
        return clip_fail(err, CLIP_ENOMEM, "out of memory (the batch is too large for this machine)");
    }
    return CLIP_OK;
}

static int encode_texts(clip_model *m, const int32_t *const *ids, const int *lens, int count, float *features,
                        clip_dump_fn dump, void *ctx, char *err)
{
    clip_scratch s;
    int n, rc;
    if ((rc = check_texts(&m->config, ids, lens, count, &n, err)) ||
        (rc = scratch_for_call(&s, text_bytes(&m->config, count, n), err)))
        return rc;
    rc = clip_encode_texts_scratch(m, &s, ids, lens, count, features, dump, ctx, err);
    free(s.data);
    return rc;
}

int clip_encode_text(clip_model *m, const int32_t *ids, int n, float *features,
                     clip_dump_fn dump, void *ctx, char *err)
{
    return encode_texts(m, &ids, &n, 1, features, dump, ctx, err);
}

int clip_encode_texts(clip_model *m, const int32_t *const *ids, const int *lens, int count, float *features, char *err)
{
    return encode_texts(m, ids, lens, count, features, NULL, NULL, err);
}

int clip_encode_images(clip_model *m, const float *pixels, int count, float *features,
                       clip_dump_fn dump, void *ctx, char *err)
{
    clip_scratch s;
    int rc;
    if (count < 1) return clip_fail(err, CLIP_EINPUT, "no images to encode");
    if ((rc = scratch_for_call(&s, image_bytes(&m->config, count), err))) return rc;
    rc = clip_encode_images_scratch(m, &s, pixels, count, features, dump, ctx, err);
    free(s.data);
    return rc;
}

int clip_encode_image(clip_model *m, const float *pixels, float *features,
                      clip_dump_fn dump, void *ctx, char *err)
{
    return clip_encode_images(m, pixels, 1, features, dump, ctx, err);
}

/* image_embeds = features / ||features||_2 (likewise text_embeds) */
void clip_normalize(float *v, int n)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)v[i] * v[i];
    if (ss > 0.0) {
        double inv = 1.0 / sqrt(ss);
        for (int i = 0; i < n; i++) v[i] = (float)(v[i] * inv);
    }
}

/* ------------------------------------------------------------------------ */
/* The model file (README.md, "The model file"; convert.py writes it)       */
/* ------------------------------------------------------------------------ */
/* One little-endian file: a 512-byte header, the tokenizer section, the
 * tensor index, the tensors. Each name below is README's and convert.py's
 * (HEADER_FIELDS, HEADER_SLOTS, INDEX_FIELDS) in upper case, after the
 * prefix FIELD_, SLOT_ or ENTRY_. */

#define FORMAT_VERSION 2         /* version 1: every tensor float32; read as well */
#define HEADER_BYTES 512
#define INDEX_ENTRY_BYTES 128
#define NAME_BYTES 96
#define FLAG_SYNTHETIC 1u

enum header_field {                 /* byte offsets in the header */
    FIELD_MAGIC = 0,                /* char[8] "CLIPCMOD" */
    FIELD_VERSION = 8,              /* u32 FORMAT_VERSION */
    FIELD_HEADER_BYTES = 12,        /* u32 HEADER_BYTES */
    FIELD_FILE_BYTES = 16,          /* u64 the file's size */
    FIELD_TOKENIZER_OFFSET = 24,    /* u64 */
    FIELD_TOKENIZER_BYTES = 32,     /* u64 */
    FIELD_INDEX_OFFSET = 40,        /* u64 */
    FIELD_TENSOR_COUNT = 48,        /* u32 */
    FIELD_FLAGS = 52,               /* u32 FLAG_SYNTHETIC */
    FIELD_SLOTS = 56,               /* 64 slots of 4 bytes, enum header_slot */
    FIELD_SOURCE = 312              /* char[128] the checkpoint's name, NUL padded */
};

enum header_slot {                  /* slot indices: i32, or f32 where marked */
    SLOT_PROJECTION_DIM,
    SLOT_VISION_HIDDEN_SIZE, SLOT_VISION_NUM_ATTENTION_HEADS, SLOT_VISION_NUM_HIDDEN_LAYERS,
    SLOT_VISION_INTERMEDIATE_SIZE, SLOT_VISION_HIDDEN_ACT, SLOT_VISION_LAYER_NORM_EPS /* f32 */,
    SLOT_VISION_PATCH_SIZE, SLOT_VISION_IMAGE_SIZE, SLOT_VISION_NUM_CHANNELS,
    SLOT_TEXT_HIDDEN_SIZE, SLOT_TEXT_NUM_ATTENTION_HEADS, SLOT_TEXT_NUM_HIDDEN_LAYERS,
    SLOT_TEXT_INTERMEDIATE_SIZE, SLOT_TEXT_HIDDEN_ACT, SLOT_TEXT_LAYER_NORM_EPS /* f32 */,
    SLOT_TEXT_VOCAB_SIZE, SLOT_TEXT_MAX_POSITION_EMBEDDINGS, SLOT_TEXT_EOS_TOKEN_ID,
    SLOT_SHORTEST_EDGE, SLOT_CROP_HEIGHT, SLOT_CROP_WIDTH,
    SLOT_DO_RESIZE, SLOT_DO_CENTER_CROP, SLOT_DO_RESCALE, SLOT_DO_NORMALIZE,
    SLOT_RESCALE_FACTOR /* f32 */,
    SLOT_IMAGE_MEAN /* f32 x 3 */, SLOT_IMAGE_STD = SLOT_IMAGE_MEAN + 3 /* f32 x 3 */,
    SLOT_COUNT = 64
};

enum index_field {                  /* byte offsets in a tensor index entry */
    ENTRY_NAME = 0,                 /* char[96], NUL padded */
    ENTRY_DTYPE = 96,               /* u32 CLIP_DTYPE_F32, _F16, _Q8 (version 1: F32 only) */
    ENTRY_NDIM = 100,               /* u32, at most 4 */
    ENTRY_SHAPE = 104,              /* u32[4] */
    ENTRY_OFFSET = 120              /* u64 from the start of the file, 64-byte aligned */
};

/* Attention costs tokens^2 per layer while the file grows only with tokens
 * (position embeddings): a forged file with 4096 / 1 = 16.7 million image
 * tokens would run for days. Real checkpoints use 50..1025 image tokens and
 * 77..512 text positions. */
#define MAX_GRID 128          /* at most 128 x 128 patches (16385 tokens) */
#define MAX_POSITIONS 16384

static float rdf32(const uint8_t *p) { uint32_t u = rd32le(p); float f; memcpy(&f, &u, 4); return f; }
static int32_t slot_i(const uint8_t *h, int slot) { return (int32_t)rd32le(h + FIELD_SLOTS + 4 * slot); }
static float slot_f(const uint8_t *h, int slot) { return rdf32(h + FIELD_SLOTS + 4 * slot); }

/* the header's hyperparameters -> the config (checked by check_config) */
static void read_config(const uint8_t *h, clip_config *c)
{
    clip_preprocess_config *pp = &c->preprocess;
    c->synthetic = (rd32le(h + FIELD_FLAGS) & FLAG_SYNTHETIC) != 0;
    c->projection_dim = slot_i(h, SLOT_PROJECTION_DIM);

    c->vision.hidden = slot_i(h, SLOT_VISION_HIDDEN_SIZE);
    c->vision.heads = slot_i(h, SLOT_VISION_NUM_ATTENTION_HEADS);
    c->vision.layers = slot_i(h, SLOT_VISION_NUM_HIDDEN_LAYERS);
    c->vision.intermediate = slot_i(h, SLOT_VISION_INTERMEDIATE_SIZE);
    c->vision.act = slot_i(h, SLOT_VISION_HIDDEN_ACT);
    c->vision.eps = slot_f(h, SLOT_VISION_LAYER_NORM_EPS);
    c->patch = slot_i(h, SLOT_VISION_PATCH_SIZE);
    c->image_size = slot_i(h, SLOT_VISION_IMAGE_SIZE);
    c->channels = slot_i(h, SLOT_VISION_NUM_CHANNELS);

    c->text.hidden = slot_i(h, SLOT_TEXT_HIDDEN_SIZE);
    c->text.heads = slot_i(h, SLOT_TEXT_NUM_ATTENTION_HEADS);
    c->text.layers = slot_i(h, SLOT_TEXT_NUM_HIDDEN_LAYERS);
    c->text.intermediate = slot_i(h, SLOT_TEXT_INTERMEDIATE_SIZE);
    c->text.act = slot_i(h, SLOT_TEXT_HIDDEN_ACT);
    c->text.eps = slot_f(h, SLOT_TEXT_LAYER_NORM_EPS);
    c->vocab_size = slot_i(h, SLOT_TEXT_VOCAB_SIZE);
    c->max_positions = slot_i(h, SLOT_TEXT_MAX_POSITION_EMBEDDINGS);
    c->eos_token_id = slot_i(h, SLOT_TEXT_EOS_TOKEN_ID);

    pp->shortest_edge = slot_i(h, SLOT_SHORTEST_EDGE);
    pp->crop_h = slot_i(h, SLOT_CROP_HEIGHT);
    pp->crop_w = slot_i(h, SLOT_CROP_WIDTH);
    pp->do_resize = slot_i(h, SLOT_DO_RESIZE);
    pp->do_center_crop = slot_i(h, SLOT_DO_CENTER_CROP);
    pp->do_rescale = slot_i(h, SLOT_DO_RESCALE);
    pp->do_normalize = slot_i(h, SLOT_DO_NORMALIZE);
    pp->rescale_factor = slot_f(h, SLOT_RESCALE_FACTOR);
    for (int i = 0; i < 3; i++) {
        pp->mean[i] = slot_f(h, SLOT_IMAGE_MEAN + i);
        pp->std[i] = slot_f(h, SLOT_IMAGE_STD + i);
    }
    memcpy(c->name, h + FIELD_SOURCE, sizeof c->name - 1);
    c->name[sizeof c->name - 1] = 0;
}

static int check_tower(const clip_tower_config *t, const char *which, char *err)
{
    if (t->hidden < 1 || t->hidden > 16384 || t->heads < 1 || t->hidden % t->heads != 0 ||
        t->layers < 1 || t->layers > 256 || t->intermediate < 1 || t->intermediate > 65536 ||
        (t->act != CLIP_ACT_QUICK_GELU && t->act != CLIP_ACT_GELU) || !(t->eps > 0.0f && t->eps < 1.0f)) {
        return clip_fail(err, CLIP_EINPUT,
                "the %s configuration is invalid (hidden %d, heads %d, layers %d, intermediate %d)",
                which, t->hidden, t->heads, t->layers, t->intermediate);
    }
    return CLIP_OK;
}

static int check_config(const clip_config *c, char *err)
{
    const clip_preprocess_config *pp = &c->preprocess;
    if (check_tower(&c->vision, "vision", err) || check_tower(&c->text, "text", err)) return CLIP_EINPUT;
    if (c->projection_dim < 1 || c->projection_dim > 65536 || c->channels != 3 ||
        c->patch < 1 || c->image_size < c->patch || c->image_size > 4096 || c->image_size % c->patch != 0 ||
        c->image_size / c->patch > MAX_GRID ||
        c->vocab_size < 1 || c->vocab_size > (1 << 24) || c->max_positions < 2 || c->max_positions > MAX_POSITIONS ||
        c->eos_token_id < 0 || c->eos_token_id >= c->vocab_size) {
        return clip_fail(err, CLIP_EINPUT, "the model configuration is invalid (corrupt header)");
    }
    if (pp->shortest_edge < 1 || pp->shortest_edge > 4096 || pp->crop_h != c->image_size || pp->crop_w != c->image_size ||
        !(pp->std[0] > 0 && pp->std[1] > 0 && pp->std[2] > 0)) {
        return clip_fail(err, CLIP_EINPUT,
                "the preprocessing configuration is invalid (crop %dx%d for a %d-pixel model)",
                pp->crop_w, pp->crop_h, c->image_size);
    }
    return CLIP_OK;
}

/* The fixed fields and the hyperparameters; the sections are checked by load_model. */
static int parse_header(clip_model *m, char *err)
{
    const uint8_t *h = m->data;
    if (m->size < HEADER_BYTES || memcmp(h + FIELD_MAGIC, "CLIPCMOD", 8) != 0) {
        return clip_fail(err, CLIP_EINPUT,
                "not a clip.c model file (convert a Hugging Face checkpoint with convert.py)");
    }
    if (rd32le(h + FIELD_VERSION) != FORMAT_VERSION && rd32le(h + FIELD_VERSION) != 1) {
        return clip_fail(err, CLIP_EINPUT, "model file version %u is not supported (this build reads versions 1 to %d)",
                rd32le(h + FIELD_VERSION), FORMAT_VERSION);
    }
    if (rd32le(h + FIELD_HEADER_BYTES) != HEADER_BYTES) {
        return clip_fail(err, CLIP_EINPUT, "corrupt header (header size %u)", rd32le(h + FIELD_HEADER_BYTES));
    }
    if (rd64le(h + FIELD_FILE_BYTES) != (uint64_t)m->size) {
        return clip_fail(err, CLIP_EINPUT, "the file is %llu bytes but its header says %llu: truncated or corrupt",
                (unsigned long long)m->size, (unsigned long long)rd64le(h + FIELD_FILE_BYTES));
    }
    read_config(h, &m->config);
    return check_config(&m->config, err);
}

/* The tensor index, searched by name. The first tensor that is missing or
 * misshapen sets `failed` (its reason in err); the lookups after it return
 * NULL at once, and load_weights reports that first reason. */
typedef struct {
    clip_model *m;
    const uint8_t *entries;   /* count entries of INDEX_ENTRY_BYTES */
    uint32_t count;
    int failed;
    char *err;
} tensor_index;

static const char *const DTYPE_NAMES[3] = {"float32", "float16", "q8"};

/* The bytes of a tensor of elems values: a weight [out, ...] is [out, in]
 * with `in` the rest of its shape; q8 pads out to 16 and in to 32 and adds
 * a float32 scale per 32 values (tensor.c, clip_weight_bytes). In 64 bits,
 * so that no shape wraps a 32-bit size_t around. */
static uint64_t tensor_bytes(uint32_t dtype, int ndim, const int *shape, uint64_t elems)
{
    uint64_t out, in;
    if (dtype == CLIP_DTYPE_F32) return 4 * elems;
    if (dtype == CLIP_DTYPE_F16) return 2 * elems;
    out = ndim >= 1 ? (uint64_t)shape[0] : 1;
    in = out ? elems / out : 0;
    return (out + 15) / 16 * 16 * ((in + 31) / 32 * 32) / 32 * 36;
}

/* The data of tensor prefix + name, of exactly the given shape, stored as
 * float32 or (weights == 1) as any dtype the file's version allows; its
 * dtype in *dtype. */
static const void *find_data(tensor_index *ix, const char *prefix, const char *name, int ndim, const int *shape,
                             int weights, int *dtype)
{
    char full[NAME_BYTES + 1];
    if (ix->failed) return NULL;
    snprintf(full, sizeof full, "%s%s", prefix, name);
    for (uint32_t t = 0; t < ix->count; t++) {
        const uint8_t *e = ix->entries + (size_t)t * INDEX_ENTRY_BYTES;
        uint64_t off = rd64le(e + ENTRY_OFFSET), elems = 1, size = ix->m->size, bytes;
        uint32_t dt = rd32le(e + ENTRY_DTYPE), version = rd32le(ix->m->data + FIELD_VERSION);
        if (strncmp((const char *)e + ENTRY_NAME, full, NAME_BYTES) != 0) continue;
        ix->failed = 1;
        if (dt > CLIP_DTYPE_Q8 || (version == 1 && dt != CLIP_DTYPE_F32)) {
            clip_fail(ix->err, CLIP_EINPUT, "tensor %s has dtype %u, which this build does not know (version %u "
                      "files hold %s)", full, dt, version, version == 1 ? "0 float32" : "0 float32, 1 float16, 2 q8");
            return NULL;
        }
        if (dt != CLIP_DTYPE_F32 && !weights) {
            clip_fail(ix->err, CLIP_EINPUT, "tensor %s is %s; layer norms, biases and the class and position "
                      "embeddings must be float32", full, DTYPE_NAMES[dt]);
            return NULL;
        }
        if (rd32le(e + ENTRY_NDIM) != (uint32_t)ndim) {
            clip_fail(ix->err, CLIP_EINPUT, "tensor %s has %u dimensions, expected %d", full, rd32le(e + ENTRY_NDIM),
                      ndim);
            return NULL;
        }
        for (int i = 0; i < ndim; i++) {
            uint32_t dim = rd32le(e + ENTRY_SHAPE + 4 * i);
            if (dim != (uint32_t)shape[i]) {
                clip_fail(ix->err, CLIP_EINPUT, "tensor %s has dimension %d of size %u, expected %d", full, i, dim,
                          shape[i]);
                return NULL;
            }
            elems *= (uint64_t)shape[i];
        }
        bytes = tensor_bytes(dt, ndim, shape, elems);
        if (off % 64 != 0 || off < HEADER_BYTES || off > size || bytes > size - off) {
            clip_fail(ix->err, CLIP_EINPUT, "tensor %s lies outside the file (truncated or corrupt)", full);
            return NULL;
        }
        ix->failed = 0;
        ix->m->dtype_values[dt] += (size_t)elems;
        ix->m->dtype_bytes[dt] += (size_t)bytes;
        *dtype = (int)dt;
        return ix->m->data + off;
    }
    clip_fail(ix->err, CLIP_EINPUT, "tensor %s is missing", full);
    ix->failed = 1;
    return NULL;
}

/* a float32 tensor (norms, biases, the class and position embeddings) */
static const float *find_tensor(tensor_index *ix, const char *prefix, const char *name, int ndim, const int *shape)
{
    int dtype;
    return find_data(ix, prefix, name, ndim, shape, 0, &dtype);
}

/* a weight [out, in] of any dtype: the linear layers, the projections and
 * the patch and token embeddings */
static clip_weight find_weight(tensor_index *ix, const char *prefix, const char *name, int ndim, const int *shape)
{
    clip_weight w;
    w.dtype = CLIP_DTYPE_F32;
    w.data = find_data(ix, prefix, name, ndim, shape, 1, &w.dtype);
    return w;
}

/* the tensors of layer l of `tower` ("text_model" or "vision_model") */
static void load_layer(tensor_index *ix, const char *tower, int l, const clip_tower_config *c, clip_layer *L)
{
    char p[NAME_BYTES];
    int d = c->hidden, f = c->intermediate;
    snprintf(p, sizeof p, "%s.encoder.layers.%d.", tower, l);
    L->ln1_w = find_tensor(ix, p, "layer_norm1.weight", 1, (const int[]){d});
    L->ln1_b = find_tensor(ix, p, "layer_norm1.bias", 1, (const int[]){d});
    L->q_w = find_weight(ix, p, "self_attn.q_proj.weight", 2, (const int[]){d, d});
    L->q_b = find_tensor(ix, p, "self_attn.q_proj.bias", 1, (const int[]){d});
    L->k_w = find_weight(ix, p, "self_attn.k_proj.weight", 2, (const int[]){d, d});
    L->k_b = find_tensor(ix, p, "self_attn.k_proj.bias", 1, (const int[]){d});
    L->v_w = find_weight(ix, p, "self_attn.v_proj.weight", 2, (const int[]){d, d});
    L->v_b = find_tensor(ix, p, "self_attn.v_proj.bias", 1, (const int[]){d});
    L->o_w = find_weight(ix, p, "self_attn.out_proj.weight", 2, (const int[]){d, d});
    L->o_b = find_tensor(ix, p, "self_attn.out_proj.bias", 1, (const int[]){d});
    L->ln2_w = find_tensor(ix, p, "layer_norm2.weight", 1, (const int[]){d});
    L->ln2_b = find_tensor(ix, p, "layer_norm2.bias", 1, (const int[]){d});
    L->fc1_w = find_weight(ix, p, "mlp.fc1.weight", 2, (const int[]){f, d});
    L->fc1_b = find_tensor(ix, p, "mlp.fc1.bias", 1, (const int[]){f});
    L->fc2_w = find_weight(ix, p, "mlp.fc2.weight", 2, (const int[]){d, f});
    L->fc2_b = find_tensor(ix, p, "mlp.fc2.bias", 1, (const int[]){d});
}

/* every tensor CLIPModel uses, in the order of its modules */
static int load_weights(clip_model *m, const uint8_t *entries, uint32_t count, char *err)
{
    const clip_config *c = &m->config;
    clip_weights *w = &m->w;
    int td = c->text.hidden, vd = c->vision.hidden, p = c->patch, grid = c->image_size / c->patch;
    int proj = c->projection_dim;
    tensor_index ix = {m, entries, count, 0, err};

    w->token_embedding = find_weight(&ix, "text_model.embeddings.", "token_embedding.weight", 2, (const int[]){c->vocab_size, td});
    w->text_position_embedding = find_tensor(&ix, "text_model.embeddings.", "position_embedding.weight", 2,
                                             (const int[]){c->max_positions, td});
    for (int l = 0; l < c->text.layers; l++) load_layer(&ix, "text_model", l, &c->text, &w->text_layers[l]);
    w->final_ln_w = find_tensor(&ix, "text_model.", "final_layer_norm.weight", 1, (const int[]){td});
    w->final_ln_b = find_tensor(&ix, "text_model.", "final_layer_norm.bias", 1, (const int[]){td});
    w->text_projection = find_weight(&ix, "", "text_projection.weight", 2, (const int[]){proj, td});

    w->class_embedding = find_tensor(&ix, "vision_model.embeddings.", "class_embedding", 1, (const int[]){vd});
    w->patch_embedding = find_weight(&ix, "vision_model.embeddings.", "patch_embedding.weight", 4,
                                     (const int[]){vd, c->channels, p, p});
    w->vision_position_embedding = find_tensor(&ix, "vision_model.embeddings.", "position_embedding.weight", 2,
                                               (const int[]){1 + grid * grid, vd});
    w->pre_ln_w = find_tensor(&ix, "vision_model.", "pre_layrnorm.weight", 1, (const int[]){vd});
    w->pre_ln_b = find_tensor(&ix, "vision_model.", "pre_layrnorm.bias", 1, (const int[]){vd});
    for (int l = 0; l < c->vision.layers; l++) load_layer(&ix, "vision_model", l, &c->vision, &w->vision_layers[l]);
    w->post_ln_w = find_tensor(&ix, "vision_model.", "post_layernorm.weight", 1, (const int[]){vd});
    w->post_ln_b = find_tensor(&ix, "vision_model.", "post_layernorm.bias", 1, (const int[]){vd});
    w->visual_projection = find_weight(&ix, "", "visual_projection.weight", 2, (const int[]){proj, vd});
    w->logit_scale = find_tensor(&ix, "", "logit_scale", 0, NULL);
    return ix.failed ? CLIP_EINPUT : CLIP_OK;
}

static int map_file(clip_model *m, const char *path, char *err)
{
    struct stat st;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return clip_fail(err, CLIP_EIO, "%s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return clip_fail(err, CLIP_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > (uint64_t)(size_t)-1) {
        close(fd);
        return clip_fail(err, CLIP_ENOMEM, "%s: the file is too large for this machine's address space", path);
    }
    m->size = (size_t)st.st_size;
    if (m->size == 0) {
        close(fd);
        return clip_fail(err, CLIP_EINPUT, "%s: the file is empty", path);
    }
    void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p != MAP_FAILED) {
        m->data = p;
        m->mapped = 1;
#if defined(MADV_HUGEPAGE) && !defined(__EMSCRIPTEN__)
        /* Map in 2 MiB pages where the page cache holds the file that way
         * (convert.py writes it so) and read it that way when it does not
         * hold it yet: 256 times fewer page faults, each costly in a virtual
         * machine. Only advice; an error changes nothing. */
        madvise(p, m->size, MADV_HUGEPAGE);
#endif
    } else {   /* no mmap (some WASM file systems): read it whole */
        uint8_t *buf = malloc(m->size);
        size_t got = 0;
        if (!buf) {
            close(fd);
            return clip_fail(err, CLIP_ENOMEM, "%s: out of memory reading %zu bytes", path, m->size);
        }
        while (got < m->size) {
            ssize_t r = read(fd, buf + got, m->size - got);
            if (r <= 0) {
                free(buf);
                close(fd);
                return clip_fail(err, CLIP_EIO, "%s: read error", path);
            }
            got += (size_t)r;
        }
        m->data = buf;
    }
    close(fd);
    return CLIP_OK;
}

/* Everything after the bytes are in memory: header, tokenizer, tensors. */
static int load_model(clip_model *m, const char *name, char *err)
{
    char why[CLIP_ERR_SIZE] = "";
    int rc;
    const uint8_t *h = m->data;
    uint64_t tok_off, tok_len, idx_off;
    uint32_t count;

    if ((rc = parse_header(m, why))) goto fail;
    tok_off = rd64le(h + FIELD_TOKENIZER_OFFSET);
    tok_len = rd64le(h + FIELD_TOKENIZER_BYTES);
    idx_off = rd64le(h + FIELD_INDEX_OFFSET);
    count = rd32le(h + FIELD_TENSOR_COUNT);
    if (tok_off < HEADER_BYTES || tok_off > m->size || tok_len > m->size - tok_off ||
        idx_off < HEADER_BYTES || idx_off % 8 != 0 || idx_off > m->size ||
        count > (m->size - idx_off) / INDEX_ENTRY_BYTES) {
        rc = clip_fail(why, CLIP_EINPUT, "section offsets lie outside the file (truncated or corrupt)");
        goto fail;
    }
    if ((rc = clip_tokenizer_load(&m->tokenizer, m->data + tok_off, (size_t)tok_len, why))) goto fail;
    m->w.text_layers = calloc((size_t)m->config.text.layers, sizeof(clip_layer));
    m->w.vision_layers = calloc((size_t)m->config.vision.layers, sizeof(clip_layer));
    if (!m->w.text_layers || !m->w.vision_layers) {
        rc = clip_fail(why, CLIP_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = load_weights(m, m->data + idx_off, count, why))) goto fail;
    return CLIP_OK;
fail:
    return clip_fail(err, rc, "%s: %s", name, why);
}

static int check_little_endian(char *err)
{
    const uint16_t one = 1;
    if (*(const uint8_t *)&one == 1) return CLIP_OK;
    return clip_fail(err, CLIP_EINPUT, "this build supports little-endian machines only");
}

/* Start-up: the first text reads every weight of the text layers (12 x 12 MB
 * for ViT-B/32), and each page it touches first costs a page fault, tens of
 * microseconds in a virtual machine. One madvise(MADV_POPULATE_READ) (Linux
 * 5.14) maps the file's pages of those layers at once, already in the page
 * cache or read now; nothing of the token embedding (a text reads a few of
 * its rows) or the vision tower. Only advice: on an older kernel or another
 * system it does nothing, and the pages are mapped as they are first read. */
static void populate_text_layers(const clip_model *m)
{
#if defined(MADV_POPULATE_READ) && !defined(__EMSCRIPTEN__)
    const uint8_t *lo = m->data + m->size, *hi = m->data;
    for (int l = 0; l < m->config.text.layers; l++) {
        const clip_layer *L = &m->w.text_layers[l];
        const void *t[] = {L->ln1_w, L->ln1_b, L->q_w.data, L->k_w.data, L->v_w.data, L->q_b, L->k_b, L->v_b,
                           L->o_w.data, L->o_b, L->ln2_w, L->ln2_b, L->fc1_w.data, L->fc1_b, L->fc2_w.data, L->fc2_b};
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
            const uint8_t *q = t[i];
            lo = q < lo ? q : lo;
            hi = q > hi ? q : hi;
        }
    }
    /* the layers lie together, final_layer_norm after them (convert.py's order) */
    if ((const uint8_t *)m->w.final_ln_w > hi) hi = (const uint8_t *)m->w.final_ln_w;
    lo = m->data + (size_t)(lo - m->data) / 4096 * 4096;   /* madvise wants a page boundary */
    if (lo < hi) madvise((void *)lo, (size_t)(hi - lo), MADV_POPULATE_READ);
#else
    (void)m;
#endif
}

int clip_load(clip_model **out, const char *path, char *err)
{
    int rc;
    clip_model *m;
    *out = NULL;
    if ((rc = check_little_endian(err))) return rc;
    if (!(m = calloc(1, sizeof *m))) return clip_fail(err, CLIP_ENOMEM, "out of memory");
    m->owned = 1;
    if ((rc = map_file(m, path, err)) || (rc = load_model(m, path, err))) { clip_free(m); return rc; }
    if (m->mapped) populate_text_layers(m);
    *out = m;
    return CLIP_OK;
}

int clip_load_memory(clip_model **out, const uint8_t *data, size_t size, char *err)
{
    int rc;
    clip_model *m;
    *out = NULL;
    if ((rc = check_little_endian(err))) return rc;
    if ((uintptr_t)data % 64 != 0) return clip_fail(err, CLIP_EINPUT, "model data must be 64-byte aligned in memory");
    if (!(m = calloc(1, sizeof *m))) return clip_fail(err, CLIP_ENOMEM, "out of memory");
    m->data = data;
    m->size = size;
    if ((rc = load_model(m, "model", err))) { clip_free(m); return rc; }
    *out = m;
    return CLIP_OK;
}

void clip_free(clip_model *m)
{
    if (!m) return;
    clip_tokenizer_free(m->tokenizer);
    free(m->w.text_layers);
    free(m->w.vision_layers);
    if (m->mapped) munmap((void *)m->data, m->size);
    else if (m->owned) free((void *)m->data);
    free(m);
}

const clip_config *clip_get_config(const clip_model *m) { return &m->config; }
const clip_tokenizer *clip_get_tokenizer(const clip_model *m) { return m->tokenizer; }
float clip_logit_scale(const clip_model *m) { return (float)clip_exp(m->w.logit_scale[0]); }
size_t clip_file_size(const clip_model *m) { return m->size; }

size_t clip_dtype_bytes(const clip_model *m, int dtype, size_t *values)
{
    int ok = dtype >= CLIP_DTYPE_F32 && dtype <= CLIP_DTYPE_Q8;
    if (values) *values = ok ? m->dtype_values[dtype] : 0;
    return ok ? m->dtype_bytes[dtype] : 0;
}
