"""Stop strings (streaming == one-shot, compiled == twin) and the request-level stop rules."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg._ext import stop_matcher_py as twin
from smg.errors import InvalidRequest
from smg.stop import StopDelta, StopParams

ALPHABET = "ab \né😀日"
patterns = st.lists(st.text(ALPHABET, min_size=1, max_size=6), min_size=1, max_size=8)
texts = st.text(ALPHABET, max_size=80)


def chunked(text, cuts):
    pieces, start = [], 0
    for cut in sorted(cuts):
        pieces.append(text[start:cut])
        start = max(start, cut)
    return pieces + [text[start:]]


def run_stream(impl, stop, include, pieces):
    matcher = impl.StopStringMatcher(impl.StopAutomaton(stop), include)
    out = []
    for piece in pieces:
        released, index = matcher.feed(piece)
        out.append(released)
        if index >= 0:
            return "".join(out), index, out
    out.append(matcher.finish())
    return "".join(out), -1, out


@given(stop=patterns, text=texts, cuts=st.lists(st.integers(0, 80), max_size=10), include=st.booleans())
@settings(max_examples=500, deadline=None)
def test_streaming_equals_one_shot(stop_impl, stop, text, cuts, include):
    expected = twin.find_stop(text, stop, include)
    got_text, got_index, _ = run_stream(stop_impl, stop, include, chunked(text, cuts))
    assert (got_text, got_index) == expected


@given(stop=patterns, text=texts, cuts=st.lists(st.integers(0, 80), max_size=10))
@settings(max_examples=300, deadline=None)
def test_compiled_equals_twin_per_delta(stop_impl, stop, text, cuts):
    pieces = chunked(text, cuts)
    assert run_stream(stop_impl, stop, False, pieces)[2] == run_stream(twin, stop, False, pieces)[2]


@given(stop=patterns, text=texts)
@settings(max_examples=300, deadline=None)
def test_held_text_is_only_a_possible_stop_prefix(stop_impl, stop, text):
    matcher = stop_impl.StopStringMatcher(stop_impl.StopAutomaton(stop))
    _, index = matcher.feed(text)
    if index < 0 and matcher.held:
        assert any(p.startswith(matcher.held) for p in stop)
        # ...and the longest such suffix: nothing longer could still become a stop string.
        longer = text[-len(matcher.held) - 1:] if len(text) > len(matcher.held) else None
        assert longer is None or not any(p.startswith(longer) for p in stop)


def test_earliest_end_then_longest():
    assert twin.find_stop("xabcd", ["bcd", "abc", "c"], False) == ("x", 1)
    assert twin.find_stop("xabcd", ["bcd", "c"], False) == ("xab", 1)
    assert twin.find_stop("xabcd", ["bc", "abc"], False) == ("x", 1)
    assert twin.find_stop("xabcd", ["bc", "abc"], True) == ("xabc", 1)


def test_empty_stop_string_rejected(stop_impl):
    with pytest.raises(ValueError):
        stop_impl.StopAutomaton(["ok", ""])


# ---- request-level rules ------------------------------------------------------------------------

EOS = 2


def drive(params, steps, eos=(EOS,)):
    checker = params.checker(eos)
    out = []
    for token_id, text in steps:
        delta = checker.step(token_id, text)
        out.append(delta.text)
        if delta.finished:
            return "".join(out), delta
    last = checker.finish()
    return "".join(out) + last.text, last


def test_eos_stops_and_is_dropped():
    text, delta = drive(StopParams(), [(5, "Hello"), (6, " world"), (EOS, "</s>"), (7, "never")])
    assert (text, delta.finish_reason, delta.matched_stop) == ("Hello world", "stop", EOS)


def test_ignore_eos_and_stop_token_ids():
    text, delta = drive(StopParams(ignore_eos=True, stop_token_ids=(9,)), [(5, "a"), (EOS, "b"), (9, "c"), (7, "d")])
    assert (text, delta.matched_stop) == ("ab", 9)
    text, delta = drive(StopParams(stop_token_ids=(9,), include_stop_str_in_output=True), [(5, "a"), (9, "<x>")])
    assert text == "a<x>"


def test_stop_string_spanning_tokens_and_holdback():
    checker = StopParams(stop=("</answer>",)).checker()
    assert checker.step(5, "The answer is 4.<").text == "The answer is 4."
    assert checker.step(6, "/ans").text == ""
    delta = checker.step(7, "wer> trailing")
    assert delta == StopDelta("", True, "stop", "</answer>")
    assert checker.step(8, "more") == StopDelta("", True, "stop", "</answer>")


def test_false_start_is_released():
    checker = StopParams(stop=("STOP",)).checker()
    assert checker.step(1, "ST").text == ""
    assert checker.step(2, "ART").text == "START"


def test_max_tokens_length_releases_held_text():
    text, delta = drive(StopParams(stop=("xyz",), max_tokens=2), [(1, "a"), (3, "bx"), (4, "yz")])
    assert (text, delta.finish_reason, delta.matched_stop) == ("abx", "length", None)


def test_min_tokens_defers_every_stop():
    params = StopParams(stop=("!",), min_tokens=3)
    text, delta = drive(params, [(1, "a!"), (EOS, "b"), (3, "c!"), (4, "d")])
    assert (text, delta.matched_stop) == ("a!bc", "!")
    text, delta = drive(StopParams(min_tokens=2), [(EOS, "x"), (EOS, "y")])
    assert (text, delta.matched_stop) == ("x", EOS)


def test_stop_beats_length_on_the_same_token():
    text, delta = drive(StopParams(stop=("b",), max_tokens=2), [(1, "a"), (3, "bc")])
    assert (text, delta.finish_reason) == ("a", "stop")


def test_engine_finish_releases_and_can_still_match():
    checker = StopParams(stop=("end",)).checker()
    assert checker.step(1, "the en").text == "the "
    assert checker.finish("d!") == StopDelta("", True, "stop", "end")
    checker = StopParams(stop=("end",)).checker()
    checker.step(1, "the en")
    assert checker.finish("") == StopDelta("en")


@pytest.mark.parametrize("kwargs", [
    {"stop": ("",)}, {"stop": (3,)}, {"stop_token_ids": (-1,)}, {"max_tokens": 0}, {"min_tokens": -1},
    {"min_tokens": 5, "max_tokens": 2}, {"max_tokens": True},
])
def test_invalid_params_are_typed(kwargs):
    with pytest.raises(InvalidRequest):
        StopParams(**kwargs)


def test_single_string_stop_is_accepted():
    assert StopParams(stop="x").stop == ("x",)


@given(stop=st.lists(st.text(ALPHABET, min_size=1, max_size=4), max_size=4), data=st.data())
@settings(max_examples=300, deadline=None)
def test_checker_compiled_equals_twin(stop_impl, stop, data):
    steps = data.draw(st.lists(st.tuples(st.integers(0, 6), st.text(ALPHABET, max_size=5)), max_size=20))
    min_tokens = data.draw(st.integers(0, 4))
    max_tokens = data.draw(st.integers(0, 12))
    include = data.draw(st.booleans())

    def run(impl):
        automaton = impl.StopAutomaton(stop) if stop else None
        checker = impl.StopChecker(tuple(stop), frozenset({2, 5}), min_tokens, max_tokens, include, automaton)
        return [tuple(checker.step(i, t)) for i, t in steps] + [tuple(checker.finish("x"))]

    assert run(stop_impl) == run(twin)
