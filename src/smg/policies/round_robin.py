"""``round_robin``: the workers in turn."""
from __future__ import annotations

import itertools
from typing import Sequence

from smg.policies.base import W, BasePolicy, RequestView, require_workers


class RoundRobin(BasePolicy):
    name = "round_robin"

    def __init__(self) -> None:
        self._counter = itertools.count()

    def select(self, request: RequestView, workers: Sequence[W]) -> W:
        require_workers(workers)
        return workers[next(self._counter) % len(workers)]
