"""Tool-call parsers: examples per family, chunking invariance, fuzz, malformed output."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.errors import InvalidRequest
from smg.parsers import ParseError, ToolParser, collect, parser_for_model, tool_parser_names
from smg.parsers.tools import HEADER_FORMATS, JSON_FORMATS, typed_value

from .samples import TOOL_SAMPLES, TOOLS, split, without_generated_ids


def summary(content, calls):
    return content, [(c.name, json.loads(c.arguments)) for c in calls]


def stream(name, pieces, tools=TOOLS):
    parser = ToolParser.create(name, tools)
    return collect([parser.feed(p) for p in pieces] + [parser.finish()])


def assert_streamed_equals_parsed(name, text, pieces, tools=TOOLS):
    content, calls = stream(name, pieces, tools)
    one_content, one_calls = ToolParser.create(name, tools).parse(text)
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


def test_streaming_shape_each_call_whole_once_it_closed():
    """A call goes out in one piece (id, name, arguments) in the delta that closed it (for hermes,
    its </tool_call>): it was decoded first, so a client never receives a call it cannot execute."""
    parser = ToolParser.create("hermes", TOOLS)
    text = TOOL_SAMPLES[0][1]
    block_end = text.index("</tool_call>") + len("</tool_call>")  # where the first call's block closes
    deltas = [parser.feed(text[i:i + 4]) for i in range(0, len(text), 4)] + [parser.finish()]
    calls = [(i, c) for i, d in enumerate(deltas) for c in d.calls]
    assert [c.index for _, c in calls] == [0, 1]
    assert all(c.name and c.id.startswith("call_") and json.loads(c.arguments) for _, c in calls)
    assert calls[0][0] == (block_end - 1) // 4  # the delta that completes its end marker


def fuzz_text(name):
    fmt = JSON_FORMATS.get(name) or HEADER_FORMATS.get(name)
    markers = []
    decode = getattr(fmt, "decode", None)
    for part in (fmt, decode if hasattr(decode, "__dataclass_fields__") else None):  # (XML parameter tags too)
        for value in vars(part).values() if part is not None else ():
            if isinstance(value, str) and value and part is decode:
                markers.append(value)
            elif isinstance(value, tuple):
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


EDGE_CASES = [
    # stream ends mid-call: a call cut short does not decode and is dropped
    ("qwen3_coder", "<tool_call>\n<function=get_weather>\n<parameter=city>\nPar", lambda c, k: not k and not c),
    ("qwen3_coder", "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n",
     lambda c, k: json.loads(k[0].arguments) == {"city": "Paris"}),  # closed parameters, end markers left out
    ("hermes", 'Sure.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa', lambda c, k: c == "Sure." and not k),
    # hermes: a call counts once its </tool_call> came (SGLang and the Rust gateway; vLLM takes it without)
    ("hermes", 'Sure.<tool_call>\n{"name": "search", "arguments": {"q": "x"}}', lambda c, k: c == "Sure." and not k),
    # an array of calls that never closed was cut short: no call (SGLang, vLLM, the Rust gateway)
    ("mistral", '[TOOL_CALLS] [{"name": "search", "arguments": {}}', lambda c, k: not k),
    ("granite", '<|tool_call|>[{"name": "search", "arguments": {}}, {"name": "f", "arguments"', lambda c, k: not k),
    ("mistral", '[TOOL_CALLS] [{"name": "search", "arguments": {}}]\n\nText after.',
     lambda c, k: [x.name for x in k] == ["search"]),
    # Llama 3: an object after <|python_tag|> that is no call is text, the tag included (vLLM, the Rust gateway)
    ("llama3_json", '<|python_tag|>{"name": invalid}', lambda c, k: c == '<|python_tag|>{"name": invalid}' and not k),
    # an opening marker with nothing after it is no call
    ("hermes", "Sure.<tool_call>", lambda c, k: c == "Sure." and not k),
    ("kimi_k2", "<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>",
     lambda c, k: not c and not k),
    # a call whose arguments do not decode is dropped; the others keep their order
    ("hermes", '<tool_call>{"name": "search", "arguments": {bad}}</tool_call><tool_call>{"name": "get_weather", '
               '"arguments": {"city": "Paris"}}</tool_call><tool_call>{"name": "search", "arguments": {"q": 1}}</tool_call>',
     lambda c, k: [(x.name, json.loads(x.arguments)) for x in k] == [("get_weather", {"city": "Paris"}),
                                                                      ("search", {"q": 1})] and not c),
    ("hermes", '<tool_call>{"name": "f", "arguments": [1, 2]}</tool_call>', lambda c, k: not c and not k),
    ("deepseek_v31", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{oops}<｜tool▁call▁end｜>"
                     '<｜tool▁call▁begin｜>g<｜tool▁sep｜>{"a": 1}<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
     lambda c, k: [(x.name, x.arguments) for x in k] == [("g", '{"a": 1}')]),
    # arguments quoted as a JSON string holding an object are that object; none at all are {}
    ("hermes", '<tool_call>{"name": "search", "arguments": "{\\"q\\": \\"x\\"}"}</tool_call>',
     lambda c, k: json.loads(k[0].arguments) == {"q": "x"}),
    ("hermes", '<tool_call>{"name": "f"}</tool_call>', lambda c, k: k[0].arguments == "{}"),
    # the end marker may be the engine's stop token, left out of the text: a complete call still counts
    ("gpt_oss", '<|channel|>commentary to=functions.search <|constrain|>json<|message|>{"q": "x"}',
     lambda c, k: json.loads(k[0].arguments) == {"q": "x"}),
    # a JSON object without a name is not a call: its text is content
    ("hermes", '<tool_call>{"foo": 1}</tool_call>', lambda c, k: c == '{"foo": 1}' and not k),
    # nesting too deep for json.loads is bad output like any other: dropped inside markers
    ("hermes", 'a<tool_call>{"a": ' + "[" * 100_000 + "]" * 100_000 + "}</tool_call>b", lambda c, k: not k and c == "ab"),
    # without markers (Llama 3 bare JSON), text that is not a valid call stays content
    ("llama3_json", '{"name": "f", "parameters": {oops}}', lambda c, k: c == '{"name": "f", "parameters": {oops}}' and not k),
    ("llama3_json", '{"name": "get_weather", "parameters": {"city": "Pa', lambda c, k: c.startswith('{"name"') and not k),
    # pythonic that does not parse is content, and so is a literal JSON has no kind for (a set, bytes)
    ("pythonic", "[f(a={1, 2})] and [g(b=b'x')]", lambda c, k: c == "[f(a={1, 2})] and [g(b=b'x')]" and not k),
    ("pythonic", "[not python(", lambda c, k: c == "[not python(" and not k),
    # with no tools declared, no call is refused
    ("hermes", '<tool_call>{"name": "unknown_tool", "arguments": {}}</tool_call>',
     lambda c, k: k[0].name == "unknown_tool" and k[0].arguments == "{}"),
    # arguments before the name: sent whole when the object closes
    ("hermes", '<tool_call>{"arguments": {"q": "x"}, "name": "search"}</tool_call>',
     lambda c, k: (k[0].name, json.loads(k[0].arguments)) == ("search", {"q": "x"})),
    # a name with an invalid JSON escape does not decode: the text stays content, never an exception
    ("llama3_json", '{"name": "bad\\ name", "parameters": {}}', lambda c, k: c.startswith('{"name"') and not k),
    # an end marker inside a JSON string is data
    ("hermes", '<tool_call>{"name": "search", "arguments": {"q": "</tool_call>"}}</tool_call>after',
     lambda c, k: json.loads(k[0].arguments) == {"q": "</tool_call>"} and c == "after"),
    # the new families: a call that does not decode is dropped, the others kept in order
    ("gemma4", '<|tool_call>call:f{a:<|"|>unterminated}<tool_call|><|tool_call>call:g{b:2}<tool_call|>',
     lambda c, k: [(x.name, json.loads(x.arguments)) for x in k] == [("g", {"b": 2})]),
    ("gemma4", "<|tool_call>call:f{a:1}", lambda c, k: k[0].name == "f"),  # <tool_call|> left out as a stop token
    ("gemma4", "<|tool_call>call:f{a:1", lambda c, k: not k and not c),  # cut short
    ("functiongemma", "<start_function_call>nonsense<end_function_call>after", lambda c, k: not k and c == "after"),
    ("olmo3", "<function_calls>\nf(a=1)\ng(\n</function_calls>", lambda c, k: not k),
    ("olmo3", "<function_calls>\nimport os\n</function_calls>", lambda c, k: not k),
    ("kimi_k3", '<|open|>tools<|sep|><|open|>call tool="a&amp;b" index="0"<|sep|><|open|>argument key="x" type="object"'
                '<|sep|>{"k": [1]}<|close|>argument<|sep|><|close|>call<|sep|><|close|>tools<|sep|>',
     lambda c, k: k[0].name == "a&b" and json.loads(k[0].arguments) == {"x": {"k": [1]}}),
    ("minimax_m3", "]<]minimax[>[<tool_call>]<]minimax[>[<invoke name=\"f\">]<]minimax[>[<a>1]<]minimax[>[</b>"
                   "]<]minimax[>[</invoke>]<]minimax[>[<invoke name=\"g\">]<]minimax[>[<a>1]<]minimax[>[</a>"
                   "]<]minimax[>[</invoke>]<]minimax[>[</tool_call>",
     lambda c, k: [(x.name, json.loads(x.arguments)) for x in k] == [("g", {"a": "1"})]),
    ("xlam", '[{"name": "f", "arguments": {bad}}] tail', lambda c, k: not k and c.startswith('[{"name"')),
    ("kimi_k2", "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:7<|tool_call_argument_begin|>{}"
                "<|tool_call_end|><|tool_calls_section_end|>", lambda c, k: k[0].id == "functions.get_weather:7"),
]


@pytest.mark.parametrize("name, text, check", EDGE_CASES)
def test_malformed_and_edge_outputs(name, text, check):
    content, calls = ToolParser.create(name).parse(text)  # no tools declared: none refused
    assert check(content, calls), (content, calls)


@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_malformed_and_edge_outputs_at_any_chunking(data):
    name, text, check = data.draw(st.sampled_from([case for case in EDGE_CASES if len(case[1]) < 10_000]))
    assert_streamed_equals_parsed(name, text, split(data, text, 12), None)
    assert check(*stream(name, split(data, text, 12), None))


@pytest.mark.parametrize("name, text", [
    ("hermes", '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call><tool_call>{"name": "search", '
               '"arguments": {"q": "x"}}</tool_call>'),
    ("llama3_json", '<|python_tag|>{"name": "rm_rf", "parameters": {}}; {"name": "search", "parameters": {"q": "x"}}'),
    ("deepseek_v31", "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>rm_rf<｜tool▁sep｜>{}<｜tool▁call▁end｜>"
                     '<｜tool▁call▁begin｜>search<｜tool▁sep｜>{"q": "x"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>'),
    ("qwen3_coder", "<tool_call>\n<function=rm_rf>\n</function>\n</tool_call>\n<tool_call>\n<function=search>\n"
                    "<parameter=q>\nx\n</parameter>\n</function>\n</tool_call>"),
    ("gemma4", '<|tool_call>call:rm_rf{}<tool_call|><|tool_call>call:search{q:<|"|>x<|"|>}<tool_call|>'),
    ("pythonic", "[rm_rf(), search(q='x')]"),
    ("mistral", '[TOOL_CALLS] [{"name": "rm_rf", "arguments": {}}, {"name": "search", "arguments": {"q": "x"}}]'),
])
def test_a_call_to_a_tool_the_request_did_not_declare_is_dropped(name, text):
    """As SGLang and the Rust gateway do (vLLM reports it): the majority."""
    content, calls = ToolParser.create(name, TOOLS).parse(text)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("search", {"q": "x"})] and not content.strip()
    assert [c.name for c in ToolParser.create(name).parse(text)[1]] == ["rm_rf", "search"]  # none declared


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
    ("deepseek-ai/DeepSeek-V4-Flash", ("deepseek_v31", "deepseek_v4")),
    ("moonshotai/Kimi-K2.5", ("kimi_k2", "kimi_k2")),
    ("moonshotai/Kimi-K2-Thinking", ("kimi_thinking", "kimi_k2")),
    ("moonshotai/Kimi-K3", ("kimi_k3", "kimi_k3")),
    ("zai-org/GLM-5", ("glm45", "glm47")),
    ("google/gemma-4-31B-it", ("gemma4", "gemma4")),
    ("google/functiongemma-270m-it", (None, "functiongemma")),
    ("MiniMaxAI/MiniMax-M3", ("minimax_m3", "minimax_m3")),
    ("MiniMaxAI/MiniMax-M2.5", ("minimax", "minimax_m2")),
    ("nvidia/NVIDIA-Nemotron-3-Nano-30B-A3B-BF16", ("nemotron", "qwen3_coder")),
    ("nvidia/NVIDIA-Nemotron-3-Super-120B-A12B-FP8", ("nemotron", "qwen3_coder")),
    ("allenai/Olmo-3-7B-Think", ("think", "olmo3")),
    ("Salesforce/Llama-xLAM-2-8b-fc-r", (None, "xlam")),
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
