"""A consistent-hash ring over worker URLs (``prefix_hash``, ``consistent_hashing``).

Each worker stands at ``virtual_nodes`` points of a 64-bit ring (BLAKE2b of ``url#i``, so every
gateway process builds the same ring); a key goes to the first point at or after its hash. When
one of N workers leaves, only the keys on its points move (about 1/N of them), to the next points.
"""
from __future__ import annotations

import bisect
import hashlib
from typing import Sequence

from smg.policies.base import W, WorkerIndex


def hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def prefix_key(token_ids: Sequence[int], count: int) -> bytes:
    """The key of a prompt's first ``count`` ids (what ``prefix_hash`` hashes): a tuple of ints
    hashes the same in every process (only str and bytes hashes are salted), and fast."""
    return hash(tuple(token_ids[:count])).to_bytes(8, "big", signed=True)


class HashRing:
    """Rebuilt only when the set of workers it is asked about changes."""

    def __init__(self, virtual_nodes: int) -> None:
        self.virtual_nodes = virtual_nodes
        self._index = WorkerIndex()
        self._points: list[int] = []
        self._owners: list[str] = []

    def _build(self, urls: tuple[str, ...]) -> None:
        points = sorted((hash64(f"{url}#{i}".encode()), url) for url in urls for i in range(self.virtual_nodes))
        self._points = [point for point, _ in points]
        self._owners = [url for _, url in points]

    def lookup(self, key: bytes, workers: Sequence[W]) -> W:
        index = self._index
        if index.update(workers):
            self._build(index.urls)
        point = bisect.bisect_left(self._points, hash64(key))
        return workers[index.positions[self._owners[point % len(self._owners)]]]
