/* decode/png.c - PNG -> 8-bit RGB, as Pillow's PngImagePlugin, ZipDecode.c
 * and convert("RGB") give it.
 *
 * The steps, in file order:
 *   chunks     PngStream.chunk_*: IHDR, PLTE, tRNS, text, APNG (acTL, fcTL);
 *              Pillow refuses short or malformed ancillary chunks too
 *   rows       ZipDecode.c: undo each row's filter, unpack it, convert("RGB")
 *   the file   PngImageFile._open (chunks to the first IDAT, CRCs checked),
 *              load_read (the data chunks, fed to zlib 64 KiB at a time; see
 *              inflate.c for why that matters), load_end (the chunks after)
 *
 * Also the CRC-32 that the PNG writer (png_write.c) uses.
 */
#include <stdlib.h>
#include <string.h>

#include "decode.h"

/* Pillow's modes for PNG (bit depth, colour type) pairs. */
enum { PNG_NONE, PNG_1, PNG_L, PNG_I, PNG_RGB, PNG_P, PNG_LA, PNG_RGBA };

#define PNG_MAX_TEXT_CHUNK 1048576u            /* ImageFile.SAFEBLOCK */
#define PNG_MAX_TEXT_MEMORY (64u * 1048576u)   /* MAX_TEXT_MEMORY */
#define PNG_FEED 65536u                        /* ImageFile.MAXBLOCK */

/* What PngStream remembers while it walks the chunks, then what decoding
 * needs from them (png_prepare). */
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

    uint64_t tx0, ty0, tw, th;     /* the tile decoded: the fcTL rectangle or the whole image */
    int animated;                  /* more than one frame: load_end stops at the next fcTL */
    uint8_t pal[768];              /* the palette rows are looked up in */
    const uint8_t *palp;           /* pal, or NULL when the rows are not looked up */
} png_info;

/* One IDAT/DDAT/fdAT chunk's payload as Pillow's load_read sees it. */
typedef struct {
    size_t start, avail;     /* in the file */
    uint64_t end;            /* file offset just past the declared data */
    int has_seq;
    uint32_t seq;
} png_seg;

/* The image data as load_read feeds it to zlib: the data chunks' payloads
 * joined, in feed blocks of at most 64 KiB (a block never spans two chunks). */
typedef struct {
    uint8_t *bytes;
    size_t size, nblk;
    size_t *blk_end;         /* [nblk] where each feed block ends in bytes */
    size_t *blk_seg;         /* [nblk] the data chunk it came from (0 = the first) */
} png_stream;

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

void clip_crc32_table(uint32_t table[256])
{
    unsigned i, k;
    for (i = 0; i < 256; i++) {
        uint32_t v = i;
        for (k = 0; k < 8; k++) v = (v & 1) ? 0xedb88320u ^ (v >> 1) : v >> 1;
        table[i] = v;
    }
}

