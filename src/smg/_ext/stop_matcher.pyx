# cython: language_level=3
"""Compiled streaming stop-string matcher; the algorithm is specified by ``stop_matcher_py.py``.

The DFA built by the twin's ``build_dfa`` is copied into C arrays; ``feed`` walks the delta's code
points, UTF-8 encoded on the fly, through it and slices the str once at the end. It keeps the GIL:
a delta is a few characters, and releasing the GIL would cost more than the walk.
"""
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DATA, PyUnicode_KIND
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.stdlib cimport calloc, free, malloc

from smg._ext._records cimport _new_tuple
from smg._ext.stop_matcher_py import StopDelta, batch_ends, build_dfa, check_batch, check_distinct
from smg.errors import ParseError

__all__ = ["StopAutomaton", "StopStringMatcher", "StopChecker", "StopDelta", "matcher_for", "MarkerDriven",
           "feed_batches"]

cdef dict _automata = {}

cdef inline object _delta(str text, bint finished, object reason, object matched):
    return _new_tuple(StopDelta, (text, finished, reason, matched))


cdef int32_t* _copy_ints(list values) except NULL:
    cdef Py_ssize_t i, n = len(values)
    cdef int32_t* out = <int32_t*>malloc(max(n, 1) * sizeof(int32_t))
    if out == NULL:
        raise MemoryError()
    for i in range(n):
        out[i] = values[i]
    return out


cdef class StopAutomaton:
    """See ``stop_matcher_py.StopAutomaton``."""

    def __cinit__(self, patterns):
        cdef int i
        if any(not isinstance(p, str) or not p for p in patterns):
            raise ValueError("stop strings must be non-empty str")
        self.patterns = list(patterns)
        classes, self.n_classes, delta, held_chars, match = build_dfa(self.patterns)
        for i in range(256):
            self.classes[i] = classes[i]
        self.delta = _copy_ints(delta)
        self.held_chars = _copy_ints(held_chars)
        self.match = _copy_ints(match)
        self.pattern_chars = _copy_ints([len(p) for p in self.patterns])

    def __dealloc__(self):
        free(self.delta)
        free(self.held_chars)
        free(self.match)
        free(self.pattern_chars)


cdef class StopStringMatcher:
    """See ``stop_matcher_py.StopStringMatcher``."""

    def __cinit__(self, StopAutomaton automaton not None, bint include_stop=False):
        self.a = automaton
        self.include_stop = include_stop
        self.state = 0
        self._held = ""

    cdef str _feed(self, str text, bint detect, int32_t* index):
        return self._walk(text, detect, index, NULL)

    cdef str _walk(self, str text, bint detect, int32_t* index, Py_ssize_t* after):
        """Walk the text's code points, UTF-8 encoded on the fly (no buffer), through the DFA."""
        cdef StopAutomaton a = self.a
        cdef Py_ssize_t i, n = len(text), end, keep, total
        cdef int32_t state = self.state, n_classes = a.n_classes
        cdef const int32_t* delta = a.delta
        cdef const uint8_t* classes = a.classes
        cdef uint32_t cp
        cdef uint8_t utf8[4]
        cdef int k, width, kind = PyUnicode_KIND(text)
        cdef const void* data = PyUnicode_DATA(text)
        cdef str combined
        index[0] = -1
        for i in range(n):
            cp = <uint32_t>PyUnicode_READ(kind, data, i)
            if cp < 0x80:
                state = delta[state * n_classes + classes[cp]]
            else:
                if cp < 0x800:
                    utf8[0] = 0xC0 | (cp >> 6); utf8[1] = 0x80 | (cp & 0x3F); width = 2
                elif cp < 0x10000:
                    utf8[0] = 0xE0 | (cp >> 12); utf8[1] = 0x80 | ((cp >> 6) & 0x3F)
                    utf8[2] = 0x80 | (cp & 0x3F); width = 3
                else:
                    utf8[0] = 0xF0 | (cp >> 18); utf8[1] = 0x80 | ((cp >> 12) & 0x3F)
                    utf8[2] = 0x80 | ((cp >> 6) & 0x3F); utf8[3] = 0x80 | (cp & 0x3F); width = 4
                for k in range(width):
                    state = delta[state * n_classes + classes[utf8[k]]]
            # Patterns are whole characters, so a match can only complete at a character's end.
            if detect and a.match[state] >= 0:
                index[0] = a.match[state]
                end = len(self._held) + i + 1
                combined = self._held + text
                self._held = ""
                self.state = 0
                if after != NULL:
                    after[0] = i + 1
                    return combined[:end - a.pattern_chars[index[0]]]
                return combined[:end if self.include_stop else end - a.pattern_chars[index[0]]]
        self.state = state
        keep = a.held_chars[state]
        if keep == 0 and not self._held:  # the common case: nothing held before or after
            return text
        combined = self._held + text if self._held else text
        total = len(combined)
        self._held = combined[total - keep:]
        return combined[:total - keep]

    cdef str _finish(self):
        cdef str out = self._held
        self._held = ""
        self.state = 0
        return out

    def feed(self, str text, bint detect=True):
        cdef int32_t index
        released = self._feed(text, detect, &index)
        return released, index

    def finish(self):
        return self._finish()

    def split(self, str text):
        """See ``stop_matcher_py.StopStringMatcher.split``."""
        cdef int32_t index
        cdef Py_ssize_t after = 0
        released = self._walk(text, True, &index, &after)
        if index < 0:
            return released, -1, ""
        return released, index, text[after:]

    @property
    def held(self):
        return self._held


