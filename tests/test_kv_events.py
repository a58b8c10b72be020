"""KV-event routing: the gateway's index of what each engine holds, built from the engines' own
events (the reference engine's simulated cache publishes them), and the feed that follows them
(resuming after a dropped subscription, rebuilding after a gap, giving up on engines without it)."""
from __future__ import annotations

import asyncio
import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st
from conftest import until

from smg.config import PoolConfig
from smg.engine import ReferenceEngine
from smg.engine.kv_cache import SimulatedPrefixCache
from smg.engines.base import GenerateRequest, SamplingOptions
from smg.engines.pool import WorkerPool
from smg.policies.kv_index import LIVE, PARTIAL, UNSUPPORTED, KvIndex


def _batches(cache: SimulatedPrefixCache, prompts):
    """Store ``prompts`` in the cache and return the batches it published."""
    for prompt in prompts:
        cache.store(prompt)
    return cache.history()


_prompt = st.lists(st.integers(0, 3), min_size=0, max_size=30)  # small alphabet: shared prefixes


@settings(max_examples=150, deadline=None)
@given(prompts=st.lists(_prompt, max_size=25), probes=st.lists(_prompt, max_size=10), capacity=st.integers(4, 60))
def test_the_index_holds_what_the_engines_cache_holds(prompts, probes, capacity):
    """Whatever an engine stores and evicts, the index built from its events finds, for any
    prompt, exactly the cached tokens the engine itself would report."""
    cache = SimulatedPrefixCache(capacity_tokens=capacity, block_size=4)
    index = KvIndex()
    index.reset("w", LIVE)
    for batch in _batches(cache, prompts):
        index.apply("w", batch.events)
    for probe in prompts + probes:
        longest, holders = index.longest(probe)
        assert longest == cache.cached(probe)
        assert holders == ({"w"} if longest else set())


def test_the_longest_match_is_per_worker_and_a_cleared_cache_empties_it():
    index = KvIndex()
    shared, tail = list(range(32)), list(range(100, 116))
    for url, prompt in (("a", shared + tail), ("b", shared)):
        cache = SimulatedPrefixCache(capacity_tokens=1000, block_size=16)
        index.reset(url, LIVE)
        for batch in _batches(cache, [prompt]):
            index.apply(url, batch.events)
    assert index.longest(shared + tail + [1]) == (48, {"a"})
    assert index.longest(shared + [5] * 16) == (32, {"a", "b"})
    assert index.longest([9] * 40) == (0, set())

    class Cleared:
        @staticmethod
        def WhichOneof(_):
            return "cleared"

    index.apply("a", [Cleared()])
    assert index.longest(shared + tail) == (32, {"b"}) and index.live("a")
    index.forget("b")
    assert index.longest(shared) == (0, set()) and index.state("b") is None


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_the_feed_resumes_after_a_dropped_subscription_and_rebuilds_after_a_gap(llama):
    engine = ReferenceEngine(llama)
    engine.prefix_cache = SimulatedPrefixCache(capacity_tokens=100_000, block_size=16, history=3)
    bare = ReferenceEngine(llama)  # no simulated cache: SubscribeKvEvents is UNIMPLEMENTED

    async def generate(pool, worker, prompt):
        request = GenerateRequest(f"r{prompt[0]}", prompt, SamplingOptions(max_new_tokens=2))
        async with contextlib.aclosing(pool.generate(request, worker)) as stream:
            async for _ in stream:
                pass

    async def main():
        servers = [engine.server(), bare.server()]
        urls = [f"grpc://127.0.0.1:{await s.start()}" for s in servers]
        try:
            async with WorkerPool(urls, PoolConfig(policy="kv_events")) as pool:
                index = pool.policy.kv_index
                cached, plain = pool.workers
                prompts = [[1000 * k + i for i in range(64)] for k in range(1, 9)]
                await generate(pool, cached, prompts[0])
                await until(lambda: index.longest(prompts[0])[0] == 64)
                assert index.state(cached.url) == LIVE
                await until(lambda: index.state(plain.url) == UNSUPPORTED)

                # dropped: two batches published meanwhile, still in the history: resumed, no gap
                engine.prefix_cache.disconnect_subscribers()
                for prompt in prompts[1:2]:
                    await generate(pool, cached, prompt)
                await until(lambda: index.longest(prompts[1])[0] == 64)
                states = [index.state(cached.url)]

                # dropped again, and more published than the history keeps: a gap
                engine.prefix_cache.disconnect_subscribers()
                for prompt in prompts[2:7]:
                    await generate(pool, cached, prompt)
                await until(lambda: index.longest(prompts[6])[0] == 64)
                states.append(index.state(cached.url))
                return states, index.longest(prompts[0])[0], cached.reported_load
        finally:
            for server in servers:
                await server.stop()

    states, first_prompt_known, load = run(main())
    assert states == [LIVE, PARTIAL]  # the history no longer reaches batch 1: the index stays partial
    assert first_prompt_known == 0  # what came before the gap was dropped, not trusted
    assert load == 1.0  # the load record of the last batch, published as its request finished


