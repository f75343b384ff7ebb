"""The RESP server: ordering and backpressure with a fake runtime, then real sockets.

The socket tests run a real Runtime with the key-value machine and the RESP
server on a free loopback port in a background thread (:class:`ThreadedServer`),
so blocking clients (redis-py's sync client, redis-cli) can talk to it.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from corosm.apps.kv import inputs as kv
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import OK, IntValue, Value
from corosm.errors import Overloaded, UsageError
from corosm.frontends.resp.protocol import encode_command
from corosm.frontends.resp.server import (
    RespLimits,
    RespServerProtocol,
    _Shared,
    start_resp_server,
    stop_resp_server,
)
from corosm.runtime import Runtime

# --------------------------------------------------------------------------- fake runtime

Reply = Callable[[Any, BaseException | None], None]  # the runtime's reply callback


class FakeRuntime:
    """Holds every submitted input's callback so the test decides when each finishes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, capacity: int = 1000) -> None:
        self.loop = loop
        self.capacity = capacity
        self.machine = KVMachine()  # for its order() declaration
        self.pending: list[tuple[Any, Reply]] = []

    def submit_callback(self, input: Any, callback: Reply, *, now: bool = False) -> None:
        if len(self.pending) >= self.capacity:
            raise Overloaded("full")
        self.pending.append((input, callback))

    def answer(self, index: int, output: Any) -> None:
        self.pending[index][1](output, None)

    def fail(self, index: int, error: BaseException) -> None:
        self.pending[index][1](None, error)

    def stats(self) -> dict[str, float]:
        return {"queue_depth": float(len(self.pending))}

    def health(self) -> str | None:
        return None


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.eof_written = False
        self.reading = True
        self.write_buffer = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def get_write_buffer_size(self) -> int:
        return self.write_buffer

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def connect(
    rt: FakeRuntime, loop: asyncio.AbstractEventLoop | None = None, **limits: Any
) -> tuple[RespServerProtocol, FakeTransport]:
    """A protocol on a fake transport; ``loop`` gives its clock and timers."""
    proto = RespServerProtocol(_Shared(rt, {}, RespLimits(**limits), loop=loop))
    transport = FakeTransport()
    proto.connection_made(transport)
    return proto, transport


