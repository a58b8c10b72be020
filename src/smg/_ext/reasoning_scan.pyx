# cython: language_level=3
"""Compiled reasoning/content splitter; the algorithm is specified by ``reasoning_scan_py.py``.

Everything a delta needs happens in C: the state's matcher walk (``StopStringMatcher._walk``,
called directly), the transition from the family table, the whitespace skip and the output
accumulation; a delta costs one call and one tuple.
"""
from libc.stdint cimport int32_t

from smg._ext._records cimport _new_pair
from smg._ext.stop_matcher cimport StopStringMatcher, matcher_for
from smg._ext.reasoning_scan_py import ReasoningDelta
from smg.errors import ParseError

cdef enum:
    BEFORE = 0
    REASONING = 1
    CONTENT = 2


cdef object _EMPTY = ReasoningDelta("", "")

__all__ = ["ReasoningMachine", "ReasoningDelta"]


cdef class ReasoningMachine:
    """See ``reasoning_scan_py.ReasoningMachine``."""

    cdef tuple _table
    cdef list _matchers
    cdef int _state
    cdef bint _skip_space
    cdef str _reasoning
    cdef str _content
    cdef bint _finished

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

    cdef inline void _emit(self, str text):
        if self._skip_space:
            text = text.lstrip()
            if not text:
                return
            self._skip_space = False
        if self._state == REASONING:
            self._reasoning += text
        else:
            self._content += text

    cdef object _take(self):
        if not self._reasoning and not self._content:
            return _EMPTY
        delta = _new_pair(ReasoningDelta, self._reasoning, self._content)
        self._reasoning = ""
        self._content = ""
        return delta

    cpdef object feed(self, text):
        cdef StopStringMatcher matcher
        cdef int32_t index
        cdef Py_ssize_t after
        cdef str before, rest
        if type(text) is not str or self._finished:
            raise ParseError("parser already finished" if self._finished else
                             f"parsers take str deltas, got {type(text).__name__}")
        rest = text
        while rest:
            matcher = self._matchers[self._state]
            if matcher is None:
                self._emit(rest)
                break
            after = 0
            before = matcher._walk(rest, True, &index, &after)
            if before:
                self._emit(before)
            if index < 0:
                break
            marker, nxt, keep = self._table[self._state][index]
            if nxt != self._state and (nxt == REASONING or nxt == CONTENT):
                self._skip_space = not keep
            self._state = nxt
            if keep:
                self._emit(marker)
            rest = rest[after:]
        return self._take()

    def finish(self):
        cdef StopStringMatcher matcher
        if self._finished:
            raise ParseError("parser already finished")
        self._finished = True
        matcher = self._matchers[self._state]
        held = matcher._finish() if matcher is not None else ""
        if held:
            self._emit(held)
        return self._take()

    def parse(self, text):
        first, last = self.feed(text), self.finish()
        return ReasoningDelta(first.reasoning + last.reasoning, first.content + last.content)
