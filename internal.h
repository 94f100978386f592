/* internal.h - what every library file shares: the error idiom and the
 * byte readers. Not installed; clip.h is the public interface.
 *
 * Errors. A library function that can fail returns 0 (CLIP_OK) or a
 * CLIP_E* code, and the place that finds the problem writes one message
 * into `err` (CLIP_ERR_SIZE bytes, may be NULL) and returns in one step:
 *
 *     if (len < 13) return clip_fail(err, CLIP_EINPUT, "PNG IHDR chunk is truncated");
 *
 * Message style, the same in every file:
 *   - a lowercase sentence (names and acronyms keep their case: PNG, Huffman),
 *     no trailing period;
 *   - "what: why" when the message names a subject (a file, a token, a merge),
 *     e.g. "tokenizer merge 12: token 300 is not tokens 40 and 41 joined";
 *   - a caller that knows more prefixes it the same way ("cat.png: PNG file is
 *     truncated"), and the command line adds "clip: error: ".
 */
#ifndef CLIP_INTERNAL_H
#define CLIP_INTERNAL_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "clip.h"

#if defined(__GNUC__)
static inline int clip_fail(char *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#endif

/* Write the message (when err is not NULL) and return code. */
static inline int clip_fail(char *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, CLIP_ERR_SIZE, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Byte readers: unsigned integers stored little-endian (le) or big-endian
 * (be) at p, whatever this machine's byte order. */
static inline unsigned rd16le(const uint8_t *p)
{
    return (unsigned)p[0] | (unsigned)p[1] << 8;
}

static inline uint32_t rd32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t rd64le(const uint8_t *p)
{
    return rd32le(p) | (uint64_t)rd32le(p + 4) << 32;
}

static inline unsigned rd16be(const uint8_t *p)
{
    return (unsigned)p[0] << 8 | (unsigned)p[1];
}

static inline uint32_t rd32be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

#endif
