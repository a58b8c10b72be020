"""Stage ``blocks``: a choice's pieces as an ordered sequence of output blocks (reasoning, text,
tool call), the shape the block-oriented APIs answer in (Responses' output items, Messages'
content blocks).

A block opens when its kind of output starts, takes deltas, and closes when another kind starts
or the choice ends, so blocks come out in the order the model produced them: reasoning, text and
tool calls interleave as the model interleaves them. Streamed and non-streamed answers both come
from :class:`Blocks`, so any chunking of the engine's output assembles into the same blocks.

Whitespace that would open a text block (the newlines between ``</think>`` and a tool call) is
held until text follows; whitespace alone never makes a block.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, AsyncIterator

if TYPE_CHECKING:
    from smg.metrics import Metrics
    from smg.pipeline.prepare import Prepared

REASONING, TEXT, TOOL_CALL = "reasoning", "text", "tool_call"

# events: (START, block) (DELTA, block, text) (STOP, block)
START, DELTA, STOP = 0, 1, 2


class Block:
    """One output block: its position among the choice's blocks, its kind, its text so far (for a
    tool call: the arguments), and a tool call's id and name."""

    __slots__ = ("index", "kind", "text", "call_id", "name", "parts")

    def __init__(self, index: int, kind: str, call_id: str | None = None, name: str | None = None) -> None:
        self.index, self.kind, self.call_id, self.name = index, kind, call_id, name
        self.parts: list[str] = []
        self.text = ""

    def add(self, text: str) -> None:
        self.parts.append(text)

    def close(self) -> None:
        self.text = "".join(self.parts)


class Blocks:
    """Pieces ``(reasoning, content, calls)`` of the ``choice`` stage in; block events out."""

    __slots__ = ("blocks", "open", "_held", "_calls")

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.open: Block | None = None
        self._held = ""  # whitespace waiting for text
        self._calls: dict[int, Block] = {}  # the tool parser's call index -> its block

    def _switch(self, events: list, kind: str, call_id: str | None = None, name: str | None = None) -> Block:
        if self.open is not None:
            self.open.close()
            events.append((STOP, self.open))
        block = self.open = Block(len(self.blocks), kind, call_id, name)
        self.blocks.append(block)
        events.append((START, block))
        return block

    def _text(self, events: list, kind: str, text: str) -> None:
        block = self.open
        if block is None or block.kind != kind:
            if kind == TEXT:
                text = self._held + text
                if text.isspace():
                    self._held = text
                    return
                self._held = ""
            block = self._switch(events, kind)
        block.add(text)
        events.append((DELTA, block, text))

    def feed(self, piece: tuple | None) -> list:
        """The events of one piece (in the order reasoning, content, calls)."""
        events: list = []
        if piece is None:
            return events
        reasoning, content, calls = piece
        if reasoning:
            self._text(events, REASONING, reasoning)
        if content:
            self._text(events, TEXT, content)
        for call in calls:
            block = self._calls.get(call.index)
            if block is None:
                block = self._calls[call.index] = self._switch(events, TOOL_CALL, call.id, call.function.name)
            arguments = call.function.arguments
            if arguments:
                block.add(arguments)
                events.append((DELTA, block, arguments))
        return events

    def finish(self) -> list:
        """Close the open block (the choice ended)."""
        events: list = []
        if self.open is not None:
            self.open.close()
            events.append((STOP, self.open))
            self.open = None
        return events


class BlockRun:
    """One request's engine stream (the ``run`` stage, one choice) through :class:`Blocks`:
    :meth:`steps` yields each message's block events; then ``choice`` is the finished choice and
    ``cached`` the engine's cached prompt tokens. ``blocks.finish()`` closes what is open when the
    stream fails."""

    __slots__ = ("p", "metrics", "blocks", "choice", "cached")

    def __init__(self, p: "Prepared", metrics: "Metrics") -> None:
        self.p, self.metrics = p, metrics
        self.blocks = Blocks()
        self.choice = None
        self.cached = 0

    async def steps(self) -> AsyncIterator[list]:
        from smg.pipeline.run import run

        blocks = self.blocks
        async for choice, out, piece in run(self.p, self.metrics):
            self.choice = choice
            if out.cached_tokens > self.cached:
                self.cached = out.cached_tokens
            events = blocks.feed(piece)
            if choice.finished:
                events += blocks.finish()
            yield events
