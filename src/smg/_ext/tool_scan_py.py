"""Reference twin of ``tool_scan.pyx``: the header + raw-arguments tool-call machine.

Used by the families whose calls are a marker, a header naming the function, a separator, the
arguments as raw JSON, and an end marker (deepseek_v3/v31, kimi_k2, gpt_oss Harmony, mistral v11).
States: 0 content, 1 inside a section of calls, 2 reading the header, 3 streaming arguments.
Each state's markers are found by the stop-string kernel's Aho–Corasick matcher (``split``),
text between markers goes out at once, and a tail that may still become a marker is held, so any
chunking gives the same output. Arguments stream as written, without their leading whitespace;
trailing whitespace is held until more arguments follow (so it is dropped before the end marker).

Output per delta: ``ToolDelta(content, calls)`` where a call's first ``ToolCallDelta`` carries its
``id`` and ``name`` and later ones argument fragments (consecutive fragments of one call merged).
"""
from __future__ import annotations

import random
from array import array
from itertools import accumulate
from bisect import bisect_left, bisect_right
from typing import NamedTuple, Sequence

from smg._ext import stop_matcher_py as markers

CONTENT, SECTION, NAME, ARGS = 0, 1, 2, 3


class ToolCallDelta(NamedTuple):
    """One streamed piece of a tool call, in OpenAI's streaming shape: the first piece of a call
    carries its ``id`` and ``name``, later ones ``arguments`` fragments to concatenate."""

    index: int
    id: str | None
    name: str | None
    arguments: str


class ToolDelta(NamedTuple):
    content: str = ""
    calls: tuple[ToolCallDelta, ...] = ()


EMPTY = ToolDelta("", ())


class ToolBatch(markers.DeltaBatch):
    """The deltas of one ``feed_batch``, columnar (``batch[i]`` is delta ``i``'s ``ToolDelta``):

    * ``content`` and ``content_ends``: all content, and where each delta's part ends;
    * ``headers``: ``(delta, ToolCallDelta(index, id, name, ""))`` for each call opened;
    * ``arguments`` and ``piece_delta``, ``piece_call``, ``piece_end``: all argument text, cut into
      pieces (one per delta and call) that say which delta and call they belong to and where they
      end in ``arguments``.

    Columnar so the compiled machine builds a handful of objects per batch, not a record per delta.
    """

    __slots__ = ("content", "content_ends", "headers", "arguments", "piece_delta", "piece_call", "piece_end")

    def __init__(self, content: str, content_ends: array, headers: tuple, arguments: str,
                 piece_delta: array, piece_call: array, piece_end: array) -> None:
        self.content, self.content_ends, self.headers = content, content_ends, headers
        self.arguments, self.piece_delta, self.piece_call, self.piece_end = arguments, piece_delta, piece_call, piece_end

    @classmethod
    def from_deltas(cls, deltas: Sequence[ToolDelta]) -> "ToolBatch":
        content = [d.content for d in deltas]
        headers, arguments = [], []
        piece_delta, piece_call, piece_end, args_total = array("q"), array("q"), array("q"), 0
        for d in [i for i, delta in enumerate(deltas) if delta.calls]:  # most deltas have no calls
            for call in deltas[d].calls:
                if call.name is not None:
                    headers.append((d, ToolCallDelta(call.index, call.id, call.name, "")))
                if call.arguments:
                    arguments.append(call.arguments)
                    args_total += len(call.arguments)
                    piece_delta.append(d)
                    piece_call.append(call.index)
                    piece_end.append(args_total)
        return cls("".join(content), array("q", accumulate(map(len, content))), tuple(headers), "".join(arguments),
                   piece_delta, piece_call, piece_end)

    def _delta(self, i: int) -> ToolDelta:
        content = self.content[self.content_ends[i - 1] if i else 0:self.content_ends[i]]
        calls: dict[int, list] = {}
        for d, header in self.headers:
            if d == i:
                calls[header.index] = [header.id, header.name, ""]
        first, last = bisect_left(self.piece_delta, i), bisect_right(self.piece_delta, i)
        for p in range(first, last):
            start = self.piece_end[p - 1] if p else 0
            record = calls.setdefault(self.piece_call[p], [None, None, ""])
            record[2] += self.arguments[start:self.piece_end[p]]
        if not content and not calls:
            return EMPTY
        return ToolDelta(content, tuple(ToolCallDelta(k, *calls[k]) for k in sorted(calls)))


