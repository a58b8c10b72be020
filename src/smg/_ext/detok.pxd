from libc.stdint cimport uint8_t


cdef class TokenTable:
    cdef char* data
    cdef Py_ssize_t* offsets
    cdef uint8_t* flags
    cdef list texts
    cdef Py_ssize_t n
    cdef readonly bint cleanup


cdef class ByteStreamDecoder:
    cdef TokenTable table
    cdef bint skip
    cdef uint8_t pending[4]
    cdef int n_pending
    cdef str held

    cpdef str step(self, long token_id)
    cdef str _emit(self, const uint8_t* buf, Py_ssize_t total)
    cdef uint8_t* _gather(self, const long* ids, Py_ssize_t n, Py_ssize_t* total) noexcept nogil
