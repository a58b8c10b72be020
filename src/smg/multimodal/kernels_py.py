"""Plain NumPy twins of the image kernels in :mod:`smg.multimodal.kernels` (their specification).

The resampling reproduces Pillow's ``Image.resize`` for 8-bit images bit for bit, because that is
what transformers' PIL backend runs: per output pixel a window of input pixels weighted by the
filter (stretched by the scale factor when shrinking, which is the antialiasing), weights normalised
to sum 1 and rounded to 22-bit fixed point, a horizontal pass then a vertical pass, each rounded and
clipped to uint8.
"""
from __future__ import annotations

import math

import numpy as np

#: Pillow's resampling filter ids (``PIL.Image.Resampling``) and their supports.
NEAREST, LANCZOS, BILINEAR, BICUBIC, BOX, HAMMING = 0, 1, 2, 3, 4, 5
FILTER_SUPPORT = {BOX: 0.5, BILINEAR: 1.0, HAMMING: 1.0, BICUBIC: 2.0, LANCZOS: 3.0}
PRECISION_BITS = 32 - 8 - 2
#: Pillow writes Hamming's constants as C floats (0.54f, 0.46f): these are those floats as doubles.
HAMMING_A, HAMMING_B = float(np.float32(0.54)), float(np.float32(0.46))


def filter_weight(filter_id: int, x: float) -> float:
    """The filter's value at ``x`` (same operation order as Pillow, so the doubles agree). Plain
    enough for Numba: the kernels compile this very function."""
    if filter_id == BOX:
        return 1.0 if -0.5 < x <= 0.5 else 0.0
    if x < 0.0 and filter_id != LANCZOS:
        x = -x
    if filter_id == BILINEAR:
        return 1.0 - x if x < 1.0 else 0.0
    if filter_id == BICUBIC:
        a = -0.5
        if x < 1.0:
            return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
        if x < 2.0:
            return (((x - 5) * x + 8) * x - 4) * a
        return 0.0
    if filter_id == HAMMING:
        if x == 0.0:
            return 1.0
        if x >= 1.0:
            return 0.0
        x = x * math.pi
        return math.sin(x) / x * (HAMMING_A + HAMMING_B * math.cos(x))
    if filter_id == LANCZOS:
        if not -3.0 <= x < 3.0:
            return 0.0
        weight = 1.0
        for t in (x, x / 3.0):  # sinc(x) * sinc(x / 3)
            if t != 0.0:
                t *= math.pi
                weight *= math.sin(t) / t
        return weight
    raise ValueError("unknown resampling filter")


def torch_precision(largest_weight: float) -> int:
    """The fixed-point bits torch's uint8 antialiased resize gives an axis's weights: as many as
    keep the largest weight within int16."""
    bits = 0
    while bits < PRECISION_BITS and int(0.5 + largest_weight * (1 << (bits + 1))) < (1 << 15):
        bits += 1
    return bits


