"""Twin of the compiled resampling passes (``resample.pyx``): their specification."""
from __future__ import annotations

import numpy as np

from smg.multimodal import kernels_py
from smg.multimodal.kernels_py import FILTER_SUPPORT, resample_coeffs, resample_pass

__all__ = ["SIMD", "TIERS", "VERTICAL_TIERS", "coeffs", "horizontal", "resize", "vertical"]

#: The twin runs anywhere, as NumPy.
TIERS = VERTICAL_TIERS = ("numpy",)
SIMD = "numpy"


def horizontal(src: np.ndarray, bounds: np.ndarray, weights: np.ndarray, precision: int,
               tier: str | None = None) -> np.ndarray:
    """Resample the rows of (H, W, 4) uint8 ``src``: output pixel ``i`` of a row is, per channel,
    ``(2**(precision - 1) + sum(src[row, bounds[i, 0] + k] * weights[i, k] for k < bounds[i, 1]))
    >> precision`` clipped to 0..255 (Pillow's fixed-point convolution; weights from
    ``smg.multimodal.kernels_py.resample_coeffs``); the compiled module's ``tier`` picks one of
    its passes, which all compute this."""
    return resample_pass(src, bounds, weights, precision, axis=1)


def vertical(src: np.ndarray, bounds: np.ndarray, weights: np.ndarray, precision: int,
             tier: str | None = None) -> np.ndarray:
    """:func:`horizontal` down the columns: output row ``i`` is input rows ``bounds[i, 0]`` ... weighted."""
    return resample_pass(src, bounds, weights, precision, axis=0)


def coeffs(in_size: int, out_size: int, filter_id: int, torch_weights: bool = False
           ) -> tuple[np.ndarray, np.ndarray, int]:
    """An ``in_size`` -> ``out_size`` axis's bounds, weights (int32) and precision:
    ``smg.multimodal.kernels_py.resample_coeffs``."""
    if in_size < 1 or out_size < 1:
        raise ValueError(f"an axis of {in_size} -> {out_size} pixels has no coefficients")
    if filter_id not in FILTER_SUPPORT:
        raise ValueError(f"resampling filter {filter_id} is not supported")
    bounds, weights, precision = resample_coeffs(in_size, out_size, filter_id, torch_weights)
    return bounds, weights.astype(np.int32), precision


def resize(src: np.ndarray, out_h: int, out_w: int, top: int, left: int, count_h: int, count_w: int,
           filter_id: int, torch_weights: bool, horizontal_first: bool, tier: str | None = None) -> np.ndarray:
    """Resize (H, W, 4) uint8 ``src`` to ``out_h`` x ``out_w`` with :func:`coeffs`' weights, the
    passes in the order given (each rounds to uint8, so the order shows), and return only the
    ``count_h`` x ``count_w`` window at (``top``, ``left``) of the result:
    ``smg.multimodal.kernels_py.resize`` of four-byte pixels."""
    if src.ndim != 3 or src.shape[2] != 4 or 0 in src.shape:
        raise ValueError("resize takes (H, W, 4) pixels, at least one")
    return np.ascontiguousarray(kernels_py.resize(src, out_h, out_w, filter_id, torch_weights,
                                                  (top, left, count_h, count_w), horizontal_first))
