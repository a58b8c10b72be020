"""Types of the compiled horizontal resampling pass (``resample.pyx``; twin ``resample_py``)."""
import numpy as np

TIERS: tuple[str, ...]
SIMD: str

def horizontal(src: np.ndarray, bounds: np.ndarray, weights: np.ndarray, precision: int,
               tier: str | None = None) -> np.ndarray: ...
