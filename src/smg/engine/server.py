"""``EngineServer``: put any token generator behind the engine gRPC contract.

An engine author writes one async callable, ``generate(request: EngineRequest) ->
AsyncIterator[list[int]]`` (token ids, a chunk at a time, for one sequence), plus a
:class:`~smg.engines.base.ModelInfo`; the server speaks SGLang's ``SglangScheduler`` and vLLM's
``VllmEngine`` services from ``smg-grpc-proto`` around it and gets the protocol right:

* logprobs: a generator may yield :class:`ScoredTokens` (ids with log-probabilities and the
  best alternatives); a request asking for logprobs from one that yields plain ids is refused
  with INVALID_ARGUMENT rather than answered with made-up numbers;
* ``n > 1``: one generator per sequence (``EngineRequest.index``), multiplexed on one stream;
* ``max_new_tokens``, ``min_new_tokens``, stop token ids and EOS (unless ``ignore_eos``), with
  ``finish_reason`` ``length``/``stop`` and ``matched_token_id``; a generator that ends on its
  own finishes with ``stop``;
* streaming (a chunk per generator chunk with cumulative counts, then one complete per sequence
  carrying all its ids) and non-streaming (one complete per sequence);
* ``Abort`` by request id and client cancellation stop the generators; aborted sequences finish
  with ``abort``; ``HealthCheck``, ``GetModelInfo``, ``GetServerInfo``, ``GetLoads``,
  ``GetTokenizer`` (a zip of the tokenizer directory, sha256 on the last chunk), ``FlushCache``.
  Profiling, KV events, loading LoRA adapters and embeddings answer UNIMPLEMENTED (a request's
  ``lora_id`` reaches the generator as ``EngineRequest.lora_id``).
* A stream buffers at most ``STREAM_BUFFER`` chunks for its reader: generation waits for a slow
  reader, and an Abort drops what was generated ahead; ``max_new_tokens`` past the context length
  is refused (INVALID_ARGUMENT), as the engines refuse it.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import io
import logging
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable, NamedTuple

import grpc
from smg_grpc_proto.generated import common_pb2 as cpb
from smg_grpc_proto.generated import sglang_scheduler_pb2 as spb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as spbg
from smg_grpc_proto.generated import vllm_engine_pb2 as vpb
from smg_grpc_proto.generated import vllm_engine_pb2_grpc as vpbg

from smg.engine.disaggregation import Disaggregation, HandoverFailed, HandoverServer, fetch
from smg.engine.kv_cache import SimulatedPrefixCache
from smg.engine.multimodal_check import check_multimodal
from smg.engines.base import ModelInfo, SamplingOptions

log = logging.getLogger("smg.engine")

DEFAULT_MAX_NEW_TOKENS = 128  # what SGLang assumes when a request names none
STREAM_BUFFER = 16  # chunks of a stream that may wait for its reader
_TOKENIZER_CHUNK = 64 * 1024


@dataclass(frozen=True)
class EngineRequest:
    """What the engine's ``generate`` callable gets for one sequence."""

    request_id: str
    input_ids: list[int]
    sampling: SamplingOptions
    index: int = 0  # which of the n sequences
    top_logprobs: int = -1  # -1: no logprobs asked; else how many alternatives per token
    lora_id: str | None = None  # the LoRA adapter the request names (SGLang's protocol carries one)


class ScoredTokens(NamedTuple):
    """A chunk with its log-probabilities; ``generate`` may yield these instead of plain id lists
    (it must when the request asks for logprobs)."""

    ids: list[int]
    logprobs: list[float]
    top: list[list[tuple[int, float]]] | None = None  # per token, best alternatives first


Generate = Callable[[EngineRequest], AsyncIterator["list[int] | ScoredTokens"]]


@dataclass
class _Sequence:
    index: int
    ids: list[int] = field(default_factory=list)
    finish: str | None = None
    matched: int | None = None
    logprobs: list[float] = field(default_factory=list)
    top: list[list[tuple[int, float]]] = field(default_factory=list)
    cached: int = 0  # prompt tokens the prefix cache held (reported in every chunk)


