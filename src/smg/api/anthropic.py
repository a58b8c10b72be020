"""Front end: the Anthropic Messages API (``/v1/messages``, ``/v1/messages/count_tokens``).

Messages with content blocks become a :class:`~smg.pipeline.prepare.ChatSpec` (``tool_result``
blocks as tool messages, ``thinking`` blocks as the assistant turn's reasoning, images through the
image pipeline); the ``blocks`` stage gives the content blocks (thinking, text, tool_use) in the
order the model produced them. Streamed and non-streamed answers come from the same
:class:`_Run`. Errors take Anthropic's shape (``{"type": "error", "error": {type, message}}``) and
status codes, also mid-stream. ``x-api-key`` and ``anthropic-version`` are accepted (smg does not
check keys here).
"""
from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, AsyncIterator

import msgspec

from smg.api.base import (JSON, BlockStreamShapes, ErrorShape, HttpRequest, Reply, StreamReply, error_headers,
                          generation_reply, json_reply)
from smg.errors import InvalidRequest, RequestAborted, SmgError, UnsupportedFeature
from smg.pipeline import plain
from smg.pipeline.blocks import DELTA, REASONING, START, TEXT, Block, BlockRun
from smg.pipeline.plain import Sink
from smg.pipeline.prepare import ChatSpec, Prepared, prepare_chat, request_ids, thinking_kwargs
from smg.protocols import anthropic as an
from smg.protocols import openai as oa

if TYPE_CHECKING:
    from smg.gateway import Gateway

_encode = msgspec.json.encode
MIN_THINKING_BUDGET = 1024  # Anthropic's floor for budget_tokens

# HTTP status -> (Anthropic's status, error type); 503 (no engine can take it) is Anthropic's 529
_ERROR_TYPES = {400: (400, "invalid_request_error"), 401: (401, "authentication_error"),
                403: (403, "permission_error"), 404: (404, "not_found_error"), 413: (413, "request_too_large"),
                429: (429, "rate_limit_error"), 503: (529, "overloaded_error")}


class AnthropicErrors(ErrorShape):
    __slots__ = ()

    @staticmethod
    def status_and_type(error: SmgError) -> tuple[int, str]:
        return _ERROR_TYPES.get(error.status_code, (error.status_code if error.status_code < 500 else 500,
                                                    "invalid_request_error" if error.status_code < 500
                                                    else "api_error"))

    def body(self, error: SmgError) -> dict:
        return {"type": "error", "error": {"type": self.status_and_type(error)[1], "message": error.message}}

    def reply(self, error: SmgError) -> Reply:
        return Reply(self.status_and_type(error)[0], _encode(self.body(error)), JSON, error_headers(error))

    def event(self, error: SmgError) -> bytes:
        return b"event: error\ndata: " + _encode(self.body(error)) + b"\n\n"


ERRORS = AnthropicErrors()


# ---- messages -> chat messages -------------------------------------------------------------------

def _image_part(block: dict, where: str) -> dict:
    source = block.get("source")
    if not isinstance(source, dict):
        raise InvalidRequest(f"{where}: an image block needs a source")
    if source.get("type") == "base64":
        if not isinstance(source.get("data"), str) or not isinstance(source.get("media_type"), str):
            raise InvalidRequest(f"{where}: a base64 image source needs media_type and data")
        url = f"data:{source['media_type']};base64,{source['data']}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise InvalidRequest(f"{where}: an image source is {{type: base64, media_type, data}} or {{type: url, url}}")
    return {"type": "image_url", "image_url": {"url": url}}


def _content(parts: list[dict]) -> str | list[dict]:
    """Chat content from text and image parts: a string when there is no image."""
    if any(p["type"] == "image_url" for p in parts):
        return parts
    return "".join(p["text"] for p in parts)


def _tool_result_content(block: dict, where: str) -> str | list[dict]:
    content = block.get("content", "")
    if isinstance(content, str):
        return content
    parts = []
    for j, inner in enumerate(content if isinstance(content, list) else ()):
        if inner.get("type") == "text":
            parts.append({"type": "text", "text": inner.get("text", "")})
        elif inner.get("type") == "image":
            parts.append(_image_part(inner, f"{where}.content[{j}]"))
        else:
            raise UnsupportedFeature(f"{where}.content[{j}]: block type {inner.get('type')!r} is not supported")
    return _content(parts)


