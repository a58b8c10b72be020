"""Reasoning + tool-call parser benchmark: smg against SGLang's own parsers, same streams.

    python -m benchmarks.bench_parsers [--quick]
    SGLANG_SITE=DIR SGLANG_DEPS=DIR2 python -m benchmarks.bench_parsers   # with SGLang's parsers

Each stream: ~2,000 reasoning tokens, ~100 content tokens and 2 tool calls with ~200-token
arguments, in the family's format, cut into token-sized deltas by the real tokenizer (smg's
decode_stream over the encoded text). Per delta, the reasoning parser runs first and the tool
parser gets its content, as a gateway does. Families: qwen3 + hermes, deepseek_r1 + deepseek_v3,
kimi_k2, gpt_oss, and current releases: deepseek_v4 (DSML), gemma4, glm47 (GLM-5), minimax_m3,
nemotron 3 (qwen3_coder XML). A family the loaded SGLang lacks shows n/a.

Two smg modes: ``feed`` per delta, and ``feed_batch`` with the same deltas (the stream's text and
each delta's end; the result still says what each delta produced). "2 thr" runs the same work in
two threads, each parsing the stream many times (so thread start-up is not timed), against one:
per delta, one stream per ``feed_batch`` call, and 8 streams per ``feed_batches`` call (one GIL
release for all of them, as a thread serving many requests would do).

Baseline: SGLang's parsers (``sglang.srt.parser.reasoning_parser.ReasoningParser`` and the
function-call detectors) when ``SGLANG_SITE`` points at ``pip install --no-deps --target DIR
sglang`` (+ partial-json-parser, orjson, msgspec in ``SGLANG_DEPS``); see _sglang_baseline.py.
"""
from __future__ import annotations

import argparse
import json
import random
import threading

from benchmarks._common import median_seconds, seconds_per_call
from smg.parsers import ReasoningParser, ToolParser, feed_batches, join_deltas
from smg.tokenizer import Tokenizer
from smg.tokenizer.bundled import bundled_tokenizer_dir

WORDS = ("the user wants weather data so first I should check which city they mean and whether the "
         "forecast needs several days then call the search tool with a precise query and compare "
         "results before answering carefully").split()


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def streams(rng: random.Random) -> dict[str, tuple[str, str, str, str]]:
    """family -> (tokenizer, text, smg reasoning, smg tool parser)."""
    reasoning, content = words(rng, 1500), words(rng, 75)
    args = [json.dumps({"query": words(rng, 150), "days": 3}) for _ in range(2)]
    hermes = "".join(f'<tool_call>\n{{"name": "search", "arguments": {a}}}\n</tool_call>\n' for a in args)
    ds_calls = "".join(f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>search\n```json\n{a}\n```<｜tool▁call▁end｜>"
                       for a in args)
    kimi_calls = "".join(f"<|tool_call_begin|>functions.search:{i}<|tool_call_argument_begin|>{a}<|tool_call_end|>"
                         for i, a in enumerate(args))
    harmony_calls = "".join(f"<|start|>assistant<|channel|>commentary to=functions.search <|constrain|>json"
                            f"<|message|>{a}<|call|>" for a in args)
    queries = [json.loads(a)["query"] for a in args]
    dsml_calls = "".join(f'<｜DSML｜invoke name="search">\n<｜DSML｜parameter name="query" string="true">{q}'
                         '</｜DSML｜parameter>\n<｜DSML｜parameter name="days" string="false">3</｜DSML｜parameter>\n'
                         "</｜DSML｜invoke>\n" for q in queries)
    gemma_calls = "".join(f'<|tool_call>call:search{{query:<|"|>{q}<|"|>,days:3}}<tool_call|>' for q in queries)
    glm_calls = "".join(f"<tool_call>search<arg_key>query</arg_key><arg_value>{q}</arg_value>"
                        "<arg_key>days</arg_key><arg_value>3</arg_value></tool_call>" for q in queries)
    ns = "]<]minimax[>["
    m3_calls = "".join(f'{ns}<invoke name="search">\n{ns}<query>{q}{ns}</query>\n{ns}<days>3{ns}</days>\n{ns}</invoke>\n'
                       for q in queries)
    coder_calls = "".join(f"<tool_call>\n<function=search>\n<parameter=query>\n{q}\n</parameter>\n"
                          "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>\n" for q in queries)
    return {
        "qwen3+hermes": ("llama3.2", f"<think>\n{reasoning}\n</think>\n\n{content}\n{hermes}", "qwen3", "hermes"),
        "deepseek_r1+v3": ("deepseek", f"{reasoning}\n</think>\n\n{content}<｜tool▁calls▁begin｜>{ds_calls}"
                                       "<｜tool▁calls▁end｜>", "deepseek_r1", "deepseek_v3"),
        "kimi_k2": ("llama3.2", f"<think>{reasoning}</think>{content}<|tool_calls_section_begin|>{kimi_calls}"
                                "<|tool_calls_section_end|>", "kimi_k2", "kimi_k2"),
        "gpt_oss": ("llama3.2", f"<|channel|>analysis<|message|>{reasoning}<|end|><|start|>assistant<|channel|>final"
                                f"<|message|>{content}<|end|>{harmony_calls}", "gpt_oss", "gpt_oss"),
        "deepseek_v4": ("deepseek", f"<think>{reasoning}</think>{content}<｜DSML｜tool_calls>\n{dsml_calls}"
                                    "</｜DSML｜tool_calls>", "deepseek_v31", "deepseek_v4"),
        "gemma4": ("llama3.2", f"<|channel>thought\n{reasoning}<channel|>{content}{gemma_calls}", "gemma4", "gemma4"),
        "glm47": ("llama3.2", f"<think>{reasoning}</think>{content}{glm_calls}", "glm45", "glm47"),
        "minimax_m3": ("llama3.2", f"<mm:think>{reasoning}</mm:think>{content}{ns}<tool_call>\n{m3_calls}"
                                   f"{ns}</tool_call>", "minimax_m3", "minimax_m3"),
        "nemotron3": ("llama3.2", f"<think>{reasoning}</think>{content}{coder_calls}", "nemotron", "qwen3_coder"),
    }


