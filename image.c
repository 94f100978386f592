/* image.c - decode PNG, binary PPM/PGM/PBM and BMP into 8-bit RGB exactly as
 * Pillow's Image.open(path).convert("RGB") does, and write RGB as PNG.
 *
 * JPEG lives in image_jpeg.c, the bicubic resizes and CLIPImageProcessor in
 * image_resize.c. Pillow is the reference throughout: which files it
 * accepts, which it refuses, and the exact pixels it produces, quirks
 * included (they are pointed out where they happen).
 *
 * The stages, in file order:
 *   helpers        errors, byte readers, the output image
 *   inflate        zlib/deflate as zlib's inflate() runs it for Pillow
 *   PNG            chunk walk (PngImagePlugin), rows (ZipDecode.c), convert("RGB")
 *   PPM            PpmImagePlugin: P4, P5, P6 (and the plain P1, P2, P3)
 *   BMP            BmpImagePlugin: 1/4/8-bit palettes, 16/24/32-bit, RLE4/RLE8
 *   decode/load    format detection by magic bytes
 *   PNG writer     clip_png_encode
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include "clip.h"

/* image_jpeg.c: baseline/progressive JPEG -> RGB after Pillow's convert("RGB") */
int jpeg_decode(const uint8_t *data, size_t size, clip_image *img, char *err);

/* ---------------------------------------------------------------------- */
/* Helpers                                                                 */
/* ---------------------------------------------------------------------- */

static int png_fail(char *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, CLIP_ERR_SIZE, fmt, ap);
        va_end(ap);
    }
    return code;
}

