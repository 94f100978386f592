/* decode/inflate.c - zlib (RFC 1950) and deflate (RFC 1951) decompression,
 * as zlib's inflate() runs it for Pillow's PNG decoder.
 *
 * Pillow hands PNG data to zlib's inflate() a feed block at a time and
 * stops as soon as the last row is complete, so whether a damaged stream is
 * refused depends on how far zlib got. This inflater reproduces that: it is
 * resumable, reads only up to `limit` (the end of the current feed block),
 * writes at most dst_cap bytes, and after filling the output keeps going
 * through steps that need no output (end of block, next block header,
 * Adler-32 check) exactly as inflate() does before it returns.
 *
 * The stream is a state machine, one function a state, in stream order:
 *   zlib header -> block header (stored, fixed or dynamic Huffman codes)
 *   -> stored bytes | literal/length codes <-> matches -> ... last block
 *   -> Adler-32 check
 */
#include <string.h>

#include "decode.h"

/* The states of a stream, and what a state's step returns to go on to the next. */
enum { INFLATE_HEADER, INFLATE_BLOCK, INFLATE_STORED, INFLATE_CODES, INFLATE_MATCH,
       INFLATE_CHECK, INFLATE_DONE };
enum { INFLATE_NEXT = 3 };

/* RFC 1951 3.2.5: length codes 257..285 and distance codes 0..29, their
 * base values and extra bits. */
