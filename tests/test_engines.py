"""Engine protocol: smg's client against EngineServer, and against servers written here directly
from the smg-grpc-proto stubs (so a misreading shared by smg's client and server cannot pass)."""
import asyncio
import contextlib

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smg_grpc_proto.generated import sglang_scheduler_pb2 as spb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as spbg
from smg_grpc_proto.generated import trtllm_service_pb2 as tpb
from smg_grpc_proto.generated import vllm_engine_pb2 as vpb
from smg_grpc_proto.generated import vllm_engine_pb2_grpc as vpbg

from smg.engine import ReferenceEngine
from smg.policies import RequestView
from smg.engine.server import _sampling_from_sglang, _sampling_from_vllm
from smg.engines import GenerateRequest, SamplingOptions, adapter_class
from smg.engines.pool import PROBE_FLOOR, PoolConfig, WorkerPool, parse_url
from smg.engines.sglang import sampling_params as sglang_params
from smg.engines.trtllm import TrtllmAdapter
from smg.engines.vllm import sampling_params as vllm_params
from smg.errors import EngineError, EngineUnavailable, InvalidRequest, NoHealthyWorker

pytestmark = pytest.mark.no_kernels  # (the twins' pass leaves it out)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def collect(pool, request):
    outs = []
    async with contextlib.aclosing(pool.generate(request)) as stream:
        async for out in stream:
            outs.append(out)
    return outs


def stream_ids(outs, index=0):
    return [t for o in outs if o.index == index and not o.finished for t in o.token_ids]


@pytest.fixture(scope="module")
def reference(llama):
    return ReferenceEngine(llama, delay_ms=0)


@pytest.mark.parametrize("transport", ["h2", "grpc.aio"])
@pytest.mark.parametrize("engine", ["sglang", "vllm"])
def test_reference_engine_streaming_and_not(engine, transport, llama, reference):
    async def main():
        server = reference.server()
        port = await server.start()
        try:
            config = PoolConfig(default_engine=engine, stream_transport=transport)
            async with WorkerPool([f"grpc://127.0.0.1:{port}"], config) as pool:
                assert pool.model_info().model_id == "smg-reference"
                assert set(pool.model_info().eos_token_ids) == set(reference.eos_token_ids)
                prompt = llama.encode("Tell me about serving.")
                streamed = await collect(pool, GenerateRequest("s1", prompt, SamplingOptions(max_new_tokens=24, n=2)))
                whole = await collect(pool, GenerateRequest("s2", prompt, SamplingOptions(max_new_tokens=24, n=2),
                                                            stream=False))
                return streamed, whole
        finally:
            await server.stop()

    streamed, whole = run(main())
    for index in (0, 1):
        ids = stream_ids(streamed, index)
        assert len(ids) == 24
        done = [o for o in streamed if o.finished and o.index == index]
        assert len(done) == 1 and done[0].finish_reason == "length" and done[0].completion_tokens == 24
        final = [o for o in whole if o.index == index]
        assert len(final) == 1 and final[0].finished and final[0].token_ids == ids
    assert stream_ids(streamed, 0) != stream_ids(streamed, 1)  # sequences differ by index
    assert llama.decode(stream_ids(streamed, 0)).strip()[:20].isprintable()


def test_stop_ids_min_tokens_and_eos(llama):
    script = "alpha beta gamma delta"
    engine = ReferenceEngine(llama, mode="script", scripts=[script])
    ids = llama.encode(script)

    async def main():
        server = engine.server()
        port = await server.start()
        try:
            async with WorkerPool([f"grpc://127.0.0.1:{port}"]) as pool:
                eos = await collect(pool, GenerateRequest("a", [1], SamplingOptions(max_new_tokens=50)))
                stop = await collect(pool, GenerateRequest("b", [1], SamplingOptions(stop_token_ids=(ids[1],))))
                late = await collect(pool, GenerateRequest("c", [1], SamplingOptions(stop_token_ids=(ids[0],),
                                                                                     min_new_tokens=2)))
                ignore = await collect(pool, GenerateRequest("d", [1], SamplingOptions(ignore_eos=True)))
                return eos, stop, late, ignore
        finally:
            await server.stop()

    eos, stop, late, ignore = run(main())
    assert eos[-1].finish_reason == "stop" and eos[-1].matched_stop == engine.eos_token_ids[0]
    assert stream_ids(eos) == ids + [engine.eos_token_ids[0]]
    assert stream_ids(stop) == ids[:2] and stop[-1].matched_stop == ids[1]
    assert late[-1].finish_reason in ("stop", "length") and len(stream_ids(late)) > 1
    assert ignore[-1].finish_reason == "stop" and ignore[-1].matched_stop is None  # script ended


