"""Reference twin of ``tool_scan.pyx``: the two compiled tool-call machines.

:class:`HeaderMachine` — calls are a marker, a header naming the function, a separator, a body,
and an end marker. The body is the arguments as raw JSON (deepseek_v3/v31, kimi_k2, gpt_oss
Harmony, mistral v11) or is read by the format's ``decode`` (XML parameters, Gemma's syntax...;
a format without a header has its whole call in the body). States: 0 content, 1 inside a section
of calls, 2 reading the header, 3 reading the body.

:class:`JsonMachine` — calls are JSON objects (``{"name": N, "arguments": {...}}``) inside
markers, or a JSON array of them (hermes/qwen, llama3 json, mistral's old form, cohere, granite,
internlm, hunyuan). States: 0 content, 1 start of an output that may open with a bare call,
2 inside a block of calls, 3 inside an object. The object's end is found by the JSON scanner
(depth/string/escape state), and the object is then decoded whole (``settle_object``).

A call goes out whole (id, name and arguments in one ``ToolCallDelta``) once it has closed and
its arguments decode to a JSON object (``settle_arguments``): a call whose arguments do not
decode, or that the output cut short, is dropped, and the calls after it keep their order. So
no client ever receives a call it cannot execute, and the result is the same at any chunking.

Each state's markers are found by the stop-string kernel's Aho–Corasick matcher (``split``),
text between markers goes out at once, and a tail that may still become a marker is held, so any
chunking gives the same output.

Output per delta: ``ToolDelta(content, calls)``, each call one ``ToolCallDelta`` with its ``id``,
``name`` and ``arguments``.
"""
from __future__ import annotations

import random
from array import array
from itertools import accumulate
from bisect import bisect_left, bisect_right
from typing import Any, Container, Mapping, NamedTuple, Sequence

import msgspec

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


def tool_schemas(tools) -> dict[str, dict]:
    """name -> parameters schema, from OpenAI ``tools`` (``{"type": "function", "function": {...}}``,
    decoded JSON: dicts, so no ABC check per tool on a request's path). Its keys are the declared
    tools a parser refuses others against (none declared: none refused)."""
    out: dict[str, dict] = {}
    for tool in tools or ():
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            params = fn.get("parameters")
            out[fn["name"]] = params if isinstance(params, dict) else {}
    return out


def settle_call(fmt, header: str, body: str, schemas: Mapping[str, dict]) -> list[tuple[str, str | None, str]]:
    """The calls of one closed call (its header and body texts): ``[(name, id, arguments JSON)]``,
    empty when it does not decode or names a tool the request did not declare (``schemas``: the
    declared ones; none declared, none refused). A format's ``decode`` reads its own body syntax
    (XML parameters, Gemma's...); by default the header names the call and the body is its JSON."""
    if fmt.decode is not None:
        calls = fmt.decode(header, body, schemas)
    else:
        arguments = settle_arguments(body)
        calls = [] if arguments is None else [(*fmt.parse_header(header), arguments)]
    return calls if not schemas else [call for call in calls if call[0] in schemas]



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

    def _opening(self, text: str, openers: str, opened: int) -> str | None:
        """Leading whitespace is held until the first other character says whether the output
        opens with one of ``openers`` (then state ``opened``, the whitespace dropped) or is content.
        Returns the text to scan again in the new state (None: all held)."""
        stripped = text.lstrip()
        if not stripped:
            self._lead += text
            return None
        lead, self._lead = self._lead, ""
        if stripped[0] in openers:
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


decode_json = msgspec.json.Decoder().decode  # strict JSON (no NaN), ~4x json.loads on call objects
_encoder = msgspec.json.Encoder()


def encode_json(value: Any) -> str:
    """Decoded arguments as compact JSON text (as OpenAI writes them)."""
    return _encoder.encode(value).decode()


def settle_arguments(text: str) -> str | None:
    """A closed call's arguments as JSON text, or None when they do not decode to a JSON object
    (the call is dropped). Written as an object, they are kept as the model wrote them; nothing
    at all is no arguments (``{}``); a JSON string that holds an object (some models quote
    their arguments) is that object."""
    text = text.strip()
    if not text:
        return "{}"
    try:
        value = decode_json(text)
    except (ValueError, RecursionError):  # deep nesting is bad output too, not a crash
        return None
    if isinstance(value, str):
        return settle_arguments(value) if value.lstrip().startswith("{") else None
    return text if isinstance(value, dict) else None


class HeaderMachine(ToolMachine):
    # ``tools``: the request's, for formats whose values are typed by schema; other options: the
    # tool parsers' common signature
    def __init__(self, fmt, tools=None, state: int = CONTENT, **options: Any) -> None:
        super().__init__(state_markers(fmt), state)
        self._n_section, self._n_call_start = len(fmt.section_start), len(fmt.call_start)
        self._n_args_end = len(fmt.args_end)
        self._fmt = fmt
        self._schemas = tool_schemas(tools)
        self._call_state = NAME if fmt.name_end else ARGS  # no header: the body is the whole call
        self._header = self._arguments = ""

    def _on_text(self, text: str) -> None:
        state = self._machine.state
        if state == CONTENT:
            self._content += text
        elif state == NAME:
            self._header += text
        elif state == ARGS:
            self._arguments += text

    def _on_marker(self, index: int) -> None:
        machine = self._machine
        state = machine.state
        if state == CONTENT:
            if index < self._n_section:
                machine.state = SECTION
            elif index < self._n_section + self._n_call_start:
                machine.state = self._call_state
        elif state == SECTION:
            machine.state = self._call_state if index < self._n_call_start else CONTENT
        elif state == NAME:
            machine.state = ARGS
        else:
            self._close_call()
            if index >= self._n_args_end:
                machine.state = self._call_state
            else:
                machine.state = SECTION if self._n_section else CONTENT

    def _close_call(self) -> None:
        for name, given_id, arguments in settle_call(self._fmt, self._header, self._arguments, self._schemas):
            self._open(name, given_id)
            self._args(arguments)
        self._header = self._arguments = ""

    def _on_finish(self, held: str) -> None:
        state = self._machine.state
        if state == CONTENT:
            self._content += held
        elif state == ARGS:  # the end marker may be the engine's stop token, left out of the text
            self._arguments += held
            if self._arguments.strip():  # (a call opened with nothing after it is none)
                self._close_call()