def chat_messages(r: an.MessagesRequest | an.CountTokensRequest) -> list[dict]:
    """The request's system prompt and messages as chat messages; every ``tool_result`` must
    answer a ``tool_use`` of an earlier assistant turn."""
    out: list[dict] = []
    if r.system:
        system = r.system if isinstance(r.system, str) else "".join(
            b.get("text", "") for b in r.system if isinstance(b, dict) and b.get("type") == "text")
        out.append({"role": "system", "content": system})
    calls: set[str] = set()
    for i, message in enumerate(r.messages):
        blocks = [{"type": "text", "text": message.content}] if isinstance(message.content, str) else message.content
        parts: list[dict] = []
        tool_calls, thinking = [], ""
        for j, block in enumerate(blocks):
            where = f"messages[{i}].content[{j}]"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                parts.append({"type": "text", "text": block.get("text", "")})
            elif kind == "image":
                parts.append(_image_part(block, where))
            elif kind in ("thinking", "redacted_thinking"):
                if message.role != "assistant":
                    raise InvalidRequest(f"{where}: thinking blocks belong to assistant turns")
                thinking += block.get("thinking", "")
            elif kind == "tool_use":
                if message.role != "assistant":
                    raise InvalidRequest(f"{where}: tool_use blocks belong to assistant turns")
                if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str) or \
                        not isinstance(block.get("input"), dict):
                    raise InvalidRequest(f"{where}: a tool_use block needs id, name and input (an object)")
                calls.add(block["id"])
                tool_calls.append({"id": block["id"], "type": "function",
                                   "function": {"name": block["name"], "arguments": json.dumps(block["input"])}})
            elif kind == "tool_result":
                if message.role != "user":
                    raise InvalidRequest(f"{where}: tool_result blocks belong to user turns")
                if block.get("tool_use_id") not in calls:
                    raise InvalidRequest(f"{where}: tool_result for tool_use_id {block.get('tool_use_id')!r} "
                                         f"answers no tool_use before it")
                out.append({"role": "tool", "tool_call_id": block["tool_use_id"],
                            "content": _tool_result_content(block, where)})
            else:
                raise UnsupportedFeature(f"{where}: content block type {kind!r} is not supported")
        if not parts and not tool_calls and not thinking:
            continue  # a user turn of tool results only
        chat = {"role": message.role, "content": _content(parts)}
        if tool_calls:
            chat["tool_calls"] = tool_calls
        if thinking:
            chat["reasoning_content"] = thinking
        out.append(chat)
    return out


def _tools(r) -> list[dict] | None:
    if not r.tools:
        return None
    return [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                              "parameters": t.input_schema}} for t in r.tools]


def _tool_choice(r, tools: list[dict] | None):
    choice = r.tool_choice
    if choice is None:
        return None
    if choice.type == "tool":
        if choice.name not in {t["function"]["name"] for t in tools or ()}:
            raise InvalidRequest(f"tool_choice names a tool not in tools: {choice.name!r}")
        return {"type": "function", "function": {"name": choice.name}}
    if choice.type == "any" and not tools:
        raise InvalidRequest("tool_choice 'any' needs tools")
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def _template_kwargs(r) -> dict:
    """``thinking`` as the templates' thinking switches (absent: the template's default)."""
    if r.thinking is None or r.thinking.type == "adaptive":
        return {}
    return thinking_kwargs(r.thinking.type == "enabled")


def _sampling(r: an.MessagesRequest) -> oa.SamplingFields:
    """The request's sampling fields, checked."""
    if r.max_tokens < 1:
        raise InvalidRequest("max_tokens must be at least 1")
    if r.temperature is not None and not 0 <= r.temperature <= 1:
        raise InvalidRequest(f"temperature must be in [0, 1], got {r.temperature}")
    sampling = oa.SamplingFields(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, max_tokens=r.max_tokens,
                                 stop=r.stop_sequences)
    oa.validate_sampling(sampling)
    return sampling


def _check(r: an.MessagesRequest) -> None:
    if not r.messages:
        raise InvalidRequest("messages must not be empty")
    thinking = r.thinking
    if thinking is not None and thinking.type == "enabled":
        if thinking.budget_tokens is None or thinking.budget_tokens < MIN_THINKING_BUDGET:
            raise InvalidRequest(f"thinking.budget_tokens must be at least {MIN_THINKING_BUDGET}")
        if thinking.budget_tokens >= r.max_tokens:
            raise InvalidRequest("thinking.budget_tokens must be less than max_tokens")


