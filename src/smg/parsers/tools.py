"""Streaming tool-call parsers: model output in, ``content`` and OpenAI-shaped call deltas out.

Three base machines, driven by marker matchers plus family tables. The first two run entirely in
the compiled ``smg._ext.tool_scan`` (twin ``tool_scan_py``), and their ``feed_batch`` scans without
the GIL:

* :class:`JsonToolParser` — calls are JSON objects (``{"name": N, "arguments": {...}}``) inside
  markers, or a JSON array of them: hermes/qwen, llama3 json, mistral (old form), cohere,
  granite, internlm, hunyuan, xlam. An object's end is found by the JSON scanner, then decoded.
* :class:`HeaderToolParser` — a marker, a header naming the call, a separator, the call's body,
  an end marker. The body is raw JSON (deepseek_v3/v31, kimi_k2, mistral v11, gpt_oss) or is read
  by the format's ``decode``: XML parameters typed by the request's tool schema (qwen3_coder,
  seed_oss, glm45/47, minimax_m2/m3, step3, DSML, Kimi K3) or a whole call in its own syntax
  (Gemma 4, FunctionGemma, OLMo 3).
* :class:`PythonicToolParser` — ``[f(a=1), g(b='x')]`` (Llama 4, Llama 3.2 pythonic), parsed with
  ``ast`` when the list closes.

Every call goes out whole (id, name, arguments) once it closed and decoded. Bad output never
raises: a call that does not decode (or that the output cut short) is dropped and the others keep
their order; a JSON call object without a name is content; a call to a tool the request did not
declare is dropped, as SGLang and the Rust gateway do (vLLM reports it).
"""
from __future__ import annotations

import ast
import html
import json
import re
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Mapping, Sequence

from smg import _ext
from smg._ext.tool_scan_py import CallRecorder, decode_json, encode_json, tool_schemas
from smg._ext.tool_scan_py import feed_batch as feed_each_delta
from smg.parsers.base import MarkerMachine, ToolCall, ToolCallParser, ToolDelta, check_text
from smg.parsers.names import canonical

tool_kernel = _ext.load("tool_scan")
BracketScanner = _ext.load("json_scan").BracketScanner

CONTENT = 0


class WholeOutput:
    """``parse``: the non-streaming use of a streaming parser."""

    __slots__ = ()

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        """Non-streaming: ``(content, calls)`` of a whole output (``feed`` + ``finish``)."""
        return collect([self.feed(text), self.finish()])


class ToolParser(WholeOutput, CallRecorder):
    """Base of the Python tool parsers (pythonic, mistral): the feed/finish/parse protocol over
    ``CallRecorder``'s call bookkeeping."""

    def __init__(self, tools: Iterable[Mapping[str, Any]] | None = None) -> None:
        self._declared = tool_schemas(tools)  # the request's tools (none: none refused)
        self._start_output()

    @classmethod
    def create(cls, name: str, tools: Iterable[Mapping[str, Any]] | None = None, **options: Any) -> ToolCallParser:
        """A parser for family ``name`` (see :func:`tool_parser_names`): a :class:`ToolCallParser`
        (the compiled machines are not subclasses of this class, but all have its protocol)."""
        factory = FACTORIES.get(name) if type(name) is str else None  # a canonical name: one probe
        if factory is None:
            factory = FACTORIES[canonical(name, FACTORIES)]
        return factory(tools, **options)

    # ---- protocol -----------------------------------------------------------------------------

    def _feed(self, text: str) -> None:
        """Each machine defines ``_machine`` (a MarkerMachine), ``_on_text`` and ``_on_marker``."""
        self._machine.run(text, self._on_text, self._on_marker)

    def _finish(self) -> None:  # each machine defines it
        raise NotImplementedError(f"{type(self).__name__} does not define _finish")

    def feed(self, delta: str) -> ToolDelta:
        """Content and call pieces completed by one more delta of model output."""
        if type(delta) is not str or self._finished:
            check_text(delta, self._finished)
        self._feed(delta)
        return self._take()

    # The XML, pythonic and mistral machines are Python: their batch is ``feed`` per delta, GIL held.
    feed_batch = feed_each_delta

    def finish(self) -> ToolDelta:
        """End of output: release held text, settle a call left open."""
        check_text("", self._finished)
        self._finished = True
        self._finish()
        return self._take()