cpdef StopStringMatcher matcher_for(tuple markers):
    """See ``stop_matcher_py.matcher_for``."""
    if not markers:
        return None
    automaton = _automata.get(markers)
    if automaton is None:
        automaton = _automata[markers] = StopAutomaton(list(markers))
    return StopStringMatcher(automaton)


cdef inline Py_ssize_t dfa_walk(const Dfa* a, int kind, const void* data, Py_ssize_t pos, Py_ssize_t end,
                                int32_t* state, int32_t* index) noexcept nogil:
    """``StopStringMatcher._walk`` over a str's buffer without the GIL: from ``pos``, stop after the
    first character completing a marker (``index`` >= 0) or at ``end``; returns the position."""
    cdef int32_t s = state[0], n_classes = a.n_classes
    cdef uint32_t cp
    while pos < end:
        cp = PyUnicode_READ(kind, data, pos)
        pos += 1
        if cp < 0x80:
            s = a.delta[s * n_classes + a.classes[cp]]
        elif cp < 0x800:
            s = a.delta[s * n_classes + a.classes[0xC0 | (cp >> 6)]]
            s = a.delta[s * n_classes + a.classes[0x80 | (cp & 0x3F)]]
        elif cp < 0x10000:
            s = a.delta[s * n_classes + a.classes[0xE0 | (cp >> 12)]]
            s = a.delta[s * n_classes + a.classes[0x80 | ((cp >> 6) & 0x3F)]]
            s = a.delta[s * n_classes + a.classes[0x80 | (cp & 0x3F)]]
        else:
            s = a.delta[s * n_classes + a.classes[0xF0 | (cp >> 18)]]
            s = a.delta[s * n_classes + a.classes[0x80 | ((cp >> 12) & 0x3F)]]
            s = a.delta[s * n_classes + a.classes[0x80 | ((cp >> 6) & 0x3F)]]
            s = a.delta[s * n_classes + a.classes[0x80 | (cp & 0x3F)]]
        if a.match[s] >= 0:
            state[0] = s
            index[0] = a.match[s]
            return pos
    state[0] = s
    index[0] = -1
    return pos


