"""Prefill/decode (PD) disaggregation: a model served by prefill workers and decode workers.

A request goes to a (prefill, decode) pair, each chosen by its side's policy among its healthy
workers. Both halves get the same request with SGLang's disaggregation parameters: the prefill
worker's host and bootstrap port, and a room number drawn for the request; the prefill engine
computes the prompt's KV and hands it over under that room, the decode engine fetches it and
streams the output, which is what the client gets. The prefill half's own stream is read to its
end and dropped. When the client goes away, or either half fails, both calls are cancelled and
both engines get Abort; a failure is raised as the typed error of the half that failed. There are
no retries: a half that fails before output is an error to the client, and its worker is taken
out of rotation as in a plain pool.

SGLang's protocol only (its engines take both halves at once); vLLM's sequential, NIXL-relayed
handover is not implemented.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from typing import AsyncIterator, Iterable

import grpc

from smg.config import PoolConfig
from smg.engines.base import EngineOutput, GenerateRequest, ModelInfo, map_rpc_error
from smg.engines.pool import EngineStream, Worker, WorkerPool
from smg.errors import EngineUnavailable, InvalidRequest
from smg.policies import Policy, RequestView

PREFILL_TRAILERS_GRACE = 1.0  # seconds a finished request waits for the prefill half's stream to end


def bootstrap_host(url: str) -> str:
    """The host part of a worker URL (``grpc://host:port``)."""
    target = url[len("grpc://"):] if url.startswith("grpc://") else url
    host = target.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") else host


class DisaggregatedPool:
    """Prefill workers and decode workers behind one ``generate`` (see the module docstring); it
    answers what the gateway asks of a :class:`WorkerPool`."""

    def __init__(self, prefill: Iterable[str], decode: Iterable[str], config: PoolConfig | None = None,
                 bootstrap_port: int = 8998, prefill_policy: Policy | None = None,
                 decode_policy: Policy | None = None) -> None:
        self.config = config or PoolConfig()
        if self.config.default_engine != "sglang":
            raise InvalidRequest(f"prefill/decode disaggregation takes SGLang engines; {self.config.default_engine} "
                                 "is not supported")
        self.prefill = WorkerPool(prefill, self.config, prefill_policy)
        self.decode = WorkerPool(decode, self.config, decode_policy)
        self.bootstrap_port = bootstrap_port
        self._rooms = random.SystemRandom()

    @property
    def policy(self) -> Policy:
        """The decode side's policy (what serves the client's stream)."""
        return self.decode.policy

    async def start(self) -> "DisaggregatedPool":
        await asyncio.gather(self.prefill.start(), self.decode.start())
        return self

    async def close(self) -> None:
        await asyncio.gather(self.prefill.close(), self.decode.close())

    async def __aenter__(self) -> "DisaggregatedPool":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def workers(self) -> list[Worker]:
        return self.prefill.workers + self.decode.workers

    @property
    def retries(self) -> int:
        return self.prefill.retries + self.decode.retries

    def healthy_workers(self) -> list[Worker]:
        """The healthy workers, when both sides have one (else none: nothing can be served)."""
        prefill, decode = self.prefill.healthy_workers(), self.decode.healthy_workers()
        return prefill + decode if prefill and decode else []

    def model_info(self) -> ModelInfo | None:
        return self.decode.model_info() or self.prefill.model_info()

    def stats(self) -> list[dict]:
        return ([{**s, "role": "prefill"} for s in self.prefill.stats()]
                + [{**s, "role": "decode"} for s in self.decode.stats()])

    async def drain(self, grace: float = 30.0) -> None:
        await asyncio.gather(self.prefill.drain(grace), self.decode.drain(grace))

    async def add_worker(self, url: str, engine: str | None = None, role: str = "decode") -> Worker:
        return await self._side(role).add_worker(url, engine)

    async def remove_worker(self, url: str, grace: float = 30.0) -> None:
        side = self.prefill if any(w.url == url for w in self.prefill.workers) else self.decode
        await side.remove_worker(url, grace)

    def _side(self, role: str) -> WorkerPool:
        if role not in ("prefill", "decode"):
            raise InvalidRequest(f"a disaggregated worker's role is prefill or decode, got {role!r}")
        return self.prefill if role == "prefill" else self.decode

    def generate(self, request: GenerateRequest, worker: Worker | None = None) -> EngineStream:
        """The decode half's outputs. The stream is never pushable (its ``call`` stays None): the
        compiled push path reads one call, and a request here is two."""
        if worker is not None:
            raise InvalidRequest("a disaggregated model picks its (prefill, decode) pair itself")
        return EngineStream(self, request, None)

    async def _outputs(self, request: GenerateRequest, worker: None, stream: EngineStream
                       ) -> AsyncIterator[EngineOutput]:
        view = RequestView(request.input_ids, request.routing_key)
        prefill = await self.prefill.choose(view)
        decode = await self.decode.choose(view)
        params = {"bootstrap_host": bootstrap_host(prefill.url), "bootstrap_port": self.bootstrap_port,
                  "bootstrap_room": self._rooms.randrange(1 << 31)}
        half = dataclasses.replace(request, disaggregated=params)
        timeout = self.config.request_timeout
        halves = [(self.prefill, prefill), (self.decode, decode)]
        for side, worker in halves:
            side.policy.on_routed(view, worker)
            worker.in_flight += 1
        stream.worker = decode  # (the half that streams the tokens)
        prefill_call = prefill.adapter.call_generate(prefill.adapter.build(half), timeout)
        decode_call = decode.adapter.call_generate(decode.adapter.build(half), timeout, request.stream)
        prefill_done = asyncio.ensure_future(_drain(prefill_call))
        prefill_failure: list[BaseException] = []

        def prefill_ended(done: asyncio.Future) -> None:
            # a failed prefill half fails the request: the decode call is cancelled, so its read
            # (which waits for a handover that will not come) ends at once
            if not done.cancelled() and done.exception() is not None:
                prefill_failure.append(done.exception())
                decode_call.cancel()

        prefill_done.add_done_callback(prefill_ended)
        open_sequences = set(range(request.sampling.n))
        try:
            async for output in decode_call:
                if output.finished:
                    open_sequences.discard(output.index)
                    if not open_sequences:
                        decode.served += 1
                yield output
        except (grpc.RpcError, asyncio.CancelledError) as exc:
            if not prefill_failure and isinstance(exc, asyncio.CancelledError):
                raise  # (grpc.aio's read of a cancelled call raises this; any other is the task's)
            failed = prefill if prefill_failure else decode
            error = map_rpc_error(prefill_failure[0] if prefill_failure else exc, failed.url)
            if isinstance(error, EngineUnavailable):
                failed.mark_down(str(error))
            raise error from None
        finally:
            for side, worker in halves:
                worker.in_flight -= 1
                side.policy.on_finished(view, worker)
            if open_sequences:  # the client went away, or a half failed: stop both engines
                for side, worker, call in ((self.prefill, prefill, prefill_call), (self.decode, decode, decode_call)):
                    if not call.done():
                        call.cancel()
                    side.abort_later(worker, request.request_id)
            else:  # served (the consumer may stop before the trailers): the prefill half ended
                # long before, as a rule; its trailers get a moment at most
                if not prefill_done.done():
                    await asyncio.wait({prefill_done}, timeout=PREFILL_TRAILERS_GRACE)
                if prefill_done.done() and not prefill_done.cancelled() and prefill_done.exception() is None:
                    prefill.served += 1
                if not prefill_call.done():
                    prefill_call.cancel()
            if not prefill_done.done():
                prefill_done.cancel()
            with contextlib.suppress(BaseException):
                await prefill_done


async def _drain(call) -> None:
    async for _ in call:
        pass
