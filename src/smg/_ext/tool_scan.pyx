# cython: language_level=3
"""Compiled tool-call machines (header + raw arguments; JSON objects); specified by ``tool_scan_py.py``.

One ``feed`` call does the state's matcher walk (``StopStringMatcher._walk``, called directly),
the transitions and the JSON scanning in C; Python is touched to build the output records and,
once per call, to decode the call (``settle_object`` / ``settle_arguments``). ``feed_batch`` runs
the scan without the GIL and records where each call closed; the calls are decoded when the batch
completes. A batch whose outcome a decode could change (a bare JSON block: a non-call there is
text) is redone with ``feed`` from the state it started in.
"""
from cpython.array cimport array
from cpython.unicode cimport PyUnicode_DATA, PyUnicode_KIND
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc, realloc

from smg._ext._records cimport _new_pair, _new_tuple, int64_array, unicode_from_kind
from smg._ext.json_scan cimport JsonScan, json_scan, json_scan_reset
from smg._ext.stop_matcher cimport MarkerDriven, copy_span, matcher_for, PyUnicode_READ, Py_UNICODE_ISSPACE
from smg._ext.stop_matcher_py import feed_each
from smg._ext.tool_scan_py import (EMPTY, ToolBatch, ToolCallDelta, ToolDelta, call_id, settle_call, settle_object,
                                   state_markers, tool_schemas)

__all__ = ["HeaderMachine", "JsonMachine", "ToolBatch", "ToolCallDelta", "ToolDelta"]

cdef enum:
    CONTENT = 0
    # HeaderMachine
    SECTION = 1
    NAME = 2
    ARGS = 3
    # JsonMachine
    START = 1
    BLOCK = 2
    OBJECT = 3


cdef enum:
    # feed_batch's call rows: (delta, header start, header end, body start, body end) in the source
    ROW_WIDTH = 5


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


cdef inline bint _is_space(int kind, const void* data, Py_ssize_t i) noexcept nogil:
    return Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, i))


