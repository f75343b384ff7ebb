"""Read-your-writes on one HTTP connection: a pipelined read sees the writes before it.

Reads answer from the applied state at once, while a write waits for its
journal append, so without per-connection ordering a ``Write "x" 1`` then
``Read "x"`` sent in one burst can answer the old value. These tests send
hundreds of such pairs in one ``send`` and check each read against the write
just before it, with the real runtime (the memory journal completes appends
one loop turn later, which is enough to expose the race) and with a fake
runtime that holds writes until the test releases them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from corosm.apps.kv.inputs import Read, Write
from corosm.frontends.http import HttpServer, Request, Response, start_http_server
from corosm.frontends.http.app import KvHttpApp
from corosm.runtime import run
from rawclient import RawResponse, read_response
from test_http_app import HOST, FakeRuntime, req, serve_fake, serve_real

PAIRS = 300


async def pipeline(server: HttpServer, burst: list[bytes]) -> list[RawResponse]:
    reader, writer = await asyncio.open_connection(HOST, server.port)
    try:
        writer.write(b"".join(burst))
        return [await read_response(reader) for _ in burst]
    finally:
        writer.close()


def write_read_burst() -> tuple[list[bytes], list[tuple[int, bytes]]]:
    """Seed and REST writes, each followed by a read of the same key, and the expected replies."""
    burst: list[bytes] = []
    expected: list[tuple[int, bytes]] = []
    for i in range(PAIRS):
        key = b"k%d" % (i % 7)
        if i % 3 == 0:
            burst += [
                req(b"POST", b"/", b'Write "%s" %d' % (key, i)),
                req(b"POST", b"/", b'Read "%s"' % key),
            ]
            expected += [(200, b"Ok"), (200, b"Result (Just %d)" % i)]
        elif i % 3 == 1:
            burst += [req(b"PUT", b"/kv/" + key, b"%d" % i), req(b"GET", b"/kv/" + key)]
            expected += [(-1, b""), (200, b"%d" % i)]  # PUT: 200 or 201, checked apart
        else:
            burst += [req(b"DELETE", b"/kv/" + key), req(b"POST", b"/", b'Read "%s"' % key)]
            expected += [(-2, b""), (200, b"Result Nothing")]  # DELETE: 200 or 404
    return burst, expected


def check(replies: list[RawResponse], expected: list[tuple[int, bytes]]) -> None:
    assert len(replies) == len(expected)
    for n, (resp, (status, body)) in enumerate(zip(replies, expected, strict=True)):
        if status == -1:
            assert resp.status in (200, 201), (n, resp)
        elif status == -2:
            assert resp.status in (200, 404), (n, resp)
        else:
            assert (resp.status, resp.body) == (status, body), (n, resp, body)


def test_pipelined_reads_see_the_writes_before_them_real_runtime() -> None:
    async def body(server: HttpServer, runtime: Any) -> None:
        burst, expected = write_read_burst()
        check(await pipeline(server, burst), expected)

    serve_real(body)


def test_reads_wait_for_held_writes_and_later_requests_keep_order() -> None:
    async def body(server: HttpServer, rt: FakeRuntime) -> None:
        rt.hold = True
        burst = [
            req(b"POST", b"/", b'Write "x" 1'),
            req(b"POST", b"/", b'Read "x"'),  # must wait for the write
            req(b"POST", b"/", b'Write "x" 2'),  # queued behind the read
            req(b"GET", b"/kv/x"),
            req(b"GET", b"/health"),  # no machine: answered in order anyway
        ]
        reader, writer = await asyncio.open_connection(HOST, server.port)
        try:
            writer.write(b"".join(burst))
            async with asyncio.timeout(5):
                while not rt.held:
                    await asyncio.sleep(0)
            # Only the first write reached the runtime: the read is held back.
            # Once it is done, the read goes in, and the second write (log-ordered,
            # so it may follow the read at once); the GET waits for that write.
            for stage in ([Write], [Read, Write], [Read]):
                async with asyncio.timeout(5):
                    while not rt.held:
                        await asyncio.sleep(0)
                assert [type(i) for _, i in rt.held] == stage
                rt.release()
            replies = [await read_response(reader) for _ in burst]
            assert [(r.status, r.body) for r in replies] == [
                (200, b"Ok"),
                (200, b"Result (Just 1)"),
                (200, b"Ok"),
                (200, b"2"),
                (200, b"ok\n"),
            ]
        finally:
            writer.close()

    serve_fake(body)


def test_reads_with_no_write_pending_are_not_held() -> None:
    async def body(server: HttpServer, rt: FakeRuntime) -> None:
        rt.hold = True
        burst = [
            req(b"POST", b"/", b'Read "a"'),
            req(b"GET", b"/kv/b"),
            req(b"POST", b"/", b'Read "c"'),
        ]
        reader, writer = await asyncio.open_connection(HOST, server.port)
        try:
            writer.write(b"".join(burst))
            async with asyncio.timeout(5):
                while len(rt.held) < 3:  # all three submitted together
                    await asyncio.sleep(0)
            rt.release()
            replies = [await read_response(reader) for _ in burst]
            assert [r.status for r in replies] == [200, 404, 200]
        finally:
            writer.close()

    serve_fake(body)


def test_other_connections_are_not_held_by_a_pending_write() -> None:
    async def body(server: HttpServer, rt: FakeRuntime) -> None:
        rt.hold = True
        r1, w1 = await asyncio.open_connection(HOST, server.port)
        r2, w2 = await asyncio.open_connection(HOST, server.port)
        try:
            w1.write(req(b"POST", b"/", b'Write "x" 1'))
            async with asyncio.timeout(5):
                while len(rt.held) < 1:
                    await asyncio.sleep(0)
            w2.write(req(b"POST", b"/", b'Read "x"'))
            async with asyncio.timeout(5):
                while len(rt.held) < 2:  # the other connection's read went straight in
                    await asyncio.sleep(0)
            assert [type(i) for _, i in rt.held] == [Write, Read]
            rt.release()
            assert (await read_response(r1)).body == b"Ok"
            # The fake completes in submission order: the write, then the read.
            assert (await read_response(r2)).body == b"Result (Just 1)"
        finally:
            w1.close()
            w2.close()

    serve_fake(body)


def test_plain_handlers_without_sessions_still_work() -> None:
    """A handler that is a bare function (no per-connection session) is called as is."""

    def hello(request: Request) -> Response:
        return Response(200, b"hi " + request.body)

    async def main() -> None:
        server = await start_http_server(hello, HOST, 0)
        try:
            replies = await pipeline(server, [req(b"POST", b"/", b"a"), req(b"POST", b"/", b"b")])
            assert [r.body for r in replies] == [b"hi a", b"hi b"]
        finally:
            await server.shutdown(grace=2.0)

    run(main())


def test_app_called_directly_is_stateless() -> None:
    """``KvHttpApp.__call__`` (no session) submits at once; sessions are per connection."""

    async def main() -> None:
        rt = FakeRuntime()
        rt.hold = True
        app = KvHttpApp(rt)
        app(Request(b"POST", b"/", (), b'Write "x" 1', True))
        app(Request(b"POST", b"/", (), b'Read "x"', True))
        assert [type(i) for _, i in rt.held] == [Write, Read]
        one, two = app.connection_handler(), app.connection_handler()
        one(Request(b"POST", b"/", (), b'Write "y" 1', True))
        two(Request(b"POST", b"/", (), b'Read "y"', True))
        one(Request(b"POST", b"/", (), b'Read "y"', True))  # held: its write is pending
        assert [type(i) for _, i in rt.held[2:]] == [Write, Read]
        rt.release()
        async with asyncio.timeout(5):
            while not rt.held:  # the done-callbacks run on the next loop turns
                await asyncio.sleep(0)
        assert [type(i) for _, i in rt.held] == [Read]  # released once the write finished

    run(main())


def test_only_reads_ask_to_be_stepped_at_once() -> None:
    """Reads go in with ``now=True`` (answered inside data_received); writes queue for the turn."""

    async def main() -> None:
        rt = FakeRuntime()
        rt.hold = True
        app = KvHttpApp(rt)
        session = app.connection_handler()
        for handler in (app, session):
            handler(Request(b"POST", b"/", (), b'Read "x"', True))
            handler(Request(b"GET", b"/kv/x", (), b"", True))
        assert rt.now == [True, True, True, True]
        rt.now.clear()
        app(Request(b"POST", b"/", (), b'Write "x" 1', True))
        app(Request(b"PUT", b"/kv/x", (), b"1", True))
        app(Request(b"DELETE", b"/kv/x", (), b"", True))
        app(Request(b"DELETE", b"/", (), b"", True))
        session(Request(b"PUT", b"/kv/x", (), b"1", True))
        assert rt.now == [False, False, False, False, False]

    run(main())