class _Core:
    """Protocol-independent request handling shared by both services."""

    def __init__(self, generate: Generate, model: ModelInfo, tokenizer_dir: Path | None,
                 prefix_cache: SimulatedPrefixCache | None = None,
                 disaggregation: Disaggregation | None = None) -> None:
        self.generate = generate
        self.model = model
        self.tokenizer_dir = tokenizer_dir
        self.prefix_cache = prefix_cache
        self.disaggregation = disaggregation
        self.handover = (HandoverServer(disaggregation.timeout)
                         if disaggregation is not None and disaggregation.role == "prefill" else None)
        if prefix_cache is not None:
            prefix_cache.load = self.load_record
        self.active: dict[str, asyncio.Event] = {}
        self.aborted: list[str] = []  # request ids aborted by RPC or cancellation (observable in tests)
        # the W3C trace contexts the last Generate calls carried (a tracing engine would continue them)
        self.trace_parents: collections.deque[str] = collections.deque(maxlen=1000)
        self.started = time.time()
        self.total = 0

    async def run(self, request_id: str, input_ids: list[int], sampling: SamplingOptions,
                  emit: Callable[[_Sequence, int], Awaitable[None]] | None,
                  top_logprobs: int = -1, lora_id: str | None = None,
                  abort_event: asyncio.Event | None = None,
                  handover: tuple[str, int, int] | None = None) -> list[_Sequence]:
        """Drive the n sequences; ``emit(seq, n_new)`` for streaming (the new ids are the last
        ``n_new`` of ``seq.ids``); returns the finished sequences. ``handover``: the request's
        (bootstrap host, port, room) on a disaggregated engine: a prefill engine prefills and
        hands the room over (no output), a decode engine fetches the room, then decodes."""
        abort_event = abort_event or asyncio.Event()  # set by Abort
        self.active[request_id] = abort_event
        self.total += 1
        stop_ids = set(sampling.stop_token_ids) | (set() if sampling.ignore_eos else set(self.model.eos_token_ids))
        limit = sampling.max_new_tokens if sampling.max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS
        sequences = [_Sequence(i) for i in range(sampling.n)]
        lock = asyncio.Lock()
        role = self.disaggregation.role if self.disaggregation is not None else None
        prefilled: asyncio.Future | None = None  # one prefill (or handover) for the n sequences
        if role == "decode":
            prefilled = asyncio.ensure_future(self._fetch(handover))
        elif self.prefix_cache is not None or role == "prefill":
            prefilled = asyncio.ensure_future(self._prefill(input_ids, handover))

        async def drive(seq: _Sequence) -> None:
            if prefilled is not None:
                seq.cached = await asyncio.shield(prefilled)
            if limit == 0 or role == "prefill":
                seq.finish = "length"
                return
            source = self.generate(EngineRequest(request_id, input_ids, sampling, seq.index, top_logprobs, lora_id))
            try:
                async for chunk in source:
                    if abort_event.is_set():
                        seq.finish = "abort"
                        return
                    scored = isinstance(chunk, ScoredTokens)
                    if top_logprobs >= 0 and not scored:
                        raise _NoLogprobs()
                    new = []
                    for position, token in enumerate(chunk.ids if scored else chunk):
                        new.append(int(token))
                        if scored:
                            seq.logprobs.append(float(chunk.logprobs[position]))
                            seq.top.append(list(chunk.top[position])[:top_logprobs] if chunk.top else [])
                        if len(seq.ids) + len(new) >= sampling.min_new_tokens and token in stop_ids:
                            seq.finish, seq.matched = "stop", int(token)
                            break
                        if len(seq.ids) + len(new) >= limit:
                            seq.finish = "length"
                            break
                    seq.ids += new
                    if emit is not None and new:
                        async with lock:  # one writer on the stream at a time
                            await emit(seq, len(new))
                    if seq.finish:
                        return
                seq.finish = "length" if len(seq.ids) >= limit else "stop"
            finally:
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    await aclose()

        tasks = [asyncio.create_task(drive(seq)) for seq in sequences]
        waiter = asyncio.create_task(abort_event.wait())
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending | {waiter}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(waiter)
                if waiter in done:
                    for task in pending:
                        task.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
                    pending = set()
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()
            for seq in sequences:
                if seq.finish is None:
                    seq.finish = "abort"
            if self.prefix_cache is not None:
                for seq in sequences:
                    self.prefix_cache.store(input_ids + seq.ids)
            return sequences
        except asyncio.CancelledError:
            self._record_abort(request_id)  # the client went away
            raise
        finally:
            # first: a second cancellation (the RPC's end, then its handler's) can interrupt the
            # awaits below, and the request must not stay counted as running
            self.active.pop(request_id, None)
            waiter.cancel()
            for task in tasks:
                task.cancel()
            if prefilled is not None:
                prefilled.cancel()
            await asyncio.gather(*tasks, waiter, *([prefilled] if prefilled is not None else []),
                                 return_exceptions=True)

    async def _prefill(self, input_ids: list[int], handover: tuple[str, int, int] | None) -> int:
        cached = await self.prefix_cache.prefill(input_ids) if self.prefix_cache is not None else 0
        if self.handover is not None and handover is not None:
            self.handover.prefilled(handover[2], len(input_ids))
        return cached

    async def _fetch(self, handover: tuple[str, int, int]) -> int:
        await fetch(*handover, timeout=self.disaggregation.timeout)
        return 0  # (the KV came from the prefill engine: nothing of it was this engine's cache)

    def load_record(self) -> cpb.EngineLoad:
        """The engine's load as KV event batches carry it (and GetLoads reports it)."""
        cache = self.prefix_cache
        waiting = cache.prefilling if cache is not None else 0
        return cpb.EngineLoad(running_requests=len(self.active) - waiting, waiting_requests=waiting,
                              token_usage=cache.usage if cache is not None else 0.0)

    def _record_abort(self, request_id: str) -> None:
        if not self.aborted or self.aborted[-1] != request_id:  # Abort RPC + cancellation: once
            self.aborted.append(request_id)

    def abort(self, request_id: str) -> bool:
        event = self.active.get(request_id)
        self._record_abort(request_id)
        if event is None:
            return False
        event.set()
        return True

    def tokenizer_zip(self) -> tuple[bytes, str]:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(self.tokenizer_dir.iterdir()):
                if path.is_file() and (path.suffix in (".json", ".jinja", ".model", ".txt")):
                    archive.write(path, path.name)
        data = buf.getvalue()
        return data, hashlib.sha256(data).hexdigest()


