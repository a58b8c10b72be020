# cython: language_level=3
"""Compiled fast path of the HTTP/2 client's token streams; specified by ``h2_data_py.py``.

The frame and message headers are read straight from the read buffer; per frame, Python is
touched only to find the stream, queue its messages and wake it.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

__all__ = ["take_messages", "STREAM_WINDOW"]

cdef enum:
    DATA = 0

cdef Py_ssize_t MAX_MESSAGE = 256 << 20
cdef Py_ssize_t WINDOW = 1 << 20
STREAM_WINDOW = WINDOW  # each stream's receive window (smg.engines.h2)
cdef Py_ssize_t MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE's default, which smg's client keeps


cdef inline Py_ssize_t _be(const unsigned char* p, int n) noexcept nogil:
    cdef Py_ssize_t value = 0
    cdef int i
    for i in range(n):
        value = (value << 8) | p[i]
    return value


cdef bint _whole_messages(const unsigned char* p, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
    """Whether ``p[start:end]`` is exactly a run of uncompressed messages within the size limit."""
    cdef Py_ssize_t length
    while start < end:
        if end - start < 5 or p[start] != 0:
            return False
        length = _be(p + start + 1, 4)
        if length > MAX_MESSAGE or start + 5 + length > end:
            return False
        start += 5 + length
    return True


def take_messages(data, Py_ssize_t offset, dict streams):
    """See ``h2_data_py.take_messages``."""
    cdef const unsigned char[::1] view
    if type(data) is bytes:  # what the connection reads: no memoryview object per read
        return _take(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), offset, streams)
    view = data
    return _take(&view[0] if view.shape[0] else NULL, view.shape[0], offset, streams)


cdef tuple _take(const unsigned char* p, Py_ssize_t size, Py_ssize_t offset, dict streams):
    cdef Py_ssize_t consumed = 0, length, start, end, message
    cdef unsigned int stream_id
    while size - offset >= 9:
        length = _be(p + offset, 3)
        start, end = offset + 9, offset + 9 + length
        if end > size or length > MAX_FRAME or p[offset + 3] != DATA or p[offset + 4] != 0:
            break
        stream_id = <unsigned int>_be(p + offset + 5, 4) & 0x7FFFFFFF
        stream = streams.get(stream_id)
        if stream is None or stream._pending or stream._received + length > WINDOW:
            break
        if not _whole_messages(p, start, end):
            break
        messages = stream._messages
        while start < end:
            message = _be(p + start + 1, 4)
            messages.append(PyBytes_FromStringAndSize(<const char*>p + start + 5, message))
            start += 5 + message
        stream._received += length
        stream._wake()
        consumed += length
        offset = end
    return offset, consumed
