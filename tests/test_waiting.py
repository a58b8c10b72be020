"""``smg.waiting.wait_within``: a timeout that never drops its caller's cancellation."""
import asyncio

import pytest

from smg.waiting import wait_within


def test_a_cancellation_that_comes_as_the_awaitable_ends_is_raised():
    """asyncio.wait_for on 3.10/3.11 returns the result here, and the caller runs on uncancelled."""
    async def main():
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        caller = asyncio.ensure_future(wait_within(ready, 5))
        await asyncio.sleep(0)  # the caller waits
        ready.set_result("done")
        caller.cancel()  # in the same turn of the loop: a client leaving as its tool call returns
        with pytest.raises(asyncio.CancelledError):
            await caller
    asyncio.run(main())


def test_a_result_in_time_and_a_timeout_that_cancels_the_awaitable():
    async def main():
        assert await wait_within(asyncio.sleep(0.01, "slept"), 5) == "slept"
        cancelled = asyncio.Event()

        async def slow():
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        with pytest.raises(asyncio.TimeoutError):
            await wait_within(slow(), 0.05)
        assert cancelled.is_set()  # ended before the timeout is raised
    asyncio.run(main())


def test_the_callers_cancellation_cancels_the_awaitable():
    async def main():
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def slow():
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        caller = asyncio.ensure_future(wait_within(slow(), 10))
        await started.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.wait_for(cancelled.wait(), 1)
    asyncio.run(main())
