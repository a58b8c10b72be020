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
from smg.api import responses_mcp as mcp_items
from smg.api.responses_mcp import McpCalls
from smg.pipeline import plain
from smg.pipeline.blocks import DELTA, REASONING, START, TEXT, TOOL_CALL, Block, BlockRun
from smg.pipeline.plain import Sink
from smg.pipeline.prepare import (ChatSpec, Prepared, RequestIds, prepare_chat, request_ids, template_kwargs,
                                  thinking_kwargs)
from smg.protocols import openai as oa
from smg.protocols import responses as rp
from smg.storage import Conversation, StoredResponse

if TYPE_CHECKING:
    from smg.gateway import Gateway
    from smg.mcp.tools import McpToolset

log = logging.getLogger("smg.responses")
_encode = msgspec.json.encode
INCLUDES = frozenset({"reasoning.encrypted_content"})  # accepted: reasoning items carry their text instead
_ITEM_PREFIX = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs",
                **mcp_items.ITEM_PREFIX}
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
                                     f"function_call_output, reasoning and the mcp_ items are)")
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
        elif kind in mcp_items.ITEM_PREFIX:
            mcp_items.check_item(item, f"{where}[{i}]")
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
    answers = {item["approval_request_id"]: item for item in items if item["type"] == "mcp_approval_response"}
    reasoning = ""
    for i, item in enumerate(items):
        kind = item["type"]
        if kind in mcp_items.ITEM_PREFIX:
            turn = mcp_items.call_messages(item, answers)
            if turn and reasoning:
                turn[0]["reasoning_content"] = reasoning
                reasoning = ""
            messages += turn
            continue
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


def _tools(tools: list[dict] | None) -> tuple[list[dict], list[tuple[int, dict]]]:
    """The request's function tools (as chat tools) and its ``mcp`` entries (with their index)."""
    functions, mcp = [], []
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, dict):
            raise InvalidRequest(f"tools[{i}] must be an object")
        if tool.get("type") == "mcp":
            mcp.append((i, tool))
            continue
        if tool.get("type") != "function":
            raise UnsupportedFeature(f"tools[{i}]: tool type {tool.get('type')!r} is not supported (function and "
                                     f"mcp are)")
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise InvalidRequest(f"tools[{i}] needs a name")
        functions.append({"type": "function", "function": {k: tool[k] for k in ("name", "description", "parameters",
                                                                                 "strict") if tool.get(k) is not None}})
    return functions, mcp


