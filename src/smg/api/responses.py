"""Front end: the OpenAI Responses API (``/v1/responses``) and Conversations (``/v1/conversations``).

A request's input items (with the stored context of ``previous_response_id`` or ``conversation``
in front) become a :class:`~smg.pipeline.prepare.ChatSpec`; the ``run`` stage drives the engine,
and the ``blocks`` stage turns each choice's pieces into output items (reasoning, message,
function_call) in the order the model produced them. Streamed and non-streamed answers come from
the same :class:`_Run`, so a stream's events assemble into exactly the non-streamed response.
Responses are stored (``store``, default true) with their input items in ``gw.storage``; a
response that fails is stored as failed, never half-written.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator

import msgspec

from smg.api.base import (BlockStreamShapes, ErrorShape, HttpRequest, Reply, StreamReply, generation_reply,
                          json_reply)
from smg.errors import (ContextLengthExceeded, InvalidRequest, NotFound, RequestAborted, SmgError,
                        UnsupportedFeature)
from smg.pipeline import plain
from smg.pipeline.blocks import DELTA, REASONING, START, TEXT, TOOL_CALL, Block, BlockRun
from smg.pipeline.plain import Sink
from smg.pipeline.prepare import ChatSpec, Prepared, prepare_chat, request_ids, template_kwargs, thinking_kwargs
from smg.protocols import openai as oa
from smg.protocols import responses as rp
from smg.storage import Conversation, StoredResponse

if TYPE_CHECKING:
    from smg.gateway import Gateway

log = logging.getLogger("smg.responses")
_encode = msgspec.json.encode
INCLUDES = frozenset({"reasoning.encrypted_content"})  # accepted: reasoning items carry their text instead
_ITEM_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}
_BLOCK_ITEM = {REASONING: "reasoning", TEXT: "message", TOOL_CALL: "function_call"}  # block kind -> item type
_DELTA_EVENT = {REASONING: "response.reasoning_text.delta", TEXT: "response.output_text.delta",
                TOOL_CALL: "response.function_call_arguments.delta"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _found(value, kind: str, object_id: str):
    """``value``, or a 404 naming what was not found (OpenAI's message)."""
    if value is None or value is False:
        raise NotFound(f"{kind} with id '{object_id}' not found.")
    return value


class ResponsesErrors(ErrorShape):
    """OpenAI's error body; a failed stream ends with an ``error`` event."""

    __slots__ = ()

    def event(self, error: SmgError) -> bytes:
        body = {"type": "error", "code": error.code or error.error_type, "message": error.message, "param": None,
                "sequence_number": 0}
        return b"event: error\ndata: " + _encode(body) + b"\n\n"


ERRORS = ResponsesErrors()


# ---- input items -> chat messages ----------------------------------------------------------------

def input_items(value: str | list | None, where: str = "input") -> list[dict]:
    """A request's ``input`` as items, each with an ``id`` (kept when given)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"id": new_id("msg"), "type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": value}]}]
    items = []
    for i, raw in enumerate(value):
        if not isinstance(raw, dict):
            raise InvalidRequest(f"{where}[{i}] must be an object")
        item = dict(raw)
        kind = item.setdefault("type", "message")
        if kind not in _ITEM_PREFIX:
            raise UnsupportedFeature(f"{where}[{i}]: item type {kind!r} is not supported (message, function_call, "
                                     f"function_call_output and reasoning are)")
        if kind == "message":
            if item.get("role") not in ("user", "assistant", "system", "developer"):
                raise InvalidRequest(f"{where}[{i}].role must be user, assistant, system or developer")
            if not isinstance(item.get("content"), (str, list)):
                raise InvalidRequest(f"{where}[{i}].content must be a string or a list of parts")
        elif kind == "function_call":
            if not isinstance(item.get("call_id"), str) or not isinstance(item.get("name"), str) or \
                    not isinstance(item.get("arguments"), str):
                raise InvalidRequest(f"{where}[{i}]: a function_call needs call_id, name and arguments (strings)")
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str) or "output" not in item:
                raise InvalidRequest(f"{where}[{i}]: a function_call_output needs call_id and output")
        item.setdefault("id", new_id(_ITEM_PREFIX[kind]))
        items.append(item)
    return items


def _parts(content: str | list, where: str) -> str | list:
    """A message's content as chat content: text parts joined, images as ``image_url`` parts."""
    if isinstance(content, str):
        return content
    parts, images = [], False
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal", "")})
        elif kind == "input_image":
            if not isinstance(part.get("image_url"), str):
                raise UnsupportedFeature(f"{where}[{j}]: input_image needs image_url (file_id is not supported)")
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"],
                                                             "detail": part.get("detail", "auto")}})
            images = True
        else:
            raise UnsupportedFeature(f"{where}[{j}]: content type {kind!r} is not supported")
    return parts if images else "".join(p["text"] for p in parts)


