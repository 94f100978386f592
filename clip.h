/* clip.h - OpenAI's CLIP in C99: the library interface.
 *
 * The pipeline, in the order of the files that implement it:
 *
 *   text  -> tokenizer.c: bytes -> ids                         (CLIPTokenizer)
 *   image -> image.c: file -> RGB -> resize -> crop -> floats   (CLIPImageProcessor)
 *   ids, pixel values -> clip.c: transformers -> embeddings     (CLIPModel)
 *   tensor.c: the arithmetic both towers share (matmul, layer norm, attention),
 *             reference kernels first, then fast ones
 *
 * The library never prints, exits or aborts. Every function that can fail
 * returns 0 on success or a CLIP_E* code, and writes one sentence saying
 * what went wrong into `err` (a buffer of CLIP_ERR_SIZE bytes) when err is
 * not NULL.
 */
#ifndef CLIP_H
#define CLIP_H

#include <stddef.h>
#include <stdint.h>

#define CLIP_VERSION "0.1.0"
#define CLIP_ERR_SIZE 256

enum {
    CLIP_OK = 0,
    CLIP_EINPUT = 1,   /* the input (file, image, text, model) is bad */
    CLIP_ENOMEM = 2,   /* out of memory */
    CLIP_EIO = 3       /* a file could not be opened, read or written */
};

/* ---------------------------------------------------------------------- */
/* Images (image.c)                                                        */
/* ---------------------------------------------------------------------- */

/* Decoded images larger than this many pixels are refused before any
 * pixel buffer is allocated (8192 x 8192). */
#define CLIP_MAX_PIXELS (8192L * 8192L)

/* An 8-bit RGB image: h rows of w pixels, 3 bytes each, no padding. */
typedef struct {
    int w, h;
    uint8_t *rgb;
} clip_image;

/* Decode PNG, JPEG, binary PPM/PGM or BMP from memory (format detected
 * from the first bytes), then apply Pillow's convert("RGB"). */
int clip_image_decode(const uint8_t *data, size_t size, clip_image *img, char *err);
/* Read a file and decode it; the message names the file. */
int clip_image_load(const char *path, clip_image *img, char *err);
void clip_image_free(clip_image *img);

/* Pillow: img.resize((w, h), Image.BICUBIC, reducing_gap=None) on RGB. */
int clip_resize_bicubic_pil(const clip_image *src, int w, int h, clip_image *dst, char *err);
/* PyTorch: interpolate(uint8 NCHW, (h, w), mode="bicubic", antialias=True),
 * as torchvision's resize does it. */
int clip_resize_bicubic_torch(const clip_image *src, int w, int h, clip_image *dst, char *err);

/* preprocessor_config.json */
typedef struct {
    int shortest_edge;        /* size.shortest_edge */
    int crop_h, crop_w;       /* crop_size */
    int do_resize, do_center_crop, do_rescale, do_normalize;
    float rescale_factor;     /* 1/255 */
    float mean[3], std[3];
} clip_preprocess_config;

enum { CLIP_RESIZE_PIL = 0, CLIP_RESIZE_TORCHVISION = 1 };

/* The whole CLIPImageProcessor: shortest-edge resize, center crop,
 * rescale and normalize. out holds 3 * crop_h * crop_w floats (CHW). */
int clip_image_preprocess(const clip_image *img, const clip_preprocess_config *cfg,
                          int mode, float *out, char *err);

/* Encode RGB as a PNG file in memory (malloc'd; caller frees). */
int clip_png_encode(const clip_image *img, uint8_t **png, size_t *size, char *err);

/* ---------------------------------------------------------------------- */
/* Tokenizer (tokenizer.c)                                                 */
/* ---------------------------------------------------------------------- */

typedef struct clip_tokenizer clip_tokenizer;

/* Build a tokenizer from its serialized section (see README, "Model file"). */
int clip_tokenizer_load(clip_tokenizer **tok, const uint8_t *section, size_t size, char *err);
void clip_tokenizer_free(clip_tokenizer *tok);

#define CLIP_TOKENIZE_PAD 1          /* pad to the context length with the pad id */
#define CLIP_TOKENIZE_NO_TRUNCATE 2  /* keep every token */

/* Tokenize UTF-8 text of `len` bytes as CLIPTokenizer(text, truncation=True)
 * does: [bos] + BPE ids + [eos], at most context_length ids. Writes at most
 * max_ids ids and returns how many the full result has (which may exceed
 * max_ids only with CLIP_TOKENIZE_NO_TRUNCATE), or -1 on error. */
