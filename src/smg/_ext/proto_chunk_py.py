"""Reference twin of ``proto_chunk.pyx``: a token chunk read straight from its protobuf bytes.

Nearly every message an engine streams is a ``GenerateResponse`` holding a ``chunk`` with the new
token ids and three counters. Building the protobuf object and reading its fields cost ~15% of the
embedded gateway's CPU per token, so :func:`decode_chunk` reads those fields from the wire format
itself (varints, packed ``uint32`` ids) and returns ``(index, token_ids, prompt_tokens,
completion_tokens, cached_tokens)``. It returns None, and the caller parses the message with
protobuf, for anything else: another top-level field (``complete``...), a field it does not know
(logprobs, hidden states), a repeated chunk, malformed bytes. ``layout`` gives the protocol's field
numbers (from its descriptor): ``(chunk, index, skipped response fields, skipped chunk fields)``.
"""
from __future__ import annotations

IDS, PROMPT, COMPLETION, CACHED = 1, 2, 3, 4  # the chunk's fields shared by the protocols


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """(value, next position); position -1 when malformed."""
    value = shift = 0
    while pos < end and shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7
    return 0, -1


def _chunk(data: bytes, pos: int, end: int, index_field: int, skipped: frozenset):
    ids: list[int] = []
    counters = {PROMPT: 0, COMPLETION: 0, CACHED: 0, index_field: 0}
    while pos < end:
        key, pos = _varint(data, pos, end)
        if pos < 0:
            return None
        field, wire = key >> 3, key & 7
        if field == IDS and wire == 2:
            length, pos = _varint(data, pos, end)
            if pos < 0 or pos + length > end:
                return None
            stop = pos + length
            while pos < stop:
                value, pos = _varint(data, pos, stop)
                if pos < 0:
                    return None
                ids.append(value & 0xFFFFFFFF)
        elif wire == 0 and (field == IDS or field in counters or field in skipped):
            value, pos = _varint(data, pos, end)
            if pos < 0:
                return None
            if field == IDS:
                ids.append(value & 0xFFFFFFFF)
            elif field in counters:
                counters[field] = value & 0xFFFFFFFF
        else:
            return None
    return counters[index_field], ids, counters[PROMPT], counters[COMPLETION], counters[CACHED]


def decode_chunk(data: bytes, layout: tuple[int, int, frozenset, frozenset]):
    chunk_field, index_field, skipped_response, skipped_chunk = layout
    pos, end, found = 0, len(data), None
    while pos < end:
        key, pos = _varint(data, pos, end)
        if pos < 0:
            return None
        field, wire = key >> 3, key & 7
        if wire != 2:
            return None
        length, pos = _varint(data, pos, end)
        if pos < 0 or pos + length > end:
            return None
        if field == chunk_field and found is None:
            found = _chunk(data, pos, pos + length, index_field, skipped_chunk)
            if found is None:
                return None
        elif field not in skipped_response:
            return None
        pos += length
    return found


class ChunkDecoder:
    """``decoder(raw)``: a GenerateResponse's bytes as an ``output_class`` record ``(index, ids,
    prompt_tokens, completion_tokens, cached_tokens, None, False, None, None)`` when
    :func:`decode_chunk` reads them (``layout`` None: never), else ``fallback(raw)``. One call per
    engine message, so the compiled one builds the record without a Python frame."""

    def __init__(self, layout, output_class, fallback) -> None:
        self.layout, self.output_class, self.fallback = layout, output_class, fallback

    def __call__(self, raw):
        if self.layout is not None:
            chunk = decode_chunk(raw, self.layout)
            if chunk is not None:
                return tuple.__new__(self.output_class, chunk + (None, False, None, None))
        return self.fallback(raw)
