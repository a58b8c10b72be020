"""Tool-call parsers: examples per family, chunking invariance, fuzz, malformed output."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.errors import InvalidRequest
from smg.parsers import ParseError, ToolParser, collect, parser_for_model, tool_parser_names
from smg.parsers.tools import HEADER_FORMATS, JSON_FORMATS, XML_FORMATS, typed_value

from .samples import TOOL_SAMPLES, TOOLS, split, without_generated_ids


def summary(content, calls):
    return content, [(c.name, json.loads(c.arguments)) for c in calls]


def stream(name, pieces):
    parser = ToolParser.create(name, TOOLS)
    return collect([parser.feed(p) for p in pieces] + [parser.finish()])


def assert_streamed_equals_parsed(name, text, pieces):
    content, calls = stream(name, pieces)
    one_content, one_calls = ToolParser.create(name, TOOLS).parse(text)
    assert content == one_content
    assert [(c.name, c.arguments) for c in calls] == [(c.name, c.arguments) for c in one_calls]


@pytest.mark.parametrize("name, text, content, calls", TOOL_SAMPLES)
def test_examples(name, text, content, calls):
    assert summary(*ToolParser.create(name, TOOLS).parse(text)) == (content, [(n, a) for n, a in calls])
    assert summary(*stream(name, list(text))) == (content, [(n, a) for n, a in calls])


def test_every_family_has_an_example():
    assert {s[0] for s in TOOL_SAMPLES} == set(tool_parser_names())


@given(data=st.data())
@settings(max_examples=400, deadline=None)
def test_any_chunking_equals_one_shot(data):
    name, text, _, _ = data.draw(st.sampled_from(TOOL_SAMPLES))
    assert_streamed_equals_parsed(name, text, split(data, text, 15))


def test_streaming_shape_name_first_then_argument_fragments():
    parser = ToolParser.create("hermes", TOOLS)
    text = TOOL_SAMPLES[0][1]
    deltas = [parser.feed(text[i:i + 4]) for i in range(0, len(text), 4)] + [parser.finish()]
    calls = [c for d in deltas for c in d.calls]
    firsts = {}
    for c in calls:
        if c.index not in firsts:
            firsts[c.index] = c
            assert c.name is not None and c.id.startswith("call_")
        else:
            assert c.name is None and c.id is None
    assert sorted(firsts) == [0, 1]
    assert sum(1 for c in calls if c.index == 0) > 2  # arguments really streamed in pieces


def fuzz_text(name):
    fmt = JSON_FORMATS.get(name) or HEADER_FORMATS.get(name) or XML_FORMATS.get(name)
    markers = []
    if fmt is not None:
        for value in vars(fmt).values():
            if isinstance(value, tuple):
                for item in value:
                    if isinstance(item, str):
                        markers.append(item)
                    elif isinstance(item, tuple):
                        markers += [m for row in item for m in (row if isinstance(row, tuple) else (row,))
                                    if isinstance(m, str)]
    sample = next(s[1] for s in TOOL_SAMPLES if s[0] == name) if any(s[0] == name for s in TOOL_SAMPLES) else ""
    pieces = markers + ["{", "}", "[", "]", '"', "\\", ":", ",", "a", " ", "\n", "\u00a0", "\x1c", "😀", '"name": "f"',
                        '"arguments": ', "(", ")", "=", "'"] + [sample[i:i + 7] for i in range(0, len(sample), 7)]
    return st.lists(st.sampled_from(pieces), max_size=30).map("".join)


@given(data=st.data())
@settings(max_examples=500, deadline=None)
def test_fuzz_never_raises_and_is_chunking_invariant(data):
    name = data.draw(st.sampled_from(tool_parser_names()))
    text = data.draw(fuzz_text(name))
    assert_streamed_equals_parsed(name, text, split(data, text))


@pytest.mark.parametrize("name, text, check", [
    # stream ends mid-call: what was sent stays, an XML call is closed
    ("qwen3_coder", "<tool_call>\n<function=get_weather>\n<parameter=city>\nPar", lambda c, k: k[0].arguments == "{}"),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa',
     lambda c, k: k[0].name == "get_weather" and k[0].arguments == '{"city": "Pa'),
    # a JSON object without a name is not a call: its text is content
    ("hermes", '<tool_call>{"foo": 1}</tool_call>', lambda c, k: c == '{"foo": 1}' and not k),
    # nesting too deep for json.loads is bad output like any other
    ("hermes", '<tool_call>{"a": ' + "[" * 100_000 + "]" * 100_000 + "}</tool_call>",
     lambda c, k: not k and c.startswith('{"a": [[')),
    # pythonic that does not parse is content
    ("pythonic", "[not python(", lambda c, k: c == "[not python(" and not k),
    # calls to tools not in the request are reported (as vLLM does)
    ("hermes", '<tool_call>{"name": "unknown_tool", "arguments": {}}</tool_call>',
     lambda c, k: k[0].name == "unknown_tool" and k[0].arguments == "{}"),
    # arguments before the name: sent whole when the object closes
    ("hermes", '<tool_call>{"arguments": {"q": "x"}, "name": "search"}</tool_call>',
     lambda c, k: (k[0].name, json.loads(k[0].arguments)) == ("search", {"q": "x"})),
    # a name with an invalid JSON escape is kept as written, never an exception
    ("llama3_json", '{"name": "bad\\ name", "parameters": {}}', lambda c, k: k[0].name == "bad\\ name"),
    # an end marker inside a JSON string is data
    ("hermes", '<tool_call>{"name": "search", "arguments": {"q": "</tool_call>"}}</tool_call>after',
     lambda c, k: json.loads(k[0].arguments) == {"q": "</tool_call>"} and c == "after"),
    ("kimi_k2", "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:7<|tool_call_argument_begin|>{}"
                "<|tool_call_end|><|tool_calls_section_end|>", lambda c, k: k[0].id == "functions.get_weather:7"),
])
def test_malformed_and_edge_outputs(name, text, check):
    content, calls = ToolParser.create(name, TOOLS).parse(text)
    assert check(content, calls), (content, calls)


@pytest.mark.parametrize("raw, schema, mode, expected", [
    ("3", {"type": "integer"}, "schema", 3), ("2.5", {"type": "number"}, "schema", 2.5),
    ("True", {"type": "boolean"}, "schema", True), ("[1, 2]", {"type": "array"}, "schema", [1, 2]),
    ("['a']", {"type": "array"}, "schema", ["a"]), ("007", {"type": "string"}, "schema", "007"),
    ("{\"a\": 1}", {"type": "object"}, "schema", {"a": 1}), ("plain", None, "schema", "plain"),
    # a parameter the schema does not type stays the string the model wrote
    ("{\"a\": 1}", None, "schema", "{\"a\": 1}"), ("42", None, "schema", "42"), ("true", {}, "schema", "true"),
    # Python literals count as JSON's, wherever JSON's are typed
    ("False", {"type": "boolean"}, "schema", False), ("None", {"type": ["string", "null"]}, "schema", None),
    ("null", {"type": ["integer", "null"]}, "schema", None), ("None", {"type": "string"}, "schema", "None"),
    ("{'k': True, 'n': None, 't': (1, 2)}", {"type": "object"}, "schema", {"k": True, "n": None, "t": [1, 2]}),
    ("None", None, "json", None), ("True", None, "json", True),
    # JSON with escaped quotes, as models write it inside XML
    ('{\\"city\\": \\"Paris\\", \\"days\\": [1, 2]}', {"type": "object"}, "schema", {"city": "Paris", "days": [1, 2]}),
    ('[\\"a\\", \\"b\\"]', {"type": "array"}, "schema", ["a", "b"]),
    # not the structure the schema asks for: the text
    ("[1]", {"type": "object"}, "schema", "[1]"), ("{oops", {"type": "object"}, "schema", "{oops"),
    ("5", None, "string", "5"), ("5", None, "json", 5), ("x", {"type": "integer"}, "schema", "x"),
])
def test_typed_values(raw, schema, mode, expected):
    assert typed_value(raw, schema, mode) == expected


def test_misuse_is_typed():
    parser = ToolParser.create("hermes")
    with pytest.raises(ParseError):
        parser.feed(None)
    parser.finish()
    with pytest.raises(ParseError):
        parser.finish()
    with pytest.raises(InvalidRequest):
        ToolParser.create("nope")


@pytest.mark.parametrize("model, expected", [
    ("Qwen/Qwen3-8B", ("qwen3", "hermes")),
    ("Qwen/Qwen3-Coder-30B-A3B-Instruct", (None, "qwen3_coder")),
    ("Qwen/Qwen3-4B-Thinking-2507", ("qwen3_thinking", "hermes")),
    ("deepseek-ai/DeepSeek-R1-0528", ("deepseek_r1", "deepseek_v3")),
    ("deepseek-ai/DeepSeek-V3.1", ("deepseek_v31", "deepseek_v31")),
    ("deepseek-ai/DeepSeek-V3.2-Exp", ("deepseek_v31", "deepseek_v32")),
    ("zai-org/GLM-4.7", ("glm45", "glm47")),
    ("moonshotai/Kimi-K2-Instruct", ("kimi_k2", "kimi_k2")),
    ("openai/gpt-oss-20b", ("gpt_oss", "gpt_oss")),
    ("meta-llama/Llama-3.2-1B-Instruct", (None, "llama3_json")),
    ("meta-llama/Llama-4-Scout-17B-16E-Instruct", (None, "pythonic")),
    ("some/unknown-model", (None, None)),
])
def test_parser_for_model(model, expected):
    assert parser_for_model(model) == expected


def test_parser_for_model_overrides_and_aliases():
    assert parser_for_model("Qwen/Qwen3-8B", tool_parser="qwen3-coder") == ("qwen3", "qwen3_coder")
    assert parser_for_model("x", reasoning_parser="DeepSeek-R1", tool_parser="json") == ("deepseek_r1", "llama3_json")
    with pytest.raises(InvalidRequest):
        parser_for_model("x", tool_parser="bogus")


@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_compiled_tool_machines_equal_twin(tool_scan_impl, data):
    from smg._ext import tool_scan_py as twin

    name = data.draw(st.sampled_from(sorted(HEADER_FORMATS) + sorted(JSON_FORMATS)))
    text = data.draw(fuzz_text(name))
    pieces = split(data, text)
    machine = "HeaderMachine" if name in HEADER_FORMATS else "JsonMachine"
    fmt = HEADER_FORMATS.get(name) or JSON_FORMATS[name]
    ours, ref = getattr(tool_scan_impl, machine)(fmt), getattr(twin, machine)(fmt)
    assert [without_generated_ids(ours.feed(p)) for p in pieces] == [without_generated_ids(ref.feed(p)) for p in pieces]
    assert without_generated_ids(ours.finish()) == without_generated_ids(ref.finish())


def test_create_returns_one_documented_type_for_every_family():
    from smg.parsers import ToolCallParser

    for name in tool_parser_names():
        parser = ToolParser.create(name, TOOLS)
        assert isinstance(parser, ToolCallParser), name
        content, calls = parser.parse("plain text")
        assert isinstance(content, str) and isinstance(calls, list)


def test_the_format_modules_do_not_import_the_model_table():
    """No import cycle: the name table (registry) imports the format modules, never the reverse."""
    import ast
    import pathlib

    import smg.parsers

    root = pathlib.Path(smg.parsers.__file__).parent
    for module in ("reasoning.py", "tools.py", "names.py", "base.py"):
        tree = ast.parse((root / module).read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    for alias in node.names if node.module == "smg.parsers"}
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "registry" not in imported and "smg.parsers.registry" not in modules, module
