/* image.c - decode PNG, binary PPM/PGM/PBM and BMP into 8-bit RGB exactly as
 * Pillow's Image.open(path).convert("RGB") does, and write RGB as PNG.
 *
 * Then JPEG, the two bicubic resizes and CLIPImageProcessor's crop and
 * normalize. Pillow is the reference throughout: which files it
 * accepts, which it refuses, and the exact pixels it produces, quirks
 * included (they are pointed out where they happen).
 *
 * The stages, in file order:
 *   helpers        errors, byte readers, the output image
 *   inflate        zlib/deflate as zlib's inflate() runs it for Pillow
 *   PNG            chunk walk (PngImagePlugin), rows (ZipDecode.c), convert("RGB")
 *   PPM            PpmImagePlugin: binary P4, P5, P6 (plain P1-P3 are refused)
 *   BMP            BmpImagePlugin: 1/4/8-bit palettes, 16/24/32-bit, RLE4/RLE8
 *   JPEG           libjpeg-turbo as Pillow runs it: Huffman, islow IDCT, fancy upsampling
 *   decode/load    format detection by magic bytes
 *   PNG writer     clip_png_encode
 *   resize         Pillow's and PyTorch's bicubic, CLIPImageProcessor (pil, torchvision)
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <stdint.h>
#include "clip.h"

/* JPEG section below: baseline/progressive JPEG -> RGB after Pillow's convert("RGB") */
static int jpeg_decode(const uint8_t *data, size_t size, clip_image *img, char *err);

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
/* JPEG (libjpeg-turbo as Pillow runs it)                                 */
/* ---------------------------------------------------------------------- */
/* Baseline and progressive JPEG decoding, pixel for pixel as
 * Pillow does it.
 *
 * Pillow hands JPEG files to libjpeg-turbo with its default settings, so the
 * reference steps are libjpeg-turbo's (file names in the comments):
 *
 *   markers (jdmarker.c) -> Huffman entropy decoding, sequential (jdhuff.c) or
 *   progressive (jdphuff.c) -> coefficient buffer, block smoothing for
 *   incomplete progressive files (jdcoefct.c) -> integer "islow" inverse DCT
 *   (jidctint.c) -> fancy upsampling (jdsample.c) -> YCbCr/YCCK colour
 *   conversion (jdcolor.c) -> Pillow's mode (L, RGB or inverted CMYK) ->
 *   Pillow's convert("RGB").
 *
 * Pillow's own marker scan (JpegImagePlugin.py) runs before libjpeg and
 * refuses some files libjpeg would take; both sets of rules are applied.
 * Arithmetic-coded, 12-bit, lossless and hierarchical files are refused.
 */

/* jpeg_natural_order: zigzag index -> natural (row-major) index, with 16
 * extra entries so that a corrupt run length past 63 lands on 63. */
static const uint8_t jpeg_natural_order[64 + 16] = {
    0,  1,  8,  16, 9,  2,  3,  10, 17, 24, 32, 25, 18, 11, 4,  5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6,  7,  14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
    63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63
};

/* The standard Huffman tables of ITU T.81 Annex K.3, installed by
 * libjpeg-turbo (jstdhuff.c) in slots 0 and 1 when a file (Motion-JPEG
 * style) defines none there: counts per code length 1..16, then symbols. */
static const uint8_t jpeg_std_dc_luma_bits[16] = { 0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0 };
static const uint8_t jpeg_std_dc_chroma_bits[16] = { 0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0 };
static const uint8_t jpeg_std_dc_vals[12] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 };
static const uint8_t jpeg_std_ac_luma_bits[16] = { 0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d };
static const uint8_t jpeg_std_ac_luma_vals[162] = {
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa
};
static const uint8_t jpeg_std_ac_chroma_bits[16] = { 0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77 };
static const uint8_t jpeg_std_ac_chroma_vals[162] = {
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa
};

#define JPEG_MIN_GET_BITS 57     /* jdhuff.c: refill the 64-bit bit buffer to this depth */
#define JPEG_MAX_DIMENSION 65500 /* jmorecfg.h JPEG_MAX_DIMENSION */

/* A Huffman table as DHT defines it, plus the decoding tables libjpeg
 * derives from it (jpeg_make_d_derived_tbl). */
typedef struct {
    int defined;
    uint8_t bits[17];        /* bits[l]: how many codes have length l */
    uint8_t vals[256];       /* the symbols, in code order */
    int32_t maxcode[18];     /* largest code of length l, -1 if none */
    int32_t valoffset[18];   /* vals index of the first code of length l, minus that code */
    uint16_t lookup[256];    /* 8-bit lookahead: (length << 8) | symbol, or 9 << 8 if longer */
    /* AC tables: a nonzero coefficient whose code and magnitude bits fit in
     * 9 bits, decoded in one step: value, and (run << 4) | bits used */
    int16_t fast_value[512];
    uint8_t fast_run_len[512];
} jpeg_huff_table;

/* One image component (jpeg_component_info). */
typedef struct {
    int id, h, v, tq;        /* SOF: identifier, sampling factors, quantization table slot */
    int dc_tbl, ac_tbl;      /* SOS: Huffman table slots in the current scan */
    int dw, dh;              /* downsampled_width/height: ceil(W*h/max_h), ceil(H*v/max_v) */
    int wb, hb;              /* width/height_in_blocks: blocks holding real samples */
    int bw, bh;              /* blocks of the full MCU grid (interleaved scans code them all) */
    int q_latched;           /* quantization table copied at the component's first scan */
    uint16_t qval[64];       /* that table, natural order */
    int16_t qmul[64];        /* as libjpeg-turbo's 16-bit islow multipliers */
    int32_t last_dc;         /* DC predictor within the current scan */
    int coef_bits[64];       /* progressive: bit position known for each coefficient, -1 = none */
    int prev_coef_bits[64];  /* the same before the component's latest scan */
    int16_t *coef;           /* bw * bh blocks of 64 coefficients (multi-scan files) */
    uint8_t *plane;          /* wb*8 x hb*8 samples after the inverse DCT */
    size_t stride;           /* wb * 8 */
    int rows_done;           /* sample rows of the plane filled so far */
    uint8_t *row;            /* one upsampled row */
} jpeg_component;

typedef struct {
    const uint8_t *data;
    size_t size, pos;
    char *err;

    /* bit reader (jdhuff.c bitread state) */
    uint64_t buf;            /* the low nbits bits are unread entropy-coded data */
    int nbits;
    int marker;              /* marker that ended the entropy-coded data; -1 = end of file */
    int truncated;           /* the data ended inside a scan: Pillow reports a truncated file */
    int insufficient;        /* a marker cut this segment short: remaining MCUs stay zero */
    int bad_coef;            /* a DC predictor overflowed */

    /* frame (SOF) and tables */
    int w, h, ncomp, progressive, max_h, max_v, mcus_x, mcus_y;
    jpeg_component comp[4];
    int seen_sof, scans, single_scan, done_single_scan;
    uint16_t qt[4][64];
    int qt_defined[4];
    jpeg_huff_table dc_tbl[4], ac_tbl[4];
    int restart_interval;
    int saw_jfif, saw_adobe, adobe_transform;

    /* current scan (SOS) */
    int ns, ss, se, ah, al;
    jpeg_component *scomp[4];
    int eobrun, restarts_to_go, next_restart;
    int last_good_imcu_row;  /* jdcoefct.c: last iMCU row decoded with data (for smoothing) */

    /* output */
    int space;               /* 0 grey, 1 RGB, 2 YCbCr, 3 CMYK, 4 YCCK */
    uint8_t *rgb;            /* the image, w * h * 3 */
    int next_row;            /* first output row not yet converted */

} jpeg_decoder;

