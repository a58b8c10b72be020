/* The resampling passes over four-byte pixels in C intrinsics (smg._ext.resample): the horizontal
 * pass in AVX2, and both passes in AVX512-VNNI.
 *
 * A pass is Pillow's fixed-point convolution: per output pixel and channel, half + sum of
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
 *
 * Where the CPU has AVX512-VNNI (with 256-bit vectors: AVX512VL), a second horizontal pass does
 * the same sums with vpdpbusd in 5 micro-ops for eight taps where the AVX2 one takes 12 (see
 * smg_resample_digits), and a vertical pass does them four rows at a time (smg_resample_vnni_vertical).
 * smg_resample_tiers says which passes this CPU runs. (AVX-VNNI's VEX form of the instruction,
 * with 16 registers, measured no faster than the AVX2 pass on a CPU with both, so it has no pass.)
 */
#ifndef SMG_RESAMPLE_SIMD_H
#define SMG_RESAMPLE_SIMD_H

#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>

/* The passes, by the instructions they need: bit i of smg_resample_tiers() is set when tier i runs. */
enum { SMG_RESAMPLE_AVX2 = 0, SMG_RESAMPLE_AVX512_VNNI = 1 };

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SMG_RESAMPLE_X86 1
#else
#define SMG_RESAMPLE_X86 0
#endif

static int smg_resample_tiers(void) {
#if SMG_RESAMPLE_X86
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2"))  /* (also false where the OS does not save AVX state) */
        return 0;
    return 1 << SMG_RESAMPLE_AVX2
           | (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) << SMG_RESAMPLE_AVX512_VNNI;
#else
    return 0;
#endif
}

/* Tap k of output i's weights (``ksize`` a row): 0 past the output's window, ``bounds[i, 1]``. */
static inline int32_t smg_tap(const int64_t *bounds, const int32_t *weights, ptrdiff_t ksize, ptrdiff_t i,
                              ptrdiff_t k) {
    return k < bounds[i * 2 + 1] ? weights[i * ksize + k] : 0;
}

/* w's three signed base-256 digits, each in -128..127: w = d[2] * 65536 + d[1] * 256 + d[0]
 * (for |w| <= 3 << 21, where d[2] stays a byte). */
static inline void smg_digits(int32_t w, int8_t d[3]) {
    int32_t d0 = ((w + 128) & 255) - 128, rest = (w - d0) / 256;
    int32_t d1 = ((rest + 128) & 255) - 128;
    d[0] = (int8_t)d0;
    d[1] = (int8_t)d1;
    d[2] = (int8_t)((rest - d1) / 256);
}

/* The split weights for the AVX2 pass: per output pixel, ``groups`` groups of four taps,
 * each 32 int16 (the lo halves of taps (0, 1) four times then of taps (2, 3) four times; then the
 * same of the hi halves). Taps past the output's window (``bounds[xx, 1]``) weigh 0. */