uint32_t clip_crc32(const uint32_t table[256], uint32_t c, const uint8_t *d, size_t n)
{
    c ^= 0xffffffffu;
    while (n--) c = table[(c ^ *d++) & 255] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

/* ---------------------------------------------------------------------- */
/* Chunks (PngStream.chunk_*)                                              */
/* ---------------------------------------------------------------------- */

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
    clip_inflate_init(z, d, n, n);
    for (;;) {
        size_t before = z->total;
        z->dst_cap = z->dst_pos + 16384;
        if (z->dst_cap > PNG_MAX_TEXT_CHUNK) z->dst_cap = PNG_MAX_TEXT_CHUNK;
        r = clip_inflate_run(z);
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
        return clip_fail(err, CLIP_EINPUT, "PNG text chunks use more than 64 MiB");
    return CLIP_OK;
}

static const uint8_t *png_nul(const uint8_t *s, size_t n)
{
    return n ? memchr(s, 0, n) : NULL;
}

/* tEXt, zTXt and iCCP: the text a chunk adds counts towards the 64 MiB
 * limit; a compressed payload must decompress (zTXt: to at most 1 MiB). */
static int png_text_chunk(png_info *p, const char *name, const uint8_t *s, uint32_t len, char *err)
{
    const uint8_t *z = png_nul(s, len);
    size_t klen = z ? (size_t)(z - s) : len, vlen = z ? len - klen - 1 : 0, n = 0;
    int r;
    if (name[0] == 't') {
        if (z && z > s) return png_text_count(p, len - (size_t)(z - s) - 1, err);
        return CLIP_OK;
    }
    if (name[0] == 'i') {
        /* chunk_iCCP reads the method from s[s.find(b"\0")] */
        if (len == 0) return clip_fail(err, CLIP_EINPUT, "PNG iCCP chunk is empty");
        if (!z) return clip_fail(err, CLIP_EINPUT, "PNG iCCP chunk has an unknown compression method");
    } else if (vlen && z[1] != 0)
        return clip_fail(err, CLIP_EINPUT, "PNG zTXt chunk has an unknown compression method");
    r = vlen > 1 ? png_text_inflate(z + 2, vlen - 1, &n, NULL) : 0;
    if (r == -2) return clip_fail(err, CLIP_ENOMEM, "out of memory");
    if (r == -1) return clip_fail(err, CLIP_EINPUT, "PNG %s chunk decompresses to more than 1 MiB", name);
    if (name[0] == 'z' && klen) return png_text_count(p, r ? 0 : n, err);
    return CLIP_OK;
}

/* iTXt: keyword, flag, method, language, translated keyword, text. Only a
 * chunk Pillow keeps (well-formed, UTF-8 throughout) counts its text. */
static int png_itxt_chunk(png_info *p, const uint8_t *s, uint32_t len, char *err)
{
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
        if (r == -2) return clip_fail(err, CLIP_ENOMEM, "out of memory");
        if (r == -1) return clip_fail(err, CLIP_EINPUT, "PNG iTXt chunk decompresses to more than 1 MiB");
        if (r) return CLIP_OK;
    } else png_utf8_feed(&u, v, (size_t)(e - v));
    if (u.bad || u.need) return CLIP_OK;
    n = u.chars;
    memset(&u, 0, sizeof u);
    png_utf8_feed(&u, lang, (size_t)(tk - 1 - lang));
    png_utf8_feed(&u, tk, (size_t)(v - 1 - tk));
    if (u.bad || u.need) return CLIP_OK;
    return png_text_count(p, n, err);
}

/* APNG: acTL (the frame count) and fcTL (a frame's rectangle, with its
 * sequence number). */
static int png_apng_chunk(png_info *p, const char *name, const uint8_t *s, uint32_t len, char *err)
{
    uint32_t seq;
    uint64_t fw, fh, fx, fy;
    if (name[0] == 'a') {
        uint32_t n;
        if (len < 8) return clip_fail(err, CLIP_EINPUT, "PNG acTL chunk is truncated");
        n = rd32be(s);
        if (p->has_frames) p->has_frames = 0;
        else if (n != 0 && n <= 0x80000000u) {
            p->has_frames = 1;
            p->n_frames = n;
        }
        return CLIP_OK;
    }
    if (len < 26) return clip_fail(err, CLIP_EINPUT, "PNG fcTL chunk is truncated");
    seq = rd32be(s);
    if ((!p->has_seq && seq != 0) || (p->has_seq && (int64_t)p->seq != (int64_t)seq - 1))
        return clip_fail(err, CLIP_EINPUT, "APNG contains frame sequence errors");
    p->has_seq = 1;
    p->seq = seq;
    fw = rd32be(s + 4);
    fh = rd32be(s + 8);
    fx = rd32be(s + 12);
    fy = rd32be(s + 16);
    if (fx + fw > p->w || fy + fh > p->h)
        return clip_fail(err, CLIP_EINPUT, "APNG contains invalid frames");
    p->has_bbox = 1;
    p->bx0 = fx;
    p->by0 = fy;
    p->bx1 = fx + fw;
    p->by1 = fy + fh;
    return CLIP_OK;
}

/* One chunk as PngStream.chunk_<type> handles it (IDAT, fdAT and IEND are
 * handled by the callers); unknown chunks are skipped. */
