"""What every API front end and both HTTP servers share: the incoming request as the routes see it,
the replies they give, and the route table each front end contributes to.

A front end module defines ``ROUTES``: ``{(method, path): handler}``, each handler an
``async (gateway, HttpRequest) -> Reply | StreamReply`` (a path segment ``{name}`` matches any one
segment, given to the handler in ``HttpRequest.params``), and optionally ``ERRORS``, its
:class:`ErrorShape` (default OpenAI's). :class:`smg.api.Router` merges them, and the ASGI app and
smg's HTTP server dispatch through it, so a new API is a new module.
"""
from __future__ import annotations

import abc
import math
import time
import urllib.parse
import uuid
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable, Mapping, NamedTuple, Protocol

import msgspec

from smg.access_log import CURRENT as ACCESS
from smg.admission import Admission, released
from smg.errors import SmgError, openai_error
from smg.pipeline.blocks import START, STOP, TEXT, Block
from smg.pipeline.choice import Choice
from smg.pipeline.plain import PlainPump, Sink
from smg.pipeline.prepare import Prepared
from smg.protocols import openai as oa

if TYPE_CHECKING:
    from smg.gateway import Gateway

JSON = b"application/json"
ReadBody = Callable[[], Awaitable[bytes]]
REQUEST_ID_HEADER = "x-request-id"
ROUTING_KEY_HEADER = "x-smg-routing-key"  # sticky routing (smg.policies)
_MAX_REQUEST_ID = 128


class Reply(NamedTuple):
    """A whole response (``headers``: more header fields, lower-case names)."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()


def error_headers(error: SmgError) -> tuple[tuple[bytes, bytes], ...]:
    """The header fields an error's reply carries: ``retry-after`` for an error that says when."""
    return () if error.retry_after is None else ((b"retry-after", b"%d" % math.ceil(error.retry_after)),)


class ErrorShape:
    """How an API answers errors: OpenAI's ``{"error": {...}}`` (this class) or another API's
    (``smg.api.anthropic``). A route's errors, before and during a stream, take its API's shape."""

    __slots__ = ()

    def body(self, error: SmgError) -> dict:
        return error.to_openai()

    def reply(self, error: SmgError) -> Reply:
        return Reply(error.status_code, msgspec.json.encode(self.body(error)), JSON, error_headers(error))

    def event(self, error: SmgError) -> bytes:
        """The SSE event that ends a stream that failed after its first event."""
        return b"data: " + msgspec.json.encode(self.body(error)) + b"\n\n"


OPENAI_ERRORS = ErrorShape()


class StreamReply(NamedTuple):
    """A 200 stream of SSE events: ``first`` was already produced (errors before it are a
    :class:`Reply`); ``events`` yields the rest, the last ending with ``data: [DONE]`` (or the
    iterator ends); a failure after the first event is sent as ``errors.event``."""

    first: bytes
    events: AsyncIterator[bytes]
    errors: ErrorShape = OPENAI_ERRORS


class HttpRequest:
    """One request as a route sees it: its headers (names lower-case), the body (read on demand,
    may raise ``ClientGone``), the server's ``sink`` for pushed streams (see ``Gateway.chat_sse``)
    and its request id (the client's ``X-Request-Id``, else a new one; echoed in the reply)."""

    __slots__ = ("method", "path", "headers", "read_body", "sink", "request_id", "client_request_id", "params",
                 "query", "admission", "priority")

    def __init__(self, method: str, path: str, headers: Mapping[str, str], read_body: ReadBody,
                 sink: Sink | None = None, query: str = "") -> None:
        self.method, self.path, self.headers, self.read_body, self.sink = method, path, headers, read_body, sink
        self.params: dict[str, str] = {}  # a route's ``{name}`` path segments
        self.query = query  # the raw query string
        self.admission: Admission | None = None  # the server's admission control, for generation routes
        self.priority = 0  # the request's place in admission queues (higher first)
        given = headers.get(REQUEST_ID_HEADER)
        if given is not None and not (0 < len(given) <= _MAX_REQUEST_ID and given.isprintable()):
            given = None  # not usable as an engine id prefix: a fresh id instead
        self.client_request_id = given
        self.request_id = given or uuid.uuid4().hex

    def query_params(self) -> dict[str, str]:
        """The query string's parameters (the first value of each)."""
        return {name: values[0] for name, values in urllib.parse.parse_qs(self.query).items()}


Handler = Callable[["Gateway", HttpRequest], Awaitable["Reply | StreamReply"]]


class BlockEvents(Protocol):
    """A block API's event builder for one answer (``_Run`` of Responses and of Messages)."""

    def head_events(self) -> list:
        """The answer's first events (the response or message starts)."""

    def block_events(self, events: list) -> list:
        """The API's events for ``Blocks`` events (a block's start, deltas, its stop)."""

    def delta(self, block: Block, text: str) -> bytes:
        """One delta event of ``block``."""


