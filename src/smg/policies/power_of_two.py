"""``power_of_two``: two workers drawn at random, the less loaded wins (a tie: the first drawn)."""
from __future__ import annotations

import random
from typing import Sequence

from smg.policies.base import W, BasePolicy, RequestView, require_workers


class PowerOfTwo(BasePolicy):
    name = "power_of_two"

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def select(self, request: RequestView, workers: Sequence[W]) -> W:
        require_workers(workers)
        if len(workers) == 1:
            return workers[0]
        a, b = self._rng.sample(range(len(workers)), 2)
        return workers[a] if workers[a].load <= workers[b].load else workers[b]