SGLANG_NAMES = {"qwen3+hermes": ("qwen3", "hermes"), "deepseek_r1+v3": ("deepseek-r1", "deepseek_v3"),
                "kimi_k2": ("kimi_k2", "kimi_k2"), "gpt_oss": ("gpt-oss", "gpt_oss"),
                "deepseek_v4": ("deepseek-v4", "deepseek_v4"), "gemma4": ("gemma4", "gemma4"),
                "glm47": ("glm45", "glm47"), "minimax_m3": ("minimax-m3", "minimax_m3"),
                "nemotron3": ("nemotron_3", "qwen3_coder")}
TOOLS = [{"type": "function", "function": {"name": "search", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}, "days": {"type": "integer"}}}}}]


def token_deltas(tokenizer: Tokenizer, text: str) -> list[str]:
    stream = tokenizer.decode_stream(skip_special_tokens=False)
    deltas = [stream.step(i) for i in tokenizer.encode(text)]
    deltas.append(stream.finish())
    return [d for d in deltas if d]


def run_smg(deltas, reasoning_name, tool_name):
    reasoning = ReasoningParser.create(reasoning_name)
    tools = ToolParser.create(tool_name, TOOLS)
    calls = 0
    for d in deltas:
        r = reasoning.feed(d)
        if r.content:
            calls += len(tools.feed(r.content).calls)
    r = reasoning.finish()
    calls += len(tools.feed(r.content).calls) + len(tools.finish().calls)
    return calls


def run_smg_batch(text, ends, reasoning_name, tool_name):
    reasoning = ReasoningParser.create(reasoning_name)
    tools = ToolParser.create(tool_name, TOOLS)
    batch = reasoning.feed_batch(text, ends)
    calls = len(tools.feed_batch(batch.content, batch.content_ends).headers)
    last = tools.feed(reasoning.finish().content)
    return calls + len(last.calls) + len(tools.finish().calls)


def run_smg_streams(text, ends, reasoning_name, tool_name, streams=8):
    """``streams`` copies of the stream, each with its own parsers, in one ``feed_batches`` call per stage."""
    reasoning = [ReasoningParser.create(reasoning_name) for _ in range(streams)]
    tools = [ToolParser.create(tool_name, TOOLS) for _ in range(streams)]
    batches = feed_batches([(parser, text, ends) for parser in reasoning])
    calls = sum(len(b.headers) for b in feed_batches([(t, b.content, b.content_ends) for t, b in zip(tools, batches)]))
    for r, t in zip(reasoning, tools):
        calls += len(t.feed(r.finish().content).calls) + len(t.finish().calls)
    return calls


