"""A WebSocket client on a bare TCP socket that reads only when told to: a client that stopped
reading, whose server-side writes back up."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any

RECEIVE_BUFFER_BYTES = 4096  # a small receive window, so the server's writes back up early


class RawWebSocket:
    """Handshake, masked text frames out, and frames in only on read_frame()."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, path: str = "/ws") -> RawWebSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        # A small StreamReader limit: it stops reading the socket once that much is unread.
        reader, writer = await asyncio.open_connection(sock=sock, limit=RECEIVE_BUFFER_BYTES)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send(self, frame: dict[str, Any]) -> None:
        """One masked text frame (clients must mask)."""
        payload = json.dumps(frame).encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) <= 0xFFFF:
            header += struct.pack("!BH", 0x80 | 126, len(payload))
        else:
            header += struct.pack("!BQ", 0x80 | 127, len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)
        await self.writer.drain()

    async def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next frame (opcode, payload); IncompleteReadError at the end of the stream."""

        async def read() -> tuple[int, bytes]:
            first, second = await self.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return first & 0x0F, await self.reader.readexactly(length)

        return await asyncio.wait_for(read(), timeout)

    async def read_json(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next text frame's JSON; a ping on the way is answered, as browsers do."""
        opcode, payload = await self.read_frame(timeout)
        while opcode == 0x9:
            mask = os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            self.writer.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)
            opcode, payload = await self.read_frame(timeout)
        assert opcode == 0x1, (opcode, payload[:100])
        frame: dict[str, Any] = json.loads(payload)
        return frame

    async def close_code_after_draining(self, timeout: float = 10.0) -> int | None:
        """Read everything the server sent; the code of its close frame (None: the connection
        ended without one)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                opcode, payload = await self.read_frame(max(0.0, deadline - loop.time()))
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
            if opcode == 0x8:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code

    def close(self) -> None:
        self.writer.close()
