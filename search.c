/* search.c - `clip index`, `clip search` and `clip embed --list`: searching a
 * folder of pictures, and embedding many files at once. Part of the command
 * (it prints and exits), not of the library.
 *
 *   clip index  -m MODEL DIR|FILE ... -o INDEX   walk, embed new or changed files, commit
 *   clip index  --merge -o OUT IN1 IN2 ...       join shard indexes
 *   clip search -m MODEL INDEX (TEXT | --image FILE)   cosine top-K
 *   clip embed  -m MODEL --list FILE -o OUT.npy  embeddings in input order + sidecars
 *
 * The index is a folder (README, "The index"): embeddings.npy [N, D], paths.txt,
 * files.npy [N, 2] (size, mtime in ns), failures.tsv and index.json (the model).
 * Rows are sorted by path bytes. Each embedding depends on the file and the
 * model only: every image goes through clip_encode_images alone, because a
 * batch of images rounds differently from the same images one at a time
 * (last bits), and an index must not depend on which files happened to be
 * embedded together (a resumed run, a shard, an incremental update). Files
 * are read, decoded and preprocessed in batches, in parallel.
 *
 * Crash safety: each finished batch is appended to INDEX.journal (length,
 * checksum, fsync); a torn last record is cut off on the next start. The
 * final index is written whole into INDEX.new, then swapped in by two
 * renames (INDEX -> INDEX.old, INDEX.new -> INDEX); a run that finds
 * INDEX.old without INDEX puts it back. A folder named INDEX is always a
 * complete index, and the journal lets the next run resume.
 */
#define _POSIX_C_SOURCE 200809L   /* openat, fstat, fsync, fcntl locks, sigaction, strerror_r */
#define _DEFAULT_SOURCE           /* madvise, where the C library has it */
#define _FILE_OFFSET_BITS 64
#include "clip.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

int cmd_index(int argc, char **argv);
int cmd_search(int argc, char **argv);
int embed_list(const char *model_path, const char *list, const char *shard, const char *out, int resize);

/* ------------------------------------------------------------------------ */
/* Help                                                                      */
/* ------------------------------------------------------------------------ */

static const char *index_help =
    "usage: clip index -m MODEL DIR|FILE ... -o INDEX [--shard I/N] [--float16] [--resize pil|torchvision] [-j N]\n"
    "       clip index --merge -o OUT IN1 IN2 ...\n"
    "\n"
    "Embeds every picture under the folders (recursively, following links; a folder reached\n"
    "twice is walked once) into the index folder INDEX. Pictures are files named *.png, *.jpg,\n"
    "*.jpeg, *.jpe, *.jfif, *.bmp, *.ppm, *.pgm or *.pnm (any case); a file named on the command\n"
    "line is taken whatever its name.\n"
    "\n"
    "Run it again and it embeds only new or changed files (size or modification time) and drops\n"
    "the ones that are gone. A file that cannot be read or decoded is reported, listed in\n"
    "INDEX/failures.tsv and skipped (tried again when it changes). Interrupted (Ctrl-C, kill,\n"
    "power loss), it keeps every finished batch in INDEX.journal: run the same command to go on.\n"
    "\n"
    "  -m, --model FILE   a model file made by convert.py; an index belongs to one model\n"
    "  -o, --output DIR   the index folder (created; an existing one is updated)\n"
    "  --shard I/N        only part I of N (I = 1..N): every N-th file of the sorted list,\n"
    "                     starting at the I-th; join the parts with --merge\n"
    "  --merge            join indexes made with --shard (or of disjoint folders) into OUT\n"
    "  --float16          store the embeddings as float16 (half the size)\n"
    "  --resize MODE      image preprocessing, pil (default) or torchvision (kept in the index)\n"
    "  -j, --threads N    worker threads (default: all cores)\n"
    "\n"
    "examples:\n"
    "  clip index -m models/clip-vit-base-patch32.bin ~/Pictures -o pictures.index\n"
    "  parallel clip index -m M.bin photos --shard {}/4 -o part{}.index ::: 1 2 3 4\n"
    "  clip index --merge -o photos.index part1.index part2.index part3.index part4.index\n"
    "\n"
    "exit status: 0 done (even when some files failed), 1 bad input, 2 bad usage, 130 interrupted\n";

static const char *search_help =
    "usage: clip search -m MODEL INDEX (TEXT | --image FILE) [--top K] [--json] [--html OUT.html] [--timing]\n"
    "\n"
    "The K pictures of INDEX (made by clip index with the same model) closest to the text or\n"
    "to the picture, by cosine similarity of their embeddings, best first.\n"
    "\n"
    "  -m, --model FILE   the model the index was made with\n"
    "  --image FILE       search by an example picture instead of a text\n"
    "  --top K            how many results (default 10)\n"
    "  --json             print {\"query\": ..., \"type\": \"text\"|\"image\", \"results\": [{\"path\": ..., \"score\": ...}, ...]}\n"
    "                     (a name's bytes that are not UTF-8 come out as \\udc80..\\udcff, which\n"
    "                     Python's os.fsencode turns back into those bytes)\n"
    "  --html OUT.html    write one self-contained page with thumbnails and scores\n"
    "  --timing           say on stderr how long loading, embedding the query and ranking took\n"
    "  -j, --threads N    worker threads (default: all cores)\n"
    "\n"
    "examples:\n"
    "  clip search -m models/clip-vit-base-patch32.bin pictures.index \"a dog on a beach\"\n"
    "  clip search -m models/clip-vit-base-patch32.bin pictures.index --image dog.jpg --top 20 --html dogs.html\n"
    "\n"
    "exit status: 0 success, 1 bad input (index, model, image), 2 bad usage\n";

/* ------------------------------------------------------------------------ */
/* Messages and memory                                                       */
/* ------------------------------------------------------------------------ */

static int progress_shown;   /* a progress line is on the terminal: clear it before a message */

static void clear_progress(void)
{
    if (progress_shown) fputs("\r\033[K", stderr);
    progress_shown = 0;
}

#if defined(__GNUC__)
__attribute__((noreturn, format(printf, 2, 3)))
#endif
static void fail(int code, const char *fmt, ...)
{
    va_list ap;
    clear_progress();
    fputs("clip: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (code == 2) fputs("Try 'clip index --help' or 'clip search --help' for more information.\n", stderr);
    exit(code);
}

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static void warn(const char *fmt, ...)
{
    va_list ap;
    clear_progress();
    fputs("clip: warning: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) fail(1, "out of memory (%zu bytes)", n);
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) fail(1, "out of memory (%zu bytes)", n);
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

/* a + b, malloc'd */
static char *concat(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *s = xmalloc(na + nb + 1);
    memcpy(s, a, na);
    memcpy(s + na, b, nb + 1);
    return s;
}

/* grow *v (of *cap elements of `elem` bytes) to hold at least n */
static void reserve(void *v, size_t *cap, size_t n, size_t elem)
{
    if (n <= *cap) return;
    *cap = *cap * 2 > n ? *cap * 2 : n + 16;
    *(void **)v = xrealloc(*(void **)v, *cap * elem);
}

static const char *error_text(int e, char *buf, size_t size)
{
    if (strerror_r(e, buf, size) != 0) snprintf(buf, size, "error %d", e);
    return buf;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* "\r 123/500 [=====     ]  25%  14.2 images/s  ETA 0:21" on stderr, on a terminal only */
static void progress(size_t done, size_t total, double t0)
{
    static double last;
    double el = now() - t0, rate = el > 0 ? done / el : 0.0, eta;
    char bar[31];
    int fill = total ? (int)(30.0 * done / total) : 30;
    if (!isatty(2) || (done < total && now() - last < 0.1)) return;
    last = now();
    for (int i = 0; i < 30; i++) bar[i] = i < fill ? '=' : ' ';
    bar[30] = 0;
    eta = rate > 0 ? (total - done) / rate : 0.0;
    fprintf(stderr, "\r%zu/%zu [%s] %3.0f%%  %.1f images/s  ETA %d:%02d\033[K", done, total, bar,
            total ? 100.0 * done / total : 100.0, rate, (int)eta / 60, (int)eta % 60);
    progress_shown = 1;
}

/* Ctrl-C or kill: stop after the batch in hand (a second Ctrl-C stops at once) */
static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void catch_interrupts(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* ------------------------------------------------------------------------ */
/* Options                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *model, *out, *html, *image, *shard;
    int top, json, merge, f16, resize, timing;
    char **pos;
    int n_pos;
} cli_options;

static int parse_count(const char *s, const char *opt, int lo, int hi)
{
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        fail(2, "%s needs a whole number from %d to %d, not '%s'", opt, lo, hi, s);
    return (int)v;
}

/* --shard I/N: part I (1..N) of N */
static void parse_shard(const char *s, int *part, int *parts)
{
    char tail;
    if (!s) { *part = 1; *parts = 1; return; }
    if (sscanf(s, "%d/%d%c", part, parts, &tail) != 2 || *parts < 1 || *part < 1 || *part > *parts)
        fail(2, "--shard takes I/N with 1 <= I <= N (part I of N), not '%s'", s);
}

/* `allowed` lists the options this command takes, e.g. "m o shard merge" */
static void parse_cli(int argc, char **argv, const char *allowed, const char *help, cli_options *o)
{
    memset(o, 0, sizeof *o);
    o->top = 10;
    o->pos = xmalloc((size_t)argc * sizeof *o->pos);
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *name = a[0] == '-' ? a + (a[1] == '-' ? 2 : 1) : "";
        char key[32];
        int takes = 0;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { fputs(help, stdout); exit(0); }
        if (!strcmp(a, "--")) { while (++i < argc) o->pos[o->n_pos++] = argv[i]; break; }
        if (a[0] != '-' || !a[1]) { o->pos[o->n_pos++] = argv[i]; continue; }
        if (!strcmp(a, "--model")) name = "m";
        if (!strcmp(a, "--output")) name = "o";
        if (!strcmp(a, "--threads")) name = "j";
        snprintf(key, sizeof key, " %s ", name);
        if (strlen(name) > 20 || !strstr(allowed, key) || (a[1] != '-') != (strlen(name) == 1))
            fail(2, "unknown option '%s' for 'clip %s'", a, argv[1]);
        takes = strcmp(name, "json") && strcmp(name, "merge") && strcmp(name, "float16") && strcmp(name, "timing");
        if (takes && i + 1 >= argc) fail(2, "option %s needs a value", a);
        if (!strcmp(name, "m")) o->model = argv[++i];
        else if (!strcmp(name, "o")) o->out = argv[++i];
        else if (!strcmp(name, "html")) o->html = argv[++i];
        else if (!strcmp(name, "image")) o->image = argv[++i];
        else if (!strcmp(name, "shard")) { o->shard = argv[++i]; int p, n; parse_shard(o->shard, &p, &n); }
        else if (!strcmp(name, "top")) o->top = parse_count(argv[++i], a, 1, 1000000);
        else if (!strcmp(name, "j")) clip_set_threads(parse_count(argv[++i], a, 1, 1024));
        else if (!strcmp(name, "resize")) {
            const char *v = argv[++i];
            if (!strcmp(v, "pil")) o->resize = CLIP_RESIZE_PIL;
            else if (!strcmp(v, "torchvision")) o->resize = CLIP_RESIZE_TORCHVISION;
            else fail(2, "--resize takes pil or torchvision, not '%s'", v);
        }
        else if (!strcmp(name, "json")) o->json = 1;
        else if (!strcmp(name, "merge")) o->merge = 1;
        else if (!strcmp(name, "float16")) o->f16 = 1;
        else if (!strcmp(name, "timing")) o->timing = 1;
    }
}

/* ------------------------------------------------------------------------ */
/* Bytes: hashing, UTF-8, JSON and HTML text, base64                        */
/* ------------------------------------------------------------------------ */

static uint64_t fnv1a(uint64_t h, const void *data, size_t n)
{
    const uint8_t *p = data;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 0x100000001b3ULL; }
    return h;
}
#define FNV_START 0xcbf29ce484222325ULL

/* length of the valid UTF-8 sequence at s (n bytes left), 0 when invalid:
 * no overlong forms, no surrogates, nothing past U+10FFFF */
static int utf8_length(const unsigned char *s, size_t n)
{
    int len, lo = 0x80, hi = 0xbf;
    if (s[0] < 0x80) return 1;
    if (s[0] < 0xc2 || s[0] > 0xf4) return 0;
    len = s[0] < 0xe0 ? 2 : s[0] < 0xf0 ? 3 : 4;
    if (s[0] == 0xe0) lo = 0xa0;
    if (s[0] == 0xed) hi = 0x9f;
    if (s[0] == 0xf0) lo = 0x90;
    if (s[0] == 0xf4) hi = 0x8f;
    if ((size_t)len > n || s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < len; i++) if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return len;
}

/* a JSON string for any bytes: UTF-8 as is, control characters escaped, and
 * each byte that is not part of valid UTF-8 as \udcXX (Python's surrogateescape) */
static void json_string(FILE *f, const char *text)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t n = strlen(text);
    fputc('"', f);
    for (size_t i = 0; i < n;) {
        int len = utf8_length(s + i, n - i);
        if (len == 0) fprintf(f, "\\udc%02x", s[i++]);
        else if (s[i] == '"' || s[i] == '\\') { fprintf(f, "\\%c", s[i]); i++; }
        else if (s[i] == '\n') { fputs("\\n", f); i++; }
        else if (s[i] == '\t') { fputs("\\t", f); i++; }
        else if (s[i] < 0x20 || s[i] == 0x7f) fprintf(f, "\\u%04x", s[i++]);
        else { fwrite(s + i, 1, (size_t)len, f); i += (size_t)len; }
    }
    fputc('"', f);
}

/* text for an HTML page: markup characters escaped, invalid UTF-8 as U+FFFD */
static void html_text(FILE *f, const char *text)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t n = strlen(text);
    for (size_t i = 0; i < n;) {
        int len = utf8_length(s + i, n - i);
        if (len == 0) { fputs("&#xFFFD;", f); i++; continue; }
        if (s[i] == '<') fputs("&lt;", f);
        else if (s[i] == '>') fputs("&gt;", f);
        else if (s[i] == '&') fputs("&amp;", f);
        else if (s[i] == '"') fputs("&quot;", f);
        else if (s[i] < 0x20) fputc(' ', f);
        else fwrite(s + i, 1, (size_t)len, f);
        i += (size_t)len;
    }
}

