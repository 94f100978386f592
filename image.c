/* image.c - image decoding (PNG, PPM/PGM, BMP; JPEG in image_jpeg.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "clip.h"

int jpeg_decode(const uint8_t *data, size_t size, clip_image *img, char *err);

int clip_image_decode(const uint8_t *data, size_t size, clip_image *img, char *err)
{
    if (size >= 2 && data[0] == 0xFF && data[1] == 0xD8) return jpeg_decode(data, size, img, err);
    if (err) snprintf(err, CLIP_ERR_SIZE, "image decoding is not supported yet.");
    return CLIP_EINPUT;
}

int clip_image_load(const char *path, clip_image *img, char *err)
{
    (void)img;
    if (err) snprintf(err, CLIP_ERR_SIZE, "%s: image loading is not supported yet.", path);
    return CLIP_EINPUT;
}

void clip_image_free(clip_image *img)
{
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
    img->w = img->h = 0;
}

int clip_png_encode(const clip_image *img, uint8_t **png, size_t *size, char *err)
{
    (void)img; (void)png; (void)size;
    if (err) snprintf(err, CLIP_ERR_SIZE, "PNG encoding is not supported yet.");
    return CLIP_EINPUT;
}
