# cython: language_level=3
"""Compiled tool-call machines (header + raw arguments; JSON objects); specified by ``tool_scan_py.py``.

One ``feed`` call does the state's matcher walk (``StopStringMatcher._walk``, called directly),
the transitions, the JSON scanning and key search, and the output bookkeeping in C; Python is
touched only to build the output records and, once per call, to read its name. ``feed_batch``
runs all of that without the GIL (see ``MarkerDriven``).
"""
from libc.stdint cimport int64_t
from cpython.array cimport array, clone
from cpython.unicode cimport PyUnicode_DATA, PyUnicode_KIND
from libc.stdlib cimport free, malloc, realloc

from smg._ext._records cimport _new_pair, _new_tuple, int64_array, unicode_from_kind
from smg._ext.json_scan cimport JsonScan, json_scan, json_scan_reset
from smg._ext.stop_matcher cimport MarkerDriven, copy_span, matcher_for, PyUnicode_READ, Py_UNICODE_ISSPACE
from smg._ext.stop_matcher_py import feed_each
from smg._ext.tool_scan_py import (EMPTY, ToolBatch, ToolCallDelta, ToolDelta, call_id, json_name, settle_object,
                                   state_markers)

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


cdef inline bint _is_space(int kind, const void* data, Py_ssize_t i) noexcept nogil:
    return Py_UNICODE_ISSPACE(PyUnicode_READ(kind, data, i))