# ---- JSON objects ------------------------------------------------------------------------------

START, BLOCK, OBJECT = 1, 2, 3  # JsonMachine's states after CONTENT
_SEPARATORS = frozenset(" \t\r\n,;[]")


def settle_object(obj: str, fmt, tagged: bool, names: Container[str] = ()) -> tuple[str, str | None, str]:
    """A closed call object, decoded: ``(content, name, arguments)``. A call has a ``name`` (the
    first of ``fmt.name_keys`` that is a string) and arguments that decode (the first of
    ``fmt.args_keys`` present, ``{}`` when none is). An object that names no function is not a
    call: its text is content. One that does not decode is dropped inside markers (``tagged``)
    and content without them (a Llama 3 bare object); so is a call to a tool not in ``names``
    (the request's tools; none declared, none refused)."""
    try:
        data: Any = decode_json(obj)
    except (ValueError, RecursionError):
        return ("" if tagged else obj), None, ""
    name = next((data[k] for k in fmt.name_keys if isinstance(data.get(k), str)), None)
    if name is None:
        return obj, None, ""
    if names and name not in names:  # a call to a tool the request did not declare: dropped
        return "", None, ""
    args = next((data[k] for k in fmt.args_keys if k in data), None)
    if args is None:
        return "", name, "{}"
    if isinstance(args, str):
        arguments = settle_arguments(args)
        return ("", None, "") if arguments is None else ("", name, arguments)
    if not isinstance(args, dict):
        return "", None, ""
    return "", name, encode_json(args)


class JsonMachine(ToolMachine):
    START, BLOCK, OBJECT = START, BLOCK, OBJECT

    def __init__(self, fmt, tools=None, state: int | None = None, **options: Any) -> None:
        if state is None:
            state = START if fmt.bare_at_start else CONTENT
        super().__init__([fmt.start, fmt.start, fmt.end, ()], state)
        self._fmt = fmt
        self._declared = tool_schemas(tools)
        self._obj = ""
        self._scanner = JsonScanner()
        self._tagged = True  # the object being read was opened by a marker (else a bare one)
        self._holding = False  # a bare block has read no object yet: its separators may be text
        self._pending: list[tuple[str, str]] = []  # calls waiting for their block's end marker

    def _on_marker(self, index: int) -> None:
        state = self._machine.state
        if state in (CONTENT, START):
            self._machine.state = BLOCK
            if self._fmt.marker_is_text:  # read like a bare block, the marker its first text
                self._lead, self._tagged, self._holding = self._fmt.start[index], False, True
            else:
                self._lead, self._tagged = "", True
        elif state == BLOCK:
            self._machine.state = CONTENT
            self._lead, self._holding = "", False
            self._emit_pending()

    def _emit_pending(self) -> None:
        for name, arguments in self._pending:
            self._open(name)
            self._args(arguments)
        self._pending = []

    def _on_text(self, text: str) -> str | None:
        state = self._machine.state
        if state == START:
            rest = self._opening(text, self._fmt.bare_open, BLOCK)
            if self._machine.state == BLOCK:
                self._tagged = False
                self._holding = True
            return rest
        if state == CONTENT:
            self._content += text
        elif state == BLOCK:
            for i, c in enumerate(text):
                if c == "{":  # (a bare block's separators wait for the object's verdict)
                    self._machine.state = OBJECT
                    return text[i:]
                if c not in _SEPARATORS:
                    # a block no end marker can close (none in the format, or opened bare) ends
                    # at the first non-JSON text, and a bare one's separators were text too
                    if not self._fmt.end or not self._tagged:
                        self._content += self._lead
                        self._lead = ""
                        self._machine.state = CONTENT
                        return text[i:]
                    self._content += c
                else:  # a separator
                    if self._holding:
                        self._lead += c
                    if c == "]" and self._pending:  # the array of calls closed
                        self._emit_pending()
        else:
            end = self._scanner.feed(text)
            self._obj += text if end < 0 else text[:end]
            if end >= 0:
                self._machine.state = self._close_object()
                return text[end:] or None
        return None

    def _close_object(self) -> int:
        """Settle the object; the state after it (a bare object that is no call was text, and
        so is the rest of its block)."""
        content, name, arguments = settle_object(self._obj, self._fmt, self._tagged, self._declared)
        self._obj = ""
        self._scanner = JsonScanner()
        lead, self._lead, self._holding = self._lead, "", False
        if name is None and content and not self._tagged:  # (a dropped call leaves no content)
            self._content += lead + content
            return CONTENT
        self._content += content
        if name is not None and self._fmt.needs_end and self._tagged:  # (a bare call stands alone)
            self._pending.append((name, arguments))
        elif name is not None:
            self._open(name)
            self._args(arguments)
        return BLOCK

    def _on_finish(self, held: str) -> None:
        state = self._machine.state
        self._pending = []  # their block never closed
        if state == OBJECT and not self._tagged:  # an unfinished bare object is text
            self._content += self._lead + self._obj
        elif state == START or self._holding:
            self._content += self._lead
        if state in (CONTENT, START):
            self._content += held
