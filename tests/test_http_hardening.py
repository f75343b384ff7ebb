"""HTTP hardening: resets only when asked unmistakably, absolute-form targets,
deep seed bodies, limits on every route, exact seed replies, empty values with
their type, half-closing clients, and ordering taken from the machine.

In-process tests run the app on the real runtime (or the steerable
FakeRuntime of test_http_app); the durability and ``--no-reset`` checks run a
real ``corosm serve`` process on a free port.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from corosm.apps.kv.inputs import MAX_KEY_BYTES, Input, Read, SetIf, Write
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import OK
from corosm.core import Machine, Order
from corosm.frontends.http import HttpServer, Request, Response
from corosm.frontends.http.app import KvHttpApp
from corosm.runtime import Runtime, run
from corosm.server import ServerConfig
from rawclient import RawResponse, read_response, read_until_closed
from serverproc import ServerProcess
from test_http_app import HOST, FakeRuntime, call, req, seed, serve_fake, serve_real

# -- 1. DELETE resets only on "DELETE /" --------------------------------------------

NOT_A_RESET = [
    b"/kv",
    b"/KV/x",
    b"/kv%2Fx",
    b"/favicon.ico",
    b"//kv//x",
    b"/./kv/x",
    b"*",
    b"/?all=1",
    b"//",
    b"http://h/other",
]


def test_delete_outside_the_routes_is_404_and_resets_nothing() -> None:
    async def body(server: HttpServer, rt: Any) -> None:
        assert await seed(server, b'Write "x" 1') == (200, b"Ok")
        for target in NOT_A_RESET:
            resp = await call(server, b"DELETE", target)
            assert resp.status == 404, (target, resp)
            text = resp.body.decode()
            assert text.startswith("no route for DELETE "), text
            assert "DELETE / (reset the whole store)" in text and "DELETE /kv/{key}" in text
            assert "POST / (seed protocol)" in text and "GET /health" in text
            assert text.endswith("\n") and text.count("\n") == 1
            assert await seed(server, b'Read "x"') == (200, b"Result (Just 1)"), target
        # The seed client's reset is kept exactly, in both request-target forms.
        assert (await call(server, b"DELETE", b"/")).status == 200
        assert await seed(server, b'Read "x"') == (200, b"Result Nothing")
        assert await seed(server, b'Write "x" 2') == (200, b"Ok")
        assert (await call(server, b"DELETE", b"http://127.0.0.1:8080/")).status == 200
        assert await seed(server, b'Read "x"') == (200, b"Result Nothing")
        assert await seed(server, b'Write "x" 3') == (200, b"Ok")
        assert (await call(server, b"DELETE", b"HTTP://Example.COM")).status == 200  # empty path
        assert await seed(server, b'Read "x"') == (200, b"Result Nothing")

    serve_real(body)


def test_absolute_form_targets_are_routed_by_their_path() -> None:
    async def body(server: HttpServer, rt: Any) -> None:
        assert (await call(server, b"PUT", b"http://h:1/kv/x", b"one")).status == 201
        assert (await call(server, b"PUT", b"/kv/y", b"two")).status == 201
        got = await call(server, b"GET", b"http://127.0.0.1:9/kv/x?q=1")
        assert (got.status, got.body) == (200, b"one")
        # DELETE of an absolute /kv/ target deletes that key alone, never the store.
        assert (await call(server, b"DELETE", b"http://host/kv/x")).status == 200
        assert (await call(server, b"GET", b"/kv/x")).status == 404
        assert (await call(server, b"GET", b"https://host/kv/y")).body == b"two"
        assert (await call(server, b"DELETE", b"http://host/kv/x")).status == 404
        assert (await call(server, b"GET", b"http://host/health")).body == b"ok\n"
        resp = await call(server, b"POST", b"http://host/", b'Read "y"')
        assert resp.status == 422  # "two" is not an int: the seed route answered

    serve_real(body)


def test_seed_post_still_takes_any_path() -> None:
    async def body(server: HttpServer, rt: Any) -> None:
        for path in (b"/", b"/favicon.ico", b"/kv", b"*", b"http://h/x"):
            resp = await call(server, b"POST", path, b'Write "p" 5')
            assert (resp.status, resp.body) == (200, b"Ok"), path
        assert await seed(server, b'Read "p"') == (200, b"Result (Just 5)")

    serve_real(body)


def test_reset_refused_when_not_allowed() -> None:
    async def body(server: HttpServer, rt: Any) -> None:
        assert await seed(server, b'Write "x" 1') == (200, b"Ok")
        for target in (b"/", b"http://h/"):
            resp = await call(server, b"DELETE", target)
            assert resp.status == 403
            assert resp.body == (
                b"reset refused: this server was started with --no-reset; "
                b"delete keys one at a time with DELETE /kv/{key}\n"
            )
        assert await seed(server, b'Read "x"') == (200, b"Result (Just 1)")
        assert (await call(server, b"DELETE", b"/kv/x")).status == 200  # one key: still fine

    serve_real(body, allow_reset=False)


def test_serve_no_reset_end_to_end(tmp_path: Path) -> None:
    assert ServerConfig().allow_reset is True
    with ServerProcess(tmp_path / "data", "--no-reset", "--resp-port", "0") as server:
        assert server.request("POST", "/", b'Write "x" 1') == (200, b"Ok")
        status, text = server.request("DELETE", "/")
        assert status == 403 and b"--no-reset" in text
        assert server.resp_port is not None
        with socket.create_connection(("127.0.0.1", server.resp_port), timeout=10) as redis:
            for command in (b"FLUSHALL", b"FLUSHDB"):
                redis.sendall(b"*1\r\n$%d\r\n%s\r\n" % (len(command), command))
                reply = redis.recv(4096)
                assert reply.startswith(b"-ERR") and b"--no-reset" in reply, reply
        assert server.request("POST", "/", b'Read "x"') == (200, b"Result (Just 1)")


# -- 2. and 3. bad seed bodies and limits: 4xx, never 500 ---------------------------


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_seed_body_is_400(depth: int) -> None:
    async def body(server: HttpServer, rt: Any) -> None:
        for request in (
            b'Write "k" ' + b"(" * depth + b"1" + b")" * depth,
            b"(" * depth + b'Read "k"' + b")" * depth,
        ):
            status, text = await seed(server, request)
            assert status == 400, text[:200]
            assert b"nested '('" in text and b"expected 'Write \"key\" <int>'" in text
        assert await seed(server, b'Write "k" ((1))') == (200, b"Ok")

    serve_real(body)


def test_seed_limits_map_like_rest() -> None:
    async def body(server: HttpServer, rt: Any) -> None:
        huge = b"k" * 1_500_000
        for request in (b'Write "%s" 1' % huge, b'Read "%s"' % huge):
            status, text = await seed(server, request)
            assert (status, text) == (
                414,
                b"key too long: 1500000 bytes, at most %d allowed\n" % MAX_KEY_BYTES,
            )
        for request in (b'Write "" 1', b'Read ""', b'Write ("") (-1)'):
            status, text = await seed(server, request)
            assert (status, text) == (
                400,
                b"empty key: a key must have 1 to %d bytes\n" % MAX_KEY_BYTES,
            )
        status, text = await seed(server, b'Write "x" ' + b"9" * 5000)
        assert status == 400 and b"out of range" in text and len(text) < 400
        assert (await call(server, b"GET", b"/kv/" + b"k" * MAX_KEY_BYTES)).status == 404
        assert (await call(server, b"GET", b"/kv/" + b"k" * (MAX_KEY_BYTES + 1))).status == 414

    serve_real(body)


# -- 4. and 5. exact replies --------------------------------------------------------


def test_empty_value_is_served_with_its_content_type() -> None:
    async def body(server: HttpServer, rt: Any) -> None:
        assert (await call(server, b"PUT", b"/kv/empty", b"")).status == 201
        assert (await call(server, b"PUT", b"/kv/full", b"x")).status == 201
        empty = await call(server, b"GET", b"/kv/empty")
        full = await call(server, b"GET", b"/kv/full")
        assert (empty.status, empty.body) == (200, b"")
        assert empty.header(b"content-type") == full.header(b"content-type")
        assert empty.header(b"content-type") == b"application/octet-stream"
        assert empty.header(b"content-length") == b"0"

    serve_real(body)


def test_seed_replies_are_byte_exact() -> None:
    async def body(server: HttpServer, rt: Any) -> None:
        async def exact(resp: RawResponse, status: int, text: bytes) -> None:
            assert (resp.status, resp.body) == (status, text)
            assert resp.header(b"content-length") == b"%d" % len(text)

        await exact(await call(server, b"POST", b"/", b'Read "a"'), 200, b"Result Nothing")
        await exact(await call(server, b"POST", b"/", b'Write "a" 1'), 200, b"Ok")
        await exact(await call(server, b"POST", b"/", b'Read "a"'), 200, b"Result (Just 1)")
        await exact(await call(server, b"POST", b"/", b'Write "a" -5'), 200, b"Ok")
        await exact(await call(server, b"POST", b"/", b'Read "a"'), 200, b"Result (Just (-5))")
        for method in (b"GET", b"PUT", b"PATCH", b"OPTIONS"):
            await exact(await call(server, method, b"/"), 400, b"Unsupported method")
        await exact(await call(server, b"DELETE", b"/"), 200, b"")

    serve_real(body)


# -- 6. a half-closed client gets its replies ---------------------------------------


async def raw_connect(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    return sock


async def recv_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything until the server closes (bounded)."""
    loop = asyncio.get_running_loop()
    chunks = []
    async with asyncio.timeout(timeout):
        while chunk := await loop.sock_recv(sock, 65536):
            chunks.append(chunk)
    return b"".join(chunks)


