"""``random``: a worker drawn uniformly."""
from __future__ import annotations

import random
from typing import Sequence

from smg.policies.base import W, BasePolicy, RequestView, require_workers


class Random(BasePolicy):
    name = "random"

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def select(self, request: RequestView, workers: Sequence[W]) -> W:
        require_workers(workers)
        return self._rng.choice(workers)
