/* decode/ppm.c - binary PBM, PGM and PPM (P4, P5, P6) -> 8-bit RGB, as
 * Pillow's PpmImagePlugin and convert("RGB") give it. The plain (ASCII)
 * variants P1-P3 are refused.
 *
 * The file: magic, width, height, maxval (not for P4), one white-space
 * byte, then the samples, big-endian when maxval > 255.
 */
#include <math.h>
#include <string.h>

#include "decode.h"

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
    if (n == 0) return clip_fail(err, CLIP_EINPUT, "PPM header ends early");
    if (n > 10) return clip_fail(err, CLIP_EINPUT, "PPM header has a token longer than 10 characters");
    if (tok[0] == '+' || tok[0] == '-') neg = tok[i++] == '-';
    for (; i < n; i++) {
        if (tok[i] >= '0' && tok[i] <= '9') {
            v = v * 10 + (tok[i] - '0');
            digits++;
        } else if (tok[i] == '_' && digits && i + 1 < n && tok[i + 1] >= '0' && tok[i + 1] <= '9') {
            continue;
        } else break;
    }
    if (i < n || !digits) return clip_fail(err, CLIP_EINPUT, "PPM header has a token that is not a number");
    *val = neg ? -v : v;
    return CLIP_OK;
}

/* P4, raw mode "1;I": one bit a pixel, rows padded to a byte, 1 is black. */
static int ppm_bits(const uint8_t *s, size_t avail, clip_image *img, char *err)
{
    size_t w = (size_t)img->w, h = (size_t)img->h, row_bytes = (w + 7) / 8, x, y;
    if ((uint64_t)row_bytes * (uint64_t)h > avail) return clip_fail(err, CLIP_EINPUT, "PPM file is truncated");
    for (y = 0; y < h; y++)
        for (x = 0; x < w; x++) {
            uint8_t v = (s[y * row_bytes + x / 8] >> (7 - x % 8)) & 1 ? 0 : 255;
            memset(img->rgb + (y * w + x) * 3, v, 3);
        }
    return CLIP_OK;
}

/* P5 (bands 1) and P6 (bands 3) samples of 1 or 2 bytes. */
static int ppm_samples(const uint8_t *s, size_t avail, int bands, long long maxval, clip_image *img, char *err)
{
    int in_bytes = maxval < 256 ? 1 : 2;
    size_t n = (size_t)img->w * (size_t)img->h, i;
    if ((uint64_t)n * (uint64_t)bands * (uint64_t)in_bytes > avail)
        return clip_fail(err, CLIP_EINPUT, "PPM file is truncated");
    if (maxval == 255 || (maxval == 65535 && bands == 1)) {
        /* raw decoder: "L", "RGB", or "I;16B" (mode I, clipped at 255 by convert) */
        for (i = 0; i < n; i++) {
            uint8_t *o = img->rgb + 3 * i;
            if (bands == 3) {
                o[0] = s[3 * i];
                o[1] = s[3 * i + 1];
                o[2] = s[3 * i + 2];
            } else if (in_bytes == 2) {
                unsigned v = rd16be(s + 2 * i);
                memset(o, v > 255 ? 255 : (int)v, 3);
            } else memset(o, s[i], 3);
        }
        return CLIP_OK;
    }
    {
        /* PpmDecoder: value = min(out_max, round(value / maxval * out_max)),
         * out_max 65535 for grey with maxval > 255 (mode I, then clipped
         * at 255), else 255; Python's round() is round-half-even */
        double out_max = (bands == 1 && maxval > 255) ? 65535.0 : 255.0;
        n *= (size_t)bands;
        for (i = 0; i < n; i++) {
            unsigned v = in_bytes == 1 ? s[i] : rd16be(s + 2 * i);
            double q = (double)v / (double)maxval;
            q = rint(q * out_max);
            if (q > out_max) q = out_max;
            if (q > 255.0) q = 255.0;
            if (bands == 3) img->rgb[i] = (uint8_t)q;
            else memset(img->rgb + 3 * i, (int)q, 3);
        }
        return CLIP_OK;
    }
}

int clip_ppm_decode(const uint8_t *d, size_t size, clip_image *img, char *err)
{
    char magic[7];
    size_t pos = 0;
    long long w, h, maxval = 1;
    int m = 0, rc;

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
            return clip_fail(err, CLIP_EINPUT, "plain (ASCII) PNM files are not supported, only binary P4, P5 and P6");
        return clip_fail(err, CLIP_EINPUT, "not a binary PPM/PGM/PBM file");
    }
    if ((rc = ppm_token(d, size, &pos, &w, err)) || (rc = ppm_token(d, size, &pos, &h, err))) return rc;
    if (magic[1] != '4') {
        if ((rc = ppm_token(d, size, &pos, &maxval, err))) return rc;
        if (maxval < 1 || maxval > 65535)
            return clip_fail(err, CLIP_EINPUT, "PPM maxval must be greater than 0 and less than 65536");
    }
    if (w <= 0 || h <= 0) return clip_fail(err, CLIP_EINPUT, "PPM image has a zero or negative size");
    rc = clip_image_alloc(img, (uint64_t)w, (uint64_t)h, err);
    if (rc) return rc;
    if (magic[1] == '4') rc = ppm_bits(d + pos, size - pos, img, err);
    else rc = ppm_samples(d + pos, size - pos, magic[1] == '6' ? 3 : 1, maxval, img, err);
    if (rc) clip_image_free(img);
    return rc;
}
