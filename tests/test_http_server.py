"""smg's own HTTP/1.1 server at the byte level: keep-alive, pipelining, HTTP/1.0, HEAD, Expect,
limits, malformed input, flow control, disconnects and shutdown. (The OpenAI-client tests in
test_gateway_e2e run against it and uvicorn alike.)"""
import asyncio
import json
import socket
from contextlib import asynccontextmanager

import pytest

from smg import http_server
from smg.asgi import create_app
from smg.engine import ReferenceEngine
from smg.gateway import Gateway
from smg.http_server import HttpServer
from smg.tokenizer.templates import template_path


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@asynccontextmanager
async def serving(tokenizer, keep_alive=75.0, delay_ms=0.0, shutdown_grace=30.0, **limits):
    engine = ReferenceEngine(tokenizer, delay_ms=delay_ms, model_id="smg-demo")
    engine_server = engine.server()
    engine_port = await engine_server.start()
    gateway = Gateway([f"grpc://127.0.0.1:{engine_port}"], tokenizer, chat_template=str(template_path("llama3")))
    server = HttpServer(create_app(gateway), port=0, keep_alive=keep_alive, shutdown_grace=shutdown_grace, **limits)
    port = await server.start()
    try:
        yield server, port, engine_server
    finally:
        await server.close()
        await engine_server.stop(grace=0)


def connect(port):
    return asyncio.open_connection("127.0.0.1", port)


def chat(max_tokens=3, stream=False):
    return json.dumps({"model": "smg-demo", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": max_tokens, "stream": stream}).encode()


def post(path, body, *headers, version="1.1"):
    lines = [f"POST {path} HTTP/{version}", "Host: x", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader, head_only=False):
    """(status, headers, body) of one response; the body by content-length, chunks, or to EOF."""
    status_line = await reader.readline()
    assert status_line, "connection closed before a response"
    status = int(status_line.split()[1])
    headers = {}
    while (line := await reader.readline()) != b"\r\n":
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    if head_only or status == 100:
        return status, headers, b""
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readline()).strip(), 16):
            body += await reader.readexactly(size)
            assert await reader.readexactly(2) == b"\r\n"
        assert await reader.readexactly(2) == b"\r\n"
        return status, headers, body
    return status, headers, await reader.read()


async def closed(reader):
    return await asyncio.wait_for(reader.read(), 5) == b""


def events(body):
    return [line[6:] for line in body.decode().split("\n") if line.startswith("data: ")]


def test_keep_alive_pipelining_and_connection_close(llama):
    async def scenario():
        async with serving(llama) as (_, port, _):
            reader, writer = await connect(port)
            # three requests in one write, the last closing: answered in order, then the connection closes
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + post("/v1/chat/completions", chat(2, True))
                         + b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /health HTTP/1.1\r\n")
            status, headers, body = await read_response(reader)
            assert status == 200 and json.loads(body)["status"] == "ok" and "connection" not in headers
            assert headers["date"].endswith("GMT")
            status, headers, body = await read_response(reader)
            assert status == 200 and headers["content-type"] == "text/event-stream"
            assert headers["transfer-encoding"] == "chunked" and events(body)[-1] == "[DONE]"
            status, headers, body = await read_response(reader)
            assert status == 200 and headers["connection"] == "close" and json.loads(body)["data"][0]["id"]
            assert await closed(reader)  # the request after the closing one was not answered

    run(scenario())


