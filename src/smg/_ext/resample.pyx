# cython: language_level=3
"""Compiled horizontal resampling pass (C intrinsics in ``resample_simd.h``); specified by
``resample_py.py``.

smg.multimodal.kernels runs it for Pillow-exact resizes where the CPU has AVX2 (``SIMD`` names the
fastest pass the CPU runs), and its Numba pass elsewhere.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t

import numpy as np

__all__ = ["SIMD", "TIERS", "horizontal"]

cdef extern from "resample_simd.h" nogil:
    int smg_resample_tiers()
    int smg_resample_horizontal(int tier, const uint8_t* src, Py_ssize_t src_stride, Py_ssize_t height,
                                Py_ssize_t width, uint8_t* out, Py_ssize_t outputs, const int64_t* bounds,
                                const int32_t* weights, Py_ssize_t ksize, int precision)

cdef dict _TIER_IDS = {"avx2": 0, "avx512-vnni": 1}
cdef int32_t _MOST = 3 << 21  # the VNNI pass's bound on a weight (Pillow's are at most 1 << 22)
cdef int _present = smg_resample_tiers()

#: The passes this CPU runs, fastest first (empty off x86-64 or without AVX2).
TIERS = tuple(name for name in ("avx512-vnni", "avx2") if _present >> _TIER_IDS[name] & 1)
#: The pass ``horizontal`` runs by default ("" where there is none).
SIMD = TIERS[0] if TIERS else ""


def horizontal(const uint8_t[:, :, ::1] src not None, const int64_t[:, ::1] bounds not None,
               const int32_t[:, ::1] weights not None, int precision, str tier=None):
    """See ``resample_py.horizontal``; ``tier`` picks one of ``TIERS`` (default ``SIMD``)."""
    cdef Py_ssize_t height = src.shape[0], width = src.shape[1], outputs = bounds.shape[0]
    cdef Py_ssize_t ksize = weights.shape[1], i, k
    cdef int tier_id, status
    if tier is None:
        tier = SIMD
    if tier not in TIERS:
        raise RuntimeError(f"this CPU does not run the {tier or 'SIMD'} pass (it runs {TIERS}): "
                           "use smg.multimodal.kernels' Numba pass")
    tier_id = _TIER_IDS[tier]
    if src.shape[2] != 4 or bounds.shape[1] != 2 or weights.shape[0] != outputs:
        raise ValueError("horizontal takes (H, W, 4) pixels, (N, 2) bounds and (N, K) weights")
    if width == 0 or ksize == 0:
        raise ValueError("horizontal takes a row of at least one pixel and one tap")
    if not 1 <= precision <= 30:
        raise ValueError(f"precision {precision} is outside 1..30")
    for i in range(outputs):  # every tap of a window lies inside the row (the passes read nothing else)
        if bounds[i, 0] < 0 or bounds[i, 1] < 0 or bounds[i, 1] > ksize or bounds[i, 0] + bounds[i, 1] > width:
            raise ValueError(f"output {i}'s window {tuple(bounds[i])} is outside the row or the weights")
        for k in range(bounds[i, 1]):
            if not -_MOST <= weights[i, k] <= _MOST:
                raise ValueError(f"weight {weights[i, k]} is beyond +-{_MOST} (1.5 at 22 fraction bits)")
    out = np.empty((height, outputs, 4), np.uint8)
    cdef uint8_t[:, :, ::1] out_view = out
    if height == 0 or outputs == 0:
        return out
    with nogil:
        status = smg_resample_horizontal(tier_id, &src[0, 0, 0], width * 4, height, width, &out_view[0, 0, 0],
                                         outputs, &bounds[0, 0], &weights[0, 0], ksize, precision)
    if status == -1:
        raise MemoryError()
    return out
