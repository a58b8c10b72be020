"""``cache_aware``: send a prompt where its prefix was sent before, so that the engine's prefix
cache (SGLang's radix cache, vLLM's prefix caching) serves it; spread new prefixes; fall back to
load when the workers are out of balance. The default policy, as in the Rust gateway.

Per model, a :class:`~smg._ext.prefix_tree_py.PrefixTree` records which worker was sent which
prompt (an approximation of what each engine holds: the engine's own evictions are not seen;
``kv_events`` sees them). A request goes:

1. with a routing key pinned to a healthy worker that is not overloaded past the balance guard:
   to that worker;
2. when the workers are imbalanced (the busiest has more than ``balance_abs_threshold`` requests
   over the idlest and more than ``balance_rel_threshold`` times its load): to the least loaded;
3. when some worker was sent more than ``cache_threshold`` of the prompt: to the one with the
   longest match (among equals, the least loaded);
4. else to the least loaded, ties to the worker holding the fewest tree tokens (the most room
   for a new prefix), then at random.

Each routed prompt is inserted under its worker; past ``max_tree_tokens`` per worker the least
recently routed prompts are evicted. With one worker nothing is matched or recorded.
"""
from __future__ import annotations

import random
from collections import OrderedDict
from typing import Callable, Sequence

from smg import _ext
from smg.config import RoutingConfig
from smg.policies.base import (W, BasePolicy, RequestView, RoutedWorker, WorkerIndex, is_imbalanced, least_loaded,
                               require_workers)

PrefixTree = _ext.load("prefix_tree").PrefixTree


class StickyKeys:
    """Routing key -> worker URL, the least recently used forgotten past ``limit`` keys."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._urls: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        url = self._urls.get(key)
        if url is not None:
            self._urls.move_to_end(key)
        return url

    def pin(self, key: str, url: str) -> None:
        if self._urls.get(key) == url:  # (a session going on: get() already made it the most recent)
            return
        self._urls[key] = url
        self._urls.move_to_end(key)
        if len(self._urls) > self.limit:
            self._urls.popitem(last=False)

    def __len__(self) -> int:
        return len(self._urls)

    def pinned(self) -> dict[str, int]:
        """Keys pinned per worker URL."""
        counts: dict[str, int] = {}
        for url in self._urls.values():
            counts[url] = counts.get(url, 0) + 1
        return counts

    def drop_url(self, url: str) -> None:
        for key in [k for k, u in self._urls.items() if u == url]:
            del self._urls[key]


def pinned_worker(keys: StickyKeys, request: RequestView, workers: Sequence[W], loads: Sequence[float],
                  index: WorkerIndex, config: RoutingConfig) -> W | None:
    """The healthy worker the request's routing key is pinned to, unless it is overloaded past
    the balance guard against the idlest (then the key is routed anew)."""
    if request.routing_key is None:
        return None
    url = keys.get(request.routing_key)
    if url is None:
        return None
    index.update(workers)
    position = index.positions.get(url)
    if position is None or is_imbalanced((loads[position], min(loads)), config.balance_abs_threshold,
                                         config.balance_rel_threshold):
        return None
    return workers[position]


class CacheAware(BasePolicy):
    name = "cache_aware"

    def __init__(self, config: RoutingConfig | None = None, seed: int | None = None) -> None:
        self.config = config or RoutingConfig()
        self.tree = PrefixTree(self.config.max_tree_tokens)
        self._tenants: dict[str, int] = {}  # worker URL -> tenant id in the tree
        self._urls: list[str | None] = []  # tenant id -> worker URL
        self._free_tenants: list[int] = []
        self._index = WorkerIndex()
        self._keys = StickyKeys(self.config.max_routing_keys)
        self._rng = random.Random(seed)
        self._record = False  # whether the last select chose among several workers
        self.share: Callable[[Sequence[int], str], None] | None = None  # (smg.policies.siblings)

    def _tenant(self, url: str) -> int:
        tenant = self._tenants.get(url)
        if tenant is None:
            if self._free_tenants:
                tenant = self._free_tenants.pop()
            else:
                tenant = len(self._urls)
                self._urls.append(None)
            self._tenants[url] = tenant
            self._urls[tenant] = url
        return tenant

    def _tree_tokens(self, worker: RoutedWorker) -> int:
        tenant = self._tenants.get(worker.url)
        return 0 if tenant is None else self.tree.tenant_tokens(tenant)

    def select(self, request: RequestView, workers: Sequence[W]) -> W:
        require_workers(workers)
        self._record = len(workers) > 1
        if not self._record:
            return workers[0]
        config = self.config
        loads = [w.load for w in workers]
        pinned = pinned_worker(self._keys, request, workers, loads, self._index, config)
        if pinned is not None:
            return pinned
        if is_imbalanced(loads, config.balance_abs_threshold, config.balance_rel_threshold):
            return least_loaded(workers, self._rng, self._tree_tokens, loads)
        tokens = request.token_ids
        if tokens:
            best = self._longest_match(tokens, workers, loads)
            if best:
                return least_loaded(best[0], self._rng, loads=best[1])
        return least_loaded(workers, self._rng, self._tree_tokens, loads)

    def _longest_match(self, tokens: Sequence[int], workers: Sequence[W], loads: Sequence[float]
                       ) -> tuple[list[W], list[float]] | None:
        """The workers sharing the longest match, and their loads, when it passes the threshold."""
        longest, positions = self._matched(tokens, workers)
        if not positions or longest <= self.config.cache_threshold * len(tokens):
            return None
        return [workers[i] for i in positions], [loads[i] for i in positions]

    def _matched(self, tokens: Sequence[int], workers: Sequence[W]) -> tuple[int, list[int]]:
        """The longest match among ``workers`` and their positions (by the tree)."""
        matches = self.tree.match(tokens)  # longest first
        if not matches:
            return 0, []
        self._index.update(workers)
        positions, urls = self._index.positions, self._urls
        found: list[int] = []
        longest = 0
        for tenant, length in matches:
            position = positions.get(urls[tenant])
            if position is None:  # (not among the healthy workers)
                continue
            if found and length < longest:
                break
            longest = length
            found.append(position)
        return longest, found

    def on_routed(self, request: RequestView, worker: RoutedWorker) -> None:
        if not self._record:
            return
        if request.token_ids:
            self.tree.insert(request.token_ids, self._tenant(worker.url))
            if self.share is not None:
                self.share(request.token_ids, worker.url)
        if request.routing_key is not None:
            self._keys.pin(request.routing_key, worker.url)

    def state(self) -> dict:
        """The prefix tree (tokens it records per worker, its nodes) and the pinned routing keys."""
        return {"tree_nodes": self.tree.node_count, "tree_tokens": self.tree.size,
                "tree_tokens_by_worker": {url: self.tree.tenant_tokens(tenant) for url, tenant in self._tenants.items()},
                "routing_keys": len(self._keys), "routing_keys_by_worker": self._keys.pinned(),
                "routes_shared_with_sibling_processes": self.share is not None}

    def learn(self, token_ids: Sequence[int], url: str) -> None:
        """A route a sibling process made (``smg serve --workers N``): recorded as if made here."""
        self.tree.insert(token_ids, self._tenant(url))

    def on_removed(self, worker: RoutedWorker) -> None:
        tenant = self._tenants.pop(worker.url, None)
        if tenant is not None:
            self.tree.remove_tenant(tenant)
            self._urls[tenant] = None
            self._free_tenants.append(tenant)
        self._keys.drop_url(worker.url)
