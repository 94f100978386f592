/* clip.c - the model: load a converted file, run the two towers.
 *
 * Reproduces Hugging Face's CLIPModel (transformers/models/clip/modeling_clip.py):
 *   get_text_features:  CLIPTextTransformer  -> text_projection
 *   get_image_features: CLIPVisionTransformer -> visual_projection
 * The weights are mmap'ed from the file convert.py writes (layout in README.md,
 * "The model file"); nothing is copied. Scratch memory is allocated per call.
 */
#define _POSIX_C_SOURCE 200809L   /* mmap, open, fstat */
#define _DEFAULT_SOURCE           /* madvise, where the C library has it */
#include "clip.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/mman.h>

#define HEADER_BYTES 512
#define INDEX_ENTRY_BYTES 128
#define NAME_BYTES 96
/* Attention costs tokens^2 per layer while the file grows only with tokens
 * (position embeddings): a forged file with 4096 / 1 = 16.7 million image
 * tokens would run for days. Real checkpoints use 50..1025 image tokens and
 * 77..512 text positions. */
#define MAX_GRID 128          /* at most 128 x 128 patches (16385 tokens) */
#define MAX_POSITIONS 16384

/* One encoder layer's weights (CLIPEncoderLayer). Linear weights are [out, in]. */
typedef struct {
    const float *ln1_w, *ln1_b;            /* layer_norm1 [d] */
    const float *q_w, *q_b, *k_w, *k_b;    /* self_attn.{q,k,v}_proj [d, d], [d] */
    const float *v_w, *v_b, *o_w, *o_b;    /* self_attn.out_proj [d, d], [d] */
    const float *ln2_w, *ln2_b;            /* layer_norm2 [d] */
    const float *fc1_w, *fc1_b;            /* mlp.fc1 [inter, d], [inter] */
    const float *fc2_w, *fc2_b;            /* mlp.fc2 [d, inter], [d] */
} clip_layer;

typedef struct {
    /* text_model */
    const float *token_embedding;          /* [vocab, d] */
    const float *text_position_embedding;  /* [max_positions, d] */
    clip_layer *text_layers;
    const float *final_ln_w, *final_ln_b;  /* [d] */
    const float *text_projection;          /* [proj, d] */
    /* vision_model */
    const float *class_embedding;          /* [d] */
    const float *patch_embedding;          /* [d, 3, p, p] */
    const float *vision_position_embedding;/* [1 + (S/p)^2, d] */
    const float *pre_ln_w, *pre_ln_b;      /* pre_layrnorm [d] */
    clip_layer *vision_layers;
    const float *post_ln_w, *post_ln_b;    /* post_layernorm [d] */
    const float *visual_projection;        /* [proj, d] */
    const float *logit_scale;              /* [] */
} clip_weights;

struct clip_model {
    clip_config config;
    clip_weights w;
    clip_tokenizer *tokenizer;
    const uint8_t *data;   /* the whole file */
    size_t size;
    int mapped;            /* data came from mmap */
    int owned;             /* data belongs to the model (mmap or malloc), not to the caller */
};

static void set_err(char *err, const char *fmt, ...)
{
    va_list ap;
    if (!err) return;
    va_start(ap, fmt);
    vsnprintf(err, CLIP_ERR_SIZE, fmt, ap);
    va_end(ap);
}