class BlockStreamShapes(abc.ABC):
    """``plain.stream``'s shapes for the block-event APIs (Responses, Messages). A plain request's
    text is one text block: the API's head events and the block's start come with the first text,
    then one delta event per engine message (the compiled pump detokenizes and checks stops), then
    the block's end and the API's last events. Other requests stream the API's general events.
    Subclasses give ``end`` and ``general``."""

    role_first = False
    sse_done = b""

    def __init__(self, plain: Prepared | None, job: BlockEvents) -> None:
        self.plain = plain
        self.job = job
        self.block = Block(0, TEXT)  # a plain answer's one block
        self.texts: list[str] = []
        self.opened = False  # the head events and the text block's start were sent

    def head(self) -> bytes:
        return b"".join(self.job.head_events())

    def open_text(self) -> bytes:
        return b"".join(self.job.block_events([(START, self.block)]))

    def delta(self, text: str) -> bytes:
        return self.job.delta(self.block, text)

    def close_text(self, text: str) -> list:
        """The text block's end events, given its whole text."""
        self.block.add(text)
        self.block.close()
        return self.job.block_events([(STOP, self.block)])

    @abc.abstractmethod
    async def end(self, choice: Choice, cached: int, text: str | None) -> bytes:
        """The last events (``text``: the whole text block's, None when none was opened)."""

    @abc.abstractmethod
    def general(self) -> AsyncIterator[bytes]:
        """The general pipeline's events (a request that is not plain)."""

    def sse_event(self, chunk: bytes) -> bytes:
        return chunk  # the general events are bytes already

    def sse_pump(self, choice: Choice):
        pump = PlainPump(choice.detok, choice.stop, b"", b"", b"")
        feed_text, texts, delta = pump.feed_text, self.texts, self.delta

        def feed(ids) -> bytes | None:
            text = feed_text(ids)
            if text is None:
                return None
            texts.append(text)
            if self.opened:
                return delta(text)
            self.opened = True
            return self.head() + self.open_text() + delta(text)

        return pump, feed

    async def sse_end(self, choice: Choice, piece: tuple, cached: int) -> bytes:
        out = []
        text = piece[1]
        if text:
            self.texts.append(text)
            if not self.opened:
                self.opened = True
                out += [self.head(), self.open_text()]
            out.append(self.delta(text))
        elif not self.opened:
            out.append(self.head())
        out.append(await self.end(choice, cached, "".join(self.texts) if self.texts else None))
        return b"".join(out)


def json_reply(value, status: int = 200) -> Reply:
    return Reply(status, msgspec.json.encode(value))


def error_reply(status: int, message: str, kind: str, code: int | str | None = None) -> Reply:
    """An OpenAI-shaped error reply (the body ``SmgError.to_openai`` gives)."""
    return Reply(status, msgspec.json.encode(openai_error(message, kind, status, code)))


async def sse_reply(events: AsyncIterator[bytes], errors: ErrorShape = OPENAI_ERRORS) -> StreamReply:
    """A stream's reply once its first event exists (errors before it raise: a JSON error body)."""
    try:
        return StreamReply(await anext(events), events, errors)
    except BaseException:
        await events.aclose()
        raise


async def generation_reply(http: HttpRequest, request_type, once, stream,
                           errors: ErrorShape = OPENAI_ERRORS) -> Reply | StreamReply:
    """Decode a request of ``request_type``: the SSE events of ``stream`` if it asks to stream
    (a failure mid-stream in ``errors``' shape), else the JSON of ``once`` (the gateway's calls,
    e.g. ``chat_sse`` and ``chat``)."""
    request = oa.decode_request(await http.read_body(), request_type)
    routing_key = http.headers.get(ROUTING_KEY_HEADER) or None
    access = ACCESS.get()
    if access is not None:
        access.model = request.model or None
    # admitted (when the server has admission control): the request's slots are held until its
    # answer ends (a stream's last event)
    leave = None
    if http.admission is not None:
        waited = time.monotonic()
        leave = await http.admission.enter(request.model, http.priority)
        if access is not None:
            access.stage("queue", waited, time.monotonic())
    if not request.stream:
        try:
            return Reply(200, oa.encode(await once(request, request_id=http.client_request_id,
                                                   routing_key=routing_key)))
        finally:
            if leave is not None:
                leave()
    try:
        reply = await sse_reply(stream(request, sink=http.sink, request_id=http.client_request_id,
                                       routing_key=routing_key), errors)
    except BaseException:
        if leave is not None:
            leave()
        raise
    return reply if leave is None else reply._replace(events=released(reply.events, leave))
