"""The HTTP/1.1 layer over real loopback sockets, with a handler the test controls."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from corosm.errors import UsageError
from corosm.frontends.http import (
    Deferred,
    HttpServer,
    Later,
    Limits,
    Request,
    Response,
    start_http_server,
)
from corosm.runtime import run
from rawclient import read_response, read_until_closed

HOST = "127.0.0.1"
_WRITERS: list[asyncio.StreamWriter] = []  # closed by serve() after each test


class Recorder:
    """Answers by path: /ok, /echo, /defer (a future the test resolves), /later (a
    Later the test resolves), /resolved (a Later resolved already), /boom, /close."""

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.futures: list[asyncio.Future[bytes]] = []
        self.laters: list[Later] = []
        self.changed = asyncio.Event()

    def __call__(self, request: Request) -> Response | Deferred | Later:
        self.seen.append(request)
        self.changed.set()
        path = request.target
        if path == b"/ok":
            return Response(200, b"Ok")
        if path.startswith(b"/echo"):
            return Response(200, request.body + path[5:])
        if path.startswith(b"/defer"):
            fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self.futures.append(fut)
            return Deferred(fut, _finish_bytes)
        if path.startswith(b"/later"):
            later = Later()
            self.laters.append(later)
            return later
        if path == b"/resolved":
            later = Later()
            later.resolve(Response(200, b"already"))
            return later
        if path == b"/boom":
            raise RuntimeError("handler bug")
        if path == b"/big":
            return Response(200, b"b" * 256 * 1024)
        if path == b"/close":
            return Response(200, b"bye", close=True)
        return Response(404, b"no route\n")

    async def wait_seen(self, n: int) -> None:
        async def wait() -> None:
            while len(self.seen) < n:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), 5.0)


def _finish_bytes(fut: asyncio.Future[bytes]) -> Response:
    return Response(200, fut.result())


def serve(
    body: Callable[[HttpServer, Recorder], Awaitable[None]], limits: Limits | None = None
) -> None:
    """Run ``body`` against a fresh server on a free port, then shut it down."""

    async def main() -> None:
        recorder = Recorder()
        server = await start_http_server(recorder, HOST, 0, limits=limits)
        try:
            await body(server, recorder)
        finally:
            await close_writers()
            await server.shutdown(grace=2.0)

    run(main())


async def connect(server: HttpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(HOST, server.port)
    _WRITERS.append(writer)
    return reader, writer


async def close_writers() -> None:
    for writer in _WRITERS:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    _WRITERS.clear()


def reset_connection(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0): the client is gone, not merely done sending."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


def get(path: bytes, extra: bytes = b"") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: t\r\n" + extra + b"\r\n"


def post(path: bytes, body: bytes) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (path, len(body), body)


def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        for i in range(5):
            writer.write(post(b"/echo", b"n%d" % i))
            resp = await read_response(reader)
            assert (resp.status, resp.body) == (200, b"n%d" % i)
            assert resp.header(b"connection") is None
            assert resp.header(b"content-type") == b"text/plain; charset=utf-8"
        assert server.stats.connections_opened == 1
        writer.close()

    serve(body)


def test_pipelined_replies_keep_request_order_when_completed_backwards() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        # Every third request is deferred; the rest are answered at once.
        burst = [get(b"/defer") if i % 3 == 0 else get(b"/echo/%d" % i) for i in range(100)]
        writer.write(b"".join(burst))
        await rec.wait_seen(100)
        deferred = [i for i in range(100) if i % 3 == 0]
        assert len(rec.futures) == len(deferred)
        for i, fut in reversed(list(zip(deferred, rec.futures, strict=True))):
            fut.set_result(b"/%d" % i)
        got = [await read_response(reader) for _ in range(100)]
        assert [r.body for r in got] == [b"/%d" % i for i in range(100)]
        writer.close()

    serve(body)


def test_http10_closes_unless_keep_alive_asked() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(b"GET /ok HTTP/1.0\r\n\r\n")
        resp = await read_response(reader)
        assert (resp.status, resp.header(b"connection")) == (200, b"close")
        assert await read_until_closed(reader) == b""

        reader, writer = await connect(server)
        writer.write(b"GET /ok HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2)
        for _ in range(2):
            resp = await read_response(reader)
            assert (resp.status, resp.header(b"connection")) == (200, b"keep-alive")
        writer.close()

    serve(body)


def test_connection_close_request_and_response() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        # The second request comes after "Connection: close" and must be ignored.
        writer.write(get(b"/ok", b"Connection: close\r\n") + get(b"/ok"))
        resp = await read_response(reader)
        assert (resp.status, resp.header(b"connection")) == (200, b"close")
        assert await read_until_closed(reader) == b""
        assert len(rec.seen) == 1

        reader, writer = await connect(server)
        writer.write(get(b"/close") + get(b"/ok"))
        resp = await read_response(reader)
        assert (resp.body, resp.header(b"connection")) == (b"bye", b"close")
        assert await read_until_closed(reader) == b""

    serve(body)


def test_head_sends_length_without_body() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(b"HEAD /ok HTTP/1.1\r\n\r\n" + get(b"/ok"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"Content-Length: 2\r\n" in head
        resp = await read_response(reader)  # the next reply follows at once: no body above
        assert resp.body == b"Ok"
        writer.close()

    serve(body)


def test_oversized_body_gets_413_then_close() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(b"POST /echo HTTP/1.1\r\nContent-Length: 1001\r\n\r\n")
        resp = await read_response(reader)
        assert resp.status == 413
        assert b"1001 bytes, at most 1000 allowed" in resp.body
        assert await read_until_closed(reader) == b""

        reader, writer = await connect(server)
        chunks = b"".join(b"100\r\n" + b"x" * 256 + b"\r\n" for _ in range(4))
        writer.write(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
        resp = await read_response(reader)
        assert resp.status == 413
        assert await read_until_closed(reader) == b""
        assert rec.seen == []
        assert server.stats.rejected == {413: 2}

    serve(body, Limits(max_body_bytes=1000))


def test_oversized_head_and_too_many_headers_get_431() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(get(b"/ok", b"X-Big: " + b"a" * 600 + b"\r\n"))
        resp = await read_response(reader)
        assert resp.status == 431 and b"at most 512 allowed" in resp.body
        assert await read_until_closed(reader) == b""

        reader, writer = await connect(server)
        writer.write(get(b"/ok", b"".join(b"X-%d: 1\r\n" % i for i in range(9))))
        resp = await read_response(reader)
        assert resp.status == 431 and b"too many header fields: at most 8" in resp.body
        assert await read_until_closed(reader) == b""
        assert rec.seen == []

    serve(body, Limits(max_header_bytes=512, max_headers=8))


def test_header_line_that_never_ends_is_bounded() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(b"GET /ok HTTP/1.1\r\nX-Endless: ")
        for _ in range(20):  # 20 x 8 KiB with no line end: buffered inside the parser
            writer.write(b"b" * 8192)
        resp = await read_response(reader)
        assert resp.status == 431
        assert await read_until_closed(reader) == b""

    serve(body, Limits(max_header_bytes=1024))


def test_trailer_line_that_never_ends_is_bounded() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        head = b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        writer.write(head + b"2\r\nhi\r\n0\r\nX-Trailer: ")
        # 512 KiB of one trailer line, which no callback sees: the bound is
        # the limit and 64 KiB after the read in which the body ended.
        for _ in range(64):
            writer.write(b"t" * 8192)
        resp = await read_response(reader)
        assert resp.status == 431
        assert b"trailer" in resp.body and b"at most 1024 allowed" in resp.body
        assert await read_until_closed(reader) == b""
        assert rec.seen == []

    serve(body, Limits(max_header_bytes=1024))


def test_a_long_chunked_body_is_not_taken_for_an_endless_line() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(40):  # 320 KiB of body, far over the line bound, in 8 KiB chunks
            writer.write(b"2000\r\n" + b"c" * 8192 + b"\r\n")
        writer.write(b"0\r\nX-Trailer: fine\r\n\r\n")
        resp = await read_response(reader)
        assert (resp.status, resp.body) == (200, b"c" * 8192 * 40)

    serve(body, Limits(max_header_bytes=1024, max_body_bytes=1 << 20))


@pytest.mark.parametrize("framing", [b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n"])
def test_a_request_with_a_body_that_asks_to_upgrade_is_refused_not_run_without_it(
    framing: bytes,
) -> None:
    # The parser skips the body of a request that asks to switch protocols:
    # run, a PUT would store an empty value and answer 200.
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        data = b"hello" if framing.startswith(b"Content") else b"5\r\nhello\r\n0\r\n\r\n"
        upgrade = b"Connection: Upgrade\r\nUpgrade: h2c\r\n"
        writer.write(b"PUT /echo HTTP/1.1\r\nHost: t\r\n" + upgrade + framing + b"\r\n" + data)
        resp = await read_response(reader)
        assert resp.status == 400 and b"does not switch protocols" in resp.body
        assert await read_until_closed(reader) == b""
        assert rec.seen == []

    serve(body)


def test_expect_100_continue_is_answered_before_the_body_is_sent() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        resp = await read_response(reader)
        assert (resp.status, resp.body) == (200, b"hello")
        # The same connection goes on; a request without a body gets no 100.
        writer.write(get(b"/ok", b"Expect: 100-continue\r\n"))
        assert (await read_response(reader)).body == b"Ok"

    serve(body)


def test_expect_with_a_body_over_the_limit_gets_413_and_no_100() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(b"PUT /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        resp = await read_response(reader)  # a 100 first would not parse as a reply
        assert resp.status == 413
        assert await read_until_closed(reader) == b""

    serve(body, Limits(max_body_bytes=1000))


def test_an_unknown_expectation_gets_417() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(
            b"POST /echo HTTP/1.1\r\nExpect: something-else\r\nContent-Length: 2\r\n\r\nhi"
        )
        resp = await read_response(reader)
        assert resp.status == 417
        assert b"something-else" in resp.body and b"100-continue" in resp.body
        assert await read_until_closed(reader) == b""
        assert rec.seen == []

    serve(body)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"GARBAGE\r\n\r\n", b"malformed request: expected an upper-case method"),
        (b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", b"malformed request"),
        (b"GET / HTTP/9.9\r\n\r\n", b"malformed request: unsupported HTTP version"),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", b"malformed request: expected header"),
        (b"GET /a b HTTP/1.1\r\n\r\n", b"malformed request: expected the version"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"malformed request: an HTTP/2"),
    ],
)
def test_malformed_request_gets_400_with_reason_then_close(raw: bytes, fragment: bytes) -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(get(b"/ok") + raw)  # a good request first: its reply must come first
        first = await read_response(reader)
        assert (first.status, first.body) == (200, b"Ok")
        resp = await read_response(reader)
        assert resp.status == 400
        assert resp.header(b"connection") == b"close"
        assert resp.body.startswith(fragment) and len(resp.body) > len(fragment) + 2
        assert await read_until_closed(reader) == b""

    serve(body)


def test_slow_client_gets_408_and_is_closed() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        resp = await read_response(reader)
        assert resp.status == 408 and b"within 0.2 s" in resp.body
        assert await read_until_closed(reader) == b""
        assert rec.seen == []

    serve(body, Limits(request_timeout=0.2))


def test_idle_connection_is_closed() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(get(b"/ok"))
        assert (await read_response(reader)).status == 200
        assert await read_until_closed(reader) == b""
        writer.close()  # the server lingers until the client closes its side too
        await server.wait_no_connections()

    serve(body, Limits(idle_timeout=0.2))


def test_slow_reply_gets_503_and_the_late_reply_is_dropped() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(get(b"/defer") + get(b"/ok"))
        resp = await read_response(reader)
        assert resp.status == 503 and b"no reply within 0.2 s" in resp.body
        assert (await read_response(reader)).body == b"Ok"
        rec.futures[0].set_result(b"late")
        await asyncio.sleep(0)  # let the future's done-callback run
        assert server.stats.late_replies_dropped == 1
        writer.write(get(b"/echo/next"))
        assert (await read_response(reader)).body == b"/next"
        assert server.stats.response_timeouts == 1
        writer.close()

    serve(body, Limits(response_timeout=0.2))


def test_later_replies_keep_request_order_and_the_first_resolve_wins() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(get(b"/later/1") + get(b"/resolved") + get(b"/later/2") + get(b"/ok"))
        await rec.wait_seen(4)
        rec.laters[1].resolve(Response(200, b"two"))  # backwards: held behind the first
        rec.laters[1].resolve(Response(500, b"ignored"))
        rec.laters[0].resolve(Response(200, b"one"))
        replies = [await asyncio.wait_for(read_response(reader), 5.0) for _ in range(4)]
        assert [(r.status, r.body) for r in replies] == [
            (200, b"one"),
            (200, b"already"),
            (200, b"two"),
            (200, b"Ok"),
        ]
        writer.write(get(b"/resolved"))  # nothing pending: answered at once
        assert (await asyncio.wait_for(read_response(reader), 5.0)).body == b"already"

    serve(body)


def test_later_resolved_after_timeout_or_client_left_is_dropped() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(get(b"/later"))
        resp = await asyncio.wait_for(read_response(reader), 5.0)
        assert resp.status == 503 and server.stats.response_timeouts == 1
        rec.laters[0].resolve(Response(200, b"late"))
        assert server.stats.late_replies_dropped == 1
        writer.write(get(b"/later"))
        await rec.wait_seen(2)
        reset_connection(writer)
        await server.wait_no_connections()
        rec.laters[1].resolve(Response(200, b"gone"))
        assert server.stats.late_replies_dropped == 2

    serve(body, Limits(response_timeout=0.2))


def test_reply_after_client_left_is_dropped_quietly() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        _reader, writer = await connect(server)
        writer.write(get(b"/defer") + get(b"/defer"))
        await rec.wait_seen(2)
        reset_connection(writer)  # gone for good (a FIN alone may be a half-close)
        await server.wait_no_connections()
        rec.futures[0].set_result(b"gone")
        rec.futures[1].set_exception(RuntimeError("failed after the client left"))
        await asyncio.sleep(0)
        assert server.stats.late_replies_dropped == 2
        assert server.stats.connections_open == 0

    serve(body)


def test_handler_crash_answers_500_and_the_connection_goes_on() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(get(b"/boom") + get(b"/defer") + get(b"/ok"))
        await rec.wait_seen(3)
        rec.futures[0].set_exception(RuntimeError("async failure"))
        statuses = [(await read_response(reader)).status for _ in range(3)]
        assert statuses == [500, 500, 200]
        assert server.stats.handler_crashes == 2
        writer.close()

    serve(body)


def test_reading_pauses_while_too_many_replies_are_pending() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(get(b"/defer") * 4)
        await rec.wait_seen(4)
        (conn,) = server._connections
        transport = conn._transport
        assert transport is not None and not transport.is_reading()
        writer.write(get(b"/ok"))
        for i, fut in enumerate(rec.futures):
            fut.set_result(b"%d" % i)
        assert [(await read_response(reader)).body for _ in range(5)] == [
            b"0",
            b"1",
            b"2",
            b"3",
            b"Ok",
        ]
        assert transport.is_reading()
        writer.close()

    serve(body, Limits(max_pending=4))


def test_reading_pauses_while_the_client_does_not_read_replies() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(get(b"/ok"))
        await read_response(reader)
        (conn,) = server._connections
        paused = asyncio.Event()
        original = conn.pause_writing

        def pause_writing() -> None:
            original()
            paused.set()

        conn.pause_writing = pause_writing  # type: ignore[method-assign]
        writer.write(get(b"/big") * 40)  # ~10 MiB of replies that nobody reads yet
        await asyncio.wait_for(paused.wait(), 5.0)
        transport = conn._transport
        assert transport is not None and not transport.is_reading()
        for _ in range(40):
            resp = await read_response(reader)
            assert len(resp.body) == 256 * 1024
        writer.write(get(b"/ok"))
        assert (await read_response(reader)).body == b"Ok"
        assert transport.is_reading()

    serve(body)


def test_upgrade_request_is_answered_then_closed() -> None:
    async def body(server: HttpServer, rec: Recorder) -> None:
        reader, writer = await connect(server)
        writer.write(get(b"/ok", b"Connection: upgrade\r\nUpgrade: websocket\r\n") + b"\x00tunnel")
        resp = await read_response(reader)
        assert resp.body == b"Ok"
        # The reply ends the connection, so it says so (it was sent without it when
        # ready at once: encoded before the parser reported the upgrade).
        assert (b"connection", b"close") in resp.headers
        assert await read_until_closed(reader) == b""

    serve(body)


def test_graceful_shutdown_finishes_in_flight_replies_then_closes() -> None:
    async def main() -> None:
        rec = Recorder()
        server = await start_http_server(rec, HOST, 0)
        busy_reader, busy_writer = await connect(server)
        idle_reader, idle_writer = await connect(server)
        busy_writer.write(get(b"/defer"))
        await rec.wait_seen(1)
        port = server.port
        stopping = asyncio.ensure_future(server.shutdown(grace=5.0))
        assert await read_until_closed(idle_reader) == b""  # idle: closed at once
        idle_writer.close()
        assert not stopping.done()
        rec.futures[0].set_result(b"finished")
        resp = await read_response(busy_reader)
        assert (resp.body, resp.header(b"connection")) == (b"finished", b"close")
        assert await read_until_closed(busy_reader) == b""
        busy_writer.close()
        await asyncio.wait_for(stopping, 1.5)  # well before the 2 s linger bound
        await close_writers()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(HOST, port)

    run(main())


def test_limits_reject_nonsense_values() -> None:
    with pytest.raises(UsageError, match="max_body_bytes must be >= 1"):
        Limits(max_body_bytes=0)
    with pytest.raises(UsageError, match="request_timeout must be > 0"):
        Limits(request_timeout=0)