static void smg_resample_split(const int64_t *bounds, const int32_t *weights, ptrdiff_t outputs,
                               ptrdiff_t ksize, ptrdiff_t groups, int16_t *split) {
    for (ptrdiff_t xx = 0; xx < outputs; xx++) {
        for (ptrdiff_t g = 0; g < groups; g++) {
            int16_t *out = split + (xx * groups + g) * 32;
            for (int tap = 0; tap < 4; tap++) {
                int32_t w = smg_tap(bounds, weights, ksize, xx, g * 4 + tap);
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

/* The digit weights for the VNNI pass: per output pixel, ``groups`` groups of eight taps, each
 * three times 32 signed bytes (smg_digits' d[0], d[1], d[2]): byte c * 4 + t of a 16-byte half
 * holds channel c's digit of tap t (taps 0-3, then 4-7). Taps past the output's window weigh 0. */
static void smg_resample_digits(const int64_t *bounds, const int32_t *weights, ptrdiff_t outputs,
                                ptrdiff_t ksize, ptrdiff_t groups, int8_t *digits) {
    for (ptrdiff_t xx = 0; xx < outputs; xx++) {
        for (ptrdiff_t g = 0; g < groups; g++) {
            int8_t *out = digits + (xx * groups + g) * 96;
            for (int tap = 0; tap < 8; tap++) {
                int8_t d[3];
                int at = (tap / 4) * 16 + tap % 4;
                smg_digits(smg_tap(bounds, weights, ksize, xx, g * 8 + tap), d);
                for (int c = 0; c < 4; c++)
                    for (int j = 0; j < 3; j++)
                        out[j * 32 + at + c * 4] = d[j];
            }
        }
    }
}

#if SMG_RESAMPLE_X86

#define SMG_AVX2 __attribute__((target("avx2"), always_inline)) static inline

/* Pixels x..x+3 of a row as 16 int16 in tap-pair order. The 16 bytes are loaded into both halves
 * of a register, and one byte shuffle both picks each half's pixels and widens them to 16 bits
 * (a shuffle index with its top bit set writes 0): one shuffle micro-op, which is what the pass is
 * bound by. Past the row's end (the last output pixels' zero-weighted taps) the load is masked, so
 * nothing beyond the image is read. */
SMG_AVX2 __m256i smg_avx2_pixel_pairs(const uint8_t *row, ptrdiff_t x, ptrdiff_t width) {
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

/* Each of ``rows`` rows' output pixel from its sums (per channel, one in each 128-bit half: the
 * taps' two partial sums): half added, shifted, clipped, stored at ``out`` (rows ``out_stride``
 * bytes apart). Four rows are finished two to a register: half the adds, shifts and packs. */
SMG_AVX2 void smg_store_pixels(const __m256i *sums, int rows, __m256i half, __m128i shift, uint8_t *out,
                               ptrdiff_t out_stride) {
    if (rows == 4) {
        __m256i pairs[2];
        for (int p = 0; p < 2; p++) {  /* rows (0, 1), (2, 3): one row to a 128-bit half */
            __m256i a = sums[2 * p], b = sums[2 * p + 1];
            __m256i both = _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20),
                                            _mm256_permute2x128_si256(a, b, 0x31));
            pairs[p] = _mm256_sra_epi32(_mm256_add_epi32(both, half), shift);
        }
        /* the packs work per half: bytes 0-3 and 4-7 of the low half are rows 0 and 2, of the high
         * half rows 1 and 3 */
        __m256i words = _mm256_packs_epi32(pairs[0], pairs[1]);
        __m256i bytes = _mm256_packus_epi16(words, words);
        __m128i low = _mm256_castsi256_si128(bytes), high = _mm256_extracti128_si256(bytes, 1);
        uint32_t pixels[4] = {(uint32_t)_mm_cvtsi128_si32(low), (uint32_t)_mm_cvtsi128_si32(high),
                              (uint32_t)_mm_extract_epi32(low, 1), (uint32_t)_mm_extract_epi32(high, 1)};
        for (int r = 0; r < 4; r++)
            __builtin_memcpy(out + r * out_stride, &pixels[r], 4);
        return;
    }
    for (int r = 0; r < rows; r++) {
        __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(sums[r]), _mm256_extracti128_si256(sums[r], 1));
        __m128i value = _mm_sra_epi32(_mm_add_epi32(sum, _mm256_castsi256_si128(half)), shift);
        __m128i bytes = _mm_packus_epi16(_mm_packs_epi32(value, value), _mm_setzero_si128());
        uint32_t pixel = (uint32_t)_mm_cvtsi128_si32(bytes);
        __builtin_memcpy(out + r * out_stride, &pixel, 4);
    }
}

/* ``rows`` (1..4) rows from ``src`` into ``out`` (strides in bytes). */
SMG_AVX2 void smg_avx2_rows(const uint8_t *src, ptrdiff_t src_stride, ptrdiff_t width, uint8_t *out,
                       ptrdiff_t out_stride, ptrdiff_t outputs, const int64_t *bounds,
                       const int16_t *split, ptrdiff_t groups, int precision, int rows) {
    const __m256i half = _mm256_set1_epi32(1 << (precision - 1));
    const __m128i shift = _mm_cvtsi32_si128(precision);
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
                __m256i pairs = smg_avx2_pixel_pairs(src + r * src_stride, first + g * 4, width);
                lo[r] = _mm256_add_epi32(lo[r], _mm256_madd_epi16(pairs, w_lo));
                hi[r] = _mm256_add_epi32(hi[r], _mm256_madd_epi16(pairs, w_hi));
            }
        }
        __m256i sums[4];
        for (int r = 0; r < rows; r++)
            sums[r] = _mm256_add_epi32(_mm256_slli_epi32(hi[r], 11), lo[r]);
        smg_store_pixels(sums, rows, half, shift, out + xx * 4, out_stride);
    }
}