@pytest.mark.parametrize("transport", ["h2", "grpc.aio"])
def test_consumer_stop_aborts_the_engine(llama, transport):
    engine = ReferenceEngine(llama, delay_ms=5)

    async def main():
        server = engine.server()
        port = await server.start()
        try:
            async with WorkerPool([f"grpc://127.0.0.1:{port}"], PoolConfig(stream_transport=transport)) as pool:
                async with contextlib.aclosing(
                        pool.generate(GenerateRequest("abort-me", [1, 2], SamplingOptions(max_new_tokens=5000)))) as s:
                    async for _ in s:
                        break
                for _ in range(100):
                    if "abort-me" in server.aborted and server.active_requests == 0:
                        break
                    await asyncio.sleep(0.02)
                return list(server.aborted), server.active_requests, pool.workers[0].in_flight
        finally:
            await server.stop()

    aborted, active, in_flight = run(main())
    assert "abort-me" in aborted and active == 0 and in_flight == 0


# ---- against servers written from the stubs alone ------------------------------------------------

class StubSglang(spbg.SglangSchedulerServicer):
    """A minimal SGLang-protocol engine, from the generated stubs only."""

    def __init__(self, fail: grpc.StatusCode | None = None):
        self.requests = []
        self.aborts = []
        self.fail = fail

    async def Generate(self, request, context):
        self.requests.append(request)
        if self.fail is not None:
            await context.abort(self.fail, "engine says no")
        rid = request.request_id
        lp = spb.OutputLogProbs(token_logprobs=[-0.5], token_ids=[7],
                                top_logprobs=[spb.TopLogProbs(values=[-0.5, -1.5], token_ids=[7, 8])])
        yield spb.GenerateResponse(request_id=rid, chunk=spb.GenerateStreamChunk(
            token_ids=[7], prompt_tokens=3, completion_tokens=1, cached_tokens=2, output_logprobs=lp))
        yield spb.GenerateResponse(request_id=rid, chunk=spb.GenerateStreamChunk(
            token_ids=[8, 9], prompt_tokens=3, completion_tokens=3, cached_tokens=2))
        yield spb.GenerateResponse(request_id=rid, complete=spb.GenerateComplete(
            output_ids=[8, 9], finish_reason="stop", prompt_tokens=3, completion_tokens=3, cached_tokens=2,
            matched_stop_str="END"))

    async def HealthCheck(self, request, context):
        return spb.HealthCheckResponse(healthy=True)

    async def GetModelInfo(self, request, context):
        return spb.GetModelInfoResponse(model_path="/models/stub", served_model_name="stub-model",
                                        max_context_length=4096, eos_token_ids=[2], tokenizer_path="/tok")

    async def GetLoads(self, request, context):
        return spb.GetLoadsResponse(aggregate=spb.AggregateMetrics(total_running_reqs=3, total_waiting_reqs=1))

    async def Abort(self, request, context):
        self.aborts.append(request.request_id)
        return spb.AbortResponse(success=True)


