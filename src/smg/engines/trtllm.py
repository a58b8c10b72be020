"""TensorRT-LLM's ``trtllm.TrtllmService``."""
from __future__ import annotations

from smg_grpc_proto.generated import trtllm_service_pb2 as pb
from smg_grpc_proto.generated import trtllm_service_pb2_grpc as pbg

from smg.engines.base import EngineAdapter, EngineOutput, GenerateRequest, ModelInfo, TokenLogprob
from smg.errors import UnsupportedFeature

# TRT-LLM needs an explicit output budget; this is used when the request names none.
DEFAULT_MAX_TOKENS = 4096
_GUIDE = {"json_object": 1, "json_schema": 2, "regex": 3, "ebnf": 4, "structural_tag": 5}


def _logprobs(items) -> tuple[TokenLogprob, ...] | None:
    if not items:
        return None
    return tuple(TokenLogprob(i.token_id, i.logprob, tuple((t.token_id, t.logprob) for t in i.top_logprobs))
                 for i in items)


class TrtllmAdapter(EngineAdapter):
    name = "trtllm"
    service = "trtllm.TrtllmService"

    pb = pb
    stub_class = pbg.TrtllmServiceStub

    def build(self, request: GenerateRequest) -> pb.GenerateRequest:
        if request.multimodal is not None:  # TRT-LLM's proto takes raw images, not preprocessed tensors
            raise UnsupportedFeature("preprocessed multimodal tensors are not supported by the TRT-LLM protocol")
        s = request.sampling
        sampling = pb.SamplingConfig(beam_width=1, num_return_sequences=s.n, top_k=max(0, s.top_k), top_p=s.top_p,
                                     temperature=s.temperature, min_tokens=s.min_new_tokens,
                                     repetition_penalty=s.repetition_penalty, presence_penalty=s.presence_penalty,
                                     frequency_penalty=s.frequency_penalty, min_p=s.min_p)
        if s.seed is not None:
            sampling.seed = s.seed
        output = pb.OutputConfig(exclude_input_from_output=True)
        if request.return_logprob:
            output.logprobs = request.top_logprobs
        message = pb.GenerateRequest(
            request_id=request.request_id,
            tokenized=pb.TokenizedInput(original_text=request.text, input_token_ids=list(request.input_ids)),
            sampling_config=sampling, output_config=output,
            max_tokens=s.max_new_tokens if s.max_new_tokens is not None else DEFAULT_MAX_TOKENS,
            streaming=request.stream, stop_token_ids=list(s.stop_token_ids), ignore_eos=s.ignore_eos)
        if s.constraint is not None:
            kind, text = s.constraint
            message.guided_decoding.CopyFrom(pb.GuidedDecodingParams(guide_type=_GUIDE[kind], guide=text))
        return message

    def parse(self, response: pb.GenerateResponse) -> EngineOutput:
        if response.HasField("chunk"):
            c = response.chunk
            return EngineOutput(c.sequence_index, list(c.token_ids), c.prompt_tokens, c.completion_tokens,
                                c.cached_tokens, _logprobs(c.logprobs))
        c = response.complete
        which = c.WhichOneof("matched_stop")
        return EngineOutput(c.sequence_index, list(c.output_token_ids), c.prompt_tokens, c.completion_tokens,
                            c.cached_tokens, _logprobs(c.logprobs), True, c.finish_reason or "stop",
                            getattr(c, which) if which else None)

    async def abort(self, request_id: str, timeout: float = 2.0) -> None:
        await self.stub.Abort(pb.AbortRequest(request_id=request_id), timeout=timeout)

    @staticmethod
    def healthy(response) -> bool:
        return response.status.upper() == "OK"

    async def model_info(self, timeout: float) -> ModelInfo:
        r = await self.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=timeout)
        return ModelInfo(model_id=r.model_id, max_context_length=r.max_seq_len, vocab_size=r.vocab_size)

