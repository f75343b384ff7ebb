"""Just enough HTTP/1.1 for both clients: encode a request, parse replies, no I/O.

The clients speak to one server that we also wrote, so this stays small: a
request always carries Content-Length; a reply body is framed by
Content-Length, by chunked transfer coding, or by the connection closing.

:class:`ReplyReader` is the reply side of one connection, in the manner of
h11: a transport feeds it the bytes it reads (``b""`` once the server closed)
and asks it for the next whole reply. The blocking and the asyncio client are
such transports, so both read replies by the rules written here once, and
refuse a wrong one with the same :class:`~corosm.client.errors.ProtocolError`,
whose message says what came and what was expected. Sizes are bounded, so
that a wrong peer cannot make the client buffer without limit.
"""

from __future__ import annotations

import re
from collections.abc import Generator

from corosm.client.errors import ProtocolError
from corosm.client.protocol import HttpRequest, HttpResponse

MAX_HEAD = 64 * 1024  # a reply's status line and headers, or a chunked body's trailers
MAX_HEADERS = 100
MAX_LINE = 1024  # a chunk size line
MAX_BODY = 64 * 1024 * 1024
READ_SIZE = 65536  # bytes a transport asks the socket for at a time

Reply = tuple[HttpResponse, bool]  # a response, and whether the connection must close after it
_Parse = Generator[None, None, Reply]  # yields whenever it needs more bytes
_Fields = tuple[tuple[str, str], ...]

# HTTP/1.0 or 1.1, a three-digit status 100..599, then an optional reason phrase.
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: .*)?", re.DOTALL)
# The characters of an RFC 9110 token, which a field name is (deleted with translate:
# faster than a regex on the path every reply takes).
_TOKEN_CHARS = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]+")


class EmptyReply(Exception):
    """The connection ended before the first byte of a reply (a stale keep-alive)."""


def body_too_large() -> ProtocolError:
    """The refusal of a reply body over :data:`MAX_BODY`, however the body is framed."""
    return ProtocolError(f"the reply body exceeds the client's limit of {MAX_BODY} bytes")


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


