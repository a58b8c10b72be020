"""Routing policies: what each costs per decision, and what each earns on a multi-turn workload.

1. Decisions per second per policy at 8 and 64 workers: ``select`` + ``on_routed`` on prompts of
   a chat workload (a few long shared system prompts, growing conversations), workers with loads.
2. Served: ``--engines`` reference engines with simulated prefix caches (``smg engine --reference
   --prefix-cache-tokens N --prefill-us-per-token U``, each its own process) behind ``smg serve
   --policy X``, driven by the official ``openai`` client: many users, each on one of a few long
   system prompts, each conversation growing turn by turn. Each engine's cache is too small to
   hold every system prompt, so only routing keeps hits high. Per policy: the fraction of prompt
   tokens served from cache (``usage.prompt_tokens_details.cached_tokens``) and TTFT p50.

    python -m benchmarks.bench_routing [--policies cache_aware,round_robin,...] [--users 64]
        [--gateway-processes 1,2]   (smg serve --workers: what routing loses when processes share traffic)

``tests/test_routing_e2e.py`` runs the served part small.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx

from benchmarks._common import free_port, wait_for_port
from smg.engine.reference import CORPUS

WORDS = CORPUS.split()


def system_prompts(count: int, words: int, seed: int = 0) -> list[str]:
    """``count`` distinct long system prompts (words of the reference corpus, shuffled per prompt)."""
    rng = random.Random(seed)
    return [f"You are assistant {i}. " + " ".join(rng.choice(WORDS) for _ in range(words)) for i in range(count)]


@dataclass
class Outcome:
    prompt_tokens: int = 0
    cached_tokens: int = 0
    ttfts: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def cached_fraction(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    @property
    def ttft_p50_ms(self) -> float:
        return statistics.median(self.ttfts) * 1e3 if self.ttfts else float("nan")


async def drive(base_url: str, systems: list[str], users: int, turns: int, concurrency: int,
                max_tokens: int = 8, with_user: bool = False) -> Outcome:
    """The multi-turn workload against an OpenAI endpoint: each user talks to one of the system
    prompts (drawn with the user's number as the seed, so no policy gains from an arrival pattern
    lined up with the prompts) for ``turns`` turns, each turn's request carrying the whole
    conversation; at most ``concurrency`` requests at once; users start in turn so conversations
    interleave."""
    import openai

    outcome = Outcome()
    gate = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="none", max_retries=0) as client:
        async def conversation(u: int) -> None:
            await asyncio.sleep(u * 0.002)
            messages = [{"role": "system", "content": systems[random.Random(u).randrange(len(systems))]}]
            for turn in range(turns):
                messages.append({"role": "user", "content": f"Question {turn} from user {u}: how does it go?"})
                async with gate:
                    started = time.perf_counter()
                    first = None
                    text = []
                    try:
                        stream = await client.chat.completions.create(
                            model="smg-reference", messages=messages, max_tokens=max_tokens, stream=True,
                            stream_options={"include_usage": True}, **({"user": f"user-{u}"} if with_user else {}))
                        async for chunk in stream:
                            if chunk.choices and chunk.choices[0].delta.content:
                                if first is None:
                                    first = time.perf_counter() - started
                                text.append(chunk.choices[0].delta.content)
                            if chunk.usage is not None:
                                outcome.prompt_tokens += chunk.usage.prompt_tokens
                                details = chunk.usage.prompt_tokens_details
                                outcome.cached_tokens += (details.cached_tokens or 0) if details else 0
                    except openai.APIError:
                        outcome.errors += 1
                        return
                if first is not None:
                    outcome.ttfts.append(first)
                messages.append({"role": "assistant", "content": "".join(text)})

        await asyncio.gather(*(conversation(u) for u in range(users)))
    return outcome


class Fleet:
    """Reference engines with simulated caches and one ``smg serve`` before them, each its own
    process; a context manager."""

    def __init__(self, engines: int, cache_tokens: int, prefill_us: float, policy: str,
                 gateway_processes: int = 1) -> None:
        self.engines, self.cache_tokens, self.prefill_us, self.policy = engines, cache_tokens, prefill_us, policy
        self.gateway_processes = gateway_processes
        self.procs: list[subprocess.Popen] = []
        self.url = ""

    def __enter__(self) -> "Fleet":
        try:
            ports = [free_port() for _ in range(self.engines)]
            for port in ports:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "smg", "engine", "--reference", "--port", str(port),
                     "--prefix-cache-tokens", str(self.cache_tokens), "--prefill-us-per-token", str(self.prefill_us)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for port in ports:
                wait_for_port(port, 60)
            http_port = free_port()
            workers = [arg for port in ports for arg in ("--worker", f"grpc://127.0.0.1:{port}")]
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "smg", "serve", *workers, "--tokenizer", "llama3.2", "--chat-template", "llama3", "--policy", self.policy,
                 "--port", str(http_port), "--log-level", "warning", "--workers", str(self.gateway_processes)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.url = f"http://127.0.0.1:{http_port}"
            deadline = time.monotonic() + 60
            while True:  # until every worker is healthy
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    models = httpx.get(f"{self.url}/readiness", timeout=2).json()["models"]
                    if sum(w["healthy"] for m in models.values() for w in m["workers"]) == self.engines:
                        break
                if time.monotonic() > deadline or self.procs[-1].poll() is not None:
                    raise RuntimeError("smg serve did not come up with every worker healthy")
                time.sleep(0.2)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()


def serve_one(policy: str, args, gateway_processes: int = 1) -> Outcome:
    systems = system_prompts(args.systems, args.system_words)
    with Fleet(args.engines, args.cache_tokens, args.prefill_us, policy, gateway_processes) as fleet:
        return asyncio.run(drive(fleet.url, systems, args.users, args.turns, args.concurrency,
                                 with_user=policy in ("consistent_hashing", "manual")))


# ---- decisions per second ---------------------------------------------------------------------------

def _report_held(index, pool, systems) -> None:
    """Each system prompt held by two workers' engines, as their KV events would say."""
    from smg.engine.kv_cache import SimulatedPrefixCache
    from smg.policies.kv_index import LIVE

    for i, worker in enumerate(pool):
        cache = SimulatedPrefixCache(capacity_tokens=1 << 20)
        index.reset(worker.url, LIVE)
        cache.store(systems[i % len(systems)])
        for batch in cache.history():
            index.apply(worker.url, batch.events)


