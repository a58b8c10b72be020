# cython: language_level=3
"""Compiled JSON value-end scanner; the algorithm is specified by ``json_scan_py.py`` and written
once, as ``json_scan`` in ``json_scan.pxd`` (the tool machines run it on their own buffers).

``feed`` reads the str's code points straight from its compact storage (any of the three PEP 393
kinds), releasing the GIL for long texts only: for a token-sized delta the release and re-take
cost more than the scan, and hand the GIL to any waiting thread (which then makes this one wait
to get it back).
"""

cdef extern from "Python.h":
    int PyUnicode_KIND(object text)
    void* PyUnicode_DATA(object text)

__all__ = ["BracketScanner", "JsonScanner"]

cdef Py_ssize_t NOGIL_MIN_CHARS = 4096


cdef class JsonScanner:
    """See ``json_scan_py.JsonScanner``."""

    def __cinit__(self):
        json_scan_reset(&self.s)

    @property
    def started(self):
        return self.s.started

    @property
    def depth(self):
        return self.s.depth

    @property
    def in_string(self):
        return self.s.in_string

    @property
    def escape(self):
        return self.s.escape

    @property
    def done(self):
        return self.s.done

    cpdef Py_ssize_t feed(self, str text) except -2:
        cdef int kind = PyUnicode_KIND(text)
        cdef void* data = PyUnicode_DATA(text)
        cdef Py_ssize_t n = len(text), result
        if self.s.done:
            return 0
        if n < NOGIL_MIN_CHARS:
            return json_scan(&self.s, kind, data, 0, n)
        with nogil:
            result = json_scan(&self.s, kind, data, 0, n)
        return result


cdef class BracketScanner:
    """See ``json_scan_py.BracketScanner`` (a delta is short: the scan keeps the GIL)."""

    def __cinit__(self):
        self.depth = 0
        self._quote = 0
        self.escape = False
        self.done = False

    @property
    def quote(self):
        return chr(self._quote) if self._quote else ""

    cpdef Py_ssize_t feed(self, str text) except -2:
        cdef int kind = PyUnicode_KIND(text)
        cdef void* data = PyUnicode_DATA(text)
        cdef Py_ssize_t i
        cdef Py_UCS4 c
        if self.done:
            return 0
        for i in range(len(text)):
            c = PyUnicode_READ(kind, data, i)
            if self._quote:
                if self.escape:
                    self.escape = False
                elif c == u"\\":
                    self.escape = True
                elif c == self._quote:
                    self._quote = 0
            elif c == u"'" or c == u'"':
                self._quote = c
            elif c == u"[" or c == u"(" or c == u"{":
                self.depth += 1
            elif c == u"]" or c == u")" or c == u"}":
                self.depth -= 1
                if self.depth == 0:
                    self.done = True
                    return i + 1
        return -1