async def serve_stub(servicer, add=spbg.add_SglangSchedulerServicer_to_server):
    server = grpc.aio.server()
    add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def test_conformance_with_a_stub_built_sglang_server():
    stub = StubSglang()
    sampling = SamplingOptions(temperature=0.7, max_new_tokens=16, stop_token_ids=(5,), seed=11,
                               constraint=("regex", "[a-z]+"), logit_bias={3: -2.0})

    async def main():
        server, port = await serve_stub(stub)
        try:
            async with WorkerPool([f"grpc://127.0.0.1:{port}"]) as pool:
                info = pool.model_info()
                outs = await collect(pool, GenerateRequest("c1", [1, 2, 3], sampling, return_logprob=True,
                                                           top_logprobs=2, lora_id="adapter-a"))
                await asyncio.sleep(0)
                return info, outs, pool.workers[0].reported_load
        finally:
            await server.stop(None)

    info, outs, load = run(main())
    assert (info.model_id, info.max_context_length, info.eos_token_ids) == ("stub-model", 4096, (2,))
    assert load == 4.0
    sent = stub.requests[0]
    sp = sent.sampling_params
    # proto3 zeros are not defaults: every semantic default is sent explicitly
    assert (round(sp.temperature, 3), sp.top_p, sp.top_k, sp.repetition_penalty, sp.n) == (0.7, 1.0, -1, 1.0, 1)
    assert sp.max_new_tokens == 16 and list(sp.stop_token_ids) == [5] and sp.skip_special_tokens
    assert sp.regex == "[a-z]+" and sp.logit_bias["3"] == -2.0 and sp.custom_params["sampling_seed"] == 11
    assert sent.return_logprob and sent.top_logprobs_num == 2 and sent.lora_id == "adapter-a" and sent.stream
    assert list(sent.tokenized.input_ids) == [1, 2, 3]
    assert stream_ids(outs) == [7, 8, 9]
    assert outs[0].logprobs[0].token_id == 7 and outs[0].logprobs[0].top == ((7, -0.5), (8, -1.5))
    assert outs[-1].finished and outs[-1].matched_stop == "END" and outs[-1].cached_tokens == 2
    assert stub.aborts == []  # finished normally: nothing to abort


def test_greedy_sets_top_k_one():
    params = sglang_params(GenerateRequest("g", [1], SamplingOptions(temperature=0.0)))
    assert params.temperature == 0.0 and params.top_k == 1


@pytest.mark.parametrize("code, error", [
    (grpc.StatusCode.INVALID_ARGUMENT, InvalidRequest),
    (grpc.StatusCode.INTERNAL, EngineError),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, EngineUnavailable),
])
def test_engine_status_codes_become_typed_errors(code, error):
    stub = StubSglang(fail=code)

    async def main():
        server, port = await serve_stub(stub)
        try:
            async with WorkerPool([f"grpc://127.0.0.1:{port}"], PoolConfig(max_attempts=1)) as pool:
                with pytest.raises(error, match="engine says no"):
                    await collect(pool, GenerateRequest("e", [1], SamplingOptions()))
        finally:
            await server.stop(None)

    run(main())


def test_failure_before_output_is_retried_elsewhere(llama, reference):
    failing = StubSglang(fail=grpc.StatusCode.UNAVAILABLE)

    async def main():
        bad_server, bad_port = await serve_stub(failing)
        good = reference.server()
        good_port = await good.start()
        try:
            urls = [f"grpc://127.0.0.1:{bad_port}", f"grpc://127.0.0.1:{good_port}"]
            async with WorkerPool(urls, PoolConfig(policy="round_robin")) as pool:  # (the bad one is tried)
                results = [await collect(pool, GenerateRequest(f"r{i}", [1], SamplingOptions(max_new_tokens=3)))
                           for i in range(4)]
                return results, {w.url: w.healthy for w in pool.workers}
        finally:
            await bad_server.stop(None)
            await good.stop()

    results, health = run(main())
    assert all(len(stream_ids(r)) == 3 for r in results)
    assert list(health.values()) == [False, True]  # the circuit opened on the failing worker


def test_worker_dying_mid_stream_fails_that_request_only(llama):
    slow = ReferenceEngine(llama, delay_ms=10)
    fast = ReferenceEngine(llama, delay_ms=1)

    async def main():
        a, b = slow.server(), fast.server()
        pa, pb_ = await a.start(), await b.start()
        pool = await WorkerPool([f"grpc://127.0.0.1:{pa}"], PoolConfig(health_interval=0.2)).start()
        try:
            async def doomed():
                return await collect(pool, GenerateRequest("doomed", [1], SamplingOptions(max_new_tokens=500)))

            task = asyncio.create_task(doomed())
            await asyncio.sleep(0.15)
            await pool.add_worker(f"grpc://127.0.0.1:{pb_}")
            await a.stop(None)  # the worker dies mid-stream
            with pytest.raises((EngineUnavailable, EngineError)):
                await task
            survivor = await collect(pool, GenerateRequest("ok", [1], SamplingOptions(max_new_tokens=5)))
            return survivor, {w.url: w.healthy for w in pool.workers}
        finally:
            await pool.close()
            await b.stop()

    survivor, health = run(main())
    assert len(stream_ids(survivor)) == 5
    assert list(health.values()) == [False, True]


