"""The L0/L1 cache returns exactly what an uncached encode returns, for any input and history."""
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.config import CacheConfig
from smg.tokenizer import Tokenizer

LLAMA_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<|eom_id|>", "<|python_tag|>", "<|reserved_special_token_7|>", "<|finetune_right_pad_id|>"]
DEEPSEEK_SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
                     "<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<think>", "</think>",
                     "<｜place▁holder▁no▁3｜>"]
PIECES = ["system", "user", "assistant", "Hello", " world", "You are a helpful assistant.", "  ", " ", "\n",
          "\n\n", "\t", "\r\n", "é", "日本語", "😀", "👩‍👩‍👧", "e\u0301", "123456", "'s", "<|", "|>", "<|eot",
          "<｜", "｜>", "▁", "<", ">", "{\"a\": 1}", "    def f(x):\n        return x\n"]


def pieces_for(tokenizer):
    specials = LLAMA_SPECIALS if "<|eot_id|>" in tokenizer.special_tokens else DEEPSEEK_SPECIALS
    return st.lists(st.sampled_from(specials + PIECES), max_size=30).map("".join)


def uncached(tokenizer, text):
    return tokenizer.backend.encode(text, add_special_tokens=False).ids


@pytest.fixture(scope="module", params=["llama3.2", "deepseek"])
def fresh_dir(request, llama_dir, deepseek_dir):
    return {"llama3.2": llama_dir, "deepseek": deepseek_dir}[request.param]


@pytest.fixture(scope="module")
def small_cache_tokenizer(fresh_dir):
    return Tokenizer.from_dir(fresh_dir, cache=CacheConfig(l0_max_bytes=1 << 16, l1_max_bytes=1 << 15))


@given(data=st.data())
@settings(max_examples=80, deadline=None)
def test_cached_equals_uncached_over_histories(small_cache_tokenizer, data):
    tokenizer = small_cache_tokenizer
    tokenizer.clear_cache()
    texts = pieces_for(tokenizer)
    history = data.draw(st.lists(texts, min_size=1, max_size=6))
    # Conversations grow: later requests extend earlier ones, as chat turns do.
    for base in list(history):
        history.append(base + data.draw(texts))
    for text in history + history[:3]:
        assert tokenizer.encode(text) == uncached(tokenizer, text), repr(text)
        assert tokenizer.encode(text, add_special_tokens=True) == tokenizer.backend.encode(text).ids


def chat(tokenizer, system, turns):
    if "<|eot_id|>" in tokenizer.special_tokens:
        out = f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>"
        for turn in turns:
            out += f"<|start_header_id|>user<|end_header_id|>\n\n{turn}<|eot_id|>"
        return out + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return "<｜begin▁of▁sentence｜>" + system + "".join(f"<｜User｜>{t}<｜Assistant｜>ok<｜end▁of▁sentence｜>" for t in turns)


def test_shared_system_prompt_hits_l1(fresh_dir):
    tokenizer = Tokenizer.from_dir(fresh_dir)
    system = "You are a careful assistant. " * 50
    first = chat(tokenizer, system, ["What is 2+2?"])
    assert tokenizer.uncached_chars(first) == len(first)
    assert tokenizer.encode(first) == uncached(tokenizer, first)
    info = tokenizer.cache_info()
    assert (info.l1_hits, info.l1_misses, info.l1_entries) == (0, 1, 1)
    second = chat(tokenizer, system, ["Tell me a joke about compilers."])
    assert tokenizer.uncached_chars(second) < 200 < len(system)  # only the tail past the cached prefix
    assert tokenizer.cache_info() == info  # asking changed nothing
    assert tokenizer.encode(second) == uncached(tokenizer, second)
    info = tokenizer.cache_info()
    assert info.l1_hits == 1 and info.l1_reused_tokens >= len(uncached(tokenizer, system))
    assert tokenizer.uncached_chars(second) == 0
    assert tokenizer.encode(second) == uncached(tokenizer, second)
    assert tokenizer.cache_info().l0_hits == 1