def _sampling_from_sglang(sp: spb.SamplingParams) -> SamplingOptions:
    # proto3 zeros are unset values, not the semantic defaults.
    constraint = None
    which = sp.WhichOneof("constraint")
    if which:
        constraint = ({"ebnf_grammar": "ebnf"}.get(which, which), getattr(sp, which))
    return SamplingOptions(
        temperature=sp.temperature, top_p=sp.top_p or 1.0, top_k=sp.top_k or -1, min_p=sp.min_p,
        frequency_penalty=sp.frequency_penalty, presence_penalty=sp.presence_penalty,
        repetition_penalty=sp.repetition_penalty or 1.0,
        max_new_tokens=sp.max_new_tokens if sp.HasField("max_new_tokens") else None,
        min_new_tokens=sp.min_new_tokens, stop_token_ids=tuple(sp.stop_token_ids), ignore_eos=sp.ignore_eos,
        skip_special_tokens=sp.skip_special_tokens, n=max(1, sp.n), constraint=constraint,
        seed=int(sp.custom_params["sampling_seed"]) if "sampling_seed" in sp.custom_params else None)


def _sampling_from_vllm(sp: vpb.SamplingParams) -> SamplingOptions:
    which = sp.WhichOneof("constraint")
    constraint = None
    if which:
        constraint = ({"grammar": "ebnf"}.get(which, which), "" if which == "json_object" else str(getattr(sp, which)))
    return SamplingOptions(
        temperature=sp.temperature if sp.HasField("temperature") else 1.0, top_p=sp.top_p or 1.0,
        top_k=sp.top_k or -1, min_p=sp.min_p, frequency_penalty=sp.frequency_penalty,
        presence_penalty=sp.presence_penalty, repetition_penalty=sp.repetition_penalty or 1.0,
        max_new_tokens=sp.max_tokens if sp.HasField("max_tokens") else None, min_new_tokens=sp.min_tokens,
        stop_token_ids=tuple(sp.stop_token_ids), ignore_eos=sp.ignore_eos, skip_special_tokens=sp.skip_special_tokens,
        n=max(1, sp.n), seed=sp.seed if sp.HasField("seed") else None, constraint=constraint)


class _NoLogprobs(Exception):
    """The generator yielded plain ids for a request that asked for logprobs."""


