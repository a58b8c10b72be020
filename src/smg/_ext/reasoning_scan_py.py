"""Reference twin of ``reasoning_scan.pyx``: the streaming reasoning/content splitter.

A family is a table ``state -> ((marker, next state, keep marker text), ...)`` over three
states: 0 before reasoning (text is content), 1 reasoning, 2 content after reasoning. Each state's
markers are found by the stop-string kernel's Aho–Corasick matcher (``split``), which releases
text between markers at once and holds back only a tail that may still become a marker, so the
result never depends on how the stream is chunked. Whitespace right after a marker that opens
reasoning or content is dropped (templates put ``\\n`` there). A marker that is kept (GLM's
``<tool_call>`` ends reasoning and starts a call) is emitted as content for the tool parser.

Cost per delta: one matcher walk over its characters, plus a str concatenation per piece.
"""
from __future__ import annotations

from array import array
from itertools import accumulate
from typing import NamedTuple, Sequence

from smg._ext import stop_matcher_py as markers

BEFORE, REASONING, CONTENT = 0, 1, 2


class ReasoningDelta(NamedTuple):
    """Text of one step, split into reasoning and answer content."""

    reasoning: str = ""
    content: str = ""


_EMPTY = ReasoningDelta("", "")


class ReasoningBatch(markers.DeltaBatch):
    """The deltas of one ``feed_batch``, columnar: all reasoning and all content of the batch,
    and where each delta's part ends in them (``batch[i]`` is delta ``i``'s ``ReasoningDelta``).
    Columnar so the compiled machine builds four objects per batch, not two per delta."""

    __slots__ = ("reasoning", "content", "reasoning_ends", "content_ends")

    def __init__(self, reasoning: str, content: str, reasoning_ends: array, content_ends: array) -> None:
        self.reasoning, self.content = reasoning, content
        self.reasoning_ends, self.content_ends = reasoning_ends, content_ends

    @classmethod
    def from_deltas(cls, deltas: Sequence[ReasoningDelta]) -> "ReasoningBatch":
        reasoning = [d.reasoning for d in deltas]
        content = [d.content for d in deltas]
        return cls("".join(reasoning), "".join(content), array("q", accumulate(map(len, reasoning))),
                   array("q", accumulate(map(len, content))))

    def _delta(self, i: int) -> ReasoningDelta:
        r0 = self.reasoning_ends[i - 1] if i else 0
        c0 = self.content_ends[i - 1] if i else 0
        return ReasoningDelta(self.reasoning[r0:self.reasoning_ends[i]], self.content[c0:self.content_ends[i]])


class ReasoningMachine:
    """One response's splitter; ``fmt`` has ``table`` and the family default ``in_reasoning``."""

    def __init__(self, fmt, in_reasoning: bool | None = None) -> None:
        self._table = fmt.table
        start = fmt.in_reasoning if in_reasoning is None else in_reasoning
        self._machine = markers.MarkerMachine([[m for m, _, _ in row] for row in self._table],
                                              REASONING if start else BEFORE)
        self._skip_space = bool(start)
        self._reasoning = ""
        self._content = ""
        self._finished = False

    @property
    def in_reasoning(self) -> bool:
        return self._machine.state == REASONING

    def _emit(self, text: str) -> None:
        if self._skip_space:
            text = text.lstrip()
            if not text:
                return
            self._skip_space = False
        if self._machine.state == REASONING:
            self._reasoning += text
        else:
            self._content += text

    def _on_marker(self, index: int) -> None:
        marker, nxt, keep = self._table[self._machine.state][index]
        if nxt != self._machine.state and nxt in (REASONING, CONTENT):
            self._skip_space = not keep
        self._machine.state = nxt
        if keep:
            self._emit(marker)

    def _take(self) -> ReasoningDelta:
        if not self._reasoning and not self._content:
            return _EMPTY
        delta = ReasoningDelta(self._reasoning, self._content)
        self._reasoning = self._content = ""
        return delta

    def feed(self, text: str) -> ReasoningDelta:
        markers.check_text(text, self._finished)
        self._machine.run(text, self._emit, self._on_marker)
        return self._take()

    def feed_batch(self, text: str, ends: Sequence[int]) -> ReasoningBatch:
        """Many deltas in one call: ``text`` is their concatenation and ``ends[i]`` the end of
        delta ``i`` in it (see ``join_deltas``); the result holds each delta's ``feed`` output."""
        return ReasoningBatch.from_deltas(markers.feed_each(self.feed, _EMPTY, text, ends, self._finished))

    def finish(self) -> ReasoningDelta:
        markers.check_text("", self._finished)
        self._finished = True
        held = self._machine.held()
        if held:
            self._emit(held)
        return self._take()

    def parse(self, text: str) -> ReasoningDelta:
        """Non-streaming: ``feed(text)`` + ``finish()``, merged."""
        first, last = self.feed(text), self.finish()
        return ReasoningDelta(first.reasoning + last.reasoning, first.content + last.content)
