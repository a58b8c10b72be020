"""The plain-stream fast path: one choice, no parsers, no logprobs.

A plain stream runs as ``run.run`` does, but the compiled pump (``smg._ext.sse_pump``) takes each
engine message through detokenizer and stop rules in one call, and for SSE writes the event bytes
too, from templates cut out of the front end's own chunk for a stand-in text; the last events come
from the front end's chunk builders. Given a server's ``sink``, once an event was yielded the rest
are pushed from the engine connection's data path (:func:`push`) while they can be: no task is
woken per token, and a read's events go out in one write.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import AsyncIterator, Awaitable, Callable, Protocol

from smg import _ext
from smg.engines.base import EngineOutput, PushableCall
from smg.metrics import Metrics
from smg.pipeline.choice import NO_CALLS, Choice
from smg.pipeline.prepare import Prepared
from smg.pipeline.run import record, worker_label
from smg.protocols import openai as oa

PlainPump = _ext.load("sse_pump").PlainPump

SSE_DONE = b"data: [DONE]\n\n"
_STAND_IN_TEXT = "smg-sse-" + uuid.uuid4().hex  # a text no real chunk holds

Sink = Callable[[bytes], bool]


def event(chunk) -> bytes:
    """One server-sent event holding ``chunk`` as JSON."""
    return b"data: " + oa.encode(chunk) + b"\n\n"


class StreamShapes(Protocol):
    """What a front end gives :func:`stream`: whether its request is plain, and its chunks."""

    plain: Prepared | None  # the one prepared request when the fast path can take it
    role_first: bool  # the first text goes through ``chunk_of`` (it carries the role)
    sse_done: bytes  # the event after a general stream's last (OpenAI's ``data: [DONE]``), or b""

    def general(self) -> AsyncIterator:
        """The general pipeline's chunks (for a request that is not plain)."""

    def chunk_of(self, choice, piece: tuple | None):
        """The chunk for one step of the choice (None: nothing to send)."""

    def text_chunk(self, text: str):
        """The chunk most tokens make: text only, after the first (``chunk_of``'s, without its tests)."""

    def end_chunks(self, choice: Choice, piece: tuple, cached: int) -> list:
        """The stream's last chunks (the finish, usage if asked)."""

    def sse_event(self, chunk) -> bytes:
        """A general-path chunk as its event's bytes."""

    def sse_pump(self, choice: Choice) -> tuple[PlainPump, Callable[[list], bytes | None]]:
        """The plain choice's pump and what turns one message's ids into its events' bytes."""

    async def sse_end(self, choice: Choice, piece: tuple, cached: int) -> bytes:
        """The stream's last events in one piece (``piece``: the choice's final release)."""


class _StandInChoice:
    """What a chunk builder reads of a choice, for cutting event templates."""

    __slots__ = ("index", "role_sent", "logprobs", "finished")

    def __init__(self, role_sent: bool) -> None:
        self.index, self.role_sent, self.logprobs, self.finished = 0, role_sent, None, False


def sse_templates(chunk_of) -> tuple[bytes, bytes, bytes]:
    """(first head, head, tail) of a plain choice's text events: the events of the chunks that
    ``chunk_of`` builds around a stand-in text, cut where the text is (the first: role not sent)."""
    marker = oa.encode(_STAND_IN_TEXT)
    first_head, _, _ = event(chunk_of(_StandInChoice(False), ("", _STAND_IN_TEXT, NO_CALLS))).partition(marker)
    head, _, tail = event(chunk_of(_StandInChoice(True), ("", _STAND_IN_TEXT, NO_CALLS))).partition(marker)
    return first_head, head, tail


