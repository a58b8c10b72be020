# cython: language_level=3
"""Compiled reader of a token chunk's protobuf bytes; specified by ``proto_chunk_py.py``."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint64_t

from smg._ext._records cimport _new_tuple

__all__ = ["decode_chunk", "ChunkDecoder"]

cdef enum:
    IDS = 1
    PROMPT = 2
    COMPLETION = 3
    CACHED = 4


cdef inline Py_ssize_t _varint(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end, uint64_t* value) noexcept nogil:
    """The varint at ``pos`` into ``value``; the next position, or -1 when malformed."""
    cdef uint64_t out = 0
    cdef int shift = 0
    cdef unsigned char byte
    while pos < end and shift < 70:
        byte = p[pos]
        pos += 1
        out |= (<uint64_t>(byte & 0x7F)) << shift if shift < 64 else 0
        if not byte & 0x80:
            value[0] = out
            return pos
        shift += 7
    return -1


cdef object _chunk(const unsigned char* p, Py_ssize_t pos, Py_ssize_t end, unsigned int index_field,
                   frozenset skipped):
    cdef uint64_t key, value, length
    cdef unsigned int field, wire
    cdef Py_ssize_t stop
    cdef unsigned int counters[4]  # prompt, completion, cached, index
    cdef list ids = []
    counters[0] = counters[1] = counters[2] = counters[3] = 0
    while pos < end:
        pos = _varint(p, pos, end, &key)
        if pos < 0:
            return None
        field, wire = <unsigned int>(key >> 3), <unsigned int>(key & 7)
        if field == IDS and wire == 2:
            pos = _varint(p, pos, end, &length)
            if pos < 0 or length > <uint64_t>(end - pos):
                return None
            stop = pos + <Py_ssize_t>length
            while pos < stop:
                pos = _varint(p, pos, stop, &value)
                if pos < 0:
                    return None
                ids.append(<unsigned int>(value & 0xFFFFFFFF))
        elif wire == 0 and (field == IDS or field == PROMPT or field == COMPLETION or field == CACHED
                            or field == index_field or field in skipped):
            pos = _varint(p, pos, end, &value)
            if pos < 0:
                return None
            if field == IDS:
                ids.append(<unsigned int>(value & 0xFFFFFFFF))
            elif field == index_field:
                counters[3] = <unsigned int>(value & 0xFFFFFFFF)
            elif field == PROMPT or field == COMPLETION or field == CACHED:
                counters[field - PROMPT] = <unsigned int>(value & 0xFFFFFFFF)
        else:
            return None
    return counters[3], ids, counters[0], counters[1], counters[2]


def decode_chunk(data, tuple layout):
    """See ``proto_chunk_py.decode_chunk``."""
    return _decode(data, layout)


cdef object _decode(object data, tuple layout):
    cdef const unsigned char[::1] view
    if type(data) is bytes:  # what the transports hand over: no memoryview object per message
        return _response(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), layout)
    view = data
    return _response(&view[0] if view.shape[0] else NULL, view.shape[0], layout)


cdef object _response(const unsigned char* p, Py_ssize_t end, tuple layout):
    cdef unsigned int chunk_field = layout[0], index_field = layout[1]
    cdef frozenset skipped_response = layout[2], skipped_chunk = layout[3]
    cdef Py_ssize_t pos = 0
    cdef uint64_t key, length
    cdef unsigned int field
    found = None
    while pos < end:
        pos = _varint(p, pos, end, &key)
        if pos < 0 or (key & 7) != 2:
            return None
        field = <unsigned int>(key >> 3)
        pos = _varint(p, pos, end, &length)
        if pos < 0 or length > <uint64_t>(end - pos):
            return None
        if field == chunk_field and found is None:
            found = _chunk(p, pos, pos + <Py_ssize_t>length, index_field, skipped_chunk)
            if found is None:
                return None
        elif field not in skipped_response:
            return None
        pos += <Py_ssize_t>length
    return found


cdef class ChunkDecoder:
    """See ``proto_chunk_py.ChunkDecoder``."""

    cdef object layout, output_class, fallback

    def __init__(self, layout, output_class, fallback):
        self.layout, self.output_class, self.fallback = layout, output_class, fallback

    def __call__(self, raw):
        if self.layout is not None:
            chunk = _decode(raw, self.layout)
            if chunk is not None:
                return _new_tuple(self.output_class, chunk + (None, False, None, None))
        return self.fallback(raw)
