"""Clients that misbehave, against a real `smg serve` and a real engine: 200 that leave mid-stream,
slow heads and bodies, a client that never reads its stream. What must hold: the engine sees
every abort, the gauges return to zero, memory does not grow, every bad connection is closed
within its timeout, and a background stream of good requests sees no failure."""
import concurrent.futures
import socket
import time

import httpx
import pytest

from faults.processes import CHAT, Engine, GoodTraffic, Served, engine_running, metric, rss_mb

pytestmark = pytest.mark.end_to_end


def leave_mid_stream(base: str) -> bool:
    """Open a stream, read its first event, and go away; whether the first event came."""
    with httpx.Client(base_url=base, timeout=30) as client:
        with client.stream("POST", "/v1/chat/completions", json={**CHAT, "max_tokens": 2000}) as reply:
            for line in reply.iter_lines():
                if line.startswith("data: "):
                    return True
    return False


def wait_for(read, want, seconds: float, what: str) -> None:
    """Until ``read()`` gives ``want``; else fail with ``what`` and the last value read."""
    deadline = time.monotonic() + seconds
    while (value := read()) != want:
        assert time.monotonic() < deadline, f"{what} (still {value})"
        time.sleep(0.1)


def test_200_clients_that_leave_mid_stream_leave_nothing_behind():
    engine = Engine("--delay-ms", "20")  # a 2000-token stream would run 40 s
    served = Served("--worker", engine.url, "--tokenizer", "llama3.2", "--chat-template", "llama3",
                    "--storage", "memory")
    try:
        baseline, good_ok = None, 0
        for round_ in range(2):  # the second round's memory against the first's: nothing kept per client
            good = GoodTraffic(served.base)  # (during the storm; stopped before the counts are read)
            with concurrent.futures.ThreadPoolExecutor(50) as pool:
                assert all(pool.map(lambda _: leave_mid_stream(served.base), range(200)))
            good.stop()
            assert not good.failures, good.failures[:3]
            good_ok += good.ok
            wait_for(lambda: engine_running(engine), 0, 15, "the engine still generates for clients gone")
            wait_for(lambda: metric(served.base, "smg_worker_in_flight"), 0, 15, "in-flight did not return to 0")
            rss = rss_mb(served.proc.pid)
            baseline = baseline or rss
        assert rss <= baseline * 1.10, (baseline, rss)
        assert metric(served.base, "smg_client_disconnects_total") >= 400 and good_ok > 0
    finally:
        served.stop()
        engine.stop()


def test_slow_heads_and_bodies_and_a_client_that_never_reads_are_closed_in_time():
    engine = Engine("--delay-ms", "1", "--tokens-per-chunk", "8")  # (a stream that fills buffers fast)
    served = Served("--worker", engine.url, "--tokenizer", "llama3.2", "--chat-template", "llama3", "--storage",
                    "memory", "--request-head-timeout", "2", "--request-body-timeout", "2",
                    "--response-write-timeout", "3")
    good = GoodTraffic(served.base)
    try:
        def closed_after(head: bytes, trickle: bytes) -> float:
            """Connect, send ``head`` at once, then ``trickle`` a byte every 0.3 s until the server
            closes; seconds from the connection to the close."""
            sock = socket.create_connection(("127.0.0.1", served.port))
            started = time.monotonic()
            sock.settimeout(0.3)
            try:
                sock.sendall(head)
                for byte in trickle:
                    try:
                        sock.sendall(bytes([byte]))
                        if sock.recv(65536) == b"":
                            break
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                return time.monotonic() - started
            finally:
                sock.close()

        slow_head = (b"", b"POST /v1/chat/completions HTTP/1.1\r\nx-slow: " + b"a" * 200)
        slow_body = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 100000\r\n\r\n", b"{" * 400)
        with concurrent.futures.ThreadPoolExecutor(40) as pool:
            took = list(pool.map(lambda case: closed_after(*case), [slow_head] * 20 + [slow_body] * 20))
        assert all(1.5 < t < 2 + 1.5 for t in took), took  # from the first byte, not re-armed per byte

        # a client that asks for a long stream and reads nothing: its buffers fill, then it is closed
        before = rss_mb(served.proc.pid)
        sleepers = []
        for _ in range(5):
            sock = socket.create_connection(("127.0.0.1", served.port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            body = b'{"model": "smg-reference", "stream": true, "max_tokens": 100000, ' \
                   b'"messages": [{"role": "user", "content": "Tell me everything."}]}'
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n%b" % (len(body), body))
            sleepers.append(sock)
        wait_for(lambda: engine_running(engine), 5, 30, "the streams did not start")
        wait_for(lambda: engine_running(engine), 0, 60, "a stream nobody reads still runs")
        assert rss_mb(served.proc.pid) < before + 50  # (what was held for them: bounded by the socket buffers)
        for sock in sleepers:  # the server reset them (what its kernel still held for them dropped)
            sock.settimeout(10)
            with pytest.raises(ConnectionResetError):
                while sock.recv(1 << 20):
                    pass
            sock.close()
        good.stop()
        assert not good.failures and good.ok > 0, good.failures[:3]
    finally:
        good.stop()
        served.stop()
        engine.stop()
