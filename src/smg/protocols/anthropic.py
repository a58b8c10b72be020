"""Anthropic Messages: request models (msgspec; unknown fields are a 400 that names them). Content
blocks stay JSON objects, checked where they are turned into chat messages
(``smg.api.anthropic``)."""
from __future__ import annotations

from typing import Any, Literal, Union

import msgspec


class _Request(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    pass


class ToolDef(_Request, kw_only=True):
    name: str
    input_schema: dict[str, Any]
    description: str | None = None
    type: Literal["custom"] | None = None
    cache_control: dict[str, Any] | None = None


class ToolChoice(_Request, kw_only=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False


class Thinking(_Request, kw_only=True):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = None


class Metadata(_Request, kw_only=True):
    user_id: str | None = None


class MessageParam(_Request, kw_only=True):
    role: Literal["user", "assistant"]
    content: Union[str, list[dict[str, Any]]]


class _Conversation(_Request, kw_only=True):
    model: str
    messages: list[MessageParam]
    system: Union[str, list[dict[str, Any]], None] = None
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None


class CountTokensRequest(_Conversation, kw_only=True):
    pass


class MessagesRequest(_Conversation, kw_only=True):
    max_tokens: int
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    metadata: Metadata | None = None
