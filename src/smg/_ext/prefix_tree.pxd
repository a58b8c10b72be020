from libc.stdint cimport int32_t, int64_t
from libcpp.unordered_map cimport unordered_map
from libcpp.utility cimport pair
from libcpp.vector cimport vector

ctypedef pair[int32_t, int64_t] Tenancy  # (tenant, tick last stamped)


cdef class PrefixTree:
    cdef readonly Py_ssize_t max_tokens_per_tenant
    # one slot per node id (root: 0); a deleted node's slot is emptied and its id reused
    cdef vector[vector[int32_t]] edges
    cdef vector[int32_t] parents
    cdef vector[unordered_map[int32_t, int32_t]] children  # first id of the edge -> child
    cdef vector[vector[Tenancy]] tenants
    cdef vector[int32_t] free_ids
    cdef unordered_map[int32_t, int64_t] owned  # tenant -> edge ids on its nodes
    cdef int64_t tick
    cdef int64_t n_tokens
    cdef Py_ssize_t n_nodes

    cdef int32_t _add(self, int32_t parent) noexcept nogil
    cdef void _delete(self, int32_t node) noexcept nogil
    cdef Py_ssize_t _find(self, int32_t node, int32_t tenant) noexcept nogil
    cdef bint _is_tenant_leaf(self, int32_t node, int32_t tenant) noexcept nogil
    cdef void _insert(self, const int32_t* tokens, Py_ssize_t n, int32_t tenant) noexcept nogil
    cdef void _evict(self, int32_t tenant, int64_t target) noexcept nogil
    cdef void _match(self, const int32_t* tokens, Py_ssize_t n, unordered_map[int32_t, int64_t]& met) noexcept nogil
