"""Parser names: the aliases engines use for them, and their canonical form.

Imported by the reasoning and tool modules (whose format tables hold the names) and by the
model-name table (:mod:`smg.parsers.registry`), which imports those modules: no import cycle.
"""
from __future__ import annotations

from typing import Container

from smg.errors import InvalidRequest

ALIASES = {"json": "llama3_json", "llama3": "llama3_json", "qwen": "hermes", "qwen25": "hermes",
           "deepseek_v3_1": "deepseek_v31", "deepseek_v3_2": "deepseek_v32", "glm4_moe": "glm45",
           "harmony": "gpt_oss", "llama4": "pythonic", "magistral": "mistral", "deepseek_r1_0528": "deepseek_r1",
           "deepseekv4": "deepseek_v4", "kimi_k25": "kimi_k2", "kimik2": "kimi_k2",
           "glm5": "glm47", "glm47_moe": "glm47", "glm45_moe": "glm45", "nano_v3": "nemotron",
           "qwen_xml": "qwen3_coder", "qwen3_xml": "qwen3_coder", "olmo3_pythonic": "olmo3", "function_gemma": "functiongemma",
           "base": "think"}


def canonical(name: str, known: Container[str]) -> str:
    """``name`` as its table spells it (case, ``-``/``_`` and aliases normalised); an
    InvalidRequest naming the known ones when it is not one of them."""
    if not isinstance(name, str):
        raise InvalidRequest(f"parser name must be a str, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in known:
        raise InvalidRequest(f"unknown parser {name!r}; known: {', '.join(sorted(known))}")
    return key
