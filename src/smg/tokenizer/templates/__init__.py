"""Chat templates written for this project in real model formats (the shipped tokenizers carry none)."""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).parent

#: name -> file of the template in this folder
TEMPLATES = {"llama3": "llama3.jinja", "chatml_qwen3": "chatml_qwen3.jinja", "deepseek_v3": "deepseek_v3.jinja"}


def template_path(name: str) -> Path:
    """Path of the bundled template ``name`` (one of ``TEMPLATES``)."""
    if name not in TEMPLATES:
        raise KeyError(f"unknown bundled chat template {name!r}; known: {sorted(TEMPLATES)}")
    return _HERE / TEMPLATES[name]


def resolve_template(template: str | None) -> str | None:
    """A bundled template's name (``llama3``, ...) as its file; anything else as given."""
    return str(template_path(template)) if template in TEMPLATES else template
