"""The RESP command table, the op model, and the key-value backend (no sockets)."""

from __future__ import annotations

import asyncio

import pytest

from corosm.apps.kv.machine import KVMachine
from corosm.frontends.resp import ops
from corosm.frontends.resp.commands import COMMANDS, Local, Session, dispatch
from corosm.frontends.resp.kvbackend import KVBackend
from corosm.frontends.resp.protocol import ErrorReply, Map, Reply, SimpleString, encode_reply
from corosm.runtime import Runtime

OK = SimpleString("OK")


def session() -> Session:
    return Session(7, lambda: {"inputs_processed": 3.0})


def run(*args: bytes | str) -> ops.Op | Local:
    return dispatch([a if isinstance(a, bytes) else a.encode() for a in args], session())


def local(*args: bytes | str) -> Reply:
    outcome = run(*args)
    assert isinstance(outcome, Local), outcome
    return outcome.reply


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        (["PING"], SimpleString("PONG")),
        (["ping", "hi"], b"hi"),
        (["EcHo", "x y"], b"x y"),
        (["SELECT", "0"], OK),
        (["SELECT", "1"], ErrorReply("ERR DB index is out of range (corosm has one database, 0)")),
        (["SELECT", "x"], ErrorReply("ERR value is not an integer or out of range")),
        (["GET"], ErrorReply("ERR wrong number of arguments for 'get' command")),
        (["GET", "a", "b"], ErrorReply("ERR wrong number of arguments for 'get' command")),
        (["MSET", "a", "1", "b"], ErrorReply("ERR wrong number of arguments for 'mset' command")),
        (["PING", "a", "b"], ErrorReply("ERR wrong number of arguments for 'ping' command")),
        (
            ["FOO", "a", "b"],
            ErrorReply("ERR unknown command 'FOO', with args beginning with: 'a' 'b' "),
        ),
        (["foo"], ErrorReply("ERR unknown command 'foo', with args beginning with: ")),
        (["INCRBY", "k", "1.5"], ErrorReply("ERR value is not an integer or out of range")),
        (["INCRBY", "k", "+1"], ErrorReply("ERR value is not an integer or out of range")),
        (["INCRBY", "k", "99999999999999999999"], ops.NOT_AN_INTEGER),
        (["DECRBY", "k", str(-(2**63))], ErrorReply("ERR decrement would overflow")),
        (["SET", "k", "v", "NX", "XX"], ErrorReply("ERR syntax error")),
        (["SET", "k", "v", "BOGUS"], ErrorReply("ERR syntax error")),
        (
            ["SET", "k", "v", "EX", "10"],
            ErrorReply("ERR SET option 'EX' is not supported by corosm (keys never expire)"),
        ),
        (["FLUSHALL", "NOW"], ErrorReply("ERR syntax error")),
        (["COMMAND", "COUNT"], len(COMMANDS)),
        (["COMMAND", "DOCS"], []),
        (["CONFIG", "GET", "save"], Map(((b"save", b""),))),
        (["CONFIG", "GET", "appendonly"], Map(((b"appendonly", b"yes"),))),
        (["CLIENT", "GETNAME"], None),
        (["CLIENT", "ID"], 7),
        (["CLIENT", "SETINFO", "LIB-NAME", "x"], OK),
        (["HELLO", "4"], ErrorReply("NOPROTO unsupported protocol version")),
        (
            ["HELLO", "3", "AUTH", "u", "p"],
            ErrorReply("ERR AUTH is not supported by corosm (it has no users or passwords)"),
        ),
    ],
)
def test_local_replies(args: list[str], reply: Reply) -> None:
    assert local(*args) == reply


@pytest.mark.parametrize(
    ("args", "op"),
    [
        (["GET", "k"], ops.Get(b"k")),
        (["set", "k", "v"], ops.Set(b"k", b"v")),
        (["SET", "k", "v", "nx", "get"], ops.Set(b"k", b"v", "NX", True)),
        (["SET", "k", "v", "XX", "KEEPTTL"], ops.Set(b"k", b"v", "XX", False)),
        (["MSET", "a", "1", "b", "2"], ops.MSet(((b"a", b"1"), (b"b", b"2")))),
        (["MGET", "a", "b"], ops.MGet((b"a", b"b"))),
        (["DEL", "a", "b"], ops.Del((b"a", b"b"))),
        (["EXISTS", "a", "a"], ops.Exists((b"a", b"a"))),
        (["INCR", "k"], ops.IncrBy(b"k", 1)),
        (["DECR", "k"], ops.IncrBy(b"k", -1)),
        (["INCRBY", "k", "-5"], ops.IncrBy(b"k", -5)),
        (["DECRBY", "k", "5"], ops.IncrBy(b"k", -5)),
        (["APPEND", "k", "v"], ops.Append(b"k", b"v")),
        (["STRLEN", "k"], ops.Strlen(b"k")),
        (["DBSIZE"], ops.DbSize()),
        (["FLUSHDB"], ops.FlushAll()),
        (["FLUSHALL", "ASYNC"], ops.FlushAll()),
    ],
)
def test_data_commands_become_one_op(args: list[str], op: ops.Op) -> None:
    assert run(*args) == op


