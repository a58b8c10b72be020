"""Reference twin of ``stop_matcher.pyx``: streaming multi-pattern stop-string matching.

The stop strings are compiled once (per distinct set) into an Aho–Corasick automaton over UTF-8
bytes, turned into a dense DFA over *byte classes* (bytes that occur in no pattern share one
class). Streaming text is fed through it byte by byte, never rescanned:

* the state's depth is the longest suffix of the text so far that is a prefix of some stop
  string: exactly the text that must be **held back** (it may still become a stop string), and
  the rest is **released** at once;
* a stop string is found at the **earliest end position** in the text; among those ending there,
  the longest. The output is the text before it (or through it with ``include_stop``).

The result depends only on the concatenated text, never on how it was chunked (property-tested
against :func:`find_stop`, a brute-force one-shot definition). Cost: O(bytes) per delta, plus a
str slice; building is O(total pattern bytes x classes), cached per stop-string set.

:class:`StopChecker` is the per-token request logic around it (see ``smg.stop`` for the rules);
it lives here, beside the matcher, because it runs once per generated token.
"""
from __future__ import annotations

from array import array
from itertools import accumulate
from collections import deque
from typing import AbstractSet, Callable, NamedTuple, Sequence

from smg.errors import ParseError


def find_stop(text: str, patterns: Sequence[str], include_stop: bool) -> tuple[str, int]:
    """One-shot definition: ``(output text, index of the matched pattern or -1)``."""
    best_end, best = None, -1
    for i, p in enumerate(patterns):
        pos = text.find(p)
        if pos < 0:
            continue
        end = pos + len(p)
        if best_end is None or end < best_end or (end == best_end and len(p) > len(patterns[best])):
            best_end, best = end, i
    if best < 0:
        return text, -1
    return (text[:best_end] if include_stop else text[: best_end - len(patterns[best])]), best


def build_dfa(patterns: Sequence[str]) -> tuple[bytes, int, list[int], list[int], list[int]]:
    """Compile the patterns: ``(byte classes, number of classes, transitions, held chars per state,
    matched pattern per state or -1)``; transitions are ``state * n_classes + class``."""
    encoded = [p.encode("utf-8") for p in patterns]
    used = sorted({b for p in encoded for b in p})
    classes = bytearray(256)  # class 0: bytes in no pattern
    for index, b in enumerate(used, start=1):
        classes[b] = index
    n_classes = len(used) + 1
    # Trie over classes.
    children: list[dict[int, int]] = [{}]
    chars = [0]  # characters in the prefix a state spells
    own = [-1]  # pattern ending exactly at this state (first of equal patterns)
    for index, data in enumerate(encoded):
        state = 0
        for b in data:
            c = classes[b]
            nxt = children[state].get(c)
            if nxt is None:
                nxt = len(children)
                children[state][c] = nxt
                children.append({})
                chars.append(chars[state] + (b & 0xC0 != 0x80))
                own.append(-1)
            state = nxt
        if own[state] == -1:
            own[state] = index
    n_states = len(children)
    fail = [0] * n_states
    match = list(own)  # longest pattern ending here: own, else the one inherited via fail links
    delta = [0] * (n_states * n_classes)
    queue: deque[int] = deque()
    for c in range(n_classes):
        nxt = children[0].get(c, 0)
        delta[c] = nxt
        if nxt:
            queue.append(nxt)
    while queue:
        state = queue.popleft()
        if match[state] == -1:
            match[state] = match[fail[state]]
        for c in range(n_classes):
            nxt = children[state].get(c)
            if nxt is None:
                delta[state * n_classes + c] = delta[fail[state] * n_classes + c]
            else:
                fail[nxt] = delta[fail[state] * n_classes + c]
                delta[state * n_classes + c] = nxt
                queue.append(nxt)
    # A state's own pattern is the longest ending there: fail-inherited ones are its suffixes.
    return bytes(classes), n_classes, delta, chars, match


class StopAutomaton:
    """A compiled set of stop strings."""

    def __init__(self, patterns: Sequence[str]) -> None:
        if any(not isinstance(p, str) or not p for p in patterns):
            raise ValueError("stop strings must be non-empty str")
        self.patterns = list(patterns)
        self.classes, self.n_classes, self.delta, self.held_chars, self.match = build_dfa(self.patterns)
        self.pattern_chars = [len(p) for p in self.patterns]


