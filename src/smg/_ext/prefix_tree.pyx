# cython: language_level=3
# distutils: language = c++
"""Compiled prefix tree of cache-aware routing.

The algorithm, its invariants and its tie-breaks are specified by the twin, ``prefix_tree_py.py``;
this module returns exactly what the twin returns (hypothesis-tested). Differences are only in how:
nodes are slots of C++ vectors (edge ids as int32, children in a hash map by first id, tenants in a
small vector), and a prompt's ids are copied once into an int32 buffer, after which the walk,
the splits and the eviction run with the GIL released.
"""
from cython.operator cimport dereference as deref
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libcpp.queue cimport priority_queue
from libcpp.unordered_map cimport unordered_map
from libcpp.utility cimport pair
from libcpp.vector cimport vector

__all__ = ["PrefixTree", "block_hashes"]


cdef inline uint64_t _finish(uint64_t h) noexcept nogil:
    h ^= h >> 30
    h *= 0xBF58476D1CE4E5B9ULL
    h ^= h >> 27
    h *= 0x94D049BB133111EBULL
    return h ^ (h >> 31)


def block_hashes(tokens, Py_ssize_t block_size, uint64_t parent=0):
    """See the twin's ``block_hashes``."""
    if block_size < 1:
        raise ValueError("block_size must be at least 1")
    cdef vector[int32_t] ids
    _ids(tokens, ids)
    cdef Py_ssize_t n = <Py_ssize_t>ids.size(), blocks = n // block_size, b, j
    cdef vector[uint64_t] out
    cdef uint64_t h
    out.resize(blocks)
    with nogil:
        for b in range(blocks):
            h = parent
            for j in range(b * block_size, (b + 1) * block_size):
                h = (h ^ <uint32_t>ids[j]) * 0x100000001B3ULL
            parent = _finish(h)
            out[b] = parent
    return [out[b] for b in range(blocks)]


cdef int _ids(object tokens, vector[int32_t]& out) except -1:
    """A prompt's ids as int32 (an id outside int32 is refused, as the twin's compare would never
    meet it in an engine's vocabulary)."""
    cdef Py_ssize_t n = len(tokens)
    out.reserve(n)
    for token in tokens:
        out.push_back(<int32_t>token)
    return 0


