"""Which KV blocks each worker's engine holds, from the engines' own KV events (``kv_events``).

Engines publish the blocks they store and remove (``SubscribeKvEvents``: token ids, the engine's
block hash, the parent's). The engines' hashes are their own, so each stored block gets the
gateway's content hash on arrival (``block_hashes``: chained over the token ids, the same function
a prompt is hashed with), and the index maps content hash -> the workers holding it.

A worker's index is exact (*live*) only while it has seen every batch the engine published since
it started, or since it cleared its cache; a missed batch (a sequence gap, a restart) makes it
*partial* until a resubscription replays the whole history. ``kv_events`` routes live workers by
this index and the others by ``cache_aware``'s approximate tree.

Engines evict leaves first, so what a worker holds of a prompt is always a prefix of its blocks:
the longest match over all workers is found by a binary search over the prompt's blocks.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from smg import _ext

block_hashes = _ext.load("prefix_tree").block_hashes

LIVE, PARTIAL, UNSUPPORTED = "live", "partial", "unsupported"


class _WorkerBlocks:
    __slots__ = ("state", "ours", "copies")

    def __init__(self) -> None:
        self.state = PARTIAL  # until the feed has seen the history from the start
        self.ours: dict[int, int] = {}  # engine block hash -> content hash
        self.copies: dict[int, int] = defaultdict(int)  # content hash -> blocks of it (physical copies)


class KvIndex:
    def __init__(self) -> None:
        self._workers: dict[str, _WorkerBlocks] = {}
        self._holders: dict[int, set[str]] = {}  # content hash -> URLs of the workers holding it
        self.block_size = 0  # learnt from the first stored block (a model's workers share it)

    def summary(self) -> dict:
        """Per worker: whether its event history is whole (live) and the blocks it holds."""
        return {"block_size": self.block_size, "distinct_blocks": len(self._holders),
                "workers": {url: {"state": w.state, "blocks": len(w.ours)} for url, w in self._workers.items()}}

    def state(self, url: str) -> str | None:
        worker = self._workers.get(url)
        return worker.state if worker is not None else None

    def live(self, url: str) -> bool:
        worker = self._workers.get(url)
        return worker is not None and worker.state == LIVE

    def set_state(self, url: str, state: str) -> None:
        self._workers.setdefault(url, _WorkerBlocks()).state = state

    def reset(self, url: str, state: str) -> None:
        """Forget what ``url`` held (a gap, a restart, a new subscription) and set its state."""
        worker = self._workers.setdefault(url, _WorkerBlocks())
        for content in worker.copies:
            holders = self._holders.get(content)
            if holders is not None:
                holders.discard(url)
                if not holders:
                    del self._holders[content]
        worker.ours.clear()
        worker.copies.clear()
        worker.state = state

    def forget(self, url: str) -> None:
        if url in self._workers:
            self.reset(url, PARTIAL)
            del self._workers[url]

    def apply(self, url: str, events: Sequence) -> None:
        """A batch's ``KvCacheEvent``s for ``url``."""
        worker = self._workers.setdefault(url, _WorkerBlocks())
        for event in events:
            kind = event.WhichOneof("data")
            if kind == "stored":
                self._stored(url, worker, event.stored)
            elif kind == "removed":
                for engine_hash in event.removed.block_hashes:
                    self._drop(url, worker, engine_hash)
            elif kind == "cleared":  # the engine holds nothing: from here on the index is exact
                self.reset(url, LIVE)

    def _stored(self, url: str, worker: _WorkerBlocks, stored) -> None:
        if stored.HasField("parent_block_hash"):
            parent = worker.ours.get(stored.parent_block_hash)
            if parent is None:  # a parent never seen (what came before was missed): unplaceable
                return
            chain_start = parent
        else:
            chain_start = 0
        for block in stored.blocks:
            size = block.block_size or len(block.token_ids)
            if not self.block_size:
                self.block_size = size
            if size != self.block_size or len(block.token_ids) != size:
                return  # (another page size: not comparable with prompts hashed at this one)
            content = _chained(chain_start, block.token_ids)
            worker.ours[block.block_hash] = content
            worker.copies[content] += 1
            self._holders.setdefault(content, set()).add(url)
            chain_start = content

    def _drop(self, url: str, worker: _WorkerBlocks, engine_hash: int) -> None:
        content = worker.ours.pop(engine_hash, None)
        if content is None:
            return
        worker.copies[content] -= 1
        if worker.copies[content] <= 0:
            del worker.copies[content]
            holders = self._holders.get(content)
            if holders is not None:
                holders.discard(url)
                if not holders:
                    del self._holders[content]

    def longest(self, tokens: Sequence[int]) -> tuple[int, set[str]]:
        """The most prompt tokens any worker holds, and the workers holding that many."""
        if not self.block_size or len(tokens) < self.block_size:
            return 0, set()
        hashes = block_hashes(tokens, self.block_size)
        holders = self._holders
        low, high = 0, len(hashes)  # the first `low` blocks are held somewhere; past `high`, none
        while low < high:
            middle = (low + high + 1) // 2
            if hashes[middle - 1] in holders:
                low = middle
            else:
                high = middle - 1
        if not low:
            return 0, set()
        return low * self.block_size, holders[hashes[low - 1]]


def _chained(parent: int, token_ids: Sequence[int]) -> int:
    """The content hash of one block after ``parent`` (0: a first block)."""
    return block_hashes(token_ids, len(token_ids), parent)[0]