static void base64(FILE *f, const uint8_t *d, size_t n)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        fputc(b64[v >> 18 & 63], f);
        fputc(b64[v >> 12 & 63], f);
        fputc(i + 1 < n ? b64[v >> 6 & 63] : '=', f);
        fputc(i + 2 < n ? b64[v & 63] : '=', f);
    }
}

/* float32 -> float16, rounding to nearest even (as NumPy's astype does) */
static uint16_t half_from_float(float v)
{
    uint32_t x, ax, sign, h, rem;
    memcpy(&x, &v, 4);
    sign = x >> 16 & 0x8000;
    ax = x & 0x7fffffff;
    if (ax > 0x7f800000) return (uint16_t)(sign | 0x7e00);   /* NaN */
    if (ax >= 0x477ff000) return (uint16_t)(sign | 0x7c00);  /* rounds to 65520 or more: infinity */
    if (ax < 0x38800000) {                                   /* below 2^-14: a subnormal half, or 0 */
        int shift;
        uint32_t m;
        if (ax < 0x33000000) return (uint16_t)sign;
        m = (ax & 0x7fffff) | 0x800000;
        shift = 126 - (int)(ax >> 23);
        h = m >> shift;
        rem = m & ((1u << shift) - 1);
        if (rem > 1u << (shift - 1) || (rem == 1u << (shift - 1) && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    h = (ax >> 13) - (112u << 10);
    rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

static float float_from_half(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = h >> 10 & 31, m = h & 0x3ff, x;
    float v;
    if (e == 31) x = sign | 0x7f800000 | m << 13;
    else if (e) x = sign | (e + 112) << 23 | m << 13;
    else { v = (float)m / 16777216.0f; return sign ? -v : v; }   /* subnormal or zero: m * 2^-24 */
    memcpy(&v, &x, 4);
    return v;
}

/* ------------------------------------------------------------------------ */
/* Files                                                                     */
/* ------------------------------------------------------------------------ */

static void write_all(FILE *f, const void *p, size_t n, const char *path)
{
    if (n && fwrite(p, 1, n, f) != n) fail(1, "%s: write error", path);
}

/* close a file written in full, after making it durable */
static void close_synced(FILE *f, const char *path)
{
    char e[128];
    if (fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0)
        fail(1, "%s: write error: %s", path, error_text(errno, e, sizeof e));
}

static void sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) { fsync(fd); close(fd); }   /* some file systems refuse; the renames still happen */
}

static char *parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *d;
    if (!slash) return xstrdup(".");
    if (slash == path) return xstrdup("/");
    d = xmalloc((size_t)(slash - path) + 1);
    memcpy(d, path, (size_t)(slash - path));
    d[slash - path] = 0;
    return d;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* the whole file behind fd into memory; 0, or an errno */
static int read_fd(int fd, uint8_t **data, size_t *size)
{
    struct stat st;
    size_t cap = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 && (uint64_t)st.st_size < SIZE_MAX / 2
                 ? (size_t)st.st_size + 1 : 65536, n = 0;   /* a file's size: one read, no copies */
    uint8_t *buf = malloc(cap);
    if (!buf) return ENOMEM;
    for (;;) {
        ssize_t r;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap *= 2);
            if (!nb) { free(buf); return ENOMEM; }
            buf = nb;
        }
        r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { int e = errno; free(buf); return e; }
        if (r == 0) break;
        n += (size_t)r;
    }
    *data = buf;
    *size = n;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* .npy files (NumPy format 1.0): float32, float16, int64                    */
/* ------------------------------------------------------------------------ */

/* NumPy's header for a C-order [rows, cols] array, padded to 128 bytes so that
 * a streamed file can be given its final row count in place */
static size_t npy_header(char head[128], const char *descr, size_t rows, size_t cols)
{
    int len = snprintf(head, 128, "\x93NUMPY\x01%c%c%c{'descr': '%s', 'fortran_order': False, 'shape': (%zu, %zu), }",
                       0, 0, 0, descr, rows, cols);
    while (len < 127) head[len++] = ' ';
    head[127] = '\n';
    head[8] = 128 - 10;
    head[9] = 0;
    return 128;
}

/* parse a .npy header: descr ('<f4', '<f2', '<i8'), C order, two dimensions;
 * returns the offset of the data or 0 when the header is not one of those */
static size_t npy_parse(const uint8_t *buf, size_t size, char descr[8], size_t *rows, size_t *cols)
{
    size_t hlen, off;
    char header[1024];
    const char *d, *s;
    unsigned long long r, c;
    if (size < 12 || memcmp(buf, "\x93NUMPY", 6) != 0) return 0;
    hlen = buf[6] == 1 ? (size_t)(buf[8] | buf[9] << 8) : (size_t)(buf[8] | buf[9] << 8 | (uint32_t)buf[10] << 16);
    off = (buf[6] == 1 ? 10 : 12) + hlen;
    if (hlen >= sizeof header || off > size) return 0;
    memcpy(header, buf + off - hlen, hlen);
    header[hlen] = 0;
    if (!(d = strstr(header, "'descr':")) || !(d = strchr(d + 8, '\'')) || strlen(d) < 5 || d[4] != '\'') return 0;
    memcpy(descr, d + 1, 3);
    descr[3] = 0;
    if (strstr(header, "'fortran_order': True") || !(s = strstr(header, "'shape':")) || !(s = strchr(s, '('))) return 0;
    if (sscanf(s, "(%llu, %llu)", &r, &c) != 2) return 0;
    *rows = (size_t)r;
    *cols = (size_t)c;
    return off;
}

/* ------------------------------------------------------------------------ */
/* Model identity                                                            */
/* ------------------------------------------------------------------------ */

/* What an index's embeddings depend on. The model is known by its name, its
 * dimension and a hash of its file: the first 64 KiB (header, tokenizer,
 * tensor index) and 4 KiB at every MiB after that (weights). */
typedef struct {
    char model[256], hash[24];
    int dim, image_size, resize, f16;
} index_id;

static void model_hash(const char *path, char out[24])
{
    int fd = open(path, O_RDONLY);
    uint8_t *buf = xmalloc(65536);
    uint64_t h = FNV_START;
    struct stat st;
    char e[128];
    if (fd < 0 || fstat(fd, &st) != 0) fail(1, "%s: %s", path, error_text(errno, e, sizeof e));
    h = fnv1a(h, &st.st_size, sizeof st.st_size);
    for (off_t at = 0; at < st.st_size; at = at ? at + 1048576 : 1048576) {
        ssize_t r = pread(fd, buf, at ? 4096 : 65536, at);
        if (r < 0) fail(1, "%s: %s", path, error_text(errno, e, sizeof e));
        h = fnv1a(h, buf, (size_t)r);
    }
    close(fd);
    free(buf);
    snprintf(out, 24, "%016llx", (unsigned long long)h);
}

static void identity_of(const char *model_path, const clip_model *m, int resize, int f16, index_id *id)
{
    const clip_config *c = clip_get_config(m);
    memset(id, 0, sizeof *id);
    snprintf(id->model, sizeof id->model, "%s", c->name);
    model_hash(model_path, id->hash);
    id->dim = c->projection_dim;
    id->image_size = c->image_size;
    id->resize = resize;
    id->f16 = f16;
}

static int same_model(const index_id *a, const index_id *b)
{
    return !strcmp(a->model, b->model) && !strcmp(a->hash, b->hash) && a->dim == b->dim && a->image_size == b->image_size;
}

static const char *resize_name(int r) { return r == CLIP_RESIZE_TORCHVISION ? "torchvision" : "pil"; }

static clip_model *open_model(const char *path)
{
    char err[CLIP_ERR_SIZE];
    clip_model *m;
    if (!path) fail(2, "no model given: use -m MODEL (a file made by convert.py)");
    if (clip_load(&m, path, err)) fail(1, "%s", err);
    return m;
}

/* ------------------------------------------------------------------------ */
/* index.json: one flat object                                               */
/* ------------------------------------------------------------------------ */

/* the JSON string at *p (just past its opening quote) decoded into out;
 * returns 0 when malformed. \u escapes become UTF-8 (surrogate pairs joined) */
static int json_read_string(const char **p, char *out, size_t size)
{
    const char *s = *p;
    size_t n = 0;
    while (*s && *s != '"') {
        unsigned long u = (unsigned char)*s++;
        char tmp[5];
        int len = 1;
        if (u == '\\') {
            char c = *s++;
            const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t", *k = c ? strchr(from, c) : NULL;
            if (k) u = (unsigned char)to[k - from];
            else if (c == 'u' && sscanf(s, "%4lx", &u) == 1 && strlen(s) >= 4) {
                s += 4;
                if (u >= 0xd800 && u < 0xdc00 && s[0] == '\\' && s[1] == 'u') {
                    unsigned long lo;
                    if (sscanf(s + 2, "%4lx", &lo) == 1 && lo >= 0xdc00 && lo < 0xe000) { u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00); s += 6; }
                }
            } else return 0;
        }
        if (u < 0x80) tmp[0] = (char)u;
        else if (u < 0x800) { tmp[0] = (char)(0xc0 | u >> 6); tmp[1] = (char)(0x80 | (u & 63)); len = 2; }
        else if (u < 0x10000) { tmp[0] = (char)(0xe0 | u >> 12); tmp[1] = (char)(0x80 | (u >> 6 & 63)); tmp[2] = (char)(0x80 | (u & 63)); len = 3; }
        else { tmp[0] = (char)(0xf0 | u >> 18); tmp[1] = (char)(0x80 | (u >> 12 & 63)); tmp[2] = (char)(0x80 | (u >> 6 & 63)); tmp[3] = (char)(0x80 | (u & 63)); len = 4; }
        if (n + (size_t)len >= size) return 0;
        memcpy(out + n, tmp, (size_t)len);
        n += (size_t)len;
    }
    if (*s != '"') return 0;
    out[n] = 0;
    *p = s + 1;
    return 1;
}

