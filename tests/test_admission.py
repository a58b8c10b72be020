"""Admission control (smg.admission): the gate's queue, order and timeouts, and a served gateway's
429s with Retry-After in each API's shape (the official SDKs), per-model limits, and slots freed
when a stream ends or its client goes away."""
import asyncio
import threading
import time

import anthropic
import httpx
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.admission import Gate
from smg.auth import Caller
from smg.config import GatewayConfig
from smg.engine import ReferenceEngine
from smg.errors import InvalidRequest, Overloaded
from smg.gateway import Gateway
from smg.tokenizer import Tokenizer
from smg.tokenizer.bundled import bundled_tokenizer_dir
from smg.tokenizer.templates import template_path
from test_gateway_e2e import Stack, stream_in_thread

pytestmark = pytest.mark.no_kernels  # (the twins' pass leaves it out)


def test_a_full_gate_queues_in_priority_then_arrival_order_and_refuses_beyond_its_queue():
    async def main():
        gate = Gate("g", limit=1, max_queue=3, timeout=5)
        await gate.enter()
        order = []

        async def wait(name, priority):
            await gate.enter(priority)
            order.append(name)

        tasks = [asyncio.create_task(wait(name, priority)) for name, priority in (("a", 0), ("b", 0), ("c", 5))]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded, match="1 requests running and 3 waiting") as full:
            await gate.enter()
        assert full.value.retry_after == 1.0 and full.value.status_code == 429
        for _ in range(3):
            gate.leave()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert order == ["c", "a", "b"] and gate.active == 1 and gate.queued == 0
        gate.leave()
        assert gate.active == 0

    asyncio.run(main())


def test_a_wait_past_the_timeout_is_a_429_and_a_waiter_that_gives_up_takes_no_slot():
    async def main():
        gate = Gate("g", limit=1, max_queue=4, timeout=0.05)
        await gate.enter()
        with pytest.raises(Overloaded, match="waited 0.05 s") as late:
            await gate.enter()
        assert late.value.retry_after == 0.05
        gone = asyncio.create_task(gate.enter())
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        gate.leave()  # nobody waits any more: the slot is free
        assert gate.active == 0 and gate.queued == 0
        await gate.enter()
        assert gate.active == 1

    asyncio.run(main())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["enter", "leave", "cancel"]), st.integers(0, 3)), max_size=40),
       st.integers(1, 3), st.integers(0, 3))
def test_slots_are_never_lost_or_overgiven(steps, limit, max_queue):
    """Any sequence of arrivals, releases and clients going away: at most ``limit`` hold a slot,
    and once everyone has left every slot is free."""
    async def main():
        gate = Gate("g", limit, max_queue, timeout=10)
        arrivals, released = [], set()

        async def arrive(priority):
            try:
                await gate.enter(priority)
            except Overloaded:
                return False
            return True

        def holders():
            return [t for t in arrivals if t.done() and not t.cancelled() and t.result() and t not in released]

        for action, priority in steps:
            if action == "enter":
                arrivals.append(asyncio.create_task(arrive(priority)))
            elif action == "leave" and holders():
                released.add(holders()[0])
                gate.leave()
            elif action == "cancel":
                pending = [t for t in arrivals if not t.done()]
                if pending:
                    pending[0].cancel()
            await asyncio.sleep(0)
            assert gate.active <= limit and gate.queued <= max_queue
        for task in arrivals:
            task.cancel()
        await asyncio.gather(*arrivals, return_exceptions=True)
        for _ in holders():
            gate.leave()
        assert gate.active == 0 and gate.queued == 0

    asyncio.run(main())


def test_a_keys_priority_and_its_header():
    assert Caller("k", None, priority=3).priority_of({"x-smg-priority": "9"}) == 3  # the header counts only when the key allows it
    assert Caller("k", None, priority=3, priority_header=True).priority_of({"x-smg-priority": "9"}) == 9
    with pytest.raises(InvalidRequest, match="integer"):
        Caller("k", None, priority_header=True).priority_of({"x-smg-priority": "high"})


