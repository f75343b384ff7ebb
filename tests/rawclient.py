"""A tiny raw HTTP/1.1 client on asyncio streams, for the HTTP server's tests.

Theory of operation
-------------------
Tests of an HTTP server need to send bytes that a polite client never would
(pipelined bursts, garbage, half requests) and to read replies one by one,
byte for byte. :func:`read_response` reads exactly one reply framed by
``Content-Length`` (the only framing our server emits) and returns it as a
:class:`RawResponse`; :func:`read_until_closed` tells whether the server closed
the connection within a bound. Every read has a timeout so a test fails
instead of hanging.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RawResponse:
    """One reply as received. Header names are lower-cased."""

    status: int
    reason: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class ProtocolViolation(Exception):
    """The server's bytes are not a well-formed HTTP/1.1 reply."""


async def read_response(reader: asyncio.StreamReader, timeout: float = 5.0) -> RawResponse:
    """Read one reply; raise ``asyncio.IncompleteReadError`` if the connection closed first."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ProtocolViolation(f"bad status line {lines[0]!r}")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ProtocolViolation(f"bad header line {line!r}")
        headers.append((name.strip().lower(), value.strip()))
    length = [v for k, v in headers if k == b"content-length"]
    if len(length) != 1 or not length[0].isdigit():
        raise ProtocolViolation(f"expected one Content-Length, got {length!r}")
    body = await asyncio.wait_for(reader.readexactly(int(length[0])), timeout)
    reason = parts[2] if len(parts) == 3 else b""
    return RawResponse(int(parts[1]), reason, tuple(headers), body)


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Read until the server closes; raise ``TimeoutError`` if it does not within ``timeout``."""
    return await asyncio.wait_for(reader.read(-1), timeout)


async def exchange(
    host: str, port: int, raw: bytes, count: int = 1, timeout: float = 5.0
) -> list[RawResponse]:
    """Open a connection, send ``raw``, read ``count`` replies, close."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        return [await read_response(reader, timeout) for _ in range(count)]
    finally:
        writer.close()
