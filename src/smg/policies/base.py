"""What every routing policy shares: the request as a policy sees it, the worker interface, the
policy interface, and the load comparisons several policies make."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Protocol, Sequence, TypeVar, runtime_checkable

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


@runtime_checkable
class KvEventConsumer(Protocol):
    """A policy that routes by the engines' KV events: the pool follows every worker's
    ``SubscribeKvEvents`` into its ``kv_index`` (a :class:`smg.policies.kv_index.KvIndex`)."""

    kv_index: Any


@runtime_checkable
class ReportsState(Protocol):
    """A policy that can say what it keeps (the admin API shows it): a JSON-able dict."""

    def state(self) -> dict: ...


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


def least_loaded(workers: Sequence[W], rng: random.Random, tie_key=None, loads: Sequence[float] | None = None) -> W:
    """The worker of the lowest load (``loads``: theirs, when already read); among equals the
    lowest ``tie_key(worker)`` when given, then one at random (never "the first": new work spreads)."""
    if loads is None:
        loads = [w.load for w in workers]
    low = min(loads)
    tied = [w for w, load in zip(workers, loads) if load == low]
    if tie_key is not None and len(tied) > 1:
        keys = [tie_key(w) for w in tied]
        best = min(keys)
        tied = [w for w, key in zip(tied, keys) if key == best]
    return tied[0] if len(tied) == 1 else rng.choice(tied)


def is_imbalanced(loads: Sequence[float], absolute: float, relative: float) -> bool:
    """The balance guard over workers' loads: the busiest has more than ``absolute`` requests over
    the idlest and more than ``relative`` times its load."""
    high, low = max(loads), min(loads)
    return high - low > absolute and high > low * relative


class WorkerIndex:
    """Worker URL -> position in the list a policy was given, rebuilt only when the URLs change
    (the pool passes its healthy workers in a stable order, so this is one tuple compare)."""

    def __init__(self) -> None:
        self.urls: tuple[str, ...] = ()
        self.positions: dict[str, int] = {}

    def update(self, workers: Sequence[RoutedWorker]) -> bool:
        """Index ``workers``; whether their URLs changed since the last call."""
        urls = tuple([w.url for w in workers])
        if urls == self.urls:
            return False
        self.urls = urls
        self.positions = {url: i for i, url in enumerate(urls)}
        return True