def _reasoning_text(item: dict) -> str:
    parts = item.get("content") or item.get("summary") or []
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict))


def chat_messages(items: list[dict], instructions: str | None) -> list[dict]:
    """Items (context and input, in order) as chat messages: consecutive function calls join one
    assistant message, a reasoning item goes with the assistant turn that follows it, and every
    function_call_output must answer an earlier function_call."""
    messages: list[dict] = [{"role": "system", "content": instructions}] if instructions else []
    calls: set[str] = set()
    reasoning = ""
    for i, item in enumerate(items):
        kind = item["type"]
        if kind == "reasoning":
            reasoning += _reasoning_text(item)
            continue
        if kind == "function_call_output":
            if item["call_id"] not in calls:
                raise InvalidRequest(f"input item {i}: function_call_output for call_id {item['call_id']!r} "
                                     f"answers no function_call before it")
            output = item["output"]
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": output if isinstance(output, str) else _parts(output, f"items[{i}].output")})
            continue
        if kind == "function_call":
            calls.add(item["call_id"])
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not reasoning:
                last.setdefault("tool_calls", []).append(call)
                continue
            message = {"role": "assistant", "content": "", "tool_calls": [call]}
        else:
            message = {"role": item["role"], "content": _parts(item["content"], f"items[{i}].content")}
        if reasoning and message["role"] == "assistant":
            message["reasoning_content"] = reasoning
            reasoning = ""
        messages.append(message)
    return messages


def _tools(tools: list[dict] | None) -> list[dict] | None:
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise UnsupportedFeature(f"tools[{i}]: tool type {tool.get('type')!r} is not supported (function is)")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise InvalidRequest(f"tools[{i}] needs a name")
        out.append({"type": "function", "function": {k: tool[k] for k in ("name", "description", "parameters",
                                                                           "strict") if tool.get(k) is not None}})
    return out


def _tool_choice(choice, tools: list[dict] | None):
    if choice is None or choice in ("auto", "none", "required"):
        if choice == "required" and not tools:
            raise InvalidRequest("tool_choice 'required' needs tools")
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        if name not in {t["function"]["name"] for t in tools or ()}:
            raise InvalidRequest(f"tool_choice names a function not in tools: {name!r}")
        return {"type": "function", "function": {"name": name}}
    raise UnsupportedFeature(f"tool_choice {choice!r} is not supported ('auto', 'none', 'required' or a function)")


def _constraint(text: rp.TextConfig | None) -> tuple[str, str] | None:
    fmt = text.format if text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ("json_object", "")
    if fmt.schema is None:
        raise InvalidRequest("text.format json_schema needs schema")
    return ("json_schema", json.dumps(fmt.schema))


def _template_kwargs(r: rp.ResponsesRequest) -> dict:
    effort = r.reasoning.effort if r.reasoning is not None else None
    kwargs = template_kwargs(None, None if effort in (None, "none") else effort)
    if effort is not None:  # reasoning.effort turns the templates' thinking on, or (none) off
        kwargs.update(thinking_kwargs(effort != "none"))
    return kwargs


# ---- the run: events and the response object -------------------------------------------------------

def _usage(prompt: int, output: int, cached: int, reasoning: int) -> dict:
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached}, "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": prompt + output}


