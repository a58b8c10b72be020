"""Parser names and the model-id table that picks them.

``parser_for_model("deepseek-ai/DeepSeek-R1-0528")`` -> ``("deepseek_r1", "deepseek_v3")``: the
first glob (case-insensitive) that matches the model id wins; explicit names override either half.
"""
from __future__ import annotations

import fnmatch

from smg.parsers import reasoning, tools
from smg.parsers.names import canonical

# (model glob, reasoning parser, tool parser); the first match wins, so specific globs come first.
MODEL_TABLE: tuple[tuple[str, str | None, str | None], ...] = (
    ("*qwen3*coder*", None, "qwen3_coder"),
    ("*qwen3*thinking*", "qwen3_thinking", "hermes"),
    ("*qwen3*", "qwen3", "hermes"),
    ("*qwq*", "deepseek_r1", "hermes"),
    ("*qwen2.5*", None, "hermes"),
    ("*deepseek-r1*", "deepseek_r1", "deepseek_v3"),
    ("*deepseek-v4*", "deepseek_v31", "deepseek_v4"),
    ("*deepseek-v3.2*", "deepseek_v31", "deepseek_v32"),
    ("*deepseek-v3.1*", "deepseek_v31", "deepseek_v31"),
    ("*deepseek-v3*", None, "deepseek_v3"),
    ("*glm-5*", "glm45", "glm47"),
    ("*glm-4.7*", "glm45", "glm47"),
    ("*glm-4.[56]*", "glm45", "glm45"),
    ("*kimi-k3*", "kimi_k3", "kimi_k3"),
    ("*kimi_k3*", "kimi_k3", "kimi_k3"),
    ("*kimi-k2*thinking*", "kimi_thinking", "kimi_k2"),
    ("*kimi-k2*", "kimi_k2", "kimi_k2"),  # K2 and K2.5
    ("*kimi-vl*", "kimi", None),
    ("*minimax-m3*", "minimax_m3", "minimax_m3"),
    ("*minimax-m2*", "minimax", "minimax_m2"),  # M2 and M2.5
    ("*step3*", "step3", "step3"),
    ("*step-3*", "step3", "step3"),
    ("*gpt-oss*", "gpt_oss", "gpt_oss"),
    ("*command-a-reasoning*", "cohere", "cohere"),
    ("*command*", None, "cohere"),
    ("*nemotron-3*", "nemotron", "qwen3_coder"),
    ("*nemotron*", "nemotron", None),
    ("*functiongemma*", None, "functiongemma"),
    ("*gemma-4*", "gemma4", "gemma4"),
    ("*olmo-3*", "think", "olmo3"),
    ("*xlam*", None, "xlam"),
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


def reasoning_parser_names() -> list[str]:
    return sorted(reasoning.FORMATS)


def tool_parser_names() -> list[str]:
    return sorted(tools.FACTORIES)


def parser_for_model(model: str, reasoning_parser: str | None = None,
                     tool_parser: str | None = None) -> tuple[str | None, str | None]:
    """``(reasoning parser, tool parser)`` names for a model id; explicit names win."""
    found: tuple[str | None, str | None] = (None, None)
    lowered = (model or "").lower()
    for pattern, r, t in MODEL_TABLE:
        if fnmatch.fnmatchcase(lowered, pattern):
            found = (r, t)
            break
    r = canonical(reasoning_parser, reasoning.FORMATS) if reasoning_parser else found[0]
    t = canonical(tool_parser, tools.FACTORIES) if tool_parser else found[1]
    return r, t
