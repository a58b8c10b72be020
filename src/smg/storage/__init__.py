"""Stored responses and conversations (the Responses API's state): one interface,
:class:`~smg.storage.base.Storage`, and three backends picked by the storage URL (``memory``,
``sqlite:///file``, ``postgresql://...``; :class:`smg.config.StorageConfig`)."""
from __future__ import annotations

from smg.config import StorageConfig
from smg.storage.base import Conversation, Item, ItemPage, Storage, StoredResponse

__all__ = ["Conversation", "Item", "ItemPage", "Storage", "StoredResponse", "open_storage"]


def open_storage(config: StorageConfig) -> Storage:
    """The backend a storage URL names (not started: ``await storage.start()``)."""
    scheme, _, rest = config.url.partition(":")
    if scheme == "memory":
        from smg.storage.memory import MemoryStorage

        return MemoryStorage()
    from smg.storage.sql import SqlStorage

    if scheme == "sqlite":
        from smg.storage.sqlite import SqliteDriver

        # SQLAlchemy's form: sqlite:///relative/path, sqlite:////absolute/path
        return SqlStorage(SqliteDriver(rest[3:] if rest.startswith("///") else rest.lstrip("/"), config.timeout))
    from smg.storage.postgres import PostgresDriver

    return SqlStorage(PostgresDriver(config.url, config.pool_size, config.timeout))
