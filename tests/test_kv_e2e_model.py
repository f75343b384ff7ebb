"""The real ``corosm serve`` process against the sequential model, over HTTP.

A Hypothesis ``RuleBasedStateMachine`` sends seed requests (``Write``,
``Read``, ``DELETE /``) and REST requests (``PUT``, ``GET``, ``DELETE
/kv/{key}``) on one keep-alive connection and checks every reply against what
:func:`corosm.apps.kv.model.step` says, translated to HTTP by the rules written
out here (not by the server's own code). One server per test, not per
example: each example starts with ``DELETE /`` so it starts from empty.
Keys include characters that need seed escapes and percent-encoding.
"""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from corosm.apps.kv import model
from corosm.apps.kv.inputs import Delete, Input, Read, Reset, SetIf, Write
from corosm.apps.kv.outputs import Count, Ok, Output, SetOutcome, Value
from corosm.apps.kv.records import parse_int64
from rawclient import exchange
from serverproc import ServerProcess

KEYS = ["a", "b", 'q"uote', "back\\slash", "sp ace", "ü", "tab\tnew\nline", "%41"]
VALUES = [b"0", b"12", b"-3", b"007", b"-0", b"abc", b"", b"\x00\xff", b"9223372036854775807"]
INT64 = st.integers(-(2**63), 2**63 - 1)


def haskell_string(text: str) -> str:
    """``text`` as a Haskell string literal (written here, independent of the server)."""
    out = ['"']
    for i, c in enumerate(text):
        if c in '"\\':
            out.append("\\" + c)
        elif " " <= c <= "~":
            out.append(c)
        else:
            out.append(f"\\{ord(c)}")
            if i + 1 < len(text) and text[i + 1].isdigit():
                out.append("\\&")  # keeps the next digit out of the escape
    out.append('"')
    return "".join(out)


def haskell_int(n: int) -> str:
    return f"({n})" if n < 0 else str(n)


def seed_read_reply(value: bytes | None) -> tuple[int, bytes]:
    if value is None:
        return 200, b"Result Nothing"
    n = parse_int64(value)
    if n is None:
        return 422, b""  # body checked apart: it says why
    return 200, f"Result (Just {haskell_int(n)})".encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("model") / "data") as proc:
        yield proc


class KvOverHttp(RuleBasedStateMachine):
    """Seed and REST requests against the live server and the model side by side."""

    port = 0  # set by the test before running

    def __init__(self) -> None:
        super().__init__()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        self.state = model.EMPTY

    def teardown(self) -> None:
        self.conn.close()

    def send(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        self.conn.request(method, path, body=body)
        reply = self.conn.getresponse()
        result = reply.status, reply.read()
        # http.client drops the socket when the server says it will close.
        assert self.conn.sock is not None, f"server closed the connection after {method} {path}"
        return result

    def model(self, input: Input) -> Output:
        output, self.state = model.step(self.state, input)
        return output

    @initialize()
    def reset_to_empty(self) -> None:
        assert self.send("DELETE", "/") == (200, b"")

    @rule(key=st.sampled_from(KEYS), n=INT64, bare_negative=st.booleans())
    def seed_write(self, key: str, n: int, bare_negative: bool) -> None:
        number = str(n) if bare_negative else haskell_int(n)
        body = f"Write {haskell_string(key)} {number}".encode()
        assert isinstance(self.model(Write(key.encode(), str(n).encode())), Ok)
        assert self.send("POST", "/", body) == (200, b"Ok")

    @rule(key=st.sampled_from(KEYS))
    def seed_read(self, key: str) -> None:
        output = self.model(Read(key.encode()))
        assert isinstance(output, Value)
        status, body = self.send("POST", "/", f"Read {haskell_string(key)}".encode())
        expected_status, expected_body = seed_read_reply(output.value)
        assert status == expected_status, (key, output, body)
        if status == 422:
            assert b"not a decimal 64-bit integer" in body, body
        else:
            assert body == expected_body

    @rule()
    def seed_reset(self) -> None:
        assert isinstance(self.model(Reset()), Ok)
        assert self.send("DELETE", "/") == (200, b"")

    @rule(key=st.sampled_from(KEYS), value=st.sampled_from(VALUES) | st.binary(max_size=20))
    def rest_put(self, key: str, value: bytes) -> None:
        output = self.model(SetIf(key.encode(), value))
        assert isinstance(output, SetOutcome) and output.stored
        expected = 201 if output.old is None else 200
        assert self.send("PUT", "/kv/" + quote(key, safe=""), value) == (expected, b"")

    @rule(key=st.sampled_from(KEYS))
    def rest_get(self, key: str) -> None:
        output = self.model(Read(key.encode()))
        assert isinstance(output, Value)
        status, body = self.send("GET", "/kv/" + quote(key, safe=""))
        if output.value is None:
            assert status == 404, body
        else:
            assert (status, body) == (200, output.value)

    @rule(key=st.sampled_from(KEYS))
    def rest_delete(self, key: str) -> None:
        output = self.model(Delete(key.encode()))
        assert isinstance(output, Count)
        status, _body = self.send("DELETE", "/kv/" + quote(key, safe=""))
        assert status == (200 if output.n else 404)


def test_server_process_matches_the_model(server: ServerProcess) -> None:
    KvOverHttp.port = server.port
    run = KvOverHttp.TestCase
    run.settings = settings(
        max_examples=30,
        stateful_step_count=30,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    run().runTest()


def test_server_process_pipelined_reads_see_their_writes(server: ServerProcess) -> None:
    """Read-your-writes through the durable journal, where the fsync window is widest."""

    async def main() -> list[tuple[int, bytes]]:
        burst = b""
        for i in range(200):
            for body in (b'Write "ryw%d" %d' % (i % 5, i), b'Read "ryw%d"' % (i % 5)):
                burst += b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        replies = await exchange("127.0.0.1", server.port, burst, count=400, timeout=10)
        return [(r.status, r.body) for r in replies]

    expected: list[tuple[int, bytes]] = []
    for i in range(200):
        expected += [(200, b"Ok"), (200, b"Result (Just %d)" % i)]
    assert asyncio.run(main()) == expected
