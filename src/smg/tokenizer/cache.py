"""Two-level tokenization cache: L0 exact match, L1 prefix-aware at special-token boundaries.

* **L0** maps a whole input str to its ids: one dict probe (the str's hash is cached by Python),
  then a list copy, so a repeated prompt costs microseconds instead of a full encode.
* **L1** caches the ids of every prefix that ends with a *cut* token (an added token such as
  ``<|eot_id|>`` or ``<|im_start|>``; see ``smg._ext.token_cache_py`` for when a cut is safe). A
  new input that shares a prefix with an earlier one (system prompt, previous turns) reuses that
  prefix's ids and encodes only the rest. Every input's cuts are inserted, on a miss *and* after a
  partial hit, so a new long system prompt is cached from its first use.

Invariant: the result is identical to an uncached ``encode``. Entries are stored by prefix hash and
confirmed byte for byte; one text's entry holds its ids once and all its cuts point into it, so
memory grows with the text, not with the number of turns. Both levels are LRU, bounded in bytes,
and safe to share between threads: reads are lock-free dict probes, mutations take one lock, and
the kernels and the backend encode run without the GIL.
"""
from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

from smg import _ext
from smg.config import CacheConfig

kernel = _ext.load("token_cache")

# Approximate CPython costs used for the byte budgets: a list slot plus an int object per id, and
# dict/OrderedDict bookkeeping per key. Estimates err high so the bound holds.
_BYTES_PER_ID = 8 + 32
_BYTES_PER_KEY = 160
_BYTES_PER_ENTRY = 256

EncodeMany = Callable[[Sequence[str]], list[list[int]]]
EncodeOne = Callable[[str], list[int]]


@dataclass(frozen=True)
class CacheInfo:
    """Counters and sizes of a tokenizer's caches (see ``Tokenizer.cache_info``)."""

    l0_hits: int
    l0_misses: int
    l0_entries: int
    l0_bytes: int
    l1_hits: int
    l1_misses: int
    l1_entries: int
    l1_bytes: int
    l1_reused_tokens: int
    l1_enabled: bool
    l1_disabled_reason: str | None


class _Plan:
    """How one L0 miss is encoded: ``to_encode`` through the backend, then spliced."""

    __slots__ = ("text", "to_encode", "cuts", "hit_index", "entry", "n_prefix")

    def __init__(self, text: str, to_encode: str, cuts: list, hit_index: int,
                 entry: object | None, n_prefix: int) -> None:
        self.text = text
        self.to_encode = to_encode
        self.cuts = cuts
        self.hit_index = hit_index  # index of the cut whose prefix was found, -1 for none
        self.entry = entry
        self.n_prefix = n_prefix


