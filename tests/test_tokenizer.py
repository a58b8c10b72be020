"""Tokenizer loading, encode/decode against the backend and transformers, and bad input."""
import json
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.config import CacheConfig
from smg.errors import SmgError, TokenizerError, TokenizerLoadError
from smg.tokenizer import Tokenizer


def test_from_file_and_from_dir_agree(llama_dir):
    a = Tokenizer.from_file(llama_dir / "tokenizer.json")
    b = Tokenizer.from_dir(llama_dir)
    assert a.encode("Hello world") == b.encode("Hello world") == [9906, 1917]
    assert a.vocab_size == b.vocab_size == 128256 + 1


def test_tokenizers_of_one_file_share_what_it_builds_and_keep_their_own_state(tmp_path, llama_dir):
    """Several models of one family (or an engine beside its gateway) load a file once; what each
    model's config changes, and each one's cache, stay its own; the shared part goes with the last."""
    import gc

    from smg.tokenizer.tokenizer import _TokenizerFile

    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(llama_dir / name, tmp_path / name)
    with open(tmp_path / "tokenizer.json", "a") as file:  # a text no other test's tokenizer holds
        file.write(" ")
    a = Tokenizer.from_dir(tmp_path)
    b = Tokenizer.from_file(tmp_path / "tokenizer.json")
    assert a.backend is b.backend and a._file is b._file
    a.warm_up()
    assert a._file.fast_encoder is not None and b.fast_encoder_reason is None  # built once, for both
    assert a.encode("Hello world") == b.encode("Hello world") == [9906, 1917]
    assert a.cache_info().l0_misses == 1 and b.cache_info().l0_misses == 1  # each its own cache
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    shutil.copy(tmp_path / "tokenizer.json", other_dir)
    assert config["clean_up_tokenization_spaces"] is True
    (other_dir / "tokenizer_config.json").write_text(json.dumps({**config, "clean_up_tokenization_spaces": False}))
    c = Tokenizer.from_dir(other_dir)  # the same file, another config: its own detokenizer
    assert c.backend is a.backend and c._detokenizers is not a._detokenizers
    assert a.decode(a.encode("a , b")) == "a, b" and c.decode(c.encode("a , b")) == "a , b"
    with open(tmp_path / "tokenizer.json", "a") as file:  # another text: loaded apart
        file.write("\n")
    d = Tokenizer.from_dir(tmp_path)
    assert d.backend is not a.backend and d.encode("Hello world") == [9906, 1917]
    loaded = len(_TokenizerFile._loaded)
    del a, b, c
    gc.collect()
    assert len(_TokenizerFile._loaded) == loaded - 1


def test_properties(llama, deepseek):
    assert llama.eos_token_ids == [llama.token_to_id("<|end_of_text|>")]
    assert "<|eot_id|>" in llama.special_tokens and "<|begin_of_text|>" in llama.special_tokens
    assert llama.special_tokens_map["bos_token"] == "<|begin_of_text|>"
    assert deepseek.special_tokens_map["eos_token"] == "<｜end▁of▁sentence｜>"
    assert deepseek.eos_token_ids == [deepseek.token_to_id("<｜end▁of▁sentence｜>")]
    assert llama.is_special_id(128009) and not llama.is_special_id(9906)


def test_eos_ids_from_generation_config(tmp_path, llama_dir):
    shutil.copy(llama_dir / "tokenizer.json", tmp_path)
    shutil.copy(llama_dir / "tokenizer_config.json", tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [128001, 128008, 128009]}))
    assert Tokenizer.from_dir(tmp_path).eos_token_ids == [128001, 128008, 128009]


@pytest.mark.parametrize("content, match", [
    (None, "no tokenizer"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"model": {"type": "Nonsense"}}', "not a valid tokenizer.json"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_load_errors(tmp_path, content, match):
    path = tmp_path / "tokenizer.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(TokenizerLoadError, match=match):
        Tokenizer.from_file(path)
    with pytest.raises(TokenizerLoadError):
        Tokenizer.from_dir(tmp_path / "missing")


def test_corrupt_config_is_a_load_error(tmp_path, llama_dir):
    shutil.copy(llama_dir / "tokenizer.json", tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{")
    with pytest.raises(TokenizerLoadError, match="tokenizer_config.json"):
        Tokenizer.from_dir(tmp_path)


def test_errors_are_smg_errors_with_status():
    assert issubclass(TokenizerError, SmgError) and TokenizerError("x").status_code == 400
    assert TokenizerError("bad").to_openai()["error"]["type"] == "invalid_request_error"


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)


@given(text=texts)
@settings(max_examples=150, deadline=None)
def test_encode_equals_backend(real_tokenizer, text):
    assert real_tokenizer.encode(text) == real_tokenizer.backend.encode(text, add_special_tokens=False).ids
    assert real_tokenizer.encode(text, add_special_tokens=True) == real_tokenizer.backend.encode(text).ids


def test_encode_batch(real_tokenizer):
    batch = ["a b c", "", "a b c", "<|eot_id|>x", "日本語 😀"]
    assert real_tokenizer.encode_batch(batch) == [real_tokenizer.backend.encode(t, add_special_tokens=False).ids
                                                  for t in batch]


def test_returned_ids_are_private_copies(real_tokenizer):
    first = real_tokenizer.encode("copy me please")
    first.append(-1)
    assert real_tokenizer.encode("copy me please")[-1] != -1


def test_decode_matches_transformers(llama_dir, deepseek_dir):
    from transformers import PreTrainedTokenizerFast

    for directory in (llama_dir, deepseek_dir):
        ours = Tokenizer.from_dir(directory)
        config = json.loads((directory / "tokenizer_config.json").read_text())
        theirs = PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"),
                                         clean_up_tokenization_spaces=config.get("clean_up_tokenization_spaces", False))
        text = "Hello , world ! I 'm here , aren 't I ? 日本語😀 <|eot_id|> done ."
        ids = ours.encode(text)
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["nested"]])
def test_non_str_input_is_typed_error(llama, bad):
    with pytest.raises(TokenizerError):
        llama.encode(bad)


def test_lone_surrogate_is_typed_error_and_cache_unharmed(llama):
    before = llama.encode("<|eot_id|>fine")
    with pytest.raises(TokenizerError):
        llama.encode("<|eot_id|>bad \ud800 text")
    with pytest.raises(TokenizerError):
        llama.encode("no special \udfff")
    assert llama.encode("<|eot_id|>fine") == before


def test_empty_input(llama):
    assert llama.encode("") == []


@pytest.mark.compiled_only  # 10 MB through the pure-Python BPE takes ~25 s; the twins agree on small inputs
def test_huge_input(llama_dir):
    big = ("All work and no play makes a model dull. <|eot_id|>" * 200_000)[: 10_000_000]
    small = Tokenizer.from_dir(llama_dir, cache=CacheConfig(l0_max_bytes=1 << 20, l1_max_bytes=1 << 20))
    ids = small.encode(big)
    assert ids == small.backend.encode_batch([big], add_special_tokens=False)[0].ids
    info = small.cache_info()
    assert info.l0_bytes <= 1 << 20 and info.l1_bytes <= 1 << 20  # too big to cache, not truncated


def test_decode_bad_ids(llama):
    with pytest.raises(TokenizerError):
        llama.decode([-1])
    assert llama.decode([10**9]) == ""
