"""Shared pieces of the streaming parsers: output records and the marker-driven state machine.

Every parser is a small state machine over streamed text. In each state a fixed set of markers
(``</think>``, ``<tool_call>``...) can occur; :class:`MarkerMachine` finds them with the compiled
Aho–Corasick kernel (``smg._ext.stop_matcher``, one cached automaton per marker set), releasing
text between markers at once and holding back only a tail that may still become a marker. So the
output never depends on how the stream was chunked, and no text is scanned twice.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol, Sequence, runtime_checkable

from smg import _ext
from smg._ext import stop_matcher_py
from smg._ext.stop_matcher_py import check_text
from smg._ext.reasoning_scan_py import ReasoningDelta
from smg._ext.tool_scan_py import ToolCallDelta, ToolDelta
from smg.errors import ParseError

__all__ = ["MarkerMachine", "ParseError", "ReasoningDelta", "ToolCall", "ToolCallDelta", "ToolCallParser", "ToolDelta",
           "check_text"]

_markers = _ext.load("stop_matcher")



class ToolCall(NamedTuple):
    """A complete tool call (non-streaming)."""

    name: str
    arguments: str  # JSON text as the model wrote it (or as built from XML parameters)
    id: str


@runtime_checkable
class ToolCallParser(Protocol):
    """What ``ToolParser.create`` returns for every family (compiled machines and Python ones):
    one response's streaming tool-call parser."""

    def feed(self, delta: str) -> ToolDelta:
        """Content and call pieces completed by one more delta of model output."""

    def finish(self) -> ToolDelta:
        """End of output: release held text, settle a call left open."""

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        """Non-streaming: ``(content, calls)`` of a whole output."""

    def feed_batch(self, text: str, ends: Sequence[int]):
        """Many deltas (``text`` cut at ``ends``) in one call: a ``ToolBatch``."""


class MarkerMachine(stop_matcher_py.MarkerMachine):
    """``stop_matcher_py.MarkerMachine`` on the loaded (compiled) marker kernel."""

    __slots__ = ()

    def __init__(self, markers: Sequence[Sequence[str]], state: int = 0) -> None:
        super().__init__(markers, state, _markers.matcher_for)

