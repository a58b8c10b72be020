"""What a server's worker processes share (smg.shared_state): admission slots and rate buckets.
Two SharedState objects on one file stand for two processes (flock excludes one open file from
another, in one process as in two); a real child process shows a dead process's slots come back."""
import asyncio
import subprocess
import sys

import pytest

from smg.admission import Gate
from smg.errors import Overloaded
from smg.rate_limit import KeyLimits
from smg.shared_state import SharedSlots, SharedState

pytestmark = pytest.mark.no_kernels


@pytest.fixture
def path(tmp_path):
    state = SharedState.create(str(tmp_path / "shared"))
    state.close()
    return str(tmp_path / "shared")


def opened(path):
    state = SharedState(path)
    state.claim()
    return state


def test_slots_are_the_servers_and_a_slot_freed_elsewhere_reaches_a_waiter(path):
    one, two = opened(path), opened(path)
    assert one.column != two.column

    async def main():
        gate_one = Gate("the gateway", 2, 4, 5.0, slots=SharedSlots(one, "the gateway", 2))
        gate_two = Gate("the gateway", 2, 4, 5.0, slots=SharedSlots(two, "the gateway", 2))
        await gate_one.enter()
        await gate_two.enter()
        assert gate_one.active == gate_two.active == 2
        waiter = asyncio.create_task(gate_two.enter())  # every slot of the server is held
        await asyncio.sleep(0.05)
        assert not waiter.done() and gate_two.queued == 1
        gate_one.leave()  # freed in the other "process": found by the waiter's poll
        await asyncio.wait_for(waiter, 1.0)
        assert gate_one.active == 2
        gate_two.leave()
        gate_two.leave()
        assert gate_one.active == 0
        with pytest.raises(Overloaded):  # a full server with no queue room: 429 at once
            small = Gate("small", 1, 0, 5.0, slots=SharedSlots(one, "small", 1))
            other = Gate("small", 1, 0, 5.0, slots=SharedSlots(two, "small", 1))
            await small.enter()
            await other.enter()

    asyncio.run(main())


def test_a_dead_processs_slots_come_back_to_the_server(path):
    code = ("import os, sys; from smg.shared_state import SharedState, SharedSlots; "
            "s = SharedState(sys.argv[1]); s.claim(); slots = SharedSlots(s, 'g', 3); "
            "assert slots.try_take() and slots.try_take(); os._exit(0)")  # dies holding two slots
    subprocess.run([sys.executable, "-c", code, path], check=True, timeout=60)
    watcher = SharedState(path)
    assert SharedSlots(watcher, "g", 3).active == 2  # (its column is still marked)
    newcomer = opened(path)  # the next process to come claims a column: dead ones are cleared
    assert SharedSlots(newcomer, "g", 3).active == 0


def test_a_keys_rate_is_the_servers(path):
    one, two = opened(path), opened(path)
    limits = [KeyLimits("team", 3, None, one), KeyLimits("team", 3, None, two)]
    admitted = 0
    for i in range(6):
        try:
            limits[i % 2].admit()
            admitted += 1
        except Overloaded as exc:
            assert exc.retry_after > 0
    assert admitted == 3
    tokens = [KeyLimits("bulk", None, 1000, one), KeyLimits("bulk", None, 1000, two)]
    tokens[0].charge(1500)  # in debt, as seen from the other process too
    with pytest.raises(Overloaded, match="tokens per minute"):
        tokens[1].admit()
    KeyLimits("other", 3, None, two).admit()  # another key's bucket is its own


def test_names_share_no_record_and_the_table_is_bounded(path):
    state = opened(path)
    with state.locked():
        offsets = {state.record(f"gate {i}") for i in range(200)}
    assert len(offsets) == 200


def test_buckets_past_the_table_reuse_the_stalest_slots_and_keep_the_busy_ones(path):
    from smg.rate_limit import SharedTokenBucket
    from smg.shared_state import BUCKETS, SharedBucket

    state = opened(path)
    hot = SharedTokenBucket(5, SharedBucket(state, "hot"))
    assert all(hot.take() == 0 for _ in range(5)) and hot.take() > 0  # emptied
    for i in range(BUCKETS + 5000):  # more callers than the table holds
        SharedTokenBucket(60, SharedBucket(state, f"caller {i}")).take()
        if i % 500 == 0:
            hot.take()  # (used now and then: never the stalest)
    assert hot.take() > 0  # still empty: its slot was not reused