static int png_chunk(png_info *p, const uint8_t *type, const uint8_t *s, uint32_t len, char *err)
{
    char name[5];
    memcpy(name, type, 4);
    name[4] = 0;

    if (!strcmp(name, "IHDR")) {
        int mode;
        if (len < 13) return clip_fail(err, CLIP_EINPUT, "PNG IHDR chunk is truncated");
        p->w = rd32be(s);
        p->h = rd32be(s + 4);
        mode = png_mode_of(s[8], s[9]);
        if (mode != PNG_NONE) {
            p->mode = mode;
            p->depth = s[8];
            p->ctype = s[9];
        }
        if (s[12]) p->interlace = 1;
        if (s[11]) return clip_fail(err, CLIP_EINPUT, "PNG has an unknown filter method %d", s[11]);
    } else if (!strcmp(name, "PLTE")) {
        if (p->mode == PNG_P) {
            p->plte = s;
            p->plte_len = len;
            p->has_plte = 1;
        }
    } else if (!strcmp(name, "tRNS")) {
        if ((p->mode == PNG_1 || p->mode == PNG_L || p->mode == PNG_I) && len < 2)
            return clip_fail(err, CLIP_EINPUT, "PNG tRNS chunk is too short");
        if (p->mode == PNG_RGB && len < 6)
            return clip_fail(err, CLIP_EINPUT, "PNG tRNS chunk is too short");
    } else if (!strcmp(name, "gAMA")) {
        if (len < 4) return clip_fail(err, CLIP_EINPUT, "PNG gAMA chunk is too short");
    } else if (!strcmp(name, "cHRM")) {
        if (len % 4) return clip_fail(err, CLIP_EINPUT, "PNG cHRM chunk length is not a multiple of 4");
    } else if (!strcmp(name, "sRGB")) {
        if (len < 1) return clip_fail(err, CLIP_EINPUT, "PNG sRGB chunk is truncated");
    } else if (!strcmp(name, "pHYs")) {
        if (len < 9) return clip_fail(err, CLIP_EINPUT, "PNG pHYs chunk is truncated");
    } else if (!strcmp(name, "tEXt") || !strcmp(name, "zTXt") || !strcmp(name, "iCCP")) {
        return png_text_chunk(p, name, s, len, err);
    } else if (!strcmp(name, "iTXt")) {
        return png_itxt_chunk(p, s, len, err);
    } else if (!strcmp(name, "acTL") || !strcmp(name, "fcTL")) {
        return png_apng_chunk(p, name, s, len, err);
    }
    return CLIP_OK;
}

/* ---------------------------------------------------------------------- */
/* Rows (ZipDecode.c, Unpack.c, convert("RGB"))                            */
/* ---------------------------------------------------------------------- */

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

/* ---------------------------------------------------------------------- */
/* The file (PngImageFile._open, load_read, load_end)                      */
/* ---------------------------------------------------------------------- */

/* The image data chunks, as load_read walks them: after the first, IDAT,
 * DDAT or fdAT (with the next sequence number) continue the stream and
 * anything else ends it. Moves s to the next chunk; 0 at the end. */
