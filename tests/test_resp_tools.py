"""corosm against Redis's own tools and against Redis itself.

* ``redis-cli`` and ``redis-benchmark`` (installed by CI's ``apt-get install
  redis-tools``; skipped elsewhere when missing) run against a corosm RESP
  server on a free loopback port.
* A Hypothesis test sends random command sequences, as one pipelined write,
  to corosm and compares the replies byte for byte with a model (the command
  table, the key-value reference model :mod:`corosm.apps.kv.model` and the
  reply shaping of :mod:`corosm.frontends.resp.replies`) and, when
  ``redis-server`` is installed, with a real Redis started for the test.
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corosm.apps.kv import model
from corosm.frontends.resp.commands import Local, Session, dispatch
from corosm.frontends.resp.protocol import encode_command, encode_reply, parse_reply
from corosm.frontends.resp.replies import reply_for
from test_resp_server import ThreadedServer


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer() as s:
        yield s


@pytest.fixture
def cli(require_tool: Callable[..., str]) -> Callable[..., str]:
    """``cli(port, *args, stdin=None)``: what redis-cli prints (skips if it is not installed)."""
    redis_cli = require_tool("redis-cli", apt="redis-tools")

    def run(port: int, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [redis_cli, "-p", str(port), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout

    return run


def test_redis_cli_commands(server: ThreadedServer, cli: Callable[..., str]) -> None:
    assert cli(server.port, "PING") == "PONG\n"
    assert cli(server.port, "SET", "cli-key", "hello world") == "OK\n"
    assert cli(server.port, "GET", "cli-key") == "hello world\n"
    assert cli(server.port, "INCRBY", "cli-n", "41") == "41\n"
    assert cli(server.port, "GET", "cli-nope") == "\n"  # redis-cli prints nil as empty when piped
    assert "unknown command 'NOPE'" in cli(server.port, "NOPE", "x")
    # Many commands from stdin, as a script would send them.
    out = cli(server.port, stdin="SET s1 a\nAPPEND s1 bc\nSTRLEN s1\nMGET s1 cli-n\n")
    assert out.split("\n")[:5] == ["OK", "3", "3", "abc", "41"]


def test_redis_cli_pipe_mode(server: ThreadedServer, cli: Callable[..., str]) -> None:
    payload = "".join(f"SET pipe{i} {i}\r\n" for i in range(500))
    out = cli(server.port, "--pipe", stdin=payload)
    assert "errors: 0, replies: 500" in out
    assert cli(server.port, "GET", "pipe499") == "499\n"


@pytest.mark.parametrize("extra", [["-c", "50"], ["-P", "16"]])
def test_redis_benchmark_runs_without_errors(
    server: ThreadedServer, extra: list[str], require_tool: Callable[..., str]
) -> None:
    redis_benchmark = require_tool("redis-benchmark", apt="redis-tools")
    done = subprocess.run(
        [redis_benchmark, "-p", str(server.port), "-n", "2000", "-t", "set,get", "-q", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    text = done.stdout + done.stderr
    assert "SET:" in text
    assert "GET:" in text
    assert "ERR" not in text
    assert "WARNING" not in text  # e.g. "Could not fetch server CONFIG"


# --------------------------------------------------------------------------- differential


class RawClient:
    """Sends a pipeline in one write and reads back exactly one reply per command."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def pipeline(self, commands: list[list[bytes]]) -> list[bytes]:
        self.sock.sendall(b"".join(encode_command(*c) for c in commands))
        buf, pos, replies = b"", 0, []
        while len(replies) < len(commands):
            parsed = parse_reply(buf, pos)
            if parsed is None:
                chunk = self.sock.recv(65536)
                assert chunk, "server closed the connection"
                buf += chunk
                continue
            replies.append(buf[pos : parsed[1]])
            pos = parsed[1]
        return replies

    def close(self) -> None:
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def real_redis(find_tool: Callable[..., str | None]) -> Iterator[RawClient | None]:
    """A real redis-server on a free port when one is installed, else None."""
    redis_server = find_tool("redis-server", apt="redis-server")
    if redis_server is None:
        yield None
        return
    port = free_port()
    proc = subprocess.Popen(
        [
            redis_server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "notice",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_line(proc, b"Ready to accept connections", timeout=10)
        client = RawClient(port)
        yield client
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def wait_for_line(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> None:
    """Read the process's output until ``marker`` appears (bounded): it is listening then."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while marker not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {marker!r} from redis-server; it said: {seen[-500:]!r}"
            if sel.select(left):
                chunk = os.read(proc.stdout.fileno(), 65536)
                assert chunk, f"redis-server exited: {seen[-500:]!r}"
                seen += chunk


keys = st.sampled_from([b"a", b"b", b"n"])
values = st.sampled_from([b"1", b"-7", b"abc", b"", b"9223372036854775807", b"007"])
ints = st.sampled_from([b"1", b"-3", b"0", b"x", b"9223372036854775807", b"-9223372036854775808"])

command = st.one_of(
    st.tuples(st.just(b"SET"), keys, values).map(list),
    st.builds(
        lambda k, v, opts: [b"SET", k, v, *opts],
        keys,
        values,
        st.lists(st.sampled_from([b"NX", b"XX", b"GET", b"nx", b"BAD"]), max_size=2),
    ),
    st.tuples(st.sampled_from([b"GET", b"INCR", b"DECR", b"STRLEN"]), keys).map(list),
    st.tuples(st.sampled_from([b"INCRBY", b"DECRBY", b"APPEND"]), keys, ints).map(list),
    st.builds(lambda ks: [b"MGET", *ks], st.lists(keys, min_size=1, max_size=3)),
    st.builds(lambda ks: [b"DEL", *ks], st.lists(keys, min_size=1, max_size=3)),
    st.builds(lambda ks: [b"EXISTS", *ks], st.lists(keys, min_size=1, max_size=3)),
    st.builds(
        lambda kvs: [b"MSET", *[x for kv in kvs for x in kv]],
        st.lists(st.tuples(keys, values), min_size=1, max_size=3),
    ),
    st.sampled_from([[b"DBSIZE"], [b"PING"], [b"ECHO", b"e"], [b"GET"], [b"SELECT", b"0"]]),
    st.sampled_from([[b"FLUSHALL"], [b"MSET", b"a"], [b"INCRBY", b"a"]]),
)


def model_replies(commands: list[list[bytes]]) -> list[bytes]:
    state = model.EMPTY
    session = Session(1)
    out = []
    for c in commands:
        outcome = dispatch(c, session)
        if isinstance(outcome, Local):
            out.append(encode_reply(outcome.reply))
        else:
            output, state = model.step(state, outcome)
            out.append(encode_reply(reply_for(outcome, output)))
    return out


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(command, min_size=1, max_size=30))
def test_random_pipelines_match_model_and_redis(
    server: ThreadedServer, real_redis: RawClient | None, commands: list[list[bytes]]
) -> None:
    sequence = [[b"FLUSHALL"], *commands]
    corosm = RawClient(server.port)
    try:
        got = corosm.pipeline(sequence)
    finally:
        corosm.close()
    assert got == model_replies(sequence), commands
    if real_redis is not None:
        assert got == real_redis.pipeline(sequence), commands
