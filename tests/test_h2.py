"""smg's HTTP/2 streaming client (``smg.engines.h2``) against grpc's own C-core server.

The server is a generic ``grpc.aio`` handler over raw bytes, so each test shapes exactly what the
transport must cope with: messages split over frames and many per read, requests larger than the
flow-control windows, statuses in trailers and in trailers-only responses, deadlines, the server's
stream limit, cancellation seen by the server, a server going away.
"""
import asyncio
import contextlib
import struct

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smg.engines.h2 import STREAM_WINDOW, H2Channel, H2RpcError

pytestmark = pytest.mark.no_kernels  # (the twins' pass leaves it out)

PATH = "/test.Streams/Echo"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def identity(data: bytes) -> bytes:
    return data


@contextlib.asynccontextmanager
async def server(handler, **options):
    """A grpc.aio server whose ``test.Streams/Echo`` is ``handler(request: bytes, context)``."""
    srv = grpc.aio.server(options=list(options.items()))
    rpc = grpc.unary_stream_rpc_method_handler(handler)
    srv.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Streams", {"Echo": rpc})])
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await srv.stop(0)


@contextlib.asynccontextmanager
async def channel_to(handler, channel_options=None, **server_options):
    """An H2Channel to a :func:`server` of ``handler``, closed before the server stops."""
    async with server(handler, **server_options) as target:
        channel = H2Channel(target, **(channel_options or {}))
        try:
            yield channel
        finally:
            await channel.close()


async def echo(request: bytes, context):
    """Replies ``count`` messages of ``size`` bytes (from the 8-byte request), then OK."""
    count, size = struct.unpack(">LL", request[:8])
    for i in range(count):
        yield bytes([i % 256]) * size


def ask(count: int, size: int, padding: int = 0) -> bytes:
    return struct.pack(">LL", count, size) + b"x" * padding


async def take(channel: H2Channel, request: bytes, timeout=None):
    return [m async for m in channel.stream(PATH, request, identity, timeout)]


def test_messages_of_any_size_arrive_whole_and_in_order():
    async def main():
        async with channel_to(echo) as channel:
            # (3 MB: one message over the stream's window, let through as it arrives)
            for count, size in [(0, 0), (1, 0), (300, 7), (3, 70_000), (2, 1_000_000), (1, 3 * STREAM_WINDOW)]:
                got = await take(channel, ask(count, size))
                assert got == [bytes([i % 256]) * size for i in range(count)]
    run(main())


def test_requests_larger_than_the_flow_control_windows_are_sent_whole():
    seen = []

    async def length(request: bytes, context):
        seen.append(len(request))
        yield struct.pack(">L", len(request))

    async def main():
        async with channel_to(length) as channel:
            sizes = [10, 200_000, 1_500_000]  # over the 65,535-byte initial windows
            replies = await asyncio.gather(*(take(channel, b"r" * n) for n in sizes))
            assert [struct.unpack(">L", r[0])[0] for r in replies] == sizes
        assert sorted(seen) == sorted(sizes)
    run(main())


def test_many_concurrent_streams_share_one_connection():
    async def main():
        async with channel_to(echo) as channel:
            results = await asyncio.gather(*(take(channel, ask(50, i)) for i in range(200)))
            assert all(r == [bytes([k % 256]) * i for k in range(50)] for i, r in enumerate(results))
    run(main())


def test_the_servers_stream_limit_queues_the_rest():
    active, peak = 0, 0

    async def slow(request: bytes, context):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1
        yield b"done"

    async def main():
        async with channel_to(slow, **{"grpc.max_concurrent_streams": 3}) as channel:
            results = await asyncio.gather(*(take(channel, b"") for _ in range(12)))
            assert results == [[b"done"]] * 12
        assert peak <= 3
    run(main())


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL])
@pytest.mark.parametrize("after", [0, 2])
def test_statuses_arrive_typed_with_their_message(code, after):
    async def fail(request: bytes, context):
        for _ in range(after):  # after=0: a trailers-only response
            yield b"ok"
        await context.abort(code, "bad thing: 100% ünïcode")

    async def main():
        async with server(fail) as target:
            channel = H2Channel(target)
            got = []
            try:
                with pytest.raises(H2RpcError) as info:
                    async for m in channel.stream(PATH, b"", identity):
                        got.append(m)
            finally:
                await channel.close()
            assert got == [b"ok"] * after
            assert info.value.code() == code and info.value.details() == "bad thing: 100% ünïcode"
            assert isinstance(info.value, grpc.RpcError)
    run(main())


