"""Runs: consecutive GETs, or consecutive plain SETs, of one read taken as one input.

The property: whatever the commands and however the stream is cut into
reads, one pipelined connection answers exactly what the general path
answers one command at a time (``dispatch``, the reference model, then
``encode_output``), and leaves the same state. The other tests pin what a
run is: one input, one journal record, one reply per command, and each
command alone when the run's input does not build.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from corosm.apps.kv import inputs as kv
from corosm.apps.kv import model
from corosm.apps.kv.inputs import MAX_KEY_BYTES
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import OK, Value, Values
from corosm.frontends.resp.commands import Local, Session, dispatch
from corosm.frontends.resp.protocol import encode_command, encode_reply, parse_reply
from corosm.frontends.resp.replies import encode_output
from corosm.frontends.resp.server import RespLimits, RespServerProtocol, _Shared
from corosm.runtime import Runtime
from test_resp_server import FakeRuntime, FakeTransport, connect, in_loop, settle

_GOOD_KEYS = st.sampled_from([b"a", b"b", b"c"])
#: Mostly keys that exist after a SET, sometimes one no input accepts (empty, too long).
_KEYS = st.one_of(
    _GOOD_KEYS, _GOOD_KEYS, _GOOD_KEYS, st.sampled_from([b"", b"k" * (MAX_KEY_BYTES + 1)])
)
_VALUES = st.sampled_from([b"1", b"xyz", b"", b"-7", b"v" * 40])


def _to_command(kind: int, key: bytes, value: bytes, other: bytes) -> list[bytes]:
    """Kinds 0-3: GET in its spellings; 4-7: plain SET; then commands that end a run."""
    commands = [
        [b"GET", key],
        [b"GET", key],
        [b"get", key],
        [b"Get", key],  # not a spelling runs take: goes through the table
        [b"SET", key, value],
        [b"SET", key, value],
        [b"set", key, value],
        [b"SET", key, value],
        [b"SET", key, value, b"NX"],
        [b"INCR", key],
        [b"DEL", key],
        [b"MGET", key, other],
        [b"APPEND", key, b"+"],
        [b"PING"],
        [b"GET"],  # wrong arity: a local error between runs
    ]
    return commands[kind]


_COMMANDS = st.builds(_to_command, st.integers(0, 14), _KEYS, _VALUES, _KEYS)


def _sequential(commands: list[list[bytes]]) -> tuple[bytes, dict[bytes, bytes]]:
    """The replies and final state of the general path, one command at a time."""
    session = Session(1)
    state = model.ModelState()
    out = []
    for args in commands:
        outcome = dispatch(args, session)
        if isinstance(outcome, Local):
            out.append(encode_reply(outcome.reply))
            continue
        output, state = model.step(state, outcome)
        out.append(encode_output(outcome, output))
    return b"".join(out), dict(state)


async def _pipelined(pieces: list[bytes], replies: int) -> tuple[bytes, dict[bytes, bytes]]:
    """The replies and final state of one connection fed ``pieces`` as its reads."""
    runtime: Runtime[Any, Any, Any] = Runtime(KVMachine())
    await runtime.start()
    proto = RespServerProtocol(_Shared(runtime, {}, RespLimits()))
    transport = FakeTransport()
    proto.connection_made(transport)
    for piece in pieces:
        proto.data_received(piece)
    for _ in range(10_000):  # a bounded wait for every reply, no sleeping
        got = b"".join(transport.writes)
        if _count_replies(got) >= replies:
            break
        await asyncio.sleep(0)
    await runtime.stop()
    return b"".join(transport.writes), dict(runtime.stepper.state.data)


def _count_replies(data: bytes) -> int:
    count, pos = 0, 0
    while (parsed := parse_reply(data, pos)) is not None:
        count, pos = count + 1, parsed[1]
    return count


@settings(max_examples=150, deadline=None)
@given(commands=st.lists(_COMMANDS, min_size=1, max_size=40), data=st.data())
def test_a_pipelined_connection_answers_what_the_general_path_does(
    commands: list[list[bytes]], data: st.DataObject
) -> None:
    stream = b"".join(encode_command(*args) for args in commands)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=4)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    expected = _sequential(commands)
    got = asyncio.run(asyncio.wait_for(_pipelined(pieces, len(commands)), 30))
    assert got == expected, f"commands {commands!r}, pieces {pieces!r}"


# --------------------------------------------------------------------------- what a run is


@in_loop
async def test_a_run_of_sets_is_one_input_and_one_reply_per_command() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    proto.data_received(b"".join(encode_command("SET", f"k{i % 3}", str(i)) for i in range(5)))
    assert [i for i, _ in rt.pending] == [
        kv.WriteMany(((b"k0", b"0"), (b"k1", b"1"), (b"k2", b"2"), (b"k0", b"3"), (b"k1", b"4")))
    ]
    rt.answer(0, OK)
    await settle()
    assert transport.writes == [b"+OK\r\n" * 5]


@in_loop
async def test_a_run_of_gets_without_a_reader_is_one_read_split_into_replies() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    proto.data_received(encode_command("GET", "a") + encode_command("get", "b") + b"PING\r\n")
    assert [i for i, _ in rt.pending] == [kv.ReadMany((b"a", b"b"))]
    rt.answer(0, Values((b"1", None)))
    await settle()
    assert b"".join(transport.writes) == b"$1\r\n1\r\n$-1\r\n+PONG\r\n"


@in_loop
async def test_a_run_that_does_not_build_answers_each_command_alone() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt)
    too_long = "k" * (MAX_KEY_BYTES + 1)
    proto.data_received(
        encode_command("SET", "a", "1")
        + encode_command("SET", too_long, "2")
        + encode_command("SET", "b", "3")
    )
    assert [i for i, _ in rt.pending] == [kv.Write(b"a", b"1"), kv.Write(b"b", b"3")]
    rt.answer(0, OK)
    rt.answer(1, OK)
    await settle()
    out = b"".join(transport.writes)
    assert out.startswith(b"+OK\r\n-ERR key") and out.endswith(b"\r\n+OK\r\n")
    assert out.count(b"\r\n") == 3


@in_loop
async def test_a_run_refused_by_a_full_runtime_is_busy_for_every_command() -> None:
    rt = FakeRuntime(asyncio.get_running_loop(), capacity=0)
    proto, transport = connect(rt)
    proto.data_received(encode_command("SET", "a", "1") + encode_command("SET", "b", "2"))
    assert b"".join(transport.writes) == b"-ERR server busy, try again\r\n" * 2
    assert not transport.closed


@in_loop
async def test_backpressure_counts_the_replies_a_run_owes() -> None:
    rt = FakeRuntime(asyncio.get_running_loop())
    proto, transport = connect(rt, max_pending=4)
    proto.data_received(b"".join(encode_command("SET", f"k{i}", "v") for i in range(4)))
    assert len(rt.pending) == 1 and not transport.reading  # one input, four replies owed
    rt.answer(0, OK)
    await settle()
    assert transport.reading


@in_loop
async def test_a_run_of_sets_is_one_journal_record() -> None:
    runtime: Runtime[Any, Any, Any] = Runtime(KVMachine())
    await runtime.start()
    proto = RespServerProtocol(_Shared(runtime, {}, RespLimits()))
    transport = FakeTransport()
    proto.connection_made(transport)
    before = runtime.stats()["appends_applied"]
    proto.data_received(b"".join(encode_command("SET", "k", str(i)) for i in range(16)))
    for _ in range(1000):
        if transport.writes:
            break
        await asyncio.sleep(0)
    assert transport.writes == [b"+OK\r\n" * 16]
    assert runtime.stats()["appends_applied"] == before + 1
    assert runtime.stepper.state.data[b"k"] == b"15"  # the last SET wins
    assert await _read(runtime, b"k") == Value(b"15")
    await runtime.stop()


async def _read(runtime: Runtime[Any, Any, Any], key: bytes) -> Any:
    return await runtime.submit(kv.Read(key))


def test_a_sharded_client_takes_a_run_across_shards_command_by_command(tmp_path: Any) -> None:
    """A run whose keys live on several shards is refused whole, so each command goes alone."""
    from corosm.shards import open_local

    async def main() -> tuple[bytes, list[Any]]:
        async with open_local(KVMachine(), tmp_path, shards=3) as client:
            proto = RespServerProtocol(_Shared(client, {}, RespLimits()))
            transport = FakeTransport()
            proto.connection_made(transport)
            keys = [f"key{i}" for i in range(12)]  # 12 keys over 3 shards: several each
            proto.data_received(
                b"".join(encode_command("SET", k, str(i)) for i, k in enumerate(keys))
            )
            proto.data_received(b"".join(encode_command("GET", k) for k in keys))
            for _ in range(100_000):  # a bounded wait for all 24 replies, no sleeping
                if _count_replies(b"".join(transport.writes)) >= 24:
                    break
                await asyncio.sleep(0)
            stored = [await client.submit(kv.Read(k.encode())) for k in keys]
            return b"".join(transport.writes), stored

    out, stored = asyncio.run(asyncio.wait_for(main(), 60))
    gets = b"".join(b"$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(12))
    assert out == b"+OK\r\n" * 12 + gets
    assert stored == [Value(str(i).encode()) for i in range(12)]
