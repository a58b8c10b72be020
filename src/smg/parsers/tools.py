"""Streaming tool-call parsers: model output in, ``content`` and OpenAI-shaped call deltas out.

Four base machines, each driven by marker matchers plus family tables. The first two run
entirely in the compiled ``smg._ext.tool_scan`` (twin ``tool_scan_py``), and their ``feed_batch``
scans without the GIL:

* :class:`JsonToolParser` — calls are JSON objects (``{"name": N, "arguments": {...}}``) inside
  markers, or a JSON array of them: hermes/qwen, llama3 json, mistral (old form), cohere,
  granite, internlm, hunyuan. The name is sent as soon as it is read; the arguments value is then
  streamed as written, its end found by the JSON scanner (depth/string/escape state).
* :class:`HeaderToolParser` — a marker, the name, a separator, raw JSON arguments, an end marker:
  deepseek_v3/v31, kimi_k2, mistral (v11 ``[TOOL_CALLS]N[ARGS]{}``), gpt_oss (Harmony).
* :class:`XmlToolParser` — the name and each parameter in tags, values typed by the request's
  tool schema and sent as JSON as each parameter closes: qwen3_coder, seed_oss, glm45/47,
  minimax_m2, step3, deepseek_v32 (DSML).
* :class:`PythonicToolParser` — ``[f(a=1), g(b='x')]`` (Llama 4, Llama 3.2 pythonic), parsed with
  ``ast`` when the list closes.

Behaviour on bad output (never an exception): a stream that ends inside a call keeps what was
sent (an XML call is closed with ``}``; JSON arguments stay as the model wrote them); a JSON call
object without a name is returned as content; calls to tools not in the request are reported, as
vLLM's parsers do.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Mapping, Sequence

from smg import _ext
from smg._ext.tool_scan_py import CallRecorder
from smg._ext.tool_scan_py import feed_batch as feed_each_delta
from smg.parsers.base import MarkerMachine, ToolCall, ToolCallDelta, ToolCallParser, ToolDelta, check_text
from smg.parsers.names import canonical

tool_kernel = _ext.load("tool_scan")
BracketScanner = _ext.load("json_scan").BracketScanner

CONTENT = 0


def _tool_schemas(tools: Iterable[Mapping[str, Any]] | None) -> dict[str, dict]:
    """name -> parameters schema, from OpenAI ``tools`` (``{"type": "function", "function": {...}}``)."""
    out: dict[str, dict] = {}
    for tool in tools or ():
        fn = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            params = fn.get("parameters")
            out[fn["name"]] = params if isinstance(params, dict) else {}
    return out


class WholeOutput:
    """``parse``: the non-streaming use of a streaming parser."""

    __slots__ = ()

    def parse(self, text: str) -> tuple[str, list[ToolCall]]:
        """Non-streaming: ``(content, calls)`` of a whole output (``feed`` + ``finish``)."""
        return collect([self.feed(text), self.finish()])


class ToolParser(WholeOutput, CallRecorder):
    """Base of the Python tool parsers (XML, pythonic, mistral): the feed/finish/parse protocol
    over ``CallRecorder``'s call bookkeeping."""

    def __init__(self, tools: Iterable[Mapping[str, Any]] | None = None) -> None:
        self._schemas = _tool_schemas(tools)
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
    bare_at_start: bool = False  # output whose first non-space char is "{" is a block (llama3)
    name_keys: tuple[str, ...] = ("name",)
    args_keys: tuple[str, ...] = ("arguments", "parameters")


class JsonToolParser(WholeOutput, tool_kernel.JsonMachine):
    """The JSON-objects machine (compiled ``smg._ext.tool_scan``; see its twin)."""

    __slots__ = ()
    START, BLOCK, OBJECT = 1, 2, 3


# ---- header + raw arguments ---------------------------------------------------------------------

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


class HeaderToolParser(WholeOutput, tool_kernel.HeaderMachine):
    """The header + raw-arguments machine (compiled ``smg._ext.tool_scan``; see its twin)."""

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


# ---- XML parameters -----------------------------------------------------------------------------

# States of the XML machine.
BLOCK, NAME, PARAMS, PNAME, PGAP, PVALUE = 1, 2, 3, 4, 5, 6


@dataclass(frozen=True)
class XmlFormat:
    """``table[state]`` = ((marker, next state, actions), ...); actions among ``call`` (the NAME
    text is the function name), ``pname``/``pname_str``/``pname_json`` (the PNAME text is a
    parameter name; its value typed by schema / a string / JSON), ``value`` (the PVALUE text is the
    value) and ``close`` (end the call)."""

    name: str
    table: tuple[tuple[tuple[str, int, tuple[str, ...]], ...], ...]