def collect(deltas: Iterable[ToolDelta]) -> tuple[str, list[ToolCall]]:
    """Merge streamed deltas into ``(content, calls)``."""
    content, names, ids, args = [], {}, {}, {}
    for delta in deltas:
        content.append(delta.content)
        for call in delta.calls:
            if call.name is not None:
                names[call.index], ids[call.index], args[call.index] = call.name, call.id, ""
            args[call.index] = args.get(call.index, "") + call.arguments
    return "".join(content), [ToolCall(names[i], args[i], ids[i]) for i in sorted(names)]


# ---- JSON objects ------------------------------------------------------------------------------

@dataclass(frozen=True)
class JsonFormat:
    name: str
    start: tuple[str, ...]  # markers that open a block of calls (dropped)
    end: tuple[str, ...] = ()  # markers that close it (dropped)
    bare_at_start: bool = False  # output whose first non-space char is in bare_open is a block (llama3)
    bare_open: str = "{"
    marker_is_text: bool = False  # a block's marker, then an object that is no call, are content (llama3)
    needs_end: bool = False  # a block's calls count once it closed: its end marker, or its array's "]"
    name_keys: tuple[str, ...] = ("name",)
    args_keys: tuple[str, ...] = ("arguments", "parameters")


class JsonToolParser(WholeOutput, tool_kernel.JsonMachine):
    """The JSON-objects machine (compiled ``smg._ext.tool_scan``; see its twin)."""

    __slots__ = ()
    START, BLOCK, OBJECT = 1, 2, 3


# ---- header + body ------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeaderFormat:
    name: str
    call_start: tuple[str, ...]
    name_end: tuple[str, ...]
    args_end: tuple[str, ...]
    section_start: tuple[str, ...] = ()
    section_end: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()  # markers removed from content
    next_call_ends_args: bool = False  # mistral v11: "[TOOL_CALLS]" both ends a call and starts the next
    parse_header: Callable[[str], tuple[str, str | None]] = lambda h: (h.strip(), None)
    # (header, body, tool schemas) -> [(name, id, arguments JSON)]: a body that is not the raw JSON
    # arguments (XML parameters, Gemma's syntax...); with no ``name_end``, the body is the whole call
    decode: Callable[[str, str, Mapping[str, dict]], list[tuple[str, str | None, str]]] | None = None


class HeaderToolParser(WholeOutput, tool_kernel.HeaderMachine):
    """The header + body machine (compiled ``smg._ext.tool_scan``; see its twin)."""

    __slots__ = ()  # no instance dict: attribute lookups on the per-token path stay short
    SECTION, NAME, ARGS = 1, 2, 3


def _after_sep(sep: str) -> Callable[[str], tuple[str, str | None]]:
    return lambda header: (header.rsplit(sep, 1)[-1].strip(), None)


def _kimi_header(header: str) -> tuple[str, str | None]:
    call_id = header.strip()
    name = call_id[len("functions."):] if call_id.startswith("functions.") else call_id
    return name.rsplit(":", 1)[0], call_id


def _harmony_header(header: str) -> tuple[str, str | None]:
    m = re.match(r"\s*([\w.\-]+)", header)
    return (m.group(1) if m else header.strip()), None


def _mistral_header(header: str) -> tuple[str, str | None]:
    name, _, call_id = header.partition("[CALL_ID]")
    return name.strip(), (call_id.strip() or None)



_PYTHON_LITERALS = {"True": True, "False": False, "None": None}


_NOT_JSON = object()  # what _structured returns for text that is no JSON value


def _structured(text: str) -> Any:
    """``text`` as JSON, JSON with escaped quotes (``{\\"a\\": 1}``, as models write it inside
    XML), or a Python literal (``{'a': True}``); ``_NOT_JSON`` when none of them."""
    for candidate in (text, text.replace('\\"', '"')):
        try:
            return json.loads(candidate)
        except ValueError:
            pass
    try:  # a Python literal: kept only when it is JSON data (tuples become lists)
        return json.loads(json.dumps(ast.literal_eval(text)))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_JSON