/* the value of "key" in a flat JSON object (a string decoded, or a number's
 * text); 0 when the key is missing or the object malformed */
static int json_field(const char *text, const char *key, char *out, size_t size)
{
    const char *p = text;
    char k[64], v[1024];
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
    if (*p++ != '{') return 0;
    for (;;) {
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r' || *p == ',') p++;
        if (*p++ != '"' || !json_read_string(&p, k, sizeof k)) return 0;
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (*p++ != ':') return 0;
        while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (*p == '"') {
            p++;
            if (!json_read_string(&p, v, sizeof v)) return 0;
        } else {
            size_t n = strcspn(p, ",} \n\t\r");
            if (n == 0 || n >= sizeof v) return 0;
            memcpy(v, p, n);
            v[n] = 0;
            p += n;
        }
        if (!strcmp(k, key)) {
            if (strlen(v) >= size) return 0;
            strcpy(out, v);
            return 1;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* The index in memory                                                       */
/* ------------------------------------------------------------------------ */

typedef struct {
    char *path;
    int64_t size, mtime;   /* bytes and modification time in ns; -1 when unknown (it could not be read) */
    char *reason;          /* why it could not be read or decoded, or NULL */
} file_info;

typedef struct {
    index_id id;
    size_t n, n_fail;
    file_info *rows;       /* the images, sorted by path */
    file_info *fail;       /* the failures, sorted by path */
    float *emb;            /* [n, dim] once loaded, else NULL */
} index_data;

static const char *INDEX_FILES[] = {"index.json", "embeddings.npy", "paths.txt", "files.npy", "failures.tsv"};

static int by_path(const void *a, const void *b)
{
    return strcmp(((const file_info *)a)->path, ((const file_info *)b)->path);
}

static void free_index(index_data *x)
{
    for (size_t i = 0; i < x->n; i++) free(x->rows[i].path);
    for (size_t i = 0; i < x->n_fail; i++) { free(x->fail[i].path); free(x->fail[i].reason); }
    free(x->rows);
    free(x->fail);
    free(x->emb);
    memset(x, 0, sizeof *x);
}

/* one file of an index folder, opened through the folder (dirfd) so that all
 * of them come from one generation even while another run swaps folders */
static uint8_t *index_part(int dirfd, const char *dir, const char *name, size_t *size)
{
    int fd = openat(dirfd, name, O_RDONLY);
    uint8_t *data;
    char e[128];
    int err;
    if (fd < 0) fail(1, "%s/%s: %s", dir, name, error_text(errno, e, sizeof e));
    err = read_fd(fd, &data, size);
    close(fd);
    if (err) fail(1, "%s/%s: %s", dir, name, error_text(err, e, sizeof e));
    return data;
}

static void parse_index_json(const char *dir, const char *text, index_id *id, size_t *count, size_t *failed)
{
    char v[256], dtype[16], resize[16], format[32], num[4][32];
    const char *keys[4] = {"dim", "image_size", "count", "failed"};
    memset(id, 0, sizeof *id);
    if (!json_field(text, "format", format, sizeof format) || strcmp(format, "clip-index") ||
        !json_field(text, "version", v, sizeof v) || strcmp(v, "1"))
        fail(1, "%s/index.json: not a clip index of version 1", dir);
    if (!json_field(text, "model", id->model, sizeof id->model) || !json_field(text, "model_hash", id->hash, sizeof id->hash) ||
        !json_field(text, "dtype", dtype, sizeof dtype) || !json_field(text, "resize", resize, sizeof resize))
        fail(1, "%s/index.json: damaged (model, model_hash, dtype or resize missing)", dir);
    for (int k = 0; k < 4; k++)
        if (!json_field(text, keys[k], num[k], sizeof num[k]) || strspn(num[k], "0123456789") != strlen(num[k]))
            fail(1, "%s/index.json: damaged (%s missing)", dir, keys[k]);
    id->dim = atoi(num[0]);
    id->image_size = atoi(num[1]);
    *count = (size_t)strtoull(num[2], NULL, 10);
    *failed = (size_t)strtoull(num[3], NULL, 10);
    id->f16 = !strcmp(dtype, "float16");
    id->resize = !strcmp(resize, "torchvision") ? CLIP_RESIZE_TORCHVISION : CLIP_RESIZE_PIL;
    if ((!id->f16 && strcmp(dtype, "float32")) || (strcmp(resize, "pil") && strcmp(resize, "torchvision")) || id->dim < 1)
        fail(1, "%s/index.json: damaged (dtype %s, resize %s, dim %d)", dir, dtype, resize, id->dim);
}

/* paths.txt: n lines -> rows[i].path */
static void parse_paths(const char *dir, uint8_t *text, size_t size, file_info *rows, size_t n)
{
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t *nl = at < size ? memchr(text + at, '\n', size - at) : NULL;
        if (!nl) fail(1, "%s/paths.txt: damaged (%zu lines, index.json says %zu)", dir, i, n);
        *nl = 0;
        rows[i].path = xstrdup((char *)text + at);
        at = (size_t)(nl - text) + 1;
    }
    if (at != size) fail(1, "%s/paths.txt: damaged (more lines than index.json's count, %zu)", dir, n);
}

/* failures.tsv: lines "size<TAB>mtime<TAB>reason<TAB>path" */
static void parse_failures(const char *dir, uint8_t *text, size_t size, file_info *fail_rows, size_t n)
{
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t *nl = at < size ? memchr(text + at, '\n', size - at) : NULL;
        char *line = (char *)text + at, *t1, *t2, *t3;
        if (!nl) fail(1, "%s/failures.tsv: damaged (%zu lines, index.json says %zu)", dir, i, n);
        *nl = 0;
        if (!(t1 = strchr(line, '\t')) || !(t2 = strchr(t1 + 1, '\t')) || !(t3 = strchr(t2 + 1, '\t')))
            fail(1, "%s/failures.tsv: damaged line %zu", dir, i + 1);
        *t1 = *t2 = *t3 = 0;
        fail_rows[i].size = strtoll(line, NULL, 10);
        fail_rows[i].mtime = strtoll(t1 + 1, NULL, 10);
        fail_rows[i].reason = xstrdup(t2 + 1);
        fail_rows[i].path = xstrdup(t3 + 1);
        at = (size_t)(nl - text) + 1;
    }
    if (at != size) fail(1, "%s/failures.tsv: damaged (more lines than index.json's count, %zu)", dir, n);
}

/* n bytes at offset `at` of fd into p; 0, or an errno (EIO when the file is shorter) */
static int read_at(int fd, void *p, size_t n, off_t at)
{
    while (n) {
        ssize_t r = pread(fd, p, n, at);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return r < 0 ? errno : EIO;
        p = (uint8_t *)p + r;
        n -= (size_t)r;
        at += r;
    }
    return 0;
}

/* room for n floats in 2 MiB pages where the system has them: a search reads
 * every row once, and in a virtual machine the first touch of each 4 KiB page
 * is costly (100,000 x 512 floats: 870 ms against 30 ms measured) */
static float *alloc_rows(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, (size_t)1 << 21, n * sizeof(float) + 1) != 0) fail(1, "out of memory (%zu floats)", n);
#if defined(MADV_HUGEPAGE) && !defined(__EMSCRIPTEN__)
    madvise(p, n * sizeof(float) + 1, MADV_HUGEPAGE);   /* only advice: an error changes nothing */
#endif
    return p;
}

/* the embeddings of an index folder, as float32 [n, dim], read straight into place */
static float *read_embeddings(int dirfd, const char *dir, const index_id *id, size_t n)
{
    size_t rows, cols, off, count = n * (size_t)id->dim, elem = id->f16 ? 2 : 4;
    int fd = openat(dirfd, "embeddings.npy", O_RDONLY), rc;
    uint8_t head[4096];
    ssize_t got;
    char descr[8], e[128];
    float *v = alloc_rows(count);
    if (fd < 0 || (got = pread(fd, head, sizeof head, 0)) < 0) fail(1, "%s/embeddings.npy: %s", dir, error_text(errno, e, sizeof e));
    off = npy_parse(head, (size_t)got, descr, &rows, &cols);
    if (!off || rows != n || cols != (size_t)id->dim || strcmp(descr, id->f16 ? "<f2" : "<f4") ||
        (rc = read_at(fd, id->f16 ? (void *)((uint8_t *)v + count * 2) : (void *)v, count * elem, (off_t)off)) != 0)
        fail(1, "%s/embeddings.npy: damaged (want %s [%zu, %d])", dir, id->f16 ? "float16" : "float32", n, id->dim);
    if (id->f16) {   /* the halves were read into the back half of v: widen front to back, never overtaking */
        const uint8_t *h = (const uint8_t *)v + count * 2;
        for (size_t i = 0; i < count; i++) v[i] = float_from_half((uint16_t)(h[2 * i] | h[2 * i + 1] << 8));
    }
    close(fd);
    return v;
}

