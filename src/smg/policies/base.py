"""What every routing policy shares: the request as a policy sees it, the worker interface, the
policy interface, and the load comparisons several policies make."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol, Sequence, TypeVar, runtime_checkable

from smg.errors import NoHealthyWorker


@dataclass(frozen=True, slots=True)
class RequestView:
    """What a policy may route by: the prompt's token ids, and a routing key (the
    ``X-SMG-Routing-Key`` header, else the request's ``user``) when the client gave one."""

    token_ids: Sequence[int] = ()
    routing_key: str | None = None


@runtime_checkable
class RoutedWorker(Protocol):
    """The worker facts a policy reads (``smg.engines.pool.Worker`` has them)."""

    url: str
    in_flight: int  # this gateway's requests on it

    @property
    def load(self) -> float:
        """Requests on the engine: this gateway's in flight, or the engine's own count (GetLoads,
        KV-event load records) when that is higher (other clients' work shows there)."""


W = TypeVar("W", bound=RoutedWorker)


class Policy(Protocol):
    """Picks a worker for a request. ``select`` gets the healthy workers (never empty) and returns
    one of them; the hooks tell the policy where a request went, when it ended, and that a worker
    left the pool. Plug your own: any object with these methods, passed as ``WorkerPool(policy=)``."""

    name: str

    def select(self, request: RequestView, workers: Sequence[W]) -> W: ...

    def on_routed(self, request: RequestView, worker: RoutedWorker) -> None: ...

    def on_finished(self, request: RequestView, worker: RoutedWorker) -> None: ...

    def on_removed(self, worker: RoutedWorker) -> None: ...


class BasePolicy:
    """No-op hooks, for policies that keep no state about requests."""

    name = "base"

    def select(self, request: RequestView, workers: Sequence[W]) -> W:
        raise NotImplementedError

    def on_routed(self, request: RequestView, worker: RoutedWorker) -> None:
        pass

    def on_finished(self, request: RequestView, worker: RoutedWorker) -> None:
        pass

    def on_removed(self, worker: RoutedWorker) -> None:
        pass


def require_workers(workers: Sequence[W]) -> None:
    if not workers:
        raise NoHealthyWorker("no healthy engine worker to route to")


def least_loaded(workers: Sequence[W], rng: random.Random, tie_key=None) -> W:
    """The worker of the lowest load; among equals the lowest ``tie_key(worker)`` when given, then
    one at random (never "the first": new work spreads)."""
    low = min(w.load for w in workers)
    tied = [w for w in workers if w.load == low]
    if tie_key is not None and len(tied) > 1:
        best = min(tie_key(w) for w in tied)
        tied = [w for w in tied if tie_key(w) == best]
    return tied[0] if len(tied) == 1 else rng.choice(tied)


def is_imbalanced(workers: Sequence[RoutedWorker], absolute: float, relative: float) -> bool:
    """The balance guard: the busiest worker has more than ``absolute`` requests over the idlest
    and more than ``relative`` times its load."""
    loads = [w.load for w in workers]
    high, low = max(loads), min(loads)
    return high - low > absolute and high > low * relative
