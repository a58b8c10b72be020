"""``wait_within``: ``asyncio.wait_for`` without its flaw before Python 3.12."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_within(awaitable: Awaitable[T], seconds: float) -> T:
    """Await ``awaitable`` for at most ``seconds``: its result, or ``asyncio.TimeoutError`` once it
    has been cancelled. Unlike ``asyncio.wait_for`` on 3.10 and 3.11, a cancellation of the caller
    that arrives as the awaitable ends is raised, not dropped: a request whose client leaves at
    that moment would otherwise go on (an MCP tool call run for nobody, seen in CI). The
    awaitable runs in a task of its own, as under ``wait_for``; the caller's cancellation cancels
    it without waiting for it to end."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait((task,), timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        await asyncio.wait((task,))  # (its own clean-up, such as a courtesy cancel to a peer, first)
        raise asyncio.TimeoutError
    return task.result()
