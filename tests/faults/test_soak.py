"""A soak: 256 concurrent streams for 10 s (60 s in benchmarks/bench_soak.py): no errors, the
gateway's memory flat within 10% once warm."""
import asyncio

import pytest

from benchmarks.bench_soak import Stack, soak

pytestmark = pytest.mark.end_to_end


def test_256_concurrent_streams_for_10_seconds():
    with Stack() as stack:
        result = asyncio.run(soak(stack.base, stack.gateway.pid, seconds=10, concurrency=256))
    assert not result.errors, result.errors[:5]
    assert result.streams > 256 and result.memory_growth <= 1.10, result.rss
    print(f"p99 {result.percentile(99):.0f} ms over {result.streams} streams")  # (shown with -rP)
