"""Routing policies, unit by unit: workers here are plain records (what a policy reads of
``smg.engines.pool.Worker``); the pool and engines come in test_routing_e2e.py."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from smg.config import ConfigError, PoolConfig, RoutingConfig
from smg.errors import NoHealthyWorker
from smg.policies import POLICIES, RequestView, RoutedWorker, make_policy


@dataclass(eq=False)
class FakeWorker:
    url: str
    in_flight: int = 0
    reported_load: float = 0.0

    @property
    def load(self) -> float:
        return max(self.in_flight, self.reported_load)


def workers(n: int) -> list[FakeWorker]:
    return [FakeWorker(f"grpc://10.0.0.{i}:30000") for i in range(n)]


def route(policy, view: RequestView, pool: list[FakeWorker]) -> FakeWorker:
    """What the pool does: select, then tell the policy."""
    chosen = policy.select(view, pool)
    policy.on_routed(view, chosen)
    return chosen


def prompt(seed: int, length: int, shared: list[int] = ()) -> list[int]:
    rng = random.Random(seed)
    return list(shared) + [rng.randrange(1000, 100_000) for _ in range(length)]


def test_every_policy_refuses_no_workers_and_takes_the_only_one():
    assert FakeWorker("x").load == 0 and isinstance(FakeWorker("x"), RoutedWorker)
    for name in POLICIES:
        policy = make_policy(name)
        assert policy.name == name
        with pytest.raises(NoHealthyWorker):
            policy.select(RequestView([1, 2, 3]), [])
        only = workers(1)
        assert route(policy, RequestView([1, 2, 3], "k"), only) is only[0]


def test_an_unknown_policy_or_bad_setting_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown policy"):
        PoolConfig(policy="fastest")
    with pytest.raises(ConfigError, match="cache_threshold"):
        RoutingConfig(cache_threshold=1.5)
    with pytest.raises(ConfigError, match="balance_rel_threshold"):
        RoutingConfig(balance_rel_threshold=0.5)
    assert PoolConfig().policy == "cache_aware"


def test_round_robin_and_random_are_fair():
    pool = workers(4)
    rr = make_policy("round_robin")
    assert Counter(route(rr, RequestView(), pool).url for _ in range(400)) == {w.url: 100 for w in pool}
    rnd = make_policy("random")
    counts = Counter(route(rnd, RequestView(), pool).url for _ in range(4000))
    assert set(counts) == {w.url for w in pool} and all(800 < c < 1200 for c in counts.values())


def test_power_of_two_and_least_load_read_the_engines_reports_too():
    pool = workers(3)
    pool[0].in_flight, pool[1].reported_load, pool[2].in_flight = 5, 9, 1  # 1 is busy with others' work
    least = make_policy("least_load")
    assert all(route(least, RequestView(), pool) is pool[2] for _ in range(20))
    two = make_policy("power_of_two")
    picks = Counter(route(two, RequestView(), pool).url for _ in range(600))
    assert picks[pool[1].url] == 0  # the busiest never wins a draw
    assert picks[pool[2].url] > picks[pool[0].url] > 0


def test_least_load_spreads_ties_at_random():
    pool = workers(4)
    picks = Counter(route(make_policy("least_load"), RequestView(), pool).url for _ in range(400))
    assert len(picks) == 4  # not "the first worker" every time


class TestCacheAware:
    def test_a_prompts_continuations_follow_its_prefix(self):
        policy, pool = make_policy("cache_aware"), workers(4)
        systems = [prompt(100 + s, 400) for s in range(4)]
        homes = {}
        for turn in range(6):
            for s, system in enumerate(systems):
                chosen = route(policy, RequestView(system + prompt(turn * 10 + s, 50)), pool)
                homes.setdefault(s, chosen.url)
                assert chosen.url == homes[s], (turn, s)
        assert len(set(homes.values())) == 4  # new prefixes spread: each to the worker with the smallest tree

    def test_below_the_threshold_the_least_loaded_wins(self):
        policy, pool = make_policy("cache_aware", RoutingConfig(cache_threshold=0.5)), workers(2)
        shared = prompt(1, 100)
        first = route(policy, RequestView(shared + prompt(2, 10)), pool)
        first.in_flight = 3
        # 100 of 400 ids match: 25% < 50%, so the idle worker takes it
        assert route(policy, RequestView(shared + prompt(3, 300)), pool) is not first
        # both now hold the shared 100; the first also the next 10: 110 of 130 ids, so the longer
        # match wins over load (the guard allows 3 vs 0)...
        assert route(policy, RequestView(shared + prompt(2, 10) + prompt(4, 20)), pool) is first
        # ...and between equal matches, load decides
        assert route(policy, RequestView(shared + prompt(5, 20)), pool) is not first

    def test_the_balance_guard_falls_back_to_load(self):
        config = RoutingConfig(balance_abs_threshold=4, balance_rel_threshold=1.5)
        policy, pool = make_policy("cache_aware", config), workers(2)
        shared = prompt(7, 200)
        home = route(policy, RequestView(shared + [1]), pool)
        other = next(w for w in pool if w is not home)
        home.in_flight = 4  # 4 - 0 is not more than 4: still balanced
        assert route(policy, RequestView(shared + [2]), pool) is home
        home.in_flight = 5  # past both thresholds: load decides
        assert route(policy, RequestView(shared + [3]), pool) is other
        other.in_flight = 4  # 5 vs 4: balanced again, the longest match wins
        assert route(policy, RequestView(shared + [1, 9]), pool) is home

    def test_a_routing_key_pins_a_session_until_its_worker_is_overloaded_or_gone(self):
        config = RoutingConfig(balance_abs_threshold=2, balance_rel_threshold=1.5)
        policy, pool = make_policy("cache_aware", config), workers(3)
        home = route(policy, RequestView(prompt(1, 30), "alice"), pool)
        for seed in range(2, 8):  # unrelated prompts, same session: the key holds
            assert route(policy, RequestView(prompt(seed, 30), "alice"), pool) is home
        home.in_flight = 3  # 3 over an idle worker and more than 1.5x: re-routed, and re-pinned
        moved = route(policy, RequestView(prompt(9, 30), "alice"), pool)
        assert moved is not home
        assert route(policy, RequestView(prompt(10, 30), "alice"), pool) is moved
        policy.on_removed(moved)
        rest = [w for w in pool if w is not moved]
        assert route(policy, RequestView(prompt(11, 30), "alice"), rest) in rest

    def test_one_worker_records_nothing_and_a_removed_worker_leaves_the_tree(self):
        policy, pool = make_policy("cache_aware"), workers(1)
        route(policy, RequestView(prompt(1, 100)), pool)
        assert policy.tree.size == 0
        pool = workers(2)
        chosen = route(policy, RequestView(prompt(1, 100)), pool)
        assert policy.tree.size == 100 and policy.tree.match(prompt(1, 100))[0][1] == 100
        policy.on_removed(chosen)
        assert policy.tree.size == 0

    def test_the_tree_stays_within_its_bound_per_worker(self):
        policy, pool = make_policy("cache_aware", RoutingConfig(max_tree_tokens=1000)), workers(2)
        for seed in range(100):
            route(policy, RequestView(prompt(seed, 50)), pool)
        assert all(policy.tree.tenant_tokens(t) <= 1000 for t in range(2))
        assert policy.tree.size <= 2000


def test_consistent_hashing_moves_about_one_nth_of_the_keys_when_a_worker_leaves():
    policy, pool = make_policy("consistent_hashing"), workers(8)
    keys = [f"user-{i}" for i in range(4000)]
    before = {k: route(policy, RequestView((), k), pool).url for k in keys}
    assert all(route(policy, RequestView(prompt(5, 9), k), pool).url == before[k] for k in keys[:200])  # key, not prompt
    leaving = pool[3]
    after = {k: route(policy, RequestView((), k), [w for w in pool if w is not leaving]).url for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == leaving.url for k in moved)  # only the leaver's keys move
    assert 0.06 < len(moved) / len(keys) < 0.20  # about 1/8
    counts = Counter(before.values())
    assert len(counts) == 8 and max(counts.values()) < 2.2 * min(counts.values())


def test_prefix_hash_sends_prompts_opening_alike_to_one_worker():
    policy, pool = make_policy("prefix_hash", RoutingConfig(prefix_hash_tokens=64)), workers(4)
    shared = prompt(1, 64)
    homes = {route(policy, RequestView(shared + prompt(s, 20)), pool).url for s in range(50)}
    assert len(homes) == 1
    spread = Counter(route(policy, RequestView(prompt(s, 80)), pool).url for s in range(400))
    assert len(spread) == 4


def test_manual_pins_keys_and_repins_when_the_worker_goes_away():
    policy, pool = make_policy("manual"), workers(3)
    homes = {}
    for key in ("a", "b", "c"):
        homes[key] = route(policy, RequestView((), key), pool)
        homes[key].in_flight += 1  # (as the pool counts it)
    assert len({w.url for w in homes.values()}) == 3  # a key's first request goes to the least loaded
    for w in homes.values():
        w.in_flight = 10
    assert all(route(policy, RequestView((), k), pool) is homes[k] for k in homes)  # load does not move a pin
    gone = homes["a"]
    policy.on_removed(gone)
    rest = [w for w in pool if w is not gone]
    new_home = route(policy, RequestView((), "a"), rest)
    assert new_home in rest and route(policy, RequestView((), "a"), rest) is new_home


def test_bucket_sends_short_and_long_prompts_to_different_workers():
    policy, pool = make_policy("bucket"), workers(2)
    for n in range(200):  # lengths learnt: half short, half long
        route(policy, RequestView([0] * (100 if n % 2 else 5000)), pool)
    short = {route(policy, RequestView([0] * 90), pool).url for _ in range(20)}
    long = {route(policy, RequestView([0] * 6000), pool).url for _ in range(20)}
    assert len(short) == len(long) == 1 and short != long
    ordered = sorted(pool, key=lambda w: w.url)
    assert short == {ordered[0].url}
    ordered[0].in_flight = 100  # overloaded past the guard: its band spills to the least loaded
    assert route(policy, RequestView([0] * 90), pool) is ordered[1]


def test_kv_events_trusts_the_engines_reports_and_falls_back_for_the_rest():
    from smg.engine.kv_cache import SimulatedPrefixCache
    from smg.policies.kv_index import LIVE, UNSUPPORTED

    policy, pool = make_policy("kv_events"), workers(3)
    a, b, c = pool
    shared = prompt(3, 64)
    # the tree would say `a` (it was sent the prompt), but a's engine reports nothing; b's holds it
    route(policy, RequestView(shared), [a, b])
    cache = SimulatedPrefixCache(capacity_tokens=1000, block_size=16)
    cache.store(shared)
    policy.kv_index.reset(a.url, LIVE)
    policy.kv_index.reset(b.url, LIVE)
    for batch in cache.history():
        policy.kv_index.apply(b.url, batch.events)
    assert route(policy, RequestView(shared + [1]), [a, b]) is b
    # c has no KV events: the approximation stands for it (it was sent a longer prompt)
    policy.kv_index.reset(c.url, UNSUPPORTED)
    longer = shared + prompt(4, 64)
    a.in_flight = 1  # (so the longer prompt, matching nowhere past half, goes to c)
    assert route(policy, RequestView(longer), [a, c]) is c
    a.in_flight = 0
    assert route(policy, RequestView(longer + [2]), pool) is c  # c's 128 by the tree beat b's 64 exact
    assert route(policy, RequestView(shared + [3]), [a, b]) is b


def test_cache_aware_processes_of_one_server_learn_each_others_routes(tmp_path):
    """smg serve --workers N: a prompt one process routed is matched by its sibling, which sends
    the conversation's next turn to the same worker (smg.policies.siblings)."""
    import asyncio

    from smg.policies.siblings import SiblingRoutes

    pool = workers(4)
    served = {w.url for w in pool}

    async def main():
        ends = [SiblingRoutes(str(tmp_path), name) for name in ("one", "two")]
        policies = [make_policy("cache_aware", RoutingConfig()) for _ in ends]
        for end, policy in zip(ends, policies):
            end.start()
            end.attach("model", policy, served.__contains__)
        try:
            turns = [prompt(seed, 400) for seed in range(12)]
            chosen = [route(policies[0], RequestView(turn), pool) for turn in turns]  # all on process one
            for _ in range(100):  # (a datagram per route and sibling, taken by the loop)
                if ends[1].learned == len(turns):
                    break
                await asyncio.sleep(0.01)
            assert ends[0].sent == len(turns) and ends[1].learned == len(turns)
            for turn, worker in zip(turns, chosen):  # the next turns, on process two
                assert route(policies[1], RequestView(turn + prompt(99, 30)), pool) is worker
            for seed in range(1000, 1200):  # a burst in one turn of the loop: sent in datagrams of ~96 KiB
                route(policies[0], RequestView(prompt(seed, 400)), pool)
            for _ in range(100):
                if ends[1].learned == len(turns) + 200:
                    break
                await asyncio.sleep(0.01)
            assert ends[1].learned == len(turns) + 200 and ends[0].dropped == 0
            ends[1].attach("model", policies[1], lambda url: False)  # a worker it does not have: ignored
            route(policies[0], RequestView(prompt(500, 400)), pool)
            await asyncio.sleep(0.05)
            assert ends[1].learned == len(turns) + 200
        finally:
            for end in ends:
                end.close()
        assert not list(tmp_path.iterdir())  # each end removed its socket

    asyncio.run(main())


def test_stateful_policies_report_what_they_keep():
    from smg.policies.base import ReportsState

    pool = workers(3)
    for name in ("cache_aware", "kv_events", "manual", "bucket"):
        policy = make_policy(name, RoutingConfig())
        assert isinstance(policy, ReportsState)
        for seed in range(6):
            route(policy, RequestView(prompt(seed, 50 + 10 * seed), f"user-{seed % 2}"), pool)
        state = policy.state()
        if name in ("cache_aware", "kv_events"):
            assert state["tree_tokens"] == sum(state["tree_tokens_by_worker"].values()) > 0
            assert state["routing_keys"] == 2 and sum(state["routing_keys_by_worker"].values()) == 2
        if name == "kv_events":
            assert state["kv_index"]["workers"] == {}  # (no engine reported events here)
        if name == "manual":
            assert state == {"routing_keys": 2, "routing_keys_by_worker": state["routing_keys_by_worker"]}
        if name == "bucket":
            assert len(state["band_bounds"]) == 2 and state["recent_prompts"] == 6
    assert not isinstance(make_policy("round_robin", RoutingConfig()), ReportsState)
