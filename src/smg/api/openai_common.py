"""What the two OpenAI front ends (chat, completions) share: usage and the plain path's shapes."""
from __future__ import annotations

from typing import TYPE_CHECKING

from smg.pipeline.choice import Choice
from smg.pipeline.plain import SSE_DONE, PlainPump, event, sse_templates
from smg.pipeline.prepare import Prepared
from smg.protocols import openai as oa

if TYPE_CHECKING:
    from smg.gateway import Gateway


def usage(prompt: int, completion: int, cached: int, reasoning: int | None = None) -> oa.Usage:
    """OpenAI's usage (``reasoning``: the reasoning tokens, when a reasoning parser ran)."""
    return oa.Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                    prompt_tokens_details=oa.PromptTokensDetails(cached_tokens=cached),
                    completion_tokens_details=None if reasoning is None else oa.CompletionTokensDetails(
                        reasoning_tokens=reasoning))


def usage_wanted(r) -> bool:
    return bool(r.stream_options and r.stream_options.include_usage)


class OpenAIShapes:
    """An OpenAI front end's shapes for ``plain.stream``: its chunk type, whose last chunk of a
    stream may be a usage chunk. Subclasses give ``chunk_of``, ``text_chunk`` and ``general``."""

    chunk_type: type
    sse_done = SSE_DONE
    __slots__ = ("gw", "r", "p", "plain", "_id", "_created", "_model")

    def __init__(self, gw: "Gateway", r, p: Prepared, plain: bool) -> None:
        self.gw, self.r, self.p = gw, r, p
        self.plain = p if plain else None
        self._id, self._created, self._model = p.request_id, p.created, p.model

    def sse_event(self, chunk) -> bytes:
        return event(chunk)

    def sse_pump(self, choice: Choice):
        pump = PlainPump(choice.detok, choice.stop, *sse_templates(self.chunk_of))
        return pump, pump.feed

    async def sse_end(self, choice: Choice, piece: tuple, cached: int) -> bytes:
        return b"".join([*map(event, self.end_chunks(choice, piece, cached)), SSE_DONE])

    def end_chunks(self, choice: Choice, piece: tuple, cached: int) -> list:
        out = [self.chunk_of(choice, piece)]
        if usage_wanted(self.r):
            out.append(self.chunk_type(id=self._id, created=self._created, model=self._model, choices=[],
                                       usage=usage(len(self.p.prompt_ids), choice.tokens, cached)))
        return out