def parse_replies(data: bytes) -> list[tuple[int, bytes]]:
    """(status, body) of each Content-Length-framed reply in ``data``."""
    replies = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"cut-off reply: {data[:120]!r}"
        lines = head.split(b"\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in lines
            if line.lower().startswith(b"content-length:")
        )
        replies.append((int(lines[0].split()[1]), rest[:length]))
        data = rest[length:]
    return replies


def test_half_closed_client_gets_the_reply_of_a_write_still_in_flight() -> None:
    async def body(server: HttpServer, rt: FakeRuntime) -> None:
        rt.hold = True
        sock = await raw_connect(server.port)
        try:
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(
                sock, req(b"POST", b"/", b'Write "x" 1') + req(b"GET", b"/health")
            )
            async with asyncio.timeout(5):
                while not rt.held or not server._connections:
                    await asyncio.sleep(0)
            (conn,) = server._connections
            eof_seen = asyncio.Event()
            original = conn.eof_received

            def eof_received() -> bool | None:
                try:
                    return original()
                finally:
                    eof_seen.set()

            conn.eof_received = eof_received  # type: ignore[method-assign]
            sock.shutdown(socket.SHUT_WR)
            await asyncio.wait_for(eof_seen.wait(), 5.0)
            rt.release()  # the write finishes only after the client's EOF
            assert parse_replies(await recv_all(sock)) == [(200, b"Ok"), (200, b"ok\n")]
            assert rt.data == {b"x": b"1"}
            await server.wait_no_connections()
        finally:
            sock.close()

    serve_fake(body)