class TokenCache:
    """The L0/L1 cache in front of a backend that encodes a batch of strs without special tokens.

    Args:
        encode_many: encodes texts exactly as the uncached tokenizer (no special tokens added).
        encode_one: the same for one text (the common call, with less per-call overhead).
        scanner: a ``BoundaryScanner`` of the tokenizer's added tokens, or None to disable L1.
        cut_ids: bitmap of the ids of the cut tokens (see ``cut_positions``).
        config: the byte budgets.
        l1_disabled_reason: why L1 is off when ``scanner`` is None, for ``cache_info``.
    """

    def __init__(
        self,
        encode_many: EncodeMany,
        encode_one: EncodeOne,
        scanner: object | None,
        cut_ids: bytes,
        config: CacheConfig,
        l1_disabled_reason: str | None = None,
    ) -> None:
        self._encode_many = encode_many
        self._encode_one = encode_one
        self._config = config
        if config.l1_max_bytes == 0 and scanner is not None:
            scanner, l1_disabled_reason = None, "l1_max_bytes is 0"
        self._scanner = scanner
        self._cut_ids = cut_ids
        self._l1_disabled_reason = l1_disabled_reason
        self._lock = threading.Lock()
        self._l0: OrderedDict[str, tuple[list[int], int]] = OrderedDict()
        self._l0_bytes = 0
        self._l1_table: dict[int, tuple[object, int]] = {}
        self._l1_entries: OrderedDict[object, None] = OrderedDict()
        self._l1_bytes = 0
        self._l0_hits = self._l0_misses = self._l1_hits = self._l1_misses = 0
        self._l1_reused_tokens = 0

    # ---- public -------------------------------------------------------------------------------

    def encode_one(self, text: str) -> list[int]:
        """Ids of one text (no special tokens added): ``encode_many([text])[0]`` with less overhead."""
        cached = self._l0_get(text)
        if cached is not None:
            return cached
        plan = self._plan(text)
        ids = self._finish(plan, self._encode_one(plan.to_encode))
        self._l0_put(text, ids)
        return list(ids)

    def uncached_chars(self, text: str) -> int:
        """How many chars of ``text`` the backend would encode now (0 on an L0 hit; the tail after
        the longest cached prefix on an L1 hit). Changes no statistics."""
        if text in self._l0:
            return 0
        return len(self._plan(text, count=False).to_encode)

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text (no special tokens added)."""
        results: list[list[int] | None] = [None] * len(texts)
        misses: list[int] = []
        for i, text in enumerate(texts):
            cached = self._l0_get(text)
            if cached is None:
                misses.append(i)
            else:
                results[i] = cached
        if misses:
            plans = [self._plan(texts[i]) for i in misses]
            encoded = self._encode_many([p.to_encode for p in plans])
            for i, plan, ids in zip(misses, plans, encoded):
                ids = self._finish(plan, ids)
                self._l0_put(plan.text, ids)
                results[i] = list(ids)
        return results  # type: ignore[return-value]

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(
                l0_hits=self._l0_hits,
                l0_misses=self._l0_misses,
                l0_entries=len(self._l0),
                l0_bytes=self._l0_bytes,
                l1_hits=self._l1_hits,
                l1_misses=self._l1_misses,
                l1_entries=len(self._l1_entries),
                l1_bytes=self._l1_bytes,
                l1_reused_tokens=self._l1_reused_tokens,
                l1_enabled=self._scanner is not None,
                l1_disabled_reason=self._l1_disabled_reason,
            )

    def clear(self) -> None:
        with self._lock:
            self._l0.clear()
            self._l0_bytes = 0
            self._l1_table.clear()
            self._l1_entries.clear()
            self._l1_bytes = 0

    # ---- L0 -----------------------------------------------------------------------------------

    def _l0_get(self, text: str) -> list[int] | None:
        found = self._l0.get(text)
        with self._lock:
            if found is None:
                self._l0_misses += 1
                return None
            self._l0_hits += 1
            if text in self._l0:
                self._l0.move_to_end(text)
        return list(found[0])

    def _l0_put(self, text: str, ids: list[int]) -> None:
        size = sys.getsizeof(text) + _BYTES_PER_ID * len(ids) + _BYTES_PER_ENTRY
        if size > self._config.l0_max_bytes:
            return
        with self._lock:
            if text in self._l0:
                return
            self._l0[text] = (ids, size)
            self._l0_bytes += size
            while self._l0_bytes > self._config.l0_max_bytes:
                _, (_, evicted) = self._l0.popitem(last=False)
                self._l0_bytes -= evicted

    # ---- L1 -----------------------------------------------------------------------------------

    def _plan(self, text: str, count: bool = True) -> _Plan:
        """How ``text`` would be encoded; ``count``: record it in the statistics and the LRU order."""
        if self._scanner is None:
            return _Plan(text, text, [], -1, None, 0)
        cuts = self._scanner.scan(text)
        if not cuts:
            return _Plan(text, text, cuts, -1, None, 0)
        k, entry, n_prefix = kernel.find_longest_prefix(cuts, text, self._l1_table)
        if count:
            with self._lock:
                if k < 0:
                    self._l1_misses += 1
                else:
                    self._l1_hits += 1
                    self._l1_reused_tokens += n_prefix
                    if entry in self._l1_entries:
                        self._l1_entries.move_to_end(entry)
        if k < 0:
            return _Plan(text, text, cuts, -1, None, 0)
        # Re-encode the cut token with the tail: the tail then sits at the same offset after the
        # same token as in the whole text, and its first id must be that token's.
        return _Plan(text, text[cuts[k].char_start :], cuts, k, entry, n_prefix)

    def _finish(self, plan: _Plan, encoded: list[int]) -> list[int]:
        if plan.hit_index < 0:
            ids = encoded
        else:
            if not encoded or encoded[0] != plan.cuts[plan.hit_index].token_id:
                # Not reachable for the tokenizers L1 is enabled on; never splice on doubt.
                return self._encode_many([plan.text])[0]
            ids = kernel.splice(plan.entry.ids, plan.n_prefix, encoded, 1)
        if plan.cuts and plan.hit_index < len(plan.cuts) - 1:
            self._l1_insert(plan.text, plan.cuts, ids)
        return ids

    def _l1_insert(self, text: str, cuts: list, ids: list[int]) -> None:
        positions = kernel.cut_positions(ids, cuts, self._cut_ids)
        if positions is None:
            return
        last = cuts[-1]
        utf8 = text.encode("utf-8")[: last.byte_end]
        prefix_ids = ids[: positions[-1]]
        size = (
            len(utf8)
            + _BYTES_PER_ID * len(prefix_ids)
            + _BYTES_PER_KEY * len(cuts)
            + _BYTES_PER_ENTRY
        )
        if size > self._config.l1_max_bytes:
            return
        entry = kernel.Entry(utf8, prefix_ids, [c.prefix_hash for c in cuts], size)
        with self._lock:
            for cut, n_ids in zip(cuts, positions):
                self._l1_table[cut.prefix_hash] = (entry, n_ids)
            self._l1_entries[entry] = None
            self._l1_bytes += size
            while self._l1_bytes > self._config.l1_max_bytes:
                evicted, _ = self._l1_entries.popitem(last=False)
                self._l1_bytes -= evicted.nbytes
                for key in evicted.keys:
                    found = self._l1_table.get(key)
                    if found is not None and found[0] is evicted:
                        del self._l1_table[key]
