"""``manual``: sticky sessions. A routing key is pinned to the worker its first request went to
(the least loaded) and stays there while that worker is healthy; when it goes away the key is
pinned anew. Requests without a key go to the least loaded worker. The table keeps the
``max_routing_keys`` most recently used keys."""
from __future__ import annotations

import random
from typing import Sequence

from smg.config import RoutingConfig
from smg.policies.base import W, BasePolicy, RequestView, RoutedWorker, least_loaded, require_workers
from smg.policies.cache_aware import StickyKeys


class Manual(BasePolicy):
    name = "manual"

    def __init__(self, config: RoutingConfig | None = None, seed: int | None = None) -> None:
        self.config = config or RoutingConfig()
        self.keys = StickyKeys(self.config.max_routing_keys)
        self._rng = random.Random(seed)

    def state(self) -> dict:
        return {"routing_keys": len(self.keys), "routing_keys_by_worker": self.keys.pinned()}

    def select(self, request: RequestView, workers: Sequence[W]) -> W:
        require_workers(workers)
        if request.routing_key is not None:
            url = self.keys.get(request.routing_key)
            for worker in workers:
                if worker.url == url:
                    return worker
        return least_loaded(workers, self._rng)

    def on_routed(self, request: RequestView, worker: RoutedWorker) -> None:
        if request.routing_key is not None:
            self.keys.pin(request.routing_key, worker.url)

    def on_removed(self, worker: RoutedWorker) -> None:
        self.keys.drop_url(worker.url)
