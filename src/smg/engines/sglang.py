"""SGLang's ``sglang.grpc.scheduler.SglangScheduler`` service (also served by smg's EngineServer)."""
from __future__ import annotations

import json

from smg_grpc_proto.generated import sglang_scheduler_pb2 as pb
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc as pbg

from smg.engines.base import EngineAdapter, GenerateRequest, proto_mm_inputs

_CONSTRAINT_FIELD = {"json_schema": "json_schema", "regex": "regex", "ebnf": "ebnf_grammar",
                     "structural_tag": "structural_tag"}


def sampling_params(request: GenerateRequest) -> pb.SamplingParams:
    s = request.sampling
    greedy = s.temperature == 0
    params = pb.SamplingParams(
        temperature=s.temperature, top_p=s.top_p,
        top_k=1 if greedy else s.top_k,  # engines that read a 0 temperature as unset still decode greedily
        min_p=s.min_p, frequency_penalty=s.frequency_penalty, presence_penalty=s.presence_penalty,
        repetition_penalty=s.repetition_penalty, stop_token_ids=list(s.stop_token_ids),
        skip_special_tokens=s.skip_special_tokens, spaces_between_special_tokens=s.spaces_between_special_tokens,
        n=s.n, min_new_tokens=s.min_new_tokens, ignore_eos=s.ignore_eos,
        # The gateway trims stop strings itself; the engine never sees them.
        no_stop_trim=True,
    )
    if s.max_new_tokens is not None:
        params.max_new_tokens = s.max_new_tokens
    if s.constraint is not None:
        kind, text = s.constraint
        if kind == "json_object":
            params.json_schema = json.dumps({"type": "object"})
        else:
            setattr(params, _CONSTRAINT_FIELD[kind], text)
    if s.logit_bias:
        for token_id, bias in s.logit_bias.items():
            params.logit_bias[str(token_id)] = bias
    if s.seed is not None:  # SGLang reads its sampling seed from custom_params
        params.custom_params.update({"sampling_seed": s.seed})
    return params


class SglangAdapter(EngineAdapter):
    name = "sglang"
    service = "sglang.grpc.scheduler.SglangScheduler"

    pb = pb
    stub_class = pbg.SglangSchedulerStub

    def build(self, request: GenerateRequest) -> pb.GenerateRequest:
        message = pb.GenerateRequest(
            request_id=request.request_id,
            tokenized=pb.TokenizedInput(original_text=request.text, input_ids=list(request.input_ids)),
            sampling_params=sampling_params(request),
            return_logprob=request.return_logprob,
            top_logprobs_num=request.top_logprobs,
            stream=request.stream,
            lora_id=request.lora_id or "",
        )
        if request.return_logprob:
            message.logprob_start_len = -1  # output tokens only
        if request.disaggregated:
            message.disaggregated_params.CopyFrom(pb.DisaggregatedParams(**request.disaggregated))
        if request.data_parallel_rank is not None:
            message.data_parallel_rank = request.data_parallel_rank
        if request.multimodal is not None:
            message.mm_inputs.CopyFrom(proto_mm_inputs(pb, request.multimodal, "data", modalities=["image"]))
        return message

    async def abort(self, request_id: str, timeout: float = 2.0) -> None:
        await self.stub.Abort(pb.AbortRequest(request_id=request_id, reason="cancelled by gateway"), timeout=timeout)
