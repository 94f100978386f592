/* decode/decode.h - the image file formats: what image.c calls, and what the
 * files of decode/ share. Internal; not installed.
 *
 * Each decoder reads a whole file in memory and writes 8-bit RGB exactly as
 * Pillow's Image.open(f).convert("RGB") gives it: the same pixels, the same
 * files accepted and refused. Each applies convert("RGB") as it writes its
 * rows (image.c's opening comment lists the rules per Pillow mode).
 *
 *   png.c        PngImagePlugin + ZipDecode.c (inflate.c: the zlib stream)
 *   jpeg.c       libjpeg-turbo as Pillow runs it (baseline and progressive)
 *   bmp.c        BmpImagePlugin
 *   ppm.c        PpmImagePlugin (binary P4, P5, P6)
 *   png_write.c  clip_png_encode: RGB -> PNG (for clip match --html)
 *
 * Every decoder starts from an empty img and leaves it empty on failure.
 */
#ifndef CLIP_DECODE_H
#define CLIP_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "../internal.h"

/* ---------------------------------------------------------------------- */
/* The decoders (data[size] is the whole file; 0 or a CLIP_E* code)        */
/* ---------------------------------------------------------------------- */

int clip_png_decode(const uint8_t *data, size_t size, clip_image *img, char *err);
int clip_jpeg_decode(const uint8_t *data, size_t size, clip_image *img, char *err);
int clip_bmp_decode(const uint8_t *data, size_t size, clip_image *img, char *err);
int clip_ppm_decode(const uint8_t *data, size_t size, clip_image *img, char *err);

/* image.c: allocate the w x h RGB result (zeroed), refusing empty images and
 * images over CLIP_MAX_PIXELS before any pixel memory is touched (which also
 * keeps every later w * h * 8 below 2^32). */
int clip_image_alloc(clip_image *img, uint64_t w, uint64_t h, char *err);

/* ---------------------------------------------------------------------- */
/* inflate.c: zlib (RFC 1950) + deflate (RFC 1951), resumable              */
/* ---------------------------------------------------------------------- */

/* What clip_inflate_run returns. */
enum { INFLATE_FULL = 0, INFLATE_MORE = 1, INFLATE_END = 2, INFLATE_ERROR = -1 };

#define INFLATE_FAST_BITS 9

/* A canonical Huffman code, with a table for codes up to 9 bits. */
typedef struct {
    uint16_t fast[1 << INFLATE_FAST_BITS]; /* sym | len << 9 for codes up to 9 bits */
    uint16_t count[16];                    /* codes of each length */
    uint16_t symbol[288];                  /* symbols in canonical order */
    int empty;                             /* no codes at all */
} inflate_huff;

typedef struct {
    const uint8_t *in;
    size_t size, limit;      /* bytes in `in`; bytes visible now (the caller moves it on) */
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
    size_t dst_pos, dst_cap; /* the caller sets dst_cap and resets dst_pos */
    const char *msg;         /* zlib's message for INFLATE_ERROR */
} inflate_state;

/* Start a stream of size bytes of which the first limit are visible. */
void clip_inflate_init(inflate_state *z, const uint8_t *in, size_t size, size_t limit);
/* Run until the output is full (INFLATE_FULL), the visible input is used up
 * (INFLATE_MORE), the stream ended with a good Adler-32 (INFLATE_END), or the
 * data is broken (INFLATE_ERROR, z->msg). */
int clip_inflate_run(inflate_state *z);

/* RFC 1951's length and distance codes (base values and extra bits), which
 * the PNG writer's deflate uses too. */
extern const uint16_t clip_deflate_len_base[29];
extern const uint8_t clip_deflate_len_extra[29];
extern const uint16_t clip_deflate_dist_base[30];
extern const uint8_t clip_deflate_dist_extra[30];

/* ---------------------------------------------------------------------- */
/* png.c: CRC-32 (ISO 3309), for the PNG reader and writer                 */
/* ---------------------------------------------------------------------- */

void clip_crc32_table(uint32_t table[256]);
/* The CRC of d[n] continuing from crc (start with 0). */
uint32_t clip_crc32(const uint32_t table[256], uint32_t crc, const uint8_t *d, size_t n);

#endif
