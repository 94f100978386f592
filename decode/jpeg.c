/* decode/jpeg.c - JPEG -> 8-bit RGB, pixel for pixel as Pillow decodes it
 * (baseline and progressive; Image.open(f).convert("RGB")).
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
 *
 * The file runs in that order: tables, the decoder's state, the bit reader,
 * markers, the inverse DCT, entropy decoding, scans, block smoothing,
 * upsampling and colour conversion, and last the file (jpeg_read_file) and
 * clip_jpeg_decode.
 */
#include <stdlib.h>
#include <string.h>

#include "decode.h"

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

static int jpeg_truncated(jpeg_decoder *d)
{
    return clip_fail(d->err, CLIP_EINPUT, "JPEG file is truncated");
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
            return clip_fail(d->err, CLIP_EINPUT, "JPEG quantization table index %d is out of range", n);
        if (len < (prec ? 128 : 64))
            return clip_fail(d->err, CLIP_EINPUT, "JPEG quantization table marker is too short");
        for (i = 0; i < 64; i++) {
            unsigned v = prec ? (unsigned)(p[2 * i] << 8 | p[2 * i + 1]) : p[i];
            d->qt[n][jpeg_natural_order[i]] = (uint16_t)v;
        }
        d->qt_defined[n] = 1;
        p += prec ? 128 : 64;
        len -= prec ? 128 : 64;
    }
    if (len != 0)
        return clip_fail(d->err, CLIP_EINPUT, "JPEG quantization table marker has a bad length");
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
            return clip_fail(d->err, CLIP_EINPUT, "JPEG Huffman table is corrupt");
        if (index & 0x10)
            index -= 0x10;
        if (index < 0 || index >= 4)
            return clip_fail(d->err, CLIP_EINPUT, "JPEG Huffman table index %d is out of range", index);
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
        return clip_fail(d->err, CLIP_EINPUT, "JPEG Huffman table marker has a bad length");
    return 0;
}

