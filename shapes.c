/* shapes.c - the training pictures: coloured shapes on varied backgrounds,
 * each with a caption from a small grammar.
 *
 * A picture is drawn in four steps, every choice taken from a random stream
 * seeded by the picture's seed, so the same seed always gives the same bytes:
 *
 *   1. scene      shape, colour, how many, size, place; the caption
 *                 ("a photo of a small red circle on the left", "two blue squares")
 *   2. canvas     64 to 320 pixels on the short side, square or up to 1.8:1
 *   3. background plain (white, black, any grey, a faint tint, now and then a
 *                 strong colour far from the shape's), a gradient, noise around
 *                 a colour, or uniform random noise
 *   4. shapes     filled (or, rarely, outlined) polygons and discs, with
 *                 anti-aliased edges (coverage from the signed distance) or hard
 *                 ones, then, sometimes, noise over the whole picture
 *
 * Other programs draw "red" and "a square" differently: their colours are
 * sampled from ranges of hue, saturation and brightness around each colour
 * name (and, a third of the time, taken from the named colours of CSS, which
 * Pillow's ImageDraw uses), their triangles are isosceles or equilateral,
 * their stars have five or six points and thinner or fatter arms.
 *
 * Only the central square of a picture survives CLIPImageProcessor's center
 * crop, so the shapes are placed inside it, and the named places ("on the
 * left", "in the top right corner") refer to it.
 */
#include "shapes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const shapes_shape_names[SHAPES_N] = {"circle", "square", "triangle", "star"};
const char *const shapes_colour_names[COLOURS_N] = {"red", "green", "blue", "yellow", "orange", "purple"};

#define PI 3.14159265358979323846

/* ------------------------------------------------------------------------ */
/* Random numbers: splitmix64, one stream per purpose                        */
/* ------------------------------------------------------------------------ */

typedef struct { uint64_t s; } rng;

static uint64_t rng_next(rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static double rng_unit(rng *r) { return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0); }
static double rng_range(rng *r, double a, double b) { return a + (b - a) * rng_unit(r); }
static int rng_int(rng *r, int n) { return (int)(rng_unit(r) * n); }
static int rng_chance(rng *r, double p) { return rng_unit(r) < p; }

uint64_t shapes_seed(int split, uint64_t run, uint64_t index)
{
    rng r = {((uint64_t)split << 62) ^ (run << 40) ^ index};
    return rng_next(&r);
}

/* ------------------------------------------------------------------------ */
/* Colours                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct { double r, g, b; } rgb;

/* hue in degrees (any), saturation and value in [0, 1] -> 0..255 */
static rgb hsv(double h, double s, double v)
{
    double c = v * s, hp = fmod(fmod(h, 360.0) + 360.0, 360.0) / 60.0, x = c * (1 - fabs(fmod(hp, 2.0) - 1)), m = v - c;
    double r = 0, g = 0, b = 0;
    switch ((int)hp) {
    case 0: r = c; g = x; break;
    case 1: r = x; g = c; break;
    case 2: g = c; b = x; break;
    case 3: g = x; b = c; break;
    case 4: r = x; b = c; break;
    default: r = c; b = x; break;
    }
    return (rgb){255 * (r + m), 255 * (g + m), 255 * (b + m)};
}

/* each colour name: hue range (degrees), lowest saturation and value, and
 * the CSS colours of that name (Pillow's ImageColor) */
static const struct {
    double h0, h1, s0, v0;
    int named[8][3];
} colour_ranges[COLOURS_N] = {
    {-12, 6, 0.70, 0.55, {{255, 0, 0}, {220, 20, 60}, {178, 34, 34}, {139, 0, 0}, {200, 0, 0}, {255, 36, 0}, {205, 30, 30}, {230, 0, 20}}},
    {90, 150, 0.60, 0.45, {{0, 128, 0}, {0, 255, 0}, {34, 139, 34}, {50, 205, 50}, {0, 100, 0}, {0, 200, 0}, {46, 139, 87}, {60, 179, 113}}},
    {205, 245, 0.65, 0.50, {{0, 0, 255}, {0, 0, 205}, {0, 0, 139}, {0, 0, 128}, {65, 105, 225}, {30, 90, 255}, {25, 25, 200}, {0, 70, 220}}},
    {50, 62, 0.70, 0.85, {{255, 255, 0}, {255, 215, 0}, {240, 230, 0}, {255, 240, 30}, {250, 220, 10}, {238, 238, 0}, {255, 228, 0}, {245, 245, 60}}},
    {22, 40, 0.75, 0.85, {{255, 165, 0}, {255, 140, 0}, {255, 127, 0}, {255, 150, 30}, {240, 130, 10}, {255, 120, 10}, {250, 155, 0}, {230, 115, 0}}},
    {265, 305, 0.55, 0.45, {{128, 0, 128}, {148, 0, 211}, {160, 32, 240}, {128, 0, 255}, {75, 0, 130}, {153, 50, 204}, {139, 0, 139}, {186, 85, 211}}},
};

