"""An engine killed (SIGKILL) under 20 concurrent streams: every client completes or gets an error
event within seconds, never a stream cut without one; requests that had not started are retried
on the other engine; the gateway serves through the engine again soon after it returns on its
address."""
import concurrent.futures
import time

import httpx
import pytest

from faults.processes import Engine, Served, metric, stream

pytestmark = pytest.mark.end_to_end


def test_an_engine_killed_under_20_streams():
    engines = [Engine("--delay-ms", "10"), Engine("--delay-ms", "10")]
    served = Served(*(a for e in engines for a in ("--worker", e.url)), "--tokenizer", "llama3.2",
                    "--chat-template", "llama3", "--policy", "round_robin", "--health-interval", "0.5",
                    "--storage", "memory")
    try:
        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            started = time.monotonic()
            streams = [pool.submit(stream, served.base, 300) for _ in range(20)]  # ~3 s each
            time.sleep(1.0)
            engines[0].kill()
            killed = time.monotonic()
            # sent as it dies: those routed to it fail before anything was sent, and are retried
            fresh = [pool.submit(stream, served.base, 5) for _ in range(10)]
            results = [s.result(timeout=60) for s in streams]
            fresh_results = [s.result(timeout=60) for s in fresh]
        outcomes = [r[0] for r in results]
        assert set(outcomes) <= {"ok", "error event"}, results
        assert 5 <= outcomes.count("error event") <= 15 and outcomes.count("ok") >= 5, results
        ended_after_kill = [took - (killed - started) for (outcome, took, _) in results if outcome != "ok"]
        assert max(ended_after_kill) < 3.0, results  # the cut streams' error events came at once
        assert [r[0] for r in fresh_results] == ["ok"] * 10, fresh_results
        dead = f'{{model="smg-reference",worker="{engines[0].url}"}}'
        assert metric(served.base, "smg_worker_healthy" + dead) == 0  # its circuit open
        assert metric(served.base, "smg_worker_consecutive_failures" + dead) >= 1
        engines[0].start()  # back on the same address
        back = time.monotonic()
        deadline = back + 10
        while not all(httpx.get(f"{served.base}/readiness", timeout=10).json()["models"]["smg-reference"]
                      ["workers"][i]["healthy"] for i in range(2)):
            assert time.monotonic() < deadline, "the engine did not come back into rotation"
            time.sleep(0.1)
        assert time.monotonic() - back < 5  # (health probes every 0.5 s, backoff from 1 s)
        assert [stream(served.base, 5)[0] for _ in range(6)] == ["ok"] * 6  # round robin: 3 through it
        # killed with nothing on it: the next requests routed to it find it gone before anything
        # was sent (before a probe does), and are retried on the other engine
        engines[0].kill()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert list(pool.map(lambda _: stream(served.base, 5)[0], range(8))) == ["ok"] * 8
        assert metric(served.base, 'smg_retries_total{model="smg-reference"}') >= 1
    finally:
        served.stop()
        for engine in engines:
            engine.stop()