def decision_cost(policy_name: str, workers: int, requests: int = 4000) -> float:
    """Microseconds per ``select`` + ``on_routed`` + ``on_finished`` on the chat workload's prompts
    (token ids as a tokenizer would give them: system prompt ids, then the conversation's)."""
    from smg.config import RoutingConfig
    from smg.engines.pool import Worker
    from smg.policies import KvEventConsumer, RequestView, make_policy

    rng = random.Random(1)
    systems = [[rng.randrange(128_000) for _ in range(1500)] for _ in range(8)]
    conversations = [list(systems[u % 8]) for u in range(256)]
    views = []
    for i in range(requests):
        convo = conversations[i % 256]
        convo += [rng.randrange(128_000) for _ in range(60)]  # a turn: question and answer
        views.append(RequestView(list(convo), f"user-{i % 256}"))
    pool = [Worker(f"grpc://10.0.{w // 250}.{w % 250}:30000", "sglang", None, None, healthy=True,
                   in_flight=rng.randrange(8)) for w in range(workers)]  # (the pool's own records)
    policy = make_policy(policy_name, RoutingConfig())
    for view in views[:64]:  # warm: rings built, trees holding the system prompts
        policy.on_routed(view, policy.select(view, pool))
    if isinstance(policy, KvEventConsumer):  # the engines report holding the system prompts
        _report_held(policy.kv_index, pool, systems)
    started = time.perf_counter()
    for view in views:
        worker = policy.select(view, pool)
        policy.on_routed(view, worker)
        policy.on_finished(view, worker)
    return (time.perf_counter() - started) / requests * 1e6


def main() -> None:
    from smg.policies import POLICIES

    parser = argparse.ArgumentParser()
    parser.add_argument("--policies", default="cache_aware,kv_events,round_robin,random,power_of_two,least_load,prefix_hash,"
                                              "consistent_hashing,manual,bucket")
    parser.add_argument("--engines", type=int, default=4)
    parser.add_argument("--cache-tokens", type=int, default=6000, help="each engine's simulated cache")
    parser.add_argument("--prefill-us", type=float, default=200.0, help="per uncached prompt token")
    parser.add_argument("--systems", type=int, default=8)
    parser.add_argument("--system-words", type=int, default=1200)
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--skip-served", action="store_true")
    parser.add_argument("--gateway-processes", default="1",
                        help="smg serve --workers for the served part, comma-separated (1,2: each policy at both)")
    args = parser.parse_args()
    policies = args.policies.split(",")
    unknown = set(policies) - set(POLICIES)
    if unknown:
        raise SystemExit(f"unknown policies: {sorted(unknown)}")

    print("routing decision (select + on_routed + on_finished), prompts of ~1.5-2k ids")
    print(f"{'policy':20} {'us, 8 workers':>14} {'decisions/s':>12} {'us, 64 workers':>15} {'decisions/s':>12}")
    for name in policies:
        few, many = decision_cost(name, 8), decision_cost(name, 64)
        print(f"{name:20} {few:14.1f} {1e6 / few:12,.0f} {many:15.1f} {1e6 / many:12,.0f}")
    if args.skip_served:
        return
    print(f"\nserved: {args.engines} engines, {args.cache_tokens}-token caches, {args.prefill_us:g} us/uncached "
          f"token; {args.users} users x {args.turns} turns on {args.systems} system prompts of "
          f"{args.system_words} words; {args.concurrency} at once")
    print(f"{'policy':20} {'processes':>9} {'cached':>7} {'TTFT p50 ms':>12} {'errors':>7}")
    for name in policies:
        for processes in map(int, args.gateway_processes.split(",")):
            outcome = serve_one(name, args, processes)
            print(f"{name:20} {processes:9d} {outcome.cached_fraction:7.1%} {outcome.ttft_p50_ms:12.1f} "
                  f"{outcome.errors:7d}", flush=True)


if __name__ == "__main__":
    main()