static int png_seg_next(const uint8_t *data, size_t size, png_seg *s)
{
    uint64_t q = s->end + 4, decl;
    uint32_t len;
    const uint8_t *type;
    if (s->avail < s->end - s->start || q + 8 > size) return 0;
    len = rd32be(data + q);
    type = data + q + 4;
    if (!png_is_cid(type)) return 0;
    if (!memcmp(type, "fdAT", 4)) {
        uint32_t seq;
        if (len < 4 || q + 12 > size) return 0;
        seq = rd32be(data + q + 8);
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
static int png_load_end(png_info *p, const uint8_t *data, size_t size, uint64_t q, char *err)
{
    for (;;) {
        uint32_t len;
        const uint8_t *type;
        int r;
        if (q > size || size - q < 8) return CLIP_OK;
        len = rd32be(data + q);
        type = data + q + 4;
        if (!png_is_cid(type) || !memcmp(type, "IEND", 4)) return CLIP_OK;
        if (p->animated && !memcmp(type, "fcTL", 4)) return CLIP_OK;
        q += 8;
        if (!memcmp(type, "fdAT", 4)) {
            uint32_t s;
            if (len < 4) return clip_fail(err, CLIP_EINPUT, "APNG contains truncated fdAT chunk");
            if (size - q < 4) return clip_fail(err, CLIP_EINPUT, "PNG file is truncated");
            s = rd32be(data + q);
            if (!p->has_seq || (int64_t)p->seq != (int64_t)s - 1)
                return clip_fail(err, CLIP_EINPUT, "APNG contains frame sequence errors");
            p->seq = s;
        }
        if (len > size - q) return clip_fail(err, CLIP_EINPUT, "PNG file is truncated (chunk after the image data)");
        if (memcmp(type, "IDAT", 4) && memcmp(type, "fdAT", 4)) {
            r = png_chunk(p, type, data + q, len, err);
            if (r) return r;
        }
        q += (uint64_t)len + 4;
    }
}

/* PngImageFile._open: the chunks up to the first IDAT (or fdAT), each
 * complete and with a good CRC. *first is that chunk's payload. */
static int png_open(png_info *p, const uint8_t *data, size_t size, png_seg *first, char *err)
{
    uint32_t crc_table[256];
    size_t pos = 8, start;
    uint64_t decl;
    int rc;

    clip_crc32_table(crc_table);
    for (;;) {
        uint32_t len;
        const uint8_t *type;
        if (size - pos < 8) return clip_fail(err, CLIP_EINPUT, "PNG file is truncated before the image data");
        len = rd32be(data + pos);
        type = data + pos + 4;
        if (!png_is_cid(type))
            return clip_fail(err, CLIP_EINPUT, "broken PNG file (bad chunk type at byte %lu)", (unsigned long)pos + 4);
        pos += 8;
        if (!memcmp(type, "IDAT", 4)) {
            start = pos;
            decl = len;
            break;
        }
        if (!memcmp(type, "IEND", 4)) return clip_fail(err, CLIP_EINPUT, "PNG file has no image data");
        if (!memcmp(type, "fdAT", 4)) {
            uint32_t s;
            if (len < 4) return clip_fail(err, CLIP_EINPUT, "APNG contains truncated fdAT chunk");
            if (size - pos < 4) return clip_fail(err, CLIP_EINPUT, "PNG file is truncated");
            s = rd32be(data + pos);
            if (!p->has_seq || (int64_t)p->seq != (int64_t)s - 1)
                return clip_fail(err, CLIP_EINPUT, "APNG contains frame sequence errors");
            p->seq = s;
            start = pos + 4;
            decl = len - 4;
            break;
        }
        if (len > size - pos) return clip_fail(err, CLIP_EINPUT, "PNG file is truncated (chunk %.4s)", (const char *)type);
        rc = png_chunk(p, type, data + pos, len, err);
        if (rc) return rc;
        if (size - pos - len < 4)
            return clip_fail(err, CLIP_EINPUT, "PNG file is truncated (CRC of chunk %.4s)", (const char *)type);
        if (clip_crc32(crc_table, clip_crc32(crc_table, 0, type, 4), data + pos, len) != rd32be(data + pos + len))
            return clip_fail(err, CLIP_EINPUT, "broken PNG file (bad CRC in chunk %.4s)", (const char *)type);
        pos += (size_t)len + 4;
    }
    first->start = start;
    first->end = (uint64_t)start + decl;
    first->avail = size - start < decl ? size - start : (size_t)decl;
    first->has_seq = p->has_seq;
    first->seq = p->seq;
    return CLIP_OK;
}

/* chunk_IDAT and Image.load, before any row: the tile (the fcTL rectangle
 * when there was one), the frame count, the palette, and the checks Pillow
 * makes on them. */
static int png_prepare(png_info *p, char *err)
{
    uint64_t frames;
    int default_image = 0, bits, i;
    if (p->has_bbox) {
        p->tx0 = p->bx0;
        p->ty0 = p->by0;
        p->tw = p->bx1 - p->bx0;
        p->th = p->by1 - p->by0;
    } else {
        if (p->has_frames) default_image = 1;
        p->tx0 = p->ty0 = 0;
        p->tw = p->w;
        p->th = p->h;
    }
    if (p->mode == PNG_NONE || p->w == 0 || p->h == 0)
        return clip_fail(err, CLIP_EINPUT, "PNG file has no valid IHDR chunk");
    frames = (p->has_frames ? p->n_frames : 1) + (uint64_t)default_image;
    p->animated = frames > 1;

    /* putpalette: more than 256 entries is refused; a palette read while
     * the mode was P also applies to L and LA images */
    for (i = 0; i < 256; i++) p->pal[3 * i] = p->pal[3 * i + 1] = p->pal[3 * i + 2] = (uint8_t)i;
    p->palp = NULL;
    if (p->has_plte) {
        if (p->plte_len / 3 > 256) return clip_fail(err, CLIP_EINPUT, "PNG palette has more than 256 entries");
        if (p->mode != PNG_P && p->mode != PNG_L && p->mode != PNG_LA)
            return clip_fail(err, CLIP_EINPUT, "PNG has a palette for a non-palette image mode");
        memcpy(p->pal, p->plte, (p->plte_len / 3) * 3);
        p->palp = p->pal;
    } else if (p->mode == PNG_P) p->palp = p->pal;

    /* decoder.setimage: the tile must lie inside the image */
    if (p->tw == 0 || p->th == 0 || p->tx0 + p->tw > p->w || p->ty0 + p->th > p->h)
        return clip_fail(err, CLIP_EINPUT, "PNG frame does not fit the image");
    bits = p->depth * png_channels(p->ctype);
    if (p->tw > (uint64_t)(2147483647 / bits - 7))
        return clip_fail(err, CLIP_EINPUT, "PNG rows are too long");
    return CLIP_OK;
}

/* load_read: the data chunks from *first on, joined and cut into feed blocks. */
static int png_join_data(png_stream *s, const uint8_t *data, size_t size, const png_seg *first, char *err)
{
    png_seg seg = *first;
    size_t total = 0, nblk = 0, i = 0;
    do {
        total += seg.avail;
        nblk += (seg.avail + PNG_FEED - 1) / PNG_FEED;
    } while (png_seg_next(data, size, &seg));
    s->bytes = malloc(total ? total : 1);
    s->blk_end = malloc((nblk ? nblk : 1) * sizeof *s->blk_end);
    s->blk_seg = malloc((nblk ? nblk : 1) * sizeof *s->blk_seg);
    if (!s->bytes || !s->blk_end || !s->blk_seg)
        return clip_fail(err, CLIP_ENOMEM, "out of memory while decoding PNG");
    seg = *first;
    do {
        size_t off;
        memcpy(s->bytes + s->size, data + seg.start, seg.avail);
        for (off = 0; off < seg.avail; off += PNG_FEED) {
            size_t n = seg.avail - off < PNG_FEED ? seg.avail - off : PNG_FEED;
            s->blk_end[s->nblk] = s->size + off + n;
            s->blk_seg[s->nblk++] = i;
        }
        s->size += seg.avail;
        i++;
    } while (png_seg_next(data, size, &seg));
    return CLIP_OK;
}

/* Adam7's passes: where each starts and how far apart its pixels are. */
static const int adam7_row0[7] = {0, 0, 4, 0, 2, 0, 1}, adam7_col0[7] = {0, 4, 0, 2, 0, 1, 0};
static const int adam7_drow[7] = {8, 8, 8, 4, 4, 2, 2}, adam7_dcol[7] = {8, 8, 4, 4, 2, 2, 1};

/* ZipDecode: inflate a row at a time, undo its filter, store it; for Adam7
 * walk the passes, skipping empty ones. The image is done when the last row
 * is, or when zlib reports the stream's end together with a completed row
 * (later rows then keep their initial value). *blk is the feed block that
 * held the last row. */
static int png_read_rows(const png_info *p, const png_stream *s, inflate_state *z, clip_image *img,
                         size_t *blk, char *err)
{
    int bits = p->depth * png_channels(p->ctype), pass = 0, rc = CLIP_OK;
    size_t full_len = (size_t)((p->tw * (uint64_t)bits + 7) / 8), bpp = (size_t)(bits + 7) / 8;
    size_t row_len = p->interlace ? (size_t)(((p->tw + 7) / 8 * (uint64_t)bits + 7) / 8) : full_len;
    uint8_t *cur = calloc(full_len + 1, 1), *prev = calloc(full_len + 1, 1);
    uint64_t y = 0, tw = p->tw;

    if (!cur || !prev) {
        free(cur);
        free(prev);
        return clip_fail(err, CLIP_ENOMEM, "out of memory while decoding PNG");
    }
    clip_inflate_init(z, s->bytes, s->size, s->nblk ? s->blk_end[0] : 0);
    *blk = 0;
    z->dst = cur;
    z->dst_cap = row_len + 1;
    for (;;) {
        int r = clip_inflate_run(z);
        if (r == INFLATE_ERROR) {
            rc = clip_fail(err, CLIP_EINPUT, "broken PNG image data (zlib: %s)", z->msg);
            break;
        }
        if (z->dst_pos == z->dst_cap) {
            uint8_t *t;
            if (png_unfilter(cur, prev, row_len, bpp)) {
                rc = clip_fail(err, CLIP_EINPUT, "PNG row has an unknown filter type %d", cur[0]);
                break;
            }
            if (p->interlace) {
                size_t n = (size_t)((tw + (uint64_t)(adam7_dcol[pass] - 1 - adam7_col0[pass])) / (uint64_t)adam7_dcol[pass]);
                png_put_row(p, cur + 1, n, img->rgb + ((size_t)y * (size_t)img->w + (size_t)adam7_col0[pass]) * 3,
                            (size_t)adam7_dcol[pass] * 3, p->palp);
                y += (uint64_t)adam7_drow[pass];
                while (y >= p->th || row_len == 0) {
                    uint64_t np;
                    if (++pass == 7) break;
                    y = (uint64_t)adam7_row0[pass];
                    np = (tw + (uint64_t)(adam7_dcol[pass] - 1 - adam7_col0[pass])) / (uint64_t)adam7_dcol[pass];
                    row_len = (size_t)((np * (uint64_t)bits + 7) / 8);
                    memset(cur, 0, full_len + 1);
                }
                if (pass == 7) break;
            } else {
                png_put_row(p, cur + 1, (size_t)tw,
                            img->rgb + ((size_t)(p->ty0 + y) * (size_t)img->w + (size_t)p->tx0) * 3, 3, p->palp);
                if (++y == p->th) break;
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
            rc = clip_fail(err, CLIP_EINPUT, "PNG image data ends before the last row");
            break;
        }
        if (*blk + 1 >= s->nblk) {
            rc = clip_fail(err, CLIP_EINPUT, "PNG file is truncated (image data ends early)");
            break;
        }
        z->limit = s->blk_end[++*blk];
    }
    free(cur);
    free(prev);
    return rc;
}

int clip_png_decode(const uint8_t *data, size_t size, clip_image *img, char *err)
{
    png_info p;
    png_seg first, seg;
    png_stream s;
    inflate_state *z = NULL;
    size_t blk = 0, i;
    int rc;

    memset(&p, 0, sizeof p);
    memset(&s, 0, sizeof s);
    img->w = img->h = 0;
    img->rgb = NULL;
    rc = png_open(&p, data, size, &first, err);
    if (!rc) rc = png_prepare(&p, err);
    if (!rc) rc = clip_image_alloc(img, p.w, p.h, err);
    if (rc) return rc;
    /* pixels outside the tile (and rows never reached) are palette entry 0 */
    if (p.palp && (p.pal[0] | p.pal[1] | p.pal[2]))
        for (i = 0; i < (size_t)img->w * (size_t)img->h; i++) memcpy(img->rgb + 3 * i, p.pal, 3);

    rc = png_join_data(&s, data, size, &first, err);
    if (!rc && !(z = malloc(sizeof *z))) rc = clip_fail(err, CLIP_ENOMEM, "out of memory while decoding PNG");
    if (!rc) rc = png_read_rows(&p, &s, z, img, &blk, err);
    if (!rc) {
        /* load_end: the chunks after the one that held the last row */
        seg = first;
        for (i = 0; i < s.blk_seg[blk]; i++) png_seg_next(data, size, &seg);
        p.has_seq = seg.has_seq;
        p.seq = seg.seq;
        rc = png_load_end(&p, data, size, seg.end + 4, err);
    }
    free(s.bytes);
    free(s.blk_end);
    free(s.blk_seg);
    free(z);
    if (rc) clip_image_free(img);
    return rc;
}
