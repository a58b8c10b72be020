"""An engine that sends a malformed message, a message over the size limit, trailers with a 200 KB
error message, or a GOAWAY: a real engine and a real `smg serve`, with a fault-injecting HTTP/2
proxy between them (tests/faults/h2_proxy.py) that makes one of eight concurrent streams
misbehave. Only that stream fails, with an error in the API's shape; the other seven complete. After a GOAWAY,
every stream completes (those the GOAWAY left unstarted are sent again on a new connection) and new
requests are served on a new connection."""
import concurrent.futures

import pytest

from faults.h2_proxy import LONG_ERROR, FaultProxy
from faults.processes import Engine, Served, stream

pytestmark = pytest.mark.end_to_end


@pytest.mark.parametrize("fault,error", [
    ("malformed", "INTERNAL"), ("oversized", "over the limit"), ("long_error", LONG_ERROR[:60]), ("goaway", None)])
def test_one_misbehaving_stream_fails_alone(fault, error):
    engine = Engine("--delay-ms", "5")
    proxy = FaultProxy(("127.0.0.1", engine.port), fault, target=3, opened=8)
    served = Served("--worker", f"grpc://127.0.0.1:{proxy.port}", "--tokenizer", "llama3.2", "--chat-template",
                    "llama3", "--storage", "memory")
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: stream(served.base, 100), range(8)))
        assert proxy.injected, proxy.generate_streams
        outcomes = [r[0] for r in results]
        if error is None:  # a GOAWAY: what had started finishes, and the next requests open a new connection
            assert outcomes == ["ok"] * 8, results
            assert proxy.generate_streams == 8 + 5  # the five opened after the third, sent again
            assert [stream(served.base, 5)[0] for _ in range(3)] == ["ok"] * 3
        else:
            # (its first message was the bad one: nothing was sent yet, so an error status with the
            # API's error body, rather than an error event)
            failed = [r for r in results if r[0] != "ok"]
            assert len(failed) == 1 and failed[0][0] in ("error event", "status 502"), results
            assert error in failed[0][2], failed
        assert served.workers_health() == {f"grpc://127.0.0.1:{proxy.port}": True}  # the worker stays in rotation
    finally:
        served.stop()
        engine.stop()
        proxy.close()
