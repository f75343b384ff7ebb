"""The clients and ``corosm kv`` against bad input: wrong replies, arguments, flags.

The project's rule: bad input never crashes anything; it gets a clear error
that says what was wrong and what was expected. Each case here was found by an
audit of the clients; the comment beside it says what happened before.

Both clients read replies with one parser (:class:`ReplyReader`), so every bad
reply is sent to both, and both must fail alike: same exception, same words.
The fake servers are :class:`RawServer` from ``test_client.py``: bare sockets
that send exactly the bytes a case needs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corosm.client import (
    AsyncClient,
    Client,
    ClientError,
    InvalidRequest,
    ProtocolError,
    ServerUnavailable,
    protocol,
)
from corosm.client.http11 import MAX_BODY, EmptyReply, ReplyReader
from corosm.client.protocol import HttpResponse
from corosm.frontends.cli import main
from test_client import FakeKV, RawServer, free_port

Respond = Callable[[socket.socket, threading.Event], None]


def answer(reply: bytes, *, then_close: bool = True) -> Respond:
    """Answer every request with ``reply``; then close, or hold the connection open."""

    def respond(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(reply)
        if then_close:
            conn.shutdown(socket.SHUT_WR)
        else:
            stop.wait(10)

    return respond


def failures(port: int, method: str, *args: Any) -> tuple[ClientError, ClientError]:
    """What ``method(*args)`` raises on the sync and on the asyncio client."""
    with Client(port=port, timeout=5) as kv, pytest.raises(ClientError) as sync_caught:
        getattr(kv, method)(*args)

    async def scenario() -> None:
        async with AsyncClient(port=port, timeout=5) as kv:
            await getattr(kv, method)(*args)

    with pytest.raises(ClientError) as async_caught:
        asyncio.run(scenario())
    return sync_caught.value, async_caught.value


def assert_refused_alike(port: int, words: list[str], method: str, *args: Any) -> None:
    """Both clients raise the same ProtocolError for ``method(*args)``, with ``words`` in it."""
    sync_error, async_error = failures(port, method, *args)
    assert type(sync_error) is type(async_error) is ProtocolError
    assert str(sync_error) == str(async_error)
    for word in words:
        assert word in str(sync_error)


def results(port: int, method: str, *args: Any) -> tuple[Any, Any]:
    """What ``method(*args)`` returns on the sync and on the asyncio client."""
    with Client(port=port, timeout=5) as kv:
        sync_result = getattr(kv, method)(*args)

    async def scenario() -> Any:
        async with AsyncClient(port=port, timeout=5) as kv:
            return await getattr(kv, method)(*args)

    return sync_result, asyncio.run(scenario())


OK = b"HTTP/1.1 200 OK\r\n"
CHUNKED = OK + b"Transfer-Encoding: chunked\r\n\r\n"

# (name, reply, words the error must contain); "before" says what the old clients did.
BAD_REPLIES = [
    # before: sync read the rest as an empty body and complained about the seed reply ''
    ("closed after the status line", OK, ["closed in the middle of", "headers"]),
    ("closed in the status line", b"HTTP/1.1 20", ["closed in the middle of", "status line"]),
    (
        "closed in the body",
        OK + b"Content-Length: 10\r\n\r\nOk",
        ["closed in the middle of the reply body", "2 of 10"],
    ),
    # before: async took 2000 for a status and raised ServerFailed
    (
        "a four-digit status",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nOk",
        ["status line", "b'HTTP/1.1 2000 OK'", "expected e.g. 'HTTP/1.1 200 OK'"],
    ),
    # before: async took 099 for an informational reply and read on
    (
        "a status below 100",
        b"HTTP/1.1 099 OK\r\nContent-Length: 2\r\n\r\nOk",
        ["status line", "099", "expected e.g. 'HTTP/1.1 200 OK'"],
    ),
    (
        "not HTTP at all",
        b"SSH-2.0-OpenSSH_9.0\r\n",
        ["status line", "SSH-2.0", "is this port a corosm HTTP server's?"],
    ),
    # before: sync skipped the line and went on
    (
        "a header without a colon",
        OK + b"NoColon\r\nContent-Length: 2\r\n\r\nOk",
        ["malformed line in the reply headers", "NoColon", "expected 'Name: value'"],
    ),
    (
        "a blank before a header's colon",
        OK + b"Content-Length : 2\r\n\r\nOk",
        ["malformed line", "expected 'Name: value'"],
    ),
    # before: a bare ValueError from both (a negative read size)
    (
        "a negative chunk size",
        CHUNKED + b"-2\r\nOk\r\n0\r\n\r\n",
        ["bad chunk size b'-2'", "expected a hexadecimal number"],
    ),
    # before: both read int("0x2", 16) and int("0_2", 16) as 2
    (
        "a chunk size with 0x",
        CHUNKED + b"0x2\r\nOk\r\n0\r\n\r\n",
        ["bad chunk size b'0x2'", "hexadecimal"],
    ),
    ("a chunk size with _", CHUNKED + b"0_2\r\nOk\r\n0\r\n\r\n", ["bad chunk size", "hexadecimal"]),
    # before: async dropped whatever followed a chunk's data
    (
        "a chunk longer than its size",
        CHUNKED + b"2\r\nOkXX\r\n0\r\n\r\n",
        ["chunk is longer than its size line", "expected CRLF"],
    ),
    (
        "a chunk size of 40 digits",
        CHUNKED + b"f" * 40 + b"\r\nOk\r\n0\r\n\r\n",
        ["exceeds the client's limit of 67108864 bytes"],
    ),
    # before: sync ignored a Content-Length it could not read and read until the close
    (
        "a Content-Length that is no number",
        OK + b"Content-Length: abc\r\n\r\nOk",
        ["bad Content-Length 'abc'", "expected a decimal number of bytes"],
    ),
    ("a negative Content-Length", OK + b"Content-Length: -1\r\n\r\nOk", ["bad Content-Length"]),
    # before: async took "²" (latin-1 byte B2) for a digit, then int() raised a bare ValueError
    (
        "a Content-Length in superscript",
        OK + b"Content-Length: \xb2\r\n\r\nOk",
        ["bad Content-Length", "decimal"],
    ),
    # before: async raised a bare ValueError from int() (over 4300 digits)
    (
        "a Content-Length of 5000 digits",
        OK + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\nOk",
        ["exceeds the client's limit"],
    ),
    # before: sync read until the close, async took the last value
    (
        "two Content-Lengths",
        OK + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nOk",
        ["conflicting Content-Length values '2, 3'", "expected one"],
    ),
    # before: both passed the coded bytes on as the body
    (
        "a Transfer-Encoding other than chunked",
        OK + b"Transfer-Encoding: gzip\r\n\r\nOk",
        ["unsupported Transfer-Encoding 'gzip'", "expected chunked"],
    ),
    (
        "a head over 64 KiB",
        OK + b"X-Padding: " + b"." * 70000 + b"\r\n\r\n",
        ["longer than 65536 bytes"],
    ),
    (
        "more than 100 headers",
        OK + b"X: y\r\n" * 101 + b"Content-Length: 2\r\n\r\nOk",
        ["more than 100 fields"],
    ),
    (
        "the connection closed after a 100 Continue",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        ["closed in the middle of", "after a 100 reply"],
    ),
]


@pytest.mark.parametrize(
    ("reply", "words"), [case[1:] for case in BAD_REPLIES], ids=[case[0] for case in BAD_REPLIES]
)
def test_a_bad_reply_is_refused_alike_by_both_clients(reply: bytes, words: list[str]) -> None:
    with RawServer(answer(reply)) as server:
        assert_refused_alike(server.port, words, "get", "k")


def test_a_server_that_is_not_http_is_named_at_once_not_at_the_timeout() -> None:
    # A RESP port answers an HTTP request with an error line and stays open; the
    # reply is refused on its first line, not after waiting `timeout` for a head.
    respond = answer(b"-ERR unknown command 'POST'\r\n", then_close=False)
    with RawServer(respond) as server:
        with Client(port=server.port, timeout=60) as kv, pytest.raises(ProtocolError) as caught:
            kv.read("x")
        assert "got b\"-ERR unknown command 'POST'\"" in str(caught.value)

        async def scenario() -> None:
            async with AsyncClient(port=server.port, timeout=60) as kv:
                await kv.read("x")

        with pytest.raises(ProtocolError, match=r"HTTP/1\.x status line"):
            asyncio.run(scenario())


def reply_with(body: bytes) -> bytes:
    return OK + b"Content-Length: %d\r\n\r\n" % len(body) + body


@pytest.mark.parametrize(
    ("body", "words"),
    [
        # before: int() of 5000 digits: a bare ValueError from both clients
        (b"Result (Just " + b"9" * 5000 + b")", ["outside the 64-bit range", "999..."]),
        # before: both returned 99999999999999999999 as if the server could hold it
        (b"Result (Just 99999999999999999999)", ["99999999999999999999", "64-bit range"]),
        (b"Result (Just (-9223372036854775809))", ["-9223372036854775809", "64-bit range"]),
    ],
)
def test_a_seed_value_outside_64_bits_is_refused(body: bytes, words: list[str]) -> None:
    with RawServer(answer(reply_with(body))) as server:
        assert_refused_alike(server.port, words, "read", "x")


def test_json_nested_too_deeply_is_refused() -> None:
    # before: RecursionError from json.loads, through both clients
    with RawServer(answer(reply_with(b"[" * 100_000))) as server:
        sync_error, async_error = failures(server.port, "submit", {"type": "Get"})
    assert type(sync_error) is type(async_error) is ProtocolError
    assert "the reply is not JSON this client can read: nested too deeply" in str(sync_error)


# Replies that are unusual but valid: the parser both clients share must read them.
GOOD_REPLIES = [
    ("chunk extensions and trailers", CHUNKED + b"2;x=1\r\nOk\r\n0\r\nX-Trailer: t\r\n\r\n"),
    ("bare LF line ends", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nOk"),
    ("a 100 Continue first", b"HTTP/1.1 100 Continue\r\n\r\n" + reply_with(b"Ok")),
    ("a repeated Content-Length", OK + b"Content-Length: 2, 2\r\n\r\nOk"),
    ("no blank after the colon", OK + b"content-length:2  \r\n\r\nOk"),
    ("no reason phrase", b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nOk"),
    ("HTTP/1.0 framed by the close", b"HTTP/1.0 200 OK\r\n\r\nOk"),
]


@pytest.mark.parametrize(
    "reply", [case[1] for case in GOOD_REPLIES], ids=[case[0] for case in GOOD_REPLIES]
)
def test_unusual_but_valid_replies_are_read_by_both_clients(reply: bytes) -> None:
    with RawServer(answer(reply)) as server:
        assert results(server.port, "get", "k") == (b"Ok", b"Ok")


def test_the_sync_client_drops_a_connection_that_sent_more_than_asked() -> None:
    # A reply nobody asked for would be taken for the next call's: the stream is out
    # of step, so the next call goes out on a new connection.
    calls = []

    def respond(conn: socket.socket, stop: threading.Event) -> None:
        calls.append(1)
        if len(calls) == 1:
            conn.sendall(reply_with(b"first") + reply_with(b"unasked"))
        else:
            conn.sendall(reply_with(b"later"))

    with RawServer(respond) as server, Client(port=server.port, timeout=5) as kv:
        assert kv.get("k") == b"first"
        assert kv.get("k") == b"later"
        assert server.connections == 2


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_huge_content_length_is_refused_by_both(kind: str) -> None:
    reply = OK + b"Content-Length: %d\r\n\r\nOk" % (MAX_BODY + 1)
    with RawServer(answer(reply)) as server:
        errors = failures(server.port, "get", "k")
    error = errors[0] if kind == "sync" else errors[1]
    assert str(error) == f"the reply body exceeds the client's limit of {MAX_BODY} bytes"


# --- the parser alone -----------------------------------------------------------------

# (reply, its body)
VALID = [
    (reply_with(b"a"), b"a"),
    (CHUNKED + b"1\r\nb\r\n0\r\n\r\n", b"b"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
]


def drain(reader: ReplyReader) -> list[bytes]:
    bodies = []
    while (reply := reader.next_reply()) is not None:
        bodies.append(reply[0].body)
    return bodies


@given(st.lists(st.sampled_from(VALID), min_size=1, max_size=4), st.data())
def test_replies_come_out_whole_however_the_bytes_are_cut(
    replies: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    stream = b"".join(reply for reply, _ in replies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = ReplyReader()
    bodies: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        if start < end:  # feeding b"" means the end of the stream
            reader.feed(stream[start:end])
            bodies += drain(reader)
    assert bodies == [body for _, body in replies]
    reader.feed(b"")
    with pytest.raises(EmptyReply):
        reader.next_reply()


FRAGMENTS = [
    *(b"HTTP/1.1 ", b"HTTP/1.0 ", b"200", b"100", b"204", b" OK", b"\r\n", b"\n", b"\r"),
    *(b"Content-Length: ", b"Transfer-Encoding: chunked", b"Connection: close"),
    *(b"0", b"2", b"-1", b"ff", b";x", b":", b" ", b"Ok", b"\xff", b"x" * 300),
]


@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40), st.integers(1, 50))
def test_any_bytes_give_replies_or_a_protocol_error(fragments: list[bytes], step: int) -> None:
    # Whatever comes, the parser answers with replies, EmptyReply or ProtocolError,
    # and at the end of the stream it always comes to one of them.
    stream = b"".join(fragments)
    reader = ReplyReader()
    try:
        for start in range(0, len(stream), step):
            reader.feed(stream[start : start + step])
            drain(reader)
        reader.feed(b"")
        for _ in range(len(stream) + 1):  # each reply takes at least one byte
            if reader.next_reply() is None:
                pytest.fail("the parser asked for more bytes after the end of the stream")
    except (ProtocolError, EmptyReply):
        pass


# --- arguments --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "words"),
    [
        # before: sync raised http.client.InvalidURL, async ServerUnreachable with a
        # line break inside its message
        ("a b", "contains spaces or control characters"),
        ("a\r\nb", "contains spaces or control characters"),
        ("\x00", "contains spaces or control characters"),  # before: bare ValueError (async)
        ("x" * 64, "is not a valid host name (label too long)"),  # before: bare UnicodeError
        ("a..b", "is not a valid host name"),
        ("x" * 300, "'... is not a valid host name"),  # shown cut short
        ("http://127.0.0.1", "looks like a URL"),  # before: "unknown host" after a DNS query
        ("127.0.0.1:8080", "includes a port: pass host='127.0.0.1' and port=8080 apart"),
        ("[::1]", "write an IPv6 address without brackets"),
        ("1:2:3", "is not an IPv6 address"),
    ],
)
def test_a_bad_host_is_refused_before_any_io(host: str, words: str) -> None:
    for client in (Client, AsyncClient):
        with pytest.raises(InvalidRequest) as caught:
            client(host, free_port())
        assert words in str(caught.value)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize("host", ["localhost", "::1", "fe80::1%lo", "é.example", "my_host."])
def test_hosts_the_resolver_takes_are_accepted(host: str) -> None:
    Client(host, 8080)
    AsyncClient(host, 8080)


def test_a_text_key_that_is_not_utf8_is_refused() -> None:
    # before: a bare UnicodeEncodeError (a lone surrogate, as from undecodable argv)
    with pytest.raises(InvalidRequest, match=r"cannot be encoded as UTF-8.*pass its bytes"):
        Client(port=free_port()).get("\ud800")


@pytest.mark.parametrize("shape", ["circular", "deep"])
def test_an_input_json_cannot_hold_is_refused(shape: str) -> None:
    # before: RecursionError
    value: list[Any] = []
    if shape == "circular":
        value.append(value)
    else:
        for _ in range(100_000):
            value = [value]
    with pytest.raises(InvalidRequest, match="nested too deeply or contains itself"):
        Client(port=free_port()).submit(value)


def test_an_unexpected_status_says_which_were_expected() -> None:
    # before: "... (expected (200,))"
    call = protocol.read_call("x")
    with pytest.raises(
        ProtocolError, match=r"^unexpected status 302 for this request: expected 200$"
    ):
        call.interpret(HttpResponse(302, (), b""))
    with pytest.raises(ProtocolError, match=r"expected 200 or 201 or 204$"):
        protocol.put_call("k", b"v").interpret(HttpResponse(302, (), b""))


@pytest.mark.parametrize("value", ["1e999", "inf", "nan", "-1"])
def test_a_retry_after_that_is_no_finite_wait_is_dropped(value: str) -> None:
    # before: "1e999" and "inf" gave retry_after=inf, a wait that never ends
    busy = HttpResponse(503, (("retry-after", value),), b"busy")
    with pytest.raises(ServerUnavailable) as caught:
        protocol.raise_for_error(busy)
    assert caught.value.retry_after is None


# --- corosm kv ------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # before: argparse's "invalid float value: 'abc'"
        (["--timeout", "abc"], "argument --timeout: expected a number of seconds, got 'abc'"),
        # before: a traceback ending in http.client.InvalidURL
        (["--host", "a b"], "corosm: host 'a b' contains spaces or control characters"),
        # before: a traceback ending in UnicodeError
        (["--host", "x" * 64], "is not a valid host name (label too long)"),
        # before: exit 3, "cannot connect to 127.0.0.1:8080:8080: unknown host"
        (["--host", "127.0.0.1:8080"], "includes a port"),
    ],
)
def test_kv_bad_flags_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "kv", "read", "x", *argv)
    assert (code, out) == (2, "")
    assert message in err
    assert "Traceback" not in err


def test_kv_against_a_server_that_is_not_http_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    with RawServer(answer(b"SSH-2.0-OpenSSH_9.0\r\n")) as server:
        code, out, err = run(capsys, "kv", "read", "x", "--port", str(server.port))
    assert (code, out) == (4, "")
    assert err.startswith("corosm: the reply does not start with an HTTP/1.x status line")
    assert "expected e.g. 'HTTP/1.1 200 OK'" in err
    assert err.count("\n") == 1


def test_kv_output_into_a_closed_pipe_ends_quietly() -> None:
    # before: a BrokenPipeError traceback and exit 1 (`corosm kv metrics | head -1`)
    with FakeKV() as fake:
        reader, writer = os.pipe()
        os.close(reader)  # nobody will read what the command prints
        try:
            result = subprocess.run(
                [sys.executable, "-m", "corosm", "kv", "metrics", "--port", str(fake.port)],
                stdout=writer,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            os.close(writer)
    assert (result.returncode, result.stderr) == (141, "")
