"""Numba kernels for image preprocessing (twins: :mod:`smg.multimodal.kernels_py`).

Every kernel is compiled for its one signature when this module is imported (``nogil=True`` so
images of one request run on several threads, ``cache=True`` so a restart loads the machine code
from ``__pycache__`` instead of compiling again); :func:`smg.multimodal.warm_up` imports it at
gateway start, so no request pays for compilation.
"""
from __future__ import annotations


import numba as nb
import numpy as np

from smg._ext import load
from smg.multimodal import kernels_py

_JIT = {"nogil": True, "cache": True}
# Input images are typed read-only and of any layout: a view of Pillow's memory (RGBX rows read
# as RGB) is both; writable and contiguous arrays match too.
_IMAGE = nb.types.Array(nb.uint8, 3, "A", readonly=True)
_U8_3D = nb.uint8[:, :, ::1]
# Four bytes a pixel (RGBA, or RGB the way Pillow stores it: RGBX), contiguous: a pixel is a word.
_PACKED = nb.types.Array(nb.uint8, 3, "C", readonly=True)
_LUT = nb.types.Array(nb.float32, 2, "C", readonly=True)
_resample = load("resample")  # the compiled passes


@nb.njit("uint8(int32, int64)", **_JIT, inline="always")
def _clip8(acc, precision):
    v = acc >> precision
    return 0 if v < 0 else (255 if v > 255 else v)


_ROWS = 16  # rows the horizontal pass handles at once


# the window of outputs' bounds and fixed-point weights (smg._ext.resample.coeffs), their precision
_PASS_ARGS = (nb.types.Array(nb.int64, 2, "C", readonly=True), nb.types.Array(nb.int32, 2, "C", readonly=True),
              nb.int64)


@nb.njit([_U8_3D(_PACKED, *_PASS_ARGS), _U8_3D(_U8_3D, *_PASS_ARGS)], **_JIT)
def _horizontal(src, bounds, weights, precision):
    # A horizontal tap reads pixels a few bytes apart, which does not vectorise. So the pass copies
    # _ROWS rows at a time column-major into a small buffer (x, row * 4 + channel), where each tap is
    # a contiguous run over all those rows and channels, like the vertical pass's; a pixel is four
    # bytes, so the copy moves one 32-bit word a pixel and the results go out a word at a time
    # (1.5-2x the straightforward loop). The sums are the same integers as Pillow's (torch's).
    h, w, _ = src.shape
    count_w = bounds.shape[0]
    words = src.view(np.uint32)  # (H, W, 1)
    half = np.int32(1 << (precision - 1))
    out = np.empty((h, count_w, 4), np.uint8)
    out_words = out.view(np.uint32)
    columns = np.empty((w, _ROWS), np.uint32)
    column_bytes = columns.view(np.uint8)  # (W, _ROWS * 4)
    acc = np.empty(_ROWS * 4, np.int32)
    for y0 in range(0, h, _ROWS):
        rows = min(_ROWS, h - y0)
        lanes = rows * 4
        for x in range(w):  # (written in order, read a few streams at a time: 2.5x the other order)
            for r in range(rows):
                columns[x, r] = words[y0 + r, x, 0]
        for xx in range(count_w):
            xmin, count = bounds[xx, 0], bounds[xx, 1]
            acc[:lanes] = half
            for tap in range(count):
                k = weights[xx, tap]
                column = column_bytes[xmin + tap]
                for i in range(lanes):
                    acc[i] += np.int32(column[i]) * k
            for r in range(rows):
                i = r * 4
                out_words[y0 + r, xx, 0] = (np.uint32(_clip8(acc[i], precision))
                                            | np.uint32(_clip8(acc[i + 1], precision)) << 8
                                            | np.uint32(_clip8(acc[i + 2], precision)) << 16
                                            | np.uint32(_clip8(acc[i + 3], precision)) << 24)
    return out


@nb.njit([_U8_3D(_PACKED, *_PASS_ARGS), _U8_3D(_U8_3D, *_PASS_ARGS)], **_JIT)
def _vertical(src, bounds, weights, precision):
    h, w, channels = src.shape
    count_h = bounds.shape[0]
    half = np.int32(1 << (precision - 1))
    out = np.empty((count_h, w, channels), np.uint8)
    acc = np.empty(w * channels, np.int32)
    for yy in range(count_h):
        ymin, count = bounds[yy, 0], bounds[yy, 1]
        acc[:] = half
        # Row by row, so the inner loop runs along contiguous memory (and vectorises).
        for y in range(count):
            k = np.int32(weights[yy, y])
            row = src[ymin + y].ravel()
            for i in range(w * channels):
                acc[i] += np.int32(row[i]) * k
        flat = out[yy].ravel()
        for i in range(w * channels):
            flat[i] = _clip8(acc[i], precision)
    return out