def test_quit_closes_and_client_name_is_per_session() -> None:
    quit_outcome = run("QUIT")
    assert quit_outcome == Local(OK, close=True)
    s = session()
    assert dispatch([b"CLIENT", b"SETNAME", b"worker-1"], s) == Local(OK)
    assert dispatch([b"CLIENT", b"GETNAME"], s) == Local(b"worker-1")
    bad = dispatch([b"CLIENT", b"SETNAME", b"a b"], s)
    assert isinstance(bad, Local)
    assert isinstance(bad.reply, ErrorReply)
    assert "cannot contain spaces" in bad.reply.message
    assert dispatch([b"CLIENT", b"GETNAME"], s) == Local(b"worker-1")


def test_hello_switches_the_session_to_resp3() -> None:
    s = session()
    reply = dispatch([b"HELLO", b"3", b"SETNAME", b"me"], s)
    assert isinstance(reply, Local)
    assert isinstance(reply.reply, Map)
    assert (b"proto", 3) in reply.reply.pairs
    assert s.protocol == 3
    assert s.name == b"me"
    assert encode_reply(reply.reply, resp3=True).startswith(b"%7\r\n")
    assert encode_reply(None, resp3=True) == b"_\r\n"
    assert encode_reply(Map(((b"a", 1),))) == b"*2\r\n$1\r\na\r\n:1\r\n"


def test_info_reports_the_given_figures() -> None:
    reply = local("INFO")
    assert isinstance(reply, bytes)
    assert b"redis_version:" in reply
    assert b"inputs_processed:3.0\r\n" in reply


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b"0", 0),
        (b"-1", -1),
        (b"9223372036854775807", 2**63 - 1),
        (b"-9223372036854775808", -(2**63)),
    ],
)
def test_parse_int64_accepts_canonical(text: bytes, value: int) -> None:
    assert ops.parse_int64(text) == value


@pytest.mark.parametrize(
    "text",
    [b"", b"-", b"-0", b"01", b"+1", b" 1", b"1 ", b"1e3", b"9223372036854775808", b"\xd9\xa1"],
)
def test_parse_int64_rejects_the_rest(text: bytes) -> None:
    assert ops.parse_int64(text) is None


def test_model_semantics() -> None:
    store: dict[bytes, bytes] = {}
    assert ops.apply_op(store, ops.Set(b"k", b"v", "XX")) is None
    assert ops.apply_op(store, ops.Set(b"k", b"v", "NX", True)) is None
    assert ops.apply_op(store, ops.Set(b"k", b"w", "NX")) is None
    assert ops.apply_op(store, ops.Set(b"k", b"w", "", True)) == b"v"
    assert ops.apply_op(store, ops.Append(b"k", b"xyz")) == 4
    assert ops.apply_op(store, ops.IncrBy(b"k", 1)) == ops.NOT_AN_INTEGER
    assert ops.apply_op(store, ops.IncrBy(b"n", 2**63 - 1)) == 2**63 - 1
    assert ops.apply_op(store, ops.IncrBy(b"n", 1)) == ops.OVERFLOW
    assert ops.apply_op(store, ops.Del((b"n", b"n", b"zz"))) == 1
    assert ops.apply_op(store, ops.Exists((b"k", b"k", b"n"))) == 2
    assert ops.apply_op(store, ops.DbSize()) == 1


# The backend on the real runtime and key-value machine: each op, as one input.


async def _run_ops(sequence: list[ops.Op]) -> list[Reply]:
    backend = KVBackend()
    async with Runtime(KVMachine()) as rt:
        replies = []
        for op in sequence:
            out = await rt.submit(backend.to_input(op))
            replies.append(backend.to_reply(op, out))
    return replies


def test_kv_backend_agrees_with_the_model() -> None:
    sequence: list[ops.Op] = [
        ops.Set(b"a", b"1"),
        ops.Set(b"a", b"2", "NX", True),
        ops.Set(b"a", b"3", "XX", True),
        ops.Set(b"b", b"x", "XX"),
        ops.Set(b"b", b"x", "NX"),
        ops.MSet(((b"c", b"5"), (b"d", b"6"), (b"c", b"7"))),
        ops.MGet((b"a", b"b", b"c", b"zz")),
        ops.IncrBy(b"c", 10),
        ops.IncrBy(b"b", 1),
        ops.IncrBy(b"big", 2**63 - 1),
        ops.IncrBy(b"big", 1),
        ops.Append(b"b", b"yz"),
        ops.Strlen(b"b"),
        ops.Exists((b"a", b"a", b"nope")),
        ops.Del((b"a", b"nope")),
        ops.Del((b"nope",)),
        ops.DbSize(),
        ops.Get(b"a"),
        ops.FlushAll(),
        ops.DbSize(),
    ]
    model: dict[bytes, bytes] = {}
    expected = [ops.apply_op(model, op) for op in sequence]
    assert asyncio.run(_run_ops(sequence)) == expected
