"""OpenAI Responses and Conversations: request models (msgspec; unknown fields are a 400 that names
them). Responses and events are built as JSON objects by ``smg.api.responses`` (they are stored as
they are answered)."""
from __future__ import annotations

from typing import Any, Literal, Union

import msgspec


class _Request(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    pass


class TextFormat(_Request, kw_only=True):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class TextConfig(_Request, kw_only=True):
    format: TextFormat = msgspec.field(default_factory=TextFormat)
    verbosity: str | None = None


class ReasoningConfig(_Request, kw_only=True):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: str | None = None


class ConversationRef(_Request, kw_only=True):
    id: str


class ResponsesRequest(_Request, kw_only=True):
    model: str = ""
    input: Union[str, list[dict[str, Any]], None] = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Union[str, dict[str, Any], None] = None
    parallel_tool_calls: bool = True
    max_tool_calls: int | None = None  # MCP calls the gateway runs for this response (at most the config's)
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # vLLM/SGLang extension, as on chat
    top_logprobs: int | None = None
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    metadata: dict[str, str] | None = None
    store: bool = True
    previous_response_id: str | None = None
    conversation: Union[str, ConversationRef, None] = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] = "disabled"
    background: bool = False
    stream: bool = False
    user: str | None = None
    prompt_cache_key: str | None = None  # routed as the request's routing key (smg.policies)


class ConversationCreate(_Request, kw_only=True):
    items: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None


class ConversationUpdate(_Request, kw_only=True):
    metadata: dict[str, str]


class ItemsCreate(_Request, kw_only=True):
    items: list[dict[str, Any]]
