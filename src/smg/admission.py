"""Admission control: how many generation requests run at once, how many wait, for how long, and
in what order (``max_concurrent_requests``, ``max_queue_size``, ``queue_timeout`` for the whole
gateway and per model; ``smg serve --max-concurrent-requests`` ...).

A request holds a slot of its model's gate (when the model has one), then of the gateway's, from
when its body is decoded until its answer ends (a stream: its last event, or its client going
away). When every slot is taken it waits in a bounded queue ordered by priority (higher first,
then arrival); a full queue, or a wait past ``queue_timeout``, is a 429 with ``Retry-After``,
never an unbounded queue. A request that waits on a busy model holds no slot of the gateway's.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol

from smg.errors import ModelNotFound, Overloaded
from smg.shared_state import SharedSlots
from smg.waiting import wait_within

if TYPE_CHECKING:
    from smg.config import GatewayConfig
    from smg.metrics import Metrics
    from smg.models import ModelRegistry
    from smg.shared_state import SharedState


class Slots(Protocol):
    """A gate's count of held slots: this process's (:class:`LocalSlots`) or a whole server's
    (:class:`smg.shared_state.SharedSlots`)."""

    limit: int

    @property
    def active(self) -> int: ...

    def try_take(self) -> bool: ...

    def give(self) -> None: ...


class LocalSlots:
    __slots__ = ("limit", "active")

    def __init__(self, limit: int) -> None:
        self.limit, self.active = limit, 0

    def try_take(self) -> bool:
        if self.active < self.limit:
            self.active += 1
            return True
        return False

    def give(self) -> None:
        self.active -= 1


# How often a process's waiters look for a slot another process freed (shared slots only: a slot
# freed in this process is handed on at once).
SHARED_POLL_INTERVAL = 0.005


class Gate:
    """At most ``limit`` holders; up to ``max_queue`` more wait (highest priority first, then
    arrival) for at most ``timeout`` seconds. ``slots``: the count to hold them in (this process's
    when not given); the queue is always this process's."""

    def __init__(self, name: str, limit: int, max_queue: int, timeout: float, metrics: "Metrics | None" = None,
                 slots: Slots | None = None) -> None:
        self.name, self.limit, self.max_queue, self.timeout = name, limit, max_queue, timeout
        self.metrics = metrics  # smg_queue_wait_seconds, smg_admission_rejected_total
        self.slots: Slots = slots if slots is not None else LocalSlots(limit)
        self._shared = slots is not None
        self.queued = 0  # requests waiting now
        self._waiting: list[tuple[int, int, asyncio.Future]] = []  # (-priority, arrival, future); some given up
        self._arrivals = itertools.count()
        self._poller: asyncio.Task | None = None

    @property
    def active(self) -> int:
        return self.slots.active

    async def enter(self, priority: int = 0) -> None:
        if not self.queued and self.slots.try_take():
            return
        if self.queued >= self.max_queue:
            self._rejected("queue_full")
            raise Overloaded(f"{self.name} is at capacity: {self.active} requests running and {self.queued} "
                             f"waiting; retry later", retry_after=1.0)
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (-priority, next(self._arrivals), future))
        self.queued += 1
        if self._shared and self._poller is None:
            self._poller = asyncio.create_task(self._poll())
        started = time.perf_counter()
        try:
            await wait_within(future, self.timeout)  # (a slot handed over stays held)
        except BaseException as exc:
            if future.done() and not future.cancelled():
                self.leave()  # handed a slot just as it gave up: the next waiter takes it
            if isinstance(exc, asyncio.TimeoutError):
                self._rejected("timeout")
                raise Overloaded(f"{self.name} is at capacity: the request waited {self.timeout:g} s for a slot; "
                                 f"retry later", retry_after=self.timeout) from None
            raise
        finally:
            self.queued -= 1
            if self.metrics is not None:  # (waits that ended in a slot, a timeout or a client leaving)
                self.metrics.observe("smg_queue_wait_seconds", time.perf_counter() - started)

    def _rejected(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.inc("smg_admission_rejected_total", gate=self.name, reason=reason)

    def _hand_on(self) -> None:
        """Give free slots to the first waiters still waiting."""
        while self._waiting:
            if self._waiting[0][2].done():  # (cancelled waiters: timed out, or their client went away)
                heapq.heappop(self._waiting)
            elif self.slots.try_take():
                heapq.heappop(self._waiting)[2].set_result(None)
            else:
                return

    async def _poll(self) -> None:
        try:
            while self._waiting:
                await asyncio.sleep(SHARED_POLL_INTERVAL)
                self._hand_on()
        finally:
            self._poller = None

    def leave(self) -> None:
        """Free a slot: the first waiter still waiting takes it."""
        self.slots.give()
        self._hand_on()


class Admission:
    """The gateway's gate and its models' (made when a model is first asked for, from its config).
    ``shared``: the server's state when its worker processes share the limits (else this
    process's limits are its own)."""

    def __init__(self, config: "GatewayConfig", models: "ModelRegistry", metrics: "Metrics | None" = None,
                 shared: "SharedState | None" = None) -> None:
        self.config, self.models, self.metrics, self.shared = config, models, metrics, shared
        self.gate = self._gate("the gateway", config.max_concurrent_requests, config.max_queue_size,
                               config.queue_timeout) if config.max_concurrent_requests is not None else None
        self.model_gates: dict[str, Gate | None] = {}

    def _gate(self, name: str, limit: int, max_queue: int, timeout: float) -> Gate:
        slots = SharedSlots(self.shared, name, limit) if self.shared is not None else None
        return Gate(name, limit, max_queue, timeout, self.metrics, slots)

    @staticmethod
    def wanted(config: "GatewayConfig") -> bool:
        """Whether the config sets any admission limit."""
        return config.max_concurrent_requests is not None or any(
            model.max_concurrent_requests is not None for model in config.model_configs())

    def _model_gate(self, model: str) -> Gate | None:
        try:
            served = self.models.resolve(model)[0]
        except ModelNotFound:
            return None  # (the route answers the 404)
        if served.name not in self.model_gates:
            limits, config = served.config, self.config
            self.model_gates[served.name] = self._gate(
                f"model {served.name!r}", limits.max_concurrent_requests,
                limits.max_queue_size if limits.max_queue_size is not None else config.max_queue_size,
                limits.queue_timeout if limits.queue_timeout is not None else config.queue_timeout,
            ) if limits.max_concurrent_requests is not None else None
        return self.model_gates[served.name]

    async def enter(self, model: str, priority: int) -> Callable[[], None]:
        """Wait for the request's slots (``model``: the name the request gives); the function
        that frees them."""
        held: list[Gate] = []
        try:
            for gate in (self._model_gate(model), self.gate):
                if gate is not None:
                    await gate.enter(priority)
                    held.append(gate)
        except BaseException:
            for gate in held:
                gate.leave()
            raise

        def leave() -> None:
            for gate in held:
                gate.leave()
            held.clear()  # (once)

        return leave


async def released(events: AsyncIterator[bytes], leave: Callable[[], None]) -> AsyncIterator[bytes]:
    """``events``, then the slots freed (when the stream ends or is closed)."""
    try:
        async for event in events:
            yield event
    finally:
        leave()
        await events.aclose()
