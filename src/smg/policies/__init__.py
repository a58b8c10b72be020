"""Routing policies: which healthy worker of a model serves a request.

One module per policy; each is a class with ``select(request_view, workers) -> worker`` and the
``on_routed`` / ``on_finished`` / ``on_removed`` hooks (:class:`~smg.policies.base.Policy`), so
an application can pass its own to ``WorkerPool(policy=...)``. ``make_policy(name, config)``
builds a registered one from the pool's :class:`~smg.config.RoutingConfig`.

=====================  ====================================================================
``cache_aware``        the default: the worker already sent the prompt's longest prefix,
                       else the least loaded; a balance guard falls back to load
``kv_events``          as ``cache_aware``, by the blocks the engines report holding
                       (``SubscribeKvEvents``), the approximation for workers without it
``round_robin``        in turn
``random``             uniformly
``power_of_two``       the less loaded of two drawn at random
``least_load``         the fewest requests on the engine (in flight, or as it reports)
``prefix_hash``        the hash of the prompt's first ids on a consistent-hash ring
``consistent_hashing`` the routing key (``X-SMG-Routing-Key``, else ``user``) on the ring
``manual``             a routing key stays on its worker until that worker goes away
``bucket``             prompt-length bands, one per worker (prefill workers in PD)
=====================  ====================================================================
"""
from __future__ import annotations

from typing import Callable

from smg.config import RoutingConfig
from smg.errors import InvalidRequest
from smg.policies.base import BasePolicy, KvEventConsumer, Policy, RequestView, RoutedWorker
from smg.policies.bucket import Bucket
from smg.policies.cache_aware import CacheAware
from smg.policies.consistent_hashing import ConsistentHashing
from smg.policies.kv_events import KvEvents
from smg.policies.least_load import LeastLoad
from smg.policies.manual import Manual
from smg.policies.power_of_two import PowerOfTwo
from smg.policies.prefix_hash import PrefixHash
from smg.policies.random_choice import Random
from smg.policies.round_robin import RoundRobin

__all__ = ["BasePolicy", "KvEventConsumer", "POLICIES", "Policy", "RequestView", "RoutedWorker", "make_policy"]

POLICIES: dict[str, Callable[[RoutingConfig], Policy]] = {
    "cache_aware": CacheAware,
    "kv_events": KvEvents,
    "round_robin": lambda config: RoundRobin(),
    "random": lambda config: Random(),
    "power_of_two": lambda config: PowerOfTwo(),
    "least_load": lambda config: LeastLoad(),
    "prefix_hash": PrefixHash,
    "consistent_hashing": ConsistentHashing,
    "manual": Manual,
    "bucket": Bucket,
}


def make_policy(name: str, config: RoutingConfig | None = None) -> Policy:
    if name not in POLICIES:
        raise InvalidRequest(f"unknown policy {name!r}; known: {', '.join(POLICIES)}")
    return POLICIES[name](config or RoutingConfig())
