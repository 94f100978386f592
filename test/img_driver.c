/* img_driver.c - command-line driver for the image tests.
 *
 *   img_driver decode IMAGE OUT.npy                        -> uint8 [H, W, 3]
 *   img_driver resize pil|torch IN W H OUT.npy             -> uint8 [H, W, 3]
 *       (IN is a uint8 HxWx3 .npy or an image file)
 *   img_driver preprocess pil|torchvision IMAGE OUT.npy [SHORTEST CROP]
 *                                                          -> float32 [1, 3, CROP, CROP]
 *   img_driver encode IMAGE OUT.png                        -> clip_png_encode of the decoded image
 *
 * Exit 0 on success; 1 with "img_driver: error: MESSAGE" on stderr on failure,
 * and then no output file is left behind.
 *
 * Build: cc -std=c99 -O2 -Wall -Wextra -pedantic -I. test/img_driver.c image.c -lm
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "clip.h"

static int fail(const char *msg)
{
    fprintf(stderr, "img_driver: error: %s\n", msg);
    return 1;
}

/* Write a .npy (version 1.0) in this machine's byte order; on any failure
 * remove the file. */
static int write_npy(const char *path, const char *descr, const int *shape, int ndim,
                     const void *data, size_t nbytes, char *err)
{
    char header[256];
    char dims[128];
    size_t len, total;
    int i, n = 0;
    FILE *f;

    dims[0] = 0;
    for (i = 0; i < ndim; i++)
        n += snprintf(dims + n, sizeof dims - (size_t)n, "%d%s", shape[i],
                      ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
    len = (size_t)snprintf(header, sizeof header,
                           "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                           descr, dims);
    /* magic (6) + version (2) + header length (2) + header + '\n', padded to 64 */
    total = 10 + len + 1;
    while (total % 64) { header[len++] = ' '; total++; }
    header[len++] = '\n';

    f = fopen(path, "wb");
    if (!f) {
        snprintf(err, CLIP_ERR_SIZE, "%s: cannot open for writing", path);
        return 1;
    }
    if (fwrite("\x93NUMPY\x01\x00", 1, 8, f) != 8 ||
        fputc((int)(len & 255), f) == EOF || fputc((int)(len >> 8), f) == EOF ||
        fwrite(header, 1, len, f) != len ||
        (nbytes && fwrite(data, 1, nbytes, f) != nbytes)) {
        fclose(f);
        remove(path);
        snprintf(err, CLIP_ERR_SIZE, "%s: write failed", path);
        return 1;
    }
    if (fclose(f) != 0) {
        remove(path);
        snprintf(err, CLIP_ERR_SIZE, "%s: write failed", path);
        return 1;
    }
    return 0;
}

static int write_rgb_npy(const char *path, const clip_image *img, char *err)
{
    int shape[3];
    shape[0] = img->h; shape[1] = img->w; shape[2] = 3;
    return write_npy(path, "|u1", shape, 3, img->rgb, (size_t)img->w * (size_t)img->h * 3, err);
}

static unsigned char *read_file(const char *path, size_t *size, char *err)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0;

    if (!f) {
        snprintf(err, CLIP_ERR_SIZE, "%s: cannot open", path);
        return NULL;
    }
    for (;;) {
        size_t got;
        if (n == cap) {
            unsigned char *nb;
            cap = cap ? cap * 2 : 65536;
            nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                snprintf(err, CLIP_ERR_SIZE, "%s: out of memory", path);
                return NULL;
            }
            buf = nb;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        fclose(f);
        snprintf(err, CLIP_ERR_SIZE, "%s: read error", path);
        return NULL;
    }
    fclose(f);
    *size = n;
    return buf;
}

/* Read a C-ordered uint8 .npy of shape (H, W, 3) into an image. */
static int read_rgb_npy(const char *path, clip_image *img, char *err)
{
    size_t size, hlen, off;
    unsigned char *buf = read_file(path, &size, err);
    char *hdr;
    const char *p;
    long dim[3];
    int i;

    if (!buf) return 1;
    if (size < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) goto bad;
    if (buf[6] == 1) {
        hlen = (size_t)buf[8] | ((size_t)buf[9] << 8);
        off = 10;
    } else if (buf[6] == 2 || buf[6] == 3) {
        if (size < 12) goto bad;
        hlen = (size_t)buf[8] | ((size_t)buf[9] << 8) | ((size_t)buf[10] << 16) |
               ((size_t)buf[11] << 24);
        off = 12;
    } else goto bad;
    if (hlen > size - off || hlen > 65536) goto bad;
    hdr = malloc(hlen + 1);
    if (!hdr) goto bad;
    memcpy(hdr, buf + off, hlen);
    hdr[hlen] = 0;
    if (!strstr(hdr, "'descr': '|u1'") || !strstr(hdr, "'fortran_order': False")) {
        free(hdr);
        snprintf(err, CLIP_ERR_SIZE, "%s: expected a C-ordered uint8 array", path);
        free(buf);
        return 1;
    }
    p = strstr(hdr, "'shape': (");
    if (!p) { free(hdr); goto bad; }
    p += 10;
    for (i = 0; i < 3; i++) {
        char *end;
        dim[i] = strtol(p, &end, 10);
        if (end == p || dim[i] < 1 || dim[i] > 100000) { free(hdr); goto bad; }
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    if (*p != ')' || dim[2] != 3) { free(hdr); goto bad; }
    free(hdr);
    off += hlen;
    if (dim[0] > CLIP_MAX_PIXELS / dim[1] ||
        (size_t)dim[0] * (size_t)dim[1] * 3 != size - off) goto bad;
    img->w = (int)dim[1];
    img->h = (int)dim[0];
    img->rgb = malloc(size - off);
    if (!img->rgb) goto bad;
    memcpy(img->rgb, buf + off, size - off);
    free(buf);
    return 0;
bad:
    free(buf);
    snprintf(err, CLIP_ERR_SIZE, "%s: not a uint8 (H, W, 3) .npy file", path);
    return 1;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) return 1;
    *out = (int)v;
    return 0;
}

static int cmd_decode(int argc, char **argv)
{
    char err[CLIP_ERR_SIZE];
    clip_image img = {0, 0, NULL};
    if (argc != 4) return fail("usage: img_driver decode IMAGE OUT.npy");
    if (clip_image_load(argv[2], &img, err)) return fail(err);
    if (write_rgb_npy(argv[3], &img, err)) { clip_image_free(&img); return fail(err); }
    clip_image_free(&img);
    return 0;
}

static int cmd_resize(int argc, char **argv)
{
    char err[CLIP_ERR_SIZE];
    clip_image src = {0, 0, NULL}, dst = {0, 0, NULL};
    int w, h, rc;
    if (argc != 7) return fail("usage: img_driver resize pil|torch IN W H OUT.npy");
    if (strcmp(argv[2], "pil") && strcmp(argv[2], "torch"))
        return fail("resize mode must be pil or torch");
    if (parse_int(argv[4], 1, 65535, &w) || parse_int(argv[5], 1, 65535, &h))
        return fail("W and H must be integers from 1 to 65535");
    if (ends_with(argv[3], ".npy")) rc = read_rgb_npy(argv[3], &src, err);
    else rc = clip_image_load(argv[3], &src, err);
    if (rc) return fail(err);
    if (!strcmp(argv[2], "pil")) rc = clip_resize_bicubic_pil(&src, w, h, &dst, err);
    else rc = clip_resize_bicubic_torch(&src, w, h, &dst, err);
    clip_image_free(&src);
    if (rc) return fail(err);
    if (write_rgb_npy(argv[6], &dst, err)) { clip_image_free(&dst); return fail(err); }
    clip_image_free(&dst);
    return 0;
}

static int cmd_preprocess(int argc, char **argv)
{
    char err[CLIP_ERR_SIZE];
    clip_image img = {0, 0, NULL};
    clip_preprocess_config cfg;
    int mode, shape[4], rc;
    float *out;

    if (argc != 5 && argc != 7)
        return fail("usage: img_driver preprocess pil|torchvision IMAGE OUT.npy [SHORTEST CROP]");
    if (!strcmp(argv[2], "pil")) mode = CLIP_RESIZE_PIL;
    else if (!strcmp(argv[2], "torchvision")) mode = CLIP_RESIZE_TORCHVISION;
    else return fail("preprocess mode must be pil or torchvision");

    cfg.shortest_edge = 224;
    cfg.crop_h = cfg.crop_w = 224;
    if (argc == 7) {
        if (parse_int(argv[5], 1, 8192, &cfg.shortest_edge) ||
            parse_int(argv[6], 1, 8192, &cfg.crop_h))
            return fail("SHORTEST and CROP must be integers from 1 to 8192");
        cfg.crop_w = cfg.crop_h;
    }
    cfg.do_resize = cfg.do_center_crop = cfg.do_rescale = cfg.do_normalize = 1;
    cfg.rescale_factor = (float)(1.0 / 255.0);
    cfg.mean[0] = 0.48145466f; cfg.mean[1] = 0.4578275f; cfg.mean[2] = 0.40821073f;
    cfg.std[0] = 0.26862954f; cfg.std[1] = 0.26130258f; cfg.std[2] = 0.27577711f;

    if (clip_image_load(argv[3], &img, err)) return fail(err);
    out = malloc((size_t)3 * (size_t)cfg.crop_h * (size_t)cfg.crop_w * sizeof(float));
    if (!out) { clip_image_free(&img); return fail("out of memory"); }
    rc = clip_image_preprocess(&img, &cfg, mode, out, err);
    clip_image_free(&img);
    if (rc) { free(out); return fail(err); }
    shape[0] = 1; shape[1] = 3; shape[2] = cfg.crop_h; shape[3] = cfg.crop_w;
    {
        const uint16_t one = 1;
        rc = write_npy(argv[4], *(const uint8_t *)&one ? "<f4" : ">f4", shape, 4, out,
                       (size_t)3 * (size_t)cfg.crop_h * (size_t)cfg.crop_w * sizeof(float), err);
    }
    free(out);
    if (rc) return fail(err);
    return 0;
}

static int cmd_encode(int argc, char **argv)
{
    char err[CLIP_ERR_SIZE];
    clip_image img = {0, 0, NULL};
    uint8_t *png = NULL;
    size_t size = 0;
    FILE *f;
    if (argc != 4) return fail("usage: img_driver encode IMAGE OUT.png");
    if (clip_image_load(argv[2], &img, err)) return fail(err);
    if (clip_png_encode(&img, &png, &size, err)) { clip_image_free(&img); return fail(err); }
    clip_image_free(&img);
    f = fopen(argv[3], "wb");
    if (!f) { free(png); snprintf(err, sizeof err, "%s: cannot open for writing", argv[3]); return fail(err); }
    if (fwrite(png, 1, size, f) != size || fclose(f) != 0) {
        free(png);
        remove(argv[3]);
        snprintf(err, sizeof err, "%s: write failed", argv[3]);
        return fail(err);
    }
    free(png);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "decode")) return cmd_decode(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "resize")) return cmd_resize(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "preprocess")) return cmd_preprocess(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "encode")) return cmd_encode(argc, argv);
    return fail("usage: img_driver decode|resize|preprocess|encode ...");
}
