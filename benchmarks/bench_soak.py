"""A soak: 256 concurrent streams against `smg serve` in front of the reference engine for a minute
(``tests/faults/test_soak.py`` runs it for 10 s): errors, the gateway's memory over the run, and
stream latency percentiles.

    python -m benchmarks.bench_soak [--seconds 60] [--concurrency 256]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks._common import free_port, wait_for_port

BODY = {"model": "smg-reference", "stream": True, "max_tokens": 32,
        "messages": [{"role": "user", "content": "Tell me about the sea."}]}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class Soak:
    streams: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds into the run, MB)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1e3 if ordered else float("nan")

    @property
    def memory_growth(self) -> float:
        """RSS at the end over RSS once warm (after the first fifth of the run)."""
        warm = next(mb for at, mb in self.rss if at >= self.rss[-1][0] / 5)
        return self.rss[-1][1] / warm


async def soak(base: str, gateway_pid: int, seconds: float, concurrency: int) -> Soak:
    result = Soak()
    started = time.monotonic()
    deadline = started + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        async def user() -> None:
            while time.monotonic() < deadline:
                begun = time.monotonic()
                try:
                    async with client.stream("POST", "/v1/chat/completions", json=BODY) as reply:
                        body = b"".join([chunk async for chunk in reply.aiter_bytes()])
                    if reply.status_code != 200 or not body.rstrip().endswith(b"[DONE]") or b'"error"' in body:
                        result.errors.append(f"{reply.status_code}: {body[-200:]!r}")
                    else:
                        result.latencies.append(time.monotonic() - begun)
                except httpx.HTTPError as exc:
                    result.errors.append(repr(exc))
                result.streams += 1

        async def watch() -> None:
            while time.monotonic() < deadline:
                result.rss.append((time.monotonic() - started, rss_mb(gateway_pid)))
                await asyncio.sleep(max(0.1, seconds / 50))
            result.rss.append((time.monotonic() - started, rss_mb(gateway_pid)))

        await asyncio.gather(watch(), *(user() for _ in range(concurrency)))
    return result


class Stack:
    """The reference engine and `smg serve`, each a process; a context manager."""

    def __enter__(self) -> "Stack":
        engine_port, self.port = free_port(), free_port()
        self.engine = subprocess.Popen([sys.executable, "-m", "smg", "engine", "--reference", "--port",
                                        str(engine_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(engine_port, 60)
        self.gateway = subprocess.Popen(
            [sys.executable, "-m", "smg", "serve", "--worker", f"grpc://127.0.0.1:{engine_port}", "--tokenizer",
             "llama3.2", "--chat-template", "llama3", "--storage", "memory", "--port", str(self.port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.gateway.stdout.readline().startswith("smg serving")
        self.base = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc) -> None:
        for proc in (self.gateway, self.engine):
            proc.terminate()
            proc.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=256)
    args = parser.parse_args()
    with Stack() as stack:
        result = asyncio.run(soak(stack.base, stack.gateway.pid, args.seconds, args.concurrency))
    warm = next(mb for at, mb in result.rss if at >= result.rss[-1][0] / 5)
    print(f"{args.concurrency} streams for {args.seconds:g} s: {result.streams} streams, {len(result.errors)} errors; "
          f"gateway RSS {result.rss[0][1]:.0f} MB at start, {warm:.0f} MB warm, {result.rss[-1][1]:.0f} MB at the end "
          f"(x{result.memory_growth:.3f}); stream latency p50 {result.percentile(50):.0f} ms, "
          f"p99 {result.percentile(99):.0f} ms, mean {statistics.mean(result.latencies) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
