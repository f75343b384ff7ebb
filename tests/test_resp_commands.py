"""The RESP command table and reply shaping, against the key-value model and machine."""

from __future__ import annotations

import asyncio

import pytest

from corosm.apps.kv import inputs as kv
from corosm.apps.kv import model
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import OK as KV_OK
from corosm.apps.kv.outputs import IntValue, Value
from corosm.frontends.resp.commands import COMMANDS, NOT_AN_INTEGER, Local, Session, dispatch
from corosm.frontends.resp.protocol import ErrorReply, Map, Reply, SimpleString, encode_reply
from corosm.frontends.resp.replies import encode_output, reply_for
from corosm.frontends.resp.serverinfo import config_values
from corosm.runtime import Runtime

OK = SimpleString("OK")


def session() -> Session:
    config = config_values({"fsync": "interval"}, 1000)
    return Session(7, lambda: {"Stats": {"inputs_processed": 3.0}}, config)


def run(*args: bytes | str) -> kv.Input | Local:
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
        (["INCRBY", "k", "99999999999999999999"], NOT_AN_INTEGER),
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
        (["CONFIG", "GET", "appendfsync"], Map(((b"appendfsync", b"everysec"),))),
        (["CONFIG", "GET", "proto-max-*"], Map(((b"proto-max-bulk-len", b"1000"),))),
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
    ("args", "input"),
    [
        (["GET", "k"], kv.Read(b"k")),
        (["set", "k", "v"], kv.Write(b"k", b"v")),
        (["SET", "k", "v", "nx", "get"], kv.SetIf(b"k", b"v", nx=True, return_old=True)),
        (["SET", "k", "v", "XX", "KEEPTTL"], kv.SetIf(b"k", b"v", xx=True)),
        (["MSET", "a", "1", "b", "2"], kv.WriteMany(((b"a", b"1"), (b"b", b"2")))),
        (["MGET", "a", "b"], kv.ReadMany((b"a", b"b"))),
        (["DEL", "a", "b"], kv.DeleteMany((b"a", b"b"))),
        (["EXISTS", "a", "a"], kv.Exists((b"a", b"a"))),
        (["INCR", "k"], kv.IncrBy(b"k", 1)),
        (["DECR", "k"], kv.IncrBy(b"k", -1)),
        (["INCRBY", "k", "-5"], kv.IncrBy(b"k", -5)),
        (["DECRBY", "k", "5"], kv.IncrBy(b"k", -5)),
        (["APPEND", "k", "v"], kv.AppendBytes(b"k", b"v")),
        (["STRLEN", "k"], kv.StrLen(b"k")),
        (["DBSIZE"], kv.Size()),
        (["FLUSHDB"], kv.Reset()),
        (["FLUSHALL", "ASYNC"], kv.Reset()),
    ],
)
def test_data_commands_become_one_input(args: list[str], input: kv.Input) -> None:
    assert run(*args) == input


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


def test_info_reports_the_given_figures_by_section() -> None:
    reply = local("INFO")
    assert isinstance(reply, bytes)
    assert reply.startswith(b"# Server\r\nredis_version:")
    assert b"# Stats\r\ninputs_processed:3\r\n" in reply  # counters without ".0"
    only = local("info", "stats")
    assert only == b"# Stats\r\ninputs_processed:3\r\n"


def run_model(commands: list[list[bytes]]) -> list[Reply]:
    """Replies through the command table, the key-value reference model and reply shaping."""
    state, s, replies = model.EMPTY, session(), []
    for command in commands:
        outcome = dispatch(command, s)
        if isinstance(outcome, Local):
            replies.append(outcome.reply)
        else:
            output, state = model.step(state, outcome)
            replies.append(reply_for(outcome, output))
    return replies


def test_reply_shaping_of_set_options_and_rejections() -> None:
    commands = [
        [b"SET", b"k", b"v", b"XX"],
        [b"SET", b"k", b"v", b"NX", b"GET"],
        [b"SET", b"k", b"w", b"NX"],
        [b"SET", b"k", b"w", b"GET"],
        [b"APPEND", b"k", b"xyz"],
        [b"INCR", b"k"],
        [b"INCRBY", b"n", b"9223372036854775807"],
        [b"INCR", b"n"],
        [b"DEL", b"n", b"n", b"zz"],
        [b"EXISTS", b"k", b"k", b"n"],
        [b"MGET", b"k", b"zz"],
        [b"DBSIZE"],
    ]
    assert run_model(commands) == [
        None,
        None,
        None,
        b"v",
        4,
        NOT_AN_INTEGER,
        2**63 - 1,
        ErrorReply("ERR increment or decrement would overflow"),
        1,
        2,
        [b"wxyz", None],
        1,
    ]


def test_fast_encoding_equals_the_general_one() -> None:
    for input, output in [
        (kv.Read(b"k"), Value(b"v")),
        (kv.Read(b"k"), Value(None)),
        (kv.Write(b"k", b"v"), KV_OK),
        (kv.IncrBy(b"k", 1), IntValue(5)),
    ]:
        for resp3 in (False, True):
            general = encode_reply(reply_for(input, output), resp3)
            assert encode_output(input, output, resp3) == general


# The commands on the real runtime and key-value machine agree with the model.


async def _run_machine(commands: list[list[bytes]]) -> list[Reply]:
    s = session()
    async with Runtime(KVMachine()) as rt:
        replies: list[Reply] = []
        for command in commands:
            outcome = dispatch(command, s)
            assert not isinstance(outcome, Local), command
            replies.append(reply_for(outcome, await rt.submit(outcome)))
    return replies


def test_commands_on_the_machine_agree_with_the_model() -> None:
    commands = [
        [b"SET", b"a", b"1"],
        [b"SET", b"a", b"2", b"NX", b"GET"],
        [b"SET", b"a", b"3", b"XX", b"GET"],
        [b"SET", b"b", b"x", b"XX"],
        [b"SET", b"b", b"x", b"NX"],
        [b"MSET", b"c", b"5", b"d", b"6", b"c", b"7"],
        [b"MGET", b"a", b"b", b"c", b"zz"],
        [b"INCRBY", b"c", b"10"],
        [b"INCR", b"b"],
        [b"INCRBY", b"big", b"9223372036854775807"],
        [b"INCR", b"big"],
        [b"APPEND", b"b", b"yz"],
        [b"STRLEN", b"b"],
        [b"EXISTS", b"a", b"a", b"nope"],
        [b"DEL", b"a", b"nope"],
        [b"DEL", b"nope"],
        [b"DBSIZE"],
        [b"GET", b"a"],
        [b"FLUSHALL"],
        [b"DBSIZE"],
    ]
    expected = run_model(commands)
    assert expected[1] == b"1" and expected[-1] == 0  # the model answered, not vacuously
    assert asyncio.run(_run_machine(commands)) == expected