def test_health_backoff_and_recovery(llama, reference):
    async def main():
        server = reference.server()
        port = await server.start()
        pool = await WorkerPool([f"grpc://127.0.0.1:{port}"], PoolConfig(health_interval=0.1,
                                                                         health_timeout=0.5)).start()
        try:
            assert pool.healthy_workers()
            await server.stop(None)
            for _ in range(100):
                if not pool.healthy_workers():
                    break
                await asyncio.sleep(0.05)
            down = pool.workers[0].failures
            with pytest.raises(NoHealthyWorker):
                pool.pick(RequestView())
            revived = reference.server()
            await revived.start(port=port)
            for _ in range(100):
                if pool.healthy_workers():
                    break
                await asyncio.sleep(0.1)
            out = await collect(pool, GenerateRequest("again", [1], SamplingOptions(max_new_tokens=2)))
            await revived.stop()
            return down, out
        finally:
            await pool.close()

    failures, out = run(main())
    assert failures >= 1 and len(stream_ids(out)) == 2


def test_membership_and_errors():
    for bad in ({"stream_transport": "carrier-pigeon"}, {"read_interval": -0.001}, {"read_interval": 2},
                {"read_interval": "1ms"}, {"read_interval": True}):
        with pytest.raises(InvalidRequest):
            PoolConfig(**bad)

    async def main():
        pool = await WorkerPool().start()
        with pytest.raises(NoHealthyWorker, match="no engine worker"):
            pool.pick(RequestView())
        worker = await pool.add_worker("grpc://127.0.0.1:1")  # nothing listens there
        assert not worker.healthy and worker.last_error
        await pool.remove_worker("grpc://127.0.0.1:1")
        assert pool.workers == []
        await pool.close()

    run(main())
    with pytest.raises(InvalidRequest):
        parse_url("http://nope")
    with pytest.raises(InvalidRequest):
        adapter_class("tgi")


def test_vllm_conformance_with_a_stub_built_server():
    seen = {}

    class StubVllm(vpbg.VllmEngineServicer):
        async def Generate(self, request, context):
            seen["request"] = request
            yield vpb.GenerateResponse(chunk=vpb.GenerateStreamChunk(token_ids=[4], index=0, completion_tokens=1))
            yield vpb.GenerateResponse(complete=vpb.GenerateComplete(output_ids=[4], finish_reason="length", index=0))

        async def HealthCheck(self, request, context):
            return vpb.HealthCheckResponse(healthy=True)

        async def GetModelInfo(self, request, context):
            return vpb.GetModelInfoResponse(served_model_name="v", max_context_length=8)

        async def Abort(self, request, context):
            seen.setdefault("aborts", []).extend(request.request_ids)
            return vpb.AbortResponse()

    async def main():
        server, port = await serve_stub(StubVllm(), vpbg.add_VllmEngineServicer_to_server)
        try:
            async with WorkerPool([f"grpc://127.0.0.1:{port}"], PoolConfig(default_engine="vllm")) as pool:
                return await collect(pool, GenerateRequest("v1", [9], SamplingOptions(
                    max_new_tokens=1, seed=5, constraint=("json_object", "")), return_logprob=True, top_logprobs=3))
        finally:
            await server.stop(None)

    outs = run(main())
    sp = seen["request"].sampling_params
    assert sp.HasField("temperature") and sp.temperature == 1.0 and sp.top_k == 0 and sp.max_tokens == 1
    assert sp.seed == 5 and sp.json_object and sp.logprobs == 3
    assert stream_ids(outs) == [4] and outs[-1].finish_reason == "length"


def test_sampling_round_trips_through_both_protocols():
    options = SamplingOptions(temperature=0.3, top_p=0.9, top_k=40, min_p=0.05, frequency_penalty=0.1,
                              presence_penalty=0.2, repetition_penalty=1.1, max_new_tokens=9, min_new_tokens=2,
                              stop_token_ids=(4, 5), ignore_eos=True, n=3, seed=7, constraint=("json_schema", "{}"))
    request = GenerateRequest("x", [1], options)
    for back in (_sampling_from_sglang(sglang_params(request)), _sampling_from_vllm(vllm_params(request))):
        assert (back.top_k, back.max_new_tokens, back.min_new_tokens, back.stop_token_ids, back.ignore_eos, back.n,
                back.seed, back.constraint) == (40, 9, 2, (4, 5), True, 3, 7, ("json_schema", "{}"))
        assert abs(back.temperature - 0.3) < 1e-6 and abs(back.repetition_penalty - 1.1) < 1e-6


