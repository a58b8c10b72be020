"""Parser names and the model-id table that picks them.

``parser_for_model("deepseek-ai/DeepSeek-R1-0528")`` -> ``("deepseek_r1", "deepseek_v3")``: the
first glob (case-insensitive) that matches the model id wins; explicit names override either half.
"""
from __future__ import annotations

import fnmatch
from typing import Callable

from smg.errors import InvalidRequest
from smg.parsers import reasoning, tools

_ALIASES = {"json": "llama3_json", "llama3": "llama3_json", "qwen": "hermes", "qwen25": "hermes",
            "deepseek_v3_1": "deepseek_v31", "deepseek_v3_2": "deepseek_v32", "glm4_moe": "glm45",
            "harmony": "gpt_oss", "llama4": "pythonic", "magistral": "mistral", "deepseek_r1_0528": "deepseek_r1"}
_TOOL_FACTORIES = tools.factories()

# (model glob, reasoning parser, tool parser); the first match wins, so specific globs come first.
MODEL_TABLE: tuple[tuple[str, str | None, str | None], ...] = (
    ("*qwen3*coder*", None, "qwen3_coder"),
    ("*qwen3*thinking*", "qwen3_thinking", "hermes"),
    ("*qwen3*", "qwen3", "hermes"),
    ("*qwq*", "deepseek_r1", "hermes"),
    ("*qwen2.5*", None, "hermes"),
    ("*deepseek-r1*", "deepseek_r1", "deepseek_v3"),
    ("*deepseek-v3.2*", "deepseek_v31", "deepseek_v32"),
    ("*deepseek-v3.1*", "deepseek_v31", "deepseek_v31"),
    ("*deepseek-v3*", None, "deepseek_v3"),
    ("*glm-4.7*", "glm45", "glm47"),
    ("*glm-4.[56]*", "glm45", "glm45"),
    ("*kimi-k2*", "kimi_k2", "kimi_k2"),
    ("*kimi-vl*", "kimi", None),
    ("*minimax-m2*", "minimax", "minimax_m2"),
    ("*step3*", "step3", "step3"),
    ("*step-3*", "step3", "step3"),
    ("*gpt-oss*", "gpt_oss", "gpt_oss"),
    ("*command-a-reasoning*", "cohere", "cohere"),
    ("*command*", None, "cohere"),
    ("*nemotron*", "nemotron", None),
    ("*seed-oss*", "seed_oss", "seed_oss"),
    ("*magistral*", "mistral", "mistral"),
    ("*mistral*", None, "mistral"),
    ("*mixtral*", None, "mistral"),
    ("*granite*", "granite", "granite"),
    ("*internlm*", None, "internlm"),
    ("*hunyuan*", None, "hunyuan"),
    ("*llama-4*", None, "pythonic"),
    ("*llama-3*", None, "llama3_json"),
)


def _canonical(name: str, known) -> str:
    if not isinstance(name, str):
        raise InvalidRequest(f"parser name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in known:
        raise InvalidRequest(f"unknown parser {name!r}; known: {', '.join(sorted(known))}")
    return key


def reasoning_parser_names() -> list[str]:
    return sorted(reasoning.FORMATS)


def tool_parser_names() -> list[str]:
    return sorted(_TOOL_FACTORIES)


# A parser is made per request: canonical names skip the normalisation.
def reasoning_format(name: str) -> reasoning.ReasoningFormat:
    fmt = reasoning.FORMATS.get(name) if type(name) is str else None
    return fmt if fmt is not None else reasoning.FORMATS[_canonical(name, reasoning.FORMATS)]


def tool_parser_factory(name: str) -> Callable[..., tools.ToolParser]:
    factory = _TOOL_FACTORIES.get(name) if type(name) is str else None
    return factory if factory is not None else _TOOL_FACTORIES[_canonical(name, _TOOL_FACTORIES)]


def parser_for_model(model: str, reasoning_parser: str | None = None,
                     tool_parser: str | None = None) -> tuple[str | None, str | None]:
    """``(reasoning parser, tool parser)`` names for a model id; explicit names win."""
    found: tuple[str | None, str | None] = (None, None)
    lowered = (model or "").lower()
    for pattern, r, t in MODEL_TABLE:
        if fnmatch.fnmatchcase(lowered, pattern):
            found = (r, t)
            break
    r = _canonical(reasoning_parser, reasoning.FORMATS) if reasoning_parser else found[0]
    t = _canonical(tool_parser, _TOOL_FACTORIES) if tool_parser else found[1]
    return r, t
