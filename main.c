/* main.c - the `clip` command. The only file that prints or exits.
 *
 * Read it from the bottom: main() finds the command in `commands`, parses
 * the options that command takes (any other is refused), and runs it. The
 * commands (cmd_*) come before, each on the helpers above it.
 *
 * Exit codes: 0 success, 1 bad input (a file, an image, a model), 2 bad usage.
 */
#define _POSIX_C_SOURCE 200809L   /* isatty, fileno, mkdir, getpid, clock_gettime */
#include "clip.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

enum {
    TEXT_BATCH = 32,       /* texts that share each pass over the text tower's weights */
    IMAGE_BATCH = 16,      /* images that share each pass over the vision tower's weights */
    MAX_TEXT_IDS = 1024,   /* ids kept of one text (the tower takes max_positions of them) */
    MAX_EMBED_IDS = 4096,  /* ids of one --ids list */
    MAX_LABELS = 1024      /* labels of classify */
};

/* search.c: clip index, clip search (each parses its own options), clip embed --list */
int cmd_index(int argc, char **argv);
int cmd_search(int argc, char **argv);
int embed_list(const char *model_path, const char *list, const char *shard, const char *out, int resize);

/* ------------------------------------------------------------------------ */
/* Errors, memory, time, random numbers                                      */
/* ------------------------------------------------------------------------ */

static const char *command_name;   /* the command running, for the hint after a usage error */

static void die(int code, const char *fmt, ...)
{
    va_list ap;
    fputs("clip: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (code == 2)
        fprintf(stderr, "Try 'clip %s%s--help' for more information.\n", command_name ? command_name : "", command_name ? " " : "");
    exit(code);
}

#define usage_error(...) die(2, __VA_ARGS__)

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) die(1, "out of memory (%zu bytes)", n);
    return p;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The same pseudo-random floats on every machine, uniform in [0, 1): a
 * 32-bit linear congruential generator (Numerical Recipes' constants). */
static float random_uniform(uint32_t *seed)
{
    *seed = *seed * 1664525u + 1013904223u;
    return (float)(*seed >> 8) / 16777216.0f;
}

/* ------------------------------------------------------------------------ */
/* Options                                                                   */
/* ------------------------------------------------------------------------ */

/* Every option has a bit; each command lists the options it takes (see
 * `commands` at the end) and refuses the others. */
enum {
    OPT_MODEL = 1 << 0, OPT_OUTPUT = 1 << 1, OPT_IMAGE = 1 << 2, OPT_TEXT = 1 << 3, OPT_IDS = 1 << 4,
    OPT_PIXELS = 1 << 5, OPT_JSON = 1 << 6, OPT_RAW = 1 << 7, OPT_PAD = 1 << 8, OPT_HTML = 1 << 9,
    OPT_DUMP = 1 << 10, OPT_LABELS = 1 << 11, OPT_LABELS_FILE = 1 << 12, OPT_TEMPLATE = 1 << 13,
    OPT_CIFAR10 = 1 << 14, OPT_LIMIT = 1 << 15, OPT_TOP = 1 << 16, OPT_THREADS = 1 << 17, OPT_RESIZE = 1 << 18,
    OPT_LIST = 1 << 19, OPT_SHARD = 1 << 20
};

static const struct option_info {
    const char *name, *alias;   /* --model, -m */
    unsigned bit;
    const char *value;          /* what follows it, NULL for a flag */
    const char *help;
} option_table[] = {
    {"--model", "-m", OPT_MODEL, "FILE", "a model file made by convert.py"},
    {"--output", "-o", OPT_OUTPUT, "FILE", "where the result goes (.npy); never left half-written"},
    {"--image", "-i", OPT_IMAGE, "FILE", "an image: PNG, JPEG, BMP or binary PPM/PGM/PBM"},
    {"--text", "-t", OPT_TEXT, "TEXT", "a text"},
    {"--ids", NULL, OPT_IDS, "\"49406 ... 49407\"", "token ids instead of a text (clip tokenize prints them)"},
    {"--pixel-values", NULL, OPT_PIXELS, "F.npy", "pixel values [N, 3, S, S] instead of an image (clip preprocess writes them)"},
    {"--json", NULL, OPT_JSON, NULL, "print one JSON object"},
    {"--raw", NULL, OPT_RAW, NULL, "the projections as they come, not L2-normalized"},
    {"--pad", NULL, OPT_PAD, NULL, "pad every text to the context length"},
    {"--html", NULL, OPT_HTML, "OUT.html", "also write a page with the picture and a bar per caption"},
    {"--dump", NULL, OPT_DUMP, "DIR", "write every stage as DIR/NAME.npy (one folder per input)"},
    {"--labels", NULL, OPT_LABELS, "a,b,c", "the labels, separated by commas"},
    {"--labels-file", NULL, OPT_LABELS_FILE, "FILE", "the labels, one a line"},
    {"--template", NULL, OPT_TEMPLATE, "\"a photo of a {}\"", "the prompt; {} is where the label goes"},
    {"--cifar10", NULL, OPT_CIFAR10, "FILE", "a CIFAR-10 binary batch (test_batch.bin) instead of images"},
    {"--limit", NULL, OPT_LIMIT, "N", "--cifar10: only the first N records"},
    {"--top", NULL, OPT_TOP, "K", "print the K most probable labels of each image (default 1)"},
    {"--list", NULL, OPT_LIST, "FILE|-", "the pictures named in FILE, one a line (- reads stdin)"},
    {"--shard", NULL, OPT_SHARD, "I/N", "--list: only the I-th of N equal parts (I from 1)"},
    {"--threads", "-j", OPT_THREADS, "N", "worker threads (default: all cores)"},
    {"--resize", NULL, OPT_RESIZE, "pil|torchvision",
     "image preprocessing: pil (default) is OpenAI's CLIP, open_clip and transformers'\n"
     "                        CLIPImageProcessorPil; torchvision is transformers 5's default"},
};
#define N_OPTIONS ((int)(sizeof option_table / sizeof option_table[0]))

/* A list of arguments, in command-line order. */
typedef struct {
    const char **v;
    int n;
} arg_list;

typedef struct {
    const char *model, *out, *html, *dump, *labels, *labels_file, *template_, *cifar10, *list, *shard;
    int json, raw, pad, threads, top, limit, resize;
    unsigned given;          /* OPT_* bits of the options on the command line */
    arg_list images;         /* -i / --image */
    arg_list texts;          /* -t / --text */
    arg_list ids;            /* --ids */
    arg_list pixels;         /* --pixel-values */
    arg_list pos;            /* arguments that are not options */
} options;

/* One subcommand: its name, what runs it, the options it takes, and its help. */
typedef struct command {
    const char *name;
    int (*run)(const options *o);
    unsigned takes;          /* OPT_* bits */
    const char *args;        /* its usage after "clip NAME" */
    const char *summary;     /* its line in clip --help */
    const char *help;        /* clip NAME --help: what it does */
} command;                   /* run NULL: search.c's index and search, which parse their own options */

static void command_help(const command *c);

static int parse_int(const char *s, const char *opt, int lo, int hi)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) usage_error("%s needs a whole number from %d to %d, not '%s'", opt, lo, hi, s);
    return (int)v;
}

static const struct option_info *find_option(const char *a)
{
    for (int k = 0; k < N_OPTIONS; k++)
        if (!strcmp(a, option_table[k].name) || (option_table[k].alias && !strcmp(a, option_table[k].alias)))
            return &option_table[k];
    return NULL;
}

/* Set the option opt to v (NULL for a flag). */
static void set_option(options *o, const struct option_info *opt, const char *v)
{
    switch (opt->bit) {
    case OPT_MODEL: o->model = v; break;
    case OPT_OUTPUT: o->out = v; break;
    case OPT_IMAGE: o->images.v[o->images.n++] = v; break;
    case OPT_TEXT: o->texts.v[o->texts.n++] = v; break;
    case OPT_IDS: o->ids.v[o->ids.n++] = v; break;
    case OPT_PIXELS: o->pixels.v[o->pixels.n++] = v; break;
    case OPT_JSON: o->json = 1; break;
    case OPT_RAW: o->raw = 1; break;
    case OPT_PAD: o->pad = 1; break;
    case OPT_HTML: o->html = v; break;
    case OPT_DUMP: o->dump = v; break;
    case OPT_LABELS: o->labels = v; break;
    case OPT_LABELS_FILE: o->labels_file = v; break;
    case OPT_TEMPLATE: o->template_ = v; break;
    case OPT_CIFAR10: o->cifar10 = v; break;
    case OPT_LIST: o->list = v; break;
    case OPT_SHARD: o->shard = v; break;
    case OPT_LIMIT: o->limit = parse_int(v, "--limit", 1, 1000000000); break;
    case OPT_TOP: o->top = parse_int(v, "--top", 1, 100000); break;
    case OPT_THREADS: o->threads = parse_int(v, "--threads", 1, 1024); break;
    case OPT_RESIZE:
        if (!strcmp(v, "pil")) o->resize = CLIP_RESIZE_PIL;
        else if (!strcmp(v, "torchvision")) o->resize = CLIP_RESIZE_TORCHVISION;
        else usage_error("--resize takes pil or torchvision, not '%s'", v);
        break;
    }
}

