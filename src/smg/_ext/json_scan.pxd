cdef class JsonScanner:
    cdef public bint started
    cdef public int depth
    cdef public bint in_string
    cdef public bint escape
    cdef public bint scalar
    cdef public bint done

    cpdef Py_ssize_t feed(self, str text) except -2
    cdef Py_ssize_t _scan(self, int kind, void* data, Py_ssize_t n) noexcept nogil
