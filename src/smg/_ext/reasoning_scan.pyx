# cython: language_level=3
"""Compiled reasoning/content splitter; the algorithm is specified by ``reasoning_scan_py.py``.

Everything a delta needs happens in C: the state's matcher walk (``StopStringMatcher._walk``,
called directly), the transition from the family table, the whitespace skip and the output
accumulation; a delta costs one call and one tuple.
"""
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from smg._ext._records cimport _new_pair, int64_array, unicode_from_kind
from smg._ext.stop_matcher cimport MarkerDriven, copy_span, matcher_for, PyUnicode_READ, Py_UNICODE_ISSPACE
from smg._ext.reasoning_scan_py import ReasoningBatch, ReasoningDelta

cdef enum:
    BEFORE = 0
    REASONING = 1
    CONTENT = 2


cdef object _EMPTY = ReasoningDelta("", "")

__all__ = ["ReasoningMachine", "ReasoningBatch", "ReasoningDelta"]

cdef enum:
    MAX_MARKERS = 16  # markers per state of a family table (the transitions are kept in C)


cdef class ReasoningMachine(MarkerDriven):
    """See ``reasoning_scan_py.ReasoningMachine``."""

    cdef tuple _table
    cdef bint _skip_space
    cdef str _reasoning
    cdef str _content
    # the table's transitions as C arrays (feed and feed_batch), and the batch's output buffers
    cdef int _next[3][MAX_MARKERS]
    cdef bint _keep[3][MAX_MARKERS]
    cdef char* _out[2]  # reasoning, content, in the source's kind
    cdef Py_ssize_t _out_len[2]
    cdef int64_t* _out_ends[2]

    def __init__(self, fmt, in_reasoning=None):
        self._table = tuple(fmt.table)
        start = fmt.in_reasoning if in_reasoning is None else in_reasoning
        self._state = REASONING if start else BEFORE
        self._matchers = [matcher_for(tuple([m for m, _, _ in row])) for row in self._table]
        self._skip_space = self._state == REASONING
        for state, row in enumerate(self._table):
            if len(row) > MAX_MARKERS:
                raise ValueError(f"a reasoning format state has more than {MAX_MARKERS} markers")
            for index, (_, nxt, keep) in enumerate(row):
                self._next[state][index], self._keep[state][index] = nxt, keep
        self._reasoning = ""
        self._content = ""
        self._finished = False

    @property
    def in_reasoning(self):
        return self._state == REASONING

    cdef Py_ssize_t _on_text(self, str text) except -1:
        if self._skip_space:
            text = text.lstrip()
            if not text:
                return 0
            self._skip_space = False
        if self._state == REASONING:
            self._reasoning += text
        else:
            self._content += text
        return 0

    cdef bint _transition(self, int index) noexcept nogil:
        """Marker ``index`` of the current state: move to the next state; True if the marker's
        text stays in the output."""
        cdef int nxt = self._next[self._state][index]
        cdef bint keep = self._keep[self._state][index]
        if nxt != self._state and (nxt == REASONING or nxt == CONTENT):
            self._skip_space = not keep
        self._state = nxt
        return keep

    cdef int _on_marker(self, int index) except -1:
        marker = self._table[self._state][index][0]
        if self._transition(index):
            self._on_text(marker)
        return 0

    cdef object _take(self):
        if not self._reasoning and not self._content:
            return _EMPTY
        delta = _new_pair(ReasoningDelta, self._reasoning, self._content)
        self._reasoning = ""
        self._content = ""
        return delta

    # ---- feed_batch (see MarkerDriven) -----------------------------------------------------------

    cdef int _batch_begin(self, Py_ssize_t size, Py_ssize_t n_deltas) except -1:
        cdef int i
        for i in range(2):
            self._out[i] = <char*>malloc(max(size, 1) * self._kind)
            self._out_ends[i] = <int64_t*>malloc(max(n_deltas, 1) * sizeof(int64_t))
            self._out_len[i] = 0
            if self._out[i] == NULL or self._out_ends[i] == NULL:
                self._free_batch()
                raise MemoryError()
        return 0

    cdef void _free_batch(self):
        cdef int i
        for i in range(2):
            free(self._out[i])
            free(self._out_ends[i])
            self._out[i] = NULL
            self._out_ends[i] = NULL

    cdef Py_ssize_t _span(self, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        cdef int which = 0 if self._state == REASONING else 1
        if self._skip_space:
            while start < end and Py_UNICODE_ISSPACE(PyUnicode_READ(self._kind, self._data, start)):
                start += 1
            if start == end:
                return 0
            self._skip_space = False
        self._out_len[which] = copy_span(self._out[which], self._out_len[which], self._kind, self._data, start, end)
        return 0

    cdef void _marker(self, int index, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        if self._transition(index):
            self._span(start, end)

    cdef void _delta_end(self) noexcept nogil:
        self._out_ends[0][self._delta_index] = self._out_len[0]
        self._out_ends[1][self._delta_index] = self._out_len[1]
        self._delta_index += 1

    cdef object _batch_end(self, str source, Py_ssize_t released):
        try:
            return ReasoningBatch(unicode_from_kind(self._kind, self._out[0], self._out_len[0]),
                                  unicode_from_kind(self._kind, self._out[1], self._out_len[1]),
                                  int64_array(self._out_ends[0], self._delta_index),
                                  int64_array(self._out_ends[1], self._delta_index))
        finally:
            self._free_batch()

    def parse(self, text):
        first, last = self.feed(text), self.finish()
        return ReasoningDelta(first.reasoning + last.reasoning, first.content + last.content)
