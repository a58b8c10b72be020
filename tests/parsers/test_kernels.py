"""The parser kernels: JSON value-end and Python-literal scanners, marker splitting; compiled == twin."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg._ext import json_scan_py as json_twin
from smg._ext import stop_matcher_py as marker_twin

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=10)


@given(value=json_values, tail=st.text(max_size=10), cuts=st.lists(st.integers(0, 200), max_size=6))
@settings(max_examples=400, deadline=None)
def test_json_scanner_finds_the_end_whatever_the_chunks(json_scan_impl, value, tail, cuts):
    text = "  " + json.dumps(value, ensure_ascii=False) + " ,x" + tail
    ends = []
    for impl in (json_scan_impl, json_twin):
        scanner, start, end = impl.JsonScanner(), 0, -1
        for cut in sorted(cuts) + [len(text)]:
            piece = text[start:max(start, cut)]
            found = scanner.feed(piece)
            if found >= 0:
                end = start + found
                break
            start = max(start, cut)
        ends.append(end)
    assert ends[0] == ends[1]
    assert json.loads(text[:ends[0]]) == value


@pytest.mark.parametrize("scanner, fields, alphabet", [
    ("JsonScanner", ("depth", "in_string", "escape", "done"), '{}[]"\\ ab,é'),
    ("BracketScanner", ("depth", "quote", "escape", "done"), "[](){}'\"\\ a,é"),
])
@given(data=st.data())
@settings(max_examples=400, deadline=None)
def test_scanners_match_twin_on_any_text(json_scan_impl, scanner, fields, alphabet, data):
    text = data.draw(st.text(st.sampled_from(alphabet), max_size=40))
    a, b = getattr(json_scan_impl, scanner)(), getattr(json_twin, scanner)()
    assert a.feed(text) == b.feed(text)
    assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields]


@given(source=st.sampled_from(["[f(a=1), g(b='x')]", '[f(s="a]b\\"c", t=[1, (2, 3)], u={"k": "}"})]']),
       tail=st.text(max_size=5), cuts=st.lists(st.integers(0, 60), max_size=5))
@settings(max_examples=200, deadline=None)
def test_bracket_scanner_ends_where_the_literal_ends(json_scan_impl, source, tail, cuts):
    text, scanner, start = source + tail, json_scan_impl.BracketScanner(), 0
    for cut in sorted(cuts) + [len(text)]:
        found = scanner.feed(text[start:max(start, cut)])
        if found >= 0:
            assert start + found == len(source)
            return
        start = max(start, cut)
    raise AssertionError("the literal's end was not found")


@given(markers=st.lists(st.text("<>/ab😀", min_size=1, max_size=4), min_size=1, max_size=5),
       text=st.text("<>/ab😀x", max_size=40))
@settings(max_examples=400, deadline=None)
def test_marker_split_matches_twin(stop_impl, markers, text):
    ours = stop_impl.StopStringMatcher(stop_impl.StopAutomaton(markers))
    ref = marker_twin.StopStringMatcher(marker_twin.StopAutomaton(markers))
    rest_a = rest_b = text
    while True:
        a, b = ours.split(rest_a), ref.split(rest_b)
        assert a == b
        if a[1] < 0 or not a[2]:
            break
        rest_a, rest_b = a[2], b[2]
    assert ours.finish() == ref.finish()


def test_records_from_the_kernels_hold_no_extra_reference():
    """A record built in C must be owned by its caller alone (an extra reference leaked every
    delta: memory grew with every token streamed)."""
    import sys

    from smg.parsers import ReasoningParser, ToolParser, join_deltas
    from smg.stop import StopParams

    def owned_by_caller(record):
        assert any(record)  # not the shared empty record
        return sys.getrefcount(record) == 3  # the caller's name, the argument, getrefcount's own

    reasoning = ReasoningParser.create("qwen3")
    assert owned_by_caller(reasoning.feed("<think>a</thi"))
    assert owned_by_caller(reasoning.finish())  # the held "</thi"
    for name, text in [("kimi_k2", "x<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{}"
                                   "<|tool_call_end|>"),
                       ("hermes", 'x<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>')]:
        parser = ToolParser.create(name)
        delta = parser.feed(text)
        assert owned_by_caller(delta) and delta.calls and all(sys.getrefcount(c) == 3 for c in delta.calls)  # the tuple, c, the argument
        assert owned_by_caller(parser.feed_batch(*join_deltas(["a", "b<"])))
    checker = StopParams(stop=["zz"]).checker()
    assert owned_by_caller(checker.step(5, "a"))