def test_http10_stream_ends_with_the_connection_and_head_has_no_body(llama):
    async def scenario():
        async with serving(llama) as (_, port, _):
            reader, writer = await connect(port)
            writer.write(post("/v1/chat/completions", chat(3, True), version="1.0"))
            status, headers, body = await read_response(reader)  # read to EOF: no chunk framing
            assert status == 200 and "transfer-encoding" not in headers and headers["connection"] == "close"
            assert events(body)[-1] == "[DONE]" and len(events(body)) == 5

            reader, writer = await connect(port)
            writer.write(b"HEAD /v1/models HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = await read_response(reader, head_only=True)
            assert status == 405 and int(headers["content-length"]) > 0  # the length a GET-like body would have
            status, _, body = await read_response(reader)  # the next response starts right after the head
            assert status == 200 and json.loads(body)["status"] == "ok"
            writer.close()

    run(scenario())


def test_expect_continue_and_chunked_request_body(llama):
    async def scenario():
        async with serving(llama) as (_, port, _):
            reader, writer = await connect(port)
            body = chat(2)
            writer.write(post("/v1/chat/completions", body, "Expect: 100-continue")[:-len(body)])
            status, _, _ = await read_response(reader)
            assert status == 100
            writer.write(body)
            status, _, reply = await read_response(reader)
            assert status == 200 and json.loads(reply)["usage"]["completion_tokens"] == 2

            half = len(body) // 2
            writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + b"%x\r\n%b\r\n%x\r\n%b\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:]))
            status, _, reply = await read_response(reader)
            assert status == 200 and json.loads(reply)["choices"][0]["finish_reason"] == "length"
            writer.close()

    run(scenario())


@pytest.mark.parametrize("request_bytes, status, fragment", [
    (b"NOT HTTP AT ALL\r\n\r\n", 400, "malformed HTTP request"),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 << 10) + b"\r\n\r\n", 431, "request head"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 400, "body larger"),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"10000\r\n" + b"x" * 0x10000 + b"\r\n" + b"10000\r\n" + b"x" * 0x10000 + b"\r\n", 400, "body larger"),
], ids=["not-http", "head-too-large", "content-length-too-large", "chunked-body-too-large"])
def test_malformed_or_oversized_requests_get_an_error_body_and_the_connection_closes(llama, monkeypatch,
                                                                                      request_bytes, status, fragment):
    monkeypatch.setattr(http_server, "MAX_BODY", 100_000)

    async def scenario():
        async with serving(llama) as (_, port, _):
            reader, writer = await connect(port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + request_bytes)
            assert (await read_response(reader))[0] == 200  # what came before is still answered
            got, headers, body = await read_response(reader)
            error = json.loads(body)["error"]
            assert got == status and error["code"] == status and fragment in error["message"]
            assert headers["connection"] == "close" and await closed(reader)
            reader, writer = await connect(port)  # the server is unharmed
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader))[0] == 200

    run(scenario())


def test_upgrade_requests_are_answered_as_plain_http_then_closed(llama):
    async def scenario():
        async with serving(llama) as (_, port, _):
            reader, writer = await connect(port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05")
            assert (await read_response(reader))[0] == 200 and await closed(reader)

    run(scenario())


def test_idle_connections_close_after_keep_alive(llama):
    async def scenario():
        async with serving(llama, keep_alive=0.3) as (server, port, _):
            reader, writer = await connect(port)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(reader))[0] == 200
            assert len(server.connections) == 1
            assert await closed(reader) and not server.connections

    run(scenario())


