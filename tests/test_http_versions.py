"""Request lines whose protocol is not HTTP/1.1 or HTTP/1.0 get one refusal: 400, then close.

The parser (llhttp) takes HTTP/0.9 (a line with no version at all), HTTP/2.0
and ``RTSP/2.0``, and would let them be answered as HTTP/1.x; it refuses
1.2, or RTSP with an HTTP method, in its own words. Either way the client
gets the same reply, which says what was expected, whatever the head holds
(``Connection`` and ``Proxy-Connection`` make the server read the version on
another path), the handler never sees the request, the replies owed before
it come first, and nothing pipelined after it is run.
"""

from __future__ import annotations

import pytest

from corosm.frontends.http import HttpServer
from rawclient import read_response, read_until_closed
from test_http_protocol import Recorder, connect, get, serve

UNSUPPORTED = b"malformed request: unsupported HTTP version: expected HTTP/1.1 or HTTP/1.0\n"
CRLF_AFTER = (
    b"malformed request: expected the end of the request line (CRLF) "
    b"right after HTTP/1.1 or HTTP/1.0\n"
)
NO_VERSION = (
    b"malformed request: expected the version (HTTP/1.1 or HTTP/1.0) after the target; "
    b"a space inside the target is sent as %20\n"
)

# Lines the parser takes as HTTP/0.9 or 2.0: answered before this change.
TAKEN_BY_THE_PARSER = [
    b"GET /ok HTTP/2.0",
    b"GET /ok HTTP/0.9",
    b"GET /ok",
    b"GET /ok RTSP/2.0",
    b"SOURCE /ok ICE/2.0",
    b"OPTIONS /ok RTSP/0.9",
]
# Lines the parser refuses itself, each with the message a client can act on.
REFUSED_BY_THE_PARSER = [
    (b"GET /ok HTTP/1.2", UNSUPPORTED),
    (b"GET /ok HTTP/1", UNSUPPORTED),
    (b"GET /ok HTTP/", UNSUPPORTED),
    (b"GET /ok HTTP/1.x", UNSUPPORTED),
    (b"PUT /ok RTSP/1.0", UNSUPPORTED),
    (b"GET /ok ICE/1.0", UNSUPPORTED),
    (b"GET /ok HTTP/1.1 ", CRLF_AFTER),
    (b"GET /ok HTTP/1.10", CRLF_AFTER),
    (b"GET /ok http/1.1", NO_VERSION),
]
HEADS = [
    b"",
    b"Connection: keep-alive\r\n",
    b"Proxy-Connection: keep-alive\r\n",
    b"Connection: close\r\n",
    b"Expect: 100-continue\r\nContent-Length: 2\r\n",
]


async def refused(server: HttpServer, rec: Recorder, line: bytes, head: bytes) -> bytes:
    """Send a good request, ``line`` with ``head``, and a good one; return the refusal's body."""
    reader, writer = await connect(server)
    body = b"hi" if b"Content-Length" in head else b""
    writer.write(get(b"/ok") + line + b"\r\nHost: t\r\n" + head + b"\r\n" + body + get(b"/echo"))
    first = await read_response(reader)
    assert (first.status, first.body) == (200, b"Ok")
    resp = await read_response(reader)
    assert (resp.status, resp.header(b"connection")) == (400, b"close")
    assert await read_until_closed(reader) == b""  # nothing after it: /echo is not run
    assert [r.target for r in rec.seen] == [b"/ok"]
    return resp.body


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("line", TAKEN_BY_THE_PARSER)
def test_a_version_the_parser_takes_is_refused_as_one_it_does_not(line: bytes, head: bytes) -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        assert await refused(server, rec, line, head) == UNSUPPORTED

    serve(body)


@pytest.mark.parametrize(("line", "message"), REFUSED_BY_THE_PARSER)
def test_a_line_the_parser_refuses_says_what_was_expected(line: bytes, message: bytes) -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        assert await refused(server, rec, line, b"") == message

    serve(body)


def test_a_refused_write_with_a_body_is_not_run() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(b"POST /echo HTTP/2.0\r\nContent-Length: 5\r\n\r\nhello" + get(b"/ok"))
        resp = await read_response(reader)
        assert (resp.status, resp.body) == (400, UNSUPPORTED)
        assert await read_until_closed(reader) == b""
        assert rec.seen == []

    serve(body)


@pytest.mark.parametrize("asked", [b"Connection", b"Proxy-Connection"])
def test_http10_kept_open_says_so_whichever_header_asked(asked: bytes) -> None:
    # The parser keeps a 1.0 request open for either header; the reply must
    # say so, or a 1.0 client takes the connection to close after it.
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(b"GET /ok HTTP/1.0\r\n" + asked + b": keep-alive\r\n\r\n")
        resp = await read_response(reader)
        assert (resp.status, resp.header(b"connection")) == (200, b"keep-alive")
        writer.write(get(b"/ok"))  # and it is kept open
        assert (await read_response(reader)).body == b"Ok"

    serve(body)


def test_http10_and_11_are_still_served_as_before() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(
            get(b"/ok", b"Connection: keep-alive\r\n")
            + b"GET /ok HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
            + b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"
        )
        kept = await read_response(reader)
        assert (kept.status, kept.header(b"connection")) == (200, None)
        kept = await read_response(reader)
        assert (kept.status, kept.header(b"connection")) == (200, b"keep-alive")
        last = await read_response(reader)  # 1.0 ignores Expect, and closes by default
        assert (last.status, last.body, last.header(b"connection")) == (200, b"hi", b"close")
        assert await read_until_closed(reader) == b""

    serve(body)
