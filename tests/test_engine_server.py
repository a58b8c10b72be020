"""The engine side's stream buffer: a generator faster than its reader waits for it, an Abort
stops it promptly and drops what was generated ahead, and max_new_tokens past the context is
refused. Driven with the generated grpc.aio stub (SGLang's protocol)."""
import asyncio
import contextlib
import time

import grpc
import pytest
from smg_grpc_proto.generated import sglang_scheduler_pb2 as spb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as spbg

from smg.engine import EngineServer
from smg.engine.server import STREAM_BUFFER
from smg.engines import ModelInfo

pytestmark = pytest.mark.no_kernels  # (the twins' pass leaves it out)


class Flood:
    """A generator with no step delay, counting what it produced."""

    def __init__(self) -> None:
        self.produced = 0

    async def generate(self, request):
        while True:
            self.produced += 1
            yield [7]
            if self.produced % 64 == 0:
                await asyncio.sleep(0)  # a real engine's step yields to the loop now and then


def _request(rid: str, max_new: int, prompt=(1, 2, 3)) -> spb.GenerateRequest:
    return spb.GenerateRequest(request_id=rid, tokenized=spb.TokenizedInput(input_ids=list(prompt)), stream=True,
                               sampling_params=spb.SamplingParams(temperature=1.0, max_new_tokens=max_new))


@contextlib.asynccontextmanager
async def serving(generate, context_length: int):
    """(an engine server, a stub to it); the stub's channel keeps HTTP/2's 64 KiB window (no BDP
    probing, which grows it while nobody reads), so what the reader has not taken is bounded."""
    server = EngineServer(generate, ModelInfo(model_id="flood", max_context_length=context_length))
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.http2.bdp_probe", 0)])
    try:
        yield server, spbg.SglangSchedulerStub(channel)
    finally:
        await channel.close()
        await server.stop()


def test_a_fast_generator_waits_for_its_reader_and_an_abort_stops_it_promptly():
    flood = Flood()

    async def main():
        async with serving(flood.generate, 0) as (server, stub):
            call = stub.Generate(_request("r1", 1_000_000))
            read = 0
            async for _ in call:
                read += 1
                if read == 50:
                    break
            # the reader pauses: generation must pause too, once the buffer and the transport are
            # full (polled: a loaded machine fills them later than an idle one)
            produced_while_paused, deadline = -1, time.monotonic() + 20
            while flood.produced != produced_while_paused:
                assert time.monotonic() < deadline, "the generator never waited for its reader"
                produced_while_paused = flood.produced
                await asyncio.sleep(0.5)
            await stub.Abort(spb.AbortRequest(request_id="r1"))
            started, after = time.monotonic(), []
            async for response in call:
                after.append(response)
            return read, produced_while_paused, after, time.monotonic() - started, server.aborted

    read, produced, after, seconds, aborted = asyncio.run(asyncio.wait_for(main(), 30))
    # Ahead of the reader: the buffer, plus what HTTP/2's flow-control windows (64 KiB each way,
    # 16+ bytes a message) let gRPC hand to the transport; unbounded, the engine ran to the end.
    window = (1 << 17) // 16
    assert produced < read + STREAM_BUFFER + window, produced
    chunks = [r for r in after if r.HasField("chunk")]
    assert len(chunks) <= STREAM_BUFFER + window and seconds < 2.0, (len(chunks), seconds)
    assert after[-1].complete.finish_reason == "abort" and "r1" in aborted


def test_generation_is_bounded_by_the_reader_not_run_ahead():
    """Without any read, the generator produces at most the buffer plus what the transport holds."""
    flood = Flood()

    async def main():
        async with serving(flood.generate, 0) as (server, stub):
            call = stub.Generate(_request("r2", 1_000_000))
            await asyncio.sleep(1.0)
            produced = flood.produced
            call.cancel()
            return produced

    produced = asyncio.run(asyncio.wait_for(main(), 30))
    assert produced < STREAM_BUFFER + (1 << 16) // 16, produced  # the buffer and the flow-control window


def test_max_new_tokens_past_the_context_is_refused():
    flood = Flood()

    async def main():
        async with serving(flood.generate, 100) as (server, stub):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stub.Generate(_request("r3", 98)):
                    pass
            fits = [r async for r in stub.Generate(_request("r4", 97))]
            return info.value, fits

    error, fits = asyncio.run(asyncio.wait_for(main(), 30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "context length (100)" in error.details()
    assert fits[-1].complete.finish_reason == "length" and len(fits[-1].complete.output_ids) == 97
