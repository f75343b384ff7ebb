"""The Python clients (sync and asyncio) over real loopback sockets.

Until ``corosm serve`` lands, the clients talk to :class:`FakeKV`, a stdlib
``http.server`` that speaks the seed protocol (with the server's own codec)
and the REST API from a dict, and can be told to misbehave (answer
400/500/503, close idle connections, never answer). It also records what it
received, so the tests check the exact bytes the client sends. ``tests/test_cli.py`` imports it too.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corosm.apps.kv import OK, Value, Write
from corosm.apps.kv.seed import (
    SeedSyntaxError,
    output_to_seed_reply,
    read_string,
    seed_request_to_input,
)
from corosm.client import (
    AsyncClient,
    Client,
    ConnectionLost,
    InvalidRequest,
    ProtocolError,
    RequestRejected,
    ServerFailed,
    ServerUnavailable,
    ServerUnreachable,
    protocol,
    seedcodec,
)
from corosm.client.http11 import MAX_BODY
from corosm.client.seedcodec import encode_haskell_string, parse_seed_reply

# --- a fake server ------------------------------------------------------------------


class FakeKV:
    """A tiny threaded HTTP/1.1 server with the corosm API, for client tests."""

    def __init__(self) -> None:
        self.store: dict[bytes, bytes] = {}
        self.requests: list[tuple[str, str, bytes]] = []
        self.connections = 0
        self.mode = "normal"  # normal | reject | fail | busy | garbage | silent | unhealthy
        self.close_every = 0  # close the connection after this many replies (0: never)
        self.close_header = False  # announce that close with "Connection: close"
        self.release = threading.Event()  # lets "silent" handlers finish at teardown
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # one send per reply: else Nagle + delayed ACK cost 40 ms each
            served = 0

            def setup(self) -> None:
                super().setup()
                fake.connections += 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                fake.requests.append((self.command, self.path, body))
                status, extra, reply = fake.answer(self.command, self.path, body)
                self.served += 1
                closing = fake.close_every and self.served % fake.close_every == 0
                if fake.mode == "silent":
                    fake.release.wait(10)
                    self.close_connection = True
                    return
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                if closing and fake.close_header:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(reply)
                if closing:
                    self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def answer(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.mode == "reject":
            return 400, {}, b"bad request: expected 'Write \"key\" <int>'\n"
        if self.mode == "fail":
            return 500, {}, b"internal error"
        if self.mode == "busy":
            return 503, {"Retry-After": "2"}, b"overloaded"
        if self.mode == "garbage":
            return 200, {}, b"Maybe Later"
        if path == "/health":
            return (
                (503, {}, b"journal failed: ENOSPC")
                if self.mode == "unhealthy"
                else (200, {}, b"ok")
            )
        if path == "/metrics":
            return 200, {}, b"# TYPE corosm_requests_total counter\ncorosm_requests_total 3\n"
        if path.startswith("/kv/"):
            return self._rest(method, unquote_to_bytes(path[4:]), body)
        if method == "DELETE":
            self.store.clear()
            return 200, {}, b""
        if method != "POST":
            return 400, {}, b"Unsupported method"
        return self._seed(body)

    def _rest(self, method: str, key: bytes, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if method == "GET":
            value = self.store.get(key)
            return (404, {}, b"not found") if value is None else (200, {}, value)
        if method == "PUT":
            created = key not in self.store
            self.store[key] = body
            return (201 if created else 200), {}, b""
        if method == "DELETE":
            return (200, {}, b"") if self.store.pop(key, None) is not None else (404, {}, b"")
        return 405, {}, b"method not allowed"

    def _seed(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        # The real server's codec, so the client is checked against what the server reads.
        try:
            request = seed_request_to_input(body)
        except SeedSyntaxError as exc:
            return 400, {}, str(exc).encode()
        if isinstance(request, Write):
            self.store[request.key] = request.value
            return 200, {}, output_to_seed_reply(OK)
        return 200, {}, output_to_seed_reply(Value(self.store.get(request.key)))

    def __enter__(self) -> FakeKV:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def fake() -> Iterator[FakeKV]:
    with FakeKV() as server:
        yield server


class RawServer:
    """A server over bare sockets that answers each request with ``respond(conn, stop)``.

    For replies that ``http.server`` will not send: a Content-Length no body
    follows, a reply trickled out a byte at a time. ``respond`` should return
    when ``stop`` is set; leaving the ``with`` block sets it and joins every thread.
    """

    def __init__(self, respond: Callable[[socket.socket, threading.Event], None]) -> None:
        self.respond = respond
        self.stop = threading.Event()
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.02)  # how often the accept loop looks at `stop`
        self.port: int = self.listener.getsockname()[1]
        self.threads = [threading.Thread(target=self._accept, daemon=True)]

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)  # a client that neither reads nor closes cannot hang the test run
        with conn:
            try:
                while not self.stop.is_set() and read_request(conn):
                    self.respond(conn, self.stop)
            except OSError:
                pass  # the client closed on us: these tests are about clients giving up

    def __enter__(self) -> RawServer:
        self.threads[0].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in list(self.threads):
            thread.join(5)
        self.listener.close()


def read_request(conn: socket.socket) -> bool:
    """Read one request, head and Content-Length body; False when the client closed instead."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    missing = (int(length[1]) if length else 0) - len(body)
    while missing > 0:
        chunk = conn.recv(missing)
        if not chunk:
            return False
        missing -= len(chunk)
    return True


