"""Memory for image batches that keeps its pages: a batch's memory, once no array uses it, is kept
mapped and handed to the next batch it fits.

Why: a request's batch is tens to hundreds of MB (Qwen3-VL's four 1920x1080 photos: 200 MB of
patch rows), written once by the images' threads; one large image's arrays are tens of MB too.
Fresh memory costs a page fault per 4 KiB on its first touch: that was half of such a request's
preprocessing (113 -> 50 ms on one thread), and two threads faulting at once slowed each other
(two threads x1.69 -> x1.9). Kept memory has its pages already: writing it runs at memory speed.
Blocks ask for huge pages, for fewer TLB misses; their first touch may stall in the kernel's
compaction, but only the first.

A block is handed out again only when every array over it is gone (its release runs when the last
reference to the block's buffer drops), so no two batches ever share memory. Blocks are kept up to
``KEEP_BYTES`` in all; past that, the oldest freed are unmapped.
"""
from __future__ import annotations

import ctypes
import math
import mmap
import threading

import numpy as np

#: Bytes of freed blocks kept mapped for the next batches (their pages stay resident).
KEEP_BYTES = 512 << 20
#: Smaller batches come from NumPy: their faults cost little, and malloc keeps their pages anyway.
SMALLEST = 4 << 20
_GRAIN = 2 << 20  # block sizes are multiples of this (so near sizes share blocks)
_MOST_WASTE = 2  # a kept block serves a batch of at least 1 / _MOST_WASTE of its size


class _Release:
    """Gives ``block`` back to ``memory`` when the block's buffer (and so every array over it) dies."""

    __slots__ = ("memory", "block")

    def __init__(self, memory: "BatchMemory", block: mmap.mmap) -> None:
        self.memory, self.block = memory, block

    def __del__(self) -> None:
        self.memory._give_back(self.block)


class BatchMemory:
    """Float32 arrays over kept blocks (see the module's docstring). Thread-safe."""

    def __init__(self, keep_bytes: int = KEEP_BYTES) -> None:
        self.keep_bytes = keep_bytes
        self._kept: list[mmap.mmap] = []  # free blocks, oldest freed first
        self._kept_bytes = 0
        # (reentrant: a block's release can run inside a locked section, when a collection there
        # drops an array's last reference)
        self._lock = threading.RLock()

    def empty(self, *shape: int) -> np.ndarray:
        """An uninitialised C-contiguous float32 array of ``shape``."""
        count = math.prod(shape)
        if count * 4 < SMALLEST:
            return np.empty(shape, np.float32)
        block = self._take(count * 4)
        buffer = (ctypes.c_char * len(block)).from_buffer(block)
        buffer.release = _Release(self, block)  # (runs when the buffer's last array dies)
        return np.frombuffer(buffer, np.float32, count).reshape(shape)

    @property
    def kept_bytes(self) -> int:
        """Bytes of free blocks kept mapped now."""
        return self._kept_bytes

    def _take(self, size: int) -> mmap.mmap:
        with self._lock:
            fits = [(len(block), index) for index, block in enumerate(self._kept)
                    if size <= len(block) <= size * _MOST_WASTE]
            if fits:
                block = self._kept.pop(min(fits)[1])  # (the smallest that fits)
                self._kept_bytes -= len(block)
                return block
        # (private: mmap's default shared anonymous memory is shmem, which gets no huge pages)
        block = mmap.mmap(-1, -(-size // _GRAIN) * _GRAIN, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_HUGEPAGE"):  # (fewer TLB misses: Phi-4's 640x480 crops 9.2 -> 7.1 ms)
            block.madvise(mmap.MADV_HUGEPAGE)
        return block

    def _give_back(self, block: mmap.mmap) -> None:
        # Past the limit the oldest freed blocks go (sizes the traffic no longer asks for), not the
        # newest. A block that goes is dropped, not closed: a dying buffer's export of it may not be
        # released yet; it is unmapped when that goes.
        with self._lock:
            self._kept.append(block)
            self._kept_bytes += len(block)
            while self._kept_bytes > self.keep_bytes:
                self._kept_bytes -= len(self._kept.pop(0))


#: The process's batch memory (every processor's batches and large per-image arrays).
batches = BatchMemory()
