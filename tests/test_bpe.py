"""smg's byte-level BPE encoder (``smg._ext.bpe`` and its twin) gives tokenizers' ids exactly."""
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as Backend

from smg._ext import bpe_py
from smg.tokenizer.detokenizer import byte_level_alphabet
from smg.tokenizer.fast_encoder import build_fast_encoder


def _raw(directory):
    return json.loads((directory / "tokenizer.json").read_text())


@pytest.fixture(scope="session")
def llama_raw(llama_dir):
    return _raw(llama_dir)


@pytest.fixture(scope="session", params=["llama3.2", "deepseek"])
def case(request, llama_dir, deepseek_dir):
    """(tokenizers' backend, the kernel's constructor arguments) of a shipped tokenizer."""
    directory = {"llama3.2": llama_dir, "deepseek": deepseek_dir}[request.param]
    raw, char_of = _raw(directory), {b: char for char, b in byte_level_alphabet().items()}
    vocab = raw["model"]["vocab"]
    merges = [(vocab[a], vocab[b], vocab[a + b]) for a, b in (m.split(" ", 1) for m in raw["model"]["merges"])]
    tokens = raw["added_tokens"]
    added = [(t["content"], t["id"]) for t in tokens if not t["normalized"]]
    normalized = [(t["content"], t["id"]) for t in tokens if t["normalized"]]
    scheme = "cl100k" if request.param == "llama3.2" else "deepseek"
    backend = Backend.from_file(str(directory / "tokenizer.json"))
    return backend, ([vocab[char_of[b]] for b in range(256)], merges, added, normalized, scheme)


@pytest.fixture(scope="session")
def backend(case):
    return case[0]


@pytest.fixture(scope="session")
def encoder(bpe_impl, case):
    return bpe_impl.ByteLevelBPE(*case[1])


def reference(backend, text):
    return backend.encode(text, add_special_tokens=False).ids


TEXTS = [
    "",
    "Hello, world! It's a test: 12345 + 6.7e-8 = x's; WE'LL see.\n\n  indented\tcode()\r\n",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n\n\n\tpass\r\n\r\n",
    "déjà vu — naïve café; 東京タワーは高い。 🤖🚀👩‍👩‍👧 ٣٤٥ ⅷ ½  \u00a0\u2028\u3000 end  ",
    "'S 'Re 'LL 'd's don't 'ſ 'x '' 'RE've''ll",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>",
    "<|eot_id|<|eot_id|>>|<|reserved_special_token_0|>x",
    "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>x</think><|EOT|><｜fim▁hole｜><｜tool▁calls▁begin｜>",
    "東京タワーは高い・ゲーム〜ヽ゛ 中文。한국어 1234567 ½ Ⅷ x-ray $5 'quote' e\u0301 --flag",
    "   \n   \n\n  x  \t\t \r\n\r y \x0b\x0c\x85 z   ",
    "a" * 300,  # pieces past 64 bytes merge through the heap
    "supercalifragilisticexpialidocious" * 12 + " " + "ё" * 100,
    "1234567890" * 5 + "١٢٣٤٥٦" + "𝟙𝟚𝟛",
    "x" + "\u0301" * 40 + "\u200d\ufe0f" * 10,
]


@pytest.mark.parametrize("text", TEXTS)
def test_known_texts(encoder, backend, text):
    assert encoder.encode(text) == reference(backend, text)


def test_batch_and_long_text(encoder, backend):
    long_text = " ".join(TEXTS) * 40  # past the size where the kernel releases the GIL
    assert encoder.encode_batch([long_text, "", "a b"]) == [reference(backend, t) for t in (long_text, "", "a b")]


ALPHABET = list("aZé ёx'sStTmMdDrReEvVlL \t\n\r0123456789.,;!?()[]{}<|>_-+=/\\\"") + [
    "ſ", "東", "タ", "🤖", "\u0301", "\u00a0", "\u3000", "\u2028", "\x85", "\x0b", "٣", "½", "Ⅷ", "\u200d",
    "<|eot_id|>", "<|begin_of_text|>", "'ll", "'re", "'ve", "   ", "\r\n", "  \n",
    "<｜User｜>", "<｜Assistant｜>", "<|EOT|>", "・", "ー", "゛", "$", "-", "`"]


@given(st.lists(st.sampled_from(ALPHABET), max_size=80).map("".join))
@settings(max_examples=400, deadline=None)
def test_matches_tokenizers(encoder, backend, text):
    assert encoder.encode(text) == reference(backend, text)


@given(st.text(max_size=60))
@settings(max_examples=300, deadline=None)
def test_matches_tokenizers_on_any_text(encoder, backend, text):
    try:
        expected = reference(backend, text)
    except Exception:  # lone surrogates: tokenizers refuses them, and so must we
        with pytest.raises(UnicodeEncodeError):
            encoder.encode(text)
        return
    assert encoder.encode(text) == expected


