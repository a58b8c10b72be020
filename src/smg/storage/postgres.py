"""PostgreSQL storage: asyncpg with a connection pool; JSON columns are ``jsonb``. The pool is made
at start; if the server is down then, or goes down later, calls answer 503 and the pool is made
again at the next call."""
from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

from smg.errors import InvalidRequest, StorageUnavailable

MIGRATIONS = (
    ("CREATE TABLE smg_responses (id TEXT PRIMARY KEY, created_at BIGINT NOT NULL, previous_response_id TEXT, "
     "conversation_id TEXT, body JSONB NOT NULL, input JSONB NOT NULL)",
     "CREATE TABLE smg_conversations (id TEXT PRIMARY KEY, created_at BIGINT NOT NULL, metadata JSONB NOT NULL)",
     "CREATE TABLE smg_conversation_items (seq BIGSERIAL PRIMARY KEY, "
     "conversation_id TEXT NOT NULL REFERENCES smg_conversations (id), id TEXT NOT NULL, item JSONB NOT NULL)",
     "CREATE UNIQUE INDEX smg_conversation_items_id ON smg_conversation_items (conversation_id, id)"),
)


def _rowcount(status: str) -> int:
    """The row count of a command tag (``DELETE 1``, ``UPDATE 0``, ``INSERT 0 1``)."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class _Transaction:
    def __init__(self, connection, timeout: float) -> None:
        self.connection, self.timeout = connection, timeout

    async def fetch(self, sql: str, *args) -> list:
        return await self.connection.fetch(sql, *args, timeout=self.timeout)

    async def execute(self, sql: str, *args) -> int:
        return _rowcount(await self.connection.execute(sql, *args, timeout=self.timeout))


class PostgresDriver:
    migrations = MIGRATIONS

    def __init__(self, url: str, pool_size: int = 8, timeout: float = 10.0) -> None:
        self.url, self.pool_size, self.timeout = url, pool_size, timeout
        self._pool = None
        self._connecting = asyncio.Lock()

    @staticmethod
    async def _init(connection) -> None:
        # JSON travels as text both ways: smg.storage.sql encodes and decodes it (msgspec)
        for kind in ("json", "jsonb"):
            await connection.set_type_codec(kind, encoder=str, decoder=str, schema="pg_catalog")

    async def connect(self) -> None:
        import asyncpg

        async with self._connecting:
            if self._pool is not None:
                return
            try:
                self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.pool_size,
                                                       init=self._init, timeout=self.timeout)
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise StorageUnavailable(f"cannot reach the postgres storage: {exc or 'timed out'}") from None

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def fetch(self, sql: str, *args) -> list:
        """One statement, its own (implicit) transaction: one round trip, no BEGIN/COMMIT."""
        async with self._connection() as connection:
            return await _Transaction(connection, self.timeout).fetch(sql, *args)

    async def execute(self, sql: str, *args) -> int:
        async with self._connection() as connection:
            return await _Transaction(connection, self.timeout).execute(sql, *args)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Transaction]:
        async with self._connection() as connection:
            async with connection.transaction():
                yield _Transaction(connection, self.timeout)

    @contextlib.asynccontextmanager
    async def _connection(self):
        """A pooled connection; the driver's failures as smg's errors."""
        import asyncpg

        if self._pool is None:
            await self.connect()
        try:
            async with self._pool.acquire(timeout=self.timeout) as connection:
                yield connection
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise InvalidRequest(f"conflicts with what is stored: {exc}") from None
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StorageUnavailable(f"postgres storage: {exc or 'timed out'}") from None
