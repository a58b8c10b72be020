"""Stored responses and conversations (the Responses API's state): one interface,
:class:`~smg.storage.base.Storage`, and three backends picked by the storage URL (``memory``,
``sqlite:///file``, ``postgresql://...``; :class:`smg.config.StorageConfig`)."""
from __future__ import annotations

from smg.config import StorageConfig
from smg.storage.base import Conversation, Item, ItemPage, Storage, StoredResponse

__all__ = ["Conversation", "Item", "ItemPage", "Storage", "StoredResponse", "open_storage"]


def _memory(config: StorageConfig, location: str) -> Storage:
    from smg.storage.memory import MemoryStorage

    return MemoryStorage()


def _sqlite(config: StorageConfig, location: str) -> Storage:
    from smg.storage.sql import SqlStorage
    from smg.storage.sqlite import SqliteDriver

    # SQLAlchemy's form: sqlite:///relative/path, sqlite:////absolute/path
    path = location[3:] if location.startswith("///") else location.lstrip("/")
    return SqlStorage(SqliteDriver(path, config.timeout))


def _postgres(config: StorageConfig, location: str) -> Storage:
    from smg.storage.postgres import PostgresDriver
    from smg.storage.sql import SqlStorage

    return SqlStorage(PostgresDriver(config.url, config.pool_size, config.timeout))


# URL scheme -> backend (imported when used: asyncpg only for postgres)
BACKENDS = {"memory": _memory, "sqlite": _sqlite, "postgresql": _postgres, "postgres": _postgres}


def open_storage(config: StorageConfig) -> Storage:
    """The backend a storage URL names (not started: ``await storage.start()``)."""
    scheme, _, location = config.url.partition(":")
    return BACKENDS[scheme](config, location)
