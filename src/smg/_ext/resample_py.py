"""Twin of the compiled resampling passes (``resample.pyx``): their specification."""
from __future__ import annotations

import numpy as np

from smg.multimodal.kernels_py import resample_pass

__all__ = ["SIMD", "TIERS", "VERTICAL_TIERS", "horizontal", "vertical"]

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