def feed_batches(jobs):
    """``[machine.feed_batch(text, ends) for machine, text, ends in jobs]``, with the scans of all
    compiled machines in one release of the GIL: a thread serving many streams pays one GIL
    hand-off per call, not one per stream. The machines must be distinct; other parsers (the
    Python tool machines) run their own ``feed_batch`` with the GIL held."""
    cdef list machines = [], results = [None] * len(jobs)
    cdef MarkerDriven machine
    cdef Py_ssize_t i, k, n, bad = -1
    check_distinct(jobs)
    cdef list others = []
    try:
        for i, (parser, text, ends) in enumerate(jobs):
            if isinstance(parser, MarkerDriven):
                machine = parser
                machine._batch_prepare(text, ends)
                machines.append((i, machine))
            else:  # checked now, run once every compiled batch is known to be good
                others.append((i, parser, text, check_batch(text, ends, parser._finished)))
    except BaseException:
        for _, machine in machines:  # the machines' states are as before
            machine._batch_drop()
        raise
    n = len(machines)
    cdef PyObject** run_list = <PyObject**>malloc(max(n, 1) * sizeof(PyObject*))
    if run_list == NULL:
        raise MemoryError()
    try:
        for k in range(n):  # borrowed: `machines` holds the references
            run_list[k] = <PyObject*>machines[k][1]
        with nogil:
            for k in range(n):
                bad = (<MarkerDriven>run_list[k])._batch_check()
                if bad >= 0:
                    break
            if bad < 0:
                for k in range(n):
                    (<MarkerDriven>run_list[k])._batch_run()
    finally:
        free(run_list)
    if bad >= 0:
        for i in range(n):
            if i != k:
                (<MarkerDriven>machines[i][1])._batch_drop()
        (<MarkerDriven>machines[k][1])._batch_fail(bad)
    for i, machine in machines:
        results[i] = machine._batch_complete()
    for i, parser, text, ends in others:
        results[i] = parser.feed_batch(text, ends)
    return results