async def prepare(gw: "Gateway", request, request_id: str | None, routing_key: str | None
                  ) -> tuple[an.MessagesRequest, Prepared]:
    gw.require_started()
    r = oa.decode_request(request, an.MessagesRequest)
    sampling = _sampling(r)
    _check(r)
    served, lora = gw.models.resolve(r.model)
    user = r.metadata.user_id if r.metadata is not None else None
    ids = request_ids("msg", request_id, routing_key, separator="_")
    p = await prepare_chat(served, _chat_spec(r, sampling, user), ids, lora, gw.template_limits)
    return r, p


def _chat_spec(r: an.MessagesRequest | an.CountTokensRequest, sampling: oa.SamplingFields,
               user: str | None = None) -> ChatSpec:
    tools = _tools(r)
    return ChatSpec(messages=chat_messages(r), model=r.model, sampling=sampling, tools=tools,
                    tool_choice=_tool_choice(r, tools),
                    parallel_tool_calls=not (r.tool_choice is not None and r.tool_choice.disable_parallel_tool_use),
                    template_kwargs=_template_kwargs(r), user=user)


# ---- the run -------------------------------------------------------------------------------------

_DELTA_TYPES = {REASONING: (b"thinking_delta", b"thinking"), TEXT: (b"text_delta", b"text")}


def _block(block: Block, done: bool) -> dict:
    text = block.text if done else ""
    if block.kind == REASONING:
        return {"type": "thinking", "thinking": text, "signature": ""}
    if block.kind == TEXT:
        return {"type": "text", "text": text}
    return {"type": "tool_use", "id": block.call_id or "toolu_" + uuid.uuid4().hex[:24], "name": block.name,
            "input": _arguments(text) if done else {}}


def _arguments(text: str) -> dict:
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        raise SmgError(f"the model's tool call arguments are not JSON: {text[:200]!r}") from None
    if not isinstance(value, dict):
        raise SmgError(f"the model's tool call arguments are not a JSON object: {text[:200]!r}")
    return value


def _event(kind: bytes, body: bytes) -> bytes:
    return b"event: " + kind + b"\ndata: " + body + b"\n\n"


