"""A framework-free ASGI app over a :class:`~smg.gateway.Gateway`.

Routes: every API front end's (:func:`smg.api.routes`): ``POST /v1/chat/completions``,
``POST /v1/completions`` (JSON or SSE streaming), ``GET /v1/models``, ``/health``, ``/readiness``,
``/health_generate``, ``/metrics`` (Prometheus), ``POST /v1/tokenize``, ``/v1/detokenize``. Request
headers reach the routes; ``X-Request-Id`` is echoed (a new one when the client sent none). Errors are OpenAI-shaped JSON
bodies with the status of the smg error type (400 for bad input, 503 when no worker can serve...).
While a stream is being sent, the app also listens for ``http.disconnect``: a client that goes
away cancels its stream, which closes the engine stream and sends Abort to the engine.
With ``api_keys`` or ``jwt_issuers`` configured, every route but the health probes needs a key or a
token (:mod:`smg.auth`);
with admission limits, generation requests wait for a slot or get a 429 (:mod:`smg.admission`).
Runs under uvicorn, hypercorn or any ASGI server; the app owns the Gateway's lifespan.

The routes answer with a :class:`Reply` or a :class:`StreamReply` (:meth:`App.respond`), which
the ASGI adapter here and smg's own HTTP/1.1 server (:mod:`smg.http_server`) both write.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

from smg.api import Router
from smg.api.base import JSON, HttpRequest, Reply, StreamReply, error_reply
from smg.access_log import CURRENT as ACCESS
from smg.access_log import AccessRecord, close_record, open_record
from smg.admission import Admission
from smg.auth import OPEN_PATHS, AdminKey, Callers, check_model
from smg.errors import InvalidRequest, NotFound, SmgError
from smg.gateway import Gateway
from smg.tracing import Tracer
from smg import shared_state
from smg.pipeline.plain import SSE_DONE

log = logging.getLogger("smg.asgi")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
MAX_BODY = 32 << 20

__all__ = ["App", "ClientGone", "HttpRequest", "JSON", "MAX_BODY", "Reply", "StreamReply", "create_app",
           "error_reply"]


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


class App:
    """``create_app(gateway)`` returns one; it starts and closes the gateway with the server."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._router = Router()
        config = gateway.config
        shared = shared_state.current()  # (several worker processes: limits are the server's)
        self._callers = (Callers(config.api_keys, config.jwt_issuers, shared) if config.api_keys or config.jwt_issuers
                         else None)  # None: the APIs are open
        self._admin_key = AdminKey(config.admin_key) if config.admin_key else None  # None: no admin API
        self._admission = (Admission(config, gateway.models, gateway.metrics, shared) if Admission.wanted(config)
                           else None)
        self._access_log = config.access_log
        self._tracer = Tracer() if config.tracing else None
        # a record per request: for its access line, its trace, or to charge its key's tokens; and
        # whether it is closed (logged, traced) when the answer ends
        self._closes = config.access_log or self._tracer is not None
        self._records = self._closes or any(key.tokens_per_minute for key in config.api_keys)

    async def _authorize(self, http: HttpRequest) -> None:
        """The caller's key checked; a key limited to some models has the body's model checked
        when the route reads its body."""
        caller = await self._callers.caller(http.headers)
        record = ACCESS.get()
        if record is not None:
            record.key = caller.name
        if caller.limits is not None:
            caller.limits.admit()
            if record is not None:
                record.charge = caller.limits.charge
        http.priority = caller.priority_of(http.headers)
        if caller.models is not None:
            read, models = http.read_body, self.gateway.models

            async def read_checked() -> bytes:
                body = await read()
                check_model(caller, body, models)
                return body

            http.read_body = read_checked

    async def respond(self, http: HttpRequest) -> Reply | StreamReply:
        """The reply to one request; its ``read_body`` is called only by routes that take a body
        and may raise :class:`ClientGone`, which propagates. With ``access_log``, its line is
        logged when the answer ends."""
        if not self._records:
            return await self._respond(http)
        record = open_record(http.request_id, http.method, http.path)
        if self._tracer is not None:
            self._tracer.begin(record, http.headers)
        if not self._closes:
            return await self._respond(http)
        try:
            reply = await self._respond(http)
        except BaseException:
            record.outcome = "client_gone"  # (ClientGone, or the server cancelling it)
            self._close(record)
            raise
        if isinstance(reply, StreamReply):
            record.status = 200
            return reply._replace(events=_logged(reply.events, record, self._close))
        record.status = reply.status
        self._close(record)
        return reply

    def _close(self, record: AccessRecord) -> None:
        """The request was answered: its access line, its trace."""
        if self._access_log:
            close_record(record)
        if self._tracer is not None:
            self._tracer.end(record)

    async def _respond(self, http: HttpRequest) -> Reply | StreamReply:
        path = http.path.rstrip("/") or "/"
        route, http.params, known = self._router.match(http.method, path)
        if route is None:
            status = 405 if known else 404
            return error_reply(status, f"{http.method} {http.path} not found", "invalid_request_error")
        try:
            if route.admin:
                if self._admin_key is None:
                    raise NotFound("the admin API is off (give the gateway an admin_key: smg serve --admin-key)")
                self._admin_key.check(http.headers)
            elif self._callers is not None and path not in OPEN_PATHS:
                await self._authorize(http)
            http.admission = self._admission
            reply = await route.handler(self.gateway, http)
            self.gateway.metrics.inc("smg_responses_total", status="200" if isinstance(reply, StreamReply)
                                     else str(reply.status))
            return reply
        except ClientGone:
            raise
        except SmgError as exc:
            self.gateway.metrics.inc("smg_request_errors_total", type=exc.error_type)
            self.gateway.metrics.inc("smg_responses_total", status=str(exc.status_code))
            return route.errors.reply(exc)
        except Exception:  # a bug must not take the server down, nor leak a traceback to clients
            log.exception("internal error on %s %s", http.method, http.path)
            self.gateway.metrics.inc("smg_request_errors_total", type="internal_error")
            self.gateway.metrics.inc("smg_responses_total", status="500")
            return route.errors.reply(SmgError("internal server error"))

    def stream_failed(self, error: BaseException, reply: StreamReply) -> bytes:
        """The SSE event that ends a stream whose producer raised ``error`` after its first event."""
        if not isinstance(error, SmgError):
            log.error("stream failed", exc_info=error)
            error = SmgError("internal server error")
        return reply.errors.event(error)

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
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        http = HttpRequest(scope["method"], path, headers, lambda: self._body(receive), None,
                           scope.get("query_string", b"").decode("latin-1"))
        try:
            reply = await self.respond(http)
        except ClientGone:
            return
        request_id = (b"x-request-id", http.request_id.encode("latin-1"))
        if isinstance(reply, StreamReply):
            await self._stream(receive, send, reply, request_id)
        else:
            await send({"type": "http.response.start", "status": reply.status,
                        "headers": [(b"content-type", reply.content_type),
                                    (b"content-length", str(len(reply.body)).encode()), request_id,
                                    *reply.headers]})
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

    async def _stream(self, receive: Receive, send: Send, reply: StreamReply, request_id: tuple) -> None:
        """Send SSE events; a client disconnect cancels the producer (and so aborts the engine)."""
        first, events = reply.first, reply.events
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE, request_id]})

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
                await send({"type": "http.response.body", "body": self.stream_failed(producer.exception(), reply),
                            "more_body": False})
        finally:
            watcher.cancel()
            await events.aclose()


async def _logged(events: AsyncIterator[bytes], record: AccessRecord,
                  close: Callable[[AccessRecord], None]) -> AsyncIterator[bytes]:
    """A stream's ``events``, its access record closed (logged, traced) when it ends: ``ok`` after its last event
    (``data: [DONE]``, or the iterator's end), ``error`` when it failed, ``client_gone`` when it was
    closed or cancelled before its end."""
    last = b""
    try:
        async for last in events:
            yield last
    except GeneratorExit:
        if not last.endswith(SSE_DONE):
            record.outcome = "client_gone"
        raise
    except asyncio.CancelledError:
        record.outcome = "client_gone"
        raise
    except BaseException:
        record.outcome = "error"
        raise
    finally:
        close(record)
        await events.aclose()


def create_app(gateway: Gateway) -> App:
    """The ASGI app serving ``gateway`` (see the module docstring)."""
    return App(gateway)
