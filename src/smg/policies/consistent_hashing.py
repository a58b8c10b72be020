"""``consistent_hashing``: a request's routing key (the ``X-SMG-Routing-Key`` header, else its
``user``) on a consistent-hash ring; without one, the prompt's first ids as ``prefix_hash`` does.
About 1/N of the keys move when one of N workers leaves or joins."""
from __future__ import annotations

import random
from typing import Sequence

from smg.config import RoutingConfig
from smg.policies.base import W, BasePolicy, RequestView, least_loaded, require_workers
from smg.policies.ring import HashRing, prefix_key


class ConsistentHashing(BasePolicy):
    name = "consistent_hashing"

    def __init__(self, config: RoutingConfig | None = None, seed: int | None = None) -> None:
        self.config = config or RoutingConfig()
        self._ring = HashRing(self.config.virtual_nodes)
        self._rng = random.Random(seed)

    def select(self, request: RequestView, workers: Sequence[W]) -> W:
        require_workers(workers)
        if len(workers) == 1:
            return workers[0]
        if request.routing_key is not None:
            key = b"k" + request.routing_key.encode()
        elif request.token_ids:
            key = b"p" + prefix_key(request.token_ids, self.config.prefix_hash_tokens)
        else:
            return least_loaded(workers, self._rng)
        return self._ring.lookup(key, workers)