/* Read an index folder (its embeddings too when with_emb). */
static void load_index(const char *dir, index_data *x, int with_emb)
{
    int dirfd = open(dir, O_RDONLY);
    size_t size, rows, cols, off, count;
    uint8_t *json, *paths, *files, *fails;
    char descr[8], e[128];
    memset(x, 0, sizeof *x);
    if (dirfd < 0) fail(1, "%s: %s", dir, error_text(errno, e, sizeof e));
    json = index_part(dirfd, dir, "index.json", &size);
    json = xrealloc(json, size + 1);
    json[size] = 0;
    parse_index_json(dir, (char *)json, &x->id, &x->n, &x->n_fail);
    x->rows = xmalloc(x->n * sizeof *x->rows);
    x->fail = xmalloc(x->n_fail * sizeof *x->fail);
    paths = index_part(dirfd, dir, "paths.txt", &size);
    parse_paths(dir, paths, size, x->rows, x->n);
    fails = index_part(dirfd, dir, "failures.tsv", &size);
    parse_failures(dir, fails, size, x->fail, x->n_fail);
    files = index_part(dirfd, dir, "files.npy", &size);
    off = npy_parse(files, size, descr, &rows, &cols);
    if (!off || strcmp(descr, "<i8") || rows != x->n || cols != 2 || (size - off) / 16 < x->n)
        fail(1, "%s/files.npy: damaged (want int64 [%zu, 2])", dir, x->n);
    for (size_t i = 0; i < x->n; i++) {
        memcpy(&x->rows[i].size, files + off + 16 * i, 8);
        memcpy(&x->rows[i].mtime, files + off + 16 * i + 8, 8);
        x->rows[i].reason = NULL;
    }
    if (with_emb) x->emb = read_embeddings(dirfd, dir, &x->id, x->n);
    count = x->n;
    for (size_t i = 1; i < count; i++)
        if (strcmp(x->rows[i - 1].path, x->rows[i].path) >= 0) fail(1, "%s/paths.txt: damaged (not sorted)", dir);
    close(dirfd);
    free(json); free(paths); free(files); free(fails);
}

/* ------------------------------------------------------------------------ */
/* The index on disk: written whole, swapped in by renames                   */
/* ------------------------------------------------------------------------ */

/* remove an index folder that clip wrote (only its own files; a folder that
 * holds anything else is left, with a warning) */
static void remove_index_dir(const char *dir)
{
    for (size_t i = 0; i < sizeof INDEX_FILES / sizeof *INDEX_FILES; i++) {
        char *p = concat(dir, "/");
        char *q = concat(p, INDEX_FILES[i]);
        unlink(q);
        free(p); free(q);
    }
    if (rmdir(dir) != 0 && errno != ENOENT) warn("%s: left in place: it holds files clip did not write", dir);
}

/* after a crash: INDEX.old without INDEX is put back, anything else left over removed */
static void recover_index(const char *dir)
{
    char *old = concat(dir, ".old"), *tmp = concat(dir, ".new");
    if (exists(old)) {
        if (!exists(dir)) { if (rename(old, dir) != 0) fail(1, "%s: cannot restore it from %s", dir, old); }
        else remove_index_dir(old);
    }
    if (exists(tmp)) remove_index_dir(tmp);
    free(old); free(tmp);
}

/* INDEX must be absent, an empty folder or a clip index: never overwrite anything else */
static int check_index_dir(const char *dir)
{
    struct stat st;
    char *json;
    DIR *d;
    struct dirent *ent;
    int empty = 1;
    if (stat(dir, &st) != 0) return 0;
    if (!S_ISDIR(st.st_mode)) fail(1, "%s: exists and is not a folder; an index is a folder", dir);
    json = concat(dir, "/index.json");
    if (exists(json)) { free(json); return 1; }
    free(json);
    if ((d = opendir(dir)) != NULL) {
        while ((ent = readdir(d)) != NULL) if (strcmp(ent->d_name, ".") && strcmp(ent->d_name, "..")) empty = 0;
        closedir(d);
    }
    if (!empty) fail(1, "%s: exists and is not a clip index (it has no index.json); choose another -o", dir);
    return 0;
}

static void write_index_json(FILE *f, const index_data *x)
{
    fprintf(f, "{\n  \"format\": \"clip-index\",\n  \"version\": 1,\n  \"model\": ");
    json_string(f, x->id.model);
    fprintf(f, ",\n  \"model_hash\": \"%s\",\n  \"dim\": %d,\n  \"image_size\": %d,\n  \"resize\": \"%s\",\n"
               "  \"dtype\": \"%s\",\n  \"count\": %zu,\n  \"failed\": %zu\n}\n",
            x->id.hash, x->id.dim, x->id.image_size, resize_name(x->id.resize), x->id.f16 ? "float16" : "float32", x->n, x->n_fail);
}

static FILE *open_part(const char *dir, const char *name, char **path)
{
    FILE *f;
    char e[128], *p = concat(dir, "/");
    *path = concat(p, name);
    free(p);
    if (!(f = fopen(*path, "wb"))) fail(1, "%s: cannot write: %s", *path, error_text(errno, e, sizeof e));
    return f;
}

/* the five files of x into folder dir (which exists and is empty), each synced */
static void write_index_files(const char *dir, const index_data *x)
{
    char head[128], *path;
    size_t D = (size_t)x->id.dim;
    FILE *f = open_part(dir, "embeddings.npy", &path);
    write_all(f, head, npy_header(head, x->id.f16 ? "<f2" : "<f4", x->n, D), path);
    if (x->id.f16)
        for (size_t i = 0; i < x->n * D; i++) {
            uint16_t h = half_from_float(x->emb[i]);
            uint8_t b[2] = {(uint8_t)(h & 0xff), (uint8_t)(h >> 8)};
            write_all(f, b, 2, path);
        }
    else write_all(f, x->emb, x->n * D * sizeof(float), path);
    close_synced(f, path); free(path);

    f = open_part(dir, "paths.txt", &path);
    for (size_t i = 0; i < x->n; i++) fprintf(f, "%s\n", x->rows[i].path);
    close_synced(f, path); free(path);

    f = open_part(dir, "files.npy", &path);
    write_all(f, head, npy_header(head, "<i8", x->n, 2), path);
    for (size_t i = 0; i < x->n; i++) { write_all(f, &x->rows[i].size, 8, path); write_all(f, &x->rows[i].mtime, 8, path); }
    close_synced(f, path); free(path);

    f = open_part(dir, "failures.tsv", &path);
    for (size_t i = 0; i < x->n_fail; i++)
        fprintf(f, "%lld\t%lld\t%s\t%s\n", (long long)x->fail[i].size, (long long)x->fail[i].mtime, x->fail[i].reason, x->fail[i].path);
    close_synced(f, path); free(path);

    f = open_part(dir, "index.json", &path);   /* last: a folder with index.json is complete */
    write_index_json(f, x);
    close_synced(f, path); free(path);
}

/* Write x as the index folder dir: whole into dir.new, then two renames. */
static void commit_index(const char *dir, const index_data *x)
{
    char *tmp = concat(dir, ".new"), *old = concat(dir, ".old"), *parent = parent_dir(dir), e[128];
    int had = exists(dir);
    remove_index_dir(tmp);
    if (mkdir(tmp, 0777) != 0) fail(1, "%s: cannot create folder: %s", tmp, error_text(errno, e, sizeof e));
    write_index_files(tmp, x);
    sync_dir(tmp);
    if (had && rename(dir, old) != 0) fail(1, "%s: cannot rename it to %s: %s", dir, old, error_text(errno, e, sizeof e));
    if (rename(tmp, dir) != 0) fail(1, "%s: cannot rename %s to it: %s", dir, tmp, error_text(errno, e, sizeof e));
    sync_dir(parent);
    if (had) remove_index_dir(old);
    free(tmp); free(old); free(parent);
}

/* ------------------------------------------------------------------------ */
/* The walk                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct { file_info *v; size_t n, cap; } file_list;

static void add_file(file_list *l, char *path, int64_t size, int64_t mtime, const char *reason)
{
    reserve(&l->v, &l->cap, l->n + 1, sizeof *l->v);
    l->v[l->n].path = path;
    l->v[l->n].size = size;
    l->v[l->n].mtime = mtime;
    l->v[l->n].reason = reason ? xstrdup(reason) : NULL;
    l->n++;
}

static int64_t mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* a picture by its name: .png .jpg .jpeg .jpe .jfif .bmp .ppm .pgm .pnm, any case */
static int picture_name(const char *name)
{
    static const char *ext[] = {"png", "jpg", "jpeg", "jpe", "jfif", "bmp", "ppm", "pgm", "pnm"};
    const char *dot = strrchr(name, '.');
    char low[8];
    size_t n;
    if (!dot || (n = strlen(dot + 1)) >= sizeof low) return 0;
    for (size_t i = 0; i <= n; i++) low[i] = (char)(dot[1 + i] >= 'A' && dot[1 + i] <= 'Z' ? dot[1 + i] + 32 : dot[1 + i]);
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++) if (!strcmp(low, ext[i])) return 1;
    return 0;
}

/* the folders seen, by device and inode: a loop of links is walked once */
typedef struct { uint64_t *key; size_t cap, n; } folder_set;

static int add_folder(folder_set *s, const struct stat *st)
{
    uint64_t dev = (uint64_t)st->st_dev, ino = (uint64_t)st->st_ino;
    size_t at;
    if (2 * (s->n + 1) > s->cap) {   /* keep it at most half full: rehash into twice the room */
        folder_set t = {NULL, s->cap ? 2 * s->cap : 64, 0};
        t.key = xmalloc(t.cap * 2 * sizeof(uint64_t));
        memset(t.key, 0xff, t.cap * 2 * sizeof(uint64_t));
        for (size_t i = 0; i < s->cap; i++) {
            if (s->key[2 * i] == UINT64_MAX && s->key[2 * i + 1] == UINT64_MAX) continue;
            at = (size_t)((s->key[2 * i] * 0x9e3779b97f4a7c15ULL ^ s->key[2 * i + 1]) * 0xff51afd7ed558ccdULL % t.cap);
            while (t.key[2 * at] != UINT64_MAX || t.key[2 * at + 1] != UINT64_MAX) at = (at + 1) % t.cap;
            t.key[2 * at] = s->key[2 * i];
            t.key[2 * at + 1] = s->key[2 * i + 1];
            t.n++;
        }
        free(s->key);
        *s = t;
    }
    at = (size_t)((dev * 0x9e3779b97f4a7c15ULL ^ ino) * 0xff51afd7ed558ccdULL % s->cap);
    while (s->key[2 * at] != UINT64_MAX || s->key[2 * at + 1] != UINT64_MAX) {
        if (s->key[2 * at] == dev && s->key[2 * at + 1] == ino) return 0;
        at = (at + 1) % s->cap;
    }
    s->key[2 * at] = dev;
    s->key[2 * at + 1] = ino;
    s->n++;
    return 1;
}