cdef class PrefixTree:
    """See the twin's module docstring."""

    def __cinit__(self, Py_ssize_t max_tokens_per_tenant):
        if max_tokens_per_tenant < 1:
            raise ValueError("max_tokens_per_tenant must be at least 1")
        self.max_tokens_per_tenant = max_tokens_per_tenant
        self.tick = 0
        self.n_tokens = 0
        self.n_nodes = 0
        self._add(-1)  # the root

    cdef int32_t _add(self, int32_t parent) noexcept nogil:
        cdef int32_t node
        if not self.free_ids.empty():
            node = self.free_ids.back()
            self.free_ids.pop_back()
            self.parents[node] = parent
        else:
            node = <int32_t>self.parents.size()
            self.parents.push_back(parent)
            self.edges.push_back(vector[int32_t]())
            self.children.push_back(unordered_map[int32_t, int32_t]())
            self.tenants.push_back(vector[Tenancy]())
        self.n_nodes += 1
        return node

    cdef void _delete(self, int32_t node) noexcept nogil:
        self.n_tokens -= <int64_t>self.edges[node].size()
        vector[int32_t]().swap(self.edges[node])  # (its memory goes, not just its length)
        unordered_map[int32_t, int32_t]().swap(self.children[node])
        vector[Tenancy]().swap(self.tenants[node])
        self.free_ids.push_back(node)
        self.n_nodes -= 1

    cdef Py_ssize_t _find(self, int32_t node, int32_t tenant) noexcept nogil:
        cdef Py_ssize_t j
        for j in range(<Py_ssize_t>self.tenants[node].size()):
            if self.tenants[node][j].first == tenant:
                return j
        return -1

    cdef bint _is_tenant_leaf(self, int32_t node, int32_t tenant) noexcept nogil:
        for item in self.children[node]:
            if self._find(item.second, tenant) >= 0:
                return False
        return True

    def insert(self, tokens, int tenant):
        if tenant < 0:
            raise ValueError("tenant must be a non-negative int")
        cdef vector[int32_t] ids
        _ids(tokens, ids)
        with nogil:
            self._insert(ids.data(), <Py_ssize_t>ids.size(), tenant)

    cdef void _insert(self, const int32_t* tokens, Py_ssize_t n, int32_t tenant) noexcept nogil:
        cdef int64_t tick, owned = 0
        cdef int32_t node = 0, child, head
        cdef Py_ssize_t i = 0, k, m, j
        self.tick += 1
        tick = self.tick
        found = self.owned.find(tenant)
        if found != self.owned.end():
            owned = deref(found).second
        while i < n:
            it = self.children[node].find(tokens[i])
            if it == self.children[node].end():
                child = self._add(node)
                self.edges[child].assign(tokens + i, tokens + n)
                self.n_tokens += n - i
                self.children[node][tokens[i]] = child
                k = n - i
            else:
                child = deref(it).second
                m = <Py_ssize_t>self.edges[child].size()
                k = 0
                while k < m and i + k < n and self.edges[child][k] == tokens[i + k]:
                    k += 1
                if k < m:  # the prompt leaves this edge: split it there
                    head = self._add(node)
                    self.edges[head].assign(self.edges[child].begin(), self.edges[child].begin() + k)
                    self.tenants[head] = self.tenants[child]
                    self.edges[child].erase(self.edges[child].begin(), self.edges[child].begin() + k)
                    self.parents[child] = head
                    self.children[head][self.edges[child][0]] = child
                    self.children[node][tokens[i]] = head
                    child = head
            j = self._find(child, tenant)
            if j < 0:
                owned += <int64_t>self.edges[child].size()
                self.tenants[child].push_back(Tenancy(tenant, tick))
            else:
                self.tenants[child][j].second = tick
            node = child
            i += k
        self.owned[tenant] = owned
        if owned > self.max_tokens_per_tenant:
            self._evict(tenant, self.max_tokens_per_tenant - self.max_tokens_per_tenant // 8)

    cdef void _evict(self, int32_t tenant, int64_t target) noexcept nogil:
        # a max-heap of (-tick, -node): the least recently stamped leaf first, then the lower id
        cdef priority_queue[pair[int64_t, int32_t]] heap
        cdef int32_t node, parent
        cdef Py_ssize_t j
        cdef int64_t owned = self.owned[tenant]
        for node in range(1, <int32_t>self.parents.size()):
            if self.parents[node] >= 0 or node == 0:
                j = self._find(node, tenant)
                if j >= 0 and self._is_tenant_leaf(node, tenant):
                    heap.push(pair[int64_t, int32_t](-self.tenants[node][j].second, -node))
        while owned > target and not heap.empty():
            node = -heap.top().second
            heap.pop()
            j = self._find(node, tenant)
            self.tenants[node].erase(self.tenants[node].begin() + j)
            owned -= <int64_t>self.edges[node].size()
            parent = self.parents[node]
            if self.tenants[node].empty():  # (no tenant: no children either)
                self.children[parent].erase(self.edges[node][0])
                self.parents[node] = -1
                self._delete(node)
            if parent != 0:
                j = self._find(parent, tenant)
                if j >= 0 and self._is_tenant_leaf(parent, tenant):
                    heap.push(pair[int64_t, int32_t](-self.tenants[parent][j].second, -parent))
        self.owned[tenant] = owned

    def match(self, tokens):
        cdef vector[int32_t] ids
        cdef unordered_map[int32_t, int64_t] met
        _ids(tokens, ids)
        with nogil:
            self._match(ids.data(), <Py_ssize_t>ids.size(), met)
        return sorted([(item.first, item.second) for item in met], key=_longest_first)

    cdef void _match(self, const int32_t* tokens, Py_ssize_t n, unordered_map[int32_t, int64_t]& met) noexcept nogil:
        cdef int32_t node = 0, child
        cdef Py_ssize_t i = 0, k, m
        while i < n:
            it = self.children[node].find(tokens[i])
            if it == self.children[node].end():
                break
            child = deref(it).second
            m = <Py_ssize_t>self.edges[child].size()
            k = 0
            while k < m and i + k < n and self.edges[child][k] == tokens[i + k]:
                k += 1
            i += k
            for tenancy in self.tenants[child]:
                met[tenancy.first] = i
            if k < m:
                break
            node = child

    def remove_tenant(self, int tenant):
        """Forget a tenant (its worker left): nodes left with no tenant go."""
        cdef int32_t node, size = <int32_t>self.parents.size()
        cdef Py_ssize_t j
        cdef vector[char] empty
        empty.resize(size, 0)
        with nogil:
            for node in range(size):
                if node == 0 or self.parents[node] >= 0:
                    j = self._find(node, tenant)
                    if j >= 0:
                        self.tenants[node].erase(self.tenants[node].begin() + j)
                    if node and self.tenants[node].empty():
                        empty[node] = 1
            for node in range(1, size):
                if empty[node] and not empty[self.parents[node]]:  # (the top of an emptied subtree)
                    self.children[self.parents[node]].erase(self.edges[node][0])
            for node in range(1, size):
                if empty[node]:
                    self.parents[node] = -1
                    self._delete(node)
            self.owned.erase(tenant)

    def tenant_tokens(self, int tenant):
        """The edge ids on the tenant's nodes (what eviction bounds)."""
        found = self.owned.find(tenant)
        return deref(found).second if found != self.owned.end() else 0

    @property
    def size(self):
        """Ids held by the tree's edges."""
        return self.n_tokens

    @property
    def node_count(self):
        return self.n_nodes - 1


def _longest_first(item):
    return -item[1], item[0]