@pytest.mark.compiled_only
def test_every_code_point_splits_as_tokenizers(case):
    """Each code point in the probe's every rule: the classes table is Unicode 16.0, as Oniguruma's."""
    from smg._ext import bpe

    backend, args = case
    encoder = bpe.ByteLevelBPE(*args)
    points = [cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000]
    for start in range(0, len(points), 8192):
        probes = ["a{0}1{0}x{0}{0}x {0}'{0}\n{0}.{0}\u0301{0}{0} ".format(chr(cp)) for cp in points[start:start + 8192]]
        expected = [e.ids for e in backend.encode_batch(probes, add_special_tokens=False)]
        got = encoder.encode_batch(probes)
        if got != expected:
            bad = [hex(ord(p[1])) for p, g, e in zip(probes, got, expected) if g != e]
            pytest.fail(f"{len(bad)} code points split differently, e.g. {bad[:10]}")


def test_split_pieces_rules():
    assert bpe_py.split_pieces("Hello, world!  It's 12345\n\n  x") == [
        "Hello", ",", " world", "!", " ", " It", "'s", " ", "123", "45", "\n\n", " ", " x"]
    assert bpe_py.split_pieces("a   \n b") == ["a", "   \n", " b"]
    assert bpe_py.split_pieces("x  ") == ["x", "  "]


def test_fast_encoder_only_for_shapes_it_reproduces(llama_raw, llama_dir):
    backend = Backend.from_file(str(llama_dir / "tokenizer.json"))
    encoder, reason = build_fast_encoder(llama_raw, backend)
    assert encoder is not None and reason is None
    changed = json.loads(json.dumps(llama_raw))
    changed["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\s+|\S+"
    assert "not a known scheme" in build_fast_encoder(changed, backend)[1]
    changed = json.loads(json.dumps(llama_raw))
    changed["added_tokens"][0]["lstrip"] = True
    assert "matching options" in build_fast_encoder(changed, backend)[1]
    changed = json.loads(json.dumps(llama_raw))
    changed["normalizer"] = {"type": "NFC"}
    assert build_fast_encoder(changed, backend) == (None, "the tokenizer has a normalizer")
    changed = json.loads(json.dumps(llama_raw))
    changed["model"]["byte_fallback"] = True
    assert "byte_fallback" in build_fast_encoder(changed, backend)[1]


def test_self_check_refuses_a_file_that_differs(llama_raw, llama_dir):
    backend = Backend.from_file(str(llama_dir / "tokenizer.json"))
    # Two tokens' ids swapped: the shape is right but the ids differ from the backend's.
    changed = json.loads(json.dumps(llama_raw))
    vocab = changed["model"]["vocab"]
    vocab["Hello"], vocab["Ġworld"] = vocab["Ġworld"], vocab["Hello"]
    encoder, reason = build_fast_encoder(changed, backend)
    assert encoder is None and "self-check" in reason


def test_tokenizer_uses_it(real_tokenizer):
    assert real_tokenizer.fast_encoder_reason is None
    text = "A long prompt, 東京 12345. " * 2000
    assert real_tokenizer.encode(text) == real_tokenizer.backend.encode(text, add_special_tokens=False).ids


def test_threads_share_one_encoder(encoder, backend):
    """Long texts are encoded without the GIL: threads on one encoder get each their own ids."""
    from concurrent.futures import ThreadPoolExecutor

    texts = [(" ".join(TEXTS) + f" variant {i} ") * (20 + i) for i in range(8)]
    expected = [reference(backend, t) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            assert list(pool.map(encoder.encode, texts)) == expected


@pytest.fixture(scope="session")
def ignore_merges_case(llama_raw):
    """Llama 3.2 as Meta's own tokenizer.json has it: BPE ``ignore_merges`` (a piece that is one
    vocabulary token is that token, whatever the merges would make of it). (encoder, backend);
    the encoder is the compiled kernel's, or the twin's under SMG_NO_EXTENSIONS=1."""
    raw = json.loads(json.dumps(llama_raw))
    raw["model"]["ignore_merges"] = True
    backend = Backend.from_str(json.dumps(raw))
    encoder, reason = build_fast_encoder(raw, backend)
    assert reason is None
    return encoder, backend


def test_ignore_merges_is_honoured(ignore_merges_case):
    encoder, backend = ignore_merges_case
    assert backend.encode(" Việt", add_special_tokens=False).ids == [101798]  # merges alone give 3 tokens
    for text in TEXTS + [" Việt Nam", "ViệtViệt  Việt"]:
        assert encoder.encode(text) == reference(backend, text)


@given(st.lists(st.sampled_from(ALPHABET + [" Việt", "ệ", "ế"]), max_size=60).map("".join))
@settings(max_examples=200, deadline=None)
def test_ignore_merges_matches_tokenizers(ignore_merges_case, text):
    encoder, backend = ignore_merges_case
    assert encoder.encode(text) == reference(backend, text)