static rgb sample_colour(rng *r, int colour)
{
    if (rng_chance(r, 0.35)) {
        const int *c = colour_ranges[colour].named[rng_int(r, 8)];
        return (rgb){c[0], c[1], c[2]};
    }
    return hsv(rng_range(r, colour_ranges[colour].h0, colour_ranges[colour].h1),
               rng_range(r, colour_ranges[colour].s0, 1.0), rng_range(r, colour_ranges[colour].v0, 1.0));
}

static double colour_distance(rgb a, rgb b)
{
    return sqrt((a.r - b.r) * (a.r - b.r) + (a.g - b.g) * (a.g - b.g) + (a.b - b.b) * (a.b - b.b));
}

/* ------------------------------------------------------------------------ */
/* 1. The scene and its caption                                              */
/* ------------------------------------------------------------------------ */

static const char *const plural_names[SHAPES_N] = {"circles", "squares", "triangles", "stars"};
static const char *const place_names[9] = {
    "in the center", "on the left", "on the right", "at the top", "at the bottom",
    "in the top left corner", "in the top right corner", "in the bottom left corner", "in the bottom right corner"};

static const char *pick(rng *r, const char *const *words, int n) { return words[rng_int(r, n)]; }

/* the caption: [prefix] article|number [size] colour shape[s] [place] */
static void write_caption(rng *r, shapes_scene *s)
{
    static const char *const prefixes[] = {"a photo of ", "a picture of ", "an image of ", "a drawing of ", "a photo of "};
    static const char *const small[] = {"small", "little", "tiny"}, *const big[] = {"big", "large"};
    static const char *const numbers[] = {"", "", "two", "three"};
    const char *colour = shapes_colour_names[s->colour], *size = "", *prefix = "", *place = "";
    char *c = s->caption;
    int n = SHAPES_CAPTION;

    if (s->count == 1 && rng_chance(r, 0.5)) {   /* the zero-shot prompt's own form */
        snprintf(c, n, "a photo of a %s %s", colour, shapes_shape_names[s->shape]);
        return;
    }
    if (s->size != 1 && rng_chance(r, 0.5)) size = s->size == 0 ? pick(r, small, 3) : pick(r, big, 2);
    if (s->where >= 0 && rng_chance(r, 0.85)) place = place_names[s->where];
    switch (rng_int(r, 3)) {
    case 0: break;
    case 1: prefix = s->count == 1 ? "there is " : "there are "; break;
    default: prefix = pick(r, prefixes, 5); break;
    }
    if (s->count == 1) {
        const char *first = *size ? size : colour;
        const char *article = strchr("aeiou", first[0]) && rng_chance(r, 0.7) ? "an" : "a";
        snprintf(c, n, "%s%s %s%s%s %s%s%s", prefix, article, size, *size ? " " : "", colour,
                 shapes_shape_names[s->shape], *place ? " " : "", place);
    } else {
        snprintf(c, n, "%s%s %s%s%s %s", prefix, numbers[s->count], size, *size ? " " : "", colour,
                 plural_names[s->shape]);
    }
}

/* the scene's own stream: drawing never consumes from it, so
 * shapes_describe and shapes_draw agree */
static void sample_scene(uint64_t seed, shapes_scene *s)
{
    rng r = {seed ^ 0x5ce4e5ce4e5ce4e5u};
    double u = rng_unit(&r);
    s->shape = rng_int(&r, SHAPES_N);
    s->colour = rng_int(&r, COLOURS_N);
    s->count = u < 0.78 ? 1 : u < 0.91 ? 2 : 3;
    s->size = s->count == 1 ? rng_int(&r, 3) : 0;
    s->where = -1;
    if (s->count == 1 && rng_chance(&r, 0.55))   /* big shapes fit only in the center */
        s->where = s->size == 2 ? 0 : rng_int(&r, 9);
    write_caption(&r, s);
}

