"""Following the engines' KV cache events (``SubscribeKvEvents``) for the ``kv_events`` policy.

One task per worker reads its event stream into the policy's :class:`~smg.policies.kv_index.KvIndex`
and each batch's load record into the worker's reported load. Sequence numbers decide what the
index can trust:

* the engine's batch 1 (a first subscription whose replay reaches back to it, or an engine that
  restarted), or the first chunk of a relay's snapshot: the worker's index starts afresh and is
  *live* (complete), unless the snapshot says the relay missed batches (``unknown_before``);
* the batch after the last one applied: applied;
* anything else (a gap: batches the engine no longer had to replay, or that a dropped stream
  lost): the index is reset, the worker *partial* (routed by the approximation), and the feed
  resubscribes once from the start to rebuild it from the engine's history if it still holds it.

A dropped stream is resumed after the last applied number (backoff 0.25 s doubling to 10 s); a
worker answering UNIMPLEMENTED is left to the approximation for good.

Without an index (``RoutingConfig.load_records`` under a policy that is not ``kv_events``) the
feed reads the load records alone: the engine's queue between ``GetLoads`` probes.
"""
from __future__ import annotations

import asyncio
import logging

import grpc

from smg.policies.kv_index import LIVE, PARTIAL, UNSUPPORTED, KvIndex

log = logging.getLogger("smg.kv_events")

RETRY_MIN, RETRY_MAX = 0.25, 10.0


class KvEventFeed:
    def __init__(self, index: KvIndex | None) -> None:
        """``index``: where the blocks go; None: only the load records are read."""
        self.index = index if index is not None else KvIndex()  # (then never consulted)
        self.load_only = index is None
        self._tasks: dict[str, asyncio.Task] = {}

    def follow(self, worker) -> None:
        """Start following ``worker`` (a :class:`smg.engines.pool.Worker`)."""
        if worker.url not in self._tasks:
            self.index.reset(worker.url, PARTIAL)
            self._tasks[worker.url] = asyncio.create_task(self._follow(worker), name=f"smg-kv-events {worker.url}")

    async def unfollow(self, url: str) -> None:
        task = self._tasks.pop(url, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.index.forget(url)

    async def close(self) -> None:
        for url in list(self._tasks):
            await self.unfollow(url)

    async def _follow(self, worker) -> None:
        index, url = self.index, worker.url
        state = {"last": 0, "rebuilding": False}
        delay = RETRY_MIN
        while True:
            call = worker.adapter.kv_events(state["last"])
            try:
                if await self._read(worker, call, state):
                    delay = RETRY_MIN
                    continue  # resubscribe from the start at once, to rebuild the index
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    index.reset(url, UNSUPPORTED)
                    return
                log.debug("KV events of %s: %s", url, exc)
            finally:
                call.cancel()
            await asyncio.sleep(delay)  # the stream ended or failed: resume after the last batch
            delay = min(delay * 2, RETRY_MAX)

    async def _read(self, worker, call, state: dict) -> bool:
        """Apply the batches of one subscription; True when a gap asks for a resubscription from the
        start (``state["last"]`` is then 0)."""
        index, url = self.index, worker.url
        async for batch in call:
            if batch.HasField("load"):
                worker.reported_load = float(batch.load.running_requests + batch.load.waiting_requests)
                if batch.load.load_only:
                    continue
            if self.load_only:
                continue
            number = batch.sequence_number
            snapshot = batch.snapshot if batch.HasField("snapshot") else None
            if number == 1 or (snapshot is not None and snapshot.index == 0):
                # the engine's first batch, or a relay's snapshot of its whole state (its first
                # chunk clears the worker's blocks, the rest list every live one)
                index.reset(url, LIVE)
            elif number != state["last"] + 1:
                log.info("KV events of %s: batch %d after %d; rebuilding its index", url, number, state["last"])
                index.reset(url, PARTIAL)
                if not state["rebuilding"]:  # once: a replay from the start, if the engine still has it
                    state["rebuilding"], state["last"] = True, 0
                    return True
            index.apply(url, batch.events)
            if snapshot is not None and snapshot.unknown_before:  # the relay missed the engine's start
                index.set_state(url, PARTIAL)
            state["last"] = number
            if index.live(url):
                state["rebuilding"] = False
        return False
