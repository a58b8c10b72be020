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

from smg.engines.h2 import H2Channel, H2RpcError

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
        async with server(echo) as target:
            channel = H2Channel(target)
            try:
                for count, size in [(0, 0), (1, 0), (300, 7), (3, 70_000), (2, 1_000_000)]:
                    got = await take(channel, ask(count, size))
                    assert got == [bytes([i % 256]) * size for i in range(count)]
            finally:
                await channel.close()
    run(main())


def test_requests_larger_than_the_flow_control_windows_are_sent_whole():
    seen = []

    async def length(request: bytes, context):
        seen.append(len(request))
        yield struct.pack(">L", len(request))

    async def main():
        async with server(length) as target:
            channel = H2Channel(target)
            try:
                sizes = [10, 200_000, 1_500_000]  # over the 65,535-byte initial windows
                replies = await asyncio.gather(*(take(channel, b"r" * n) for n in sizes))
                assert [struct.unpack(">L", r[0])[0] for r in replies] == sizes
            finally:
                await channel.close()
        assert sorted(seen) == sorted(sizes)
    run(main())


def test_many_concurrent_streams_share_one_connection():
    async def main():
        async with server(echo) as target:
            channel = H2Channel(target)
            try:
                results = await asyncio.gather(*(take(channel, ask(50, i)) for i in range(200)))
                assert all(r == [bytes([k % 256]) * i for k in range(50)] for i, r in enumerate(results))
            finally:
                await channel.close()
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
        async with server(slow, **{"grpc.max_concurrent_streams": 3}) as target:
            channel = H2Channel(target)
            try:
                results = await asyncio.gather(*(take(channel, b"") for _ in range(12)))
                assert results == [[b"done"]] * 12
            finally:
                await channel.close()
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
        async with server(forever) as target:
            channel = H2Channel(target)
            try:
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
            finally:
                await channel.close()
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
