/* decode/bmp.c - BMP -> 8-bit RGB, as Pillow's BmpImagePlugin and
 * convert("RGB") give it: 1/4/8-bit palettes (read as grey when the palette
 * is a grey ramp), 16/24/32-bit pixels with the BITFIELDS layouts Pillow
 * knows, RLE4 and RLE8.
 *
 * The steps, in file order: each raw mode's pixel to RGB, the RLE decoder,
 * the headers, the raw mode, the palette, the raw rows, the file.
 */
#include <string.h>

#include "decode.h"

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
        v = rd16le(row + 2 * x);
        o[0] = (uint8_t)(((v >> 10) & 31) * 255 / 31);
        o[1] = (uint8_t)(((v >> 5) & 31) * 255 / 31);
        o[2] = (uint8_t)((v & 31) * 255 / 31);
        return;
    case BMP_BGR16:
        v = rd16le(row + 2 * x);
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

/* Value number n of an RLE stream: pixel n % w of row n / w (counted from
 * the bottom unless top-down), a grey level (pal NULL) or a palette index.
 * Values past the image are dropped. */
static void bmp_rle_put(clip_image *img, uint64_t n, int top_down, const uint8_t *pal, unsigned v)
{
    uint64_t w = (uint64_t)img->w, row = n / w;
    uint8_t *o;
    if (n >= w * (uint64_t)img->h) return;
    o = img->rgb + ((top_down ? row : (uint64_t)img->h - 1 - row) * w + n % w) * 3;
    if (pal) memcpy(o, pal + 3 * v, 3);
    else memset(o, (int)v, 3);
}

/* BmpRleDecoder (RLE8 and RLE4) with its quirks: runs are clipped at the
 * row end, an odd RLE4 absolute run loses its last pixel, a delta skips
 * two bytes before reading its offsets, and padding goes by file offset.
 * The first w * h values are the image rows, bottom-up unless top-down. */
static int bmp_rle(const uint8_t *d, size_t size, uint64_t off, int rle4, int top_down,
                   const uint8_t *pal, clip_image *img, char *err)
{
    uint64_t w = (uint64_t)img->w, total = w * (uint64_t)img->h, n = 0, x = 0, q = off;
    while (n < total) {
        unsigned cnt, b, i;
        if (q >= size || size - q < 2) break;
        cnt = d[q];
        b = d[q + 1];
        q += 2;
        if (cnt) {
            if (x + cnt > w) cnt = x < w ? (unsigned)(w - x) : 0;
            for (i = 0; i < cnt; i++) bmp_rle_put(img, n++, top_down, pal, rle4 ? (i % 2 ? b & 15 : b >> 4) : b);
            x += cnt;
        } else if (b == 0) {
            while (n % w) bmp_rle_put(img, n++, top_down, pal, 0);
            x = 0;
        } else if (b == 1) {
            break;
        } else if (b == 2) {
            if (q >= size || size - q < 2) break;
            q += 2;
            if (q >= size || size - q < 2) return clip_fail(err, CLIP_EINPUT, "BMP RLE delta is truncated");
            n += d[q] + (uint64_t)d[q + 1] * w;
            q += 2;
            x = n % w;
        } else {
            uint64_t want = rle4 ? b / 2 : b, got = q >= size ? 0 : size - q;
            if (got > want) got = want;
            for (i = 0; i < got; i++) {
                uint8_t c = d[q + i];
                if (rle4) {
                    bmp_rle_put(img, n++, top_down, pal, c >> 4);
                    bmp_rle_put(img, n++, top_down, pal, c & 15);
                } else bmp_rle_put(img, n++, top_down, pal, c);
            }
            q += got;
            if (got < want) break;
            x += b;
            if (q % 2) q++;
        }
    }
    if (n < total) return clip_fail(err, CLIP_EINPUT, "BMP RLE data does not cover the image");
    return CLIP_OK;
}

/* What the headers say (BmpImageFile._bitmap). */
typedef struct {
    uint64_t offset;          /* where the pixels start (0: right after the palette) */
    uint64_t hsize, w, h, colors;
    unsigned bits, comp, pad; /* bits a pixel, compression, bytes a palette entry */
    int top_down;             /* the height was negative: rows run top to bottom */
    int raw;                  /* Pillow's raw mode, BMP_* */
    size_t pos;               /* the byte after the headers (and bit masks, and palette) */
    uint32_t mask[4];         /* BITFIELDS: red, green, blue, alpha */
    uint8_t pal[768];         /* the palette as RGB (a grey ramp where there is none) */
} bmp_info;

/* The file header and the info header (OS/2 12 bytes, or Windows 40, 64,
 * 108, 124 bytes), and the bit masks of a BITFIELDS file. */
