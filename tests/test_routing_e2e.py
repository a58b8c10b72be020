"""Routing end to end: reference engines with simulated prefix caches behind the gateway.

The served comparison runs `smg engine --reference` and `smg serve --policy X` as processes,
driven by the official `openai` client (benchmarks/bench_routing.py's workload, small); the rest
runs engines and the gateway in-process to look inside them."""
from __future__ import annotations

import asyncio
import contextlib

import httpx
import openai
import pytest
from conftest import first_items

from benchmarks.bench_routing import Fleet, drive, system_prompts
from smg.asgi import create_app
from smg.config import PoolConfig
from smg.engine import ReferenceEngine
from smg.engine.kv_cache import SimulatedPrefixCache
from smg.engines.base import GenerateRequest, SamplingOptions
from smg.engines.pool import WorkerPool
from smg.gateway import Gateway
from smg.policies import RequestView


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


@pytest.mark.end_to_end
def test_cache_aware_keeps_hits_high_where_round_robin_cannot():
    """Four engines whose caches (1000 tokens) hold under a third of the eight system prompts:
    round robin sends every prompt everywhere and the caches thrash; cache_aware gives each
    engine its own prompts and conversations, and kv_events does so from the engines' events."""
    systems = system_prompts(8, 300)
    fractions = {}
    for policy in ("cache_aware", "kv_events", "round_robin"):
        with Fleet(4, cache_tokens=1000, prefill_us=100, policy=policy) as fleet:
            outcome = asyncio.run(drive(fleet.url, systems, users=24, turns=3, concurrency=8))
        assert outcome.errors == 0 and outcome.prompt_tokens > 24 * 3 * 300
        fractions[policy] = outcome.cached_fraction
    # A run this small moves with the interleaving (round_robin 0.18-0.38, the cache policies
    # 0.61-0.76 over this session's runs, the CI machine's included): the margins here hold across
    # that; the targets (2x, kv_events >= cache_aware) are measured on the full workload
    # in BENCHMARKS.md.
    for policy in ("cache_aware", "kv_events"):
        assert fractions[policy] > 0.55, fractions
        assert fractions[policy] >= 1.5 * fractions["round_robin"], fractions
        assert fractions[policy] - fractions["round_robin"] >= 0.2, fractions


def test_the_engines_cache_counts_whole_cached_blocks_and_evicts_the_least_recent():
    cache = SimulatedPrefixCache(capacity_tokens=100, block_size=10)
    assert run(cache.prefill(list(range(65)))) == 0  # 6 blocks stored (the last 5 ids are no block)
    assert run(cache.prefill(list(range(45)) + [999] * 10)) == 40  # 4 whole blocks match
    assert cache.cached(list(range(65))) == 60 and cache.size == 70  # (the 5th block of the 2nd prompt too)
    run(cache.prefill(list(range(1000, 1080))))  # 70 + 80 tokens: past 100, the least recent blocks go
    assert cache.cached(list(range(1000, 1080))) == 80 and cache.cached(list(range(65))) < 60
    assert cache.size <= 100 and 0 < cache.usage <= 1
    with pytest.raises(ValueError):
        SimulatedPrefixCache(-1)
    with pytest.raises(ValueError):
        SimulatedPrefixCache(10, block_size=0)


def test_the_engines_cache_publishes_what_it_stores_and_evicts():
    cache = SimulatedPrefixCache(capacity_tokens=30, block_size=10)

    async def main():
        run_first = cache.subscribe(0)
        cache.store(list(range(30)))  # batch 1: three blocks stored
        cache.store(list(range(20)) + [7] * 10)  # batch 2: one block under block 2; the oldest leaf goes
        late = [b async for b in first_items(cache.subscribe(1), 1)]  # resumed after 1: batch 2 only
        return [b async for b in first_items(run_first, 2)], late

    batches, late = asyncio.run(main())
    assert [b.sequence_number for b in batches] == [1, 2] and [b.sequence_number for b in late] == [2]
    first = batches[0].events[0].stored
    assert [list(b.token_ids) for b in first.blocks] == [list(range(10)), list(range(10, 20)), list(range(20, 30))]
    assert not first.HasField("parent_block_hash")
    second = batches[1].events
    assert second[0].stored.parent_block_hash == first.blocks[1].block_hash
    assert list(second[1].removed.block_hashes) == [first.blocks[2].block_hash]


def test_cached_tokens_and_loads_reach_the_gateway(llama):
    """The engine reports its cached prompt tokens in every chunk and its completion; the client
    sees them as usage.prompt_tokens_details.cached_tokens; GetLoads reports the cache's use."""
    async def main():
        engine = ReferenceEngine(llama, prefix_cache_tokens=10_000, prefill_us_per_token=50)
        server = engine.server()
        port = await server.start()
        gateway = Gateway([f"grpc://127.0.0.1:{port}"], tokenizer="llama3.2", chat_template="llama3")
        try:
            async with gateway:
                body = {"model": "smg-reference", "max_tokens": 4,
                        "messages": [{"role": "system", "content": "You are terse. " * 50},
                                     {"role": "user", "content": "Hello"}]}
                first = await gateway.chat(body)
                second = await gateway.chat(body)
                streamed = [c async for c in gateway.chat_stream({**body, "stream": True,
                                                                  "stream_options": {"include_usage": True}})]
                worker = gateway.default_model.pool.workers[0]
                loads = await worker.adapter.loads(2.0)
        finally:
            await server.stop()
        return first, second, streamed[-1].usage, loads

    first, second, streamed_usage, loads = run(main())
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    # the prompt (and the output) were cached in blocks of 16: every whole block of the prompt hits
    assert second.usage.prompt_tokens_details.cached_tokens == second.usage.prompt_tokens // 16 * 16 > 0
    assert streamed_usage.prompt_tokens_details.cached_tokens == streamed_usage.prompt_tokens // 16 * 16
    load = loads["loads"][0]
    assert 0 < load["token_usage"] < 1 and load["num_used_tokens"] > 0 and load["max_total_num_tokens"] == 10_000