/* argv[2..] of `clip CMD ...`: the options CMD takes, and its arguments.
 * An option CMD does not take is refused (exit 2). The lists point into
 * argv; free(o->pos.v) releases them. */
static void parse_options(int argc, char **argv, const command *cmd, options *o)
{
    const char **slots = xmalloc((size_t)5 * argc * sizeof *slots);
    memset(o, 0, sizeof *o);
    o->top = 1;
    o->pos.v = slots;
    o->images.v = slots + argc;
    o->texts.v = slots + 2 * argc;
    o->ids.v = slots + 3 * argc;
    o->pixels.v = slots + 4 * argc;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const struct option_info *opt;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            command_help(cmd);
            free(slots);
            exit(0);
        }
        if (!strcmp(a, "--")) {
            while (++i < argc) o->pos.v[o->pos.n++] = argv[i];
            break;
        }
        if (a[0] != '-' || !a[1]) {
            o->pos.v[o->pos.n++] = a;
            continue;
        }
        if (!(opt = find_option(a))) usage_error("unknown option '%s' for 'clip %s'", a, cmd->name);
        if (!(cmd->takes & opt->bit)) usage_error("'clip %s' does not take %s", cmd->name, a);
        if (opt->value && i + 1 >= argc) usage_error("option %s needs a value", a);
        set_option(o, opt, opt->value ? argv[++i] : NULL);
        o->given |= opt->bit;
    }
    if (o->threads) clip_set_threads(o->threads);
}

/* Refuse options that the command takes but that mean nothing with what
 * else was given (e.g. --top with --cifar10). */
static void refuse_with(const options *o, unsigned bits, const char *why)
{
    for (int k = 0; k < N_OPTIONS; k++)
        if ((bits & option_table[k].bit) && (o->given & option_table[k].bit))
            usage_error("%s %s", option_table[k].name, why);
}

static clip_model *load_model(const options *o)
{
    char err[CLIP_ERR_SIZE];
    clip_model *m;
    if (!o->model) usage_error("no model given: use -m MODEL (a file made by convert.py)");
    if (clip_load(&m, o->model, err)) die(1, "%s", err);
    return m;
}

/* ------------------------------------------------------------------------ */
/* .npy files (NumPy format 1.0)                                             */
/* ------------------------------------------------------------------------ */

/* Write to PATH.tmp.PID, then rename: never a partial output file. */
static void write_file(const char *path, const void *a, size_t na, const void *b, size_t nb)
{
    char *tmp = xmalloc(strlen(path) + 32);
    FILE *f;
    sprintf(tmp, "%s.tmp.%ld", path, (long)getpid());
    f = fopen(tmp, "wb");
    if (!f) die(1, "%s: cannot write: %s", path, strerror(errno));
    if (fwrite(a, 1, na, f) != na || (nb && fwrite(b, 1, nb, f) != nb) || fclose(f) != 0) {
        remove(tmp);
        die(1, "%s: write error", path);
    }
    if (rename(tmp, path) != 0) { remove(tmp); die(1, "%s: cannot write: %s", path, strerror(errno)); }
    free(tmp);
}

static void write_npy(const char *path, const char *dtype, const void *data, size_t elem, int ndim, const int *shape)
{
    char head[256], dims[160] = "";
    size_t n = 1, len;
    for (int i = 0; i < ndim; i++) {
        size_t l = strlen(dims);
        snprintf(dims + l, sizeof dims - l, ndim == 1 ? "%d," : (i ? " %d" : "%d"), shape[i]);
        if (ndim > 1 && i < ndim - 1) strcat(dims, ",");
        n *= (size_t)shape[i];
    }
    len = (size_t)snprintf(head, sizeof head, "\x93NUMPY\x01%c%c%c{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                           0, 0, 0, dtype, dims);
    while ((len + 1) % 64) head[len++] = ' ';
    head[len++] = '\n';
    head[8] = (char)((len - 10) & 0xff);
    head[9] = (char)((len - 10) >> 8);
    write_file(path, head, len, data, n * elem);
}

static uint8_t *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0;
    if (!f) die(1, "%s: %s", path, strerror(errno));
    for (;;) {
        if (n == cap) {
            uint8_t *nb;
            cap = cap ? cap * 2 : 65536;
            nb = realloc(buf, cap);
            if (!nb) die(1, "%s: out of memory", path);
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) die(1, "%s: read error", path);
    fclose(f);
    *size = n;
    return buf;
}

/* Read a float32 or float64 little-endian C-order .npy; returns floats, shape in dims. */
static float *read_npy_float(const char *path, int *ndim, int dims[8])
{
    size_t size, hlen, count = 1;
    uint8_t *buf = read_file(path, &size);
    char header[4096];
    const char *p;
    int f64;
    if (size < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) die(1, "%s: not a .npy file", path);
    if (buf[6] != 1 && size < 12) die(1, "%s: not a .npy file", path);
    if (buf[6] == 1) { hlen = buf[8] | (size_t)buf[9] << 8; p = (const char *)buf + 10; }
    else { hlen = buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24; p = (const char *)buf + 12; }
    if (hlen >= sizeof header || (size_t)(p - (const char *)buf) + hlen > size) die(1, "%s: corrupt .npy header", path);
    memcpy(header, p, hlen);
    header[hlen] = 0;
    if (strstr(header, "'<f4'")) f64 = 0;
    else if (strstr(header, "'<f8'")) f64 = 1;
    else die(1, "%s: expected float32 or float64 data", path);
    if (strstr(header, "'fortran_order': True")) die(1, "%s: Fortran-order arrays are not supported", path);
    const char *s = strstr(header, "'shape':");
    if (!s || !(s = strchr(s, '('))) die(1, "%s: corrupt .npy header", path);
    *ndim = 0;
    for (s++; *s && *s != ')';) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) { s++; continue; }
        if (*ndim >= 8 || v < 0 || v > (1L << 30)) die(1, "%s: unsupported shape", path);
        dims[(*ndim)++] = (int)v;
        if ((size_t)v && count > ((size_t)-1) / 8 / (size_t)v) die(1, "%s: array too large", path);
        count *= (size_t)v;
        s = end;
    }
    size_t off = (size_t)(p - (const char *)buf) + hlen, elem = f64 ? 8 : 4;
    if ((size - off) / elem < count) die(1, "%s: the file is shorter than its shape says", path);
    float *out = xmalloc(count * sizeof(float));
    for (size_t i = 0; i < count; i++) {
        if (f64) { double d; memcpy(&d, buf + off + 8 * i, 8); out[i] = (float)d; }
        else memcpy(&out[i], buf + off + 4 * i, 4);
    }
    free(buf);
    return out;
}

/* ------------------------------------------------------------------------ */
/* Inputs -> features                                                        */
/* ------------------------------------------------------------------------ */

/* the ids the text tower takes: at most max, and no more than its positions */
static int tokenize_text(clip_model *m, const char *text, int32_t *ids, int max)
{
    char err[CLIP_ERR_SIZE];
    int n = clip_tokenize(clip_get_tokenizer(m), text, strlen(text), ids, max, 0, err);
    if (n < 0) die(1, "cannot tokenize '%.60s': %s", text, err);
    return n < clip_get_config(m)->max_positions ? n : clip_get_config(m)->max_positions;
}

/* features of n texts into out[n, D], TEXT_BATCH texts sharing each pass over the weights */
static void texts_features(clip_model *m, const char *const *texts, int n, float *out)
{
    char err[CLIP_ERR_SIZE];
    int D = clip_get_config(m)->projection_dim;
    int32_t *ids = xmalloc((size_t)TEXT_BATCH * MAX_TEXT_IDS * sizeof(int32_t));
    const int32_t *rows[TEXT_BATCH];
    int lens[TEXT_BATCH];
    for (int t0 = 0; t0 < n; t0 += TEXT_BATCH) {
        int count = n - t0 < TEXT_BATCH ? n - t0 : TEXT_BATCH;
        for (int b = 0; b < count; b++) {
            rows[b] = ids + (size_t)b * MAX_TEXT_IDS;
            lens[b] = tokenize_text(m, texts[t0 + b], ids + (size_t)b * MAX_TEXT_IDS, MAX_TEXT_IDS);
        }
        if (clip_encode_texts(m, rows, lens, count, out + (size_t)t0 * D, err)) die(1, "%s", err);
    }
    free(ids);
}