static int by_string(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* one folder: its pictures into out, its new subfolders onto the queue, in name order */
static void walk_folder(const char *dir, folder_set *seen, char ***queue, size_t *qn, size_t *qcap, file_list *out)
{
    DIR *d = opendir(dir);
    struct dirent *ent;
    char **names = NULL, e[128];
    size_t n = 0, cap = 0, dl = strlen(dir);
    if (!d) {
        const char *why = error_text(errno, e, sizeof e);
        char reason[200];
        snprintf(reason, sizeof reason, "cannot open folder: %s", why);
        warn("%s: %s", dir, reason);
        add_file(out, xstrdup(dir), -1, -1, reason);
        return;
    }
    while ((ent = readdir(d)) != NULL) {
        if (!strcmp(ent->d_name, ".") || !strcmp(ent->d_name, "..")) continue;
        reserve(&names, &cap, n + 1, sizeof *names);
        names[n++] = xstrdup(ent->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_string);
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        char *path = xmalloc(dl + strlen(names[i]) + 2);
        sprintf(path, dl && dir[dl - 1] == '/' ? "%s%s" : "%s/%s", dir, names[i]);
        if (strchr(names[i], '\n')) {   /* paths.txt is one path a line */
            warn("%s: a name with a line break cannot be kept in an index; skipped", path);
            free(path);
        } else if (stat(path, &st) != 0) {   /* a dangling link, or no permission */
            if (picture_name(names[i])) { warn("%s: %s", path, error_text(errno, e, sizeof e)); add_file(out, path, -1, -1, e); }
            else free(path);
        } else if (S_ISDIR(st.st_mode)) {
            if (add_folder(seen, &st)) { reserve(queue, qcap, *qn + 1, sizeof **queue); (*queue)[(*qn)++] = path; }
            else free(path);
        } else if (S_ISREG(st.st_mode) && picture_name(names[i])) add_file(out, path, (int64_t)st.st_size, mtime_ns(&st), NULL);
        else free(path);
        free(names[i]);
    }
    free(names);
}

/* Every picture under the arguments, breadth first (a folder reached by two
 * ways is walked where it is nearest the top), sorted by path bytes, each path
 * once. Failures (unreadable folders, dangling links) carry their reason. */
static void walk(char **args, int n_args, file_list *out)
{
    folder_set seen = {NULL, 0, 0};
    char **queue = NULL, e[128];
    size_t qn = 0, qcap = 0, uniq = 0;
    for (int i = 0; i < n_args; i++) {
        struct stat st;
        char *a = xstrdup(args[i]);
        size_t len = strlen(a);
        while (len > 1 && a[len - 1] == '/') a[--len] = 0;
        if (stat(a, &st) != 0) fail(1, "%s: %s", a, error_text(errno, e, sizeof e));
        if (strchr(a, '\n')) fail(1, "%s: a name with a line break cannot be kept in an index", a);
        if (S_ISDIR(st.st_mode)) {
            if (add_folder(&seen, &st)) { reserve(&queue, &qcap, qn + 1, sizeof *queue); queue[qn++] = a; }
            else free(a);
        } else if (S_ISREG(st.st_mode)) add_file(out, a, (int64_t)st.st_size, mtime_ns(&st), NULL);
        else fail(1, "%s: not a file or a folder", a);
    }
    for (size_t head = 0; head < qn; head++) {
        walk_folder(queue[head], &seen, &queue, &qn, &qcap, out);
        free(queue[head]);
    }
    free(queue);
    free(seen.key);
    qsort(out->v, out->n, sizeof *out->v, by_path);
    for (size_t i = 0; i < out->n; i++) {
        if (uniq && !strcmp(out->v[uniq - 1].path, out->v[i].path)) { free(out->v[i].path); free(out->v[i].reason); continue; }
        out->v[uniq++] = out->v[i];
    }
    out->n = uniq;
}

/* --shard I/N: keep entries I-1, I-1+N, I-1+2N, ... */
static void keep_shard(file_list *l, int part, int parts)
{
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (i % (size_t)parts == (size_t)(part - 1)) l->v[k++] = l->v[i];
        else { free(l->v[i].path); free(l->v[i].reason); }
    }
    l->n = k;
}

/* ------------------------------------------------------------------------ */
/* Embedding a batch of files                                                */
/* ------------------------------------------------------------------------ */

/* read and decode one file; f's size and mtime become those of the bytes read */
static int load_picture(file_info *f, clip_image *img, char *err)
{
    int fd = open(f->path, O_RDONLY | O_NONBLOCK), rc;   /* a FIFO must not block */
    struct stat st;
    uint8_t *data;
    size_t size;
    char e[128];
    if (fd < 0) { snprintf(err, CLIP_ERR_SIZE, "cannot open: %s", error_text(errno, e, sizeof e)); return 1; }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, CLIP_ERR_SIZE, "not a regular file");
        close(fd);
        return 1;
    }
    rc = read_fd(fd, &data, &size);
    close(fd);
    if (rc) { snprintf(err, CLIP_ERR_SIZE, "cannot read: %s", error_text(rc, e, sizeof e)); return 1; }
    f->size = (int64_t)st.st_size;
    f->mtime = mtime_ns(&st);
    rc = clip_image_decode(data, size, img, err);
    free(data);
    return rc;
}

/* files[0..count) -> out[count, D] (L2-normalized); a file that fails gets its
 * reason instead. Files are read, decoded and preprocessed in parallel; the
 * encoder takes one image per call (see the top of this file). */
static void embed_batch(clip_model *m, int resize, file_info *const *files, int count, float *px, float *out)
{
    const clip_config *c = clip_get_config(m);
    size_t np = (size_t)3 * c->image_size * c->image_size;
    int D = c->projection_dim;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1)
#endif
    for (int b = 0; b < count; b++) {
        char err[CLIP_ERR_SIZE];
        clip_image img;
        if (load_picture(files[b], &img, err) == 0) {
            int rc = clip_image_preprocess(&img, &c->preprocess, resize, px + (size_t)b * np, err);
            clip_image_free(&img);
            if (rc == 0) continue;
        }
        for (char *p = err; *p; p++) if (*p == '\t' || *p == '\n' || *p == '\r') *p = ' ';   /* one field of a line */
        files[b]->reason = xstrdup(err);
    }
    for (int b = 0; b < count; b++) {
        char err[CLIP_ERR_SIZE];
        if (files[b]->reason) continue;
        if (clip_encode_images(m, px + (size_t)b * np, 1, out + (size_t)b * D, NULL, NULL, err)) fail(1, "%s", err);
        clip_normalize(out + (size_t)b * D, D);
    }
}

/* ------------------------------------------------------------------------ */
/* The journal: INDEX.journal, the batches finished since the last commit    */
/* ------------------------------------------------------------------------ */
/* Records: u32 magic "CJR1", u32 payload bytes, u64 FNV-1a of the payload,
 * payload. The first record holds the identity (index.json's text for an
 * empty index); each later one a batch: u32 count, then per file u32 path
 * bytes, path, i64 size, i64 mtime, u8 ok, then D floats or u32 reason bytes
 * and the reason. Host byte order: the journal never leaves the machine. */

typedef struct {
    int fd;
    char *path, *identity;  /* identity: written before the first batch when the journal is new */
    file_list done;        /* every file the journal holds, in order */
    float *emb;            /* their embeddings, D floats per file (unused for failures) */
    size_t emb_cap;
} journal;

typedef struct { uint8_t *p; size_t n, cap; } buffer;

static void put(buffer *b, const void *data, size_t n)
{
    reserve(&b->p, &b->cap, b->n + n, 1);
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void journal_write(journal *j, const buffer *payload)
{
    uint8_t head[16];
    uint32_t magic = 0x31524a43u, len = (uint32_t)payload->n;   /* "CJR1" */
    uint64_t sum = fnv1a(FNV_START, payload->p, payload->n);
    char e[128];
    size_t done = 0;
    buffer all = {NULL, 0, 0};
    memcpy(head, &magic, 4);
    memcpy(head + 4, &len, 4);
    memcpy(head + 8, &sum, 8);
    put(&all, head, 16);
    put(&all, payload->p, payload->n);
    while (done < all.n) {
        ssize_t w = write(j->fd, all.p + done, all.n - done);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) fail(1, "%s: write error: %s", j->path, error_text(errno, e, sizeof e));
        done += (size_t)w;
    }
    if (fsync(j->fd) != 0 && errno != EINVAL && errno != ENOSYS) fail(1, "%s: cannot sync: %s", j->path, error_text(errno, e, sizeof e));
    free(all.p);
}

static void journal_append(journal *j, file_info *const *files, int count, const float *emb, int D)
{
    buffer b = {NULL, 0, 0};
    uint32_t n = (uint32_t)count;
    if (j->identity) {
        put(&b, j->identity, strlen(j->identity));
        journal_write(j, &b);
        b.n = 0;
        j->identity = NULL;
    }
    put(&b, &n, 4);
    for (int i = 0; i < count; i++) {
        const file_info *f = files[i];
        uint32_t len = (uint32_t)strlen(f->path);
        uint8_t ok = f->reason == NULL;
        put(&b, &len, 4);
        put(&b, f->path, len);
        put(&b, &f->size, 8);
        put(&b, &f->mtime, 8);
        put(&b, &ok, 1);
        if (ok) put(&b, emb + (size_t)i * D, (size_t)D * sizeof(float));
        else { len = (uint32_t)strlen(f->reason); put(&b, &len, 4); put(&b, f->reason, len); }
    }
    journal_write(j, &b);
    free(b.p);
}