async def _serve_generate(core: _Core, context, rid: str, ids: list[int], sampling: SamplingOptions, stream: bool,
                          chunk: Callable, complete: Callable, top_logprobs: int = -1,
                          lora_id: str | None = None, handover: tuple[str, int, int] | None = None) -> AsyncIterator:
    """The Generate stream of either protocol: ``chunk(seq, n_new)`` and ``complete(seq)`` build
    that protocol's responses. At most ``STREAM_BUFFER`` chunks wait for the reader: a generator
    faster than its reader waits for it (backpressure), so an Abort finds little generated ahead,
    and what is still queued when a request is aborted is dropped."""
    for key, value in context.invocation_metadata() or ():
        if key == "traceparent":
            core.trace_parents.append(value)
    context_length = core.model.max_context_length
    if context_length and sampling.max_new_tokens is not None and len(ids) + sampling.max_new_tokens > context_length:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"prompt ({len(ids)} tokens) + max_new_tokens ({sampling.max_new_tokens}) exceed the "
                            f"context length ({context_length})")
    if core.disaggregation is not None and handover is None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"this is a {core.disaggregation.role} engine: a request needs disaggregated_params")
    queue: asyncio.Queue = asyncio.Queue(STREAM_BUFFER)

    async def emit(seq: _Sequence, n_new: int) -> None:
        await queue.put(chunk(seq, n_new))

    aborted = asyncio.Event()
    runner = asyncio.create_task(core.run(rid, ids, sampling, emit if stream else None, top_logprobs, lora_id,
                                          aborted, handover))
    # The RPC's end, whatever ends it: a client's cancellation that came before this handler ran
    # (or while it waited) stops the generation too, not only the next write that fails.
    context.add_done_callback(lambda _: runner.done() or runner.cancel())
    getter: asyncio.Task | None = None
    try:
        while not (runner.done() and queue.empty()):
            getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({getter, runner}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done and not aborted.is_set():
                yield getter.result()
            else:
                getter.cancel()
            if aborted.is_set():  # generated before the Abort: not sent
                while not queue.empty():
                    queue.get_nowait()
        try:
            sequences = runner.result()
        except _NoLogprobs:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "this engine does not return logprobs")
        except HandoverFailed as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"disaggregated handover failed: {exc}")
        for seq in sequences:
            yield complete(seq)
    finally:
        if getter is not None:  # the client went away while this waited for a token
            getter.cancel()
        if not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)


async def _serve_tokenizer(core: _Core, context) -> AsyncIterator[cpb.GetTokenizerChunk]:
    if core.tokenizer_dir is None:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this engine was started without a tokenizer")
    data, digest = core.tokenizer_zip()
    for start in range(0, len(data), _TOKENIZER_CHUNK):
        last = start + _TOKENIZER_CHUNK >= len(data)
        yield cpb.GetTokenizerChunk(data=data[start:start + _TOKENIZER_CHUNK], sha256=digest if last else "")


def _builders(pb, rid: str | None, prompt: int, top: int) -> tuple[Callable, Callable]:
    """``chunk(seq, n_new)`` and ``complete(seq)`` for a proto module with SGLang's message shapes
    (vLLM's are the same, without ``request_id`` on the response)."""
    extra = {"request_id": rid} if rid is not None else {}

    def logprobs(seq: _Sequence, start: int):
        if top < 0:
            return None
        return pb.OutputLogProbs(
            token_logprobs=seq.logprobs[start:], token_ids=seq.ids[start:],
            top_logprobs=[pb.TopLogProbs(values=[v for _, v in t], token_ids=[i for i, _ in t])
                          for t in seq.top[start:]])

    def chunk(seq: _Sequence, n_new: int):
        start = len(seq.ids) - n_new
        return pb.GenerateResponse(chunk=pb.GenerateStreamChunk(
            token_ids=seq.ids[start:], prompt_tokens=prompt, completion_tokens=len(seq.ids), cached_tokens=seq.cached,
            index=seq.index, output_logprobs=logprobs(seq, start)), **extra)

    def complete(seq: _Sequence):
        done = pb.GenerateComplete(output_ids=seq.ids, finish_reason=seq.finish, prompt_tokens=prompt,
                                   completion_tokens=len(seq.ids), cached_tokens=seq.cached, index=seq.index,
                                   output_logprobs=logprobs(seq, 0))
        if seq.matched is not None:
            done.matched_token_id = seq.matched
        return pb.GenerateResponse(complete=done, **extra)

    return chunk, complete


async def _unimplemented(context, what: str):
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{what} is not implemented by this engine")