static float *image_pixels(clip_model *m, const char *path, int mode)
{
    char err[CLIP_ERR_SIZE];
    const clip_config *c = clip_get_config(m);
    clip_image img;
    float *px = xmalloc((size_t)3 * c->image_size * c->image_size * sizeof(float));
    if (clip_image_load(path, &img, err)) die(1, "%s", err);
    if (clip_image_preprocess(&img, &c->preprocess, mode, px, err)) die(1, "%s: %s", path, err);
    clip_image_free(&img);
    return px;
}

static void image_features(clip_model *m, const float *px, float *out, clip_dump_fn dump, void *ctx)
{
    char err[CLIP_ERR_SIZE];
    if (clip_encode_image(m, px, out, dump, ctx, err)) die(1, "%s", err);
}

/* --dump DIR: every stage as DIR/NAME.npy */
static void dump_npy(void *ctx, const char *name, const float *data, int ndim, const int *shape)
{
    const char *dir = ctx;
    char *path = xmalloc(strlen(dir) + strlen(name) + 8);
    sprintf(path, "%s/%s.npy", dir, name);
    write_npy(path, "<f4", data, 4, ndim, shape);
    free(path);
}

static void make_dir(const char *dir)
{
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) die(1, "%s: cannot create folder: %s", dir, strerror(errno));
}

/* ------------------------------------------------------------------------ */
/* clip embed                                                                */
/* ------------------------------------------------------------------------ */
/* the embeddings made so far: rows [rows, dim], grown as inputs come */
typedef struct { float *data; int rows, cap, dim; } embeddings;

/* room for `count` more rows; returns the first of them */
static float *add_rows(embeddings *e, int count)
{
    while (e->rows + count > e->cap) {
        e->cap = e->cap ? 2 * e->cap : 16;
        e->data = realloc(e->data, (size_t)e->cap * e->dim * sizeof(float));
        if (!e->data) die(1, "out of memory");
    }
    e->rows += count;
    return e->data + (size_t)(e->rows - count) * e->dim;
}

/* --dump DIR: the folder for input number `index` (DIR itself when there is one input) */
static char *dump_dir(const options *o, int n_inputs, int index, char *buf, size_t size)
{
    if (!o->dump) return NULL;
    if (n_inputs == 1) snprintf(buf, size, "%s", o->dump);
    else {
        snprintf(buf, size, "%s/%d", o->dump, index);
        make_dir(buf);
    }
    return buf;
}

/* --ids "49406 320 49407": token ids separated by spaces or commas */
static int parse_ids(const char *s, int32_t ids[MAX_EMBED_IDS])
{
    const char *all = s;
    int n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) {
            if (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n') { s++; continue; }
            usage_error("--ids takes token ids separated by spaces, not '%s'", all);
        }
        if (n >= MAX_EMBED_IDS) usage_error("--ids: too many ids");
        if (v < 0 || v > 0x7fffffffL) die(1, "--ids: token id %ld is out of range", v);
        ids[n++] = (int32_t)v;
        s = end;
    }
    return n;
}

/* the ids of text input i: the --ids first, then the --text */
static int text_ids(const options *o, clip_model *m, int i, int32_t ids[MAX_EMBED_IDS])
{
    return i < o->ids.n ? parse_ids(o->ids.v[i], ids) : tokenize_text(m, o->texts.v[i - o->ids.n], ids, MAX_EMBED_IDS);
}

/* --ids and --text: up to TEXT_BATCH texts share each pass over the weights (clip_encode_texts, as in
 * match, classify and python/clipc.py, which give the same floats); with --dump one at a time,
 * text_ids.npy and every stage into the text's folder */
static void embed_texts(const options *o, clip_model *m, embeddings *e, int n_inputs)
{
    int n = o->ids.n + o->texts.n, batch = o->dump ? 1 : TEXT_BATCH, lens[TEXT_BATCH];
    int32_t *ids = xmalloc((size_t)batch * MAX_EMBED_IDS * sizeof *ids);
    const int32_t *rows[TEXT_BATCH];
    char dumpdir[4096], err[CLIP_ERR_SIZE];
    for (int t0 = 0; t0 < n; t0 += batch) {
        int count = n - t0 < batch ? n - t0 : batch;
        char *dd = dump_dir(o, n_inputs, e->rows, dumpdir, sizeof dumpdir);
        float *out = add_rows(e, count);
        for (int b = 0; b < count; b++) {
            rows[b] = ids + (size_t)b * MAX_EMBED_IDS;
            lens[b] = text_ids(o, m, t0 + b, ids + (size_t)b * MAX_EMBED_IDS);
        }
        if (dd) { int sh[1] = {lens[0]}; char p[4200]; snprintf(p, sizeof p, "%s/text_ids.npy", dd); write_npy(p, "<i4", ids, 4, 1, sh); }
        if (!(dd ? clip_encode_text(m, ids, lens[0], out, dump_npy, dd, err) : clip_encode_texts(m, rows, lens, count, out, err)))
            continue;
        for (int b = 0; b < count; b++) {   /* name the input: the first that fails alone */
            if (!clip_encode_text(m, rows[b], lens[b], out, NULL, NULL, err)) continue;
            if (t0 + b < o->ids.n) die(1, "--ids '%s': %s", o->ids.v[t0 + b], err);
            break;
        }
        die(1, "%s", err);
    }
    free(ids);
}

/* px[count, 3, S, S]: up to IMAGE_BATCH images share each pass over the weights; with --dump one at a
 * time, pixel_values.npy and every stage into the image's folder */
static void embed_pixels(const options *o, clip_model *m, embeddings *e, int n_inputs, const float *px, int count)
{
    int S = clip_get_config(m)->image_size;
    char dumpdir[4096], err[CLIP_ERR_SIZE];
    for (int k = 0; k < count;) {
        int batch = o->dump ? 1 : (count - k < IMAGE_BATCH ? count - k : IMAGE_BATCH);
        char *dd = dump_dir(o, n_inputs, e->rows, dumpdir, sizeof dumpdir);
        float *row = add_rows(e, batch);
        const float *pk = px + (size_t)k * 3 * S * S;
        if (dd) { int sh[4] = {1, 3, S, S}; dump_npy(dd, "pixel_values", pk, 4, sh); }
        if (clip_encode_images(m, pk, batch, row, dd ? dump_npy : NULL, dd, err)) die(1, "%s", err);
        k += batch;
    }
}