async def wait_for(condition, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def test_a_client_that_does_not_read_pauses_only_its_own_stream_and_leaving_aborts_it(llama):
    async def scenario():
        async with serving(llama, delay_ms=0.5) as (server, port, engine):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # small buffers fill in well under a second
            sock.connect(("127.0.0.1", port))
            slow_reader, slow_writer = await asyncio.open_connection(sock=sock)
            slow_writer.transport.pause_reading()  # reads nothing: the server's buffers fill and it waits
            await wait_for(lambda: server.connections)
            for connection in server.connections:
                connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                connection.transport.set_write_buffer_limits(high=16384)
            slow_writer.write(post("/v1/chat/completions", chat(100_000, True)))
            await wait_for(lambda: any(c.write_paused for c in server.connections))
            reader, writer = await connect(port)
            writer.write(post("/v1/chat/completions", chat(5)))
            status, _, body = await read_response(reader)
            assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 5
            assert engine.active_requests == 1  # the paused stream is still open, not finished
            slow_writer.transport.abort()
            await wait_for(lambda: engine.active_requests == 0 and len(engine.aborted) == 1)
            metrics = server.app.gateway.metrics.render()
            assert "smg_client_disconnects_total 1" in metrics

    run(scenario())


def test_a_client_that_leaves_a_non_streaming_request_aborts_it(llama):
    async def scenario():
        async with serving(llama, delay_ms=2) as (_, port, engine):
            reader, writer = await connect(port)
            writer.write(post("/v1/chat/completions", chat(5000)))
            await wait_for(lambda: engine.active_requests == 1)
            writer.transport.abort()
            await wait_for(lambda: engine.active_requests == 0 and len(engine.aborted) == 1)

    run(scenario())


def test_close_lets_a_stream_finish_within_the_grace_then_cancels_what_is_left(llama):
    async def scenario():
        async with serving(llama, delay_ms=2, shutdown_grace=1.0) as (server, port, engine):
            long_reader, long_writer = await connect(port)
            long_writer.write(post("/v1/chat/completions", chat(5000, True)))  # ~10 s
            await wait_for(lambda: engine.active_requests == 1)
            reader, writer = await connect(port)
            writer.write(post("/v1/chat/completions", chat(50, True)))  # ~0.1 s: done within the grace
            await wait_for(lambda: engine.active_requests == 2)
            await server.close()
            status, headers, body = await read_response(reader)
            assert status == 200 and events(body)[-1] == "[DONE]" and await closed(reader)
            assert engine.active_requests == 0 and len(engine.aborted) == 1
            await long_reader.read()  # the cut stream's connection is closed
            with pytest.raises(OSError):
                await connect(port)

    run(scenario())


def test_a_slow_head_or_body_times_out_counted_from_its_first_byte_not_re_armed(llama):
    """A client sending a byte every 0.1 s keeps no connection past the head (or body) timeout,
    though each byte comes well within the idle timeout; the timeout is a 408 in OpenAI's shape."""
    async def drip(port, data: bytes, every: float):
        reader, writer = await connect(port)
        started = asyncio.get_running_loop().time()
        for byte in data:
            if reader.at_eof() or writer.is_closing():
                break
            writer.write(bytes([byte]))
            await asyncio.sleep(every)
            if reader._buffer:  # the server answered (and closes)
                break
        status, _, body = await read_response(reader)
        assert await closed(reader)
        writer.close()
        return status, json.loads(body)["error"]["message"], asyncio.get_running_loop().time() - started

    async def main():
        async with serving(llama, keep_alive=0.5, head_timeout=0.6, body_timeout=0.6) as (server, port, _):
            head = await drip(port, post("/v1/chat/completions", chat()), 0.1)
            whole = post("/v1/chat/completions", chat())
            cut = whole.index(b"\r\n\r\n") + 4
            reader, writer = await connect(port)
            writer.write(whole[:cut])  # the head at once, then the body a byte at a time
            await writer.drain()
            body_started = asyncio.get_running_loop().time()
            for byte in whole[cut:]:
                if reader._buffer:
                    break
                writer.write(bytes([byte]))
                await asyncio.sleep(0.1)
            status, _, body = await read_response(reader)
            body_result = (status, json.loads(body)["error"]["message"], asyncio.get_running_loop().time() - body_started)
            writer.close()
            # a prompt client on the same server is unaffected
            reader, writer = await connect(port)
            writer.write(post("/v1/chat/completions", chat()))
            good = (await read_response(reader))[0]
            writer.close()
            return head, body_result, good

    (head_status, head_message, head_seconds), (body_status, body_message, body_seconds), good = run(main())
    assert head_status == 408 and "head" in head_message and 0.5 < head_seconds < 2.0
    assert body_status == 408 and "body" in body_message and 0.5 < body_seconds < 2.0
    assert good == 200


def test_connections_past_the_limit_are_refused_and_served_ones_are_unaffected(llama):
    async def main():
        async with serving(llama, max_connections=3) as (server, port, _):
            held = [await connect(port) for _ in range(3)]
            await asyncio.sleep(0.05)
            reader, writer = await connect(port)  # the fourth: refused at once
            status, _, body = await read_response(reader)
            refused = (status, json.loads(body)["error"]["message"], await closed(reader))
            writer.close()
            answered = []
            for reader, writer in held:  # the connections within the limit are served
                writer.write(post("/v1/chat/completions", chat()))
                answered.append((await read_response(reader))[0])
            for _, writer in held:
                writer.close()
            await asyncio.sleep(0.1)
            reader, writer = await connect(port)  # room again once they closed
            writer.write(post("/v1/chat/completions", chat()))
            again = (await read_response(reader))[0]
            writer.close()
            return refused, answered, again

    (status, message, was_closed), answered, again = run(main())
    assert status == 503 and "too many open connections" in message and was_closed
    assert answered == [200, 200, 200] and again == 200
