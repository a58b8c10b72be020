# cython: language_level=3
"""Compiled incremental detokenizer; the algorithm is specified by ``detok_py.py``.

The table keeps every token's bytes in one buffer with an offsets array and a flags byte
(special / complete UTF-8), plus the prebuilt str of each complete token. A step is a bounds
check, a flags test and, in the common case, returning that str; a token that splits a character
goes through a small stack buffer and ``PyUnicode_DecodeUTF8(..., "replace")``.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

from smg._ext.detok_py import CleanupStage, clean_up_tokenization, cleanup_cut
from cpython.list cimport PyList_GET_ITEM
from cpython.object cimport PyObject
from libc.stdint cimport uint8_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cdef extern from "Python.h":
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)

cdef enum:
    SPECIAL = 1
    COMPLETE = 2
    CLEAN_SAFE = 4
    STACK_BYTES = 256
    NOGIL_MIN_TOKENS = 4096  # feed releases the GIL from this many ids (fewer: the copy is cheaper)

# The clean-up stage for the general path is not hot: it is shared with the twin.
__all__ = ["TokenTable", "ByteStreamDecoder", "incomplete_tail", "CleanupStage", "clean_up_tokenization",
           "cleanup_cut"]


cdef inline int _incomplete_tail(const uint8_t* buf, Py_ssize_t n) noexcept nogil:
    """See detok_py.incomplete_tail."""
    cdef int back, need
    cdef uint8_t lead, second, low, high
    for back in range(1, (3 if n > 3 else <int>n) + 1):
        lead = buf[n - back]
        if (lead & 0xC0) == 0x80:
            continue
        if 0xC2 <= lead <= 0xDF:
            need = 2
        elif 0xE0 <= lead <= 0xEF:
            need = 3
        elif 0xF0 <= lead <= 0xF4:
            need = 4
        else:
            return 0
        if back >= need:
            return 0
        if back >= 2:
            second = buf[n - back + 1]
            low, high = 0x80, 0xBF
            if lead == 0xE0:
                low = 0xA0
            elif lead == 0xED:
                high = 0x9F
            elif lead == 0xF0:
                low = 0x90
            elif lead == 0xF4:
                high = 0x8F
            if second < low or second > high:
                return 0
        return back
    return 0


cdef inline bint _is_hold_tail(str text, Py_ssize_t start, Py_ssize_t end):
    """text[start:end] in ("", "'", "n", "n'", "'v", "'r"): see detok_py._HOLD_TAILS."""
    cdef Py_ssize_t n = end - start
    cdef Py_UCS4 a, b
    if n == 0:
        return True
    if n > 2:
        return False
    a = text[start]
    if n == 1:
        return a == u"'" or a == u"n"
    b = text[start + 1]
    return (a == u"n" and b == u"'") or (a == u"'" and (b == u"v" or b == u"r"))


cdef Py_ssize_t _cleanup_cut(str text):
    """See detok_py.cleanup_cut."""
    cdef Py_ssize_t end = len(text), space
    while True:
        space = end - 1
        while space >= 0 and text[space] != u" ":
            space -= 1
        if space < 0 or not _is_hold_tail(text, space + 1, end):
            return end
        end = space


cdef str _clean(str text):
    """clean_up_tokenization, skipping the ten str.replace calls when no pattern can occur."""
    cdef Py_ssize_t i, n = len(text)
    cdef Py_UCS4 c
    for i in range(n - 1):
        if text[i] == u" ":
            c = text[i + 1]
            if c == u"." or c == u"?" or c == u"!" or c == u"," or c == u"'" or c == u"n":
                return clean_up_tokenization(text)
    return text


def incomplete_tail(bytes buf):
    return _incomplete_tail(<const uint8_t*>PyBytes_AS_STRING(buf), PyBytes_GET_SIZE(buf))


cdef class TokenTable:
    """See ``detok_py.TokenTable``."""

    def __cinit__(self, token_bytes, special_ids, bint cleanup=False):
        cdef Py_ssize_t i, total = 0, size
        cdef bytes b
        self.cleanup = cleanup
        self.n = len(token_bytes)
        chunks = [x if x is not None else b"" for x in token_bytes]
        for b in chunks:
            total += PyBytes_GET_SIZE(b)
        self.data = <char*>malloc(total + 1)
        self.offsets = <Py_ssize_t*>malloc((self.n + 1) * sizeof(Py_ssize_t))
        self.flags = <uint8_t*>malloc(self.n + 1)
        if self.data == NULL or self.offsets == NULL or self.flags == NULL:
            raise MemoryError()
        self.texts = [None] * self.n
        total = 0
        for i in range(self.n):
            b = chunks[i]
            size = PyBytes_GET_SIZE(b)
            memcpy(self.data + total, PyBytes_AS_STRING(b), size)
            self.offsets[i] = total
            total += size
            self.flags[i] = 0
            try:
                text = b.decode("utf-8")
            except UnicodeDecodeError:
                continue
            self.flags[i] |= COMPLETE
            if cleanup_cut(text) == len(text):
                self.flags[i] |= CLEAN_SAFE
            self.texts[i] = clean_up_tokenization(text) if cleanup else text
        self.offsets[self.n] = total
        for i in special_ids:
            if 0 <= i < self.n:
                self.flags[i] |= SPECIAL

    def __dealloc__(self):
        free(self.data)
        free(self.offsets)
        free(self.flags)

    def __len__(self):
        return self.n


cdef class ByteStreamDecoder:
    """See ``detok_py.ByteStreamDecoder``."""

    def __cinit__(self, TokenTable table not None, bint skip_special_tokens=True):
        self.table = table
        self.skip = skip_special_tokens
        self.n_pending = 0
        self.held = ""

    cpdef str step(self, long token_id):
        cdef TokenTable table = self.table
        cdef uint8_t flags
        cdef Py_ssize_t start, size, total
        cdef uint8_t stack[STACK_BYTES]
        cdef uint8_t* buf
        if token_id < 0:
            raise ValueError(f"token id {token_id} is negative")
        if token_id >= table.n:
            return ""
        flags = table.flags[token_id]
        if self.skip and flags & SPECIAL:
            return ""
        if (self.n_pending == 0 and flags & COMPLETE and (flags & CLEAN_SAFE or not table.cleanup)
                and not self.held):
            return <str>PyList_GET_ITEM(table.texts, token_id)
        start = table.offsets[token_id]
        size = table.offsets[token_id + 1] - start
        total = self.n_pending + size
        if total <= STACK_BYTES:
            buf = &stack[0]
        else:
            buf = <uint8_t*>malloc(total)
        if buf == NULL:
            raise MemoryError()
        try:
            memcpy(buf, self.pending, self.n_pending)
            memcpy(buf + self.n_pending, table.data + start, size)
            return self._emit(buf, total)
        finally:
            if buf != &stack[0]:
                free(buf)

    cdef str _emit(self, const uint8_t* buf, Py_ssize_t total):
        """Hold an incomplete UTF-8 tail, decode the rest, and stream the clean-up if on."""
        cdef int keep = _incomplete_tail(buf, total)
        memcpy(self.pending, buf + total - keep, keep)
        self.n_pending = keep
        text = PyUnicode_DecodeUTF8(<const char*>buf, total - keep, "replace")
        if not self.table.cleanup:
            return text
        if self.held:
            text = self.held + text
        cut = _cleanup_cut(text)
        self.held = text[cut:]
        return _clean(text[:cut])

    def feed(self, ids):
        """Decode a batch of ids at once: the bytes are gathered in C (without the GIL for long
        batches only: for a few tokens the release costs more than the copy), one str is built."""
        cdef Py_ssize_t n = len(ids), i, total = 0
        cdef long* arr
        cdef uint8_t* buf = NULL
        if n == 1:
            return self.step(ids[0])
        arr = <long*>malloc(max(n, 1) * sizeof(long))
        if arr == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                arr[i] = ids[i]
                if arr[i] < 0:
                    raise ValueError(f"token id {arr[i]} is negative")
            if n < NOGIL_MIN_TOKENS:
                buf = self._gather(arr, n, &total)
            else:
                with nogil:
                    buf = self._gather(arr, n, &total)
            if buf == NULL:
                raise MemoryError()
            return self._emit(buf, total)
        finally:
            free(arr)
            free(buf)

    cdef uint8_t* _gather(self, const long* ids, Py_ssize_t n, Py_ssize_t* total) noexcept nogil:
        """The pending bytes then each id's bytes, in a new buffer (NULL: out of memory)."""
        cdef const char* data = self.table.data
        cdef const Py_ssize_t* offsets = self.table.offsets
        cdef const uint8_t* flags = self.table.flags
        cdef Py_ssize_t i, pos, start, size, length = self.n_pending, n_table = self.table.n
        cdef long token_id
        cdef uint8_t* buf
        for i in range(n):
            token_id = ids[i]
            if token_id < n_table and not (self.skip and flags[token_id] & SPECIAL):
                length += offsets[token_id + 1] - offsets[token_id]
        buf = <uint8_t*>malloc(length + 1)
        if buf == NULL:
            return NULL
        memcpy(buf, self.pending, self.n_pending)
        pos = self.n_pending
        for i in range(n):
            token_id = ids[i]
            if token_id < n_table and not (self.skip and flags[token_id] & SPECIAL):
                start = offsets[token_id]
                size = offsets[token_id + 1] - start
                memcpy(buf + pos, data + start, size)
                pos += size
        total[0] = length
        return buf

    def start_output(self):
        """See ``detok_py.ByteStreamDecoder.start_output``."""
        self.held = ""

    def finish(self):
        text = self.held + PyUnicode_DecodeUTF8(<const char*>self.pending, self.n_pending, "replace")
        self.n_pending = 0
        self.held = ""
        return clean_up_tokenization(text) if self.table.cleanup else text
