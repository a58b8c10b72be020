"""A framework-free ASGI app over a :class:`~smg.gateway.Gateway`.

Routes: ``POST /v1/chat/completions``, ``POST /v1/completions`` (JSON or SSE streaming),
``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus). Errors are OpenAI-shaped JSON
bodies with the status of the smg error type (400 for bad input, 503 when no worker can serve...).
While a stream is being sent, the app also listens for ``http.disconnect``: a client that goes
away cancels its stream, which closes the engine stream and sends Abort to the engine.
Runs under uvicorn, hypercorn or any ASGI server; the app owns the Gateway's lifespan.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import msgspec

from smg.errors import InvalidRequest, SmgError
from smg.gateway import SSE_DONE, Gateway
from smg.protocols import openai as oa

log = logging.getLogger("smg.asgi")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
MAX_BODY = 32 << 20


class _ClientGone(Exception):
    """The client disconnected before its request body arrived."""


def _error_body(status: int, message: str, kind: str) -> bytes:
    return msgspec.json.encode({"error": {"message": message, "type": kind, "param": None, "code": status}})


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
        handler = self._routes.get((scope["method"], path.rstrip("/") or "/"))
        if handler is None:
            known = {path for _, path in self._routes}
            status = 405 if path in known else 404
            await self._send_json(send, status, _error_body(status, f"{scope['method']} {path} not found",
                                                            "invalid_request_error"))
            return
        try:
            await handler(scope, receive, send)
        except _ClientGone:
            return
        except SmgError as exc:
            self.gateway.metrics.inc("smg_request_errors_total", type=exc.error_type)
            await self._send_json(send, exc.status_code, _error_body(exc.status_code, exc.message, exc.error_type))
        except Exception:  # a bug must not take the server down, nor leak a traceback to clients
            log.exception("internal error on %s", scope["path"])
            self.gateway.metrics.inc("smg_request_errors_total", type="internal_error")
            await self._send_json(send, 500, _error_body(500, "internal server error", "internal_error"))

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
    async def _send_json(send: Send, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": _JSON + [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _body(receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise InvalidRequest(f"request body larger than {MAX_BODY} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _stream(self, receive: Receive, send: Send, events) -> None:
        """Send SSE events; a client disconnect cancels the producer (and so aborts the engine)."""
        first = await anext(events)  # errors before the first event still become a JSON error body
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
                self.gateway.metrics.inc("smg_client_disconnects_total")
            elif producer.exception() is not None:
                error = producer.exception()
                message = error.message if isinstance(error, SmgError) else "internal server error"
                kind = error.error_type if isinstance(error, SmgError) else "internal_error"
                if not isinstance(error, SmgError):
                    log.error("stream failed", exc_info=error)
                event = msgspec.json.encode({"error": {"message": message, "type": kind}})
                await send({"type": "http.response.body", "body": b"data: " + event + b"\n\n",
                            "more_body": False})
        finally:
            watcher.cancel()
            await events.aclose()

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._generate(receive, send, oa.ChatCompletionRequest, self.gateway.chat_sse, self.gateway.chat)

    async def _completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._generate(receive, send, oa.CompletionRequest, self.gateway.complete_sse, self.gateway.complete)

    async def _generate(self, receive: Receive, send: Send, request_type, stream, once) -> None:
        """Decode a request of ``request_type``; the SSE events of ``stream`` if it asks to stream,
        else the JSON of ``once``."""
        request = oa.decode_request(await self._body(receive), request_type)
        if request.stream:
            await self._stream(receive, send, stream(request))
        else:
            await self._send_json(send, 200, oa.encode(await once(request)))

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._send_json(send, 200, oa.encode(self.gateway.models()))

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        healthy = self.gateway.pool.healthy_workers()
        body = msgspec.json.encode({"status": "ok" if healthy else "unavailable", "workers": self.gateway.pool.stats()})
        await self._send_json(send, 200 if healthy else 503, body)

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self.gateway.metrics.render().encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4")]})
        await send({"type": "http.response.body", "body": body})


def create_app(gateway: Gateway) -> App:
    """The ASGI app serving ``gateway`` (see the module docstring)."""
    return App(gateway)