def test_deadline_and_cancellation_reach_the_server():
    ended: list[asyncio.Event] = []

    async def forever(request: bytes, context):
        if request:  # a request with a body is answered normally
            yield request
            return
        try:
            while True:
                yield b"tick"
                await asyncio.sleep(0.005)
        finally:  # cancelled (CancelledError) or closed (GeneratorExit), as the server chooses
            ended[-1].set()

    async def main():
        async with channel_to(forever) as channel:
            ended.append(asyncio.Event())
            with pytest.raises(H2RpcError) as info:
                await take(channel, b"", timeout=0.1)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.wait_for(ended[-1].wait(), 5)

            ended.append(asyncio.Event())
            call = channel.stream(PATH, b"", identity)
            assert await call.__anext__() == b"tick"
            assert not call.done() and call.cancel() and call.done() and not call.cancel()
            await asyncio.wait_for(ended[-1].wait(), 5)  # RST_STREAM: the server's handler is cancelled
            with pytest.raises(H2RpcError) as info:
                await call.__anext__()
            assert info.value.code() == grpc.StatusCode.CANCELLED
            assert await take(channel, b"still") == [b"still"]  # the connection still serves
    run(main())


def test_unreachable_and_stopped_servers_are_unavailable():
    async def main():
        async with server(echo) as target:
            pass  # stopped: nothing listens there now
        channel = H2Channel(target)
        with pytest.raises(H2RpcError) as info:
            await take(channel, ask(1, 1))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE

        async def stall(request: bytes, context):
            yield b"first"
            await asyncio.sleep(30)

        srv = grpc.aio.server()
        rpc = grpc.unary_stream_rpc_method_handler(stall)
        srv.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("test.Streams", {"Echo": rpc})])
        port = srv.add_insecure_port("127.0.0.1:0")
        await srv.start()
        channel = H2Channel(f"127.0.0.1:{port}")
        call = channel.stream(PATH, b"", identity)
        assert await call.__anext__() == b"first"
        await srv.stop(0)  # the server goes away mid-stream
        with pytest.raises(H2RpcError) as info:
            await call.__anext__()
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        await channel.close()
    run(main())


@pytest.mark.parametrize("seconds, value", [(0.0004, "1m"), (2.5, "2500m"), (200_000.0, "200000S"),
                                             (3e9, "50000000M"), (1e13, "99999999H")])
def test_grpc_timeout_header_fits_eight_digits(seconds, value):
    from smg.engines.h2 import _grpc_timeout

    assert _grpc_timeout(seconds) == value


# ---- frames grpc's server never sends, from a server written here frame by frame -------------------

def frame(kind, flags, stream_id, payload=b""):
    return struct.pack(">HBBBL", len(payload) >> 8, len(payload) & 0xFF, kind, flags, stream_id) + payload


async def read_frames(reader, until_kind):
    """Read the client's frames (after its preface) until one of ``until_kind``; all of them."""
    frames = []
    while True:
        header = await reader.readexactly(9)
        hi, lo, kind, flags, stream_id = struct.unpack(">HBBBL", header)
        frames.append((kind, flags, stream_id, await reader.readexactly((hi << 8) | lo)))
        if kind == until_kind:
            return frames


@contextlib.asynccontextmanager
async def raw_server(handle, read_interval=0.0):
    """An H2Channel to a server that is ``handle(reader, writer)`` on a plain socket."""
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    channel = H2Channel(f"127.0.0.1:{srv.sockets[0].getsockname()[1]}", read_interval)
    try:
        yield channel
    finally:
        await channel.close()
        srv.close()