cdef class MarkerDriven:
    """Base of the compiled parser machines (``MarkerMachine`` of the twin, in C): ``_drive`` walks
    text through the current state's matcher, handing text between markers to ``_on_text`` and
    each marker to ``_on_marker``, which the machines override and which may change ``_state``.
    ``_on_text`` (and ``_span`` in a batch) may change the state part-way through its text (a JSON
    object starts at ``{``): it returns how many of its last characters it did not consume, and
    those are scanned again, with all that followed, in the new state (0: all consumed)."""

    cdef Py_ssize_t _on_text(self, str text) except -1:
        return 0

    cdef int _on_marker(self, int index) except -1:
        return 0

    cdef object _take(self):
        """The delta accumulated since the last one (each machine builds its own record)."""
        raise NotImplementedError(f"{type(self).__name__} does not define _take")

    cdef int _on_finish(self, str held) except -1:
        """End of stream: ``held`` is the tail the current state's matcher held as a possible marker."""
        if held:
            self._on_text(held)
        return 0

    cpdef object feed(self, text):
        """The delta completed by one more piece of model output. A delta is a str, fed before
        ``finish``; misuse is a ParseError (model output never is)."""
        if type(text) is not str or self._finished:
            raise ParseError("parser already finished" if self._finished else
                             f"parsers take str deltas, got {type(text).__name__}")
        self._drive(text)
        return self._take()

    # ---- feed_batch: many deltas per call, the scanning without the GIL ------------------------
    # The batch's source is carry + held + text: what the machine keeps between calls as text
    # (``_carry``: a header being read...), the current matcher's held tail, then the new deltas.
    # Every piece of output is a span of the source, so the machines copy spans into C buffers
    # (``_span``, ``_marker``, ``_delta_end``, called without the GIL) and build a few Python
    # objects at the end (``_batch_end``). Between calls the state is the one ``feed`` keeps, so
    # both may be mixed on one stream.

    cdef str _carry(self):
        return ""

    cdef int _batch_begin(self, Py_ssize_t size, Py_ssize_t n_deltas) except -1:
        return 0

    cdef Py_ssize_t _span(self, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        return 0

    cdef void _marker(self, int index, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
        pass

    cdef void _delta_end(self) noexcept nogil:
        pass

    cdef object _batch_end(self, str source, Py_ssize_t released):
        raise NotImplementedError(f"{type(self).__name__} does not define _batch_end")

    cdef int _load_dfas(self) except -1:
        cdef StopStringMatcher matcher
        cdef StopAutomaton a
        cdef Py_ssize_t i, n = len(self._matchers)
        self._dfas = <Dfa*>calloc(max(n, 1), sizeof(Dfa))
        if self._dfas == NULL:
            raise MemoryError()
        for i in range(n):
            if self._matchers[i] is not None:  # the matchers keep the automata alive
                matcher = self._matchers[i]
                a = matcher.a
                self._dfas[i].classes = a.classes
                self._dfas[i].n_classes = a.n_classes
                self._dfas[i].delta = a.delta
                self._dfas[i].held_chars = a.held_chars
                self._dfas[i].match = a.match
                self._dfas[i].pattern_chars = a.pattern_chars
        return 0

    def __dealloc__(self):
        free(self._dfas)

    def feed_batch(self, text, ends):
        """Many deltas in one call: ``text`` is their concatenation and ``ends[i]`` the end of
        delta ``i`` in it (``join_deltas`` builds both). The result holds what ``feed`` would
        have returned for each delta; the scan runs without the GIL, so threads parsing other
        streams run in parallel (``feed_batches`` does several streams per GIL release)."""
        cdef Py_ssize_t bad
        self._batch_prepare(text, ends)
        with nogil:
            bad = self._batch_check()
            if bad < 0:
                self._batch_run()
        if bad >= 0:
            self._batch_fail(bad)
        return self._batch_complete()

    # A batch in three phases, so that feed_batches can run many machines' scans in one release
    # of the GIL: prepare (GIL: checks, the source, buffers), run (no GIL), complete (GIL).

    cdef int _batch_prepare(self, text, ends) except -1:
        cdef const int64_t[::1] cuts
        cdef StopStringMatcher matcher
        cdef str carry, held = ""
        if self._batch_source is not None:
            raise ParseError("this parser is already in the batch")
        cuts_array = batch_ends(text, ends, self._finished)
        cuts = cuts_array
        if self._dfas == NULL:
            self._load_dfas()
        carry = self._carry()
        self._batch_dfa_state = 0
        matcher = self._matchers[self._state]
        if matcher is not None:
            held, self._batch_dfa_state = matcher._held, matcher.state
        source = carry + held + text if carry or held else text
        self._kind = PyUnicode_KIND(source)
        self._data = PyUnicode_DATA(source)
        self._batch_begin(len(source), cuts.shape[0])
        self._batch_source, self._batch_cuts = source, cuts_array  # kept alive until complete
        self._batch_ends = &cuts[0] if cuts.shape[0] else NULL
        self._batch_n = cuts.shape[0]
        self._batch_text_length = len(text)
        self._batch_base = len(carry) + len(held)
        self._batch_pending = len(carry)  # the held tail is not released yet (but was walked)
        self._delta_index = 0
        return 0

    cdef Py_ssize_t _batch_check(self) noexcept nogil:
        """check_batch's rules on the ends (before the scan relies on them): the index of the
        first bad end, ``_batch_n`` when the last is not the text's end, -1 when all is well."""
        cdef Py_ssize_t d, end = 0
        for d in range(self._batch_n):
            if self._batch_ends[d] < end:
                return d
            end = self._batch_ends[d]
        return -1 if end == self._batch_text_length else self._batch_n

    cdef int _batch_fail(self, Py_ssize_t bad) except -1:
        """Drop the prepared batch (the machine is as before) and raise check_batch's error."""
        cdef const int64_t* ends = self._batch_ends
        cdef Py_ssize_t n = self._batch_n, length = self._batch_text_length
        try:
            if bad < n:
                raise ParseError(f"batch ends must be non-decreasing from 0, got {ends[bad]} after "
                                 f"{ends[bad - 1] if bad else 0}")
            raise ParseError(f"the last batch end must be len(text) = {length}, got {ends[n - 1] if n else 0}")
        finally:
            self._batch_drop()

    cdef void _batch_run(self) noexcept nogil:
        cdef Py_ssize_t d, end, released, left, base = self._batch_base, pending = self._batch_pending
        cdef Py_ssize_t pos = base  # only the new text is walked
        cdef int32_t dstate = self._batch_dfa_state, index
        cdef const Dfa* dfa
        for d in range(self._batch_n):
            end = base + self._batch_ends[d]
            while pos < end:
                dfa = &self._dfas[self._state]
                if dfa.delta == NULL:
                    left = self._span(pending, end)
                    pos = pending = end - left
                    if left:  # the state changed: the rest is walked in the new one
                        continue
                    break
                pos = dfa_walk(dfa, self._kind, self._data, pos, end, &dstate, &index)
                released = pos - dfa.pattern_chars[index] if index >= 0 else end - dfa.held_chars[dstate]
                left = self._span(pending, released) if released > pending else 0
                if left:  # rescan from there, marker and held tail included, in the new state
                    pos = pending = released - left
                    dstate = 0
                elif index >= 0:
                    self._marker(index, released, pos)
                    dstate = 0
                    pending = pos
                elif released > pending:
                    pending = released
            self._delta_end()
        self._batch_pending, self._batch_dfa_state = pending, dstate

    cdef object _batch_complete(self):
        cdef StopStringMatcher matcher
        cdef str source = self._batch_source
        for matcher in self._matchers:  # left states were left by a marker: their matchers are reset
            if matcher is not None:
                matcher.state, matcher._held = 0, ""
        matcher = self._matchers[self._state]
        if matcher is not None:
            matcher.state, matcher._held = self._batch_dfa_state, source[self._batch_pending:]
        self._batch_abort()
        return self._batch_end(source, self._batch_pending)

    cdef void _free_batch(self):
        """Free the machine's batch buffers (``_batch_end`` does it after building the result)."""
        pass

    cdef void _batch_abort(self):
        """Forget the batch's source."""
        self._data = NULL
        self._batch_ends = NULL
        self._batch_source = self._batch_cuts = None

    cdef void _batch_drop(self):
        """Drop a prepared batch that will not complete: the machine is as before it."""
        self._batch_abort()
        self._free_batch()

    def finish(self):
        """End of output: release the held tail, return the last delta."""
        if self._finished:
            raise ParseError("parser already finished")
        self._finished = True
        cdef StopStringMatcher matcher = self._matchers[self._state]
        self._on_finish(matcher._finish() if matcher is not None else "")
        return self._take()

    cdef int _drive(self, str text) except -1:
        cdef StopStringMatcher matcher
        cdef int32_t index
        cdef Py_ssize_t after, left
        cdef str before
        while text:
            matcher = self._matchers[self._state]
            if matcher is None:
                left = self._on_text(text)
                if not left:
                    return 0
                text = text[len(text) - left:]
                continue
            after = 0
            before = matcher._walk(text, True, &index, &after)
            left = self._on_text(before) if before else 0
            if left:  # the state changed inside ``before``: rescan its rest, marker and held tail
                before = before[len(before) - left:]
                text = before + (matcher.a.patterns[index] + text[after:] if index >= 0 else matcher._finish())
                continue
            if index < 0:
                return 0
            self._on_marker(index)
            text = text[after:]
        return 0


cdef class StopChecker:
    """See ``stop_matcher_py.StopChecker``."""

    def __cinit__(self, stop, stop_ids, long min_tokens, long max_tokens, bint include_stop,
                  StopAutomaton automaton):
        self.stop = tuple(stop)
        self.stop_ids = stop_ids
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens
        self.include_stop = include_stop
        self.matcher = StopStringMatcher(automaton, include_stop) if automaton is not None else None
        self.n = 0
        self.done = None

    @property
    def num_tokens(self):
        return self.n

    @property
    def finished(self):
        return self.done is not None

    cpdef object step(self, long token_id, str text):
        if self.done is not None:
            return _delta("", True, self.done[2], self.done[3])
        text = self.advance(token_id, text)
        return self.done if self.done is not None else _delta(text, False, None, None)

    cdef str advance(self, long token_id, str text):
        """``step`` for a caller that reads ``done`` (set when this token ends it): no delta record
        per token. Only while not ``done``."""
        cdef bint may_stop
        cdef str held
        cdef int32_t index
        self.n += 1
        may_stop = self.n >= self.min_tokens
        if may_stop and token_id in self.stop_ids:
            held = self.matcher._finish() if self.matcher is not None else ""
            return self._end(held + text if self.include_stop else held, "stop", token_id)
        if self.matcher is not None:
            text = self.matcher._feed(text, may_stop, &index)
            if index >= 0:
                return self._end(text, "stop", self.stop[index])
        if self.max_tokens and self.n >= self.max_tokens:
            if self.matcher is not None:
                text = text + self.matcher._finish()
            return self._end(text, "length", None)
        return text

    def finish(self, str text=""):
        if self.done is not None:
            return _delta("", True, self.done[2], self.done[3])
        if self.matcher is None:
            return _delta(text, False, None, None)
        text, index = self.matcher.feed(text, self.n >= self.min_tokens)
        if index >= 0:
            self._end(text, "stop", self.stop[index])
            return self.done
        return _delta(text + self.matcher.finish(), False, None, None)

    cdef str _end(self, str text, str reason, object matched):
        self.done = _delta(text, True, reason, matched)
        return text
