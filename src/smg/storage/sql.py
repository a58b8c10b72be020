"""The SQL backends' one implementation of :class:`~smg.storage.base.Storage`, over a small driver
interface that :mod:`~smg.storage.sqlite` and :mod:`~smg.storage.postgres` give: a transaction
with ``fetch`` and ``execute`` taking ``$1``-style parameters, JSON passed as text.

Every call is one transaction, bounded by the driver's timeout; a driver failure becomes
:class:`~smg.errors.StorageUnavailable` and the transaction rolls back, so nothing is half-written.
The schema is versioned (``smg_schema``): a backend lists its DDL per version, and ``start`` applies
the versions a database has not seen yet.
"""
from __future__ import annotations

from typing import AsyncContextManager, Protocol, Sequence

import msgspec

from smg.errors import NotFound
from smg.storage.base import Conversation, Item, ItemPage, StoredResponse

_ALL = 1 << 62  # "no limit" as a LIMIT both databases take

_RESPONSE_COLUMNS = "id, created_at, previous_response_id, conversation_id, body, input"
_CHAIN = f"""
WITH RECURSIVE chain(id, prev, depth) AS (
    SELECT id, previous_response_id, 0 FROM smg_responses WHERE id = $1
    UNION ALL
    SELECT r.id, r.previous_response_id, c.depth + 1 FROM smg_responses r JOIN chain c ON r.id = c.prev
    WHERE c.depth < 100000)
SELECT {', '.join('r.' + c for c in _RESPONSE_COLUMNS.split(', '))}
FROM chain c JOIN smg_responses r ON r.id = c.id ORDER BY c.depth DESC"""

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class Transaction(Protocol):
    async def fetch(self, sql: str, *args) -> list[Sequence]: ...

    async def execute(self, sql: str, *args) -> int:
        """Run a statement; the number of rows it changed."""


class Driver(Protocol):
    migrations: Sequence[Sequence[str]]  # DDL statements of schema versions 1, 2, ...

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    def transaction(self) -> AsyncContextManager[Transaction]: ...

    async def fetch(self, sql: str, *args) -> list[Sequence]:
        """One statement in its own transaction (the cheapest way to the database)."""

    async def execute(self, sql: str, *args) -> int: ...


def _text(value) -> str:
    return _encode(value).decode()


def _response(row: Sequence) -> StoredResponse:
    return StoredResponse(id=row[0], created_at=row[1], previous_response_id=row[2], conversation_id=row[3],
                          body=_decode(row[4]), input=_decode(row[5]))


def _conversation(row: Sequence) -> Conversation:
    return Conversation(id=row[0], created_at=row[1], metadata=_decode(row[2]))


