"""Helpers shared by the benchmarks that run an engine in another process."""
from __future__ import annotations

import asyncio
import os
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
