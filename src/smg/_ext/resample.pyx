# cython: language_level=3
"""Compiled horizontal resampling pass (AVX2, in ``resample_simd.h``); specified by ``resample_py.py``.

smg.multimodal.kernels runs it for Pillow-exact resizes when the CPU has AVX2 (``SIMD``), and its
Numba pass otherwise.
"""
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t
from libc.stdlib cimport free, malloc

import numpy as np

__all__ = ["SIMD", "horizontal"]

cdef extern from "resample_simd.h" nogil:
    int smg_resample_simd_available()
    void smg_resample_split(const int32_t* weights, Py_ssize_t outputs, Py_ssize_t ksize,
                            Py_ssize_t groups, int16_t* split)
    void smg_resample_horizontal(const uint8_t* src, Py_ssize_t src_stride, Py_ssize_t height,
                                 Py_ssize_t width, uint8_t* out, Py_ssize_t out_stride,
                                 Py_ssize_t outputs, const int64_t* bounds, const int16_t* split,
                                 Py_ssize_t groups, int precision)

#: Whether this CPU runs the pass (AVX2 on x86-64).
SIMD = bool(smg_resample_simd_available())


def horizontal(const uint8_t[:, :, ::1] src not None, const int64_t[:, ::1] bounds not None,
               const int32_t[:, ::1] weights not None, int precision):
    """See ``resample_py.horizontal``."""
    cdef Py_ssize_t height = src.shape[0], width = src.shape[1], outputs = bounds.shape[0]
    cdef Py_ssize_t ksize = weights.shape[1], groups = (ksize + 3) // 4, i
    cdef int16_t* split
    if not SIMD:
        raise RuntimeError("this CPU has no AVX2: use smg.multimodal.kernels' Numba pass")
    if src.shape[2] != 4 or bounds.shape[1] != 2 or weights.shape[0] != outputs:
        raise ValueError("horizontal takes (H, W, 4) pixels, (N, 2) bounds and (N, K) weights")
    if width == 0 or ksize == 0:
        raise ValueError("horizontal takes a row of at least one pixel and one tap")
    if not 1 <= precision <= 30:
        raise ValueError(f"precision {precision} is outside 1..30")
    for i in range(outputs):  # every tap read lies inside the row (the kernel reads nothing else)
        if bounds[i, 0] < 0 or bounds[i, 1] < 0 or bounds[i, 1] > ksize or bounds[i, 0] + bounds[i, 1] > width:
            raise ValueError(f"output {i}'s window {tuple(bounds[i])} is outside the row or the weights")
    out = np.empty((height, outputs, 4), np.uint8)
    cdef uint8_t[:, :, ::1] out_view = out
    if height == 0 or outputs == 0:
        return out
    split = <int16_t*>malloc(outputs * groups * 32 * sizeof(int16_t))
    if split == NULL:
        raise MemoryError()
    try:
        with nogil:
            smg_resample_split(&weights[0, 0], outputs, ksize, groups, split)
            smg_resample_horizontal(&src[0, 0, 0], width * 4, height, width, &out_view[0, 0, 0],
                                    outputs * 4, outputs, &bounds[0, 0], split, groups, precision)
    finally:
        free(split)
    return out
