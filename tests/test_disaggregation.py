"""Prefill/decode disaggregation end to end: reference engines in either role (the prefill engine
hands each request's KV over by room, the decode engine fetches it and streams) behind a model
configured with prefill and decode workers."""
from __future__ import annotations

import asyncio
import contextlib

import pytest

from smg.config import ConfigError, ModelConfig
from smg.engine import ReferenceEngine
from smg.engine.disaggregation import Disaggregation
from smg.engines.base import GenerateRequest
from smg.engines.pool import WorkerPool
from smg.errors import EngineUnavailable, InvalidRequest
from smg.gateway import Gateway

pytestmark = pytest.mark.no_kernels  # (the twins' pass leaves it out)

CHAT = {"messages": [{"role": "user", "content": "Tell me about gateways."}], "max_tokens": 12}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def pd_fleet(llama, decoders: int = 2, delay_ms: float = 0.0, gateway_bootstrap_port: int | None = None,
                   prefill_context: int = 131072):
    """One prefill engine and ``decoders`` decode engines, and a gateway serving them as one model."""
    bootstrap = free_port()
    prefill = ReferenceEngine(llama, max_context_length=prefill_context,
                              disaggregation=Disaggregation("prefill", bootstrap, timeout=3))
    decodes = [ReferenceEngine(llama, delay_ms=delay_ms, disaggregation=Disaggregation("decode", timeout=3))
               for _ in range(decoders)]
    servers = [prefill.server(), *(d.server() for d in decodes)]
    ports = [await s.start() for s in servers]
    config = ModelConfig(name="pd", prefill=[f"grpc://127.0.0.1:{ports[0]}"],
                         decode=[f"grpc://127.0.0.1:{p}" for p in ports[1:]],
                         bootstrap_port=gateway_bootstrap_port or bootstrap, tokenizer="llama3.2",
                         chat_template="llama3", decode_policy="round_robin")
    gateway = Gateway(models=[config])
    try:
        async with gateway:
            yield gateway, servers
    finally:
        for server in servers:
            await server.stop()


def test_a_request_is_prefilled_on_one_engine_and_decoded_on_another(llama):
    async def main():
        async with pd_fleet(llama) as (gateway, servers):
            replies = [await gateway.chat(CHAT) for _ in range(4)]
            chunks = [c async for c in gateway.chat_stream({**CHAT, "stream": True})]
            stats = gateway.default_model.pool.stats()
            ready = bool(gateway.default_model.pool.healthy_workers())
        return replies, chunks, stats, ready

    replies, chunks, stats, ready = run(main())
    assert ready and all(r.choices[0].message.content for r in replies)
    assert all(r.usage.completion_tokens == 12 for r in replies), [r.usage for r in replies]
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == replies[0].choices[0].message.content  # the same seed, the same text
    by_role = {}
    for s in stats:
        by_role.setdefault(s["role"], []).append(s["served"])
    assert by_role == {"prefill": [5], "decode": [3, 2]}  # every request prefilled there; decodes alternate


def test_a_disaggregated_engine_refuses_a_request_without_the_parameters(llama):
    async def main():
        engine = ReferenceEngine(llama, disaggregation=Disaggregation("prefill", free_port()))
        server = engine.server()
        port = await server.start()
        try:
            async with WorkerPool([f"grpc://127.0.0.1:{port}"]) as pool:
                with pytest.raises(InvalidRequest, match="disaggregated_params"):
                    async with contextlib.aclosing(pool.generate(GenerateRequest("x", [1, 2, 3]))) as stream:
                        async for _ in stream:
                            pass
        finally:
            await server.stop()

    run(main())


def test_a_client_going_away_aborts_both_halves(llama):
    async def main():
        async with pd_fleet(llama, decoders=1, delay_ms=20) as (gateway, servers):
            stream = gateway.chat_stream({**CHAT, "max_tokens": 200, "stream": True}, request_id="gone")
            got = 0
            async for chunk in stream:
                got += 1
                if got == 3:
                    break
            await stream.aclose()
            for _ in range(100):
                if all(any(rid.startswith("gone") for rid in s.aborted) for s in servers):
                    break
                await asyncio.sleep(0.02)
            return [[rid for rid in s.aborted if rid.startswith("gone")] for s in servers]

    prefill_aborted, decode_aborted = run(main())
    assert prefill_aborted and decode_aborted and prefill_aborted == decode_aborted


def test_a_failed_handover_fails_the_request_and_aborts_the_prefill(llama):
    """The gateway names a bootstrap port nothing listens on: the decode engine cannot fetch the
    KV, the request fails with a typed error, and the prefill half is aborted too."""
    async def main():
        async with pd_fleet(llama, decoders=1, gateway_bootstrap_port=free_port()) as (gateway, servers):
            with pytest.raises(EngineUnavailable, match="handover failed"):
                await gateway.chat(CHAT, request_id="lost")
            await asyncio.sleep(0.2)
            return [[rid for rid in s.aborted if rid.startswith("lost")] for s in servers]

    prefill_aborted, decode_aborted = run(main())
    assert prefill_aborted and decode_aborted


def test_a_failed_prefill_fails_the_request_with_its_error_and_aborts_the_decode(llama):
    """The prefill engine refuses the request (its context is too short); the decode engine would
    wait for a handover that never comes. The request fails with the prefill's error (a decode
    timing out would be EngineUnavailable), and the decode half is aborted."""
    async def main():
        async with pd_fleet(llama, decoders=1, prefill_context=16) as (gateway, servers):
            with pytest.raises(InvalidRequest, match="context length"):
                await gateway.chat(CHAT, request_id="short")
            await asyncio.sleep(0.2)
            return [[rid for rid in s.aborted if rid.startswith("short")] for s in servers]

    prefill_aborted, decode_aborted = run(main())
    assert decode_aborted


def test_disaggregation_config_is_checked():
    for bad, fragment in (({"prefill": ["grpc://a:1"]}, "both prefill and decode"),
                          ({"prefill": ["grpc://a:1"], "decode": ["grpc://b:1"], "workers": ["grpc://c:1"]},
                           "not both"),
                          ({"prefill": ["grpc://a:1"], "decode": ["grpc://b:1"], "engine": "vllm"}, "SGLang"),
                          ({"prefill": ["grpc://a:1"], "decode": ["grpc://b:1"], "bootstrap_port": 0},
                           "bootstrap_port")):
        with pytest.raises(ConfigError, match=fragment):
            ModelConfig(**bad)
    from smg.__main__ import _serve_config, build_parser

    config = _serve_config(build_parser().parse_args(
        ["serve", "--prefill", "grpc://p:1", "--decode", "grpc://d:1", "--decode", "grpc://d:2",
         "--bootstrap-port", "9000"]))
    (model,) = config.model_configs()
    assert (model.prefill, model.decode, model.bootstrap_port) == (["grpc://p:1"], ["grpc://d:1", "grpc://d:2"], 9000)


def test_the_engine_cli_refuses_an_unknown_disaggregation_mode():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "smg", "engine", "--reference", "--disaggregation-mode", "sideways"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "invalid choice" in out.stderr
