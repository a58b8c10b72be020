"""smg's own HTTP/1.1 server for the :class:`~smg.asgi.App`'s routes: what ``python -m smg serve``
runs (``--server uvicorn`` runs the same app under uvicorn instead).

Why a server of its own: per SSE event, an ASGI server takes a message dict through ``await send``,
checks the response state and frames the chunk in Python; under uvicorn that was ~5% of a served
process's busy time at concurrency 64 (py-spy), the largest Python cost per token left. Here a
stream's events go from the gateway to ``transport.write`` with their chunk framing in one
formatting operation, and a request is one task (no producer/watcher pair); a plain stream's events
are written by a sink the gateway calls from the engine connection's data path (see
``Gateway.chat_sse``; the events of one read of that connection in one call), so no task runs per
token.

What it does: HTTP/1.1 parsed by ``httptools`` (llhttp, the parser uvicorn uses); keep-alive with an
idle timeout; pipelined requests answered in order; ``Expect: 100-continue``; HTTP/1.0 clients (a
stream's body then ends when the connection closes); ``HEAD``; bounded request heads and bodies;
flow control (a slow reader pauses its own stream, nothing else); a client that goes away cancels
its request, which closes its engine stream and sends Abort. Malformed requests get a 400 with an
OpenAI-style body and the connection is closed.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import socket
import struct
import time
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import unquote

import httptools

from smg.api.base import HttpRequest
from smg.asgi import MAX_BODY, App, Reply, StreamReply, error_reply
from smg.pipeline.plain import SSE_DONE

log = logging.getLogger("smg.http_server")
MAX_HEAD = 64 << 10  # request line + headers
MAX_QUEUED = 16  # pipelined requests waiting behind the one being answered before reading pauses
LINGER_S = 2.0  # after a final reply, how long input is still read (and dropped) before closing
_CHUNKED_END = b"0\r\n\r\n"
_TOO_MANY = error_reply(503, "too many open connections", "server_overloaded").body
# what a connection past --max-connections gets (after its status and date lines), then it is closed
_REFUSED = (b"content-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%b"
            % (len(_TOO_MANY), _TOO_MANY))
_SSE_HEAD = b"content-type: text/event-stream\r\ncache-control: no-cache\r\nx-accel-buffering: no\r\n"
_STATUS_LINES: dict[int, bytes] = {}
_date = [0, b""]  # second, header line


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")
    return line


def _framed(event: bytes, http10: bool, last: bool = False) -> bytes:
    """An event as body bytes: a chunk (and, if ``last``, the body's end) or, for HTTP/1.0, as is."""
    if http10:
        return event
    return b"%x\r\n%b\r\n0\r\n\r\n" % (len(event), event) if last else b"%x\r\n%b\r\n" % (len(event), event)


def _date_line() -> bytes:
    now = int(time.time())
    if now != _date[0]:
        _date[0], _date[1] = now, b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
    return _date[1]


def _request_id_field(request: "_Request") -> bytes:
    return b"x-request-id: %b\r\n" % request.request_id.encode("latin-1") if request.request_id else b""


class _Request:
    """A request whose head and body have arrived, or a connection-ending error to answer with."""

    __slots__ = ("method", "path", "headers", "body", "keep_alive", "http10", "error", "request_id", "query")

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes, keep_alive: bool,
                 http10: bool, error: Reply | None = None, query: str = "") -> None:
        self.method, self.path, self.headers, self.body = method, path, headers, body
        self.query = query
        self.keep_alive, self.http10, self.error = keep_alive, http10, error
        self.request_id = ""

    async def read_body(self) -> bytes:
        return self.body


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, answers them one at a time, in order."""

    def __init__(self, server: "HttpServer") -> None:
        self.server, self.app = server, server.app
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: list[_Request] = []
        self.task: asyncio.Task | None = None  # the request being answered
        self.closed = False
        self.stopped_reading = False  # a malformed or final request: the rest of the input is ignored
        self.write_paused = False
        self.drained: asyncio.Future | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.read_timer: asyncio.TimerHandle | None = None  # a request's head, then its body, must arrive in time
        self._url, self._body, self._head_size, self._body_size, self._expect_continue = [], [], 0, 0, False
        self._headers: dict[str, str] = {}

    # -- asyncio.Protocol --
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        if len(self.server.connections) >= self.server.max_connections:
            # refused at once, without reading: the connections being served keep their share
            self.closed = self.stopped_reading = True
            transport.write(_status_line(503) + _date_line() + _REFUSED)
            transport.close()
            return
        self.server.connections.add(self)
        self._wait_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for timer in (self.idle_timer, self.read_timer):
            if timer is not None:
                timer.cancel()
        if self.task is not None:
            self.task.cancel()  # a stream's cancellation closes its engine stream (Abort)
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.stopped_reading:
            return
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # answered as plain HTTP; nothing after it is ours to read
            self._stop_reading()
        except httptools.HttpParserError as exc:
            if not self.stopped_reading:  # else it is input after a final request: ignored, not answered
                self._reject(400, f"malformed HTTP request: {exc}")
        self._answer_next()

    def eof_received(self) -> bool:
        # A client's FIN is its going away (HTTP clients do not half-close): the transport closes
        # and what it asked for is cancelled, so its engine stream stops too.
        return False

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    # -- httptools callbacks (once reading stopped, what is still in the buffer is ignored) --
    def on_message_begin(self) -> None:
        self._url, self._body, self._head_size, self._body_size, self._expect_continue = [], [], 0, 0, False
        self._headers = {}
        # from the head's first byte, not re-armed by each byte that follows
        self._arm_read_timer(self.server.head_timeout, "head")

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow_head(len(name) + len(value))
        name = name.lower()
        key, text = name.decode("latin-1"), value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True
        elif name == b"content-length" and value.isdigit() and int(value) > MAX_BODY:
            self._body_too_large()

    def on_headers_complete(self) -> None:
        self._arm_read_timer(self.server.body_timeout, "body")
        # only when nothing is being answered, so "100 Continue" never lands inside another response
        # (a client that is not told to go on sends its body after a short wait anyway)
        if self._expect_continue and self.task is None and not self.queue and not self.stopped_reading:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.stopped_reading:
            return
        self._body_size += len(body)
        if self._body_size > MAX_BODY:
            self._body_too_large()
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        self._arm_read_timer(None, "")
        if self.stopped_reading:
            return
        parser = self.parser
        keep_alive = parser.should_keep_alive()
        try:
            url = httptools.parse_url(b"".join(self._url))
            path = unquote(url.path.decode("latin-1"))
        except httptools.HttpParserInvalidURLError:
            self._reject(400, "malformed request target")
            return
        self.queue.append(_Request(parser.get_method().decode("latin-1"), path, self._headers, b"".join(self._body),
                                   keep_alive, parser.get_http_version() == "1.0",
                                   query=url.query.decode("latin-1") if url.query else ""))
        if not keep_alive:
            self._stop_reading()
        elif len(self.queue) > MAX_QUEUED:
            self.transport.pause_reading()

    def _arm_read_timer(self, seconds: float | None, part: str) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
        self.read_timer = None if seconds is None else self.loop.call_later(seconds, self._read_timed_out, part,
                                                                            seconds)

    def _read_timed_out(self, part: str, seconds: float) -> None:
        self.read_timer = None
        if not self.stopped_reading and not self.closed:
            self._reject(408, f"the request {part} did not arrive within {seconds:g} s")
            self._answer_next()

    # -- answering --
    def _grow_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD and not self.stopped_reading:
            self._reject(431, f"request head larger than {MAX_HEAD} bytes")

    def _body_too_large(self) -> None:  # 400 as from the ASGI app (the same limit)
        if not self.stopped_reading:
            self._reject(400, f"request body larger than {MAX_BODY} bytes")

    def _reject(self, status: int, message: str) -> None:
        """Answer with an error after what is queued, then close."""
        self.queue.append(_Request("", "", {}, b"", False, False, error_reply(status, message, "invalid_request_error")))
        self._stop_reading()

    def _stop_reading(self) -> None:
        if not self.stopped_reading:
            self.stopped_reading = True
            self.transport.pause_reading()

    def _answer_next(self) -> None:
        if self.task is not None or self.closed:
            return
        if self.queue:
            request = self.queue.pop(0)
            if len(self.queue) == MAX_QUEUED and not self.stopped_reading:
                self.transport.resume_reading()
            self.task = self.loop.create_task(self._answer(request))
        elif self.stopped_reading or self.server.closing:
            self._close_after_reply()
        else:
            self._wait_idle()

    def _close_after_reply(self) -> None:
        # Closing a socket whose client is still sending resets it, and a reset can drop the reply
        # before the client reads it: end the write side, discard what still comes for a while,
        # and close when the client does (eof_received) or the time is up.
        self.stopped_reading = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _wait_idle(self) -> None:
        self.idle_timer = self.loop.call_later(self.server.keep_alive, self._close_idle)

    def _close_idle(self) -> None:
        self.idle_timer = None
        if self.task is None and not self.queue:
            self.transport.close()

    async def _answer(self, request: _Request) -> None:
        keep_alive = request.keep_alive
        try:
            http = HttpRequest(request.method, request.path, request.headers, request.read_body,
                               self._sink(request.http10), request.query)
            request.request_id = http.request_id  # echoed in the reply's head
            reply = request.error or await self.app.respond(http)
            if self.closed:  # gone while the reply was being made
                if isinstance(reply, StreamReply):
                    await reply.events.aclose()
                return
            if isinstance(reply, StreamReply):
                keep_alive = await self._write_stream(request, reply)
            else:
                self._write_reply(request, reply)
        except asyncio.CancelledError:  # the client went away (or the server is stopping)
            keep_alive = False
        except Exception:  # a bug here must not leave the client waiting: close its connection
            log.exception("internal error answering %s %s", request.method, request.path)
            keep_alive = False
            self.transport.close()
        finally:
            self.task = None
        if self.closed:
            return
        if not keep_alive:
            self._stop_reading()
        self._answer_next()

    def _head(self, status: int, fields: bytes, close: bool) -> bytes:
        close = close or self.server.closing
        return b"".join([_status_line(status), _date_line(), fields,
                         b"connection: close\r\n\r\n" if close else b"\r\n"])

    def _write_reply(self, request: _Request, reply: Reply) -> None:
        fields = b"content-type: %b\r\ncontent-length: %d\r\n%b" % (reply.content_type, len(reply.body),
                                                                    _request_id_field(request))
        for name, value in reply.headers:
            fields += b"%b: %b\r\n" % (name, value)
        head = self._head(reply.status, fields, not request.keep_alive)
        self.transport.write(head if request.method == "HEAD" else head + reply.body)

    def _sink(self, http10: bool):
        """Where a plain stream's events go straight from the engine connection (see
        ``Gateway.chat_sse``): written at once, framed; whether the client can take more."""
        write = self.transport.write

        def sink(event: bytes) -> bool:
            if self.closed:
                return False
            write(_framed(event, http10))
            return not self.write_paused

        return sink

    async def _write_stream(self, request: _Request, reply: StreamReply) -> bool:
        """Write a stream's events as they come; whether the connection can take another request."""
        first, events = reply.first, reply.events
        http10 = request.http10  # no chunked coding: the body ends when the connection closes
        keep_alive = request.keep_alive and not http10
        fields = _SSE_HEAD + _request_id_field(request)
        head = self._head(200, fields if http10 else fields + b"transfer-encoding: chunked\r\n", not keep_alive)
        write = self.transport.write
        try:
            event = first
            while True:
                end = event.endswith(SSE_DONE)
                piece = _framed(event, http10, end)
                if head:
                    piece, head = head + piece, b""
                write(piece)
                if end:
                    return keep_alive
                if self.write_paused:
                    await self._drain()
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    if not http10:
                        write(_CHUNKED_END)
                    return keep_alive
        except asyncio.CancelledError:
            if self.closed:
                self.app.client_disconnected()
            raise
        except Exception as error:  # the stream failed after its first event: end it with an error event
            event = self.app.stream_failed(error, reply)
            write(_framed(event, http10, last=True))
            return keep_alive
        finally:
            await events.aclose()

    async def _drain(self) -> None:
        """Wait for the client to read what was written; a client that reads nothing for
        ``write_timeout`` seconds is gone (its connection reset, its engine stream aborted)."""
        if self.write_paused and not self.closed:
            drained = self.drained = self.loop.create_future()
            # (a timer, not asyncio.wait_for: on 3.11 wait_for drops a cancellation that comes with
            # the future's result, as a client leaving brings both)
            timer = self.loop.call_later(self.server.write_timeout,
                                         lambda: drained.done() or drained.set_result(False))
            try:
                read = await drained
            finally:
                timer.cancel()
                self.drained = None
            if read is False:
                self.closed = True
                sock = self.transport.get_extra_info("socket")
                if sock is not None:  # reset, not closed: what the kernel still held for it is dropped
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                self.transport.abort()
                raise asyncio.CancelledError  # (as a client that left: see _write_stream)


