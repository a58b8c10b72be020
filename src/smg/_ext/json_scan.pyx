# cython: language_level=3
"""Compiled JSON value-end scanner; the algorithm is specified by ``json_scan_py.py``.

The loop reads the str's code points straight from its compact storage (any of the three
PEP 393 kinds), releasing the GIL for long texts only: for a token-sized delta the release and
re-take cost more than the scan, and hand the GIL to any waiting thread (which then makes this
one wait to get it back).
"""

cdef extern from "Python.h":
    int PyUnicode_KIND(object text)
    void* PyUnicode_DATA(object text)
    Py_UCS4 PyUnicode_READ(int kind, void* data, Py_ssize_t index) nogil

__all__ = ["JsonScanner"]

cdef Py_ssize_t NOGIL_MIN_CHARS = 4096


cdef class JsonScanner:
    """See ``json_scan_py.JsonScanner``."""

    def __cinit__(self):
        self.started = False
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.scalar = False
        self.done = False

    cpdef Py_ssize_t feed(self, str text) except -2:
        cdef int kind = PyUnicode_KIND(text)
        cdef void* data = PyUnicode_DATA(text)
        cdef Py_ssize_t n = len(text), result
        if self.done:
            return 0
        if n < NOGIL_MIN_CHARS:
            return self._scan(kind, data, n)
        with nogil:
            result = self._scan(kind, data, n)
        return result

    cdef Py_ssize_t _scan(self, int kind, void* data, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t i, result = -1
        cdef Py_UCS4 c
        for i in range(n):
            c = PyUnicode_READ(kind, data, i)
            if not self.started:
                if c == u" " or c == u"\t" or c == u"\r" or c == u"\n":
                    continue
                self.started = True
                if c == u"{" or c == u"[":
                    self.depth = 1
                elif c == u'"':
                    self.in_string = True
                else:
                    self.scalar = True
                continue
            if self.scalar:
                if (c == u"," or c == u"}" or c == u"]" or c == u" " or c == u"\t" or c == u"\r"
                        or c == u"\n"):
                    self.done = True
                    result = i
                    break
                continue
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif c == u"\\":
                    self.escape = True
                elif c == u'"':
                    self.in_string = False
                    if self.depth == 0:
                        self.done = True
                        result = i + 1
                        break
                continue
            if c == u'"':
                self.in_string = True
            elif c == u"{" or c == u"[":
                self.depth += 1
            elif c == u"}" or c == u"]":
                self.depth -= 1
                if self.depth == 0:
                    self.done = True
                    result = i + 1
                    break
        return result