class StopStringMatcher:
    """One stream's matcher: ``feed(text, detect)`` -> ``(released text, matched index or -1)``."""

    def __init__(self, automaton: StopAutomaton, include_stop: bool = False) -> None:
        self._a = automaton
        self._include = include_stop
        self._state = 0
        self._held = ""

    def feed(self, text: str, detect: bool = True) -> tuple[str, int]:
        a = self._a
        state = self._state
        consumed_chars = 0
        for b in text.encode("utf-8"):
            state = a.delta[state * a.n_classes + a.classes[b]]
            consumed_chars += b & 0xC0 != 0x80
            if detect and a.match[state] >= 0:
                index = a.match[state]
                end = len(self._held) + consumed_chars
                combined = self._held + text
                self._held, self._state = "", 0
                return combined[: end if self._include else end - a.pattern_chars[index]], index
        self._state = state
        combined = self._held + text
        keep = a.held_chars[state]
        self._held = combined[len(combined) - keep :]
        return combined[: len(combined) - keep], -1

    def split(self, text: str) -> tuple[str, int, str]:
        """Marker scanning for the parsers: ``(text released before the first match, matched
        index or -1, the text after the match)``; the match itself is consumed. Without a match
        the tail that may begin a pattern is held, as in :meth:`feed`."""
        a = self._a
        state = self._state
        for i, ch in enumerate(text):
            for b in ch.encode("utf-8"):
                state = a.delta[state * a.n_classes + a.classes[b]]
            if a.match[state] >= 0:
                index = a.match[state]
                end = len(self._held) + i + 1
                combined = self._held + text
                self._held, self._state = "", 0
                return combined[: end - a.pattern_chars[index]], index, text[i + 1 :]
        released, _ = self.feed(text, False)  # no match: same walk, same hold-back
        return released, -1, ""

    def finish(self) -> str:
        out, self._held, self._state = self._held, "", 0
        return out

    @property
    def held(self) -> str:
        return self._held


_automata: dict[tuple[str, ...], StopAutomaton] = {}


def matcher_for(markers: tuple[str, ...]) -> StopStringMatcher | None:
    """A fresh matcher over ``markers`` (None for none); automata are built once per marker set,
    which the parsers' per-state marker tables share across all requests."""
    if not markers:
        return None
    automaton = _automata.get(markers)
    if automaton is None:
        automaton = _automata[markers] = StopAutomaton(list(markers))
    return StopStringMatcher(automaton)


def check_text(text: object, finished: bool) -> str:
    """A parser's delta is a str, fed before ``finish``; misuse is a ParseError (model output never is)."""
    if finished:
        raise ParseError("parser already finished")
    if type(text) is not str:  # exactly str, as the compiled machines take
        raise ParseError(f"parsers take str deltas, got {type(text).__name__}")
    return text


def check_batch(text: object, ends: object, finished: bool) -> array:
    """A batch of deltas is one str and the end offset of each delta in it (code points,
    non-decreasing, the last at ``len(text)``); returns the ends as ``array('q')``."""
    out = batch_ends(text, ends, finished)
    if out and (out[0] < 0 or list(out) != sorted(out)):  # sorted() of sorted input is one C pass
        start = 0
        for end in out:
            if end < start:
                raise ParseError(f"batch ends must be non-decreasing from 0, got {end} after {start}")
            start = end
    last = out[-1] if out else 0
    if last != len(text):  # type: ignore[arg-type]
        raise ParseError(f"the last batch end must be len(text) = {len(text)}, got {last}")  # type: ignore[arg-type]
    return out


def feed_each(feed: Callable[[str], object], empty: object, text: str, ends: object, finished: bool) -> list:
    """The reference meaning of a parser's ``feed_batch``: ``feed`` of each delta in turn (an
    empty delta yields ``empty``, which is what ``feed("")`` returns, without the call)."""
    start, out = 0, []
    for end in check_batch(text, ends, finished):
        out.append(feed(text[start:end]) if end > start else empty)
        start = end
    return out


def batch_ends(text: object, ends: object, finished: bool) -> array:
    """``check_batch``'s type checks: ``ends`` as ``array('q')`` (the compiled machines check
    the values in C)."""
    check_text(text, finished)
    try:
        return ends if isinstance(ends, array) and ends.typecode == "q" else array("q", ends)
    except (TypeError, OverflowError) as exc:
        raise ParseError(f"batch ends must be integers: {exc}") from None


