"""Server-streaming gRPC calls over HTTP/2, run on the event loop itself: the token stream's transport.

Why not ``grpc.aio`` for ``Generate``: its C core runs in a poller thread that wakes the event loop
through a socket for every completion, so each token message from an engine costs a thread
hand-off (two context switches) and a coroutine wake-up; profiled under load, that was most of the
gateway's CPU per token. Here the connection is an ``asyncio.Protocol``: one ``recv`` brings the
DATA frames of many streams, they are parsed in one pass, and each stream's consumer is woken once
per batch and drains all its messages without suspending. Runs of DATA frames carrying whole
messages (a token stream's steady state) go through the compiled ``smg._ext.h2_data`` kernel. The
unary RPCs (health, model info, abort) stay on ``grpc.aio``.

Scope (what the engines' gRPC servers need, per RFC 9113 and gRPC's HTTP/2 protocol): one
connection per worker, cleartext (prior knowledge), client-initiated streams; HPACK via the
``hpack`` package; flow control both ways (the connection's receive window opened wide and
replenished as DATA arrives; each stream's, ``STREAM_WINDOW``, given back only once its consumer
has taken what came, so a stream nobody reads holds at most that much here and the engine is held
back instead; send windows respected with queued DATA); SETTINGS, PING, WINDOW_UPDATE,
RST_STREAM, GOAWAY (the streams it names as not started are sent again on a new connection);
``grpc-timeout``; trailers-only responses; keepalive PINGs while streams are open. Errors are ``H2RpcError`` (a ``grpc.RpcError`` with
``code()``/``details()``), so the pool maps them as it maps ``grpc.aio``'s.
"""
from __future__ import annotations

import asyncio
import struct
import time
from collections import deque
from typing import Callable, NamedTuple
from urllib.parse import unquote

import grpc
import hpack

from smg import _ext
from smg.waiting import wait_within

take_messages = _ext.load("h2_data").take_messages

__all__ = ["H2Channel", "H2RpcError", "StreamCall"]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
(S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE,
 S_MAX_HEADER_LIST_SIZE) = range(1, 7)
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 0, 1, 3, 6, 7, 8
MAX_WINDOW = (1 << 31) - 1
_REPLENISH = 1 << 30  # bytes received on the connection after which its window is opened again
# Each stream's receive window: what a stream may hold here unread. A consumer that finds its
# queue empty gives the window back once half of it was used (one WINDOW_UPDATE per 512 KiB: a
# token stream of ~30-byte messages sends one per ~15,000 tokens), so a stream that is read is
# never held back, and one that is not (a client that stopped reading) holds the engine back.
STREAM_WINDOW = _ext.load("h2_data").STREAM_WINDOW
_CREDIT_AT = STREAM_WINDOW // 2
MAX_MESSAGE = 256 << 20  # as the grpc.aio channel's max_receive_message_length
MAX_FRAME = 16384  # the largest frame the server may send: SETTINGS_MAX_FRAME_SIZE's default, kept
MAX_HEADER_LIST = 1 << 20  # SETTINGS_MAX_HEADER_LIST_SIZE as advertised: a larger list fails its stream
# A header block's HPACK state must be decoded whatever its size (the table is shared by every
# stream); past this many bytes (compressed) the peer is broken, and so is the connection.
MAX_HEADER_BLOCK = 4 << 20  # (decoding that much takes ~0.3 s on the loop)
LAST_STREAM_ID = (1 << 31) - 1
# A consumer that finds messages already queued takes this many before yielding to the event loop:
# an engine can run far ahead of a busy gateway, and draining a whole response in one go made
# every other request (a new one's first token above all) wait behind it. Measured saturated
# (2,000-token prompts, concurrency 16): TTFT p50 80 ms undrained, 40 ms at 16, 19 ms at 4,
# 13 ms at 1; tokens/s 34.2k, 32.2k, 31.9k, 30.3k.
_BURST = 4
KEEPALIVE_SECONDS = 30.0  # as the grpc.aio channels' keepalive_time_ms
_KEEPALIVE_PING = b"smg-ping"

_frame_header = struct.Struct(">HBBBL")  # length (24 bits as 16 + 8), type, flags, stream id
_message_prefix = struct.Struct(">BL")  # gRPC: compressed flag, length
_u32 = struct.Struct(">L")
_setting = struct.Struct(">HL")