class ReplyReader:
    """The replies arriving on one connection: bytes in, :class:`HttpResponse` out.

    Call :meth:`feed` with each read and :meth:`next_reply` until it returns a
    reply. Bytes past one reply are kept for the next (pipelining). After an
    exception the byte stream is out of step: close the connection.
    """

    __slots__ = ("_buffer", "_eof", "_parse", "_scanned")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._eof = False
        self._scanned = 0  # bytes of the buffer searched for the end of a head in vain
        self._parse: _Parse | None = None  # the reply being read, when it is incomplete

    def feed(self, data: bytes) -> None:
        """Add bytes read from the connection; ``b""`` means the server closed it."""
        if data:
            self._buffer += data
        else:
            self._eof = True

    @property
    def buffered(self) -> int:
        """Bytes received and not yet part of a returned reply."""
        return len(self._buffer)

    def next_reply(self) -> Reply | None:
        """The next whole reply, or None until more bytes are fed.

        Raises :class:`EmptyReply` when the connection ended before the
        reply's first byte, :class:`ProtocolError` when the bytes are not an
        HTTP/1.x reply this client can read.
        """
        parse = self._parse or self._reply()
        self._parse = None  # stays None if parse raises: a later call starts afresh
        try:
            next(parse)
        except StopIteration as done:
            reply: Reply = done.value
            return reply
        self._parse = parse
        return None

    # --- the reply, piece by piece --------------------------------------------------
    # The generators yield whenever the buffer lacks the bytes they need next; the
    # _take helpers return None then. (Plain functions, and the head taken as one
    # block: this is every reply's path, and a generator per line cost a fifth more.)

    def _reply(self) -> _Parse:
        while not self._buffer:
            if self._eof:
                raise EmptyReply
            yield
        what = "the reply's status line and headers"
        while True:
            while (head := self._take_block(what)) is None:
                _check_first_line(self._buffer)  # not HTTP at all: say so now, not at the timeout
                yield
            status, http10 = _status(head[0] if head else b"")
            headers = _fields(head[1:], "the reply headers")
            if status >= 200:
                break  # 1xx replies are informational: skip them
            what = f"the reply after a {status} reply"
        body, closed_framing = yield from self._body(status, headers)
        connection = (_field(headers, "connection") or "").lower()
        must_close = (
            closed_framing or "close" in connection or (http10 and "keep-alive" not in connection)
        )
        return HttpResponse(status, headers, body), must_close

    def _body(self, status: int, headers: _Fields) -> Generator[None, None, tuple[bytes, bool]]:
        """The body and whether it was framed by the connection closing."""
        if status in (204, 304):
            return b"", False
        coding = _field(headers, "transfer-encoding")
        if coding is not None:
            if coding.strip().lower() != "chunked":
                raise ProtocolError(
                    f"unsupported Transfer-Encoding {coding[:40]!r}: expected chunked"
                )
            return (yield from self._chunked_body()), False
        length = _content_length(headers)
        if length is not None:
            while (body := self._take(length)) is None:
                yield
            return body, False
        while not self._eof:
            if len(self._buffer) > MAX_BODY:
                raise body_too_large()
            yield
        if len(self._buffer) > MAX_BODY:
            raise body_too_large()
        body = bytes(self._buffer)
        self._buffer.clear()
        return body, True

    def _chunked_body(self) -> Generator[None, None, bytes]:
        parts: list[bytes] = []
        total = 0
        while True:
            while (line := self._take_line("a chunk size line")) is None:
                yield
            size_field = line.split(b";", 1)[0].strip(b" \t")  # drop chunk extensions
            if not _CHUNK_SIZE.fullmatch(size_field):
                raise ProtocolError(
                    f"bad chunk size {size_field[:20]!r}: expected a hexadecimal number"
                )
            if len(size_field) > 16:  # no need to convert a number of any length
                raise body_too_large()
            size = int(size_field, 16)
            if size == 0:
                what = "the trailers of a chunked body"
                while (trailers := self._take_block(what)) is None:
                    yield
                _fields(trailers, what)  # checked, then dropped: no call reads them
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                raise body_too_large()
            while (part := self._take(size)) is None:
                yield
            parts.append(part)
            while not self._take_line_end():
                yield

    def _take_block(self, what: str) -> list[bytes] | None:
        """The lines up to the next empty line, without line ends; None until it came.

        ``what`` names the block in errors. The search resumes where the last
        one stopped, so a server trickling bytes costs no rescans.
        """
        buffer = self._buffer
        end, after = _block_end(buffer, max(self._scanned - 2, 0))
        if end < 0 or end > MAX_HEAD:
            if len(buffer) > MAX_HEAD:
                raise ProtocolError(f"{what} are longer than {MAX_HEAD} bytes")
            if self._eof:
                raise ProtocolError(f"the connection closed in the middle of {what}")
            self._scanned = len(buffer)
            return None
        self._scanned = 0
        lines = bytes(buffer[:end]).split(b"\n") if end else []
        del buffer[:after]
        if len(lines) > MAX_HEADERS + 1:
            raise ProtocolError(f"{what} have more than {MAX_HEADERS} fields")
        return [line.removesuffix(b"\r") for line in lines]

    def _take_line(self, what: str) -> bytes | None:
        """One line without its CRLF (or bare LF), or None until it is whole."""
        buffer = self._buffer
        end = buffer.find(b"\n", 0, MAX_LINE + 1)
        if end < 0:
            if len(buffer) > MAX_LINE:
                raise ProtocolError(f"{what} is longer than {MAX_LINE} bytes")
            if self._eof:
                raise ProtocolError(f"the connection closed in the middle of {what}")
            return None
        line = bytes(buffer[:end]).removesuffix(b"\r")
        del buffer[: end + 1]
        return line

    def _take_line_end(self) -> bool:
        """Take the CRLF (or LF) that ends a chunk's data; False until it came."""
        buffer = self._buffer
        if buffer.startswith(b"\r\n"):
            del buffer[:2]
            return True
        if buffer.startswith(b"\n"):
            del buffer[:1]
            return True
        if len(buffer) >= 2 or (buffer and buffer[0] != 13):  # 13: CR
            raise ProtocolError(
                "a chunk is longer than its size line says: expected CRLF after its data"
            )
        if self._eof:
            raise ProtocolError("the connection closed in the middle of the reply body")
        return False

    def _take(self, size: int) -> bytes | None:
        """The next ``size`` bytes of the body, or None until they are all there."""
        buffer = self._buffer
        if len(buffer) < size:
            if self._eof:
                raise ProtocolError(
                    f"the connection closed in the middle of the reply body "
                    f"({len(buffer)} of {size} announced bytes came)"
                )
            return None
        data = bytes(buffer[:size])
        del buffer[:size]
        return data