class DeltaBatch:
    """Base of the parsers' columnar batch results: a sequence whose item ``i`` is the delta that
    ``feed`` would have returned for delta ``i`` of the batch (built on access by ``_delta``)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self.content_ends)  # type: ignore[attr-defined]

    def _delta(self, i: int) -> object:
        raise NotImplementedError

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError("batch index out of range")
        return self._delta(i % len(self))

    def __iter__(self):
        return (self._delta(i) for i in range(len(self)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self)!r})"


def feed_batches(jobs: Sequence[tuple[object, str, object]]) -> list:
    """``[parser.feed_batch(text, ends) for parser, text, ends in jobs]`` for distinct parsers, all
    or nothing: every job is checked before any parser moves (the compiled kernel also runs all
    the compiled machines' scans in one release of the GIL)."""
    check_distinct(jobs)
    checked = [check_batch(text, ends, parser._finished) for parser, text, ends in jobs]  # type: ignore[attr-defined]
    return [parser.feed_batch(text, ends) for (parser, text, _), ends in zip(jobs, checked)]  # type: ignore[attr-defined]


def check_distinct(jobs: Sequence[tuple[object, str, object]]) -> None:
    if len({id(job[0]) for job in jobs}) != len(jobs):
        raise ParseError("feed_batches takes each parser at most once")


def join_deltas(deltas: Sequence[str]) -> tuple[str, array]:
    """``(text, ends)`` of a list of deltas, the input of the parsers' ``feed_batch``."""
    return "".join(deltas), array("q", accumulate(map(len, deltas)))


class MarkerMachine:
    """Runs text through per-state marker matchers (``make_matcher``: which kernel's; default
    this twin's). The parsers' machines all drive their markers with it.

    ``markers[state]`` lists the markers that can occur in ``state``; ``run`` calls
    ``on_text(text)`` for the text between markers and ``on_marker(index)`` for each marker found
    (which may change ``self.state``). ``on_text`` may also change the state part-way through its
    text (a JSON object starts at ``{``): it then returns the text it did not consume, and that
    text, with whatever the old state's matcher had not interpreted yet, is scanned again in the
    new state. It returns None when it consumed everything.
    """

    __slots__ = ("state", "_markers", "_matchers")

    def __init__(self, markers: Sequence[Sequence[str]], state: int = 0,
                 make_matcher: Callable[[tuple[str, ...]], object] | None = None) -> None:
        self.state = state
        self._markers = [tuple(m) for m in markers]
        self._matchers = [(make_matcher or matcher_for)(m) for m in self._markers]

    def run(self, text: str, on_text: Callable[[str], str | None], on_marker: Callable[[int], None]) -> None:
        while text:
            state = self.state
            matcher = self._matchers[state]
            if matcher is None:
                leftover = on_text(text)
                if leftover is None:
                    return
                text = leftover
                continue
            before, index, after = matcher.split(text)
            leftover = on_text(before) if before else None
            if leftover is not None:
                text = leftover + (self._markers[state][index] + after if index >= 0 else matcher.finish())
                continue
            if index < 0:
                return
            on_marker(index)
            text = after

    def held(self) -> str:
        """Release the tail held as a possible marker (end of stream: it is plain text)."""
        matcher = self._matchers[self.state]
        return matcher.finish() if matcher is not None else ""



class StopDelta(NamedTuple):
    """What one step releases: ``text`` for the client, and whether the generation is over."""

    text: str
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length"
    matched_stop: str | int | None = None  # the stop string or token id


class StopChecker:
    """One generation's stop rules; build it with ``smg.stop.StopParams.checker``."""

    def __init__(self, stop: Sequence[str], stop_ids: AbstractSet[int], min_tokens: int,
                 max_tokens: int, include_stop: bool, automaton: StopAutomaton | None) -> None:
        self._stop = tuple(stop)
        self._stop_ids = stop_ids
        self._min_tokens = min_tokens
        self._max_tokens = max_tokens  # 0: no limit
        self._include = include_stop
        self._matcher = StopStringMatcher(automaton, include_stop) if automaton is not None else None
        self._n = 0
        self._done: StopDelta | None = None

    @property
    def num_tokens(self) -> int:
        return self._n

    @property
    def finished(self) -> bool:
        return self._done is not None

    def step(self, token_id: int, text: str) -> StopDelta:
        """Account one generated token and the text the detokenizer released with it."""
        if self._done is not None:
            return StopDelta("", True, self._done.finish_reason, self._done.matched_stop)
        self._n += 1
        may_stop = self._n >= self._min_tokens
        if may_stop and token_id in self._stop_ids:
            held = self._matcher.finish() if self._matcher is not None else ""
            return self._end(StopDelta(held + text if self._include else held, True, "stop", token_id))
        if self._matcher is not None:
            text, index = self._matcher.feed(text, may_stop)
            if index >= 0:
                return self._end(StopDelta(text, True, "stop", self._stop[index]))
        if self._max_tokens and self._n >= self._max_tokens:
            if self._matcher is not None:
                text += self._matcher.finish()
            return self._end(StopDelta(text, True, "length", None))
        return StopDelta(text)

    def finish(self, text: str = "") -> StopDelta:
        """The engine ended the stream on its own: release ``text`` (the detokenizer's last
        flush) and anything held back. A stop string completed by that text still stops."""
        if self._done is not None:
            return StopDelta("", True, self._done.finish_reason, self._done.matched_stop)
        if self._matcher is None:
            return StopDelta(text)
        text, index = self._matcher.feed(text, self._n >= self._min_tokens)
        if index >= 0:
            return self._end(StopDelta(text, True, "stop", self._stop[index]))
        return StopDelta(text + self._matcher.finish())

    def _end(self, delta: StopDelta) -> StopDelta:
        self._done = delta
        return delta
