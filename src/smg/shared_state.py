"""State the worker processes of one server share: admission slots and per-key rate buckets
(``smg serve --workers N``, or an app's own worker processes that set ``SMG_SHARED_STATE``).

A file mapped into every process (``mmap``), changed under an exclusive ``flock`` (a few
microseconds a change: two per request for each gate, one for each bucket). It holds fixed-size
records found by a hash of their name. Each process claims a column of every record for its own
admission slots. A process that dies leaves its column to the next process that claims one, which
zeroes it: the slots a crashed worker held are not lost to the server.

``SMG_SHARED_STATE`` names the file; the serving process makes it (:meth:`SharedState.create`)
and every worker opens it (:func:`current`).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import struct
import time
from collections.abc import Iterator

from smg.errors import SmgError

ENV = "SMG_SHARED_STATE"
MAX_PROCESSES = 256
RECORDS = 1024  # admission gates a server may have
BUCKETS = 1 << 16  # rate-limit buckets (API keys, JWT subjects); past them the stalest is reused
_WORD = 8
_RECORD = _WORD * (1 + MAX_PROCESSES)  # the name's hash, then one word per process
_BUCKET = 4 * _WORD  # the name's hash, the level, the last refill time, a word spare
_BUCKETS_AT = _RECORD * (RECORDS + 1)  # record 0: the pid of each column's process
_SIZE = _BUCKETS_AT + _BUCKET * BUCKETS
_PROBES = 16  # bucket slots looked at for a name before the stalest of them is reused


def _hash(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") or 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SharedState:
    """The mapped file; :meth:`claim` takes this process's column."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, _SIZE)
        self._offsets: dict[str, int] = {}
        self.column: int | None = None

    @classmethod
    def create(cls, path: str) -> "SharedState":
        """A new, zeroed state file at ``path``."""
        with open(path, "wb") as file:
            file.truncate(_SIZE)
        return cls(path)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _word(self, record: int, index: int, fmt: str = "<q") -> float:
        return struct.unpack_from(fmt, self._map, record + _WORD * index)[0]

    def _set(self, record: int, index: int, value: float, fmt: str = "<q") -> None:
        struct.pack_into(fmt, self._map, record + _WORD * index, value)

    def claim(self) -> int:
        """Take a column for this process (the columns of dead processes are zeroed first)."""
        with self.locked():
            free = None
            for column in range(MAX_PROCESSES):
                pid = self._word(0, 1 + column)
                if pid and not _alive(pid):
                    self._clear(column)
                    pid = 0
                if not pid and free is None:
                    free = column
            if free is None:
                raise SmgError(f"more than {MAX_PROCESSES} processes share {self.path}")
            self._set(0, 1 + free, os.getpid())
            self.column = free
        return free

    def release(self) -> None:
        """Give this process's column back (its slots with it)."""
        if self.column is not None:
            with self.locked():
                self._clear(self.column)
            self.column = None

    def _clear(self, column: int) -> None:
        self._set(0, 1 + column, 0)
        for record in range(1, RECORDS + 1):
            offset = record * _RECORD
            if self._word(offset, 0):
                self._set(offset, 1 + column, 0)

    def record(self, name: str) -> int:
        """The offset of ``name``'s record (made zeroed when new); call it holding the lock."""
        offset = self._offsets.get(name)
        if offset is not None:
            return offset
        key = _hash(name)
        start = key % RECORDS
        for probe in range(RECORDS):
            offset = (1 + (start + probe) % RECORDS) * _RECORD
            found = self._word(offset, 0, "<Q")
            if found == key or not found:
                if not found:
                    self._set(offset, 0, key, "<Q")
                self._offsets[name] = offset
                return offset
        raise SmgError(f"the shared state {self.path} is full ({RECORDS} admission gates)")

    def bucket(self, name: str) -> int:
        """The offset of ``name``'s bucket (call it holding the lock): its slot, a free one, or
        (all ``_PROBES`` taken) the one refilled longest ago, which starts anew as ``name``'s."""
        key = _hash(name)
        start = key % BUCKETS
        stalest, oldest = None, float("inf")
        for probe in range(_PROBES):
            offset = _BUCKETS_AT + ((start + probe) % BUCKETS) * _BUCKET
            found = self._word(offset, 0, "<Q")
            if found == key:
                return offset
            if not found:
                stalest = offset
                break
            stamp = self._word(offset, 2, "<d")
            if stamp < oldest:
                stalest, oldest = offset, stamp
        self._map[stalest:stalest + _BUCKET] = bytes(_BUCKET)
        self._set(stalest, 0, key, "<Q")
        return stalest


class SharedSlots:
    """A gate's slots over every process: at most ``limit`` held in all columns together."""

    def __init__(self, state: SharedState, name: str, limit: int) -> None:
        self.state, self.name, self.limit = state, "slots:" + name, limit

    def _held(self, record: int) -> int:
        return sum(struct.unpack_from(f"<{MAX_PROCESSES}q", self.state._map, record + _WORD))

    @property
    def active(self) -> int:
        with self.state.locked():
            return self._held(self.state.record(self.name))

    def try_take(self) -> bool:
        state = self.state
        with state.locked():
            record = state.record(self.name)
            if self._held(record) >= self.limit:
                return False
            own = 1 + state.column
            state._set(record, own, state._word(record, own) + 1)
            return True

    def give(self) -> None:
        state = self.state
        with state.locked():
            record = state.record(self.name)
            own = 1 + state.column
            state._set(record, own, max(0, state._word(record, own) - 1))


class SharedBucket:
    """A token bucket's level and last refill time, kept in the shared file's bucket region (a new
    bucket, or one whose slot was reused, starts full)."""

    def __init__(self, state: SharedState, name: str) -> None:
        self.state, self.name = state, "bucket:" + name

    @contextlib.contextmanager
    def values(self, capacity: float) -> Iterator[list[float]]:
        """``[level, stamp]`` under the lock; what the caller leaves in the list is stored."""
        state = self.state
        with state.locked():
            offset = state.bucket(self.name)
            stamp = state._word(offset, 2, "<d")
            # (CLOCK_MONOTONIC: one clock for every process; 0: a bucket new here)
            values = [state._word(offset, 1, "<d"), stamp] if stamp else [capacity, time.monotonic()]
            yield values
            state._set(offset, 1, values[0], "<d")
            state._set(offset, 2, values[1], "<d")


_current: SharedState | None = None


def current() -> SharedState | None:
    """This process's view of ``SMG_SHARED_STATE`` (a column claimed on first use); None when
    the variable is not set (one process: every count is local)."""
    global _current
    path = os.environ.get(ENV)
    if not path:
        return None
    if _current is None or _current.path != path:
        state = SharedState(path)
        state.claim()
        _current = state
    return _current