def _tool_choice(choice, tools: list[dict] | None):
    if choice is None or choice in ("auto", "none", "required"):
        if choice == "required" and not tools:
            raise InvalidRequest("tool_choice 'required' needs tools")
        return choice
    if isinstance(choice, dict) and choice.get("type") in ("function", "mcp") and "name" in choice:
        name = choice.get("name")
        if name not in {t["function"]["name"] for t in tools or ()}:
            raise InvalidRequest(f"tool_choice names a function not in tools: {name!r}")
        return {"type": "function", "function": {"name": name}}
    raise UnsupportedFeature(f"tool_choice {choice!r} is not supported ('auto', 'none', 'required', a function or "
                             f"an mcp tool by name)")


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
    """One response: its events (``sse``: as SSE bytes) and, when done, its response object. A
    request with MCP tools runs turns: the model's calls to them are run (``McpCalls``) and their
    results fed back until the model answers without one, asks for approval, calls a client
    function, or reaches the call limit."""

    def __init__(self, gw: "Gateway", q: "_Request", sse: bool) -> None:
        self.gw, self.q, self.r, self.p, self.base, self.sse = gw, q, q.r, q.p, q.base, sse
        self.seq = 0
        self.output: list[dict] = []
        self.offset = 0  # the output index of this turn's first block
        self.ids: dict[int, str] = {}  # this turn's block index -> item id
        self.prefixes: dict[int, bytes] = {}  # block index -> its delta events' bytes up to the text
        self.response = dict(self.base)
        self.error: SmgError | None = None  # why the response failed
        self.ended = False  # the final event is made (self.response is final)
        self.tokens = [0, 0, 0, 0]  # prompt, output, cached and reasoning tokens over the turns
        self.calls = (McpCalls(q.toolset, self.event, self.output, q.max_calls)
                      if q.toolset is not None else None)

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
            mcp = block.index in self.calls.blocks if self.calls is not None else False
            if mcp and self.calls.asks(block):
                return None  # an approval request streams whole, at its end
            kind = "response.mcp_call_arguments.delta" if mcp else _DELTA_EVENT[block.kind]
            fields = {"type": kind, "item_id": self.ids[block.index], "output_index": self.offset + block.index}
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
        calls = self.calls
        for event in events:
            block = event[1]
            index = self.offset + block.index
            if event[0] == DELTA:
                out.append(self.delta(block, event[2]))
            elif event[0] == START:
                if block.kind == TOOL_CALL and calls is not None and calls.claims(block):
                    self.ids[block.index] = calls.item_id(block)
                    out += calls.start(block, index)
                    continue
                item_id = self.ids[block.index] = new_id(_ITEM_PREFIX[_BLOCK_ITEM[block.kind]])
                out.append(self.event("response.output_item.added", output_index=index,
                                      item=_item(block, item_id, False)))
                if block.kind == TEXT:
                    out.append(self.event("response.content_part.added", item_id=item_id, output_index=index,
                                          content_index=0, part={"type": "output_text", "text": "",
                                                                 "annotations": [], "logprobs": []}))
                elif block.kind == REASONING:
                    out.append(self.event("response.content_part.added", item_id=item_id, output_index=index,
                                          content_index=0, part={"type": "reasoning_text", "text": ""}))
            elif calls is not None and block.index in calls.blocks:
                out += calls.stop(block, index)
            else:
                item = _item(block, self.ids[block.index], True)
                self.output.append(item)
                where = {"item_id": item["id"], "output_index": index}
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
                out.append(self.event("response.output_item.done", output_index=index, item=item))
        return out

    def head_events(self) -> list:
        started = dict(self.base, status="in_progress")
        return [self.event("response.created", response=started), self.event("response.in_progress", response=started)]

    def count(self, p: Prepared, choice, cached: int) -> None:
        """Add one turn's tokens to the response's usage."""
        tokens = self.tokens
        tokens[0] += len(p.prompt_ids)
        tokens[2] += cached
        if choice is not None:
            tokens[1] += choice.tokens
            tokens[3] += choice.reasoning_tokens

    def finish(self, choice, cached: int) -> bytes | None:
        """The last event of a one-turn response that ran to its end; ``self.response`` is set."""
        self.count(self.p, choice, cached)
        return self.end(choice)

    def end(self, choice, reason: str | None = None) -> bytes | None:
        """The last event of a response whose last turn ended with ``choice``; ``reason`` says why
        it is incomplete otherwise."""
        finish = choice.finish_reason if choice is not None else "abort"
        if reason is None and finish in ("length", "abort"):
            reason = "max_output_tokens" if finish == "length" else "engine_aborted"
        self.ended = True
        self.response = dict(self.base, status="incomplete" if reason else "completed", output=self.output,
                             usage=_usage(*self.tokens), incomplete_details={"reason": reason} if reason else None)
        return self.event("response.incomplete" if reason else "response.completed", response=self.response)

    def fail(self, error: SmgError, status: str = "failed") -> bytes | None:
        """The last event of a response that failed (``self.response`` is set)."""
        self.error, self.ended = error, True
        self.response = dict(self.base, status=status, output=self.output,
                             error={"code": error.code or error.error_type, "message": error.message})
        return self.event("response.failed", response=self.response)

    def _turn(self) -> None:
        """A new turn's blocks come after the output so far."""
        self.offset = len(self.output)
        self.ids.clear()
        self.prefixes.clear()
        if self.calls is not None:
            self.calls.new_turn()

    async def events(self) -> AsyncIterator[bytes | None]:
        """The general pipeline's events; ``self.response`` is the final response object once it
        ends. A failure after the start ends it as ``failed`` (cancelled: ``cancelled``)."""
        for event in self.head_events():
            yield event
        calls, p, turn = self.calls, self.p, 0
        steps, reason = None, None
        try:
            if calls is not None:
                for event in calls.list_events(self.q.history):
                    yield event
                for event in await calls.run_approved(self.q.approvals):
                    yield event
                if self.q.approvals:  # the model goes on from the approved calls' results
                    turn = 1
                    p = await self.q.turn(self.output, turn)
            while True:
                self._turn()
                steps = BlockRun(p, self.gw.metrics)
                async for events in steps.steps():
                    for event in self.block_events(events):
                        yield event
                self.count(p, steps.choice, steps.cached)
                if calls is None or not calls.pending:
                    break
                for event in await calls.run_pending():
                    yield event
                finish = steps.choice.finish_reason if steps.choice is not None else "abort"
                client_call = any(item["type"] == "function_call" for item in self.output[self.offset:])
                if calls.asked or calls.limit_hit or client_call or finish in ("length", "abort"):
                    break
                if self.r.max_output_tokens is not None and self.tokens[1] >= self.r.max_output_tokens:
                    reason = "max_output_tokens"
                    break
                turn += 1
                steps = None
                p = await self.q.turn(self.output, turn, self.tokens[1])
        except (SmgError, asyncio.CancelledError) as exc:
            if steps is not None:
                for event in self.block_events(steps.blocks.finish()):  # what was produced stays, closed
                    yield event
            if isinstance(exc, asyncio.CancelledError):
                self.fail(RequestAborted("the response was cancelled"), "cancelled")
                raise
            yield self.fail(exc)
            return
        if calls is not None and calls.limit_hit:
            reason = "max_tool_calls"
        yield self.end(steps.choice, reason)


