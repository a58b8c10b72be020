# cython: language_level=3
"""Compiled plain-choice pump: token ids to SSE event bytes; specified by ``sse_pump_py.py``.

The detokenizer and the stop checker are the compiled kernels, called through their C entry
points (no Python frame per token); the text is escaped into the event's bytes in one allocation.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.string cimport memcpy

from smg._ext.detok cimport ByteStreamDecoder
from smg._ext.stop_matcher cimport StopChecker

__all__ = ["PlainPump", "json_string"]

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL

cdef const char* _HEX = b"0123456789abcdef"


cdef Py_ssize_t _escaped_size(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """Bytes of ``s`` escaped as a JSON string's body (msgspec's escapes, quotes excluded)."""
    cdef Py_ssize_t i, size = n
    cdef unsigned char c
    for i in range(n):
        c = s[i]
        if c == b'"' or c == b'\\' or c == b'\b' or c == b'\t' or c == b'\n' or c == b'\f' or c == b'\r':
            size += 1
        elif c < 0x20:
            size += 5
    return size


cdef char* _escape(char* out, const unsigned char* s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef unsigned char c
    for i in range(n):
        c = s[i]
        if c >= 0x20 and c != b'"' and c != b'\\':
            out[0] = <char>c
            out += 1
            continue
        out[0] = b'\\'
        if c == b'"' or c == b'\\':
            out[1] = <char>c
        elif c == b'\b':
            out[1] = b'b'
        elif c == b'\t':
            out[1] = b't'
        elif c == b'\n':
            out[1] = b'n'
        elif c == b'\f':
            out[1] = b'f'
        elif c == b'\r':
            out[1] = b'r'
        else:
            out[1], out[2], out[3], out[4], out[5] = b'u', b'0', b'0', _HEX[c >> 4], _HEX[c & 15]
            out += 6
            continue
        out += 2
    return out


cdef bytes _event(bytes head, str text, bytes tail):
    """``head + json_string(text) + tail`` in one allocation."""
    cdef Py_ssize_t n, escaped, n_head = PyBytes_GET_SIZE(head), n_tail = PyBytes_GET_SIZE(tail)
    cdef const unsigned char* s = <const unsigned char*>PyUnicode_AsUTF8AndSize(text, &n)
    escaped = _escaped_size(s, n)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n_head + escaped + 2 + n_tail)
    cdef char* p = PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(head), n_head)
    p += n_head
    p[0] = b'"'
    p = _escape(p + 1, s, n)
    p[0] = b'"'
    memcpy(p + 1, PyBytes_AS_STRING(tail), n_tail)
    return out


def json_string(str text):
    """See ``sse_pump_py.json_string``."""
    return _event(b"", text, b"")


cdef class PlainPump:
    """See ``sse_pump_py.PlainPump``."""

    cdef object _detok
    cdef ByteStreamDecoder _raw  # the detokenizer's kernel when nothing runs after it
    cdef StopChecker _stop
    cdef bytes _first_head, _head, _tail
    cdef readonly bint started, finished
    cdef readonly long tokens
    cdef readonly object finish_reason, matched
    cdef readonly str text

    def __init__(self, detok, StopChecker stop, bytes first_head, bytes head, bytes tail):
        self._detok, self._stop = detok, stop
        raw = getattr(detok, "raw_decoder", None)
        self._raw = raw if isinstance(raw, ByteStreamDecoder) else None
        self._first_head, self._head, self._tail = first_head, head, tail
        self.started = self.finished = False
        self.tokens = 0
        self.finish_reason = self.matched = None
        self.text = ""

    def feed(self, token_ids):
        cdef bint first = not self.started
        text = self._text(token_ids)
        if text is None:
            return None
        return _event(self._first_head if first else self._head, text, self._tail)

    def feed_text(self, token_ids):
        return self._text(token_ids)

    cdef str _text(self, token_ids):
        """The released text; None when there is none, when a stop rule ends the choice, or once ended."""
        if self.finished:
            return None
        text = self._release(token_ids)
        if not text:
            return None
        self.started = True
        return text

    cdef str _release(self, token_ids):
        """The text ``token_ids`` release; None when a stop rule ends the choice (fields set)."""
        cdef Py_ssize_t i
        cdef long token
        cdef str released = "", text
        cdef tuple done
        if type(token_ids) is not list:
            token_ids = list(token_ids)
        for i in range(PyList_GET_SIZE(token_ids)):
            token_id = <object>PyList_GET_ITEM(token_ids, i)
            token = token_id
            self.tokens += 1
            text = self._raw.step(token) if self._raw is not None else self._detok.step(token_id)
            text = self._stop.advance(token, text)  # no delta record per token
            released = text if i == 0 else released + text  # one token: no concatenation
            if self._stop.done is not None:
                done = <tuple>self._stop.done
                self.finished, self.finish_reason, self.matched, self.text = True, done[2], done[3], released
                return None
        return released