/* get_sof: frame header, with Pillow's and libjpeg's limits. */
static int jpeg_read_sof(jpeg_decoder *d, int marker, const uint8_t *p, int len)
{
    int i, j;
    uint64_t pixels;
    if (marker == 0xC9 || marker == 0xCA)
        return clip_fail(d->err, CLIP_EINPUT, "arithmetic-coded JPEG files are not supported");
    if (len < 6)
        return clip_fail(d->err, CLIP_EINPUT, "JPEG frame header is too short");
    if (p[0] != 8)
        return clip_fail(d->err, CLIP_EINPUT, "%d-bit JPEG files are not supported (only 8-bit)", p[0]);
    if (p[5] != 1 && p[5] != 3 && p[5] != 4)
        return clip_fail(d->err, CLIP_EINPUT, "JPEG files with %d components are not supported", p[5]);
    if (marker != 0xC0 && marker != 0xC1 && marker != 0xC2)
        return clip_fail(d->err, CLIP_EINPUT, "this JPEG coding process (SOF%d) is not supported", marker - 0xC0);
    d->seen_sof = 1;
    d->progressive = marker == 0xC2;
    d->h = p[1] << 8 | p[2];
    d->w = p[3] << 8 | p[4];
    d->ncomp = p[5];
    if (d->w == 0 || d->h == 0)
        return clip_fail(d->err, CLIP_EINPUT, "JPEG image is empty (%d x %d)", d->w, d->h);
    if (len != 6 + 3 * d->ncomp)
        return clip_fail(d->err, CLIP_EINPUT, "JPEG frame header has a bad length");
    if (d->w > JPEG_MAX_DIMENSION || d->h > JPEG_MAX_DIMENSION)
        return clip_fail(d->err, CLIP_EINPUT, "JPEG image is too large (%d x %d)", d->w, d->h);
    pixels = (uint64_t)d->w * (uint64_t)d->h;
    if (pixels > (uint64_t)CLIP_MAX_PIXELS)
        return clip_fail(d->err, CLIP_EINPUT, "JPEG image is too large (%d x %d, at most %ld pixels)",
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
            return clip_fail(d->err, CLIP_EINPUT, "JPEG sampling factors %dx%d are invalid", c->h, c->v);
        for (j = 0; j < i; j++)
            if (d->comp[j].id == c->id)
                return clip_fail(d->err, CLIP_EINPUT, "JPEG component identifier %d is repeated", c->id);
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
            return clip_fail(d->err, CLIP_EINPUT, "JPEG fractional sampling factors are not supported");
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
        return clip_fail(d->err, CLIP_EINPUT, "JPEG scan uses an undefined Huffman table");
    for (l = 1; l <= 16; l++)
        n += t->bits[l];
    if (n > 256)
        return clip_fail(d->err, CLIP_EINPUT, "JPEG Huffman table is corrupt");
    for (i = 0; i < 256; i++)
        t->lookup[i] = 9 << 8;
    for (l = 1; l <= 16; l++) {
        int cnt = t->bits[l];
        /* no code may be all ones: the codes of length l must fit below 2^l - 1 */
        if (code + (uint32_t)cnt >= (1u << l))
            return clip_fail(d->err, CLIP_EINPUT, "JPEG Huffman table is corrupt");
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
                return clip_fail(d->err, CLIP_EINPUT, "JPEG DC Huffman table has a symbol above 15");
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
            return clip_fail(d->err, CLIP_EINPUT, "JPEG MCU has too many blocks (%d, at most 10)", blocks);
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
                return clip_fail(d->err, CLIP_EINPUT, "JPEG DC coefficient overflows");
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
        return clip_fail(d->err, CLIP_EINPUT, "JPEG scan comes before the frame header");
    if (len < 1 || p[0] < 1 || p[0] > 4 || len != 4 + 2 * p[0])
        return clip_fail(d->err, CLIP_EINPUT, "JPEG scan header has a bad length");
    d->ns = p[0];
    for (i = 0; i < d->ns; i++) {
        int id = p[1 + 2 * i], sel = p[2 + 2 * i];
        jpeg_component *c = NULL;
        for (j = 0; j < d->ncomp; j++)
            if (d->comp[j].id == id)
                c = &d->comp[j];
        if (!c)
            return clip_fail(d->err, CLIP_EINPUT, "JPEG scan names an unknown component %d", id);
        for (j = 0; j < i; j++)
            if (d->scomp[j] == c)
                return clip_fail(d->err, CLIP_EINPUT, "JPEG scan names component %d twice", id);
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
            return clip_fail(d->err, CLIP_EINPUT, "JPEG progressive scan parameters are invalid (Ss=%d Se=%d Ah=%d Al=%d)",
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
                return clip_fail(d->err, CLIP_EINPUT, "JPEG component uses undefined quantization table %d", c->tq);
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
        return clip_fail(d->err, CLIP_ENOMEM, "out of memory decoding a %d x %d JPEG", d->w, d->h);
    for (i = 0; i < d->ncomp; i++) {
        jpeg_component *c = &d->comp[i];
        uint64_t samples = (uint64_t)c->wb * 8 * (uint64_t)c->hb * 8;
        c->stride = (size_t)c->wb * 8;
        if (samples > SIZE_MAX)
            return clip_fail(d->err, CLIP_ENOMEM, "JPEG image is too large for memory");
        c->plane = (uint8_t *)malloc((size_t)samples);
        c->row = (uint8_t *)malloc((size_t)d->w + 16);
        if (!c->plane || !c->row)
            return clip_fail(d->err, CLIP_ENOMEM, "out of memory decoding a %d x %d JPEG", d->w, d->h);
        if (!d->single_scan) {
            uint64_t n = (uint64_t)c->bw * (uint64_t)c->bh * 64;
            if (n > SIZE_MAX / sizeof(int16_t))
                return clip_fail(d->err, CLIP_ENOMEM, "JPEG image is too large for memory");
            c->coef = (int16_t *)calloc((size_t)n, sizeof(int16_t));
            if (!c->coef)
                return clip_fail(d->err, CLIP_ENOMEM, "out of memory decoding a %d x %d JPEG", d->w, d->h);
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

/* The first AC coefficients of one block (and with no AC data at all, the
 * DC too) that are still unknown, estimated from the 5x5 DC values around
 * it: DC[1..25] row by row, DC[13] the block's own; q is the component's
 * quantization table (natural order), bits its progression state. */
static void jpeg_smooth_block(int16_t ws[64], const int DC[26], const uint16_t *q, const int *bits, int change_dc)
{
    int64_t Q00 = q[0], Q01 = q[1], Q10 = q[8], Q20 = q[16], Q11 = q[9],
            Q02 = q[2], Q03 = q[3], Q12 = q[10], Q21 = q[17], Q30 = q[24], num;
    int al;
    if ((al = bits[1]) != 0 && ws[1] == 0) {
        num = Q00 * (change_dc ?
              (int64_t)(-DC[1] - DC[2] + DC[4] + DC[5] - 3 * DC[6] + 13 * DC[7] - 13 * DC[9] + 3 * DC[10] -
                        3 * DC[11] + 38 * DC[12] - 38 * DC[14] + 3 * DC[15] - 3 * DC[16] + 13 * DC[17] -
                        13 * DC[19] + 3 * DC[20] - DC[21] - DC[22] + DC[24] + DC[25]) :
              (int64_t)(-7 * DC[11] + 50 * DC[12] - 50 * DC[14] + 7 * DC[15]));
        ws[1] = jpeg_smooth_pred(num, Q01, al);
    }
    if ((al = bits[2]) != 0 && ws[8] == 0) {
        num = Q00 * (change_dc ?
              (int64_t)(-DC[1] - 3 * DC[2] - 3 * DC[3] - 3 * DC[4] - DC[5] - DC[6] + 13 * DC[7] +
                        38 * DC[8] + 13 * DC[9] - DC[10] + DC[16] - 13 * DC[17] - 38 * DC[18] -
                        13 * DC[19] + DC[20] + DC[21] + 3 * DC[22] + 3 * DC[23] + 3 * DC[24] + DC[25]) :
              (int64_t)(-7 * DC[3] + 50 * DC[8] - 50 * DC[18] + 7 * DC[23]));
        ws[8] = jpeg_smooth_pred(num, Q10, al);
    }
    if ((al = bits[3]) != 0 && ws[16] == 0) {
        num = Q00 * (change_dc ?
              (int64_t)(DC[3] + 2 * DC[7] + 7 * DC[8] + 2 * DC[9] - 5 * DC[12] - 14 * DC[13] -
                        5 * DC[14] + 2 * DC[17] + 7 * DC[18] + 2 * DC[19] + DC[23]) :
              (int64_t)(-DC[3] + 13 * DC[8] - 24 * DC[13] + 13 * DC[18] - DC[23]));
        ws[16] = jpeg_smooth_pred(num, Q20, al);
    }
    if ((al = bits[4]) != 0 && ws[9] == 0) {
        num = Q00 * (change_dc ?
              (int64_t)(-DC[1] + DC[5] + 9 * DC[7] - 9 * DC[9] - 9 * DC[17] + 9 * DC[19] + DC[21] - DC[25]) :
              (int64_t)(DC[10] + DC[16] - 10 * DC[17] + 10 * DC[19] - DC[2] - DC[20] + DC[22] - DC[24] + DC[4] -
                        DC[6] + 10 * DC[7] - 10 * DC[9]));
        ws[9] = jpeg_smooth_pred(num, Q11, al);
    }
    if ((al = bits[5]) != 0 && ws[2] == 0) {
        num = Q00 * (change_dc ?
              (int64_t)(2 * DC[7] - 5 * DC[8] + 2 * DC[9] + DC[11] + 7 * DC[12] - 14 * DC[13] +
                        7 * DC[14] + DC[15] + 2 * DC[17] - 5 * DC[18] + 2 * DC[19]) :
              (int64_t)(-DC[11] + 13 * DC[12] - 24 * DC[13] + 13 * DC[14] - DC[15]));
        ws[2] = jpeg_smooth_pred(num, Q02, al);
    }
    if (change_dc) {
        if ((al = bits[6]) != 0 && ws[3] == 0) {
            num = Q00 * (int64_t)(DC[7] - DC[9] + 2 * DC[12] - 2 * DC[14] + DC[17] - DC[19]);
            ws[3] = jpeg_smooth_pred(num, Q03, al);
        }
        if ((al = bits[7]) != 0 && ws[10] == 0) {
            num = Q00 * (int64_t)(DC[7] - 3 * DC[8] + DC[9] - DC[17] + 3 * DC[18] - DC[19]);
            ws[10] = jpeg_smooth_pred(num, Q12, al);
        }
        if ((al = bits[8]) != 0 && ws[17] == 0) {
            num = Q00 * (int64_t)(DC[7] - DC[9] - 3 * DC[12] + 3 * DC[14] + DC[17] - DC[19]);
            ws[17] = jpeg_smooth_pred(num, Q21, al);
        }
        if ((al = bits[9]) != 0 && ws[24] == 0) {
            num = Q00 * (int64_t)(DC[7] + 2 * DC[8] + DC[9] - DC[17] - 2 * DC[18] - DC[19]);
            ws[24] = jpeg_smooth_pred(num, Q30, al);
        }
        num = Q00 * (int64_t)(-2 * DC[1] - 6 * DC[2] - 8 * DC[3] - 6 * DC[4] - 2 * DC[5] -
                              6 * DC[6] + 6 * DC[7] + 42 * DC[8] + 6 * DC[9] - 6 * DC[10] -
                              8 * DC[11] + 42 * DC[12] + 152 * DC[13] + 42 * DC[14] - 8 * DC[15] -
                              6 * DC[16] + 6 * DC[17] + 42 * DC[18] + 6 * DC[19] - 6 * DC[20] -
                              2 * DC[21] - 6 * DC[22] - 8 * DC[23] - 6 * DC[24] - 2 * DC[25]);
        ws[0] = jpeg_smooth_pred(num, Q00, 0);
    }
}

/* The inverse DCT of the blocks of component ci in iMCU row imcu, with the
 * first AC coefficients estimated (jpeg_smooth_block), exactly as
 * libjpeg-turbo 2.1.5 does it. That includes the way it picks neighbours:
 * rows two away are replaced by the nearer row judging from the iMCU row
 * index alone (so inside a v=2 component some are), and in the first column
 * of a 2-block-wide component the block two to the right is the block itself
 * (both changed in libjpeg-turbo 3.0.1). */
static void jpeg_smooth_row(jpeg_decoder *d, int ci, int imcu, int latch[4][10], int prev_latch[4][10])
{
    jpeg_component *c = &d->comp[ci];
    int total_imcu = d->mcus_y, block_rows, br, *bits, change_dc, k;
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
        int DC[26], b, last = c->wb - 1, r;
        rows[0] = c->coef + (size_t)r_pp * c->bw * 64;
        rows[1] = c->coef + (size_t)r_prev * c->bw * 64;
        rows[2] = c->coef + (size_t)row * c->bw * 64;
        rows[3] = c->coef + (size_t)r_next * c->bw * 64;
        rows[4] = c->coef + (size_t)r_nn * c->bw * 64;
        /* DC[5r+1 .. 5r+5]: row r of the neighbourhood, columns b-2 .. b+2
         * (repeating the edge block) */
        for (r = 0; r < 5; r++)
            for (k = 1; k <= 5; k++) DC[5 * r + k] = rows[r][0];
        for (b = 0; b <= last; b++) {
            int16_t ws[64];
            memcpy(ws, rows[2] + (size_t)b * 64, sizeof ws);
            for (r = 0; r < 5; r++) {
                if (b == 0 && b < last) DC[5 * r + 4] = rows[r][64];
                if (b + 1 < last) DC[5 * r + 5] = rows[r][(size_t)(b + 2) * 64];
            }
            jpeg_smooth_block(ws, DC, c->qval, bits, change_dc);
            jpeg_idct_islow(ws, c->qmul, c->plane + (size_t)row * 8 * c->stride + (size_t)b * 8,
                            c->stride);
            /* move the window one block to the right */
            for (r = 0; r < 5; r++)
                for (k = 1; k <= 4; k++) DC[5 * r + k] = DC[5 * r + k + 1];
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
        return clip_fail(d->err, CLIP_EINPUT, "not a JPEG file");
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
            return clip_fail(d->err, CLIP_EINPUT, "JPEG file has an unknown marker 0x%02X", m);
        if (m == 0xD9) {
            if (before_sos)
                return clip_fail(d->err, CLIP_EINPUT, "JPEG file ends before any image data");
            return 0;
        }
        if (m == 0xD8)
            return clip_fail(d->err, CLIP_EINPUT, "JPEG file has a second start-of-image marker");
        if ((m >= 0xD0 && m <= 0xD7) || m == 0x01)
            continue; /* stray RSTn or TEM: no parameters, ignored */
        if ((m >= 0xC3 && m <= 0xCF && m != 0xC4 && m != 0xC9 && m != 0xCA && m != 0xCC) || m == 0xDE)
            /* lossless, hierarchical, JPG and DHP: libjpeg-turbo refuses them */
            return clip_fail(d->err, CLIP_EINPUT, "this JPEG coding process (marker 0x%02X) is not supported", m);
        if (m < 0xC0 || m == 0xDF || (m >= 0xF0 && m <= 0xFD))
            return clip_fail(d->err, CLIP_EINPUT, "JPEG file has an unknown marker 0x%02X", m);
        if (jpeg_segment(d, &p, &len, &avail) != 0)
            return d->done_single_scan ? 0 : jpeg_truncated(d);
        if (avail < len) {
            if (!d->done_single_scan)
                return jpeg_truncated(d);
            if (jpeg_partial_segment_bad(d, m, p, len, avail))
                return clip_fail(d->err, CLIP_EINPUT, "JPEG file has a corrupt marker 0x%02X after its image data", m);
            return 0;
        }
        if (m == 0xC0 || m == 0xC1 || m == 0xC2 || m == 0xC9 || m == 0xCA) {
            if (d->seen_sof)
                return clip_fail(d->err, CLIP_EINPUT, "JPEG file has two frame headers");
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
                return clip_fail(d->err, CLIP_EINPUT, "JPEG restart interval marker has a bad length");
            d->restart_interval = p[0] << 8 | p[1];
        } else if (m == 0xCC) {
            /* get_dac: arithmetic conditioning, unused by Huffman files */
            int i;
            if (len < 0 || len % 2)
                return clip_fail(d->err, CLIP_EINPUT, "JPEG arithmetic conditioning marker has a bad length");
            for (i = 0; i < len; i += 2)
                if (p[i] >= 32 || (p[i] < 16 && (p[i + 1] & 15) > p[i + 1] >> 4))
                    return clip_fail(d->err, CLIP_EINPUT, "JPEG arithmetic conditioning marker is invalid");
        } else if (m >= 0xE0 && m <= 0xEF) {
            if (before_sos)
                jpeg_read_app(d, m, p, len);
        } else if (m == 0xDA) {
            if (d->done_single_scan)
                return clip_fail(d->err, CLIP_EINPUT, "JPEG file has another scan after its only one");
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
int clip_jpeg_decode(const uint8_t *data, size_t size, clip_image *img, char *err)
{
    jpeg_decoder *d;
    int rc, i;
    img->w = img->h = 0;
    img->rgb = NULL;
    d = (jpeg_decoder *)calloc(1, sizeof *d);
    if (!d) {
        return clip_fail(err, CLIP_ENOMEM, "out of memory decoding a JPEG");
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