cdef class ToolMachine(MarkerDriven):
    """What the tool machines share (``tool_scan_py.ToolMachine``), and their ``feed_batch``
    output: content and argument text copied into C buffers, header and piece rows in C arrays."""

    cdef object _parse_header  # header text -> (name, id or None)
    cdef str _content
    cdef list _deltas
    cdef public int calls
    cdef char* _text_out[2]  # content, arguments; in the source's kind
    cdef Py_ssize_t _text_len[2]
    cdef int64_t* _content_ends
    cdef int64_t* _pieces
    cdef int64_t* _headers
    cdef Py_ssize_t _n_pieces, _pieces_capacity, _n_headers, _headers_capacity
    cdef bint _out_of_memory

    cdef int _init_tool(self, list markers, int state, object parse_header) except -1:
        self._matchers = [matcher_for(tuple(keys)) for keys in markers]
        self._state = state
        self._parse_header = parse_header
        self._content = ""
        self._deltas = []
        self.calls = 0
        self._finished = False
        return 0

    cdef int _open(self, object name, object given_id) except -1:
        self._deltas.append(_new_tuple(ToolCallDelta, (self.calls, given_id or call_id(), name, "")))
        self.calls += 1
        return 0

    cdef int _args(self, str text) except -1:
        cdef object last
        cdef Py_ssize_t end = len(self._deltas) - 1  # no negative indexing: wraparound is off
        if end >= 0:
            last = self._deltas[end]
            if last[0] == self.calls - 1:
                self._deltas[end] = _new_tuple(ToolCallDelta, (last[0], last[1], last[2], last[3] + text))
                return 0
        self._deltas.append(_new_tuple(ToolCallDelta, (self.calls - 1, None, None, text)))
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

    cdef void _piece(self, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        """Arguments ``source[start:end]`` of the open call (one row per delta and call)."""
        self._copy(1, start, end)
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

    cdef void _header_row(self, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        """A call opens, named by the header ``source[start:end]`` (read at the batch's end)."""
        if not _grow(&self._headers, &self._headers_capacity, self._n_headers, HEADER_WIDTH):
            self._out_of_memory = True
            return
        cdef int64_t* row = self._headers + self._n_headers * HEADER_WIDTH
        row[0], row[1], row[2], row[3] = self._delta_index, self.calls, start, end
        self._n_headers += 1
        self.calls += 1

    cdef void _delta_end(self) noexcept nogil:
        self._content_ends[self._delta_index] = self._text_len[0]
        self._delta_index += 1

    cdef int _batch_keep(self, str source, Py_ssize_t released) except -1:
        """Keep the text the state holds between calls (``_carry``) from the batch's source."""
        return 0

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
            self._batch_keep(source, released)
            return ToolBatch(unicode_from_kind(self._kind, self._text_out[0], self._text_len[0]),
                             int64_array(self._content_ends, self._delta_index), tuple(headers),
                             unicode_from_kind(self._kind, self._text_out[1], self._text_len[1]),
                             _column(self._pieces, self._n_pieces, PIECE_WIDTH, 0),
                             _column(self._pieces, self._n_pieces, PIECE_WIDTH, 1),
                             _column(self._pieces, self._n_pieces, PIECE_WIDTH, 2))
        finally:
            self._free_batch()


# ---- header + raw arguments ----------------------------------------------------------------------

cdef class HeaderMachine(ToolMachine):
    """See ``tool_scan_py.HeaderMachine``."""

    cdef int _n_section, _n_call_start, _n_args_end
    cdef str _header, _space
    cdef bint _args_started
    cdef Py_ssize_t _header_start, _space_start  # feed_batch: where they begin in the source

    def __init__(self, fmt, tools=None, int state=CONTENT, **options):
        self._init_tool(state_markers(fmt), state, fmt.parse_header)
        self._n_section, self._n_call_start = len(fmt.section_start), len(fmt.call_start)
        self._n_args_end = len(fmt.args_end)
        self._header = self._space = ""
        self._args_started = False

    cdef Py_ssize_t _on_text(self, str text) except -1:
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
        self._open(name, given_id)
        self._header = ""
        self._space = ""
        self._args_started = False
        self._state = ARGS
        return 0

    cdef int _on_finish(self, str held) except -1:
        if held and (self._state == CONTENT or self._state == ARGS):
            self._on_text(held)
        return 0

    # ---- feed_batch ------------------------------------------------------------------------------

    cdef str _carry(self):
        if self._state == NAME:
            return self._header
        return self._space if self._state == ARGS else ""

    cdef int _batch_begin(self, Py_ssize_t size, Py_ssize_t n_deltas) except -1:
        ToolMachine._batch_begin(self, size, n_deltas)
        self._header_start = 0
        self._space_start = 0 if self._state == ARGS and self._space else -1
        return 0

    cdef void _args_span(self, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        """Argument pieces go out without leading whitespace; trailing whitespace waits at
        ``_space_start`` until more arguments follow (so none is left before the end marker)."""
        cdef Py_ssize_t body_end = end
        if not self._args_started:
            while start < end and _is_space(self._kind, self._data, start):
                start += 1
            if start == end:
                return
            self._args_started = True
        while body_end > start and _is_space(self._kind, self._data, body_end - 1):
            body_end -= 1
        if body_end == start:
            if self._space_start < 0:
                self._space_start = start
            return
        if self._space_start >= 0:
            start = self._space_start
        self._space_start = body_end if body_end < end else -1
        self._piece(start, body_end)

    cdef Py_ssize_t _span(self, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        if self._state == CONTENT:
            self._copy(0, start, end)
        elif self._state == ARGS:
            self._args_span(start, end)
        # NAME: the header is the span from its opening marker to its end marker; SECTION: dropped
        return 0

    cdef void _marker(self, int index, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        if self._state == NAME:
            self._header_row(self._header_start, start)
            self._args_started = False
            self._space_start = -1
            self._state = ARGS
            return
        self._transition(index)
        if self._state == NAME:
            self._header_start = end

    cdef int _batch_keep(self, str source, Py_ssize_t released) except -1:
        self._header = source[self._header_start:released] if self._state == NAME else ""
        self._space = source[self._space_start:released] if self._state == ARGS and self._space_start >= 0 else ""
        return 0


# ---- JSON objects ---------------------------------------------------------------------------------

cdef enum:
    KEY_CHARS = 16  # longest key ("parameters" is 10)
    MAX_KEYS = 2  # per role (name, arguments)
    # _key_match results
    FAIL = 0
    MATCH = 1
    PENDING = 2  # the text ends inside a possible match


cdef struct Key:
    Py_UCS4 chars[KEY_CHARS]
    int length


cdef struct ObjectState:
    # One call object being read (``tool_scan_py.JsonMachine._reset_object``), as a struct so a
    # batch that has to be redone with the GIL can put it back.
    JsonScan scan  # the object's end
    JsonScan args_scan  # the arguments value's end
    bint opened, args_scanning, args_begun
    Py_ssize_t args_at, args_sent  # offsets in the object
    # per key: where the next possible match may start (earlier ones were ruled out for good)
    Py_ssize_t name_from[MAX_KEYS]
    Py_ssize_t args_from[MAX_KEYS]


cdef int _key_match(const Key* key, bint string_value, int kind, const void* data, Py_ssize_t at,
                    Py_ssize_t limit, Py_ssize_t* value_start, Py_ssize_t* value_end) noexcept nogil:
    """``"key"\\s*:\\s*`` (``string_value``: then ``"((?:[^"\\\\]|\\\\.)*)"``) at ``at``, within
    ``data[:limit]``: the regexes of the twin, matched by hand. The pattern is deterministic (each
    position admits one way forward), so the first failure is final and running out of text is
    PENDING. A match (only) sets the value's span (only its start, after the whitespace, for keys)."""
    cdef Py_ssize_t i = at + 1, start
    cdef Py_UCS4 c
    cdef int k
    for k in range(key.length):
        if i >= limit:
            return PENDING
        if PyUnicode_READ(kind, data, i) != key.chars[k]:
            return FAIL
        i += 1
    if i >= limit:
        return PENDING
    if PyUnicode_READ(kind, data, i) != u'"':
        return FAIL
    i += 1
    while i < limit and _is_space(kind, data, i):
        i += 1
    if i >= limit:
        return PENDING
    if PyUnicode_READ(kind, data, i) != u":":
        return FAIL
    i += 1
    while i < limit and _is_space(kind, data, i):
        i += 1
    if not string_value:
        value_start[0] = i
        return MATCH
    if i >= limit:
        return PENDING
    if PyUnicode_READ(kind, data, i) != u'"':
        return FAIL
    i += 1
    start = i
    while i < limit:
        c = PyUnicode_READ(kind, data, i)
        if c == u'"':
            value_start[0], value_end[0] = start, i
            return MATCH
        if c == u"\\":
            if i + 1 >= limit:
                return PENDING
            if PyUnicode_READ(kind, data, i + 1) == u"\n":  # "." does not match a newline
                return FAIL
            i += 2
        else:
            i += 1
    return PENDING


cdef bint _key_search(const Key* key, bint string_value, int kind, const void* data, Py_ssize_t limit,
                      bint final, Py_ssize_t* from_, Py_ssize_t* value_start, Py_ssize_t* value_end) noexcept nogil:
    """``re.search`` of the key's pattern in ``data[:limit]``, resumed at ``from_`` (the text only
    grows, so a position ruled out stays out; ``final``: it will not grow). A possible match cut
    by the end of the text stops the search there: no later one can be complete."""
    cdef Py_ssize_t p = from_[0]
    cdef int result
    while p < limit:
        if PyUnicode_READ(kind, data, p) == u'"':
            result = _key_match(key, string_value, kind, data, p, limit, value_start, value_end)
            if result == MATCH:
                return True
            if result == PENDING and not final:
                from_[0] = p
                return False
        p += 1
    from_[0] = p
    return False


cdef int _set_keys(Key* keys, tuple names) except -1:
    cdef int k, i
    if len(names) > MAX_KEYS:
        raise ValueError(f"at most {MAX_KEYS} name or arguments keys, got {names!r}")
    for k in range(len(names)):
        name = names[k]
        if not isinstance(name, str) or not 0 < len(name) <= KEY_CHARS:
            raise ValueError(f"keys are str of 1 to {KEY_CHARS} chars, got {name!r}")
        for i in range(len(name)):
            keys[k].chars[i] = name[i]
        keys[k].length = len(name)
    return 0


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

    cdef object _fmt
    cdef bint _untagged  # no end marker: a block ends at the first non-JSON text
    cdef Key _name_keys[MAX_KEYS]
    cdef Key _args_keys[MAX_KEYS]
    cdef int _n_name_keys, _n_args_keys
    cdef ObjectState _o
    cdef str _obj, _lead
    # feed_batch: where the object and the held leading whitespace begin in the source; a batch
    # that meets an object only Python can settle is redone with feed (from the saved state)
    cdef Py_ssize_t _obj_start, _lead_start
    cdef bint _needs_gil
    cdef ObjectState _saved_o
    cdef int _saved_state, _saved_calls

    def __init__(self, fmt, tools=None, state=None, **options):
        if state is None:
            state = START if fmt.bare_at_start else CONTENT
        self._init_tool([fmt.start, fmt.start, fmt.end, ()], state, json_name)
        self._fmt = fmt
        self._untagged = not fmt.end
        _set_keys(self._name_keys, tuple(fmt.name_keys))
        _set_keys(self._args_keys, tuple(fmt.args_keys))
        self._n_name_keys, self._n_args_keys = len(fmt.name_keys), len(fmt.args_keys)
        self._obj = self._lead = ""
        self._reset_object()

    cdef void _reset_object(self) noexcept nogil:
        cdef int k
        json_scan_reset(&self._o.scan)
        json_scan_reset(&self._o.args_scan)
        self._o.opened = self._o.args_scanning = self._o.args_begun = False
        self._o.args_at = -1
        self._o.args_sent = 0
        for k in range(MAX_KEYS):
            self._o.name_from[k] = self._o.args_from[k] = 0

    cdef void _advance(self, int kind, const void* obj, Py_ssize_t n, Py_ssize_t* name_start,
                       Py_ssize_t* name_end, Py_ssize_t* piece_start, Py_ssize_t* piece_end) noexcept nogil:
        """The twin's ``_advance`` on the object's text ``obj[:n]``: sets the span of the name
        when it is read now (else -1) and of the arguments piece to send (empty when none)."""
        cdef ObjectState* o = &self._o
        cdef Py_ssize_t value_end = 0, end, start
        cdef int k
        name_start[0] = -1
        piece_start[0] = piece_end[0] = 0
        if o.args_at < 0:
            for k in range(self._n_args_keys):
                if _key_search(&self._args_keys[k], False, kind, obj, n, False, &o.args_from[k], &o.args_at,
                               &value_end):
                    break
        if not o.opened:
            for k in range(self._n_name_keys):
                if _key_search(&self._name_keys[k], True, kind, obj, o.args_at if o.args_at >= 0 else n,
                               o.args_at >= 0, &o.name_from[k], name_start, name_end):
                    o.opened = True
                    break
        if o.opened and o.args_at >= 0 and not (o.args_scanning and o.args_scan.done):
            if not o.args_scanning:
                o.args_scanning = True
                o.args_sent = o.args_at
            start = o.args_sent
            end = json_scan(&o.args_scan, kind, obj, start, n)
            if end < 0:
                end = n
            if o.args_scan.started:
                if not o.args_begun:
                    while start < end and _is_space(kind, obj, start):
                        start += 1
                if start < end:
                    o.args_begun = True
                    piece_start[0], piece_end[0] = start, end
            o.args_sent = end

    cdef int _on_marker(self, int index) except -1:
        if self._state == START:
            self._lead = ""
        self._marker(index, 0, 0)
        return 0

    cdef Py_ssize_t _on_text(self, str text) except -1:
        cdef Py_ssize_t i, n = len(text), end, name_start, name_end, piece_start, piece_end
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
            if PyUnicode_READ(kind, data, i) == u"{":
                self._state = BLOCK
                return n - i
            self._state = CONTENT
            self._content += lead
            return n
        elif self._state == BLOCK:
            for i in range(n):
                action = _block_char(PyUnicode_READ(kind, data, i))
                if action > 0:
                    self._state = OBJECT
                    return n - i
                if action < 0:
                    if self._untagged:
                        self._state = CONTENT
                        return n - i
                    self._content += text[i]
        else:
            end = json_scan(&self._o.scan, kind, data, 0, n)
            self._obj += text if end < 0 else text[:end]
            self._advance(PyUnicode_KIND(self._obj), PyUnicode_DATA(self._obj), len(self._obj),
                          &name_start, &name_end, &piece_start, &piece_end)
            if name_start >= 0:
                name, given_id = json_name(self._obj[name_start:name_end])
                self._open(name, given_id)
            if piece_end > piece_start:
                self._args(self._obj[piece_start:piece_end])
            if end >= 0:
                self._close_object()
                self._state = BLOCK
                return n - end
        return 0

    cdef int _close_object(self) except -1:
        if not (self._o.opened and self._o.args_scanning):
            content, name, args = settle_object(self._obj, self._fmt, self._o.opened)
            if content is not None:
                self._content += content
            else:
                if name is not None:
                    self._open(name, None)
                if args:
                    self._args(args)
        self._obj = ""
        self._reset_object()
        return 0

    cdef int _on_finish(self, str held) except -1:
        if self._state == OBJECT and not self._o.opened:
            self._content += self._obj
        elif self._state == START:
            self._content += self._lead
        if self._state == CONTENT or self._state == START:
            self._content += held
        return 0

    # ---- feed_batch ------------------------------------------------------------------------------

    cdef str _carry(self):
        if self._state == OBJECT:
            return self._obj
        return self._lead if self._state == START else ""

    cdef int _batch_begin(self, Py_ssize_t size, Py_ssize_t n_deltas) except -1:
        ToolMachine._batch_begin(self, size, n_deltas)
        self._obj_start = 0
        self._lead_start = 0 if self._state == START and self._lead else -1
        self._needs_gil = False
        self._saved_o = self._o
        self._saved_state, self._saved_calls = self._state, self.calls
        return 0

    cdef Py_ssize_t _span(self, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        cdef Py_ssize_t i, stop, name_start, name_end, piece_start, piece_end
        cdef int action
        if self._needs_gil:  # the batch will be redone
            return 0
        if self._state == CONTENT:
            self._copy(0, start, end)
        elif self._state == START:
            i = start
            while i < end and _is_space(self._kind, self._data, i):
                i += 1
            if i == end:
                if self._lead_start < 0:
                    self._lead_start = start
                return 0
            if PyUnicode_READ(self._kind, self._data, i) == u"{":
                self._state = BLOCK
                self._lead_start = -1
                return end - i
            self._state = CONTENT
            if self._lead_start >= 0:
                self._copy(0, self._lead_start, start)
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
                    if self._untagged:
                        self._state = CONTENT
                        return end - i
                    self._copy(0, i, i + 1)
        else:
            stop = json_scan(&self._o.scan, self._kind, self._data, start, end)
            self._advance(self._kind, <const char*>self._data + self._obj_start * self._kind,
                          (end if stop < 0 else stop) - self._obj_start,
                          &name_start, &name_end, &piece_start, &piece_end)
            if name_start >= 0:
                self._header_row(self._obj_start + name_start, self._obj_start + name_end)
            if piece_end > piece_start:
                self._piece(self._obj_start + piece_start, self._obj_start + piece_end)
            if stop >= 0:
                if not (self._o.opened and self._o.args_scanning):  # settle_object is Python
                    self._needs_gil = True
                    return 0
                self._reset_object()
                self._state = BLOCK
                return end - stop
        return 0

    cdef void _marker(self, int index, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        """The only markers open a block (content, start) or close it."""
        if self._state == CONTENT or self._state == START:
            self._state = BLOCK
            self._lead_start = -1
        elif self._state == BLOCK:
            self._state = CONTENT

    cdef object _batch_complete(self):
        if not self._needs_gil:
            return ToolMachine._batch_complete(self)
        text, ends = self._batch_source[self._batch_base:], self._batch_cuts
        self._batch_drop()
        self._o = self._saved_o
        self._state, self.calls = self._saved_state, self._saved_calls
        return ToolBatch.from_deltas(feed_each((<object>self).feed, EMPTY, text, ends, self._finished))

    cdef int _batch_keep(self, str source, Py_ssize_t released) except -1:
        self._obj = source[self._obj_start:released] if self._state == OBJECT else ""
        self._lead = source[self._lead_start:released] if self._state == START and self._lead_start >= 0 else ""
        return 0