/* Defines ``name``, a whole pass (for the instruction sets ``isa``) that runs ``rows`` over the image's rows four
 * at a time (a constant count: the loops over a block's rows unroll), then one at a time. */
#define SMG_DEFINE_PASS(name, isa, weight_type, rows)                                                  \
    __attribute__((target(isa))) static void name(                                                     \
            const uint8_t *src, ptrdiff_t src_stride, ptrdiff_t height, ptrdiff_t width, uint8_t *out, \
            ptrdiff_t out_stride, ptrdiff_t outputs, const int64_t *bounds, const weight_type *weights,\
            ptrdiff_t groups, int precision) {                                                         \
        ptrdiff_t y = 0;                                                                               \
        for (; y + 4 <= height; y += 4)                                                                \
            rows(src + y * src_stride, src_stride, width, out + y * out_stride, out_stride, outputs,   \
                 bounds, weights, groups, precision, 4);                                               \
        for (; y < height; y++)                                                                        \
            rows(src + y * src_stride, src_stride, width, out + y * out_stride, out_stride, outputs,   \
                 bounds, weights, groups, precision, 1);                                               \
    }

SMG_DEFINE_PASS(smg_resample_avx2, "avx2", int16_t, smg_avx2_rows)

/* The VNNI pass: vpdpbusd adds four unsigned bytes times four signed bytes into each 32-bit lane,
 * without saturating. Eight taps of a row take one load, one byte shuffle (each channel's four
 * pixels side by side, per 128-bit half) and one vpdpbusd per weight digit:
 * sum(p * w) = (sum(p * d2) << 16) + (sum(p * d1) << 8) + sum(p * d0), exact modulo 2^32 as the
 * AVX2 pass's is. */
#define SMG_VNNI __attribute__((target("avx2,avx512vnni,avx512vl"), always_inline)) static inline

/* Eight taps from ``x`` of ``rows`` rows added into each row's three digit sums: pixels x..x+7,
 * each channel's four pixels of a 128-bit half in one 32-bit lane; with ``masked``, the loads
 * stop at the row's end, so nothing beyond the image is read. */
SMG_VNNI void smg_vnni_taps(__m256i *d0, __m256i *d1, __m256i *d2, const int8_t *w, const uint8_t *src,
                            ptrdiff_t src_stride, ptrdiff_t x, ptrdiff_t width, int rows, int masked) {
    const __m256i by_channel = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                                0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    __m256i w0 = _mm256_loadu_si256((const __m256i *)w);
    __m256i w1 = _mm256_loadu_si256((const __m256i *)(w + 32));
    __m256i w2 = _mm256_loadu_si256((const __m256i *)(w + 64));
    __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(width - x)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (int r = 0; r < rows; r++) {
        const uint8_t *at = src + r * src_stride + x * 4;
        __m256i pixels = masked ? _mm256_maskload_epi32((const int *)at, mask) : _mm256_loadu_si256((const __m256i *)at);
        __m256i p = _mm256_shuffle_epi8(pixels, by_channel);
        d0[r] = _mm256_dpbusd_epi32(d0[r], p, w0);
        d1[r] = _mm256_dpbusd_epi32(d1[r], p, w1);
        d2[r] = _mm256_dpbusd_epi32(d2[r], p, w2);
    }
}