/* one batch record into j->done; 0 when it does not parse */
static int journal_parse_batch(journal *j, const uint8_t *p, size_t n, int D)
{
    uint32_t count, len;
    size_t at = 4;
    if (n < 4) return 0;
    memcpy(&count, p, 4);
    for (uint32_t i = 0; i < count; i++) {
        int64_t size, mtime;
        char *path, *reason = NULL;
        if (at + 4 > n) return 0;
        memcpy(&len, p + at, 4);
        if (len > n - at - 4 || n - at - 4 - len < 17) return 0;
        path = xmalloc(len + 1);
        memcpy(path, p + at + 4, len);
        path[len] = 0;
        at += 4 + len;
        memcpy(&size, p + at, 8);
        memcpy(&mtime, p + at + 8, 8);
        at += 17;
        if (p[at - 1]) {
            if ((n - at) / sizeof(float) < (size_t)D) { free(path); return 0; }
            reserve(&j->emb, &j->emb_cap, (j->done.n + 1) * (size_t)D, sizeof(float));
            memcpy(j->emb + j->done.n * (size_t)D, p + at, (size_t)D * sizeof(float));
            at += (size_t)D * sizeof(float);
        } else {
            if (at + 4 > n) { free(path); return 0; }
            memcpy(&len, p + at, 4);
            if (len > n - at - 4) { free(path); return 0; }
            reason = xmalloc(len + 1);
            memcpy(reason, p + at + 4, len);
            reason[len] = 0;
            at += 4 + len;
        }
        add_file(&j->done, path, size, mtime, reason);
        free(reason);
    }
    return at == n;
}

/* a journal this run created and left empty goes when the run ends, even on an error */
static const char *empty_journal;

static void remove_empty_journal(void)
{
    struct stat st;
    if (empty_journal && stat(empty_journal, &st) == 0 && st.st_size == 0) unlink(empty_journal);
}

/* Open (or create) INDEX.journal, locked against a second run; replay the
 * finished batches and cut off a torn last record. */
static void journal_open(journal *j, const char *dir, const char *identity, int D)
{
    struct flock lk;
    uint8_t *data;
    size_t size, at = 0, good = 0;
    char e[128];
    int rc;
    memset(j, 0, sizeof *j);
    j->path = concat(dir, ".journal");
    if ((j->fd = open(j->path, O_RDWR | O_CREAT, 0666)) < 0) fail(1, "%s: %s", j->path, error_text(errno, e, sizeof e));
    memset(&lk, 0, sizeof lk);
    lk.l_type = F_WRLCK;
    lk.l_whence = SEEK_SET;
    if (fcntl(j->fd, F_SETLK, &lk) != 0 && (errno == EACCES || errno == EAGAIN))
        fail(1, "%s: another clip index is updating this index", dir);
    if ((rc = read_fd(j->fd, &data, &size)) != 0) fail(1, "%s: %s", j->path, error_text(rc, e, sizeof e));
    while (size - at >= 16) {
        uint32_t magic, len;
        uint64_t sum;
        memcpy(&magic, data + at, 4);
        memcpy(&len, data + at + 4, 4);
        memcpy(&sum, data + at + 8, 8);
        if (magic != 0x31524a43u || len > size - at - 16 || fnv1a(FNV_START, data + at + 16, len) != sum) break;
        if (at == 0 && (len != strlen(identity) || memcmp(data + 16, identity, len) != 0))
            fail(1, "%s: holds embeddings made with another model or settings; remove it to start over", j->path);
        if (at > 0 && !journal_parse_batch(j, data + at + 16, len, D)) break;
        at += 16 + len;
        good = at;
    }
    free(data);
    if (good < size && ftruncate(j->fd, (off_t)good) != 0) fail(1, "%s: %s", j->path, error_text(errno, e, sizeof e));
    if (lseek(j->fd, 0, SEEK_END) < 0) fail(1, "%s: %s", j->path, error_text(errno, e, sizeof e));
    if (good == 0) {
        j->identity = (char *)identity;
        empty_journal = j->path;
        atexit(remove_empty_journal);
    }
}

static void journal_close(journal *j, int remove_it)
{
    if (remove_it) unlink(j->path);
    empty_journal = NULL;
    close(j->fd);
    for (size_t i = 0; i < j->done.n; i++) { free(j->done.v[i].path); free(j->done.v[i].reason); }
    free(j->done.v);
    free(j->emb);
    free(j->path);
}

/* ------------------------------------------------------------------------ */
/* clip index                                                                */
/* ------------------------------------------------------------------------ */

/* what is known of a path already: from the index (row or failure) or the journal */
typedef struct {
    const file_info *f;
    long row;              /* row of the old index, or -1 */
    const float *emb;      /* journal embedding, or NULL */
    size_t seq;            /* later knowledge wins */
} known;

static int by_known(const void *a, const void *b)
{
    const known *x = a, *y = b;
    int c = strcmp(x->f->path, y->f->path);
    return c ? c : x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int by_known_path(const void *key, const void *k) { return strcmp(key, ((const known *)k)->f->path); }

/* old rows, old failures, then the journal: sorted by path, the latest per path kept */
static known *gather_known(const index_data *old, const journal *j, int D, size_t *n_out)
{
    size_t n = 0, total = old->n + old->n_fail + j->done.n, k = 0;
    known *v = xmalloc(total * sizeof *v);
    for (size_t i = 0; i < old->n; i++, n++) { v[n].f = &old->rows[i]; v[n].row = (long)i; v[n].emb = NULL; v[n].seq = n; }
    for (size_t i = 0; i < old->n_fail; i++, n++) { v[n].f = &old->fail[i]; v[n].row = -1; v[n].emb = NULL; v[n].seq = n; }
    for (size_t i = 0; i < j->done.n; i++, n++) {
        v[n].f = &j->done.v[i];
        v[n].row = -1;
        v[n].emb = j->done.v[i].reason ? NULL : j->emb + i * (size_t)D;
        v[n].seq = n;
    }
    qsort(v, n, sizeof *v, by_known);
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && !strcmp(v[i].f->path, v[i + 1].f->path)) continue;
        v[k++] = v[i];
    }
    *n_out = k;
    return v;
}

typedef struct {
    size_t embedded, unchanged, failed_now, dropped;
} index_counts;

/* Embed the files in `pending` (batch by batch, each into the journal). Returns
 * 0, or 1 when interrupted. */
static int embed_pending(clip_model *m, int resize, journal *j, file_info **pending, size_t n, float *emb, index_counts *cnt)
{
    enum { BATCH = 16 };
    const clip_config *c = clip_get_config(m);
    float *px = xmalloc((size_t)BATCH * 3 * c->image_size * c->image_size * sizeof(float));
    double t0 = now();
    int D = c->projection_dim;
    size_t b0;
    for (b0 = 0; b0 < n && !interrupted; b0 += BATCH) {
        int count = n - b0 < BATCH ? (int)(n - b0) : BATCH;
        embed_batch(m, resize, pending + b0, count, px, emb + b0 * (size_t)D);
        for (int b = 0; b < count; b++) {
            if (pending[b0 + b]->reason) { warn("%s: %s", pending[b0 + b]->path, pending[b0 + b]->reason); cnt->failed_now++; }
            else cnt->embedded++;
        }
        journal_append(j, pending + b0, count, emb + b0 * (size_t)D, D);
        progress(b0 + (size_t)count, n, t0);
    }
    clear_progress();
    free(px);
    return b0 < n;   /* interrupted before the end */
}

/* The new index from the walk: each file's known embedding (old row or
 * journal) when its size and mtime still match, else a fresh one. */
static int build_index(const char *dir, clip_model *m, const index_id *id, const index_data *old, journal *j,
                       file_list *files, index_data *x, index_counts *cnt)
{
    int D = id->dim, same = 1;
    size_t n_known, n_pending = 0;
    known *k = gather_known(old, j, D, &n_known);
    const known **src = xmalloc(files->n * sizeof *src);
    file_info **pending = xmalloc(files->n * sizeof *pending);
    float *fresh;
    for (size_t i = 0; i < files->n; i++) {
        file_info *f = &files->v[i];
        const known *h = f->reason ? NULL : bsearch(f->path, k, n_known, sizeof *k, by_known_path);
        src[i] = h && h->f->size == f->size && h->f->mtime == f->mtime ? h : NULL;
        if (src[i] && src[i]->f->reason) f->reason = xstrdup(src[i]->f->reason);
        if (!src[i] && !f->reason) pending[n_pending++] = f;
    }
    fresh = xmalloc(n_pending * (size_t)D * sizeof(float) + 1);
    if (embed_pending(m, id->resize, j, pending, n_pending, fresh, cnt)) {
        free(k); free(src); free(pending); free(fresh);
        return 1;
    }
    memset(x, 0, sizeof *x);
    x->id = *id;
    x->rows = xmalloc(files->n * sizeof *x->rows);
    x->fail = xmalloc(files->n * sizeof *x->fail);
    for (size_t i = 0, t = 0; i < files->n; i++) {
        file_info *f = &files->v[i];
        int was_pending = t < n_pending && pending[t] == f;
        if (f->reason) { x->fail[x->n_fail++] = *f; t += was_pending; continue; }
        if (!src[i] || src[i]->row != (long)x->n) same = 0;
        if (src[i]) cnt->unchanged++;
        x->rows[x->n++] = *f;
        t += was_pending;
    }
    if (same && x->n == old->n && x->n_fail == old->n_fail) {
        for (size_t i = 0; i < x->n_fail && same; i++)
            same = !strcmp(x->fail[i].path, old->fail[i].path) && !strcmp(x->fail[i].reason, old->fail[i].reason) &&
                   x->fail[i].size == old->fail[i].size && x->fail[i].mtime == old->fail[i].mtime;
    } else same = 0;
    if (!same) {   /* gather the embeddings: old rows (read now), journal, fresh */
        index_data full;
        float *oldemb = NULL;
        if (old->n) { load_index(dir, &full, 1); oldemb = full.emb; full.emb = NULL; free_index(&full); }
        x->emb = xmalloc(x->n * (size_t)D * sizeof(float) + 1);
        for (size_t i = 0, r = 0, t = 0; i < files->n; i++) {
            const float *e = NULL;
            int was_pending = t < n_pending && pending[t] == &files->v[i];
            if (was_pending) e = fresh + t * (size_t)D;
            t += was_pending;
            if (files->v[i].reason) continue;
            if (!e) e = src[i]->row >= 0 ? oldemb + (size_t)src[i]->row * D : src[i]->emb;
            memcpy(x->emb + r++ * (size_t)D, e, (size_t)D * sizeof(float));
        }
        free(oldemb);
    }
    free(k); free(src); free(pending); free(fresh);
    return same ? 2 : 0;
}

static char *identity_text(const index_id *id)
{
    index_data empty;
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f) fail(1, "out of memory");
    memset(&empty, 0, sizeof empty);
    empty.id = *id;
    write_index_json(f, &empty);
    fclose(f);
    return buf;
}

static size_t count_dropped(const index_data *old, const file_list *files)
{
    size_t dropped = 0;
    for (size_t i = 0; i < old->n; i++)
        if (!bsearch(&old->rows[i], files->v, files->n, sizeof *files->v, by_path)) dropped++;
    return dropped;
}

static int index_merge(const cli_options *o);

/* an index is updated only with the model and options it was made with */
static void check_identity(const char *dir, const index_id *have, const index_id *id, const char *model_path)
{
    if (!same_model(have, id))
        fail(1, "%s: made with model %s (dim %d, hash %s), not %s (%s: dim %d, hash %s); use that model or another -o",
             dir, have->model, have->dim, have->hash, id->model, model_path, id->dim, id->hash);
    if (have->f16 != id->f16 || have->resize != id->resize)
        fail(1, "%s: holds %s embeddings made with --resize %s; give the same options or another -o", dir,
             have->f16 ? "float16" : "float32", resize_name(have->resize));
}