def test_new_system_prompt_is_cached_after_a_partial_hit(llama_dir):
    """A short shared header already cached must not stop a new long system prompt being cached.

    (DeepSeek's BOS id lies inside its model vocabulary, so it is no cut and has no such header.)
    """
    tokenizer = Tokenizer.from_dir(llama_dir)
    header = "<|begin_of_text|><|start_header_id|>"
    tokenizer.encode(chat(tokenizer, "short", ["q"]))
    long_system = "Follow these rules exactly. " * 80
    tokenizer.encode(chat(tokenizer, long_system, ["first question"]))  # partial hit on the header
    before = tokenizer.cache_info()
    assert before.l1_hits >= 1, header
    text = chat(tokenizer, long_system, ["second question"])
    assert tokenizer.encode(text) == uncached(tokenizer, text)
    after = tokenizer.cache_info()
    assert after.l1_hits == before.l1_hits + 1
    assert after.l1_reused_tokens - before.l1_reused_tokens >= len(uncached(tokenizer, long_system))


def test_multi_turn_conversation_reuses_previous_turns(fresh_dir):
    tokenizer = Tokenizer.from_dir(fresh_dir)
    turns = []
    for i in range(12):
        turns.append(f"Turn {i}: please continue the story about the lighthouse keeper.")
        text = chat(tokenizer, "You write stories.", turns)
        assert tokenizer.encode(text) == uncached(tokenizer, text)
    info = tokenizer.cache_info()
    assert info.l1_hits == 11 and info.l1_misses == 1


def test_memory_bounds_and_eviction(fresh_dir):
    budget = 40_000
    tokenizer = Tokenizer.from_dir(fresh_dir, cache=CacheConfig(l0_max_bytes=budget, l1_max_bytes=budget))
    for i in range(60):
        text = chat(tokenizer, f"System prompt number {i}. " * 10, [f"question {i}"])
        assert tokenizer.encode(text) == uncached(tokenizer, text)
        info = tokenizer.cache_info()
        assert info.l0_bytes <= budget and info.l1_bytes <= budget
    assert 0 < info.l0_entries < 60 and 0 < info.l1_entries < 60
    tokenizer.clear_cache()
    assert tokenizer.cache_info().l0_entries == tokenizer.cache_info().l1_entries == 0


def test_caches_can_be_disabled(llama_dir):
    tokenizer = Tokenizer.from_dir(llama_dir, cache=CacheConfig(l0_max_bytes=0, l1_max_bytes=0))
    text = "<|eot_id|>hello<|eot_id|>"
    assert tokenizer.encode(text) == tokenizer.encode(text) == uncached(tokenizer, text)
    info = tokenizer.cache_info()
    assert (info.l0_entries, info.l1_enabled, info.l1_disabled_reason) == (0, False, "l1_max_bytes is 0")


@pytest.mark.parametrize("value", [-1, 1.5, True, "1"])
def test_cache_config_validates(value):
    with pytest.raises(ValueError):
        CacheConfig(l0_max_bytes=value)


def test_threads_share_the_cache_safely(llama_dir, rng):
    tokenizer = Tokenizer.from_dir(llama_dir, cache=CacheConfig(l0_max_bytes=200_000, l1_max_bytes=200_000))
    systems = [f"System {i}: " + "be concise. " * rng.randrange(5, 60) for i in range(6)]
    jobs = [chat(tokenizer, rng.choice(systems), [f"q{rng.randrange(40)}"] * rng.randrange(1, 4))
            for _ in range(400)]
    expected = {text: uncached(tokenizer, text) for text in set(jobs)}
    failures = []

    def work(chunk):
        for text in chunk:
            if tokenizer.encode(text) != expected[text]:
                failures.append(text)

    threads = [threading.Thread(target=work, args=(jobs[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    info = tokenizer.cache_info()
    assert info.l0_hits + info.l0_misses == 400