int clip_tokenize(const clip_tokenizer *tok, const char *text, size_t len,
                  int32_t *ids, int max_ids, int flags, char *err);
int clip_tokenizer_context_length(const clip_tokenizer *tok);

/* ---------------------------------------------------------------------- */
/* Tensor kernels (tensor.c)                                               */
/* ---------------------------------------------------------------------- */
/* Row-major float32 arrays. Two sets compute the same things: the fast
 * kernels (clip_linear, ...) and the reference kernels (clip_ref_*), plain
 * loops whose every sum runs in one fixed order in double, whatever the
 * vector width and thread count. A build with CLIP_REFERENCE defined
 * (make REFERENCE=1) makes the clip_* kernels the reference ones. */

/* Which kernels this build runs, e.g. "fast kernels for AVX-512, OpenMP
 * threads" or "reference kernels, one thread". */
const char *clip_build_info(void);

/* y[n, out] = x[n, in] @ w[out, in]^T + b[out]   (torch.nn.Linear; b may be NULL) */
void clip_linear(float *y, const float *x, const float *w, const float *b, int n, int in, int out);
/* y[i] = clip_linear(x, w[i], b[i]) for i < 3 in one pass (q_proj, k_proj, v_proj on one input) */
void clip_linear3(float *const y[3], const float *x, const float *const w[3], const float *const b[3],
                  int n, int in, int out);

/* A weight matrix [out, in] as the model file stores it: its dtype (the
 * tensor index's dtype field) and where its values lie. Float32 is the only
 * dtype so far; float16 and int8 blocks are planned, each with a kernel of
 * its own behind clip_linear_weight. */
enum { CLIP_DTYPE_F32 = 0 };
typedef struct {
    int dtype;
    const void *data;
} clip_weight;

/* Floats of scratch clip_linear_weight needs for n rows of `in` values
 * (0: none), for every smaller n and in too. */
size_t clip_linear_scratch(int n, int in);
/* clip_linear for a weight of any dtype, taking its working memory from
 * scratch (clip_linear_scratch(n, in) floats), so that it allocates
 * nothing; with scratch NULL it allocates per call, as clip_linear does. */
void clip_linear_weight(float *y, const float *x, const clip_weight *w, const float *b, int n, int in, int out,
                        float *scratch);
void clip_linear3_weight(float *const y[3], const float *x, const clip_weight *const w[3], const float *const b[3],
                         int n, int in, int out, float *scratch);

/* torch.nn.LayerNorm over the last dimension d, biased variance */
void clip_layer_norm(float *y, const float *x, const float *gamma, const float *beta, int n, int d, float eps);
/* softmax over each row of x[n, d], in place */
void clip_softmax(float *x, int n, int d);

/* Floats of scratch clip_attention needs for n tokens (for every smaller n
 * too); it depends on neither the thread count nor the batch. */
size_t clip_attention_scratch(int n, int heads, int head_dim);
/* multi-head attention: out[n, h*hd] from q, k, v [n, h*hd] (q already scaled);
 * causal: token i sees keys 0..i only. scratch holds
 * clip_attention_scratch(n, heads, head_dim) floats; nothing is allocated. */
void clip_attention(float *out, const float *q, const float *k, const float *v,
                    int n, int heads, int head_dim, int causal, float *scratch);
/* the same for one query row q[h*hd] against the first len keys and values; scratch holds len floats */
void clip_attention_query(float *out, const float *q, const float *k, const float *v,
                          int len, int heads, int head_dim, float *scratch);
void clip_quick_gelu(float *x, size_t n);   /* x * sigmoid(1.702 x) */
void clip_gelu(float *x, size_t n);         /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
void clip_set_threads(int n);               /* OpenMP threads (no-op without OpenMP) */

/* The reference kernels, the same computations as plain loops (the first
 * part of tensor.c). clip_ref_attention's scratch holds heads * n floats,
 * clip_ref_attention_query's len floats. */
void clip_ref_linear(float *y, const float *x, const float *w, const float *b, int n, int in, int out);
void clip_ref_layer_norm(float *y, const float *x, const float *gamma, const float *beta, int n, int d, float eps);
void clip_ref_softmax(float *x, int n, int d);
void clip_ref_attention(float *out, const float *q, const float *k, const float *v,
                        int n, int heads, int head_dim, int causal, float *scratch);
void clip_ref_attention_query(float *out, const float *q, const float *k, const float *v,
                              int len, int heads, int head_dim, float *scratch);
void clip_ref_quick_gelu(float *x, size_t n);
void clip_ref_gelu(float *x, size_t n);

