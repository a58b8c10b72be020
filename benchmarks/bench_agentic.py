"""The agentic APIs against Chat Completions, and a long conversation by ``previous_response_id``.

    python -m benchmarks.bench_agentic [--conc 16,64] [--duration 6] [--rounds 3] [--turns 20]

1. Per-token gateway CPU of streamed requests on the same load: ``smg serve`` (pinned to core 0,
   SQLite storage as it serves by default) in front of the reference engine replaying one output
   (core 1, with this closed-loop client). Two loads: ``text`` (plain output of a model without
   parsers: Chat Completions takes its compiled fast path) and ``agentic`` (a Qwen3 output of ~150 reasoning tokens, ~90 text tokens
   and a tool call: every API runs the reasoning and tool parsers). The APIs take turns ``--rounds``
   times; the table shows each one's median CPU seconds per 1k output tokens and its ratio to Chat.
2. A ``--turns``-turn conversation by ``previous_response_id`` (in-process gateway, SQLite storage,
   ~400 input and 16 output tokens per turn, Llama 3.2's tokenizer and template): the gateway's time
   per turn (request in to response out, less the engine's stream) and its stages', with the
   tokenizer's L1 prefix cache on and off, beside what HuggingFace ``tokenizers`` (what Python
   servers use) takes to encode the same prompt.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from benchmarks._common import cpu_seconds, free_port, pin, pin_self, wait_for_port
from benchmarks.bench_serve import wait_ready

REASONING = " ".join(f"Step {i}: the forecast for city {i % 7} needs checking against the archive." for i in range(12))
TEXT = " ".join(f"Paris is mild in spring, item {i}, with showers in the afternoon." for i in range(6))
AGENTIC = (f"<think>\n{REASONING}\n</think>\n\n{TEXT}\n<tool_call>\n"
           '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>')
PLAIN = f"{TEXT} {TEXT} {TEXT} {TEXT}"
TOOL_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}}}
PROMPT = "Plan a trip: what is the weather like in Paris this week, and what should I pack? " * 6
APIS = ("chat", "responses", "messages")


def _payload(api: str, tools: bool, k: int) -> tuple[str, dict]:
    prompt = f"[{k}] {PROMPT}"
    if api == "chat":
        body = {"model": "", "messages": [{"role": "user", "content": prompt}], "stream": True, "max_tokens": 1024,
                "stream_options": {"include_usage": True}}
        if tools:
            body["tools"] = [{"type": "function", "function": {"name": "get_weather", "parameters": TOOL_SCHEMA}}]
        return "/v1/chat/completions", body
    if api == "responses":
        body = {"model": "", "input": prompt, "stream": True, "max_output_tokens": 1024}
        if tools:
            body["tools"] = [{"type": "function", "name": "get_weather", "parameters": TOOL_SCHEMA}]
        return "/v1/responses", body
    body = {"model": "", "messages": [{"role": "user", "content": prompt}], "stream": True, "max_tokens": 1024}
    if tools:
        body["tools"] = [{"name": "get_weather", "input_schema": TOOL_SCHEMA}]
    return "/v1/messages", body


def _output_tokens(api: str, tail: bytes) -> int:
    """The output token count in a stream's last events."""
    key = {"chat": b'"completion_tokens":', "responses": b'"output_tokens":', "messages": b'"output_tokens":'}[api]
    at = tail.rfind(key) + len(key)
    end = at
    while tail[end:end + 1].isdigit():
        end += 1
    return int(tail[at:end])


async def _load(base: str, api: str, tools: bool, concurrency: int, duration: float, gateway_pid: int) -> dict:
    import aiohttp

    tokens = requests = 0
    stop = time.monotonic() + duration
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def one(k: int) -> None:
            nonlocal tokens, requests
            path, body = _payload(api, tools, k)
            async with session.post(base + path, json=body) as reply:
                data = await reply.read()
                if reply.status != 200:
                    raise SystemExit(f"{api}: HTTP {reply.status}: {data[:300]!r}")
            tokens += _output_tokens(api, data[-600:])
            requests += 1

        async def worker(w: int) -> None:
            k = w
            while time.monotonic() < stop:
                await one(k)
                k += concurrency

        await asyncio.gather(*(one(w) for w in range(concurrency)))  # warm up
        tokens = requests = 0
        stop = time.monotonic() + duration
        cpu0, wall0 = cpu_seconds(gateway_pid), time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        cpu, wall = cpu_seconds(gateway_pid) - cpu0, time.monotonic() - wall0
    return {"tokens_per_s": tokens / wall, "cpu_s_per_1k_tok": 1000 * cpu / tokens, "requests": requests}


