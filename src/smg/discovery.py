"""Engine workers found while serving: from a watched file, or from DNS (``discovery`` in the
config; ``smg serve --worker-file PATH``, ``--worker-dns NAME:PORT``).

Each source is looked at every ``interval`` seconds and gives the set of workers it lists now.
Against the set it gave before:

* a new worker is added to its model's pool, which probes it: it takes requests once healthy;
* a worker no longer listed is drained: out of rotation at once, its requests in flight finish,
  then it is closed.

A source touches only the workers it added (those in the config stay). When a look fails (a
file that does not parse, a name that does not resolve), the source logs it and keeps its last
set: a typo, or a DNS hiccup, drains nothing.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

from smg.config import ENGINES, WORKER_ROLES, ConfigError, DiscoveryConfig, read_config_file
from smg.errors import SmgError

if TYPE_CHECKING:
    from smg.gateway import Gateway

log = logging.getLogger("smg.discovery")

DEFAULT_INTERVALS = {"file": 1.0, "dns": 10.0}


class Found(NamedTuple):
    """A worker a source lists: its model (None: the gateway's default), URL, role and engine."""

    model: str | None
    url: str
    role: str = "regular"
    engine: str | None = None


class WorkerSource(Protocol):
    """Where workers are listed; ``look()`` is the set listed now (``SmgError`` when it cannot say)."""

    def describe(self) -> str: ...

    async def look(self) -> set[Found]: ...


class FileSource:
    """A JSON or TOML file: ``{"workers": [...]}`` or the bare list, each worker ``{"url", "model",
    "role", "engine"}`` (``url`` alone is enough). Read again when its modification time changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._last: set[Found] = set()

    def describe(self) -> str:
        return f"the worker file {self.path}"

    async def look(self) -> set[Found]:
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            raise SmgError(f"cannot read {self.path}: {exc.strerror}") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return self._last
        loaded = read_config_file(self.path, "worker file")
        entries = loaded.get("workers") if isinstance(loaded, dict) else loaded
        if not isinstance(entries, list):
            raise ConfigError(f"worker file {self.path}: expected a list of workers (or a 'workers' list)")
        found = set()
        for entry in entries:
            if isinstance(entry, str):
                entry = {"url": entry}
            if not isinstance(entry, dict) or not isinstance(entry.get("url"), str) or set(entry) - {
                    "url", "model", "role", "engine"}:
                raise ConfigError(f"worker file {self.path}: a worker is a URL or {{url, model, role, engine}}, "
                                  f"got {entry!r}")
            role, engine = entry.get("role", "regular"), entry.get("engine")
            if role not in WORKER_ROLES or (engine is not None and engine not in ENGINES):
                raise ConfigError(f"worker file {self.path}: {entry['url']}: role must be one of "
                                  f"{', '.join(WORKER_ROLES)} and engine one of {', '.join(ENGINES)}")
            found.add(Found(entry.get("model"), entry["url"], role, engine))
        self._stamp, self._last = stamp, found
        return found


Resolve = Callable[[str, int], Awaitable[list[str]]]


async def resolve_addresses(name: str, port: int) -> list[str]:
    """The addresses ``name`` resolves to (A and AAAA), as the system's resolver gives them."""
    infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


class DnsSource:
    """A name that resolves to one address per engine (a Kubernetes headless service), each a
    worker on ``port``."""

    def __init__(self, config: DiscoveryConfig, resolve: Resolve = resolve_addresses) -> None:
        self.config, self.resolve = config, resolve

    def describe(self) -> str:
        return f"DNS name {self.config.name}"

    async def look(self) -> set[Found]:
        config = self.config
        try:
            addresses = await self.resolve(config.name, config.port)
        except OSError as exc:  # (socket.gaierror: no such name, no answer)
            raise SmgError(f"cannot resolve {config.name}: {exc}") from None
        return {Found(config.model, f"grpc://{f'[{a}]' if ':' in a else a}:{config.port}", config.role, config.engine)
                for a in addresses}


def make_source(config: DiscoveryConfig) -> WorkerSource:
    return FileSource(config.path) if config.kind == "file" else DnsSource(config)


class Discovery:
    """The gateway's sources, each looked at in a task of its own."""

    def __init__(self, gateway: "Gateway", sources: list[tuple[WorkerSource, float]]) -> None:
        self.gateway = gateway
        self.sources = sources
        self._tasks: list[asyncio.Task] = []
        self._draining: set[asyncio.Task] = set()

    @classmethod
    def from_config(cls, gateway: "Gateway") -> "Discovery":
        return cls(gateway, [(make_source(c), c.interval or DEFAULT_INTERVALS[c.kind])
                             for c in gateway.config.discovery])

    async def start(self) -> None:
        """The first look of every source (so a gateway starts with the workers listed), then the
        watching tasks."""
        owned = [dict() for _ in self.sources]
        await asyncio.gather(*(self._look(source, mine) for (source, _), mine in zip(self.sources, owned)))
        self._tasks = [asyncio.create_task(self._watch(source, interval, mine), name="smg-discovery")
                       for (source, interval), mine in zip(self.sources, owned)]

    async def close(self) -> None:
        for task in (*self._tasks, *self._draining):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._draining, return_exceptions=True)

    async def _watch(self, source: WorkerSource, interval: float, mine: dict[Found, str]) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._look(source, mine)

    async def _look(self, source: WorkerSource, mine: dict[Found, str]) -> None:
        """Apply what the source lists now; ``mine``: the workers it added (-> the model's name)."""
        try:
            listed = await source.look()
        except SmgError as exc:
            log.error("%s: %s; keeping its last %d worker(s)", source.describe(), exc.message, len(mine))
            return
        for found in [f for f in mine if f not in listed]:
            model = mine.pop(found)
            task = asyncio.create_task(self._drain(model, found))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        added = [f for f in listed if f not in mine]
        results = await asyncio.gather(*(self._add(f) for f in added), return_exceptions=True)
        for found, result in zip(added, results):
            if isinstance(result, BaseException):
                log.error("%s lists %s for model %s, which cannot be added: %s", source.describe(), found.url,
                          found.model or "(default)", getattr(result, "message", result))
            else:
                mine[found] = result

    async def _add(self, found: Found) -> str:
        gateway = self.gateway
        served = gateway.models.get(found.model) if found.model else gateway.default_model
        if any(w.url == found.url for w in served.pool.workers):  # (the config's, or another source's)
            raise SmgError("the model has that worker already")
        await gateway.add_worker(served.name, found.url, found.engine, found.role)
        log.info("added worker %s (%s) to model %s", found.url, found.role, served.name)
        return served.name

    async def _drain(self, model: str, found: Found) -> None:
        try:
            await self.gateway.remove_worker(model, found.url)
            log.info("drained worker %s of model %s: no longer listed", found.url, model)
        except SmgError as exc:  # (the model or the worker was removed meanwhile)
            log.info("worker %s of model %s: %s", found.url, model, exc.message)