def _block_end(buffer: bytearray, start: int) -> tuple[int, int]:
    """Where the lines before the next empty line end, and where that line ends; -1 if none.

    Lines end with CRLF or, leniently, a bare LF. Two finds: a regex search
    for either form would cost more than the rest of a reply's parsing.
    """
    if buffer.startswith(b"\n"):
        return 0, 1
    if buffer.startswith(b"\r\n"):
        return 0, 2
    crlf = buffer.find(b"\n\r\n", start)
    lf = buffer.find(b"\n\n", start, crlf if crlf >= 0 else len(buffer))
    if lf >= 0:
        return lf, lf + 2
    return (crlf, crlf + 3) if crlf >= 0 else (-1, -1)


def _check_first_line(buffer: bytearray) -> None:
    """Raise at once if the start of a reply head cannot be a status line."""
    end = buffer.find(b"\n", 0, MAX_LINE)
    if end >= 0:
        _status(bytes(buffer[:end]).removesuffix(b"\r"))
    elif not b"HTTP/1.".startswith(buffer[:7]):
        _status(bytes(buffer[:80]))


def _status(line: bytes) -> tuple[int, bool]:
    """(status, is HTTP/1.0) from a status line."""
    match = _STATUS_LINE.fullmatch(line)
    if match is None:
        raise ProtocolError(
            f"the reply does not start with an HTTP/1.x status line: got {line[:80]!r},"
            " expected e.g. 'HTTP/1.1 200 OK' (is this port a corosm HTTP server's?)"
        )
    return int(match[2]), match[1] == b"0"


def _fields(lines: list[bytes], what: str) -> _Fields:
    """Header (or trailer) lines as (lower-cased name, value) pairs."""
    fields = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not (colon and name) or name.translate(None, _TOKEN_CHARS):
            raise ProtocolError(f"malformed line in {what}: {line[:80]!r}, expected 'Name: value'")
        fields.append((name.lower().decode("ascii"), value.strip(b" \t").decode("latin-1")))
    return tuple(fields)


def _field(headers: _Fields, name: str) -> str | None:
    """The value of header ``name``; repeated headers joined with commas, as HTTP does."""
    values = [value for key, value in headers if key == name]
    return ", ".join(values) if values else None


def _content_length(headers: _Fields) -> int | None:
    value = _field(headers, "content-length")
    if value is None:
        return None
    if "," in value:  # a list of one value repeated may stand for it, HTTP says
        values = {item.strip() for item in value.split(",")}
        if len(values) > 1:
            raise ProtocolError(f"conflicting Content-Length values {value[:40]!r}: expected one")
        value = values.pop()
    if not (value.isdigit() and value.isascii()):
        raise ProtocolError(
            f"bad Content-Length {value[:20]!r}: expected a decimal number of bytes"
        )
    if len(value) > 19 or int(value) > MAX_BODY:  # no need to convert a number of any length
        raise body_too_large()
    return int(value)
