/* fuzz_png.c - libFuzzer target: PNG files whose chunk CRCs are always right.
 *
 * Random mutation of a PNG almost always breaks a chunk's CRC-32, and the
 * decoder rightly stops at the first bad CRC (Pillow: "broken PNG file"), so
 * most runs of fuzz_image on PNG seeds never reach IHDR, PLTE, tRNS or the
 * inflater. This target walks the chunks of a copy of the input, writes the
 * correct CRC into each, and then runs fuzz_image's checks on it. Inputs
 * without the PNG signature are passed through unchanged.
 */
#define LLVMFuzzerTestOneInput fuzz_image_one
#include "fuzz_image.c"
#undef LLVMFuzzerTestOneInput

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* CRC-32 (ISO 3309, the polynomial PNG uses), bit by bit */
static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    uint8_t *copy;
    size_t pos = 8;
    if (size < 8 || memcmp(data, sig, 8) != 0) return fuzz_image_one(data, size);
    if (!(copy = malloc(size))) return 0;
    memcpy(copy, data, size);
    /* chunk: length (4, big-endian), type (4), data (length), CRC of type + data (4) */
    while (size - pos >= 12) {
        uint32_t len = (uint32_t)copy[pos] << 24 | (uint32_t)copy[pos + 1] << 16 | (uint32_t)copy[pos + 2] << 8 | copy[pos + 3];
        uint32_t crc;
        if (len > size - pos - 12) break;
        crc = crc32_png(copy + pos + 4, (size_t)len + 4);
        pos += 8 + (size_t)len;
        for (int k = 0; k < 4; k++) copy[pos + k] = (uint8_t)(crc >> (24 - 8 * k));
        pos += 4;
    }
    fuzz_image_one(copy, size);
    free(copy);
    return 0;
}