static int bmp_header(bmp_info *b, const uint8_t *d, size_t size, char *err)
{
    const uint8_t *hd;
    size_t i;
    if (size < 18) return clip_fail(err, CLIP_EINPUT, "BMP file is truncated");
    hd = d + 18;
    b->offset = rd32le(d + 10);
    b->hsize = rd32le(d + 14);
    if (b->hsize != 12 && b->hsize != 40 && b->hsize != 64 && b->hsize != 108 && b->hsize != 124)
        return clip_fail(err, CLIP_EINPUT, "unsupported BMP header type (%lu)", (unsigned long)b->hsize);
    if (size - 18 < b->hsize - 4) return clip_fail(err, CLIP_EINPUT, "BMP file is truncated");
    b->pos = 14 + (size_t)b->hsize;
    if (b->hsize == 12) {
        b->w = rd16le(hd);
        b->h = rd16le(hd + 2);
        b->bits = rd16le(hd + 6);
        b->colors = 0;
        b->pad = 3;
    } else {
        b->w = rd32le(hd);
        b->h = rd32le(hd + 4);
        if (hd[7] == 0xff) {
            b->h = 4294967296ull - b->h;
            b->top_down = 1;
        }
        b->bits = rd16le(hd + 10);
        b->comp = rd32le(hd + 12);
        b->colors = rd32le(hd + 28);
        b->pad = 4;
        if (b->comp == 3) {
            if (b->hsize - 4 >= 52) {
                for (i = 0; i < 4; i++) b->mask[i] = rd32le(hd + 36 + 4 * i);
            } else {
                if (size - b->pos < 12) return clip_fail(err, CLIP_EINPUT, "BMP file is truncated (bit masks)");
                for (i = 0; i < 3; i++) b->mask[i] = rd32le(d + b->pos + 4 * i);
                b->pos += 12;
            }
        }
    }
    if (b->colors == 0) b->colors = b->bits < 40 ? (uint64_t)1 << b->bits : (uint64_t)1 << 40;
    if (b->offset == 14 + b->hsize && b->bits <= 8) b->offset += 4 * b->colors;
    return CLIP_OK;
}

/* BIT2MODE, then the BITFIELDS layouts Pillow knows. */
static int bmp_raw_mode(bmp_info *b, char *err)
{
    unsigned bits = b->bits;
    uint32_t r = b->mask[0], g = b->mask[1], bl = b->mask[2], a = b->mask[3];
    if (bits == 1) b->raw = BMP_P1;
    else if (bits == 4) b->raw = BMP_P4;
    else if (bits == 8) b->raw = BMP_P8;
    else if (bits == 16) b->raw = BMP_BGR15;
    else if (bits == 24) b->raw = BMP_BGR;
    else if (bits == 32) b->raw = BMP_BGRX;
    else return clip_fail(err, CLIP_EINPUT, "unsupported BMP pixel depth (%u)", bits);
    if (b->comp == 3) {
        if (bits == 32 && r == 0xff0000 && g == 0xff00 && bl == 0xff && (a == 0 || a == 0xff000000u)) b->raw = BMP_BGRX;
        else if (bits == 32 && r == 0xff000000u && g == 0xff0000 && bl == 0xff00 && (a == 0 || a == 0xff)) b->raw = BMP_XBGR;
        else if (bits == 32 && r == 0xff && g == 0xff00 && bl == 0xff0000 && a == 0xff000000u) b->raw = BMP_RGBA;
        else if (bits == 32 && !r && !g && !bl && !a) b->raw = BMP_BGRX;
        else if (bits == 24 && r == 0xff0000 && g == 0xff00 && bl == 0xff) b->raw = BMP_BGR;
        else if (bits == 16 && r == 0xf800 && g == 0x7e0 && bl == 0x1f) b->raw = BMP_BGR16;
        else if (bits == 16 && r == 0x7c00 && g == 0x3e0 && bl == 0x1f) b->raw = BMP_BGR15;
        else return clip_fail(err, CLIP_EINPUT, "unsupported BMP bitfields layout");
    } else if (b->comp != 0 && b->comp != 1 && b->comp != 2)
        return clip_fail(err, CLIP_EINPUT, "unsupported BMP compression (%u)", b->comp);
    return CLIP_OK;
}

/* The palette of a 1/4/8-bit image: a grey ramp (0..n-1, or black and
 * white for 2 colours) makes Pillow read the pixels as L or 1 bytes,
 * whatever their depth; otherwise the BGR(X) entries as RGB. */