static int jpeg_fail(jpeg_decoder *d, int code, const char *fmt, ...)
{
    if (d->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->err, CLIP_ERR_SIZE, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int jpeg_truncated(jpeg_decoder *d)
{
    return jpeg_fail(d, CLIP_EINPUT, "JPEG file is truncated.");
}

/* Two's-complement wrap to 16 bits, as storing into libjpeg's JCOEF does. */
static int16_t jpeg_wrap16(int64_t x)
{
    uint32_t u = (uint32_t)(((uint64_t)x + 32768u) & 0xFFFFu);
    return (int16_t)((int32_t)u - 32768);
}

/* ---------------------------------------------------------------------- */
/* Bit reader: jdhuff.c jpeg_fill_bit_buffer, GET_BITS, HUFF_DECODE        */
/* ---------------------------------------------------------------------- */

/* Load bytes until 57 bits are buffered, undoing FF/00 stuffing and stopping
 * at a marker. Past a marker, when `need` bits are not there, stuff zero bits
 * and note that this segment ran out of data. At the end of the file libjpeg
 * would suspend; Pillow then reports a truncated file, so we flag it. */
static void jpeg_fill_bits(jpeg_decoder *d, int need)
{
    if (!d->marker) {
        while (d->nbits < JPEG_MIN_GET_BITS) {
            int c;
            if (d->pos >= d->size) {
                d->truncated = 1;
                d->marker = -1;
                break;
            }
            c = d->data[d->pos++];
            if (c == 0xFF) {
                int c2;
                do {
                    if (d->pos >= d->size) {
                        d->truncated = 1;
                        d->marker = -1;
                        break;
                    }
                    c2 = d->data[d->pos++];
                } while (c2 == 0xFF);
                if (d->marker)
                    break;
                if (c2 != 0) {
                    d->marker = c2;
                    break;
                }
            }
            d->buf = (d->buf << 8) | (uint64_t)c;
            d->nbits += 8;
        }
        if (!d->marker)
            return;
    }
    if (need > d->nbits) {
        d->buf <<= JPEG_MIN_GET_BITS - d->nbits;
        d->nbits = JPEG_MIN_GET_BITS;
        d->insufficient = 1;
    }
}

static int jpeg_get_bits(jpeg_decoder *d, int n)
{
    if (d->nbits < n)
        jpeg_fill_bits(d, n);
    d->nbits -= n;
    return (int)((d->buf >> d->nbits) & ((1u << n) - 1));
}

/* HUFF_DECODE: 8-bit lookahead, then jpeg_huff_decode bit by bit for longer
 * codes (done on a 16-bit peek when that many bits are buffered: the same
 * bits, the same result). A code longer than 16 bits decodes as 0, as libjpeg
 * does. */
static int jpeg_huff_decode(jpeg_decoder *d, const jpeg_huff_table *t)
{
    int l, code;
    if (d->nbits < 8) {
        jpeg_fill_bits(d, 0);
        if (d->nbits < 8) {
            l = 1;
            goto slow;
        }
    }
    {
        int e = t->lookup[(d->buf >> (d->nbits - 8)) & 0xFF];
        l = e >> 8;
        if (l <= 8) {
            d->nbits -= l;
            return e & 0xFF;
        }
    }
    if (d->nbits >= 16) {
        int peek = (int)((d->buf >> (d->nbits - 16)) & 0xFFFF);
        for (l = 9; l <= 16; l++) {
            code = peek >> (16 - l);
            if (code <= t->maxcode[l]) {
                d->nbits -= l;
                return t->vals[(code + t->valoffset[l]) & 0xFF];
            }
        }
        l = 9;
    }
slow:
    code = jpeg_get_bits(d, l);
    while (code > t->maxcode[l]) {
        code = (code << 1) | jpeg_get_bits(d, 1);
        l++;
    }
    if (l > 16)
        return 0;
    return t->vals[(code + t->valoffset[l]) & 0xFF];
}

/* HUFF_EXTEND: an s-bit magnitude category value r as a signed number. */
static int jpeg_extend(int r, int s)
{
    return r < (1 << (s - 1)) ? r - (1 << s) + 1 : r;
}

/* ---------------------------------------------------------------------- */
/* Markers (jdmarker.c, and Pillow's JpegImagePlugin.py before the SOS)    */
/* ---------------------------------------------------------------------- */

/* next_marker: skip anything up to FF, padding FFs and stuffed FF/00 pairs.
 * Returns the marker code, or -1 at the end of the file. */
static int jpeg_next_marker(jpeg_decoder *d)
{
    for (;;) {
        int c;
        while (d->pos < d->size && d->data[d->pos] != 0xFF)
            d->pos++;
        while (d->pos < d->size && d->data[d->pos] == 0xFF)
            d->pos++;
        if (d->pos >= d->size)
            return -1;
        c = d->data[d->pos++];
        if (c != 0)
            return c;
    }
}

/* A marker segment: its length field, then *len = length - 2 bytes of data
 * (which may be negative for a bogus length: nothing to read then), of which
 * *avail are in the file. Returns -1 if the file ends inside the length. */
static int jpeg_segment(jpeg_decoder *d, const uint8_t **p, int *len, int *avail)
{
    if (d->size - d->pos < 2)
        return -1;
    *len = ((int)d->data[d->pos] << 8 | d->data[d->pos + 1]) - 2;
    d->pos += 2;
    *p = d->data + d->pos;
    *avail = *len < 0 ? 0 : d->size - d->pos < (size_t)*len ? (int)(d->size - d->pos) : *len;
    d->pos += (size_t)*avail;
    return 0;
}

/* A segment cut off by the end of a single-scan file, after its image is
 * complete: libjpeg reads markers byte by byte and suspends at the end
 * (which Pillow accepts), unless the bytes it did read are already wrong.
 * Whether they are, following the reading order of jdmarker.c. */
static int jpeg_partial_segment_bad(const jpeg_decoder *d, int m, const uint8_t *p, int len, int avail)
{
    int off = 0, i;
    if (m == 0xC0 || m == 0xC1 || m == 0xC2 || m == 0xC9 || m == 0xCA)
        return avail >= 6; /* get_sof reads 6 bytes, then refuses a second frame */
    if (m == 0xDD)
        return len != 2;
    if (m == 0xDA) {
        int n = avail >= 1 ? p[0] : 1;
        if (avail >= 1 && (len != 4 + 2 * n || n < 1 || n > 4))
            return 1;
        for (i = 0; i < n && 1 + 2 * i + 2 <= avail; i++) {
            int j, found = 0;
            for (j = 0; j < d->ncomp; j++)
                found |= d->comp[j].id == p[1 + 2 * i];
            if (!found)
                return 1;
        }
        return 0;
    }
    if (m == 0xDB) {
        while (off < avail) {
            if ((p[off] & 15) >= 4)
                return 1;
            off += 1 + (p[off] >> 4 ? 128 : 64);
        }
        return 0;
    }
    if (m == 0xC4) {
        int left = len;
        while (left > 16 && off + 17 <= avail) {
            int count = 0, index = p[off] & ~0x10;
            for (i = 1; i <= 16; i++)
                count += p[off + i];
            left -= 17;
            if (count > 256 || count > left)
                return 1;
            if (off + 17 + count > avail)
                return 0;
            if (index >= 4)
                return 1;
            off += 17 + count;
            left -= count;
        }
        return 0;
    }
    if (m == 0xCC) {
        for (i = 0; i + 2 <= avail; i += 2)
            if (p[i] >= 32 || (p[i] < 16 && (p[i + 1] & 15) > p[i + 1] >> 4))
                return 1;
        return 0;
    }
    return 0; /* APPn, COM, DNL: skipped */
}

/* get_dqt: quantization tables, 8- or 16-bit, zigzag order in the file. */
static int jpeg_read_dqt(jpeg_decoder *d, const uint8_t *p, int len)
{
    while (len > 0) {
        int n = p[0] & 15, prec = p[0] >> 4, i;
        p++;
        len--;
        if (n >= 4)
            return jpeg_fail(d, CLIP_EINPUT, "JPEG quantization table index %d is out of range.", n);
        if (len < (prec ? 128 : 64))
            return jpeg_fail(d, CLIP_EINPUT, "JPEG quantization table marker is too short.");
        for (i = 0; i < 64; i++) {
            unsigned v = prec ? (unsigned)(p[2 * i] << 8 | p[2 * i + 1]) : p[i];
            d->qt[n][jpeg_natural_order[i]] = (uint16_t)v;
        }
        d->qt_defined[n] = 1;
        p += prec ? 128 : 64;
        len -= prec ? 128 : 64;
    }
    if (len != 0)
        return jpeg_fail(d, CLIP_EINPUT, "JPEG quantization table marker has a bad length.");
    return 0;
}

/* get_dht: Huffman tables; the code tree is checked when a scan uses it. */
static int jpeg_read_dht(jpeg_decoder *d, const uint8_t *p, int len)
{
    while (len > 16) {
        int index = p[0], count = 0, i;
        jpeg_huff_table *t;
        for (i = 1; i <= 16; i++)
            count += p[i];
        len -= 17;
        if (count > 256 || count > len)
            return jpeg_fail(d, CLIP_EINPUT, "JPEG Huffman table is corrupt.");
        if (index & 0x10)
            index -= 0x10;
        if (index < 0 || index >= 4)
            return jpeg_fail(d, CLIP_EINPUT, "JPEG Huffman table index %d is out of range.", index);
        t = (p[0] & 0x10) ? &d->ac_tbl[index] : &d->dc_tbl[index];
        t->bits[0] = 0;
        memcpy(t->bits + 1, p + 1, 16);
        memset(t->vals, 0, sizeof t->vals);
        memcpy(t->vals, p + 17, (size_t)count);
        t->defined = 1;
        p += 17 + count;
        len -= count;
    }
    if (len != 0)
        return jpeg_fail(d, CLIP_EINPUT, "JPEG Huffman table marker has a bad length.");
    return 0;
}

/* get_sof: frame header, with Pillow's and libjpeg's limits. */
static int jpeg_read_sof(jpeg_decoder *d, int marker, const uint8_t *p, int len)
{
    int i, j;
    uint64_t pixels;
    if (marker == 0xC9 || marker == 0xCA)
        return jpeg_fail(d, CLIP_EINPUT, "arithmetic-coded JPEG files are not supported.");
    if (len < 6)
        return jpeg_fail(d, CLIP_EINPUT, "JPEG frame header is too short.");
    if (p[0] != 8)
        return jpeg_fail(d, CLIP_EINPUT, "%d-bit JPEG files are not supported (only 8-bit).", p[0]);
    if (p[5] != 1 && p[5] != 3 && p[5] != 4)
        return jpeg_fail(d, CLIP_EINPUT, "JPEG files with %d components are not supported.", p[5]);
    if (marker != 0xC0 && marker != 0xC1 && marker != 0xC2)
        return jpeg_fail(d, CLIP_EINPUT, "this JPEG coding process (SOF%d) is not supported.", marker - 0xC0);
    d->seen_sof = 1;
    d->progressive = marker == 0xC2;
    d->h = p[1] << 8 | p[2];
    d->w = p[3] << 8 | p[4];
    d->ncomp = p[5];
    if (d->w == 0 || d->h == 0)
        return jpeg_fail(d, CLIP_EINPUT, "JPEG image is empty (%d x %d).", d->w, d->h);
    if (len != 6 + 3 * d->ncomp)
        return jpeg_fail(d, CLIP_EINPUT, "JPEG frame header has a bad length.");
    if (d->w > JPEG_MAX_DIMENSION || d->h > JPEG_MAX_DIMENSION)
        return jpeg_fail(d, CLIP_EINPUT, "JPEG image is too large (%d x %d).", d->w, d->h);
    pixels = (uint64_t)d->w * (uint64_t)d->h;
    if (pixels > (uint64_t)CLIP_MAX_PIXELS)
        return jpeg_fail(d, CLIP_EINPUT, "JPEG image is too large (%d x %d, at most %ld pixels).",
                         d->w, d->h, (long)CLIP_MAX_PIXELS);
    d->max_h = d->max_v = 1;
    for (i = 0; i < d->ncomp; i++) {
        jpeg_component *c = &d->comp[i];
        const uint8_t *q = p + 6 + 3 * i;
        c->id = q[0];
        c->h = q[1] >> 4;
        c->v = q[1] & 15;
        c->tq = q[2];
        if (c->h < 1 || c->h > 4 || c->v < 1 || c->v > 4)
            return jpeg_fail(d, CLIP_EINPUT, "JPEG sampling factors %dx%d are invalid.", c->h, c->v);
        for (j = 0; j < i; j++)
            if (d->comp[j].id == c->id)
                return jpeg_fail(d, CLIP_EINPUT, "JPEG component identifier %d is repeated.", c->id);
        if (c->h > d->max_h) d->max_h = c->h;
        if (c->v > d->max_v) d->max_v = c->v;
    }
    /* jdinput.c initial_setup: component and MCU geometry */
    d->mcus_x = (d->w + 8 * d->max_h - 1) / (8 * d->max_h);
    d->mcus_y = (d->h + 8 * d->max_v - 1) / (8 * d->max_v);
    for (i = 0; i < d->ncomp; i++) {
        jpeg_component *c = &d->comp[i];
        /* jdsample.c jinit_upsampler handles integral ratios only */
        if (d->max_h % c->h || d->max_v % c->v)
            return jpeg_fail(d, CLIP_EINPUT, "JPEG fractional sampling factors are not supported.");
        c->dw = (int)(((int64_t)d->w * c->h + d->max_h - 1) / d->max_h);
        c->dh = (int)(((int64_t)d->h * c->v + d->max_v - 1) / d->max_v);
        c->wb = (c->dw + 7) / 8;
        c->hb = (c->dh + 7) / 8;
        c->bw = d->mcus_x * c->h;
        c->bh = d->mcus_y * c->v;
        for (j = 0; j < 64; j++)
            c->coef_bits[j] = -1;
    }
    return 0;
}

/* APP0 (JFIF) and APP14 (Adobe) decide the colour space (jdmarker.c
 * examine_app0/examine_app14, jdapimin.c default_decompress_parms). */
static void jpeg_read_app(jpeg_decoder *d, int marker, const uint8_t *p, int len)
{
    if (marker == 0xE0 && len >= 14 && memcmp(p, "JFIF\0", 5) == 0)
        d->saw_jfif = 1;
    if (marker == 0xEE && len >= 12 && memcmp(p, "Adobe", 5) == 0) {
        d->saw_adobe = 1;
        d->adobe_transform = p[11];
    }
}

static int jpeg_extend(int r, int s);

/* jpeg_make_d_derived_tbl: check the code lengths form a valid prefix code
 * (and DC symbols are 0..15), then build the decoding tables. */
static int jpeg_build_huffman(jpeg_decoder *d, jpeg_huff_table *t, int is_dc)
{
    int l, i, p = 0, n = 0;
    uint32_t code = 0;
    if (t == NULL || !t->defined)
        return jpeg_fail(d, CLIP_EINPUT, "JPEG scan uses an undefined Huffman table.");
    for (l = 1; l <= 16; l++)
        n += t->bits[l];
    if (n > 256)
        return jpeg_fail(d, CLIP_EINPUT, "JPEG Huffman table is corrupt.");
    for (i = 0; i < 256; i++)
        t->lookup[i] = 9 << 8;
    for (l = 1; l <= 16; l++) {
        int cnt = t->bits[l];
        /* no code may be all ones: the codes of length l must fit below 2^l - 1 */
        if (code + (uint32_t)cnt >= (1u << l))
            return jpeg_fail(d, CLIP_EINPUT, "JPEG Huffman table is corrupt.");
        if (cnt) {
            t->valoffset[l] = (int32_t)p - (int32_t)code;
            for (i = 0; i < cnt; i++, p++, code++) {
                if (l <= 8) {
                    int look = (int)(code << (8 - l)), k;
                    for (k = 0; k < 1 << (8 - l); k++)
                        t->lookup[look + k] = (uint16_t)(l << 8 | t->vals[p]);
                }
            }
            t->maxcode[l] = (int32_t)code - 1;
        } else {
            t->maxcode[l] = -1;
        }
        code <<= 1;
    }
    t->maxcode[17] = 0xFFFFF;
    t->valoffset[17] = 0;
    /* the one-step table: code of length l, then s magnitude bits */
    for (i = 0; i < 512; i++) {
        int e = t->lookup[i >> 1], l = e >> 8, sym = e & 0xFF, sz = sym & 15;
        t->fast_run_len[i] = 0;
        t->fast_value[i] = 0;
        if (!is_dc && l <= 8 && sz != 0 && l + sz <= 9) {
            int bits = (i >> (9 - l - sz)) & ((1 << sz) - 1);
            t->fast_value[i] = (int16_t)jpeg_extend(bits, sz);
            t->fast_run_len[i] = (uint8_t)((sym >> 4) << 4 | (l + sz));
        }
    }
    if (is_dc)
        for (i = 0; i < n; i++)
            if (t->vals[i] > 15)
                return jpeg_fail(d, CLIP_EINPUT, "JPEG DC Huffman table has a symbol above 15.");
    return 0;
}

static void jpeg_std_table(jpeg_huff_table *t, const uint8_t *bits, const uint8_t *vals, int n)
{
    if (t->defined)
        return;
    t->defined = 1;
    t->bits[0] = 0;
    memcpy(t->bits + 1, bits, 16);
    memset(t->vals, 0, sizeof t->vals);
    memcpy(t->vals, vals, (size_t)n);
}

/* ---------------------------------------------------------------------- */
/* Inverse DCT: jidctint.c jpeg_idct_islow                                 */
/* ---------------------------------------------------------------------- */

#define JPEG_FIX_0_298631336 2446
#define JPEG_FIX_0_390180644 3196
#define JPEG_FIX_0_541196100 4433
#define JPEG_FIX_0_765366865 6270
#define JPEG_FIX_0_899976223 7373
#define JPEG_FIX_1_175875602 9633
#define JPEG_FIX_1_501321110 12299
#define JPEG_FIX_1_847759065 15137
#define JPEG_FIX_1_961570560 16069
#define JPEG_FIX_2_053119869 16819
#define JPEG_FIX_2_562915447 20995
#define JPEG_FIX_3_072711026 25172

/* Inverse DCT. Pillow's libjpeg-turbo runs jidctint.c's algorithm as SIMD
 * code on x86 (jidctint-sse2.asm, jidctint-avx2.asm): the same products and
 * sums, but dequantized coefficients and the results of each pass are
 * 16-bit lanes. On real data this is exactly jidctint.c; on corrupt data
 * (huge coefficients) it wraps and saturates differently from the C code, so
 * we follow the SIMD code: 16-bit dequantization, 16-bit sums for in0 +- in4,
 * in3 + in7 and in1 + in5, other arithmetic modulo 2^32, pass outputs
 * saturated to 16 bits and final samples to -128..127 before adding 128. */

/* x taken modulo 2^16 as a signed value, kept as a (modulo 2^32) lane. */
static uint32_t jpeg_lane16(uint32_t x)
{
    return ((x + 0x8000u) & 0xFFFFu) - 0x8000u;
}

static int32_t jpeg_sat16(int32_t v)
{
    return v < -32768 ? -32768 : v > 32767 ? 32767 : v;
}

/* One pass over eight 1-D transforms side by side: in[8*k + i] is
 * coefficient k of lane i, out[8*n + i] receives sample n of lane i,
 * descaled by `shift` with rounding and saturated to 16 bits. The arithmetic
 * shift is the one libjpeg assumes. The lanes have no branches, so the loop
 * vectorizes. */
static void jpeg_idct_pass(const uint32_t *restrict in, int32_t *restrict out, int shift)
{
    int i;
    for (i = 0; i < 8; i++) {
        uint32_t tmp0, tmp1, tmp2, tmp3, tmp10, tmp11, tmp12, tmp13, z1, z2, z3, z4, z5;
        uint32_t round = 1u << (shift - 1);
        /* even part */
        z2 = in[16 + i];
        z3 = in[48 + i];
        z1 = (z2 + z3) * JPEG_FIX_0_541196100;
        tmp2 = z1 - z3 * JPEG_FIX_1_847759065;
        tmp3 = z1 + z2 * JPEG_FIX_0_765366865;
        tmp0 = jpeg_lane16(in[i] + in[32 + i]) << 13;
        tmp1 = jpeg_lane16(in[i] - in[32 + i]) << 13;
        tmp10 = tmp0 + tmp3;
        tmp13 = tmp0 - tmp3;
        tmp11 = tmp1 + tmp2;
        tmp12 = tmp1 - tmp2;
        /* odd part */
        tmp0 = in[56 + i];
        tmp1 = in[40 + i];
        tmp2 = in[24 + i];
        tmp3 = in[8 + i];
        z1 = tmp0 + tmp3;
        z2 = tmp1 + tmp2;
        z3 = jpeg_lane16(tmp0 + tmp2);
        z4 = jpeg_lane16(tmp1 + tmp3);
        z5 = (z3 + z4) * JPEG_FIX_1_175875602;
        tmp0 *= JPEG_FIX_0_298631336;
        tmp1 *= JPEG_FIX_2_053119869;
        tmp2 *= JPEG_FIX_3_072711026;
        tmp3 *= JPEG_FIX_1_501321110;
        z1 *= 0u - JPEG_FIX_0_899976223;
        z2 *= 0u - JPEG_FIX_2_562915447;
        z3 *= 0u - JPEG_FIX_1_961570560;
        z4 *= 0u - JPEG_FIX_0_390180644;
        z3 += z5;
        z4 += z5;
        tmp0 += z1 + z3;
        tmp1 += z2 + z4;
        tmp2 += z2 + z3;
        tmp3 += z1 + z4;
        out[i] = jpeg_sat16((int32_t)(tmp10 + tmp3 + round) >> shift);
        out[56 + i] = jpeg_sat16((int32_t)(tmp10 - tmp3 + round) >> shift);
        out[8 + i] = jpeg_sat16((int32_t)(tmp11 + tmp2 + round) >> shift);
        out[48 + i] = jpeg_sat16((int32_t)(tmp11 - tmp2 + round) >> shift);
        out[16 + i] = jpeg_sat16((int32_t)(tmp12 + tmp1 + round) >> shift);
        out[40 + i] = jpeg_sat16((int32_t)(tmp12 - tmp1 + round) >> shift);
        out[24 + i] = jpeg_sat16((int32_t)(tmp13 + tmp0 + round) >> shift);
        out[32 + i] = jpeg_sat16((int32_t)(tmp13 - tmp0 + round) >> shift);
    }
}

/* A descaled sample, centred on 0, to 0..255. */
static uint8_t jpeg_idct_sample(int32_t v)
{
    return (uint8_t)((v < -128 ? -128 : v > 127 ? 127 : v) + 128);
}

/* Dequantize one 8x8 block of coefficients (natural order) and transform
 * it to samples (jpeg_idct_islow): columns into a workspace scaled by 2^2
 * (PASS1_BITS), then rows, descaled by 2^(13+2+3). */
static void jpeg_idct_islow(const int16_t *in, const int16_t *q, uint8_t *out, size_t stride)
{
    uint32_t x[64];
    int32_t ws[64];
    int i, j, lower = 0, first = 0;
    for (i = 8; i < 64; i++)
        lower |= in[i];
    if (lower == 0) {
        /* rows 1..7 all zero: each column is its dequantized top
         * coefficient times 4 (a 16-bit shift in the SIMD code) */
        for (i = 1; i < 8; i++)
            first |= in[i];
        if (first == 0) {
            /* and only a DC term: one value for the whole block */
            int32_t dc = (int32_t)jpeg_lane16(jpeg_lane16((uint32_t)((int32_t)in[0] * q[0])) << 2);
            uint8_t v = jpeg_idct_sample((dc + 16) >> 5);
            for (i = 0; i < 8; i++)
                memset(out + (size_t)i * stride, v, 8);
            return;
        }
        for (i = 0; i < 8; i++)
            for (j = 0; j < 8; j++)
                x[8 * j + i] = jpeg_lane16(jpeg_lane16((uint32_t)((int32_t)in[j] * q[j])) << 2);
    } else {
        for (i = 0; i < 64; i++)
            x[i] = jpeg_lane16((uint32_t)((int32_t)in[i] * q[i]));
        /* pass 1: the columns, ws[8 * row + column] */
        jpeg_idct_pass(x, ws, 11);
        /* pass 2 wants the rows side by side */
        for (i = 0; i < 8; i++)
            for (j = 0; j < 8; j++)
                x[8 * j + i] = (uint32_t)ws[8 * i + j];
    }
    jpeg_idct_pass(x, ws, 18);
    for (i = 0; i < 8; i++)
        for (j = 0; j < 8; j++)
            out[(size_t)i * stride + (size_t)j] = jpeg_idct_sample(ws[8 * j + i]);
}

/* ---------------------------------------------------------------------- */
/* Entropy decoding of one MCU (jdhuff.c decode_mcu, jdphuff.c decode_mcu_*) */
/* ---------------------------------------------------------------------- */

/* DC difference -> DC value; libjpeg-turbo refuses a predictor overflow. */
static int32_t jpeg_add_dc(jpeg_decoder *d, jpeg_component *c, int s)
{
    if ((c->last_dc >= 0 && s > INT32_MAX - c->last_dc) || (c->last_dc < 0 && s < INT32_MIN - c->last_dc)) {
        d->bad_coef = 1;
        return c->last_dc;
    }
    c->last_dc += s;
    return c->last_dc;
}

/* Sequential Huffman block: DC difference, then run/size coded AC values. */
static void jpeg_block_sequential(jpeg_decoder *d, jpeg_component *c, int16_t *blk)
{
    const jpeg_huff_table *ac = &d->ac_tbl[c->ac_tbl];
    int s = jpeg_huff_decode(d, &d->dc_tbl[c->dc_tbl]), k, r;
    if (s)
        s = jpeg_extend(jpeg_get_bits(d, s), s);
    blk[0] = jpeg_wrap16(jpeg_add_dc(d, c, s));
    for (k = 1; k < 64; k++) {
        if (d->nbits >= 9) {
            int look = (int)((d->buf >> (d->nbits - 9)) & 511), rl = ac->fast_run_len[look];
            if (rl) {
                /* the same bits as the two steps below, consumed at once */
                d->nbits -= rl & 15;
                k += rl >> 4;
                blk[jpeg_natural_order[k]] = ac->fast_value[look];
                continue;
            }
        }
        s = jpeg_huff_decode(d, ac);
        r = s >> 4;
        s &= 15;
        if (s) {
            k += r;
            blk[jpeg_natural_order[k]] = (int16_t)jpeg_extend(jpeg_get_bits(d, s), s);
        } else {
            if (r != 15)
                break;
            k += 15;
        }
    }
}

/* Progressive, first DC scan: the DC value scaled by 2^Al. */
static void jpeg_block_dc_first(jpeg_decoder *d, jpeg_component *c, int16_t *blk)
{
    int s = jpeg_huff_decode(d, &d->dc_tbl[c->dc_tbl]);
    if (s)
        s = jpeg_extend(jpeg_get_bits(d, s), s);
    blk[0] = jpeg_wrap16((int64_t)jpeg_add_dc(d, c, s) * (1 << d->al));
}

/* Progressive, DC refinement: one more bit of each DC value. */
static void jpeg_block_dc_refine(jpeg_decoder *d, int16_t *blk)
{
    if (jpeg_get_bits(d, 1))
        blk[0] = (int16_t)(blk[0] | (1 << d->al));
}

/* Progressive, first AC scan of band Ss..Se, with end-of-band runs. */
static void jpeg_block_ac_first(jpeg_decoder *d, jpeg_component *c, int16_t *blk)
{
    const jpeg_huff_table *t = &d->ac_tbl[c->ac_tbl];
    int k, s, r;
    if (d->eobrun > 0) {
        d->eobrun--;
        return;
    }
    for (k = d->ss; k <= d->se; k++) {
        s = jpeg_huff_decode(d, t);
        r = s >> 4;
        s &= 15;
        if (s) {
            k += r;
            s = jpeg_extend(jpeg_get_bits(d, s), s);
            blk[jpeg_natural_order[k]] = jpeg_wrap16((int64_t)s * (1 << d->al));
        } else if (r == 15) {
            k += 15;
        } else {
            d->eobrun = 1 << r;
            if (r)
                d->eobrun += jpeg_get_bits(d, r);
            d->eobrun--;
            break;
        }
    }
}

/* One correction bit for an already nonzero coefficient. */
static void jpeg_refine_coef(jpeg_decoder *d, int16_t *coef)
{
    int p1 = 1 << d->al;
    if (jpeg_get_bits(d, 1) && (*coef & p1) == 0)
        *coef = jpeg_wrap16(*coef >= 0 ? *coef + p1 : *coef - p1);
}

/* Progressive, AC refinement (successive approximation): newly nonzero
 * coefficients of +-2^Al, and correction bits for the nonzero ones. */
static void jpeg_block_ac_refine(jpeg_decoder *d, jpeg_component *c, int16_t *blk)
{
    const jpeg_huff_table *t = &d->ac_tbl[c->ac_tbl];
    int k = d->ss, s, r;
    if (d->eobrun == 0) {
        for (; k <= d->se; k++) {
            s = jpeg_huff_decode(d, t);
            r = s >> 4;
            s &= 15;
            if (s) {
                /* the size of a new coefficient should be 1 (libjpeg only warns) */
                s = jpeg_get_bits(d, 1) ? 1 << d->al : -(1 << d->al);
            } else if (r != 15) {
                d->eobrun = 1 << r;
                if (r)
                    d->eobrun += jpeg_get_bits(d, r);
                break;
            }
            /* skip r zero coefficients, refining the nonzero ones passed */
            do {
                int16_t *coef = blk + jpeg_natural_order[k];
                if (*coef != 0)
                    jpeg_refine_coef(d, coef);
                else if (--r < 0)
                    break;
                k++;
            } while (k <= d->se);
            if (s)
                blk[jpeg_natural_order[k]] = (int16_t)s;
        }
    }
    if (d->eobrun > 0) {
        for (; k <= d->se; k++) {
            int16_t *coef = blk + jpeg_natural_order[k];
            if (*coef != 0)
                jpeg_refine_coef(d, coef);
        }
        d->eobrun--;
    }
}

/* jdhuff.c process_restart + jdmarker.c read_restart_marker and
 * jpeg_resync_to_restart: drop leftover bits, expect RSTn, reset the
 * predictors. A wrong marker is handled as libjpeg's resync does. */
static void jpeg_restart(jpeg_decoder *d)
{
    int i, desired = d->next_restart;
    d->nbits = 0;
    if (d->marker == 0) {
        d->marker = jpeg_next_marker(d);
        if (d->marker < 0)
            d->truncated = 1;
    }
    if (d->marker == 0xD0 + desired) {
        d->marker = 0;
    } else {
        for (;;) {
            int m = d->marker, action;
            if (m < 0)
                break;
            if (m < 0xC0)
                action = 2;
            else if (m < 0xD0 || m > 0xD7)
                action = 3;
            else if (m == 0xD0 + ((desired + 1) & 7) || m == 0xD0 + ((desired + 2) & 7))
                action = 3;
            else if (m == 0xD0 + ((desired + 7) & 7) || m == 0xD0 + ((desired + 6) & 7))
                action = 2;
            else
                action = 1;
            if (action == 1) {
                d->marker = 0;
                break;
            }
            if (action == 3)
                break;
            d->marker = jpeg_next_marker(d);
            if (d->marker < 0)
                d->truncated = 1;
        }
    }
    d->next_restart = (d->next_restart + 1) & 7;
    for (i = 0; i < d->ns; i++)
        d->scomp[i]->last_dc = 0;
    d->eobrun = 0;
    d->restarts_to_go = d->restart_interval;
    if (d->marker == 0)
        d->insufficient = 0;
}

/* One block of the current scan, by scan type. */
static void jpeg_decode_block(jpeg_decoder *d, jpeg_component *c, int16_t *blk)
{
    if (!d->progressive)
        jpeg_block_sequential(d, c, blk);
    else if (d->ss == 0 && d->ah == 0)
        jpeg_block_dc_first(d, c, blk);
    else if (d->ss == 0)
        jpeg_block_dc_refine(d, blk);
    else if (d->ah == 0)
        jpeg_block_ac_first(d, c, blk);
    else
        jpeg_block_ac_refine(d, c, blk);
}

static void jpeg_emit_rows(jpeg_decoder *d);

/* ---------------------------------------------------------------------- */
/* Scans (jdinput.c per_scan_setup, jdcoefct.c consume_data/decompress_onepass) */
/* ---------------------------------------------------------------------- */

/* Walk the MCUs of a scan in order. Single-scan files are transformed block
 * by block into the sample planes; multi-scan files accumulate coefficients
 * in the component buffers. */
static int jpeg_decode_scan(jpeg_decoder *d)
{
    int16_t mcu[10 * 64];
    int mx, my, mcus_x, mcus_y, i, blocks = 0;
    if (d->ns == 1) {
        mcus_x = d->scomp[0]->wb;
        mcus_y = d->scomp[0]->hb;
        blocks = 1;
    } else {
        mcus_x = d->mcus_x;
        mcus_y = d->mcus_y;
        for (i = 0; i < d->ns; i++)
            blocks += d->scomp[i]->h * d->scomp[i]->v;
        if (blocks > 10)
            return jpeg_fail(d, CLIP_EINPUT, "JPEG MCU has too many blocks (%d, at most 10).", blocks);
    }
    d->buf = 0;
    d->nbits = 0;
    d->insufficient = 0;
    d->eobrun = 0;
    d->next_restart = 0;
    d->restarts_to_go = d->restart_interval;
    for (i = 0; i < d->ns; i++)
        d->scomp[i]->last_dc = 0;

    for (my = 0; my < mcus_y; my++) {
        int imcu_row = d->ns == 1 ? my / d->scomp[0]->v : my;
        for (mx = 0; mx < mcus_x; mx++) {
            int n = 0, ci, bx, by;
            if (!d->insufficient)
                d->last_good_imcu_row = imcu_row;
            if (d->restart_interval) {
                if (d->restarts_to_go == 0)
                    jpeg_restart(d);
                d->restarts_to_go--;
            }
            if (d->single_scan)
                memset(mcu, 0, sizeof(int16_t) * 64 * (size_t)blocks);
            /* a segment cut short by a marker leaves its remaining MCUs
             * untouched (DC refinement reads zero bits there: no change) */
            if (d->insufficient && !(d->progressive && d->ss == 0 && d->ah != 0))
                goto decoded;
            for (ci = 0; ci < d->ns; ci++) {
                jpeg_component *c = d->scomp[ci];
                int hh = d->ns == 1 ? 1 : c->h, vv = d->ns == 1 ? 1 : c->v;
                for (by = 0; by < vv; by++)
                    for (bx = 0; bx < hh; bx++, n++) {
                        int x = mx * hh + bx, y = my * vv + by;
                        int16_t *blk = d->single_scan ? mcu + 64 * n
                                                      : c->coef + ((size_t)y * (size_t)c->bw + (size_t)x) * 64;
                        jpeg_decode_block(d, c, blk);
                    }
            }
        decoded:
            if (d->truncated)
                return jpeg_truncated(d);
            if (d->bad_coef)
                return jpeg_fail(d, CLIP_EINPUT, "JPEG DC coefficient overflows.");
            if (d->single_scan) {
                n = 0;
                for (ci = 0; ci < d->ns; ci++) {
                    jpeg_component *c = d->scomp[ci];
                    int hh = d->ns == 1 ? 1 : c->h, vv = d->ns == 1 ? 1 : c->v;
                    for (by = 0; by < vv; by++)
                        for (bx = 0; bx < hh; bx++, n++) {
                            int x = mx * hh + bx, y = my * vv + by;
                            if (x < c->wb && y < c->hb)
                                jpeg_idct_islow(mcu + 64 * n, c->qmul,
                                                c->plane + (size_t)y * 8 * c->stride + (size_t)x * 8,
                                                c->stride);
                        }
                }
            }
        }
        if (d->single_scan) {
            for (i = 0; i < d->ns; i++) {
                jpeg_component *c = d->scomp[i];
                int rows = (my + 1) * 8 * (d->ns == 1 ? 1 : c->v);
                c->rows_done = rows < c->hb * 8 ? rows : c->hb * 8;
            }
            jpeg_emit_rows(d);
        }
    }
    return 0;
}

/* Per-scan checks and setup (get_sos, jdphuff.c start_pass_phuff_decoder,
 * jdhuff.c start_pass_huff_decoder, jdinput.c latch_quant_tables). */
static int jpeg_start_scan(jpeg_decoder *d, const uint8_t *p, int len)
{
    int i, j, rc;
    if (!d->seen_sof)
        return jpeg_fail(d, CLIP_EINPUT, "JPEG scan comes before the frame header.");
    if (len < 1 || p[0] < 1 || p[0] > 4 || len != 4 + 2 * p[0])
        return jpeg_fail(d, CLIP_EINPUT, "JPEG scan header has a bad length.");
    d->ns = p[0];
    for (i = 0; i < d->ns; i++) {
        int id = p[1 + 2 * i], sel = p[2 + 2 * i];
        jpeg_component *c = NULL;
        for (j = 0; j < d->ncomp; j++)
            if (d->comp[j].id == id)
                c = &d->comp[j];
        if (!c)
            return jpeg_fail(d, CLIP_EINPUT, "JPEG scan names an unknown component %d.", id);
        for (j = 0; j < i; j++)
            if (d->scomp[j] == c)
                return jpeg_fail(d, CLIP_EINPUT, "JPEG scan names component %d twice.", id);
        c->dc_tbl = sel >> 4;
        c->ac_tbl = sel & 15;
        d->scomp[i] = c;
    }
    d->ss = p[1 + 2 * d->ns];
    d->se = p[2 + 2 * d->ns];
    d->ah = p[3 + 2 * d->ns] >> 4;
    d->al = p[3 + 2 * d->ns] & 15;
    d->scans++;

    if (d->scans == 1) {
        /* jdhuff.c jinit_huff_decoder (sequential files only, not
         * jdphuff.c): standard tables for empty slots 0 and 1 */
        if (!d->progressive) {
            jpeg_std_table(&d->dc_tbl[0], jpeg_std_dc_luma_bits, jpeg_std_dc_vals, 12);
            jpeg_std_table(&d->dc_tbl[1], jpeg_std_dc_chroma_bits, jpeg_std_dc_vals, 12);
            jpeg_std_table(&d->ac_tbl[0], jpeg_std_ac_luma_bits, jpeg_std_ac_luma_vals, 162);
            jpeg_std_table(&d->ac_tbl[1], jpeg_std_ac_chroma_bits, jpeg_std_ac_chroma_vals, 162);
        }
        d->single_scan = !d->progressive && d->ns == d->ncomp;
    }

    if (d->progressive) {
        int bad = 0;
        if (d->ss == 0) {
            if (d->se != 0) bad = 1;
        } else {
            if (d->ss > d->se || d->se > 63) bad = 1;
            if (d->ns != 1) bad = 1;
        }
        if (d->ah != 0 && d->al != d->ah - 1) bad = 1;
        if (d->al > 13) bad = 1;
        if (bad)
            return jpeg_fail(d, CLIP_EINPUT, "JPEG progressive scan parameters are invalid (Ss=%d Se=%d Ah=%d Al=%d).",
                             d->ss, d->se, d->ah, d->al);
        /* progression status: coef_bits[k] = Al after this scan */
        for (i = 0; i < d->ns; i++) {
            jpeg_component *c = d->scomp[i];
            int lo = d->ss < 1 ? d->ss : 1, hi = d->se > 9 ? d->se : 9, k;
            for (k = lo; k <= hi; k++)
                c->prev_coef_bits[k] = d->scans > 1 ? c->coef_bits[k] : 0;
            for (k = d->ss; k <= d->se; k++)
                c->coef_bits[k] = d->al;
        }
    }

    for (i = 0; i < d->ns; i++) {
        jpeg_component *c = d->scomp[i];
        if (!d->progressive || (d->ss == 0 && d->ah == 0))
            if ((rc = jpeg_build_huffman(d, c->dc_tbl < 4 ? &d->dc_tbl[c->dc_tbl] : NULL, 1)) != 0)
                return rc;
        if (!d->progressive || d->ss != 0)
            if ((rc = jpeg_build_huffman(d, c->ac_tbl < 4 ? &d->ac_tbl[c->ac_tbl] : NULL, 0)) != 0)
                return rc;
        if (!c->q_latched) {
            if (c->tq >= 4 || !d->qt_defined[c->tq])
                return jpeg_fail(d, CLIP_EINPUT, "JPEG component uses undefined quantization table %d.", c->tq);
            memcpy(c->qval, d->qt[c->tq], sizeof c->qval);
            for (j = 0; j < 64; j++)
                c->qmul[j] = jpeg_wrap16(c->qval[j]);
            c->q_latched = 1;
        }
    }
    return 0;
}

/* Allocate the image and the per-component storage once the first scan
 * says which kind of file this is: sample planes and row buffers, and
 * coefficients for multi-scan files. */
static int jpeg_allocate(jpeg_decoder *d)
{
    int i;
    d->rgb = (uint8_t *)malloc((size_t)d->w * (size_t)d->h * 3);
    if (!d->rgb)
        return jpeg_fail(d, CLIP_ENOMEM, "out of memory decoding a %d x %d JPEG.", d->w, d->h);
    for (i = 0; i < d->ncomp; i++) {
        jpeg_component *c = &d->comp[i];
        uint64_t samples = (uint64_t)c->wb * 8 * (uint64_t)c->hb * 8;
        c->stride = (size_t)c->wb * 8;
        if (samples > SIZE_MAX)
            return jpeg_fail(d, CLIP_ENOMEM, "JPEG image is too large for memory.");
        c->plane = (uint8_t *)malloc((size_t)samples);
        c->row = (uint8_t *)malloc((size_t)d->w + 16);
        if (!c->plane || !c->row)
            return jpeg_fail(d, CLIP_ENOMEM, "out of memory decoding a %d x %d JPEG.", d->w, d->h);
        if (!d->single_scan) {
            uint64_t n = (uint64_t)c->bw * (uint64_t)c->bh * 64;
            if (n > SIZE_MAX / sizeof(int16_t))
                return jpeg_fail(d, CLIP_ENOMEM, "JPEG image is too large for memory.");
            c->coef = (int16_t *)calloc((size_t)n, sizeof(int16_t));
            if (!c->coef)
                return jpeg_fail(d, CLIP_ENOMEM, "out of memory decoding a %d x %d JPEG.", d->w, d->h);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Block smoothing for incomplete progressive files (jdcoefct.c           */
/* smoothing_ok, decompress_smooth_data)                                   */
/* ---------------------------------------------------------------------- */

/* Smoothing applies when every component has DC data and nonzero
 * quantizers, and some of the first 9 AC coefficients are not yet known to
 * full precision. Latches the progression state it will use. */
static int jpeg_smoothing_ok(const jpeg_decoder *d, int latch[4][10], int prev_latch[4][10])
{
    static const int qpos[10] = { 0, 1, 8, 16, 9, 2, 3, 10, 17, 24 };
    int useful = 0, ci, k;
    if (!d->progressive)
        return 0;
    for (ci = 0; ci < d->ncomp; ci++) {
        const jpeg_component *c = &d->comp[ci];
        if (!c->q_latched)
            return 0;
        for (k = 0; k < 10; k++)
            if (c->qval[qpos[k]] == 0)
                return 0;
        if (c->coef_bits[0] < 0)
            return 0;
        latch[ci][0] = prev_latch[ci][0] = c->coef_bits[0];
        for (k = 1; k < 10; k++) {
            prev_latch[ci][k] = d->scans > 1 ? c->prev_coef_bits[k] : -1;
            latch[ci][k] = c->coef_bits[k];
            if (c->coef_bits[k] != 0)
                useful = 1;
        }
    }
    return useful;
}

/* Estimate one still-unknown low-frequency coefficient from the DC values
 * around the block: pred = round(num / (Q << 8)) clamped below 2^Al. */
static int16_t jpeg_smooth_pred(int64_t num, int64_t q, int al)
{
    int64_t pred;
    if (num >= 0) {
        pred = (q * 128 + num) / (q * 256);
        if (al > 0 && pred >= (1 << al))
            pred = (1 << al) - 1;
    } else {
        pred = (q * 128 - num) / (q * 256);
        if (al > 0 && pred >= (1 << al))
            pred = (1 << al) - 1;
        pred = -pred;
    }
    return jpeg_wrap16(pred);
}

/* The inverse DCT of the blocks of component ci in iMCU row imcu, with the
 * first AC coefficients (and with no AC data at all, the DC too) estimated
 * from a 5x5 neighbourhood of DC values, exactly as libjpeg-turbo 2.1.5 does
 * it. That includes the way it picks neighbours: rows two away are replaced
 * by the nearer row judging from the iMCU row index alone (so inside a v=2
 * component some are), and in the first column of a 2-block-wide component
 * the block two to the right is the block itself (both changed in
 * libjpeg-turbo 3.0.1). */
static void jpeg_smooth_row(jpeg_decoder *d, int ci, int imcu, int latch[4][10], int prev_latch[4][10])
{
    jpeg_component *c = &d->comp[ci];
    int total_imcu = d->mcus_y, block_rows, br, *bits, change_dc;
    int64_t Q00 = c->qval[0], Q01 = c->qval[1], Q10 = c->qval[8], Q20 = c->qval[16], Q11 = c->qval[9],
            Q02 = c->qval[2], Q03 = c->qval[3], Q12 = c->qval[10], Q21 = c->qval[17], Q30 = c->qval[24];
    if (imcu < total_imcu - 1) {
        block_rows = c->v;
    } else {
        block_rows = c->hb % c->v;
        if (block_rows == 0) block_rows = c->v;
    }
    /* rows past the point where the last scan ran out of data use the
     * progression state from before that scan */
    bits = imcu > d->last_good_imcu_row ? prev_latch[ci] : latch[ci];
    change_dc = bits[1] == -1 && bits[2] == -1 && bits[3] == -1 && bits[4] == -1 && bits[5] == -1 &&
                bits[6] == -1 && bits[7] == -1 && bits[8] == -1 && bits[9] == -1;
    for (br = 0; br < block_rows; br++) {
        int row = imcu * c->v + br;
        int r_prev = br > 0 || imcu > 0 ? row - 1 : row;
        int r_pp = br > 1 || imcu > 1 ? row - 2 : r_prev;
        int r_next = br < block_rows - 1 || imcu < total_imcu - 1 ? row + 1 : row;
        int r_nn = br < block_rows - 2 || imcu + 1 < total_imcu - 1 ? row + 2 : r_next;
        const int16_t *rows[5];
        int DC01, DC02, DC03, DC04, DC05, DC06, DC07, DC08, DC09, DC10, DC11, DC12, DC13,
            DC14, DC15, DC16, DC17, DC18, DC19, DC20, DC21, DC22, DC23, DC24, DC25;
        int b, last = c->wb - 1;
        rows[0] = c->coef + (size_t)r_pp * c->bw * 64;
        rows[1] = c->coef + (size_t)r_prev * c->bw * 64;
        rows[2] = c->coef + (size_t)row * c->bw * 64;
        rows[3] = c->coef + (size_t)r_next * c->bw * 64;
        rows[4] = c->coef + (size_t)r_nn * c->bw * 64;
        DC01 = DC02 = DC03 = DC04 = DC05 = rows[0][0];
        DC06 = DC07 = DC08 = DC09 = DC10 = rows[1][0];
        DC11 = DC12 = DC13 = DC14 = DC15 = rows[2][0];
        DC16 = DC17 = DC18 = DC19 = DC20 = rows[3][0];
        DC21 = DC22 = DC23 = DC24 = DC25 = rows[4][0];
        for (b = 0; b <= last; b++) {
            int16_t ws[64];
            int al;
            int64_t num;
            memcpy(ws, rows[2] + (size_t)b * 64, sizeof ws);
            if (b == 0 && b < last) {
                DC04 = rows[0][64];
                DC09 = rows[1][64];
                DC14 = rows[2][64];
                DC19 = rows[3][64];
                DC24 = rows[4][64];
            }
            if (b + 1 < last) {
                DC05 = rows[0][(size_t)(b + 2) * 64];
                DC10 = rows[1][(size_t)(b + 2) * 64];
                DC15 = rows[2][(size_t)(b + 2) * 64];
                DC20 = rows[3][(size_t)(b + 2) * 64];
                DC25 = rows[4][(size_t)(b + 2) * 64];
            }
            if ((al = bits[1]) != 0 && ws[1] == 0) {
                num = Q00 * (change_dc ?
                      (int64_t)(-DC01 - DC02 + DC04 + DC05 - 3 * DC06 + 13 * DC07 - 13 * DC09 + 3 * DC10 -
                                3 * DC11 + 38 * DC12 - 38 * DC14 + 3 * DC15 - 3 * DC16 + 13 * DC17 -
                                13 * DC19 + 3 * DC20 - DC21 - DC22 + DC24 + DC25) :
                      (int64_t)(-7 * DC11 + 50 * DC12 - 50 * DC14 + 7 * DC15));
                ws[1] = jpeg_smooth_pred(num, Q01, al);
            }
            if ((al = bits[2]) != 0 && ws[8] == 0) {
                num = Q00 * (change_dc ?
                      (int64_t)(-DC01 - 3 * DC02 - 3 * DC03 - 3 * DC04 - DC05 - DC06 + 13 * DC07 +
                                38 * DC08 + 13 * DC09 - DC10 + DC16 - 13 * DC17 - 38 * DC18 -
                                13 * DC19 + DC20 + DC21 + 3 * DC22 + 3 * DC23 + 3 * DC24 + DC25) :
                      (int64_t)(-7 * DC03 + 50 * DC08 - 50 * DC18 + 7 * DC23));
                ws[8] = jpeg_smooth_pred(num, Q10, al);
            }
            if ((al = bits[3]) != 0 && ws[16] == 0) {
                num = Q00 * (change_dc ?
                      (int64_t)(DC03 + 2 * DC07 + 7 * DC08 + 2 * DC09 - 5 * DC12 - 14 * DC13 -
                                5 * DC14 + 2 * DC17 + 7 * DC18 + 2 * DC19 + DC23) :
                      (int64_t)(-DC03 + 13 * DC08 - 24 * DC13 + 13 * DC18 - DC23));
                ws[16] = jpeg_smooth_pred(num, Q20, al);
            }
            if ((al = bits[4]) != 0 && ws[9] == 0) {
                num = Q00 * (change_dc ?
                      (int64_t)(-DC01 + DC05 + 9 * DC07 - 9 * DC09 - 9 * DC17 + 9 * DC19 + DC21 - DC25) :
                      (int64_t)(DC10 + DC16 - 10 * DC17 + 10 * DC19 - DC02 - DC20 + DC22 - DC24 + DC04 -
                                DC06 + 10 * DC07 - 10 * DC09));
                ws[9] = jpeg_smooth_pred(num, Q11, al);
            }
            if ((al = bits[5]) != 0 && ws[2] == 0) {
                num = Q00 * (change_dc ?
                      (int64_t)(2 * DC07 - 5 * DC08 + 2 * DC09 + DC11 + 7 * DC12 - 14 * DC13 +
                                7 * DC14 + DC15 + 2 * DC17 - 5 * DC18 + 2 * DC19) :
                      (int64_t)(-DC11 + 13 * DC12 - 24 * DC13 + 13 * DC14 - DC15));
                ws[2] = jpeg_smooth_pred(num, Q02, al);
            }
            if (change_dc) {
                if ((al = bits[6]) != 0 && ws[3] == 0) {
                    num = Q00 * (int64_t)(DC07 - DC09 + 2 * DC12 - 2 * DC14 + DC17 - DC19);
                    ws[3] = jpeg_smooth_pred(num, Q03, al);
                }
                if ((al = bits[7]) != 0 && ws[10] == 0) {
                    num = Q00 * (int64_t)(DC07 - 3 * DC08 + DC09 - DC17 + 3 * DC18 - DC19);
                    ws[10] = jpeg_smooth_pred(num, Q12, al);
                }
                if ((al = bits[8]) != 0 && ws[17] == 0) {
                    num = Q00 * (int64_t)(DC07 - DC09 - 3 * DC12 + 3 * DC14 + DC17 - DC19);
                    ws[17] = jpeg_smooth_pred(num, Q21, al);
                }
                if ((al = bits[9]) != 0 && ws[24] == 0) {
                    num = Q00 * (int64_t)(DC07 + 2 * DC08 + DC09 - DC17 - 2 * DC18 - DC19);
                    ws[24] = jpeg_smooth_pred(num, Q30, al);
                }
                num = Q00 * (int64_t)(-2 * DC01 - 6 * DC02 - 8 * DC03 - 6 * DC04 - 2 * DC05 -
                                      6 * DC06 + 6 * DC07 + 42 * DC08 + 6 * DC09 - 6 * DC10 -
                                      8 * DC11 + 42 * DC12 + 152 * DC13 + 42 * DC14 - 8 * DC15 -
                                      6 * DC16 + 6 * DC17 + 42 * DC18 + 6 * DC19 - 6 * DC20 -
                                      2 * DC21 - 6 * DC22 - 8 * DC23 - 6 * DC24 - 2 * DC25);
                ws[0] = jpeg_smooth_pred(num, Q00, 0);
            }
            jpeg_idct_islow(ws, c->qmul, c->plane + (size_t)row * 8 * c->stride + (size_t)b * 8,
                            c->stride);
            DC01 = DC02; DC02 = DC03; DC03 = DC04; DC04 = DC05;
            DC06 = DC07; DC07 = DC08; DC08 = DC09; DC09 = DC10;
            DC11 = DC12; DC12 = DC13; DC13 = DC14; DC14 = DC15;
            DC16 = DC17; DC17 = DC18; DC18 = DC19; DC19 = DC20;
            DC21 = DC22; DC22 = DC23; DC23 = DC24; DC24 = DC25;
        }
    }
}

/* ---------------------------------------------------------------------- */
/* Upsampling (jdsample.c) and colour conversion (jdcolor.c, Pillow)       */
/* ---------------------------------------------------------------------- */

/* One output row y of component c at full resolution (at least w samples).
 * Neighbour rows beyond the image repeat the edge row, as jdmainct.c's
 * context pointers do. */
static const uint8_t *jpeg_upsample_row(const jpeg_decoder *d, const jpeg_component *c, int y)
{
    int hx = d->max_h / c->h, vy = d->max_v / c->v, n = c->dw, x;
    uint8_t *out = c->row;
    const uint8_t *in;
    if (vy == 2 && (hx == 1 || (hx == 2 && n > 2))) {
        /* h1v2 and h2v2 fancy: triangle filter between the nearest row and
         * the next nearest (above for even output rows, below for odd) */
        int r = y >> 1, r1 = (y & 1) ? r + 1 : r - 1;
        const uint8_t *in0, *in1;
        if (r1 < 0) r1 = 0;
        if (r1 > c->dh - 1) r1 = c->dh - 1;
        in0 = c->plane + (size_t)r * c->stride;
        in1 = c->plane + (size_t)r1 * c->stride;
        if (hx == 1) {
            int bias = (y & 1) ? 2 : 1;
            for (x = 0; x < n; x++)
                out[x] = (uint8_t)((in0[x] * 3 + in1[x] + bias) >> 2);
        } else {
            /* column sums 3 * nearer + further, then 3:1 across, / 16 */
            int c0 = in0[0] * 3 + in1[0], cl = in0[n - 1] * 3 + in1[n - 1];
            out[0] = (uint8_t)((c0 * 4 + 8) >> 4);
            out[1] = (uint8_t)((c0 * 3 + in0[1] * 3 + in1[1] + 7) >> 4);
            for (x = 1; x < n - 1; x++) {
                int cur = in0[x] * 3 + in1[x];
                out[2 * x] = (uint8_t)((cur * 3 + in0[x - 1] * 3 + in1[x - 1] + 8) >> 4);
                out[2 * x + 1] = (uint8_t)((cur * 3 + in0[x + 1] * 3 + in1[x + 1] + 7) >> 4);
            }
            out[2 * x] = (uint8_t)((cl * 3 + in0[x - 1] * 3 + in1[x - 1] + 8) >> 4);
            out[2 * x + 1] = (uint8_t)((cl * 4 + 7) >> 4);
        }
        return out;
    }
    in = c->plane + (size_t)(y / vy) * c->stride;
    if (hx == 1)
        return in; /* full size, or int_upsample's row replication */
    if (hx == 2 && vy == 1 && n > 2) {
        /* h2v1 fancy: output pixels at 1/4 and 3/4 between input centres */
        out[0] = in[0];
        out[1] = (uint8_t)((in[0] * 3 + in[1] + 2) >> 2);
        for (x = 1; x < n - 1; x++) {
            int v = in[x] * 3;
            out[2 * x] = (uint8_t)((v + in[x - 1] + 1) >> 2);
            out[2 * x + 1] = (uint8_t)((v + in[x + 1] + 2) >> 2);
        }
        out[2 * x] = (uint8_t)((in[x] * 3 + in[x - 1] + 1) >> 2);
        out[2 * x + 1] = in[x];
        return out;
    }
    /* box filter: h2v1/h2v2 on narrow images, int_upsample otherwise */
    for (x = 0; x < d->w; x++)
        out[x] = in[x / hx];
    return out;
}

/* Whether all component rows output row y needs have been decoded. */
static int jpeg_row_ready(const jpeg_decoder *d, int y)
{
    int ci;
    for (ci = 0; ci < d->ncomp; ci++) {
        const jpeg_component *c = &d->comp[ci];
        int hx = d->max_h / c->h, vy = d->max_v / c->v, need = y / vy;
        if (vy == 2 && (hx == 1 || (hx == 2 && c->dw > 2)))
            need = (y >> 1) + 1 < c->dh - 1 ? (y >> 1) + 1 : c->dh - 1;
        if (need >= c->rows_done)
            return 0;
    }
    return 1;
}

static uint8_t jpeg_clamp255(int32_t v)
{
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* jdcolor.c ycc_rgb_convert. Its tables hold, for x = Cb - 128 or Cr - 128,
 * (FIX(1.40200) * x + ONE_HALF) >> 16 (R), (FIX(1.77200) * x + ONE_HALF) >> 16
 * (B) and -FIX(0.34414) * x + ONE_HALF, -FIX(0.71414) * x (G, summed then
 * shifted), with FIX(v) = (int)(v * 65536 + 0.5): computed here directly. */
static inline void jpeg_ycc_rgb(int y, int cb, int cr, uint8_t *rgb)
{
    cb -= 128;
    cr -= 128;
    rgb[0] = jpeg_clamp255(y + ((91881 * cr + 32768) >> 16));
    rgb[1] = jpeg_clamp255(y + ((-22554 * cb - 46802 * cr + 32768) >> 16));
    rgb[2] = jpeg_clamp255(y + ((116130 * cb + 32768) >> 16));
}

/* Convert every output row whose samples are ready into RGB, as Pillow's
 * convert("RGB") sees what libjpeg hands it: L replicated; RGB as is; YCbCr
 * converted; CMYK (or YCCK turned into CMYK) inverted by Pillow's "CMYK;I"
 * raw mode, then Convert.c cmyk2rgb. */
static void jpeg_emit_rows(jpeg_decoder *d)
{
    for (; d->next_row < d->h && jpeg_row_ready(d, d->next_row); d->next_row++) {
        const uint8_t *s0, *s1 = NULL, *s2 = NULL, *s3 = NULL;
        uint8_t *o = d->rgb + (size_t)d->next_row * (size_t)d->w * 3;
        int x, w = d->w;
        s0 = jpeg_upsample_row(d, &d->comp[0], d->next_row);
        if (d->ncomp >= 3) {
            s1 = jpeg_upsample_row(d, &d->comp[1], d->next_row);
            s2 = jpeg_upsample_row(d, &d->comp[2], d->next_row);
        }
        if (d->ncomp == 4)
            s3 = jpeg_upsample_row(d, &d->comp[3], d->next_row);
        if (d->space == 0) {
            for (x = 0; x < w; x++)
                o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = s0[x];
        } else if (d->space == 1) {
            for (x = 0; x < w; x++) {
                o[3 * x] = s0[x];
                o[3 * x + 1] = s1[x];
                o[3 * x + 2] = s2[x];
            }
        } else if (d->space == 2) {
            for (x = 0; x < w; x++)
                jpeg_ycc_rgb(s0[x], s1[x], s2[x], o + 3 * x);
        } else {
            for (x = 0; x < w; x++) {
                uint8_t cmy[3];
                int k = s3[x], i;
                if (d->space == 4) {
                    /* ycck_cmyk_convert: CMY = 255 - RGB of the YCC triple */
                    jpeg_ycc_rgb(s0[x], s1[x], s2[x], cmy);
                    for (i = 0; i < 3; i++)
                        cmy[i] = (uint8_t)(255 - cmy[i]);
                } else {
                    cmy[0] = s0[x];
                    cmy[1] = s1[x];
                    cmy[2] = s2[x];
                }
                /* Pillow inverts all four ("CMYK;I"), then cmyk2rgb:
                 * out = nk - nk * C' / 255 (rounded as MULDIV255), nk = 255 - K' = K */
                for (i = 0; i < 3; i++) {
                    int t = (255 - cmy[i]) * k + 128;
                    o[3 * x + i] = jpeg_clamp255(k - (((t >> 8) + t) >> 8));
                }
            }
        }
    }
}

/* Multi-scan files once all scans are in: the inverse DCT of the whole
 * coefficient buffer, one iMCU row at a time (jdcoefct.c decompress_data,
 * or decompress_smooth_data), converting rows as they become ready. */
static void jpeg_transform_all(jpeg_decoder *d)
{
    int latch[4][10], prev_latch[4][10], ci, imcu;
    int smooth = jpeg_smoothing_ok(d, latch, prev_latch);
    for (imcu = 0; imcu < d->mcus_y; imcu++) {
        for (ci = 0; ci < d->ncomp; ci++) {
            jpeg_component *c = &d->comp[ci];
            int x, y, y_end = (imcu + 1) * c->v < c->hb ? (imcu + 1) * c->v : c->hb;
            if (smooth)
                jpeg_smooth_row(d, ci, imcu, latch, prev_latch);
            else
                for (y = imcu * c->v; y < y_end; y++)
                    for (x = 0; x < c->wb; x++)
                        jpeg_idct_islow(c->coef + ((size_t)y * c->bw + (size_t)x) * 64, c->qmul,
                                        c->plane + (size_t)y * 8 * c->stride + (size_t)x * 8, c->stride);
            c->rows_done = y_end * 8;
        }
        jpeg_emit_rows(d);
    }
}

/* libjpeg's colour space guess (jdapimin.c default_decompress_parms). */
static int jpeg_color_space(const jpeg_decoder *d)
{
    if (d->ncomp == 1)
        return 0;
    if (d->ncomp == 3) {
        if (d->saw_jfif)
            return 2;
        if (d->saw_adobe)
            return d->adobe_transform == 0 ? 1 : 2;
        if (d->comp[0].id == 82 && d->comp[1].id == 71 && d->comp[2].id == 66) /* 'R', 'G', 'B' */
            return 1;
        return 2;
    }
    return d->saw_adobe && d->adobe_transform != 0 ? 4 : 3;
}

/* ---------------------------------------------------------------------- */
/* The file: markers and scans in order until EOI                          */
/* ---------------------------------------------------------------------- */

static int jpeg_read_file(jpeg_decoder *d)
{
    int before_sos = 1, rc;
    if (d->size < 3 || d->data[0] != 0xFF || d->data[1] != 0xD8 || d->data[2] != 0xFF)
        return jpeg_fail(d, CLIP_EINPUT, "not a JPEG file.");
    d->pos = 2;
    for (;;) {
        int m, len, avail;
        const uint8_t *p;
        if (d->marker > 0) {
            m = d->marker;
            d->marker = 0;
        } else {
            m = jpeg_next_marker(d);
        }
        if (m < 0)
            /* a single-scan file needs no more once its scan is decoded
             * (Pillow ignores libjpeg's suspension in jpeg_finish_decompress) */
            return d->done_single_scan ? 0 : jpeg_truncated(d);
        if (before_sos && m < 0xC0)
            /* JpegImagePlugin.py knows no such marker */
            return jpeg_fail(d, CLIP_EINPUT, "JPEG file has an unknown marker 0x%02X.", m);
        if (m == 0xD9) {
            if (before_sos)
                return jpeg_fail(d, CLIP_EINPUT, "JPEG file ends before any image data.");
            return 0;
        }
        if (m == 0xD8)
            return jpeg_fail(d, CLIP_EINPUT, "JPEG file has a second start-of-image marker.");
        if ((m >= 0xD0 && m <= 0xD7) || m == 0x01)
            continue; /* stray RSTn or TEM: no parameters, ignored */
        if ((m >= 0xC3 && m <= 0xCF && m != 0xC4 && m != 0xC9 && m != 0xCA && m != 0xCC) || m == 0xDE)
            /* lossless, hierarchical, JPG and DHP: libjpeg-turbo refuses them */
            return jpeg_fail(d, CLIP_EINPUT, "this JPEG coding process (marker 0x%02X) is not supported.", m);
        if (m < 0xC0 || m == 0xDF || (m >= 0xF0 && m <= 0xFD))
            return jpeg_fail(d, CLIP_EINPUT, "JPEG file has an unknown marker 0x%02X.", m);
        if (jpeg_segment(d, &p, &len, &avail) != 0)
            return d->done_single_scan ? 0 : jpeg_truncated(d);
        if (avail < len) {
            if (!d->done_single_scan)
                return jpeg_truncated(d);
            if (jpeg_partial_segment_bad(d, m, p, len, avail))
                return jpeg_fail(d, CLIP_EINPUT, "JPEG file has a corrupt marker 0x%02X after its image data.", m);
            return 0;
        }
        if (m == 0xC0 || m == 0xC1 || m == 0xC2 || m == 0xC9 || m == 0xCA) {
            if (d->seen_sof)
                return jpeg_fail(d, CLIP_EINPUT, "JPEG file has two frame headers.");
            if ((rc = jpeg_read_sof(d, m, p, len)) != 0)
                return rc;
        } else if (m == 0xC4) {
            if ((rc = jpeg_read_dht(d, p, len)) != 0)
                return rc;
        } else if (m == 0xDB) {
            if ((rc = jpeg_read_dqt(d, p, len)) != 0)
                return rc;
        } else if (m == 0xDD) {
            if (len != 2)
                return jpeg_fail(d, CLIP_EINPUT, "JPEG restart interval marker has a bad length.");
            d->restart_interval = p[0] << 8 | p[1];
        } else if (m == 0xCC) {
            /* get_dac: arithmetic conditioning, unused by Huffman files */
            int i;
            if (len < 0 || len % 2)
                return jpeg_fail(d, CLIP_EINPUT, "JPEG arithmetic conditioning marker has a bad length.");
            for (i = 0; i < len; i += 2)
                if (p[i] >= 32 || (p[i] < 16 && (p[i + 1] & 15) > p[i + 1] >> 4))
                    return jpeg_fail(d, CLIP_EINPUT, "JPEG arithmetic conditioning marker is invalid.");
        } else if (m >= 0xE0 && m <= 0xEF) {
            if (before_sos)
                jpeg_read_app(d, m, p, len);
        } else if (m == 0xDA) {
            if (d->done_single_scan)
                return jpeg_fail(d, CLIP_EINPUT, "JPEG file has another scan after its only one.");
            if ((rc = jpeg_start_scan(d, p, len)) != 0)
                return rc;
            if (before_sos) {
                before_sos = 0;
                d->space = jpeg_color_space(d);
                if ((rc = jpeg_allocate(d)) != 0)
                    return rc;
            }
            if ((rc = jpeg_decode_scan(d)) != 0)
                return rc;
            if (d->single_scan)
                d->done_single_scan = 1;
        }
        /* COM, DNL and APPn after the first scan: skipped */
    }
}

/* Decode a JPEG file in memory into 8-bit RGB, as Pillow's
 * Image.open(f).convert("RGB") would. */
static int jpeg_decode(const uint8_t *data, size_t size, clip_image *img, char *err)
{
    jpeg_decoder *d;
    int rc, i;
    img->w = img->h = 0;
    img->rgb = NULL;
    d = (jpeg_decoder *)calloc(1, sizeof *d);
    if (!d) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "out of memory decoding a JPEG.");
        return CLIP_ENOMEM;
    }
    d->data = data;
    d->size = size;
    d->err = err;
    rc = jpeg_read_file(d);
    if (rc == 0 && !d->single_scan)
        jpeg_transform_all(d);
    if (rc == 0) {
        img->w = d->w;
        img->h = d->h;
        img->rgb = d->rgb;
    } else {
        free(d->rgb);
    }
    for (i = 0; i < 4; i++) {
        free(d->comp[i].coef);
        free(d->comp[i].plane);
        free(d->comp[i].row);
    }
    free(d);
    return rc;
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

/* No image within CLIP_MAX_PIXELS needs a larger file (an uncompressed
 * 16-bit RGBA PNG of 8192 x 8192 is 537 MB). */
#define LOAD_MAX_BYTES (1L << 30)

int clip_image_load(const char *path, clip_image *img, char *err)
{
    FILE *f;
    uint8_t *buf = NULL, head[8];
    size_t n = 0, cap = 0;
    char msg[CLIP_ERR_SIZE];
    int rc;

    if (!img) return png_fail(err, CLIP_EINPUT, "no image to load into");
    img->w = img->h = 0;
    img->rgb = NULL;
    if (!path) return png_fail(err, CLIP_EINPUT, "no image path given");
    f = fopen(path, "rb");
    if (!f) return png_fail(err, CLIP_EIO, "%s: %s", path, strerror(errno));
    /* the first bytes name the format, as in Image.open: anything else is
     * refused before the rest is read (a directory, an endless /dev/zero) */
    errno = 0;
    n = fread(head, 1, sizeof head, f);
    if (ferror(f)) {
        int e = errno;
        fclose(f);
        return png_fail(err, CLIP_EIO, "%s: %s", path, e ? strerror(e) : "read error");
    }
    if (n == sizeof head && memcmp(head, "\x89PNG\r\n\x1a\n", 8) && !(head[0] == 0xff && head[1] == 0xd8 && head[2] == 0xff) &&
        !(head[0] == 'B' && head[1] == 'M') && !(head[0] == 'P' && head[1] >= '1' && head[1] <= '6')) {
        fclose(f);
        return png_fail(err, CLIP_EINPUT, "%s: cannot identify image format (not PNG, JPEG, PPM/PGM/PBM or BMP)", path);
    }
    /* size the buffer from the file length when it has one (not a pipe) */
    if (n == sizeof head && fseek(f, 0, SEEK_END) == 0) {
        long len = ftell(f);
        if (len >= LOAD_MAX_BYTES) {
            fclose(f);
            return png_fail(err, CLIP_EINPUT, "%s: the file is larger than %ld bytes, more than any image needs", path, LOAD_MAX_BYTES);
        }
        if (len < (long)n || fseek(f, (long)n, SEEK_SET) != 0) {
            fclose(f);
            return png_fail(err, CLIP_EIO, "%s: read error", path);
        }
        cap = (size_t)len + 1;
    }
    if (cap < ((size_t)1 << 16)) cap = (size_t)1 << 16;
    buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return png_fail(err, CLIP_ENOMEM, "%s: out of memory reading the file", path);
    }
    memcpy(buf, head, n);
    for (;;) {
        size_t got;
        if (n == cap) {
            uint8_t *nb;
            size_t ncap = cap * 2 < (size_t)LOAD_MAX_BYTES ? cap * 2 : (size_t)LOAD_MAX_BYTES;
            if (cap >= (size_t)LOAD_MAX_BYTES) {
                free(buf);
                fclose(f);
                return png_fail(err, CLIP_EINPUT, "%s: the file is larger than %ld bytes, more than any image needs", path, LOAD_MAX_BYTES);
            }
            if (!(nb = realloc(buf, ncap))) {
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

/* ---------------------------------------------------------------------- */
/* Resize, crop, normalize (CLIPImageProcessor)                           */
/* ---------------------------------------------------------------------- */
/* Bicubic resizing and CLIPImageProcessor preprocessing.
 *
 * Two references are reproduced bit for bit:
 *
 *   pil          Pillow's img.resize((w, h), BICUBIC, reducing_gap=None)
 *                (src/libImaging/Resample.c, ImagingResample on 8-bit RGB),
 *                then transformers' numpy center crop, rescale, normalize.
 *   torchvision  PyTorch's interpolate(uint8, mode="bicubic", antialias=True)
 *                (aten/src/ATen/native/cpu/UpSampleKernel.cpp, the int16
 *                weight path that the AVX2 and the generic uint8 kernels
 *                share), then transformers 5's torchvision backend center
 *                crop and fused rescale + normalize.
 *
 * Both resizes are the same separable scheme: per output position a window
 * of input positions with cubic weights (support scaled by the downscale
 * factor, so downscaling antialiases), normalized to sum 1, turned into fixed
 * point, accumulated in integers, rounded and clipped to 0..255; first the
 * horizontal pass, then the vertical pass, and a pass whose size does not
 * change is skipped. They differ in the cubic polynomial's evaluation order
 * (same a = -0.5) and in the fixed-point precision (Pillow: always 22 bits;
 * PyTorch: int16 weights with as many bits as the largest weight allows).
 *
 * Every output pixel depends only on its own window, so a resize can be run
 * for a sub-rectangle of the output with the same result: preprocessing
 * computes only the pixels that survive the center crop.
 */

enum { RESIZE_PIL = 0, RESIZE_TORCH = 1 };

/* Refuse coefficient tables of more entries than this (1 GiB of int32):
 * only absurd aspect-ratio changes come near it. */
#define RESIZE_MAX_COEFFS (1L << 28)
/* Refuse resized sides longer than this. */
#define RESIZE_MAX_SIDE (1L << 26)

/* ---------------------------------------------------------------------- */
/* The cubic filters (a = -0.5)                                            */
/* ---------------------------------------------------------------------- */

/* a * b rounded to double. The weights must be the very doubles the
 * references compute, and a compiler allowed to contract (clang's default,
 * or -ffp-contract=fast) would fuse a product into the following addition
 * (fma) and change last bits; a product that goes through a volatile cannot
 * be fused. */
static double resize_mul(double a, double b)
{
    volatile double p = a * b;
    return p;
}

/* Pillow Resample.c bicubic_filter: support 2. */
static double resize_cubic_pil(double x)
{
    if (x < 0.0) x = -x;
    if (x < 1.0) return resize_mul(resize_mul(resize_mul(1.5, x) - 2.5, x), x) + 1.0;
    if (x < 2.0) return resize_mul(resize_mul(resize_mul(x - 5.0, x) + 8.0, x) - 4.0, -0.5);
    return 0.0;
}

/* PyTorch HelperInterpCubic::aa_filter<double, true>, i.e. UpSample.h's
 * cubic_convolution1 / cubic_convolution2 with A = -0.5: the same polynomial
 * as Pillow's, but the outer piece is evaluated in another order, so its
 * doubles (and sometimes the fixed-point weights) differ. */
static double resize_cubic_torch(double x)
{
    x = fabs(x);
    if (x < 1.0) return resize_mul(resize_mul(resize_mul(1.5, x) - 2.5, x), x) + 1.0;
    if (x < 2.0) return resize_mul(resize_mul(resize_mul(-0.5, x) + 2.5, x) - 4.0, x) + 2.0;
    return 0.0;
}

/* ---------------------------------------------------------------------- */
/* One axis: windows and fixed-point weights                               */
/* ---------------------------------------------------------------------- */

typedef struct {
    int count;          /* output positions computed */
    int ksize;          /* weights stored per position */
    int precision;      /* fixed-point bits of the weights */
    int *start;         /* [count] first input position of each window */
    int *taps;          /* [count] window length */
    int32_t *k;         /* [count * ksize] fixed-point weights */
} resize_axis;

typedef struct {
    int in_size, kind;
    double scale, support, invscale;
    int ksize;
} resize_plan;

/* Pillow precompute_coeffs / PyTorch _compute_index_ranges_weights, the
 * shared part: scale = in / out, support = 2 * max(scale, 1),
 * ksize = ceil(support) * 2 + 1. Pillow takes in_size from a float box, so
 * it is rounded to float first (exact below 2^24). */
static void resize_plan_init(resize_plan *p, int in_size, int out_size, int kind)
{
    double filterscale;
    p->in_size = in_size;
    p->kind = kind;
    if (kind == RESIZE_PIL)
        p->scale = (double)((float)in_size - 0.0f) / out_size;
    else
        p->scale = (double)in_size / out_size;
    filterscale = p->scale < 1.0 ? 1.0 : p->scale;
    p->support = 2.0 * filterscale;
    p->invscale = 1.0 / filterscale;
    p->ksize = (int)ceil(p->support) * 2 + 1;
}

/* The window of output position i: center = (i + 0.5) * scale, inputs from
 * int(center - support + 0.5) to int(center + support + 0.5), clamped; the
 * filter at (x - center + 0.5) / filterscale, normalized to sum 1 (when the
 * sum is not 0). w holds ksize doubles. Returns the largest weight. */
static double resize_window(const resize_plan *p, int i, int *start, int *taps, double *w)
{
    double center = resize_mul(i + 0.5, p->scale);
    double lo = center - p->support + 0.5, hi = center + p->support + 0.5;
    double total = 0.0, wmax = 0.0;
    int xmin, xmax, x;

    /* (int) truncates toward zero as the C / C++ references do; negative
     * values clamp to 0 either way. */
    xmin = lo <= 0.0 ? 0 : (int)lo;
    xmax = hi >= (double)p->in_size ? p->in_size : (int)hi;
    if (xmin > p->in_size) xmin = p->in_size;
    xmax -= xmin;
    if (xmax < 0) xmax = 0;
    if (xmax > p->ksize) xmax = p->ksize;

    for (x = 0; x < xmax; x++) {
        double arg = resize_mul((double)(x + xmin) - center + 0.5, p->invscale);
        w[x] = p->kind == RESIZE_PIL ? resize_cubic_pil(arg) : resize_cubic_torch(arg);
        total += w[x];
    }
    if (total != 0.0) {
        for (x = 0; x < xmax; x++) {
            w[x] /= total;
            if (w[x] > wmax) wmax = w[x];
        }
    }
    *start = xmin;
    *taps = xmax;
    return wmax;
}

/* double -> fixed point, rounded half away from zero, as both references
 * (normalize_coeffs_8bpc; the int16 conversion of
 * _compute_index_ranges_int16_weights) do. */
static int32_t resize_fixed(double w, int precision)
{
    double v = w * (double)(1L << precision);
    return v < 0 ? (int32_t)(-0.5 + v) : (int32_t)(0.5 + v);
}

static void resize_axis_free(resize_axis *ax)
{
    free(ax->start);
    free(ax->taps);
    free(ax->k);
    ax->start = ax->taps = NULL;
    ax->k = NULL;
}

/* Windows and fixed-point weights for output positions first .. first+count-1
 * of an in_size -> out_size axis.
 *   Pillow: PRECISION_BITS = 32 - 8 - 2 = 22.
 *   PyTorch: the largest p <= 22 with round(wt_max * 2^(p+1)) < 2^15, where
 *   wt_max is the largest normalized weight over the whole axis (so every
 *   output position is visited, not only the ones computed here). */
static int resize_axis_init(resize_axis *ax, int in_size, int out_size, int first, int count,
                            int kind, char *err)
{
    resize_plan p;
    double *w;
    int i, j;

    memset(ax, 0, sizeof(*ax));
    resize_plan_init(&p, in_size, out_size, kind);
    if ((double)count * p.ksize > (double)RESIZE_MAX_COEFFS ||
        (size_t)count * (size_t)p.ksize > SIZE_MAX / sizeof(int32_t) / 2) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "cannot resize %d pixels to %d: the filter table would be too large.",
                          in_size, out_size);
        return CLIP_EINPUT;
    }
    ax->count = count;
    ax->ksize = p.ksize;
    w = malloc((size_t)p.ksize * sizeof(double));
    ax->start = malloc((size_t)count * sizeof(int) + 1);
    ax->taps = malloc((size_t)count * sizeof(int) + 1);
    ax->k = calloc((size_t)count * (size_t)p.ksize + 1, sizeof(int32_t));
    if (!w || !ax->start || !ax->taps || !ax->k) {
        free(w);
        resize_axis_free(ax);
        if (err) snprintf(err, CLIP_ERR_SIZE, "out of memory for the resize filter table.");
        return CLIP_ENOMEM;
    }

    if (kind == RESIZE_PIL) {
        ax->precision = 22;
    } else {
        double wt_max = 0.0;
        int s, n;
        for (i = 0; i < out_size; i++) {
            double m = resize_window(&p, i, &s, &n, w);
            if (m > wt_max) wt_max = m;
        }
        for (ax->precision = 0; ax->precision < 22; ax->precision++)
            if ((long)(0.5 + wt_max * (double)(1L << (ax->precision + 1))) >= (1L << 15)) break;
        if (ax->precision < 1) ax->precision = 1;   /* only for absurd weights */
    }

    for (i = 0; i < count; i++) {
        int32_t *k = ax->k + (size_t)i * p.ksize;
        resize_window(&p, first + i, &ax->start[i], &ax->taps[i], w);
        for (j = 0; j < ax->taps[i]; j++) {
            k[j] = resize_fixed(w[j], ax->precision);
            if (kind == RESIZE_TORCH) k[j] = (int16_t)k[j];   /* stored as int16 */
        }
    }
    free(w);
    return CLIP_OK;
}

/* ---------------------------------------------------------------------- */
/* The two passes on 8-bit RGB                                             */
/* ---------------------------------------------------------------------- */

/* Round and clip a fixed-point sum: (acc >> precision) clamped to 0..255.
 * The sum is kept modulo 2^32 (unsigned, so wrap-around is defined): bit 31
 * set means a negative value. */
static uint8_t resize_clip8(uint32_t acc, int precision)
{
    uint32_t v;
    if (acc & 0x80000000u) return 0;
    v = acc >> precision;
    return v > 255 ? 255 : (uint8_t)v;
}

/* ImagingResampleHorizontal_8bpc: rows row0 .. row0+nrows-1 of src (stride
 * bytes apart, RGB) -> dst, ax->count pixels per row. */
static void resize_horizontal(const uint8_t *src, size_t stride, int row0, int nrows,
                              const resize_axis *ax, uint8_t *dst)
{
    uint32_t half = 1u << (ax->precision - 1);
    int y, i, t;
    for (y = 0; y < nrows; y++) {
        const uint8_t *line = src + (size_t)(row0 + y) * stride;
        uint8_t *out = dst + (size_t)y * ax->count * 3;
        for (i = 0; i < ax->count; i++) {
            const int32_t *k = ax->k + (size_t)i * ax->ksize;
            const uint8_t *p = line + (size_t)ax->start[i] * 3;
            uint32_t r = half, g = half, b = half;
            for (t = 0; t < ax->taps[i]; t++) {
                uint32_t kt = (uint32_t)k[t];
                r += p[0] * kt;
                g += p[1] * kt;
                b += p[2] * kt;
                p += 3;
            }
            out[3 * i + 0] = resize_clip8(r, ax->precision);
            out[3 * i + 1] = resize_clip8(g, ax->precision);
            out[3 * i + 2] = resize_clip8(b, ax->precision);
        }
    }
}

/* ImagingResampleVertical_8bpc: src rows (stride bytes apart, row 0 of src
 * is input row `row_base`) of `width` RGB pixels -> ax->count rows of dst.
 * acc is scratch for width * 3 sums. */
static void resize_vertical(const uint8_t *src, size_t stride, int row_base, int width,
                            const resize_axis *ax, uint8_t *dst, uint32_t *acc)
{
    size_t n = (size_t)width * 3, x;
    uint32_t half = 1u << (ax->precision - 1);
    int i, t;
    for (i = 0; i < ax->count; i++) {
        const int32_t *k = ax->k + (size_t)i * ax->ksize;
        uint8_t *out = dst + (size_t)i * n;
        for (x = 0; x < n; x++) acc[x] = half;
        for (t = 0; t < ax->taps[i]; t++) {
            const uint8_t *row = src + (size_t)(ax->start[i] - row_base + t) * stride;
            uint32_t kt = (uint32_t)k[t];
            for (x = 0; x < n; x++) acc[x] += row[x] * kt;
        }
        for (x = 0; x < n; x++) out[x] = resize_clip8(acc[x], ax->precision);
    }
}

/* ImagingResampleInner: the pixels [x0, x0+cw) x [y0, y0+ch) of the
 * out_w x out_h resize of src, into dst (cw x ch RGB). The vertical windows
 * are computed first so that the horizontal pass runs only on the input rows
 * they use (as Pillow does); skipped passes copy. */
static int resize_region(const clip_image *src, int out_w, int out_h,
                         int x0, int y0, int cw, int ch, int kind, uint8_t *dst, char *err)
{
    resize_axis hax, vax;
    int need_h = out_w != src->w, need_v = out_h != src->h;
    int row_lo = y0, row_hi = y0 + ch, i, rc;
    const uint8_t *mid;          /* the horizontally resampled rows row_lo.. */
    size_t mid_stride;
    uint8_t *tmp = NULL;
    uint32_t *acc = NULL;

    memset(&hax, 0, sizeof(hax));
    memset(&vax, 0, sizeof(vax));
    if (cw <= 0 || ch <= 0) return CLIP_OK;
    if (need_v) {
        rc = resize_axis_init(&vax, src->h, out_h, y0, ch, kind, err);
        if (rc) return rc;
        row_lo = vax.start[0];
        row_hi = vax.start[ch - 1] + vax.taps[ch - 1];
        for (i = 0; i < ch; i++) {
            if (vax.start[i] < row_lo) row_lo = vax.start[i];
            if (vax.start[i] + vax.taps[i] > row_hi) row_hi = vax.start[i] + vax.taps[i];
        }
        if (row_hi < row_lo) row_hi = row_lo;
    }

    if (need_h) {
        if ((double)cw * (row_hi - row_lo) > (double)CLIP_MAX_PIXELS) {
            resize_axis_free(&vax);
            if (err) snprintf(err, CLIP_ERR_SIZE, "cannot resize %dx%d to %dx%d: the intermediate image would be too large.",
                              src->w, src->h, out_w, out_h);
            return CLIP_EINPUT;
        }
        rc = resize_axis_init(&hax, src->w, out_w, x0, cw, kind, err);
        if (rc) {
            resize_axis_free(&vax);
            return rc;
        }
        tmp = malloc((size_t)cw * (size_t)(row_hi - row_lo) * 3 + 1);
        if (!tmp) {
            resize_axis_free(&hax);
            resize_axis_free(&vax);
            if (err) snprintf(err, CLIP_ERR_SIZE, "out of memory for the resized image.");
            return CLIP_ENOMEM;
        }
        resize_horizontal(src->rgb, (size_t)src->w * 3, row_lo, row_hi - row_lo, &hax, tmp);
        resize_axis_free(&hax);
        mid = tmp;
        mid_stride = (size_t)cw * 3;
    } else {
        mid = src->rgb + (size_t)row_lo * src->w * 3 + (size_t)x0 * 3;
        mid_stride = (size_t)src->w * 3;
    }

    if (need_v) {
        acc = malloc((size_t)cw * 3 * sizeof(uint32_t) + 1);
        if (!acc) {
            free(tmp);
            resize_axis_free(&vax);
            if (err) snprintf(err, CLIP_ERR_SIZE, "out of memory for the resized image.");
            return CLIP_ENOMEM;
        }
        resize_vertical(mid, mid_stride, row_lo, cw, &vax, dst, acc);
        free(acc);
        resize_axis_free(&vax);
    } else {
        for (i = 0; i < ch; i++)
            memcpy(dst + (size_t)i * cw * 3, mid + (size_t)(y0 + i - row_lo) * mid_stride, (size_t)cw * 3);
    }
    free(tmp);
    return CLIP_OK;
}

/* Checks shared by the public functions: a usable source image. */
static int resize_check_image(const clip_image *img, const char *what, char *err)
{
    if (!img || !img->rgb || img->w <= 0 || img->h <= 0) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "cannot %s an empty image.", what);
        return CLIP_EINPUT;
    }
    if ((double)img->w * img->h > (double)CLIP_MAX_PIXELS) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "cannot %s a %dx%d image: it has more than %ld pixels.",
                          what, img->w, img->h, (long)CLIP_MAX_PIXELS);
        return CLIP_EINPUT;
    }
    return CLIP_OK;
}

static int resize_full(const clip_image *src, int w, int h, clip_image *dst, int kind, char *err)
{
    uint8_t *rgb;
    int rc;

    if (!dst || dst == src) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "cannot resize: %s.",
                          dst ? "the output image must not be the input image" : "no output image was given");
        return CLIP_EINPUT;
    }
    dst->w = dst->h = 0;
    dst->rgb = NULL;
    rc = resize_check_image(src, "resize", err);
    if (rc) return rc;
    if (w <= 0 || h <= 0 || (double)w * h > (double)CLIP_MAX_PIXELS) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "cannot resize to %dx%d: the size must be from 1x1 to %ld pixels.",
                          w, h, (long)CLIP_MAX_PIXELS);
        return CLIP_EINPUT;
    }
    rgb = malloc((size_t)w * (size_t)h * 3);
    if (!rgb) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "out of memory for a %dx%d image.", w, h);
        return CLIP_ENOMEM;
    }
    rc = resize_region(src, w, h, 0, 0, w, h, kind, rgb, err);
    if (rc) {
        free(rgb);
        return rc;
    }
    dst->w = w;
    dst->h = h;
    dst->rgb = rgb;
    return CLIP_OK;
}

