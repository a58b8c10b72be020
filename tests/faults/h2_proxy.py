"""A fault-injecting HTTP/2 proxy between the gateway and a real engine: bytes pass through, the
frames are read on the way, and one chosen Generate stream is made to misbehave as an engine
might. It reads the client's header blocks with its own HPACK decoder to learn each stream's
path, and it writes its own header blocks with never-indexed literals, so neither side's HPACK
table is disturbed.

Faults, applied to the ``target``-th Generate stream (counted from 1, on any connection):

* ``malformed``: its first message's bytes garbled (the length kept): not a GenerateResponse;
* ``oversized``: its first message's length prefix raised past any limit;
* ``long_error``: its first message replaced by trailers with ``grpc-status`` 13 and a 200 KB
  ``grpc-message`` (in CONTINUATION frames);
* ``goaway``: once ``opened`` Generate streams were seen, its first message passes, then a GOAWAY
  naming it as the last stream started: the client must send those opened after it again on a new
  connection (the engine, which did start them, cancels them when the old connection closes); the
  connection still carries the streams up to it.
"""
from __future__ import annotations

import asyncio
import struct
import threading

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, GOAWAY, CONTINUATION = 0x0, 0x1, 0x7, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4
LONG_ERROR = "the engine failed: " + "x" * 200_000


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


class Frames:
    """Frames out of a byte stream (what a read left is kept for the next)."""

    def __init__(self, preface: bool = False) -> None:
        self.buffer = b""
        self.preface = preface

    def feed(self, data: bytes) -> list[tuple[int, int, int, bytes]]:
        """The whole frames now in the buffer (a client's preface skipped)."""
        self.buffer += data
        if self.preface:
            if len(self.buffer) < len(PREFACE):
                return []
            self.buffer, self.preface = self.buffer[len(PREFACE):], False
        frames = []
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                break
            kind, flags = self.buffer[3], self.buffer[4]
            stream = int.from_bytes(self.buffer[5:9], "big") & 0x7FFFFFFF
            frames.append((kind, flags, stream, self.buffer[9:9 + length]))
            self.buffer = self.buffer[9 + length:]
        return frames


class FaultProxy:
    """Listens on 127.0.0.1 (``port``), forwards to ``upstream`` (host, port); one fault, one target."""

    def __init__(self, upstream: tuple[str, int], fault: str, target: int = 3, opened: int = 0) -> None:
        self.upstream, self.fault, self.target, self.opened = upstream, fault, target, opened
        self.generate_streams = 0
        self.injected = False
        self.loop = asyncio.new_event_loop()
        self.port = 0
        started = threading.Event()
        threading.Thread(target=self._run, args=(started,), daemon=True).start()
        started.wait(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._connection, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)

    async def _connection(self, client_reader, client_writer) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        state = {"targeted": None}
        await asyncio.gather(self._upward(client_reader, server_writer, state),
                             self._downward(server_reader, client_writer, state), return_exceptions=True)
        for writer in (client_writer, server_writer):
            writer.close()

    async def _upward(self, reader, writer, state) -> None:
        """Client to engine: passed as is; header blocks decoded to find the Generate streams."""
        frames, decoder = Frames(preface=True), hpack.Decoder()
        decoder.max_allowed_table_size = 1 << 20
        decoder.max_header_list_size = 1 << 24
        block, block_stream = b"", 0
        while data := await reader.read(1 << 16):
            writer.write(data)
            parsed = frames.feed(data)
            for kind, flags, stream, payload in parsed:
                if kind == HEADERS:
                    payload = _unpadded(flags, payload, priority=True)
                    block, block_stream = payload, stream
                elif kind == CONTINUATION:
                    block += payload
                else:
                    continue
                if flags & END_HEADERS:
                    fields = dict(decoder.decode(block))
                    if str(fields.get(":path", "")).endswith("/Generate"):
                        self.generate_streams += 1
                        if self.generate_streams == self.target:
                            state["targeted"] = block_stream
            await writer.drain()

    async def _downward(self, reader, writer, state) -> None:
        """Engine to client: frames passed on, the fault applied to the targeted stream."""
        frames = Frames()
        while data := await reader.read(1 << 16):
            parsed = frames.feed(data)
            out = []
            for kind, flags, stream, payload in parsed:
                if (kind == DATA and stream == state["targeted"] and not self.injected and payload
                        and not flags & 0x8):
                    self.injected = True
                    if self.fault == "goaway":  # (the later streams opened first, for certain)
                        for _ in range(500):
                            if self.generate_streams >= self.opened:
                                break
                            await asyncio.sleep(0.01)
                    out.append(self._faulty(flags, stream, payload))
                else:
                    out.append(frame(kind, flags, stream, payload))
            writer.write(b"".join(out))
            await writer.drain()

    def _faulty(self, flags: int, stream: int, payload: bytes) -> bytes:
        if self.fault == "malformed":  # (length kept; every byte 0xFF: an invalid protobuf wire type)
            return frame(DATA, flags, stream, payload[:5] + b"\xff" * (len(payload) - 5))
        if self.fault == "oversized":
            return frame(DATA, flags, stream, payload[:1] + struct.pack(">I", 0x7FFFFFFF) + payload[5:])
        if self.fault == "long_error":
            block = hpack.Encoder().encode([hpack.NeverIndexedHeaderTuple(":status", "200"),
                                            hpack.NeverIndexedHeaderTuple("content-type", "application/grpc"),
                                            hpack.NeverIndexedHeaderTuple("grpc-status", "13"),
                                            hpack.NeverIndexedHeaderTuple("grpc-message", LONG_ERROR)],
                                           huffman=False)
            pieces = [block[i:i + 16384] for i in range(0, len(block), 16384)]
            out = frame(HEADERS, END_STREAM | (END_HEADERS if len(pieces) == 1 else 0), stream, pieces[0])
            for i, piece in enumerate(pieces[1:], 1):
                out += frame(CONTINUATION, END_HEADERS if i == len(pieces) - 1 else 0, stream, piece)
            return out
        # goaway: the message passes, then a GOAWAY naming its stream as the last started
        return frame(DATA, flags, stream, payload) + frame(GOAWAY, 0, 0, struct.pack(">II", stream, 0))


def _unpadded(flags: int, payload: bytes, priority: bool = False) -> bytes:
    if flags & 0x8:  # PADDED
        payload = payload[1:len(payload) - payload[0]]
    if priority and flags & 0x20:  # PRIORITY: 5 bytes before the block
        payload = payload[5:]
    return payload
