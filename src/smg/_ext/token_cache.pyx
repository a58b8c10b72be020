# cython: language_level=3
"""Compiled L1-cache kernel: boundary scan, prefix hashing, lookup and splice.

The algorithm and its invariants are specified by the twin, ``token_cache_py.py``; this module
must return exactly what the twin returns (hypothesis-tested). Differences are only in how:

* the added tokens live in a byte trie (first-child/next-sibling arrays) walked from each position
  with a first-byte filter, and with ``memchr`` when all tokens share one first byte (``<`` for
  Llama 3 and DeepSeek), so plain text is skipped at memory speed;
* the scan, the hashing and large prefix compares run on the str's cached UTF-8 buffer
  (``PyUnicode_AsUTF8AndSize``) with the GIL released, so threads tokenizing misses overlap.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.list cimport PyList_New, PyList_SET_ITEM, PyList_GET_ITEM, PyList_GET_SIZE
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from libc.stdint cimport int32_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memcpy, memset

from smg._ext.token_cache_py import Cut, Entry

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL
    bint PyUnicode_IS_ASCII(object text)

cdef extern from *:
    int __builtin_popcountll(unsigned long long) nogil

cdef uint64_t HASH_SEED = 0xCBF29CE484222325ULL
cdef uint64_t WORD_PRIME = 0x9E3779B97F4A7C15ULL
cdef uint64_t BYTE_PRIME = 0x100000001B3ULL
cdef uint64_t HIGH_BITS = 0x8080808080808080ULL
# Compares shorter than this keep the GIL: releasing it costs more than the memcmp.
cdef Py_ssize_t NOGIL_MEMCMP_BYTES = 16384

# tuple.__new__ builds a Cut without running the namedtuple's Python-level __new__.
cdef object _new_tuple = tuple.__new__

__all__ = ["BoundaryScanner", "Cut", "Entry", "find_longest_prefix", "cut_positions", "splice"]


cdef class _Trie:
    def __cinit__(self):
        self.cap_nodes = 64
        self.nodes = <TrieNode*>malloc(self.cap_nodes * sizeof(TrieNode))
        if self.nodes == NULL:
            raise MemoryError()
        self.nodes[0].first_child = -1
        self.nodes[0].next_sibling = -1
        self.nodes[0].token = -1
        self.nodes[0].byte = 0
        self.n_nodes = 1
        memset(self.first_byte, 0, 256)
        self.n_first_bytes = 0
        self.only_first_byte = 0

    def __dealloc__(self):
        free(self.nodes)

    cdef int32_t _child(self, int32_t node, uint8_t byte) noexcept nogil:
        cdef int32_t c = self.nodes[node].first_child
        while c != -1:
            if self.nodes[c].byte == byte:
                return c
            c = self.nodes[c].next_sibling
        return -1

    cdef int _add(self, bytes data, int32_t token) except -1:
        cdef const uint8_t* p = <const uint8_t*>PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data), i
        cdef int32_t node = 0, child
        cdef TrieNode* grown
        if n == 0:
            return 0
        if not self.first_byte[p[0]]:
            self.first_byte[p[0]] = 1
            self.n_first_bytes += 1
            self.only_first_byte = p[0]
        for i in range(n):
            child = self._child(node, p[i])
            if child == -1:
                if self.n_nodes == self.cap_nodes:
                    grown = <TrieNode*>realloc(self.nodes, 2 * self.cap_nodes * sizeof(TrieNode))
                    if grown == NULL:
                        raise MemoryError()
                    self.nodes = grown
                    self.cap_nodes *= 2
                child = <int32_t>self.n_nodes
                self.n_nodes += 1
                self.nodes[child].first_child = -1
                self.nodes[child].token = -1
                self.nodes[child].byte = p[i]
                self.nodes[child].next_sibling = self.nodes[node].first_child
                self.nodes[node].first_child = child
            node = child
        if self.nodes[node].token == -1:  # a duplicate content keeps its first token, as a dict would
            self.nodes[node].token = token
        return 0

    cdef Py_ssize_t longest(self, const uint8_t* buf, Py_ssize_t pos, Py_ssize_t end,
                            int32_t* token) noexcept nogil:
        """Length of the longest token starting at pos (0: none); its index in *token."""
        cdef int32_t node = 0
        cdef Py_ssize_t i = pos, best = 0
        while i < end:
            node = self._child(node, buf[i])
            if node == -1:
                break
            i += 1
            if self.nodes[node].token != -1:
                best = i - pos
                token[0] = self.nodes[node].token
        return best

    cdef int scan(self, const uint8_t* buf, Py_ssize_t start, Py_ssize_t end,
                  Match** out, Py_ssize_t* n_out, Py_ssize_t* cap_out) noexcept nogil:
        """Append the leftmost-longest matches in buf[start:end] to *out. -1: out of memory."""
        cdef Py_ssize_t i = start, length
        cdef int32_t token = -1
        cdef const uint8_t* hit
        cdef Match* grown
        if self.n_first_bytes == 0:
            return 0
        while i < end:
            if self.n_first_bytes == 1:
                hit = <const uint8_t*>memchr(buf + i, self.only_first_byte, end - i)
                if hit == NULL:
                    return 0
                i = hit - buf
            elif not self.first_byte[buf[i]]:
                i += 1
                continue
            length = self.longest(buf, i, end, &token)
            if length == 0:
                i += 1
                continue
            if n_out[0] == cap_out[0]:
                grown = <Match*>realloc(out[0], (2 * cap_out[0] + 8) * sizeof(Match))
                if grown == NULL:
                    return -1
                out[0] = grown
                cap_out[0] = 2 * cap_out[0] + 8
            out[0][n_out[0]].start = i
            out[0][n_out[0]].end = i + length
            out[0][n_out[0]].token = token
            n_out[0] += 1
            i += length
        return 0


cdef inline uint64_t _load64(const uint8_t* p) noexcept nogil:
    cdef uint64_t w
    memcpy(&w, p, 8)  # little-endian hosts only (x86-64, arm64), as the twin's int.from_bytes
    return w


cdef inline Py_ssize_t _count_chars(const uint8_t* buf, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
    """Code points in buf[start:end]: bytes minus UTF-8 continuation bytes (0b10xxxxxx)."""
    cdef Py_ssize_t i = start, continuation = 0
    cdef uint64_t w
    while i + 8 <= end:
        w = _load64(buf + i)
        continuation += __builtin_popcountll(w & ~(w << 1) & HIGH_BITS)
        i += 8
    while i < end:
        continuation += (buf[i] & 0xC0) == 0x80
        i += 1
    return (end - start) - continuation


cdef inline uint64_t _mix_segment(uint64_t h, const uint8_t* buf, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
    """See token_cache_py.mix_segment."""
    cdef Py_ssize_t i = start
    while i + 8 <= end:
        h = (h ^ _load64(buf + i)) * WORD_PRIME
        h ^= h >> 29
        i += 8
    while i < end:
        h = (h ^ buf[i]) * BYTE_PRIME
        i += 1
    h = (h ^ <uint64_t>(end - start)) * WORD_PRIME
    return h ^ (h >> 32)


cdef class BoundaryScanner:
    """See ``token_cache_py.BoundaryScanner``."""

    def __cinit__(self, raw_tokens, normalized_tokens=()):
        self.raw = _Trie()
        self.normalized = _Trie()
        tokens = [(t, 0) for t in raw_tokens] + [(t, 1) for t in normalized_tokens]
        self.n_tokens = len(tokens)
        self.token_ids = <int32_t*>malloc(max(1, self.n_tokens) * sizeof(int32_t))
        self.token_is_cut = <uint8_t*>malloc(max(1, self.n_tokens))
        if self.token_ids == NULL or self.token_is_cut == NULL:
            raise MemoryError()
        for index, ((content, token_id, is_cut), second_pass) in enumerate(tokens):
            self.token_ids[index] = token_id
            self.token_is_cut[index] = bool(is_cut)
            (self.normalized if second_pass else self.raw)._add(content.encode("utf-8"), index)

    def __dealloc__(self):
        free(self.token_ids)
        free(self.token_is_cut)

    cdef int matches(self, const uint8_t* buf, Py_ssize_t size, Match** out, Py_ssize_t* n_out) noexcept nogil:
        """The added-token matches of buf in order, as ``tokenizers`` finds them: leftmost-longest
        over the raw text, then the normalized tokens in the gaps. *out is malloc'ed (the caller
        frees it); -1: out of memory."""
        cdef Match* first = NULL
        cdef Match* merged = NULL
        cdef Match* grown
        cdef Py_ssize_t n_first = 0, cap_first = 0, n_merged = 0, cap_merged = 0, j, gap_start = 0
        out[0], n_out[0] = NULL, 0
        if self.raw.scan(buf, 0, size, &first, &n_first, &cap_first):
            free(first)
            return -1
        if not self.normalized.n_first_bytes:
            out[0], n_out[0] = first, n_first
            return 0
        for j in range(n_first + 1):
            if self.normalized.scan(buf, gap_start, first[j].start if j < n_first else size,
                                    &merged, &n_merged, &cap_merged):
                free(first)
                free(merged)
                return -1
            if j < n_first:
                if n_merged == cap_merged:
                    grown = <Match*>realloc(merged, (2 * cap_merged + 8) * sizeof(Match))
                    if grown == NULL:
                        free(first)
                        free(merged)
                        return -1
                    merged = grown
                    cap_merged = 2 * cap_merged + 8
                merged[n_merged] = first[j]
                n_merged += 1
                gap_start = first[j].end
        free(first)
        out[0], n_out[0] = merged, n_merged
        return 0

    def scan(self, str text):
        cdef Py_ssize_t size = 0
        cdef const uint8_t* buf = <const uint8_t*>PyUnicode_AsUTF8AndSize(text, &size)
        cdef Match* matches = NULL
        cdef Py_ssize_t n = 0, j
        cdef Py_ssize_t pos = 0, chars = 0
        cdef uint64_t h = HASH_SEED
        cdef int failed = 0
        cdef bint ascii = PyUnicode_IS_ASCII(text)
        cdef Py_ssize_t* char_starts = NULL
        cdef uint64_t* hashes = NULL
        cdef int32_t t
        try:
            with nogil:
                failed = self.matches(buf, size, &matches, &n)
                if not failed and n:
                    char_starts = <Py_ssize_t*>malloc(n * sizeof(Py_ssize_t))
                    hashes = <uint64_t*>malloc(n * sizeof(uint64_t))
                    if char_starts == NULL or hashes == NULL:
                        failed = 1
                    else:
                        for j in range(n):
                            if not self.token_is_cut[matches[j].token]:
                                continue
                            # An ASCII str's char index is its byte index: no counting.
                            if ascii:
                                char_starts[j] = matches[j].start
                            else:
                                chars += _count_chars(buf, pos, matches[j].start)
                                char_starts[j] = chars
                                chars += _count_chars(buf, matches[j].start, matches[j].end)
                            h = _mix_segment(h, buf, pos, matches[j].end)
                            hashes[j] = h
                            pos = matches[j].end
            if failed:
                raise MemoryError()
            cuts = []
            for j in range(n):
                t = matches[j].token
                if self.token_is_cut[t]:
                    cuts.append(_new_tuple(Cut, (char_starts[j], matches[j].end, hashes[j], self.token_ids[t])))
            return cuts
        finally:
            free(matches)
            free(char_starts)
            free(hashes)


def find_longest_prefix(list cuts, str text, dict table):
    """See ``token_cache_py.find_longest_prefix``."""
    cdef Py_ssize_t k, byte_end, size = 0
    cdef const char* buf = NULL
    cdef const char* cached
    cdef PyObject* found
    cdef bytes utf8
    cdef int same
    for k in range(len(cuts) - 1, -1, -1):
        cut = cuts[k]
        found = PyDict_GetItem(table, cut[2])
        if found == NULL:
            continue
        entry, n_ids = <object>found
        utf8 = entry.utf8
        byte_end = cut[1]
        if PyBytes_GET_SIZE(utf8) < byte_end:
            continue
        if buf == NULL:
            buf = PyUnicode_AsUTF8AndSize(text, &size)
        cached = PyBytes_AS_STRING(utf8)
        if byte_end >= NOGIL_MEMCMP_BYTES:
            with nogil:
                same = memcmp(cached, buf, byte_end) == 0
        else:
            same = memcmp(cached, buf, byte_end) == 0
        if same:
            return k, entry, n_ids
    return -1, None, 0


def cut_positions(list ids, list cuts, bytes cut_ids):
    """See ``token_cache_py.cut_positions``."""
    cdef const uint8_t* bitmap = <const uint8_t*>PyBytes_AS_STRING(cut_ids)
    cdef Py_ssize_t nbits = PyBytes_GET_SIZE(cut_ids) * 8, p, j = 0, n_cuts = len(cuts)
    cdef long token_id
    positions = []
    for p in range(PyList_GET_SIZE(ids)):
        token_id = <object>PyList_GET_ITEM(ids, p)
        if 0 <= token_id < nbits and (bitmap[token_id >> 3] >> (token_id & 7)) & 1:
            if j == n_cuts or cuts[j][3] != token_id:
                return None
            positions.append(p + 1)
            j += 1
    return positions if j == n_cuts else None


def splice(list prefix_ids, Py_ssize_t n_prefix, list tail_ids, Py_ssize_t skip):
    """See ``token_cache_py.splice``."""
    cdef Py_ssize_t n_tail = PyList_GET_SIZE(tail_ids) - skip, i
    cdef object item
    if n_prefix > PyList_GET_SIZE(prefix_ids) or n_tail < 0 or n_prefix < 0 or skip < 0:
        raise ValueError("splice out of range")
    out = PyList_New(n_prefix + n_tail)
    for i in range(n_prefix):
        item = <object>PyList_GET_ITEM(prefix_ids, i)
        Py_INCREF(item)
        PyList_SET_ITEM(out, i, item)
    for i in range(n_tail):
        item = <object>PyList_GET_ITEM(tail_ids, skip + i)
        Py_INCREF(item)
        PyList_SET_ITEM(out, n_prefix + i, item)
    return out
