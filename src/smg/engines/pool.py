"""The worker pool: gRPC channels to engine workers, health, failover and cancellation.

* Each worker is a ``grpc.aio`` channel (unary RPCs) plus a protocol adapter, added or removed at
  run time; ``Generate`` streams over smg's own HTTP/2 client (``smg.engines.h2``) by default.
  On start (and on add) the pool asks the worker for its model info (model id, context length,
  tokenizer path, EOS ids).
* A background task probes health. A worker that fails a probe or a request with UNAVAILABLE is
  taken out of rotation and probed again after an exponential backoff (1 s doubling to 30 s): a
  circuit breaker. The pool counts requests in flight per worker and keeps the engine's reported
  load (``GetLoads``) for the policies.
* :meth:`WorkerPool.generate` streams :class:`EngineOutput`s. If the worker fails before anything
  was sent, the request is retried on another worker; after that the error is raised as a typed
  smg error. When the consumer stops early (client gone, stop string matched, timeout), closing the
  stream cancels the call **and sends Abort** for the request id, so the engine stops generating.
  Use ``async with contextlib.aclosing(pool.generate(req)) as stream`` (the Gateway does).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import AsyncIterator, Iterable

import grpc

from smg.access_log import CURRENT as ACCESS
from smg.config import PoolConfig
from smg.engines import adapter_class
from smg.engines.base import EngineAdapter, EngineOutput, GenerateRequest, ModelInfo, PushableCall, map_rpc_error
from smg.engines.h2 import H2Channel, StallLimits
from smg.errors import EngineUnavailable, InvalidRequest, NoHealthyWorker
from smg.engines.kv_events import KvEventFeed
from smg.policies import KvEventConsumer, Policy, RequestView, make_policy

log = logging.getLogger("smg.pool")

_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 256 << 20),
    ("grpc.max_receive_message_length", 256 << 20),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.http2.max_pings_without_data", 0),
]
_MAX_BACKOFF = 30.0
# A request that finds no healthy worker probes the down ones at once, each at most this often
# (requests arriving meanwhile share the probe under way): service returns within about this
# long of an engine, whatever the health loop's backoff.
PROBE_FLOOR = 0.25


def parse_url(url: str) -> str:
    """``grpc://host:port`` (or ``host:port``) -> the channel target ``host:port``."""
    target = url[len("grpc://"):] if url.startswith("grpc://") else url
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidRequest(f"worker url must look like grpc://host:port, got {url!r}")
    return target


@dataclass(eq=False)
class Worker:
    url: str
    engine: str
    adapter: EngineAdapter
    channel: grpc.aio.Channel
    healthy: bool = False
    in_flight: int = 0
    failures: int = 0
    next_probe: float = 0.0
    reported_load: float = 0.0
    model_info: ModelInfo | None = None
    last_error: str | None = None
    served: int = 0
    probe: asyncio.Future | None = None  # a probe under way
    probed_at: float = float("-inf")  # when the last probe began (time.monotonic)

    @property
    def load(self) -> float:
        """Requests on the engine: this gateway's in flight, or the engine's own count (other
        clients' work included) when that is higher."""
        return self.in_flight if self.in_flight >= self.reported_load else self.reported_load

    def mark_down(self, reason: str, probed: bool = False) -> None:
        """Out of rotation. An outage counts once, however many streams it fails: only a worker
        going down, or a probe of a down one failing (``probed``), lengthens the backoff."""
        self.last_error = reason
        if self.healthy or probed:
            self.healthy = False
            self.failures += 1
            self.next_probe = time.monotonic() + min(_MAX_BACKOFF, 2 ** (self.failures - 1))

    async def close(self) -> None:
        if self.adapter.streams is not None:
            await self.adapter.streams.close()
        await self.channel.close()

    def mark_up(self) -> None:
        self.healthy, self.failures, self.last_error = True, 0, None


