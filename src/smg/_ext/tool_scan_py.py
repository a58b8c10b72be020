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

import secrets
from typing import NamedTuple

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


def call_id() -> str:
    return "call_" + secrets.token_hex(12)


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

    def finish(self) -> ToolDelta:
        markers.check_text("", self._finished)
        self._finished = True
        held = self._machine.held()
        if held and self._machine.state in (CONTENT, ARGS):
            self._on_text(held)
        return self._take()
