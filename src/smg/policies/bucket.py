"""``bucket``: prompts by length, for prefill workers in PD disaggregation. The workers (sorted by
URL) each take one band of prompt lengths, the bands drawn at the quantiles of the last
``bucket_window`` prompts' lengths (drawn anew every 5% of it) so each worker gets an equal
share of prompts; short prompts
stop queueing behind long prefills. A worker overloaded past the balance guard passes its band's
requests to the least loaded worker."""
from __future__ import annotations

import bisect
import random
from collections import deque
from typing import Sequence

from smg.config import RoutingConfig
from smg.policies.base import W, BasePolicy, RequestView, WorkerIndex, is_imbalanced, least_loaded, require_workers


class Bucket(BasePolicy):
    name = "bucket"

    def __init__(self, config: RoutingConfig | None = None, seed: int | None = None) -> None:
        self.config = config or RoutingConfig()
        self._lengths: deque[int] = deque(maxlen=self.config.bucket_window)
        self._rng = random.Random(seed)
        self._index = WorkerIndex()
        self._by_url: list[int] = []  # positions of the workers in URL order
        self._bounds: list[int] = []
        self._stale = 0  # prompts seen since the bands were drawn

    def state(self) -> dict:
        """The prompt-length bands (upper bounds, in worker URL order) and the window they come from."""
        return {"band_bounds": list(self._bounds), "recent_prompts": len(self._lengths)}

    def bounds(self, count: int) -> list[int]:
        """The ``count - 1`` lengths that split the recent prompts into equal bands."""
        recent = sorted(self._lengths)
        if not recent:
            return []
        return [recent[min(len(recent) - 1, len(recent) * i // count)] for i in range(1, count)]

    def select(self, request: RequestView, workers: Sequence[W]) -> W:
        require_workers(workers)
        length = len(request.token_ids)
        self._lengths.append(length)
        if len(workers) == 1:
            return workers[0]
        self._stale += 1
        if self._index.update(workers):
            self._by_url = sorted(range(len(workers)), key=lambda i: workers[i].url)
            self._stale = len(self._lengths)
        if self._stale * 20 >= len(self._lengths):  # the bands follow the lengths, drawn anew per 5% of the window
            self._bounds, self._stale = self.bounds(len(workers)), 0
        chosen = workers[self._by_url[bisect.bisect_left(self._bounds, length)]]
        loads = [w.load for w in workers]
        if is_imbalanced((chosen.load, min(loads)), self.config.balance_abs_threshold,
                         self.config.balance_rel_threshold):
            return least_loaded(workers, self._rng, loads=loads)
        return chosen
