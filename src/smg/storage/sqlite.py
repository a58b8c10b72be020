"""SQLite storage (the embedded default of ``smg serve``): one file, WAL journal, one connection
used from one thread, so no call ever blocks the event loop (a slow disk delays only storage
calls, never token streams)."""
from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator

from smg.errors import InvalidRequest, StorageUnavailable
from smg.waiting import wait_within

MIGRATIONS = (
    ("CREATE TABLE smg_responses (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, previous_response_id TEXT, "
     "conversation_id TEXT, body TEXT NOT NULL, input TEXT NOT NULL)",
     "CREATE TABLE smg_conversations (id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, metadata TEXT NOT NULL)",
     "CREATE TABLE smg_conversation_items (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
     "conversation_id TEXT NOT NULL REFERENCES smg_conversations (id), id TEXT NOT NULL, item TEXT NOT NULL)",
     "CREATE UNIQUE INDEX smg_conversation_items_id ON smg_conversation_items (conversation_id, id)"),
)

_PARAM = re.compile(r"\$(\d+)")


class _Transaction:
    """Statements run on the connection's thread, one hop each; the ``BEGIN`` goes with the
    first (a hop costs more than a statement)."""

    def __init__(self, driver: "SqliteDriver") -> None:
        self.driver = driver
        self.begun = False

    async def _run(self, work):
        if not self.begun:
            self.begun = True
            statement = work

            def work(db):
                db.execute("BEGIN IMMEDIATE")
                return statement(db)

        return await self.driver.call(work)

    async def fetch(self, sql: str, *args) -> list:
        return await self._run(lambda db: db.execute(self.driver.sql(sql), args).fetchall())

    async def execute(self, sql: str, *args) -> int:
        return await self._run(lambda db: db.execute(self.driver.sql(sql), args).rowcount)

    async def end(self, statement: str) -> None:
        """COMMIT or ROLLBACK what was begun."""
        if self.begun:
            self.begun = False
            await self.driver.call(lambda db: db.execute(statement))


class SqliteDriver:
    migrations = MIGRATIONS

    def __init__(self, path: str | Path, timeout: float = 10.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="smg-sqlite")
        self._lock = asyncio.Lock()  # one transaction at a time on the one connection
        self._statements: dict[str, str] = {}

    def sql(self, statement: str) -> str:
        """``$1``-style parameters as SQLite's ``?1``."""
        converted = self._statements.get(statement)
        if converted is None:
            converted = self._statements[statement] = _PARAM.sub(r"?\1", statement)
        return converted

    async def call(self, work):
        if self._db is None:
            raise StorageUnavailable("the sqlite storage is closed")
        db = self._db
        try:
            return await wait_within(asyncio.get_running_loop().run_in_executor(self._thread, work, db),
                                     self.timeout)
        except sqlite3.IntegrityError as exc:
            raise InvalidRequest(f"conflicts with what is stored: {exc}") from None
        except (sqlite3.Error, OSError, asyncio.TimeoutError) as exc:
            raise StorageUnavailable(f"sqlite storage {self.path}: {exc or 'timed out'}") from None

    async def connect(self) -> None:
        if sqlite3.sqlite_version_info < (3, 35):  # UPDATE ... RETURNING
            raise StorageUnavailable(f"the sqlite storage needs SQLite 3.35 or newer, this Python has "
                                     f"{sqlite3.sqlite_version}")

        def open_db() -> sqlite3.Connection:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
            db.execute("PRAGMA foreign_keys=ON")
            return db

        try:
            self._db = await asyncio.get_running_loop().run_in_executor(self._thread, open_db)
        except (sqlite3.Error, OSError) as exc:
            raise StorageUnavailable(f"cannot open sqlite storage {self.path}: {exc}") from None

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, db.close)
        self._thread.shutdown(wait=False)

    async def fetch(self, sql: str, *args) -> list:
        """One statement, its own transaction (one hop)."""
        async with self._lock:
            return await self.call(lambda db: db.execute(self.sql(sql), args).fetchall())

    async def execute(self, sql: str, *args) -> int:
        async with self._lock:
            return await self.call(lambda db: db.execute(self.sql(sql), args).rowcount)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Transaction]:
        async with self._lock:
            tx = _Transaction(self)
            try:
                yield tx
                await tx.end("COMMIT")
            except BaseException:
                with contextlib.suppress(StorageUnavailable, InvalidRequest):
                    await tx.end("ROLLBACK")
                raise