@pytest.fixture(scope="module", params=["smg", "uvicorn"])
def served(request):
    """A gateway (1 request at a time, 1 waiting, 0.4 s in the queue) serving ``slow`` (20 ms a
    token) and ``beta`` (its own limit: 1 at a time, none waiting)."""
    stack = Stack(request.param)
    directory = bundled_tokenizer_dir("llama3.2")

    async def start():
        models = []
        for name, extra in (("slow", {}), ("beta", {"max_concurrent_requests": 1, "max_queue_size": 0})):
            engine = ReferenceEngine(Tokenizer.from_dir(directory), delay_ms=20, model_id=name, tokenizer_dir=directory)
            _, port = await stack.start_engine(engine)
            models.append({"name": name, "workers": [f"grpc://127.0.0.1:{port}"],
                           "chat_template": str(template_path("llama3")), **extra})
        config = GatewayConfig.load({"models": models, "max_concurrent_requests": 1, "max_queue_size": 1,
                                     "queue_timeout": 0.4})
        return await stack.start_web(Gateway(config=config))

    port = stack.call(start())
    yield f"http://127.0.0.1:{port}"
    stack.close()


@pytest.mark.end_to_end
def test_over_capacity_is_a_429_with_retry_after_in_each_apis_shape(served):
    oa = openai.OpenAI(base_url=served + "/v1", api_key="unused", max_retries=0)
    an = anthropic.Anthropic(base_url=served, api_key="unused", max_retries=0)
    lines = []
    streaming = stream_in_thread(served, "slow", 60, lines)  # holds the one slot ~1.2 s
    waiting = threading.Thread(target=lambda: lines.append(
        httpx.post(served + "/v1/chat/completions", timeout=30, json={
            "model": "slow", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}).status_code))
    waiting.start()  # waits 0.4 s in the one queue place, then a 429
    time.sleep(0.1)
    with pytest.raises(openai.RateLimitError) as full:  # the queue is full: at once
        oa.chat.completions.create(model="slow", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert full.value.response.headers["retry-after"] == "1" and "waiting" in full.value.message
    with pytest.raises(anthropic.RateLimitError) as full_an:
        an.messages.create(model="slow", max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert full_an.value.body["error"]["type"] == "rate_limit_error"
    waiting.join(10)
    assert 429 in lines  # the waiter timed out
    streaming.join(30)
    assert lines[-1] != 429 and "[DONE]" in lines[-2]  # the stream that held the slot ran to its end
    done = oa.chat.completions.create(model="slow", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert done.choices[0].message.content  # its end freed the slot
    metrics = httpx.get(served + "/metrics").text
    assert 'smg_admission_rejected_total{gate="the gateway",reason="queue_full"}' in metrics
    assert 'smg_admission_rejected_total{gate="the gateway",reason="timeout"}' in metrics
    assert "smg_queue_wait_seconds_count" in metrics


@pytest.mark.end_to_end
def test_a_client_that_goes_away_frees_its_slot(served):
    for _ in range(2):
        with httpx.stream("POST", served + "/v1/chat/completions", timeout=30, json={
                "model": "slow", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 500,
                "stream": True, "ignore_eos": True}) as reply:
            next(reply.iter_lines())  # then gone, 10 s before its end
    started = time.monotonic()
    done = httpx.post(served + "/v1/chat/completions", timeout=30, json={
        "model": "slow", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert done.status_code == 200 and time.monotonic() - started < 2


@pytest.mark.end_to_end
def test_a_models_own_limit(served):
    streaming = stream_in_thread(served, "beta", 30, [])
    busy = httpx.post(served + "/v1/chat/completions", timeout=30, json={
        "model": "beta", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert busy.status_code == 429 and "model 'beta'" in busy.json()["error"]["message"]
    assert busy.headers["retry-after"] == "1"
    streaming.join(30)
