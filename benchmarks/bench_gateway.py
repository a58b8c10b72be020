"""Embedded gateway benchmark: smg's Gateway (no HTTP) against a plain Python frontend, same engine.

    python -m benchmarks.bench_gateway [--quick] [--conc 1,16,64,256] [--max-tokens 256] [--system-words 0]

The engine is the protocol-faithful fake SGLang engine of ../shared/bench (``fake_engine.py``,
one token per message, Llama 3.2 tokenizer), in its own process pinned to core 1; the frontend
under test runs in this process on core 0. Each cell keeps C chat requests in flight for a few
seconds and reports output tokens/s, TTFT p50/p99 (first content) and the frontend's CPU time per
1,000 output tokens. ``--system-words N`` gives every request the same N-word system prompt (an
agent's instructions, a RAG preamble) before its own ~60-word user turn.

* ``smg``: ``Gateway.chat_stream`` — cached template+tokenizer, compiled detokenizer and stop rules,
  chunk objects, each msgspec-encoded as an HTTP layer would.
* ``smg-sse``: ``Gateway.chat_sse`` — the same stream as the bytes of its server-sent events (what
  smg's ASGI app sends, or an app's own ``StreamingResponse``): a plain stream goes from engine
  message to event bytes in one compiled step.
* ``smg-push``: ``Gateway.chat_sse`` with a sink (what smg's HTTP server gives it): a plain stream's
  events after the first are handed to the sink from the engine connection's data path, no task
  woken per token (the sink does what the ``smg-sse`` consumer does with each event).
* ``python``: what a plain Python frontend does today — transformers' ``apply_chat_template`` and
  encode per request, the engine's gRPC stubs, detokenization with transformers' ``decode`` over
  the prefix/read-offset window per token (vLLM/SGLang's algorithm), stop strings by ``str.find``,
  and a JSON chunk per token with ``json.dumps``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import msgspec
from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pbg

from benchmarks._common import free_port, pin, pin_self, run, wait_for_port
from smg import Gateway
from smg.tokenizer.bundled import bundled_tokenizer_dir

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "bench"
WORDS = ("requests arrive at uneven times and every one wants its first token quickly while the "
         "gateway keeps the accelerator busy with batches of work from many users").split()



def prompt_text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


class PythonFrontend:
    """A plain Python frontend: transformers for template/encode/decode, raw gRPC stubs."""

    def __init__(self, directory: Path, target: str) -> None:
        from transformers import PreTrainedTokenizerFast

        config = json.loads((directory / "tokenizer_config.json").read_text())
        self.tok = PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"),
                                           bos_token=config.get("bos_token"), eos_token=config.get("eos_token"))
        self.template = (directory / "chat_template.jinja").read_text()
        self.channel = grpc.aio.insecure_channel(target)
        self.stub = pbg.SglangSchedulerStub(self.channel)

    async def chat_stream(self, messages, max_tokens: int, stop: list[str]):
        prompt = self.tok.apply_chat_template(messages, chat_template=self.template, add_generation_prompt=True,
                                              tokenize=False)
        ids = self.tok.encode(prompt, add_special_tokens=False)
        rid = uuid.uuid4().hex
        request = pb.GenerateRequest(request_id=rid, tokenized=pb.TokenizedInput(input_ids=ids), stream=True,
                                     sampling_params=pb.SamplingParams(temperature=1.0, top_p=1.0, top_k=-1,
                                                                       repetition_penalty=1.0, n=1,
                                                                       max_new_tokens=max_tokens,
                                                                       skip_special_tokens=True))
        tokens, prefix_offset, read_offset, text = [], 0, 0, ""
        async for response in self.stub.Generate(request):
            if not response.HasField("chunk"):
                break
            for token in response.chunk.token_ids:
                tokens.append(token)
                prefix = self.tok.decode(tokens[prefix_offset:read_offset], skip_special_tokens=True)
                full = self.tok.decode(tokens[prefix_offset:], skip_special_tokens=True)
                if len(full) > len(prefix) and not full.endswith("\ufffd"):
                    delta = full[len(prefix):]
                    prefix_offset, read_offset = read_offset, len(tokens)
                    text += delta
                    if any(s in text for s in stop):
                        return
                    yield json.dumps({"id": rid, "object": "chat.completion.chunk",
                                      "choices": [{"index": 0, "delta": {"content": delta}}]}), 1
        yield json.dumps({"id": rid, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}), 0


async def run_cell(stream_fn, concurrency: int, seconds: float, rng: random.Random, system: str):
    stop_at = time.perf_counter() + seconds
    ttfts, tokens = [], 0

    async def client(c: int) -> None:
        nonlocal tokens
        while time.perf_counter() < stop_at:
            messages = [{"role": "system", "content": system},
                        {"role": "user", "content": prompt_text(rng, 60)}]
            start = time.perf_counter()
            first = None
            async for n in stream_fn(messages):
                if n and first is None:
                    first = time.perf_counter() - start
                tokens += n
            if first is not None:
                ttfts.append(first)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    ttfts.sort()
    p = lambda q: 1000 * ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))] if ttfts else float("nan")  # noqa: E731
    return tokens / wall, p(0.5), p(0.99), 1e6 * cpu / max(tokens, 1)


async def main_async(args) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="smg-bench-"))
    src = bundled_tokenizer_dir("llama3.2")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / name, workdir / name)
    shutil.copy(SHARED / "llama3_chat_template.jinja", workdir / "chat_template.jinja")
    shutil.copy(SHARED / "llama32_config.json", workdir / "config.json")
    port = free_port()
    engine = subprocess.Popen(
        [sys.executable, str(SHARED / "fake_engine.py"), "serve", "--port", str(port), "--tokenizer-dir",
         str(workdir), "--tokens-per-chunk", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=pin(1))
    pin_self(0)
    try:
        wait_for_port(port)
        target = f"127.0.0.1:{port}"
        rng = random.Random(5)
        gateway = await Gateway([f"grpc://{target}"], tokenizer=str(workdir)).start()
        baseline = PythonFrontend(workdir, target)

        async def smg_stream(messages):
            request = {"model": gateway.model, "messages": messages, "max_tokens": args.max_tokens, "stream": True}
            async for chunk in gateway.chat_stream(request):
                msgspec.json.encode(chunk)  # what the HTTP layer would send
                choices = chunk.choices  # n=1: one choice, with content when a token arrived
                yield 1 if choices and choices[0].delta.content else 0

        async def smg_sse(messages):
            request = {"model": gateway.model, "messages": messages, "max_tokens": args.max_tokens, "stream": True}
            async for event in gateway.chat_sse(request):
                yield 1 if b'"content":"' in event and b'"content":""' not in event else 0

        async def smg_push(messages):
            request = {"model": gateway.model, "messages": messages, "max_tokens": args.max_tokens, "stream": True}
            pushed = 0

            def sink(events: bytes) -> bool:  # (a read's events for the stream, in one piece)
                nonlocal pushed
                pushed += events.count(b'"content":"') - events.count(b'"content":""')
                return True

            async for event in gateway.chat_sse(request, sink=sink):
                yield 1 if b'"content":"' in event and b'"content":""' not in event else 0
            yield pushed

        async def python_stream(messages):
            async for _, n in baseline.chat_stream(messages, args.max_tokens, []):
                yield n

        system = prompt_text(random.Random(11), args.system_words) if args.system_words else \
            "You are a concise assistant."
        print(f"{'frontend':8} {'conc':>4} | {'tok/s':>8} | {'TTFT p50 ms':>11} | {'TTFT p99 ms':>11} | "
              f"{'CPU ms/1k tok':>13} | {'smg CPU advantage':>17}")
        for concurrency in [int(c) for c in args.conc.split(",")]:
            rows = {}
            for label, fn in (("smg", smg_stream), ("smg-sse", smg_sse), ("smg-push", smg_push),
                              ("python", python_stream)):
                rows[label] = await run_cell(fn, concurrency, args.seconds, rng, system)
            for label, (rate, p50, p99, cpu) in rows.items():
                adv = f"x{rows['python'][3] / rows[label][3]:.2f}" if label != "python" else ""
                print(f"{label:8} {concurrency:>4} | {rate:>8.0f} | {p50:>11.1f} | {p99:>11.1f} | {cpu:>13.1f} | "
                      f"{adv:>17}")
        await gateway.close()
        await baseline.channel.close()
    finally:
        engine.terminate()
        engine.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--conc", default="1,16,64,256")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--system-words", type=int, default=0, help="shared system prompt length (0: short)")
    args = parser.parse_args()
    args.seconds = 3.0 if args.quick else 8.0
    run(main_async(args))


if __name__ == "__main__":
    main()
