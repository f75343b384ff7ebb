"""The RESP server's protections: timeouts, the buffer cap, the backlog, EOF, refusals.

Timers are tested two ways: on a fake clock (:class:`FakeClock`, advanced by
hand: exact deadlines, no waiting) and over real sockets with timeouts of a
fraction of a second, where a test waits for the server's close itself, with
a bound, and never sleeps to see whether it happened.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from corosm.apps.kv.inputs import MAX_KEY_BYTES, MAX_VALUE_BYTES
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import OK, Value
from corosm.core import Order
from corosm.frontends.resp.commands import Local, Session, dispatch
from corosm.frontends.resp.protocol import ErrorReply, encode_command
from corosm.frontends.resp.server import RespLimits, RespServerProtocol, _Shared
from test_resp_server import (
    FakeRuntime,
    FakeTransport,
    ThreadedServer,
    connect,
    in_loop,
    settle,
)

# --------------------------------------------------------------------------- a fake clock


class FakeTimer:
    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]):
        self._when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def when(self) -> float:
        return self._when

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """The loop's clock and timers for one test, advanced by hand.

    ``call_soon`` (a reply's drain) goes to the real loop, so ``settle()`` runs it.
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.now = 1000.0
        self.timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        timer = FakeTimer(when, callback, args)
        self.timers.append(timer)
        return timer

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> FakeTimer:
        return self.call_at(self.now + delay, callback, *args)

    def call_soon(self, callback: Callable[..., object], *args: Any) -> asyncio.Handle:
        return self.loop.call_soon(callback, *args)

    def advance(self, seconds: float) -> None:
        """Move the clock on, running every timer that falls due, each at its own time."""
        target = self.now + seconds
        while True:
            due = [t for t in self.timers if not t.cancelled and t.when() <= target]
            if not due:
                break
            timer = min(due, key=FakeTimer.when)
            self.timers.remove(timer)
            self.now = max(self.now, timer.when())
            timer.callback(*timer.args)
        self.now = target


def clocked(**limits: Any) -> tuple[RespServerProtocol, FakeTransport, FakeRuntime, FakeClock]:
    rt = FakeRuntime(asyncio.get_running_loop())
    clock = FakeClock()
    proto, transport = connect(rt, loop=clock, **limits)  # type: ignore[arg-type]
    return proto, transport, rt, clock


PARTIAL_PING = b"*1\r\n$4\r\nPI"

# --------------------------------------------------------------------------- idle timeout


@in_loop
async def test_idle_timeout_counts_from_the_last_activity() -> None:
    proto, transport, _, clock = clocked(idle_timeout=10)
    clock.advance(9)
    proto.data_received(b"PING\r\n")  # activity: the idle clock starts again
    clock.advance(9)
    assert not transport.closed
    clock.advance(1.5)
    assert transport.closed and not transport.aborted
    assert b"".join(transport.writes) == b"+PONG\r\n"  # closed silently, as Redis does


@in_loop
async def test_idle_timeout_waits_while_a_reply_is_owed() -> None:
    proto, transport, rt, clock = clocked(idle_timeout=10)
    proto.data_received(encode_command("SET", "k", "v"))
    clock.advance(95)  # the fsync takes long: the connection is not idle
    assert not transport.closed
    rt.answer(0, OK)
    await settle()
    assert transport.writes == [b"+OK\r\n"]
    clock.advance(9)
    assert not transport.closed  # idle counts from the reply, not from the command
    clock.advance(1.5)
    assert transport.closed


@in_loop
async def test_idle_timeout_aborts_a_client_that_does_not_read_its_replies() -> None:
    proto, transport, _, clock = clocked(idle_timeout=10)
    proto.data_received(b"PING\r\n")
    transport.write_buffer = 1 << 20  # the client stopped reading: a close would never end
    clock.advance(11)
    assert transport.aborted


def test_idle_connection_is_closed_over_a_real_socket() -> None:
    with ThreadedServer(limits=RespLimits(idle_timeout=0.5)) as s:
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
            sock.sendall(b"PING\r\n")
            assert recv_until_closed(sock) == b"+PONG\r\n"  # then EOF, within the bound
        with s.client() as c:
            assert c.info("stats")["idle_connections_closed"] == 1


# --------------------------------------------------------------------------- request timeout

TIMEOUT_ERROR = b"-ERR command not received in full within %g s; closing the connection\r\n"


@in_loop
async def test_a_partial_command_must_complete_within_the_request_timeout() -> None:
    proto, transport, _, clock = clocked(request_timeout=5, idle_timeout=100)
    proto.data_received(b"PING\r\n*3\r\n$3\r\nSET\r\n")
    clock.advance(3)
    proto.data_received(b"$1\r\nk\r\n")  # more bytes of the same command: no new deadline
    clock.advance(1.9)
    assert not transport.eof_written
    clock.advance(0.2)
    assert b"".join(transport.writes) == b"+PONG\r\n" + TIMEOUT_ERROR % 5
    assert transport.eof_written  # lingering close: FIN, then discard until the client's EOF
    assert proto._shared.buffered == 0  # the half command's bytes are released


@in_loop
async def test_each_command_gets_its_own_request_timeout() -> None:
    proto, transport, _, clock = clocked(request_timeout=5, idle_timeout=100)
    proto.data_received(PARTIAL_PING)
    clock.advance(4)
    proto.data_received(b"NG\r\n" + PARTIAL_PING)  # one done, the next one started now
    clock.advance(4)
    assert transport.writes == [b"+PONG\r\n"] and not transport.eof_written
    clock.advance(1.5)
    assert transport.writes[-1] == TIMEOUT_ERROR % 5


@in_loop
async def test_the_request_clock_stops_while_the_server_does_not_read() -> None:
    proto, transport, rt, clock = clocked(request_timeout=5, idle_timeout=100, max_pending=2)
    proto.data_received(encode_command("SET", "a", "1") + encode_command("INCR", "b") + b"*1")
    assert not transport.reading  # backpressure: the client cannot finish its command
    clock.advance(50)
    assert not transport.eof_written
    rt.answer(0, OK)
    rt.answer(1, OK)
    await settle()
    assert transport.reading
    clock.advance(4.5)
    assert not transport.eof_written  # five seconds from when reading resumed
    clock.advance(1)
    assert transport.writes[-1] == TIMEOUT_ERROR % 5


def test_slow_clients_are_refused_over_real_sockets() -> None:
    limits = RespLimits(request_timeout=0.2, idle_timeout=60)
    with ThreadedServer(limits=limits) as s:
        socks = [socket.create_connection(("127.0.0.1", s.port), timeout=5) for _ in range(20)]
        try:
            for sock in socks:
                sock.sendall(PARTIAL_PING)
            for sock in socks:
                assert recv_until_closed(sock) == TIMEOUT_ERROR % 0.2
        finally:
            for sock in socks:
                sock.close()


def test_a_dribbling_client_does_not_push_the_deadline_back() -> None:
    """One byte at a time keeps the connection busy, yet it is closed after request_timeout."""
    limits = RespLimits(request_timeout=0.3, idle_timeout=60)
    with (
        ThreadedServer(limits=limits) as s,
        socket.create_connection(("127.0.0.1", s.port)) as sock,
    ):
        sock.sendall(b"*2\r\n$4\r\nECHO\r\n$100000\r\n")
        deadline = time.monotonic() + 10
        got = b""
        while not got and time.monotonic() < deadline:
            sock.sendall(b"x")
            sock.settimeout(0.02)  # pacing by a bounded wait for the server's answer
            try:
                got = sock.recv(4096)
            except TimeoutError:
                continue
        sock.settimeout(5)
        assert got + recv_until_closed(sock) == TIMEOUT_ERROR % 0.3


# --------------------------------------------------------------------------- buffer cap

CAP_ERROR = (
    b"-ERR the server holds too many bytes of unfinished commands "
    b"(at most 100000 across all connections); closing this connection\r\n"
)


@in_loop
async def test_the_connection_that_takes_the_total_past_the_cap_is_refused() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    shared = _Shared(rt, {}, RespLimits(max_buffered_bytes=100))
    a, b = RespServerProtocol(shared), RespServerProtocol(shared)
    ta, tb = FakeTransport(), FakeTransport()
    a.connection_made(ta)
    b.connection_made(tb)
    half = encode_command("SET", "k", "v" * 60)[:-10]
    a.data_received(half)
    assert shared.buffered > 50
    b.data_received(b"PING\r\n" + half)  # the earlier command is answered, then the error
    assert b"".join(tb.writes) == (
        b"+PONG\r\n-ERR the server holds too many bytes of unfinished commands "
        b"(at most 100 across all connections); closing this connection\r\n"
    )
    assert tb.eof_written and not ta.eof_written
    a.data_received(encode_command("SET", "k", "v" * 60)[-10:])  # a finishes its command
    assert [i.key for i, _ in rt.pending] == [b"k"]
    assert shared.buffered == 0 and shared.buffer_refusals == 1


def test_half_sent_big_commands_cannot_pile_up_over_real_sockets() -> None:
    with ThreadedServer(limits=RespLimits(max_buffered_bytes=100_000)) as s, s.client() as c:
        first = encode_command("SET", "big1", "x" * 60_000)
        second = encode_command("SET", "big2", "y" * 60_000)
        with (
            socket.create_connection(("127.0.0.1", s.port), timeout=5) as a,
            socket.create_connection(("127.0.0.1", s.port), timeout=5) as b,
        ):
            a.sendall(first[:-100])
            wait_for(lambda: unfinished_bytes(c) >= 59_000)
            b.sendall(second[:-100])
            assert recv_until_closed(b) == CAP_ERROR
            a.sendall(first[-100:])  # the connection within the cap goes on
            assert a.recv(100) == b"+OK\r\n"
        assert c.get("big1") == b"x" * 60_000 and c.get("big2") is None
        wait_for(lambda: unfinished_bytes(c) == 0)
        assert c.info("stats")["buffer_limit_refusals"] == 1


# --------------------------------------------------------------------------- backlog


def listen_backlog(port: int, ss: str) -> int:
    out = subprocess.run(
        [ss, "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    return int(out.split()[2])  # Send-Q of a listening socket: its backlog


def test_the_listen_backlog_comes_from_the_limits(require_tool: Callable[..., str]) -> None:
    ss = require_tool("ss", apt="iproute2")
    with ThreadedServer(limits=RespLimits(backlog=7)) as s:
        assert listen_backlog(s.port, ss) == 7
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())
    with ThreadedServer() as s:
        assert listen_backlog(s.port, ss) == min(1024, somaxconn)


# --------------------------------------------------------------------------- half-close


def test_a_client_that_half_closes_gets_its_replies_first() -> None:
    """As ``printf '*3...SET x 1' | nc -N``: shutdown(SHUT_WR) right after the commands."""
    with ThreadedServer() as s:
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
            sock.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$1\r\n1\r\n")
            sock.shutdown(socket.SHUT_WR)
            assert recv_until_closed(sock) == b"+OK\r\n"
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
            # A read held behind the write, and an unfinished command at EOF (dropped).
            sock.sendall(encode_command("SET", "y", "2") + encode_command("GET", "y") + b"*2\r\n")
            sock.shutdown(socket.SHUT_WR)
            assert recv_until_closed(sock) == b"+OK\r\n$1\r\n2\r\n"
        with s.client() as c:
            assert c.get("x") == b"1"


@in_loop
async def test_eof_keeps_the_connection_open_until_the_replies_owed_are_written() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    proto.data_received(encode_command("SET", "k", "v"))
    assert proto.eof_received() is True  # keep the transport open to write
    assert not transport.closed
    rt.answer(0, OK)
    await settle()
    assert transport.writes == [b"+OK\r\n"] and transport.closed
    idle, _ = connect(rt)
    assert not idle.eof_received()  # nothing owed: close at once


@in_loop
async def test_eof_during_shutdown_still_gets_the_replies_owed() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    proto.data_received(encode_command("SET", "k", "v"))
    proto.close_when_drained()
    assert proto.eof_received() is True
    rt.answer(0, OK)
    await settle()
    assert transport.writes == [b"+OK\r\n"] and transport.closed


@in_loop
async def test_a_linger_ends_in_a_close_or_an_abort() -> None:
    for unread, aborted in ((0, False), (1000, True)):
        proto, transport, _, clock = clocked()
        proto.data_received(b"*1\r\n$x\r\n")
        assert transport.eof_written and not transport.closed  # lingering
        transport.write_buffer = unread  # the client read the error, or never reads
        clock.advance(2.5)
        assert transport.closed and transport.aborted is aborted


@in_loop
async def test_a_close_the_client_does_not_read_is_aborted_after_idle_timeout() -> None:
    proto, transport, _, clock = clocked(idle_timeout=10)
    transport.write_buffer = 1000
    proto.data_received(b"PING\r\nQUIT\r\n")
    assert transport.closed and not transport.aborted
    clock.advance(11)
    assert transport.aborted


# --------------------------------------------------------------------------- refusals


@pytest.fixture(scope="module")
def guarded() -> Any:
    with ThreadedServer(allow_reset=False) as s:
        yield s


def test_config_resetstat_is_refused_and_info_keeps_counting(guarded: ThreadedServer) -> None:
    with guarded.client() as c:
        c.ping()
        before = c.info("stats")["total_commands_processed"]
        with pytest.raises(redis.ResponseError, match="CONFIG RESETSTAT is not supported"):
            c.config_resetstat()
        assert c.info("stats")["total_commands_processed"] > before  # not reset: as it said


def test_flushall_and_flushdb_are_refused_without_allow_reset(guarded: ThreadedServer) -> None:
    with guarded.client() as c:
        c.set("keep", "me")
        for command in (["FLUSHALL"], ["FLUSHDB", "ASYNC"], ["flushall", "SYNC"]):
            name = command[0].upper()
            with pytest.raises(redis.ResponseError) as info:
                c.execute_command(*command)
            assert str(info.value) == (
                f"{name} is disabled on this server (corosm serve --no-reset)"
            )
        assert c.get("keep") == b"me"


def test_allow_reset_is_per_server() -> None:
    refused = dispatch([b"FLUSHDB"], Session(1, allow_reset=False))
    assert refused == Local(
        ErrorReply("ERR FLUSHDB is disabled on this server (corosm serve --no-reset)")
    )
    assert not isinstance(dispatch([b"FLUSHDB"], Session(1)), Local)


# --------------------------------------------------------------------------- key/value limits


def test_inputs_over_the_store_limits_are_err_replies() -> None:
    long_key = b"k" * (MAX_KEY_BYTES + 1)
    big = b"v" * (MAX_VALUE_BYTES + 1)
    key_error = ErrorReply(
        f"ERR key too long: {MAX_KEY_BYTES + 1} bytes, at most {MAX_KEY_BYTES} allowed"
    )
    value_error = ErrorReply(
        f"ERR value too large: {MAX_VALUE_BYTES + 1} bytes, at most {MAX_VALUE_BYTES} allowed"
    )
    cases = {
        (b"SET", long_key, b"v"): key_error,  # the fast path
        (b"set", b"k", big, b"NX"): value_error,
        (b"SET", b"k", big, b"GET"): value_error,
        (b"MSET", b"a", b"1", long_key, b"2"): key_error,
        (b"APPEND", b"k", big): value_error,
        (b"INCR", long_key): key_error,
        (b"GET", long_key): key_error,
    }
    for args, reply in cases.items():
        assert dispatch(list(args), Session(1)) == Local(reply), args[0]
    empty = dispatch([b"SET", b"", b"v"], Session(1))
    assert isinstance(empty, Local) and isinstance(empty.reply, ErrorReply)
    assert empty.reply.message.startswith("ERR empty key")


def test_limits_answer_err_and_keep_the_connection(guarded: ThreadedServer) -> None:
    big = b"v" * (MAX_VALUE_BYTES + 1)
    with guarded.client() as c:
        with pytest.raises(redis.ResponseError, match=f"at most {MAX_KEY_BYTES} allowed"):
            c.set("k" * (MAX_KEY_BYTES + 1), "v")
        with pytest.raises(redis.ResponseError, match=f"at most {MAX_VALUE_BYTES} allowed"):
            c.set("limited", big)
        with pytest.raises(redis.ResponseError, match=f"at most {MAX_VALUE_BYTES} allowed"):
            c.mset({"a-limited": "1", "b-limited": big})
        with pytest.raises(redis.ResponseError, match="empty key"):
            c.set("", "v")
        assert c.mget("a-limited", "b-limited") == [None, None]  # MSET is all or nothing
        full = b"f" * MAX_VALUE_BYTES
        assert c.set("limited", full)
        with pytest.raises(redis.ResponseError, match=f"maximum allowed size.*{MAX_VALUE_BYTES}"):
            c.append("limited", "x")  # refused by the machine, in log order
        assert c.strlen("limited") == MAX_VALUE_BYTES
        pipe = c.pipeline(transaction=False)
        pipe.set("p", "1").set("p", big).get("p")
        ok, refused, value = pipe.execute(raise_on_error=False)
        assert ok is True and isinstance(refused, redis.ResponseError) and value == b"1"
        assert c.ping() is True


# --------------------------------------------------------------------------- ordering, replies


class AllWritesWait(KVMachine):
    """A machine that declares every input WRITE: nothing may overlap on one connection."""

    def order(self, input: Any) -> Order:
        return Order.WRITE


@in_loop
async def test_ordering_follows_the_machines_declaration() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    proto.data_received(encode_command("SET", "a", "1") + encode_command("INCR", "b"))
    assert len(rt.pending) == 2  # KVMachine: SET and INCR are LOGGED, both go at once
    rt.machine = AllWritesWait()
    proto, transport = connect(rt)
    proto.data_received(encode_command("SET", "c", "1") + encode_command("INCR", "d"))
    assert len(rt.pending) == 3  # declared WRITE: the second waits for the first
    rt.answer(2, OK)
    await settle()
    assert len(rt.pending) == 4 and transport.writes == [b"+OK\r\n"]


@in_loop
async def test_a_reply_after_the_connection_is_gone_is_dropped() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    proto.data_received(encode_command("GET", "k"))
    proto.connection_lost(None)
    rt.answer(0, Value(b"late"))  # the runtime's callback must not fail
    await settle()
    assert transport.writes == []


@in_loop
async def test_an_output_that_cannot_be_encoded_is_an_error_reply() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    proto.data_received(encode_command("GET", "k") + b"PING\r\n")
    rt.answer(0, object())  # not a key-value output: a bug, answered, logged
    await settle()
    out = b"".join(transport.writes)
    assert out.startswith(b"-ERR the key-value machine answered") and out.endswith(b"+PONG\r\n")
    assert not transport.closed


# --------------------------------------------------------------------------- helpers


def recv_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes; fails if it does not within ``timeout``."""
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def unfinished_bytes(c: redis.Redis) -> int:
    return int(c.info("clients")["unfinished_command_bytes"])


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Ask until ``condition()`` holds; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