class SqlStorage:
    """:class:`~smg.storage.base.Storage` on a SQL :class:`Driver`."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def start(self) -> None:
        await self.driver.connect()
        async with self.driver.transaction() as tx:
            await tx.execute("CREATE TABLE IF NOT EXISTS smg_schema (version INTEGER NOT NULL)")
            rows = await tx.fetch("SELECT version FROM smg_schema")
            version = rows[0][0] if rows else 0
            for statements in self.driver.migrations[version:]:
                for statement in statements:
                    await tx.execute(statement)
            if not rows:
                await tx.execute("INSERT INTO smg_schema (version) VALUES ($1)", len(self.driver.migrations))
            elif version < len(self.driver.migrations):
                await tx.execute("UPDATE smg_schema SET version = $1", len(self.driver.migrations))

    async def close(self) -> None:
        await self.driver.close()

    async def _append(self, tx: Transaction, conversation_id: str, items: Sequence[Item]) -> bool:
        if not await tx.fetch("SELECT 1 FROM smg_conversations WHERE id = $1", conversation_id):
            return False
        for item in items:
            await tx.execute("INSERT INTO smg_conversation_items (conversation_id, id, item) VALUES ($1, $2, $3)",
                             conversation_id, item["id"], _text(item))
        return True

    async def put_response(self, response: StoredResponse, conversation_items: Sequence[Item] = ()) -> None:
        insert = (f"INSERT INTO smg_responses ({_RESPONSE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) "
                  "ON CONFLICT (id) DO UPDATE SET body = excluded.body, input = excluded.input")
        values = (response.id, response.created_at, response.previous_response_id, response.conversation_id,
                  _text(response.body), _text(response.input))
        if not conversation_items:
            await self.driver.execute(insert, *values)
            return
        async with self.driver.transaction() as tx:
            if not await self._append(tx, response.conversation_id, conversation_items):
                raise NotFound(f"conversation {response.conversation_id!r} not found")
            await tx.execute(insert, *values)

    async def get_response(self, response_id: str) -> StoredResponse | None:
        rows = await self.driver.fetch(f"SELECT {_RESPONSE_COLUMNS} FROM smg_responses WHERE id = $1", response_id)
        return _response(rows[0]) if rows else None

    async def response_chain(self, response_id: str) -> list[StoredResponse]:
        return [_response(row) for row in await self.driver.fetch(_CHAIN, response_id)]

    async def delete_response(self, response_id: str) -> bool:
        return await self.driver.execute("DELETE FROM smg_responses WHERE id = $1", response_id) > 0

    async def create_conversation(self, conversation: Conversation, items: Sequence[Item] = ()) -> None:
        async with self.driver.transaction() as tx:
            await tx.execute("INSERT INTO smg_conversations (id, created_at, metadata) VALUES ($1, $2, $3)",
                             conversation.id, conversation.created_at, _text(conversation.metadata))
            await self._append(tx, conversation.id, items)

    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        rows = await self.driver.fetch("SELECT id, created_at, metadata FROM smg_conversations WHERE id = $1",
                                       conversation_id)
        return _conversation(rows[0]) if rows else None

    async def update_conversation(self, conversation_id: str, metadata: dict[str, str]) -> Conversation | None:
        rows = await self.driver.fetch("UPDATE smg_conversations SET metadata = $2 WHERE id = $1 "
                                       "RETURNING id, created_at, metadata", conversation_id, _text(metadata))
        return _conversation(rows[0]) if rows else None

    async def delete_conversation(self, conversation_id: str) -> bool:
        async with self.driver.transaction() as tx:
            await tx.execute("DELETE FROM smg_conversation_items WHERE conversation_id = $1", conversation_id)
            return await tx.execute("DELETE FROM smg_conversations WHERE id = $1", conversation_id) > 0

    async def add_items(self, conversation_id: str, items: Sequence[Item]) -> bool:
        async with self.driver.transaction() as tx:
            return await self._append(tx, conversation_id, items)

    async def list_items(self, conversation_id: str, after: str | None = None, limit: int | None = None,
                         descending: bool = False) -> ItemPage | None:
        order, compare = ("DESC", "<") if descending else ("ASC", ">")
        where = "conversation_id = $1"
        args: list = [conversation_id, (_ALL if limit is None else limit + 1)]
        if after is not None:
            where += (f" AND seq {compare} (SELECT seq FROM smg_conversation_items "
                      "WHERE conversation_id = $1 AND id = $3)")
            args.append(after)
        async with self.driver.transaction() as tx:
            if not await tx.fetch("SELECT 1 FROM smg_conversations WHERE id = $1", conversation_id):
                return None
            rows = await tx.fetch(f"SELECT item FROM smg_conversation_items WHERE {where} ORDER BY seq {order} "
                                  "LIMIT $2", *args)
        items = [_decode(row[0]) for row in rows]
        more = limit is not None and len(items) > limit
        return ItemPage(items[:limit] if more else items, more)

    async def get_item(self, conversation_id: str, item_id: str) -> Item | None:
        rows = await self.driver.fetch("SELECT item FROM smg_conversation_items WHERE conversation_id = $1 "
                                       "AND id = $2", conversation_id, item_id)
        return _decode(rows[0][0]) if rows else None

    async def delete_item(self, conversation_id: str, item_id: str) -> bool:
        return await self.driver.execute("DELETE FROM smg_conversation_items WHERE conversation_id = $1 AND id = $2",
                                         conversation_id, item_id) > 0
