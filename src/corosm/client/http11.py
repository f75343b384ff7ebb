"""Just enough HTTP/1.1 for the asyncio client: encode a request, read a response.

The asyncio client speaks to one server that we also wrote, so this stays small:
a request always carries Content-Length; a response body is framed by
Content-Length, by chunked transfer coding, or by the connection closing. Sizes
are bounded so that a wrong peer cannot make the client buffer without limit.
Anything else is a :class:`~corosm.client.errors.ProtocolError`.
"""

from __future__ import annotations

import asyncio

from corosm.client.errors import ProtocolError
from corosm.client.protocol import HttpRequest, HttpResponse

MAX_HEADER_LINE = 16 * 1024
MAX_HEADERS = 100
MAX_BODY = 64 * 1024 * 1024


class EmptyReply(Exception):
    """The connection ended before the first byte of a reply (a stale keep-alive)."""


def encode_request(request: HttpRequest, host_header: str) -> bytes:
    """The request's bytes on the wire."""
    lines = [
        f"{request.method} {request.path} HTTP/1.1",
        f"Host: {host_header}",
        f"Content-Length: {len(request.body)}",
    ]
    if request.content_type is not None:
        lines.append(f"Content-Type: {request.content_type}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + request.body


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError as exc:
        raise ProtocolError("a reply header line is too long") from exc
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("the connection closed in the middle of a reply") from exc
    if len(line) > MAX_HEADER_LINE:
        raise ProtocolError("a reply header line is too long")
    return line.rstrip(b"\r\n")


async def _status_line(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, is HTTP/1.0); raise EmptyReply on EOF before any byte."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise EmptyReply from exc
        raise ProtocolError("the connection closed in the middle of a status line") from exc
    except asyncio.LimitOverrunError as exc:
        raise ProtocolError("the reply's status line is too long") from exc
    parts = line.rstrip(b"\r\n").split(b" ", 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
    return int(parts[1]), parts[0] == b"HTTP/1.0"


async def _headers(reader: asyncio.StreamReader) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    while line := await _line(reader):
        if len(headers) >= MAX_HEADERS:
            raise ProtocolError(f"the reply has more than {MAX_HEADERS} headers")
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            raise ProtocolError(f"malformed reply header: {line[:80]!r}")
        headers.append((name.strip().lower().decode("latin-1"), value.strip().decode("latin-1")))
    return tuple(headers)


async def _chunked_body(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_field = (await _line(reader)).split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError as exc:
            raise ProtocolError(f"bad chunk size {size_field[:20]!r}") from exc
        if size == 0:
            while await _line(reader):  # trailers, if any, end with an empty line
                pass
            return b"".join(parts)
        total += size
        if total > MAX_BODY:
            raise ProtocolError(f"the reply body exceeds {MAX_BODY} bytes")
        parts.append(await _exactly(reader, size))
        await _line(reader)  # the CRLF after each chunk


async def _exactly(reader: asyncio.StreamReader, size: int) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("the connection closed in the middle of a reply body") from exc


async def _body(
    reader: asyncio.StreamReader, status: int, headers: tuple[tuple[str, str], ...]
) -> tuple[bytes, bool]:
    """The body and whether it was framed by the connection closing."""
    fields = dict(headers)
    if status in (204, 304) or 100 <= status < 200:
        return b"", False
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return await _chunked_body(reader), False
    length_field = fields.get("content-length")
    if length_field is not None:
        if not length_field.isdigit():
            raise ProtocolError(f"bad Content-Length {length_field[:20]!r}")
        length = int(length_field)
        if length > MAX_BODY:
            raise ProtocolError(f"the reply body exceeds {MAX_BODY} bytes")
        return await _exactly(reader, length), False
    parts = []
    total = 0
    while chunk := await reader.read(65536):
        total += len(chunk)
        if total > MAX_BODY:
            raise ProtocolError(f"the reply body exceeds {MAX_BODY} bytes")
        parts.append(chunk)
    return b"".join(parts), True


async def read_response(reader: asyncio.StreamReader) -> tuple[HttpResponse, bool]:
    """Read one final response; also say whether the connection must be closed after it."""
    while True:
        status, http10 = await _status_line(reader)
        headers = await _headers(reader)
        if status >= 200:
            break  # 1xx replies are informational: skip them
    body, closed_framing = await _body(reader, status, headers)
    connection = dict(headers).get("connection", "").lower()
    must_close = (
        closed_framing or "close" in connection or (http10 and "keep-alive" not in connection)
    )
    return HttpResponse(status, headers, body), must_close