def in_loop(fn: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test body on a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(fn)
    def run() -> None:
        asyncio.run(asyncio.wait_for(fn(), 30))

    return run


async def settle() -> None:
    for _ in range(3):  # the done-callback, and anything it schedules
        await asyncio.sleep(0)


@in_loop
async def test_replies_leave_in_command_order_in_one_write() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    proto.data_received(
        encode_command("SET", "a", "1") + b"PING\r\n" + encode_command("SET", "b", "2")
    )
    assert transport.writes == []  # PING waits behind the first SET
    assert [i for i, _ in rt.pending] == [kv.Write(b"a", b"1"), kv.Write(b"b", b"2")]
    rt.answer(1, Value(b"second"))
    await settle()
    assert transport.writes == []  # the second cannot overtake the first
    rt.answer(0, Value(b"first"))
    await settle()
    assert transport.writes == [b"$5\r\nfirst\r\n+PONG\r\n$6\r\nsecond\r\n"]


@in_loop
async def test_a_read_waits_for_earlier_writes_of_its_connection() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    proto.data_received(
        encode_command("SET", "k", "v")
        + encode_command("GET", "k")
        + b"PING\r\n"
        + encode_command("INCR", "n")
    )
    # GET is held until the SET is answered; PING and INCR behind it are held too.
    assert [i for i, _ in rt.pending] == [kv.Write(b"k", b"v")]
    rt.answer(0, OK)
    await settle()
    assert transport.writes == [b"+OK\r\n"]  # PING keeps its place behind the GET
    assert [i for i, _ in rt.pending[1:]] == [kv.Read(b"k"), kv.IncrBy(b"n", 1)]
    rt.answer(2, IntValue(5))
    rt.answer(1, Value(b"v"))
    await settle()
    assert b"".join(transport.writes) == b"+OK\r\n$1\r\nv\r\n+PONG\r\n:5\r\n"


@in_loop
async def test_a_completion_batch_is_one_write() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    # SET and INCR alternate: no run (see test_resp_runs.py), sixteen inputs.
    proto.data_received(b"".join(_set_or_incr(i) for i in range(16)))
    assert len(rt.pending) == 16  # all submitted at once: one group commit
    assert transport.writes == []  # nothing answered yet: no empty write
    for i in range(16):  # the runtime finishes a journal batch in one turn
        rt.answer(i, OK if i % 2 == 0 else IntValue(i))
    await settle()
    assert transport.writes == [
        b"".join(b"+OK\r\n" if i % 2 == 0 else b":%d\r\n" % i for i in range(16))
    ]


@in_loop
async def test_the_only_reply_owed_is_written_in_its_callback() -> None:
    """Nothing to batch it with: no call_soon and loop pass before the write."""
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    proto.data_received(encode_command("SET", "a", "1"))
    rt.answer(0, OK)
    assert transport.writes == [b"+OK\r\n"]  # before any loop pass
    proto.data_received(_set_or_incr(0) + _set_or_incr(1))
    rt.answer(1, OK)
    rt.answer(2, IntValue(1))
    assert transport.writes == [b"+OK\r\n"]  # two owed: batched for the drain after the turn
    await settle()
    assert transport.writes == [b"+OK\r\n", b"+OK\r\n:1\r\n"]


def _set_or_incr(i: int) -> bytes:
    """SET for even ``i``, INCR for odd: LOGGED commands that never form a run."""
    if i % 2 == 0:
        return encode_command("SET", f"k{i}", "v")
    return encode_command("INCR", f"n{i}")


@in_loop
async def test_resp3_null_is_decided_when_the_command_came() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    proto.data_received(encode_command("GET", "a") + encode_command("HELLO", "3"))
    proto.data_received(encode_command("GET", "b"))
    rt.answer(0, Value(None))
    rt.answer(1, Value(None))
    await settle()
    out = b"".join(transport.writes)
    assert out.startswith(b"$-1\r\n%7\r\n")
    assert out.endswith(b"_\r\n")


@in_loop
async def test_protocol_error_answers_earlier_commands_then_closes() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    proto.data_received(b"PING\r\n*1\r\n$x\r\nPING\r\n")
    assert transport.eof_written  # lingers: FIN, then discard until the client's EOF
    assert b"".join(transport.writes) == (b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n")
    proto.data_received(b"PING\r\n")  # anything after is ignored
    assert b"".join(transport.writes).count(b"PONG") == 1


@in_loop
async def test_quit_answers_ok_and_ignores_the_rest() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    proto.data_received(b"PING\r\nQUIT\r\n" + encode_command("SET", "a", "b"))
    assert transport.closed
    assert b"".join(transport.writes) == b"+PONG\r\n+OK\r\n"
    assert rt.pending == []


@in_loop
async def test_backpressure_pauses_and_resumes_reading() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt, max_pending=4)
    proto.data_received(b"".join(_set_or_incr(i) for i in range(4)))
    assert not transport.reading
    rt.answer(0, OK)
    rt.answer(1, OK)
    await settle()
    assert transport.reading  # half answered: read again


@in_loop
async def test_overloaded_runtime_answers_busy_and_keeps_going() -> None:
    rt = FakeRuntime(asyncio.get_running_loop(), capacity=1)
    proto, transport = connect(rt)
    proto.data_received(encode_command("SET", "a", "1") + encode_command("INCR", "b"))
    rt.answer(0, OK)
    await settle()
    assert b"".join(transport.writes) == b"+OK\r\n-ERR server busy, try again\r\n"
    assert not transport.closed


@in_loop
async def test_a_failed_input_gets_an_error_reply() -> None:
    from corosm.errors import JournalError

    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    proto.data_received(encode_command("SET", "a", "1") + b"PING\r\n")
    rt.fail(0, JournalError("ENOSPC"))
    await settle()
    out = b"".join(transport.writes)
    assert out.startswith(b"-MISCONF corosm could not persist this write")
    assert out.endswith(b"+PONG\r\n")


@in_loop
async def test_stop_answers_in_flight_commands_then_closes() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    server = await start_resp_server(rt, port=0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_command("SET", "a", "1"))
    while not rt.pending:  # the command reached the runtime
        await asyncio.sleep(0)
    stopping = asyncio.ensure_future(stop_resp_server(server))
    await settle()
    rt.answer(0, Value(b"done"))
    assert await reader.read() == b"$4\r\ndone\r\n"  # the reply, then EOF
    await stopping
    writer.close()


# --------------------------------------------------------------------------- real sockets


class ThreadedServer:
    """A Runtime(KVMachine) and a RESP server on a free port, in a thread of its own."""

    def __init__(self, uvloop: bool = False, **server_kw: Any) -> None:
        if uvloop:
            import uvloop as uv

            self.loop: asyncio.AbstractEventLoop = uv.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server_kw = server_kw
        self.port = 0

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    async def _start(self) -> None:
        self.runtime: Runtime[Any, Any, Any] = Runtime(KVMachine())
        await self.runtime.start()
        self.server = await start_resp_server(self.runtime, port=0, **self.server_kw)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        await stop_resp_server(self.server)
        await self.runtime.stop()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=10)


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer() as s:
        yield s


@pytest.fixture
def r(server: ThreadedServer) -> Iterator[redis.Redis]:
    with server.client() as client:
        client.flushall()
        yield client


def test_redis_py_string_commands(r: redis.Redis) -> None:
    assert r.ping() is True
    assert r.echo("hé") == "hé".encode()
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert r.set("k", "w", nx=True) is None
    assert r.set("k", "w", xx=True, get=True) == b"v"
    assert r.set("new", "x", xx=True) is None
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget("a", "b", "nope") == [b"1", b"2", None]
    assert r.incr("a") == 2
    assert r.incrby("a", 10) == 12
    assert r.decr("a") == 11
    assert r.append("b", "xyz") == 4
    assert r.strlen("b") == 4
    assert r.exists("a", "a", "nope") == 2
    assert r.delete("a", "nope") == 1
    assert r.dbsize() == 2
    assert r.flushdb() is True
    assert r.dbsize() == 0
    r.execute_command("SELECT", 0)
    r.client_setname("tester")
    assert r.client_getname() == "tester"
    assert "redis_version" in r.info()


