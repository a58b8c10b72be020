"""Helpers shared by the benchmarks: timing, and running an engine in another process."""
from __future__ import annotations

import asyncio
import os
import socket
import statistics
import time


def median_seconds(fn, repeat: int, number: int = 1) -> float:
    """Median seconds per call of fn over `repeat` loops of `number` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def seconds_per_call(fn, repeat: int, sample_seconds: float = 0.02) -> float:
    """``median_seconds`` with each sample ~``sample_seconds`` long, so sub-millisecond calls are
    not timed one at a time (a single fast call is at the mercy of timer and cache noise)."""
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    return median_seconds(fn, repeat, max(1, int(sample_seconds / max(once, 1e-9))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float = 10.0) -> None:
    """Until something listens on 127.0.0.1:``port`` (an engine just started)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing listens on port {port} after {seconds:g} s") from None
            time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(core: int):
    """A ``preexec_fn`` pinning a child to ``core`` on a 2-core machine (None elsewhere)."""
    if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        return lambda: os.sched_setaffinity(0, {core})
    return None


def pin_self(core: int) -> None:
    if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})


def run(coro) -> None:
    """Run on uvloop (what `smg serve` runs on) when it is installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
        return
    uvloop.run(coro)
