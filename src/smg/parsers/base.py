"""Shared pieces of the streaming parsers: output records and the marker-driven state machine.

Every parser is a small state machine over streamed text. In each state a fixed set of markers
(``</think>``, ``<tool_call>``...) can occur; :class:`MarkerMachine` finds them with the compiled
Aho–Corasick kernel (``smg._ext.stop_matcher``, one cached automaton per marker set), releasing
text between markers at once and holding back only a tail that may still become a marker. So the
output never depends on how the stream was chunked, and no text is scanned twice.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

from smg import _ext
from smg._ext.reasoning_scan_py import ReasoningDelta
from smg._ext.tool_scan_py import ToolCallDelta, ToolDelta, call_id
from smg.errors import ParseError

__all__ = ["JsonScanner", "MarkerMachine", "ParseError", "ReasoningDelta", "ToolCall", "ToolCallDelta", "ToolDelta",
           "call_id", "check_text"]

_markers = _ext.load("stop_matcher")
_json = _ext.load("json_scan")
JsonScanner = _json.JsonScanner



class ToolCall(NamedTuple):
    """A complete tool call (non-streaming)."""

    name: str
    arguments: str  # JSON text as the model wrote it (or as built from XML parameters)
    id: str


class MarkerMachine:
    """Runs text through per-state marker matchers.

    ``markers[state]`` lists the markers that can occur in ``state``; ``run`` calls
    ``on_text(text)`` for the text between markers and ``on_marker(index)`` for each marker found
    (which may change ``self.state``). ``on_text`` may also change the state part-way through its
    text (a JSON object starts at ``{``): it then returns the text it did not consume, and that
    text, with whatever the old state's matcher had not interpreted yet, is scanned again in the
    new state. It returns None when it consumed everything.
    """

    __slots__ = ("state", "_markers", "_matchers")

    def __init__(self, markers: Sequence[Sequence[str]], state: int = 0) -> None:
        self.state = state
        self._markers = [tuple(m) for m in markers]
        self._matchers = [_markers.matcher_for(m) for m in self._markers]

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


def check_text(text: object, finished: bool) -> str:
    if finished:
        raise ParseError("parser already finished")
    if not isinstance(text, str):
        raise ParseError(f"parsers take str deltas, got {type(text).__name__}")
    return text
