"""Incremental detokenization equals one-shot decode, on every path and for every id sequence."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg._ext import detok_py as twin
from smg.errors import TokenizerError
from smg.tokenizer import Tokenizer

# ---- kernel: compiled == twin ------------------------------------------------------------------

UTF8_PIECES = [b"a", b" ", b"\xc3", b"\xa9", b"\xe2\x82", b"\xac", b"\xf0\x9f", b"\x98\x80", b"\xff",
               b"\xed\xa0", b"\xe0\x80", b"\xf4\x90", b"\x80", b"\xc3\xa9", b"", "日本".encode()]
token_tables = st.lists(st.lists(st.sampled_from(UTF8_PIECES), max_size=3).map(b"".join), min_size=1, max_size=12)


@given(table=token_tables, data=st.data())
@settings(max_examples=300, deadline=None)
def test_kernel_matches_twin_and_one_shot(detok_impl, table, data):
    special = data.draw(st.sets(st.integers(0, len(table) - 1), max_size=3))
    ids = data.draw(st.lists(st.integers(0, len(table) + 2), max_size=30))
    skip = data.draw(st.booleans())
    expected = b"".join(table[i] for i in ids if i < len(table) and not (skip and i in special))
    expected = expected.decode("utf-8", "replace")
    ours = detok_impl.ByteStreamDecoder(detok_impl.TokenTable(table, special), skip)
    reference = twin.ByteStreamDecoder(twin.TokenTable(table, special), skip)
    steps = [ours.step(i) for i in ids]
    assert steps == [reference.step(i) for i in ids]
    assert "".join(steps) + ours.finish() == expected
    batched = detok_impl.ByteStreamDecoder(detok_impl.TokenTable(table, special), skip)
    cut = data.draw(st.integers(0, len(ids)))
    assert batched.feed(ids[:cut]) + batched.feed(ids[cut:]) + batched.finish() == expected


def test_kernel_rejects_negative_ids(detok_impl):
    decoder = detok_impl.ByteStreamDecoder(detok_impl.TokenTable([b"a"], []), True)
    with pytest.raises(ValueError):
        decoder.step(-1)
    with pytest.raises(ValueError):
        decoder.feed([0, -5])


@given(buf=st.lists(st.sampled_from(UTF8_PIECES), max_size=4).map(b"".join))
@settings(max_examples=300, deadline=None)
def test_incomplete_tail_matches_twin(detok_impl, buf):
    keep = twin.incomplete_tail(buf)
    assert detok_impl.incomplete_tail(buf) == keep
    # Held bytes are exactly those a continuation could still complete into one character.
    assert (buf[: len(buf) - keep].decode("utf-8", "replace") + buf[len(buf) - keep:].decode("utf-8", "replace")
            == buf.decode("utf-8", "replace"))


# ---- real tokenizers ---------------------------------------------------------------------------

def stream(tokenizer, ids, skip=True, chunks=None, prompt_ids=None):
    decoder = tokenizer.decode_stream(skip_special_tokens=skip, prompt_ids=prompt_ids)
    if chunks is None:
        deltas = [decoder.step(i) for i in ids]
    else:
        deltas, start = [], 0
        for size in chunks:
            deltas.append(decoder.feed(ids[start:start + size]))
            start += size
        deltas.append(decoder.feed(ids[start:]))
    return deltas, decoder.finish()


def test_real_tokenizers_use_the_fast_table(real_tokenizer):
    assert real_tokenizer.detokenizer_fallback_reason is None
    assert real_tokenizer.decode_stream().uses_fast_path


@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_random_ids_stream_equals_decode(real_tokenizer, data):
    vocab = real_tokenizer.vocab_size
    special = sorted(real_tokenizer._special_ids)
    # Byte-level tokens 0-255 are mostly single bytes: they split multi-byte characters often.
    token = st.one_of(st.integers(0, 255), st.integers(0, vocab - 1), st.sampled_from(special))
    ids = data.draw(st.lists(token, max_size=60))
    skip = data.draw(st.booleans())
    deltas, tail = stream(real_tokenizer, ids, skip)
    assert "".join(deltas) + tail == real_tokenizer.decode(ids, skip_special_tokens=skip)
    chunks = data.draw(st.lists(st.integers(0, 8), max_size=10))
    deltas, tail = stream(real_tokenizer, ids, skip, chunks)
    assert "".join(deltas) + tail == real_tokenizer.decode(ids, skip_special_tokens=skip)


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=120) | st.lists(
    st.sampled_from(["日本語", "😀", "👩‍👩‍👧", "e\u0301", " .", " ,", "I 'm", " n't", " 's", "<|eot_id|>",
                     "<｜User｜>", "  ", "\n", "don't", "?"]), max_size=25).map("".join)


@given(text=texts, skip=st.booleans())
@settings(max_examples=150, deadline=None)
def test_encoded_text_streams_back(real_tokenizer, text, skip):
    ids = real_tokenizer.encode(text)
    deltas, tail = stream(real_tokenizer, ids, skip)
    assert "".join(deltas) + tail == real_tokenizer.decode(ids, skip_special_tokens=skip)
    if "\ufffd" not in text:  # (a text may hold U+FFFD itself)
        assert all("\ufffd" not in d for d in deltas), "a split character must be held, not replaced"


def test_split_emoji_is_held_until_complete(llama):
    ids = llama.encode("😀")
    assert len(ids) > 1  # the emoji is split over byte tokens
    decoder = llama.decode_stream()
    deltas = [decoder.step(i) for i in ids]
    assert deltas[:-1] == [""] * (len(ids) - 1) and deltas[-1] == "😀"


def test_invalid_bytes_render_as_decode_does(llama):
    lone_continuation = llama.token_to_id("\u0140")  # byte 0x9E: a lone UTF-8 continuation byte
    ids = [lone_continuation, llama.encode("x")[0]]
    deltas, tail = stream(llama, ids)
    assert "".join(deltas) + tail == llama.decode(ids) == "\ufffdx"
    truncated = llama.encode("😀")[:-1]
    deltas, tail = stream(llama, truncated)
    assert "".join(deltas) == "" and tail == llama.decode(truncated) == "\ufffd"


def test_prompt_context_completes_a_split_character(deepseek):
    ids = deepseek.encode("日本語で😀")
    for cut in range(1, len(ids)):
        prompt, generated = ids[:cut], ids[cut:]
        deltas, tail = stream(deepseek, generated, prompt_ids=prompt)
        full, head = deepseek.decode(ids), deepseek.decode(prompt)
        if not head.endswith("\ufffd"):
            assert "".join(deltas) + tail == full[len(head):]


def test_bad_ids_are_typed_errors(llama):
    with pytest.raises(TokenizerError):
        llama.decode_stream().step(-1)
    with pytest.raises(TokenizerError):
        llama.decode_stream().feed([1, -2])
    assert llama.decode_stream().step(10**9) == "" == llama.decode([10**9])


# ---- clean-up of tokenization spaces -----------------------------------------------------------

cleanup_text = st.lists(st.sampled_from([" ", ".", "?", "!", ",", "'", "n't", "'m", "'s", "ve", "re", "n", "t",
                                         "v", "e", "r", "m", "s", "a", "I", "x ' y", "  "]), max_size=40).map("".join)


@given(text=cleanup_text, cuts=st.lists(st.integers(0, 60), max_size=8))
@settings(max_examples=1000, deadline=None)
def test_cleanup_stage_is_chunking_invariant(detok_impl, text, cuts):
    stage, out, start = detok_impl.CleanupStage(), [], 0
    for cut in sorted(cuts):
        out.append(stage.feed(text[start:cut]))
        start = max(start, cut)
    out.append(stage.feed(text[start:]))
    assert "".join(out) + stage.finish() == twin.clean_up_tokenization(text)


@given(tokens=st.lists(cleanup_text, min_size=1, max_size=8), data=st.data())
@settings(max_examples=400, deadline=None)
def test_kernel_cleanup_matches_twin_and_one_shot(detok_impl, tokens, data):
    table = [t.encode() for t in tokens] + [b"\xe2\x82", b"\xac"]
    ids = data.draw(st.lists(st.integers(0, len(table) - 1), max_size=30))
    expected = twin.clean_up_tokenization(b"".join(table[i] for i in ids).decode("utf-8", "replace"))
    ours = detok_impl.ByteStreamDecoder(detok_impl.TokenTable(table, [], True))
    reference = twin.ByteStreamDecoder(twin.TokenTable(table, [], True))
    steps = [ours.step(i) for i in ids]
    assert steps == [reference.step(i) for i in ids]
    assert "".join(steps) + ours.finish() == expected
    batched = detok_impl.ByteStreamDecoder(detok_impl.TokenTable(table, [], True))
    cut = data.draw(st.integers(0, len(ids)))
    assert batched.feed(ids[:cut]) + batched.feed(ids[cut:]) + batched.finish() == expected


def test_llama_config_turns_cleanup_on(llama):
    assert llama.clean_up_tokenization_spaces
    ids = llama.encode("Hello , world ! I 'm fine .")
    deltas, tail = stream(llama, ids)
    assert "".join(deltas) + tail == llama.decode(ids) == "Hello, world! I'm fine."


# ---- general path ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sentencepiece(sentencepiece_dir):
    return Tokenizer.from_dir(sentencepiece_dir)


def test_sentencepiece_uses_general_path(sentencepiece):
    assert "Sequence" in sentencepiece.detokenizer_fallback_reason
    assert not sentencepiece.decode_stream().uses_fast_path


@given(text=st.text(st.sampled_from("the hello world .,'é日本😀 \n"), max_size=40), skip=st.booleans())
@settings(max_examples=150, deadline=None)
def test_general_path_stream_equals_decode(sentencepiece, text, skip):
    ids = [1] + sentencepiece.encode(text) + [2]
    deltas, tail = stream(sentencepiece, ids, skip)
    assert "".join(deltas) + tail == sentencepiece.decode(ids, skip_special_tokens=skip)
