# cython: language_level=3
"""Compiled resampling passes (C intrinsics in ``resample_simd.h``) and a whole resize in one
call (``resample_resize.h``); specified by ``resample_py.py``.

smg.multimodal.kernels runs them for Pillow-exact resizes: ``resize`` where the CPU has both
passes (AVX512-VNNI: ``VERTICAL_TIERS``), the horizontal pass alone where it has AVX2 (``SIMD``
names the fastest the CPU runs), and its Numba passes elsewhere.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t

import numpy as np

__all__ = ["SIMD", "TIERS", "VERTICAL_TIERS", "coeffs", "horizontal", "resize", "vertical"]

cdef extern from "resample_simd.h" nogil:
    int smg_resample_tiers()
    int smg_resample_horizontal(int tier, const uint8_t* src, Py_ssize_t src_stride, Py_ssize_t height,
                                Py_ssize_t width, uint8_t* out, Py_ssize_t outputs, const int64_t* bounds,
                                const int32_t* weights, Py_ssize_t ksize, int precision)
    int smg_resample_vertical(int tier, const uint8_t* src, Py_ssize_t src_stride, Py_ssize_t row_bytes,
                              uint8_t* out, Py_ssize_t outputs, const int64_t* bounds,
                              const int32_t* weights, Py_ssize_t ksize, int precision)

cdef extern from "resample_resize.h" nogil:
    Py_ssize_t smg_resample_ksize(Py_ssize_t in_size, Py_ssize_t out_size, int filter_id)
    double smg_filter_support(int filter_id)
    int smg_resample_coeffs(Py_ssize_t in_size, Py_ssize_t out_size, int filter_id, int torch_weights,
                            Py_ssize_t first, Py_ssize_t count, int64_t* bounds, int32_t* weights, int* precision)
    int smg_resample_resize(int tier, const uint8_t* src, Py_ssize_t src_stride, Py_ssize_t height,
                            Py_ssize_t width, uint8_t* out, Py_ssize_t out_h, Py_ssize_t out_w, Py_ssize_t top,
                            Py_ssize_t left, Py_ssize_t count_h, Py_ssize_t count_w, int filter_id,
                            int torch_weights, int horizontal_first)

cdef dict _TIER_IDS = {"avx2": 0, "avx512-vnni": 1}
cdef int32_t _MOST = 3 << 21  # the VNNI pass's bound on a weight (Pillow's are at most 1 << 22)
cdef int _present = smg_resample_tiers()

#: The passes this CPU runs, fastest first (empty off x86-64 or without AVX2).
TIERS = tuple(name for name in ("avx512-vnni", "avx2") if _present >> _TIER_IDS[name] & 1)
#: The pass ``horizontal`` runs by default ("" where there is none).
SIMD = TIERS[0] if TIERS else ""
#: Those of ``TIERS`` with a vertical pass too (``vertical`` runs the first by default).
VERTICAL_TIERS = tuple(name for name in TIERS if name == "avx512-vnni")
_VERTICAL = VERTICAL_TIERS[0] if VERTICAL_TIERS else ""  # (vertical's and resize's default tier)


cdef int _tier_id(str tier, tuple tiers) except -1:
    if tier not in tiers:
        raise RuntimeError(f"this CPU does not run the {tier or 'SIMD'} pass (it runs {tiers}): "
                           "use smg.multimodal.kernels' Numba pass")
    return _TIER_IDS[tier]


cdef int _check(const int64_t[:, ::1] bounds, const int32_t[:, ::1] weights, Py_ssize_t size,
                int precision) except -1:
    """Every window inside the ``size`` pixels (rows) and the weights, every weight in bounds."""
    cdef Py_ssize_t outputs = bounds.shape[0], ksize = weights.shape[1], i, k
    if bounds.shape[1] != 2 or weights.shape[0] != outputs:
        raise ValueError("the pass takes (N, 2) bounds and (N, K) weights")
    if size == 0 or ksize == 0:
        raise ValueError("the pass takes at least one pixel (row) and one tap")
    if not 1 <= precision <= 30:
        raise ValueError(f"precision {precision} is outside 1..30")
    for i in range(outputs):  # every tap of a window lies inside the image (the passes read nothing else)
        if bounds[i, 0] < 0 or bounds[i, 1] < 0 or bounds[i, 1] > ksize or bounds[i, 0] + bounds[i, 1] > size:
            raise ValueError(f"output {i}'s window {tuple(bounds[i])} is outside the image or the weights")
        for k in range(bounds[i, 1]):
            if not -_MOST <= weights[i, k] <= _MOST:
                raise ValueError(f"weight {weights[i, k]} is beyond +-{_MOST} (1.5 at 22 fraction bits)")
    return 0


def horizontal(const uint8_t[:, :, ::1] src not None, const int64_t[:, ::1] bounds not None,
               const int32_t[:, ::1] weights not None, int precision, str tier=None):
    """See ``resample_py.horizontal``; ``tier`` picks one of ``TIERS`` (default ``SIMD``)."""
    return _run(True, src, bounds, weights, precision, SIMD if tier is None else tier, TIERS)


def vertical(const uint8_t[:, :, ::1] src not None, const int64_t[:, ::1] bounds not None,
             const int32_t[:, ::1] weights not None, int precision, str tier=None):
    """See ``resample_py.vertical``; ``tier`` picks one of ``VERTICAL_TIERS`` (default the first)."""
    return _run(False, src, bounds, weights, precision, _VERTICAL if tier is None else tier, VERTICAL_TIERS)


def coeffs(Py_ssize_t in_size, Py_ssize_t out_size, int filter_id, bint torch_weights=False):
    """See ``resample_py.coeffs``."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"an axis of {in_size} -> {out_size} pixels has no coefficients")
    _filter_supported(filter_id)
    bounds = np.empty((out_size, 2), np.int64)
    weights = np.empty((out_size, smg_resample_ksize(in_size, out_size, filter_id)), np.int32)
    cdef int64_t[:, ::1] bounds_view = bounds
    cdef int32_t[:, ::1] weights_view = weights
    cdef int precision = 0, status
    with nogil:
        status = smg_resample_coeffs(in_size, out_size, filter_id, torch_weights, 0, out_size,
                                     &bounds_view[0, 0], &weights_view[0, 0], &precision)
    if status == -1:
        raise MemoryError()
    return bounds, weights, precision