def test_padding_priority_continuation_ping_and_split_messages():
    import hpack

    pinged = asyncio.Event()

    async def handle(reader, writer):
        await reader.readexactly(24)  # the connection preface
        encoder = hpack.Encoder()
        writer.write(frame(4, 0, 0, struct.pack(">HL", 5, 16384)) + frame(6, 0, 0, b"12345678"))
        frames = await read_frames(reader, 1)  # up to the request's HEADERS
        stream = frames[-1][2]
        block = encoder.encode([(":status", "200"), ("content-type", "application/grpc"), ("x-pad", "p" * 40)])
        half = len(block) // 2
        # HEADERS with padding and a priority block, its header block continued in a CONTINUATION
        writer.write(frame(1, 0x8 | 0x20, stream, bytes([3]) + b"\0\0\0\0\x10" + block[:half] + b"\0\0\0")
                     + frame(9, 0x4, stream, block[half:]))
        one, two, three = (struct.pack(">BL", 0, len(m)) + m for m in (b"alpha", b"beta", b"gamma" * 5))
        writer.write(frame(0, 0x8, stream, bytes([2]) + one[:4] + b"\0\0"))  # padded, a message cut in two
        writer.write(frame(0, 0, stream, one[4:] + two + three[:3]))  # the rest, a whole one, a start
        writer.write(frame(0, 0, stream, three[3:]))
        trailers = encoder.encode([("grpc-status", "0"), ("grpc-message", "")])
        writer.write(frame(1, 0x4 | 0x1, stream, trailers))
        await writer.drain()
        if not any(f[0] == 6 for f in frames):  # the client answers the PING when it reads it
            frames += await read_frames(reader, 6)
        if any(f[0] == 6 and f[1] & 1 and f[3] == b"12345678" for f in frames):
            pinged.set()
        writer.close()

    async def main():
        async with raw_server(handle) as channel:
            assert await take(channel, b"request") == [b"alpha", b"beta", b"gamma" * 5]
            await asyncio.wait_for(pinged.wait(), 5)
    run(main())


def test_a_stream_the_server_went_away_before_starting_opens_again_on_a_new_connection():
    """RFC 9113 6.8: streams above a GOAWAY's last stream id were not processed, so they are sent
    again on a new connection (a graceful restart costs the caller nothing); a server that goes
    away every time fails the call as UNAVAILABLE after a few connections, not a loop."""
    import hpack

    connections = 0
    going_away = 1  # the first this many connections go away at the first stream

    async def handle(reader, writer):
        nonlocal connections
        connections += 1
        await reader.readexactly(24)
        writer.write(frame(4, 0, 0))
        stream = (await read_frames(reader, 1))[-1][2]
        if connections <= going_away:  # nothing at or above stream 1 was processed
            writer.write(frame(7, 0, 0, struct.pack(">LL", 0, 0)))
        else:
            encoder = hpack.Encoder()
            writer.write(frame(1, 0x4, stream, encoder.encode([(":status", "200"),
                                                               ("content-type", "application/grpc")]))
                         + frame(0, 0, stream, struct.pack(">BL", 0, 2) + b"ok")
                         + frame(1, 0x5, stream, encoder.encode([("grpc-status", "0")])))
        await writer.drain()
        await reader.read()  # until the client closes
        writer.close()

    async def main():
        nonlocal going_away, connections
        async with raw_server(handle) as channel:
            assert await take(channel, b"x") == [b"ok"]
            assert connections == 2
        going_away, connections = 100, 0
        async with raw_server(handle) as channel:
            with pytest.raises(H2RpcError) as info:
                await take(channel, b"x")
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert 2 <= connections <= 7
    run(main())


