"""Reference twin of ``tool_scan.pyx``: the two compiled tool-call machines.

:class:`HeaderMachine` — calls are a marker, a header naming the function, a separator, the
arguments as raw JSON, and an end marker (deepseek_v3/v31, kimi_k2, gpt_oss Harmony, mistral v11).
States: 0 content, 1 inside a section of calls, 2 reading the header, 3 streaming arguments.
Arguments stream as written, without their leading whitespace; trailing whitespace is held until
more arguments follow (so it is dropped before the end marker).

:class:`JsonMachine` — calls are JSON objects (``{"name": N, "arguments": {...}}``) inside
markers, or a JSON array of them (hermes/qwen, llama3 json, mistral's old form, cohere, granite,
internlm, hunyuan). States: 0 content, 1 start of an output that may open with a bare call,
2 inside a block of calls, 3 inside an object. The object's end is found by the JSON scanner
(depth/string/escape state); the name is sent as soon as ``_NAME_RE`` reads it, then the
arguments value as written, its end found by a second scanner. An object that closes before its
name or arguments were read is parsed whole (``settle_object``): no name makes it content.

Each state's markers are found by the stop-string kernel's Aho–Corasick matcher (``split``),
text between markers goes out at once, and a tail that may still become a marker is held, so any
chunking gives the same output.

Output per delta: ``ToolDelta(content, calls)`` where a call's first ``ToolCallDelta`` carries its
``id`` and ``name`` and later ones argument fragments (consecutive fragments of one call merged).
"""
from __future__ import annotations

import json
import random
import re
from array import array
from itertools import accumulate
from bisect import bisect_left, bisect_right
from typing import Any, NamedTuple, Sequence

from smg._ext import stop_matcher_py as markers
from smg._ext.json_scan_py import JsonScanner

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



class CallRecorder:
    """What every Python tool machine shares (these twins, and the XML, pythonic and mistral
    parsers of ``smg.parsers.tools``): the delta being built — content and calls in streaming
    shape — and the start state of outputs that may open with a call. Needs ``_machine``."""

    def _start_output(self) -> None:
        self._content = ""
        self._deltas: list[ToolCallDelta] = []
        self.calls = 0
        self._finished = False
        self._lead = ""  # leading whitespace held by _opening

    def _opening(self, text: str, opener: str, opened: int) -> str | None:
        """Leading whitespace is held until the first other character says whether the output
        opens with ``opener`` (then state ``opened``, the whitespace dropped) or is content.
        Returns the text to scan again in the new state (None: all held)."""
        stripped = text.lstrip()
        if not stripped:
            self._lead += text
            return None
        lead, self._lead = self._lead, ""
        if stripped[0] == opener:
            self._machine.state = opened
            return stripped
        self._machine.state = CONTENT
        self._content += lead
        return text

    def _open(self, name: str, given_id: str | None = None) -> None:
        self._deltas.append(ToolCallDelta(self.calls, given_id or call_id(), name, ""))
        self.calls += 1

    def _args(self, text: str) -> None:
        if not text:
            return
        last = self._deltas[-1] if self._deltas else None
        if last is not None and last.index == self.calls - 1:
            self._deltas[-1] = ToolCallDelta(last.index, last.id, last.name, last.arguments + text)
        else:
            self._deltas.append(ToolCallDelta(self.calls - 1, None, None, text))

    def _take(self) -> ToolDelta:
        if not self._content and not self._deltas:
            return EMPTY
        delta = ToolDelta(self._content, tuple(self._deltas))
        self._content = ""
        self._deltas = []
        return delta


class ToolMachine(CallRecorder):
    """A twin machine: the markers of each state, and feed/finish."""

    def __init__(self, state_markers: list[tuple[str, ...]], state: int) -> None:
        self._machine = markers.MarkerMachine(state_markers, state)
        self._start_output()

    def feed(self, text: str) -> ToolDelta:
        markers.check_text(text, self._finished)
        self._machine.run(text, self._on_text, self._on_marker)
        return self._take()

    feed_batch = feed_batch

    def finish(self) -> ToolDelta:
        markers.check_text("", self._finished)
        self._finished = True
        self._on_finish(self._machine.held())
        return self._take()


class HeaderMachine(ToolMachine):
    # ``tools`` and other options: the tool parsers' common signature (these machines need neither)
    def __init__(self, fmt, tools=None, state: int = CONTENT, **options: Any) -> None:
        super().__init__(state_markers(fmt), state)
        self._n_section, self._n_call_start = len(fmt.section_start), len(fmt.call_start)
        self._n_args_end = len(fmt.args_end)
        self._parse_header = fmt.parse_header
        self._header = self._space = ""
        self._args_started = False

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
            self._open(*self._parse_header(self._header))
            self._header, self._space, self._args_started = "", "", False
            machine.state = ARGS
        elif index >= self._n_args_end:
            machine.state = NAME
        else:
            machine.state = SECTION if self._n_section else CONTENT

    def _on_finish(self, held: str) -> None:
        if held and self._machine.state in (CONTENT, ARGS):
            self._on_text(held)


