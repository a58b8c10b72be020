"""Prefill/decode disaggregation for engines served by :class:`~smg.engine.EngineServer`.

As with SGLang's disaggregated serving, the gateway sends one request to a prefill engine and to a
decode engine at once, both carrying ``(bootstrap_host, bootstrap_port, bootstrap_room)``: the host
and bootstrap port of the *prefill* engine, and a room number it drew for this request. The
prefill engine computes the prompt's KV and hands it over under that room; the decode engine
fetches it from ``bootstrap_host:bootstrap_port`` by room, then decodes and streams.

Here the KV is simulated and the handover is a line over TCP: the decode side sends the room, the
prefill side's :class:`HandoverServer` answers ``ok <prompt tokens>`` once that room's prefill is
done (or ``gone`` when it does not come within the timeout).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

log = logging.getLogger("smg.engine")

ROLES = ("prefill", "decode")
HANDOVER_TIMEOUT = 30.0  # how long either side waits for the other (seconds)


class HandoverFailed(Exception):
    """The decode side could not get a room's KV from the prefill side."""


@dataclass(frozen=True)
class Disaggregation:
    """An engine's role in disaggregated serving, and (prefill) the port of its bootstrap server."""

    role: str
    bootstrap_port: int = 8998
    timeout: float = HANDOVER_TIMEOUT

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"disaggregation role must be one of {ROLES}, got {self.role!r}")


class HandoverServer:
    """The prefill side: rooms whose prefill finished, waited for by decode engines."""

    def __init__(self, timeout: float = HANDOVER_TIMEOUT) -> None:
        self.timeout = timeout
        self._rooms: dict[int, asyncio.Future] = {}
        self._server: asyncio.base_events.Server | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _room(self, room: int) -> asyncio.Future:
        future = self._rooms.get(room)
        if future is None:
            future = self._rooms[room] = asyncio.get_running_loop().create_future()
            # a room nobody fetches (its decode half failed) is forgotten after the timeout
            asyncio.get_running_loop().call_later(2 * self.timeout, self._rooms.pop, room, None)
        return future

    def prefilled(self, room: int, prompt_tokens: int) -> None:
        """The room's prefill is done: its KV may be fetched."""
        future = self._room(room)
        if not future.done():
            future.set_result(prompt_tokens)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), self.timeout)
            room = int(line)
            try:
                tokens = await asyncio.wait_for(asyncio.shield(self._room(room)), self.timeout)
                writer.write(f"ok {tokens}\n".encode())
                self._rooms.pop(room, None)
            except asyncio.TimeoutError:
                writer.write(b"gone\n")
            await writer.drain()
        except (ValueError, asyncio.TimeoutError, ConnectionError) as exc:
            log.debug("handover connection dropped: %r", exc)
        finally:
            writer.close()


async def fetch(host: str, port: int, room: int, timeout: float = HANDOVER_TIMEOUT) -> int:
    """The decode side: wait for ``room``'s KV at the prefill engine's bootstrap server; the
    prompt tokens it prefilled. Raises :class:`HandoverFailed`."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        raise HandoverFailed(f"no bootstrap server at {host}:{port}: {exc!r}") from None
    try:
        writer.write(f"{room}\n".encode())
        line = await asyncio.wait_for(reader.readline(), timeout + 1)
    except (OSError, asyncio.TimeoutError) as exc:
        raise HandoverFailed(f"room {room} at {host}:{port}: {exc!r}") from None
    finally:
        writer.close()
    if not line.startswith(b"ok "):
        raise HandoverFailed(f"room {room} at {host}:{port} was not prefilled")
    return int(line[3:])
