# cython: language_level=3
"""Compiled header + raw-arguments tool-call machine; specified by ``tool_scan_py.py``.

One ``feed`` call does the state's matcher walk (``StopStringMatcher._walk``, called directly),
the transitions and the output bookkeeping in C; Python is touched only to build the output
records and, once per call, to read the header.
"""
from libc.stdint cimport int64_t
from cpython.array cimport array, clone
from libc.stdlib cimport free, malloc, realloc

from smg._ext._records cimport _new_pair, _new_tuple, int64_array, unicode_from_kind
from smg._ext.stop_matcher cimport MarkerDriven, copy_span, matcher_for, PyUnicode_READ, Py_UNICODE_ISSPACE
from smg._ext.tool_scan_py import EMPTY, ToolBatch, ToolCallDelta, ToolDelta, call_id, state_markers

cdef enum:
    CONTENT = 0
    SECTION = 1
    NAME = 2
    ARGS = 3


__all__ = ["HeaderMachine", "ToolBatch", "ToolCallDelta", "ToolDelta"]

cdef enum:
    # feed_batch's rows: a piece is (delta, call, end in arguments), a header (delta, call, start, end)
    PIECE_WIDTH = 3
    HEADER_WIDTH = 4


cdef bint _grow(int64_t** rows, Py_ssize_t* capacity, Py_ssize_t used, Py_ssize_t width) noexcept nogil:
    """Room for one more row (doubling); False when out of memory."""
    cdef int64_t* grown
    if used < capacity[0]:
        return True
    grown = <int64_t*>realloc(rows[0], 2 * capacity[0] * width * sizeof(int64_t))
    if grown == NULL:
        return False
    rows[0], capacity[0] = grown, 2 * capacity[0]
    return True


cdef object _column(const int64_t* rows, Py_ssize_t n, Py_ssize_t width, Py_ssize_t column):
    cdef Py_ssize_t i
    cdef array out = clone(array("q"), n, False)
    for i in range(n):
        out.data.as_longlongs[i] = rows[i * width + column]
    return out


