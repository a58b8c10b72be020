"""The engine-facing interface: token-level requests and outputs, and one adapter per protocol.

Engines speak the published ``smg-grpc-proto`` services (SGLang ``SglangScheduler``, vLLM
``VllmEngine``, TensorRT-LLM ``TrtllmService``). An :class:`EngineAdapter` turns smg's
:class:`GenerateRequest` into that protocol's message, and its responses back into
:class:`EngineOutput` records, so the pool and the gateway never see protocol differences.

Stop *strings* are matched by the gateway (it has the text); engines get stop token ids, EOS
handling, ``min_new_tokens`` and ``max_new_tokens``. Proto3 zeros are not defaults: every sampling
field is sent explicitly, from :class:`SamplingOptions` whose defaults are the engines' semantic
defaults (temperature 1, top_p 1, top_k disabled...).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

import grpc
from google.protobuf import json_format

from smg import _ext
from smg.engines.h2 import H2Channel, ResponseRefused
from smg.errors import EngineError, EngineUnavailable, InvalidRequest, RequestAborted, SmgError

CONSTRAINTS = ("json_schema", "regex", "ebnf", "structural_tag", "json_object")


@dataclass(frozen=True)
class SamplingOptions:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1: disabled
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    max_new_tokens: int | None = None
    min_new_tokens: int = 0
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    n: int = 1
    seed: int | None = None
    logit_bias: Mapping[int, float] | None = None
    constraint: tuple[str, str] | None = None  # (one of CONSTRAINTS, its text)

    def __post_init__(self) -> None:
        if self.constraint is not None and self.constraint[0] not in CONSTRAINTS:
            raise InvalidRequest(f"unknown constraint {self.constraint[0]!r}")
        if self.n < 1:
            raise InvalidRequest("n must be at least 1")


@dataclass(frozen=True)
class MultimodalTensors:
    """Preprocessed media for an engine: the encoder input (``pixel_values``, any numpy array),
    model-specific tensors (``image_grid_thw``...), the image placeholder token and where each
    image's placeholder tokens sit in the prompt (``(offset, length)`` pairs)."""

    pixel_values: Any
    extra: Mapping[str, Any] = field(default_factory=dict)
    image_token_id: int | None = None
    placeholders: Sequence[tuple[int, int]] = ()
    # vLLM: tensors whose first axis is per image, and tensors cut per image by a sizes tensor
    batched_keys: Sequence[str] = ()
    flat_keys: Mapping[str, str] = field(default_factory=dict)


def tensor_fields(array) -> tuple[bytes, list[int], str]:
    """Raw little-endian bytes, shape and dtype name of a numpy-like array (the protos' TensorData)."""
    import numpy as np

    data = np.ascontiguousarray(array)
    if data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("<"))
    return data.tobytes(), list(data.shape), data.dtype.name


def proto_mm_inputs(pb, mm: MultimodalTensors, bytes_field: str, **fields):
    """``pb.MultimodalInputs`` for SGLang's and vLLM's protos, which share its shape except for the
    name of ``TensorData``'s bytes field (``bytes_field``) and a few extra ``fields``."""

    def tensor(array):
        data, shape, dtype = tensor_fields(array)
        return pb.TensorData(shape=shape, dtype=dtype, **{bytes_field: data})

    inputs = pb.MultimodalInputs(pixel_values=tensor(mm.pixel_values), **fields,
                                 mm_placeholders=[pb.PlaceholderRange(offset=o, length=n) for o, n in mm.placeholders])
    for name, array in mm.extra.items():
        inputs.model_specific_tensors[name].CopyFrom(tensor(array))
    if mm.image_token_id is not None:
        inputs.im_token_id = mm.image_token_id
    return inputs


@dataclass(frozen=True)
class GenerateRequest:
    """A tokenized generation request, as every engine protocol takes it."""

    request_id: str
    input_ids: Sequence[int]
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    stream: bool = True
    return_logprob: bool = False
    top_logprobs: int = 0
    lora_id: str | None = None
    disaggregated: Mapping[str, Any] | None = None  # SGLang: bootstrap_host/port/room
    data_parallel_rank: int | None = None
    text: str = ""  # the prompt text, for the engine's logs only
    multimodal: MultimodalTensors | None = None
    routing_key: str | None = None  # sticky routing (X-SMG-Routing-Key, else the request's user)


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


class EngineOutput(NamedTuple):
    """One piece of one sequence (``index`` < n): new token ids, counters, and at the end the
    finish reason (``stop``/``length``/``abort``) and what matched. A NamedTuple because one is
    built per engine message: adapters build it with ``tuple.__new__``, no Python ``__init__``."""

    index: int
    token_ids: list[int]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] | None = None
    finished: bool = False
    finish_reason: str | None = None
    matched_stop: int | str | None = None