def resample_coeffs(in_size: int, out_size: int, filter_id: int,
                    torch_weights: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """Per output index: ``bounds[i] = (first input index, count)``, fixed-point weights
    ``weights[i, :count]`` (int64) and their fraction bits: Pillow's 22, or with
    ``torch_weights`` torch's int16 precision (the rest of the arithmetic is the same)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = FILTER_SUPPORT[filter_id] * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    bounds = np.zeros((out_size, 2), np.int64)
    normalised = np.zeros((out_size, ksize))
    ss = 1.0 / filterscale
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [filter_weight(filter_id, (x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = sum(k)
        normalised[xx, :xmax] = [w / ww if ww != 0.0 else w for w in k]
        bounds[xx] = xmin, xmax
    precision = torch_precision(normalised.max()) if torch_weights else PRECISION_BITS
    # C's (int) cast truncates: round half away from zero
    weights = np.trunc(normalised * (1 << precision) + np.where(normalised < 0, -0.5, 0.5)).astype(np.int64)
    return bounds, weights, precision


def resample_pass(image: np.ndarray, bounds: np.ndarray, weights: np.ndarray, precision: int, axis: int) -> np.ndarray:
    """One separable pass along ``axis`` (0: rows, 1: columns) of an (H, W, C) uint8 image."""
    source = image.astype(np.int64)
    shape = list(image.shape)
    shape[axis] = len(bounds)
    acc = np.full(shape, 1 << (precision - 1), np.int64)
    for tap in range(weights.shape[1]):
        index = np.minimum(bounds[:, 0] + tap, image.shape[axis] - 1)
        taps = np.where(tap < bounds[:, 1], weights[:, tap], 0)
        taps = taps[:, None, None] if axis == 0 else taps[None, :, None]
        acc += np.take(source, index, axis=axis) * taps
    return np.clip(acc >> precision, 0, 255).astype(np.uint8)


def horizontal_first(h: int, w: int, out_h: int, out_w: int) -> bool:
    """Pillow (13+) runs the vertical pass first when the height shrinks by more than twice as
    many pixels as the width does; the passes round in between, so the order shows in the result."""
    return not (h - out_h > 0 and h - out_h > (w - out_w) * 2)


def resize_window(window: tuple[int, int, int, int] | None, out_h: int, out_w: int) -> tuple[int, int, int, int]:
    """``resize``'s window (top, left, height, width), the whole result when None; refused
    unless it lies inside the ``out_w`` x ``out_h`` result."""
    top, left, count_h, count_w = window if window is not None else (0, 0, out_h, out_w)
    if not (0 <= top and 0 <= left and 0 < count_h and 0 < count_w and top + count_h <= out_h
            and left + count_w <= out_w):
        raise ValueError(f"window {window} is not inside the {out_w}x{out_h} result")
    return top, left, count_h, count_w


def resize(image: np.ndarray, out_h: int, out_w: int, filter_id: int, torch_weights: bool = False,
           window: tuple[int, int, int, int] | None = None, across_first: bool | None = None) -> np.ndarray:
    """Resize an (H, W, C) uint8 image as Pillow's ``Image.resize`` does, or with ``torch_weights``
    as torch's uint8 antialiased ``interpolate`` (torchvision's ``resize`` of uint8 images) does:
    int16 weights, and always the horizontal pass first. ``window`` (top, left, height, width):
    only that part of the result, each output pixel computed as in the whole (its weights are its
    own). ``across_first`` overrides that pass order. An image already of the size, and no window,
    is returned itself."""
    if filter_id not in FILTER_SUPPORT:
        raise ValueError(f"resampling filter {filter_id} is not supported")
    h, w = image.shape[:2]
    top, left, count_h, count_w = resize_window(window, out_h, out_w)
    out = image
    passes = [(1, w, out_w, left, count_w), (0, h, out_h, top, count_h)]
    if across_first is None:
        across_first = torch_weights or horizontal_first(h, w, out_h, out_w)
    if not across_first:
        passes.reverse()
    for axis, size, out_size, first, count in passes:
        part = slice(first, first + count)
        if out_size != size:
            bounds, weights, precision = resample_coeffs(size, out_size, filter_id, torch_weights)
            out = resample_pass(out, bounds[part], weights[part], precision, axis=axis)
        elif count != size:
            out = out[part] if axis == 0 else out[:, part]
    return np.ascontiguousarray(out) if out is not image else image


def normalize_chw(image: np.ndarray, lut: np.ndarray, height: int, width: int, fill: int) -> np.ndarray:
    """(H, W, C) uint8 -> (C, height, width) float32 through a per-channel table ``lut[c, value]``;
    the canvas beyond the image (at the right and bottom) is the byte ``fill``."""
    h, w, channels = image.shape
    canvas = np.full((height, width, channels), fill, np.uint8)
    canvas[:h, :w] = image
    return np.stack([lut[c][canvas[:, :, c]] for c in range(channels)])


def normalize_into(image: np.ndarray, lut: np.ndarray, fill: int, out: np.ndarray) -> np.ndarray:
    """:func:`normalize_chw` written into ``out`` (C, height, width), and returned."""
    out[...] = normalize_chw(image, lut, out.shape[1], out.shape[2], fill)
    return out


def _cubic_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's bicubic (A = -0.75, half-pixel centres, no antialiasing) along one axis: per output
    index its four source indices (clamped to the edge) and weights, computed in float32 as torch
    computes them for a float32 image (in float64 an upscale can be 3e-4 off)."""
    f32 = np.float32
    a = f32(-0.75)
    real = (f32(in_size) / f32(out_size)) * (np.arange(out_size, dtype=f32) + f32(0.5)) - f32(0.5)
    first = np.floor(real)
    t = real - first
    near = lambda x: ((a + f32(2)) * x - (a + f32(3))) * x * x + f32(1)  # noqa: E731  |x| <= 1
    far = lambda x: ((a * x - f32(5) * a) * x + f32(8) * a) * x - f32(4) * a  # noqa: E731  1 < |x| < 2
    weights = np.stack([far(t + f32(1)), near(t), near(f32(1) - t), far(f32(1) - t + f32(1))], axis=1)
    index = np.clip(first.astype(np.int64)[:, None] + np.arange(-1, 3), 0, in_size - 1)
    return index, weights


