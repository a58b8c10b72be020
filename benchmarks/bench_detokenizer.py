"""Detokenizer and stop-matcher benchmark: smg against what engines run today, same streams.

    python -m benchmarks.bench_detokenizer [--quick]

Streams: 2,000 tokens each of English prose, Python code, and CJK text with emoji, encoded with
the real Llama 3.2 and DeepSeek tokenizers, then decoded one token at a time by:
  smg decode_stream   Tokenizer.decode_stream().step(id)                       (compiled table)
  DecodeStream        tokenizers.decoders.DecodeStream.step(tokenizer, id)      (Rust, per token)
  vLLM/SGLang-style   the prefix_offset/read_offset incremental algorithm in Python (below)
  full decode         one Tokenizer.decode of the whole sequence (per-token cost shown)
and the stop stage per token (StopChecker.step on the decoded deltas) with 0, 4 and 64 stop
strings that never match, alone and as part of detokenize+stop. Figures are tokens/s (median of
several runs); ratios are smg over the row's method.
"""
from __future__ import annotations

import argparse
import random

from benchmarks._common import median_seconds
from smg.stop import StopParams
from smg.tokenizer import Tokenizer
from smg.tokenizer.bundled import bundled_tokenizer_dir

ENGLISH = ("The gateway receives a request, renders the chat template, tokenizes the prompt and picks a "
           "worker. Tokens stream back one at a time; each must become text, be checked for stop "
           "sequences and parsed for tool calls before the client sees it. ")
CODE = ('def schedule(requests, workers):\n    """Assign each request to the least loaded worker."""\n'
        "    for request in sorted(requests, key=lambda r: r.priority):\n"
        "        worker = min(workers, key=lambda w: (w.load, w.id))\n"
        "        worker.assign(request)  # O(n log n) overall\n    return {w.id: w.load for w in workers}\n\n")
CJK = "推理服务的网关负责分词与反分词。🚀 トークンを一つずつ返します😀。모델 서버는 GPU에서 실행됩니다 👩‍💻 🎉 "


def vllm_style_stream(backend, ids, skip_special_tokens=True):
    """The prefix/read-offset incremental detokenizer used by vLLM and SGLang, written here in
    plain Python: decode a short window twice per token and emit the difference."""
    tokens, prefix_offset, read_offset, out = [], 0, 0, []
    for token_id in ids:
        tokens.append(token_id)
        prefix_text = backend.decode(tokens[prefix_offset:read_offset], skip_special_tokens=skip_special_tokens)
        new_text = backend.decode(tokens[prefix_offset:], skip_special_tokens=skip_special_tokens)
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            out.append(new_text[len(prefix_text):])
            prefix_offset, read_offset = read_offset, len(tokens)
    return out


def stream_of(tokenizer, text, n_tokens):
    ids = []
    while len(ids) < n_tokens:
        ids += tokenizer.encode(text)
    return ids[:n_tokens]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeat = 3 if args.quick else 9
    from tokenizers.decoders import DecodeStream

    rng = random.Random(7)
    stop_sets = {0: (), 4: ("</answer>", "\n\nUser:", "<|im_end|>", "STOP"),
                 64: tuple(f"<stop-{i}-{rng.randrange(10**6)}>" for i in range(60)) + ("###", "\n\n\n", "END", "✋")}
    print(f"{'tokenizer':9} {'stream':8} | {'smg tok/s':>10} | {'DecodeStream':>12} | {'vLLM-style py':>13} | "
          f"{'full decode':>11} | {'vs DS':>6} | {'vs py':>6}")
    stop_rows = []
    for name in ("llama3.2", "deepseek"):
        tok = Tokenizer.from_dir(bundled_tokenizer_dir(name))
        backend = tok.backend
        for label, text in (("english", ENGLISH), ("code", CODE), ("cjk+emoji", CJK)):
            ids = stream_of(tok, text, 2000)
            n = len(ids)

            def smg_run():
                s = tok.decode_stream()
                step = s.step
                for i in ids:
                    step(i)
                s.finish()

            def ds_run():
                s = DecodeStream(skip_special_tokens=True)
                for i in ids:
                    s.step(backend, i)

            smg_rate = n / median_seconds(smg_run, repeat)
            ds_rate = n / median_seconds(ds_run, repeat)
            py_rate = n / median_seconds(lambda: vllm_style_stream(backend, ids), max(1, repeat // 3))
            full_rate = n / median_seconds(lambda: tok.decode(ids), repeat)
            print(f"{name:9} {label:8} | {smg_rate:>10.0f} | {ds_rate:>12.0f} | {py_rate:>13.0f} | "
                  f"{full_rate:>11.0f} | {smg_rate / ds_rate:>5.1f}x | {smg_rate / py_rate:>5.0f}x")

            if name == "llama3.2":
                s = tok.decode_stream()
                deltas = [s.step(i) for i in ids]
                row = [label]
                for k, stop in stop_sets.items():
                    def stop_only(stop=stop):
                        checker = StopParams(stop=stop).checker(tok.eos_token_ids)
                        for i, d in zip(ids, deltas):
                            checker.step(i, d)

                    def pipeline(stop=stop):
                        stream = tok.decode_stream()
                        checker = StopParams(stop=stop).checker(tok.eos_token_ids)
                        for i in ids:
                            checker.step(i, stream.step(i))

                    row.append((n / median_seconds(stop_only, repeat), n / median_seconds(pipeline, repeat)))
                stop_rows.append(row)

    print("\nstop stage (llama3.2 streams), tokens/s: stop check alone | detokenize + stop check")
    print(f"{'stream':9} | {'0 stops':>16} | {'4 stops':>16} | {'64 stops':>16} | {'64 vs 0 (alone)':>15} | "
          f"{'64 vs 0 (pipeline)':>18}")
    for label, *cells in stop_rows:
        (a0, p0), (a4, p4), (a64, p64) = cells
        print(f"{label:9} | {a0:>7.0f} {p0:>8.0f} | {a4:>7.0f} {p4:>8.0f} | {a64:>7.0f} {p64:>8.0f} | "
              f"{a0 / a64:>14.2f}x | {p0 / p64:>17.2f}x")


if __name__ == "__main__":
    main()