const uint16_t clip_deflate_len_base[29] = {
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
    35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
const uint8_t clip_deflate_len_extra[29] = {
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
const uint16_t clip_deflate_dist_base[30] = {
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769,
    1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
const uint8_t clip_deflate_dist_extra[30] = {
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11,
    12, 12, 13, 13};
/* 3.2.7: the order in which the code length code lengths come */
static const uint8_t clen_order[19] = {
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

void clip_inflate_init(inflate_state *z, const uint8_t *in, size_t size, size_t limit)
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
        return rd32le(p) >> z->bit;
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
    for (i = 0; i < ncode; i++) lens[clen_order[i]] = (uint8_t)inflate_take(z, 3);
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

/* Put back the bits of a symbol that cannot be finished yet: the next call
 * reads it again from the start. Returns r. */
static int inflate_undo(inflate_state *z, size_t pos, unsigned bit, int r)
{
    z->pos = pos;
    z->bit = bit;
    return r;
}

static int inflate_error(inflate_state *z, const char *msg)
{
    z->msg = msg;
    return INFLATE_ERROR;
}

/* RFC 1950 2.2: CMF and FLG, deflate with a window of at most 32 KiB and
 * no preset dictionary. */
static int inflate_header(inflate_state *z)
{
    unsigned cmf, flg;
    if (z->limit - z->pos < 2) return INFLATE_MORE;
    cmf = z->in[z->pos];
    flg = z->in[z->pos + 1];
    if ((cmf * 256 + flg) % 31) return inflate_error(z, "incorrect header check");
    if ((cmf & 15) != 8) return inflate_error(z, "unknown compression method");
    if ((cmf >> 4) + 8 > 15) return inflate_error(z, "invalid window size");
    if (flg & 32) return inflate_error(z, "needs a preset dictionary");
    z->pos += 2;
    z->state = INFLATE_BLOCK;
    return INFLATE_NEXT;
}

/* RFC 1951 3.2.3: BFINAL, BTYPE, then the stored length or the codes. */
static int inflate_block(inflate_state *z)
{
    size_t pos = z->pos;
    unsigned bit = z->bit, type;
    if (inflate_avail(z) < 3) return INFLATE_MORE;
    z->last = (int)inflate_take(z, 1);
    type = inflate_take(z, 2);
    if (type == 0) {
        uint32_t len, nlen;
        if (z->bit) inflate_drop(z, 8 - z->bit);
        if (z->limit - z->pos < 4) return inflate_undo(z, pos, bit, INFLATE_MORE);
        len = rd16le(z->in + z->pos);
        nlen = rd16le(z->in + z->pos + 2);
        if (len != (~nlen & 0xffffu)) return inflate_error(z, "invalid stored block lengths");
        z->pos += 4;
        z->stored_left = len;
        z->state = INFLATE_STORED;
    } else if (type == 1) {
        inflate_fixed(z);
        z->state = INFLATE_CODES;
    } else if (type == 2) {
        int r = inflate_dynamic(z);
        if (r == INFLATE_ERROR) return r;
        if (r == INFLATE_MORE) return inflate_undo(z, pos, bit, INFLATE_MORE);
        z->state = INFLATE_CODES;
    } else {
        return inflate_error(z, "invalid block type");
    }
    return INFLATE_NEXT;
}

/* RFC 1951 3.2.4: a stored block's bytes, copied as far as input and
 * output allow. */
static int inflate_stored(inflate_state *z)
{
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
    return INFLATE_NEXT;
}

/* RFC 1951 3.2.5: literals until a length/distance pair (then the match
 * state copies it) or the end of the block. A symbol whose bits are not all
 * there yet, or whose output has no room, is put back whole. */
static int inflate_codes(inflate_state *z)
{
    for (;;) {
        size_t pos = z->pos;
        unsigned bit = z->bit, len, dist;
        int sym, r = inflate_decode(z, &z->lit, &sym);
        if (r == INFLATE_MORE) return INFLATE_MORE;
        if (r || sym > 285) return inflate_error(z, "invalid literal/length code");
        if (sym < 256) {
            if (z->dst_pos == z->dst_cap) return inflate_undo(z, pos, bit, INFLATE_FULL);
            inflate_put(z, (uint8_t)sym);
            continue;
        }
        if (sym == 256) {
            z->state = z->last ? INFLATE_CHECK : INFLATE_BLOCK;
            return INFLATE_NEXT;
        }
        sym -= 257;
        if (inflate_avail(z) < clip_deflate_len_extra[sym]) return inflate_undo(z, pos, bit, INFLATE_MORE);
        len = clip_deflate_len_base[sym] + inflate_take(z, clip_deflate_len_extra[sym]);
        r = inflate_decode(z, &z->dist, &sym);
        if (r == INFLATE_MORE) return inflate_undo(z, pos, bit, INFLATE_MORE);
        if (r || sym > 29) return inflate_error(z, "invalid distance code");
        if (inflate_avail(z) < clip_deflate_dist_extra[sym]) return inflate_undo(z, pos, bit, INFLATE_MORE);
        dist = clip_deflate_dist_base[sym] + inflate_take(z, clip_deflate_dist_extra[sym]);
        if (z->dst_pos == z->dst_cap) return inflate_undo(z, pos, bit, INFLATE_FULL);
        if (dist > z->total) return inflate_error(z, "invalid distance too far back");
        z->match_len = len;
        z->match_dist = dist;
        z->state = INFLATE_MATCH;
        return INFLATE_NEXT;
    }
}

/* Copy a match from the window, as far as the output allows. */
static int inflate_match(inflate_state *z)
{
    while (z->match_len) {
        if (z->dst_pos == z->dst_cap) return INFLATE_FULL;
        inflate_put(z, z->win[(z->total - z->match_dist) & 32767]);
        z->match_len--;
    }
    z->state = INFLATE_CODES;
    return INFLATE_NEXT;
}

/* RFC 1950: the Adler-32 of the output, big-endian, after the last block. */
static int inflate_check(inflate_state *z)
{
    uint32_t want;
    if (z->bit) inflate_drop(z, 8 - z->bit);
    if (z->limit - z->pos < 4) return INFLATE_MORE;
    want = rd32be(z->in + z->pos);
    if (want != (((z->adler_b % 65521) << 16) | (z->adler_a % 65521)))
        return inflate_error(z, "incorrect data check");
    z->pos += 4;
    z->state = INFLATE_DONE;
    return INFLATE_END;
}

int clip_inflate_run(inflate_state *z)
{
    for (;;) {
        int r;
        switch (z->state) {
        case INFLATE_HEADER: r = inflate_header(z); break;
        case INFLATE_BLOCK: r = inflate_block(z); break;
        case INFLATE_STORED: r = inflate_stored(z); break;
        case INFLATE_CODES: r = inflate_codes(z); break;
        case INFLATE_MATCH: r = inflate_match(z); break;
        case INFLATE_CHECK: r = inflate_check(z); break;
        default: r = INFLATE_END; break;
        }
        if (r != INFLATE_NEXT) return r;
    }
}