/* ``rows`` (1..4) rows from ``src`` into ``out`` (strides in bytes). */
SMG_VNNI void smg_vnni_rows(
        const uint8_t *src, ptrdiff_t src_stride, ptrdiff_t width, uint8_t *out, ptrdiff_t out_stride,
        ptrdiff_t outputs, const int64_t *bounds, const int8_t *digits, ptrdiff_t groups, int precision,
        int rows) {
    const __m256i half = _mm256_set1_epi32(1 << (precision - 1));
    const __m128i shift = _mm_cvtsi32_si128(precision);
    for (ptrdiff_t xx = 0; xx < outputs; xx++) {
        ptrdiff_t first = (ptrdiff_t)bounds[xx * 2], used = ((ptrdiff_t)bounds[xx * 2 + 1] + 7) / 8;
        const int8_t *w = digits + xx * groups * 96;
        __m256i d0[4], d1[4], d2[4];
        for (int r = 0; r < rows; r++)
            d0[r] = d1[r] = d2[r] = _mm256_setzero_si256();
        /* the groups wholly inside the row, then the rest (the row's last outputs) masked: no
         * branch in the loop that does the work */
        ptrdiff_t whole = first + used * 8 <= width ? used : (width - first) / 8, g = 0;
        for (; g < whole; g++)
            smg_vnni_taps(d0, d1, d2, w + g * 96, src, src_stride, first + g * 8, width, rows, 0);
        for (; g < used; g++)
            smg_vnni_taps(d0, d1, d2, w + g * 96, src, src_stride, first + g * 8, width, rows, 1);
        __m256i sums[4];
        for (int r = 0; r < rows; r++)
            sums[r] = _mm256_add_epi32(_mm256_add_epi32(d0[r], _mm256_slli_epi32(d1[r], 8)),
                                       _mm256_slli_epi32(d2[r], 16));
        smg_store_pixels(sums, rows, half, shift, out + xx * 4, out_stride);
    }
}

SMG_DEFINE_PASS(smg_resample_vnni, "avx2,avx512vnni,avx512vl", int8_t, smg_vnni_rows)

/* The vertical pass with VNNI: output row yy is, byte for byte along the row, the window of input
 * rows ``bounds[yy]`` weighted. Four taps (rows) at a time: 32 bytes of each of the four rows are
 * interleaved (two byte unpacks, two word unpacks a pair) so each 32-bit lane holds one column's
 * four taps, and each of the four vectors that makes takes one vpdpbusd per weight digit. The
 * unpacks permute the columns; the packs at the end undo it. Taps past the window weigh 0 and read
 * the window's last row (inside the image). */
SMG_VNNI __m256i smg_vnni_load(const uint8_t *at, __m256i mask, int masked) {
    return masked ? _mm256_maskload_epi32((const int *)at, mask) : _mm256_loadu_si256((const __m256i *)at);
}

