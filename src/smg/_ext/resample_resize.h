/* A whole Pillow-exact resize in one call (smg._ext.resample.resize): the filters' coefficients in
 * C and both passes of resample_simd.h, with no Python between them.
 *
 * Why one call: a resize made of separate calls (coefficients, pass, coefficients, pass) takes the
 * GIL back after each. With two images resizing on two threads, a thread that finds the GIL held
 * sleeps, and a sleeping thread on a virtual CPU can take a millisecond to wake: requests of short
 * images then ran barely faster on two threads than on one. One call takes the GIL back once.
 *
 * The coefficients are Pillow's (precompute_coeffs, then rounding to fixed point), in the same
 * operation order, so the doubles and the integers are the same; the specification is
 * smg.multimodal.kernels_py.resample_coeffs, and the tests hold the two equal.
 */
#ifndef SMG_RESAMPLE_RESIZE_H
#define SMG_RESAMPLE_RESIZE_H

#include <math.h>
#include <string.h>

#include "resample_simd.h"

/* Pillow's filter ids (PIL.Image.Resampling); NEAREST has no coefficients. */
enum { SMG_LANCZOS = 1, SMG_BILINEAR = 2, SMG_BICUBIC = 3, SMG_BOX = 4, SMG_HAMMING = 5 };
#define SMG_PRECISION_BITS 22 /* Pillow's fraction bits: 32 - 8 - 2 */

/* The filter's support (0 for an id that is none of the above). */
static double smg_filter_support(int filter_id) {
    switch (filter_id) {
    case SMG_BOX: return 0.5;
    case SMG_BILINEAR: case SMG_HAMMING: return 1.0;
    case SMG_BICUBIC: return 2.0;
    case SMG_LANCZOS: return 3.0;
    default: return 0.0;
    }
}

static double smg_sinc(double x) {
    if (x == 0.0)
        return 1.0;
    x *= M_PI;
    return sin(x) / x;
}

/* The filter's value at x (kernels_py.filter_weight). */
static double smg_filter(int filter_id, double x) {
    const double a = -0.5; /* bicubic */
    if (filter_id == SMG_BOX)
        return -0.5 < x && x <= 0.5 ? 1.0 : 0.0;
    if (filter_id == SMG_LANCZOS)
        return -3.0 <= x && x < 3.0 ? smg_sinc(x) * smg_sinc(x / 3.0) : 0.0;
    if (x < 0.0)
        x = -x;
    if (filter_id == SMG_BILINEAR)
        return x < 1.0 ? 1.0 - x : 0.0;
    if (filter_id == SMG_BICUBIC) {
        if (x < 1.0)
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
        return x < 2.0 ? (((x - 5) * x + 8) * x - 4) * a : 0.0;
    }
    /* Hamming: Pillow writes its constants as C floats */
    if (x == 0.0)
        return 1.0;
    if (x >= 1.0)
        return 0.0;
    x *= M_PI;
    return sin(x) / x * (0.54f + 0.46f * cos(x));
}

/* Taps a row of an in_size -> out_size axis's weights holds. */
static ptrdiff_t smg_resample_ksize(ptrdiff_t in_size, ptrdiff_t out_size, int filter_id) {
    double scale = (double)in_size / (double)out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    return (ptrdiff_t)ceil(smg_filter_support(filter_id) * filterscale) * 2 + 1;
}

/* Outputs first .. first + count of an in_size -> out_size axis: bounds (count, 2) of (first
 * input, taps) and weights (count, ksize; zero past the taps) with *precision fraction bits,
 * Pillow's 22 or, with torch_weights, torch's: the most that keep the axis's largest weight (over
 * every output, not the window's alone) within int16. Returns 0, -1 without memory, -3 for a
 * filter with no coefficients. */
static int smg_resample_coeffs(ptrdiff_t in_size, ptrdiff_t out_size, int filter_id, int torch_weights,
                               ptrdiff_t first, ptrdiff_t count, int64_t *bounds, int32_t *weights,
                               int *precision) {
    double base = smg_filter_support(filter_id);
    if (base == 0.0)
        return -3;
    double scale = (double)in_size / (double)out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = base * filterscale, ss = 1.0 / filterscale, largest = 0.0;
    ptrdiff_t ksize = smg_resample_ksize(in_size, out_size, filter_id);
    double *normalised = calloc((size_t)(count * ksize), sizeof(double)), *k = malloc((size_t)ksize * sizeof(double));
    if (normalised == NULL || k == NULL) {
        free(normalised);
        free(k);
        return -1;
    }
    /* torch's precision depends on every output's weights, Pillow's on none */
    ptrdiff_t start = torch_weights ? 0 : first, stop = torch_weights ? out_size : first + count;
    for (ptrdiff_t xx = start; xx < stop; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0;
        ptrdiff_t xmin = (ptrdiff_t)(center - support + 0.5), xmax = (ptrdiff_t)(center + support + 0.5);
        if (xmin < 0)
            xmin = 0;
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        for (ptrdiff_t x = 0; x < xmax; x++) {
            k[x] = smg_filter(filter_id, (x + xmin - center + 0.5) * ss);
            ww += k[x];
        }
        for (ptrdiff_t x = 0; x < xmax; x++) {
            if (ww != 0.0)
                k[x] /= ww;
            if (k[x] > largest)
                largest = k[x];
        }
        if (first <= xx && xx < first + count) {
            memcpy(normalised + (xx - first) * ksize, k, (size_t)xmax * sizeof(double));
            bounds[(xx - first) * 2] = xmin;
            bounds[(xx - first) * 2 + 1] = xmax;
        }
    }
    int bits = SMG_PRECISION_BITS;
    if (torch_weights)
        for (bits = 0; bits < SMG_PRECISION_BITS && (int64_t)(0.5 + largest * (double)(1 << (bits + 1))) < (1 << 15);)
            bits++;
    double one = (double)(1 << bits);
    for (ptrdiff_t i = 0; i < count * ksize; i++) /* C's cast truncates: round half away from zero */
        weights[i] = (int32_t)(normalised[i] < 0 ? -0.5 + normalised[i] * one : 0.5 + normalised[i] * one);
    *precision = bits;
    free(normalised);
    free(k);
    return 0;
}

