cdef extern from "Python.h":
    Py_UCS4 PyUnicode_READ(int kind, const void* data, Py_ssize_t index) nogil


# The scanner's state as a plain struct: the tool machines embed it (and copy it to undo a batch).
cdef struct JsonScan:
    bint started
    int depth
    bint in_string
    bint escape
    bint scalar
    bint done


cdef inline void json_scan_reset(JsonScan* s) noexcept nogil:
    s.started = s.in_string = s.escape = s.scalar = s.done = False
    s.depth = 0


cdef inline Py_ssize_t json_scan(JsonScan* s, int kind, const void* data, Py_ssize_t start,
                                 Py_ssize_t end) noexcept nogil:
    """``json_scan_py.JsonScanner.feed`` over ``data[start:end]``: the index just past the value's
    end (counted from ``data``'s start), or -1."""
    cdef Py_ssize_t i
    cdef Py_UCS4 c
    for i in range(start, end):
        c = PyUnicode_READ(kind, data, i)
        if not s.started:
            if c == u" " or c == u"\t" or c == u"\r" or c == u"\n":
                continue
            s.started = True
            if c == u"{" or c == u"[":
                s.depth = 1
            elif c == u'"':
                s.in_string = True
            else:
                s.scalar = True
            continue
        if s.scalar:
            if c == u"," or c == u"}" or c == u"]" or c == u" " or c == u"\t" or c == u"\r" or c == u"\n":
                s.done = True
                return i
            continue
        if s.in_string:
            if s.escape:
                s.escape = False
            elif c == u"\\":
                s.escape = True
            elif c == u'"':
                s.in_string = False
                if s.depth == 0:
                    s.done = True
                    return i + 1
            continue
        if c == u'"':
            s.in_string = True
        elif c == u"{" or c == u"[":
            s.depth += 1
        elif c == u"}" or c == u"]":
            s.depth -= 1
            if s.depth == 0:
                s.done = True
                return i + 1
    return -1


cdef class JsonScanner:
    cdef JsonScan s

    cpdef Py_ssize_t feed(self, str text) except -2


cdef class BracketScanner:
    cdef public int depth
    cdef Py_UCS4 _quote  # 0: not in a string
    cdef public bint escape
    cdef public bint done

    cpdef Py_ssize_t feed(self, str text) except -2