_HTTP_TO_GRPC = {400: grpc.StatusCode.INTERNAL, 401: grpc.StatusCode.UNAUTHENTICATED,
                 403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.UNIMPLEMENTED,
                 429: grpc.StatusCode.UNAVAILABLE, 502: grpc.StatusCode.UNAVAILABLE,
                 503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.UNAVAILABLE}
_CODES = {code.value[0]: code for code in grpc.StatusCode}


class H2RpcError(grpc.RpcError):
    """A failed call: the gRPC status the server (or the transport) gave."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class ResponseRefused(H2RpcError):
    """A response this client refused (a message or headers over its limits): that stream's
    failure, not a sign of the engine's health (the worker stays in rotation)."""


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _frame_header.pack(n >> 8, n & 0xFF, kind, flags, stream_id) + payload


def _grpc_timeout(seconds: float) -> str:
    """gRPC's ``grpc-timeout`` value: at most 8 digits and a unit."""
    for unit, scale in (("m", 1e3), ("S", 1.0), ("M", 1 / 60), ("H", 1 / 3600)):
        value = max(1, int(seconds * scale))
        if value < 10 ** 8:
            return f"{value}{unit}"
    return "99999999H"


class StallLimits(NamedTuple):
    """Seconds a token stream may wait for its first message (``first_token``) and between two
    (``inter_token``); either None: no limit. They are checked every ``check_interval``, so a
    stall is seen within its limit plus that."""

    first_token: float | None
    inter_token: float | None

    @property
    def check_interval(self) -> float:
        shortest = min(limit for limit in self if limit is not None)
        return min(1.0, max(0.01, shortest / 4))