def per_token_cpu(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # text: a model without parsers (Chat Completions takes its compiled fast path);
        # agentic: a Qwen3 model (reasoning + tool parsers on every API)
        for load, script, tools, model in (("text", PLAIN, False, "smg-reference"),
                                           ("agentic", AGENTIC, True, "Qwen/Qwen3-8B")):
            script_file = Path(tmp) / f"{load}.txt"
            script_file.write_text(script, encoding="utf-8")
            engine_port, port = free_port(), free_port()
            engine = subprocess.Popen([sys.executable, "-m", "smg", "engine", "--reference", "--port", str(engine_port),
                                       "--mode", "script", "--script", str(script_file), "--model-id", model],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin(1))
            gateway = None
            try:
                wait_for_port(engine_port, 60)
                gateway = subprocess.Popen(
                    [sys.executable, "-m", "smg", "serve", "--worker", f"grpc://127.0.0.1:{engine_port}",
                     "--tokenizer", "llama3.2", "--chat-template", "chatml_qwen3", "--port", str(port),
                     "--storage", f"sqlite:///{tmp}/{load}.sqlite3"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin(0))
                wait_ready(f"http://127.0.0.1:{port}/v1/models", gateway)
                for concurrency in args.conc:
                    cells: dict[str, list[dict]] = {api: [] for api in APIS}
                    for _ in range(args.rounds):
                        for api in APIS:
                            cells[api].append(asyncio.run(_load(f"http://127.0.0.1:{port}", api, tools, concurrency,
                                                                args.duration, gateway.pid)))
                    chat = statistics.median(c["cpu_s_per_1k_tok"] for c in cells["chat"])
                    for api in APIS:
                        cpu = statistics.median(c["cpu_s_per_1k_tok"] for c in cells[api])
                        rows.append({"load": load, "concurrency": concurrency, "api": api,
                                     "tok_s": round(statistics.median(c["tokens_per_s"] for c in cells[api])),
                                     "cpu_s_per_1k_tok": round(cpu, 4), "vs_chat": round(cpu / chat, 2)})
                        print(json.dumps(rows[-1]), flush=True)
            finally:
                for process in (gateway, engine):
                    if process is not None:
                        process.terminate()
                        process.wait(30)
    return rows


STAGES = ("storage read", "render", "encode", "storage write")


async def conversation(turns: int, l1: bool) -> list[dict]:
    """Per turn of a conversation chained by previous_response_id: the gateway's milliseconds
    (request in to response out, less the engine's stream), those of each stage, and the prompt's
    tokens."""
    import smg.api.responses as responses_api
    import smg.pipeline.prepare as prepare_stage
    import smg.pipeline.run as run_stage
    from smg.config import CacheConfig
    from smg.engine import ReferenceEngine
    from smg.gateway import Gateway
    from smg.tokenizer import Tokenizer
    from smg.tokenizer.bundled import bundled_tokenizer_dir

    directory = bundled_tokenizer_dir("llama3.2")
    # Llama 3.2's tokenizer and template: the turns' header tokens are special tokens, where L1 cuts
    engine = ReferenceEngine(Tokenizer.from_dir(directory), model_id="meta-llama/Llama-3.2-1B-Instruct",
                             tokenizer_dir=directory)
    server = engine.server()
    port = await server.start()
    spent: dict[str, float] = {}
    rendered: list[str] = []  # the turn's prompt, for the HuggingFace tokenizer's encode beside ours
    hf = HFTokenizer.from_file(str(directory / "tokenizer.json"))

    def timed(name: str, work):  # a stage's coroutine function, its time added to spent[name]
        async def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                result = await work(*args, **kwargs)
                if name == "render":
                    rendered.append(result)
                return result
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
        return run

    def timed_stream(work):  # the engine's stream (run stage), timed so it can be taken out
        async def run(*args):
            start = time.perf_counter()
            async for item in work(*args):
                yield item
            spent["engine"] = spent.get("engine", 0.0) + time.perf_counter() - start
        return run

    patches = [(run_stage, "run", timed_stream(run_stage.run)),
               (responses_api, "_context", timed("storage read", responses_api._context)),
               (responses_api, "_store", timed("storage write", responses_api._store)),
               (prepare_stage, "render_chat", timed("render", prepare_stage.render_chat))]
    originals = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, value in patches:
        setattr(module, name, value)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cache = CacheConfig() if l1 else CacheConfig(l1_max_bytes=0)
            async with Gateway([f"grpc://127.0.0.1:{port}"], chat_template="llama3", cache=cache,
                               storage=f"sqlite:///{tmp}/c.sqlite3") as gw:
                served = gw.default_model
                served.encode = timed("encode", served.encode)
                previous = None
                for turn in range(turns):
                    spent.clear()
                    request = {"model": "", "max_output_tokens": 16,
                               "input": f"Turn {turn}: {PROMPT * 4}", "previous_response_id": previous}
                    start = time.perf_counter()
                    response = await gw.responses(request)
                    total = time.perf_counter() - start - spent.get("engine", 0.0)
                    hf_start = time.perf_counter()  # what a Python server re-tokenizing the turn spends
                    hf.encode(rendered[-1], add_special_tokens=False)
                    hf_ms = 1000 * (time.perf_counter() - hf_start)
                    rows.append({"ms": 1000 * total, "prompt_tokens": response["usage"]["input_tokens"],
                                 **{stage: 1000 * spent.get(stage, 0.0) for stage in STAGES}, "hf": hf_ms})
                    previous = response["id"]
    finally:
        for module, name, value in originals:
            setattr(module, name, value)
        await server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conc", default="16,64")
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--skip-served", action="store_true")
    args = parser.parse_args()
    args.conc = [int(c) for c in args.conc.split(",")]
    if not args.skip_served:
        rows = per_token_cpu(args)
        print("\n| load | conc | API | tok/s | gateway CPU s / 1k tok | vs Chat |\n|---|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['load']} | {row['concurrency']} | {row['api']} | {row['tok_s']} | "
                  f"{row['cpu_s_per_1k_tok']} | {row['vs_chat']}x |")
    pin_self(0)
    asyncio.run(conversation(3, True))  # warm-up: templates compiled, caches of the process filled
    for l1 in (True, False):
        rows = asyncio.run(conversation(args.turns, l1))
        print(f"\nconversation by previous_response_id, L1 {'on' if l1 else 'off'} (ms per turn; the first is "
              "the gateway's first request)\n\n| turn | prompt tokens | gateway | "
              + " | ".join(STAGES) + " | HF tokenizers encode |\n|---|---|---|---|" + "---|" * len(STAGES))
        for turn, row in enumerate(rows, 1):
            if turn in (1, 2, 5, 10, 15, 20) or turn == len(rows):
                print(f"| {turn} | {row['prompt_tokens']} | {row['ms']:.2f} | "
                      + " | ".join(f"{row[stage]:.2f}" for stage in STAGES) + f" | {row['hf']:.2f} |")
        early, late = rows[1:4], rows[-3:]
        for key in ("ms", "encode", "hf"):
            a, b = statistics.mean(r[key] for r in early), statistics.mean(r[key] for r in late)
            print(f"  {key}: turns 2-4 mean {a:.2f} ms, last 3 mean {b:.2f} ms ({b / a:.2f}x; the prompt grew "
                  f"{statistics.mean(r['prompt_tokens'] for r in late) / statistics.mean(r['prompt_tokens'] for r in early):.1f}x)")


if __name__ == "__main__":
    main()