def test_half_close_with_nothing_owed_closes_at_once() -> None:
    async def body(server: HttpServer, rt: FakeRuntime) -> None:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        writer.write(req(b"GET", b"/health"))
        assert (await read_response(reader)).status == 200
        writer.write_eof()
        assert await read_until_closed(reader) == b""
        writer.close()
        await server.wait_no_connections()

    serve_fake(body)


def test_half_closed_write_is_acknowledged_and_durable(tmp_path: Path) -> None:
    """printf 'POST / ...Write "x" 1' | nc -N host port: the write is answered, then kept."""
    data = tmp_path / "data"
    with ServerProcess(data) as server:
        with socket.create_connection((HOST, server.port), timeout=10) as sock:
            sock.sendall(b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nWrite "x" 1')
            sock.shutdown(socket.SHUT_WR)
            assert parse_replies(_recv_until_closed(sock)) == [(200, b"Ok")]
        with socket.create_connection((HOST, server.port), timeout=10) as sock:
            burst = req(b"PUT", b"/kv/a", b"raw") + req(b"POST", b"/", b'Write "y" -2')
            sock.sendall(burst + req(b"POST", b"/", b'Read "y"'))
            sock.shutdown(socket.SHUT_WR)
            replies = parse_replies(_recv_until_closed(sock))
            assert replies == [(201, b""), (200, b"Ok"), (200, b"Result (Just (-2))")]
        server.kill()  # kill -9: only what is on disk survives
    with ServerProcess(data) as again:
        assert again.request("POST", "/", b'Read "x"') == (200, b"Result (Just 1)")
        assert again.request("POST", "/", b'Read "y"') == (200, b"Result (Just (-2))")
        assert again.request("GET", "/kv/a") == (200, b"raw")


def _recv_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):  # the socket's timeout bounds each wait
        chunks.append(chunk)
    return b"".join(chunks)


