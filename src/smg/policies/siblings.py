"""Routes shared between a server's worker processes, so that ``cache_aware`` keeps its cache hits
when every process routes a share of the traffic (``smg serve --workers N``).

Each process's prefix tree sees only the requests that reached it, while a conversation's turns
come on whichever process the kernel gave their connections. So the next turn often lands on a
process that never routed the conversation, which sends it to another engine, and the engine's
prefix cache misses. To avoid that, each process tells its siblings what it routed (the model,
the worker, the prompt's token ids), and they insert it in their trees as if they had routed it.
Every tree then holds the server's routes, a moment late.

Transport: a Unix datagram socket per process in the server's shared directory. The routes one
turn of the event loop made go out together, as one datagram to each sibling (a Unix socket
queues only about ten datagrams: one per route would be dropped at a few thousand routes a
second). A sibling whose queue is full gets its datagrams a moment later (up to ``_MAX_WAITING``
of them; past that, and for a sibling gone, routes are dropped): a missing route costs a cache
hit, never a request. A prompt is shared up to ``MAX_SHARED_TOKENS`` ids (its prefix: what
a tree matches).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import struct
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

log = logging.getLogger("smg.policies.siblings")

MAX_SHARED_TOKENS = 16_384  # (64 KiB of int32)
_BATCH_BYTES = 96 * 1024  # a datagram at most about this big (the default send buffer is ~208 KiB)
_MAX_WAITING = 32  # datagrams held for a sibling that does not keep up; then its oldest are dropped
_RETRY = 0.002  # seconds before sending again to a sibling whose queue was full
_HEADER = struct.Struct("<HHI")  # a route: lengths of the model name and the worker URL, its token count
_RESCAN = 1.0  # seconds between listings of the siblings' sockets


@runtime_checkable
class LearnsRoutes(Protocol):
    """A policy that can take a route another process made (``cache_aware``). ``share``, when set,
    is called with each route this process makes."""

    share: Callable[[Sequence[int], str], None] | None

    def learn(self, token_ids: Sequence[int], url: str) -> None: ...


class SiblingRoutes:
    """This process's end: sends its routes to the siblings' sockets and learns theirs."""

    def __init__(self, directory: str, name: str | None = None) -> None:
        self.directory = directory
        self.path = os.path.join(directory, f"{name or os.getpid()}.sock")
        self._policies: dict[str, tuple[LearnsRoutes, Callable[[str], bool]]] = {}
        self._sock: socket.socket | None = None
        self._siblings: list[str] = []
        self._scanned = float("-inf")
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._waiting: dict[str, collections.deque[tuple[int, bytes]]] = {}  # per sibling: (routes, datagram)
        self._retry: asyncio.TimerHandle | None = None
        self.sent = self.learned = self.dropped = 0  # routes sent (to each sibling), taken, lost

    @classmethod
    def for_server(cls) -> "SiblingRoutes | None":
        """The server's, when this process is one of several sharing a state (smg.shared_state)."""
        from smg.shared_state import ENV

        state = os.environ.get(ENV)
        if not state:
            return None
        directory = os.path.join(os.path.dirname(state), "routes")
        os.makedirs(directory, exist_ok=True)
        return cls(directory)

    def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock.bind(self.path)
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._receive)

    def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def attach(self, model: str, policy: object, serves: Callable[[str], bool]) -> None:
        """Share ``model``'s routes when its policy learns routes (``serves(url)``: whether the
        model has that worker here)."""
        if isinstance(policy, LearnsRoutes):
            self._policies[model] = (policy, serves)
            name = model.encode()
            policy.share = lambda tokens, url: self._send(name, tokens, url)

    def detach(self, model: str) -> None:
        found = self._policies.pop(model, None)
        if found is not None:
            found[0].share = None

    def _targets(self) -> list[str]:
        now = time.monotonic()
        if now - self._scanned > _RESCAN:
            self._scanned = now
            with contextlib.suppress(OSError):
                self._siblings = [os.path.join(self.directory, name) for name in os.listdir(self.directory)
                                  if name.endswith(".sock") and os.path.join(self.directory, name) != self.path]
        return self._siblings

    def _send(self, model: bytes, tokens: Sequence[int], url: str) -> None:
        if self._sock is None:
            return
        encoded = url.encode()
        ids = array("i", tokens[:MAX_SHARED_TOKENS]).tobytes()
        record = b"".join((_HEADER.pack(len(model), len(encoded), len(ids) // 4), model, encoded, ids))
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._flush)
        self._batch.append(record)
        self._batch_bytes += len(record)
        if self._batch_bytes >= _BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._batch and self._sock is not None:
            datagram = (len(self._batch), b"".join(self._batch))
            self._batch.clear()
            self._batch_bytes = 0
            for target in self._targets():
                waiting = self._waiting.setdefault(target, collections.deque())
                if len(waiting) >= _MAX_WAITING:
                    self.dropped += waiting.popleft()[0]  # (a sibling far behind: its oldest routes go)
                waiting.append(datagram)
        self._send_waiting()

    def _send_waiting(self) -> None:
        """Send what waits for each sibling; a sibling whose queue is full gets the rest in a moment."""
        self._retry = None
        for target, waiting in list(self._waiting.items()):
            while waiting and self._sock is not None:
                try:
                    self._sock.sendto(waiting[0][1], target)
                except BlockingIOError:  # (its queue, or this socket's send buffer, is full)
                    if self._retry is None:
                        self._retry = asyncio.get_running_loop().call_later(_RETRY, self._send_waiting)
                    break
                except OSError as exc:  # a sibling gone
                    self.dropped += sum(routes for routes, _ in waiting)
                    del self._waiting[target]
                    if isinstance(exc, ConnectionRefusedError):  # (killed: nobody will unlink its socket)
                        with contextlib.suppress(OSError):
                            os.unlink(target)
                    break
                self.sent += waiting.popleft()[0]

    def _receive(self) -> None:
        sock = self._sock
        for _ in range(64):  # (then back to the loop: other work waits on it)
            try:
                datagram = sock.recv(1 << 18)
            except OSError:  # (BlockingIOError: nothing more now)
                return
            view, at = memoryview(datagram), 0
            while at + _HEADER.size <= len(datagram):
                model_len, url_len, count = _HEADER.unpack_from(datagram, at)
                at += _HEADER.size
                model = bytes(view[at:at + model_len]).decode(errors="replace")
                url = bytes(view[at + model_len:at + model_len + url_len]).decode(errors="replace")
                at += model_len + url_len
                ids, at = view[at:at + 4 * count], at + 4 * count
                found = self._policies.get(model)
                if found is None or not found[1](url):
                    continue  # (a model or worker this process does not serve: nothing to learn)
                found[0].learn(ids.cast("i").tolist(), url)
                self.learned += 1
