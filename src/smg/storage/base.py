"""The storage interface every backend implements: stored responses (Responses API), and
conversations with their items.

Records are JSON-shaped: a response's ``body`` is the response object as it was answered, its
``input`` the items of that turn's input; a conversation item is an item dict with its ``id``.
Every write is one transaction: a response and the items it appends to its conversation are
stored together or not at all. A backend that cannot be reached raises
:class:`~smg.errors.StorageUnavailable` (a 503), never a driver's own error.
"""
from __future__ import annotations

from typing import Any, Protocol

import msgspec

Item = dict[str, Any]


class StoredResponse(msgspec.Struct, kw_only=True):
    id: str
    created_at: int
    body: dict[str, Any]  # the response object (status, output, usage, ...)
    input: list[Item]  # this turn's input items, ids given
    previous_response_id: str | None = None
    conversation_id: str | None = None


class Conversation(msgspec.Struct, kw_only=True):
    id: str
    created_at: int
    metadata: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {"id": self.id, "object": "conversation", "created_at": self.created_at, "metadata": self.metadata}


class ItemPage(msgspec.Struct):
    items: list[Item]
    has_more: bool


class Storage(Protocol):
    """Responses and conversations (see the module docstring)."""

    async def start(self) -> None:
        """Connect and create or migrate the schema (a backend that is down raises at first use)."""

    async def close(self) -> None: ...

    async def put_response(self, response: StoredResponse, conversation_items: list[Item] = ()) -> None:
        """Insert or replace a response; with ``conversation_items``, append them to its
        conversation in the same transaction (:class:`~smg.errors.NotFound` if it is gone)."""

    async def get_response(self, response_id: str) -> StoredResponse | None: ...

    async def response_chain(self, response_id: str) -> list[StoredResponse]:
        """The response and those it continues (``previous_response_id``), oldest first; empty if
        it does not exist."""

    async def delete_response(self, response_id: str) -> bool: ...

    async def create_conversation(self, conversation: Conversation, items: list[Item] = ()) -> None: ...

    async def get_conversation(self, conversation_id: str) -> Conversation | None: ...

    async def update_conversation(self, conversation_id: str, metadata: dict[str, str]) -> Conversation | None: ...

    async def delete_conversation(self, conversation_id: str) -> bool:
        """Delete a conversation and its items."""

    async def add_items(self, conversation_id: str, items: list[Item]) -> bool:
        """Append items; False if the conversation does not exist."""

    async def list_items(self, conversation_id: str, after: str | None = None, limit: int | None = None,
                         descending: bool = False) -> ItemPage | None:
        """A page of items in order (``after``: an item id; ``limit`` None: all); None if the
        conversation does not exist."""

    async def get_item(self, conversation_id: str, item_id: str) -> Item | None: ...

    async def delete_item(self, conversation_id: str, item_id: str) -> bool: ...
