/* The horizontal resampling pass over four-byte pixels in AVX2 (smg._ext.resample).
 *
 * The pass is Pillow's fixed-point convolution: per output pixel and channel, half + sum of
 * pixel * weight over the window, shifted right by the precision and clipped to 0..255. Pillow's
 * weights have 22 fraction bits, too wide for a 16-bit multiply, and a 32-bit multiply (vpmulld)
 * does 8 products per two micro-ops. So each weight is split into 11-bit halves, w = hi * 2048 + lo
 * with 0 <= lo < 2048, and two taps are taken per vpmaddwd (pixel pairs times weight pairs, summed
 * into 32 bits: 255 * 2047 * 2 cannot overflow): sum(p * w) = (sum(p * hi) << 11) + sum(p * lo).
 * The sums wrap as Pillow's int32 ones would, and the combination is exact modulo 2^32, so the
 * result is Pillow's integer for integer.
 *
 * Four taps go through one 256-bit register: pixels x..x+3 of a row, their bytes reordered so
 * each channel's two pixels sit side by side (channel pairs of taps 0-1 in the low half, 2-3 in the
 * high half). Four rows are done per pass over the weights, so each weight vector, loaded once,
 * serves four rows.
 */
#ifndef SMG_RESAMPLE_SIMD_H
#define SMG_RESAMPLE_SIMD_H

#include <stdint.h>
#include <stddef.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SMG_RESAMPLE_X86 1
#else
#define SMG_RESAMPLE_X86 0
#endif

/* 1 when this CPU runs the AVX2 pass. */
static int smg_resample_simd_available(void) {
#if SMG_RESAMPLE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

/* The split weights for smg_resample_horizontal: per output pixel, ``groups`` groups of four taps,
 * each 32 int16 (the lo halves of taps (0, 1) four times then of taps (2, 3) four times; then the
 * same of the hi halves). Taps past ``ksize`` weigh 0. */
static void smg_resample_split(const int32_t *weights, ptrdiff_t outputs, ptrdiff_t ksize,
                               ptrdiff_t groups, int16_t *split) {
    for (ptrdiff_t xx = 0; xx < outputs; xx++) {
        for (ptrdiff_t g = 0; g < groups; g++) {
            int16_t *out = split + (xx * groups + g) * 32;
            for (int tap = 0; tap < 4; tap++) {
                ptrdiff_t k = g * 4 + tap;
                int32_t w = k < ksize ? weights[xx * ksize + k] : 0;
                int16_t hi = (int16_t)(w >> 11), lo = (int16_t)(w & 2047);
                int half = tap / 2, side = tap % 2;  /* which 128-bit half, which of the pair */
                for (int c = 0; c < 4; c++) {
                    out[half * 8 + c * 2 + side] = lo;
                    out[16 + half * 8 + c * 2 + side] = hi;
                }
            }
        }
    }
}

#if SMG_RESAMPLE_X86

#define SMG_SIMD __attribute__((target("avx2"), always_inline)) static inline

/* Pixels x..x+3 of a row as 16 int16 in tap-pair order. The 16 bytes are loaded into both halves
 * of a register, and one byte shuffle both picks each half's pixels and widens them to 16 bits
 * (a shuffle index with its top bit set writes 0): one shuffle micro-op, which is what the pass is
 * bound by. Past the row's end (the last output pixels' zero-weighted taps) the load is masked, so
 * nothing beyond the image is read. */
SMG_SIMD __m256i smg_pixel_pairs(const uint8_t *row, ptrdiff_t x, ptrdiff_t width) {
    const __m256i order = _mm256_setr_epi8(0, -1, 4, -1, 1, -1, 5, -1, 2, -1, 6, -1, 3, -1, 7, -1,
                                           8, -1, 12, -1, 9, -1, 13, -1, 10, -1, 14, -1, 11, -1, 15, -1);
    __m128i pixels;
    if (x + 4 <= width) {
        pixels = _mm_loadu_si128((const __m128i *)(row + x * 4));
    } else {
        const __m128i lanes = _mm_setr_epi32(0, 1, 2, 3);
        __m128i mask = _mm_cmpgt_epi32(_mm_set1_epi32((int)(width - x)), lanes);
        pixels = _mm_maskload_epi32((const int *)(row + x * 4), mask);
    }
    return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(pixels), order);
}