def thread_scaling(work, repeat: int) -> float:
    """Throughput of ``work`` run in two threads at once over one thread (median of ``repeat``)."""
    def both():
        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    return 2 * median_seconds(work, repeat) / median_seconds(both, repeat)


def run_sglang(sglang, deltas, family):
    ReasoningParserCls, detectors, make_tool = sglang
    reasoning_name, tool_name = SGLANG_NAMES[family]
    reasoning = ReasoningParserCls(reasoning_name, stream_reasoning=True,
                                   force_reasoning=True if family == "deepseek_r1+v3" else None)
    detector = detectors[tool_name]()
    tools = [make_tool("search", TOOLS[0]["function"]["parameters"])]
    calls = 0
    for d in deltas:
        _, normal = reasoning.parse_stream_chunk(d)
        if normal:
            calls += len(detector.parse_streaming_increment(normal, tools).calls)
    return calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeat = 3 if args.quick else 7
    try:
        from benchmarks._sglang_baseline import load

        sglang = load()
        baseline = "SGLang parsers"
    except ImportError as exc:
        sglang, baseline = None, f"(SGLang not loaded: {exc})"
    tokenizers = {name: Tokenizer.from_dir(bundled_tokenizer_dir(name)) for name in ("llama3.2", "deepseek")}
    print(f"baseline: {baseline}\n")
    print(f"{'stream':15} {'deltas':>6} | {'smg deltas/s':>12} | {'SGLang deltas/s':>15} | {'smg/SGLang':>10} | "
          f"{'batch deltas/s':>14} | {'batch/SGLang':>12} | {'2 thr feed':>10} | {'2 thr batch':>11} | "
          f"{'2 thr 8/call':>12}")
    for family, (tok_name, text, r_name, t_name) in streams(random.Random(3)).items():
        deltas = token_deltas(tokenizers[tok_name], text)
        joined = join_deltas(deltas)
        n = len(deltas)
        calls = run_smg(deltas, r_name, t_name)
        assert calls >= 2 and run_smg_batch(*joined, r_name, t_name) == 2, (family, calls)
        assert run_smg_streams(*joined, r_name, t_name) == 16
        smg_rate = n / seconds_per_call(lambda: run_smg(deltas, r_name, t_name), repeat)
        batch_rate = n / seconds_per_call(lambda: run_smg_batch(*joined, r_name, t_name), repeat)
        if sglang is not None and SGLANG_NAMES[family][1] in sglang[1]:
            sg_rate = n / median_seconds(lambda: run_sglang(sglang, deltas, family), max(1, repeat // 2))
            sg_cell, ratio, batch_ratio = f"{sg_rate:>15.0f}", f"{smg_rate / sg_rate:>9.1f}x", f"{batch_rate / sg_rate:>11.1f}x"
        else:
            sg_cell, ratio, batch_ratio = f"{'n/a':>15}", f"{'n/a':>10}", f"{'n/a':>12}"
        # ~50 ms of work per thread, so thread start-up is noise
        feed_runs, batch_runs = max(1, int(0.05 * smg_rate / n)), max(1, int(0.05 * batch_rate / n))

        def feed_work():
            for _ in range(feed_runs):
                run_smg(deltas, r_name, t_name)

        def batch_work():
            for _ in range(batch_runs):
                run_smg_batch(*joined, r_name, t_name)

        def streams_work():
            for _ in range(max(1, batch_runs // 8)):
                run_smg_streams(*joined, r_name, t_name)

        print(f"{family:15} {n:>6} | {smg_rate:>12.0f} | {sg_cell} | {ratio} | {batch_rate:>14.0f} | {batch_ratio} | "
              f"{thread_scaling(feed_work, repeat):>9.2f}x | {thread_scaling(batch_work, repeat):>10.2f}x | "
              f"{thread_scaling(streams_work, repeat):>11.2f}x")


if __name__ == "__main__":
    main()
