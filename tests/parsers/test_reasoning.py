"""Reasoning parsers: examples per family, chunking invariance, fuzz."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.errors import InvalidRequest
from smg.parsers import ParseError, ReasoningDelta, ReasoningParser, reasoning_parser_names
from smg.parsers.reasoning import FORMATS

from .samples import REASONING_SAMPLES, split


def stream(name, pieces, in_reasoning=None):
    parser = ReasoningParser.create(name, in_reasoning=in_reasoning)
    deltas = [parser.feed(p) for p in pieces] + [parser.finish()]
    return "".join(d.reasoning for d in deltas), "".join(d.content for d in deltas)


@pytest.mark.parametrize("name, text, in_reasoning, reasoning, content", REASONING_SAMPLES)
def test_examples(name, text, in_reasoning, reasoning, content):
    assert ReasoningParser.create(name, in_reasoning=in_reasoning).parse(text) == ReasoningDelta(reasoning, content)
    assert stream(name, list(text), in_reasoning) == (reasoning, content)  # one character at a time


def test_every_family_has_an_example():
    assert {s[0] for s in REASONING_SAMPLES} == set(reasoning_parser_names())


@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_any_chunking_equals_one_shot(data):
    name, text, in_reasoning, _, _ = data.draw(st.sampled_from(REASONING_SAMPLES))
    pieces = split(data, text, 12)
    one = ReasoningParser.create(name, in_reasoning=in_reasoning).parse(text)
    assert stream(name, pieces, in_reasoning) == (one.reasoning, one.content)


def fuzz_text(name):
    markers = sorted({m for row in FORMATS[name].table for m, _, _ in row})
    pieces = markers + [m[: len(m) // 2] for m in markers] + ["a", " ", "\n", "😀", "<", "|", "think"]
    return st.lists(st.sampled_from(pieces), max_size=25).map("".join)


@given(data=st.data())
@settings(max_examples=400, deadline=None)
def test_fuzz_never_raises_and_keeps_text(data):
    name = data.draw(st.sampled_from(reasoning_parser_names()))
    text = data.draw(fuzz_text(name))
    in_reasoning = data.draw(st.sampled_from([None, True, False]))
    pieces = split(data, text)
    reasoning, content = stream(name, pieces, in_reasoning)
    one = ReasoningParser.create(name, in_reasoning=in_reasoning).parse(text)
    assert (reasoning, content) == (one.reasoning, one.content)
    assert len(reasoning) + len(content) <= len(text)


def test_misuse_is_typed():
    parser = ReasoningParser.create("qwen3")
    with pytest.raises(ParseError):
        parser.feed(b"bytes")
    parser.finish()
    with pytest.raises(ParseError):
        parser.feed("late")
    with pytest.raises(InvalidRequest):
        ReasoningParser.create("no-such-family")


def test_in_reasoning_reports_state():
    parser = ReasoningParser.create("qwen3")
    assert not parser.in_reasoning
    parser.feed("<think>")
    assert parser.in_reasoning
    parser.feed("x</think>")
    assert not parser.in_reasoning


@given(data=st.data())
@settings(max_examples=300, deadline=None)
def test_compiled_machine_equals_twin(reasoning_impl, data):
    from smg._ext import reasoning_scan_py as twin

    name = data.draw(st.sampled_from(reasoning_parser_names()))
    text = data.draw(fuzz_text(name))
    in_reasoning = data.draw(st.sampled_from([None, True, False]))
    pieces = split(data, text)
    ours, ref = reasoning_impl.ReasoningMachine(FORMATS[name], in_reasoning), twin.ReasoningMachine(
        FORMATS[name], in_reasoning)
    assert [tuple(ours.feed(p)) for p in pieces] == [tuple(ref.feed(p)) for p in pieces]
    assert tuple(ours.finish()) == tuple(ref.finish())