static uint32_t png_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint32_t png_le32(const uint8_t *p)
{
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

static unsigned png_le16(const uint8_t *p)
{
    return (unsigned)p[0] | ((unsigned)p[1] << 8);
}

/* Allocate the w x h RGB result, refusing empty and oversized images
 * before any pixel memory is touched (w * h <= CLIP_MAX_PIXELS also keeps
 * every later w * h * 8 below 2^32). */
static int png_new_image(clip_image *img, uint64_t w, uint64_t h, char *err)
{
    if (w == 0 || h == 0)
        return png_fail(err, CLIP_EINPUT, "image has zero width or height");
    if (w > (uint64_t)CLIP_MAX_PIXELS || h > (uint64_t)CLIP_MAX_PIXELS / w)
        return png_fail(err, CLIP_EINPUT,
                        "image is %llu x %llu pixels, more than the limit of %ld pixels",
                        (unsigned long long)w, (unsigned long long)h, (long)CLIP_MAX_PIXELS);
    img->rgb = calloc((size_t)w * (size_t)h, 3);
    if (!img->rgb) return png_fail(err, CLIP_ENOMEM, "out of memory for a %llu x %llu image",
                                   (unsigned long long)w, (unsigned long long)h);
    img->w = (int)w;
    img->h = (int)h;
    return CLIP_OK;
}

/* ---------------------------------------------------------------------- */
/* Inflate (RFC 1950 zlib + RFC 1951 deflate)                              */
/* ---------------------------------------------------------------------- */
/* Pillow hands PNG data to zlib's inflate() a feed block at a time and
 * stops as soon as the last row is complete, so whether a damaged stream is
 * refused depends on how far zlib got. This inflater reproduces that: it is
 * resumable, reads only up to `limit` (the end of the current feed block),
 * writes at most dst_cap bytes, and after filling the output keeps going
 * through steps that need no output (end of block, next block header,
 * Adler-32 check) exactly as inflate() does before it returns. */

enum { INFLATE_FULL = 0, INFLATE_MORE = 1, INFLATE_END = 2, INFLATE_ERROR = -1 };
enum { INFLATE_HEADER, INFLATE_BLOCK, INFLATE_STORED, INFLATE_CODES, INFLATE_MATCH,
       INFLATE_CHECK, INFLATE_DONE };

#define INFLATE_FAST_BITS 9

typedef struct {
    uint16_t fast[1 << INFLATE_FAST_BITS]; /* sym | len << 9 for codes up to 9 bits */
    uint16_t count[16];                    /* codes of each length */
    uint16_t symbol[288];                  /* symbols in canonical order */
    int empty;                             /* no codes at all */
} inflate_huff;

typedef struct {
    const uint8_t *in;
    size_t size, limit;      /* bytes in `in`; bytes visible now */
    size_t pos;              /* next byte */
    unsigned bit;            /* bits of in[pos] already used */
    int state, last;
    uint32_t stored_left;
    unsigned match_len, match_dist;
    inflate_huff lit, dist;
    uint8_t win[32768];      /* the last 32 KiB of output */
    size_t total;            /* bytes output so far */
    uint32_t adler_a, adler_b;
    unsigned adler_n;
    uint8_t *dst;            /* where output goes (NULL: only counted) */
    size_t dst_pos, dst_cap;
    const char *msg;
} inflate_state;

static const uint16_t inflate_len_base[29] = {
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
    35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t inflate_len_extra[29] = {
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
static const uint16_t inflate_dist_base[30] = {
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769,
    1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
static const uint8_t inflate_dist_extra[30] = {
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11,
    12, 12, 13, 13};
static const uint8_t inflate_clen_order[19] = {
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

static void inflate_init(inflate_state *z, const uint8_t *in, size_t size, size_t limit)
{
    memset(z, 0, sizeof *z);
    z->in = in;
    z->size = size;
    z->limit = limit;
    z->state = INFLATE_HEADER;
    z->adler_a = 1;
}

/* Bits visible from the current position (capped: callers ask for <= 32). */
static unsigned inflate_avail(const inflate_state *z)
{
    size_t bytes = z->limit - z->pos;
    if (bytes >= 8) return 64;
    return (unsigned)bytes * 8 - z->bit;
}

/* The next 24+ bits, least significant first; zeros past the input. */
static uint32_t inflate_peek(const inflate_state *z)
{
    const uint8_t *p = z->in + z->pos;
    uint32_t v = 0;
    size_t i;
    if (z->size - z->pos >= 4)
        return ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24) >> z->bit;
    for (i = 0; i < 4 && z->pos + i < z->size; i++) v |= (uint32_t)p[i] << (8 * i);
    return v >> z->bit;
}

static void inflate_drop(inflate_state *z, unsigned n)
{
    n += z->bit;
    z->pos += n >> 3;
    z->bit = n & 7;
}

static uint32_t inflate_take(inflate_state *z, unsigned n)
{
    uint32_t v = inflate_peek(z) & ((1u << n) - 1);
    inflate_drop(z, n);
    return v;
}

/* Build a canonical Huffman decoder, accepting exactly what zlib's
 * inflate_table() accepts: no over-subscribed set, no incomplete set except
 * a single one-bit code for literals/lengths and distances, and an empty
 * set (which then fails when used). */
static int inflate_build(inflate_huff *h, const uint8_t *lens, int n, int is_clen)
{
    uint16_t offs[16];
    int len, sym, left = 1, maxlen = 0;

    memset(h, 0, sizeof *h);
    for (sym = 0; sym < n; sym++) h->count[lens[sym]]++;
    h->count[0] = 0;
    for (len = 1; len <= 15; len++)
        if (h->count[len]) maxlen = len;
    if (maxlen == 0) {
        h->empty = 1;
        return 0;
    }
    for (len = 1; len <= 15; len++) {
        left <<= 1;
        left -= h->count[len];
        if (left < 0) return -1;
    }
    if (left > 0 && (is_clen || maxlen != 1)) return -1;

    offs[1] = 0;
    for (len = 1; len < 15; len++) offs[len + 1] = (uint16_t)(offs[len] + h->count[len]);
    for (sym = 0; sym < n; sym++)
        if (lens[sym]) h->symbol[offs[lens[sym]]++] = (uint16_t)sym;

    /* fast table: codes are sent most significant bit first, so reverse them */
    for (len = 1; len <= INFLATE_FAST_BITS; len++) {
        int i, first = 0, idx = 0;
        for (i = 1; i < len; i++) {
            first = (first + h->count[i]) << 1;
            idx += h->count[i];
        }
        for (i = 0; i < h->count[len]; i++) {
            unsigned c = (unsigned)(first + i), rev = 0;
            int b;
            for (b = 0; b < len; b++) rev |= ((c >> b) & 1u) << (len - 1 - b);
            for (; rev < (1u << INFLATE_FAST_BITS); rev += 1u << len)
                h->fast[rev] = (uint16_t)(h->symbol[idx + i] | (len << 9));
        }
    }
    return 0;
}

/* Decode one symbol: 0 ok, INFLATE_MORE when its bits are not all visible
 * yet (nothing consumed), -1 for a bit pattern that is no code. */
static int inflate_decode(inflate_state *z, const inflate_huff *h, int *sym)
{
    unsigned avail = inflate_avail(z);
    uint32_t bits;
    unsigned e;
    int len, code = 0, first = 0, index = 0;

    if (avail == 0) return INFLATE_MORE;
    if (h->empty) return -1;
    bits = inflate_peek(z);
    e = h->fast[bits & ((1u << INFLATE_FAST_BITS) - 1)];
    if (e) {
        if ((e >> 9) > avail) return INFLATE_MORE;
        inflate_drop(z, e >> 9);
        *sym = (int)(e & 511);
        return 0;
    }
    for (len = 1; len <= 15; len++) {
        int count = h->count[len];
        code |= (int)((bits >> (len - 1)) & 1u);
        if (code - count < first) {
            if ((unsigned)len > avail) return INFLATE_MORE;
            inflate_drop(z, (unsigned)len);
            *sym = h->symbol[index + (code - first)];
            return 0;
        }
        index += count;
        first += count;
        first <<= 1;
        code <<= 1;
    }
    return -1;
}

static void inflate_fixed(inflate_state *z)
{
    uint8_t lens[288];
    int i;
    for (i = 0; i < 144; i++) lens[i] = 8;
    for (; i < 256; i++) lens[i] = 9;
    for (; i < 280; i++) lens[i] = 7;
    for (; i < 288; i++) lens[i] = 8;
    inflate_build(&z->lit, lens, 288, 0);
    for (i = 0; i < 32; i++) lens[i] = 5;
    inflate_build(&z->dist, lens, 32, 0);
}

/* Dynamic block header (RFC 1951 3.2.7): 0 ok, INFLATE_MORE (re-read later
 * from the block start), INFLATE_ERROR with z->msg set. */
static int inflate_dynamic(inflate_state *z)
{
    uint8_t lens[320];
    inflate_huff clen;
    int nlen, ndist, ncode, n, i, sym;

    if (inflate_avail(z) < 14) return INFLATE_MORE;
    nlen = (int)inflate_take(z, 5) + 257;
    ndist = (int)inflate_take(z, 5) + 1;
    ncode = (int)inflate_take(z, 4) + 4;
    if (nlen > 286 || ndist > 30) {
        z->msg = "too many length or distance symbols";
        return INFLATE_ERROR;
    }
    if (inflate_avail(z) < (unsigned)ncode * 3) return INFLATE_MORE;
    memset(lens, 0, sizeof lens);
    for (i = 0; i < ncode; i++) lens[inflate_clen_order[i]] = (uint8_t)inflate_take(z, 3);
    if (inflate_build(&clen, lens, 19, 1)) {
        z->msg = "invalid code lengths set";
        return INFLATE_ERROR;
    }
    memset(lens, 0, sizeof lens);
    n = 0;
    while (n < nlen + ndist) {
        if (clen.empty) {
            /* zlib reads each length as a one-bit "0" from an empty table */
            if (inflate_avail(z) < 1) return INFLATE_MORE;
            inflate_drop(z, 1);
            lens[n++] = 0;
            continue;
        }
        {
            size_t pos = z->pos;
            unsigned bit = z->bit;
            int r = inflate_decode(z, &clen, &sym), copy, extra, base;
            uint8_t val = 0;
            if (r) return INFLATE_MORE; /* a complete code set has no invalid codes */
            if (sym < 16) {
                lens[n++] = (uint8_t)sym;
                continue;
            }
            extra = sym == 16 ? 2 : sym == 17 ? 3 : 7;
            base = sym == 18 ? 11 : 3;
            if (inflate_avail(z) < (unsigned)extra) {
                z->pos = pos;
                z->bit = bit;
                return INFLATE_MORE;
            }
            copy = base + (int)inflate_take(z, (unsigned)extra);
            if (sym == 16) {
                if (n == 0) {
                    z->msg = "invalid bit length repeat";
                    return INFLATE_ERROR;
                }
                val = lens[n - 1];
            }
            if (n + copy > nlen + ndist) {
                z->msg = "invalid bit length repeat";
                return INFLATE_ERROR;
            }
            while (copy--) lens[n++] = val;
        }
    }
    if (lens[256] == 0) {
        z->msg = "invalid code -- missing end-of-block";
        return INFLATE_ERROR;
    }
    if (inflate_build(&z->lit, lens, nlen, 0)) {
        z->msg = "invalid literal/lengths set";
        return INFLATE_ERROR;
    }
    if (inflate_build(&z->dist, lens + nlen, ndist, 0)) {
        z->msg = "invalid distances set";
        return INFLATE_ERROR;
    }
    return 0;
}

static void inflate_put(inflate_state *z, uint8_t b)
{
    z->win[z->total & 32767] = b;
    z->total++;
    if (z->dst) z->dst[z->dst_pos] = b;
    z->dst_pos++;
    z->adler_a += b;
    z->adler_b += z->adler_a;
    if (++z->adler_n == 5552) {
        z->adler_a %= 65521;
        z->adler_b %= 65521;
        z->adler_n = 0;
    }
}

/* Run until the output is full and more output is needed (INFLATE_FULL),
 * the visible input is used up (INFLATE_MORE), the stream ended with a good
 * Adler-32 (INFLATE_END), or the data is broken (INFLATE_ERROR, z->msg). */
static int inflate_run(inflate_state *z)
{
    for (;;) {
        switch (z->state) {
        case INFLATE_HEADER: {
            unsigned cmf, flg;
            if (z->limit - z->pos < 2) return INFLATE_MORE;
            cmf = z->in[z->pos];
            flg = z->in[z->pos + 1];
            if ((cmf * 256 + flg) % 31) { z->msg = "incorrect header check"; return INFLATE_ERROR; }
            if ((cmf & 15) != 8) { z->msg = "unknown compression method"; return INFLATE_ERROR; }
            if ((cmf >> 4) + 8 > 15) { z->msg = "invalid window size"; return INFLATE_ERROR; }
            if (flg & 32) { z->msg = "needs a preset dictionary"; return INFLATE_ERROR; }
            z->pos += 2;
            z->state = INFLATE_BLOCK;
            break;
        }
        case INFLATE_BLOCK: {
            size_t pos = z->pos;
            unsigned bit = z->bit, type;
            if (inflate_avail(z) < 3) return INFLATE_MORE;
            z->last = (int)inflate_take(z, 1);
            type = inflate_take(z, 2);
            if (type == 0) {
                uint32_t len, nlen;
                if (z->bit) inflate_drop(z, 8 - z->bit);
                if (z->limit - z->pos < 4) {
                    z->pos = pos;
                    z->bit = bit;
                    return INFLATE_MORE;
                }
                len = png_le16(z->in + z->pos);
                nlen = png_le16(z->in + z->pos + 2);
                if (len != (~nlen & 0xffffu)) { z->msg = "invalid stored block lengths"; return INFLATE_ERROR; }
                z->pos += 4;
                z->stored_left = len;
                z->state = INFLATE_STORED;
            } else if (type == 1) {
                inflate_fixed(z);
                z->state = INFLATE_CODES;
            } else if (type == 2) {
                int r = inflate_dynamic(z);
                if (r == INFLATE_ERROR) return r;
                if (r == INFLATE_MORE) {
                    z->pos = pos;
                    z->bit = bit;
                    return INFLATE_MORE;
                }
                z->state = INFLATE_CODES;
            } else {
                z->msg = "invalid block type";
                return INFLATE_ERROR;
            }
            break;
        }
        case INFLATE_STORED:
            while (z->stored_left) {
                size_t n = z->stored_left;
                if (z->dst_pos == z->dst_cap) return INFLATE_FULL;
                if (z->pos == z->limit) return INFLATE_MORE;
                if (n > z->limit - z->pos) n = z->limit - z->pos;
                if (n > z->dst_cap - z->dst_pos) n = z->dst_cap - z->dst_pos;
                z->stored_left -= (uint32_t)n;
                while (n--) inflate_put(z, z->in[z->pos++]);
            }
            z->state = z->last ? INFLATE_CHECK : INFLATE_BLOCK;
            break;
        case INFLATE_CODES:
            for (;;) {
                size_t pos = z->pos;
                unsigned bit = z->bit, len, dist;
                int sym, r = inflate_decode(z, &z->lit, &sym);
                if (r == INFLATE_MORE) return INFLATE_MORE;
                if (r || sym > 285) { z->msg = "invalid literal/length code"; return INFLATE_ERROR; }
                if (sym < 256) {
                    if (z->dst_pos == z->dst_cap) {
                        z->pos = pos;
                        z->bit = bit;
                        return INFLATE_FULL;
                    }
                    inflate_put(z, (uint8_t)sym);
                    continue;
                }
                if (sym == 256) {
                    z->state = z->last ? INFLATE_CHECK : INFLATE_BLOCK;
                    break;
                }
                sym -= 257;
                if (inflate_avail(z) < inflate_len_extra[sym]) goto more;
                len = inflate_len_base[sym] + inflate_take(z, inflate_len_extra[sym]);
                r = inflate_decode(z, &z->dist, &sym);
                if (r == INFLATE_MORE) goto more;
                if (r || sym > 29) { z->msg = "invalid distance code"; return INFLATE_ERROR; }
                if (inflate_avail(z) < inflate_dist_extra[sym]) goto more;
                dist = inflate_dist_base[sym] + inflate_take(z, inflate_dist_extra[sym]);
                if (z->dst_pos == z->dst_cap) {
                    z->pos = pos;
                    z->bit = bit;
                    return INFLATE_FULL;
                }
                if (dist > z->total) { z->msg = "invalid distance too far back"; return INFLATE_ERROR; }
                z->match_len = len;
                z->match_dist = dist;
                z->state = INFLATE_MATCH;
                break;
            more:
                z->pos = pos;
                z->bit = bit;
                return INFLATE_MORE;
            }
            break;
        case INFLATE_MATCH:
            while (z->match_len) {
                if (z->dst_pos == z->dst_cap) return INFLATE_FULL;
                inflate_put(z, z->win[(z->total - z->match_dist) & 32767]);
                z->match_len--;
            }
            z->state = INFLATE_CODES;
            break;
        case INFLATE_CHECK: {
            uint32_t want;
            if (z->bit) inflate_drop(z, 8 - z->bit);
            if (z->limit - z->pos < 4) return INFLATE_MORE;
            want = png_be32(z->in + z->pos);
            if (want != (((z->adler_b % 65521) << 16) | (z->adler_a % 65521))) {
                z->msg = "incorrect data check";
                return INFLATE_ERROR;
            }
            z->pos += 4;
            z->state = INFLATE_DONE;
            return INFLATE_END;
        }
        default:
            return INFLATE_END;
        }
    }
}


/* ---------------------------------------------------------------------- */
/* PNG (Pillow's PngImagePlugin + ZipDecode.c, then convert("RGB"))        */
/* ---------------------------------------------------------------------- */

/* Pillow's modes for PNG (bit depth, colour type) pairs. */
enum { PNG_NONE, PNG_1, PNG_L, PNG_I, PNG_RGB, PNG_P, PNG_LA, PNG_RGBA };

#define PNG_MAX_TEXT_CHUNK 1048576u            /* ImageFile.SAFEBLOCK */
#define PNG_MAX_TEXT_MEMORY (64u * 1048576u)   /* MAX_TEXT_MEMORY */
#define PNG_FEED 65536u                        /* ImageFile.MAXBLOCK */

/* What PngStream remembers while it walks the chunks. */
typedef struct {
    int mode, depth, ctype;        /* Pillow mode and the IHDR pair behind it */
    uint32_t w, h;
    int interlace;
    const uint8_t *plte;           /* last PLTE seen while the mode was P */
    uint32_t plte_len;
    int has_plte;
    int has_seq;                   /* APNG sequence number (_seq_num) */
    uint32_t seq;
    int has_frames;                /* acTL frame count (im_n_frames) */
    uint32_t n_frames;
    int has_bbox;                  /* fcTL frame rectangle */
    uint64_t bx0, by0, bx1, by1;
    size_t text_memory;
} png_info;

/* One IDAT/DDAT/fdAT chunk's payload as Pillow's load_read sees it. */
typedef struct {
    size_t start, avail;     /* in the file */
    uint64_t end;            /* file offset just past the declared data */
    int has_seq;
    uint32_t seq;
} png_seg;

static int png_mode_of(int depth, int ctype)
{
    switch (ctype) {
    case 0:
        return depth == 1 ? PNG_1 : (depth == 2 || depth == 4 || depth == 8) ? PNG_L
             : depth == 16 ? PNG_I : PNG_NONE;
    case 2: return (depth == 8 || depth == 16) ? PNG_RGB : PNG_NONE;
    case 3: return (depth == 1 || depth == 2 || depth == 4 || depth == 8) ? PNG_P : PNG_NONE;
    case 4: return depth == 8 ? PNG_LA : depth == 16 ? PNG_RGBA : PNG_NONE;
    case 6: return (depth == 8 || depth == 16) ? PNG_RGBA : PNG_NONE;
    }
    return PNG_NONE;
}

static int png_channels(int ctype)
{
    return ctype == 2 ? 3 : ctype == 4 ? 2 : ctype == 6 ? 4 : 1;
}

/* Pillow's is_cid: four of [A-Za-z0-9_]. */
static int png_is_cid(const uint8_t *t)
{
    int i;
    for (i = 0; i < 4; i++) {
        int c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

static void png_crc_table(uint32_t *table)
{
    unsigned i, k;
    for (i = 0; i < 256; i++) {
        uint32_t v = i;
        for (k = 0; k < 8; k++) v = (v & 1) ? 0xedb88320u ^ (v >> 1) : v >> 1;
        table[i] = v;
    }
}

/* CRC-32 (ISO 3309) continuing from c; start with 0. */
static uint32_t png_crc(const uint32_t *table, uint32_t c, const uint8_t *d, size_t n)
{
    c ^= 0xffffffffu;
    while (n--) c = table[(c ^ *d++) & 255] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

/* Python's strict UTF-8 decoder, fed in pieces: counts characters. */
typedef struct {
    int need, bad;
    uint8_t lo, hi;
    size_t chars;
} png_utf8;

static void png_utf8_feed(png_utf8 *u, const uint8_t *s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (u->need) {
            if (c < u->lo || c > u->hi) u->bad = 1;
            u->lo = 0x80;
            u->hi = 0xbf;
            u->need--;
            continue;
        }
        u->chars++;
        u->lo = 0x80;
        u->hi = 0xbf;
        if (c < 0x80) continue;
        if (c >= 0xc2 && c <= 0xdf) u->need = 1;
        else if (c >= 0xe0 && c <= 0xef) {
            u->need = 2;
            if (c == 0xe0) u->lo = 0xa0;
            if (c == 0xed) u->hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            u->need = 3;
            if (c == 0xf0) u->lo = 0x90;
            if (c == 0xf4) u->hi = 0x8f;
        } else u->bad = 1;
    }
}

/* Pillow's _safe_zlib_decompress on a text or ICC payload: 0 with the
 * decompressed length (and UTF-8 check when u is given), 1 when zlib
 * reports an error, -1 when the output passes 1 MiB ("Decompressed Data
 * Too Large"). */
static int png_text_inflate(const uint8_t *d, size_t n, size_t *out_len, png_utf8 *u)
{
    inflate_state *z = malloc(sizeof *z);
    int r;
    if (!z) return -2;
    inflate_init(z, d, n, n);
    for (;;) {
        size_t before = z->total;
        z->dst_cap = z->dst_pos + 16384;
        if (z->dst_cap > PNG_MAX_TEXT_CHUNK) z->dst_cap = PNG_MAX_TEXT_CHUNK;
        r = inflate_run(z);
        if (u && z->total > before) {
            size_t a = before & 32767, m = z->total - before;
            if (a + m > 32768) {
                png_utf8_feed(u, z->win + a, 32768 - a);
                png_utf8_feed(u, z->win, m - (32768 - a));
            } else png_utf8_feed(u, z->win + a, m);
        }
        if (r == INFLATE_ERROR) { r = 1; break; }
        if (r == INFLATE_END || r == INFLATE_MORE) { r = 0; break; }
        if (z->dst_pos == PNG_MAX_TEXT_CHUNK) { r = -1; break; }
    }
    *out_len = z->total;
    free(z);
    return r;
}

static int png_text_count(png_info *p, size_t n, char *err)
{
    p->text_memory += n;
    if (p->text_memory > PNG_MAX_TEXT_MEMORY)
        return png_fail(err, CLIP_EINPUT, "PNG text chunks use more than 64 MiB");
    return CLIP_OK;
}

static const uint8_t *png_nul(const uint8_t *s, size_t n)
{
    return n ? memchr(s, 0, n) : NULL;
}

/* One chunk as PngStream.chunk_XXXX handles it (IDAT, fdAT and IEND are
 * handled by the callers). Pillow refuses short or malformed ancillary
 * chunks too, so this is more than bookkeeping. */
static int png_chunk(png_info *p, const uint8_t *type, const uint8_t *s, uint32_t len, char *err)
{
    char name[5];
    memcpy(name, type, 4);
    name[4] = 0;

    if (!strcmp(name, "IHDR")) {
        int mode;
        if (len < 13) return png_fail(err, CLIP_EINPUT, "PNG IHDR chunk is truncated");
        p->w = png_be32(s);
        p->h = png_be32(s + 4);
        mode = png_mode_of(s[8], s[9]);
        if (mode != PNG_NONE) {
            p->mode = mode;
            p->depth = s[8];
            p->ctype = s[9];
        }
        if (s[12]) p->interlace = 1;
        if (s[11]) return png_fail(err, CLIP_EINPUT, "PNG has an unknown filter method %d", s[11]);
    } else if (!strcmp(name, "PLTE")) {
        if (p->mode == PNG_P) {
            p->plte = s;
            p->plte_len = len;
            p->has_plte = 1;
        }
    } else if (!strcmp(name, "tRNS")) {
        if ((p->mode == PNG_1 || p->mode == PNG_L || p->mode == PNG_I) && len < 2)
            return png_fail(err, CLIP_EINPUT, "PNG tRNS chunk is too short");
        if (p->mode == PNG_RGB && len < 6)
            return png_fail(err, CLIP_EINPUT, "PNG tRNS chunk is too short");
    } else if (!strcmp(name, "gAMA")) {
        if (len < 4) return png_fail(err, CLIP_EINPUT, "PNG gAMA chunk is too short");
    } else if (!strcmp(name, "cHRM")) {
        if (len % 4) return png_fail(err, CLIP_EINPUT, "PNG cHRM chunk length is not a multiple of 4");
    } else if (!strcmp(name, "sRGB")) {
        if (len < 1) return png_fail(err, CLIP_EINPUT, "PNG sRGB chunk is truncated");
    } else if (!strcmp(name, "pHYs")) {
        if (len < 9) return png_fail(err, CLIP_EINPUT, "PNG pHYs chunk is truncated");
    } else if (!strcmp(name, "tEXt")) {
        const uint8_t *z = png_nul(s, len);
        if (z && z > s) return png_text_count(p, len - (size_t)(z - s) - 1, err);
    } else if (!strcmp(name, "zTXt") || !strcmp(name, "iCCP")) {
        const uint8_t *z = png_nul(s, len);
        size_t klen = z ? (size_t)(z - s) : len, vlen = z ? len - klen - 1 : 0, n = 0;
        int r;
        if (name[0] == 'i') {
            /* chunk_iCCP reads the method from s[s.find(b"\0")] */
            if (len == 0) return png_fail(err, CLIP_EINPUT, "PNG iCCP chunk is empty");
            if (!z) return png_fail(err, CLIP_EINPUT, "PNG iCCP chunk has an unknown compression method");
        } else if (vlen && z[1] != 0)
            return png_fail(err, CLIP_EINPUT, "PNG zTXt chunk has an unknown compression method");
        r = vlen > 1 ? png_text_inflate(z + 2, vlen - 1, &n, NULL) : 0;
        if (r == -2) return png_fail(err, CLIP_ENOMEM, "out of memory");
        if (r == -1) return png_fail(err, CLIP_EINPUT, "PNG %s chunk decompresses to more than 1 MiB", name);
        if (name[0] == 'z' && klen) return png_text_count(p, r ? 0 : n, err);
    } else if (!strcmp(name, "iTXt")) {
        const uint8_t *z = png_nul(s, len), *lang, *tk, *v, *e = s + len;
        png_utf8 u;
        size_t n = 0;
        int cf, cm, r;
        if (!z || e - (z + 1) < 2) return CLIP_OK;
        cf = z[1];
        cm = z[2];
        lang = z + 3;
        tk = png_nul(lang, (size_t)(e - lang));
        if (!tk) return CLIP_OK;
        tk++;
        v = png_nul(tk, (size_t)(e - tk));
        if (!v) return CLIP_OK;
        v++;
        memset(&u, 0, sizeof u);
        if (cf) {
            if (cm) return CLIP_OK;
            r = png_text_inflate(v, (size_t)(e - v), &n, &u);
            if (r == -2) return png_fail(err, CLIP_ENOMEM, "out of memory");
            if (r == -1) return png_fail(err, CLIP_EINPUT, "PNG iTXt chunk decompresses to more than 1 MiB");
            if (r) return CLIP_OK;
        } else png_utf8_feed(&u, v, (size_t)(e - v));
        if (u.bad || u.need) return CLIP_OK;
        n = u.chars;
        memset(&u, 0, sizeof u);
        png_utf8_feed(&u, lang, (size_t)(tk - 1 - lang));
        png_utf8_feed(&u, tk, (size_t)(v - 1 - tk));
        if (u.bad || u.need) return CLIP_OK;
        return png_text_count(p, n, err);
    } else if (!strcmp(name, "acTL")) {
        uint32_t n;
        if (len < 8) return png_fail(err, CLIP_EINPUT, "PNG acTL chunk is truncated");
        n = png_be32(s);
        if (p->has_frames) p->has_frames = 0;
        else if (n != 0 && n <= 0x80000000u) {
            p->has_frames = 1;
            p->n_frames = n;
        }
    } else if (!strcmp(name, "fcTL")) {
        uint32_t seq;
        uint64_t fw, fh, fx, fy;
        if (len < 26) return png_fail(err, CLIP_EINPUT, "PNG fcTL chunk is truncated");
        seq = png_be32(s);
        if ((!p->has_seq && seq != 0) || (p->has_seq && (int64_t)p->seq != (int64_t)seq - 1))
            return png_fail(err, CLIP_EINPUT, "APNG contains frame sequence errors");
        p->has_seq = 1;
        p->seq = seq;
        fw = png_be32(s + 4);
        fh = png_be32(s + 8);
        fx = png_be32(s + 12);
        fy = png_be32(s + 16);
        if (fx + fw > p->w || fy + fh > p->h)
            return png_fail(err, CLIP_EINPUT, "APNG contains invalid frames");
        p->has_bbox = 1;
        p->bx0 = fx;
        p->by0 = fy;
        p->bx1 = fx + fw;
        p->by1 = fy + fh;
    }
    return CLIP_OK;
}

/* PNG filters (ZipDecode.c's predictor): undo filter row[0] in place using
 * the previous unfiltered row; bpp is bytes per complete pixel (>= 1). */
static int png_unfilter(uint8_t *row, const uint8_t *prev, size_t n, size_t bpp)
{
    size_t i;
    switch (row[0]) {
    case 0:
        break;
    case 1:
        for (i = bpp + 1; i <= n; i++) row[i] = (uint8_t)(row[i] + row[i - bpp]);
        break;
    case 2:
        for (i = 1; i <= n; i++) row[i] = (uint8_t)(row[i] + prev[i]);
        break;
    case 3:
        for (i = 1; i <= n && i <= bpp; i++) row[i] = (uint8_t)(row[i] + prev[i] / 2);
        for (; i <= n; i++) row[i] = (uint8_t)(row[i] + (row[i - bpp] + prev[i]) / 2);
        break;
    case 4:
        for (i = 1; i <= n && i <= bpp; i++) row[i] = (uint8_t)(row[i] + prev[i]);
        for (; i <= n; i++) {
            int a = row[i - bpp], b = prev[i], c = prev[i - bpp];
            int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
            row[i] = (uint8_t)(row[i] + ((pa <= pb && pa <= pc) ? a : (pb <= pc) ? b : c));
        }
        break;
    default:
        return -1;
    }
    return 0;
}

/* Unpack n pixels of an unfiltered row (without its filter byte) to RGB
 * as Pillow's unpacker and convert("RGB") do: 1-bit -> 0/255, 2/4-bit grey
 * scaled by 85/17, 16-bit grey (mode I) clipped at 255, 16-bit colour ->
 * high byte, alpha dropped, palette (and L/LA given a palette) looked up.
 * step is the distance between output pixels in bytes. */
static void png_put_row(const png_info *p, const uint8_t *row, size_t n, uint8_t *out,
                        size_t step, const uint8_t *pal)
{
    size_t x;
    int d = p->depth;
    for (x = 0; x < n; x++, out += step) {
        unsigned v, r, g, b;
        if (d < 8) {
            size_t bit = x * (size_t)d;
            v = (unsigned)(row[bit >> 3] >> (8 - d - (int)(bit & 7))) & ((1u << d) - 1);
        } else v = 0;
        switch (p->ctype) {
        case 0:
            if (d == 16) {
                v = ((unsigned)row[2 * x] << 8) | row[2 * x + 1];
                r = v > 255 ? 255 : v;
            } else if (d == 8) r = row[x];
            else r = d == 1 ? v * 255 : d == 2 ? v * 85 : v * 17;
            if (pal) {
                out[0] = pal[3 * r];
                out[1] = pal[3 * r + 1];
                out[2] = pal[3 * r + 2];
                continue;
            }
            g = b = r;
            break;
        case 2:
            if (d == 16) { r = row[6 * x]; g = row[6 * x + 2]; b = row[6 * x + 4]; }
            else { r = row[3 * x]; g = row[3 * x + 1]; b = row[3 * x + 2]; }
            break;
        case 3:
            if (d == 8) v = row[x];
            r = pal[3 * v];
            g = pal[3 * v + 1];
            b = pal[3 * v + 2];
            break;
        case 4:
            r = d == 16 ? row[4 * x] : row[2 * x];
            if (pal && d == 8) {
                out[0] = pal[3 * r];
                out[1] = pal[3 * r + 1];
                out[2] = pal[3 * r + 2];
                continue;
            }
            g = b = r;
            break;
        default:
            if (d == 16) { r = row[8 * x]; g = row[8 * x + 2]; b = row[8 * x + 4]; }
            else { r = row[4 * x]; g = row[4 * x + 1]; b = row[4 * x + 2]; }
            break;
        }
        out[0] = (uint8_t)r;
        out[1] = (uint8_t)g;
        out[2] = (uint8_t)b;
    }
}

/* The image data chunks, as load_read walks them: after the first, IDAT,
 * DDAT or fdAT (with the next sequence number) continue the stream and
 * anything else ends it. Moves s to the next chunk; 0 at the end. */
static int png_seg_next(const uint8_t *data, size_t size, png_seg *s)
{
    uint64_t q = s->end + 4, decl;
    uint32_t len;
    const uint8_t *type;
    if (s->avail < s->end - s->start || q + 8 > size) return 0;
    len = png_be32(data + q);
    type = data + q + 4;
    if (!png_is_cid(type)) return 0;
    if (!memcmp(type, "fdAT", 4)) {
        uint32_t seq;
        if (len < 4 || q + 12 > size) return 0;
        seq = png_be32(data + q + 8);
        if (!s->has_seq || (int64_t)s->seq != (int64_t)seq - 1) return 0;
        s->seq = seq;
        s->start = (size_t)q + 12;
        decl = len - 4;
    } else if (!memcmp(type, "IDAT", 4) || !memcmp(type, "DDAT", 4)) {
        s->start = (size_t)q + 8;
        decl = len;
    } else return 0;
    s->end = s->start + decl;
    s->avail = size - s->start < decl ? size - s->start : (size_t)decl;
    return 1;
}

/* After the last row: Pillow's load_end reads the remaining chunks up to
 * IEND without checking CRCs, but still refuses truncated chunks and
 * malformed ones that its handlers reject. */
static int png_load_end(png_info *p, const uint8_t *data, size_t size, uint64_t q, int animated, char *err)
{
    for (;;) {
        uint32_t len;
        const uint8_t *type;
        int r;
        if (q > size || size - q < 8) return CLIP_OK;
        len = png_be32(data + q);
        type = data + q + 4;
        if (!png_is_cid(type) || !memcmp(type, "IEND", 4)) return CLIP_OK;
        if (animated && !memcmp(type, "fcTL", 4)) return CLIP_OK;
        q += 8;
        if (!memcmp(type, "fdAT", 4)) {
            uint32_t s;
            if (len < 4) return png_fail(err, CLIP_EINPUT, "APNG contains truncated fdAT chunk");
            if (size - q < 4) return png_fail(err, CLIP_EINPUT, "PNG file is truncated");
            s = png_be32(data + q);
            if (!p->has_seq || (int64_t)p->seq != (int64_t)s - 1)
                return png_fail(err, CLIP_EINPUT, "APNG contains frame sequence errors");
            p->seq = s;
        }
        if (len > size - q) return png_fail(err, CLIP_EINPUT, "PNG file is truncated (chunk after the image data)");
        if (memcmp(type, "IDAT", 4) && memcmp(type, "fdAT", 4)) {
            r = png_chunk(p, type, data + q, len, err);
            if (r) return r;
        }
        q += (uint64_t)len + 4;
    }
}

static int png_decode(const uint8_t *data, size_t size, clip_image *img, char *err)
{
    png_info p;
    png_seg first, seg;
    size_t pos = 8, start = 0, nblk = 0, i, total = 0, *blk_end = NULL, *blk_seg = NULL;
    uint64_t decl = 0, tx0, ty0, tw, th, animated_frames;
    uint8_t *zbuf = NULL, *cur = NULL, *prev = NULL, pal[768];
    uint32_t crc_table[256];
    const uint8_t *palp = NULL;
    inflate_state *z = NULL;
    int bits, pass = 0, rc = CLIP_OK, animated, default_image = 0;
    size_t row_len, bpp, cur_blk = 0;
    uint64_t y;
    static const int start_row[7] = {0, 0, 4, 0, 2, 0, 1}, start_col[7] = {0, 4, 0, 2, 0, 1, 0};
    static const int row_inc[7] = {8, 8, 8, 4, 4, 2, 2}, col_inc[7] = {8, 8, 4, 4, 2, 2, 1};

    memset(&p, 0, sizeof p);
    png_crc_table(crc_table);
    img->w = img->h = 0;
    img->rgb = NULL;

    /* PngImageFile._open: chunks up to the first IDAT (or fdAT), each
     * complete and with a good CRC */
    for (;;) {
        uint32_t len;
        const uint8_t *type;
        if (size - pos < 8) return png_fail(err, CLIP_EINPUT, "PNG file is truncated before the image data");
        len = png_be32(data + pos);
        type = data + pos + 4;
        if (!png_is_cid(type)) return png_fail(err, CLIP_EINPUT, "broken PNG file (bad chunk type at byte %lu)", (unsigned long)pos + 4);
        pos += 8;
        if (!memcmp(type, "IDAT", 4)) {
            start = pos;
            decl = len;
            break;
        }
        if (!memcmp(type, "IEND", 4)) return png_fail(err, CLIP_EINPUT, "PNG file has no image data");
        if (!memcmp(type, "fdAT", 4)) {
            uint32_t s;
            if (len < 4) return png_fail(err, CLIP_EINPUT, "APNG contains truncated fdAT chunk");
            if (size - pos < 4) return png_fail(err, CLIP_EINPUT, "PNG file is truncated");
            s = png_be32(data + pos);
            if (!p.has_seq || (int64_t)p.seq != (int64_t)s - 1)
                return png_fail(err, CLIP_EINPUT, "APNG contains frame sequence errors");
            p.seq = s;
            start = pos + 4;
            decl = len - 4;
            break;
        }
        if (len > size - pos) return png_fail(err, CLIP_EINPUT, "PNG file is truncated (chunk %.4s)", (const char *)type);
        rc = png_chunk(&p, type, data + pos, len, err);
        if (rc) return rc;
        if (size - pos - len < 4) return png_fail(err, CLIP_EINPUT, "PNG file is truncated (CRC of chunk %.4s)", (const char *)type);
        if (png_crc(crc_table, png_crc(crc_table, 0, type, 4), data + pos, len) != png_be32(data + pos + len))
            return png_fail(err, CLIP_EINPUT, "broken PNG file (bad CRC in chunk %.4s)", (const char *)type);
        pos += (size_t)len + 4;
    }

    /* chunk_IDAT: the tile is the fcTL rectangle when there was one */
    if (p.has_bbox) {
        tx0 = p.bx0;
        ty0 = p.by0;
        tw = p.bx1 - p.bx0;
        th = p.by1 - p.by0;
    } else {
        if (p.has_frames) default_image = 1;
        tx0 = ty0 = 0;
        tw = p.w;
        th = p.h;
    }
    if (p.mode == PNG_NONE || p.w == 0 || p.h == 0)
        return png_fail(err, CLIP_EINPUT, "PNG file has no valid IHDR chunk");
    animated_frames = (p.has_frames ? p.n_frames : 1) + (uint64_t)default_image;
    animated = animated_frames > 1;

    /* Image.load -> putpalette: more than 256 entries is refused; a palette
     * read while the mode was P also applies to L and LA images */
    for (i = 0; i < 256; i++) pal[3 * i] = pal[3 * i + 1] = pal[3 * i + 2] = (uint8_t)i;
    if (p.has_plte) {
        if (p.plte_len / 3 > 256) return png_fail(err, CLIP_EINPUT, "PNG palette has more than 256 entries");
        if (p.mode != PNG_P && p.mode != PNG_L && p.mode != PNG_LA)
            return png_fail(err, CLIP_EINPUT, "PNG has a palette for a non-palette image mode");
        memcpy(pal, p.plte, (p.plte_len / 3) * 3);
        palp = pal;
    } else if (p.mode == PNG_P) palp = pal;

    /* decoder.setimage: the tile must lie inside the image */
    if (tw == 0 || th == 0 || tx0 + tw > p.w || ty0 + th > p.h)
        return png_fail(err, CLIP_EINPUT, "PNG frame does not fit the image");
    bits = p.depth * png_channels(p.ctype);
    if (tw > (uint64_t)(2147483647 / bits - 7))
        return png_fail(err, CLIP_EINPUT, "PNG rows are too long");

    rc = png_new_image(img, p.w, p.h, err);
    if (rc) return rc;
    if (palp && (pal[0] | pal[1] | pal[2]))
        for (i = 0; i < (size_t)img->w * (size_t)img->h; i++) memcpy(img->rgb + 3 * i, pal, 3);

    /* load_read: the data chunks, fed to zlib in blocks of 64 KiB */
    first.start = start;
    first.end = (uint64_t)start + decl;
    first.avail = size - start < decl ? size - start : (size_t)decl;
    first.has_seq = p.has_seq;
    first.seq = p.seq;
    seg = first;
    do {
        total += seg.avail;
        nblk += (seg.avail + PNG_FEED - 1) / PNG_FEED;
    } while (png_seg_next(data, size, &seg));
    zbuf = malloc(total ? total : 1);
    blk_end = malloc((nblk ? nblk : 1) * sizeof *blk_end);
    blk_seg = malloc((nblk ? nblk : 1) * sizeof *blk_seg);
    row_len = (size_t)((tw * (uint64_t)bits + 7) / 8);
    cur = calloc(row_len + 1, 1);
    prev = calloc(row_len + 1, 1);
    z = malloc(sizeof *z);
    if (!zbuf || !blk_end || !blk_seg || !cur || !prev || !z) goto nomem;
    total = nblk = 0;
    seg = first;
    i = 0;
    do {
        size_t off;
        memcpy(zbuf + total, data + seg.start, seg.avail);
        for (off = 0; off < seg.avail; off += PNG_FEED) {
            size_t n = seg.avail - off < PNG_FEED ? seg.avail - off : PNG_FEED;
            blk_end[nblk] = total + off + n;
            blk_seg[nblk++] = i;
        }
        total += seg.avail;
        i++;
    } while (png_seg_next(data, size, &seg));
    inflate_init(z, zbuf, total, nblk ? blk_end[0] : 0);

    /* ZipDecode: inflate a row at a time, undo its filter, store it; for
     * Adam7 walk the passes, skipping empty ones. The image is done when
     * the last row is, or when zlib reports the stream's end together with
     * a completed row (later rows then keep their initial value). */
    bpp = (size_t)(bits + 7) / 8;
    y = 0;
    if (p.interlace) row_len = (size_t)(((tw + 7) / 8 * (uint64_t)bits + 7) / 8);
    z->dst = cur;
    z->dst_cap = row_len + 1;
    for (;;) {
        int r = inflate_run(z);
        if (r == INFLATE_ERROR) {
            rc = png_fail(err, CLIP_EINPUT, "broken PNG image data (zlib: %s)", z->msg);
            goto done;
        }
        if (z->dst_pos == z->dst_cap) {
            uint8_t *t;
            if (png_unfilter(cur, prev, row_len, bpp)) {
                rc = png_fail(err, CLIP_EINPUT, "PNG row has an unknown filter type %d", cur[0]);
                goto done;
            }
            if (p.interlace) {
                size_t n = (size_t)((tw + (uint64_t)(col_inc[pass] - 1 - start_col[pass])) / (uint64_t)col_inc[pass]);
                png_put_row(&p, cur + 1, n, img->rgb + ((size_t)y * (size_t)img->w + (size_t)start_col[pass]) * 3,
                            (size_t)col_inc[pass] * 3, palp);
                y += (uint64_t)row_inc[pass];
                while (y >= th || row_len == 0) {
                    uint64_t np;
                    if (++pass == 7) break;
                    y = (uint64_t)start_row[pass];
                    np = (tw + (uint64_t)(col_inc[pass] - 1 - start_col[pass])) / (uint64_t)col_inc[pass];
                    row_len = (size_t)((np * (uint64_t)bits + 7) / 8);
                    memset(cur, 0, (size_t)((tw * (uint64_t)bits + 7) / 8) + 1);
                }
                if (pass == 7) break;
            } else {
                png_put_row(&p, cur + 1, (size_t)tw,
                            img->rgb + ((size_t)(ty0 + y) * (size_t)img->w + (size_t)tx0) * 3, 3, palp);
                if (++y == th) break;
            }
            if (r == INFLATE_END) break;
            t = cur;
            cur = prev;
            prev = t;
            z->dst = cur;
            z->dst_pos = 0;
            z->dst_cap = row_len + 1;
            if (r != INFLATE_MORE) continue;
        } else if (r == INFLATE_END) {
            rc = png_fail(err, CLIP_EINPUT, "PNG image data ends before the last row");
            goto done;
        }
        if (cur_blk + 1 >= nblk) {
            rc = png_fail(err, CLIP_EINPUT, "PNG file is truncated (image data ends early)");
            goto done;
        }
        z->limit = blk_end[++cur_blk];
    }

    /* load_end: the chunks after the one that held the last row */
    seg = first;
    for (i = 0; i < blk_seg[cur_blk]; i++) png_seg_next(data, size, &seg);
    p.has_seq = seg.has_seq;
    p.seq = seg.seq;
    rc = png_load_end(&p, data, size, seg.end + 4, animated, err);
    goto done;
nomem:
    rc = png_fail(err, CLIP_ENOMEM, "out of memory while decoding PNG");
done:
    free(zbuf);
    free(blk_end);
    free(blk_seg);
    free(cur);
    free(prev);
    free(z);
    if (rc) clip_image_free(img);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* PPM, PGM, PBM (Pillow's PpmImagePlugin)                                 */
/* ---------------------------------------------------------------------- */

static int ppm_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* PpmImageFile._read_token, then Python's int(): a header number. A '#'
 * skips to the end of the line even inside a number, whose two halves
 * then join up, as in Pillow. */
static int ppm_token(const uint8_t *d, size_t size, size_t *pos, long long *val, char *err)
{
    char tok[12];
    int n = 0, i = 0, digits = 0, neg = 0;
    long long v = 0;
    while (n <= 10) {
        int c;
        if (*pos >= size) break;
        c = d[(*pos)++];
        if (ppm_space(c)) {
            if (!n) continue;
            break;
        }
        if (c == '#') {
            while (*pos < size) {
                c = d[(*pos)++];
                if (c == '\r' || c == '\n') break;
            }
            continue;
        }
        tok[n++] = (char)c;
    }
    if (n == 0) return png_fail(err, CLIP_EINPUT, "PPM header ends early");
    if (n > 10) return png_fail(err, CLIP_EINPUT, "PPM header has a token longer than 10 characters");
    if (tok[0] == '+' || tok[0] == '-') neg = tok[i++] == '-';
    for (; i < n; i++) {
        if (tok[i] >= '0' && tok[i] <= '9') {
            v = v * 10 + (tok[i] - '0');
            digits++;
        } else if (tok[i] == '_' && digits && i + 1 < n && tok[i + 1] >= '0' && tok[i + 1] <= '9') {
            continue;
        } else break;
    }
    if (i < n || !digits) return png_fail(err, CLIP_EINPUT, "PPM header has a token that is not a number");
    *val = neg ? -v : v;
    return CLIP_OK;
}

static int ppm_decode(const uint8_t *d, size_t size, clip_image *img, char *err)
{
    char magic[7];
    size_t pos = 0, i, row_bytes;
    long long w, h, maxval = 1;
    int m = 0, rc, bands, in_bytes;
    uint64_t need;

    img->w = img->h = 0;
    img->rgb = NULL;
    /* _read_magic: up to 6 bytes, ended by white space */
    while (m < 6 && pos < size) {
        int c = d[pos++];
        if (ppm_space(c)) break;
        magic[m++] = (char)c;
    }
    magic[m] = 0;
    if (strcmp(magic, "P4") && strcmp(magic, "P5") && strcmp(magic, "P6")) {
        if (!strcmp(magic, "P1") || !strcmp(magic, "P2") || !strcmp(magic, "P3"))
            return png_fail(err, CLIP_EINPUT, "plain (ASCII) PNM files are not supported, only binary P4, P5 and P6");
        return png_fail(err, CLIP_EINPUT, "not a binary PPM/PGM/PBM file");
    }
    if ((rc = ppm_token(d, size, &pos, &w, err)) || (rc = ppm_token(d, size, &pos, &h, err))) return rc;
    if (magic[1] != '4') {
        if ((rc = ppm_token(d, size, &pos, &maxval, err))) return rc;
        if (maxval < 1 || maxval > 65535)
            return png_fail(err, CLIP_EINPUT, "PPM maxval must be greater than 0 and less than 65536");
    }
    if (w <= 0 || h <= 0) return png_fail(err, CLIP_EINPUT, "PPM image has a zero or negative size");
    rc = png_new_image(img, (uint64_t)w, (uint64_t)h, err);
    if (rc) return rc;

    bands = magic[1] == '6' ? 3 : 1;
    if (magic[1] == '4') {
        /* raw decoder, rawmode "1;I": one bit a pixel, rows padded to a byte, 1 is black */
        size_t x, y;
        row_bytes = ((size_t)w + 7) / 8;
        if ((uint64_t)row_bytes * (uint64_t)h > size - pos) goto truncated;
        for (y = 0; y < (size_t)h; y++)
            for (x = 0; x < (size_t)w; x++) {
                uint8_t v = (d[pos + y * row_bytes + x / 8] >> (7 - x % 8)) & 1 ? 0 : 255;
                memset(img->rgb + (y * (size_t)w + x) * 3, v, 3);
            }
        return CLIP_OK;
    }
    in_bytes = maxval < 256 ? 1 : 2;
    need = (uint64_t)w * (uint64_t)h * (uint64_t)bands * (uint64_t)in_bytes;
    if (need > size - pos) goto truncated;
    if (maxval == 255 || (maxval == 65535 && bands == 1)) {
        /* raw decoder: "L", "RGB", or "I;16B" (mode I, clipped at 255 by convert) */
        size_t n = (size_t)w * (size_t)h;
        const uint8_t *s = d + pos;
        for (i = 0; i < n; i++) {
            uint8_t *o = img->rgb + 3 * i;
            if (bands == 3) {
                o[0] = s[3 * i];
                o[1] = s[3 * i + 1];
                o[2] = s[3 * i + 2];
            } else if (in_bytes == 2) {
                unsigned v = ((unsigned)s[2 * i] << 8) | s[2 * i + 1];
                memset(o, v > 255 ? 255 : (int)v, 3);
            } else memset(o, s[i], 3);
        }
        return CLIP_OK;
    }
    {
        /* PpmDecoder: value = min(out_max, round(value / maxval * out_max)),
         * out_max 65535 for grey with maxval > 255 (mode I, then clipped
         * at 255), else 255; Python's round() is round-half-even */
        size_t n = (size_t)w * (size_t)h * (size_t)bands;
        const uint8_t *s = d + pos;
        double out_max = (bands == 1 && maxval > 255) ? 65535.0 : 255.0;
        for (i = 0; i < n; i++) {
            unsigned v = in_bytes == 1 ? s[i] : ((unsigned)s[2 * i] << 8) | s[2 * i + 1];
            double q = (double)v / (double)maxval;
            q = rint(q * out_max);
            if (q > out_max) q = out_max;
            if (q > 255.0) q = 255.0;
            if (bands == 3) img->rgb[i] = (uint8_t)q;
            else memset(img->rgb + 3 * i, (int)q, 3);
        }
        return CLIP_OK;
    }
truncated:
    clip_image_free(img);
    return png_fail(err, CLIP_EINPUT, "PPM file is truncated");
}

/* ---------------------------------------------------------------------- */
/* BMP (Pillow's BmpImagePlugin)                                           */
/* ---------------------------------------------------------------------- */

/* Pillow's raw modes for BMP pixels. */
enum { BMP_1, BMP_L, BMP_P1, BMP_P4, BMP_P8, BMP_BGR15, BMP_BGR16, BMP_BGR, BMP_BGRX,
       BMP_XBGR, BMP_RGBA };

/* One pixel of a raw row to RGB; v is a grey level or palette index for
 * the 1/4/8-bit modes. */
static void bmp_put(uint8_t *o, const uint8_t *row, size_t x, int raw, const uint8_t *pal)
{
    unsigned v;
    switch (raw) {
    case BMP_1:
        memset(o, (row[x / 8] >> (7 - x % 8)) & 1 ? 255 : 0, 3);
        return;
    case BMP_L:
        memset(o, row[x], 3);
        return;
    case BMP_P1: v = (row[x / 8] >> (7 - x % 8)) & 1; break;
    case BMP_P4: v = (row[x / 2] >> (x % 2 ? 0 : 4)) & 15; break;
    case BMP_P8: v = row[x]; break;
    case BMP_BGR15:
        v = png_le16(row + 2 * x);
        o[0] = (uint8_t)(((v >> 10) & 31) * 255 / 31);
        o[1] = (uint8_t)(((v >> 5) & 31) * 255 / 31);
        o[2] = (uint8_t)((v & 31) * 255 / 31);
        return;
    case BMP_BGR16:
        v = png_le16(row + 2 * x);
        o[0] = (uint8_t)(((v >> 11) & 31) * 255 / 31);
        o[1] = (uint8_t)(((v >> 5) & 63) * 255 / 63);
        o[2] = (uint8_t)((v & 31) * 255 / 31);
        return;
    case BMP_BGR:
        o[0] = row[3 * x + 2]; o[1] = row[3 * x + 1]; o[2] = row[3 * x];
        return;
    case BMP_BGRX:
        o[0] = row[4 * x + 2]; o[1] = row[4 * x + 1]; o[2] = row[4 * x];
        return;
    case BMP_XBGR:
        o[0] = row[4 * x + 3]; o[1] = row[4 * x + 2]; o[2] = row[4 * x + 1];
        return;
    default:
        o[0] = row[4 * x]; o[1] = row[4 * x + 1]; o[2] = row[4 * x + 2];
        return;
    }
    o[0] = pal[3 * v];
    o[1] = pal[3 * v + 1];
    o[2] = pal[3 * v + 2];
}

/* BmpRleDecoder (RLE8 and RLE4) with its quirks: runs are clipped at the
 * row end, an odd RLE4 absolute run loses its last pixel, a delta skips
 * two bytes before reading its offsets, and padding goes by file offset.
 * The first w * h values are the image rows, bottom-up unless top-down. */
static int bmp_rle(const uint8_t *d, size_t size, uint64_t off, int rle4, int top_down,
                   const uint8_t *pal, clip_image *img, char *err)
{
    uint64_t w = (uint64_t)img->w, total = w * (uint64_t)img->h, n = 0, x = 0, q = off;
    int gray = pal == NULL;

#define BMP_EMIT(val) do { \
        if (n < total) { \
            uint64_t r_ = n / w; \
            uint8_t *o_ = img->rgb + ((top_down ? r_ : (uint64_t)img->h - 1 - r_) * w + n % w) * 3; \
            unsigned v_ = (val); \
            if (gray) memset(o_, (int)v_, 3); else memcpy(o_, pal + 3 * v_, 3); \
        } \
        n++; \
    } while (0)

    while (n < total) {
        unsigned cnt, b, i;
        if (q >= size || size - q < 2) break;
        cnt = d[q];
        b = d[q + 1];
        q += 2;
        if (cnt) {
            if (x + cnt > w) cnt = x < w ? (unsigned)(w - x) : 0;
            for (i = 0; i < cnt; i++) BMP_EMIT(rle4 ? (i % 2 ? b & 15 : b >> 4) : b);
            x += cnt;
        } else if (b == 0) {
            while (n % w) BMP_EMIT(0);
            x = 0;
        } else if (b == 1) {
            break;
        } else if (b == 2) {
            if (q >= size || size - q < 2) break;
            q += 2;
            if (q >= size || size - q < 2) return png_fail(err, CLIP_EINPUT, "BMP RLE delta is truncated");
            n += d[q] + (uint64_t)d[q + 1] * w;
            q += 2;
            x = n % w;
        } else {
            uint64_t want = rle4 ? b / 2 : b, got = q >= size ? 0 : size - q;
            if (got > want) got = want;
            for (i = 0; i < got; i++) {
                uint8_t c = d[q + i];
                if (rle4) {
                    BMP_EMIT(c >> 4);
                    BMP_EMIT(c & 15);
                } else BMP_EMIT(c);
            }
            q += got;
            if (got < want) break;
            x += b;
            if (q % 2) q++;
        }
    }
#undef BMP_EMIT
    if (n < total) return png_fail(err, CLIP_EINPUT, "BMP RLE data does not cover the image");
    return CLIP_OK;
}

static int bmp_decode(const uint8_t *d, size_t size, clip_image *img, char *err)
{
    uint64_t offset, hsize, w, h, colors, stride, row_bytes, step, q;
    unsigned bits, comp = 0, pad;
    int top_down = 0, raw, mode_p = 0, rc, rawbits, mmap_path;
    size_t pos, plen = 0, i, y;
    const uint8_t *hd, *pl = NULL;
    uint32_t mask[4] = {0, 0, 0, 0};
    uint8_t pal[768];

    img->w = img->h = 0;
    img->rgb = NULL;
    /* BmpImageFile._open / _bitmap: file header, then the info header */
    if (size < 18) return png_fail(err, CLIP_EINPUT, "BMP file is truncated");
    offset = png_le32(d + 10);
    hsize = png_le32(d + 14);
    if (hsize != 12 && hsize != 40 && hsize != 64 && hsize != 108 && hsize != 124)
        return png_fail(err, CLIP_EINPUT, "unsupported BMP header type (%lu)", (unsigned long)hsize);
    if (size - 18 < hsize - 4) return png_fail(err, CLIP_EINPUT, "BMP file is truncated");
    hd = d + 18;
    pos = 14 + (size_t)hsize;
    if (hsize == 12) {
        w = png_le16(hd);
        h = png_le16(hd + 2);
        bits = png_le16(hd + 6);
        colors = 0;
        pad = 3;
    } else {
        w = png_le32(hd);
        h = png_le32(hd + 4);
        if (hd[7] == 0xff) {
            h = 4294967296ull - h;
            top_down = 1;
        }
        bits = png_le16(hd + 10);
        comp = png_le32(hd + 12);
        colors = png_le32(hd + 28);
        pad = 4;
        if (comp == 3) {
            if (hsize - 4 >= 52) {
                for (i = 0; i < 4; i++) mask[i] = png_le32(hd + 36 + 4 * i);
            } else {
                if (size - pos < 12) return png_fail(err, CLIP_EINPUT, "BMP file is truncated (bit masks)");
                for (i = 0; i < 3; i++) mask[i] = png_le32(d + pos + 4 * i);
                pos += 12;
            }
        }
    }
    if (colors == 0) colors = bits < 40 ? (uint64_t)1 << bits : (uint64_t)1 << 40;
    if (offset == 14 + hsize && bits <= 8) offset += 4 * colors;

    /* BIT2MODE, then the BITFIELDS layouts Pillow knows */
    if (bits == 1) raw = BMP_P1;
    else if (bits == 4) raw = BMP_P4;
    else if (bits == 8) raw = BMP_P8;
    else if (bits == 16) raw = BMP_BGR15;
    else if (bits == 24) raw = BMP_BGR;
    else if (bits == 32) raw = BMP_BGRX;
    else return png_fail(err, CLIP_EINPUT, "unsupported BMP pixel depth (%u)", bits);
    mode_p = bits <= 8;
    if (comp == 3) {
        uint32_t r = mask[0], g = mask[1], b = mask[2], a = mask[3];
        if (bits == 32 && r == 0xff0000 && g == 0xff00 && b == 0xff && (a == 0 || a == 0xff000000u)) raw = BMP_BGRX;
        else if (bits == 32 && r == 0xff000000u && g == 0xff0000 && b == 0xff00 && (a == 0 || a == 0xff)) raw = BMP_XBGR;
        else if (bits == 32 && r == 0xff && g == 0xff00 && b == 0xff0000 && a == 0xff000000u) raw = BMP_RGBA;
        else if (bits == 32 && !r && !g && !b && !a) raw = BMP_BGRX;
        else if (bits == 24 && r == 0xff0000 && g == 0xff00 && b == 0xff) raw = BMP_BGR;
        else if (bits == 16 && r == 0xf800 && g == 0x7e0 && b == 0x1f) raw = BMP_BGR16;
        else if (bits == 16 && r == 0x7c00 && g == 0x3e0 && b == 0x1f) raw = BMP_BGR15;
        else return png_fail(err, CLIP_EINPUT, "unsupported BMP bitfields layout");
    } else if (comp != 0 && comp != 1 && comp != 2)
        return png_fail(err, CLIP_EINPUT, "unsupported BMP compression (%u)", comp);

    /* palette: a grey ramp (0..n-1, or black and white for 2 colours)
     * makes Pillow read the pixels as L or 1 bytes, whatever their depth */
    for (i = 0; i < 256; i++) pal[3 * i] = pal[3 * i + 1] = pal[3 * i + 2] = (uint8_t)i;
    if (mode_p) {
        int gray = 1;
        if (colors == 0 || colors > 65536) return png_fail(err, CLIP_EINPUT, "unsupported BMP palette size (%lu)", (unsigned long)colors);
        pl = d + pos;
        plen = size - pos < pad * colors ? size - pos : (size_t)(pad * colors);
        pos += plen;
        for (i = 0; i < colors; i++) {
            unsigned v = colors == 2 ? (i ? 255 : 0) : (unsigned)(i & 255);
            if (i * pad + 3 > plen || pl[i * pad] != v || pl[i * pad + 1] != v || pl[i * pad + 2] != v) {
                gray = 0;
                break;
            }
        }
        if (gray) {
            raw = colors == 2 ? BMP_1 : BMP_L;
        } else {
            if (plen / pad > 256) return png_fail(err, CLIP_EINPUT, "BMP palette has more than 256 entries");
            for (i = 0; i < plen / pad; i++) {
                pal[3 * i] = pl[i * pad + 2];
                pal[3 * i + 1] = pl[i * pad + 1];
                pal[3 * i + 2] = pl[i * pad];
            }
        }
    }
    if (offset == 0) offset = pos;
    if (w == 0 || h == 0) return png_fail(err, CLIP_EINPUT, "BMP image has zero width or height");
    rc = png_new_image(img, w, h, err);
    if (rc) return rc;

    if (comp == 1 || comp == 2) {
        if (raw != BMP_L && raw != BMP_P1 && raw != BMP_P4 && raw != BMP_P8) {
            clip_image_free(img);
            return png_fail(err, CLIP_EINPUT, "BMP run-length compression needs a palette image");
        }
        if (raw != BMP_L && (pal[0] | pal[1] | pal[2]))
            for (i = 0; i < w * h; i++) memcpy(img->rgb + 3 * i, pal, 3);
        rc = bmp_rle(d, size, offset, comp == 2, top_down, raw == BMP_L ? NULL : pal, img, err);
        if (rc) clip_image_free(img);
        return rc;
    }

    /* raw decoder: rows of `stride` bytes (from the file's bit depth),
     * bottom-up unless the height was negative. Opened from a file, 8-bit
     * L and P images are memory-mapped when the whole padded image fits,
     * which reads row y at offset + y * stride even when that is shorter
     * than a row of the L raw mode. */
    rawbits = raw == BMP_1 || raw == BMP_P1 ? 1 : raw == BMP_P4 ? 4 : raw == BMP_L || raw == BMP_P8 ? 8
            : raw == BMP_BGR15 || raw == BMP_BGR16 ? 16 : raw == BMP_BGR ? 24 : 32;
    stride = ((w * bits + 31) >> 3) & ~(uint64_t)3;
    row_bytes = (w * (uint64_t)rawbits + 7) / 8;
    mmap_path = (raw == BMP_L || raw == BMP_P8) && offset + h * stride <= size;
    if (mmap_path) step = stride;
    else {
        step = stride > row_bytes ? stride : row_bytes;
        if (offset > size || (h - 1) * step + row_bytes > size - offset) {
            clip_image_free(img);
            return png_fail(err, CLIP_EINPUT, "BMP file is truncated");
        }
    }
    for (y = 0; y < h; y++) {
        uint8_t *o = img->rgb + (top_down ? y : h - 1 - y) * w * 3;
        const uint8_t *row;
        uint8_t tail[8192];
        q = offset + y * step;
        row = d + q;
        if (mmap_path && q + row_bytes > size) {
            /* the mapped last row runs past the end of the file: zeros */
            size_t x, have = (size_t)(size - q);
            for (x = 0; x < w; x += sizeof tail) {
                size_t k, n = w - x < sizeof tail ? (size_t)(w - x) : sizeof tail;
                for (k = 0; k < n; k++) tail[k] = x + k < have ? d[q + x + k] : 0;
                for (k = 0; k < n; k++) bmp_put(o + (x + k) * 3, tail, k, raw, pal);
            }
            continue;
        }
        for (i = 0; i < w; i++) bmp_put(o + i * 3, row, i, raw, pal);
    }
    return CLIP_OK;
}

/* ---------------------------------------------------------------------- */
/* Decode and load                                                         */
/* ---------------------------------------------------------------------- */

/* Image.open: pick the format from the first bytes, as the plugins'
 * _accept functions do. */
int clip_image_decode(const uint8_t *data, size_t size, clip_image *img, char *err)
{
    int rc;
    if (!img) return png_fail(err, CLIP_EINPUT, "no image to decode into");
    img->w = img->h = 0;
    img->rgb = NULL;
    if (!data && size) return png_fail(err, CLIP_EINPUT, "no image data");
    if (size == 0) return png_fail(err, CLIP_EINPUT, "image file is empty");
    if (size >= 8 && !memcmp(data, "\x89PNG\r\n\x1a\n", 8)) rc = png_decode(data, size, img, err);
    else if (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) rc = jpeg_decode(data, size, img, err);
    else if (size >= 2 && data[0] == 'B' && data[1] == 'M') rc = bmp_decode(data, size, img, err);
    else if (size >= 2 && data[0] == 'P' && data[1] >= '1' && data[1] <= '6') rc = ppm_decode(data, size, img, err);
    else return png_fail(err, CLIP_EINPUT, "cannot identify image format (not PNG, JPEG, PPM/PGM/PBM or BMP)");
    if (rc) clip_image_free(img);
    return rc;
}

int clip_image_load(const char *path, clip_image *img, char *err)
{
    FILE *f;
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    char msg[CLIP_ERR_SIZE];
    int rc;

    if (!img) return png_fail(err, CLIP_EINPUT, "no image to load into");
    img->w = img->h = 0;
    img->rgb = NULL;
    if (!path) return png_fail(err, CLIP_EINPUT, "no image path given");
    f = fopen(path, "rb");
    if (!f) return png_fail(err, CLIP_EIO, "%s: %s", path, strerror(errno));
    /* size the buffer from the file length when it has one (not a pipe) */
    if (fseek(f, 0, SEEK_END) == 0) {
        long len = ftell(f);
        if (len >= 0 && (unsigned long)len < (size_t)-1 - 1 && fseek(f, 0, SEEK_SET) == 0) {
            cap = (size_t)len + 1;
            buf = malloc(cap);
            if (!buf) {
                fclose(f);
                return png_fail(err, CLIP_ENOMEM, "%s: out of memory reading the file", path);
            }
        } else rewind(f);
    }
    for (;;) {
        size_t got;
        if (n == cap) {
            uint8_t *nb;
            size_t ncap = cap ? cap * 2 : 1 << 16;
            if (ncap < cap || !(nb = realloc(buf, ncap))) {
                free(buf);
                fclose(f);
                return png_fail(err, CLIP_ENOMEM, "%s: out of memory reading the file", path);
            }
            buf = nb;
            cap = ncap;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        fclose(f);
        return png_fail(err, CLIP_EIO, "%s: read error", path);
    }
    fclose(f);
    rc = clip_image_decode(buf, n, img, msg);
    free(buf);
    if (rc) return png_fail(err, rc, "%s: %s", path, msg);
    return CLIP_OK;
}

void clip_image_free(clip_image *img)
{
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
    img->w = img->h = 0;
}

/* ---------------------------------------------------------------------- */
/* PNG writer                                                              */
/* ---------------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t n;
    uint32_t acc;
    int nacc;
} png_bits;

static void png_put_bits(png_bits *o, uint32_t v, int n)
{
    o->acc |= v << o->nacc;
    o->nacc += n;
    while (o->nacc >= 8) {
        o->p[o->n++] = (uint8_t)o->acc;
        o->acc >>= 8;
        o->nacc -= 8;
    }
}

/* A fixed-Huffman code (RFC 1951 3.2.6), sent most significant bit first. */
static void png_put_code(png_bits *o, unsigned sym)
{
    unsigned code, len, rev = 0, i;
    if (sym < 144) { code = 0x30 + sym; len = 8; }
    else if (sym < 256) { code = 0x190 + sym - 144; len = 9; }
    else if (sym < 280) { code = sym - 256; len = 7; }
    else { code = 0xc0 + sym - 280; len = 8; }
    for (i = 0; i < len; i++) rev |= ((code >> i) & 1u) << (len - 1 - i);
    png_put_bits(o, rev, (int)len);
}

static void png_put_chunk(uint8_t *out, size_t *n, const char *type, const uint8_t *d, size_t len,
                          const uint32_t *table)
{
    uint8_t *p = out + *n;
    p[0] = (uint8_t)(len >> 24); p[1] = (uint8_t)(len >> 16); p[2] = (uint8_t)(len >> 8); p[3] = (uint8_t)len;
    memcpy(p + 4, type, 4);
    if (len && d != p + 8) memmove(p + 8, d, len);
    {
        uint32_t c = png_crc(table, 0, p + 4, len + 4);
        p[8 + len] = (uint8_t)(c >> 24); p[9 + len] = (uint8_t)(c >> 16);
        p[10 + len] = (uint8_t)(c >> 8); p[11 + len] = (uint8_t)c;
    }
    *n += len + 12;
}

/* 8-bit RGB, no interlace; every row uses the "sub" filter and the zlib
 * stream is one fixed-Huffman block with greedy LZ77 matches. */
int clip_png_encode(const clip_image *img, uint8_t **png, size_t *size, char *err)
{
    uint32_t table[256], a = 1, b = 0;
    size_t w, h, raw_len, cap, i, y, n = 0;
    uint8_t *raw, *out, ihdr[13];
    int32_t *head;
    png_bits o;

    if (png) *png = NULL;
    if (size) *size = 0;
    if (!img || !img->rgb || !png || !size) return png_fail(err, CLIP_EINPUT, "no image to encode");
    if (img->w <= 0 || img->h <= 0 || (long)img->w > CLIP_MAX_PIXELS / img->h)
        return png_fail(err, CLIP_EINPUT, "cannot encode a %d x %d image", img->w, img->h);
    w = (size_t)img->w;
    h = (size_t)img->h;
    raw_len = h * (1 + 3 * w);
    cap = 8 + 25 + 12 + 2 + raw_len / 8 * 11 + 64 + 4 + 12;
    raw = malloc(raw_len);
    out = malloc(cap);
    head = malloc(sizeof *head << 15);
    if (!raw || !out || !head) {
        free(raw);
        free(out);
        free(head);
        return png_fail(err, CLIP_ENOMEM, "out of memory encoding PNG");
    }
    png_crc_table(table);

    /* filter "sub": each byte minus the same channel of the pixel before */
    for (y = 0; y < h; y++) {
        uint8_t *r = raw + y * (1 + 3 * w);
        const uint8_t *s = img->rgb + y * 3 * w;
        r[0] = 1;
        for (i = 0; i < 3 * w; i++) r[1 + i] = (uint8_t)(s[i] - (i >= 3 ? s[i - 3] : 0));
    }
    for (i = 0; i < raw_len; i++) {
        a = (a + raw[i]) % 65521;
        b = (b + a) % 65521;
    }

    memcpy(out, "\x89PNG\r\n\x1a\n", 8);
    n = 8;
    ihdr[0] = (uint8_t)(w >> 24); ihdr[1] = (uint8_t)(w >> 16); ihdr[2] = (uint8_t)(w >> 8); ihdr[3] = (uint8_t)w;
    ihdr[4] = (uint8_t)(h >> 24); ihdr[5] = (uint8_t)(h >> 16); ihdr[6] = (uint8_t)(h >> 8); ihdr[7] = (uint8_t)h;
    ihdr[8] = 8; ihdr[9] = 2; ihdr[10] = ihdr[11] = ihdr[12] = 0;
    png_put_chunk(out, &n, "IHDR", ihdr, 13, table);

    /* the zlib stream goes straight into the IDAT chunk's data */
    o.p = out + n + 8;
    o.n = 0;
    o.acc = 0;
    o.nacc = 0;
    o.p[o.n++] = 0x78;
    o.p[o.n++] = 0x01;
    png_put_bits(&o, 1, 1);
    png_put_bits(&o, 1, 2);
    for (i = 0; i < (size_t)1 << 15; i++) head[i] = -1;
    for (i = 0; i < raw_len;) {
        size_t best = 0, dist = 0;
        if (i + 3 <= raw_len) {
            unsigned hv = ((unsigned)raw[i] << 10 ^ (unsigned)raw[i + 1] << 5 ^ raw[i + 2]) & 32767;
            int32_t c = head[hv];
            head[hv] = (int32_t)i;
            if (c >= 0 && i - (size_t)c <= 32768) {
                size_t m = 0, lim = raw_len - i < 258 ? raw_len - i : 258;
                while (m < lim && raw[(size_t)c + m] == raw[i + m]) m++;
                if (m >= 3) {
                    best = m;
                    dist = i - (size_t)c;
                }
            }
        }
        if (best) {
            int s = 28, t = 30;
            while (inflate_len_base[s] > best) s--;
            png_put_code(&o, 257u + (unsigned)s);
            png_put_bits(&o, (uint32_t)(best - inflate_len_base[s]), inflate_len_extra[s]);
            while (inflate_dist_base[--t] > dist) {}
            {
                unsigned rev = 0, k;
                for (k = 0; k < 5; k++) rev |= (((unsigned)t >> k) & 1u) << (4 - k);
                png_put_bits(&o, rev, 5);
            }
            png_put_bits(&o, (uint32_t)(dist - inflate_dist_base[t]), inflate_dist_extra[t]);
            i += best;
        } else {
            png_put_code(&o, raw[i]);
            i++;
        }
    }
    png_put_code(&o, 256);
    if (o.nacc) png_put_bits(&o, 0, 8 - o.nacc);
    o.p[o.n++] = (uint8_t)(b >> 8);
    o.p[o.n++] = (uint8_t)b;
    o.p[o.n++] = (uint8_t)(a >> 8);
    o.p[o.n++] = (uint8_t)a;
    png_put_chunk(out, &n, "IDAT", o.p, o.n, table);
    png_put_chunk(out, &n, "IEND", NULL, 0, table);
    free(raw);
    free(head);
    *png = out;
    *size = n;
    return CLIP_OK;
}