void shapes_describe(uint64_t seed, shapes_scene *scene) { sample_scene(seed, scene); }

/* ------------------------------------------------------------------------ */
/* 2. Placement: centers and radii, as fractions of the crop square's side   */
/* ------------------------------------------------------------------------ */
/* A shape of "radius" r reaches at most EXTENT * r from its center (a star's
 * points); the shapes keep a margin from the crop's edges and each other. */
#define EXTENT 1.15
#define MAX_SHAPES 3

typedef struct { double u, v, r; } placed;

static void place_one(rng *r, const shapes_scene *s, placed *p)
{
    static const double ranges[3][2] = {{0.14, 0.18}, {0.19, 0.25}, {0.27, 0.36}};
    /* named places: u, v ranges */
    static const double spots[9][4] = {
        {0.45, 0.55, 0.45, 0.55}, {0.18, 0.30, 0.40, 0.60}, {0.70, 0.82, 0.40, 0.60}, {0.40, 0.60, 0.18, 0.30},
        {0.40, 0.60, 0.70, 0.82}, {0.18, 0.30, 0.18, 0.30}, {0.70, 0.82, 0.18, 0.30}, {0.18, 0.30, 0.70, 0.82},
        {0.70, 0.82, 0.70, 0.82}};
    double room;
    p->r = rng_range(r, ranges[s->size][0], ranges[s->size][1]);
    if (s->where < 0) {
        double lo = EXTENT * p->r + 0.02;
        p->u = rng_range(r, lo, 1 - lo);
        p->v = rng_range(r, lo, 1 - lo);
        return;
    }
    p->u = rng_range(r, spots[s->where][0], spots[s->where][1]);
    p->v = rng_range(r, spots[s->where][2], spots[s->where][3]);
    room = fmin(fmin(p->u, 1 - p->u), fmin(p->v, 1 - p->v)) - 0.02;
    if (EXTENT * p->r > room) p->r = room / EXTENT;
}

/* several shapes: no two closer than their extents; smaller until they fit */
static int place_many(rng *r, int count, placed *p)
{
    double rad = rng_range(r, 0.12, 0.16);
    for (int attempt = 0; attempt < 40; attempt++, rad *= 0.93) {
        int k = 0;
        for (int tries = 0; tries < 200 && k < count; tries++) {
            double lo = EXTENT * rad + 0.02, u = rng_range(r, lo, 1 - lo), v = rng_range(r, lo, 1 - lo);
            int ok = 1;
            for (int j = 0; j < k; j++)
                if (hypot(u - p[j].u, v - p[j].v) < 2.3 * EXTENT * rad) ok = 0;
            if (ok) p[k++] = (placed){u, v, rad * rng_range(r, 0.9, 1.1)};
        }
        if (k == count) return 0;
    }
    return -1;
}

/* ------------------------------------------------------------------------ */
/* 3. Backgrounds                                                            */
/* ------------------------------------------------------------------------ */
/* Per-pixel noise comes from a 32-bit xorshift: cheap enough for pictures of
 * a few hundred thousand pixels. noise() is roughly normal with sigma 1 (the
 * sum of four uniforms). */
typedef struct { uint32_t x; } fast_rng;

static uint32_t fast_next(fast_rng *f)
{
    f->x ^= f->x << 13;
    f->x ^= f->x >> 17;
    f->x ^= f->x << 5;
    return f->x;
}

static double noise(fast_rng *f)
{
    uint32_t a = fast_next(f), b = fast_next(f);
    return ((double)(a & 0xffff) + (a >> 16) + (b & 0xffff) + (b >> 16) - 131070.0) / 37837.0;
}

static uint8_t to_byte(double v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5); }

static void put(clip_image *img, int x, int y, rgb c)
{
    uint8_t *p = img->rgb + ((size_t)y * img->w + x) * 3;
    p[0] = to_byte(c.r); p[1] = to_byte(c.g); p[2] = to_byte(c.b);
}

/* a background colour: greys most of the time, else a faint tint */
static rgb background_colour(rng *r)
{
    double u = rng_unit(r);
    if (u < 0.25) return (rgb){255, 255, 255};
    if (u < 0.33) return (rgb){0, 0, 0};
    if (u < 0.70) { double g = rng_range(r, 0, 255); return (rgb){g, g, g}; }
    return hsv(rng_range(r, 0, 360), rng_range(r, 0.05, 0.3), rng_range(r, 0.1, 1.0));
}