class _Run:
    """One message: its events (``sse``: as SSE bytes) and, when done, its message object."""

    def __init__(self, r: an.MessagesRequest, p: Prepared, sse: bool) -> None:
        self.r, self.p, self.sse = r, p, sse
        self.content: list[dict] = []
        self.prefixes: dict[int, bytes] = {}
        self.message: dict = {}
        self.base = {"id": p.request_id, "type": "message", "role": "assistant", "model": p.model, "content": []}

    def _start(self, block: Block) -> bytes | None:
        if block.kind not in (REASONING, TEXT):
            block.call_id = block.call_id or "toolu_" + uuid.uuid4().hex[:24]
        if not self.sse:
            return None
        return _event(b"content_block_start", _encode({"type": "content_block_start", "index": block.index,
                                                       "content_block": _block(block, False)}))

    def delta(self, block: Block, text: str) -> bytes | None:
        if not self.sse:
            return None
        prefix = self.prefixes.get(block.index)
        if prefix is None:
            kind, field = _DELTA_TYPES.get(block.kind, (b"input_json_delta", b"partial_json"))
            prefix = self.prefixes[block.index] = (
                b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
                b'"delta":{"type":"%b","%b":' % (block.index, kind, field))
        return prefix + _encode(text) + b"}}\n\n"

    def _stop(self, block: Block) -> bytes | None:
        self.content.append(_block(block, True))
        if not self.sse:
            return None
        return _event(b"content_block_stop", b'{"type":"content_block_stop","index":%d}' % block.index)

    def block_events(self, events: list) -> list:
        out = []
        for event in events:
            if event[0] == DELTA:
                out.append(self.delta(event[1], event[2]))
            elif event[0] == START:
                out.append(self._start(event[1]))
            else:
                out.append(self._stop(event[1]))
        return out

    def _stop_reason(self, choice) -> tuple[str, str | None]:
        if choice.finish_reason == "length":
            return "max_tokens", None
        if choice.finish_reason == "abort":
            raise RequestAborted("the engine aborted the request")
        if any(block["type"] == "tool_use" for block in self.content):
            return "tool_use", None
        if isinstance(choice.matched, str):
            return "stop_sequence", choice.matched
        return "end_turn", None

    def head_events(self) -> list:
        if not self.sse:
            return []
        p = self.p
        start = dict(self.base, stop_reason=None, stop_sequence=None,
                     usage={"input_tokens": len(p.prompt_ids), "output_tokens": 0})
        return [_event(b"message_start", _encode({"type": "message_start", "message": start})),
                _event(b"ping", b'{"type":"ping"}')]

    def finish(self, choice, cached: int) -> list:
        """The last events (``self.message`` is set)."""
        p = self.p
        stop_reason, stop_sequence = self._stop_reason(choice)
        tokens = choice.tokens if choice is not None else 0
        self.message = dict(self.base, content=self.content, stop_reason=stop_reason, stop_sequence=stop_sequence,
                            usage={"input_tokens": len(p.prompt_ids), "output_tokens": tokens,
                                   "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0})
        if not self.sse:
            return []
        return [_event(b"message_delta", _encode({"type": "message_delta", "delta": {
                    "stop_reason": stop_reason, "stop_sequence": stop_sequence}, "usage": {
                    "output_tokens": tokens, "input_tokens": len(p.prompt_ids), "cache_read_input_tokens": cached}})),
                _event(b"message_stop", b'{"type":"message_stop"}')]

    async def events(self, gw: "Gateway") -> AsyncIterator[bytes | None]:
        """The general pipeline's events; ``self.message`` is the message once they end."""
        for event in self.head_events():
            yield event
        steps = BlockRun(self.p, gw.metrics)
        async for events in steps.steps():
            for event in self.block_events(events):
                yield event
        for event in self.finish(steps.choice, steps.cached):
            yield event


async def create(gw: "Gateway", request, request_id: str | None = None, routing_key: str | None = None) -> dict:
    r, p = await prepare(gw, request, request_id, routing_key)
    gw.metrics.inc("smg_requests_total", route="messages", stream="false")
    job = _Run(r, p, sse=False)
    async for _ in job.events(gw):
        pass
    return job.message


class _Shapes(BlockStreamShapes):
    """A streamed message for ``plain.stream``: a plain one's text as one text block."""

    def __init__(self, gw: "Gateway", r: an.MessagesRequest, p: Prepared) -> None:
        super().__init__(p if p.plain else None, _Run(r, p, sse=True))
        self.gw = gw

    async def end(self, choice, cached: int, text: str | None) -> bytes:
        events = self.close_text(text) if text is not None else []
        return b"".join(events + self.job.finish(choice, cached))

    async def general(self) -> AsyncIterator[bytes]:
        async for event in self.job.events(self.gw):
            if event is not None:
                yield event


def stream(gw: "Gateway", request, request_id: str | None = None, routing_key: str | None = None,
           sink: Sink | None = None) -> AsyncIterator[bytes]:
    """A streamed message's SSE events; a plain one (no parsers) through the compiled pump
    (``plain.stream``; ``sink`` as for ``Gateway.chat_sse``)."""
    async def start() -> _Shapes:
        r, p = await prepare(gw, request, request_id, routing_key)
        gw.metrics.inc("smg_requests_total", route="messages", stream="true")
        return _Shapes(gw, r, p)

    return plain.stream(start, gw.metrics, True, sink)


async def count_tokens(gw: "Gateway", request) -> dict:
    """The prompt's token count as the model would see it, images' tokens included: the prepare
    stage as for a message, without the engine."""
    gw.require_started()
    r = oa.decode_request(request, an.CountTokensRequest)
    served, lora = gw.models.resolve(r.model)
    p = await prepare_chat(served, _chat_spec(r, oa.SamplingFields()), request_ids("count"), lora,
                           gw.template_limits)
    return {"input_tokens": len(p.prompt_ids)}


# ---- routes --------------------------------------------------------------------------------------

async def _create(gw: "Gateway", http: HttpRequest) -> Reply | StreamReply:
    return await generation_reply(http, an.MessagesRequest, gw.messages, gw.messages_sse, ERRORS)


async def _count_tokens(gw: "Gateway", http: HttpRequest) -> Reply:
    return json_reply(await count_tokens(gw, await http.read_body()))


ROUTES = {("POST", "/v1/messages"): _create, ("POST", "/v1/messages/count_tokens"): _count_tokens}