def send_reply(conn: socket.socket, framing: str, parts: list[bytes]) -> None:
    """A 200 reply with the body ``parts``, framed by ``chunked`` coding or by closing."""
    if framing == "chunked":
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in parts:
            conn.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        conn.sendall(b"0\r\n\r\n")
    else:
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for part in parts:
            conn.sendall(part)
        conn.shutdown(socket.SHUT_WR)


def free_port() -> int:
    """A port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- the seed codec -----------------------------------------------------------------

# What GHC prints for `show s` (checked by hand against GHC.Show.showLitString).
GHC_SHOW = [
    ("x", '"x"'),
    ("", '""'),
    ('say "hi"', '"say \\"hi\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ("tab\there\n", '"tab\\there\\n"'),
    ("\a\b\f\r\v", '"\\a\\b\\f\\r\\v"'),
    ("\x00\x01\x1b\x1f", '"\\NUL\\SOH\\ESC\\US"'),
    ("\x7f", '"\\DEL"'),
    ("é", '"\\233"'),
    ("é1", '"\\233\\&1"'),  # a digit after a numeric escape needs \&
    ("éa", '"\\233a"'),
    ("\x0eH", '"\\SO\\&H"'),  # else it would read back as \SOH
    ("\x0eh", '"\\SOh"'),
    ("\U0001f600", '"\\128512"'),
    ("it's", '"it\'s"'),  # a single quote is not escaped inside a String
]


@pytest.mark.parametrize(("text", "shown"), GHC_SHOW)
def test_encode_haskell_string_matches_ghc_show(text: str, shown: str) -> None:
    assert encode_haskell_string(text) == shown


@given(st.text())
def test_encode_haskell_string_is_ascii_and_reads_back(text: str) -> None:
    shown = encode_haskell_string(text)
    assert shown.isascii()
    assert read_string(shown) == text


@given(st.text(min_size=1, max_size=200), st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_the_server_reads_what_the_client_writes(key: str, value: int) -> None:
    assert seed_request_to_input(seedcodec.encode_write(key, value)) == Write(
        key.encode("utf-8", "surrogatepass"), str(value).encode()
    )


def test_seed_request_bodies() -> None:
    assert seedcodec.encode_write("x", 1) == b'Write "x" 1'
    assert seedcodec.encode_write("x", -5) == b'Write "x" (-5)'
    assert seedcodec.encode_write('a"b', 2**63 - 1) == b'Write "a\\"b" 9223372036854775807'
    assert seedcodec.encode_read("é") == b'Read "\\233"'


@pytest.mark.parametrize("bad", [2**63, -(2**63) - 1, True, 1.5, "1"])
def test_write_rejects_values_that_are_not_int64(bad: Any) -> None:
    with pytest.raises(InvalidRequest, match=r"64-bit|must be an int"):
        seedcodec.encode_write("x", bad)


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (b"Ok", None),
        (b"Result Nothing", None),
        (b"Result (Just 1)", 1),
        (b"Result (Just (-5))", -5),
        (b"  Result  ( Just  ( -9223372036854775808 ) )\n", -(2**63)),
    ],
)
def test_parse_seed_reply(body: bytes, value: int | None) -> None:
    reply = parse_seed_reply(body)
    if body == b"Ok":
        assert reply == seedcodec.SeedOk()
    else:
        assert reply == seedcodec.SeedResult(value)


@pytest.mark.parametrize("body", [b"", b"OK", b"Result 1", b"Result (Just x)", b"Result (Just -)"])
def test_parse_seed_reply_rejects_other_bodies(body: bytes) -> None:
    with pytest.raises(ProtocolError, match="expected 'Ok'"):
        parse_seed_reply(body)


def test_rest_keys_are_percent_encoded_bytes() -> None:
    assert protocol.key_path(b"a/b c%\xff") == "/kv/a%2Fb%20c%25%FF"
    assert protocol.key_path("é") == "/kv/%C3%A9"
    with pytest.raises(InvalidRequest, match="must not be empty"):
        protocol.key_path(b"")
    with pytest.raises(InvalidRequest, match="bytes or str"):
        protocol.key_path(3)  # type: ignore[arg-type]


def test_bad_arguments_fail_before_any_io() -> None:
    # Nothing listens on this port, so any I/O would raise ServerUnreachable instead.
    client = Client(port=free_port())
    with pytest.raises(InvalidRequest):
        client.write("x", 2**64)
    with pytest.raises(InvalidRequest):
        client.put(b"k", "text")  # type: ignore[arg-type]
    for kwargs in ({"port": 0}, {"port": 70000}, {"host": ""}, {"timeout": 0}):
        with pytest.raises(InvalidRequest):
            Client(**kwargs)
        with pytest.raises(InvalidRequest):
            AsyncClient(**kwargs)


# --- the sync client ----------------------------------------------------------------


def test_seed_round_trip_and_exact_bytes(fake: FakeKV) -> None:
    with Client(port=fake.port) as kv:
        assert kv.read("x") is None
        kv.write("x", 1)
        kv.write('q"\n', -5)
        assert kv.read("x") == 1
        assert kv.read('q"\n') == -5
        kv.reset()
        assert kv.read("x") is None
    assert fake.requests[2] == ("POST", "/", b'Write "q\\"\\n" (-5)')
    assert fake.requests[5] == ("DELETE", "/", b"")
    assert fake.connections == 1  # keep-alive: one connection for all seven calls


def test_rest_round_trip(fake: FakeKV) -> None:
    key = b"a/b c%\xff"
    with Client(port=fake.port) as kv:
        assert kv.get(key) is None
        assert kv.put(key, b"\x00v1") is True
        assert kv.put(key, b"\x00v2") is False
        assert kv.get(key) == b"\x00v2"
        assert fake.store == {key: b"\x00v2"}
        assert kv.delete(key) is True
        assert kv.delete(key) is False
        assert kv.get(key) is None
    assert ("PUT", "/kv/a%2Fb%20c%25%FF", b"\x00v1") in fake.requests


def test_health_and_metrics(fake: FakeKV) -> None:
    with Client(port=fake.port) as kv:
        assert kv.health() is None
        assert "corosm_requests_total 3" in kv.metrics()
        fake.mode = "unhealthy"
        assert kv.health() == "journal failed: ENOSPC"


def test_error_replies_map_to_the_hierarchy(fake: FakeKV) -> None:
    with Client(port=fake.port) as kv:
        fake.mode = "reject"
        with pytest.raises(RequestRejected) as rejected:
            kv.write("x", 1)
        assert rejected.value.status == 400
        assert "expected 'Write" in rejected.value.message
        fake.mode = "busy"
        with pytest.raises(ServerUnavailable) as busy:
            kv.read("x")
        assert busy.value.retry_after == 2.0
        fake.mode = "fail"
        with pytest.raises(ServerFailed, match="500: internal error"):
            kv.get(b"x")
        fake.mode = "garbage"
        with pytest.raises(ProtocolError, match="Maybe Later"):
            kv.read("x")
        fake.mode = "normal"
        kv.write("x", 7)  # the client still works after every kind of error
        assert kv.read("x") == 7


def test_unreachable_server_says_what_to_check() -> None:
    port = free_port()
    with pytest.raises(ServerUnreachable) as caught:
        Client(port=port).read("x")
    message = str(caught.value)
    assert "connection refused" in message
    assert f"is the server running on 127.0.0.1:{port}?" in message


@pytest.mark.parametrize("announce", [False, True])
def test_a_closed_keep_alive_connection_is_replaced(fake: FakeKV, announce: bool) -> None:
    fake.close_every = 2
    fake.close_header = announce
    with Client(port=fake.port) as kv:
        for i in range(6):
            kv.write("k", i)
            assert kv.read("k") == i
    assert fake.connections == 6  # a new connection after every second request
    assert len(fake.requests) == 12  # and no request was sent twice


def test_a_silent_server_times_out(fake: FakeKV) -> None:
    fake.mode = "silent"
    with (
        pytest.raises(ConnectionLost, match=r"within 0\.3 s"),
        Client(port=fake.port, timeout=0.3) as kv,
    ):
        kv.read("x")


def test_a_huge_content_length_is_refused_unread() -> None:
    def lie(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\nOk")

    with RawServer(lie) as server, Client(port=server.port) as kv:
        for _ in range(2):
            with pytest.raises(
                ProtocolError,
                match=r"^the reply body exceeds the client's limit of 67108864 bytes$",
            ):
                kv.read("x")
        assert server.connections == 2  # the out-of-step connection was not reused


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_a_body_without_content_length_is_read_whole(framing: str) -> None:
    with (
        RawServer(lambda conn, stop: send_reply(conn, framing, [b"\x00v", b"alue"])) as server,
        Client(port=server.port) as kv,
    ):
        assert kv.get("k") == b"\x00value"
        assert kv.get("k") == b"\x00value"


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_a_body_without_content_length_stops_at_the_cap(framing: str) -> None:
    mebibyte = b"x" * (1 << 20)
    parts = [mebibyte] * (MAX_BODY // len(mebibyte) + 1)
    with (
        RawServer(lambda conn, stop: send_reply(conn, framing, parts)) as server,
        Client(port=server.port) as kv,
        pytest.raises(
            ProtocolError, match=r"^the reply body exceeds the client's limit of 67108864 bytes$"
        ),
    ):
        kv.get("k")


def test_the_timeout_bounds_the_whole_call_not_each_read() -> None:
    # One byte every 0.2 s: each read waits 0.2 s, the whole reply would take over 12 s.
    reply = b"HTTP/1.1 200 OK\r\nX-Padding: " + b"." * 30 + b"\r\nContent-Length: 2\r\n\r\nOk"
    assert len(reply) * 0.2 > 12

    def dribble(conn: socket.socket, stop: threading.Event) -> None:
        for byte in reply:
            conn.sendall(bytes([byte]))
            if stop.wait(0.2):
                return

    with RawServer(dribble) as server, Client(port=server.port, timeout=1) as kv:
        started = time.monotonic()
        with pytest.raises(
            ConnectionLost, match=rf"^no reply from 127\.0\.0\.1:{server.port} within 1 s$"
        ):
            kv.write("x", 1)
        assert time.monotonic() - started < 6  # generous: the bound is 1 s, the dribble 12 s


# --- the asyncio client -------------------------------------------------------------


def test_async_round_trip(fake: FakeKV) -> None:
    async def scenario() -> None:
        async with AsyncClient(port=fake.port) as kv:
            await kv.write("x", -3)
            assert await kv.read("x") == -3
            assert await kv.read("y") is None
            assert await kv.put("k", b"v") is True
            assert await kv.get("k") == b"v"
            assert await kv.delete("k") is True
            assert await kv.get("k") is None
            assert await kv.health() is None
            assert "corosm_requests_total" in await kv.metrics()
            await kv.reset()
            assert await kv.read("x") is None

    asyncio.run(scenario())
    assert fake.connections == 1


def test_async_pipelines_many_calls_on_one_connection(fake: FakeKV) -> None:
    async def scenario() -> list[int | None]:
        async with AsyncClient(port=fake.port) as kv:
            await asyncio.gather(*(kv.write(f"k{i}", i * 7) for i in range(100)))
            return await asyncio.gather(*(kv.read(f"k{i}") for i in range(100)))

    assert asyncio.run(scenario()) == [i * 7 for i in range(100)]
    assert fake.connections == 1


@pytest.mark.parametrize("announce", [False, True])
def test_async_survives_the_server_closing_connections(fake: FakeKV, announce: bool) -> None:
    fake.close_every = 3
    fake.close_header = announce

    async def scenario() -> list[int | None]:
        async with AsyncClient(port=fake.port) as kv:
            results = []
            for i in range(9):
                await kv.write("k", i)
                results.append(await kv.read("k"))
            return results

    assert asyncio.run(scenario()) == list(range(9))
    assert len(fake.requests) == 18  # sequential calls: nothing is sent twice


def test_async_errors(fake: FakeKV) -> None:
    async def scenario() -> None:
        async with AsyncClient(port=fake.port, timeout=0.3) as kv:
            fake.mode = "busy"
            with pytest.raises(ServerUnavailable):
                await kv.write("x", 1)
            fake.mode = "reject"
            with pytest.raises(RequestRejected, match="400"):
                await kv.read("x")
            fake.mode = "normal"
            await kv.write("x", 1)
            fake.mode = "silent"
            with pytest.raises(ConnectionLost, match=r"within 0\.3 s"):
                await kv.read("x")
        with pytest.raises(ServerUnreachable, match="is the server running"):
            await AsyncClient(port=free_port()).read("x")

    asyncio.run(scenario())


def test_async_cancelled_call_does_not_corrupt_later_calls(fake: FakeKV) -> None:
    async def scenario() -> int | None:
        async with AsyncClient(port=fake.port) as kv:
            await kv.write("x", 5)
            task = asyncio.ensure_future(kv.read("x"))
            await asyncio.sleep(0)  # let it write its request
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return await kv.read("x")  # on a new connection, with its own reply

    assert asyncio.run(scenario()) == 5
