"""``kv_events``: cache-aware routing by what the engines report holding, not by what was sent.

The pool subscribes to each worker's ``SubscribeKvEvents`` (:class:`smg.engines.kv_events.KvEventFeed`)
into this policy's :class:`~smg.policies.kv_index.KvIndex`. A prompt's match on a worker whose
index is live is the longest prefix of its blocks that engine holds; on a worker that does not
implement the RPC, or whose index missed a batch, it is ``cache_aware``'s approximate match; and
when no engine holds any of the prompt (all evicted it), the prompt goes where the tree says it
was sent, so it is cached again where its other users will follow. From there the choice is
``cache_aware``'s: routing key, balance guard, threshold, least loaded. The
load records riding on the event batches keep each worker's reported load current.
"""
from __future__ import annotations

from typing import Sequence

from smg.config import RoutingConfig
from smg.policies.base import W
from smg.policies.cache_aware import CacheAware
from smg.policies.kv_index import KvIndex


class KvEvents(CacheAware):
    name = "kv_events"

    def __init__(self, config: RoutingConfig | None = None, seed: int | None = None) -> None:
        super().__init__(config, seed)
        self.kv_index = KvIndex()

    def state(self) -> dict:
        """The approximate tree's (for workers without events), and what the engines' events say."""
        return {**super().state(), "kv_index": self.kv_index.summary()}

    def _matched(self, tokens: Sequence[int], workers: Sequence[W]) -> tuple[int, list[int]]:
        index = self.kv_index
        self._index.update(workers)
        positions = self._index.positions
        exact, holders = index.longest(tokens)
        live = [positions[url] for url in holders if url in positions and index.live(url)]
        if not live:  # no engine holds it (or none reports): where it was sent before, it is cached
            return super()._matched(tokens, workers)  # again, and its other users follow it there
        # the others (no events, or a gap): the approximate tree, among those workers only
        guessed, found = 0, []
        if any(not index.live(w.url) for w in workers):
            approximate, candidates = super()._matched(tokens, workers)
            found = [i for i in candidates if not index.live(workers[i].url)]
            guessed = approximate if found else 0
        if exact > guessed:
            return exact, sorted(live)
        if guessed > exact or not live:
            return guessed, found
        return exact, sorted(set(live) | set(found))