int cmd_index(int argc, char **argv)
{
    cli_options o;
    index_data old, x;
    index_id id;
    index_counts cnt = {0, 0, 0, 0};
    file_list files = {NULL, 0, 0};
    journal j;
    clip_model *m;
    char *ident;
    int part, parts, rc;
    double t0 = now();
    parse_cli(argc, argv, " m o shard merge float16 resize j ", index_help, &o);
    if (o.merge) {
        rc = index_merge(&o);
        free(o.pos);
        return rc;
    }
    if (!o.out) fail(2, "no index given: use -o INDEX (a folder)");
    if (!o.n_pos) fail(2, "nothing to index: give one or more folders or pictures");
    parse_shard(o.shard, &part, &parts);
    m = open_model(o.model);
    identity_of(o.model, m, o.resize, o.f16, &id);
    if (check_index_dir(o.out)) {   /* refuse another model before any work */
        index_data have;
        load_index(o.out, &have, 0);
        check_identity(o.out, &have.id, &id, o.model);
        free_index(&have);
    }
    walk(o.pos, o.n_pos, &files);
    keep_shard(&files, part, parts);
    ident = identity_text(&id);
    journal_open(&j, o.out, ident, id.dim);   /* the lock: from here on this run owns INDEX */
    recover_index(o.out);
    memset(&old, 0, sizeof old);
    if (check_index_dir(o.out)) {   /* again, under the lock */
        load_index(o.out, &old, 0);
        check_identity(o.out, &old.id, &id, o.model);
    }
    catch_interrupts();
    rc = build_index(o.out, m, &id, &old, &j, &files, &x, &cnt);
    if (rc == 1) {
        clear_progress();
        fprintf(stderr, "clip: interrupted: the %zu files done so far are kept in %s; run the same command to go on\n",
                cnt.embedded + cnt.failed_now, j.path);
        exit(130);
    }
    if (rc == 0) commit_index(o.out, &x);
    journal_close(&j, 1);
    cnt.dropped = count_dropped(&old, &files);
    {
        double el = now() - t0;
        printf("%s: %zu pictures (%zu embedded, %zu unchanged), %zu failed%s, %zu dropped; %.2f s, %.1f images/s\n",
               o.out, x.n, cnt.embedded, cnt.unchanged, x.n_fail, x.n_fail ? " (listed in failures.tsv)" : "", cnt.dropped,
               el, el > 0 ? cnt.embedded / el : 0.0);
    }
    free(x.rows); free(x.fail); free(x.emb);
    for (size_t i = 0; i < files.n; i++) { free(files.v[i].path); free(files.v[i].reason); }
    free(files.v); free(ident); free(o.pos);
    free_index(&old);
    clip_free(m);
    return 0;
}

/* clip index --merge -o OUT IN...: the rows of all, sorted by path; every
 * input made with the same model and options; a path in two inputs is refused. */
typedef struct { const file_info *f; const float *emb; } row_ref;

static int by_ref_path(const void *a, const void *b)
{
    return strcmp(((const row_ref *)a)->f->path, ((const row_ref *)b)->f->path);
}

static int index_merge(const cli_options *o)
{
    index_data *in, x;
    row_ref *refs;
    size_t total = 0, total_fail = 0, D;
    if (!o->out) fail(2, "--merge needs -o OUT (the joined index)");
    if (o->n_pos < 1) fail(2, "--merge needs the indexes to join");
    if (o->model || o->shard || o->f16) fail(2, "--merge takes only -o OUT and the indexes (the model is theirs)");
    in = xmalloc((size_t)o->n_pos * sizeof *in);
    for (int i = 0; i < o->n_pos; i++) {
        recover_index(o->pos[i]);
        if (!check_index_dir(o->pos[i])) fail(1, "%s: not a clip index", o->pos[i]);
        load_index(o->pos[i], &in[i], 1);
        if (!same_model(&in[i].id, &in[0].id) || in[i].id.f16 != in[0].id.f16 || in[i].id.resize != in[0].id.resize)
            fail(1, "%s: made with model %s (hash %s, %s, --resize %s), unlike %s; only indexes of one model and options join",
                 o->pos[i], in[i].id.model, in[i].id.hash, in[i].id.f16 ? "float16" : "float32", resize_name(in[i].id.resize), o->pos[0]);
        total += in[i].n;
        total_fail += in[i].n_fail;
    }
    D = (size_t)in[0].id.dim;
    memset(&x, 0, sizeof x);
    x.id = in[0].id;
    refs = xmalloc(total * sizeof *refs);
    x.fail = xmalloc(total_fail * sizeof *x.fail);
    for (int i = 0; i < o->n_pos; i++) {
        for (size_t r = 0; r < in[i].n; r++) { refs[x.n].f = &in[i].rows[r]; refs[x.n].emb = in[i].emb + r * D; x.n++; }
        for (size_t r = 0; r < in[i].n_fail; r++) x.fail[x.n_fail++] = in[i].fail[r];
    }
    qsort(refs, x.n, sizeof *refs, by_ref_path);
    qsort(x.fail, x.n_fail, sizeof *x.fail, by_path);
    x.rows = xmalloc(total * sizeof *x.rows);
    x.emb = xmalloc(total * D * sizeof(float) + 1);
    for (size_t r = 0; r < x.n; r++) {
        if (r && !strcmp(refs[r - 1].f->path, refs[r].f->path)) fail(1, "%s: in two of the indexes; shards must not overlap", refs[r].f->path);
        x.rows[r] = *refs[r].f;
        memcpy(x.emb + r * D, refs[r].emb, D * sizeof(float));
    }
    recover_index(o->out);
    check_index_dir(o->out);
    commit_index(o->out, &x);
    printf("%s: %zu pictures, %zu failed, joined from %d indexes\n", o->out, x.n, x.n_fail, o->n_pos);
    free(x.rows); free(x.fail); free(x.emb); free(refs);
    for (int i = 0; i < o->n_pos; i++) free_index(&in[i]);
    free(in);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* clip search                                                               */
/* ------------------------------------------------------------------------ */

/* scores[i] = q . emb[i] for n rows of D floats: 16 interleaved partial sums */
static void score_all(const float *q, const float *emb, size_t n, int D, float *scores)
{
    long nl = (long)n;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n * (size_t)D > 1000000)
#endif
    for (long i = 0; i < nl; i++) {
        const float *e = emb + (size_t)i * D;
        float s[16] = {0}, t = 0.0f;
        int j, dv = D - D % 16;
        for (j = 0; j < dv; j += 16)
            for (int l = 0; l < 16; l++) s[l] += q[j + l] * e[j + l];
        for (; j < D; j++) t += q[j] * e[j];
        for (int l = 0; l < 8; l++) s[l] += s[l + 8];
        for (int l = 0; l < 4; l++) s[l] += s[l + 4];
        scores[i] = (s[0] + s[2]) + (s[1] + s[3]) + t;
    }
}

/* a better than b: higher score, then the earlier row */
static int better(const float *scores, size_t a, size_t b)
{
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
}

/* the k best rows, best first: a heap of the k best so far (its root the worst
 * of them), then sorted. O(n log k). */
static size_t top_k(const float *scores, size_t n, size_t k, size_t *best)
{
    size_t h = 0;
    if (k > n) k = n;
    for (size_t i = 0; i < n; i++) {
        size_t at;
        if (h < k) {   /* sift up */
            at = h++;
            while (at && better(scores, best[(at - 1) / 2], i)) { best[at] = best[(at - 1) / 2]; at = (at - 1) / 2; }
            best[at] = i;
        } else if (better(scores, i, best[0])) {   /* replace the root, sift down */
            at = 0;
            for (;;) {
                size_t c = 2 * at + 1;
                if (c >= k) break;
                if (c + 1 < k && better(scores, best[c], best[c + 1])) c++;
                if (!better(scores, i, best[c])) break;
                best[at] = best[c];
                at = c;
            }
            best[at] = i;
        }
    }
    for (size_t end = k; end > 1; end--) {   /* heap sort: the worst goes to the back */
        size_t last = best[end - 1], at = 0;
        best[end - 1] = best[0];
        for (;;) {
            size_t c = 2 * at + 1;
            if (c >= end - 1) break;
            if (c + 1 < end - 1 && better(scores, best[c], best[c + 1])) c++;
            if (!better(scores, last, best[c])) break;
            best[at] = best[c];
            at = c;
        }
        best[at] = last;
    }
    return k;
}

/* the query's embedding (L2-normalized) */
static void embed_query(clip_model *m, const cli_options *o, int resize, float *q)
{
    char err[CLIP_ERR_SIZE];
    const clip_config *c = clip_get_config(m);
    if (o->image) {
        clip_image img;
        float *px = xmalloc((size_t)3 * c->image_size * c->image_size * sizeof(float));
        if (clip_image_load(o->image, &img, err)) fail(1, "%s", err);
        if (clip_image_preprocess(&img, &c->preprocess, resize, px, err)) fail(1, "%s: %s", o->image, err);
        clip_image_free(&img);
        if (clip_encode_images(m, px, 1, q, NULL, NULL, err)) fail(1, "%s", err);
        free(px);
    } else {
        const char *text = o->pos[1];
        int32_t ids[1024];
        int n = clip_tokenize(clip_get_tokenizer(m), text, strlen(text), ids, 1024, 0, err);
        if (n < 0) fail(1, "cannot tokenize '%.60s': %s", text, err);
        if (n > c->max_positions) n = c->max_positions;
        if (clip_encode_text(m, ids, n, q, NULL, NULL, err)) fail(1, "%s", err);
    }
    clip_normalize(q, c->projection_dim);
}

/* one thumbnail as a data URI (PNG by clip_png_encode), at most `side` pixels a side */
static void html_thumbnail(FILE *f, const char *path, int side)
{
    char err[CLIP_ERR_SIZE];
    clip_image img, small;
    uint8_t *png;
    size_t size;
    if (clip_image_load(path, &img, err)) {
        fputs("<div class=\"missing\">", f);
        html_text(f, err);
        fputs("</div>", f);
        return;
    }
    if (img.w > side || img.h > side) {
        int w = img.w >= img.h ? side : (int)((double)img.w * side / img.h);
        int h = img.h > img.w ? side : (int)((double)img.h * side / img.w);
        if (clip_resize_bicubic_pil(&img, w < 1 ? 1 : w, h < 1 ? 1 : h, &small, err)) fail(1, "%s: %s", path, err);
        clip_image_free(&img);
        img = small;
    }
    if (clip_png_encode(&img, &png, &size, err)) fail(1, "%s: %s", path, err);
    fputs("<img alt=\"\" src=\"data:image/png;base64,", f);
    base64(f, png, size);
    fputs("\">", f);
    free(png);
    clip_image_free(&img);
}

