"""Frozen configuration records."""
from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class CacheConfig:
    """Bounds of the tokenizer's two caches.

    Attributes:
        l0_max_bytes: memory for exact-match entries (whole input -> ids); 0 disables L0.
        l1_max_bytes: memory for prefix entries cut at special tokens; 0 disables L1.
    """

    l0_max_bytes: int = 64 * MiB
    l1_max_bytes: int = 128 * MiB

    def __post_init__(self) -> None:
        for name in ("l0_max_bytes", "l1_max_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"CacheConfig.{name} must be a non-negative int, got {value!r}")
