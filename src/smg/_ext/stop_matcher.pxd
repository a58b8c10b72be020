from libc.stdint cimport int32_t, uint8_t


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
    cdef object _end(self, object delta)


cpdef StopStringMatcher matcher_for(tuple markers)


cdef class MarkerDriven:
    cdef list _matchers
    cdef int _state
    cdef bint _finished

    cdef int _on_text(self, str text) except -1
    cdef int _on_marker(self, int index) except -1
    cdef object _take(self)
    cdef bint _held_is_text(self)
    cdef int _drive(self, str text) except -1
    cpdef object feed(self, text)