def test_a_silent_peer_fails_open_streams_after_an_unanswered_keepalive(monkeypatch):
    import hpack

    from smg.engines import h2

    monkeypatch.setattr(h2, "KEEPALIVE_SECONDS", 0.1)
    pings = []

    async def handle(reader, writer):  # starts the response, then answers nothing (a hung host)
        await reader.readexactly(24)
        writer.write(frame(4, 0, 0))
        stream = (await read_frames(reader, 1))[-1][2]
        writer.write(frame(1, 0x4, stream, hpack.Encoder().encode([(":status", "200"),
                                                                   ("content-type", "application/grpc")]))
                     + frame(0, 0, stream, struct.pack(">BL", 0, 5) + b"first"))
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                pings.extend(f for f in await read_frames(reader, 6) if f[0] == 6 and not f[1] & 1)

    async def main():
        async with raw_server(handle) as channel:
            call = channel.stream(PATH, b"", identity)
            assert await call.__anext__() == b"first"
            with pytest.raises(H2RpcError) as info:
                await asyncio.wait_for(call.__anext__(), 5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "keepalive" in info.value.details()
        assert pings  # it did ask
    run(main())


# ---- the compiled DATA fast path against its twin -------------------------------------------------

class Sink:
    """What take_messages touches on a stream."""

    def __init__(self, pending=b"", received=0):
        self._pending, self._received, self._messages, self.woken = bytearray(pending), received, [], 0

    def _wake(self):
        self.woken += 1

    def state(self):
        return bytes(self._pending), self._received, self._messages, self.woken


def grpc_message(body: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BL", int(compressed), len(body)) + body


data_frames = st.lists(st.tuples(
    st.sampled_from([0, 0, 0, 1]),  # kind: mostly DATA
    st.sampled_from([0, 0, 0, 0x1, 0x8]),  # flags
    st.sampled_from([1, 3, 5, 7]),  # 3 holds part of a message, 5 is near its window, 7 is unknown
    st.lists(st.tuples(st.binary(max_size=12), st.sampled_from([False, False, False, True])), max_size=3),
    st.sampled_from([None, None, None, 1, 4]),  # cut the payload short (a message cut by the frame)
), max_size=12)


@given(frames=data_frames, cut=st.integers(0, 400), start=st.integers(0, 3))
@settings(max_examples=400, deadline=None)
def test_take_messages_matches_twin(h2_data_impl, frames, cut, start):
    from smg._ext import h2_data_py

    data = b"".join(frame(kind, flags, stream, b"".join(grpc_message(m, c) for m, c in messages)[:cut_at])
                    for kind, flags, stream, messages, cut_at in frames)
    data = data[:max(cut, len(data) // 2)]
    offset = min(start, len(data))

    def run(impl):
        streams = {1: Sink(), 3: Sink(pending=b"\0\0"), 5: Sink(received=STREAM_WINDOW - 20)}
        result = impl.take_messages(data, offset, streams)
        return result, {k: s.state() for k, s in streams.items()}

    assert run(h2_data_impl) == run(h2_data_py)


def test_a_stream_nobody_reads_holds_at_most_its_window_and_goes_on_when_read():
    """Per-stream flow control: what an unread stream holds is bounded by its window (the engine is
    held back, not buffered here without end); reading it again lets the rest through, in order."""
    count, size = 4000, 1000  # 4 MB, four windows

    async def main():
        async with channel_to(echo) as channel:
            call = channel.stream(PATH, ask(count, size), identity)
            got = [await call.__anext__()]
            await asyncio.sleep(0.5)  # not reading: the engine fills the window and stops
            held = sum(len(m) + 5 for m in call._messages)
            assert STREAM_WINDOW // 2 < held <= STREAM_WINDOW
            got += [m async for m in call]
            assert got == [bytes([i % 256]) * size for i in range(count)]
    run(main())


def test_an_engine_sending_past_a_streams_window_fails_that_stream():
    body = b"".join(grpc_message(b"x" * 995) for _ in range(1150))  # 1.1 MB whatever the window says
    handle = first_then([body[i:i + 16000] for i in range(0, len(body), 16000)])

    async def main():
        async with raw_server(handle) as channel:
            call = channel.stream(PATH, b"x", identity)
            assert await call.__anext__() == b"first"
            await asyncio.sleep(0.5)  # not reading (a reader would have given the window back)
            with pytest.raises(H2RpcError) as info:
                async for _ in call:
                    pass
            assert info.value.code() == grpc.StatusCode.INTERNAL and "flow-control window" in info.value.details()
    run(main())


def test_take_messages_stops_at_what_it_does_not_handle():
    from smg._ext import h2_data_py

    stream = Sink()
    two = frame(0, 0, 1, grpc_message(b"a") + grpc_message(b"bc"))
    data = two + frame(0, 0, 1, grpc_message(b"d", compressed=True)) + two
    assert h2_data_py.take_messages(data, 0, {1: stream}) == (len(two), len(two) - 9)
    assert stream.state() == (b"", len(two) - 9, [b"a", b"bc"], 1)


def failing_on(bad: bytes):
    """A message parser that rejects ``bad`` (and passes anything else through)."""
    def parse(data: bytes) -> bytes:
        if data == bad:
            raise ValueError("not a response")
        return data
    return parse


def test_an_undecodable_message_fails_the_call_as_internal():
    parse = failing_on(b"\0")

    async def main():
        async with channel_to(echo) as channel:
            got = []
            with pytest.raises(H2RpcError) as info:
                async for message in channel.stream(PATH, ask(3, 1), parse):
                    got.append(message)
            assert got == [] and info.value.code() == grpc.StatusCode.INTERNAL
            assert await take(channel, ask(1, 2)) == [b"\0\0"]  # the connection is fine
    run(main())


async def first_request(reader, writer):
    """Take a client's preface and first request, send SETTINGS: (an HPACK encoder, the stream
    id, the response headers' frame)."""
    import hpack

    await reader.readexactly(24)
    encoder = hpack.Encoder()
    writer.write(frame(4, 0, 0))
    stream = (await read_frames(reader, 1))[-1][2]
    headers = encoder.encode([(":status", "200"), ("content-type", "application/grpc")])
    return encoder, stream, frame(1, 0x4, stream, headers)


def reply_at_once(messages):
    """A raw-server handler answering the first request with ``messages`` and OK in one write."""
    async def handle(reader, writer):
        encoder, stream, headers = await first_request(reader, writer)
        writer.write(headers + frame(0, 0, stream, b"".join(grpc_message(m) for m in messages))
                     + frame(1, 0x4 | 0x1, stream, encoder.encode([("grpc-status", "0")])))
        await writer.drain()
        await reader.read()  # until the client goes
        writer.close()
    return handle


def first_then(payloads):
    """A raw-server handler answering the first request with the message ``first``, then, 0.2 s
    later (the client has taken it by then), a DATA frame of each of ``payloads`` and OK."""
    async def handle(reader, writer):
        encoder, stream, headers = await first_request(reader, writer)
        writer.write(headers + frame(0, 0, stream, grpc_message(b"first")))
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(b"".join(frame(0, 0, stream, payload) for payload in payloads)
                     + frame(1, 0x4 | 0x1, stream, encoder.encode([("grpc-status", "0")])))
        await writer.drain()
        await reader.read()  # until the client goes
        writer.close()
    return handle


async def until_done(call):
    for _ in range(500):
        if call.done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the call did not end")


def test_an_undecodable_message_fails_a_call_the_server_had_ended_ok():
    async def main():
        async with raw_server(reply_at_once([b"a", b"b", b"bad", b"c"])) as channel:
            call = channel.stream(PATH, b"request", failing_on(b"bad"))
            assert await call.__anext__() == b"a"
            await until_done(call)  # the trailers (OK) were read with the messages
            assert await call.__anext__() == b"b"
            with pytest.raises(H2RpcError) as info:
                await call.__anext__()
            assert info.value.code() == grpc.StatusCode.INTERNAL
            with pytest.raises(H2RpcError):  # the call stays failed: "c" is not handed out after it
                await call.__anext__()
    run(main())


async def trickle(request: bytes, context):
    """Like ``echo``, a message at a time with a pause between (so they arrive over many reads);
    a request longer than 8 bytes ends with ABORTED after its messages."""
    count, size = struct.unpack(">LL", request[:8])
    for i in range(count):
        await asyncio.sleep(0.002)
        yield bytes([i % 256]) * size
    if len(request) > 8:
        await context.abort(grpc.StatusCode.ABORTED, "told to")


async def listened(call, runs=None):
    """What a listener reads from ``call`` once it is listening: (messages, how it ended); each
    time it runs (first for what had arrived, then when the connection calls it), ``runs`` gets
    how many messages it had read by then."""
    got, ended = [], asyncio.get_running_loop().create_future()

    def listener():
        if runs is not None:
            runs.append(len(got))
        try:
            while (message := call.take()) is not None:
                got.append(message)
        except BaseException as exc:  # the call's end
            call.listen(None)
            ended.set_result(exc)

    call.listen(listener)
    listener()  # what arrived before it listened
    return got, await ended


def test_a_listener_reads_a_call_from_the_data_path_in_order_and_sees_its_end():
    async def main():
        async with channel_to(trickle) as channel:
            call = channel.stream(PATH, ask(40, 3), identity)
            assert await call.__anext__() == b"\0" * 3  # started by the first step, as a consumer would
            got, end = await listened(call)
            assert got == [bytes([i]) * 3 for i in range(1, 40)] and isinstance(end, StopAsyncIteration)
            with pytest.raises(StopAsyncIteration):  # the end stays for the async for
                await call.__anext__()

            call = channel.stream(PATH, ask(5, 2, padding=1), identity)
            await call.__anext__()
            got, end = await listened(call)
            assert len(got) == 4 and isinstance(end, H2RpcError) and end.code() == grpc.StatusCode.ABORTED
    run(main())


def test_put_back_hands_a_taken_message_out_again():
    async def main():
        async with raw_server(reply_at_once([b"a", b"b"])) as channel:
            call = channel.stream(PATH, b"request", identity)
            assert await call.__anext__() == b"a"
            await until_done(call)
            message = call.take()
            call.put_back(message)
            assert call.take() == b"b"
            call.put_back(b"b")
            assert [m async for m in call] == [b"b"]
    run(main())


def test_an_undecodable_message_ends_a_listened_call_as_internal():
    async def main():
        async with raw_server(reply_at_once([b"a", b"b", b"bad", b"c"])) as channel:
            call = channel.stream(PATH, b"request", failing_on(b"bad"))
            assert await call.__anext__() == b"a"
            got, end = await listened(call)
            assert got == [b"b"] and end.code() == grpc.StatusCode.INTERNAL
            with pytest.raises(H2RpcError):
                await call.__anext__()
    run(main())


def test_a_listener_is_called_once_per_read_with_all_its_messages():
    """Messages of one stream in many DATA frames of one read: the listener runs once, after the
    read is parsed, and takes them all (so their events can go out in one write)."""
    messages = [bytes([i]) * 3 for i in range(20)]
    handle = first_then([grpc_message(m) for m in messages])

    async def main():
        async with raw_server(handle) as channel:
            call = channel.stream(PATH, b"request", identity)
            assert await call.__anext__() == b"first"
            runs = []
            got, end = await listened(call, runs)
            return runs, got, end

    runs, got, end = run(main())
    assert got == messages and isinstance(end, StopAsyncIteration)
    assert runs[0] == 0 and len(runs[1:]) <= 2  # the connection's calls (2: should the kernel split the write)


def test_a_paced_connection_reads_many_streams_messages_at_once(monkeypatch):
    """Paced at 50 ms, the connection reads messages that come faster than every 100 ms at most
    every 50 ms: the messages of 4 streams, each sending one every 4-7 ms, come in a few reads,
    whole and in order."""
    from smg.engines import h2

    async def spaced(request: bytes, context):
        count, size = struct.unpack(">LL", request[:8])
        for i in range(count):
            await asyncio.sleep((3 + size) / 1000)  # streams out of step: unpaced, about a read each
            yield bytes([i % 256]) * size

    reads = []

    class Counting(h2._Connection):
        def data_received(self, data):
            reads.append(len(data))
            super().data_received(data)

    monkeypatch.setattr(h2, "_Connection", Counting)

    async def main():
        async with channel_to(spaced, channel_options={"read_interval": 0.05}) as channel:
            return await asyncio.gather(*(take(channel, ask(10, i + 1)) for i in range(4)))

    assert run(main()) == [[bytes([k]) * (i + 1) for k in range(10)] for i in range(4)]
    assert len(reads) <= 12, reads  # unpaced: about one read per message (40) plus the setup's


def test_pacing_does_not_hold_a_new_streams_first_message():
    """Opening a stream while reading is paused resumes it: the new stream's first message is not
    kept waiting for the rest of the interval (here 2 s), nor by a read of its headers alone."""
    async def main():
        async with channel_to(trickle, channel_options={"read_interval": 2.0}) as channel:
            busy = channel.stream(PATH, ask(100_000, 1), identity)  # a message every 2 ms
            waits = []
            for _ in range(3):
                await busy.__anext__()  # just read: from now on reading is paused
                started = asyncio.get_running_loop().time()
                await channel.stream(PATH, ask(1, 1), identity).__anext__()
                waits.append(asyncio.get_running_loop().time() - started)
            busy.cancel()
            return waits

    assert max(run(main())) < 1.0


def test_pacing_does_not_hold_the_window_updates_a_large_request_waits_for():
    """A server with 1,000-byte stream windows: a 200 kB request needs 200 WINDOW_UPDATEs.
    While a request waits for one, reading does not pause (here it would for 2 s), though another
    stream's messages keep coming."""
    import time

    import hpack

    received = []  # when the large request was whole at the server

    async def handle(reader, writer):
        await reader.readexactly(24)
        writer.write(frame(4, 0, 0, struct.pack(">HL", 4, 1000)))  # SETTINGS_INITIAL_WINDOW_SIZE
        headers = hpack.Encoder().encode([(":status", "200"), ("content-type", "application/grpc")])

        async def tick():  # the busy stream (1): a message every 2 ms
            writer.write(frame(1, 0x4, 1, headers))
            while True:
                writer.write(frame(0, 0, 1, grpc_message(b"t")))
                await asyncio.sleep(0.002)

        ticking = None
        try:
            while True:
                hi, lo, kind, flags, stream_id = struct.unpack(">HBBBL", await reader.readexactly(9))
                payload = await reader.readexactly((hi << 8) | lo)
                if kind == 0 and stream_id == 1 and ticking is None:
                    ticking = asyncio.ensure_future(tick())
                elif kind == 0 and stream_id == 3:  # the large request: open the windows again
                    increment = struct.pack(">L", len(payload))
                    writer.write(frame(8, 0, 3, increment) + frame(8, 0, 0, increment))
                    if flags & 0x1:
                        received.append(time.monotonic())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if ticking is not None:
                ticking.cancel()
            writer.close()

    async def main():
        async with raw_server(handle, read_interval=2.0) as channel:
            busy = channel.stream(PATH, b"request", identity)
            await busy.__anext__()
            await busy.__anext__()  # reading paces now
            started = time.monotonic()
            large = channel.stream(PATH, b"r" * 200_000, identity)
            waiting = asyncio.ensure_future(large.__anext__())  # (no reply comes: it is cancelled)
            for _ in range(300):
                if received:
                    break
                await asyncio.sleep(0.01)
            waiting.cancel()
            large.cancel()
            busy.cancel()
            return received[0] - started if received else None

    sent_in = run(main())
    assert sent_in is not None and sent_in < 1.0


# ---- one stream's bad headers, the connection's limits and timeouts (review defects 1 and 2) -------

def header_frames(stream, block, end_stream=True):
    """HEADERS + CONTINUATIONs carrying ``block`` in frames of at most 16,384 bytes."""
    pieces = [block[i:i + 16384] for i in range(0, len(block), 16384)] or [b""]
    out = frame(1, (0x1 if end_stream else 0) | (0x4 if len(pieces) == 1 else 0), stream, pieces[0])
    for i, piece in enumerate(pieces[1:], 1):
        out += frame(9, 0x4 if i == len(pieces) - 1 else 0, stream, piece)
    return out


@pytest.mark.parametrize("message,code", [
    ("e" * 200_000, grpc.StatusCode.INTERNAL),  # over hpack's default 64 KiB list, under the advertised 1 MiB
    ("e" * 1_500_000, grpc.StatusCode.RESOURCE_EXHAUSTED),  # over the advertised limit
    (b"\xff\xfe not utf-8", grpc.StatusCode.INTERNAL),  # bytes that are not UTF-8
], ids=["200kB", "1.5MB", "not-utf8"])
def test_one_streams_oversized_or_malformed_headers_leave_the_others_untouched(message, code):
    import hpack

    async def handle(reader, writer):
        await reader.readexactly(24)
        encoder = hpack.Encoder()
        writer.write(frame(4, 0, 0))
        frames = await read_frames(reader, 1)
        while sum(1 for f in frames if f[0] == 1) < 2:  # both requests' HEADERS
            frames += await read_frames(reader, 1)
        first, second = sorted({f[2] for f in frames if f[0] == 1})
        ok = encoder.encode([(":status", "200"), ("content-type", "application/grpc")])
        writer.write(frame(1, 0x4, second, ok) + frame(0, 0, second, grpc_message(b"before")))
        bad = encoder.encode([(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "13"),
                              ("grpc-message", message)], huffman=False)  # (hpack's Huffman coder is slow)
        writer.write(header_frames(first, bad))  # a trailers-only failure of the first stream
        writer.write(frame(0, 0, second, grpc_message(b"after"))
                     + frame(1, 0x5, second, encoder.encode([("grpc-status", "0")])))
        await writer.drain()
        await reader.read()
        writer.close()

    async def main():
        async with raw_server(handle) as channel:
            bad = asyncio.ensure_future(take(channel, b"one"))
            await asyncio.sleep(0.05)
            good = asyncio.ensure_future(take(channel, b"two"))
            with pytest.raises(H2RpcError) as info:
                await bad
            return info.value, await good

    error, good = run(main())
    assert error.code() == code and good == [b"before", b"after"]
    if code == grpc.StatusCode.INTERNAL and isinstance(message, str):
        assert error.details() == message  # the engine's whole message, kept


def test_a_server_that_never_completes_the_handshake_times_out():
    async def silent(reader, writer):
        with contextlib.suppress(Exception):
            await reader.read()  # accepts, never sends SETTINGS
        writer.close()

    async def main():
        srv = await asyncio.start_server(silent, "127.0.0.1", 0)
        target = f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"
        try:
            loop = asyncio.get_running_loop()
            channel = H2Channel(target, connect_timeout=0.3)
            started = loop.time()
            with pytest.raises(H2RpcError) as handshake:
                await take(channel, b"x")
            handshake_seconds = loop.time() - started
            # a request's deadline counts while the connection is being made
            channel = H2Channel(target, connect_timeout=30)
            started = loop.time()
            with pytest.raises(H2RpcError) as deadline:
                await take(channel, b"x", timeout=0.2)
            return handshake.value, handshake_seconds, deadline.value, loop.time() - started
        finally:
            srv.close()

    handshake, handshake_seconds, deadline, deadline_seconds = run(main())
    assert handshake.code() == grpc.StatusCode.UNAVAILABLE and "within 0.3 s" in handshake.details()
    assert 0.25 < handshake_seconds < 1.5
    assert deadline.code() == grpc.StatusCode.DEADLINE_EXCEEDED and 0.15 < deadline_seconds < 1.5


def test_stream_ids_roll_over_to_a_new_connection():
    from smg.engines.h2 import LAST_STREAM_ID

    async def main():
        async with channel_to(echo) as channel:
            assert await take(channel, ask(1, 3)) == [b"\0" * 3]
            first = channel._connection
            first.next_id = LAST_STREAM_ID  # the last id a client may use
            assert await take(channel, ask(2, 1)) == [b"\0", b"\1"]  # on stream 2^31 - 1
            assert await take(channel, ask(1, 1)) == [b"\0"]  # ids used up: a new connection
            return first, channel._connection

    first, second = run(main())
    assert first is not second and first.closed and second.next_id == 3


def test_a_frame_over_the_maximum_frame_size_is_a_connection_error_not_buffered():

    goaway = []

    async def handle(reader, writer):
        encoder, stream, headers = await first_request(reader, writer)
        writer.write(headers + frame(0, 0, stream, grpc_message(b"x" * 20_000)))  # 20,005 > 16,384
        await writer.drain()
        goaway.extend(f for f in await read_frames(reader, 7) if f[0] == 7)
        writer.close()

    async def main():
        async with raw_server(handle) as channel:
            with pytest.raises(H2RpcError) as info:
                await take(channel, b"x")
            return info.value

    error = run(main())
    assert error.code() == grpc.StatusCode.UNAVAILABLE and "frame of 20005 bytes" in error.details()
    assert struct.unpack(">LL", goaway[0][3][:8])[1] == 6  # FRAME_SIZE_ERROR


def test_a_listener_that_raises_fails_its_own_call_only():
    async def main():
        async with channel_to(trickle) as channel:
            broken = channel.stream(PATH, ask(50, 4), identity)
            assert await broken.__anext__() == b"\0" * 4

            def listener():
                broken.take()
                raise RuntimeError("a consumer's bug")

            broken.listen(listener)
            other = await take(channel, ask(20, 2))  # the same connection goes on
            await until_done(broken)
            with pytest.raises(H2RpcError) as info:
                await broken.__anext__()
            return other, info.value

    other, error = run(main())
    assert other == [bytes([i]) * 2 for i in range(20)]
    assert error.code() == grpc.StatusCode.INTERNAL and "a consumer's bug" in error.details()