def feed_batch(parser, text: str, ends: Sequence[int]) -> ToolBatch:
    """The reference ``feed_batch`` of a tool parser: ``feed`` for each delta of the batch."""
    return ToolBatch.from_deltas(markers.feed_each(parser.feed, EMPTY, text, ends, parser._finished))


_ids = random.Random()  # seeded from os.urandom once; ids need to be unique, not secret


def call_id() -> str:
    """A fresh tool-call id (``call_`` + 24 hex digits); a getrandom syscall per call showed up
    as 9% of a batch's time, so the bits come from a per-process generator."""
    return f"call_{_ids.getrandbits(96):024x}"


def state_markers(fmt) -> list[tuple[str, ...]]:
    """The markers of each state, in the order the transition rules index them."""
    args = fmt.args_end + (fmt.call_start if fmt.next_call_ends_args else ())
    return [fmt.section_start + fmt.call_start + fmt.drop, fmt.call_start + fmt.section_end, fmt.name_end, args]



class HeaderMachine:
    def __init__(self, fmt, state: int = CONTENT) -> None:
        self._machine = markers.MarkerMachine(state_markers(fmt), state)
        self._n_section, self._n_call_start = len(fmt.section_start), len(fmt.call_start)
        self._n_args_end = len(fmt.args_end)
        self._parse_header = fmt.parse_header
        self._header = self._space = self._content = ""
        self._args_started = False
        self._deltas: list[ToolCallDelta] = []
        self.calls = 0
        self._finished = False

    def _on_text(self, text: str) -> None:
        state = self._machine.state
        if state == CONTENT:
            self._content += text
        elif state == NAME:
            self._header += text
        elif state == ARGS:
            if not self._args_started:
                text = text.lstrip()
                if not text:
                    return
                self._args_started = True
            body = text.rstrip()
            if body:
                self._args(self._space + body)
                self._space = text[len(body):]
            else:
                self._space += text

    def _args(self, text: str) -> None:
        last = self._deltas[-1] if self._deltas else None
        if last is not None and last.index == self.calls - 1:
            self._deltas[-1] = ToolCallDelta(last.index, last.id, last.name, last.arguments + text)
        else:
            self._deltas.append(ToolCallDelta(self.calls - 1, None, None, text))

    def _on_marker(self, index: int) -> None:
        machine = self._machine
        state = machine.state
        if state == CONTENT:
            if index < self._n_section:
                machine.state = SECTION
            elif index < self._n_section + self._n_call_start:
                machine.state = NAME
        elif state == SECTION:
            machine.state = NAME if index < self._n_call_start else CONTENT
        elif state == NAME:
            name, given_id = self._parse_header(self._header)
            self._deltas.append(ToolCallDelta(self.calls, given_id or call_id(), name, ""))
            self.calls += 1
            self._header, self._space, self._args_started = "", "", False
            machine.state = ARGS
        elif index >= self._n_args_end:
            machine.state = NAME
        else:
            machine.state = SECTION if self._n_section else CONTENT

    def _take(self) -> ToolDelta:
        if not self._content and not self._deltas:
            return EMPTY
        delta = ToolDelta(self._content, tuple(self._deltas))
        self._content = ""
        self._deltas = []
        return delta

    def feed(self, text: str) -> ToolDelta:
        markers.check_text(text, self._finished)
        self._machine.run(text, self._on_text, self._on_marker)
        return self._take()

    feed_batch = feed_batch

    def finish(self) -> ToolDelta:
        markers.check_text("", self._finished)
        self._finished = True
        held = self._machine.held()
        if held and self._machine.state in (CONTENT, ARGS):
            self._on_text(held)
        return self._take()