# -- 7. read-your-writes follows Machine.order --------------------------------------


class EveryInputWaits(KVMachine):
    """Declares every input WRITE: each one waits for the connection's earlier writes."""

    def order(self, input: Input) -> Order:
        return Order.WRITE


def submitted_in_stages(machine: KVMachine, bodies: tuple[bytes, ...]) -> list[list[Input]]:
    """The inputs one connection's seed ``bodies`` submit, stage by stage.

    Each stage is what the session has submitted when the runtime answers
    none of it yet; the runtime then answers them all, which lets the next
    stage go.
    """
    rt = FakeRuntime()
    rt.machine = machine
    rt.hold = True
    session = KvHttpApp(rt).connection_handler()
    for body in bodies:
        session(Request(b"POST", b"/", (), body, True))
    stages = []
    while rt.held:
        stages.append([i for _, i in rt.held])
        rt.release()
    return stages


def test_session_ordering_comes_from_the_machine() -> None:
    def writes_submitted_at_once(machine: KVMachine) -> list[list[type]]:
        bodies = (b'Write "a" 1', b'Write "b" 2', b'Read "a"')
        return [[type(i) for i in stage] for stage in submitted_in_stages(machine, bodies)]

    # KV: writes are LOGGED (both go at once); the read waits for them.
    assert writes_submitted_at_once(KVMachine()) == [[Write, Write], [Read]]
    # The same requests under a machine that declares everything WRITE.
    assert writes_submitted_at_once(EveryInputWaits()) == [[Write], [Write], [Read]]


def test_reads_are_answered_at_once_because_the_machine_says_read() -> None:
    """A READ input is answered in the call by Machine.read, else stepped now."""
    seen: list[type] = []

    class WritesAreReads(KVMachine):
        def order(self, input: Input) -> Order:
            return Order.READ

        def read(self, state: Any, input: Input) -> Any:
            seen.append(type(input))
            return OK

    class WritesAreReadsWithoutRead(WritesAreReads):
        read = Machine.read  # type: ignore[assignment]

    async def submitted(machine: KVMachine) -> tuple[list[bool], list[Any]]:
        runtime: Runtime[Any, Input, Any] = Runtime(machine)
        await runtime.start()
        try:
            calls: list[bool] = []
            original = runtime.submit_callback

            def spy(input: Input, callback: Any, /, *, now: bool = False) -> None:
                calls.append(now)
                original(input, callback, now=now)

            runtime.submit_callback = spy  # type: ignore[method-assign]
            app = KvHttpApp(runtime)
            replies = [
                app(Request(b"POST", b"/", (), b'Write "a" 1', True)),
                app.connection_handler()(Request(b"PUT", b"/kv/a", (), b"1", True)),
            ]
            return calls, replies
        finally:
            await runtime.stop()

    # With read(): answered in the call, a Response at once, nothing submitted.
    calls, replies = run(submitted(WritesAreReads()))
    assert calls == [] and seen == [Write, SetIf]
    assert all(isinstance(reply, Response) for reply in replies)
    # Without it: submitted to be stepped now.
    seen.clear()
    calls, replies = run(submitted(WritesAreReadsWithoutRead()))
    assert calls == [True, True] and seen == []
