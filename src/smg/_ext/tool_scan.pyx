# cython: language_level=3
"""Compiled header + raw-arguments tool-call machine; specified by ``tool_scan_py.py``.

One ``feed`` call does the state's matcher walk (``StopStringMatcher._walk``, called directly),
the transitions and the output bookkeeping in C; Python is touched only to build the output
records and, once per call, to read the header.
"""
from smg._ext._records cimport _new_pair, _new_tuple
from smg._ext.stop_matcher cimport MarkerDriven, matcher_for
from smg._ext.tool_scan_py import EMPTY, ToolCallDelta, ToolDelta, call_id, state_markers

cdef enum:
    CONTENT = 0
    SECTION = 1
    NAME = 2
    ARGS = 3


__all__ = ["HeaderMachine", "ToolCallDelta", "ToolDelta"]


cdef class HeaderMachine(MarkerDriven):
    """See ``tool_scan_py.HeaderMachine``."""

    cdef int _n_section, _n_call_start, _n_args_end
    cdef object _parse_header
    cdef str _header, _space, _content
    cdef bint _args_started
    cdef list _deltas
    cdef public int calls

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

    cdef int _on_marker(self, int index) except -1:
        cdef int state = self._state
        if state == CONTENT:
            if index < self._n_section:
                self._state = SECTION
            elif index < self._n_section + self._n_call_start:
                self._state = NAME
        elif state == SECTION:
            self._state = NAME if index < self._n_call_start else CONTENT
        elif state == NAME:
            name, given_id = self._parse_header(self._header)
            self._deltas.append(_new_tuple(ToolCallDelta, (self.calls, given_id or call_id(), name, "")))
            self.calls += 1
            self._header = ""
            self._space = ""
            self._args_started = False
            self._state = ARGS
        elif index >= self._n_args_end:
            self._state = NAME
        else:
            self._state = SECTION if self._n_section else CONTENT
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
