"""Worker-pool streaming benchmark: smg's gRPC client against the reference engine on loopback.

    python -m benchmarks.bench_pool [--quick] [--tokens 256] [--conc 1,16,64,256]

The reference engine runs as its own process (``python -m smg engine --reference``, one token per
chunk, no delay), pinned to core 1 when the machine has two cores; this process, the pool, is
pinned to core 0. For each concurrency level it streams requests of ``--tokens`` output tokens
for a few seconds and reports output tokens/s and the pool's own CPU time per 1,000 tokens.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time

from benchmarks._common import free_port, pin, pin_self, run
from smg.engines import GenerateRequest, SamplingOptions
from smg.engines.pool import WorkerPool



async def level(pool: WorkerPool, concurrency: int, tokens: int, seconds: float) -> tuple[float, float, int]:
    stop_at = time.perf_counter() + seconds
    counted = 0
    requests = 0

    async def client(c: int) -> None:
        nonlocal counted, requests
        i = 0
        while time.perf_counter() < stop_at:
            request = GenerateRequest(f"b{c}-{i}", [1, 2, 3, 4], SamplingOptions(max_new_tokens=tokens))
            async with contextlib.aclosing(pool.generate(request)) as stream:
                async for out in stream:
                    if not out.finished:
                        counted += len(out.token_ids)
            requests += 1
            i += 1

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return counted / wall, 1e6 * cpu / max(counted, 1), requests  # CPU ms per 1,000 tokens


async def main_async(args) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "smg", "engine", "--reference", "--port", str(port)]
    engine = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              preexec_fn=pin(1))
    pin_self(0)
    try:
        engine.stdout.readline()  # "reference engine serving on ..."
        async with WorkerPool([f"grpc://127.0.0.1:{port}"]) as pool:
            print(f"{'concurrency':>11} | {'tokens/s':>9} | {'pool CPU ms / 1k tok':>20} | {'requests':>8}")
            for concurrency in [int(c) for c in args.conc.split(",")]:
                rate, cpu_ms, n = await level(pool, concurrency, args.tokens, args.seconds)
                print(f"{concurrency:>11} | {rate:>9.0f} | {cpu_ms:>20.1f} | {n:>8}")
    finally:
        engine.terminate()
        engine.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--conc", default="1,16,64,256")
    args = parser.parse_args()
    args.seconds = 2.0 if args.quick else 6.0
    run(main_async(args))


if __name__ == "__main__":
    main()
