"""Load-balancing policies: pick a worker among the healthy ones for a request.

A policy is ``pick(workers, request) -> worker``; ``workers`` is non-empty and healthy.
``round_robin`` cycles; ``least_load`` takes the fewest requests in flight (ties: the lower
engine-reported load, then the earlier worker); ``random`` draws uniformly;
``power_of_two`` compares two random workers by in-flight count.
"""
from __future__ import annotations

import itertools
import random
from typing import Callable, Protocol, Sequence

from smg.errors import InvalidRequest


class Policy(Protocol):
    name: str

    def pick(self, workers: Sequence, request: object | None = None): ...


class RoundRobin:
    name = "round_robin"

    def __init__(self) -> None:
        self._counter = itertools.count()

    def pick(self, workers, request=None):
        return workers[next(self._counter) % len(workers)]


class LeastLoad:
    name = "least_load"

    def pick(self, workers, request=None):
        return min(workers, key=lambda w: (w.in_flight, w.reported_load))


class Random:
    name = "random"

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def pick(self, workers, request=None):
        return self._rng.choice(workers)


class PowerOfTwo:
    name = "power_of_two"

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def pick(self, workers, request=None):
        if len(workers) == 1:
            return workers[0]
        a, b = self._rng.sample(list(workers), 2)
        return a if a.in_flight <= b.in_flight else b


POLICIES: dict[str, Callable[[], Policy]] = {
    "round_robin": RoundRobin, "least_load": LeastLoad, "random": Random, "power_of_two": PowerOfTwo}


def make_policy(name: str) -> Policy:
    if name not in POLICIES:
        raise InvalidRequest(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    return POLICIES[name]()
