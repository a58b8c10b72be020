"""A framework-free ASGI app over a :class:`~smg.gateway.Gateway`.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (JSON or SSE streaming),
``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus). Errors are OpenAI-shaped JSON
bodies with the status of the smg error type (400 for bad input, 503 when no worker can serve...).
While a stream is being sent, the app also listens for ``http.disconnect``: a client that goes
away cancels its stream, which closes the engine stream and sends Abort to the engine.
Runs under uvicorn, hypercorn or any ASGI server; the app owns the Gateway's lifespan.

The routes answer with a :class:`Reply` or a :class:`StreamReply` (:meth:`App.respond`), which
the ASGI adapter here and smg's own HTTP/1.1 server (:mod:`smg.http_server`) both write.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Awaitable, Callable, NamedTuple

import msgspec

from smg.errors import InvalidRequest, SmgError
from smg.gateway import SSE_DONE, Gateway
from smg.protocols import openai as oa

log = logging.getLogger("smg.asgi")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ReadBody = Callable[[], Awaitable[bytes]]
Sink = Callable[[bytes], bool]

JSON = b"application/json"
PROMETHEUS = b"text/plain; version=0.0.4"
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
MAX_BODY = 32 << 20


class Reply(NamedTuple):
    """A whole response."""

    status: int
    body: bytes
    content_type: bytes = JSON


class StreamReply(NamedTuple):
    """A 200 stream of SSE events: ``first`` was already produced (errors before it are a
    :class:`Reply`); ``events`` yields the rest, the last ending with ``data: [DONE]``."""

    first: bytes
    events: AsyncIterator[bytes]


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


def error_reply(status: int, message: str, kind: str) -> Reply:
    return Reply(status, msgspec.json.encode({"error": {"message": message, "type": kind, "param": None,
                                                        "code": status}}))


class App:
    """``create_app(gateway)`` returns one; it starts and closes the gateway with the server."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._routes = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/completions"): self._completions,
            ("GET", "/v1/models"): self._models,
            ("GET", "/health"): self._health,
            ("GET", "/metrics"): self._metrics,
        }

    async def respond(self, method: str, path: str, read_body: ReadBody, sink: Sink | None = None
                      ) -> Reply | StreamReply:
        """The reply to one request; ``read_body`` is called only by routes that take a body and
        may raise :class:`ClientGone`, which propagates. ``sink``: see ``Gateway.chat_sse``."""
        handler = self._routes.get((method, path.rstrip("/") or "/"))
        if handler is None:
            known = {path for _, path in self._routes}
            status = 405 if path in known else 404
            return error_reply(status, f"{method} {path} not found", "invalid_request_error")
        try:
            return await handler(read_body, sink)
        except ClientGone:
            raise
        except SmgError as exc:
            self.gateway.metrics.inc("smg_request_errors_total", type=exc.error_type)
            return error_reply(exc.status_code, exc.message, exc.error_type)
        except Exception:  # a bug must not take the server down, nor leak a traceback to clients
            log.exception("internal error on %s %s", method, path)
            self.gateway.metrics.inc("smg_request_errors_total", type="internal_error")
            return error_reply(500, "internal server error", "internal_error")

    def stream_failed(self, error: BaseException) -> bytes:
        """The SSE event that ends a stream whose producer raised ``error`` after its first event."""
        if isinstance(error, SmgError):
            message, kind = error.message, error.error_type
        else:
            log.error("stream failed", exc_info=error)
            message, kind = "internal server error", "internal_error"
        return b"data: " + msgspec.json.encode({"error": {"message": message, "type": kind}}) + b"\n\n"

    def client_disconnected(self) -> None:
        self.gateway.metrics.inc("smg_client_disconnects_total")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # mounted under a prefix (FastAPI/Starlette Mount)
            path = path[len(root):]
        try:
            reply = await self.respond(scope["method"], path, lambda: self._body(receive))
        except ClientGone:
            return
        if isinstance(reply, StreamReply):
            await self._stream(receive, send, reply)
        else:
            await send({"type": "http.response.start", "status": reply.status,
                        "headers": [(b"content-type", reply.content_type),
                                    (b"content-length", str(len(reply.body)).encode())]})
            await send({"type": "http.response.body", "body": reply.body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.gateway.start()
                except Exception as exc:  # report, the server decides
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gateway.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    @staticmethod
    async def _body(receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise InvalidRequest(f"request body larger than {MAX_BODY} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _stream(self, receive: Receive, send: Send, reply: StreamReply) -> None:
        """Send SSE events; a client disconnect cancels the producer (and so aborts the engine)."""
        first, events = reply
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})

        async def produce() -> None:
            # the piece ending in [DONE] ends the body too: one write, not two
            end = first.endswith(SSE_DONE)
            await send({"type": "http.response.body", "body": first, "more_body": not end})
            if end:
                return
            async for event in events:
                end = event.endswith(SSE_DONE)
                await send({"type": "http.response.body", "body": event, "more_body": not end})
                if end:
                    return
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        producer, watcher = asyncio.create_task(produce()), asyncio.create_task(watch())
        try:
            done, _ = await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if producer not in done:
                producer.cancel()
                await asyncio.gather(producer, return_exceptions=True)
                self.client_disconnected()
            elif producer.exception() is not None:
                await send({"type": "http.response.body", "body": self.stream_failed(producer.exception()),
                            "more_body": False})
        finally:
            watcher.cancel()
            await events.aclose()

    async def _chat(self, read_body: ReadBody, sink: Sink | None) -> Reply | StreamReply:
        return await self._generate(read_body, sink, oa.ChatCompletionRequest, self.gateway.chat_sse,
                                    self.gateway.chat)

    async def _completions(self, read_body: ReadBody, sink: Sink | None) -> Reply | StreamReply:
        return await self._generate(read_body, sink, oa.CompletionRequest, self.gateway.complete_sse,
                                    self.gateway.complete)

    @staticmethod
    async def _generate(read_body: ReadBody, sink: Sink | None, request_type, stream, once) -> Reply | StreamReply:
        """Decode a request of ``request_type``; the SSE events of ``stream`` if it asks to stream,
        else the JSON of ``once``."""
        request = oa.decode_request(await read_body(), request_type)
        if not request.stream:
            return Reply(200, oa.encode(await once(request)))
        events = stream(request, sink=sink)
        try:
            return StreamReply(await anext(events), events)  # errors before the first event are a JSON body
        except BaseException:
            await events.aclose()
            raise

    async def _models(self, read_body: ReadBody, sink: Sink | None) -> Reply:
        return Reply(200, oa.encode(self.gateway.models()))

    async def _health(self, read_body: ReadBody, sink: Sink | None) -> Reply:
        healthy = self.gateway.pool.healthy_workers()
        body = msgspec.json.encode({"status": "ok" if healthy else "unavailable", "workers": self.gateway.pool.stats()})
        return Reply(200 if healthy else 503, body)

    async def _metrics(self, read_body: ReadBody, sink: Sink | None) -> Reply:
        return Reply(200, self.gateway.metrics.render().encode(), PROMETHEUS)


def create_app(gateway: Gateway) -> App:
    """The ASGI app serving ``gateway`` (see the module docstring)."""
    return App(gateway)
