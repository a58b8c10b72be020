"""vLLM's ``vllm.grpc.engine.VllmEngine`` service."""
from __future__ import annotations

from smg_grpc_proto.generated import vllm_engine_pb2 as pb
from smg_grpc_proto.generated import vllm_engine_pb2_grpc as pbg

from smg.engines.base import EngineAdapter, GenerateRequest, proto_mm_inputs

_CONSTRAINT_FIELD = {"json_schema": "json_schema", "regex": "regex", "ebnf": "grammar",
                     "structural_tag": "structural_tag"}


def sampling_params(request: GenerateRequest) -> pb.SamplingParams:
    s = request.sampling
    params = pb.SamplingParams(
        temperature=s.temperature, top_p=s.top_p, top_k=max(0, s.top_k),  # vLLM: 0 disables top-k
        min_p=s.min_p, frequency_penalty=s.frequency_penalty, presence_penalty=s.presence_penalty,
        repetition_penalty=s.repetition_penalty, min_tokens=s.min_new_tokens, stop_token_ids=list(s.stop_token_ids),
        skip_special_tokens=s.skip_special_tokens, spaces_between_special_tokens=s.spaces_between_special_tokens,
        ignore_eos=s.ignore_eos, n=s.n,
    )
    if s.max_new_tokens is not None:
        params.max_tokens = s.max_new_tokens
    if s.seed is not None:
        params.seed = s.seed
    if request.return_logprob:
        params.logprobs = request.top_logprobs
    if s.logit_bias:
        for token_id, bias in s.logit_bias.items():
            params.logit_bias[int(token_id)] = bias
    if s.constraint is not None:
        kind, text = s.constraint
        if kind == "json_object":
            params.json_object = True
        else:
            setattr(params, _CONSTRAINT_FIELD[kind], text)
    return params


class VllmAdapter(EngineAdapter):
    name = "vllm"
    service = "vllm.grpc.engine.VllmEngine"

    pb = pb
    stub_class = pbg.VllmEngineStub

    def build(self, request: GenerateRequest) -> pb.GenerateRequest:
        message = pb.GenerateRequest(
            request_id=request.request_id,
            tokenized=pb.TokenizedInput(original_text=request.text, input_ids=list(request.input_ids)),
            sampling_params=sampling_params(request), stream=request.stream)
        if request.disaggregated:
            message.kv_transfer_params.CopyFrom(pb.KvTransferParams(**request.disaggregated))
        if request.data_parallel_rank is not None:
            message.data_parallel_rank = request.data_parallel_rank
        if request.multimodal is not None:
            mm = request.multimodal
            message.mm_inputs.CopyFrom(proto_mm_inputs(pb, mm, "inline", batched_keys=list(mm.batched_keys),
                                                       flat_keys=dict(mm.flat_keys)))
        return message

    async def abort(self, request_id: str, timeout: float = 2.0) -> None:
        await self.stub.Abort(pb.AbortRequest(request_ids=[request_id]), timeout=timeout)