def _item(block: Block, item_id: str, done: bool) -> dict:
    status = "completed" if done else "in_progress"
    text = block.text if done else ""
    if block.kind == REASONING:
        return {"id": item_id, "type": "reasoning", "summary": [], "status": status,
                "content": [{"type": "reasoning_text", "text": text}] if done else []}
    if block.kind == TEXT:
        return {"id": item_id, "type": "message", "role": "assistant", "status": status,
                "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if done else []}
    return {"id": item_id, "type": "function_call", "call_id": block.call_id, "name": block.name,
            "arguments": text, "status": status}


class _Run:
    """One response: its events (``sse``: as SSE bytes) and, when done, its response object."""

    def __init__(self, gw: "Gateway", r: rp.ResponsesRequest, p: Prepared, base: dict, sse: bool) -> None:
        self.gw, self.r, self.p, self.base, self.sse = gw, r, p, base, sse
        self.seq = 0
        self.output: list[dict] = []
        self.ids: dict[int, str] = {}  # block index -> item id
        self.prefixes: dict[int, bytes] = {}  # block index -> its delta events' bytes up to the text
        self.response = dict(base)
        self.error: SmgError | None = None  # why the response failed

    def event(self, kind: str, **fields) -> bytes | None:
        if not self.sse:
            return None
        fields["type"] = kind
        fields["sequence_number"] = self.seq
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + _encode(fields) + b"\n\n"

    def delta(self, block: Block, text: str) -> bytes | None:
        if not self.sse:
            return None
        prefix = self.prefixes.get(block.index)
        if prefix is None:
            kind = _DELTA_EVENT[block.kind]
            fields = {"type": kind, "item_id": self.ids[block.index], "output_index": block.index}
            if block.kind != TOOL_CALL:
                fields["content_index"] = 0
            if block.kind == TEXT:
                fields["logprobs"] = []
            prefix = self.prefixes[block.index] = (b"event: " + kind.encode() + b"\ndata: " + _encode(fields)[:-1]
                                                   + b',"delta":')
        seq = self.seq
        self.seq += 1
        return prefix + _encode(text) + b',"sequence_number":%d}\n\n' % seq

    def block_events(self, events: list) -> list:
        out = []
        for event in events:
            block = event[1]
            if event[0] == DELTA:
                out.append(self.delta(block, event[2]))
            elif event[0] == START:
                item_id = self.ids[block.index] = new_id(_ITEM_PREFIX[_BLOCK_ITEM[block.kind]])
                out.append(self.event("response.output_item.added", output_index=block.index,
                                      item=_item(block, item_id, False)))
                if block.kind == TEXT:
                    out.append(self.event("response.content_part.added", item_id=item_id, output_index=block.index,
                                          content_index=0, part={"type": "output_text", "text": "",
                                                                 "annotations": [], "logprobs": []}))
                elif block.kind == REASONING:
                    out.append(self.event("response.content_part.added", item_id=item_id, output_index=block.index,
                                          content_index=0, part={"type": "reasoning_text", "text": ""}))
            else:
                item = _item(block, self.ids[block.index], True)
                self.output.append(item)
                where = {"item_id": item["id"], "output_index": block.index}
                if block.kind == TEXT:
                    out.append(self.event("response.output_text.done", **where, content_index=0, text=block.text,
                                          logprobs=[]))
                    out.append(self.event("response.content_part.done", **where, content_index=0,
                                          part=item["content"][0]))
                elif block.kind == REASONING:
                    out.append(self.event("response.reasoning_text.done", **where, content_index=0, text=block.text))
                    out.append(self.event("response.content_part.done", **where, content_index=0,
                                          part=item["content"][0]))
                else:
                    out.append(self.event("response.function_call_arguments.done", **where, name=block.name,
                                          arguments=block.text))
                out.append(self.event("response.output_item.done", output_index=block.index, item=item))
        return out

    def head_events(self) -> list:
        started = dict(self.base, status="in_progress")
        return [self.event("response.created", response=started), self.event("response.in_progress", response=started)]

    def finish(self, choice, cached: int) -> bytes | None:
        """The last event of a response that ran to its end; ``self.response`` is set."""
        finish = choice.finish_reason if choice is not None else "abort"
        incomplete = finish in ("length", "abort")
        self.response = dict(self.base, status="incomplete" if incomplete else "completed", output=self.output,
                             usage=_usage(len(self.p.prompt_ids), choice.tokens if choice is not None else 0,
                                          cached, choice.reasoning_tokens if choice is not None else 0),
                             incomplete_details={"reason": "max_output_tokens" if finish == "length"
                                                 else "engine_aborted"} if incomplete else None)
        return self.event("response.incomplete" if incomplete else "response.completed", response=self.response)

    def fail(self, error: SmgError, status: str = "failed") -> bytes | None:
        """The last event of a response that failed (``self.response`` is set)."""
        self.error = error
        self.response = dict(self.base, status=status, output=self.output,
                             error={"code": error.code or error.error_type, "message": error.message})
        return self.event("response.failed", response=self.response)

    async def events(self) -> AsyncIterator[bytes | None]:
        """The general pipeline's events; ``self.response`` is the final response object once it
        ends. An engine failure after the start ends it as ``failed``."""
        for event in self.head_events():
            yield event
        steps = BlockRun(self.p, self.gw.metrics)
        try:
            async for events in steps.steps():
                for event in self.block_events(events):
                    yield event
        except (SmgError, asyncio.CancelledError) as exc:
            for event in self.block_events(steps.blocks.finish()):  # what was produced stays, closed
                yield event
            if isinstance(exc, asyncio.CancelledError):
                self.fail(RequestAborted("the response was cancelled"), "cancelled")
                raise
            yield self.fail(exc)
            return
        yield self.finish(steps.choice, steps.cached)


# ---- requests ------------------------------------------------------------------------------------

class _Request:
    """A decoded request with its context, prepared: what storing the response needs."""

    def __init__(self, r: rp.ResponsesRequest, p: Prepared, items: list[dict], conversation_id: str | None,
                 base: dict) -> None:
        self.r, self.p, self.items, self.conversation_id, self.base = r, p, items, conversation_id, base


def _conversation_id(r: rp.ResponsesRequest) -> str | None:
    if r.conversation is None:
        return None
    return r.conversation if isinstance(r.conversation, str) else r.conversation.id


async def _context(gw: "Gateway", r: rp.ResponsesRequest) -> list[dict]:
    """The stored items in front of this request's input: the previous responses' inputs and
    outputs, in order, or the conversation's items."""
    if r.previous_response_id is not None:
        chain = await gw.storage.response_chain(r.previous_response_id)
        _found(chain or None, "Previous response", r.previous_response_id)
        items: list[dict] = []
        for stored in chain:
            items += stored.input
            items += stored.body.get("output", [])
        return items
    conversation_id = _conversation_id(r)
    if conversation_id is not None:
        return _found(await gw.storage.list_items(conversation_id), "Conversation", conversation_id).items
    return []


def _check(r: rp.ResponsesRequest) -> oa.SamplingFields:
    """The request's sampling fields, once the request is checked."""
    sampling = oa.SamplingFields(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                 max_tokens=r.max_output_tokens)
    oa.validate_sampling(sampling)
    if r.previous_response_id is not None and r.conversation is not None:
        raise InvalidRequest("give previous_response_id or conversation, not both")
    if r.background and not r.store:
        raise InvalidRequest("background responses must be stored (store: true)")
    if r.background and r.stream:
        raise UnsupportedFeature("background streaming is not supported: poll GET /v1/responses/{id}")
    if r.top_logprobs:
        raise UnsupportedFeature("top_logprobs is not supported on /v1/responses")
    unknown = set(r.include or ()) - INCLUDES
    if unknown:
        raise UnsupportedFeature(f"include values not supported: {sorted(unknown)}")
    if r.input is None and r.previous_response_id is None and r.conversation is None:
        raise InvalidRequest("input is required")
    return sampling


async def prepare(gw: "Gateway", request, request_id: str | None, routing_key: str | None) -> _Request:
    gw.require_started()
    r = oa.decode_request(request, rp.ResponsesRequest)
    sampling = _check(r)
    served, lora = gw.models.resolve(r.model)
    items = input_items(r.input)
    tools = _tools(r.tools)
    history = await _context(gw, r)
    ids = request_ids("resp", request_id, routing_key or r.prompt_cache_key, separator="_")
    while True:
        chat = ChatSpec(messages=chat_messages(history + items, r.instructions), sampling=sampling, model=r.model,
                        tools=tools, tool_choice=_tool_choice(r.tool_choice, tools),
                        parallel_tool_calls=r.parallel_tool_calls, template_kwargs=_template_kwargs(r),
                        constraint=_constraint(r.text), user=r.user)
        try:
            p = await prepare_chat(served, chat, ids, lora, gw.template_limits)
            break
        except ContextLengthExceeded:
            if r.truncation != "auto" or not history:
                raise
            history = _drop_oldest_turn(history)
    conversation_id = _conversation_id(r)
    base = {"id": p.request_id, "object": "response", "created_at": p.created, "status": "in_progress",
            "model": p.model, "output": [], "error": None, "incomplete_details": None,
            "instructions": r.instructions, "metadata": r.metadata or {}, "parallel_tool_calls": r.parallel_tool_calls,
            "temperature": r.temperature, "top_p": r.top_p, "max_output_tokens": r.max_output_tokens,
            "tool_choice": r.tool_choice if r.tool_choice is not None else "auto", "tools": r.tools or [],
            "text": oa.to_dict(r.text) if r.text is not None else {"format": {"type": "text"}},
            "reasoning": oa.to_dict(r.reasoning) if r.reasoning is not None else None,
            "previous_response_id": r.previous_response_id, "store": r.store, "background": r.background,
            "truncation": r.truncation, "user": r.user,
            "conversation": {"id": conversation_id} if conversation_id else None, "usage": None}
    return _Request(r, p, items, conversation_id, base)


def _drop_oldest_turn(history: list[dict]) -> list[dict]:
    """The history without its oldest turn (up to the next user message), so no tool result is
    left without its call."""
    for i in range(1, len(history)):
        item = history[i]
        if item["type"] == "message" and item.get("role") == "user":
            return history[i:]
    return []


async def _store(gw: "Gateway", q: _Request, response: dict) -> None:
    if not q.r.store:
        return
    stored = StoredResponse(id=response["id"], created_at=response["created_at"], body=response, input=q.items,
                            previous_response_id=q.r.previous_response_id, conversation_id=q.conversation_id)
    # a conversation takes a turn that finished (completed, or incomplete at max_output_tokens)
    finished = response["status"] in ("completed", "incomplete")
    appended = q.items + response["output"] if q.conversation_id and finished else []
    await gw.storage.put_response(stored, appended)


async def create(gw: "Gateway", request, request_id: str | None = None, routing_key: str | None = None) -> dict:
    """A response, non-streaming (``background``: stored as queued and run in a task)."""
    q = await prepare(gw, request, request_id, routing_key)
    gw.metrics.inc("smg_requests_total", route="responses", stream="false")
    if q.r.background:
        queued = dict(q.base, status="queued")
        await _store(gw, q, queued)
        gw.background.start(queued["id"], _background(gw, q))
        return queued
    job = _Run(gw, q.r, q.p, q.base, sse=False)
    async for _ in job.events():
        pass
    await _store(gw, q, job.response)
    if job.error is not None:  # stored as failed; the caller gets the error
        raise job.error
    return job.response


async def _background(gw: "Gateway", q: _Request) -> None:
    job = _Run(gw, q.r, q.p, q.base, sse=False)
    try:
        await _store(gw, q, dict(q.base, status="in_progress"))  # GET shows it running
        async for _ in job.events():
            pass
    except asyncio.CancelledError:
        if job.response.get("status") != "cancelled":  # (cancelled before the engine stream began)
            job.fail(RequestAborted("the response was cancelled"), "cancelled")
        await _store(gw, q, job.response)  # status cancelled, the output so far
        raise
    await _store(gw, q, job.response)


class _Shapes(BlockStreamShapes):
    """A streamed response for ``plain.stream``: a plain one's text as one message item."""

    def __init__(self, gw: "Gateway", q: _Request) -> None:
        super().__init__(q.p if q.p.plain else None, _Run(gw, q.r, q.p, q.base, sse=True))
        self.gw, self.q = gw, q

    async def end(self, choice, cached: int, text: str | None) -> bytes:
        events = self.close_text(text) if text is not None else []
        events.append(self.job.finish(choice, cached))
        await _store(self.gw, self.q, self.job.response)  # before the last event: stored is what it says
        return b"".join(events)

    async def failed(self, error: SmgError) -> bytes:
        """A plain stream that failed after its first event: the text so far, then ``response.failed``."""
        events = self.close_text("".join(self.texts)) if self.opened else []
        events.append(self.job.fail(error))
        await _store(self.gw, self.q, self.job.response)
        return b"".join(events)

    async def general(self) -> AsyncIterator[bytes]:
        pending = None
        async for event in self.job.events():
            if event is None:
                continue
            if pending is not None:
                yield pending
            pending = event
        await _store(self.gw, self.q, self.job.response)  # before the final event
        yield pending


def stream(gw: "Gateway", request, request_id: str | None = None, routing_key: str | None = None,
           sink: Sink | None = None) -> AsyncIterator[bytes]:
    """A streamed response's SSE events; the response is stored before its last event. A plain
    response (no parsers) streams through the compiled pump (``plain.stream``; ``sink`` as for
    ``Gateway.chat_sse``)."""
    shapes: _Shapes | None = None

    async def start() -> _Shapes:
        nonlocal shapes
        q = await prepare(gw, request, request_id, routing_key)
        gw.metrics.inc("smg_requests_total", route="responses", stream="true")
        shapes = _Shapes(gw, q)
        return shapes

    async def events() -> AsyncIterator[bytes]:
        try:
            async for event in plain.stream(start, gw.metrics, True, sink):
                yield event
        except SmgError as error:
            if shapes is None or shapes.plain is None or not shapes.opened:
                raise  # before the first event (an error reply), or the general path's own
            yield await shapes.failed(error)

    return events()


class BackgroundRuns:
    """The gateway's background responses in flight, by response id (cancelled at close)."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task] = {}

    def start(self, response_id: str, work) -> None:
        task = asyncio.ensure_future(work)
        self.tasks[response_id] = task
        task.add_done_callback(lambda t: self._done(response_id, t))

    def _done(self, response_id: str, task: asyncio.Task) -> None:
        self.tasks.pop(response_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background response %s: %s", response_id, task.exception())

    async def cancel(self, response_id: str) -> None:
        task = self.tasks.get(response_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        for response_id in list(self.tasks):
            await self.cancel(response_id)


# ---- routes --------------------------------------------------------------------------------------

async def _create(gw: "Gateway", http: HttpRequest) -> Reply | StreamReply:
    return await generation_reply(http, rp.ResponsesRequest, gw.responses, gw.responses_sse, ERRORS)


async def _stored(gw: "Gateway", response_id: str) -> StoredResponse:
    gw.require_started()
    return _found(await gw.storage.get_response(response_id), "Response", response_id)


async def _get(gw: "Gateway", http: HttpRequest) -> Reply:
    return json_reply((await _stored(gw, http.params["response_id"])).body)


async def _delete(gw: "Gateway", http: HttpRequest) -> Reply:
    response_id = http.params["response_id"]
    gw.require_started()
    await gw.background.cancel(response_id)
    _found(await gw.storage.delete_response(response_id), "Response", response_id)
    return json_reply({"id": response_id, "object": "response.deleted", "deleted": True})


async def _cancel(gw: "Gateway", http: HttpRequest) -> Reply:
    stored = await _stored(gw, http.params["response_id"])
    if not stored.body.get("background"):
        raise InvalidRequest("only background responses can be cancelled")
    await gw.background.cancel(stored.id)
    return json_reply((await _stored(gw, stored.id)).body)


def _page(items: list[dict], has_more: bool) -> dict:
    return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None, "has_more": has_more}


def _paging(http: HttpRequest, default_order: str) -> tuple[str | None, int, bool]:
    query = http.query_params()
    try:
        limit = int(query.get("limit", 20))
    except ValueError:
        raise InvalidRequest("limit must be an integer") from None
    if not 1 <= limit <= 100:
        raise InvalidRequest("limit must be in [1, 100]")
    order = query.get("order", default_order)
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'")
    return query.get("after"), limit, order == "desc"


async def _input_items(gw: "Gateway", http: HttpRequest) -> Reply:
    stored = await _stored(gw, http.params["response_id"])
    after, limit, descending = _paging(http, "desc")
    items = stored.input[::-1] if descending else list(stored.input)
    if after is not None:
        ids = [item["id"] for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    return json_reply(_page(items[:limit], len(items) > limit))


# ---- conversations -------------------------------------------------------------------------------

async def _conversation(gw: "Gateway", conversation_id: str) -> Conversation:
    gw.require_started()
    return _found(await gw.storage.get_conversation(conversation_id), "Conversation", conversation_id)


async def _create_conversation(gw: "Gateway", http: HttpRequest) -> Reply:
    gw.require_started()
    r = oa.decode_request(await http.read_body() or b"{}", rp.ConversationCreate)
    conversation = Conversation(id=new_id("conv"), created_at=int(time.time()), metadata=r.metadata or {})
    await gw.storage.create_conversation(conversation, input_items(r.items or [], "items"))
    return json_reply(conversation.body())


async def _get_conversation(gw: "Gateway", http: HttpRequest) -> Reply:
    return json_reply((await _conversation(gw, http.params["conversation_id"])).body())


async def _update_conversation(gw: "Gateway", http: HttpRequest) -> Reply:
    gw.require_started()
    r = oa.decode_request(await http.read_body(), rp.ConversationUpdate)
    conversation_id = http.params["conversation_id"]
    updated = await gw.storage.update_conversation(conversation_id, r.metadata)
    return json_reply(_found(updated, "Conversation", conversation_id).body())


async def _delete_conversation(gw: "Gateway", http: HttpRequest) -> Reply:
    gw.require_started()
    conversation_id = http.params["conversation_id"]
    _found(await gw.storage.delete_conversation(conversation_id), "Conversation", conversation_id)
    return json_reply({"id": conversation_id, "object": "conversation.deleted", "deleted": True})


async def _list_items(gw: "Gateway", http: HttpRequest) -> Reply:
    gw.require_started()
    after, limit, descending = _paging(http, "asc")
    conversation_id = http.params["conversation_id"]
    page = _found(await gw.storage.list_items(conversation_id, after, limit, descending), "Conversation",
                  conversation_id)
    return json_reply(_page(page.items, page.has_more))


async def _add_items(gw: "Gateway", http: HttpRequest) -> Reply:
    gw.require_started()
    r = oa.decode_request(await http.read_body(), rp.ItemsCreate)
    items = input_items(r.items, "items")
    conversation_id = http.params["conversation_id"]
    _found(await gw.storage.add_items(conversation_id, items), "Conversation", conversation_id)
    return json_reply(_page(items, False))


async def _get_item(gw: "Gateway", http: HttpRequest) -> Reply:
    await _conversation(gw, http.params["conversation_id"])
    item_id = http.params["item_id"]
    return json_reply(_found(await gw.storage.get_item(http.params["conversation_id"], item_id), "Item", item_id))


async def _delete_item(gw: "Gateway", http: HttpRequest) -> Reply:
    conversation = await _conversation(gw, http.params["conversation_id"])
    item_id = http.params["item_id"]
    _found(await gw.storage.delete_item(conversation.id, item_id), "Item", item_id)
    return json_reply(conversation.body())


ROUTES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/responses"): _create,
    ("GET", "/v1/responses/{response_id}"): _get,
    ("DELETE", "/v1/responses/{response_id}"): _delete,
    ("POST", "/v1/responses/{response_id}/cancel"): _cancel,
    ("GET", "/v1/responses/{response_id}/input_items"): _input_items,
    ("POST", "/v1/conversations"): _create_conversation,
    ("GET", "/v1/conversations/{conversation_id}"): _get_conversation,
    ("POST", "/v1/conversations/{conversation_id}"): _update_conversation,
    ("DELETE", "/v1/conversations/{conversation_id}"): _delete_conversation,
    ("GET", "/v1/conversations/{conversation_id}/items"): _list_items,
    ("POST", "/v1/conversations/{conversation_id}/items"): _add_items,
    ("GET", "/v1/conversations/{conversation_id}/items/{item_id}"): _get_item,
    ("DELETE", "/v1/conversations/{conversation_id}/items/{item_id}"): _delete_item,
}