def test_a_routing_key_header_or_the_user_pins_a_session_to_one_worker(llama):
    """`manual` by the X-SMG-Routing-Key header (through the HTTP app) and by the request's user
    (the library call): every request of a session lands on one of three workers."""
    async def main():
        servers = [ReferenceEngine(llama).server() for _ in range(3)]
        ports = [await s.start() for s in servers]
        gateway = Gateway([f"grpc://127.0.0.1:{p}" for p in ports], tokenizer="llama3.2", chat_template="llama3",
                          policy="manual")
        pool = gateway.default_model.pool
        served = {}
        try:
            async with gateway:
                app = create_app(gateway)
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://smg") as client:
                    for session in ("alice", "bob", "carol"):
                        before = {w.url: w.served for w in pool.workers}
                        for turn in range(4):
                            body = {"messages": [{"role": "user", "content": f"turn {turn}"}], "max_tokens": 2}
                            if session == "carol":  # the user field, through the library
                                await gateway.chat({**body, "user": "carol"})
                            else:
                                reply = await client.post("/v1/chat/completions", json=body,
                                                          headers={"X-SMG-Routing-Key": session})
                                assert reply.status_code == 200, reply.text
                        served[session] = {w.url: w.served - before[w.url] for w in pool.workers}
        finally:
            for s in servers:
                await s.stop()
        return served

    for session, counts in run(main()).items():
        assert sorted(counts.values()) == [0, 0, 4], (session, counts)


def test_a_worker_removed_mid_request_finishes_it_and_leaves_the_policy(llama):
    async def main():
        servers = [ReferenceEngine(llama, delay_ms=5).server() for _ in range(2)]
        urls = [f"grpc://127.0.0.1:{await s.start()}" for s in servers]
        pool = WorkerPool(urls, PoolConfig(policy="cache_aware"))
        try:
            async with pool:
                request = GenerateRequest("r", list(range(100, 400)), SamplingOptions(max_new_tokens=20))
                chosen = pool.pick(RequestView(request.input_ids))
                outs = []

                async def consume():
                    async with contextlib.aclosing(pool.generate(request, chosen)) as stream:
                        async for out in stream:
                            outs.append(out)

                task = asyncio.create_task(consume())
                await asyncio.sleep(0.03)  # streaming now
                pool.policy.on_routed(RequestView(request.input_ids), chosen)  # (what an unpinned call does)
                size_before = pool.policy.tree.size
                await pool.remove_worker(chosen.url, grace=10)
                await task
                other = pool.pick(RequestView(request.input_ids))
                return outs, size_before, pool.policy.tree.size, other.url != chosen.url
        finally:
            for s in servers:
                await s.stop()

    outs, size_before, size_after, moved = run(main())
    assert outs[-1].finished and sum(len(o.token_ids) for o in outs if not o.finished) == 20
    assert size_before == 300 and size_after == 0 and moved


def test_no_healthy_worker_is_a_503_in_the_openai_shape(llama):
    async def main():
        gateway = Gateway(["grpc://127.0.0.1:1"], chat_template="llama3", tokenizer="llama3.2",
                          model="m")
        async with gateway:
            client = openai.AsyncOpenAI(base_url="http://smg/v1", api_key="none", max_retries=0,
                                        http_client=httpx.AsyncClient(transport=httpx.ASGITransport(create_app(gateway))))
            with pytest.raises(openai.APIStatusError) as caught:
                await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            return caught.value

    error = run(main())
    assert error.status_code == 503 and "no healthy engine worker" in error.message


def test_an_application_plugs_its_own_policy(llama):
    """Any object with select and the three hooks routes a pool's requests."""
    class LastWorker:
        name = "last"

        def __init__(self):
            self.events = []

        def select(self, request, workers):
            return workers[-1]

        def on_routed(self, request, worker):
            self.events.append(("routed", worker.url, len(request.token_ids)))

        def on_finished(self, request, worker):
            self.events.append(("finished", worker.url))

        def on_removed(self, worker):
            self.events.append(("removed", worker.url))

    async def main():
        servers = [ReferenceEngine(llama).server() for _ in range(2)]
        urls = [f"grpc://127.0.0.1:{await s.start()}" for s in servers]
        policy = LastWorker()
        try:
            async with WorkerPool(urls, policy=policy) as pool:
                for _ in range(2):
                    request = GenerateRequest("r", [1, 2, 3], SamplingOptions(max_new_tokens=2))
                    async with contextlib.aclosing(pool.generate(request)) as stream:
                        async for _ in stream:
                            pass
                await pool.remove_worker(urls[1])
        finally:
            for s in servers:
                await s.stop()
        return urls, policy.events

    urls, events = run(main())
    assert events == [("routed", urls[1], 3), ("finished", urls[1])] * 2 + [("removed", urls[1])]