def xml_format(name: str, block: tuple[str, str], invoke: tuple[str, str, str] | None,
               param: tuple[str, str, str], value_start: str | None = None,
               name_ends: tuple[tuple[str, int, tuple[str, ...]], ...] = (),
               param_name_ends: tuple[tuple[str, str], ...] | None = None) -> XmlFormat:
    """Build the table of the usual layout: ``block[0]`` (invoke_start NAME invoke_name_end
    (param_start PNAME param_name_end [value_start] VALUE param_end)* invoke_end)* ``block[1]``."""
    block_start, block_end = block
    p_start, p_name_end, p_end = param
    after_pname = PGAP if value_start else PVALUE
    name_end_markers = tuple((m, after_pname, (a,)) for m, a in param_name_ends) if param_name_ends else \
        ((p_name_end, after_pname, ("pname",)),)
    if invoke is not None:
        i_start, i_name_end, i_end = invoke
        content = ((block_start, BLOCK, ()),)
        block_row = ((i_start, NAME, ()), (block_end, CONTENT, ()))
        name_row = ((i_name_end, PARAMS, ("call",)),) + name_ends
        params_row = ((p_start, PNAME, ()), (i_end, BLOCK, ("close",)), (block_end, CONTENT, ("close",)))
    else:  # the name follows the block marker directly (GLM)
        content = ((block_start, NAME, ()),)
        block_row = ()
        name_row = name_ends
        params_row = ((p_start, PNAME, ()), (block_end, CONTENT, ("close",)))
    table = (content, block_row, name_row, params_row, name_end_markers,
             (((value_start, PVALUE, ()),) if value_start else ()),
             ((p_end, PARAMS, ("value",)), (block_end, CONTENT, ("value", "close"))))
    return XmlFormat(name, table)


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
    kind = schema.get("type") if isinstance(schema, Mapping) else None
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


class XmlToolParser(ToolParser):
    def __init__(self, fmt: XmlFormat, tools=None, **_: Any) -> None:
        super().__init__(tools)
        self._fmt = fmt
        self._machine = MarkerMachine([[m for m, _, _ in row] for row in fmt.table])
        self._buf = ""
        self._in_call = False
        self._first_param = True
        self._fn: str | None = None
        self._pname = ""
        self._pmode = "schema"
        self._body = ""  # a call's text outside parameter tags (a JSON-object body, as DSML allows)

    def _on_text(self, text: str) -> None:
        state = self._machine.state
        if state == CONTENT:
            self._content += text
        elif state in (NAME, PNAME, PVALUE):
            self._buf += text
        elif state == PARAMS and self._in_call and self._first_param:
            self._body += text

    def _on_marker(self, index: int) -> None:
        _, nxt, actions = self._fmt.table[self._machine.state][index]
        for action in actions:
            if action == "call":
                self._fn = self._buf.strip()
                self._open(self._fn)
                self._args("{")
                self._in_call, self._first_param, self._body = True, True, ""
            elif action.startswith("pname"):
                self._pname = self._buf.strip()
                self._pmode = {"pname": "schema", "pname_str": "string", "pname_json": "json"}[action]
            elif action == "value" and self._in_call and self._machine.state == PVALUE:
                self._emit_param(self._buf)
            elif action == "close" and self._in_call:
                if self._first_param:  # no parameter tags: the body may be the arguments as JSON
                    self._json_body()
                self._args("}")
                self._in_call = False
        if nxt != self._machine.state or actions:
            self._buf = ""
        self._machine.state = nxt

    def _json_body(self) -> None:
        """A call written as ``invoke`` + a JSON object (DeepSeek V3.2's DSML allows it): its
        members are the arguments (the ``{`` was sent when the call opened)."""
        body, self._body = self._body.strip(), ""
        if not body.startswith("{"):
            return
        try:
            arguments = json.loads(body)
        except ValueError:
            return
        if isinstance(arguments, dict) and arguments:
            self._args(json.dumps(arguments, ensure_ascii=False)[1:-1])

    def _emit_param(self, raw: str) -> None:
        if raw.startswith("\n"):
            raw = raw[1:]
        if raw.endswith("\n"):
            raw = raw[:-1]
        schema = self._schemas.get(self._fn or "", {}).get("properties", {}).get(self._pname)
        value = typed_value(raw, schema, self._pmode)
        sep = "" if self._first_param else ", "
        self._args(f"{sep}{json.dumps(self._pname, ensure_ascii=False)}: {json.dumps(value, ensure_ascii=False)}")
        self._first_param = False

    def _finish(self) -> None:
        held = self._machine.held()
        if self._machine.state == CONTENT:
            self._content += held
        if self._in_call:  # truncated inside a call: close what was sent
            self._args("}")
            self._in_call = False


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
                self._open(name)
                self._args(json.dumps(args, ensure_ascii=False))
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