@runtime_checkable
class PushableCall(Protocol):
    """A Generate call whose outputs a consumer can take from the connection's data path (h2's
    ``StreamCall``), so a server writes them without a task woken per message (``grpc.aio``'s
    calls cannot)."""

    def listen(self, listener: Callable[[], None] | None) -> None:
        """Call ``listener()`` after each read of the connection that brought this call data."""

    def take(self) -> "EngineOutput | None":
        """The next output that has arrived, None when none has; raises at the call's end."""

    def put_back(self, output: "EngineOutput") -> None:
        """Return an output for the call's ``async for`` to yield next."""


@dataclass(frozen=True)
class ModelInfo:
    model_id: str = ""
    tokenizer_path: str = ""
    max_context_length: int = 0
    vocab_size: int = 0
    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    model_type: str = ""
    architectures: tuple[str, ...] = ()
    supports_vision: bool = False
    is_generation: bool = True


new_output = tuple.__new__  # new_output(EngineOutput, (index, ids, prompt, completion, cached, logprobs, ...))
ChunkDecoder = _ext.load("proto_chunk").ChunkDecoder


def map_rpc_error(exc: grpc.aio.AioRpcError | grpc.RpcError, url: str = "") -> SmgError:
    """A gRPC status from an engine as a typed smg error (the engine's message kept)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else str(exc)) or code.name
    where = f" ({url})" if url else ""
    if isinstance(exc, ResponseRefused):  # (over smg's limits: this response's fault, not the worker's)
        return EngineError(f"engine error{where}: {code.name}: {details}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED):
        return EngineUnavailable(f"engine unavailable{where}: {code.name}: {details}")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.FAILED_PRECONDITION):
        return InvalidRequest(f"engine rejected the request{where}: {details}")
    if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED):
        return RequestAborted(f"request aborted{where}: {details}")
    return EngineError(f"engine error{where}: {code.name}: {details}")


class EngineAdapter(abc.ABC):
    """One engine protocol over a gRPC channel: ``pb`` is the protocol's generated message module and
    ``stub_class`` its service stub; the RPCs whose shape every protocol shares are done here."""

    name: str
    service: str  # fully qualified gRPC service name
    pb: Any
    stub_class: Any

    def __init__(self, channel: grpc.aio.Channel, streams: H2Channel | None = None) -> None:
        self.channel = channel
        self.stub = self.stub_class(channel)
        self.streams = streams  # Generate's transport when given (see smg.engines.h2), else grpc.aio
        self._generate_path = f"/{self.service}/Generate"
        # decode(raw): one serialized GenerateResponse as an EngineOutput; a plain token chunk is
        # read from its bytes (``smg._ext.proto_chunk``), anything else parsed with protobuf
        self.decode = ChunkDecoder(chunk_layout(self.pb), EngineOutput, self._parse_bytes)
        # grpc.aio's Generate, decoding each response with ``decode`` as the h2 stream does
        self._generate = channel.unary_stream(self._generate_path, request_serializer=_serialize,
                                              response_deserializer=self.decode)

    @abc.abstractmethod
    def build(self, request: GenerateRequest):
        """The protocol's GenerateRequest message."""

    def parse(self, response) -> EngineOutput:
        """One GenerateResponse as an EngineOutput (SGLang's and vLLM's shape by default)."""
        return parse_generate_response(response)

    def _parse_bytes(self, raw: bytes) -> EngineOutput:
        return self.parse(self.pb.GenerateResponse.FromString(raw))

    def call_generate(self, message, timeout: float | None, streamed: bool = False,
                      metadata: tuple[tuple[str, str], ...] = ()):
        """Start the streaming Generate call: an async iterator of EngineOutputs with ``done()``
        and ``cancel()`` (an ``H2Channel`` stream, or a grpc.aio call). ``streamed``: the engine
        sends tokens as it makes them (the channel's stall limits apply). ``metadata``: gRPC
        metadata to send (a trace's ``traceparent``)."""
        if self.streams is not None:
            return self.streams.stream(self._generate_path, message.SerializeToString(), self.decode, timeout,
                                       streamed, metadata)
        return self._generate(message, timeout=timeout, metadata=metadata or None)

    @abc.abstractmethod
    async def abort(self, request_id: str, timeout: float = 2.0) -> None: ...

    async def health(self, timeout: float) -> bool:
        """The engine's HealthCheck, over the connection that carries the token streams when it is
        smg's h2 (so a broken stream connection is an unhealthy worker, and a lost one is re-made)."""
        request = self.pb.HealthCheckRequest()
        if self.streams is None:
            return self.healthy(await self.stub.HealthCheck(request, timeout=timeout))
        call = self.streams.stream(f"/{self.service}/HealthCheck", request.SerializeToString(),
                                   self.pb.HealthCheckResponse.FromString, timeout)
        healthy = False
        async for response in call:
            healthy = self.healthy(response)
        return healthy

    @staticmethod
    def healthy(response) -> bool:
        """Whether a ``HealthCheckResponse`` says the engine serves (SGLang's and vLLM's shape)."""
        return response.healthy

    async def model_info(self, timeout: float) -> ModelInfo:
        return proto_model_info(await self.stub.GetModelInfo(self.pb.GetModelInfoRequest(), timeout=timeout))

    async def server_info(self, timeout: float) -> dict:
        return json_format.MessageToDict(await self.stub.GetServerInfo(self.pb.GetServerInfoRequest(),
                                                                       timeout=timeout))

    async def tokenizer_archive(self, timeout: float) -> bytes:
        """The engine's tokenizer files as a zip archive (``GetTokenizer``, in every protocol)."""
        from smg_grpc_proto.generated import common_pb2

        chunks = self.stub.GetTokenizer(common_pb2.GetTokenizerRequest(), timeout=timeout)
        return b"".join([chunk.data async for chunk in chunks])

    def kv_events(self, after: int):
        """The engine's KV cache event batches (``SubscribeKvEvents``, in every protocol) numbered
        after ``after``: a streaming call."""
        from smg_grpc_proto.generated import common_pb2

        return self.stub.SubscribeKvEvents(common_pb2.SubscribeKvEventsRequest(start_sequence_number=after))

    async def loads(self, timeout: float) -> dict:
        """The engine's reported load (``GetLoads``); {} for a protocol without it."""
        if not hasattr(self.pb, "GetLoadsRequest"):
            return {}
        response = await self.stub.GetLoads(self.pb.GetLoadsRequest(), timeout=timeout)
        return json_format.MessageToDict(response, preserving_proto_field_name=True)