/* a strong colour whose hue is far from every hue of the shape's colour */
static rgb contrasting_colour(rng *r, int colour)
{
    for (;;) {
        double h = rng_range(r, 0, 360), c = 0.5 * (colour_ranges[colour].h0 + colour_ranges[colour].h1);
        double half = 0.5 * (colour_ranges[colour].h1 - colour_ranges[colour].h0), dist = fabs(fmod(h - c + 540.0, 360.0) - 180.0);
        if (dist > half + 70) return hsv(h, rng_range(r, 0.3, 0.8), rng_range(r, 0.3, 0.9));
    }
}

/* Fill the canvas. The shape's colour `fg` must stand out: a base colour too
 * close to it is replaced by white or black, whichever is farther. */
static void paint_background(rng *r, clip_image *img, rgb fg, int colour)
{
    double u = rng_unit(r);
    rgb a = u < 0.06 ? contrasting_colour(r, colour) : background_colour(r), b = background_colour(r);
    fast_rng f = {(uint32_t)rng_next(r) | 1u};
    if (colour_distance(a, fg) < 90) a = colour_distance((rgb){255, 255, 255}, fg) > colour_distance((rgb){0, 0, 0}, fg) ? (rgb){255, 255, 255} : (rgb){0, 0, 0};
    if (colour_distance(b, fg) < 90) b = a;

    if (u < 0.58) {                                   /* plain */
        for (int x = 0; x < img->w; x++) put(img, x, 0, a);
        for (int y = 1; y < img->h; y++) memcpy(img->rgb + (size_t)y * img->w * 3, img->rgb, (size_t)img->w * 3);
    } else if (u < 0.70) {                            /* linear gradient a -> b */
        double ang = rng_range(r, 0, 2 * PI), cx = cos(ang), sy = sin(ang), span = fabs(cx) * img->w + fabs(sy) * img->h;
        for (int y = 0; y < img->h; y++)
            for (int x = 0; x < img->w; x++) {
                double t = ((x - img->w / 2.0) * cx + (y - img->h / 2.0) * sy) / span + 0.5;
                put(img, x, y, (rgb){a.r + (b.r - a.r) * t, a.g + (b.g - a.g) * t, a.b + (b.b - a.b) * t});
            }
    } else if (u < 0.90) {                            /* noise around a: grey or coloured */
        double sigma = rng_range(r, 8, 60);
        int grey = rng_chance(r, 0.5);
        for (int y = 0; y < img->h; y++)
            for (int x = 0; x < img->w; x++) {
                double n0 = sigma * noise(&f), n1 = grey ? n0 : sigma * noise(&f), n2 = grey ? n0 : sigma * noise(&f);
                put(img, x, y, (rgb){a.r + n0, a.g + n1, a.b + n2});
            }
    } else {                                          /* uniform random pixels */
        for (size_t i = 0; i < (size_t)img->w * img->h * 3; i++) img->rgb[i] = (uint8_t)(fast_next(&f) >> 24);
    }
}

/* ------------------------------------------------------------------------ */
/* 4. Shapes: signed distance -> coverage                                    */
/* ------------------------------------------------------------------------ */
/* A shape is a disc (possibly a little elliptic) or a polygon of up to 12
 * vertices, in pixel coordinates. Its signed distance at a pixel center is
 * negative inside. Anti-aliased edges take coverage clamp(0.5 - sd, 0, 1),
 * about the fraction of the pixel inside; hard edges 1 inside, 0 outside. */
typedef struct {
    int disc, n;
    double cx, cy, rx, ry;      /* disc */
    double x[12], y[12];        /* polygon, in order */
    double reach;               /* no pixel farther than this from (cx, cy) is touched */
} outline;

static double signed_distance(const outline *o, double px, double py)
{
    double best = 1e30;
    int inside = 0;
    if (o->disc) {
        double dx = (px - o->cx) / o->rx, dy = (py - o->cy) / o->ry;
        return (sqrt(dx * dx + dy * dy) - 1.0) * fmin(o->rx, o->ry);
    }
    for (int i = 0, j = o->n - 1; i < o->n; j = i++) {
        double ex = o->x[i] - o->x[j], ey = o->y[i] - o->y[j], wx = px - o->x[j], wy = py - o->y[j];
        double t = (wx * ex + wy * ey) / (ex * ex + ey * ey), dx, dy;
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        dx = wx - ex * t; dy = wy - ey * t;
        best = fmin(best, dx * dx + dy * dy);
        if ((o->y[i] > py) != (o->y[j] > py) && px < o->x[j] + ex * (py - o->y[j]) / ey) inside = !inside;
    }
    return inside ? -sqrt(best) : sqrt(best);
}