# ---- requests ------------------------------------------------------------------------------------

class _Request:
    """A decoded request with its context, prepared (its first turn: ``p``); ``turn`` prepares
    the next ones of a tool loop. What storing the response needs."""

    def __init__(self, gw: "Gateway", r: rp.ResponsesRequest, sampling: oa.SamplingFields, items: list[dict],
                 history: list[dict], functions: list[dict], toolset: "McpToolset | None", ids: RequestIds) -> None:
        self.gw, self.r, self.sampling, self.items, self.history = gw, r, sampling, items, history
        self.served, self.lora = gw.models.resolve(r.model)
        self.tools = functions + (toolset.functions() if toolset is not None else [])
        self.toolset, self.ids = toolset, ids
        self.approvals = mcp_items.answered_approvals(items, history, toolset)
        limit = gw.config.mcp.max_calls
        self.max_calls = min(limit, r.max_tool_calls) if r.max_tool_calls is not None else limit
        self.conversation_id = _conversation_id(r)
        self.p: Prepared = None  # type: ignore[assignment]  (set by prepare)
        self.base: dict = {}

    async def turn(self, output: list[dict], turn: int = 0, used: int = 0) -> Prepared:
        """The chat of turn ``turn`` (0: the first; later ones see the output so far, and may
        call any tool), prepared; ``used``: the output tokens of the turns before, which
        ``max_output_tokens`` (a bound on the whole response) leaves fewer to this one.
        ``truncation: auto`` drops the oldest turns of the context until it fits."""
        r = self.r
        sampling = self.sampling
        if used and sampling.max_tokens is not None:
            sampling = msgspec.structs.replace(sampling, max_tokens=sampling.max_tokens - used)
        choice = _tool_choice(r.tool_choice, self.tools) if turn == 0 else "auto"
        ids = self.ids if turn == 0 else RequestIds(self.ids.response, f"{self.ids.engine}-{turn}",
                                                     self.ids.routing_key)
        while True:
            chat = ChatSpec(messages=chat_messages(self.history + self.items + output, r.instructions),
                            sampling=sampling, model=r.model, tools=self.tools or None, tool_choice=choice,
                            unoffered_tools=self.toolset.unoffered() if self.toolset is not None else None,
                            parallel_tool_calls=r.parallel_tool_calls, template_kwargs=_template_kwargs(r),
                            constraint=_constraint(r.text), user=r.user)
            try:
                return await prepare_chat(self.served, chat, ids, self.lora, self.gw.template_limits)
            except ContextLengthExceeded:
                if r.truncation != "auto" or not self.history:
                    raise
                self.history = _drop_oldest_turn(self.history)


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
    if r.max_tool_calls is not None and r.max_tool_calls < 0:
        raise InvalidRequest("max_tool_calls must be >= 0")
    unknown = set(r.include or ()) - INCLUDES
    if unknown:
        raise UnsupportedFeature(f"include values not supported: {sorted(unknown)}")
    if r.input is None and r.previous_response_id is None and r.conversation is None:
        raise InvalidRequest("input is required")
    return sampling


