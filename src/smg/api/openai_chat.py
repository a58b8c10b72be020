"""Front end: OpenAI Chat Completions (``POST /v1/chat/completions``).

Maps a ``ChatCompletionRequest`` onto the ``prepare`` stage, and the ``choice`` stage's pieces onto
``ChatCompletion`` / ``ChatCompletionChunk``; a plain stream takes the compiled fast path with this
module's chunk shapes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, AsyncIterator

from smg.api.base import HttpRequest, Reply, StreamReply, generation_reply
from smg.api.openai_common import OpenAIShapes, usage, usage_wanted
from smg.pipeline import plain
from smg.pipeline.choice import Choice
from smg.pipeline.prepare import (ChatSpec, Prepared, output_constraint, prepare_chat, request_ids,
                                  template_kwargs)
from smg.pipeline.run import collect, run
from smg.protocols import openai as oa

if TYPE_CHECKING:
    from smg.gateway import Gateway


async def prepare(gw: "Gateway", request, request_id: str | None,
                  routing_key: str | None = None) -> tuple[oa.ChatCompletionRequest, Prepared]:
    gw.require_started()
    r = oa.decode_request(request, oa.ChatCompletionRequest)
    served, lora = gw.models.resolve(r.model)
    chat = ChatSpec(messages=r.messages, sampling=r, model=r.model,
                    tools=[oa.to_dict(t) for t in r.tools] if r.tools else None, tool_choice=r.tool_choice,
                    parallel_tool_calls=r.parallel_tool_calls,
                    template_kwargs=template_kwargs(r.chat_template_kwargs, r.reasoning_effort),
                    own_template=r.chat_template, add_generation_prompt=r.add_generation_prompt,
                    separate_reasoning=r.separate_reasoning, constraint=output_constraint(r), logprobs=r.logprobs,
                    top_logprobs=r.top_logprobs or 0, user=r.user)
    p = await prepare_chat(served, chat, request_ids("chatcmpl", request_id, routing_key), lora, gw.template_limits)
    return r, p


def _reasoning_tokens(p: Prepared, choices) -> int | None:
    return sum(c.reasoning_tokens for c in choices) if p.reasoning is not None else None


async def chat(gw: "Gateway", request, request_id: str | None = None,
               routing_key: str | None = None) -> oa.ChatCompletion:
    r, p = await prepare(gw, request, request_id, routing_key)
    choices, cached = await collect(p, gw.metrics)
    result = []
    for c in choices:
        calls = [oa.ToolCallOut(id=v[0], function=oa.FunctionCall(name=v[1], arguments=v[2]))
                 for _, v in sorted(c.calls.items())] or None
        message = oa.ChatMessageOut(role="assistant", content="".join(c.content) if (c.content or not calls) else None,
                                    reasoning_content="".join(c.reasoning_text) or None, tool_calls=calls)
        result.append(oa.ChatChoice(index=c.index, message=message, finish_reason=c.openai_finish_reason,
                                    logprobs=oa.ChoiceLogprobs(content=c.logprobs) if c.logprobs is not None
                                    else None, matched_stop=c.matched))
    gw.metrics.inc("smg_requests_total", route="chat", stream="false")
    return oa.ChatCompletion(id=p.request_id, created=p.created, model=p.model, choices=result,
                             usage=usage(len(p.prompt_ids), sum(c.tokens for c in choices), cached,
                                         _reasoning_tokens(p, choices)))


def chunk(p: Prepared, choice: Choice, piece: tuple | None) -> oa.ChatCompletionChunk | None:
    """The chunk for one step of a choice: ``piece`` is what it released (None: nothing)."""
    delta = None
    if piece is not None:
        reasoning, content, calls = piece
        if reasoning or content or calls or not choice.role_sent:
            delta = oa.Delta(role=None if choice.role_sent else "assistant",
                             content=content if (content or not choice.role_sent) else None,
                             reasoning_content=reasoning or None, tool_calls=calls or None)
            choice.role_sent = True
    logprobs = None
    if choice.logprobs:
        logprobs = oa.ChoiceLogprobs(content=choice.logprobs)
        choice.logprobs = []
    if choice.finished:
        return oa.ChatCompletionChunk(id=p.request_id, created=p.created, model=p.model, choices=[
            oa.ChunkChoice(index=choice.index, delta=delta or oa.Delta(), logprobs=logprobs,
                           finish_reason=choice.openai_finish_reason, matched_stop=choice.matched)])
    if delta is not None or logprobs is not None:
        return oa.ChatCompletionChunk(id=p.request_id, created=p.created, model=p.model, choices=[
            oa.ChunkChoice(index=choice.index, delta=delta or oa.Delta(), logprobs=logprobs)])
    return None


async def chunks(gw: "Gateway", r: oa.ChatCompletionRequest, p: Prepared) -> AsyncIterator[oa.ChatCompletionChunk]:
    """The general pipeline's chunks (any request)."""
    cached = 0
    tokens = 0
    finished = []
    async for choice, out, piece in run(p, gw.metrics):
        cached = max(cached, out.cached_tokens)
        c = chunk(p, choice, piece)
        if choice.finished:
            tokens += choice.tokens
            finished.append(choice)
        if c is not None:
            yield c
    if usage_wanted(r):
        yield oa.ChatCompletionChunk(id=p.request_id, created=p.created, model=p.model, choices=[],
                                     usage=usage(len(p.prompt_ids), tokens, cached, _reasoning_tokens(p, finished)))


class _Shapes(OpenAIShapes):
    """This API's chunks for ``plain.stream``."""

    role_first = True
    chunk_type = oa.ChatCompletionChunk
    __slots__ = ()

    def general(self) -> AsyncIterator[oa.ChatCompletionChunk]:
        return chunks(self.gw, self.r, self.p)

    def chunk_of(self, choice, piece):
        return chunk(self.p, choice, piece)

    def text_chunk(self, text: str) -> oa.ChatCompletionChunk:
        return oa.ChatCompletionChunk(id=self._id, created=self._created, model=self._model,
                                      choices=[oa.ChunkChoice(index=0, delta=oa.Delta(content=text))])


def stream(gw: "Gateway", request, sse: bool, sink=None, request_id: str | None = None,
           routing_key: str | None = None) -> AsyncIterator:
    """A streamed chat's chunks, or with ``sse`` their events' bytes (see ``Gateway.chat_sse``)."""
    async def start() -> _Shapes:
        r, p = await prepare(gw, request, request_id, routing_key)
        gw.metrics.inc("smg_requests_total", route="chat", stream="true")
        return _Shapes(gw, r, p, p.plain)

    return plain.stream(start, gw.metrics, sse, sink)


async def _route(gw: "Gateway", http: HttpRequest) -> Reply | StreamReply:
    return await generation_reply(http, oa.ChatCompletionRequest, gw.chat, gw.chat_sse)


ROUTES = {("POST", "/v1/chat/completions"): _route}