def test_trtllm_messages():
    async def make():
        return TrtllmAdapter(grpc.aio.insecure_channel("127.0.0.1:1"))

    adapter = run(make())
    message = adapter.build(GenerateRequest("t", [3, 4], SamplingOptions(max_new_tokens=5, n=2, seed=1,
                                                                         constraint=("regex", "a+"))))
    assert list(message.tokenized.input_token_ids) == [3, 4] and message.max_tokens == 5
    assert message.sampling_config.num_return_sequences == 2 and message.guided_decoding.guide == "a+"
    out = adapter.parse(tpb.GenerateResponse(complete=tpb.GenerateComplete(
        output_token_ids=[1], sequence_index=1, finish_reason="stop", matched_token_id=2)))
    assert (out.index, out.token_ids, out.finished, out.matched_stop) == (1, [1], True, 2)
    from smg.engines import MultimodalTensors
    from smg.errors import UnsupportedFeature

    with pytest.raises(UnsupportedFeature):
        adapter.build(GenerateRequest("t", [1], multimodal=MultimodalTensors(pixel_values=[[0.0]])))


def test_torch_engine_serves_a_real_model_greedily(llama):
    torch = pytest.importorskip("torch")  # installed by `make test`; absent only outside the project setup
    from smg.engine.torch_engine import TorchEngine

    config = {"model_type": "llama", "vocab_size": llama.vocab_size, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 256, "eos_token_id": [128009], "tie_word_embeddings": True}
    engine = TorchEngine(config, llama, seed=3)
    prompt = llama.encode("The gateway")
    with torch.no_grad():
        expected = engine.model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                                         min_new_tokens=6)[0, len(prompt):].tolist()

    async def main():
        server = engine.server()
        port = await server.start()
        try:
            async with WorkerPool([f"grpc://127.0.0.1:{port}"]) as pool:
                greedy = await collect(pool, GenerateRequest("t1", prompt, SamplingOptions(
                    temperature=0, max_new_tokens=6, ignore_eos=True)))
                sampled = [await collect(pool, GenerateRequest(f"t{i}", prompt, SamplingOptions(
                    temperature=0.9, top_p=0.9, top_k=50, seed=5, max_new_tokens=6, ignore_eos=True)))
                    for i in (2, 3)]
                return greedy, sampled
        finally:
            await server.stop()

    greedy, sampled = run(main())
    assert stream_ids(greedy) == expected
    assert stream_ids(sampled[0]) == stream_ids(sampled[1])  # seeded sampling is reproducible


def test_multimodal_tensors_reach_both_protocols():
    import numpy as np

    from smg.engines import MultimodalTensors
    from smg.engines.sglang import SglangAdapter
    from smg.engines.vllm import VllmAdapter

    pixels = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    grid = np.array([[1, 2, 2]], dtype=np.int64)
    mm = MultimodalTensors(pixels, {"image_grid_thw": grid}, image_token_id=151655, placeholders=[(5, 4)])
    request = GenerateRequest("m", [1, 2, 3], SamplingOptions(), multimodal=mm)

    async def make():
        channel = grpc.aio.insecure_channel("127.0.0.1:1")
        return SglangAdapter(channel).build(request), VllmAdapter(channel).build(request)

    sglang_message, vllm_message = run(make())
    s = sglang_message.mm_inputs
    assert (list(s.pixel_values.shape), s.pixel_values.dtype, s.im_token_id) == ([2, 3, 4], "float32", 151655)
    assert np.array_equal(np.frombuffer(s.pixel_values.data, dtype=np.float32).reshape(2, 3, 4), pixels)
    assert (s.mm_placeholders[0].offset, s.mm_placeholders[0].length) == (5, 4)
    v = vllm_message.mm_inputs
    assert np.array_equal(np.frombuffer(v.model_specific_tensors["image_grid_thw"].inline, dtype=np.int64), grid[0])
    assert np.frombuffer(v.pixel_values.inline, dtype=np.float32).tolist() == pixels.ravel().tolist()