def _echoed_tools(tools: list[dict] | None) -> list[dict]:
    """The request's tools as the response shows (and stores) them: an mcp tool's headers and
    authorization left out (they are secrets)."""
    return [{k: v for k, v in tool.items() if k not in ("headers", "authorization")}
            if isinstance(tool, dict) and tool.get("type") == "mcp" else tool for tool in tools or ()]


async def prepare(gw: "Gateway", request, request_id: str | None, routing_key: str | None) -> _Request:
    gw.require_started()
    r = oa.decode_request(request, rp.ResponsesRequest)
    sampling = _check(r)
    items = input_items(r.input)
    functions, mcp_entries = _tools(r.tools)
    history = await _context(gw, r)
    toolset = await gw.mcp.toolset(mcp_entries) if mcp_entries else None
    if toolset is not None:
        names = {tool["function"]["name"] for tool in functions}
        clash = next((tool["function"]["name"] for tool in toolset.functions() if tool["function"]["name"] in names),
                     None)
        if clash is not None:
            raise InvalidRequest(f"the function tool {clash!r} has the name of an MCP server's tool")
    ids = request_ids("resp", request_id, routing_key or r.prompt_cache_key, separator="_")
    q = _Request(gw, r, sampling, items, history, functions, toolset, ids)
    p = q.p = await q.turn([])
    conversation_id = q.conversation_id
    q.base = {"id": p.request_id, "object": "response", "created_at": p.created, "status": "in_progress",
              "model": p.model, "output": [], "error": None, "incomplete_details": None,
              "instructions": r.instructions, "metadata": r.metadata or {},
              "parallel_tool_calls": r.parallel_tool_calls, "temperature": r.temperature, "top_p": r.top_p,
              "max_output_tokens": r.max_output_tokens, "max_tool_calls": r.max_tool_calls,
              "tool_choice": r.tool_choice if r.tool_choice is not None else "auto", "tools": _echoed_tools(r.tools),
              "text": oa.to_dict(r.text) if r.text is not None else {"format": {"type": "text"}},
              "reasoning": oa.to_dict(r.reasoning) if r.reasoning is not None else None,
              "previous_response_id": r.previous_response_id, "store": r.store, "background": r.background,
              "truncation": r.truncation, "user": r.user,
              "conversation": {"id": conversation_id} if conversation_id else None, "usage": None}
    return q


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
    job = _Run(gw, q, sse=False)
    async for _ in job.events():
        pass
    await _store(gw, q, job.response)
    if job.error is not None:  # stored as failed; the caller gets the error
        raise job.error
    return job.response


async def _background(gw: "Gateway", q: _Request) -> None:
    job = _Run(gw, q, sse=False)
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
        super().__init__(q.p if q.p.plain else None, _Run(gw, q, sse=True))
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
        async for event in self.job.events():
            if event is None:
                continue
            if self.job.ended:
                await _store(self.gw, self.q, self.job.response)  # before the final event
            yield event


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
