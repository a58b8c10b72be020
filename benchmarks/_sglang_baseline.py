"""Load SGLang's own reasoning and tool-call parsers for the parser benchmark, without its engine.

SGLang is installed with ``pip install --no-deps --target DIR sglang`` (+ ``partial-json-parser``
and ``orjson``), and ``SGLANG_SITE`` points at DIR. Its parsers are pure Python, but the package
``__init__`` files and the OpenAI protocol module pull in the whole server (torch, triton...). Here
``sglang`` and ``sglang.srt`` become bare namespace packages and the two modules the parsers use for
types and settings are replaced by small stand-ins; the parser code itself runs unmodified.
This is benchmark-only scaffolding, never imported by smg.
"""
from __future__ import annotations

import enum
import importlib
import os
import sys
import types
from pathlib import Path


class _Setting:
    def __init__(self, default):
        self._default = default

    def get(self):
        return self._default

    def __bool__(self):
        return bool(self._default)


class _Envs:
    def __getattr__(self, name):
        return _Setting(False)


class _Model:
    """Attribute bag standing in for SGLang's pydantic request models."""

    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)

    def __class_getitem__(cls, item):
        return cls


def _tool(name: str, parameters: dict) -> _Model:
    return _Model(type="function", function=_Model(name=name, parameters=parameters, strict=False,
                                                   description=""))


def load(site: str | None = None):
    """Return (ReasoningParser class, {name: detector class}, make_tool) or raise ImportError."""
    site = site or os.environ.get("SGLANG_SITE", "")
    root = Path(site) / "sglang"
    if not (root / "srt" / "function_call").is_dir():
        raise ImportError(f"SGLang not found under SGLANG_SITE={site!r}")
    for extra in os.environ.get("SGLANG_DEPS", "").split(os.pathsep):
        if extra and extra not in sys.path:
            sys.path.append(extra)
    if site not in sys.path:
        sys.path.append(site)
    for name, path in (("sglang", root), ("sglang.srt", root / "srt"),
                       ("sglang.srt.entrypoints", root / "srt" / "entrypoints"),
                       ("sglang.srt.entrypoints.openai", root / "srt" / "entrypoints" / "openai")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    protocol = types.ModuleType("sglang.srt.entrypoints.openai.protocol")
    for cls in ("Tool", "ToolChoice", "ChatCompletionRequest", "ResponsesRequest", "Function",
                "StructuralTagResponseFormat", "StructuresResponseFormat", "LegacyStructuralTagResponseFormat",
                "ToolCall", "FunctionResponse", "ToolCallProcessingResult"):
        setattr(protocol, cls, type(cls, (_Model,), {}))
    sys.modules[protocol.__name__] = protocol
    environ = types.ModuleType("sglang.srt.environ")
    environ.envs = _Envs()
    environ.ToolStrictLevel = enum.IntEnum("ToolStrictLevel", {"OFF": 0, "FUNCTION": 1, "PARAMETER": 2})
    sys.modules[environ.__name__] = environ

    from sglang.srt.function_call.deepseekv3_detector import DeepSeekV3Detector
    from sglang.srt.function_call.gpt_oss_detector import GptOssDetector
    from sglang.srt.function_call.hermes_detector import HermesDetector
    from sglang.srt.function_call.kimik2_detector import KimiK2Detector
    from sglang.srt.parser.reasoning_parser import ReasoningParser

    detectors = {"hermes": HermesDetector, "deepseek_v3": DeepSeekV3Detector, "kimi_k2": KimiK2Detector,
                 "gpt_oss": GptOssDetector}
    # families of newer SGLang releases, where this one has them
    for name, module, cls in (("deepseek_v4", "deepseekv4_detector", "DeepSeekV4Detector"),
                              ("gemma4", "gemma4_detector", "Gemma4Detector"),
                              ("glm47", "glm47_moe_detector", "Glm47MoeDetector"),
                              ("minimax_m3", "minimax_m3", "MinimaxM3Detector"),
                              ("qwen3_coder", "qwen3_coder_detector", "Qwen3CoderDetector")):
        try:
            detectors[name] = getattr(importlib.import_module(f"sglang.srt.function_call.{module}"), cls)
        except (ImportError, AttributeError):
            pass
    return ReasoningParser, detectors, _tool
