/* shapes.h - captioned pictures of coloured shapes, the training data of
 * train.c (shapes.c draws them).
 *
 * Every picture is a pure function of a 64-bit seed: shapes_seed(split, run,
 * index) names picture `index` of a split, so a training run and a test can
 * draw exactly the same pictures, and the held-out split (SHAPES_HELDOUT)
 * never meets a training seed (SHAPES_TRAIN).
 */
#ifndef SHAPES_H
#define SHAPES_H

#include <stdint.h>

#include "clip.h"

enum { SHAPE_CIRCLE, SHAPE_SQUARE, SHAPE_TRIANGLE, SHAPE_STAR, SHAPES_N };
enum { COLOUR_RED, COLOUR_GREEN, COLOUR_BLUE, COLOUR_YELLOW, COLOUR_ORANGE, COLOUR_PURPLE, COLOURS_N };
enum { SHAPES_TRAIN = 0, SHAPES_HELDOUT = 1 };

extern const char *const shapes_shape_names[SHAPES_N];    /* "circle", ... */
extern const char *const shapes_colour_names[COLOURS_N];  /* "red", ... */

#define SHAPES_CAPTION 128

/* What a picture shows, and the sentence that says it. */
typedef struct {
    int shape, colour;   /* SHAPE_*, COLOUR_* */
    int count;           /* 1, 2 or 3 shapes of that kind and colour */
    int size;            /* 0 small, 1 medium, 2 big (count 1) */
    int where;           /* -1 anywhere, else one of the 9 named places (count 1) */
    char caption[SHAPES_CAPTION];
} shapes_scene;

/* The seed of picture `index` of `split`; `run` varies the training stream
 * between runs (the held-out split always uses run 0). */
uint64_t shapes_seed(int split, uint64_t run, uint64_t index);

/* Draw the picture of `seed`: img gets a malloc'd RGB image (free it with
 * clip_image_free), scene what it shows. Returns 0, or CLIP_ENOMEM. */
int shapes_draw(uint64_t seed, shapes_scene *scene, clip_image *img, char *err);

/* Only the scene (and caption) of `seed`, without drawing: the same values
 * shapes_draw gives. */
void shapes_describe(uint64_t seed, shapes_scene *scene);

#endif