def typed_value(raw: str, schema: Mapping[str, Any] | None, mode: str = "schema") -> Any:
    """A parameter's raw text as the JSON value its schema asks for: integers, numbers, booleans,
    null, and arrays and objects written as JSON (or Python literals) are typed; everything else,
    and a parameter the schema does not type, stays the string the model wrote. Python's
    ``True``/``False``/``None`` count as JSON's literals. ``mode``: ``string`` / ``json`` when
    the format itself says which (MiniMax's ``string="true"``)."""
    if mode == "string":
        return raw
    text = raw.strip()
    if mode == "json":
        if text in _PYTHON_LITERALS:
            return _PYTHON_LITERALS[text]
        value = _structured(text)
        return raw if value is _NOT_JSON else value
    kind = schema.get("type") if isinstance(schema, dict) else None
    kinds = set(kind) if isinstance(kind, list) else {kind}
    if "null" in kinds and text in ("null", "None"):
        return None
    if kinds & {"integer", "number"}:
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                pass
    if "boolean" in kinds and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if kinds & {"object", "array"}:
        value = _structured(text)
        if (isinstance(value, dict) and "object" in kinds) or (isinstance(value, list) and "array" in kinds):
            return value
    return raw



# ---- call bodies decoded when the call closes -----------------------------------------------------

@dataclass(frozen=True)
class XmlParams:
    """A ``HeaderFormat.decode`` for calls whose arguments are parameter tags: ``start`` NAME
    (one of ``name_ends``: the marker and how its value is typed) [``value_start``] VALUE ``end``,
    each value typed by :func:`typed_value` against the tool's schema. ``name_in_body``: the
    function name opens the body, up to one of these (GLM); ``attribute_names``: names are
    attribute values, up to the first ``"`` and XML-escaped (Kimi K3). A body with no parameter
    tags may be one JSON object (DSML allows it). A parameter left unclosed drops the call."""

    start: str
    name_ends: tuple[tuple[str, str], ...]
    end: str
    value_start: str = ""
    name_in_body: tuple[str, ...] = ()
    attribute_names: bool = False

    def __call__(self, header: str, body: str, schemas: Mapping[str, dict]) -> list[tuple[str, None, str]]:
        if self.name_in_body:
            cut = min((i for i in (body.find(m) for m in self.name_in_body) if i >= 0), default=len(body))
            header, body = body[:cut], body[cut:]
        name = self._name(header)
        if not name:
            return []
        schema = schemas.get(name)
        properties = schema.get("properties") if isinstance(schema, dict) else None
        properties = properties if isinstance(properties, dict) else {}
        arguments: dict[str, Any] = {}
        at = 0
        while (start := body.find(self.start, at)) >= 0:
            found = None  # the earliest name end (the longest first where two start together)
            for marker, mode in self.name_ends:
                i = body.find(marker, start + len(self.start))
                if i >= 0 and (found is None or i < found[0]):
                    found = (i, marker, mode)
            if found is None:
                return []
            i, marker, mode = found
            value_at = i + len(marker)
            if self.value_start:
                value_at = body.find(self.value_start, value_at)
                if value_at < 0:
                    return []
                value_at += len(self.value_start)
            end = body.find(self.end, value_at)
            if end < 0:
                return []
            raw = body[value_at:end]
            raw = raw[1:] if raw.startswith("\n") else raw
            raw = raw[:-1] if raw.endswith("\n") else raw
            pname = self._name(body[start + len(self.start):i])
            arguments[pname] = typed_value(raw, properties.get(pname), mode)
            at = end + len(self.end)
        if not arguments and body.strip():  # no parameter tags: the body must be one JSON object
            try:
                arguments = decode_json(body)
            except (ValueError, RecursionError):
                return []
            if not isinstance(arguments, dict):
                return []
        return [(name, None, encode_json(arguments))]

    def _name(self, text: str) -> str:
        if self.attribute_names:  # 'get_weather" index="0': the attribute's value
            return html.unescape(text.partition('"')[0].strip())
        return text.strip()


