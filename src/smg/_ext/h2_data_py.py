"""Reference twin of ``h2_data.pyx``: the HTTP/2 client's fast path for token streams.

While an engine streams tokens, nearly every frame ``smg.engines.h2`` reads is a DATA frame of
an open stream carrying whole gRPC messages (one per token). :func:`take_messages` consumes a run
of such frames from a read buffer: it queues each message on its stream, counts the stream's
received bytes and wakes it. It stops, leaving the frame to the connection's general code, at the
first frame that is anything else: another frame type, flags (padding, END_STREAM), an unknown
stream, a stream holding part of a message, a message cut by the frame's end or a compressed one,
a frame past its stream's window (``STREAM_WINDOW``, an error), or a frame larger than
``MAX_FRAME`` (an error the connection reports). Returns ``(offset, data_bytes)``: where it stopped and
how many DATA payload bytes it consumed (for the connection's window).
"""
from __future__ import annotations

DATA = 0
MAX_MESSAGE = 256 << 20
STREAM_WINDOW = 1 << 20  # each stream's receive window (smg.engines.h2)
MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE's default, which smg's client keeps


def _whole_messages(data, start: int, end: int) -> list[tuple[int, int]] | None:
    """The messages filling ``data[start:end]`` exactly, or None."""
    spans = []
    while start < end:
        if end - start < 5 or data[start] != 0:
            return None
        length = int.from_bytes(data[start + 1:start + 5], "big")
        if length > MAX_MESSAGE or start + 5 + length > end:
            return None
        spans.append((start + 5, start + 5 + length))
        start += 5 + length
    return spans


def take_messages(data: bytes, offset: int, streams: dict) -> tuple[int, int]:
    consumed, size = 0, len(data)
    while size - offset >= 9:
        length = int.from_bytes(data[offset:offset + 3], "big")
        kind, flags = data[offset + 3], data[offset + 4]
        stream_id = int.from_bytes(data[offset + 5:offset + 9], "big") & 0x7FFFFFFF
        start, end = offset + 9, offset + 9 + length
        if end > size or length > MAX_FRAME or kind != DATA or flags:
            break
        stream = streams.get(stream_id)
        if stream is None or stream._pending or stream._received + length > STREAM_WINDOW:
            break
        spans = _whole_messages(data, start, end)
        if spans is None:
            break
        for first, last in spans:
            stream._messages.append(data[first:last])
        stream._received += length
        stream._wake()
        consumed += length
        offset = end
    return offset, consumed
