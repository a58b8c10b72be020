"""Reference twin of ``prefix_tree.pyx``: the approximate prefix tree of cache-aware routing.

The tree holds the token ids of prompts routed to each worker (a *tenant*, a small int), so that
a new prompt can go where its longest prefix probably still sits in an engine's KV cache. It is
approximate: it records what was sent, not what the engine kept.

* **Shape.** A radix tree: each node's edge is a run of ids, children keyed by their edge's first
  id. A node records its tenants, each with the logical time (one tick per insert) it last saw
  them. A child's tenants are always a subset of its parent's.
* **Insert** walks the prompt, splitting an edge where the prompt leaves it and adding one node for
  the rest; the tenant is stamped on every node of the path.
* **Match** walks the prompt as far as edges agree (a partly matched edge counts its matched part)
  and reports each tenant met with the deepest position it was met at: ``(tenant, tokens)``,
  longest first, then by tenant.
* **Node ids** are reused, the last freed first; eviction breaks ties by them, so both
  implementations allocate them alike.
* **Eviction.** Each tenant owns the edge ids of the nodes it is on. Past ``max_tokens_per_tenant``
  the insert evicts the tenant's least recently stamped leaves (ties: the older node) until it holds
  at most 7/8 of the bound (so evictions come in batches, not on every insert); a node left with
  no tenant is deleted.

``block_hashes`` (for ``kv_events``) chains a 64-bit hash over a prompt's full blocks of ids:
per block, FNV-1a over the ids as 32-bit words starting from the parent's hash, then the
splitmix64 finaliser; the first block's parent is 0 (or the hash of the block before).

Both implementations must give the same results for the same calls (hypothesis-tested).
"""
from __future__ import annotations

import heapq
from typing import Sequence

_MASK = (1 << 64) - 1
_FNV_PRIME = 0x100000001B3


def _finish(h: int) -> int:
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & _MASK
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & _MASK
    return h ^ (h >> 31)


def block_hashes(tokens: Sequence[int], block_size: int, parent: int = 0) -> list[int]:
    """The chained hashes of ``tokens``' full blocks of ``block_size`` ids, the first chained
    from ``parent`` (see the docstring)."""
    if block_size < 1:
        raise ValueError("block_size must be at least 1")
    out = []
    for start in range(0, len(tokens) - block_size + 1, block_size):
        h = parent
        for token in tokens[start:start + block_size]:
            h = ((h ^ (token & 0xFFFFFFFF)) * _FNV_PRIME) & _MASK
        parent = _finish(h)
        out.append(parent)
    return out


class _Node:
    __slots__ = ("edge", "parent", "children", "tenants")

    def __init__(self, edge: list[int], parent: int) -> None:
        self.edge = edge
        self.parent = parent
        self.children: dict[int, int] = {}
        self.tenants: dict[int, int] = {}  # tenant -> tick last stamped


def _common(edge: list[int], tokens: Sequence[int], start: int) -> int:
    n = min(len(edge), len(tokens) - start)
    k = 0
    while k < n and edge[k] == tokens[start + k]:
        k += 1
    return k


