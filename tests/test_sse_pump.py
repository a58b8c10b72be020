"""The plain-choice pump (compiled == twin): JSON escaping as msgspec's, events as the pipeline's."""
import importlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import kernel_variants
from smg._ext import sse_pump_py as twin

HEAD, FIRST, TAIL = b'data: {"choices":[{"delta":{"content":', b'data: {"role":1,"content":', b"}}]}\n\n"


@pytest.fixture(scope="module", params=kernel_variants("sse_pump"))
def pump_impl(request):
    """The pump with the stop kernel it calls: compiled with compiled, twin with twin."""
    compiled = not request.param.endswith("_py")
    stop = importlib.import_module("smg._ext.stop_matcher" if compiled else "smg._ext.stop_matcher_py")
    return importlib.import_module(request.param), stop


def checker(stop_kernel, stop=(), stop_ids=(), min_tokens=0, max_tokens=0, include=False):
    automaton = stop_kernel.StopAutomaton(list(stop)) if stop else None
    return stop_kernel.StopChecker(tuple(stop), frozenset(stop_ids), min_tokens, max_tokens, include, automaton)


@given(text=st.text())
@settings(max_examples=500, deadline=None)
def test_json_string_is_msgspecs(pump_impl, text):
    assert pump_impl[0].json_string(text) == msgspec.json.encode(text)


def test_json_string_escapes_every_control_character(pump_impl):
    text = "".join(map(chr, range(0x80))) + "\u2028é😀\"\\"
    assert pump_impl[0].json_string(text) == msgspec.json.encode(text)


def run_pump(impl, stop_kernel, tokenizer, messages, **stop):
    """Events and final state of a pump fed ``messages`` (lists of ids)."""
    pump = impl.PlainPump(tokenizer.decode_stream(skip_special_tokens=True), checker(stop_kernel, **stop),
                          FIRST, HEAD, TAIL)
    events = [pump.feed(ids) for ids in messages if not pump.finished]
    return events, (pump.started, pump.tokens, pump.finished, pump.finish_reason, pump.matched, pump.text)


def expected(tokenizer, stop_kernel, messages, **stop):
    """The same through the pipeline's own steps: detokenizer, stop checker, one event per message."""
    detok, rules = tokenizer.decode_stream(skip_special_tokens=True), checker(stop_kernel, **stop)
    events, started, tokens = [], False, 0
    for ids in messages:
        released = ""
        for token_id in ids:
            tokens += 1
            delta = rules.step(token_id, detok.step(token_id))
            released += delta.text
            if delta.finished:
                events.append(None)
                return events, (started, tokens, True, delta.finish_reason, delta.matched_stop, released)
        events.append((HEAD if started else FIRST) + msgspec.json.encode(released) + TAIL if released else None)
        started = started or bool(released)
    return events, (started, tokens, False, None, None, "")


TEXT = 'Plain "quoted" text,\na tab\there, a back\\slash, é, 日本, 😀 and a STOP word, then more.'


@given(cuts=st.lists(st.integers(0, 60), max_size=12), stop=st.sampled_from([(), ("STOP",), ("ta", "\n")]),
       max_tokens=st.sampled_from([0, 5, 17]), stop_id=st.booleans(), include=st.booleans())
@settings(max_examples=200, deadline=None)
def test_pump_events_are_the_pipelines(pump_impl, llama, cuts, stop, max_tokens, stop_id, include):
    impl, stop_kernel = pump_impl
    ids = llama.encode(TEXT, add_special_tokens=False)
    bounds = sorted({0, len(ids), *(c for c in cuts if c < len(ids))})
    messages = [ids[a:b] for a, b in zip(bounds, bounds[1:])]
    rules = dict(stop=stop, max_tokens=max_tokens, include=include, stop_ids=(ids[20],) if stop_id else ())
    assert run_pump(impl, stop_kernel, llama, messages, **rules) == expected(llama, stop_kernel, messages, **rules)


def test_compiled_equals_twin_on_split_characters(pump_impl, deepseek):
    """Emoji and CJK split across tokens: an event only once a character is whole."""
    impl, stop_kernel = pump_impl
    text = "😀😀 日本語のテキスト 🎉"
    ids = deepseek.encode(text, add_special_tokens=False)
    messages = [[i] for i in ids]
    got = run_pump(impl, stop_kernel, deepseek, messages)
    assert got == run_pump(twin, importlib.import_module("smg._ext.stop_matcher_py"), deepseek, messages)
    events = [e for e in got[0] if e]
    assert all(e.startswith(FIRST if k == 0 else HEAD) and e.endswith(TAIL) for k, e in enumerate(events))
    texts = [msgspec.json.decode(e[len(FIRST if k == 0 else HEAD):-len(TAIL)]) for k, e in enumerate(events)]
    assert len(events) < len(ids)  # some tokens held a partial character back
    assert "".join(texts) == text and not any("\ufffd" in t for t in texts)


def test_a_detokenizer_without_a_kernel_is_called_through_step(pump_impl):
    class Letters:  # any object with step(id) -> str
        def step(self, token_id):
            return chr(ord("a") + token_id % 26)

    impl, stop_kernel = pump_impl
    pump = impl.PlainPump(Letters(), checker(stop_kernel, max_tokens=4), FIRST, HEAD, TAIL)
    assert pump.feed([0, 1]) == FIRST + b'"ab"' + TAIL
    assert pump.feed(iter([2])) == HEAD + b'"c"' + TAIL  # any iterable of ids
    assert pump.feed([3, 4]) is None and (pump.finished, pump.finish_reason, pump.text, pump.tokens) == (
        True, "length", "d", 4)
    assert pump.feed([5]) is None and (pump.tokens, pump.text) == (4, "d")  # ended: nothing more


@given(cuts=st.lists(st.integers(0, 60), max_size=12), stop=st.sampled_from([(), ("STOP",), ("ta", "\n")]))
@settings(max_examples=100, deadline=None)
def test_feed_text_is_the_text_of_feeds_events(pump_impl, llama, cuts, stop):
    impl, stop_kernel = pump_impl
    ids = llama.encode(TEXT, add_special_tokens=False)
    bounds = sorted({0, len(ids), *(c for c in cuts if c < len(ids))})
    pumps = [impl.PlainPump(llama.decode_stream(), checker(stop_kernel, stop=stop), FIRST, HEAD, TAIL)
             for _ in range(2)]
    for a, b in zip(bounds, bounds[1:]):
        first = not pumps[0].started
        event, text = pumps[0].feed(ids[a:b]), pumps[1].feed_text(ids[a:b])
        assert event == (None if text is None else (FIRST if first else HEAD) + msgspec.json.encode(text) + TAIL)
    state = [(p.started, p.tokens, p.finished, p.finish_reason, p.matched, p.text) for p in pumps]
    assert state[0] == state[1]