static void write_search_html(const char *out, const cli_options *o, const index_data *x, const float *scores,
                              const size_t *best, size_t k)
{
    char *tmp = xmalloc(strlen(out) + 32), e[128];
    FILE *f;
    sprintf(tmp, "%s.tmp.%ld", out, (long)getpid());
    if (!(f = fopen(tmp, "w"))) fail(1, "%s: cannot write: %s", out, error_text(errno, e, sizeof e));
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>clip search</title>\n<style>\n"
          "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\n"
          ".grid{display:flex;flex-wrap:wrap;gap:14px}.card{width:200px}\n"
          ".card img,.missing{width:200px;height:200px;object-fit:contain;background:#f2f2f2;border-radius:6px;display:block}\n"
          ".missing{font-size:.8em;color:#a33;overflow:hidden}.score{font-weight:bold;font-variant-numeric:tabular-nums}\n"
          ".path{font-size:.8em;word-break:break-all;color:#555}.query img{max-width:200px;border-radius:6px}\n"
          "</style></head><body>\n<h1>clip search</h1>\n<p class=\"query\">", f);
    if (o->image) { fputs("pictures like ", f); html_text(f, o->image); fputs("<br>", f); html_thumbnail(f, o->image, 200); }
    else { fputs("pictures for &ldquo;", f); html_text(f, o->pos[1]); fputs("&rdquo;", f); }
    fprintf(f, "</p>\n<p>the %zu best of %zu in ", k, x->n);
    html_text(f, o->pos[0]);
    fputs(" (cosine similarity)</p>\n<div class=\"grid\">\n", f);
    for (size_t r = 0; r < k; r++) {
        const char *path = x->rows[best[r]].path;
        fputs("<div class=\"card\">", f);
        html_thumbnail(f, path, 200);
        fprintf(f, "<div class=\"score\">%zu. %.4f</div><div class=\"path\">", r + 1, scores[best[r]]);
        html_text(f, path);
        fputs("</div></div>\n", f);
    }
    fputs("</div>\n</body></html>\n", f);
    if (fclose(f) != 0 || rename(tmp, out) != 0) { remove(tmp); fail(1, "%s: write error", out); }
    free(tmp);
}

int cmd_search(int argc, char **argv)
{
    cli_options o;
    index_data x;
    index_id id;
    clip_model *m;
    float *q, *scores;
    size_t *best, k;
    double t0, t_load, t_query, t_rank;
    parse_cli(argc, argv, " m image top json html timing j ", search_help, &o);
    if (o.n_pos < 1) fail(2, "no index given: clip search -m MODEL INDEX (TEXT | --image FILE)");
    if (o.n_pos > 2) fail(2, "too many arguments: give the text as one argument, in quotes");
    if ((o.n_pos == 2) == (o.image != NULL)) fail(2, "give one query: a text or --image FILE");
    m = open_model(o.model);
    t0 = now();
    {
        char *json = concat(o.pos[0], "/index.json");
        int found = exists(json);
        free(json);
        if (!found) fail(1, "%s: not a clip index (it has no index.json; make one with clip index)", o.pos[0]);
    }
    load_index(o.pos[0], &x, 1);
    t_load = now() - t0;
    identity_of(o.model, m, x.id.resize, x.id.f16, &id);
    if (!same_model(&x.id, &id))
        fail(1, "%s: made with model %s (dim %d, hash %s), not %s (%s: dim %d, hash %s); search it with that model",
             o.pos[0], x.id.model, x.id.dim, x.id.hash, id.model, o.model, id.dim, id.hash);
    q = xmalloc((size_t)id.dim * sizeof(float));
    t0 = now();
    embed_query(m, &o, x.id.resize, q);
    t_query = now() - t0;
    t0 = now();
    scores = xmalloc(x.n * sizeof(float) + 1);
    best = xmalloc((size_t)o.top * sizeof *best);
    score_all(q, x.emb, x.n, id.dim, scores);
    k = top_k(scores, x.n, (size_t)o.top, best);
    t_rank = now() - t0;
    if (o.html) write_search_html(o.html, &o, &x, scores, best, k);
    if (o.json) {
        printf("{\"query\": ");
        json_string(stdout, o.image ? o.image : o.pos[1]);
        printf(", \"type\": \"%s\", \"results\": [", o.image ? "image" : "text");
        for (size_t r = 0; r < k; r++) {
            printf(r ? ", {\"path\": " : "{\"path\": ");
            json_string(stdout, x.rows[best[r]].path);
            printf(", \"score\": %.9g}", scores[best[r]]);
        }
        printf("]}\n");
    } else
        for (size_t r = 0; r < k; r++) printf("%.4f  %s\n", scores[best[r]], x.rows[best[r]].path);
    if (o.timing)
        fprintf(stderr, "clip: %zu embeddings: index loaded in %.1f ms, query embedded in %.1f ms, ranked in %.2f ms\n",
                x.n, t_load * 1e3, t_query * 1e3, t_rank * 1e3);
    free(q); free(scores); free(best); free(o.pos);
    free_index(&x);
    clip_free(m);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* clip embed --list                                                         */
/* ------------------------------------------------------------------------ */

/* the list's paths (one a line, empty lines skipped, a final \r dropped), with their line numbers */
static char **read_list(const char *list, size_t *n, size_t **line_no)
{
    int fd = strcmp(list, "-") ? open(list, O_RDONLY) : 0, rc;
    uint8_t *data;
    size_t size, cap = 0, at = 0, line = 0;
    char **paths = NULL, e[128];
    *line_no = NULL;
    *n = 0;
    if (fd < 0) fail(1, "%s: %s", list, error_text(errno, e, sizeof e));
    if ((rc = read_fd(fd, &data, &size)) != 0) fail(1, "%s: %s", list, error_text(rc, e, sizeof e));
    if (fd) close(fd);
    while (at < size) {
        uint8_t *nl = memchr(data + at, '\n', size - at);
        size_t end = nl ? (size_t)(nl - data) : size, len = end - at;
        line++;
        if (len && data[end - 1] == '\r') len--;
        if (len) {
            if (memchr(data + at, 0, len)) fail(1, "%s: line %zu holds a NUL byte; give one path per line", list, line);
            reserve(&paths, &cap, *n + 1, sizeof *paths);
            *line_no = xrealloc(*line_no, cap * sizeof **line_no);
            paths[*n] = xmalloc(len + 1);
            memcpy(paths[*n], data + at, len);
            paths[*n][len] = 0;
            (*line_no)[(*n)++] = line;
        }
        at = end + 1;
    }
    free(data);
    return paths;
}

/* OUT.npy -> OUT + suffix (".npy" taken off first) */
static char *sidecar(const char *out, const char *suffix)
{
    size_t n = strlen(out);
    char *base = xstrdup(out), *s;
    if (n > 4 && !strcmp(out + n - 4, ".npy")) base[n - 4] = 0;
    s = concat(base, suffix);
    free(base);
    return s;
}

static FILE *open_tmp(const char *path, char **tmp)
{
    FILE *f;
    char e[128];
    *tmp = xmalloc(strlen(path) + 32);
    sprintf(*tmp, "%s.tmp.%ld", path, (long)getpid());
    if (!(f = fopen(*tmp, "wb"))) fail(1, "%s: cannot write: %s", path, error_text(errno, e, sizeof e));
    return f;
}

static void finish_tmp(FILE *f, char *tmp, const char *path)
{
    if (fclose(f) != 0 || rename(tmp, path) != 0) { remove(tmp); fail(1, "%s: write error", path); }
    free(tmp);
}

/* clip embed --list FILE -o OUT.npy [--shard I/N]: OUT.npy [M, D] float32, the
 * rows in list order, streamed; OUT.paths.txt, the M paths; OUT.failures.tsv,
 * "line<TAB>reason<TAB>path" for each file that failed. */
int embed_list(const char *model_path, const char *list, const char *shard, const char *out, int resize)
{
    enum { BATCH = 16 };
    size_t n, *line_no, rows = 0, failed = 0;
    char **paths, head[128], *paths_out, *fail_out, *t_npy, *t_paths, *t_fail;
    int part, parts;
    double t0 = now();
    clip_model *m;
    if (!out) fail(2, "--list needs -o OUT.npy");
    parse_shard(shard, &part, &parts);
    m = open_model(model_path);
    paths = read_list(list, &n, &line_no);
    paths_out = sidecar(out, ".paths.txt");
    fail_out = sidecar(out, ".failures.tsv");
    const clip_config *c = clip_get_config(m);
    int D = c->projection_dim;
    float *px = xmalloc((size_t)BATCH * 3 * c->image_size * c->image_size * sizeof(float));
    float *emb = xmalloc((size_t)BATCH * D * sizeof(float));
    file_info files[BATCH], *fp[BATCH];
    size_t which[BATCH], share = n / (size_t)parts + (n % (size_t)parts > (size_t)(part - 1)), done = 0;
    FILE *fn = open_tmp(out, &t_npy), *fpaths = open_tmp(paths_out, &t_paths), *ffail = open_tmp(fail_out, &t_fail);
    write_all(fn, head, npy_header(head, "<f4", 0, (size_t)D), out);
    for (size_t i = (size_t)(part - 1); i < n;) {
        int count = 0;
        for (; count < BATCH && i < n; i += (size_t)parts, count++) {
            memset(&files[count], 0, sizeof files[count]);
            files[count].path = paths[i];
            fp[count] = &files[count];
            which[count] = i;
        }
        embed_batch(m, resize, fp, count, px, emb);
        for (int b = 0; b < count; b++) {
            if (files[b].reason) {
                warn("%s: %s", files[b].path, files[b].reason);
                fprintf(ffail, "%zu\t%s\t%s\n", line_no[which[b]], files[b].reason, files[b].path);
                free(files[b].reason);
                failed++;
                continue;
            }
            write_all(fn, emb + (size_t)b * D, (size_t)D * sizeof(float), out);
            fprintf(fpaths, "%s\n", files[b].path);
            rows++;
        }
        done += (size_t)count;
        progress(done, share, t0);
    }
    clear_progress();
    if (fseek(fn, 0, SEEK_SET) != 0) fail(1, "%s: write error", out);
    write_all(fn, head, npy_header(head, "<f4", rows, (size_t)D), out);   /* the row count, in place */
    finish_tmp(fpaths, t_paths, paths_out);
    finish_tmp(ffail, t_fail, fail_out);
    finish_tmp(fn, t_npy, out);
    printf("%s: %zu embedded, %zu failed%s; %.2f s\n", out, rows, failed, failed ? " (listed in the .failures.tsv beside it)" : "",
           now() - t0);
    for (size_t i = 0; i < n; i++) free(paths[i]);
    free(paths); free(line_no); free(paths_out); free(fail_out); free(px); free(emb);
    clip_free(m);
    return 0;
}