class WorkerPool:
    """A set of engine workers behind one ``generate``."""

    def __init__(self, urls: Iterable[str] = (), config: PoolConfig | None = None,
                 policy: Policy | None = None) -> None:
        self.config = config or PoolConfig()
        self.policy = policy or make_policy(self.config.policy, self.config.routing)
        # a policy routing by the engines' KV events gets every worker's event stream; others, when
        # asked, the load records riding on it
        self._kv_feed = (KvEventFeed(self.policy.kv_index) if isinstance(self.policy, KvEventConsumer)
                         else KvEventFeed(None) if self.config.routing.load_records else None)
        self._workers: dict[str, Worker] = {}
        self._pending_urls = [(u, self.config.default_engine) for u in urls]
        self._health_task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()
        self._closed = False
        self.retries = 0  # attempts made again on another worker (nothing had been sent)

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> "WorkerPool":
        for url, engine in self._pending_urls:
            await self.add_worker(url, engine)
        self._pending_urls = []
        if self._health_task is None:
            self._health_task = asyncio.create_task(self._health_loop(), name="smg-pool-health")
        return self

    async def close(self) -> None:
        self._closed = True
        if self._kv_feed is not None:
            await self._kv_feed.close()
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
            self._health_task = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for worker in list(self._workers.values()):
            await worker.close()
        self._workers.clear()

    async def __aenter__(self) -> "WorkerPool":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # ---- membership -----------------------------------------------------------------------------

    async def add_worker(self, url: str, engine: str | None = None) -> Worker:
        """Connect to a worker and ask for its model info; it joins the rotation once healthy."""
        target = parse_url(url)
        if url in self._workers:
            return self._workers[url]
        engine = engine or self.config.default_engine
        channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        config = self.config
        stall = (StallLimits(config.first_token_timeout, config.inter_token_timeout)
                 if config.first_token_timeout or config.inter_token_timeout else None)
        streams = (H2Channel(target, config.read_interval, config.connect_timeout, stall)
                   if config.stream_transport == "h2" else None)
        worker = Worker(url, engine, adapter_class(engine)(channel, streams), channel)
        self._workers[url] = worker
        await self._probe(worker, discover=True)
        if self._kv_feed is not None:
            self._kv_feed.follow(worker)
        return worker

    async def remove_worker(self, url: str, grace: float = 30.0) -> None:
        """Take a worker out of rotation at once; close it when its requests in flight have
        finished (or after ``grace`` seconds, which cancels them)."""
        worker = self._workers.pop(url, None)
        if worker is None:
            raise InvalidRequest(f"no worker {url!r} in this pool")
        self.policy.on_removed(worker)
        if self._kv_feed is not None:
            await self._kv_feed.unfollow(url)
        await _drained([worker], grace)
        await worker.close()

    async def drain(self, grace: float = 30.0) -> None:
        """Wait until no request is in flight on any worker (at most ``grace`` seconds)."""
        await _drained(list(self._workers.values()), grace)

    @property
    def workers(self) -> list[Worker]:
        return list(self._workers.values())

    def has_worker(self, url: str) -> bool:
        return url in self._workers

    def healthy_workers(self) -> list[Worker]:
        return [w for w in self._workers.values() if w.healthy]

    def model_info(self) -> ModelInfo | None:
        """Model info of the first worker that reported one."""
        return next((w.model_info for w in self._workers.values() if w.model_info is not None), None)

    # ---- health ---------------------------------------------------------------------------------

    async def _probe(self, worker: Worker, discover: bool = False) -> None:
        timeout = self.config.health_timeout
        worker.probed_at = time.monotonic()
        try:
            ok = await worker.adapter.health(timeout)
            if discover or worker.model_info is None:
                worker.model_info = await worker.adapter.model_info(timeout)
            try:
                loads = await worker.adapter.loads(timeout)
                aggregate = loads.get("aggregate", {})
                worker.reported_load = float(aggregate.get("total_running_reqs", 0)) + float(
                    aggregate.get("total_waiting_reqs", 0))
            except grpc.RpcError:
                pass  # GetLoads is optional for the policies
        except grpc.RpcError as exc:
            worker.mark_down(str(map_rpc_error(exc, worker.url)), probed=True)
            return
        if ok:
            worker.mark_up()
        else:
            worker.mark_down("engine reports unhealthy", probed=True)

    async def _revive(self) -> None:
        """No healthy worker: probe the down ones now (see ``PROBE_FLOOR``)."""
        now = time.monotonic()
        probes = []
        for worker in self._workers.values():
            if worker.probe is None and now - worker.probed_at >= PROBE_FLOOR:
                worker.probe = asyncio.ensure_future(self._probe(worker))
                worker.probe.add_done_callback(lambda _, w=worker: setattr(w, "probe", None))
            if worker.probe is not None:
                probes.append(worker.probe)
        if probes:
            await asyncio.wait(probes)

    async def _health_loop(self) -> None:
        while not self._closed:
            now = time.monotonic()
            due = [w for w in self._workers.values() if w.healthy or w.next_probe <= now]
            if due:
                await asyncio.gather(*(self._probe(w) for w in due), return_exceptions=True)
            await asyncio.sleep(min(self.config.health_interval, 1.0) if any(
                not w.healthy for w in self._workers.values()) else self.config.health_interval)

    # ---- requests -------------------------------------------------------------------------------

    def pick(self, view: RequestView, exclude: Iterable[Worker] = ()) -> Worker:
        """The policy's choice among the healthy workers not in ``exclude``."""
        candidates = [w for w in self._workers.values() if w.healthy and w not in exclude]
        if not candidates:
            if not self._workers:
                raise NoHealthyWorker("no engine worker is configured")
            raise NoHealthyWorker("no healthy engine worker: " + "; ".join(
                f"{w.url}: {w.last_error or 'unhealthy'}" for w in self._workers.values()))
        return self.policy.select(view, candidates)

    async def choose(self, view: RequestView, exclude: Iterable[Worker] = ()) -> Worker:
        """:meth:`pick`, after probing the down workers at once when none is healthy (so service
        returns within about ``PROBE_FLOOR`` of an engine coming back)."""
        try:
            return self.pick(view, exclude)
        except NoHealthyWorker:
            if not self._workers:
                raise
            await self._revive()
            return self.pick(view, exclude)

    def generate(self, request: GenerateRequest, worker: Worker | None = None) -> "EngineStream":
        """Stream the engine's outputs for ``request`` (see the module docstring)."""
        return EngineStream(self, request, worker)

    async def _outputs(self, request: GenerateRequest, worker: Worker | None,
                       stream: "EngineStream") -> AsyncIterator[EngineOutput]:
        tried: list[Worker] = []
        attempts = 0
        view = RequestView(request.input_ids, request.routing_key)
        policy = self.policy
        access = ACCESS.get()  # the request's record: its routing is a stage of its trace
        metadata = access.engine_metadata if access is not None else ()
        while True:
            attempts += 1
            if worker is not None:
                target = worker
            else:
                routing = time.monotonic()
                target = await self.choose(view, tried)
                policy.on_routed(view, target)
                if access is not None:
                    access.stage("route", routing, time.monotonic())
            tried.append(target)
            call = target.adapter.call_generate(target.adapter.build(request), self.config.request_timeout,
                                                request.stream, metadata)
            stream.call, stream.worker = call, target
            target.in_flight += 1
            sent = False
            open_sequences = set(range(request.sampling.n))
            try:
                async for output in call:
                    if output.finished:
                        open_sequences.discard(output.index)
                        if not open_sequences:  # served, though the consumer may stop before the trailers
                            target.served += 1
                    sent = True
                    yield output
                return
            except grpc.RpcError as exc:
                error = map_rpc_error(exc, target.url)
                if isinstance(error, EngineUnavailable):
                    target.mark_down(str(error))
                if sent or worker is not None or attempts >= self.config.max_attempts or not isinstance(
                        error, EngineUnavailable):
                    raise error from None
                self.retries += 1
                log.warning("retrying %s on another worker: %s", request.request_id, error)
            finally:
                target.in_flight -= 1
                if worker is None:
                    policy.on_finished(view, target)
                if open_sequences and not call.done():
                    # The consumer stopped early (or the call failed): stop the engine too.
                    call.cancel()
                    self.abort_later(target, request.request_id)

    def abort_later(self, worker: Worker, request_id: str) -> None:
        """Send Abort for ``request_id`` to ``worker`` in the background (errors logged)."""
        async def abort() -> None:
            try:
                await worker.adapter.abort(request_id)
            except grpc.RpcError as exc:
                log.debug("abort of %s on %s failed: %s", request_id, worker.url, exc)

        try:
            task = asyncio.get_running_loop().create_task(abort())
        except RuntimeError:  # no loop (stream garbage-collected at shutdown): nothing to tell
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def stats(self) -> list[dict]:
        return [{"url": w.url, "engine": w.engine, "healthy": w.healthy, "in_flight": w.in_flight,
                 "failures": w.failures, "served": w.served, "reported_load": w.reported_load,
                 "last_error": w.last_error, "model": w.model_info.model_id if w.model_info else None}
                for w in self._workers.values()]


async def _drained(workers: list[Worker], grace: float) -> None:
    deadline = time.monotonic() + grace
    while any(w.in_flight for w in workers) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


class EngineStream:
    """One request's engine outputs: an async iterator (``async for``, ``aclose``), and the call
    that carries them now (``call``: a retry replaces it), which a consumer may read directly from
    the connection's data path between steps when it is a :class:`PushableCall`."""

    __slots__ = ("call", "worker", "_outputs")

    def __init__(self, pool: WorkerPool, request: GenerateRequest, worker: Worker | None) -> None:
        self.call = None
        self.worker: Worker | None = None  # the worker serving it now (set with its call)
        self._outputs = pool._outputs(request, worker, self)

    def __aiter__(self) -> AsyncIterator[EngineOutput]:
        return self._outputs  # iterated directly: no frame of this class per output

    async def aclose(self) -> None:
        await self._outputs.aclose()

    def pushable(self) -> PushableCall | None:
        """The live call, when its outputs can be taken from the data path."""
        return self.call if isinstance(self.call, PushableCall) else None