static int cmd_embed(const options *o)
{
    if (o->list || o->shard) {   /* clip embed --list (search.c) */
        if (!o->list) usage_error("--shard goes with --list FILE");
        if (o->texts.n + o->images.n + o->ids.n + o->pixels.n + o->pos.n || o->raw || o->dump)
            usage_error("--list takes the pictures from its file: no other inputs, --raw or --dump");
        return embed_list(o->model, o->list, o->shard, o->out, o->resize);
    }
    clip_model *m = load_model(o);
    const clip_config *c = clip_get_config(m);
    int D = c->projection_dim, S = c->image_size;
    size_t per = (size_t)3 * S * S;
    embeddings e = {NULL, 0, 0, D};
    int n_inputs = o->texts.n + o->images.n + o->ids.n + o->pixels.n + o->pos.n;

    if (o->pos.n) usage_error("unexpected argument '%s' (use --text, --image, --ids or --pixel-values)", o->pos.v[0]);
    if (!n_inputs) usage_error("nothing to embed: give --text, --image, --ids or --pixel-values");
    if (o->dump) make_dir(o->dump);

    embed_texts(o, m, &e, n_inputs);
    for (int i0 = 0; i0 < o->images.n; i0 += IMAGE_BATCH) {   /* --image: IMAGE_BATCH files at a time */
        int count = o->images.n - i0 < IMAGE_BATCH ? o->images.n - i0 : IMAGE_BATCH;
        float *px = xmalloc(count * per * sizeof(float));
        for (int b = 0; b < count; b++) {
            float *one = image_pixels(m, o->images.v[i0 + b], o->resize);
            memcpy(px + b * per, one, per * sizeof(float));
            free(one);
        }
        embed_pixels(o, m, &e, n_inputs, px, count);
        free(px);
    }
    for (int i = 0; i < o->pixels.n; i++) {
        int nd, dims[8], count = 0;
        float *px = read_npy_float(o->pixels.v[i], &nd, dims);
        if (nd == 3 && dims[0] == 3 && dims[1] == S && dims[2] == S) count = 1;
        else if (nd == 4 && dims[1] == 3 && dims[2] == S && dims[3] == S) count = dims[0];
        if (!count) die(1, "%s: pixel values must have shape [N, 3, %d, %d] for this model", o->pixels.v[i], S, S);
        embed_pixels(o, m, &e, n_inputs, px, count);
        free(px);
    }
    if (!o->raw)
        for (int r = 0; r < e.rows; r++) clip_normalize(e.data + (size_t)r * D, D);
    if (o->out) {
        int sh[2] = {e.rows, D};
        write_npy(o->out, "<f4", e.data, 4, 2, sh);
    } else {
        for (int r = 0; r < e.rows; r++) {
            for (int j = 0; j < D; j++) printf(j ? " %.9g" : "%.9g", e.data[(size_t)r * D + j]);
            putchar('\n');
        }
    }
    free(e.data);
    clip_free(m);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* clip tokenize, clip info, clip decode, clip preprocess                    */
/* ------------------------------------------------------------------------ */
static int cmd_tokenize(const options *o)
{
    clip_model *m = load_model(o);
    const clip_tokenizer *tok = clip_get_tokenizer(m);
    int ctx = clip_tokenizer_context_length(tok);
    int32_t *ids = xmalloc((size_t)ctx * sizeof(int32_t));
    char err[CLIP_ERR_SIZE];
    if (!o->pos.n && !o->texts.n) usage_error("nothing to tokenize: give one or more texts");
    for (int i = 0; i < o->pos.n + o->texts.n; i++) {
        const char *t = i < o->pos.n ? o->pos.v[i] : o->texts.v[i - o->pos.n];
        int n = clip_tokenize(tok, t, strlen(t), ids, ctx, o->pad ? CLIP_TOKENIZE_PAD : 0, err);
        if (n < 0) die(1, "cannot tokenize '%.60s': %s", t, err);
        for (int j = 0; j < n; j++) printf(j ? " %ld" : "%ld", (long)ids[j]);
        putchar('\n');
    }
    free(ids);
    clip_free(m);
    return 0;
}

static int cmd_info(const options *o)
{
    if (o->pos.n) usage_error("unexpected argument '%s' (info takes -m MODEL only)", o->pos.v[0]);
    clip_model *m = load_model(o);
    const clip_config *c = clip_get_config(m);
    const clip_preprocess_config *p = &c->preprocess;
    const char *act[2] = {"quick_gelu", "gelu"};
    printf("model:        %s\n", o->model);
    printf("source:       %s%s\n", c->name, c->synthetic ? "" : "");
    if (c->synthetic)
        printf("weights:      SYNTHETIC (pseudo-random, made by convert.py --synthetic): for benchmarks and tests only,\n"
               "              its embeddings mean nothing\n");
    printf("file size:    %zu bytes\n", clip_file_size(m));
    printf("build:        %s\n", clip_build_info());
    printf("vision:       ViT, patch %d, image %d, hidden %d, %d heads, %d layers, mlp %d, %s, eps %g\n",
           c->patch, c->image_size, c->vision.hidden, c->vision.heads, c->vision.layers, c->vision.intermediate,
           act[c->vision.act], c->vision.eps);
    printf("text:         hidden %d, %d heads, %d layers, mlp %d, %s, eps %g, vocab %d, context %d, eos id %d (%s)\n",
           c->text.hidden, c->text.heads, c->text.layers, c->text.intermediate, act[c->text.act], c->text.eps,
           c->vocab_size, c->max_positions, c->eos_token_id,
           c->eos_token_id == 2 ? "legacy: pool at the largest id" : "pool at the first eos");
    printf("projection:   %d, logit scale %g\n", c->projection_dim, clip_logit_scale(m));
    printf("preprocess:   shortest edge %d, center crop %dx%d, mean %g %g %g, std %g %g %g\n",
           p->shortest_edge, p->crop_w, p->crop_h, p->mean[0], p->mean[1], p->mean[2], p->std[0], p->std[1], p->std[2]);
    clip_free(m);
    return 0;
}

static int cmd_decode(const options *o)
{
    char err[CLIP_ERR_SIZE];
    clip_image img;
    if (o->pos.n != 1) usage_error("decode takes one image");
    if (!o->out) usage_error("decode needs -o OUT.npy");
    if (clip_image_load(o->pos.v[0], &img, err)) die(1, "%s", err);
    int sh[3] = {img.h, img.w, 3};
    write_npy(o->out, "|u1", img.rgb, 1, 3, sh);
    clip_image_free(&img);
    return 0;
}

static int cmd_preprocess(const options *o)
{
    if (o->pos.n != 1) usage_error("preprocess takes one image");
    if (!o->out) usage_error("preprocess needs -o OUT.npy");
    clip_model *m = load_model(o);
    int S = clip_get_config(m)->image_size, sh[4] = {1, 3, S, S};
    float *px = image_pixels(m, o->pos.v[0], o->resize);
    write_npy(o->out, "<f4", px, 4, 4, sh);
    free(px);
    clip_free(m);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* clip match (the article's experiment 1)                                   */
/* ------------------------------------------------------------------------ */

/* logits_per_image[t] = exp(logit_scale) * <image_embeds, text_embeds[t]>, probs = softmax */
static void match_scores(clip_model *m, const float *img, const float *txt, int n, float *logits, float *probs)
{
    int D = clip_get_config(m)->projection_dim;
    float scale = clip_logit_scale(m);
    for (int t = 0; t < n; t++) {
        double s = 0.0;
        for (int j = 0; j < D; j++) s += (double)img[j] * txt[(size_t)t * D + j];
        logits[t] = (float)(scale * s);
        probs[t] = logits[t];
    }
    clip_softmax(probs, 1, n);
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static void html_escape(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

/* A self-contained page: the image (PNG, base64) and one bar per caption. */
static void write_html(const char *path, const char *image_path, const char *const *texts, int n,
                       const float *logits, const float *probs, int best)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char err[CLIP_ERR_SIZE];
    clip_image img, small;
    uint8_t *png;
    size_t png_size;
    char *tmp = xmalloc(strlen(path) + 32);
    FILE *f;

    if (clip_image_load(image_path, &img, err)) die(1, "%s", err);
    if (img.w > 512 || img.h > 512) {   /* a page-sized copy */
        int w = img.w >= img.h ? 512 : (int)((double)img.w * 512 / img.h);
        int h = img.h > img.w ? 512 : (int)((double)img.h * 512 / img.w);
        if (clip_resize_bicubic_pil(&img, w < 1 ? 1 : w, h < 1 ? 1 : h, &small, err)) die(1, "%s", err);
        clip_image_free(&img);
        img = small;
    }
    if (clip_png_encode(&img, &png, &png_size, err)) die(1, "%s", err);
    sprintf(tmp, "%s.tmp.%ld", path, (long)getpid());
    if (!(f = fopen(tmp, "w"))) die(1, "%s: cannot write: %s", path, strerror(errno));
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>clip match</title>\n<style>\n"
          "body{font-family:system-ui,sans-serif;max-width:760px;margin:2em auto;color:#222}\n"
          "img{max-width:100%;border-radius:6px;display:block;margin-bottom:1em}\n"
          "table{border-collapse:collapse;width:100%}td{padding:.35em .5em;vertical-align:middle}\n"
          ".bar{background:#e8e8e8;width:260px;height:14px;border-radius:3px}.fill{background:#7a9cc6;height:100%;border-radius:3px}\n"
          "tr.best{font-weight:bold}tr.best .fill{background:#2b6cb0}.num{font-variant-numeric:tabular-nums;text-align:right}\n"
          "</style></head><body>\n<h1>clip match</h1>\n<p>", f);
    html_escape(f, image_path);
    fputs("</p>\n<img alt=\"input image\" src=\"data:image/png;base64,", f);
    for (size_t i = 0; i < png_size; i += 3) {
        uint32_t v = (uint32_t)png[i] << 16 | (i + 1 < png_size ? (uint32_t)png[i + 1] << 8 : 0) | (i + 2 < png_size ? png[i + 2] : 0);
        fputc(b64[v >> 18 & 63], f);
        fputc(b64[v >> 12 & 63], f);
        fputc(i + 1 < png_size ? b64[v >> 6 & 63] : '=', f);
        fputc(i + 2 < png_size ? b64[v & 63] : '=', f);
    }
    fputs("\">\n<table>\n<tr><th align=\"left\">caption</th><th>probability</th><th></th><th>logit</th></tr>\n", f);
    for (int t = 0; t < n; t++) {
        fprintf(f, "<tr%s><td>", t == best ? " class=\"best\"" : "");
        html_escape(f, texts[t]);
        fprintf(f, "</td><td class=\"num\">%.4f</td><td><div class=\"bar\"><div class=\"fill\" style=\"width:%.2f%%\"></div></div></td>"
                   "<td class=\"num\">%.4f</td></tr>\n", probs[t], 100.0 * probs[t], logits[t]);
    }
    fputs("</table>\n<p><small>softmax over captions of exp(logit_scale) &middot; cosine similarity, computed by clip.c</small></p>\n"
          "</body></html>\n", f);
    if (fclose(f) != 0 || rename(tmp, path) != 0) { remove(tmp); die(1, "%s: write error", path); }
    free(png);
    free(tmp);
    clip_image_free(&img);
}

static int cmd_match(const options *o)
{
    if (o->pos.n) usage_error("unexpected argument '%s' (captions go after -t, the image after -i)", o->pos.v[0]);
    if (o->images.n != 1) usage_error("match needs exactly one image: -i IMAGE");
    if (o->texts.n < 1) usage_error("match needs at least one caption: -t TEXT");
    clip_model *m = load_model(o);
    int D = clip_get_config(m)->projection_dim, n = o->texts.n, best = 0;
    float *img = xmalloc(D * sizeof(float)), *txt = xmalloc((size_t)n * D * sizeof(float));
    float *logits = xmalloc(n * sizeof(float)), *probs = xmalloc(n * sizeof(float));
    float *px = image_pixels(m, o->images.v[0], o->resize);

    image_features(m, px, img, NULL, NULL);
    clip_normalize(img, D);
    texts_features(m, o->texts.v, n, txt);
    for (int t = 0; t < n; t++) clip_normalize(txt + (size_t)t * D, D);
    match_scores(m, img, txt, n, logits, probs);
    for (int t = 1; t < n; t++) if (probs[t] > probs[best]) best = t;

    if (o->html) write_html(o->html, o->images.v[0], o->texts.v, n, logits, probs, best);
    if (o->json) {
        printf("{\"image\": ");
        json_string(stdout, o->images.v[0]);
        printf(", \"results\": [");
        for (int t = 0; t < n; t++) {
            printf(t ? ", {\"text\": " : "{\"text\": ");
            json_string(stdout, o->texts.v[t]);
            printf(", \"logit\": %.6f, \"prob\": %.8f}", logits[t], probs[t]);
        }
        printf("]}\n");
    } else {
        printf("%s\n", o->images.v[0]);
        for (int t = 0; t < n; t++)
            printf("  %s %6.2f%%  %s\n", t == best ? "*" : " ", 100.0 * probs[t], o->texts.v[t]);
    }
    free(px); free(img); free(txt); free(logits); free(probs);
    clip_free(m);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* clip classify (the article's experiment 2)                                */
/* ------------------------------------------------------------------------ */

static const char *cifar_classes[10] = {"airplane", "automobile", "bird", "cat", "deer",
                                        "dog", "frog", "horse", "ship", "truck"};

/* Split "a,b,c" (or lines of a file) into labels; returns count. */
static int split_labels(char *s, char sep, char **labels, int max)
{
    int n = 0;
    while (*s) {
        char *e = strchr(s, sep), *t;
        if (e) *e = 0;
        while (*s == ' ' || *s == '\t' || *s == '\r') s++;
        t = s + strlen(s);
        while (t > s && (t[-1] == ' ' || t[-1] == '\t' || t[-1] == '\r')) *--t = 0;
        if (*s) {
            if (n >= max) usage_error("too many labels (at most %d)", max);
            labels[n++] = s;
        }
        if (!e) break;
        s = e + 1;
    }
    return n;
}

/* --labels a,b,c or --labels-file FILE: the labels, pointing into *buf
 * (malloc'd; the caller frees it). */
static int read_labels(const options *o, char **labels, char **buf)
{
    int n;
    if (o->labels) {
        *buf = xmalloc(strlen(o->labels) + 1);
        strcpy(*buf, o->labels);
        n = split_labels(*buf, ',', labels, MAX_LABELS);
    } else {
        size_t size;
        uint8_t *data = read_file(o->labels_file, &size);
        *buf = xmalloc(size + 1);
        memcpy(*buf, data, size);
        (*buf)[size] = 0;
        free(data);
        n = split_labels(*buf, '\n', labels, MAX_LABELS);
    }
    if (n < 1) usage_error("no labels given");
    return n;
}

/* Text embeddings of template.format(label), computed once. */
static float *label_embeddings(clip_model *m, const char *tmpl, char **labels, int n)
{
    int D = clip_get_config(m)->projection_dim;
    float *emb = xmalloc((size_t)n * D * sizeof(float));
    char **prompts = xmalloc((size_t)n * sizeof(char *));
    const char *brace = strstr(tmpl, "{}");
    for (int i = 0; i < n; i++) {
        prompts[i] = xmalloc(strlen(tmpl) + strlen(labels[i]) + 1);
        sprintf(prompts[i], "%.*s%s%s", (int)(brace - tmpl), tmpl, labels[i], brace + 2);
    }
    texts_features(m, (const char *const *)prompts, n, emb);
    for (int i = 0; i < n; i++) {
        clip_normalize(emb + (size_t)i * D, D);
        free(prompts[i]);
    }
    free(prompts);
    return emb;
}

static void progress(int done, int total, double t0)
{
    int width = 30, fill = total ? (int)((double)done * width / total) : width;
    double el = now() - t0;
    fprintf(stderr, "\r[%.*s%*s] %d/%d  %.1f images/s ", fill, "##############################", width - fill, "",
            done, total, el > 0 ? done / el : 0.0);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

/* Each image's best labels: probabilities of the n prompts (emb[n, D]). */
static void classify_images(const options *o, clip_model *m, char **labels, int n, const float *emb)
{
    int D = clip_get_config(m)->projection_dim, top = o->top < n ? o->top : n, order[MAX_LABELS];
    float *img = xmalloc(D * sizeof(float)), *logits = xmalloc(n * sizeof(float)), *probs = xmalloc(n * sizeof(float));
    for (int i = 0; i < o->pos.n + o->images.n; i++) {
        const char *path = i < o->pos.n ? o->pos.v[i] : o->images.v[i - o->pos.n];
        float *px = image_pixels(m, path, o->resize);
        image_features(m, px, img, NULL, NULL);
        free(px);
        clip_normalize(img, D);
        match_scores(m, img, emb, n, logits, probs);
        for (int k = 0; k < n; k++) order[k] = k;
        for (int k = 0; k < top; k++)
            for (int l = k + 1; l < n; l++)
                if (probs[order[l]] > probs[order[k]]) { int t = order[k]; order[k] = order[l]; order[l] = t; }
        printf("%s", path);
        for (int k = 0; k < top; k++) printf("%s%s %.4f", k ? ", " : "\t", labels[order[k]], probs[order[k]]);
        putchar('\n');
    }
    free(img); free(logits); free(probs);
}

/* CIFAR-10 binary: records of 1 label byte + 3072 bytes (R, G, B planes of
 * 32x32). Reads the whole file, then classifies IMAGE_BATCH images a pass
 * against the ten class prompts emb[10, D]. */
static void classify_cifar10(const options *o, clip_model *m, const float *emb)
{
    const clip_config *c = clip_get_config(m);
    int D = c->projection_dim, confusion[10][10] = {{0}}, total, correct = 0, tty = isatty(fileno(stderr));
    size_t size, npx = (size_t)3 * c->image_size * c->image_size;
    uint8_t *data = read_file(o->cifar10, &size), rgb[32 * 32 * 3];
    clip_image im = {32, 32, rgb};
    char err[CLIP_ERR_SIZE];
    float logits[10], probs[10], *px, *feats;
    double t0 = now(), el;

    if (size == 0 || size % 3073 != 0) {
        free(data);
        die(1, "%s: a CIFAR-10 binary file holds records of 3073 bytes, but this one has %zu bytes", o->cifar10, size);
    }
    total = (int)(size / 3073);
    if (o->limit && o->limit < total) total = o->limit;
    for (int r = 0; r < total; r++)
        if (data[(size_t)r * 3073] > 9) {
            int label = data[(size_t)r * 3073];
            free(data);
            die(1, "%s: record %d has label %d (CIFAR-10 labels are 0..9)", o->cifar10, r, label);
        }
    px = xmalloc(IMAGE_BATCH * npx * sizeof(float));
    feats = xmalloc((size_t)IMAGE_BATCH * D * sizeof(float));
    for (int r0 = 0; r0 < total; r0 += IMAGE_BATCH) {
        int batch = total - r0 < IMAGE_BATCH ? total - r0 : IMAGE_BATCH;
        for (int b = 0; b < batch; b++) {
            const uint8_t *rec = data + (size_t)(r0 + b) * 3073;
            for (int p = 0; p < 1024; p++)
                for (int ch = 0; ch < 3; ch++) rgb[p * 3 + ch] = rec[1 + ch * 1024 + p];
            if (clip_image_preprocess(&im, &c->preprocess, o->resize, px + b * npx, err)) die(1, "%s: %s", o->cifar10, err);
        }
        if (clip_encode_images(m, px, batch, feats, NULL, NULL, err)) die(1, "%s", err);
        for (int b = 0; b < batch; b++) {
            int label = data[(size_t)(r0 + b) * 3073], best = 0;
            float *f = feats + (size_t)b * D;
            clip_normalize(f, D);
            match_scores(m, f, emb, 10, logits, probs);
            for (int k = 1; k < 10; k++) if (probs[k] > probs[best]) best = k;
            confusion[label][best]++;
            correct += best == label;
        }
        if (tty) progress(r0 + batch, total, t0);
    }
    el = now() - t0;
    printf("CIFAR-10: %d images, accuracy %.2f%% (%d correct), %.1f images/s\n", total, 100.0 * correct / total,
           correct, el > 0 ? total / el : 0.0);
    printf("\nper class:\n");
    for (int k = 0; k < 10; k++) {
        int n = 0;
        for (int l = 0; l < 10; l++) n += confusion[k][l];
        printf("  %-10s %6.2f%%  (%d/%d)\n", cifar_classes[k], n ? 100.0 * confusion[k][k] / n : 0.0, confusion[k][k], n);
    }
    printf("\nconfusion matrix (rows: true class, columns: predicted):\n%-11s", "");
    for (int l = 0; l < 10; l++) printf(" %5.5s", cifar_classes[l]);
    putchar('\n');
    for (int k = 0; k < 10; k++) {
        printf("%-11s", cifar_classes[k]);
        for (int l = 0; l < 10; l++) printf(" %5d", confusion[k][l]);
        putchar('\n');
    }
    free(px);
    free(feats);
    free(data);
}

static int cmd_classify(const options *o)
{
    const char *tmpl = o->template_ ? o->template_ : "a photo of a {}";
    char *labels[MAX_LABELS], *label_buf = NULL;
    int n_labels;
    if (!strstr(tmpl, "{}")) usage_error("--template must contain {} where the label goes, e.g. \"a photo of a {}\"");
    if (o->cifar10) {
        refuse_with(o, OPT_LABELS | OPT_LABELS_FILE, "does not go with --cifar10, which uses the CIFAR-10 class names");
        refuse_with(o, OPT_TOP, "does not go with --cifar10, which reports accuracy");
        if (o->pos.n || o->images.n) usage_error("--cifar10 takes no image arguments");
        for (int i = 0; i < 10; i++) labels[i] = (char *)cifar_classes[i];
        n_labels = 10;
    } else {
        refuse_with(o, OPT_LIMIT, "applies to --cifar10 only");
        if (!o->labels == !o->labels_file) usage_error("classify needs --labels a,b,c or --labels-file FILE (one of them)");
        if (!o->pos.n && !o->images.n) usage_error("classify needs at least one image");
        n_labels = read_labels(o, labels, &label_buf);
    }
    clip_model *m = load_model(o);
    float *emb = label_embeddings(m, tmpl, labels, n_labels);
    if (o->cifar10) classify_cifar10(o, m, emb);
    else classify_images(o, m, labels, n_labels, emb);
    free(emb);
    free(label_buf);
    clip_free(m);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* clip bench                                                                */
/* ------------------------------------------------------------------------ */

/* bench: time the encoders the way an application would call them, best of
 * several runs each, with the matrix-product FLOPs of every run so that the
 * GFLOP/s compare with the machine's peak. Also the start-up cost (clip_load
 * to the first text embedding) and the peak resident memory, which counts
 * the pages of the mmap'ed model file that were read. --json prints one
 * object for scripts (test/bench.py). */
static double bench_peak_rss_mb(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1.0;
    return ru.ru_maxrss / 1024.0;   /* Linux reports kilobytes */
}

/* matrix-product FLOPs of one encoder layer stack over n tokens (causal: a
 * triangle of scores), as clip.c runs it: the last layer makes q, k and v
 * for every token and the rest for the pooled token only */
static double bench_tower_flops(const clip_tower_config *t, int n, int causal)
{
    double d = t->hidden, f = t->intermediate, pairs = causal ? n * (n + 1) / 2.0 : (double)n * n;
    double layer = 2.0 * n * (4 * d * d + 2 * d * f) + 4.0 * pairs * d;
    double last = n < 2 ? layer : 2.0 * n * 3 * d * d + 2.0 * (d * d + 2 * d * f) + 4.0 * n * d;
    return (t->layers - 1) * layer + last;
}

/* clip bench MxKxN ...: clip_linear without bias on random data, the shapes
 * given as positional arguments; best of rounds over all shapes */
static int bench_gemm(const options *o)
{
    int ns = o->pos.n, (*shape)[3] = xmalloc((size_t)ns * sizeof *shape);
    double *best = xmalloc((size_t)ns * sizeof *best), start;
    for (int s = 0; s < ns; s++) {
        char tail;
        if (sscanf(o->pos.v[s], "%dx%dx%d%c", &shape[s][0], &shape[s][1], &shape[s][2], &tail) != 3 ||
            shape[s][0] < 1 || shape[s][1] < 1 || shape[s][2] < 1 || shape[s][0] > 65536 || shape[s][1] > 65536 || shape[s][2] > 65536)
            usage_error("a matrix-product shape is MxKxN (each 1 to 65536), not '%s'", o->pos.v[s]);
        best[s] = 1e30;
    }
    start = now();
    for (int round = 0; round < 1000; round++) {
        for (int s = 0; s < ns; s++) {
            int m = shape[s][0], k = shape[s][1], n = shape[s][2];
            size_t na = (size_t)m * k, nb = (size_t)n * k, nc = (size_t)m * n;
            float *a = xmalloc(na * sizeof(float)), *b = xmalloc(nb * sizeof(float)), *c = xmalloc(nc * sizeof(float));
            uint32_t seed = 7;
            for (size_t i = 0; i < na; i++) a[i] = random_uniform(&seed) - 0.5f;
            for (size_t i = 0; i < nb; i++) b[i] = random_uniform(&seed) * 0.1f - 0.05f;
            clip_linear(c, a, b, NULL, m, k, n);   /* warm up */
            for (int rep = 0; rep < 3; rep++) {
                double t = now();
                clip_linear(c, a, b, NULL, m, k, n);
                t = now() - t;
                if (t < best[s]) best[s] = t;
            }
            free(a); free(b); free(c);
        }
        if (round >= 2 && now() - start > 4.0) break;
    }
    if (o->json) printf("{\"threads\": %d, \"gemm\": [", o->threads);
    else printf("  %-16s %9s %9s\n", "M x K x N", "ms", "GFLOP/s");
    for (int s = 0; s < ns; s++) {
        double flops = 2.0 * shape[s][0] * shape[s][1] * shape[s][2];
        if (o->json) printf("%s{\"m\": %d, \"k\": %d, \"n\": %d, \"ms\": %.4f}", s ? ", " : "", shape[s][0], shape[s][1], shape[s][2], best[s] * 1e3);
        else printf("  %-16s %9.3f %9.1f\n", o->pos.v[s], best[s] * 1e3, flops / best[s] / 1e9);
    }
    if (o->json) printf("]}\n");
    free(shape); free(best);
    return 0;
}

/* What bench times: the encoders on random pixels, on made-up texts of 7
 * and 77 tokens, and on ten short prompts one by one and as one batch. */
enum { BENCH_IMAGES, BENCH_TEXT, BENCH_PROMPTS, BENCH_PROMPT_BATCH };
typedef struct {
    const char *name;
    int kind, n;             /* BENCH_*; images, or tokens of the text */
    double flops, items;     /* matrix-product FLOPs of one run; inputs it encodes */
    double best, cpu;        /* the best wall and processor time (s) */
    int reps;
} bench_run;

/* The ten prompts' ids; made-up ids of about the same lengths where the
 * tokenizer fails (a synthetic model's vocabulary). */
static void bench_prompt_ids(clip_model *m, int32_t ids[10][77], int lens[10])
{
    static const char *prompts[10] = {"a photo of a cat", "a photo of a dog", "a photo of an airplane",
        "a photo of an automobile", "a photo of a bird", "a photo of a deer", "a photo of a frog",
        "a photo of a horse", "a photo of a ship", "a photo of a truck"};
    const clip_config *c = clip_get_config(m);
    int ctx = c->max_positions < 77 ? c->max_positions : 77;
    char err[CLIP_ERR_SIZE];
    for (int t = 0; t < 10; t++) {
        lens[t] = clip_tokenize(clip_get_tokenizer(m), prompts[t], strlen(prompts[t]), ids[t], 77, 0, err);
        if (lens[t] < 2 || lens[t] > ctx) {
            lens[t] = (int)strlen(prompts[t]) / 4 + 2 < ctx ? (int)strlen(prompts[t]) / 4 + 2 : ctx;
            for (int i = 0; i < lens[t]; i++) ids[t][i] = (320 + 37 * t + 11 * i) % c->vocab_size;
            ids[t][lens[t] - 1] = c->vocab_size - 1;
        }
    }
}

/* Rounds over all runs, so that a burst of load elsewhere spoils one round,
 * not one run; stops after 50 rounds or 8 s (at least 3 rounds). px holds
 * IMAGE_BATCH images; *rss_one is the peak memory after the first image. */
static void bench_time(clip_model *m, bench_run *runs, int nruns, const float *px, int32_t ids[10][77],
                       const int lens[10], double *rss_one)
{
    const clip_config *c = clip_get_config(m);
    float *f = xmalloc((size_t)IMAGE_BATCH * c->projection_dim * sizeof(float));
    int32_t long_ids[77];
    char err[CLIP_ERR_SIZE];
    double start = now();
    for (int i = 0; i < 77; i++) long_ids[i] = (320 + 7 * i) % c->vocab_size;
    for (int round = 0; round < 50; round++) {
        for (int r = 0; r < nruns; r++) {
            double t = now();
            clock_t ct = clock();   /* processor time of all threads: the work, whatever the load */
            int rc = 0;
            if (runs[r].kind == BENCH_IMAGES) rc = clip_encode_images(m, px, runs[r].n, f, NULL, NULL, err);
            else if (runs[r].kind == BENCH_TEXT) {
                long_ids[runs[r].n - 1] = c->vocab_size - 1;
                rc = clip_encode_text(m, long_ids, runs[r].n, f, NULL, NULL, err);
                long_ids[runs[r].n - 1] = (320 + 7 * (runs[r].n - 1)) % c->vocab_size;
            } else if (runs[r].kind == BENCH_PROMPTS) {
                for (int i = 0; i < 10 && !rc; i++) rc = clip_encode_text(m, ids[i], lens[i], f, NULL, NULL, err);
            } else {
                const int32_t *rows[10];
                for (int i = 0; i < 10; i++) rows[i] = ids[i];
                rc = clip_encode_texts(m, rows, lens, 10, f, err);
            }
            if (rc) die(1, "%s", err);
            t = now() - t;
            if (!runs[r].reps || t < runs[r].best) runs[r].best = t;
            if (!runs[r].reps || (double)(clock() - ct) / CLOCKS_PER_SEC < runs[r].cpu)
                runs[r].cpu = (double)(clock() - ct) / CLOCKS_PER_SEC;
            runs[r].reps++;
            if (r == 0 && round == 0) *rss_one = bench_peak_rss_mb();
        }
        if (round >= 2 && now() - start > 8.0) break;
    }
    free(f);
}

static void bench_print(const options *o, clip_model *m, const bench_run *runs, int nruns, const int lens[10],
                        double load_ms, double first_ms, double rss_load, double rss_one)
{
    const clip_config *c = clip_get_config(m);
    double file_mb = clip_file_size(m) / 1048576.0, rss_all = bench_peak_rss_mb();
    if (o->json) {
        printf("{\"model\": \"%s\", \"threads\": %d, \"file_mb\": %.1f, \"load_ms\": %.2f, \"first_text_ms\": %.2f, "
               "\"rss_load_mb\": %.1f, \"rss_one_image_mb\": %.1f, \"rss_peak_mb\": %.1f, \"lens\": [",
               c->name, o->threads, file_mb, load_ms, first_ms, rss_load, rss_one, rss_all);
        for (int t = 0; t < 10; t++) printf("%s%d", t ? ", " : "", lens[t]);
        printf("], \"runs\": [");
        for (int r = 0; r < nruns; r++)
            printf("%s{\"name\": \"%s\", \"ms\": %.3f, \"cpu_ms\": %.3f, \"items\": %g, \"gflop\": %.4f, \"reps\": %d}",
                   r ? ", " : "", runs[r].name, runs[r].best * 1e3, runs[r].cpu * 1e3, runs[r].items, runs[r].flops / 1e9, runs[r].reps);
        printf("]}\n");
        return;
    }
    printf("%s: %s (%.1f MB)%s\n", o->model, c->name, file_mb, o->threads ? "" : ", all cores");
    if (o->threads) printf("threads: %d\n", o->threads);
    printf("  %-20s %9s %10s %9s %9s   best of\n", "", "ms", "per second", "GFLOP/s", "cpu ms");
    for (int r = 0; r < nruns; r++)
        printf("  %-20s %9.2f %10.1f %9.1f %9.2f   %d\n", runs[r].name, runs[r].best * 1e3,
               runs[r].items / runs[r].best, runs[r].flops / runs[r].best / 1e9, runs[r].cpu * 1e3, runs[r].reps);
    printf("  load (clip_load)       %7.2f ms\n", load_ms);
    printf("  load to first text     %7.2f ms\n", first_ms);
    printf("  peak RSS               %7.1f MB after the first text, %.1f MB after one image, %.1f MB in all\n",
           rss_load, rss_one, rss_all);
}

static int cmd_bench(const options *o)
{
    char err[CLIP_ERR_SIZE];
    clip_model *m;
    double t0 = now(), load_ms, first_ms, rss_load, rss_one = 0.0;
    if (o->pos.n) return bench_gemm(o);
    if (!o->model) usage_error("no model given: use -m MODEL (a file made by convert.py)");
    if (clip_load(&m, o->model, err)) die(1, "%s", err);
    load_ms = (now() - t0) * 1e3;

    const clip_config *c = clip_get_config(m);
    int S = c->image_size, D = c->projection_dim, ctx = c->max_positions < 77 ? c->max_positions : 77;
    int g = S / c->patch, np_ = 1 + g * g;
    size_t npx = (size_t)3 * S * S;
    float *px = xmalloc(npx * IMAGE_BATCH * sizeof(float)), *f = xmalloc((size_t)D * sizeof(float));
    int32_t ids[10][77];
    int lens[10];
    uint32_t seed = 1;

    bench_prompt_ids(m, ids, lens);
    if (clip_encode_text(m, ids[0], lens[0], f, NULL, NULL, err)) die(1, "%s", err);
    first_ms = (now() - t0) * 1e3;
    rss_load = bench_peak_rss_mb();
    for (size_t i = 0; i < npx * IMAGE_BATCH; i++) px[i] = random_uniform(&seed) * 4.0f - 2.0f;

    double img_flops = 2.0 * g * g * 3.0 * c->patch * c->patch * c->vision.hidden
                     + bench_tower_flops(&c->vision, np_, 0) + 2.0 * c->vision.hidden * D;
    bench_run runs[] = {
        {"image", BENCH_IMAGES, 1, img_flops, 1, 0, 0, 0},
        {"image, batch of 16", BENCH_IMAGES, IMAGE_BATCH, img_flops * IMAGE_BATCH, IMAGE_BATCH, 0, 0, 0},
        {"text, 7 tokens", BENCH_TEXT, 7, 0, 1, 0, 0, 0},
        {"text, 77 tokens", BENCH_TEXT, 77, 0, 1, 0, 0, 0},
        {"10 texts (prompts)", BENCH_PROMPTS, 10, 0, 10, 0, 0, 0},
        {"10 texts, one batch", BENCH_PROMPT_BATCH, 10, 0, 10, 0, 0, 0},
    };
    int nruns = (int)(sizeof runs / sizeof runs[0]);
    for (int r = 0; r < nruns; r++) {
        if (runs[r].kind == BENCH_TEXT) {
            runs[r].n = runs[r].n < ctx ? runs[r].n : ctx;
            runs[r].flops = bench_tower_flops(&c->text, runs[r].n, 1) + 2.0 * c->text.hidden * D;
        } else if (runs[r].kind != BENCH_IMAGES) {   /* the ten prompts' own FLOPs, one by one or batched (the padding not counted) */
            for (int t = 0; t < 10; t++) runs[r].flops += bench_tower_flops(&c->text, lens[t], 1) + 2.0 * c->text.hidden * D;
        }
    }
    bench_time(m, runs, nruns, px, ids, lens, &rss_one);
    bench_print(o, m, runs, nruns, lens, load_ms, first_ms, rss_load, rss_one);
    free(px); free(f);
    clip_free(m);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The commands, help, main                                                  */
/* ------------------------------------------------------------------------ */

static const command commands[] = {
    {"match", cmd_match, OPT_MODEL | OPT_IMAGE | OPT_TEXT | OPT_JSON | OPT_HTML | OPT_RESIZE | OPT_THREADS,
     "-m MODEL -i IMAGE -t TEXT [-t TEXT ...] [--json] [--html OUT.html]",
     "probability of each caption for one image (softmax of logits_per_image)",
     "The article's experiment 1: for one image and several captions, the softmax\n"
     "over the captions of exp(logit_scale) * cosine similarity (CLIPModel's\n"
     "logits_per_image). The best caption is marked with *."},
    {"classify", cmd_classify, OPT_MODEL | OPT_IMAGE | OPT_LABELS | OPT_LABELS_FILE | OPT_TEMPLATE | OPT_TOP |
     OPT_CIFAR10 | OPT_LIMIT | OPT_RESIZE | OPT_THREADS,
     "-m MODEL (--labels a,b,c | --labels-file F) [--template \"a photo of a {}\"] [--top K] IMAGE ...\n"
     "  clip classify   -m MODEL --cifar10 test_batch.bin [--limit N]",
     "zero-shot classification: one prompt per label, best label per image;\n"
     "              --cifar10 reads the CIFAR-10 binary format and reports accuracy",
     "The article's experiment 2, zero-shot classification: the prompt (--template)\n"
     "of each label is embedded once; each image gets the probability of every label,\n"
     "and the --top K best are printed. --cifar10 reads the CIFAR-10 binary format and\n"
     "reports accuracy, per-class accuracy and the confusion matrix (its 32x32 images\n"
     "are upscaled to the model's size, which is why accuracy there is lower)."},
    {"embed", cmd_embed, OPT_MODEL | OPT_IMAGE | OPT_TEXT | OPT_IDS | OPT_PIXELS | OPT_RAW | OPT_OUTPUT | OPT_DUMP |
     OPT_RESIZE | OPT_THREADS | OPT_LIST | OPT_SHARD,
     "-m MODEL (--image F | --text S | --pixel-values F.npy | --ids \"49406 ... 49407\") ... [--raw] [-o OUT.npy] [--dump DIR]\n"
     "  clip embed      -m MODEL --list FILE|- -o OUT.npy [--shard I/N]",
     "write embeddings as float32 .npy [N, D] (L2-normalized; --raw: projections);\n"
     "              every option may repeat; --dump DIR writes every stage as .npy;\n"
     "              --list FILE: the pictures named in FILE into OUT.npy, with\n"
     "              OUT.paths.txt and OUT.failures.tsv beside it",
     "Embeddings as float32 .npy [N, D], one row per input, L2-normalized (--raw:\n"
     "the projections as they come); printed when there is no -o. Every input option\n"
     "may repeat; the rows come in the order ids, texts, images, pixel values.\n"
     "--dump DIR writes every stage (the ids or pixel values, each layer's output as\n"
     "Hugging Face's hidden_states, the pooled output, the features) as DIR/NAME.npy,\n"
     "in DIR/0, DIR/1, ... for several inputs.\n"
     "--list FILE (- for stdin) embeds the pictures it names, one a line, into OUT.npy\n"
     "in list order, OUT.paths.txt beside it; a picture that fails is a row of zeros and\n"
     "a line of OUT.failures.tsv. --shard I/N takes only the I-th of N equal parts."},
    {"index", NULL, 0,
     "-m MODEL DIR|FILE ... -o INDEX [--shard I/N]   (clip index --help)",
     "embed a folder of pictures into an index, incrementally (clip index --help)",
     "(search.c: clip index --help)"},
    {"search", NULL, 0,
     "-m MODEL INDEX (TEXT | --image FILE) [--top K] [--json] [--html OUT.html]",
     "the pictures of an index closest to a text or a picture (clip search --help)",
     "(search.c: clip search --help)"},
    {"tokenize", cmd_tokenize, OPT_MODEL | OPT_TEXT | OPT_PAD,
     "-m MODEL [--pad] TEXT ...",
     "one line of token ids per text",
     "One line of token ids per text, as CLIPTokenizer(text, truncation=True) gives\n"
     "them: 49406 (<|startoftext|>) ... 49407 (<|endoftext|>), at most the context\n"
     "length; --pad fills every line to the context length with the pad id."},
    {"preprocess", cmd_preprocess, OPT_MODEL | OPT_RESIZE | OPT_OUTPUT,
     "-m MODEL [--resize pil|torchvision] IMAGE -o OUT.npy",
     "pixel values as float32 .npy [1, 3, H, W]",
     "CLIPImageProcessor: the pixel values the vision tower takes, as float32 .npy\n"
     "[1, 3, H, W]: decode, resize the shortest edge (bicubic), center crop, rescale\n"
     "and normalize, with the model's preprocessor_config.json settings."},
    {"decode", cmd_decode, OPT_OUTPUT,
     "IMAGE -o OUT.npy",
     "decoded RGB as uint8 .npy [H, W, 3]",
     "The decoded image as uint8 .npy [H, W, 3]: exactly the pixels of Pillow's\n"
     "Image.open(IMAGE).convert(\"RGB\") (PNG, JPEG, BMP, binary PPM/PGM/PBM)."},
    {"info", cmd_info, OPT_MODEL,
     "-m MODEL",
     "the model's configuration",
     "The model's configuration: where it came from, both towers, the projection,\n"
     "the logit scale and the preprocessing; says so when the weights are synthetic."},
    {"bench", cmd_bench, OPT_MODEL | OPT_JSON | OPT_THREADS,
     "-m MODEL [--json] [MxKxN ...]",
     "time the encoders on this machine (ms, GFLOP/s, load time, peak memory);\n"
     "              MxKxN times the matrix product of those shapes instead",
     "Time the encoders on this machine, the way an application calls them: best\n"
     "wall and processor time, GFLOP/s, load time and peak memory. With MxKxN\n"
     "arguments, time the matrix product (clip_linear) of those shapes instead."},
};
#define N_COMMANDS ((int)(sizeof commands / sizeof commands[0]))

static void print_option(FILE *f, const struct option_info *opt)
{
    char left[64];
    snprintf(left, sizeof left, "%s%s%s%s%s", opt->alias ? opt->alias : "", opt->alias ? ", " : "", opt->name,
             opt->value ? " " : "", opt->value ? opt->value : "");
    if (strlen(left) > 22) fprintf(f, "  %s\n  %-22s%s\n", left, "", opt->help);
    else fprintf(f, "  %-22s%s\n", left, opt->help);
}

/* clip --help */
static void usage(FILE *f)
{
    fputs("clip " CLIP_VERSION " - OpenAI's CLIP in C, matching Hugging Face's CLIPProcessor + CLIPModel\n\nusage:\n", f);
    for (int c = 0; c < N_COMMANDS; c++) fprintf(f, "  clip %-10s %s\n", commands[c].name, commands[c].args);
    fputs("\ncommands (clip COMMAND --help: what it does and the options it takes):\n", f);
    for (int c = 0; c < N_COMMANDS; c++) fprintf(f, "  %-11s %s\n", commands[c].name, commands[c].summary);
    fputs("\noptions (each command takes only those it uses):\n", f);
    for (int k = 0; k < N_OPTIONS; k++) print_option(f, &option_table[k]);
    fputs("  -h, --help            this help (clip COMMAND --help: that command's)\n"
          "  --version             print the version\n"
          "\nexamples:\n"
          "  python3 convert.py openai/clip-vit-base-patch32 -o models/clip-vit-base-patch32.bin\n"
          "  clip match -m models/clip-vit-base-patch32.bin -i data/cat.png -t \"a photo of a cat\" -t \"a photo of a dog\"\n"
          "  clip classify -m models/clip-vit-base-patch32.bin --labels cat,dog,car photo1.jpg photo2.png\n"
          "\nexit status: 0 success, 1 bad input (file, image, model), 2 bad usage\n", f);
}

/* clip COMMAND --help */
static void command_help(const command *c)
{
    printf("usage:\n  clip %-10s %s\n\n%s\n\noptions:\n", c->name, c->args, c->help);
    for (int k = 0; k < N_OPTIONS; k++)
        if (c->takes & option_table[k].bit) print_option(stdout, &option_table[k]);
    printf("  -h, --help            this help\n\nexit status: 0 success, 1 bad input (file, image, model), 2 bad usage\n");
}

static const command *find_command(const char *name)
{
    for (int c = 0; c < N_COMMANDS; c++)
        if (!strcmp(name, commands[c].name)) return &commands[c];
    return NULL;
}

int main(int argc, char **argv)
{
    const command *cmd;
    options o;
    int rc;
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        if (argc > 2 && (cmd = find_command(argv[2])) && !cmd->run) {   /* clip help index: its own help */
            char *again[] = {argv[0], argv[2], "--help", NULL};
            return !strcmp(cmd->name, "index") ? cmd_index(3, again) : cmd_search(3, again);
        }
        if (argc > 2 && (cmd = find_command(argv[2]))) command_help(cmd);   /* clip help COMMAND */
        else usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) { printf("clip %s (%s)\n", CLIP_VERSION, clip_build_info()); return 0; }
    if (!(cmd = find_command(argv[1]))) usage_error("unknown command '%s'", argv[1]);
    if (!cmd->run) return !strcmp(cmd->name, "index") ? cmd_index(argc, argv) : cmd_search(argc, argv);
    command_name = argv[1];
    parse_options(argc, argv, cmd, &o);
    rc = cmd->run(&o);
    free(o.pos.v);
    return rc;
}