/* One axis of a resize: the window's coefficients (when the axis changes size) and the span of
 * input pixels they read, [lo, hi); bounds are made relative to lo. */
typedef struct {
    ptrdiff_t ksize, lo, hi;
    int64_t *bounds;
    int32_t *weights;
    int precision;
} smg_resize_axis;

static int smg_resize_axis_init(smg_resize_axis *axis, ptrdiff_t in_size, ptrdiff_t out_size, ptrdiff_t first,
                                ptrdiff_t count, int filter_id, int torch_weights) {
    axis->bounds = NULL;
    axis->weights = NULL;
    if (in_size == out_size) { /* the window of the input itself */
        axis->lo = first;
        axis->hi = first + count;
        return 0;
    }
    axis->ksize = smg_resample_ksize(in_size, out_size, filter_id);
    axis->bounds = malloc((size_t)(count * 2) * sizeof(int64_t));
    axis->weights = malloc((size_t)(count * axis->ksize) * sizeof(int32_t));
    if (axis->bounds == NULL || axis->weights == NULL)
        return -1;
    int status = smg_resample_coeffs(in_size, out_size, filter_id, torch_weights, first, count, axis->bounds,
                                     axis->weights, &axis->precision);
    if (status)
        return status;
    axis->lo = in_size;
    axis->hi = 0;
    for (ptrdiff_t i = 0; i < count; i++) {
        ptrdiff_t start = (ptrdiff_t)axis->bounds[i * 2], stop = start + (ptrdiff_t)axis->bounds[i * 2 + 1];
        if (start < axis->lo)
            axis->lo = start;
        if (stop > axis->hi)
            axis->hi = stop;
    }
    if (axis->hi < axis->lo) /* (only taps of no pixel: nothing to read) */
        axis->hi = axis->lo;
    for (ptrdiff_t i = 0; i < count; i++)
        axis->bounds[i * 2] -= axis->lo;
    return 0;
}

/* Resize (height, width) four-byte pixels, rows src_stride bytes apart, to out_h x out_w as
 * Pillow does, computing only the count_h x count_w window at (top, left) of the result, into out
 * (count_h rows of count_w pixels). horizontal_first orders the passes (Pillow's rule, or torch's:
 * always); each pass reads only the pixels the window needs. Both passes are ``tier``'s (it must
 * have a vertical pass). Returns 0, -1 without memory, -2 for a tier without both passes, -3 for a
 * filter with no coefficients. */
static int smg_resample_resize(int tier, const uint8_t *src, ptrdiff_t src_stride, ptrdiff_t height,
                               ptrdiff_t width, uint8_t *out, ptrdiff_t out_h, ptrdiff_t out_w, ptrdiff_t top,
                               ptrdiff_t left, ptrdiff_t count_h, ptrdiff_t count_w, int filter_id,
                               int torch_weights, int horizontal_first) {
    smg_resize_axis across = {0}, down = {0};
    uint8_t *between = NULL;
    int status = smg_resize_axis_init(&across, width, out_w, left, count_w, filter_id, torch_weights);
    if (status == 0)
        status = smg_resize_axis_init(&down, height, out_h, top, count_h, filter_id, torch_weights);
    if (status)
        goto done;
    const uint8_t *origin = src + down.lo * src_stride + across.lo * 4;
    ptrdiff_t rows = down.hi - down.lo, columns = across.hi - across.lo, out_stride = count_w * 4;
    if (across.bounds == NULL && down.bounds == NULL) { /* no pass: the window's pixels */
        for (ptrdiff_t y = 0; y < count_h; y++)
            memcpy(out + y * out_stride, origin + y * src_stride, (size_t)out_stride);
    } else if (down.bounds == NULL) {
        status = smg_resample_horizontal(tier, origin, src_stride, rows, columns, out, count_w, across.bounds,
                                         across.weights, across.ksize, across.precision);
    } else if (across.bounds == NULL) {
        status = smg_resample_vertical(tier, origin, src_stride, columns * 4, out, count_h, down.bounds,
                                       down.weights, down.ksize, down.precision);
    } else if (horizontal_first) {
        if ((between = malloc((size_t)(rows * out_stride))) == NULL) {
            status = -1;
            goto done;
        }
        status = smg_resample_horizontal(tier, origin, src_stride, rows, columns, between, count_w, across.bounds,
                                         across.weights, across.ksize, across.precision);
        if (status == 0)
            status = smg_resample_vertical(tier, between, out_stride, out_stride, out, count_h, down.bounds,
                                           down.weights, down.ksize, down.precision);
    } else {
        if ((between = malloc((size_t)(count_h * columns * 4))) == NULL) {
            status = -1;
            goto done;
        }
        status = smg_resample_vertical(tier, origin, src_stride, columns * 4, between, count_h, down.bounds,
                                       down.weights, down.ksize, down.precision);
        if (status == 0)
            status = smg_resample_horizontal(tier, between, columns * 4, count_h, columns, out, count_w,
                                             across.bounds, across.weights, across.ksize, across.precision);
    }
done:
    free(between);
    free(across.bounds);
    free(across.weights);
    free(down.bounds);
    free(down.weights);
    return status;
}

#endif
