"""``least_load``: the worker with the fewest requests on it (``Worker.load``: this gateway's in
flight, or the engine's own count when higher); ties go to one of them at random."""
from __future__ import annotations

import random
from typing import Sequence

from smg.policies.base import W, BasePolicy, RequestView, least_loaded, require_workers


class LeastLoad(BasePolicy):
    name = "least_load"

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def select(self, request: RequestView, workers: Sequence[W]) -> W:
        require_workers(workers)
        return workers[0] if len(workers) == 1 else least_loaded(workers, self._rng)