# ---- token chunks read from their bytes (smg._ext.proto_chunk) ---------------------------------------

uint32 = st.integers(0, 2**32 - 1)


@st.composite
def responses(draw):
    """A serialized GenerateResponse of either protocol: mostly plain chunks, sometimes what the
    fast reader must leave to protobuf (logprobs, a complete)."""
    pb = draw(st.sampled_from([spb, vpb]))
    message = pb.GenerateResponse()
    if pb is spb and draw(st.booleans()):
        message.request_id = draw(st.text(max_size=8))
    kind = draw(st.sampled_from(["chunk"] * 6 + ["logprobs", "complete"]))
    if kind == "complete":
        message.complete.output_ids.extend(draw(st.lists(uint32, max_size=4)))
    else:
        chunk = message.chunk
        chunk.token_ids.extend(draw(st.lists(uint32, max_size=6)))
        chunk.prompt_tokens, chunk.completion_tokens = draw(uint32), draw(uint32)
        chunk.cached_tokens, chunk.index = draw(uint32), draw(st.integers(0, 9))
        if pb is spb and draw(st.booleans()):
            chunk.reasoning_tokens = draw(uint32)
        if kind == "logprobs":
            chunk.output_logprobs.token_logprobs.append(-0.5)
    return pb, message.SerializeToString()


@given(response=responses(), junk=st.binary(max_size=24), cut=st.integers(0, 64))
@settings(max_examples=400, deadline=None)
def test_chunks_read_from_bytes_match_protobuf_and_the_twin(proto_chunk_impl, response, junk, cut):
    from smg._ext import proto_chunk_py
    from smg.engines.base import EngineOutput, chunk_layout, parse_generate_response

    pb, raw = response
    layout = chunk_layout(pb)
    got = proto_chunk_impl.decode_chunk(raw, layout)
    assert got == proto_chunk_py.decode_chunk(raw, layout)
    message = pb.GenerateResponse.FromString(raw)
    plain = message.HasField("chunk") and not message.chunk.HasField("output_logprobs")
    assert (got is not None) == plain
    if got is not None:
        expected = parse_generate_response(message)
        assert got == (expected.index, expected.token_ids, expected.prompt_tokens, expected.completion_tokens,
                       expected.cached_tokens)
    for bad in (junk, raw[:cut], raw + junk):  # malformed bytes: None or a value, never an exception
        assert proto_chunk_impl.decode_chunk(bad, layout) == proto_chunk_py.decode_chunk(bad, layout)
    # the adapters' decoder: the same record protobuf parsing gives, through the fallback when not plain
    fallback_calls = []

    def fallback(data):
        fallback_calls.append(data)
        return parse_generate_response(pb.GenerateResponse.FromString(data))

    out = proto_chunk_impl.ChunkDecoder(layout, EngineOutput, fallback)(raw)
    assert type(out) is EngineOutput and out == parse_generate_response(message)
    assert fallback_calls == ([] if plain else [raw])
    assert proto_chunk_impl.ChunkDecoder(None, EngineOutput, fallback)(raw) == out  # no layout: always parsed


def test_chunk_layouts_come_from_the_descriptors():
    from smg.engines.base import chunk_layout

    assert chunk_layout(spb) == (2, 8, frozenset({1}), frozenset({9}))
    assert chunk_layout(vpb) == (1, 7, frozenset(), frozenset())
    assert chunk_layout(tpb) is None  # TRT-LLM's chunk has another shape: always parsed by protobuf


# ---- outages and health (review defects 3 and 4) ------------------------------------------------