static uint32_t rd32(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static float rdf32(const uint8_t *p) { uint32_t u = rd32(p); float f; memcpy(&f, &u, 4); return f; }

/* ------------------------------------------------------------------------ */
/* Loading: header, tokenizer, tensor index (README.md, "The model file")    */
/* ------------------------------------------------------------------------ */

/* Find tensor `name` and check it has exactly the expected shape. */
static const float *find_tensor(const clip_model *m, const uint8_t *index, uint32_t count,
                                const char *name, int ndim, const int *shape, char *err)
{
    for (uint32_t t = 0; t < count; t++) {
        const uint8_t *e = index + (size_t)t * INDEX_ENTRY_BYTES;
        if (strncmp((const char *)e, name, NAME_BYTES) != 0) continue;
        uint32_t dtype = rd32(e + 96), nd = rd32(e + 100);
        uint64_t off = rd64(e + 120), elems = 1;
        if (dtype != 0) { set_err(err, "tensor %s is not float32", name); return NULL; }
        if (nd != (uint32_t)ndim) { set_err(err, "tensor %s has %u dimensions, expected %d", name, nd, ndim); return NULL; }
        for (int i = 0; i < ndim; i++) {
            if (rd32(e + 104 + 4 * i) != (uint32_t)shape[i]) {
                set_err(err, "tensor %s has dimension %d of size %u, expected %d", name, i, rd32(e + 104 + 4 * i), shape[i]);
                return NULL;
            }
            elems *= (uint64_t)shape[i];
        }
        if (off % 64 != 0 || off < HEADER_BYTES || off > m->size || elems > (m->size - off) / 4) {
            set_err(err, "tensor %s lies outside the file (truncated or corrupt)", name);
            return NULL;
        }
        return (const float *)(const void *)(m->data + off);
    }
    set_err(err, "tensor %s is missing", name);
    return NULL;
}

#define T1(ptr, name, a) do { int s_[1] = {a}; if (!((ptr) = find_tensor(m, index, count, name, 1, s_, err))) return CLIP_EINPUT; } while (0)
#define T2(ptr, name, a, b) do { int s_[2] = {a, b}; if (!((ptr) = find_tensor(m, index, count, name, 2, s_, err))) return CLIP_EINPUT; } while (0)

static int load_layers(clip_model *m, const uint8_t *index, uint32_t count, const char *tower,
                       const clip_tower_config *c, clip_layer *layers, char *err)
{
    char name[NAME_BYTES];
    int d = c->hidden, f = c->intermediate;
#define LNAME(suffix) (snprintf(name, sizeof name, "%s.encoder.layers.%d.%s", tower, l, suffix), name)
    for (int l = 0; l < c->layers; l++) {
        clip_layer *L = &layers[l];
        T1(L->ln1_w, LNAME("layer_norm1.weight"), d);     T1(L->ln1_b, LNAME("layer_norm1.bias"), d);
        T2(L->q_w, LNAME("self_attn.q_proj.weight"), d, d); T1(L->q_b, LNAME("self_attn.q_proj.bias"), d);
        T2(L->k_w, LNAME("self_attn.k_proj.weight"), d, d); T1(L->k_b, LNAME("self_attn.k_proj.bias"), d);
        T2(L->v_w, LNAME("self_attn.v_proj.weight"), d, d); T1(L->v_b, LNAME("self_attn.v_proj.bias"), d);
        T2(L->o_w, LNAME("self_attn.out_proj.weight"), d, d); T1(L->o_b, LNAME("self_attn.out_proj.bias"), d);
        T1(L->ln2_w, LNAME("layer_norm2.weight"), d);     T1(L->ln2_b, LNAME("layer_norm2.bias"), d);
        T2(L->fc1_w, LNAME("mlp.fc1.weight"), f, d);      T1(L->fc1_b, LNAME("mlp.fc1.bias"), f);
        T2(L->fc2_w, LNAME("mlp.fc2.weight"), d, f);      T1(L->fc2_b, LNAME("mlp.fc2.bias"), d);
    }
#undef LNAME
    return CLIP_OK;
}

static int load_weights(clip_model *m, const uint8_t *index, uint32_t count, char *err)
{
    const clip_config *c = &m->config;
    clip_weights *w = &m->w;
    int td = c->text.hidden, vd = c->vision.hidden, p = c->patch, grid = c->image_size / c->patch;
    int rc;

    T2(w->token_embedding, "text_model.embeddings.token_embedding.weight", c->vocab_size, td);
    T2(w->text_position_embedding, "text_model.embeddings.position_embedding.weight", c->max_positions, td);
    if ((rc = load_layers(m, index, count, "text_model", &c->text, w->text_layers, err))) return rc;
    T1(w->final_ln_w, "text_model.final_layer_norm.weight", td);
    T1(w->final_ln_b, "text_model.final_layer_norm.bias", td);
    T2(w->text_projection, "text_projection.weight", c->projection_dim, td);

    T1(w->class_embedding, "vision_model.embeddings.class_embedding", vd);
    {
        int s[4] = {vd, c->channels, p, p};
        if (!(w->patch_embedding = find_tensor(m, index, count, "vision_model.embeddings.patch_embedding.weight", 4, s, err)))
            return CLIP_EINPUT;
    }
    T2(w->vision_position_embedding, "vision_model.embeddings.position_embedding.weight", 1 + grid * grid, vd);
    T1(w->pre_ln_w, "vision_model.pre_layrnorm.weight", vd);
    T1(w->pre_ln_b, "vision_model.pre_layrnorm.bias", vd);
    if ((rc = load_layers(m, index, count, "vision_model", &c->vision, w->vision_layers, err))) return rc;
    T1(w->post_ln_w, "vision_model.post_layernorm.weight", vd);
    T1(w->post_ln_b, "vision_model.post_layernorm.bias", vd);
    T2(w->visual_projection, "visual_projection.weight", c->projection_dim, vd);
    if (!(w->logit_scale = find_tensor(m, index, count, "logit_scale", 0, NULL, err))) return CLIP_EINPUT;
    return CLIP_OK;
}
#undef T1
#undef T2

static int check_tower(const clip_tower_config *t, const char *which, char *err)
{
    if (t->hidden < 1 || t->hidden > 16384 || t->heads < 1 || t->hidden % t->heads != 0 ||
        t->layers < 1 || t->layers > 256 || t->intermediate < 1 || t->intermediate > 65536 ||
        (t->act != CLIP_ACT_QUICK_GELU && t->act != CLIP_ACT_GELU) || !(t->eps > 0.0f && t->eps < 1.0f)) {
        set_err(err, "the %s configuration is invalid (hidden %d, heads %d, layers %d, intermediate %d)",
                which, t->hidden, t->heads, t->layers, t->intermediate);
        return CLIP_EINPUT;
    }
    return CLIP_OK;
}

/* Read the 512-byte header: sizes, hyperparameters, preprocessing. */
static int parse_header(clip_model *m, char *err)
{
    const uint8_t *h = m->data, *s = h + 56;
    clip_config *c = &m->config;
    clip_preprocess_config *pp = &c->preprocess;
#define SLOT(k) ((int32_t)rd32(s + 4 * (k)))
#define SLOTF(k) rdf32(s + 4 * (k))
    if (m->size < HEADER_BYTES || memcmp(h, "CLIPCMOD", 8) != 0) {
        set_err(err, "not a clip.c model file (convert a Hugging Face checkpoint with convert.py)");
        return CLIP_EINPUT;
    }
    if (rd32(h + 8) != 1) { set_err(err, "model file version %u is not supported (this build reads version 1)", rd32(h + 8)); return CLIP_EINPUT; }
    if (rd32(h + 12) != HEADER_BYTES) { set_err(err, "corrupt header (header size %u)", rd32(h + 12)); return CLIP_EINPUT; }
    if (rd64(h + 16) != (uint64_t)m->size) {
        set_err(err, "the file is %llu bytes but its header says %llu: truncated or corrupt",
                (unsigned long long)m->size, (unsigned long long)rd64(h + 16));
        return CLIP_EINPUT;
    }
    c->synthetic = rd32(h + 52) & 1;
    c->projection_dim = SLOT(0);
    c->vision.hidden = SLOT(1); c->vision.heads = SLOT(2); c->vision.layers = SLOT(3);
    c->vision.intermediate = SLOT(4); c->vision.act = SLOT(5); c->vision.eps = SLOTF(6);
    c->patch = SLOT(7); c->image_size = SLOT(8); c->channels = SLOT(9);
    c->text.hidden = SLOT(10); c->text.heads = SLOT(11); c->text.layers = SLOT(12);
    c->text.intermediate = SLOT(13); c->text.act = SLOT(14); c->text.eps = SLOTF(15);
    c->vocab_size = SLOT(16); c->max_positions = SLOT(17); c->eos_token_id = SLOT(18);
    pp->shortest_edge = SLOT(19); pp->crop_h = SLOT(20); pp->crop_w = SLOT(21);
    pp->do_resize = SLOT(22); pp->do_center_crop = SLOT(23); pp->do_rescale = SLOT(24); pp->do_normalize = SLOT(25);
    pp->rescale_factor = SLOTF(26);
    for (int i = 0; i < 3; i++) { pp->mean[i] = SLOTF(27 + i); pp->std[i] = SLOTF(30 + i); }
#undef SLOT
#undef SLOTF
    memcpy(c->name, h + 312, sizeof c->name - 1);
    c->name[sizeof c->name - 1] = 0;

    if (check_tower(&c->vision, "vision", err) || check_tower(&c->text, "text", err)) return CLIP_EINPUT;
    if (c->projection_dim < 1 || c->projection_dim > 65536 || c->channels != 3 ||
        c->patch < 1 || c->image_size < c->patch || c->image_size > 4096 || c->image_size % c->patch != 0 ||
        c->image_size / c->patch > MAX_GRID ||
        c->vocab_size < 1 || c->vocab_size > (1 << 24) || c->max_positions < 2 || c->max_positions > MAX_POSITIONS ||
        c->eos_token_id < 0 || c->eos_token_id >= c->vocab_size) {
        set_err(err, "the model configuration is invalid (corrupt header)");
        return CLIP_EINPUT;
    }
    if (pp->shortest_edge < 1 || pp->shortest_edge > 4096 || pp->crop_h != c->image_size || pp->crop_w != c->image_size ||
        !(pp->std[0] > 0 && pp->std[1] > 0 && pp->std[2] > 0)) {
        set_err(err, "the preprocessing configuration is invalid (crop %dx%d for a %d-pixel model)",
                pp->crop_w, pp->crop_h, c->image_size);
        return CLIP_EINPUT;
    }
    return CLIP_OK;
}

static int map_file(clip_model *m, const char *path, char *err)
{
    struct stat st;
    int fd = open(path, O_RDONLY);
    if (fd < 0) { set_err(err, "%s: %s", path, strerror(errno)); return CLIP_EIO; }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        set_err(err, "%s: not a regular file", path);
        close(fd);
        return CLIP_EIO;
    }
    if ((uint64_t)st.st_size > (uint64_t)(size_t)-1) {
        set_err(err, "%s: the file is too large for this machine's address space", path);
        close(fd);
        return CLIP_ENOMEM;
    }
    m->size = (size_t)st.st_size;
    if (m->size == 0) { set_err(err, "%s: the file is empty", path); close(fd); return CLIP_EINPUT; }
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
        if (!buf) { set_err(err, "%s: out of memory reading %zu bytes", path, m->size); close(fd); return CLIP_ENOMEM; }
        while (got < m->size) {
            ssize_t r = read(fd, buf + got, m->size - got);
            if (r <= 0) { set_err(err, "%s: read error", path); free(buf); close(fd); return CLIP_EIO; }
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
    tok_off = rd64(h + 24); tok_len = rd64(h + 32); idx_off = rd64(h + 40); count = rd32(h + 48);
    if (tok_off < HEADER_BYTES || tok_off > m->size || tok_len > m->size - tok_off ||
        idx_off < HEADER_BYTES || idx_off % 8 != 0 || idx_off > m->size ||
        count > (m->size - idx_off) / INDEX_ENTRY_BYTES) {
        snprintf(why, sizeof why, "section offsets lie outside the file (truncated or corrupt)");
        rc = CLIP_EINPUT;
        goto fail;
    }
    if ((rc = clip_tokenizer_load(&m->tokenizer, m->data + tok_off, (size_t)tok_len, why))) goto fail;
    m->w.text_layers = calloc((size_t)m->config.text.layers, sizeof(clip_layer));
    m->w.vision_layers = calloc((size_t)m->config.vision.layers, sizeof(clip_layer));
    if (!m->w.text_layers || !m->w.vision_layers) { snprintf(why, sizeof why, "out of memory"); rc = CLIP_ENOMEM; goto fail; }
    if ((rc = load_weights(m, m->data + idx_off, count, why))) goto fail;
    return CLIP_OK;
fail:
    set_err(err, "%s: %s", name, why);
    return rc;
}

static int little_endian(char *err)
{
    const uint16_t one = 1;
    if (*(const uint8_t *)&one == 1) return 1;
    set_err(err, "this build supports little-endian machines only");
    return 0;
}

int clip_load(clip_model **out, const char *path, char *err)
{
    int rc;
    clip_model *m;
    *out = NULL;
    if (!little_endian(err)) return CLIP_EINPUT;
    if (!(m = calloc(1, sizeof *m))) { set_err(err, "out of memory"); return CLIP_ENOMEM; }
    m->owned = 1;
    if ((rc = map_file(m, path, err)) || (rc = load_model(m, path, err))) { clip_free(m); return rc; }
    *out = m;
    return CLIP_OK;
}

int clip_load_memory(clip_model **out, const uint8_t *data, size_t size, char *err)
{
    int rc;
    clip_model *m;
    *out = NULL;
    if (!little_endian(err)) return CLIP_EINPUT;
    if ((uintptr_t)data % 64 != 0) { set_err(err, "model data must be 64-byte aligned in memory"); return CLIP_EINPUT; }
    if (!(m = calloc(1, sizeof *m))) { set_err(err, "out of memory"); return CLIP_ENOMEM; }
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
float clip_logit_scale(const clip_model *m) { return expf(m->w.logit_scale[0]); }
size_t clip_file_size(const clip_model *m) { return m->size; }

/* ------------------------------------------------------------------------ */
/* The encoder (CLIPEncoder), shared by both towers                          */
/* ------------------------------------------------------------------------ */

static void dump_stage(clip_dump_fn dump, void *ctx, const char *name, const float *x, int batch, int a, int b)
{
    int shape[3] = {batch, a, b};
    if (!dump) return;
    if (batch == 1) dump(ctx, name, x, 2, shape + 1);
    else dump(ctx, name, x, 3, shape);
}

/* The halves of a CLIPEncoderLayer that work row by row, on `rows` rows:
 * q, k, v = q_proj, k_proj, v_proj(layer_norm1(x)) (h: scratch [rows, d]) */
static void layer_qkv(float *q, float *k, float *v, float *h, const float *x, const clip_layer *L,
                      const clip_tower_config *c, int rows)
{
    float *qkv[3] = {q, k, v};
    const float *w[3] = {L->q_w, L->k_w, L->v_w}, *bias[3] = {L->q_b, L->k_b, L->v_b};
    clip_layer_norm(h, x, L->ln1_w, L->ln1_b, rows, c->hidden, c->eps);
    clip_linear3(qkv, h, w, bias, rows, c->hidden, c->hidden);
}

/* x += fc2(act(fc1(layer_norm2(x)))) (h: scratch [rows, d], f: [rows, intermediate]) */
static void layer_mlp(float *x, float *h, float *f, const clip_layer *L, const clip_tower_config *c, int rows)
{
    int d = c->hidden;
    clip_layer_norm(h, x, L->ln2_w, L->ln2_b, rows, d, c->eps);
    clip_linear(f, h, L->fc1_w, L->fc1_b, rows, d, c->intermediate);
    if (c->act == CLIP_ACT_GELU) clip_gelu(f, (size_t)rows * c->intermediate);
    else clip_quick_gelu(f, (size_t)rows * c->intermediate);
    clip_linear(h, f, L->fc2_w, L->fc2_b, rows, c->intermediate, d);
    for (size_t i = 0; i < (size_t)rows * d; i++) x[i] += h[i];
}

/* CLIPEncoderLayer, pre-norm, on x[batch * n, d] in place (batch sequences of n tokens):
 *   x += out_proj(attention(layer_norm1(x)))
 *   x += fc2(act(fc1(layer_norm2(x))))
 * The matrix products run over all batch * n rows at once, so a batch shares
 * every read of the weights; attention runs per sequence.
 * buf holds 5*rows*d + rows*inter + n*n floats. */
static void encoder_layer(float *x, const clip_layer *L, const clip_tower_config *c, int batch, int n,
                          int causal, float *buf)
{
    int d = c->hidden, hd = d / c->heads, rows = batch * n;
    size_t nd = (size_t)rows * d;
    float *h = buf, *q = h + nd, *k = q + nd, *v = k + nd, *o = v + nd, *f = o + nd, *s = f + (size_t)rows * c->intermediate;
    float scale = 1.0f / sqrtf((float)hd);

    layer_qkv(q, k, v, h, x, L, c, rows);
    for (size_t i = 0; i < nd; i++) q[i] *= scale;
    for (int b = 0; b < batch; b++) {
        size_t off = (size_t)b * n * d;
        clip_attention(o + off, q + off, k + off, v + off, n, c->heads, hd, causal, s);
    }
    clip_linear(h, o, L->o_w, L->o_b, rows, d, d);
    for (size_t i = 0; i < nd; i++) x[i] += h[i];
    layer_mlp(x, h, f, L, c, rows);
}

/* The same layer when only token pool[b] of sequence b is read after it
 * (the last layer, when no hidden state is dumped: the class token of an
 * image, pool NULL for row 0; the end-of-text token of a text). Keys and
 * values are needed for every token; the query, attention, out_proj and MLP
 * only for the batch pooled rows, gathered into xp, which saves most of the
 * layer. The other rows of x are left as they were. Same buffer as
 * encoder_layer; n >= 2. */
static void encoder_layer_pooled(float *x, const clip_layer *L, const clip_tower_config *c, int batch, int n,
                                 int causal, const int *pool, float *buf)
{
    int d = c->hidden, hd = d / c->heads, rows = batch * n;
    size_t nd = (size_t)rows * d, bd = (size_t)batch * d;
    float *h = buf, *q = h + nd, *k = q + nd, *v = k + nd, *o = v + nd, *f = o + nd, *s = f + (size_t)rows * c->intermediate;
    float *xp = h, *hp = h + bd;   /* h (and q after attention) are free by then */
    float scale = 1.0f / sqrtf((float)hd);

    layer_qkv(q, k, v, h, x, L, c, rows);
    for (int b = 0; b < batch; b++) {
        int pb = pool ? pool[b] : 0;
        size_t row = (size_t)b * n + pb, off = (size_t)b * n * d;
        for (int i = 0; i < d; i++) q[row * d + i] *= scale;
        clip_attention_query(o + (size_t)b * d, q + row * d, k + off, v + off, causal ? pb + 1 : n, c->heads, hd, s);
        memcpy(xp + (size_t)b * d, x + row * d, (size_t)d * sizeof(float));
    }
    clip_linear(hp, o, L->o_w, L->o_b, batch, d, d);
    for (size_t i = 0; i < bd; i++) xp[i] += hp[i];
    layer_mlp(xp, hp, f, L, c, batch);
    for (int b = 0; b < batch; b++)
        memcpy(x + ((size_t)b * n + (pool ? pool[b] : 0)) * d, xp + (size_t)b * d, (size_t)d * sizeof(float));
}

/* CLIPEncoder: the layers in turn, dumping "<tower>_hidden_NN" before each
 * layer and after the last (Hugging Face's hidden_states). Without a dump,
 * the last layer computes only row pool[b] of each sequence b (row 0 when
 * pool is NULL). */
static void encoder(float *x, const clip_layer *layers, const clip_tower_config *c, int batch, int n, int causal,
                    const int *pool, float *buf, const char *tower, clip_dump_fn dump, void *ctx)
{
    char name[64];
    for (int l = 0; l <= c->layers; l++) {
        if (dump) {
            snprintf(name, sizeof name, "%s_hidden_%02d", tower, l);
            dump_stage(dump, ctx, name, x, batch, n, c->hidden);
        }
        if (l == c->layers - 1 && !dump && n >= 2) encoder_layer_pooled(x, &layers[l], c, batch, n, causal, pool, buf);
        else if (l < c->layers) encoder_layer(x, &layers[l], c, batch, n, causal, buf);
    }
}

/* x[rows, d] followed by the encoder's scratch and `extra` floats. The size
 * is added up in double (exact below 2^53), so that it cannot wrap around a
 * 32-bit size_t and leave the buffer short. */
static float *encoder_alloc(const clip_tower_config *c, int batch, int n, double extra, char *err)
{
    double rows = (double)batch * n;
    double floats = rows * c->hidden * 6 + rows * c->intermediate + (double)n * n + extra;
    float *buf = floats * sizeof(float) < (double)((size_t)-1) ? malloc((size_t)floats * sizeof(float)) : NULL;
    if (!buf) set_err(err, "out of memory (%.0f bytes of activations)", floats * sizeof(float));
    return buf;
}

/* ------------------------------------------------------------------------ */
/* Text tower: CLIPTextTransformer + text_projection                         */
/* ------------------------------------------------------------------------ */
/* For each text b: ids[b][n_b] -> embeddings token_embedding[ids] +
 * position_embedding[0..n_b) -> causal encoder -> final_layer_norm ->
 * pooled row -> features[b][proj]. A batch runs as count sequences of the
 * longest length n, the shorter ones padded at the end with their last id:
 * with causal attention no real token sees a later one, so each text gets
 * what it would get alone (the matrix products may round differently for
 * more rows), and all share every read of the weights. */
static int encode_texts(clip_model *m, const int32_t *const *ids, const int *lens, int count, float *features,
                        clip_dump_fn dump, void *ctx, char *err)
{
    const clip_config *c = &m->config;
    int d = c->text.hidden, n = 0, *pool;
    if (count < 1) { set_err(err, "no texts to encode"); return CLIP_EINPUT; }
    for (int b = 0; b < count; b++) {
        if (lens[b] < 1 || lens[b] > c->max_positions) {
            set_err(err, "a text must have between 1 and %d tokens (got %d)", c->max_positions, lens[b]);
            return CLIP_EINPUT;
        }
        for (int i = 0; i < lens[b]; i++) {
            if (ids[b][i] < 0 || ids[b][i] >= c->vocab_size) {
                set_err(err, "token id %ld at position %d is outside the vocabulary (0..%d)", (long)ids[b][i], i, c->vocab_size - 1);
                return CLIP_EINPUT;
            }
        }
        n = lens[b] > n ? lens[b] : n;
    }
    float *x = encoder_alloc(&c->text, count, n, (double)count * d, err);
    if (!x) return CLIP_ENOMEM;
    if (!(pool = malloc((size_t)count * sizeof *pool))) {
        free(x);
        set_err(err, "out of memory");
        return CLIP_ENOMEM;
    }
    float *buf = x + (size_t)count * n * d, *pooled = buf + (size_t)count * n * (5 * d + c->text.intermediate) + (size_t)n * n;

    for (int b = 0; b < count; b++) {
        const int32_t *id = ids[b];
        int len = lens[b], *pb = &pool[b];
        for (int i = 0; i < n; i++) {
            const float *t = m->w.token_embedding + (size_t)id[i < len ? i : len - 1] * d;
            const float *p = m->w.text_position_embedding + (size_t)i * d;
            float *xi = x + ((size_t)b * n + i) * d;
            for (int j = 0; j < d; j++) xi[j] = t[j] + p[j];
        }
        /* Pooling: legacy configs (eos_token_id == 2) take the position of the
         * largest id (the eos token has the largest id in CLIP's vocabulary);
         * others the first position holding eos_token_id (the last if absent). */
        *pb = 0;
        if (c->eos_token_id == 2) {
            for (int i = 1; i < len; i++) if (id[i] > id[*pb]) *pb = i;
        } else {
            *pb = len - 1;
            for (int i = 0; i < len; i++) if (id[i] == c->eos_token_id) { *pb = i; break; }
        }
    }
    encoder(x, m->w.text_layers, &c->text, count, n, 1, pool, buf, "text", dump, ctx);
    if (dump) {   /* one text (clip_encode_text) */
        clip_layer_norm(x, x, m->w.final_ln_w, m->w.final_ln_b, n, d, c->text.eps);
        dump_stage(dump, ctx, "text_last_hidden", x, 1, n, d);
    }
    for (int b = 0; b < count; b++) {   /* only the pooled rows are used */
        const float *xb = x + ((size_t)b * n + pool[b]) * d;
        if (dump) memcpy(pooled + (size_t)b * d, xb, (size_t)d * sizeof(float));
        else clip_layer_norm(pooled + (size_t)b * d, xb, m->w.final_ln_w, m->w.final_ln_b, 1, d, c->text.eps);
    }
    dump_stage(dump, ctx, "text_pooled", pooled, 1, 1, d);
    clip_linear(features, pooled, m->w.text_projection, NULL, count, d, c->projection_dim);
    dump_stage(dump, ctx, "text_features", features, 1, 1, c->projection_dim);
    free(pool);
    free(x);
    return CLIP_OK;
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

/* ------------------------------------------------------------------------ */
/* Vision tower: CLIPVisionTransformer + visual_projection                   */
/* ------------------------------------------------------------------------ */
/* pixels [count, 3, S, S] -> patch embedding (conv p x p, stride p, no bias)
 * as a matrix product of the flattened patches [g*g, 3*p*p] with the weight
 * [d, 3*p*p]; prepend class_embedding, add position_embedding -> x[1 + g*g, d]
 * -> pre_layrnorm -> encoder -> post_layernorm(x[0]) -> features[count, proj]. */
int clip_encode_images(clip_model *m, const float *pixels, int count, float *features,
                       clip_dump_fn dump, void *ctx, char *err)
{
    const clip_config *c = &m->config;
    int d = c->vision.hidden, p = c->patch, S = c->image_size, g = S / p, n = 1 + g * g, pp = 3 * p * p;
    size_t rows = (size_t)count * n;
    if (count < 1) { set_err(err, "no images to encode"); return CLIP_EINPUT; }
    float *x = encoder_alloc(&c->vision, count, n, (double)g * g * pp + (double)count * d, err);
    if (!x) return CLIP_ENOMEM;
    float *buf = x + rows * d, *patches = buf + rows * d * 5 + rows * c->vision.intermediate + (size_t)n * n;
    float *pooled = patches + (size_t)g * g * pp;

    for (int b = 0; b < count; b++) {
        const float *px = pixels + (size_t)b * 3 * S * S;
        float *xb = x + (size_t)b * n * d;
        /* im2col: patch (gy, gx) -> row gy*g+gx, columns in (channel, ky, kx) order */
        for (int gy = 0; gy < g; gy++)
            for (int gx = 0; gx < g; gx++) {
                float *row = patches + (size_t)(gy * g + gx) * pp;
                for (int ch = 0; ch < 3; ch++)
                    for (int ky = 0; ky < p; ky++)
                        memcpy(row + (ch * p + ky) * p, px + ((size_t)ch * S + gy * p + ky) * S + gx * p, p * sizeof(float));
            }
        clip_linear(xb + d, patches, m->w.patch_embedding, NULL, g * g, pp, d);
        memcpy(xb, m->w.class_embedding, d * sizeof(float));
        for (size_t i = 0; i < (size_t)n * d; i++) xb[i] += m->w.vision_position_embedding[i];
    }
    dump_stage(dump, ctx, "image_embeddings", x, count, n, d);
    clip_layer_norm(x, x, m->w.pre_ln_w, m->w.pre_ln_b, (int)rows, d, c->vision.eps);

    encoder(x, m->w.vision_layers, &c->vision, count, n, 0, NULL, buf, "image", dump, ctx);
    dump_stage(dump, ctx, "image_last_hidden", x, count, n, d);
    for (int b = 0; b < count; b++)
        clip_layer_norm(pooled + (size_t)b * d, x + (size_t)b * n * d, m->w.post_ln_w, m->w.post_ln_b, 1, d, c->vision.eps);
    dump_stage(dump, ctx, "image_pooled", pooled, 1, count, d);
    clip_linear(features, pooled, m->w.visual_projection, NULL, count, d, c->projection_dim);
    dump_stage(dump, ctx, "image_features", features, 1, count, c->projection_dim);
    free(x);
    return CLIP_OK;
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