class _Call:
    """A stand-in for a SubscribeKvEvents call: the batches, then the stream's end."""

    def __init__(self, batches):
        self._batches = list(batches)

    def __aiter__(self):
        return self

    async def __anext__(self):
        if not self._batches:
            await asyncio.sleep(3600)  # (a live stream waits for more)
        return self._batches.pop(0)

    def cancel(self):
        return True


class _Worker:
    def __init__(self, url, calls):
        self.url, self.reported_load, self._calls = url, 0.0, list(calls)
        self.adapter = self
        self.afters = []

    def kv_events(self, after):
        self.afters.append(after)
        return self._calls.pop(0) if self._calls else _Call([])


def test_a_relays_snapshot_resyncs_the_index_and_says_when_it_is_partial():
    """Batches from a relay holding no history back to the engine's start: its snapshot (chunk 0
    clears, the rest list the live blocks) makes the index whole again, unless the relay says it
    missed the engine's first batches (``unknown_before``)."""
    from smg_grpc_proto.generated import common_pb2 as cpb

    from smg.engines.kv_events import KvEventFeed

    cache = SimulatedPrefixCache(capacity_tokens=1000, block_size=4)
    stored = _batches(cache, [list(range(8))])[0]

    def snapshot(number, chunk, unknown=0, events=()):
        batch = cpb.KvEventBatch(sequence_number=number, events=list(events))
        batch.snapshot.CopyFrom(cpb.KvSnapshotChunk(index=chunk, count=2, unknown_before=unknown))
        return batch

    cleared = cpb.KvCacheEvent(cleared=cpb.KvCacheCleared())
    outcomes = []
    for unknown in (0, 5):
        index = KvIndex()
        worker = _Worker("w", [_Call([snapshot(41, 0, unknown, [cleared]), snapshot(42, 1, unknown, stored.events)])])

        async def main():
            feed = KvEventFeed(index)
            feed.follow(worker)
            await until(lambda: index.longest(list(range(8)))[0] == 8)
            outcome = (index.state("w"), worker.afters)
            await feed.close()
            return outcome
        outcomes.append(run(main()))
    assert outcomes == [(LIVE, [0]), (PARTIAL, [0])]  # no resubscription: a snapshot is no gap


def test_load_records_reach_a_least_load_pool_between_probes(llama):
    """With ``load_records``, a pool whose policy is not kv_events follows the event stream for the
    load on its batches alone: the engine's count shows while a request runs, long before the
    next GetLoads probe (an hour away here)."""
    from smg.config import RoutingConfig

    engine = ReferenceEngine(llama, delay_ms=20, prefix_cache_tokens=10_000)

    async def main(load_records):
        server = engine.server()
        port = await server.start()
        config = PoolConfig(policy="least_load", health_interval=3600,
                            routing=RoutingConfig(load_records=load_records))
        try:
            async with WorkerPool([f"grpc://127.0.0.1:{port}"], config) as pool:
                worker = pool.workers[0]
                await asyncio.sleep(0.2)  # (subscribed)
                request = GenerateRequest("slow", list(range(64)), SamplingOptions(max_new_tokens=30))
                seen = []
                async with contextlib.aclosing(pool.generate(request)) as stream:
                    async for _ in stream:
                        seen.append(worker.reported_load)
                return set(seen)
        finally:
            await server.stop()

    assert 1.0 in run(main(True))  # the record published at the prompt's prefill: one running
    assert run(main(False)) == {0.0}  # GetLoads alone: only the probe at the start, when idle
