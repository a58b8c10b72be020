"""Client side of the engine protocol: adapters for SGLang, vLLM and TRT-LLM, and the worker pool."""
from smg.engines.base import (EngineAdapter, EngineOutput, GenerateRequest, ModelInfo, MultimodalTensors,
                              SamplingOptions, TokenLogprob, map_rpc_error)

ADAPTERS = {"sglang": "smg.engines.sglang:SglangAdapter", "vllm": "smg.engines.vllm:VllmAdapter",
            "trtllm": "smg.engines.trtllm:TrtllmAdapter"}


def adapter_class(name: str) -> type[EngineAdapter]:
    """The adapter class for an engine protocol name (``sglang``, ``vllm``, ``trtllm``)."""
    import importlib

    from smg.errors import InvalidRequest

    if name not in ADAPTERS:
        raise InvalidRequest(f"unknown engine protocol {name!r}; known: {', '.join(ADAPTERS)}")
    module, cls = ADAPTERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["ADAPTERS", "EngineAdapter", "EngineOutput", "GenerateRequest", "ModelInfo", "MultimodalTensors",
           "SamplingOptions",
           "TokenLogprob", "adapter_class", "map_rpc_error"]
