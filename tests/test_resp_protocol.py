"""The sans-I/O RESP parser and encoder, driven by hand and by Hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corosm.frontends.resp.protocol import (
    ErrorReply,
    ProtocolError,
    Reply,
    RequestParser,
    SimpleString,
    encode_command,
    encode_reply,
    parse_reply,
    split_inline,
)

args_st = st.lists(st.binary(max_size=40), min_size=1, max_size=6)
commands_st = st.lists(args_st, min_size=1, max_size=12)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


def test_multibulk_and_inline_in_one_buffer() -> None:
    p = RequestParser()
    stream = (
        encode_command("SET", "k", "v") + b"PING\r\n" + b"ECHO  hi\n" + encode_command("GET", "k")
    )
    assert p.feed(stream) == [[b"SET", b"k", b"v"], [b"PING"], [b"ECHO", b"hi"], [b"GET", b"k"]]
    assert p.buffered == 0


def test_partial_command_waits_for_the_rest() -> None:
    p = RequestParser()
    assert p.feed(b"*2\r\n$3\r\nGET\r\n$5\r\nab") == []
    assert p.buffered > 0
    assert p.feed(b"cde\r") == []
    assert p.feed(b"\n") == [[b"GET", b"abcde"]]
    assert p.buffered == 0


def test_empty_multibulk_and_blank_lines_are_skipped() -> None:
    assert RequestParser().feed(b"*0\r\n*-1\r\n\r\n  \r\nPING\r\n") == [[b"PING"]]


def test_binary_safe_bulk_with_crlf_inside() -> None:
    payload = b"a\r\nb\x00\xff"
    assert RequestParser().feed(encode_command(b"SET", b"k", payload)) == [[b"SET", b"k", payload]]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'SET k "a b"', [b"SET", b"k", b"a b"]),
        (b'SET k "\\x41\\n\\"q"', [b"SET", b"k", b'A\n"q']),
        (b"SET k 'it\\'s'", [b"SET", b"k", b"it's"]),
        (b"SET k ''", [b"SET", b"k", b""]),
        (b"  a\tb  ", [b"a", b"b"]),
    ],
)
def test_inline_quoting(line: bytes, expected: list[bytes]) -> None:
    assert split_inline(line) == expected


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"*1\r\n$x\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$99999999999\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*abc\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*99999999\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*1\r\n+PING\r\n", "ERR Protocol error: expected '$', got '+'"),
        (b"*1\r\n$4\r\nPINGxx", "ERR Protocol error: expected CRLF after bulk string"),
        (b'SET k "abc\r\n', "ERR Protocol error: unbalanced quotes in request"),
        (b'SET k "abc"d\r\n', "ERR Protocol error: unbalanced quotes in request"),
        (b"x" * 70_000, "ERR Protocol error: too big inline request"),
        (b"*" + b"1" * 70_000, "ERR Protocol error: too big mbulk count string"),
        (b"*1\r\n$" + b"1" * 30, "ERR Protocol error: too big bulk count string"),
        # Not Redis's: it waits for a CR that never comes; we say what is wrong.
        (b"*1\n$4\nPING\n", "ERR Protocol error: expected CRLF after the multibulk count, got LF"),
        (b"*1\r\n$4\nPING\n", "ERR Protocol error: expected CRLF after the bulk length, got LF"),
    ],
)
def test_garbage_raises_protocol_error_in_redis_wording(stream: bytes, message: str) -> None:
    p = RequestParser()
    with pytest.raises(ProtocolError) as info:
        p.feed(stream)
    assert str(info.value) == message
    # The stream cannot be trusted afterwards: the parser refuses more input.
    with pytest.raises(ProtocolError):
        p.feed(b"PING\r\n")


def test_limits_are_configurable() -> None:
    p = RequestParser(max_bulk_len=4, max_args=3, max_command_bytes=6)
    assert p.feed(encode_command("a", "bcde")) == [[b"a", b"bcde"]]
    with pytest.raises(ProtocolError, match="invalid bulk length"):
        RequestParser(max_bulk_len=4).feed(encode_command("abcde"))
    with pytest.raises(ProtocolError, match="invalid multibulk length"):
        RequestParser(max_args=3).feed(encode_command("a", "b", "c", "d"))
    with pytest.raises(ProtocolError, match="command too large"):
        RequestParser(max_command_bytes=6).feed(encode_command("abcd", "efg"))


def test_commands_before_garbage_are_kept_by_feed_until_error() -> None:
    p = RequestParser()
    commands, err = p.feed_until_error(b"PING\r\n" + encode_command("GET", "k") + b"*x\r\n")
    assert commands == [[b"PING"], [b"GET", b"k"]]
    assert err is not None
    assert "invalid multibulk length" in str(err)


def test_encoder_wire_format() -> None:
    assert encode_reply(SimpleString("OK")) == b"+OK\r\n"
    assert encode_reply(ErrorReply("ERR bad\r\nthing")) == b"-ERR bad  thing\r\n"
    assert encode_reply(-7) == b":-7\r\n"
    assert encode_reply(b"hi") == b"$2\r\nhi\r\n"
    assert encode_reply(b"") == b"$0\r\n\r\n"
    assert encode_reply(None) == b"$-1\r\n"
    assert encode_reply([b"a", None, 1]) == b"*3\r\n$1\r\na\r\n$-1\r\n:1\r\n"
    with pytest.raises(TypeError):
        encode_reply(True)


@given(commands_st)
def test_encode_then_parse_round_trips(commands: list[list[bytes]]) -> None:
    stream = b"".join(encode_command(*c) for c in commands)
    assert RequestParser().feed(stream) == commands


@given(commands_st, st.lists(st.integers(min_value=0), max_size=20))
def test_any_chunking_gives_the_same_commands(commands: list[list[bytes]], cuts: list[int]) -> None:
    stream = b"".join(encode_command(*c) for c in commands)
    p = RequestParser()
    got: list[list[bytes]] = []
    for piece in chunked(stream, cuts):
        got.extend(p.feed(piece))
    assert got == commands
    assert p.buffered == 0


# A line starting with "*" is a multibulk header, as in Redis: not inline.
inline_word = st.binary(min_size=1, max_size=10).filter(
    lambda w: not w.startswith(b"*") and not any(c in w for c in b" \t\r\n\v\f\"'")
)


@given(st.lists(st.lists(inline_word, min_size=1, max_size=5), min_size=1, max_size=8), st.data())
def test_inline_commands_survive_chunking(words: list[list[bytes]], data: st.DataObject) -> None:
    stream = b"".join(b" ".join(w) + b"\r\n" for w in words)
    cuts = data.draw(st.lists(st.integers(min_value=0), max_size=10))
    p = RequestParser()
    got: list[list[bytes]] = []
    for piece in chunked(stream, cuts):
        got.extend(p.feed(piece))
    assert got == words


@settings(max_examples=300)
@given(st.binary(max_size=200), st.lists(st.integers(min_value=0), max_size=8))
def test_garbage_raises_only_protocol_error(junk: bytes, cuts: list[int]) -> None:
    p = RequestParser(max_inline_len=64)
    for piece in chunked(junk, cuts):
        try:
            for cmd in p.feed(piece):
                assert cmd, "a parsed command is never empty"
                assert all(isinstance(a, bytes) for a in cmd)
        except ProtocolError as err:
            assert str(err).startswith("ERR Protocol error: ")
            return


@given(st.binary(max_size=100))
def test_prefix_of_valid_stream_then_garbage(junk: bytes) -> None:
    commands, err = RequestParser().feed_until_error(b"*2\r\n$3\r\nGET\r\n" + junk)
    # Whatever follows, the first complete command (if any) is the GET we began,
    # and trouble is reported as a ProtocolError value, never raised as anything else.
    if commands:
        assert commands[0][0] == b"GET"
        assert len(commands[0]) == 2
    assert err is None or isinstance(err, ProtocolError)


reply_st: st.SearchStrategy[Reply] = st.recursive(
    st.one_of(
        st.none(),
        st.binary(max_size=20),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.text(
            alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
            max_size=10,
        ).map(SimpleString),
        st.text(
            alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
            max_size=10,
        ).map(lambda t: ErrorReply("ERR " + t)),
    ),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


@given(reply_st)
def test_reply_encode_parse_round_trip(reply: Reply) -> None:
    data = encode_reply(reply)
    parsed = parse_reply(data)
    assert parsed == (reply, len(data))
    # Every strict prefix is "not yet complete", never a wrong answer.
    for cut in range(len(data)):
        assert parse_reply(data[:cut]) is None