_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


class HttpServer:
    """Serve ``app`` over HTTP/1.1; :meth:`start` starts the gateway first, :meth:`close` closes it."""

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 8000, keep_alive: float = 75.0,
                 shutdown_grace: float = 30.0, head_timeout: float = 30.0, body_timeout: float = 60.0,
                 max_connections: int = 10_000, sock: socket.socket | None = None,
                 write_timeout: float = 60.0) -> None:
        self.app, self.host, self.port = app, host, port
        self.write_timeout = write_timeout  # seconds a stream waits for its client to read
        self.sock = sock  # a bound socket to listen on instead of host:port (smg serve --workers N)
        self.keep_alive, self.shutdown_grace = keep_alive, shutdown_grace
        self.head_timeout, self.body_timeout, self.max_connections = head_timeout, body_timeout, max_connections
        self.connections: set[HttpConnection] = set()
        self.closing = False
        self.listening = asyncio.Event()  # set once start() listens
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        """Start the gateway, then listen; the bound port (``port=0`` picks one)."""
        await self.app.gateway.start()
        try:
            loop = asyncio.get_running_loop()
            if self.sock is not None:
                self._server = await loop.create_server(lambda: HttpConnection(self), sock=self.sock, backlog=2048)
            else:
                self._server = await loop.create_server(
                    lambda: HttpConnection(self), self.host, self.port, backlog=2048, reuse_address=True)
        except BaseException:
            await self.app.gateway.close()
            raise
        self.listening.set()
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening, close idle connections, give requests being answered ``shutdown_grace``
        seconds (then cancel them, which aborts their engine streams) and close the gateway."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if connection.task is None and not connection.queue:
                connection.transport.close()
        deadline = time.monotonic() + self.shutdown_grace
        while any(c.task is not None for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        tasks = [c.task for c in self.connections if c.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for connection in list(self.connections):
            connection.transport.close()
        if self._server is not None:
            await self._server.wait_closed()
        await self.app.gateway.close()

    async def serve(self) -> None:
        """:meth:`start`, serve until SIGINT or SIGTERM, then :meth:`close`."""
        await self.start()
        loop, stop = asyncio.get_running_loop(), asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.close()
