"""Types of the compiled resampling passes (``resample.pyx``; twin ``resample_py``)."""
import numpy as np

TIERS: tuple[str, ...]
SIMD: str
VERTICAL_TIERS: tuple[str, ...]

def horizontal(src: np.ndarray, bounds: np.ndarray, weights: np.ndarray, precision: int,
               tier: str | None = None) -> np.ndarray: ...
def vertical(src: np.ndarray, bounds: np.ndarray, weights: np.ndarray, precision: int,
             tier: str | None = None) -> np.ndarray: ...