static int bmp_palette(bmp_info *b, const uint8_t *d, size_t size, char *err)
{
    const uint8_t *pl;
    size_t plen, i;
    int gray = 1;
    for (i = 0; i < 256; i++) b->pal[3 * i] = b->pal[3 * i + 1] = b->pal[3 * i + 2] = (uint8_t)i;
    if (b->bits > 8) return CLIP_OK;
    if (b->colors == 0 || b->colors > 65536)
        return clip_fail(err, CLIP_EINPUT, "unsupported BMP palette size (%lu)", (unsigned long)b->colors);
    pl = d + b->pos;
    plen = size - b->pos < b->pad * b->colors ? size - b->pos : (size_t)(b->pad * b->colors);
    b->pos += plen;
    for (i = 0; i < b->colors; i++) {
        unsigned v = b->colors == 2 ? (i ? 255 : 0) : (unsigned)(i & 255);
        if (i * b->pad + 3 > plen || pl[i * b->pad] != v || pl[i * b->pad + 1] != v || pl[i * b->pad + 2] != v) {
            gray = 0;
            break;
        }
    }
    if (gray) {
        b->raw = b->colors == 2 ? BMP_1 : BMP_L;
        return CLIP_OK;
    }
    if (plen / b->pad > 256) return clip_fail(err, CLIP_EINPUT, "BMP palette has more than 256 entries");
    for (i = 0; i < plen / b->pad; i++) {
        b->pal[3 * i] = pl[i * b->pad + 2];
        b->pal[3 * i + 1] = pl[i * b->pad + 1];
        b->pal[3 * i + 2] = pl[i * b->pad];
    }
    return CLIP_OK;
}

/* The raw decoder: rows of `stride` bytes (from the file's bit depth),
 * bottom-up unless the height was negative. Opened from a file, 8-bit L
 * and P images are memory-mapped when the whole padded image fits, which
 * reads row y at offset + y * stride even when that is shorter than a row
 * of the L raw mode. */
static int bmp_rows(const bmp_info *b, const uint8_t *d, size_t size, clip_image *img, char *err)
{
    uint64_t w = b->w, h = b->h, stride, row_bytes, step, q;
    int raw = b->raw, rawbits, mmap_path;
    size_t i, y;
    rawbits = raw == BMP_1 || raw == BMP_P1 ? 1 : raw == BMP_P4 ? 4 : raw == BMP_L || raw == BMP_P8 ? 8
            : raw == BMP_BGR15 || raw == BMP_BGR16 ? 16 : raw == BMP_BGR ? 24 : 32;
    stride = ((w * b->bits + 31) >> 3) & ~(uint64_t)3;
    row_bytes = (w * (uint64_t)rawbits + 7) / 8;
    mmap_path = (raw == BMP_L || raw == BMP_P8) && b->offset + h * stride <= size;
    if (mmap_path) step = stride;
    else {
        step = stride > row_bytes ? stride : row_bytes;
        if (b->offset > size || (h - 1) * step + row_bytes > size - b->offset)
            return clip_fail(err, CLIP_EINPUT, "BMP file is truncated");
    }
    for (y = 0; y < h; y++) {
        uint8_t *o = img->rgb + (b->top_down ? y : h - 1 - y) * w * 3;
        const uint8_t *row;
        uint8_t tail[8192];
        q = b->offset + y * step;
        row = d + q;
        if (mmap_path && q + row_bytes > size) {
            /* the mapped last row runs past the end of the file: zeros */
            size_t x, have = (size_t)(size - q);
            for (x = 0; x < w; x += sizeof tail) {
                size_t k, n = w - x < sizeof tail ? (size_t)(w - x) : sizeof tail;
                for (k = 0; k < n; k++) tail[k] = x + k < have ? d[q + x + k] : 0;
                for (k = 0; k < n; k++) bmp_put(o + (x + k) * 3, tail, k, raw, b->pal);
            }
            continue;
        }
        for (i = 0; i < w; i++) bmp_put(o + i * 3, row, i, raw, b->pal);
    }
    return CLIP_OK;
}

int clip_bmp_decode(const uint8_t *d, size_t size, clip_image *img, char *err)
{
    bmp_info b;
    int rc;

    memset(&b, 0, sizeof b);
    img->w = img->h = 0;
    img->rgb = NULL;
    if ((rc = bmp_header(&b, d, size, err)) || (rc = bmp_raw_mode(&b, err)) || (rc = bmp_palette(&b, d, size, err)))
        return rc;
    if (b.offset == 0) b.offset = b.pos;
    if (b.w == 0 || b.h == 0) return clip_fail(err, CLIP_EINPUT, "BMP image has zero width or height");
    rc = clip_image_alloc(img, b.w, b.h, err);
    if (rc) return rc;

    if (b.comp == 1 || b.comp == 2) {
        size_t i;
        if (b.raw != BMP_L && b.raw != BMP_P1 && b.raw != BMP_P4 && b.raw != BMP_P8)
            rc = clip_fail(err, CLIP_EINPUT, "BMP run-length compression needs a palette image");
        else {
            /* pixels the runs never reach are palette entry 0 */
            if (b.raw != BMP_L && (b.pal[0] | b.pal[1] | b.pal[2]))
                for (i = 0; i < b.w * b.h; i++) memcpy(img->rgb + 3 * i, b.pal, 3);
            rc = bmp_rle(d, size, b.offset, b.comp == 2, b.top_down, b.raw == BMP_L ? NULL : b.pal, img, err);
        }
    } else {
        rc = bmp_rows(&b, d, size, img, err);
    }
    if (rc) clip_image_free(img);
    return rc;
}