class StreamCall:
    """One server-streaming call: ``async for message in call``; ``cancel()``; ``done()``."""

    __slots__ = ("_channel", "_path", "_request", "_parse", "_timeout", "_connection", "id", "_messages",
                 "_pending", "_waiter", "_status", "_headers_seen", "_send_window", "_unsent", "_received", "_timer",
                 "_started", "_refusals", "_burst", "_loop", "_listener", "_returned", "_queued", "_watched", "_metadata")

    def __init__(self, channel: "H2Channel", path: str, request: bytes, parse: Callable[[bytes], object],
                 timeout: float | None, watched: bool = False, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._channel, self._path, self._request, self._parse, self._timeout = channel, path, request, parse, timeout
        self._metadata = metadata
        self._watched = watched  # under its channel's stall limits (a token stream)
        self._connection: _Connection | None = None
        self.id = 0
        self._messages: deque[bytes] = deque()
        self._pending = bytearray()  # DATA not yet a whole gRPC message
        self._waiter: asyncio.Future | None = None
        self._status: H2RpcError | None = None  # set when the call ended; OK is a status too
        self._headers_seen = False
        self._send_window = 0
        self._unsent = b""
        self._received = 0
        self._timer: asyncio.TimerHandle | None = None
        self._started = False
        self._refusals = 0  # REFUSED_STREAM answers: the server did not start it, so it is sent again
        self._burst = 0  # messages returned in a row without waiting
        self._loop: asyncio.AbstractEventLoop | None = None  # kept: get_running_loop() costs a getpid() each call
        self._listener: Callable[[], None] | None = None
        self._returned: object = None  # a decoded message handed back (put_back), returned next
        self._queued = False  # in its connection's list of listeners to call after this read

    def __aiter__(self) -> "StreamCall":
        return self

    async def __anext__(self):
        if self._returned is not None:
            message, self._returned = self._returned, None
            return message
        if not self._started:
            self._started = True
            self._loop = asyncio.get_running_loop()
            await self._channel._start(self)
        if self._messages:
            self._burst += 1
            if self._burst >= _BURST:  # let other requests run (a new one waits for its first token)
                self._burst = 0
                await asyncio.sleep(0)
        while not self._messages:
            self._burst = 0
            if self._received >= _CREDIT_AT and self._connection is not None:
                self._connection.credit(self)
            if self._connection is None and self._refusals and self._status is None:
                await self._channel._start(self)
                continue
            if self._status is not None:
                self._raise_status()
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._decode_next()

    def listen(self, listener: Callable[[], None] | None) -> None:
        """Have the connection call ``listener()`` from its data path when messages arrive (once
        per read, after all of it is parsed) or the call ends, instead of waking an ``async for``
        (no task runs per message); ``None`` goes back. The listener reads with :meth:`take` and
        must not cancel the call; one that raises fails its own call (INTERNAL), no other."""
        self._listener = listener

    def take(self):
        """The next message, decoded, if one has arrived (else None); at the call's end, raises as
        ``__anext__`` does (``StopAsyncIteration`` when it ended OK)."""
        if self._returned is not None:
            message, self._returned = self._returned, None
            return message
        if self._messages:
            return self._decode_next()
        if self._status is not None:
            self._raise_status()
        if self._received >= _CREDIT_AT and self._connection is not None:
            self._connection.credit(self)
        return None

    def put_back(self, message) -> None:
        """Return a message :meth:`take` gave: the next ``__anext__`` or ``take`` gives it again."""
        self._returned = message

    def _raise_status(self):
        if self._status.code() is grpc.StatusCode.OK:
            raise StopAsyncIteration
        raise self._status

    def _decode_next(self):
        try:
            return self._parse(self._messages.popleft())
        except Exception as exc:  # an undecodable message fails the call, as grpc.aio's deserializer does
            error = H2RpcError(grpc.StatusCode.INTERNAL, f"could not decode a response message: {exc}")
            self._messages.clear()
            self._fail_stream(error.code(), error.details())
            self._status = error  # even when the server had ended it OK: the call failed here
            raise error from None

    def done(self) -> bool:
        return self._status is not None

    def cancel(self) -> bool:
        """Stop the call (RST_STREAM CANCEL to the server); False if it had already ended."""
        if self._status is not None:
            return False
        if self._connection is not None and self.id:
            self._connection.reset(self, CANCEL)
        self._end(grpc.StatusCode.CANCELLED, "cancelled by the client")
        return True

    # ---- called by the connection -------------------------------------------------------------

    def _wake(self) -> None:
        listener = self._listener
        if listener is not None:
            connection = self._connection
            if connection is not None and connection.woken is not None:  # once, after the read
                if not self._queued:
                    self._queued = True
                    connection.woken.append(self)
                return
            listener()
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self, code: grpc.StatusCode, details: str, error: type[H2RpcError] = H2RpcError) -> None:
        if self._status is None:
            self._status = error(code, details)
            if self._timer is not None:
                self._timer.cancel()
            if self._connection is not None:
                self._connection.forget(self)
            self._wake()

    def _data(self, payload: bytes | memoryview) -> None:
        """DATA the fast path (``take_messages``) left: padded, ending the stream, or messages cut
        across frames."""
        pending = self._pending
        pending += payload
        while len(pending) >= 5:
            flag, length = _message_prefix.unpack_from(pending)
            if flag:
                self._fail_stream(grpc.StatusCode.INTERNAL, "compressed message, but no compression was offered")
                return
            if length > MAX_MESSAGE:
                self._fail_stream(grpc.StatusCode.RESOURCE_EXHAUSTED, f"message of {length} bytes is over the limit",
                                  ResponseRefused)
                return
            if len(pending) < 5 + length:
                break
            self._messages.append(bytes(pending[5:5 + length]))
            del pending[:5 + length]

    def _refused(self) -> None:
        """The server refused the stream before starting it (RFC 9113 8.7): open it again, a few times."""
        self._refusals += 1
        if self._refusals > 5 or self._headers_seen:
            self._end(grpc.StatusCode.UNAVAILABLE, "the server refused the stream")
            return
        self._connection.forget(self)
        self._connection, self.id, self._unsent = None, 0, b""
        self._wake()

    def _fail_stream(self, code: grpc.StatusCode, details: str, error: type[H2RpcError] = H2RpcError) -> None:
        if self._connection is not None:
            self._connection.reset(self, CANCEL)
        self._end(code, details, error)

    def _headers(self, headers: list[tuple[str, str]], end_stream: bool) -> None:
        fields = dict(headers)
        if not self._headers_seen:  # the response headers (or a trailers-only response)
            self._headers_seen = True
            status = fields.get(":status", "")
            if status != "200":
                http = int(status) if status.isdigit() else 0
                self._fail_stream(_HTTP_TO_GRPC.get(http, grpc.StatusCode.UNKNOWN), f"HTTP status {status or '?'}")
                return
        if "grpc-status" in fields:
            code = fields["grpc-status"]
            self._end(_CODES.get(int(code), grpc.StatusCode.UNKNOWN) if code.isdigit() else grpc.StatusCode.UNKNOWN,
                      unquote(fields.get("grpc-message", "")))
        elif end_stream:
            self._end(grpc.StatusCode.INTERNAL, "stream ended without a gRPC status")


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection: frames in, streams' messages out.

    Read pacing (``read_interval`` > 0): when a read brings messages less than two intervals
    after the one before, reading stops for an interval, so that the next read brings the messages
    of many streams, or many of one. An engine that writes each token message as it is made
    otherwise wakes the gateway for nearly every one, and both sides pay for each wake. A frame
    waits at most one interval, and none waits behind an engine whose steps are further apart than
    two (it is read as soon as it writes). Opening a stream ends a pause under way, none starts in
    the interval after while it has had no message, and a read of headers alone starts none, so a
    new stream's first message waits no more than others (at low concurrency, not at all); no
    pause starts while a request waits for a WINDOW_UPDATE. Measured in BENCHMARKS.md (issue 6,
    session 9).
    """

    def __init__(self, read_interval: float = 0.0, stall: "StallLimits | None" = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, StreamCall] = {}
        self.next_id = 1
        self.closed = False  # lost, or GOAWAY: no new streams
        self.error = "connection closed"
        self.loop = asyncio.get_running_loop()
        self.ready = self.loop.create_future()  # the server's first SETTINGS
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        # decode every block to its end (a table left half-updated breaks every stream); the
        # advertised limit is checked per stream after it
        self.decoder.max_header_list_size = MAX_HEADER_BLOCK * 4
        self.max_frame = 16384
        self.max_streams = 1 << 31
        self.initial_window = 65535
        self.send_window = 65535
        self.received = 0
        self.blocked: deque[StreamCall] = deque()  # streams with DATA waiting for window
        self.slots: deque[asyncio.Future] = deque()  # streams waiting under max_streams
        self.buffer = b""
        self.header_stream = 0  # a header block continues on this stream (CONTINUATION)
        self.header_end_stream = False
        self.header_block = bytearray()
        self.keepalive: asyncio.TimerHandle | None = None
        self.ping_sent = False
        self.woken: list[StreamCall] | None = None  # during a read: listened streams that got messages
        self.read_interval = read_interval
        self.last_read = 0.0  # when the last read that held DATA came (time.monotonic)
        self.resume: asyncio.TimerHandle | None = None  # while reading is paused
        # streams opened in the last interval, each with when that interval ends (_awaiting_first)
        self.fresh: deque[tuple[float, StreamCall]] = deque()
        self.stall = stall
        # watched streams: [bytes received when last seen to change, when that was, had data]
        self.watched: dict[StreamCall, list] = {}
        self.watch: asyncio.TimerHandle | None = None

    # ---- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        settings = (_setting.pack(S_ENABLE_PUSH, 0) + _setting.pack(S_INITIAL_WINDOW_SIZE, STREAM_WINDOW)
                    + _setting.pack(S_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST))
        transport.write(_PREFACE + _frame(SETTINGS, 0, 0, settings)
                        + _frame(WINDOW_UPDATE, 0, 0, _u32.pack(MAX_WINDOW - 65535)))
        self.keepalive = self.loop.call_later(KEEPALIVE_SECONDS, self._keepalive)

    def connection_lost(self, exc) -> None:
        self._shut(f"connection lost: {exc}" if exc else "connection closed by the server")

    def _keepalive(self) -> None:
        """While streams are open, PING the server every KEEPALIVE_SECONDS; a PING left unanswered
        that long means a dead peer (a crashed host sends no FIN): its streams fail as UNAVAILABLE
        instead of waiting forever."""
        if self.transport is None:
            return
        if self.ping_sent:
            transport = self.transport
            self._shut(f"no answer to a keepalive PING in {KEEPALIVE_SECONDS:g} s")
            transport.abort()
            return
        if self.streams:
            self.ping_sent = True
            self.transport.write(_frame(PING, 0, 0, _KEEPALIVE_PING))
        self.keepalive = self.loop.call_later(KEEPALIVE_SECONDS, self._keepalive)

    def data_received(self, data: bytes) -> None:
        self.woken = woken = []
        messages = self._read(data)
        self.woken = None
        for stream in woken:
            stream._queued = False
            listener = stream._listener
            if listener is not None:
                try:
                    listener()
                except Exception as exc:  # a consumer's bug fails its own stream, not the connection
                    stream.listen(None)
                    stream._fail_stream(grpc.StatusCode.INTERNAL, f"the stream's listener failed: {exc!r}")
        interval = self.read_interval
        if interval and self.transport is not None:
            if messages:  # (headers alone, a new stream's above all: its first message may be next)
                now = time.monotonic()
                if (now - self.last_read < 2 * interval and not self.blocked  # (no WINDOW_UPDATE held)
                        and not (self.fresh and self._awaiting_first(now))):
                    self.transport.pause_reading()
                    self.resume = self.loop.call_later(interval, self._resume)
                self.last_read = now

    def _awaiting_first(self, now: float) -> bool:
        """Whether a stream opened less than an interval ago has had no message yet. Other streams'
        messages would otherwise start a pause just before its first came, which would then wait
        the whole interval; an interval after it opened, it waits no longer than others."""
        fresh = self.fresh
        while fresh and fresh[0][0] <= now:
            fresh.popleft()
        for _, stream in fresh:
            if not stream._received and stream._status is None:
                return True
        return False

    def _resume(self) -> None:
        self.resume = None
        if self.transport is not None:
            self.transport.resume_reading()

    def _read(self, data: bytes) -> bool:
        """Parse what was read (and what the last read left); whether it held DATA."""
        if self.buffer:  # a frame was cut by the last read
            data = self.buffer + data
        view, offset, size = None, 0, len(data)
        messages = False
        while True:
            if not self.header_stream:  # runs of DATA frames of whole messages: the compiled fast path
                offset, consumed = take_messages(data, offset, self.streams)
                if consumed:  # _count_received inline: this runs once per read, a token's at low load
                    messages = True
                    received = self.received + consumed
                    self.received = received if received < _REPLENISH else self._window(received)
            if size - offset < 9:
                break
            hi, lo, kind, flags, stream_id = _frame_header.unpack_from(data, offset)
            length = (hi << 8) | lo
            if length > MAX_FRAME:  # (before waiting for it: a frame is never buffered past the limit)
                self.go_away(FRAME_SIZE_ERROR, f"HTTP/2 frame of {length} bytes, over SETTINGS_MAX_FRAME_SIZE "
                                               f"{MAX_FRAME}")
                return messages
            if size - offset - 9 < length:
                break
            offset += 9 + length
            view = view or memoryview(data)  # payloads are views of immutable bytes
            self._on_frame(kind, flags, stream_id & MAX_WINDOW, view[offset - length:offset])
            if self.transport is None:
                return messages
            messages = messages or kind == DATA
        self.buffer = data[offset:] if offset < size else b""
        return messages

    def _count_received(self, n: int) -> None:
        self.received = self._window(self.received + n)

    def _window(self, received: int) -> int:
        """Flow control of the connection: past a GiB received, open its window again. Returns
        the count to keep."""
        if received < _REPLENISH:
            return received
        self.transport.write(_frame(WINDOW_UPDATE, 0, 0, _u32.pack(received)))
        return 0

    def credit(self, stream: StreamCall) -> None:
        """Give a stream its window back: its consumer found its queue empty, so all it received
        was taken (or is part of a message still arriving, which must be let through)."""
        if self.transport is not None and self.streams.get(stream.id) is stream:
            self.transport.write(_frame(WINDOW_UPDATE, 0, stream.id, _u32.pack(stream._received)))
            stream._received = 0
            seen = self.watched.get(stream)
            if seen is not None:  # (its stall check reads progress from the count: a reset is progress)
                seen[0] = -1

    # ---- frames -------------------------------------------------------------------------------------

    def _on_frame(self, kind: int, flags: int, stream_id: int, payload: memoryview) -> None:
        if self.header_stream and kind != CONTINUATION:
            return self._protocol_error("a header block was interrupted")
        if kind == DATA:
            length = len(payload)  # (padding included: it counts against the windows)
            self._count_received(length)
            stream = self.streams.get(stream_id)
            if stream is None:
                return  # a stream we reset: its frames still count against the window, nothing else
            if stream._received + length > STREAM_WINDOW:  # (RFC 9113 6.9.1: the stream's error)
                self.reset(stream, FLOW_CONTROL_ERROR)
                return stream._end(grpc.StatusCode.INTERNAL, "the engine sent past the stream's flow-control window")
            stream._received += length
            if flags & PADDED:
                payload = payload[1:length - payload[0]]
            stream._data(payload)
            if flags & END_STREAM and stream._status is None:
                stream._end(grpc.StatusCode.INTERNAL, "stream ended without trailers")
            stream._wake()
        elif kind == HEADERS or kind == CONTINUATION:
            self._on_headers(kind, flags, stream_id, payload)
        elif kind == SETTINGS:
            if not flags & ACK:
                self._on_settings(payload)
        elif kind == WINDOW_UPDATE:
            increment = _u32.unpack_from(payload)[0] & MAX_WINDOW
            if stream_id == 0:
                self.send_window += increment
            elif stream_id in self.streams:
                self.streams[stream_id]._send_window += increment
            self._flush_blocked()
        elif kind == PING:
            if not flags & ACK:
                self.transport.write(_frame(PING, ACK, 0, bytes(payload)))
            elif payload == _KEEPALIVE_PING:
                self.ping_sent = False
        elif kind == RST_STREAM:
            stream = self.streams.get(stream_id)
            if stream is not None:
                code = _u32.unpack_from(payload)[0]
                if code == REFUSED_STREAM:
                    stream._refused()
                else:
                    stream._end(grpc.StatusCode.CANCELLED if code == CANCEL else grpc.StatusCode.INTERNAL,
                                f"stream reset by the server (HTTP/2 error {code})")
        elif kind == GOAWAY:
            last = _u32.unpack_from(payload)[0] & MAX_WINDOW
            self.closed, self.error = True, "the server is going away"
            for stream in [s for i, s in self.streams.items() if i > last]:
                stream._refused()  # not started (RFC 9113 6.8): it opens again on a new connection
            self._release_slots()
            if not self.streams:
                self.transport.close()
        elif kind == PUSH_PROMISE:
            self._protocol_error("push promised though disabled")
        # PRIORITY and unknown frame types are ignored, as RFC 9113 asks

    def _on_headers(self, kind: int, flags: int, stream_id: int, payload: memoryview) -> None:
        if kind == HEADERS:
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            if flags & PRIORITY_FLAG:
                payload = payload[5:]
            self.header_stream = stream_id
            self.header_end_stream = bool(flags & END_STREAM)
            self.header_block = bytearray(payload)
        elif stream_id != self.header_stream:
            return self._protocol_error("CONTINUATION without its HEADERS")
        else:
            self.header_block += payload
        if len(self.header_block) > MAX_HEADER_BLOCK:
            return self._protocol_error(f"a header block of more than {MAX_HEADER_BLOCK} bytes")
        if not flags & END_HEADERS:
            return
        self.header_stream = 0
        try:  # every block is decoded, whoever it is for: HPACK's table is shared
            raw = self.decoder.decode(bytes(self.header_block), raw=True)
        except hpack.HPACKError as exc:  # the shared table is lost: a connection error (RFC 9113 4.3)
            return self._protocol_error(f"bad header block: {exc}")
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if sum(len(name) + len(value) + 32 for name, value in raw) > MAX_HEADER_LIST:
            return stream._fail_stream(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                       f"response headers larger than {MAX_HEADER_LIST} bytes", ResponseRefused)
        # values as text without failing on bytes that are not UTF-8 (a grpc-message may hold any)
        headers = [(name.decode("latin-1"), value.decode("utf-8", "replace")) for name, value in raw]
        stream._headers(headers, self.header_end_stream)

    def _on_settings(self, payload: memoryview) -> None:
        for i in range(0, len(payload) - len(payload) % 6, 6):
            key, value = _setting.unpack_from(payload, i)
            if key == S_HEADER_TABLE_SIZE:
                self.encoder.header_table_size = min(value, 4096)
            elif key == S_MAX_CONCURRENT_STREAMS:
                self.max_streams = value
            elif key == S_INITIAL_WINDOW_SIZE:
                for stream in self.streams.values():
                    stream._send_window += value - self.initial_window
                self.initial_window = value
            elif key == S_MAX_FRAME_SIZE:
                self.max_frame = value
        self.transport.write(_frame(SETTINGS, ACK, 0))
        if not self.ready.done():
            self.ready.set_result(None)
        self._release_slots()
        self._flush_blocked()

    def _protocol_error(self, why: str) -> None:
        self.go_away(PROTOCOL_ERROR, f"HTTP/2 protocol error: {why}")

    def go_away(self, code: int, why: str) -> None:
        """Close the connection with GOAWAY ``code``; its streams fail as UNAVAILABLE with ``why``."""
        if self.transport is not None:
            self.transport.write(_frame(GOAWAY, 0, 0, _u32.pack(0) + _u32.pack(code)))
            self.transport.close()
        self._shut(why)

    def _shut(self, why: str) -> None:
        if self.watch is not None:
            self.watch.cancel()
            self.watch = None
        self.closed, self.error, self.transport = True, why, None
        if self.keepalive is not None:
            self.keepalive.cancel()
        for stream in list(self.streams.values()):
            stream._end(grpc.StatusCode.UNAVAILABLE, why)
        if not self.ready.done():
            self.ready.set_exception(H2RpcError(grpc.StatusCode.UNAVAILABLE, why))
        self._release_slots()

    # ---- streams ------------------------------------------------------------------------------------

    async def open(self, stream: StreamCall, headers: list[tuple[str, str]]) -> bool:
        """Open ``stream`` here; False when the connection closed first (lost, or a GOAWAY while
        the stream waited for a slot): the stream never left, so it may go on a new connection."""
        while len(self.streams) >= self.max_streams and not self.closed:
            slot = self.loop.create_future()
            self.slots.append(slot)
            await slot
        if stream._status is not None:  # ended (its deadline) while it waited for a slot
            return True
        if self.closed or self.transport is None:
            return False
        stream.id, self.next_id = self.next_id, self.next_id + 2
        if self.next_id > LAST_STREAM_ID:  # ids used up: later streams go to a new connection
            self.closed, self.error = True, "stream ids exhausted"
        stream._connection = self
        stream._send_window = self.initial_window
        self.streams[stream.id] = stream
        if stream._watched and self.stall is not None:
            self.watched[stream] = [0, self.loop.time(), False]
            if self.watch is None:
                self.watch = self.loop.call_later(self.stall.check_interval, self._check_stalls)
        block = self.encoder.encode(headers)
        first, block = block[:self.max_frame], block[self.max_frame:]
        frames = [_frame(HEADERS, 0 if block else END_HEADERS, stream.id, first)]
        while block:
            piece, block = block[:self.max_frame], block[self.max_frame:]
            frames.append(_frame(CONTINUATION, 0 if block else END_HEADERS, stream.id, piece))
        stream._unsent = _message_prefix.pack(0, len(stream._request)) + stream._request
        self._send(stream, frames)  # with the headers: one write
        if self.read_interval:  # its reply is held by no pause begun before it, nor (for an
            self.fresh.append((time.monotonic() + self.read_interval, stream))  # interval) by one
        if self.resume is not None:  # begun before its first message
            self.resume.cancel()
            self._resume()
        return True

    def _send(self, stream: StreamCall, frames: list[bytes] | None = None) -> bool:
        """Send what flow control allows of the stream's request (after ``frames``); True when
        all of it went."""
        data = stream._unsent
        frames = frames or []
        while data:
            size = min(len(data), self.max_frame, self.send_window, stream._send_window)
            if size <= 0:
                break
            piece, data = data[:size], data[size:]
            self.send_window -= size
            stream._send_window -= size
            frames.append(_frame(DATA, 0 if data else END_STREAM, stream.id, piece))
        stream._unsent = data
        if frames:
            self.transport.write(b"".join(frames))
        if data and stream not in self.blocked:
            self.blocked.append(stream)
        return not data

    def _flush_blocked(self) -> None:
        for _ in range(len(self.blocked)):
            self._send(self.blocked.popleft())  # (an ended stream left the queue: forget)

    def reset(self, stream: StreamCall, code: int) -> None:
        if self.transport is not None and stream.id in self.streams:
            self.transport.write(_frame(RST_STREAM, 0, stream.id, _u32.pack(code)))

    def forget(self, stream: StreamCall) -> None:
        if self.blocked and stream in self.blocked:  # (an ended stream would keep reads unpaced)
            self.blocked.remove(stream)
        if self.watched:
            self.watched.pop(stream, None)
        if self.streams.pop(stream.id, None) is not None:
            self._release_slots()
            if self.closed and not self.streams and self.transport is not None:
                self.transport.close()

    def _check_stalls(self) -> None:
        """End the watched streams that waited too long for their first message or the next
        one. Progress is read from the bytes each stream has received (which the data path counts
        anyway): nothing is stamped or timed per message."""
        self.watch = None
        if not self.watched or self.transport is None:
            return
        now, (first, between) = self.loop.time(), (self.stall.first_token, self.stall.inter_token)
        stalled = []
        for stream, seen in self.watched.items():
            if stream._received != seen[0] or stream._messages:
                seen[0], seen[1], seen[2] = stream._received, now, True
            else:
                limit = between if seen[2] else first
                if limit is not None and now - seen[1] > limit:
                    stalled.append((stream, seen[2], limit))
        for stream, started, limit in stalled:
            stream._fail_stream(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"no {'token' if started else 'first token'} from the engine in {limit:g} s")
        if self.watched:
            self.watch = self.loop.call_later(self.stall.check_interval, self._check_stalls)

    def _release_slots(self) -> None:
        while self.slots and (self.closed or len(self.streams) < self.max_streams):
            slot = self.slots.popleft()
            if not slot.done():
                slot.set_result(None)
                if not self.closed:
                    break


class H2Channel:
    """Server-streaming gRPC calls to one ``host:port`` over one HTTP/2 connection (re-made
    when lost or when the server goes away)."""

    def __init__(self, target: str, read_interval: float = 0.0, connect_timeout: float = 5.0,
                 stall: StallLimits | None = None) -> None:
        """``read_interval``: seconds of the connection's read pacing (see ``_Connection``); 0
        reads whenever data arrives. ``connect_timeout``: seconds for TCP connect and the
        server's first SETTINGS. ``stall``: how long a watched stream may wait for its first
        message and between messages."""
        self.stall = stall
        host, _, port = target.rpartition(":")
        self.host, self.port, self.authority = host.strip("[]"), int(port), target
        self.read_interval = read_interval
        self.connect_timeout = connect_timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task | None = None

    def stream(self, path: str, request: bytes, parse: Callable[[bytes], object],
               timeout: float | None = None, watched: bool = False,
               metadata: tuple[tuple[str, str], ...] = ()) -> StreamCall:
        """A call of method ``path`` (``/package.Service/Method``) with the serialized request;
        ``parse`` turns each response message's bytes into the caller's object. The call starts
        on the first ``__anext__``. ``watched``: the channel's stall limits apply to it (a stream
        of tokens; not a call whose one answer comes at the end). ``metadata``: more request headers
        (gRPC metadata: lowercase ASCII names)."""
        return StreamCall(self, path, request, parse, timeout, watched, metadata)

    async def _live(self) -> _Connection:
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        made: list[_Connection] = []

        async def handshake() -> _Connection:
            _, connection = await loop.create_connection(lambda: _Connection(self.read_interval, self.stall), self.host,
                                                         self.port)
            made.append(connection)
            await connection.ready
            return connection

        try:
            connection = await asyncio.wait_for(handshake(), self.connect_timeout)
        except asyncio.TimeoutError:  # (an OSError too from 3.11: first)
            if made:  # connected, but no SETTINGS came
                made[0].go_away(NO_ERROR, "handshake timed out")
            raise H2RpcError(grpc.StatusCode.UNAVAILABLE, f"no HTTP/2 connection to {self.authority} within "
                                                          f"{self.connect_timeout:g} s") from None
        except OSError as exc:
            raise H2RpcError(grpc.StatusCode.UNAVAILABLE, f"cannot connect to {self.authority}: {exc}") from None
        self._connection = connection
        return connection

    async def _start(self, stream: StreamCall) -> None:
        if stream._status is not None:  # cancelled before it started
            return
        headers = [(":method", "POST"), (":scheme", "http"), (":path", stream._path), (":authority", self.authority),
                   ("content-type", "application/grpc"), ("te", "trailers"), ("user-agent", "smg-h2"),
                   *stream._metadata]
        if stream._timeout is None:
            await self._open(stream, headers)
            return
        loop = asyncio.get_running_loop()
        if stream._timer is None:  # the deadline counts from the first try, connecting included
            stream._timer = loop.call_later(
                stream._timeout, lambda: stream._fail_stream(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"))
        try:
            await wait_within(self._open(stream, headers), max(stream._timer.when() - loop.time(), 0.0))
        except asyncio.TimeoutError:
            stream._end(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before the stream was opened")

    async def _open(self, stream: StreamCall, headers: list[tuple[str, str]]) -> None:
        """Open the stream on the live connection, on a new one if that closed before the stream
        left (a GOAWAY or a loss while it waited): a few times, then UNAVAILABLE. A stream with a
        deadline tells the server what is left of it (``grpc-timeout``)."""
        timer = stream._timer
        for _ in range(3):
            connection = await self._live()
            sent = headers if timer is None else [
                *headers, ("grpc-timeout", _grpc_timeout(max(timer.when() - connection.loop.time(), 0.001)))]
            if await connection.open(stream, sent):
                return
        raise H2RpcError(grpc.StatusCode.UNAVAILABLE, connection.error)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.go_away(NO_ERROR, "channel closed")