cdef class HeaderMachine(MarkerDriven):
    """See ``tool_scan_py.HeaderMachine``."""

    cdef int _n_section, _n_call_start, _n_args_end
    cdef object _parse_header
    cdef str _header, _space, _content
    cdef bint _args_started
    cdef list _deltas
    cdef public int calls
    # feed_batch: output buffers (content, arguments), columns and positions in the source
    cdef char* _text_out[2]  # in the source's kind
    cdef Py_ssize_t _text_len[2]
    cdef int64_t* _content_ends
    cdef int64_t* _pieces
    cdef int64_t* _headers
    cdef Py_ssize_t _n_pieces, _pieces_capacity, _n_headers, _headers_capacity, _header_start, _space_start
    cdef bint _out_of_memory

    def __init__(self, fmt, int state=CONTENT):
        self._matchers = [matcher_for(tuple(keys)) for keys in state_markers(fmt)]
        self._n_section, self._n_call_start = len(fmt.section_start), len(fmt.call_start)
        self._n_args_end = len(fmt.args_end)
        self._parse_header = fmt.parse_header
        self._state = state
        self._header = self._space = self._content = ""
        self._args_started = False
        self._deltas = []
        self.calls = 0
        self._finished = False

    cdef void _args(self, str text):
        cdef object last
        cdef Py_ssize_t end = len(self._deltas) - 1  # no negative indexing: wraparound is off
        if end >= 0:
            last = self._deltas[end]
            if last[0] == self.calls - 1:
                self._deltas[end] = _new_tuple(ToolCallDelta, (last[0], last[1], last[2], last[3] + text))
                return
        self._deltas.append(_new_tuple(ToolCallDelta, (self.calls - 1, None, None, text)))

    cdef int _on_text(self, str text) except -1:
        cdef str body
        if self._state == CONTENT:
            self._content += text
        elif self._state == NAME:
            self._header += text
        elif self._state == ARGS:
            if not self._args_started:
                text = text.lstrip()
                if not text:
                    return 0
                self._args_started = True
            body = text.rstrip()
            if body:
                self._args(self._space + body)
                self._space = text[len(body):]
            else:
                self._space += text
        return 0

    cdef void _transition(self, int index) noexcept nogil:
        """The state after marker ``index`` in any state but NAME (whose end opens a call)."""
        cdef int state = self._state
        if state == CONTENT:
            if index < self._n_section:
                self._state = SECTION
            elif index < self._n_section + self._n_call_start:
                self._state = NAME
        elif state == SECTION:
            self._state = NAME if index < self._n_call_start else CONTENT
        elif index >= self._n_args_end:
            self._state = NAME
        else:
            self._state = SECTION if self._n_section else CONTENT

    cdef int _on_marker(self, int index) except -1:
        if self._state != NAME:
            self._transition(index)
            return 0
        name, given_id = self._parse_header(self._header)
        self._deltas.append(_new_tuple(ToolCallDelta, (self.calls, given_id or call_id(), name, "")))
        self.calls += 1
        self._header = ""
        self._space = ""
        self._args_started = False
        self._state = ARGS
        return 0

    cdef object _take(self):
        cdef tuple calls = ()
        if not self._content and not self._deltas:
            return EMPTY
        if self._deltas:  # a content-only delta allocates no new list
            calls = tuple(self._deltas)
            self._deltas = []
        delta = _new_pair(ToolDelta, self._content, calls)
        self._content = ""
        return delta

    cdef bint _held_is_text(self):
        return self._state == CONTENT or self._state == ARGS

    # ---- feed_batch (see MarkerDriven) -----------------------------------------------------------

    cdef str _carry(self):
        if self._state == NAME:
            return self._header
        return self._space if self._state == ARGS else ""

    cdef int _batch_begin(self, Py_ssize_t size, Py_ssize_t n_deltas) except -1:
        self._content_ends = <int64_t*>malloc(max(n_deltas, 1) * sizeof(int64_t))
        self._pieces_capacity = self._headers_capacity = 16
        self._pieces = <int64_t*>malloc(16 * PIECE_WIDTH * sizeof(int64_t))
        self._headers = <int64_t*>malloc(16 * HEADER_WIDTH * sizeof(int64_t))
        self._text_out[0] = <char*>malloc((size + 1) * self._kind)
        self._text_out[1] = <char*>malloc((size + 1) * self._kind)
        if (self._content_ends == NULL or self._pieces == NULL or self._headers == NULL
                or self._text_out[0] == NULL or self._text_out[1] == NULL):
            self._free_batch()
            raise MemoryError()
        self._text_len[0] = self._text_len[1] = 0
        self._n_pieces = self._n_headers = 0
        self._out_of_memory = False
        self._header_start = 0
        self._space_start = 0 if self._state == ARGS and self._space else -1
        return 0

    cdef void _free_batch(self):
        free(self._content_ends)
        free(self._pieces)
        free(self._headers)
        free(self._text_out[0])
        free(self._text_out[1])
        self._content_ends = self._pieces = self._headers = NULL
        self._text_out[0] = self._text_out[1] = NULL

    cdef inline void _copy(self, int which, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        self._text_len[which] = copy_span(self._text_out[which], self._text_len[which], self._kind, self._data,
                                          start, end)

    cdef inline bint _is_space(self, Py_ssize_t i) noexcept nogil:
        return Py_UNICODE_ISSPACE(PyUnicode_READ(self._kind, self._data, i))

    cdef void _args_span(self, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        """Argument pieces go out without leading whitespace; trailing whitespace waits at
        ``_space_start`` until more arguments follow (so none is left before the end marker)."""
        cdef Py_ssize_t body_end = end
        if not self._args_started:
            while start < end and self._is_space(start):
                start += 1
            if start == end:
                return
            self._args_started = True
        while body_end > start and self._is_space(body_end - 1):
            body_end -= 1
        if body_end == start:
            if self._space_start < 0:
                self._space_start = start
            return
        if self._space_start >= 0:
            start = self._space_start
        self._space_start = body_end if body_end < end else -1
        self._copy(1, start, body_end)
        cdef int64_t* row = self._pieces + (self._n_pieces - 1) * PIECE_WIDTH
        if self._n_pieces and row[0] == self._delta_index and row[1] == self.calls - 1:
            row[2] = self._text_len[1]
            return
        if not _grow(&self._pieces, &self._pieces_capacity, self._n_pieces, PIECE_WIDTH):
            self._out_of_memory = True
            return
        row = self._pieces + self._n_pieces * PIECE_WIDTH
        row[0], row[1], row[2] = self._delta_index, self.calls - 1, self._text_len[1]
        self._n_pieces += 1

    cdef void _span(self, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        if self._state == CONTENT:
            self._copy(0, start, end)
        elif self._state == ARGS:
            self._args_span(start, end)
        # NAME: the header is the span from its opening marker to its end marker; SECTION: dropped

    cdef void _marker(self, int index, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        cdef int64_t* row
        if self._state == NAME:
            if not _grow(&self._headers, &self._headers_capacity, self._n_headers, HEADER_WIDTH):
                self._out_of_memory = True
                return
            row = self._headers + self._n_headers * HEADER_WIDTH
            row[0], row[1], row[2], row[3] = self._delta_index, self.calls, self._header_start, start
            self._n_headers += 1
            self.calls += 1
            self._args_started = False
            self._space_start = -1
            self._state = ARGS
            return
        self._transition(index)
        if self._state == NAME:
            self._header_start = end

    cdef void _delta_end(self) noexcept nogil:
        self._content_ends[self._delta_index] = self._text_len[0]
        self._delta_index += 1

    cdef object _batch_end(self, str source, Py_ssize_t released):
        cdef Py_ssize_t h
        cdef int64_t* row
        try:
            if self._out_of_memory:  # the machine's state is lost with the output
                self._finished = True
                raise MemoryError()
            headers = []
            for h in range(self._n_headers):
                row = self._headers + h * HEADER_WIDTH
                name, given_id = self._parse_header(source[row[2]:row[3]])
                headers.append((row[0], _new_tuple(ToolCallDelta, (row[1], given_id or call_id(), name, ""))))
            self._header = source[self._header_start:released] if self._state == NAME else ""
            self._space = source[self._space_start:released] if self._state == ARGS and self._space_start >= 0 else ""
            return ToolBatch(unicode_from_kind(self._kind, self._text_out[0], self._text_len[0]),
                             int64_array(self._content_ends, self._delta_index), tuple(headers),
                             unicode_from_kind(self._kind, self._text_out[1], self._text_len[1]),
                             _column(self._pieces, self._n_pieces, PIECE_WIDTH, 0),
                             _column(self._pieces, self._n_pieces, PIECE_WIDTH, 1),
                             _column(self._pieces, self._n_pieces, PIECE_WIDTH, 2))
        finally:
            self._free_batch()
