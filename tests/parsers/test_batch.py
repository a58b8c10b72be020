"""``feed_batch``: many deltas per call (the compiled machines scan them without the GIL).

The batch's meaning is ``feed`` of each delta in turn, so every test compares against that, on
every family, for any chunking, with batches and single deltas mixed on one stream.
"""
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.parsers import (ParseError, ToolCallDelta, ReasoningBatch, ReasoningParser, ToolBatch, ToolParser, collect, feed_batches,
                         join_deltas, reasoning_parser_names, tool_parser_names)
from smg.parsers.reasoning import FORMATS
from smg.parsers.tools import HEADER_FORMATS, JSON_FORMATS

from .samples import REASONING_SAMPLES, TOOL_SAMPLES, TOOLS, split, without_generated_ids
from .test_reasoning import fuzz_text as reasoning_fuzz_text
from .test_tools import fuzz_text as tool_fuzz_text


def run_mixed(data, parser, pieces):
    """Feed ``pieces`` as a random mix of single deltas and batches; the per-delta outputs."""
    out, i = [], 0
    while i < len(pieces):
        size = data.draw(st.integers(0, 6))
        if size == 0:
            out.append(parser.feed(pieces[i]))
            i += 1
        else:
            batch = parser.feed_batch(*join_deltas(pieces[i:i + size]))
            assert len(batch) == len(pieces[i:i + size])
            out.extend(batch)
            i += size
    return out + [parser.finish()]


@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_reasoning_batch_equals_feed_per_delta(data):
    name = data.draw(st.sampled_from(reasoning_parser_names()))
    text = data.draw(st.sampled_from([s[1] for s in REASONING_SAMPLES if s[0] == name] or [""]) | reasoning_fuzz_text(name))
    in_reasoning = data.draw(st.sampled_from([None, True, False]))
    pieces = split(data, text, 12)
    ref = ReasoningParser.create(name, in_reasoning)
    expected = [ref.feed(p) for p in pieces] + [ref.finish()]
    assert run_mixed(data, ReasoningParser.create(name, in_reasoning), pieces) == expected


@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_tool_batch_equals_feed_per_delta(data):
    name = data.draw(st.sampled_from(tool_parser_names()))
    samples = [s[1] for s in TOOL_SAMPLES if s[0] == name]
    text = data.draw(st.sampled_from(samples) | tool_fuzz_text(name))
    pieces = split(data, text, 12)
    ref = ToolParser.create(name, TOOLS)
    expected = [ref.feed(p) for p in pieces] + [ref.finish()]
    got = run_mixed(data, ToolParser.create(name, TOOLS), pieces)
    assert [without_generated_ids(d) for d in got] == [without_generated_ids(d) for d in expected]


@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_compiled_batches_equal_twin(reasoning_impl, tool_scan_impl, data):
    from smg._ext import reasoning_scan_py, tool_scan_py

    name = data.draw(st.sampled_from(sorted(FORMATS)))
    text = data.draw(reasoning_fuzz_text(name))
    pieces = split(data, text, 12)
    ours = reasoning_impl.ReasoningMachine(FORMATS[name]).feed_batch(*join_deltas(pieces))
    ref = reasoning_scan_py.ReasoningMachine(FORMATS[name]).feed_batch(*join_deltas(pieces))
    assert (ours.reasoning, ours.content) == (ref.reasoning, ref.content)
    assert (ours.reasoning_ends, ours.content_ends) == (ref.reasoning_ends, ref.content_ends)

    name = data.draw(st.sampled_from(sorted(HEADER_FORMATS) + sorted(JSON_FORMATS)))
    text = data.draw(tool_fuzz_text(name))
    pieces = split(data, text, 12)
    machine = "HeaderMachine" if name in HEADER_FORMATS else "JsonMachine"
    fmt = HEADER_FORMATS.get(name) or JSON_FORMATS[name]
    ours = getattr(tool_scan_impl, machine)(fmt).feed_batch(*join_deltas(pieces))
    ref = getattr(tool_scan_py, machine)(fmt).feed_batch(*join_deltas(pieces))
    assert (ours.content, ours.content_ends, ours.arguments) == (ref.content, ref.content_ends, ref.arguments)
    assert (ours.piece_delta, ours.piece_call, ours.piece_end) == (ref.piece_delta, ref.piece_call, ref.piece_end)
    assert [(d, h.index, h.name) for d, h in ours.headers] == [(d, h.index, h.name) for d, h in ref.headers]


def test_json_batch_with_an_object_only_python_can_settle():
    """Call objects are decoded when the batch completes; one that names no function is content,
    which only ``feed`` can put in its place, so that batch is redone with ``feed`` (same result).
    Decoded arguments go out as compact JSON, as OpenAI writes them."""
    text = ('a<tool_call>{"foo": 1}</tool_call>b<tool_call>{"name": "f"}</tool_call>'
            '<tool_call>{"name": "g", "arguments": {"x": [1, 2]}}</tool_call>c')
    pieces = [text[i:i + 3] for i in range(0, len(text), 3)]
    ref = ToolParser.create("hermes")
    reference = [ref.feed(p) for p in pieces]
    expected = [without_generated_ids(d) for d in reference]
    first, second = ToolParser.create("hermes"), ToolParser.create("hermes")
    got = [without_generated_ids(d) for d in first.feed_batch(*join_deltas(pieces))]
    assert got == expected
    both = feed_batches([(second, *join_deltas(pieces[:20])), (ToolParser.create("kimi_k2"), "x", [1])])
    assert [without_generated_ids(d) for d in both[0]] == expected[:20]
    assert [without_generated_ids(d) for d in second.feed_batch(*join_deltas(pieces[20:]))] == expected[20:]
    content, calls = collect(reference)
    assert content == 'a{"foo": 1}bc' and [(c.name, c.arguments) for c in calls] == [("f", "{}"), ("g", '{"x":[1,2]}')]