async def stream(start: Callable[[], Awaitable[StreamShapes]], metrics: Metrics, sse: bool,
                 sink: Sink | None = None) -> AsyncIterator:
    """A streamed request's chunks, or with ``sse`` their events' bytes (the API's end last:
    ``data: [DONE]`` for OpenAI's). ``start()`` prepares the request; a plain one takes the fast
    path (see the module docstring), in this generator itself (no second generator per token)."""
    shapes = await start()
    p = shapes.plain
    if p is None:
        async with contextlib.aclosing(shapes.general()) as chunks:
            async for chunk in chunks:
                yield shapes.sse_event(chunk) if sse else chunk
        if sse and shapes.sse_done:
            yield shapes.sse_done
        return
    choice = Choice(0, p)
    if sse:
        pump, feed = shapes.sse_pump(choice)
    else:
        chunk_of, text_chunk = shapes.chunk_of, shapes.text_chunk
        pump = PlainPump(choice.detok, choice.stop, b"", b"", b"")
        feed = pump.feed
    started = time.perf_counter()
    first, count, cached, last = None, 0, 0, None
    deciding = sink is not None  # with a sink: whether to push is decided at the first event
    push_from: PushableCall | None = None  # the call whose outputs are pushed after each yielded event
    batch: list[bytes] = []  # the events of one read's outputs, written in one piece

    def pushed(out: EngineOutput) -> bool:
        """An output the push phase hands over (never a finished one): whether to go on."""
        nonlocal cached, count
        if out.cached_tokens > cached:
            cached = out.cached_tokens
        ids = out.token_ids
        if not ids:
            return True
        count += len(ids)
        piece = feed(ids)
        if piece is not None:
            batch.append(piece)
        return not pump.finished

    def flush() -> bool:
        """Write the batch; whether the client takes more."""
        if not batch:
            return True
        events = batch[0] if len(batch) == 1 else b"".join(batch)
        batch.clear()
        return sink(events)

    async with contextlib.aclosing(p.served.pool.generate(p.engine_request())) as stream:
        async for out in stream:
            if out.cached_tokens > cached:
                cached = out.cached_tokens
            ids = out.token_ids
            if ids:
                if first is None:
                    first = time.perf_counter()
                    metrics.observe("smg_time_to_first_token_seconds", first - started, model=p.served.name,
                                    worker=worker_label(stream))
                elif not out.finished:
                    count += len(ids)
            if out.finished:  # its ids were streamed already
                last = out
                break
            if ids:
                if sse:
                    piece = feed(ids)
                else:
                    text = pump.feed_text(ids)
                    if text is None:
                        piece = None
                    elif choice.role_sent or not shapes.role_first:
                        piece = text_chunk(text)
                    else:
                        piece = chunk_of(choice, ("", text, NO_CALLS))
                if piece is not None:
                    yield piece
                    if deciding:  # decided once, at the first event (not re-checked per token)
                        deciding = False
                        push_from = stream.pushable()
                    if push_from is not None:  # the server has drained: push the rest
                        await push(push_from, pushed, flush)
                        if pump.finished:
                            break
                elif pump.finished:  # (the pump releases no event on the token that ends it)
                    break  # a stop rule ended it before the engine did: closing the stream aborts it
    choice.tokens, choice.role_sent = pump.tokens, pump.started
    if pump.finished:
        choice.finished, choice.finish_reason, choice.matched = True, pump.finish_reason, pump.matched
        piece = choice.emit(pump.text, final=True)
    else:  # the engine finished it, or the stream ended without a complete for it
        piece = choice.end(last or EngineOutput(0, [], finished=True, finish_reason="abort"))
    record(metrics, p, stream, started, first, count, choice.tokens)
    if sse:  # the stream's end in one piece (one write)
        yield await shapes.sse_end(choice, piece, cached)
    else:
        for chunk in shapes.end_chunks(choice, piece, cached):
            yield chunk


async def push(call: PushableCall, handle: Callable[[EngineOutput], bool], flush: Callable[[], bool]) -> None:
    """Hand a call's outputs to ``handle`` from the connection's data path as they arrive (see
    :class:`PushableCall`), then ``flush()`` once per read (so a read's events for the stream go
    out in one write), until ``handle`` or ``flush`` returns False, an output finishes the sequence
    (put back for the caller's ``async for``) or the call ends (the caller's next step raises or
    stops as it would have). An error ``handle`` raises is raised here."""
    done = asyncio.get_running_loop().create_future()

    def take_all() -> bool:
        """Hand ``handle`` what has arrived; whether the push goes on."""
        while True:
            try:
                out = call.take()
            except BaseException:  # the call's end: kept in the call for the caller's next step
                return False
            if out is None:  # all this read brought
                return True
            if out.finished:
                call.put_back(out)
                return False
            if not handle(out):
                return False

    def listener() -> None:
        if done.done():  # (a cancelled wait, or a call ended from inside take_all)
            return
        error = None
        try:
            more = take_all()
        except BaseException as exc:
            error, more = exc, False
        try:  # the events made so far go out (an error's too, before it is raised)
            more = flush() and more
        except BaseException as exc:
            error, more = error or exc, False
        if more:
            return  # wait for the next read
        call.listen(None)
        if not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

    call.listen(listener)
    try:
        listener()  # what arrived with the caller's last output
        await done
    finally:
        call.listen(None)
