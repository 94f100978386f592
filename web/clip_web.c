/* web/clip_web.c - clip.h for JavaScript: the few calls web/index.html makes,
 * with plain numbers and pointers as arguments (emscripten's Module._web_*).
 *
 * One model at a time lives here. Every function that can fail returns a
 * negative number and leaves one sentence for web_error().
 */
#define _POSIX_C_SOURCE 200809L   /* posix_memalign */
#include "../clip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static clip_model *model;          /* the loaded model, or NULL */
static uint8_t *model_data;        /* its bytes when they came from web_load_memory */
static char err[CLIP_ERR_SIZE];

const char *web_error(void) { return err; }

void web_unload(void)
{
    clip_free(model);
    free(model_data);
    model = NULL;
    model_data = NULL;
}

/* clip_load: a model file on the emscripten file system (MEMFS in a page). */
int web_load_file(const char *path)
{
    web_unload();
    return clip_load(&model, path, err) ? -1 : 0;
}

/* Memory for a model file, 64-byte aligned as clip_load_memory wants it;
 * JavaScript copies the file in, then calls web_load_memory. */
uint8_t *web_alloc(size_t size)
{
    void *p = NULL;
    if (size == 0 || posix_memalign(&p, 64, size) != 0) {
        snprintf(err, sizeof err, "out of memory for a model file of %lu bytes", (unsigned long)size);
        return NULL;
    }
    return p;
}

/* clip_load_memory on what web_alloc gave; the model owns it from here on. */
int web_load_memory(uint8_t *data, size_t size)
{
    web_unload();
    if (clip_load_memory(&model, data, size, err)) { free(data); return -1; }
    model_data = data;
    return 0;
}

static int need_model(void)
{
    if (model) return 0;
    snprintf(err, sizeof err, "no model is loaded");
    return -1;
}

int web_dim(void) { return model ? clip_get_config(model)->projection_dim : 0; }
int web_image_size(void) { return model ? clip_get_config(model)->image_size : 0; }
float web_logit_scale(void) { return model ? clip_logit_scale(model) : 0.0f; }

/* image file bytes -> decode -> preprocess (mode: 0 pil, 1 torchvision) ->
 * vision tower -> L2 norm: out[web_dim()] is image_embeds. */
int web_embed_image(const uint8_t *data, size_t size, int mode, float *out)
{
    clip_image img;
    float *px;
    int S, rc;
    if (need_model()) return -1;
    if (mode != CLIP_RESIZE_PIL && mode != CLIP_RESIZE_TORCHVISION) {
        snprintf(err, sizeof err, "unknown resize mode %d", mode);
        return -1;
    }
    S = clip_get_config(model)->image_size;
    if (!(px = malloc((size_t)3 * S * S * sizeof(float)))) { snprintf(err, sizeof err, "out of memory"); return -1; }
    if (clip_image_decode(data, size, &img, err)) { free(px); return -1; }
    rc = clip_image_preprocess(&img, &clip_get_config(model)->preprocess, mode, px, err);
    clip_image_free(&img);
    if (!rc) rc = clip_encode_image(model, px, out, NULL, NULL, err);
    free(px);
    if (rc) return -1;
    clip_normalize(out, clip_get_config(model)->projection_dim);
    return 0;
}

/* UTF-8 text -> tokenizer (truncated to the context) -> text tower -> L2 norm:
 * out[web_dim()] is text_embeds. */
int web_embed_text(const char *text, float *out)
{
    int32_t *ids;
    int n, max;
    if (need_model()) return -1;
    max = clip_tokenizer_context_length(clip_get_tokenizer(model));
    if (max > clip_get_config(model)->max_positions) max = clip_get_config(model)->max_positions;
    if (!(ids = malloc((size_t)max * sizeof *ids))) { snprintf(err, sizeof err, "out of memory"); return -1; }
    n = clip_tokenize(clip_get_tokenizer(model), text, strlen(text), ids, max, 0, err);
    if (n > max) n = max;
    if (n < 0 || clip_encode_text(model, ids, n, out, NULL, NULL, err)) { free(ids); return -1; }
    free(ids);
    clip_normalize(out, clip_get_config(model)->projection_dim);
    return 0;
}

/* The article's experiment 1, as `clip match` scores it:
 * logits[t] = exp(logit_scale) * <image_embeds, text_embeds[t]>, probs = softmax(logits). */
int web_match(const float *image, const float *texts, int n, float *logits, float *probs)
{
    int D;
    float scale;
    if (need_model()) return -1;
    if (n < 1) { snprintf(err, sizeof err, "no captions to match"); return -1; }
    D = clip_get_config(model)->projection_dim;
    scale = clip_logit_scale(model);
    for (int t = 0; t < n; t++) {
        double s = 0.0;
        for (int j = 0; j < D; j++) s += (double)image[j] * texts[(size_t)t * D + j];
        logits[t] = (float)(scale * s);
        probs[t] = logits[t];
    }
    clip_softmax(probs, 1, n);
    return 0;
}