/* The 32 bytes (or, ``masked``, the first ones of them) from ``column`` of output row ``rows`` */
SMG_VNNI void smg_vnni_column(const uint8_t *const *rows, const int32_t *digits, ptrdiff_t groups,
                              ptrdiff_t column, __m128i shift, __m256i half, __m256i mask, int masked,
                              uint8_t *out) {
    __m256i sums[3][4];
    for (int d = 0; d < 3; d++)
        for (int q = 0; q < 4; q++)
            sums[d][q] = _mm256_setzero_si256();
    for (ptrdiff_t g = 0; g < groups; g++) {
        const uint8_t *const *four = rows + g * 4;
        __m256i a = smg_vnni_load(four[0] + column, mask, masked), b = smg_vnni_load(four[1] + column, mask, masked);
        __m256i c = smg_vnni_load(four[2] + column, mask, masked), e = smg_vnni_load(four[3] + column, mask, masked);
        __m256i ab_lo = _mm256_unpacklo_epi8(a, b), ab_hi = _mm256_unpackhi_epi8(a, b);
        __m256i ce_lo = _mm256_unpacklo_epi8(c, e), ce_hi = _mm256_unpackhi_epi8(c, e);
        __m256i taps[4] = {_mm256_unpacklo_epi16(ab_lo, ce_lo), _mm256_unpackhi_epi16(ab_lo, ce_lo),
                           _mm256_unpacklo_epi16(ab_hi, ce_hi), _mm256_unpackhi_epi16(ab_hi, ce_hi)};
        for (int d = 0; d < 3; d++) {
            __m256i weight = _mm256_set1_epi32(digits[g * 3 + d]);
            for (int q = 0; q < 4; q++)
                sums[d][q] = _mm256_dpbusd_epi32(sums[d][q], taps[q], weight);
        }
    }
    __m256i values[4];
    for (int q = 0; q < 4; q++) {
        __m256i sum = _mm256_add_epi32(_mm256_add_epi32(sums[0][q], _mm256_slli_epi32(sums[1][q], 8)),
                                       _mm256_add_epi32(_mm256_slli_epi32(sums[2][q], 16), half));
        values[q] = _mm256_sra_epi32(sum, shift);
    }
    __m256i bytes = _mm256_packus_epi16(_mm256_packs_epi32(values[0], values[1]),
                                        _mm256_packs_epi32(values[2], values[3]));
    if (masked)
        _mm256_maskstore_epi32((int *)(out + column), mask, bytes);
    else
        _mm256_storeu_si256((__m256i *)(out + column), bytes);
}

__attribute__((target("avx2,avx512vnni,avx512vl"))) static void smg_resample_vnni_vertical(
        const uint8_t *src, ptrdiff_t src_stride, ptrdiff_t row_bytes, uint8_t *out, ptrdiff_t outputs,
        const int64_t *bounds, const int32_t *digits, ptrdiff_t groups, int precision,
        const uint8_t **rows) {
    const __m128i shift = _mm_cvtsi32_si128(precision);
    const __m256i half = _mm256_set1_epi32(1 << (precision - 1));
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i none = _mm256_setzero_si256();
    __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(row_bytes % 32 / 4)), lanes);
    for (ptrdiff_t yy = 0; yy < outputs; yy++) {
        ptrdiff_t first = (ptrdiff_t)bounds[yy * 2], count = (ptrdiff_t)bounds[yy * 2 + 1];
        ptrdiff_t used = (count + 3) / 4;
        for (ptrdiff_t t = 0; t < used * 4; t++)
            rows[t] = src + (first + (t < count ? t : (count ? count - 1 : 0))) * src_stride;
        const int32_t *w = digits + yy * groups * 3;
        uint8_t *line = out + yy * row_bytes;
        ptrdiff_t column = 0;
        for (; column + 32 <= row_bytes; column += 32)
            smg_vnni_column(rows, w, used, column, shift, half, none, 0, line);
        if (column < row_bytes)
            smg_vnni_column(rows, w, used, column, shift, half, tail, 1, line);
    }
}

/* The digit weights of the vertical pass: per output row, ``groups`` groups of four taps, each
 * three int32 (the four taps' d0 bytes, then d1's, then d2's; see smg_resample_digits). */
static void smg_resample_row_digits(const int64_t *bounds, const int32_t *weights, ptrdiff_t outputs,
                                    ptrdiff_t ksize, ptrdiff_t groups, int32_t *digits) {
    for (ptrdiff_t yy = 0; yy < outputs; yy++) {
        for (ptrdiff_t g = 0; g < groups; g++) {
            uint32_t packed[3] = {0, 0, 0};
            for (int tap = 0; tap < 4; tap++) {
                int8_t d[3];
                smg_digits(smg_tap(bounds, weights, ksize, yy, g * 4 + tap), d);
                for (int j = 0; j < 3; j++)
                    packed[j] |= (uint32_t)(uint8_t)d[j] << (tap * 8);
            }
            for (int d = 0; d < 3; d++)
                digits[(yy * groups + g) * 3 + d] = (int32_t)packed[d];
        }
    }
}

