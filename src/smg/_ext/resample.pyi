"""Types of the compiled resampling passes and whole resize (``resample.pyx``; twin ``resample_py``)."""
import numpy as np

TIERS: tuple[str, ...]
SIMD: str
VERTICAL_TIERS: tuple[str, ...]

def horizontal(src: np.ndarray, bounds: np.ndarray, weights: np.ndarray, precision: int,
               tier: str | None = None) -> np.ndarray: ...
def vertical(src: np.ndarray, bounds: np.ndarray, weights: np.ndarray, precision: int,
             tier: str | None = None) -> np.ndarray: ...
def coeffs(in_size: int, out_size: int, filter_id: int,
           torch_weights: bool = False) -> tuple[np.ndarray, np.ndarray, int]: ...
def resize(src: np.ndarray, out_h: int, out_w: int, top: int, left: int, count_h: int, count_w: int,
           filter_id: int, torch_weights: bool, horizontal_first: bool, tier: str | None = None) -> np.ndarray: ...