# ---- JSON objects ------------------------------------------------------------------------------

_NAME_RE = {key: re.compile(r'"%s"\s*:\s*"((?:[^"\\]|\\.)*)"' % key) for key in ("name", "tool_name")}
_ARGS_RE = {key: re.compile(r'"%s"\s*:\s*' % key) for key in ("arguments", "parameters")}
START, BLOCK, OBJECT = 1, 2, 3  # JsonMachine's states after CONTENT
_SEPARATORS = frozenset(" \t\r\n,;[]")


def json_name(raw: str) -> tuple[str, None]:
    """A call's name as ``_NAME_RE`` read it (a JSON string's body), decoded; kept as written when
    its escapes are invalid. Shaped as a header parser's result (no call id)."""
    try:
        return json.loads(f'"{raw}"'), None
    except ValueError:
        return raw, None


def settle_object(obj: str, fmt, opened: bool) -> tuple[str | None, str | None, str]:
    """A call object that closed before its name (``opened`` False) or its arguments were read,
    parsed whole: ``(content, name, arguments)``. ``content`` is the object's text when it names
    no function (not a call); ``name`` the call to open (None when already open); ``arguments``
    the JSON text to send."""
    try:
        data: Any = json.loads(obj)
    except (ValueError, RecursionError):  # deep nesting is bad output too, not a crash
        data = None
    if not isinstance(data, dict):
        data = {}
    name = next((data[k] for k in fmt.name_keys if isinstance(data.get(k), str)), None)
    if not opened and name is None:
        return obj, None, ""
    args = next((data[k] for k in fmt.args_keys if k in data), {})
    return None, None if opened else name, args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)


class JsonMachine(ToolMachine):
    START, BLOCK, OBJECT = START, BLOCK, OBJECT

    def __init__(self, fmt, tools=None, state: int | None = None, **options: Any) -> None:
        if state is None:
            state = START if fmt.bare_at_start else CONTENT
        super().__init__([fmt.start, fmt.start, fmt.end, ()], state)
        self._fmt = fmt
        self._reset_object()

    def _reset_object(self) -> None:
        self._obj = ""
        self._scanner = JsonScanner()
        self._opened = False
        self._args_at = -1  # offset of the arguments value in self._obj
        self._args_scanner: JsonScanner | None = None
        self._args_sent = 0  # chars of self._obj sent as arguments
        self._args_begun = False

    def _on_marker(self, index: int) -> None:
        state = self._machine.state
        if state in (CONTENT, START):
            self._machine.state = BLOCK
            self._lead = ""
        elif state == BLOCK:
            self._machine.state = CONTENT

    def _on_text(self, text: str) -> str | None:
        state = self._machine.state
        if state == START:
            return self._opening(text, "{", BLOCK)
        if state == CONTENT:
            self._content += text
        elif state == BLOCK:
            for i, c in enumerate(text):
                if c == "{":
                    self._machine.state = OBJECT
                    return text[i:]
                if c not in _SEPARATORS:
                    if not self._fmt.end:  # an untagged block ends at the first non-JSON text
                        self._machine.state = CONTENT
                        return text[i:]
                    self._content += c
        else:
            end = self._scanner.feed(text)
            self._obj += text if end < 0 else text[:end]
            self._advance()
            if end >= 0:
                self._close_object()
                self._machine.state = BLOCK
                return text[end:] or None
        return None

    def _advance(self) -> None:
        obj = self._obj
        if self._args_at < 0:
            for key in self._fmt.args_keys:
                m = _ARGS_RE[key].search(obj)
                if m:
                    self._args_at = m.end()
                    break
        if not self._opened:
            head = obj if self._args_at < 0 else obj[: self._args_at]
            for key in self._fmt.name_keys:
                m = _NAME_RE[key].search(head)
                if m:
                    self._open(*json_name(m.group(1)))
                    self._opened = True
                    break
        if self._opened and self._args_at >= 0 and (self._args_scanner is None or not self._args_scanner.done):
            if self._args_scanner is None:
                self._args_scanner = JsonScanner()
                self._args_sent = self._args_at
            new = obj[self._args_sent:]
            end = self._args_scanner.feed(new)
            piece = new if end < 0 else new[:end]
            if not self._args_scanner.started:
                piece = ""  # only whitespace so far
            elif not self._args_begun:
                piece = piece.lstrip()
            if piece:
                self._args_begun = True
                self._args(piece)
            self._args_sent += len(new) if end < 0 else end

    def _close_object(self) -> None:
        if not self._opened or self._args_scanner is None:
            content, name, args = settle_object(self._obj, self._fmt, self._opened)
            if content is not None:
                self._content += content
            else:
                if name is not None:
                    self._open(name)
                self._args(args)
        self._reset_object()

    def _on_finish(self, held: str) -> None:
        state = self._machine.state
        if state == OBJECT and not self._opened:
            self._content += self._obj
        elif state == START:
            self._content += self._lead
        if state in (CONTENT, START):
            self._content += held