class _Shared:
    """RPCs both services answer the same way (their messages come from ``common.proto``)."""

    core: _Core

    async def GetTokenizer(self, request, context):
        async for piece in _serve_tokenizer(self.core, context):
            yield piece

    async def FlushCache(self, request, context):
        return cpb.FlushCacheResponse(success=True, message="nothing to flush")

    async def Embed(self, request, context):
        await _unimplemented(context, "Embed")

    async def StartProfile(self, request, context):
        await _unimplemented(context, "StartProfile")

    async def StopProfile(self, request, context):
        await _unimplemented(context, "StopProfile")

    async def SubscribeKvEvents(self, request, context):
        cache = self.core.prefix_cache
        if cache is None or not cache.capacity_tokens:
            await _unimplemented(context, "SubscribeKvEvents (no simulated prefix cache)")
        async for batch in cache.subscribe(request.start_sequence_number):
            yield batch


class _SglangServicer(_Shared, spbg.SglangSchedulerServicer):
    def __init__(self, core: _Core) -> None:
        self.core = core

    async def Generate(self, request, context):
        if not request.tokenized.input_ids:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "tokenized.input_ids is empty")
        rid, prompt = request.request_id, len(request.tokenized.input_ids)
        if request.HasField("mm_inputs"):
            problem = check_multimodal(list(request.tokenized.input_ids), request.mm_inputs, "data", vllm=False)
            if problem:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"mm_inputs: {problem}")
        top = request.top_logprobs_num if request.return_logprob else -1
        chunk, complete = _builders(spb, rid, prompt, top)
        handover = None
        if request.HasField("disaggregated_params"):
            params = request.disaggregated_params
            handover = (params.bootstrap_host, params.bootstrap_port, params.bootstrap_room)
        async for response in _serve_generate(self.core, context, rid, list(request.tokenized.input_ids),
                                               _sampling_from_sglang(request.sampling_params), request.stream,
                                               chunk, complete, top, request.lora_id or None, handover):
            yield response

    async def HealthCheck(self, request, context):
        return spb.HealthCheckResponse(healthy=True, message="ok")

    async def Abort(self, request, context):
        found = self.core.abort(request.request_id)
        return spb.AbortResponse(success=found, message="aborted" if found else "no such active request")

    async def GetModelInfo(self, request, context):
        m = self.core.model
        return spb.GetModelInfoResponse(
            model_path=m.model_id, served_model_name=m.model_id, tokenizer_path=m.tokenizer_path,
            is_generation=True, max_context_length=m.max_context_length, vocab_size=m.vocab_size,
            eos_token_ids=list(m.eos_token_ids), bos_token_id=m.bos_token_id or 0, pad_token_id=m.pad_token_id or 0,
            model_type=m.model_type, architectures=list(m.architectures), supports_vision=m.supports_vision,
            max_req_input_len=max(0, m.max_context_length - 1))

    async def GetServerInfo(self, request, context):
        response = spb.GetServerInfoResponse(active_requests=len(self.core.active),
                                             uptime_seconds=time.time() - self.core.started,
                                             sglang_version="smg-engine-server", server_type="grpc")
        response.server_args.update({"model_path": self.core.model.model_id})
        return response

    async def GetLoads(self, request, context):
        cache = self.core.prefix_cache
        record = self.core.load_record()
        running, waiting, usage = record.running_requests, record.waiting_requests, record.token_usage
        load = spb.SchedulerLoad(dp_rank=0, num_running_reqs=running, num_waiting_reqs=waiting,
                                 num_total_reqs=running + waiting, token_usage=usage,
                                 num_used_tokens=cache.size if cache is not None else 0,
                                 max_total_num_tokens=cache.capacity_tokens if cache is not None else 0,
                                 cache_hit_rate=cache.hits / cache.prompts if cache is not None and cache.prompts else 0.0)
        return spb.GetLoadsResponse(timestamp=str(time.time()), version="smg", dp_rank_count=1, loads=[load],
                                    aggregate=spb.AggregateMetrics(total_running_reqs=running, total_waiting_reqs=waiting,
                                                                   total_reqs=running + waiting, avg_token_usage=usage))


    async def LoadLoRAAdapter(self, request, context):
        await _unimplemented(context, "LoadLoRAAdapter")

    async def UnloadLoRAAdapter(self, request, context):
        await _unimplemented(context, "UnloadLoRAAdapter")

    async def ListLoadedLoRAAdapters(self, request, context):
        return spb.ListLoadedLoRAAdaptersResponse()