/* the outline of `shape` around (cx, cy) with radius rad (pixels) */
static void make_outline(rng *r, int shape, double cx, double cy, double rad, outline *o)
{
    double rot = 0;
    memset(o, 0, sizeof *o);
    o->cx = cx; o->cy = cy; o->reach = EXTENT * rad * 1.3 + 2;
    if (shape == SHAPE_CIRCLE) {
        double a = rng_chance(r, 0.3) ? rng_range(r, 0.92, 1.08) : 1.0;
        o->disc = 1; o->rx = rad * a; o->ry = rad / a;
        return;
    }
    if (shape == SHAPE_SQUARE) {
        double h = rad * 0.88;
        rot = rng_chance(r, 0.7) ? 0 : rng_chance(r, 0.7) ? rng_range(r, -0.3, 0.3) : rng_range(r, 0, PI / 2);
        o->n = 4;
        for (int i = 0; i < 4; i++) {
            double px = (i == 0 || i == 3) ? -h : h, py = i < 2 ? -h : h;
            o->x[i] = cx + px * cos(rot) - py * sin(rot);
            o->y[i] = cy + px * sin(rot) + py * cos(rot);
        }
        return;
    }
    if (shape == SHAPE_TRIANGLE && rng_chance(r, 0.6)) {   /* apex up in a box, as drawn from a bounding box */
        double w = rad * rng_range(r, 0.85, 1.1), h = rad * rng_range(r, 0.85, 1.1), ax = rng_chance(r, 0.7) ? 0 : rng_range(r, -0.4, 0.4) * w;
        o->n = 3;
        o->x[0] = cx + ax; o->y[0] = cy - h;
        o->x[1] = cx + w;  o->y[1] = cy + h;
        o->x[2] = cx - w;  o->y[2] = cy + h;
        return;
    }
    rot = rng_chance(r, 0.65) ? rng_range(r, -0.15, 0.15) : rng_range(r, 0, 2 * PI);
    if (shape == SHAPE_TRIANGLE) {                      /* equilateral, centered on its centroid */
        o->n = 3;
        for (int i = 0; i < 3; i++) {
            double a = rot - PI / 2 + i * 2 * PI / 3;
            o->x[i] = cx + 1.12 * rad * cos(a);
            o->y[i] = cy + 1.12 * rad * sin(a);
        }
        return;
    }
    {                                                   /* star: points alternate with inner corners */
        int points = rng_chance(r, 0.85) ? 5 : 6;
        double inner = rng_range(r, 0.38, 0.55);
        o->n = 2 * points;
        for (int i = 0; i < o->n; i++) {
            double a = rot - PI / 2 + i * PI / points, len = EXTENT * rad * (i % 2 ? inner : 1.0);
            o->x[i] = cx + len * cos(a);
            o->y[i] = cy + len * sin(a);
        }
    }
}

/* coverage of the pixel whose center is (px, py) */
static double coverage(const outline *o, double px, double py, int smooth, double ring)
{
    double sd = signed_distance(o, px, py), cover;
    if (ring > 0) sd = fabs(sd + ring / 2) - ring / 2;
    cover = smooth ? 0.5 - sd : sd <= 0;
    return cover <= 0 ? 0 : cover > 1 ? 1 : cover;
}

static void blend(uint8_t *p, rgb c, double cover)
{
    p[0] = to_byte(p[0] + (c.r - p[0]) * cover);
    p[1] = to_byte(p[1] + (c.g - p[1]) * cover);
    p[2] = to_byte(p[2] + (c.b - p[2]) * cover);
}

/* Blend colour c into the pixels the outline covers; `ring` > 0 draws only a
 * band that wide along the edge. In blocks of 8 x 8 pixels: the signed
 * distance changes by at most 1 per pixel of distance (a little more for the
 * slightly elliptic discs, hence the factor 1.25), so a block whose center
 * is farther than its half-diagonal plus a pixel from the edge is all inside
 * or all outside, and only blocks along the edge are done pixel by pixel. */
