"""``prefix_hash``: the hash of a prompt's first ``prefix_hash_tokens`` ids on a consistent-hash
ring, so prompts opening alike (one system prompt, one document) meet on one worker with no state
kept per request; a prompt without ids (none given) goes to the least loaded."""
from __future__ import annotations

import random
from typing import Sequence

from smg.config import RoutingConfig
from smg.policies.base import W, BasePolicy, RequestView, least_loaded, require_workers
from smg.policies.ring import HashRing, prefix_key


class PrefixHash(BasePolicy):
    name = "prefix_hash"

    def __init__(self, config: RoutingConfig | None = None, seed: int | None = None) -> None:
        self.config = config or RoutingConfig()
        self._ring = HashRing(self.config.virtual_nodes)
        self._rng = random.Random(seed)

    def ring_key(self, request: RequestView) -> bytes | None:
        """Where the request stands on the ring (None: nowhere, the least loaded takes it)."""
        if not request.token_ids:
            return None
        return prefix_key(request.token_ids, self.config.prefix_hash_tokens)

    def select(self, request: RequestView, workers: Sequence[W]) -> W:
        require_workers(workers)
        if len(workers) == 1:
            return workers[0]
        key = self.ring_key(request)
        if key is None:
            return least_loaded(workers, self._rng)
        return self._ring.lookup(key, workers)