cdef class ToolMachine(MarkerDriven):
    """What the tool machines share (``tool_scan_py.ToolMachine``), and their ``feed_batch``:
    content copied into a C buffer and a row per closed call, without the GIL; the calls decoded
    (``_settle``) when the batch completes. A batch that needs Python sooner (``_needs_gil``) is
    redone with ``feed`` from the state saved when it began."""

    cdef str _content
    cdef list _deltas
    cdef public int calls
    cdef char* _content_out  # in the source's kind
    cdef Py_ssize_t _content_len
    cdef int64_t* _content_ends
    cdef int64_t* _rows
    cdef Py_ssize_t _n_rows, _rows_capacity
    cdef bint _needs_gil, _out_of_memory
    cdef int _saved_state
    cdef list _settled  # the batch's calls, decoded: (delta, name, id, arguments)

    cdef int _init_tool(self, list markers, int state) except -1:
        self._matchers = [matcher_for(tuple(keys)) for keys in markers]
        self._state = state
        self._content = ""
        self._deltas = []
        self.calls = 0
        self._finished = False
        return 0

    cdef int _call(self, object name, object given_id, str arguments) except -1:
        """A settled call goes out whole."""
        self._deltas.append(_new_tuple(ToolCallDelta, (self.calls, given_id or call_id(), name, arguments)))
        self.calls += 1
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

    # ---- feed_batch (see MarkerDriven) -----------------------------------------------------------

    cdef int _batch_begin(self, Py_ssize_t size, Py_ssize_t n_deltas) except -1:
        self._content_ends = <int64_t*>malloc(max(n_deltas, 1) * sizeof(int64_t))
        self._content_out = <char*>malloc((size + 1) * self._kind)
        self._rows_capacity = 4
        self._rows = <int64_t*>malloc(self._rows_capacity * ROW_WIDTH * sizeof(int64_t))
        if self._content_ends == NULL or self._content_out == NULL or self._rows == NULL:
            self._free_batch()
            raise MemoryError()
        self._content_len = self._n_rows = 0
        self._needs_gil = self._out_of_memory = False
        self._saved_state = self._state
        return 0

    cdef void _free_batch(self):
        free(self._content_ends)
        free(self._content_out)
        free(self._rows)
        self._content_ends = self._rows = NULL
        self._content_out = NULL
        self._n_rows = 0  # (feed shares _marker with the batch: no rows outside a batch)

    cdef void _call_row(self, Py_ssize_t header_start, Py_ssize_t header_end, Py_ssize_t body_start,
                        Py_ssize_t body_end) noexcept nogil:
        """A call closed in the current delta: its header and body spans, decoded at the end."""
        if not _grow(&self._rows, &self._rows_capacity, self._n_rows, ROW_WIDTH):
            self._out_of_memory = True
            return
        cdef int64_t* row = self._rows + self._n_rows * ROW_WIDTH
        row[0], row[1], row[2], row[3], row[4] = self._delta_index, header_start, header_end, body_start, body_end
        self._n_rows += 1

    cdef object _settle(self, str source, const int64_t* row):
        """A call row decoded: a list of ``(name, id, arguments)`` (empty: dropped), None when
        the batch must be redone with ``feed``."""
        raise NotImplementedError(f"{type(self).__name__} does not define _settle")

    cdef inline void _copy(self, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        self._content_len = copy_span(self._content_out, self._content_len, self._kind, self._data, start, end)

    cdef void _delta_end(self) noexcept nogil:
        self._content_ends[self._delta_index] = self._content_len
        self._delta_index += 1

    cdef void _batch_undo(self) noexcept nogil:
        """Put back what the scan changed besides the state (the batch will be redone)."""
        pass

    cdef int _batch_keep(self, str source, Py_ssize_t released) except -1:
        """Keep the text the state holds between calls (``_carry``) from the batch's source."""
        return 0

    cdef object _batch_complete(self):
        cdef Py_ssize_t r
        cdef str source = self._batch_source
        self._settled = []
        if self._out_of_memory:  # the machine's state is lost with the output
            self._batch_drop()
            self._finished = True
            raise MemoryError()
        if not self._needs_gil:
            for r in range(self._n_rows):
                if self._rows[r * ROW_WIDTH] < 0:  # its block is still open: feed keeps it pending
                    self._needs_gil = True
                    break
                calls = self._settle(source, self._rows + r * ROW_WIDTH)
                if calls is None:
                    self._needs_gil = True
                    break
                for call in calls:
                    self._settled.append((self._rows[r * ROW_WIDTH],) + tuple(call))
        if not self._needs_gil:
            return MarkerDriven._batch_complete(self)
        text, ends = source[self._batch_base:], self._batch_cuts
        self._batch_drop()
        self._batch_undo()
        self._state = self._saved_state
        return ToolBatch.from_deltas(feed_each((<object>self).feed, EMPTY, text, ends, self._finished))

    cdef object _batch_end(self, str source, Py_ssize_t released):
        cdef Py_ssize_t total = 0
        headers, arguments = [], []
        piece_delta, piece_call, piece_end = array("q"), array("q"), array("q")
        try:
            for delta, name, given_id, args in self._settled:
                headers.append((delta, _new_tuple(ToolCallDelta, (self.calls, given_id or call_id(), name, ""))))
                arguments.append(args)
                total += len(args)
                piece_delta.append(delta)
                piece_call.append(self.calls)
                piece_end.append(total)
                self.calls += 1
            self._batch_keep(source, released)
            return ToolBatch(unicode_from_kind(self._kind, self._content_out, self._content_len),
                             int64_array(self._content_ends, self._delta_index), tuple(headers), "".join(arguments),
                             piece_delta, piece_call, piece_end)
        finally:
            self._settled = None
            self._free_batch()


# ---- header + raw arguments ----------------------------------------------------------------------

cdef class HeaderMachine(ToolMachine):
    """See ``tool_scan_py.HeaderMachine``."""

    cdef object _fmt, _schemas
    cdef int _n_section, _n_call_start, _n_args_end
    cdef int _call_state  # NAME, or ARGS for a format without a header (the body is the whole call)
    cdef str _header, _arguments
    # feed_batch: the spans of the header and the arguments in the source
    cdef Py_ssize_t _header_start, _header_end, _arguments_start

    def __init__(self, fmt, tools=None, int state=CONTENT, **options):
        self._init_tool(state_markers(fmt), state)
        self._fmt = fmt
        self._schemas = tool_schemas(tools)
        self._call_state = NAME if fmt.name_end else ARGS
        self._n_section, self._n_call_start = len(fmt.section_start), len(fmt.call_start)
        self._n_args_end = len(fmt.args_end)
        self._header = self._arguments = ""

    cdef Py_ssize_t _on_text(self, str text) except -1:
        if self._state == CONTENT:
            self._content += text
        elif self._state == NAME:
            self._header += text
        elif self._state == ARGS:
            self._arguments += text
        return 0

    cdef void _transition(self, int index) noexcept nogil:
        """The state after marker ``index`` (in ARGS, after the call was closed)."""
        cdef int state = self._state
        if state == CONTENT:
            if index < self._n_section:
                self._state = SECTION
            elif index < self._n_section + self._n_call_start:
                self._state = self._call_state
        elif state == SECTION:
            self._state = self._call_state if index < self._n_call_start else CONTENT
        elif state == NAME:
            self._state = ARGS
        elif index >= self._n_args_end:
            self._state = self._call_state
        else:
            self._state = SECTION if self._n_section else CONTENT

    cdef int _close_call(self) except -1:
        for name, given_id, arguments in settle_call(self._fmt, self._header, self._arguments, self._schemas):
            self._call(name, given_id, arguments)
        self._header = self._arguments = ""
        return 0

    cdef int _on_marker(self, int index) except -1:
        if self._state == ARGS:
            self._close_call()
        self._transition(index)
        return 0

    cdef int _on_finish(self, str held) except -1:
        if self._state == CONTENT:
            self._content += held
        elif self._state == ARGS:  # the end marker may be the engine's stop token, left out of the text
            self._arguments += held
            if self._arguments.strip():  # (a call opened with nothing after it is none)
                self._close_call()
        return 0

    # ---- feed_batch ------------------------------------------------------------------------------

    cdef str _carry(self):
        if self._state == NAME:
            return self._header
        return self._header + self._arguments if self._state == ARGS else ""

    cdef int _batch_begin(self, Py_ssize_t size, Py_ssize_t n_deltas) except -1:
        ToolMachine._batch_begin(self, size, n_deltas)
        self._header_start = 0
        self._header_end = self._arguments_start = len(self._header) if self._state == ARGS else 0
        return 0

    cdef object _settle(self, str source, const int64_t* row):
        return settle_call(self._fmt, source[row[1]:row[2]], source[row[3]:row[4]], self._schemas)

    cdef Py_ssize_t _span(self, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        if self._state == CONTENT:
            self._copy(start, end)
        # NAME, ARGS: the span from the opening marker to the closing one; SECTION: dropped
        return 0

    cdef void _marker(self, int index, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        cdef int before = self._state
        if before == ARGS:  # a call closes: decoded when the batch completes
            self._call_row(self._header_start, self._header_end, self._arguments_start, start)
        elif before == NAME:
            self._header_end = start
        self._transition(index)
        if self._state == NAME:
            self._header_start = end
        elif self._state == ARGS:
            self._arguments_start = end
            if before != NAME:  # a format without a header
                self._header_start = self._header_end = end

    cdef int _batch_keep(self, str source, Py_ssize_t released) except -1:
        if self._state == NAME:  # (a call that closed in the batch took its arguments with it)
            self._header = source[self._header_start:released]
            self._arguments = ""
        elif self._state == ARGS:
            self._header = source[self._header_start:self._header_end]
            self._arguments = source[self._arguments_start:released]
        else:
            self._header = self._arguments = ""
        return 0


# ---- JSON objects ---------------------------------------------------------------------------------

cdef inline int _block_char(Py_UCS4 c) noexcept nogil:
    """Inside a block: 1 starts an object, 0 is a separator (dropped), -1 is other text."""
    if c == u"{":
        return 1
    if (c == u" " or c == u"\t" or c == u"\r" or c == u"\n" or c == u"," or c == u";" or c == u"["
            or c == u"]"):
        return 0
    return -1


cdef class JsonMachine(ToolMachine):
    """See ``tool_scan_py.JsonMachine``."""

    cdef object _fmt, _declared  # the request's tools: name -> schema (see tool_schemas)
    cdef bint _no_end  # the format has no end marker: a block ends at the first non-JSON text
    cdef bint _tagged  # the block being read was opened by a marker (else a bare one, which ends so too)
    cdef Py_UCS4 _bare_open[2]  # the characters that open a bare block at the output's start
    cdef bint _holding  # a bare block has read no object yet: its separators may be text
    cdef JsonScan _scan, _saved_scan
    cdef str _obj, _lead
    cdef list _pending  # calls waiting for their block's end marker: (name, arguments)
    cdef bint _needs_end, _marker_is_text
    # feed_batch: where the object and the held leading whitespace begin in the source
    cdef Py_ssize_t _obj_start, _lead_start
    cdef bint _saved_tagged, _saved_holding

    def __init__(self, fmt, tools=None, state=None, **options):
        if state is None:
            state = START if fmt.bare_at_start else CONTENT
        self._init_tool([fmt.start, fmt.start, fmt.end, ()], state)
        self._fmt = fmt
        self._declared = tool_schemas(tools)
        self._pending = []
        self._needs_end, self._marker_is_text = fmt.needs_end, fmt.marker_is_text
        self._no_end = not fmt.end
        self._tagged = True
        self._holding = False
        if not 1 <= len(fmt.bare_open) <= 2:
            raise ValueError(f"bare_open is one or two characters, got {fmt.bare_open!r}")
        self._bare_open[0] = self._bare_open[1] = fmt.bare_open[0]
        if len(fmt.bare_open) == 2:
            self._bare_open[1] = fmt.bare_open[1]
        self._obj = self._lead = ""
        json_scan_reset(&self._scan)

    cdef int _emit_pending(self) except -1:
        for name, arguments in self._pending:
            self._call(name, None, arguments)
        self._pending = []
        return 0

    cdef void _date_pending_rows(self) noexcept nogil:
        """The calls waiting for their block's end go out in this delta."""
        cdef Py_ssize_t r
        for r in range(self._n_rows):
            if self._rows[r * ROW_WIDTH] < 0:
                self._rows[r * ROW_WIDTH] = self._delta_index

    cdef inline bint _opens_bare(self, Py_UCS4 c) noexcept nogil:
        return c == self._bare_open[0] or c == self._bare_open[1]

    cdef int _on_marker(self, int index) except -1:
        cdef int before = self._state
        if before == START or before == BLOCK:
            self._lead = ""
        self._marker(index, 0, 0)
        if before == BLOCK:
            self._emit_pending()
        elif self._marker_is_text:  # read like a bare block, the marker its first text
            self._lead = self._fmt.start[index]
        return 0

    cdef Py_ssize_t _on_text(self, str text) except -1:
        cdef Py_ssize_t i, n = len(text), end
        cdef int kind = PyUnicode_KIND(text), action
        cdef void* data = PyUnicode_DATA(text)
        if self._state == CONTENT:
            self._content += text
        elif self._state == START:
            i = 0
            while i < n and _is_space(kind, data, i):
                i += 1
            if i == n:
                self._lead += text
                return 0
            lead, self._lead = self._lead, ""
            if self._opens_bare(PyUnicode_READ(kind, data, i)):
                self._state = BLOCK
                self._tagged = False
                self._holding = True
                return n - i
            self._state = CONTENT
            self._content += lead
            return n
        elif self._state == BLOCK:
            for i in range(n):
                action = _block_char(PyUnicode_READ(kind, data, i))
                if action > 0:  # (a bare block's separators wait for the object's verdict)
                    self._state = OBJECT
                    return n - i
                if action < 0:
                    if self._no_end or not self._tagged:
                        self._content += self._lead
                        self._lead = ""
                        self._state = CONTENT
                        return n - i
                    self._content += text[i]
                else:  # a separator
                    if self._holding:
                        self._lead += text[i]
                    if self._pending and PyUnicode_READ(kind, data, i) == u"]":  # the array of calls closed
                        self._emit_pending()
        else:
            end = json_scan(&self._scan, kind, data, 0, n)
            self._obj += text if end < 0 else text[:end]
            if end >= 0:
                self._state = self._close_object()
                return n - end
        return 0

    cdef int _close_object(self) except -1:
        """Settle the object; the state after it (see the twin)."""
        content, name, arguments = settle_object(self._obj, self._fmt, self._tagged, self._declared)
        self._obj = ""
        json_scan_reset(&self._scan)
        lead, self._lead, self._holding = self._lead, "", False
        if name is None and content and not self._tagged:  # (a dropped call leaves no content)
            self._content += lead + content
            return CONTENT
        if content:
            self._content += content
        if name is not None and self._needs_end and self._tagged:  # (a bare call stands alone)
            self._pending.append((name, arguments))
        elif name is not None:
            self._call(name, None, arguments)
        return BLOCK

    cdef int _on_finish(self, str held) except -1:
        self._pending = []  # their block never closed
        if self._state == OBJECT and not self._tagged:  # an unfinished bare object is text
            self._content += self._lead + self._obj
        elif self._state == START or self._holding:
            self._content += self._lead
        if self._state == CONTENT or self._state == START:
            self._content += held
        return 0

    # ---- feed_batch ------------------------------------------------------------------------------

    cdef str _carry(self):
        if self._state == OBJECT:
            return self._obj
        return self._lead if self._state == START or self._state == BLOCK else ""

    cdef int _batch_begin(self, Py_ssize_t size, Py_ssize_t n_deltas) except -1:
        ToolMachine._batch_begin(self, size, n_deltas)
        self._obj_start = 0
        self._lead_start = 0 if (self._state == START or self._state == BLOCK) and self._lead else -1
        self._saved_scan, self._saved_tagged, self._saved_holding = self._scan, self._tagged, self._holding
        self._needs_gil = bool(self._pending)  # calls held by feed go out where their block closes
        return 0

    cdef void _batch_undo(self) noexcept nogil:
        self._scan, self._tagged, self._holding = self._saved_scan, self._saved_tagged, self._saved_holding

    cdef Py_ssize_t _span(self, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        cdef Py_ssize_t i, stop
        cdef int action
        if self._needs_gil:  # the batch will be redone
            return 0
        if self._state == CONTENT:
            self._copy(start, end)
        elif self._state == START:
            i = start
            while i < end and _is_space(self._kind, self._data, i):
                i += 1
            if i == end:
                if self._lead_start < 0:
                    self._lead_start = start
                return 0
            if self._opens_bare(PyUnicode_READ(self._kind, self._data, i)):
                self._state = BLOCK
                self._tagged = False
                self._holding = True
                self._lead_start = -1
                return end - i
            self._state = CONTENT
            if self._lead_start >= 0:
                self._copy(self._lead_start, start)
                self._lead_start = -1
            return end - start
        elif self._state == BLOCK:
            for i in range(start, end):
                action = _block_char(PyUnicode_READ(self._kind, self._data, i))
                if action > 0:
                    self._state = OBJECT
                    self._obj_start = i
                    return end - i
                if action < 0:
                    if self._no_end or not self._tagged:
                        if self._lead_start >= 0:
                            self._copy(self._lead_start, i)
                            self._lead_start = -1
                        self._state = CONTENT
                        return end - i
                    self._copy(i, i + 1)
                else:  # a separator
                    if self._holding and self._lead_start < 0:
                        self._lead_start = i
                    if self._needs_end and PyUnicode_READ(self._kind, self._data, i) == u"]":
                        self._date_pending_rows()  # the array of calls closed
        else:
            stop = json_scan(&self._scan, self._kind, self._data, start, end)
            if stop >= 0:
                if not self._tagged:  # a bare object that is no call turns the rest to text
                    self._needs_gil = True
                    return 0
                self._call_row(self._obj_start, stop, 0, 0)  # decoded when the batch completes
                if self._needs_end:  # it goes out with its block's end marker
                    self._rows[(self._n_rows - 1) * ROW_WIDTH] = -1
                json_scan_reset(&self._scan)
                self._state = BLOCK
                return end - stop
        return 0

    cdef object _settle(self, str source, const int64_t* row):
        content, name, arguments = settle_object(source[row[1]:row[2]], self._fmt, True, self._declared)
        if content:  # an object that names no function is content: only feed puts it in place
            return None
        return [] if name is None else [(name, None, arguments)]

    cdef void _marker(self, int index, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        """The only markers open a block (content, start) or close it."""
        if self._state == CONTENT or self._state == START:
            self._state = BLOCK
            self._tagged = not self._marker_is_text
            self._holding = self._marker_is_text
            self._lead_start = start if self._marker_is_text else -1
        elif self._state == BLOCK:
            self._state = CONTENT
            self._holding = False
            self._lead_start = -1
            self._date_pending_rows()  # the block's calls go out with its end marker

    cdef int _batch_keep(self, str source, Py_ssize_t released) except -1:
        self._obj = source[self._obj_start:released] if self._state == OBJECT else ""
        if self._state == START or self._state == BLOCK:
            self._lead = source[self._lead_start:released] if self._lead_start >= 0 else ""
        elif self._state == OBJECT:  # a bare block's separators, begun in this batch (else kept)
            if self._lead_start >= 0:
                self._lead = source[self._lead_start:self._obj_start]
        else:
            self._lead = ""
        return 0