#define BLOCK 8

static void paint_shape(clip_image *img, const outline *o, rgb c, int smooth, double ring)
{
    int x0 = (int)floor(o->cx - o->reach), x1 = (int)ceil(o->cx + o->reach);
    int y0 = (int)floor(o->cy - o->reach), y1 = (int)ceil(o->cy + o->reach);
    double margin = 1.25 * (BLOCK * 0.7072) + 1.5;
    x0 = x0 < 0 ? 0 : x0; y0 = y0 < 0 ? 0 : y0;
    x1 = x1 > img->w - 1 ? img->w - 1 : x1; y1 = y1 > img->h - 1 ? img->h - 1 : y1;
    for (int by = y0; by <= y1; by += BLOCK)
        for (int bx = x0; bx <= x1; bx += BLOCK) {
            int ex = bx + BLOCK - 1 < x1 ? bx + BLOCK - 1 : x1, ey = by + BLOCK - 1 < y1 ? by + BLOCK - 1 : y1;
            double sd = signed_distance(o, bx + BLOCK / 2.0, by + BLOCK / 2.0);
            if (ring > 0) sd = fabs(sd + ring / 2) - ring / 2;
            if (sd > margin) continue;
            for (int y = by; y <= ey; y++)
                for (int x = bx; x <= ex; x++) {
                    double cover = sd < -margin ? 1.0 : coverage(o, x + 0.5, y + 0.5, smooth, ring);
                    if (cover > 0) blend(img->rgb + ((size_t)y * img->w + x) * 3, c, cover);
                }
        }
}

/* ------------------------------------------------------------------------ */
/* The whole picture                                                         */
/* ------------------------------------------------------------------------ */

static void canvas_size(rng *r, int *w, int *h)
{
    double u = rng_unit(r);
    int s = u < 0.5 ? 64 + rng_int(r, 64) : u < 0.85 ? 128 + rng_int(r, 96) : 224 + rng_int(r, 97);
    int l = rng_chance(r, 0.55) ? s : (int)(s * rng_range(r, 1.05, 1.8));
    if (rng_chance(r, 0.5)) { *w = l; *h = s; } else { *w = s; *h = l; }
}

int shapes_draw(uint64_t seed, shapes_scene *scene, clip_image *img, char *err)
{
    rng r = {seed ^ 0xd1a9d1a9d1a9d1a9u};
    placed p[MAX_SHAPES];
    rgb fg;
    int s, ox, oy, smooth;
    double ring = 0;

    sample_scene(seed, scene);
    canvas_size(&r, &img->w, &img->h);
    if (!(img->rgb = malloc((size_t)img->w * img->h * 3))) {
        if (err) snprintf(err, CLIP_ERR_SIZE, "out of memory for a %dx%d picture", img->w, img->h);
        return CLIP_ENOMEM;
    }
    s = img->w < img->h ? img->w : img->h;
    ox = (img->w - s) / 2; oy = (img->h - s) / 2;
    fg = sample_colour(&r, scene->colour);
    paint_background(&r, img, fg, scene->colour);

    if (scene->count == 1) place_one(&r, scene, &p[0]);
    else if (place_many(&r, scene->count, p)) {   /* cannot happen with these sizes; keep it drawable anyway */
        for (int k = 0; k < scene->count; k++) p[k] = (placed){(k + 1.0) / (scene->count + 1), 0.5, 0.05};
    }
    smooth = rng_chance(&r, 0.7);
    if (rng_chance(&r, 0.06)) ring = fmax(1.5, 0.18 * p[0].r * s);
    for (int k = 0; k < scene->count; k++) {
        outline o;
        rgb c = {fg.r + rng_range(&r, -6, 6), fg.g + rng_range(&r, -6, 6), fg.b + rng_range(&r, -6, 6)};
        make_outline(&r, scene->shape, ox + p[k].u * s, oy + p[k].v * s, p[k].r * s, &o);
        paint_shape(img, &o, c, smooth, ring);
    }
    if (rng_chance(&r, 0.15)) {                       /* noise over everything */
        double sigma = rng_range(&r, 4, 24);
        fast_rng f = {(uint32_t)rng_next(&r) | 1u};
        for (size_t i = 0; i < (size_t)img->w * img->h * 3; i++) img->rgb[i] = to_byte(img->rgb[i] + sigma * noise(&f));
    }
    return CLIP_OK;
}
