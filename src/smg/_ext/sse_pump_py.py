"""Reference twin of ``sse_pump.pyx``: a plain choice's token ids straight to server-sent events.

A plain choice (one sequence, no reasoning or tool parser, no logprobs) sends, per engine
message, at most one event whose only variable part is the text that message released:
``head + json(text) + tail``. With the pipeline of generators and a chunk struct encoded per
token, that was most of a served stream's Python time per token; the pump does it in one call
per message. The heads and tail are cut from a chunk the protocol's structs encode (see
``smg.gateway._sse_templates``), so an event is byte for byte what encoding that chunk gives. The
first event's head carries the role. The event that finishes the choice (a stop rule matched) is
not written here: the pump keeps its text and finish fields, and the caller builds that event from
the protocol's structs, as for every other last event. ``feed_text`` serves a caller that builds
chunk objects itself (``Gateway.chat_stream``): one call per message still replaces the pipeline.
"""
from __future__ import annotations

from typing import Iterable

import msgspec

__all__ = ["PlainPump", "json_string"]


def json_string(text: str) -> bytes:
    """``text`` as a JSON string, escaped as msgspec escapes it (the kernel writes the same bytes)."""
    return msgspec.json.encode(text)


class PlainPump:
    """One plain choice: detokenizer -> stop rules -> SSE event bytes.

    Args:
        detok: the choice's incremental detokenizer (``step(id) -> str``).
        stop: the choice's :class:`~smg.stop.StopChecker`.
        first_head, head, tail: the event around the text: ``first_head`` for the first event.
    """

    __slots__ = ("_detok", "_stop", "_first_head", "_head", "_tail", "started", "tokens", "finished",
                 "finish_reason", "matched", "text")

    def __init__(self, detok, stop, first_head: bytes, head: bytes, tail: bytes) -> None:
        self._detok, self._stop = detok, stop
        self._first_head, self._head, self._tail = first_head, head, tail
        self.started = False  # an event was written (and the role with it)
        self.tokens = 0
        self.finished = False
        self.finish_reason: str | None = None
        self.matched: int | str | None = None
        self.text = ""  # what the message that finished the choice released

    def feed(self, token_ids: Iterable[int]) -> bytes | None:
        """The event for one message's tokens; None when they release no text, when a stop rule
        ends the choice (``finished`` is then set, with ``text``, ``finish_reason``, ``matched``),
        and once it has ended."""
        first = not self.started
        text = self.feed_text(token_ids)
        if text is None:
            return None
        return (self._first_head if first else self._head) + json_string(text) + self._tail

    def feed_text(self, token_ids: Iterable[int]) -> str | None:
        """``feed`` for a caller that builds its own events: the released text instead of an event."""
        if self.finished:
            return None
        released = ""
        for token_id in token_ids:
            self.tokens += 1
            delta = self._stop.step(token_id, self._detok.step(token_id))
            released += delta.text
            if delta.finished:
                self.finished, self.finish_reason, self.matched = True, delta.finish_reason, delta.matched_stop
                self.text = released
                return None
        if not released:
            return None
        self.started = True
        return released