@dataclass(frozen=True)
class GemmaCalls:
    """A ``HeaderFormat.decode`` for Gemma's call syntax, ``call:NAME{key:QUOTE text QUOTE,n:42,
    o:{k:[1,2]}}``: bare keys, strings between a quote token, other scalars as written (Gemma 4
    quotes with ``<|"|>``, FunctionGemma with ``<escape>``)."""

    quote: str
    max_depth: int = 64

    def __call__(self, header: str, body: str, schemas: Mapping[str, dict]) -> list[tuple[str, None, str]]:
        text = body.strip()
        if not text.startswith("call:"):
            return []
        brace = text.find("{")
        name = text[len("call:"):brace].strip() if brace > 0 else ""
        if not name:
            return []
        try:
            arguments, end = self._value(text, brace, 0)
        except ValueError:
            return []
        if end != len(text) or not isinstance(arguments, dict):
            return []
        return [(name, None, encode_json(arguments))]

    def _value(self, text: str, at: int, depth: int) -> tuple[Any, int]:
        """The value starting at ``at`` (after whitespace) and the index after it; ValueError
        when the text is not one."""
        if depth > self.max_depth:
            raise ValueError("nested too deep")
        at = _skip_space(text, at)
        if text.startswith(self.quote, at):
            close = text.find(self.quote, at + len(self.quote))
            if close < 0:
                raise ValueError("unterminated string")
            return text[at + len(self.quote):close], close + len(self.quote)
        if text.startswith("{", at) or text.startswith("[", at):
            return self._container(text, at, depth)
        end = _SCALAR.match(text, at).end()
        return _gemma_scalar(text[at:end].strip()), end

    def _container(self, text: str, at: int, depth: int) -> tuple[Any, int]:
        is_object = text[at] == "{"
        close = "}" if is_object else "]"
        out: Any = {} if is_object else []
        at = _skip_space(text, at + 1)
        if text.startswith(close, at):
            return out, at + 1
        while True:
            if is_object:
                at = _skip_space(text, at)
                if text.startswith(self.quote, at):
                    key, at = self._value(text, at, depth + 1)
                    colon = _skip_space(text, at)
                else:
                    colon = text.find(":", at)
                    key = text[at:colon].strip() if colon > 0 else ""
                if not key or not text.startswith(":", colon):
                    raise ValueError("object member without a key")
                out[key], at = self._value(text, colon + 1, depth + 1)
            else:
                item, at = self._value(text, at, depth + 1)
                out.append(item)
            at = _skip_space(text, at)
            if text.startswith(close, at):
                return out, at + 1
            if not text.startswith(",", at):
                raise ValueError("expected a comma")
            at += 1