class PrefixTree:
    """See the module docstring."""

    def __init__(self, max_tokens_per_tenant: int) -> None:
        if max_tokens_per_tenant < 1:
            raise ValueError("max_tokens_per_tenant must be at least 1")
        self.max_tokens_per_tenant = max_tokens_per_tenant
        self._nodes: dict[int, _Node] = {0: _Node([], -1)}
        self._next_id = 1
        self._free: list[int] = []  # ids of deleted nodes, reused last freed first
        self._tick = 0
        self._owned: dict[int, int] = {}  # tenant -> edge ids on its nodes
        self._size = 0

    def _add(self, edge: list[int], parent: int) -> int:
        if self._free:
            node_id = self._free.pop()
        else:
            node_id = self._next_id
            self._next_id += 1
        self._nodes[node_id] = _Node(edge, parent)
        self._size += len(edge)
        return node_id

    def _delete(self, node_id: int) -> None:
        self._size -= len(self._nodes.pop(node_id).edge)
        self._free.append(node_id)

    def insert(self, tokens: Sequence[int], tenant: int) -> None:
        if tenant < 0:
            raise ValueError("tenant must be a non-negative int")
        self._tick += 1
        tick, nodes, owned = self._tick, self._nodes, self._owned.get(tenant, 0)
        node_id, i, n = 0, 0, len(tokens)
        while i < n:
            node = nodes[node_id]
            child_id = node.children.get(tokens[i])
            if child_id is None:
                child_id = self._add(list(tokens[i:]), node_id)
                node.children[tokens[i]] = child_id
                k = n - i
            else:
                child = nodes[child_id]
                k = _common(child.edge, tokens, i)
                if k < len(child.edge):  # the prompt leaves this edge: split it there
                    head_id = self._add(child.edge[:k], node_id)
                    head = nodes[head_id]
                    head.tenants = dict(child.tenants)
                    self._size -= k
                    child.edge = child.edge[k:]
                    child.parent = head_id
                    head.children[child.edge[0]] = child_id
                    node.children[tokens[i]] = head_id
                    child_id = head_id
            child = nodes[child_id]
            if tenant not in child.tenants:
                owned += len(child.edge)
            child.tenants[tenant] = tick
            node_id, i = child_id, i + k
        self._owned[tenant] = owned
        if owned > self.max_tokens_per_tenant:
            self._evict(tenant, self.max_tokens_per_tenant - self.max_tokens_per_tenant // 8)

    def _is_tenant_leaf(self, node: _Node, tenant: int) -> bool:
        nodes = self._nodes
        return not any(tenant in nodes[c].tenants for c in node.children.values())

    def _evict(self, tenant: int, target: int) -> None:
        nodes = self._nodes
        heap = [(node.tenants[tenant], node_id) for node_id, node in nodes.items()
                if node_id and tenant in node.tenants and self._is_tenant_leaf(node, tenant)]
        heapq.heapify(heap)
        owned = self._owned[tenant]
        while owned > target and heap:
            _, node_id = heapq.heappop(heap)
            node = nodes[node_id]
            del node.tenants[tenant]
            owned -= len(node.edge)
            parent = nodes[node.parent]
            if not node.tenants:  # (no tenant: no children either)
                del parent.children[node.edge[0]]
                self._delete(node_id)
            if node.parent and tenant in parent.tenants and self._is_tenant_leaf(parent, tenant):
                heapq.heappush(heap, (parent.tenants[tenant], node.parent))
        self._owned[tenant] = owned

    def match(self, tokens: Sequence[int]) -> list[tuple[int, int]]:
        nodes = self._nodes
        met: dict[int, int] = {}
        node, i, n = nodes[0], 0, len(tokens)
        while i < n:
            child_id = node.children.get(tokens[i])
            if child_id is None:
                break
            child = nodes[child_id]
            k = _common(child.edge, tokens, i)
            i += k
            for tenant in child.tenants:
                met[tenant] = i
            if k < len(child.edge):
                break
            node = child
        return sorted(met.items(), key=lambda item: (-item[1], item[0]))

    def remove_tenant(self, tenant: int) -> None:
        """Forget a tenant (its worker left): nodes left with no tenant go."""
        nodes = self._nodes
        for node in nodes.values():
            node.tenants.pop(tenant, None)
        empty = {node_id for node_id, node in nodes.items() if node_id and not node.tenants}
        for node_id in sorted(empty):
            node = nodes[node_id]
            if node.parent not in empty:  # (the top of an emptied subtree)
                del nodes[node.parent].children[node.edge[0]]
        for node_id in sorted(empty):
            self._delete(node_id)
        self._owned.pop(tenant, None)

    def tenant_tokens(self, tenant: int) -> int:
        """The edge ids on the tenant's nodes (what eviction bounds)."""
        return self._owned.get(tenant, 0)

    @property
    def size(self) -> int:
        """Ids held by the tree's edges."""
        return self._size

    @property
    def node_count(self) -> int:
        return len(self._nodes) - 1
