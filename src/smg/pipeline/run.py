"""Stage ``run``: drive one engine stream through its choices' pipelines, with the time-to-first-token
and inter-token metrics, and abort of the engine when the consumer stops early (closing the pool's
stream does it)."""
from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, AsyncIterator

from smg.access_log import CURRENT as ACCESS
from smg.engines.base import EngineOutput
from smg.metrics import Metrics
from smg.pipeline.choice import Choice
from smg.pipeline.prepare import Prepared

if TYPE_CHECKING:
    from smg.engines.pool import EngineStream


async def run(p: Prepared, metrics: Metrics) -> AsyncIterator[tuple[Choice, EngineOutput, tuple | None]]:
    """Drive the engine stream through each choice's pipeline; yields (choice, output, piece)."""
    choices = [Choice(i, p) for i in range(p.sampling.n)]
    started = time.perf_counter()
    first, count = None, 0
    async with contextlib.aclosing(p.served.pool.generate(p.engine_request())) as stream:
        async for out in stream:
            if out.index >= len(choices):
                continue
            choice = choices[out.index]
            if choice.finished:
                continue
            if out.token_ids:
                if first is None:
                    first = time.perf_counter()
                    metrics.observe("smg_time_to_first_token_seconds", first - started, model=p.served.name,
                                    worker=worker_label(stream))
                elif not out.finished:
                    count += len(out.token_ids)
            if out.finished:  # we always stream from the engine: its ids were streamed already
                piece = choice.end(out)
            else:
                piece = choice.feed(out) if out.token_ids else None
            yield choice, out, piece
            if choice.finished and all(c.finished for c in choices):
                break  # stop strings may end choices before the engine does: close (aborts it)
    for choice in choices:
        if not choice.finished:  # the stream ended without a complete for this sequence
            ended = EngineOutput(choice.index, [], finished=True, finish_reason="abort")
            yield choice, ended, choice.end(ended)
    record(metrics, p, stream, started, first, count, sum(c.tokens for c in choices))


def worker_label(stream: EngineStream) -> str:
    """The URL of the worker serving ``stream`` (``none``: it never reached one)."""
    return stream.worker.url if stream.worker is not None else "none"


def record(metrics: Metrics, p: Prepared, stream: EngineStream, started: float, first: float | None, count: int,
           tokens: int) -> None:
    """A finished stream's metrics (every route runs through here, streamed or not): latencies by
    model and the worker that served it, tokens by model."""
    model, ended, worker = p.served.name, time.perf_counter(), worker_label(stream)
    if first is not None and count:  # mean inter-token latency of the stream, one observation
        metrics.observe("smg_inter_token_latency_seconds", (ended - first) / count, model=model, worker=worker)
    metrics.observe("smg_e2e_latency_seconds", ended - started, model=model, worker=worker)
    metrics.inc("smg_prompt_tokens_total", len(p.prompt_ids), model=model)
    metrics.inc("smg_completion_tokens_total", tokens, model=model)
    access = ACCESS.get()
    if access is not None:
        access.engine_stream(len(p.prompt_ids), tokens, first - started if first is not None else None)
        if first is not None:  # (perf_counter: the monotonic clock, as the record's stages take)
            access.stage("time_to_first_token", started, first)
            access.stage("stream", first, time.perf_counter())


async def collect(p: Prepared, metrics: Metrics) -> tuple[list[Choice], int]:
    """A non-streamed request's finished choices (by index) and the engine's cached prompt tokens."""
    choices: dict[int, Choice] = {}
    cached = 0
    async for choice, out, _ in run(p, metrics):
        choices[choice.index] = choice
        cached = max(cached, out.cached_tokens)
    return [choices[i] for i in sorted(choices)], cached