def bicubic_chw(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """A (C, H, W) float32 image resized as torch's ``interpolate(mode="bicubic",
    align_corners=False, antialias=False)`` does: float32 weights and sums in its order (along the
    rows, then across them); within ~1e-7 of it (its compiler may fuse multiply-adds)."""
    rows, row_weights = _cubic_taps(image.shape[1], out_h)
    cols, col_weights = _cubic_taps(image.shape[2], out_w)
    wide = image[:, :, cols[:, 0]] * col_weights[:, 0]  # float32, tap by tap as torch sums
    for k in range(1, 4):
        wide += image[:, :, cols[:, k]] * col_weights[:, k]
    out = wide[:, rows[:, 0]] * row_weights[:, 0, None]
    for k in range(1, 4):
        out += wide[:, rows[:, k]] * row_weights[:, k, None]
    return out


def bicubic_canvas(image: np.ndarray, lut: np.ndarray, height: int, width: int, fill: int, out_h: int,
                   out_w: int) -> np.ndarray:
    """The canvas of ``normalize_chw(image, lut, height, width, fill)`` resized to ``out_h`` x
    ``out_w`` by :func:`bicubic_chw` (Phi-4's global view)."""
    return bicubic_chw(normalize_chw(image, lut, height, width, fill), out_h, out_w)


def normalize_tiles(image: np.ndarray, lut: np.ndarray, tile: int, rows: int, cols: int, top: int, left: int,
                    fill: int, out: np.ndarray) -> np.ndarray:
    """The (H, W, C) uint8 image placed at (``top``, ``left``) on a ``rows`` x ``cols`` canvas of
    ``tile``-pixel tiles (the byte ``fill`` around it; what falls past the canvas is left out),
    normalised through ``lut`` and cut into tiles row by row: written into ``out`` (``rows * cols``
    tiles of (C, tile, tile)) and returned."""
    if top < 0 or left < 0:
        raise ValueError("the image's place on the canvas is negative")
    c = image.shape[2]
    height, width = rows * tile, cols * tile
    canvas = np.full((height, width, c), fill, np.uint8)
    part = image[:max(0, height - top), :max(0, width - left)]
    canvas[top:top + part.shape[0], left:left + part.shape[1]] = part
    chw = normalize_chw(canvas, lut, height, width, fill)
    out[...] = chw.reshape(c, rows, tile, cols, tile).transpose(1, 3, 0, 2, 4).reshape(rows * cols, c, tile, tile)
    return out


def flatten_patches(image: np.ndarray, lut: np.ndarray, patch: int, merge: int, temporal: int,
                    out: np.ndarray) -> np.ndarray:
    """Qwen-VL's patch rows from one (H, W, C) uint8 image, normalised through ``lut``, written into
    ``out`` (``(H / patch) * (W / patch)`` rows, of a caller's batch maybe) and returned: rows in
    merge-block order, each ``C * temporal * patch * patch`` values (the frame repeated ``temporal``
    times, as the processor pads a single image)."""
    h, w, c = image.shape
    gh, gw = h // patch, w // patch
    chw = normalize_chw(image, lut, h, w, 0)  # (C, H, W)
    frames = np.broadcast_to(chw[None], (temporal, c, h, w))
    blocks = frames.reshape(temporal, c, gh // merge, merge, patch, gw // merge, merge, patch)
    blocks = blocks.transpose(2, 5, 3, 6, 1, 0, 4, 7)
    out[...] = blocks.reshape(gh * gw, c * temporal * patch * patch)
    return out