int clip_resize_bicubic_pil(const clip_image *src, int w, int h, clip_image *dst, char *err)
{
    return resize_full(src, w, h, dst, RESIZE_PIL, err);
}

int clip_resize_bicubic_torch(const clip_image *src, int w, int h, clip_image *dst, char *err)
{
    return resize_full(src, w, h, dst, RESIZE_TORCH, err);
}

/* ---------------------------------------------------------------------- */
/* CLIPImageProcessor                                                      */
/* ---------------------------------------------------------------------- */

/* transformers get_resize_output_image_size(default_to_square=False): the
 * short side becomes `size`, the long side int(size * long / short) (Python
 * true division of integers: correctly rounded, as a double division of
 * exactly representable values is). */
static int pp_resize_size(int w, int h, int size, int *rw, int *rh, char *err)
{
    int shortside = w <= h ? w : h, longside = w <= h ? h : w;
    double q = (double)((int64_t)size * longside) / (double)shortside;
    if (q >= (double)RESIZE_MAX_SIDE) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "the %dx%d image is too elongated: its long side would be resized to %.0f pixels.",
                          w, h, q);
        return CLIP_EINPUT;
    }
    if (w <= h) {
        *rw = size;
        *rh = (int)q;
    } else {
        *rw = (int)q;
        *rh = size;
    }
    return CLIP_OK;
}

