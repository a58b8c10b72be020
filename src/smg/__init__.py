"""smg: the CPU side of LLM serving, in-process.

    from smg import Gateway

    async with Gateway(workers=["grpc://127.0.0.1:50051"], tokenizer="path/to/model", model="m") as gw:
        reply = await gw.chat({"model": "m", "messages": [{"role": "user", "content": "Hi"}]})

Heavy modules (grpc, jinja2, tokenizers, msgspec) load on first use of a name below, so
``import smg`` stays cheap.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "Gateway": "smg.gateway",
    "GatewayConfig": "smg.config",
    "ModelConfig": "smg.config",
    "PoolConfig": "smg.config",
    "CacheConfig": "smg.config",
    "ConfigError": "smg.config",
    "ModelNotFound": "smg.errors",
    "ChatCompletionRequest": "smg.protocols.openai",
    "ChatCompletion": "smg.protocols.openai",
    "ChatCompletionChunk": "smg.protocols.openai",
    "CompletionRequest": "smg.protocols.openai",
    "Completion": "smg.protocols.openai",
    "SamplingOptions": "smg.engines.base",
    "SmgError": "smg.errors",
    "InvalidRequest": "smg.errors",
    "EngineError": "smg.errors",
    "EngineUnavailable": "smg.errors",
    "NoHealthyWorker": "smg.errors",
    "RequestAborted": "smg.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:
    from smg.config import CacheConfig, ConfigError, GatewayConfig, ModelConfig, PoolConfig
    from smg.engines.base import SamplingOptions
    from smg.errors import (EngineError, EngineUnavailable, InvalidRequest, ModelNotFound, NoHealthyWorker,
                            RequestAborted, SmgError)
    from smg.gateway import Gateway
    from smg.protocols.openai import (ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Completion,
                                      CompletionRequest)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'smg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