#endif

/* The horizontal pass of ``tier`` (one smg_resample_tiers() holds) over rows of (height, width)
 * four-byte pixels, ``src_stride`` bytes apart, into rows of ``outputs`` pixels: output pixel i
 * is the window of ``bounds[i] = (first, count)`` pixels weighted by ``weights[i, :count]``
 * (``ksize`` a row, ``precision`` fraction bits). -1 when the memory for the split weights could
 * not be had, -2 for a tier this build has not, 0 when done. */
static int smg_resample_horizontal(int tier, const uint8_t *src, ptrdiff_t src_stride, ptrdiff_t height,
                                   ptrdiff_t width, uint8_t *out, ptrdiff_t outputs, const int64_t *bounds,
                                   const int32_t *weights, ptrdiff_t ksize, int precision) {
#if SMG_RESAMPLE_X86
    if (tier == SMG_RESAMPLE_AVX2) {
        ptrdiff_t groups = (ksize + 3) / 4;
        int16_t *split = malloc((size_t)(outputs * groups * 32) * sizeof(int16_t));
        if (split == NULL)
            return -1;
        smg_resample_split(bounds, weights, outputs, ksize, groups, split);
        smg_resample_avx2(src, src_stride, height, width, out, outputs * 4, outputs, bounds, split,
                          groups, precision);
        free(split);
        return 0;
    }
    if (tier == SMG_RESAMPLE_AVX512_VNNI) {
        ptrdiff_t groups = (ksize + 7) / 8;
        int8_t *digits = malloc((size_t)(outputs * groups * 96));
        if (digits == NULL)
            return -1;
        smg_resample_digits(bounds, weights, outputs, ksize, groups, digits);
        smg_resample_vnni(src, src_stride, height, width, out, outputs * 4, outputs, bounds, digits, groups,
                          precision);
        free(digits);
        return 0;
    }
#endif
    (void)src; (void)src_stride; (void)height; (void)width; (void)out; (void)outputs; (void)bounds;
    (void)weights; (void)ksize; (void)precision;
    return -2;
}

/* The vertical pass of ``tier`` over (height, row_bytes) bytes (rows ``src_stride`` apart) into
 * ``outputs`` rows of ``row_bytes``: output row i is the window of ``bounds[i] = (first, count)``
 * rows weighted by ``weights[i, :count]``. Only the AVX512-VNNI tier has one (the AVX2 madd pairs
 * gained too little over the Numba pass to carry). Returns as smg_resample_horizontal does. */
static int smg_resample_vertical(int tier, const uint8_t *src, ptrdiff_t src_stride, ptrdiff_t row_bytes,
                                 uint8_t *out, ptrdiff_t outputs, const int64_t *bounds,
                                 const int32_t *weights, ptrdiff_t ksize, int precision) {
#if SMG_RESAMPLE_X86
    if (tier == SMG_RESAMPLE_AVX512_VNNI) {
        ptrdiff_t groups = (ksize + 3) / 4;
        int32_t *digits = malloc((size_t)(outputs * groups * 3) * sizeof(int32_t));
        const uint8_t **rows = malloc((size_t)(groups * 4) * sizeof(const uint8_t *));
        if (digits == NULL || rows == NULL) {
            free(digits);
            free(rows);
            return -1;
        }
        smg_resample_row_digits(bounds, weights, outputs, ksize, groups, digits);
        smg_resample_vnni_vertical(src, src_stride, row_bytes, out, outputs, bounds, digits, groups,
                                   precision, rows);
        free(digits);
        free(rows);
        return 0;
    }
#endif
    (void)src; (void)src_stride; (void)row_bytes; (void)out; (void)outputs; (void)bounds;
    (void)weights; (void)ksize; (void)precision;
    return -2;
}

#endif