def _pass(src, axis, out_size, first, count, filter_id, torch_weights):
    """The resize's pass along ``axis`` (1: across the rows, 0: down the columns), outputs
    ``first`` .. ``first + count`` of ``out_size``, where the CPU has no compiled whole resize: the
    compiled pass (smg._ext.resample; across 4000 -> 1148 columns, AVX2 2.5x this module's) where
    the CPU runs one for that axis, this module's Numba one elsewhere; the same integers either way.
    The coefficients are the compiled module's either way (one implementation beside the twin's)."""
    bounds, weights, precision = _resample.coeffs(src.shape[axis], out_size, filter_id, torch_weights)
    if _resample.SIMD if axis == 1 else _resample.VERTICAL_TIERS:
        run = _resample.horizontal if axis == 1 else _resample.vertical
    else:
        run = _horizontal if axis == 1 else _vertical
    return run(src, bounds[first:first + count], weights[first:first + count], precision)


def _resize_packed(image, out_h, out_w, top, left, count_h, count_w, filter_id, torch_weights):
    """``resize`` of four-byte pixels (the window's rows and columns only), in Pillow's pass order
    (torch's: always across first): in one compiled call where the CPU runs both compiled passes
    (the GIL taken back once, not after each of four steps: two threads resizing short images
    each wait for it less), else pass by pass."""
    h, w = image.shape[0], image.shape[1]
    horizontal_first = torch_weights or kernels_py.horizontal_first(h, w, out_h, out_w)
    if _resample.VERTICAL_TIERS:
        return _resample.resize(image, out_h, out_w, top, left, count_h, count_w, filter_id, torch_weights,
                                horizontal_first)
    axes = ((1, w, out_w, left, count_w), (0, h, out_h, top, count_h))
    if not horizontal_first:
        axes = axes[::-1]
    out = image
    for axis, size, out_size, first, count in axes:
        if out_size != size:
            out = _pass(out, axis, out_size, first, count, filter_id, torch_weights)
        else:  # (the window alone, contiguous for the next pass)
            out = np.ascontiguousarray(out[:, first:first + count] if axis == 1 else out[first:first + count])
    return out


def resize(image: np.ndarray, out_h: int, out_w: int, filter_id: int, torch_weights: bool = False,
           window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Resize an (H, W, C) uint8 image as Pillow's ``Image.resize`` does, bit for bit, or with
    ``torch_weights`` as torch's uint8 antialiased resize (see the twin); ``window`` (top, left,
    height, width) computes only that part of the result. The passes work on four-byte pixels, as
    Pillow's do: RGBA as it is, RGB inside four-byte rows (a Pillow image's memory, see
    smg.multimodal.pixels) in place, other layouts through a padded copy; the extra bytes are
    resampled along and dropped by the returned view. An image already of the size, and no window,
    is returned itself."""
    h, w, channels = image.shape
    top, left, count_h, count_w = kernels_py.resize_window(window, out_h, out_w)
    if (h, w) == (out_h, out_w) and (count_h, count_w) == (h, w):
        return image
    if channels == 4 and image.flags.c_contiguous:
        packed = image
    elif channels == 3 and image.strides == (4 * w, 4, 1):
        packed = np.lib.stride_tricks.as_strided(image, shape=(h, w, 4), strides=(4 * w, 4, 1))
    elif channels <= 4:
        packed = np.zeros((h, w, 4), np.uint8)
        packed[:, :, :channels] = image
    else:
        raise ValueError(f"images of {channels} channels are not supported")
    out = _resize_packed(packed, out_h, out_w, top, left, count_h, count_w, filter_id, torch_weights)
    return out if channels == 4 else out[:, :, :channels]


@nb.njit(nb.float32[:, :, :](_IMAGE, _LUT, nb.int64, nb.float32[:, :, :]), **_JIT)
def normalize_into(image, lut, fill, out):
    """``normalize_chw`` written into ``out`` (C, height, width): a view of a caller's batch, say."""
    h, w, channels = image.shape
    _, height, width = out.shape
    for c in range(channels):
        pad = lut[c, fill]
        for y in range(height):
            for x in range(width):
                out[c, y, x] = lut[c, image[y, x, c]] if y < h and x < w else pad
    return out


def normalize_chw(image, lut, height, width, fill):
    """(H, W, C) uint8 -> (C, height, width) float32 through ``lut[c, value]`` (rescale and
    normalise fused), the canvas beyond the image the byte ``fill``. (Allocated by NumPy, which
    asks for huge pages on a large array: its first touch is cheaper.)"""
    return normalize_into(image, lut, fill, np.empty((image.shape[2], height, width), np.float32))