/* Where a center crop of `crop` pixels takes its pixels from along an axis
 * of `size` pixels: crop position i shows resized position i + *offset when
 * that lies in 0 .. size-1, else padding (zero).
 *   larger image: offset = (size - crop) // 2 (numpy's //, and torchvision
 *     backend's int((size - crop) / 2.0), the same for non-negative values);
 *   smaller image: the image is padded by ceil(d / 2) before it (pil: numpy
 *     center_crop) or d // 2 (torchvision backend: tvF.pad with
 *     left = d // 2), d = crop - size. */
static int pp_crop_offset(int size, int crop, int mode)
{
    int d = crop - size;
    if (d <= 0) return (size - crop) / 2;
    return mode == CLIP_RESIZE_PIL ? -((d + 1) / 2) : -(d / 2);
}

/* The float rescale factor of the config stands for a double in Python:
 * 1/255 rounded to float is not 1/255. Recover 1/n when the float is the
 * rounding of 1/n, the way preprocessor configs write it. */
static double pp_rescale_factor(float f)
{
    double r, n;
    if (!(f > 0.0f)) return (double)f;
    r = 1.0 / (double)f;
    n = floor(r + 0.5);
    if (n >= 1.0 && n < 1e9 && (float)(1.0 / n) == f) return 1.0 / n;
    return (double)f;
}

