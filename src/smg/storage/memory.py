"""Storage in this process's memory (tests, ephemeral gateways): lost at exit. Each call completes
without awaiting, so every write is atomic with respect to other requests."""
from __future__ import annotations

import copy

from smg.errors import InvalidRequest, NotFound
from smg.storage.base import Conversation, Item, ItemPage, StoredResponse


def _check_new(stored: dict[str, Item], items: list[Item]) -> None:
    """Item ids are unique in a conversation (as the SQL backends' index makes them)."""
    ids = [item["id"] for item in items]
    if len(set(ids)) != len(ids) or any(i in stored for i in ids):
        raise InvalidRequest("conflicts with what is stored: an item id is already in the conversation")


class MemoryStorage:
    def __init__(self) -> None:
        self._responses: dict[str, StoredResponse] = {}
        self._conversations: dict[str, Conversation] = {}
        self._items: dict[str, dict[str, Item]] = {}  # conversation -> item id -> item (in order)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def put_response(self, response: StoredResponse, conversation_items: list[Item] = ()) -> None:
        if conversation_items:
            items = self._items.get(response.conversation_id)
            if items is None:
                raise NotFound(f"conversation {response.conversation_id!r} not found")
            _check_new(items, conversation_items)
            items.update((item["id"], copy.deepcopy(item)) for item in conversation_items)
        self._responses[response.id] = copy.deepcopy(response)

    async def get_response(self, response_id: str) -> StoredResponse | None:
        found = self._responses.get(response_id)
        return copy.deepcopy(found) if found is not None else None

    async def response_chain(self, response_id: str) -> list[StoredResponse]:
        chain = []
        found = self._responses.get(response_id)
        while found is not None:
            chain.append(copy.deepcopy(found))
            found = self._responses.get(found.previous_response_id) if found.previous_response_id else None
        return chain[::-1]

    async def delete_response(self, response_id: str) -> bool:
        return self._responses.pop(response_id, None) is not None

    async def create_conversation(self, conversation: Conversation, items: list[Item] = ()) -> None:
        _check_new({}, items)
        self._conversations[conversation.id] = copy.deepcopy(conversation)
        self._items[conversation.id] = {item["id"]: copy.deepcopy(item) for item in items}

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        found = self._conversations.get(conversation_id)
        return copy.deepcopy(found) if found is not None else None

    async def update_conversation(self, conversation_id: str, metadata: dict[str, str]) -> Conversation | None:
        found = self._conversations.get(conversation_id)
        if found is None:
            return None
        found.metadata = dict(metadata)
        return copy.deepcopy(found)

    async def delete_conversation(self, conversation_id: str) -> bool:
        self._items.pop(conversation_id, None)
        return self._conversations.pop(conversation_id, None) is not None

    async def add_items(self, conversation_id: str, items: list[Item]) -> bool:
        stored = self._items.get(conversation_id)
        if stored is None:
            return False
        _check_new(stored, items)
        stored.update((item["id"], copy.deepcopy(item)) for item in items)
        return True

    async def list_items(self, conversation_id: str, after: str | None = None, limit: int | None = None,
                         descending: bool = False) -> ItemPage | None:
        stored = self._items.get(conversation_id)
        if stored is None:
            return None
        items = list(stored.values())
        if descending:
            items.reverse()
        if after is not None:
            ids = [item["id"] for item in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        page = items if limit is None else items[:limit]
        return ItemPage(copy.deepcopy(page), len(page) < len(items))

    async def get_item(self, conversation_id: str, item_id: str) -> Item | None:
        found = self._items.get(conversation_id, {}).get(item_id)
        return copy.deepcopy(found) if found is not None else None

    async def delete_item(self, conversation_id: str, item_id: str) -> bool:
        return self._items.get(conversation_id, {}).pop(item_id, None) is not None