def olmo3_calls(header: str, body: str, schemas: Mapping[str, dict]) -> list[tuple[str, None, str]]:
    """A ``HeaderFormat.decode`` for OLMo 3: one Python call per line (``f(a=1)``), JSON's
    ``true``/``false``/``null`` allowed beside Python's literals; a block that does not parse
    as calls is dropped whole."""
    try:
        tree = ast.parse(body.strip(), mode="exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return []
    if not all(isinstance(stmt, ast.Expr) for stmt in tree.body):
        return []
    return [(name, None, arguments) for name, arguments in _calls_of([stmt.value for stmt in tree.body], True) or ()]


MINIMAX_NS = "]<]minimax[>["  # MiniMax M3 writes it before every tag of a call


def minimax_m3_arguments(header: str, body: str, schemas: Mapping[str, dict]) -> list[tuple[str, None, str]]:
    """A ``HeaderFormat.decode`` for MiniMax M3's ``invoke`` body: ``<KEY>value</KEY>`` tags, each
    behind the namespace token; a value is text typed by the tool's schema, or nested tags for an
    object (``<k>``) or an array (``<item>``, also for an untyped container that opens with one)."""
    name = header.strip()
    try:
        arguments = _m3_value(body, schemas.get(name)) if name else None
    except ValueError:
        return []
    return [(name, None, encode_json(arguments))] if isinstance(arguments, dict) else []


def _m3_value(body: str, schema: Any) -> Any:
    """The parameters of one MiniMax M3 ``invoke`` as JSON data; ValueError when the tags do not nest."""
    frames: list[list] = [["", schema, {}]]  # [tag, schema, value] from the root down
    for chunk in body.split(MINIMAX_NS):
        chunk = chunk.strip()
        if not chunk:
            continue
        if not chunk.startswith("<") or ">" not in chunk:
            raise ValueError("text outside a tag")
        if chunk.startswith("</"):
            tag = chunk[2:chunk.index(">")].strip()
            if len(frames) == 1 or frames[-1][0] != tag:
                raise ValueError(f"unexpected closing tag {tag!r}")
            tag, _, value = frames.pop()
            _m3_assign(frames[-1], tag, value)
            continue
        tag, text = chunk[1:chunk.index(">")].strip(), chunk[chunk.index(">") + 1:]
        parent = frames[-1]
        if tag == "item" and parent[2] == {} and _m3_kind(parent[1]) != "object":
            parent[2] = []  # an array's elements (an untyped container opening with <item> is one)
        child = _m3_child_schema(parent[1], tag, isinstance(parent[2], list))
        kind = _m3_kind(child)
        value = typed_value(text, child) if text or kind not in ("object", "array") else ([] if kind == "array" else {})
        frames.append([tag, child, value])
    if len(frames) != 1:
        raise ValueError("unclosed tag")
    return frames[0][2]


def _m3_kind(schema: Any) -> str | None:
    kind = schema.get("type") if isinstance(schema, dict) else None
    return kind if isinstance(kind, str) else None


def _m3_child_schema(schema: Any, tag: str, in_array: bool) -> Any:
    if not isinstance(schema, dict):
        return None
    if in_array:
        return schema.get("items")
    properties = schema.get("properties")
    return properties.get(tag) if isinstance(properties, dict) else None


def _m3_assign(frame: list, tag: str, value: Any) -> None:
    """Put a closed tag's value into its parent: appended to an array; a repeated key of an object
    becomes a list of its values."""
    parent = frame[2]
    if isinstance(parent, list):
        parent.append(value)
    elif isinstance(parent, dict):
        if tag in parent:
            previous = parent[tag]
            parent[tag] = (previous if isinstance(previous, list) else [previous]) + [value]
        else:
            parent[tag] = value
    else:  # a scalar's text followed by child tags
        raise ValueError(f"tag {tag!r} inside a scalar")


def _skip_space(text: str, at: int) -> int:
    return _SPACES.match(text, at).end()


_SPACES = re.compile(r"\s*")
_SCALAR = re.compile(r"[^,}\]]*")  # an unquoted value runs to the next separator


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\Z")
_SCALAR_LITERALS = {**_PYTHON_LITERALS, "true": True, "false": False, "null": None}


def _gemma_scalar(text: str) -> Any:
    """An unquoted value: a JSON number or literal (or Python's), else the text itself."""
    if text in _SCALAR_LITERALS:
        return _SCALAR_LITERALS[text]
    number = _JSON_NUMBER.match(text)
    if number is None:
        return text
    return float(text) if number.group(1) or number.group(2) else int(text)


# ---- pythonic ------------------------------------------------------------------------------------

_CALL_START = re.compile(r"\[\s*[A-Za-z_][\w.]*\s*\(")
_MAYBE_CALL_START = re.compile(r"\[\s*(?:[A-Za-z_][\w.]*\s*)?\Z")


class PythonicToolParser(ToolParser):
    """Lists of calls, ``[f(a=1), g(b='x')]``, anywhere in the output (after leading text, several
    of them, the text between them content), optionally wrapped in ``<|python_start|>`` /
    ``<|python_end|>`` (Llama 4). A ``[`` is held until what follows says whether it opens a call
    list (a name, then ``(``); a list whose text is not calls is content."""

    TEXT, CANDIDATE, LIST = 1, 2, 3
    _WRAP = ("<|python_start|>", "<|python_end|>")

    def __init__(self, tools=None, **_: Any) -> None:
        super().__init__(tools)
        self._machine = MarkerMachine([(), self._WRAP, (), ()], self.TEXT)
        self._buf = ""
        self._scanner = BracketScanner()
        self._started = False  # anything but whitespace seen: leading whitespace before a list is dropped

    def _on_marker(self, index: int) -> None:  # the wrapper's markers are dropped
        self._lead = ""

    def _on_text(self, text: str) -> str | None:
        state = self._machine.state
        if state == self.TEXT:
            start = text.find("[")
            before = text if start < 0 else text[:start]
            if not self._started:
                if not before.strip():
                    self._lead += before
                    before = ""
                else:
                    self._started = True
                    before, self._lead = self._lead + before, ""
            self._content += before
            if start < 0:
                return None
            self._buf = ""
            self._machine.state = self.CANDIDATE
            return text[start:]
        if state == self.CANDIDATE:
            self._buf += text
            if _CALL_START.match(self._buf):
                self._machine.state, self._lead = self.LIST, ""
                held, self._buf = self._buf, ""
                return held
            if _MAYBE_CALL_START.match(self._buf):
                return None  # not decided yet: hold
            # not a call list: its "[" is content, and the rest is read again as text
            self._content += self._lead + "["
            self._lead, self._started = "", True
            rest, self._buf = self._buf[1:], ""
            self._machine.state = self.TEXT
            return rest or None
        end = self._scanner.feed(text)  # LIST
        self._buf += text if end < 0 else text[:end]
        if end < 0:
            return None
        self._close_list()
        return text[end:] or None

    def _close_list(self) -> None:
        calls = _pythonic_calls(self._buf)
        if calls is None:
            self._content += self._lead + self._buf
        else:
            for name, args in calls:
                if not self._declared or name in self._declared:  # a tool the request did not declare: dropped
                    self._open(name)
                    self._args(args)
        self._lead, self._started = "", True
        self._buf = ""
        self._scanner = BracketScanner()
        self._machine.state = self.TEXT

    def _finish(self) -> None:
        state = self._machine.state
        held = self._machine.held()
        if state in (self.CANDIDATE, self.LIST):  # an unfinished list is text
            self._content += self._lead + self._buf
        else:
            self._content += self._lead + held


def _pythonic_calls(source: str) -> list[tuple[str, str]] | None:
    """The calls of a Python list of calls (``[f(a=1), g(b='x')]``), or None when it is not one."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if not isinstance(tree.body, ast.List):
        return None
    return _calls_of(tree.body.elts, json_names=False)


class _JsonNames(ast.NodeTransformer):
    """JSON's ``true``/``false``/``null`` written in a Python call (OLMo 3 does): their values."""

    VALUES = {"true": True, "false": False, "null": None}

    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.Constant(self.VALUES[node.id]) if node.id in self.VALUES else node


def _calls_of(nodes: Sequence[ast.AST], json_names: bool) -> list[tuple[str, str]] | None:
    """``(name, keyword arguments as JSON)`` of each call node; None when any is not a call whose
    arguments are all keyword literals of JSON's kinds (the whole list is then not calls)."""
    calls = []
    for node in nodes:
        if not isinstance(node, ast.Call) or node.args:
            return None
        func = node.func
        name = func.id if isinstance(func, ast.Name) else (
            ast.unparse(func) if isinstance(func, ast.Attribute) else None)
        if name is None:
            return None
        try:  # (json, not msgspec: a set, bytes or complex literal is no JSON and must fail)
            arguments = json.dumps({kw.arg: ast.literal_eval(_JsonNames().visit(kw.value) if json_names else kw.value)
                                    for kw in node.keywords if kw.arg}, ensure_ascii=False)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
        calls.append((name, arguments))
    return calls


# ---- mistral: two syntaxes behind one marker -----------------------------------------------------

MISTRAL_JSON = JsonFormat("mistral", ("[TOOL_CALLS]",), needs_end=True)
MISTRAL_V11 = HeaderFormat("mistral", ("[TOOL_CALLS]",), ("[ARGS]",), (), next_call_ends_args=True,
                           parse_header=_mistral_header)


class MistralToolParser(ToolParser):
    """``[TOOL_CALLS] [{...}, ...]`` (older tokenizers) or ``[TOOL_CALLS]N[ARGS]{...}`` (v11+):
    the first non-space character after the marker decides."""

    def __init__(self, tools=None, **_: Any) -> None:
        super().__init__(tools)
        self._tools = tools
        self._machine = MarkerMachine([("[TOOL_CALLS]",), ()])
        self._pending = ""
        self._inner: ToolParser | None = None

    def _feed(self, text: str) -> None:
        if self._inner is not None:
            self._relay(self._inner.feed(text))
            return
        self._machine.run(text, self._on_text, self._on_marker)

    def _on_marker(self, index: int) -> None:
        self._machine.state = 1

    def _on_text(self, text: str) -> None:
        if self._machine.state == CONTENT:
            self._content += text
            return
        self._pending += text
        stripped = self._pending.lstrip()
        if stripped:
            if stripped[0] == "[":
                self._inner = JsonToolParser(MISTRAL_JSON, self._tools, state=JsonToolParser.BLOCK)
            else:
                self._inner = HeaderToolParser(MISTRAL_V11, self._tools, state=HeaderToolParser.NAME)
            self._relay(self._inner.feed(stripped))

    def _relay(self, delta: ToolDelta) -> None:
        self._content += delta.content
        for call in delta.calls:
            if call.name is not None:
                self._open(call.name, call.id)
            self._args(call.arguments)

    def _finish(self) -> None:
        if self._inner is not None:
            self._relay(self._inner.finish())
        elif self._machine.state == CONTENT:
            self._content += self._machine.held()


# ---- the family tables ---------------------------------------------------------------------------

JSON_FORMATS = {
    "hermes": JsonFormat("hermes", ("<tool_call>",), ("</tool_call>",), needs_end=True),
    "llama3_json": JsonFormat("llama3_json", ("<|python_tag|>",), bare_at_start=True, marker_is_text=True,
                              args_keys=("parameters", "arguments")),
    "cohere": JsonFormat("cohere", ("<|START_ACTION|>",), ("<|END_ACTION|>",), name_keys=("tool_name", "name"),
                         args_keys=("parameters", "arguments"), needs_end=True),
    "granite": JsonFormat("granite", ("<|tool_call|>",), needs_end=True),
    "internlm": JsonFormat("internlm", ("<|action_start|><|plugin|>",), ("<|action_end|>",), needs_end=True),
    "hunyuan": JsonFormat("hunyuan", ("<tool_calls>",), ("</tool_calls>",), needs_end=True),
    # xLAM: a JSON array of calls, bare at the start or in a ```json block or a tag
    "xlam": JsonFormat("xlam", ("```json", "<tool_call>", "[TOOL_CALLS]"), ("```", "</tool_call>"), bare_at_start=True,
                       bare_open="[{", needs_end=True),
}

_DS_CALLS = ("<｜tool▁calls▁begin｜>",), ("<｜tool▁calls▁end｜>",)
_DSML_PARAMS = XmlParams('<｜DSML｜parameter name="', (('" string="true">', "string"), ('" string="false">', "json"),
                                                      ('">', "schema")), "</｜DSML｜parameter>")
_CODER_PARAMS = XmlParams("<parameter=", ((">", "schema"),), "</parameter>")
_NAMED_PARAMS = XmlParams('<parameter name="', (('">', "schema"),), "</parameter>")
_GLM_PARAMS = XmlParams("<arg_key>", (("</arg_key>", "schema"),), "</arg_value>", value_start="<arg_value>",
                        name_in_body=("<arg_key>", "\n"))
_M3_SPACING = ("", " ", "\n")  # what MiniMax M3 may write between the namespace token and a tag
_XTML_WRAPPERS = ("<|open|>response<|sep|>", "<|close|>response<|sep|>", "<|open|>message<|sep|>",
                  "<|close|>message<|sep|>")

HEADER_FORMATS = {
    # raw JSON arguments after a header
    "deepseek_v3": HeaderFormat("deepseek_v3", ("<｜tool▁call▁begin｜>",), ("```json",),
                                ("```<｜tool▁call▁end｜>", "<｜tool▁call▁end｜>"), *_DS_CALLS,
                                parse_header=_after_sep("<｜tool▁sep｜>")),
    "deepseek_v31": HeaderFormat("deepseek_v31", ("<｜tool▁call▁begin｜>",), ("<｜tool▁sep｜>",),
                                 ("<｜tool▁call▁end｜>",), *_DS_CALLS),
    "kimi_k2": HeaderFormat("kimi_k2", ("<|tool_call_begin|>",), ("<|tool_call_argument_begin|>",),
                            ("<|tool_call_end|>",), ("<|tool_calls_section_begin|>",),
                            ("<|tool_calls_section_end|>",), parse_header=_kimi_header),
    "gpt_oss": HeaderFormat("gpt_oss", (" to=functions.", "to=functions."), ("<|message|>",), ("<|call|>",),
                            drop=("<|channel|>commentary", "<|message|>", "<|end|>", "<|start|>assistant",
                                  "<|channel|>final", "<|return|>"),
                            parse_header=_harmony_header),
    # XML parameters, typed by the tool's schema
    "qwen3_coder": HeaderFormat("qwen3_coder", ("<function=",), (">",), ("</function>",), ("<tool_call>",),
                                ("</tool_call>",), decode=_CODER_PARAMS),
    "seed_oss": HeaderFormat("seed_oss", ("<function=",), (">",), ("</function>",), ("<seed:tool_call>",),
                             ("</seed:tool_call>",), decode=_CODER_PARAMS),
    "minimax_m2": HeaderFormat("minimax_m2", ('<invoke name="',), ('">',), ("</invoke>",), ("<minimax:tool_call>",),
                               ("</minimax:tool_call>",), decode=_NAMED_PARAMS),
    "step3": HeaderFormat("step3", ('<steptml:invoke name="',), ('">',), ("</steptml:invoke>",),
                          ("<｜tool_calls_begin｜>",), ("<｜tool_calls_end｜>",),
                          decode=XmlParams('<steptml:parameter name="', (('">', "schema"),), "</steptml:parameter>")),
    **{name: HeaderFormat(name, ('<｜DSML｜invoke name="',), ('">',), ("</｜DSML｜invoke>",), (f"<｜DSML｜{block}>",),
                          (f"</｜DSML｜{block}>",), decode=_DSML_PARAMS)
       for name, block in (("deepseek_v32", "function_calls"), ("deepseek_v4", "tool_calls"))},
    # GLM-4.5/4.6 write newlines between the tags, GLM-4.7 and 5 none: one reading serves both
    **{name: HeaderFormat(name, ("<tool_call>",), (), ("</tool_call>",), decode=_GLM_PARAMS) for name in ("glm45", "glm47")},
    # Kimi K3 (XTML): typed arguments in a tools channel; the response/message wrappers are dropped
    "kimi_k3": HeaderFormat("kimi_k3", ('<|open|>call tool="',), ("<|sep|>",), ("<|close|>call<|sep|>",),
                            ("<|open|>tools<|sep|>",), ("<|close|>tools<|sep|>",), drop=_XTML_WRAPPERS,
                            decode=XmlParams('<|open|>argument key="', (('" type="string"<|sep|>', "string"),
                                                                        ("<|sep|>", "json")),
                                             "<|close|>argument<|sep|>", attribute_names=True)),
    "minimax_m3": HeaderFormat("minimax_m3", tuple(f'{MINIMAX_NS}{s}<invoke name="' for s in _M3_SPACING), ('">',),
                               tuple(f"{MINIMAX_NS}{s}</invoke>" for s in _M3_SPACING),
                               tuple(f"{MINIMAX_NS}{s}<tool_call>" for s in _M3_SPACING),
                               tuple(f"{MINIMAX_NS}{s}</tool_call>" for s in _M3_SPACING),
                               decode=minimax_m3_arguments),
    # a whole call in its own syntax between two markers
    "gemma4": HeaderFormat("gemma4", ("<|tool_call>",), (), ("<tool_call|>",), decode=GemmaCalls('<|"|>')),
    "functiongemma": HeaderFormat("functiongemma", ("<start_function_call>",), (), ("<end_function_call>",),
                                  decode=GemmaCalls("<escape>")),
    "olmo3": HeaderFormat("olmo3", ("<function_calls>",), (), ("</function_calls>",), decode=olmo3_calls),
}


def _factories() -> dict[str, Callable[..., ToolCallParser]]:
    """name -> ``factory(tools, **options)`` for every family."""
    out: dict[str, Callable[..., ToolCallParser]] = {}
    for name, fmt in JSON_FORMATS.items():
        out[name] = partial(JsonToolParser, fmt)
    for name, hfmt in HEADER_FORMATS.items():
        out[name] = partial(HeaderToolParser, hfmt)
    out["pythonic"] = PythonicToolParser
    out["mistral"] = MistralToolParser
    return out


FACTORIES = _factories()