/* a * b rounded to float, never fused into a later subtraction (see
 * resize_mul). */
static float pp_mulf(float a, float b)
{
    volatile float p = a * b;
    return p;
}

/* The whole processor: resize (shortest edge), center crop, rescale,
 * normalize, CHW float output of crop_h x crop_w.
 *   pil: x = (float)(u8 * rescale) in double (transformers rescale), then
 *        (x - mean) / std in float (normalize, float32 numpy arrays).
 *   torchvision: (x - m) / s in float with m = float(mean) * float(1/rescale)
 *        and s likewise (TorchvisionBackend._fuse_mean_std_and_rescale_factor,
 *        then tvF.normalize on float32). */
int clip_image_preprocess(const clip_image *img, const clip_preprocess_config *cfg,
                          int mode, float *out, char *err)
{
    int rw, rh, cw, ch, ox, oy, x0, x1, y0, y1, c, i, j, rc;
    size_t plane;
    uint8_t *region;
    double rescale = 1.0;
    float mean[3], stdv[3];

    rc = resize_check_image(img, "preprocess", err);
    if (rc) return rc;
    if (!cfg || !out) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "cannot preprocess: no %s was given.", cfg ? "output buffer" : "config");
        return CLIP_EINPUT;
    }
    if (mode != CLIP_RESIZE_PIL && mode != CLIP_RESIZE_TORCHVISION) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "cannot preprocess: unknown resize mode %d.", mode);
        return CLIP_EINPUT;
    }
    cw = cfg->crop_w;
    ch = cfg->crop_h;
    if (cw <= 0 || ch <= 0 || cw > 65536 || ch > 65536 || (double)cw * ch > (double)CLIP_MAX_PIXELS) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "the crop size %dx%d is not valid (1 to 65536 a side).", cw, ch);
        return CLIP_EINPUT;
    }
    if (cfg->do_resize && (cfg->shortest_edge <= 0 || cfg->shortest_edge > 65536)) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "the resize size (shortest edge %d) is not valid (1 to 65536).", cfg->shortest_edge);
        return CLIP_EINPUT;
    }
    if (cfg->do_rescale && !(cfg->rescale_factor > 0.0f && cfg->rescale_factor < 1e30f)) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "the rescale factor %g is not valid.", (double)cfg->rescale_factor);
        return CLIP_EINPUT;
    }
    for (c = 0; c < 3; c++) {
        mean[c] = cfg->mean[c];
        stdv[c] = cfg->std[c];
        if (cfg->do_normalize && (stdv[c] == 0.0f || stdv[c] != stdv[c] || mean[c] != mean[c])) {
            if (err) snprintf(err, CLIP_ERR_SIZE, "the normalization std %g (channel %d) is not valid.", (double)stdv[c], c);
            return CLIP_EINPUT;
        }
    }

    /* resize: shortest edge to cfg->shortest_edge */
    rw = img->w;
    rh = img->h;
    if (cfg->do_resize) {
        rc = pp_resize_size(img->w, img->h, cfg->shortest_edge, &rw, &rh, err);
        if (rc) return rc;
    }

    /* center crop: which resized pixels land in the crop */
    if (cfg->do_center_crop) {
        ox = pp_crop_offset(rw, cw, mode);
        oy = pp_crop_offset(rh, ch, mode);
    } else {
        if (rw != cw || rh != ch) {
            if (err) snprintf(err, CLIP_ERR_SIZE, "without a center crop the image must come out at %dx%d, not %dx%d.",
                              cw, ch, rw, rh);
            return CLIP_EINPUT;
        }
        ox = oy = 0;
    }
    x0 = ox < 0 ? 0 : ox;
    y0 = oy < 0 ? 0 : oy;
    x1 = ox + cw < rw ? ox + cw : rw;
    y1 = oy + ch < rh ? oy + ch : rh;

    /* resize only that region (uint8) */
    region = malloc((size_t)(x1 - x0) * (size_t)(y1 - y0) * 3 + 1);
    if (!region) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "out of memory for the resized image.");
        return CLIP_ENOMEM;
    }
    rc = resize_region(img, rw, rh, x0, y0, x1 - x0, y1 - y0,
                       mode == CLIP_RESIZE_PIL ? RESIZE_PIL : RESIZE_TORCH, region, err);
    if (rc) {
        free(region);
        return rc;
    }

    /* rescale + normalize into CHW floats; padding is a zero pixel */
    if (cfg->do_rescale) rescale = pp_rescale_factor(cfg->rescale_factor);
    if (mode == CLIP_RESIZE_TORCHVISION && cfg->do_rescale && cfg->do_normalize) {
        float inv = (float)(1.0 / rescale);
        for (c = 0; c < 3; c++) {
            mean[c] = pp_mulf(mean[c], inv);
            stdv[c] = pp_mulf(stdv[c], inv);
        }
    }
    plane = (size_t)cw * ch;
    for (c = 0; c < 3; c++) {
        for (i = 0; i < ch; i++) {
            int y = i + oy;
            for (j = 0; j < cw; j++) {
                int x = j + ox;
                int v = 0;
                float f;
                if (y >= y0 && y < y1 && x >= x0 && x < x1)
                    v = region[((size_t)(y - y0) * (x1 - x0) + (x - x0)) * 3 + c];
                if (mode == CLIP_RESIZE_PIL) {
                    f = cfg->do_rescale ? (float)(v * rescale) : (float)v;
                    if (cfg->do_normalize) {
                        float d = f - mean[c];
                        f = d / stdv[c];
                    }
                } else if (cfg->do_normalize) {
                    float d = (float)v - mean[c];
                    f = d / stdv[c];
                } else {
                    f = cfg->do_rescale ? pp_mulf((float)v, (float)rescale) : (float)v;
                }
                out[(size_t)c * plane + (size_t)i * cw + j] = f;
            }
        }
    }
    free(region);
    return CLIP_OK;
}