def resize(const uint8_t[:, :, ::1] src not None, Py_ssize_t out_h, Py_ssize_t out_w, Py_ssize_t top,
           Py_ssize_t left, Py_ssize_t count_h, Py_ssize_t count_w, int filter_id, bint torch_weights,
           bint horizontal_first, str tier=None):
    """See ``resample_py.resize``; ``tier`` picks one of ``VERTICAL_TIERS`` (default the first).
    The GIL is released once, for the whole resize."""
    cdef int tier_id = _tier_id(_VERTICAL if tier is None else tier, VERTICAL_TIERS), status
    cdef Py_ssize_t height = src.shape[0], width = src.shape[1]
    if src.shape[2] != 4 or height == 0 or width == 0:
        raise ValueError("resize takes (H, W, 4) pixels, at least one")
    if not (out_h > 0 and out_w > 0 and 0 <= top and 0 <= left and 0 < count_h and 0 < count_w
            and top + count_h <= out_h and left + count_w <= out_w):
        raise ValueError(f"window {(top, left, count_h, count_w)} is not inside the {out_w}x{out_h} result")
    _filter_supported(filter_id)
    out = np.empty((count_h, count_w, 4), np.uint8)
    cdef uint8_t[:, :, ::1] out_view = out
    with nogil:
        status = smg_resample_resize(tier_id, &src[0, 0, 0], width * 4, height, width, &out_view[0, 0, 0],
                                     out_h, out_w, top, left, count_h, count_w, filter_id, torch_weights,
                                     horizontal_first)
    if status == -1:
        raise MemoryError()
    return out


cdef int _filter_supported(int filter_id) except -1:
    if smg_filter_support(filter_id) == 0.0:
        raise ValueError(f"resampling filter {filter_id} is not supported")
    return 0


cdef object _run(bint across, const uint8_t[:, :, ::1] src, const int64_t[:, ::1] bounds,
                 const int32_t[:, ::1] weights, int precision, str tier, tuple tiers):
    """One pass, ``across`` the rows (horizontal) or down the columns."""
    cdef Py_ssize_t height = src.shape[0], width = src.shape[1], outputs = bounds.shape[0]
    cdef int tier_id = _tier_id(tier, tiers), status
    if src.shape[2] != 4:
        raise ValueError("the pass takes (H, W, 4) pixels")
    _check(bounds, weights, width if across else height, precision)
    out = np.empty((height, outputs, 4) if across else (outputs, width, 4), np.uint8)
    cdef uint8_t[:, :, ::1] out_view = out
    if out.size == 0:
        return out
    with nogil:
        if across:
            status = smg_resample_horizontal(tier_id, &src[0, 0, 0], width * 4, height, width, &out_view[0, 0, 0],
                                             outputs, &bounds[0, 0], &weights[0, 0], weights.shape[1], precision)
        else:
            status = smg_resample_vertical(tier_id, &src[0, 0, 0], width * 4, width * 4, &out_view[0, 0, 0],
                                           outputs, &bounds[0, 0], &weights[0, 0], weights.shape[1], precision)
    if status == -1:
        raise MemoryError()
    return out
