"""Types of the compiled horizontal resampling pass (``resample.pyx``; twin ``resample_py``)."""
import numpy as np

SIMD: bool

def horizontal(src: np.ndarray, bounds: np.ndarray, weights: np.ndarray, precision: int) -> np.ndarray: ...