def _pythonic_calls(source: str) -> list[tuple[str, dict]] | None:
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if not isinstance(tree.body, ast.List):
        return None
    calls = []
    for node in tree.body.elts:
        if not isinstance(node, ast.Call) or node.args:
            return None
        func = node.func
        name = func.id if isinstance(func, ast.Name) else (
            ast.unparse(func) if isinstance(func, ast.Attribute) else None)
        if name is None:
            return None
        try:
            kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
        calls.append((name, kwargs))
    return calls


# ---- mistral: two syntaxes behind one marker -----------------------------------------------------

MISTRAL_JSON = JsonFormat("mistral", ("[TOOL_CALLS]",))
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
    "hermes": JsonFormat("hermes", ("<tool_call>",), ("</tool_call>",)),
    "llama3_json": JsonFormat("llama3_json", ("<|python_tag|>",), bare_at_start=True,
                              args_keys=("parameters", "arguments")),
    "cohere": JsonFormat("cohere", ("<|START_ACTION|>",), ("<|END_ACTION|>",), name_keys=("tool_name", "name"),
                         args_keys=("parameters", "arguments")),
    "granite": JsonFormat("granite", ("<|tool_call|>",)),
    "internlm": JsonFormat("internlm", ("<|action_start|><|plugin|>",), ("<|action_end|>",)),
    "hunyuan": JsonFormat("hunyuan", ("<tool_calls>",), ("</tool_calls>",)),
}

_DS_CALLS = ("<｜tool▁calls▁begin｜>",), ("<｜tool▁calls▁end｜>",)
HEADER_FORMATS = {
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
}

XML_FORMATS = {
    "qwen3_coder": xml_format("qwen3_coder", ("<tool_call>", "</tool_call>"), ("<function=", ">", "</function>"),
                              ("<parameter=", ">", "</parameter>")),
    "seed_oss": xml_format("seed_oss", ("<seed:tool_call>", "</seed:tool_call>"), ("<function=", ">", "</function>"),
                           ("<parameter=", ">", "</parameter>")),
    "minimax_m2": xml_format("minimax_m2", ("<minimax:tool_call>", "</minimax:tool_call>"),
                             ('<invoke name="', '">', "</invoke>"), ('<parameter name="', '">', "</parameter>")),
    "step3": xml_format("step3", ("<｜tool_calls_begin｜>", "<｜tool_calls_end｜>"),
                        ('<steptml:invoke name="', '">', "</steptml:invoke>"),
                        ('<steptml:parameter name="', '">', "</steptml:parameter>")),
    "deepseek_v32": xml_format("deepseek_v32", ("<｜DSML｜function_calls>", "</｜DSML｜function_calls>"),
                               ('<｜DSML｜invoke name="', '">', "</｜DSML｜invoke>"),
                               ('<｜DSML｜parameter name="', '">', "</｜DSML｜parameter>"),
                               param_name_ends=(('" string="true">', "pname_str"), ('" string="false">', "pname_json"),
                                                ('">', "pname"))),
    "glm45": xml_format("glm45", ("<tool_call>", "</tool_call>"), None, ("<arg_key>", "</arg_key>", "</arg_value>"),
                        value_start="<arg_value>",
                        name_ends=(("\n", PARAMS, ("call",)), ("<arg_key>", PNAME, ("call",)),
                                   ("</tool_call>", CONTENT, ("call", "close")))),
}
XML_FORMATS["glm47"] = XmlFormat("glm47", XML_FORMATS["glm45"].table)


def _factories() -> dict[str, Callable[..., ToolCallParser]]:
    """name -> ``factory(tools, **options)`` for every family."""
    out: dict[str, Callable[..., ToolCallParser]] = {}
    for name, fmt in JSON_FORMATS.items():
        out[name] = partial(JsonToolParser, fmt)
    for name, hfmt in HEADER_FORMATS.items():
        out[name] = partial(HeaderToolParser, hfmt)
    for name, xfmt in XML_FORMATS.items():
        out[name] = lambda tools=None, _f=xfmt, **o: XmlToolParser(_f, tools, **o)
    out["pythonic"] = PythonicToolParser
    out["mistral"] = MistralToolParser
    return out


FACTORIES = _factories()