@nb.njit("Tuple((int64[:, ::1], float32[:, ::1]))(int64, int64)", **_JIT)
def _cubic_taps(in_size, out_size):
    # float32 throughout, as torch computes the taps of a float32 image (see the twin)
    f32 = np.float32
    a = f32(-0.75)
    index = np.empty((out_size, 4), np.int64)
    weight = np.empty((out_size, 4), np.float32)
    scale = f32(in_size) / f32(out_size)
    for o in range(out_size):
        real = scale * (f32(o) + f32(0.5)) - f32(0.5)
        first = np.floor(real)
        t = real - first
        u = f32(1) - t
        weight[o, 1] = ((a + f32(2)) * t - (a + f32(3))) * t * t + f32(1)
        weight[o, 2] = ((a + f32(2)) * u - (a + f32(3))) * u * u + f32(1)
        for k, x in ((0, t + f32(1)), (3, u + f32(1))):
            weight[o, k] = ((a * x - f32(5) * a) * x + f32(8) * a) * x - f32(4) * a
        for k in range(4):
            index[o, k] = min(max(int(first) - 1 + k, 0), in_size - 1)
    return index, weight


@nb.njit(nb.float32[:, :, ::1](_IMAGE, _LUT, nb.int64, nb.int64, nb.int64, nb.int64, nb.int64), **_JIT)
def bicubic_canvas(image, lut, height, width, fill, out_h, out_w):
    """torch's bicubic resize of the canvas ``normalize_chw`` makes (see the twin), its values read
    from the uint8 image through ``lut`` as the horizontal pass needs them: the canvas itself
    (C x height x width float32: 36 MB for a 1920x1080 photo's Phi-4 canvas) is never made."""
    h, w, channels = image.shape
    cols, col_weight = _cubic_taps(width, out_w)
    rows, row_weight = _cubic_taps(height, out_h)
    # float32 sums in torch's order (along a row, then across the four rows): within ~1e-7 of it
    wide = np.empty((channels, height, out_w), np.float32)
    line = np.empty((channels, width), np.float32)  # one canvas row at a time (in cache)
    for y in range(height):
        if y <= h:  # (from row h on, every row is the fill: made once)
            for c in range(channels):
                pad = lut[c, fill]
                for x in range(width):
                    line[c, x] = lut[c, image[y, x, c]] if y < h and x < w else pad
        for c in range(channels):
            source = line[c]
            for o in range(out_w):
                acc = source[cols[o, 0]] * col_weight[o, 0]
                for k in range(1, 4):
                    acc += source[cols[o, k]] * col_weight[o, k]
                wide[c, y, o] = acc
    out = np.empty((channels, out_h, out_w), np.float32)
    for c in range(channels):
        for o in range(out_h):
            line = out[c, o]
            first = wide[c, rows[o, 0]]
            for x in range(out_w):
                line[x] = first[x] * row_weight[o, 0]
            for k in range(1, 4):
                source, weight = wide[c, rows[o, k]], row_weight[o, k]
                for x in range(out_w):
                    line[x] += source[x] * weight
    return out


@nb.njit(nb.float32[:, :, :, ::1](_IMAGE, _LUT, nb.int64, nb.int64, nb.int64, nb.int64, nb.int64, nb.int64,
                                   nb.float32[:, :, :, ::1]), **_JIT)
def normalize_tiles(image, lut, tile, rows, cols, top, left, fill, out):
    """Tiles of the padded canvas (see the twin), written straight from the uint8 image."""
    if top < 0 or left < 0:
        raise ValueError("the image's place on the canvas is negative")
    h, w, channels = image.shape
    for r in range(rows):
        for c in range(cols):
            t = r * cols + c
            x0 = c * tile - left  # the image column under the tile's first one
            inside_from = min(max(-x0, 0), tile)
            inside_to = max(min(w - x0, tile), inside_from)
            for ch in range(channels):
                pad = lut[ch, fill]
                for y in range(tile):
                    line = out[t, ch, y]
                    iy = r * tile + y - top
                    if iy < 0 or iy >= h:
                        line[:] = pad
                        continue
                    line[:inside_from] = pad
                    source = image[iy]
                    for x in range(inside_from, inside_to):
                        line[x] = lut[ch, source[x0 + x, ch]]
                    line[inside_to:] = pad
    return out


@nb.njit(nb.float32[:, ::1](_IMAGE, _LUT, nb.int64, nb.int64, nb.int64, nb.float32[:, ::1]), **_JIT)
def flatten_patches(image, lut, patch, merge, temporal, out):
    """Qwen-VL's patch rows (see the twin), written straight from the uint8 image into ``out``."""
    h, w, channels = image.shape
    gh, gw = h // patch, w // patch
    area = patch * patch
    row = 0
    for bh in range(gh // merge):
        for bw in range(gw // merge):
            for mh in range(merge):
                for mw in range(merge):
                    y0 = (bh * merge + mh) * patch
                    x0 = (bw * merge + mw) * patch
                    for c in range(channels):
                        base = c * temporal * area
                        for py in range(patch):
                            for px in range(patch):
                                out[row, base + py * patch + px] = lut[c, image[y0 + py, x0 + px, c]]
                        for t in range(1, temporal):
                            out[row, base + t * area:base + (t + 1) * area] = out[row, base:base + area]
                    row += 1
    return out