class _VllmServicer(_Shared, vpbg.VllmEngineServicer):
    def __init__(self, core: _Core) -> None:
        self.core = core

    async def Generate(self, request, context):
        if request.WhichOneof("input") != "tokenized" or not request.tokenized.input_ids:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "this engine takes tokenized input only")
        if request.HasField("mm_inputs"):
            if request.mm_inputs.pixel_values.WhichOneof("payload") not in (None, "inline"):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "mm_inputs: only inline tensors are taken")
            problem = check_multimodal(list(request.tokenized.input_ids), request.mm_inputs, "inline", vllm=True)
            if problem:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"mm_inputs: {problem}")
        sp = request.sampling_params
        top = sp.logprobs if sp.HasField("logprobs") else -1
        chunk, complete = _builders(vpb, None, len(request.tokenized.input_ids), top)
        async for response in _serve_generate(self.core, context, request.request_id,
                                               list(request.tokenized.input_ids), _sampling_from_vllm(sp),
                                               request.stream, chunk, complete, top):
            yield response

    async def HealthCheck(self, request, context):
        return vpb.HealthCheckResponse(healthy=True, message="ok")

    async def Abort(self, request, context):
        for rid in request.request_ids:
            self.core.abort(rid)
        return vpb.AbortResponse()

    async def GetModelInfo(self, request, context):
        m = self.core.model
        return vpb.GetModelInfoResponse(
            model_path=m.model_id, served_model_name=m.model_id, tokenizer_path=m.tokenizer_path, is_generation=True,
            max_context_length=m.max_context_length, vocab_size=m.vocab_size, eos_token_ids=list(m.eos_token_ids),
            bos_token_id=m.bos_token_id or 0, pad_token_id=m.pad_token_id or 0, model_type=m.model_type,
            architectures=list(m.architectures), supports_vision=m.supports_vision)

    async def GetServerInfo(self, request, context):
        return vpb.GetServerInfoResponse(active_requests=len(self.core.active),
                                         uptime_seconds=time.time() - self.core.started)

    async def GetLoads(self, request, context):
        return vpb.GetLoadsResponse()



class EngineServer:
    """Serve ``generate`` over gRPC (SglangScheduler and VllmEngine on one port).

    Example:
        >>> async def generate(req):                      # doctest: +SKIP
        ...     for token in my_model(req.input_ids):
        ...         yield [token]
        >>> server = EngineServer(generate, ModelInfo(model_id="my-model", eos_token_ids=(2,)))  # doctest: +SKIP
        >>> port = await server.start("127.0.0.1", 0)     # doctest: +SKIP
    """

    def __init__(self, generate: Generate, model: ModelInfo, tokenizer_dir: str | Path | None = None,
                 prefix_cache: SimulatedPrefixCache | None = None,
                 disaggregation: Disaggregation | None = None) -> None:
        """``prefix_cache``: a simulated KV prefix cache (cached tokens reported, prefill time
        waited, ``GetLoads`` from it); see smg.engine.kv_cache. ``disaggregation``: serve as the
        prefill or the decode half of disaggregated requests (SGLang's protocol); see
        smg.engine.disaggregation."""
        self._core = _Core(generate, model, Path(tokenizer_dir) if tokenizer_dir else None, prefix_cache,
                           disaggregation)
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None

    @property
    def aborted(self) -> list[str]:
        """Request ids that were aborted (by the Abort RPC or client cancellation)."""
        return self._core.aborted

    @property
    def active_requests(self) -> int:
        return len(self._core.active)

    @property
    def trace_parents(self) -> list[str]:
        """The W3C ``traceparent`` of the last Generate calls that carried one (at most 1000)."""
        return list(self._core.trace_parents)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        server = grpc.aio.server(options=[("grpc.max_send_message_length", 256 << 20),
                                          ("grpc.max_receive_message_length", 256 << 20),
                                          ("grpc.so_reuseport", 0)])
        spbg.add_SglangSchedulerServicer_to_server(_SglangServicer(self._core), server)
        vpbg.add_VllmEngineServicer_to_server(_VllmServicer(self._core), server)
        self.port = server.add_insecure_port(f"{host}:{port}")
        await server.start()
        self._server = server
        if self._core.handover is not None:
            await self._core.handover.start(host, self._core.disaggregation.bootstrap_port)
        log.info("engine %s serving on %s:%d", self._core.model.model_id, host, self.port)
        return self.port

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._core.handover is not None:
            await self._core.handover.stop()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> "EngineServer":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

