"""A simulated prefix (KV) cache for the reference engine, so routing can be measured without GPUs.

It behaves, for what a router can observe, like an engine's paged prefix cache (vLLM's prefix
caching, SGLang's radix cache with pages):

* Tokens are cached in blocks of ``block_size``; a block is known by a hash chained from its
  parent's, so a prompt's cached tokens are its leading full blocks present in the cache.
* A request's prompt is cached once prefilled, its prompt and output once finished.
* At most ``capacity_tokens``: past it the least recently used blocks go, leaves first (a block is
  touched after its children, so the least recent block is always a leaf).
* Prefill costs ``prefill_us_per_token`` microseconds per *uncached* prompt token, waited without
  blocking other requests, so a cache hit shows in time to first token.
* Every change is published as a ``KvEventBatch`` (blocks stored with their token ids and parent,
  blocks removed), numbered from 1, with the engine's load attached; subscribers get the batches
  after the sequence number they give (replayed from a bounded history), then live ones.
"""
from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from typing import Callable, Sequence

from smg_grpc_proto.generated import common_pb2 as cpb

ROOT = 0  # the parent of a prompt's first block
SUBSCRIBER_BACKLOG = 10_000  # batches a subscriber may fall behind before its stream is ended


def block_hash(parent: int, tokens: Sequence[int]) -> int:
    """The engine's hash of a block: chained from its parent's; a tuple of ints hashes alike in
    every process, and fits the proto's int64."""
    return hash(("engine-block", parent, *tokens))


class SimulatedPrefixCache:
    def __init__(self, capacity_tokens: int, prefill_us_per_token: float = 0.0, block_size: int = 16,
                 history: int = 4096) -> None:
        if capacity_tokens < 0 or prefill_us_per_token < 0:
            raise ValueError("capacity_tokens and prefill_us_per_token must not be negative")
        if block_size < 1:
            raise ValueError("block_size must be at least 1")
        self.capacity_tokens = capacity_tokens
        self.prefill_us_per_token = prefill_us_per_token
        self.block_size = block_size
        self._parents: dict[int, int] = {}  # block -> parent block (ROOT for a first block)
        self._children: dict[int, int] = {}  # block -> how many cached blocks it is the parent of
        self._lru: OrderedDict[int, None] = OrderedDict()  # least recently used first
        self.prefilling = 0  # requests waiting for their prefill (the engine's queue)
        self.hits = 0  # prompt tokens served from the cache, over all requests
        self.prompts = 0  # prompt tokens, over all requests
        self.sequence = 0  # the last batch's number
        self._history: deque[cpb.KvEventBatch] = deque(maxlen=history)
        self._subscribers: set[asyncio.Queue] = set()
        self.load: Callable[[], cpb.EngineLoad] | None = None  # attached to each batch (the server sets it)

    def _chain(self, ids: Sequence[int]) -> list[int]:
        """The hashes of ``ids``' full blocks, in order."""
        hashes, parent, size = [], ROOT, self.block_size
        for start in range(0, len(ids) - size + 1, size):
            parent = block_hash(parent, ids[start:start + size])
            hashes.append(parent)
        return hashes

    def cached(self, ids: Sequence[int]) -> int:
        """Tokens of ``ids`` the cache holds: its leading full blocks that are cached."""
        count = 0
        for digest in self._chain(ids):
            if digest not in self._parents:
                break
            count += 1
        return count * self.block_size

    def store(self, ids: Sequence[int]) -> None:
        """Cache ``ids``' full blocks (the ones already there become the most recent), evicting
        the least recent past the capacity, and publish what changed."""
        if not self.capacity_tokens:
            return
        chain = self._chain(ids)
        stored, parent_of_first, parent = [], None, ROOT
        for k, digest in enumerate(chain):
            if digest not in self._parents:
                if not stored:
                    parent_of_first = parent
                self._parents[digest] = parent
                self._children[digest] = 0
                if parent != ROOT:
                    self._children[parent] += 1
                size = self.block_size
                stored.append(cpb.KvBlock(block_hash=digest, token_ids=ids[k * size:(k + 1) * size], block_size=size))
            parent = digest
        for digest in reversed(chain):  # children before parents: the least recent is a leaf
            self._lru[digest] = None
            self._lru.move_to_end(digest)
        removed = self._evict(protect=set(chain))
        events = []
        if stored:
            event = cpb.KvBlocksStored(blocks=stored)
            if parent_of_first != ROOT:
                event.parent_block_hash = parent_of_first
            events.append(cpb.KvCacheEvent(stored=event))
        if removed:
            events.append(cpb.KvCacheEvent(removed=cpb.KvBlocksRemoved(block_hashes=removed)))
        if events:
            self._publish(events)

    def _evict(self, protect: set[int]) -> list[int]:
        removed = []
        while len(self._parents) * self.block_size > self.capacity_tokens and self._lru:
            digest = next(iter(self._lru))
            if digest in protect or self._children[digest]:  # (the prompt just stored, too big to keep whole)
                break
            del self._lru[digest]
            parent = self._parents.pop(digest)
            del self._children[digest]
            if parent != ROOT:
                self._children[parent] -= 1
            removed.append(digest)
        return removed

    def _publish(self, events: list) -> None:
        self.sequence += 1
        batch = cpb.KvEventBatch(sequence_number=self.sequence, timestamp=time.time(), events=events)
        if self.load is not None:
            batch.load.CopyFrom(self.load())
        self._history.append(batch)
        for queue in list(self._subscribers):
            queue.put_nowait(batch)
            if queue.qsize() >= SUBSCRIBER_BACKLOG:  # too slow: its stream ends; it resumes by number
                self._subscribers.discard(queue)
                queue.put_nowait(None)

    async def subscribe(self, after: int):
        """Batches numbered after ``after`` (those still in the history), then live ones; ends when
        the subscriber falls too far behind (it reconnects and resumes)."""
        queue: asyncio.Queue = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            for batch in list(self._history):
                if batch.sequence_number > after:
                    yield batch
            after = max(after, self._history[-1].sequence_number if self._history else 0)
            while True:
                batch = await queue.get()
                if batch is None:
                    return
                if batch.sequence_number > after:
                    yield batch
        finally:
            self._subscribers.discard(queue)

    def history(self) -> list[cpb.KvEventBatch]:
        """The published batches it still keeps (what a subscription from 0 replays first)."""
        return list(self._history)

    def disconnect_subscribers(self) -> None:
        """End every subscription, as a lost connection would (they resume by sequence number)."""
        for queue in list(self._subscribers):
            self._subscribers.discard(queue)
            queue.put_nowait(None)

    async def prefill(self, ids: Sequence[int]) -> int:
        """Wait as long as the uncached part of the prompt takes; then it is cached. Returns the
        cached tokens."""
        cached = self.cached(ids)
        self.hits += cached
        self.prompts += len(ids)
        delay = (len(ids) - cached) * self.prefill_us_per_token / 1e6
        if delay > 0:
            self.prefilling += 1
            try:
                await asyncio.sleep(delay)
            finally:
                self.prefilling -= 1
        self.store(ids)
        return cached

    @property
    def size(self) -> int:
        """Tokens cached."""
        return len(self._parents) * self.block_size

    @property
    def usage(self) -> float:
        """The share of the capacity in use, in [0, 1]."""
        return min(1.0, self.size / self.capacity_tokens) if self.capacity_tokens else 0.0