def test_batch_records_are_columnar():
    parser = ToolParser.create("kimi_k2", TOOLS)
    pieces = ["hi ", "<|tool_calls_section_begin|><|tool_call_begin|>functions.search:0", "<|tool_call_argument_begin|>",
              '{"q": ', '"x"}', "<|tool_call_end|><|tool_calls_section_end|>"]
    batch = parser.feed_batch(*join_deltas(pieces))
    assert isinstance(batch, ToolBatch) and len(batch) == 6
    assert batch.content == "hi " and list(batch.content_ends) == [3, 3, 3, 3, 3, 3]
    # a call goes out whole, in the delta where it closed
    assert [(d, h.index, h.id, h.name) for d, h in batch.headers] == [(5, 0, "functions.search:0", "search")]
    assert batch.arguments == '{"q": "x"}' and list(batch.piece_delta) == [5] and list(batch.piece_end) == [10]
    assert batch[5].calls == (ToolCallDelta(0, "functions.search:0", "search", '{"q": "x"}'),)
    assert not any(batch[i].calls for i in range(5))
    assert batch[-1] == batch[5] and batch[0].content == "hi "
    reasoning = ReasoningParser.create("qwen3").feed_batch("<think>ab</think>cd", array("q", [9, 17, 19]))
    assert isinstance(reasoning, ReasoningBatch)
    assert (reasoning.reasoning, reasoning.content) == ("ab", "cd")
    assert [tuple(d) for d in reasoning] == [("ab", ""), ("", ""), ("", "cd")]
    with pytest.raises(IndexError):
        reasoning[3]


@pytest.mark.parametrize("make", [lambda: ReasoningParser.create("qwen3"), lambda: ToolParser.create("deepseek_v3"),
                                  lambda: ToolParser.create("hermes")])
def test_bad_batches_are_typed_errors(make):
    parser = make()
    for text, ends in [("abc", [1, 2]), ("abc", [2, 1, 3]), ("abc", [-1, 3]), ("abc", ["x"]), (b"abc", [3]),
                       ("abc", [1, 4])]:
        with pytest.raises(ParseError):
            parser.feed_batch(text, ends)
    assert len(parser.feed_batch("", [])) == 0
    parser.finish()
    with pytest.raises(ParseError):
        parser.feed_batch("a", [1])


@given(data=st.data())
@settings(max_examples=100, deadline=None)
def test_feed_batches_equals_feed_batch_per_parser(data):
    """Several streams in one call (compiled and Python parsers mixed) give each stream's own result."""
    jobs, refs = [], []
    for _ in range(data.draw(st.integers(0, 4))):
        name = data.draw(st.sampled_from(tool_parser_names()))
        text = data.draw(tool_fuzz_text(name))
        pieces = split(data, text, 12)
        jobs.append((ToolParser.create(name, TOOLS), *join_deltas(pieces)))
        refs.append((ToolParser.create(name, TOOLS), pieces))
        name = data.draw(st.sampled_from(reasoning_parser_names()))
        pieces = split(data, data.draw(reasoning_fuzz_text(name)), 12)
        jobs.append((ReasoningParser.create(name), *join_deltas(pieces)))
        refs.append((ReasoningParser.create(name), pieces))
    results = feed_batches(jobs)
    for (parser, _, _), (ref, pieces), batch in zip(jobs, refs, results):
        expected = [ref.feed(p) for p in pieces] + [ref.finish()]
        got = list(batch) + [parser.finish()]
        if hasattr(expected[0], "calls"):
            got, expected = [without_generated_ids(d) for d in got], [without_generated_ids(d) for d in expected]
        assert got == expected


def test_feed_batches_rejects_bad_jobs_and_leaves_every_parser_as_it_was():
    pieces = ["<think>a", "b</th", "ink>c"]
    good, bad = ReasoningParser.create("qwen3"), ToolParser.create("kimi_k2")
    good.feed(pieces[0])
    with pytest.raises(ParseError):
        feed_batches([(good, *join_deltas(pieces[1:])), (bad, "abc", [1, 2])])
    with pytest.raises(ParseError):
        feed_batches([(good, *join_deltas(pieces[1:])), (good, "x", [1])])
    rest = feed_batches([(good, *join_deltas(pieces[1:])), (bad, "abc", [1, 3])])
    assert [tuple(d) for d in rest[0]] == [("b", ""), ("", "c")]
    assert [d.content for d in rest[1]] == ["a", "bc"]
    assert feed_batches([]) == []


def test_a_batch_closing_a_call_begun_before_it_leaves_no_arguments_behind():
    """A call opened before a batch and closed in it, the next call's header opened at the batch's
    end: the first call's arguments must not carry into the second (found by hypothesis; the
    second call was dropped)."""
    text = ('<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{'
            '"city": "Paris"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>'
            'function<｜tool▁sep｜>search\n```json\n{"q": "x"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>')
    first = text.index("{") + 1
    second = text.index("function<｜tool▁sep｜>search")
    parser = ToolParser.create("deepseek_v3", TOOLS)
    deltas = [parser.feed(text[:first]), *parser.feed_batch(*join_deltas([text[first:second]])),
              parser.feed(text[second:]), parser.finish()]
    calls = [(c.name, c.arguments) for d in deltas for c in d.calls]
    assert calls == [("get_weather", '{"city": "Paris"}'), ("search", '{"q": "x"}')]
