"""``bucket``: prompts by length, for prefill workers in PD disaggregation. The workers (sorted by
URL) each take one band of prompt lengths, the bands drawn at the quantiles of the last
``bucket_window`` prompts' lengths so each worker gets an equal share of prompts; short prompts
stop queueing behind long prefills. A worker overloaded past the balance guard passes its band's
requests to the least loaded worker."""
from __future__ import annotations

import bisect
import random
from collections import deque
from typing import Sequence

from smg.config import RoutingConfig
from smg.policies.base import W, BasePolicy, RequestView, is_imbalanced, least_loaded, require_workers


class Bucket(BasePolicy):
    name = "bucket"

    def __init__(self, config: RoutingConfig | None = None, seed: int | None = None) -> None:
        self.config = config or RoutingConfig()
        self._lengths: deque[int] = deque(maxlen=self.config.bucket_window)
        self._rng = random.Random(seed)

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
        ordered = sorted(workers, key=lambda w: w.url)
        chosen = ordered[bisect.bisect_left(self.bounds(len(ordered)), length)]
        idlest = min(workers, key=lambda w: w.load)
        if is_imbalanced((chosen, idlest), self.config.balance_abs_threshold, self.config.balance_rel_threshold):
            return least_loaded(workers, self._rng)
        return chosen
