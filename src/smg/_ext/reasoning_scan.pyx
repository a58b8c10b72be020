# cython: language_level=3
"""Compiled reasoning/content splitter; the algorithm is specified by ``reasoning_scan_py.py``.

Everything a delta needs happens in C: the state's matcher walk (``StopStringMatcher._walk``,
called directly), the transition from the family table, the whitespace skip and the output
accumulation; a delta costs one call and one tuple.
"""
from smg._ext._records cimport _new_pair
from smg._ext.stop_matcher cimport MarkerDriven, matcher_for
from smg._ext.reasoning_scan_py import ReasoningDelta

cdef enum:
    BEFORE = 0
    REASONING = 1
    CONTENT = 2


cdef object _EMPTY = ReasoningDelta("", "")

__all__ = ["ReasoningMachine", "ReasoningDelta"]


cdef class ReasoningMachine(MarkerDriven):
    """See ``reasoning_scan_py.ReasoningMachine``."""

    cdef tuple _table
    cdef bint _skip_space
    cdef str _reasoning
    cdef str _content

    def __init__(self, fmt, in_reasoning=None):
        self._table = tuple(fmt.table)
        start = fmt.in_reasoning if in_reasoning is None else in_reasoning
        self._state = REASONING if start else BEFORE
        self._matchers = [matcher_for(tuple([m for m, _, _ in row])) for row in self._table]
        self._skip_space = self._state == REASONING
        self._reasoning = ""
        self._content = ""
        self._finished = False

    @property
    def in_reasoning(self):
        return self._state == REASONING

    cdef int _on_text(self, str text) except -1:
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

    cdef int _on_marker(self, int index) except -1:
        marker, nxt, keep = self._table[self._state][index]
        if nxt != self._state and (nxt == REASONING or nxt == CONTENT):
            self._skip_space = not keep
        self._state = nxt
        if keep:
            self._on_text(marker)
        return 0

    cdef object _take(self):
        if not self._reasoning and not self._content:
            return _EMPTY
        delta = _new_pair(ReasoningDelta, self._reasoning, self._content)
        self._reasoning = ""
        self._content = ""
        return delta

    def parse(self, text):
        first, last = self.feed(text), self.finish()
        return ReasoningDelta(first.reasoning + last.reasoning, first.content + last.content)
