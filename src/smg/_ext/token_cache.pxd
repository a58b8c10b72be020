from libc.stdint cimport int32_t, uint8_t, uint64_t


cdef struct TrieNode:
    int32_t first_child   # -1: leaf
    int32_t next_sibling  # -1: last child
    int32_t token         # index into the scanner's token table, -1: no token ends here
    uint8_t byte


cdef struct Match:
    Py_ssize_t start
    Py_ssize_t end
    int32_t token


cdef class _Trie:
    cdef TrieNode* nodes
    cdef Py_ssize_t n_nodes
    cdef Py_ssize_t cap_nodes
    cdef uint8_t first_byte[256]
    cdef int n_first_bytes
    cdef uint8_t only_first_byte

    cdef int32_t _child(self, int32_t node, uint8_t byte) noexcept nogil
    cdef int _add(self, bytes data, int32_t token) except -1
    cdef Py_ssize_t longest(self, const uint8_t* buf, Py_ssize_t pos, Py_ssize_t end,
                            int32_t* token) noexcept nogil
    cdef int scan(self, const uint8_t* buf, Py_ssize_t start, Py_ssize_t end,
                  Match** out, Py_ssize_t* n_out, Py_ssize_t* cap_out) noexcept nogil


cdef class BoundaryScanner:
    cdef _Trie raw
    cdef _Trie normalized
    cdef int32_t* token_ids
    cdef uint8_t* token_is_cut
    cdef Py_ssize_t n_tokens

    cdef int matches(self, const uint8_t* buf, Py_ssize_t size, Match** out, Py_ssize_t* n_out) noexcept nogil