/* ---------------------------------------------------------------------- */
/* The model (clip.c)                                                      */
/* ---------------------------------------------------------------------- */

enum { CLIP_ACT_QUICK_GELU = 0, CLIP_ACT_GELU = 1 };

typedef struct {            /* one tower's config.json section */
    int hidden, heads, layers, intermediate, act;
    float eps;
} clip_tower_config;

typedef struct {
    clip_tower_config vision, text;
    int patch, image_size, channels;   /* vision_config */
    int vocab_size, max_positions;     /* text_config */
    int eos_token_id;                  /* text_config.eos_token_id: 2 = pool at argmax id */
    int projection_dim;
    int synthetic;                     /* made by convert.py --synthetic */
    char name[128];                    /* where the checkpoint came from */
    clip_preprocess_config preprocess;
} clip_config;

typedef struct clip_model clip_model;

/* Open a converted model file (mmap). */
int clip_load(clip_model **model, const char *path, char *err);
/* The same from a file already in memory (64-byte aligned); the caller keeps
 * it alive until clip_free. */
int clip_load_memory(clip_model **model, const uint8_t *data, size_t size, char *err);
void clip_free(clip_model *model);
const clip_config *clip_get_config(const clip_model *model);
const clip_tokenizer *clip_get_tokenizer(const clip_model *model);
float clip_logit_scale(const clip_model *model);   /* exp(logit_scale) */
size_t clip_file_size(const clip_model *model);

/* Called for every stage when set: name, data, shape. */
typedef void (*clip_dump_fn)(void *ctx, const char *name, const float *data, int ndim, const int *shape);

/* Text tower: ids[n] (bos ... eos, n <= max_positions) -> features[projection_dim]
 * (text_projection output, not normalized). */
int clip_encode_text(clip_model *model, const int32_t *ids, int n, float *features,
                     clip_dump_fn dump, void *dump_ctx, char *err);
/* A batch: text b is ids[b][lens[b]] -> features[count, projection_dim], the
 * computation clip_encode_text does for each (results agree to float rounding,
 * about 1e-6); the texts share every read of the weights. */
int clip_encode_texts(clip_model *model, const int32_t *const *ids, const int *lens, int count, float *features,
                      char *err);
/* Vision tower: pixels[3 * image_size * image_size] (CHW) -> features[projection_dim]. */
int clip_encode_image(clip_model *model, const float *pixels, float *features,
                      clip_dump_fn dump, void *dump_ctx, char *err);
/* A batch: pixels[count, 3, S, S] -> features[count, projection_dim]. The
 * images share every read of the weights, so a batch is faster per image. */
int clip_encode_images(clip_model *model, const float *pixels, int count, float *features,
                       clip_dump_fn dump, void *dump_ctx, char *err);

/* Scratch memory for the encoders, sized once. The functions above allocate
 * it per call; a program that encodes many inputs, or that must not
 * allocate while it encodes, sizes it once with clip_scratch_size, points a
 * clip_scratch at that many bytes (any alignment; or clip_scratch_alloc)
 * and passes it to the *_scratch functions below, which allocate nothing.
 * The memory holds no state between calls. */
typedef struct {
    void *data;
    size_t size;   /* bytes at data */
} clip_scratch;

/* Bytes of scratch for batches of up to max_images images, and of up to
 * max_texts texts of up to max_tokens tokens each (0 for max_tokens: the
 * model's max_positions); 0 when that does not fit in a size_t. */
size_t clip_scratch_size(const clip_model *model, int max_images, int max_texts, int max_tokens);
/* malloc clip_scratch_size(...) bytes into s */
int clip_scratch_alloc(clip_scratch *s, const clip_model *model, int max_images, int max_texts, int max_tokens,
                       char *err);
void clip_scratch_free(clip_scratch *s);   /* frees what clip_scratch_alloc allocated */
/* clip_encode_texts and clip_encode_images (and, with count 1, the single
 * ones) in the given scratch; CLIP_EINPUT when the batch needs more than
 * s->size bytes. */
int clip_encode_texts_scratch(clip_model *model, clip_scratch *s, const int32_t *const *ids, const int *lens,
                              int count, float *features, clip_dump_fn dump, void *dump_ctx, char *err);
int clip_encode_images_scratch(clip_model *model, clip_scratch *s, const float *pixels, int count, float *features,
                               clip_dump_fn dump, void *dump_ctx, char *err);
/* Scale v[n] to unit L2 norm. */
void clip_normalize(float *v, int n);

#endif
