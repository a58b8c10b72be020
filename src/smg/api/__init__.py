"""API front ends: one module per API, each mapping its requests onto the pipeline's stages and the
stages' output onto its own shapes, and contributing its HTTP routes (see :mod:`smg.api.base`)."""
from __future__ import annotations

from smg.api import openai_chat, openai_completions, service
from smg.api.base import Handler

FRONTENDS = (openai_chat, openai_completions, service)


def routes() -> dict[tuple[str, str], Handler]:
    """``(method, path) -> handler`` of every front end."""
    table: dict[tuple[str, str], Handler] = {}
    for module in FRONTENDS:
        table.update(module.ROUTES)
    return table