def test_an_outage_counts_once_and_service_returns_within_seconds_of_the_engine(llama):
    """An engine crashing under 20 streams and coming back on the same address: one failure (not
    20, which backed off for 30 s), and the first request after it returns finds it at once."""
    engine = ReferenceEngine(llama, delay_ms=5)

    async def main():
        server = engine.server()
        port = await server.start()
        # a health loop far slower than the outage: only the on-demand probe can bring it back
        pool = await WorkerPool([f"grpc://127.0.0.1:{port}"], PoolConfig(health_interval=60.0)).start()
        try:
            streams = [asyncio.create_task(collect(pool, GenerateRequest(f"r{i}", [1], SamplingOptions(
                max_new_tokens=400)))) for i in range(20)]
            await asyncio.sleep(0.3)
            await server.stop(None)  # crash under 20 streams
            results = await asyncio.gather(*streams, return_exceptions=True)
            failures = pool.workers[0].failures
            with pytest.raises(NoHealthyWorker):
                await collect(pool, GenerateRequest("while-down", [1], SamplingOptions(max_new_tokens=2)))
            revived = engine.server()
            await revived.start(port=port)
            back = asyncio.get_running_loop().time()
            await asyncio.sleep(PROBE_FLOOR)  # (the probe of the request while down was just now)
            out = await collect(pool, GenerateRequest("after", [1], SamplingOptions(max_new_tokens=2)))
            served_after = asyncio.get_running_loop().time() - back
            await revived.stop()
            return results, failures, out, served_after
        finally:
            await pool.close()

    results, failures, out, served_after = run(main())
    assert all(isinstance(r, (EngineUnavailable, EngineError)) for r in results)
    assert failures == 1, failures
    assert len(stream_ids(out)) == 2 and served_after < 2.0


def test_health_is_probed_on_the_connection_that_carries_the_streams(llama, reference):
    """A worker whose grpc.aio channel answers but whose stream connection cannot be made is
    unhealthy (it was 'healthy' while every stream failed)."""
    from smg.engines.h2 import H2Channel

    async def main():
        server = reference.server()
        port = await server.start()
        pool = await WorkerPool([f"grpc://127.0.0.1:{port}"], PoolConfig(health_interval=60.0)).start()
        try:
            worker = pool.workers[0]
            healthy_before = worker.healthy
            streams, worker.adapter.streams = worker.adapter.streams, H2Channel("127.0.0.1:1", connect_timeout=1.0)
            await pool._probe(worker)
            broken = (worker.healthy, worker.last_error)
            worker.adapter.streams = streams
            await pool._probe(worker)
            return healthy_before, broken, worker.healthy
        finally:
            await pool.close()
            await server.stop()

    before, (healthy, error), after = run(main())
    assert before and not healthy and "cannot connect to 127.0.0.1:1" in error and after


def test_a_stream_without_its_first_token_in_time_is_retried_elsewhere_and_its_worker_set_aside(llama):
    """first_token_timeout: an engine that has not sent a first token in time loses the request
    (nothing was sent, so it is retried on the other worker) and its place in rotation; a
    non-streamed request, whose one answer comes at the end, is not held to it."""
    stuck, quick = ReferenceEngine(llama, delay_ms=1500), ReferenceEngine(llama)

    async def main():
        servers = [stuck.server(), quick.server()]
        ports = [await server.start() for server in servers]
        config = PoolConfig(policy="round_robin", first_token_timeout=0.3, health_interval=60.0)
        pool = await WorkerPool([f"grpc://127.0.0.1:{p}" for p in ports], config).start()
        try:
            started = asyncio.get_running_loop().time()
            outs = [await collect(pool, GenerateRequest(f"r{i}", [1, 2], SamplingOptions(max_new_tokens=3)))
                    for i in range(2)]  # (round robin: one of them goes first to the stuck engine)
            took = asyncio.get_running_loop().time() - started
            slow, fast = pool.workers
            down = (slow.healthy, slow.last_error, fast.healthy)
            alone = await WorkerPool([f"grpc://127.0.0.1:{ports[0]}"], config).start()
            try:  # the stuck engine alone: its non-streamed answer takes 1.5 s, past the limit
                whole = await collect(alone, GenerateRequest("once", [1], SamplingOptions(max_new_tokens=1),
                                                             stream=False))
            finally:
                await alone.close()
            return outs, took, down, whole
        finally:
            await pool.close()
            for server in servers:
                await server.stop(None)

    outs, took, (slow_healthy, error, fast_healthy), whole = run(main())
    assert all(len(stream_ids(o)) == 3 for o in outs) and took < 1.4  # never waited out the stuck one
    assert not slow_healthy and "no first token from the engine in 0.3 s" in error and fast_healthy
    assert whole[-1].finished


def test_stall_limits_need_the_h2_transport():
    from smg.config import ConfigError

    with pytest.raises(ConfigError, match="need stream_transport 'h2'"):
        PoolConfig(stream_transport="grpc.aio", inter_token_timeout=1.0)
    with pytest.raises(ConfigError):
        PoolConfig(first_token_timeout=0)
