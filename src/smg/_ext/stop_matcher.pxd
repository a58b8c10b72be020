from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.string cimport memcpy


# One automaton's tables as plain C, for walks that run without the GIL.
cdef struct Dfa:
    const uint8_t* classes
    int32_t n_classes
    const int32_t* delta  # NULL: a state without markers
    const int32_t* held_chars
    const int32_t* match
    const int32_t* pattern_chars


cdef extern from "Python.h":
    # Macros over a str's canonical buffer: safe without the GIL while the str is referenced.
    Py_UCS4 PyUnicode_READ(int kind, const void* data, Py_ssize_t index) nogil
    bint Py_UNICODE_ISSPACE(Py_UCS4 ch) nogil


cdef inline Py_ssize_t copy_span(char* out, Py_ssize_t length, int kind, const void* data,
                                 Py_ssize_t start, Py_ssize_t end) noexcept nogil:
    """Append ``data[start:end]`` (code points of ``kind`` bytes) to ``out`` holding ``length``."""
    if end > start:
        memcpy(out + length * kind, <const char*>data + start * kind, (end - start) * kind)
        return length + end - start
    return length


cdef class StopAutomaton:
    cdef readonly list patterns
    cdef uint8_t classes[256]
    cdef int n_classes
    cdef int32_t* delta
    cdef int32_t* held_chars
    cdef int32_t* match
    cdef int32_t* pattern_chars


cdef class StopStringMatcher:
    cdef StopAutomaton a
    cdef bint include_stop
    cdef int32_t state
    cdef str _held

    cdef str _feed(self, str text, bint detect, int32_t* index)
    cdef str _walk(self, str text, bint detect, int32_t* index, Py_ssize_t* after)
    cdef str _finish(self)


cdef class StopChecker:
    cdef tuple stop
    cdef object stop_ids
    cdef long min_tokens
    cdef long max_tokens
    cdef bint include_stop
    cdef StopStringMatcher matcher
    cdef long n
    cdef object done

    cpdef object step(self, long token_id, str text)
    cdef str advance(self, long token_id, str text)
    cdef str _end(self, str text, str reason, object matched)


cpdef StopStringMatcher matcher_for(tuple markers)


cdef class MarkerDriven:
    cdef list _matchers
    cdef int _state
    cdef bint _finished
    # feed_batch: per-state tables (built on first use) and the batch's source text
    cdef Dfa* _dfas
    cdef int _kind
    cdef const void* _data
    cdef Py_ssize_t _delta_index
    cdef object _batch_source, _batch_cuts
    cdef const int64_t* _batch_ends
    cdef Py_ssize_t _batch_n, _batch_text_length, _batch_base, _batch_pending
    cdef int32_t _batch_dfa_state

    cdef Py_ssize_t _on_text(self, str text) except -1
    cdef int _on_marker(self, int index) except -1
    cdef object _take(self)
    cdef int _on_finish(self, str held) except -1
    cdef int _drive(self, str text) except -1
    cpdef object feed(self, text)
    cdef str _carry(self)
    cdef int _batch_begin(self, Py_ssize_t size, Py_ssize_t n_deltas) except -1
    cdef Py_ssize_t _span(self, Py_ssize_t start, Py_ssize_t end) noexcept nogil
    cdef void _marker(self, int index, Py_ssize_t start, Py_ssize_t end) noexcept nogil
    cdef void _delta_end(self) noexcept nogil
    cdef object _batch_end(self, str source, Py_ssize_t released)
    cdef int _load_dfas(self) except -1
    cdef int _batch_prepare(self, text, ends) except -1
    cdef Py_ssize_t _batch_check(self) noexcept nogil
    cdef int _batch_fail(self, Py_ssize_t bad) except -1
    cdef void _batch_run(self) noexcept nogil
    cdef object _batch_complete(self)
    cdef void _batch_abort(self)
    cdef void _free_batch(self)
    cdef void _batch_drop(self)