/* Four channels' half + sums, shifted and clipped, as one 32-bit pixel. */
SMG_SIMD uint32_t smg_finish(__m256i lo, __m256i hi, __m128i half, int precision) {
    __m128i lo4 = _mm_add_epi32(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1));
    __m128i hi4 = _mm_add_epi32(_mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1));
    __m128i sum = _mm_add_epi32(_mm_add_epi32(_mm_slli_epi32(hi4, 11), lo4), half);
    __m128i value = _mm_sra_epi32(sum, _mm_cvtsi32_si128(precision));
    __m128i bytes = _mm_packus_epi16(_mm_packs_epi32(value, value), _mm_setzero_si128());
    return (uint32_t)_mm_cvtsi128_si32(bytes);
}

/* ``rows`` (1..4) rows from ``src`` into ``out`` (strides in bytes). */
SMG_SIMD void smg_rows(const uint8_t *src, ptrdiff_t src_stride, ptrdiff_t width, uint8_t *out,
                       ptrdiff_t out_stride, ptrdiff_t outputs, const int64_t *bounds,
                       const int16_t *split, ptrdiff_t groups, int precision, int rows) {
    const __m128i half = _mm_set1_epi32(1 << (precision - 1));
    for (ptrdiff_t xx = 0; xx < outputs; xx++) {
        ptrdiff_t first = (ptrdiff_t)bounds[xx * 2], used = ((ptrdiff_t)bounds[xx * 2 + 1] + 3) / 4;
        const int16_t *w = split + xx * groups * 32;
        __m256i lo[4], hi[4];
        for (int r = 0; r < rows; r++) {
            lo[r] = _mm256_setzero_si256();
            hi[r] = _mm256_setzero_si256();
        }
        for (ptrdiff_t g = 0; g < used; g++) {
            __m256i w_lo = _mm256_loadu_si256((const __m256i *)(w + g * 32));
            __m256i w_hi = _mm256_loadu_si256((const __m256i *)(w + g * 32 + 16));
            for (int r = 0; r < rows; r++) {
                __m256i pairs = smg_pixel_pairs(src + r * src_stride, first + g * 4, width);
                lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(pairs, w_lo));
                hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(pairs, w_hi));
            }
        }
        for (int r = 0; r < rows; r++) {
            uint32_t pixel = smg_finish(lo[r], hi[r], half, precision);
            __builtin_memcpy(out + r * out_stride + xx * 4, &pixel, 4);
        }
    }
}

__attribute__((target("avx2"))) static void smg_resample_horizontal(
        const uint8_t *src, ptrdiff_t src_stride, ptrdiff_t height, ptrdiff_t width, uint8_t *out,
        ptrdiff_t out_stride, ptrdiff_t outputs, const int64_t *bounds, const int16_t *split,
        ptrdiff_t groups, int precision) {
    ptrdiff_t y = 0;
    for (; y + 4 <= height; y += 4)  /* (a constant row count: the loops over rows unroll) */
        smg_rows(src + y * src_stride, src_stride, width, out + y * out_stride, out_stride, outputs,
                 bounds, split, groups, precision, 4);
    for (; y < height; y++)
        smg_rows(src + y * src_stride, src_stride, width, out + y * out_stride, out_stride, outputs,
                 bounds, split, groups, precision, 1);
}

#else

static void smg_resample_horizontal(
        const uint8_t *src, ptrdiff_t src_stride, ptrdiff_t height, ptrdiff_t width, uint8_t *out,
        ptrdiff_t out_stride, ptrdiff_t outputs, const int64_t *bounds, const int16_t *split,
        ptrdiff_t groups, int precision) {
    /* Unreachable: smg_resample_simd_available() is 0 off x86-64, and smg._ext.resample refuses
     * the call then (the Numba pass runs instead). */
    (void)src; (void)src_stride; (void)height; (void)width; (void)out; (void)out_stride;
    (void)outputs; (void)bounds; (void)split; (void)groups; (void)precision;
    __builtin_trap();
}

#endif
#endif