def test_redis_py_resp2_client(server: ThreadedServer) -> None:
    with redis.Redis(port=server.port, protocol=2, socket_timeout=10) as c:
        assert c.set("r2", "v") is True
        assert c.get("r2") == b"v"
        assert c.get("absent-r2") is None
        # No journal behind this runtime, and the server does not pretend otherwise.
        assert c.config_get("appendonly") == {"appendonly": "no"}
        assert c.mget("r2", "absent-r2") == [b"v", None]


def test_redis_py_errors_have_redis_wording(r: redis.Redis) -> None:
    r.set("s", "abc")
    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        r.incr("s")
    with pytest.raises(redis.ResponseError, match="unknown command 'FOO'"):
        r.execute_command("FOO", "bar")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'get'"):
        r.execute_command("GET")
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r.execute_command("SELECT", 3)
    with pytest.raises(redis.ResponseError, match="not supported by corosm"):
        r.set("k", "v", ex=10)
    r.set("n", str(2**63 - 1))
    with pytest.raises(redis.ResponseError, match="would overflow"):
        r.incr("n")
    assert r.get("s") == b"abc"  # the connection still works


def test_pipeline_of_many_commands_answers_in_order(r: redis.Redis) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(300):
        pipe.set(f"k{i}", i)
        pipe.get(f"k{i}")  # read-your-writes inside the pipeline
        pipe.incr("counter")
    results = pipe.execute()
    assert results[0::3] == [True] * 300
    assert results[1::3] == [str(i).encode() for i in range(300)]
    assert results[2::3] == list(range(1, 301))
    assert r.dbsize() == 301


def test_binary_keys_and_values(r: redis.Redis) -> None:
    value = bytes(range(256)) * 100
    assert r.set(b"\x00\r\n", value)
    assert r.get(b"\x00\r\n") == value


async def _concurrent_increments(port: int, clients: int, each: int) -> int:
    conns = [redis.asyncio.Redis(port=port) for _ in range(clients)]
    try:

        async def bump(c: redis.asyncio.Redis) -> None:
            for _ in range(each):
                await c.incr("shared")

        await asyncio.wait_for(asyncio.gather(*(bump(c) for c in conns)), 30)
        return int(await conns[0].get("shared"))
    finally:
        for c in conns:
            await c.aclose()


def test_asyncio_clients_do_not_lose_increments(r: redis.Redis, server: ThreadedServer) -> None:
    assert asyncio.run(_concurrent_increments(server.port, 8, 50)) == 400


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` and read until the server closes (bounded by a timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_garbage_closes_only_that_connection(r: redis.Redis, server: ThreadedServer) -> None:
    r.set("k", "v")
    out = raw_exchange(server.port, b"PING\r\n*2\r\n$3\r\nGET\r\n+k\r\n")
    assert out == b"+PONG\r\n-ERR Protocol error: expected '$', got '+'\r\n"
    assert r.get("k") == b"v"


def test_inline_commands_as_telnet_sends_them(server: ThreadedServer) -> None:
    out = raw_exchange(server.port, b'PING\r\nSET tk "a b"\r\nGET tk\nQUIT\r\n')
    assert out == b"+PONG\r\n+OK\r\n$3\r\na b\r\n+OK\r\n"


def test_bulk_length_limit_is_enforced() -> None:
    with ThreadedServer(limits=RespLimits(max_bulk_len=1000)) as s:
        out = raw_exchange(s.port, encode_command("SET", "k", "x" * 1001))
        assert out == b"-ERR Protocol error: invalid bulk length\r\n"
        with s.client() as c:
            assert c.set("k", "x" * 1000) is True


def test_works_on_uvloop_too() -> None:
    with ThreadedServer(uvloop=True) as s, s.client() as c:
        pipe = c.pipeline(transaction=False)
        for i in range(100):
            pipe.set(f"u{i}", i).get(f"u{i}")
        assert pipe.execute()[1::2] == [str(i).encode() for i in range(100)]
        assert raw_exchange(s.port, b"PING\r\n*1\r\n$-5\r\n") == (
            b"+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
        )


@in_loop
async def test_bad_info_is_refused_with_what_was_expected() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    with pytest.raises(UsageError, match=r"info\['fsync'\] must be one of \['always'"):
        await start_resp_server(rt, port=0, info={"fsync": "sometimes"})
    with pytest.raises(UsageError, match="must map str to str"):
        await start_resp_server(rt, port=0, info={"fsync": 1})  # type: ignore[dict-item]
    with pytest.raises(UsageError, match="max_pending must be an int >= 1"):
        RespLimits(max_pending=0)
    with pytest.raises(UsageError, match="idle_timeout must be > 0 seconds"):
        RespLimits(idle_timeout=0)
