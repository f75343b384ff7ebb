"""The RESP fast paths: the parser's one-pass split and reads answered in the pass.

The parser's fast path must take exactly what the careful path takes, so a
seeded fuzz compares the two on the same streams cut at random places. The
server's tests run a real Runtime of the key-value machine (whose ``reader``
answers a GET in the call, with no turn) on a fake transport that records
each write, and a fake runtime without a reader for the fallback.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from corosm.apps.kv import inputs as kv
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import Value
from corosm.frontends.resp.protocol import RequestParser, encode_command
from corosm.frontends.resp.server import RespLimits, RespServerProtocol, _Shared
from corosm.runtime import Runtime
from test_resp_server import FakeRuntime, FakeTransport, connect, in_loop, settle

# --------------------------------------------------------------------------- parser


def _parse_all(parser: RequestParser, pieces: list[bytes]) -> tuple[list[list[bytes]], str, int]:
    got: list[list[bytes]] = []
    for piece in pieces:
        commands, error = parser.feed_until_error(piece)
        got += commands
        if error is not None:
            return got, str(error), parser.buffered
    return got, "", parser.buffered


_ATOMS = (
    *(b"\r\n", b"\r", b"\n", b"$", b"*", b"x", b"$1", b"*2", b"0", b"-1", b" ", b'"'),
    *(b"*0", b"*9", b"*10", b"*:", b"*/"),  # around the one-digit counts read in place
    # Headers the fast path leaves to the careful one: leading zeros, too many
    # digits, over its bounds of 64 arguments and 1 KiB.
    *(b"$01", b"*01", b"$00", b"$00001", b"*64", b"*65", b"$1025"),
)


def _random_stream(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randint(1, 8)):
        pick = rng.random()
        if pick < 0.6:  # a multibulk whose arguments may hold CRLF, "$" or "*"
            args = [
                b"".join(rng.choice(_ATOMS) for _ in range(rng.randint(0, 4)))
                for _ in range(rng.randint(1, 4) if rng.random() < 0.8 else rng.randint(8, 12))
            ]
            if rng.random() < 0.1:  # around the fast path's 1 KiB bound
                args.append(b"y" * rng.choice([1023, 1024, 1025, 4000]))
            parts.append(encode_command(*args))
        elif pick < 0.8:
            parts.append(b"SET k 'a b'\r\n")
        else:  # garbage, or a fragment
            parts.append(b"".join(rng.choice(_ATOMS) for _ in range(rng.randint(1, 6))))
    return b"".join(parts)


def test_the_fast_path_takes_exactly_what_the_careful_path_takes() -> None:
    seed = 20261201
    rng = random.Random(seed)
    for _ in range(3000):
        stream = _random_stream(rng)
        cuts = sorted(rng.sample(range(len(stream) + 1), min(len(stream) + 1, rng.randint(0, 3))))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        fast, careful = RequestParser(), RequestParser()
        careful._fast = False
        got = _parse_all(fast, pieces)
        assert got == _parse_all(careful, pieces), f"seed {seed}, pieces {pieces!r}"


def test_an_argument_holding_crlf_is_not_cut_by_the_split() -> None:
    p = RequestParser()
    stream = encode_command("SET", "k", "a\r\n$1\r\nb") + encode_command("GET", "k")
    assert p.feed(stream) == [[b"SET", b"k", b"a\r\n$1\r\nb"], [b"GET", b"k"]]


def test_a_read_mixing_both_paths_keeps_the_order() -> None:
    p = RequestParser()
    big = b"v" * 5000  # over the fast path's bound
    stream = (
        encode_command("GET", "a")
        + encode_command("SET", "b", big)
        + b"PING\r\n"
        + encode_command("GET", "c")
        + b"*2\r\n$3\r\nGET"  # cut: the rest comes in the next read
    )
    assert p.feed(stream) == [[b"GET", b"a"], [b"SET", b"b", big], [b"PING"], [b"GET", b"c"]]
    assert p.buffered > 0
    assert p.feed(b"\r\n$1\r\nd\r\n" + encode_command("GET", "e")) == [
        [b"GET", b"d"],
        [b"GET", b"e"],
    ]
    assert p.buffered == 0


@pytest.mark.parametrize(
    ("limits", "command"),
    [
        ({"max_bulk_len": 4}, ("GET", "abcde")),
        ({"max_args": 2}, ("SET", "k", "v")),
        ({"max_command_bytes": 6}, ("SET", "k", "vvvv")),
    ],
)
def test_limits_below_the_fast_paths_bounds_still_hold(
    limits: dict[str, int], command: tuple[str, ...]
) -> None:
    commands, error = RequestParser(**limits).feed_until_error(encode_command(*command))
    assert commands == []
    assert error is not None


# --------------------------------------------------------------------------- server


async def _kv_connection() -> tuple[Runtime[Any, Any, Any], RespServerProtocol, FakeTransport]:
    runtime: Runtime[Any, Any, Any] = Runtime(KVMachine())
    await runtime.start()
    proto = RespServerProtocol(_Shared(runtime, {}, RespLimits()))
    transport = FakeTransport()
    proto.connection_made(transport)
    return runtime, proto, transport


async def _replies(transport: FakeTransport, size: int) -> bytes:
    """Every byte written, once ``size`` of them have been (no sleeping: a bounded poll)."""
    for _ in range(1000):
        if sum(map(len, transport.writes)) >= size:
            break
        await asyncio.sleep(0)
    return b"".join(transport.writes)


@in_loop
async def test_reads_are_answered_in_the_pass_with_no_turn_and_one_write() -> None:
    runtime, proto, transport = await _kv_connection()
    await runtime.submit(kv.Write(b"k", b"v"))
    turns = runtime.turns
    proto.data_received(
        b"PING\r\n"
        + encode_command("GET", "k")
        + encode_command("ECHO", "x")
        + encode_command("EXISTS", "k", "nope")
        + encode_command("MGET", "k", "nope")
        + encode_command("GET", "nope")
    )
    assert transport.writes == [
        b"+PONG\r\n$1\r\nv\r\n$1\r\nx\r\n:1\r\n*2\r\n$1\r\nv\r\n$-1\r\n$-1\r\n"
    ]
    assert runtime.turns == turns  # answered from the applied state, in the call
    await runtime.stop()


@in_loop
async def test_pipelined_gets_after_a_set_on_the_connection_see_it() -> None:
    runtime, proto, transport = await _kv_connection()
    burst = encode_command("SET", "k", "new") + encode_command("GET", "k") * 15
    proto.data_received(burst)
    assert transport.writes == []  # the GETs wait for the SET's fsync
    expected = b"+OK\r\n" + b"$3\r\nnew\r\n" * 15
    assert await _replies(transport, len(expected)) == expected
    await runtime.stop()


@in_loop
async def test_a_mixed_batch_replies_in_command_order() -> None:
    runtime, proto, transport = await _kv_connection()
    proto.data_received(
        encode_command("GET", "a")
        + encode_command("SET", "a", "1")
        + encode_command("GET", "a")
        + b"PING\r\n"
        + encode_command("INCR", "n")
        + encode_command("DEL", "a")
        + encode_command("GET", "a")
        + encode_command("MSET", "a", "2", "b", "3")
        + encode_command("MGET", "a", "b")
    )
    expected = (
        b"$-1\r\n+OK\r\n$1\r\n1\r\n+PONG\r\n:1\r\n:1\r\n$-1\r\n+OK\r\n*2\r\n$1\r\n2\r\n$1\r\n3\r\n"
    )
    assert await _replies(transport, len(expected)) == expected
    await runtime.stop()


@in_loop
async def test_the_writes_of_one_read_are_answered_in_one_write() -> None:
    runtime, proto, transport = await _kv_connection()
    proto.data_received(b"".join(encode_command("SET", f"k{i}", "v") for i in range(8)))
    assert await _replies(transport, 8 * len(b"+OK\r\n")) == b"+OK\r\n" * 8
    assert len(transport.writes) == 1  # one journal batch, one turn, one drain
    await runtime.stop()


@in_loop
async def test_a_read_after_the_runtime_stopped_is_answered_with_an_error() -> None:
    runtime, proto, transport = await _kv_connection()
    await runtime.stop()
    proto.data_received(encode_command("GET", "k") + b"PING\r\n")
    assert transport.writes == [b"-ERR server is shutting down, try again\r\n+PONG\r\n"]


class _NowRecordingRuntime(FakeRuntime):
    """A fake without ``reader`` (as the sharded client): records each ``now``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.nows: list[bool] = []

    def submit_callback(self, input: Any, callback: Any, *, now: bool = False) -> None:
        super().submit_callback(input, callback, now=now)
        self.nows.append(now)


@in_loop
async def test_without_a_reader_reads_are_submitted_to_step_now() -> None:
    rt = _NowRecordingRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    proto.data_received(encode_command("GET", "a") + encode_command("SET", "a", "1"))
    assert rt.nows == [True, False]  # the GET may be answered in the call; the SET queues
    proto.data_received(encode_command("GET", "a"))
    assert rt.nows == [True, False]  # held behind the SET, unsubmitted
    rt.answer(0, Value(None))
    rt.answer(1, Value(None))  # stands for Ok: encoded as a null, all the same
    await settle()
    assert rt.nows == [True, False, True]
    rt.answer(2, Value(b"1"))
    await settle()
    assert b"".join(transport.writes) == b"$-1\r\n$-1\r\n$1\r\n1\r\n"
