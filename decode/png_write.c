/* decode/png_write.c - clip_png_encode: 8-bit RGB -> a PNG file in memory
 * (clip match --html puts the picture in its page with it).
 *
 * The simplest PNG that every reader takes: no interlace, every row with
 * the "sub" filter, one IDAT chunk holding a zlib stream of one
 * fixed-Huffman deflate block (RFC 1951 3.2.6) with greedy LZ77 matches.
 */
#include <stdlib.h>
#include <string.h>

#include "decode.h"

/* Bits out, least significant first, as deflate packs them. */
typedef struct {
    uint8_t *p;
    size_t n;
    uint32_t acc;
    int nacc;
} bit_writer;

static void put_bits(bit_writer *o, uint32_t v, int n)
{
    o->acc |= v << o->nacc;
    o->nacc += n;
    while (o->nacc >= 8) {
        o->p[o->n++] = (uint8_t)o->acc;
        o->acc >>= 8;
        o->nacc -= 8;
    }
}

/* A Huffman code is sent most significant bit first. */
static void put_code(bit_writer *o, unsigned code, unsigned len)
{
    unsigned rev = 0, i;
    for (i = 0; i < len; i++) rev |= ((code >> i) & 1u) << (len - 1 - i);
    put_bits(o, rev, (int)len);
}

/* The fixed literal/length code of symbol sym (RFC 1951 3.2.6). */
static void put_fixed(bit_writer *o, unsigned sym)
{
    if (sym < 144) put_code(o, 0x30 + sym, 8);
    else if (sym < 256) put_code(o, 0x190 + sym - 144, 9);
    else if (sym < 280) put_code(o, sym - 256, 7);
    else put_code(o, 0xc0 + sym - 280, 8);
}

/* A match of len bytes dist back: length code and extra bits, then the
 * distance code (fixed: 5 bits) and its extra bits. */
static void put_match(bit_writer *o, size_t len, size_t dist)
{
    int s = 28, t = 30;
    while (clip_deflate_len_base[s] > len) s--;
    put_fixed(o, 257u + (unsigned)s);
    put_bits(o, (uint32_t)(len - clip_deflate_len_base[s]), clip_deflate_len_extra[s]);
    while (clip_deflate_dist_base[--t] > dist) {}
    put_code(o, (unsigned)t, 5);
    put_bits(o, (uint32_t)(dist - clip_deflate_dist_base[t]), clip_deflate_dist_extra[t]);
}

/* zlib stream of raw[n] into out (room for n / 8 * 11 + 64 bytes: a literal
 * costs at most 9 bits): header, one final fixed-Huffman block whose
 * matches come from a hash of the next three bytes (head[32768] is
 * scratch), Adler-32. Returns the bytes written. */
static size_t zlib_fixed(const uint8_t *raw, size_t n, uint8_t *out, int32_t *head)
{
    bit_writer o;
    uint32_t a = 1, b = 0;
    size_t i;

    o.p = out;
    o.n = 0;
    o.acc = 0;
    o.nacc = 0;
    o.p[o.n++] = 0x78;          /* deflate, 32 KiB window */
    o.p[o.n++] = 0x01;          /* no dictionary, fastest; (0x78 * 256 + 1) % 31 == 0 */
    put_bits(&o, 1, 1);         /* BFINAL */
    put_bits(&o, 1, 2);         /* BTYPE 01: fixed codes */
    for (i = 0; i < (size_t)1 << 15; i++) head[i] = -1;
    for (i = 0; i < n;) {
        size_t best = 0, dist = 0;
        if (i + 3 <= n) {
            unsigned hv = ((unsigned)raw[i] << 10 ^ (unsigned)raw[i + 1] << 5 ^ raw[i + 2]) & 32767;
            int32_t c = head[hv];
            head[hv] = (int32_t)i;
            if (c >= 0 && i - (size_t)c <= 32768) {
                size_t m = 0, lim = n - i < 258 ? n - i : 258;
                while (m < lim && raw[(size_t)c + m] == raw[i + m]) m++;
                if (m >= 3) {
                    best = m;
                    dist = i - (size_t)c;
                }
            }
        }
        if (best) {
            put_match(&o, best, dist);
            i += best;
        } else {
            put_fixed(&o, raw[i]);
            i++;
        }
    }
    put_fixed(&o, 256);         /* end of block */
    if (o.nacc) put_bits(&o, 0, 8 - o.nacc);
    for (i = 0; i < n; i++) {
        a = (a + raw[i]) % 65521;
        b = (b + a) % 65521;
    }
    o.p[o.n++] = (uint8_t)(b >> 8);
    o.p[o.n++] = (uint8_t)b;
    o.p[o.n++] = (uint8_t)(a >> 8);
    o.p[o.n++] = (uint8_t)a;
    return o.n;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Append a chunk: length, type, data (which may already be in place at
 * out + *n + 8), CRC of type and data. */
static void put_chunk(uint8_t *out, size_t *n, const char *type, const uint8_t *d, size_t len,
                      const uint32_t *table)
{
    uint8_t *p = out + *n;
    put_be32(p, (uint32_t)len);
    memcpy(p + 4, type, 4);
    if (len && d != p + 8) memmove(p + 8, d, len);
    put_be32(p + 8 + len, clip_crc32(table, 0, p + 4, len + 4));
    *n += len + 12;
}

int clip_png_encode(const clip_image *img, uint8_t **png, size_t *size, char *err)
{
    uint32_t table[256];
    size_t w, h, raw_len, cap, i, y, n = 0, zlen;
    uint8_t *raw, *out, ihdr[13];
    int32_t *head;

    if (png) *png = NULL;
    if (size) *size = 0;
    if (!img || !img->rgb || !png || !size) return clip_fail(err, CLIP_EINPUT, "no image to encode");
    if (img->w <= 0 || img->h <= 0 || (long)img->w > CLIP_MAX_PIXELS / img->h)
        return clip_fail(err, CLIP_EINPUT, "cannot encode a %d x %d image", img->w, img->h);
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
        return clip_fail(err, CLIP_ENOMEM, "out of memory encoding PNG");
    }
    clip_crc32_table(table);

    /* filter "sub": each byte minus the same channel of the pixel before */
    for (y = 0; y < h; y++) {
        uint8_t *r = raw + y * (1 + 3 * w);
        const uint8_t *s = img->rgb + y * 3 * w;
        r[0] = 1;
        for (i = 0; i < 3 * w; i++) r[1 + i] = (uint8_t)(s[i] - (i >= 3 ? s[i - 3] : 0));
    }

    memcpy(out, "\x89PNG\r\n\x1a\n", 8);
    n = 8;
    put_be32(ihdr, (uint32_t)w);
    put_be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8;                                /* bit depth */
    ihdr[9] = 2;                                /* colour type: RGB */
    ihdr[10] = ihdr[11] = ihdr[12] = 0;         /* deflate, filter method 0, no interlace */
    put_chunk(out, &n, "IHDR", ihdr, 13, table);
    /* the zlib stream goes straight where the IDAT chunk's data belongs */
    zlen = zlib_fixed(raw, raw_len, out + n + 8, head);
    put_chunk(out, &n, "IDAT", out + n + 8, zlen, table);
    put_chunk(out, &n, "IEND", NULL, 0, table);
    free(raw);
    free(head);
    *png = out;
    *size = n;
    return CLIP_OK;
}
