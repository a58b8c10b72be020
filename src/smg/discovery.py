"""Engine workers found while serving: from a watched file, DNS, or the Kubernetes API
(``discovery`` in the config; ``smg serve --worker-file PATH``, ``--worker-dns NAME:PORT``,
``--worker-pods NAMESPACE/SELECTOR``).

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
import json
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

DEFAULT_INTERVALS = {"file": 1.0, "dns": 10.0, "kubernetes": 1.0}


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

    async def close(self) -> None: ...


class FileSource:
    """A JSON or TOML file: ``{"workers": [...]}`` or the bare list, each worker ``{"url", "model",
    "role", "engine"}`` (``url`` alone is enough). Read again when its modification time changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._last: set[Found] = set()

    def describe(self) -> str:
        return f"the worker file {self.path}"

    async def close(self) -> None:
        pass  # (nothing held between looks)

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

    async def close(self) -> None:
        pass  # (nothing held between looks)

    async def look(self) -> set[Found]:
        config = self.config
        try:
            addresses = await self.resolve(config.name, config.port)
        except OSError as exc:  # (socket.gaierror: no such name, no answer)
            raise SmgError(f"cannot resolve {config.name}: {exc}") from None
        return {Found(config.model, f"grpc://{f'[{a}]' if ':' in a else a}:{config.port}", config.role, config.engine)
                for a in addresses}


SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


class KubernetesSource:
    """Pods of a namespace selected by labels (the Kubernetes API: a list, then a watch of its
    changes, listed again when the watch ends or fails). A pod is a worker while it is Running,
    Ready and has an IP; its port is its ``port_annotation``'s value, else ``port``. Its model,
    role and engine are the config's, or the pod's ``smg.ai/model``, ``smg.ai/role`` and
    ``smg.ai/engine`` annotations. In a cluster it finds the API server and its credentials as
    every pod does (``KUBERNETES_SERVICE_HOST``, the service account's token and CA); outside,
    ``api_server`` and ``token_file``."""

    def __init__(self, config: DiscoveryConfig) -> None:
        self.config = config
        self.pods: dict[str, Found] = {}  # pod name -> worker
        self._synced = False
        self._failure: str | None = None
        self._watcher: asyncio.Task | None = None

    def describe(self) -> str:
        return f"Kubernetes pods {self.config.label_selector!r} in {self.config.namespace}"

    async def look(self) -> set[Found]:
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="smg-discovery-kubernetes")
            while not self._synced and self._failure is None:  # (the first look waits for the first list)
                await asyncio.sleep(0.02)
        if not self._synced:
            raise SmgError(self._failure or "not listed yet")
        return set(self.pods.values())

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)

    def _client(self):
        import httpx

        config = self.config
        server = config.api_server
        verify: object = True
        token_file = config.token_file
        if server is None:
            host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise SmgError("not in a Kubernetes cluster: give the discovery entry an api_server")
            server = f"https://{f'[{host}]' if ':' in host else host}:{port}"
            token_file = token_file or f"{SERVICE_ACCOUNT}/token"
            verify = f"{SERVICE_ACCOUNT}/ca.crt"
        headers = {}
        if token_file:
            with open(token_file, encoding="utf-8") as handle:  # (read anew at each list: tokens rotate)
                headers["authorization"] = f"Bearer {handle.read().strip()}"
        return httpx.AsyncClient(base_url=server, headers=headers, verify=verify, timeout=httpx.Timeout(10, read=None))

    def _found(self, pod: dict) -> Found | None:
        config, meta, status = self.config, pod.get("metadata", {}), pod.get("status", {})
        annotations = meta.get("annotations") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ())
        address = status.get("podIP")
        if status.get("phase") != "Running" or not ready or not address or meta.get("deletionTimestamp"):
            return None
        port = annotations.get(config.port_annotation) or config.port
        if port is None or not str(port).isdigit():
            log.warning("pod %s has no port (annotation %s)", meta.get("name"), config.port_annotation)
            return None
        host = f"[{address}]" if ":" in address else address
        return Found(annotations.get("smg.ai/model", config.model), f"grpc://{host}:{port}",
                     annotations.get("smg.ai/role", config.role), annotations.get("smg.ai/engine", config.engine))

    async def _watch(self) -> None:
        import httpx

        path = f"/api/v1/namespaces/{self.config.namespace}/pods"
        backoff = 1.0
        while True:
            try:
                async with self._client() as client:
                    params = {"labelSelector": self.config.label_selector}
                    listed = await client.get(path, params=params)
                    listed.raise_for_status()
                    body = listed.json()
                    pods = {}
                    for pod in body.get("items") or ():
                        found = self._found(pod)
                        if found is not None:
                            pods[pod["metadata"]["name"]] = found
                    self.pods, self._synced, self._failure, backoff = pods, True, None, 1.0
                    params |= {"watch": "1", "resourceVersion": body["metadata"]["resourceVersion"],
                               "allowWatchBookmarks": "true"}
                    async with client.stream("GET", path, params=params) as events:
                        events.raise_for_status()
                        async for line in events.aiter_lines():
                            if line.strip():
                                self._event(json.loads(line))
            except asyncio.CancelledError:
                raise
            except (httpx.HTTPError, OSError, ValueError, KeyError, SmgError) as exc:
                self._failure = f"{type(exc).__name__}: {exc}"
                log.warning("%s: %s; listing again in %g s", self.describe(), self._failure, backoff)
                await asyncio.sleep(backoff)
                backoff = min(30.0, backoff * 2)

    def _event(self, event: dict) -> None:
        kind, pod = event.get("type"), event.get("object") or {}
        if kind == "ERROR":  # (410 Gone: the version is too old to watch from; list again)
            raise SmgError(f"the watch ended: {pod.get('message', pod)}")
        name = (pod.get("metadata") or {}).get("name")
        if kind not in ("ADDED", "MODIFIED", "DELETED") or not name:
            return  # (BOOKMARK)
        found = self._found(pod) if kind != "DELETED" else None
        if found is None:
            self.pods.pop(name, None)
        else:
            self.pods[name] = found


def make_source(config: DiscoveryConfig) -> WorkerSource:
    if config.kind == "file":
        return FileSource(config.path)
    return DnsSource(config) if config.kind == "dns" else KubernetesSource(config)


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
        for source, _ in self.sources:
            await source.close()

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