# SGLang's and vLLM's protos share these message shapes (field for field), so one reader serves both.

def proto_logprobs(lp) -> tuple[TokenLogprob, ...] | None:
    """``OutputLogProbs`` (token ids, logprobs, per-token top alternatives) as TokenLogprobs."""
    if lp is None or not lp.token_ids:
        return None
    tops = list(lp.top_logprobs)
    return tuple(
        TokenLogprob(token_id, value, tuple(zip(tops[i].token_ids, tops[i].values)) if i < len(tops) else ())
        for i, (token_id, value) in enumerate(zip(lp.token_ids, lp.token_logprobs)))


def _serialize(message) -> bytes:
    return message.SerializeToString()


def chunk_layout(pb) -> tuple | None:
    """Field numbers ``decode_chunk`` needs, from the protocol's descriptor; None when its chunk
    is not the shape it reads (token_ids 1, prompt/completion/cached tokens 2-4, an index)."""
    response = pb.GenerateResponse.DESCRIPTOR
    chunk = response.fields_by_name.get("chunk")
    fields = chunk.message_type.fields_by_name if chunk is not None else {}
    wanted = {"token_ids": 1, "prompt_tokens": 2, "completion_tokens": 3, "cached_tokens": 4}
    if "index" not in fields or any(name not in fields or fields[name].number != number
                                    for name, number in wanted.items()):
        return None
    return (chunk.number, fields["index"].number,
            frozenset(f.number for f in response.fields if f.name == "request_id"),  # not read by smg
            frozenset(f.number for f in chunk.message_type.fields if f.name == "reasoning_tokens"))


def parse_generate_response(response) -> EngineOutput:
    """A ``GenerateResponse`` holding a ``chunk`` or a ``complete``."""
    if response.HasField("chunk"):
        c = response.chunk
        return new_output(EngineOutput, (c.index, list(c.token_ids), c.prompt_tokens, c.completion_tokens,
                                         c.cached_tokens, proto_logprobs(c.output_logprobs) if c.HasField(
                                             "output_logprobs") else None, False, None, None))
    c = response.complete
    which = c.WhichOneof("matched_stop")
    return EngineOutput(c.index, list(c.output_ids), c.prompt_tokens, c.completion_tokens, c.cached_tokens,
                        proto_logprobs(c.output_logprobs) if c.HasField("output_logprobs") else None,
                        True, c.finish_reason or "stop", getattr(c, which) if which else None)


def proto_model_info(r) -> ModelInfo:
    """A ``GetModelInfoResponse`` as ModelInfo."""
    return ModelInfo(r.served_model_name or r.model_path, r.tokenizer_path, r.max_context_length, r.vocab_size,
                     tuple(r.eos_token_ids), r.bos_token_id, r.pad_token_id, r.model_type, tuple(r.architectures),
                     r.supports_vision, r.is_generation)
