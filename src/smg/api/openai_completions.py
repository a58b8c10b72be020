"""Front end: OpenAI Completions (``POST /v1/completions``): prompts (strings or token ids) in,
``Completion`` objects out; several prompts run concurrently (one stream after another when
streamed)."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, AsyncIterator

from smg.api.base import HttpRequest, Reply, StreamReply, generation_reply
from smg.api.openai_common import OpenAIShapes, usage, usage_wanted
from smg.pipeline import plain
from smg.pipeline.choice import Choice
from smg.pipeline.prepare import Prepared, prepare_prompts, request_ids
from smg.pipeline.run import collect, run
from smg.protocols import openai as oa

if TYPE_CHECKING:
    from smg.gateway import Gateway


def prepare(gw: "Gateway", request, request_id: str | None,
            routing_key: str | None = None) -> tuple[oa.CompletionRequest, list[Prepared]]:
    gw.require_started()
    r = oa.decode_request(request, oa.CompletionRequest)
    served, lora = gw.models.resolve(r.model)
    return r, prepare_prompts(served, r, request_ids("cmpl", request_id, routing_key), lora)


def logprobs(entries: list[oa.TokenLogprobOut], offset: int) -> oa.CompletionLogprobs:
    offsets, position = [], offset
    for e in entries:
        offsets.append(position)
        position += len(e.token)
    return oa.CompletionLogprobs(tokens=[e.token for e in entries], token_logprobs=[e.logprob for e in entries],
                                 top_logprobs=[{t.token: t.logprob for t in e.top_logprobs} for e in entries],
                                 text_offset=offsets)


async def complete(gw: "Gateway", request, request_id: str | None = None,
                   routing_key: str | None = None) -> oa.Completion:
    r, prepared = prepare(gw, request, request_id, routing_key)
    results = await asyncio.gather(*(collect(p, gw.metrics) for p in prepared))
    out_choices, prompt_tokens, completion_tokens, cached_total = [], 0, 0, 0
    for k, (p, (choices, cached)) in enumerate(zip(prepared, results)):
        for c in choices:
            prefix = p.prompt_text if r.echo else ""
            out_choices.append(oa.CompletionChoice(
                index=k * r.n + c.index, text=prefix + "".join(c.content), finish_reason=c.finish_reason,
                matched_stop=c.matched,
                logprobs=logprobs(c.logprobs, len(prefix)) if c.logprobs is not None else None))
            completion_tokens += c.tokens
        prompt_tokens += len(p.prompt_ids)
        cached_total += cached
    gw.metrics.inc("smg_requests_total", route="completions", stream="false")
    first = prepared[0]
    return oa.Completion(id=first.request_id, created=first.created, model=first.model, choices=out_choices,
                         usage=usage(prompt_tokens, completion_tokens, cached_total))


def chunk(p: Prepared, base: int, choice: Choice, piece: tuple | None) -> oa.Completion | None:
    """The chunk for one step of a choice of prompt ``p`` (choice indexes from ``base``)."""
    text = piece[1] if piece else ""
    entries = None
    if choice.logprobs:
        entries = logprobs(choice.logprobs, 0)
        choice.logprobs = []
    if not (text or choice.finished or entries):
        return None
    return oa.Completion(id=p.request_id, created=p.created, model=p.model, choices=[
        oa.CompletionChoice(index=base + choice.index, text=text, logprobs=entries,
                            finish_reason=choice.finish_reason if choice.finished else None,
                            matched_stop=choice.matched if choice.finished else None)])


async def chunks(gw: "Gateway", r: oa.CompletionRequest, prepared: list[Prepared]) -> AsyncIterator[oa.Completion]:
    """The general pipeline's chunks: the prompts one after another."""
    prompt_tokens = completion_tokens = cached = 0
    first = prepared[0]
    for k, p in enumerate(prepared):
        if r.echo:
            for i in range(r.n):
                yield oa.Completion(id=p.request_id, created=p.created, model=p.model, choices=[
                    oa.CompletionChoice(index=k * r.n + i, text=p.prompt_text, finish_reason=None)])
        async for choice, out, piece in run(p, gw.metrics):
            cached = max(cached, out.cached_tokens)
            c = chunk(p, k * r.n, choice, piece)
            if c is not None:
                yield c
            if choice.finished:
                completion_tokens += choice.tokens
        prompt_tokens += len(p.prompt_ids)
    if usage_wanted(r):
        yield oa.Completion(id=first.request_id, created=first.created, model=first.model, choices=[],
                            usage=usage(prompt_tokens, completion_tokens, cached))


class _Shapes(OpenAIShapes):
    """This API's chunks for ``plain.stream`` (the first prompt's; one plain prompt takes it)."""

    role_first = False
    chunk_type = oa.Completion
    __slots__ = ("prepared",)

    def __init__(self, gw: "Gateway", r: oa.CompletionRequest, prepared: list[Prepared]) -> None:
        p = prepared[0]
        super().__init__(gw, r, p, len(prepared) == 1 and p.plain and not r.echo)
        self.prepared = prepared

    def general(self) -> AsyncIterator[oa.Completion]:
        return chunks(self.gw, self.r, self.prepared)

    def chunk_of(self, choice, piece):
        return chunk(self.p, 0, choice, piece)

    def text_chunk(self, text: str) -> oa.Completion:
        return oa.Completion(id=self._id, created=self._created, model=self._model,
                             choices=[oa.CompletionChoice(index=0, text=text, finish_reason=None)])


def stream(gw: "Gateway", request, sse: bool, sink=None, request_id: str | None = None,
           routing_key: str | None = None) -> AsyncIterator:
    """A streamed completion's chunks, or with ``sse`` their events' bytes (see ``Gateway.complete_sse``)."""
    async def start() -> _Shapes:
        r, prepared = prepare(gw, request, request_id, routing_key)
        gw.metrics.inc("smg_requests_total", route="completions", stream="true")
        return _Shapes(gw, r, prepared)

    return plain.stream(start, gw.metrics, sse, sink)


async def _route(gw: "Gateway", http: HttpRequest) -> Reply | StreamReply:
    return await generation_reply(http, oa.CompletionRequest, gw.complete, gw.complete_sse)


ROUTES = {("POST", "/v1/completions"): _route}
