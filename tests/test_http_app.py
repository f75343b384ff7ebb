"""The key-value HTTP app over real sockets: the seed protocol byte for byte, REST,
health, metrics, and the failure paths (with a fake runtime that the test steers)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from corosm.apps.kv import KVMachine
from corosm.apps.kv.inputs import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    Delete,
    Input,
    Read,
    Reset,
    SetIf,
    Write,
)
from corosm.apps.kv.outputs import OK, Count, Output, SetOutcome, Value
from corosm.errors import HandlerError, JournalError, Overloaded, Stopped
from corosm.frontends.http import HttpServer, Limits, start_http_server
from corosm.frontends.http.app import KvHttpApp
from corosm.runtime import Runtime, run
from rawclient import RawResponse, exchange, read_response

HOST = "127.0.0.1"

Callback = Callable[[Any, BaseException | None], None]


class FakeRuntime:
    """A dict-backed stand-in for Runtime: hold replies, overload, or fail on demand.

    Like the real runtime, it calls back on a later loop pass, never from
    inside ``submit_callback``.
    """

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.hold = False
        self.held: list[tuple[Callback, Input]] = []
        self.now: list[bool] = []  # the now= flag of each submit_callback
        self.overloaded = False
        self.fail_with: Exception | None = None
        self.unhealthy: str | None = None
        self.machine = KVMachine()  # the app asks it how inputs order (Machine.order)

    def submit_callback(self, input: Input, callback: Callback, /, *, now: bool = False) -> None:
        self.now.append(now)
        if self.overloaded:
            raise Overloaded("input queue full (1 waiting)")
        if self.hold:
            self.held.append((callback, input))
        else:
            asyncio.get_running_loop().call_soon(self.complete, callback, input)

    def complete(self, callback: Callback, input: Input) -> None:
        if self.fail_with is not None:
            callback(None, self.fail_with)
            return
        match input:
            case Write(key, value):
                self.data[key] = value
                callback(OK, None)
            case SetIf(key, value):
                old = self.data.get(key)
                self.data[key] = value
                callback(SetOutcome(True, old), None)
            case Read(key):
                callback(Value(self.data.get(key)), None)
            case Delete(key):
                callback(Count(1 if self.data.pop(key, None) is not None else 0), None)
            case Reset():
                self.data.clear()
                callback(OK, None)
            case _:
                raise AssertionError(f"unexpected input {input!r}")

    def release(self) -> None:
        held, self.held = self.held, []
        for callback, input in held:
            self.complete(callback, input)

    def stats(self) -> dict[str, float]:
        return {
            "suspended": 3,
            "queue_depth": 7,
            "journal_batches": 4,
            "journal_records": 10,
            "journal_fsyncs": 4,
            "journal_fsync_seconds_sum": 0.25,
            "journal_fsync_p99_seconds": 0.125,
            "something_new": 1.5,
        }

    def health(self) -> str | None:
        return self.unhealthy


Body = Callable[[HttpServer, Any], Awaitable[None]]


def serve_real(body: Body, **app_args: Any) -> None:
    """Run ``body(server, runtime)`` against the real runtime and kv machine."""

    async def main() -> None:
        runtime: Runtime[Any, Input, Output] = Runtime(KVMachine())
        await runtime.start()
        server = await start_http_server(KvHttpApp(runtime, **app_args), HOST, 0)
        try:
            await body(server, runtime)
        finally:
            await server.shutdown(grace=2.0)
            await runtime.stop()

    run(main())


def serve_fake(body: Body, limits: Limits | None = None) -> None:
    async def main() -> None:
        runtime = FakeRuntime()
        server = await start_http_server(KvHttpApp(runtime), HOST, 0, limits=limits)
        try:
            await body(server, runtime)
        finally:
            await server.shutdown(grace=2.0)

    run(main())


def req(method: bytes, path: bytes, body: bytes | None = None) -> bytes:
    head = b"%s %s HTTP/1.1\r\nHost: t\r\n" % (method, path)
    if body is None:
        return head + b"\r\n"
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def call(
    server: HttpServer, method: bytes, path: bytes, body: bytes | None = None
) -> RawResponse:
    (resp,) = await exchange(HOST, server.port, req(method, path, body))
    return resp


async def seed(server: HttpServer, body: bytes) -> tuple[int, bytes]:
    resp = await call(server, b"POST", b"/", body)
    return resp.status, resp.body


# -- the seed protocol -------------------------------------------------------------


def test_seed_write_and_read_byte_for_byte() -> None:
    async def body(server: HttpServer, rt: Any) -> None:
        assert await seed(server, b'Read "x"') == (200, b"Result Nothing")
        assert await seed(server, b'Write "x" 1') == (200, b"Ok")
        assert await seed(server, b'Read "x"') == (200, b"Result (Just 1)")
        assert await seed(server, b'Write "x" -5') == (200, b"Ok")
        assert await seed(server, b'Read "x"') == (200, b"Result (Just (-5))")
        assert await seed(server, b'  Write "x" (-9223372036854775808)\n') == (200, b"Ok")
        assert await seed(server, b'Read "x"') == (200, b"Result (Just (-9223372036854775808))")
        assert await seed(server, b'Write "y" 9223372036854775807') == (200, b"Ok")
        assert await seed(server, b'Read "y"') == (200, b"Result (Just 9223372036854775807)")
        # Escapes: the key "a\"b\n\1234" read back through an escaped spelling of itself.
        assert await seed(server, b'Write "a\\"b\\n\\1234" 7') == (200, b"Ok")
        assert await seed(server, b'Read "a\\"b\\LF\\x4d2"') == (200, b"Result (Just 7)")
        resp = await call(server, b"POST", b"/any/path", b'Read "a\\"b\\n\\1234"')
        assert (resp.status, resp.body) == (200, b"Result (Just 7)")
        assert resp.header(b"content-type") == b"text/plain; charset=utf-8"
        # The REST view of a seed write: the key as UTF-8 bytes, the value as decimal.
        rest = await call(server, b"GET", b"/kv/a%22b%0A%D3%92")
        assert (rest.status, rest.body) == (200, b"7")

    serve_real(body)


def test_seed_reset_and_unsupported_method() -> None:
    async def body(server: HttpServer, rt: Any) -> None:
        assert await seed(server, b'Write "x" 1') == (200, b"Ok")
        resp = await call(server, b"DELETE", b"/")
        assert (resp.status, resp.body, resp.header(b"content-type")) == (200, b"", None)
        assert await seed(server, b'Read "x"') == (200, b"Result Nothing")
        for method in (b"GET", b"PUT", b"PATCH"):
            resp = await call(server, method, b"/")
            assert (resp.status, resp.body) == (400, b"Unsupported method")  # no newline
        # Like the seed, the path does not matter outside the REST, health and metrics
        # routes, except for DELETE: only "DELETE /" resets (tests/test_http_hardening.py).
        assert (await call(server, b"PATCH", b"/other")).status == 400
        assert await seed(server, b'Write "y" 2') == (200, b"Ok")
        assert (await call(server, b"DELETE", b"/anything")).status == 404
        assert await seed(server, b'Read "y"') == (200, b"Result (Just 2)")

    serve_real(body)


@pytest.mark.parametrize(
    ("request_body", "fragment"),
    [
        (b"", b"ends too early"),
        (b"Hello", b"expected 'Write \"key\" <int>' or 'Read \"key\"'"),
        (b'Write "x"', b"expected the value"),
        (b'Write "x" 99999999999999999999', b"out of range"),
        (b'Write "x" -9223372036854775809', b"out of range"),
        (b'Write "x" 1.5', b"not an integer"),
        (b'Read "x', b"no closing double quote"),
        (b'Read "x" extra', b"unexpected text after the request"),
        (b'Read "\\q"', b"bad escape"),
        (b"Read x", b"expected the key"),
        (b'Write "x" \xff', b"not UTF-8"),
    ],
)
def test_seed_bad_bodies_get_400_with_what_was_expected(
    request_body: bytes, fragment: bytes
) -> None:
    async def body(server: HttpServer, rt: Any) -> None:
        status, text = await seed(server, request_body)
        assert status == 400
        assert fragment in text, text
        assert text.endswith(b"\n")
        assert await seed(server, b'Read "x"') == (200, b"Result Nothing")  # nothing stored

    serve_real(body)


def test_seed_read_of_a_non_integer_value_is_422() -> None:
    async def body(server: HttpServer, rt: Any) -> None:
        assert (await call(server, b"PUT", b"/kv/x", b"hello")).status == 201
        status, text = await seed(server, b'Read "x"')
        assert status == 422
        assert b"not a decimal 64-bit integer" in text and b"GET /kv/{key}" in text

    serve_real(body)


# -- REST ------------------------------------------------------------------------


def test_rest_put_get_delete() -> None:
    async def body(server: HttpServer, rt: Any) -> None:
        assert (await call(server, b"GET", b"/kv/k")).status == 404
        created = await call(server, b"PUT", b"/kv/k", b"\x00bin\xff")
        assert created.status == 201
        replaced = await call(server, b"PUT", b"/kv/k", b"v2\x00")
        assert replaced.status == 200
        got = await call(server, b"GET", b"/kv/k?ignored=1")
        assert (got.status, got.body) == (200, b"v2\x00")
        assert got.header(b"content-type") == b"application/octet-stream"
        assert (await call(server, b"DELETE", b"/kv/k")).status == 200
        assert (await call(server, b"DELETE", b"/kv/k")).status == 404
        assert (await call(server, b"GET", b"/kv/k")).status == 404
        # Percent-decoding: "a b/c" and raw bytes.
        assert (await call(server, b"PUT", b"/kv/a%20b%2Fc%FF", b"1")).status == 201
        assert (await call(server, b"GET", b"/kv/a%20b%2fc%ff")).body == b"1"
        empty = await call(server, b"PUT", b"/kv/e", b"")
        assert empty.status == 201
        assert (await call(server, b"GET", b"/kv/e")).body == b""

    serve_real(body)


def test_rest_limits_and_bad_requests() -> None:
    async def body(server: HttpServer, rt: Any) -> None:
        too_long = MAX_KEY_BYTES + 1
        long_key = await call(server, b"GET", b"/kv/" + b"k" * too_long)
        assert long_key.status == 414
        assert long_key.body == b"key too long: %d bytes, at most %d allowed\n" % (
            too_long,
            MAX_KEY_BYTES,
        )
        # The limit counts decoded bytes: 3 URL bytes per key byte here.
        assert (await call(server, b"GET", b"/kv/" + b"%41" * too_long)).status == 414
        assert (await call(server, b"GET", b"/kv/" + b"%41" * MAX_KEY_BYTES)).status == 404
        assert (await call(server, b"PUT", b"/kv/" + b"k" * too_long, b"v")).status == 414
        assert (await call(server, b"DELETE", b"/kv/" + b"k" * too_long)).status == 414
        big = await call(server, b"PUT", b"/kv/k", b"v" * (MAX_VALUE_BYTES + 1))
        assert (big.status, big.body) == (
            413,
            b"value too large: %d bytes, at most %d allowed\n"
            % (MAX_VALUE_BYTES + 1, MAX_VALUE_BYTES),
        )
        assert (await call(server, b"GET", b"/kv/k")).status == 404  # nothing stored
        assert (await call(server, b"PUT", b"/kv/k", b"v" * MAX_VALUE_BYTES)).status == 201
        empty = await call(server, b"GET", b"/kv/")
        assert (empty.status, empty.body) == (
            400,
            b"empty key: a key must have 1 to %d bytes; expected /kv/{key}\n" % MAX_KEY_BYTES,
        )
        assert (await call(server, b"PUT", b"/kv/", b"v")).status == 400
        post = await call(server, b"POST", b"/kv/k", b"x")
        assert post.status == 405 and post.header(b"allow") == b"GET, HEAD, PUT, DELETE"

    serve_real(body)


# -- health and metrics --------------------------------------------------------------


def test_health_ok_then_failing() -> None:
    async def body(server: HttpServer, rt: FakeRuntime) -> None:
        ok = await call(server, b"GET", b"/health")
        assert (ok.status, ok.body) == (200, b"ok\n")
        rt.unhealthy = "journal failed: [Errno 28] No space left on device"
        bad = await call(server, b"GET", b"/health")
        assert (bad.status, bad.body) == (
            503,
            b"journal failed: [Errno 28] No space left on device\n",
        )
        assert (await call(server, b"POST", b"/health", b"")).status == 405

    serve_fake(body)


def test_metrics_page_counts_requests_and_exports_runtime_stats() -> None:
    async def body(server: HttpServer, rt: FakeRuntime) -> None:
        await seed(server, b'Write "x" 1')
        await seed(server, b'Write "x" 2')
        await seed(server, b"nonsense")
        await call(server, b"GET", b"/kv/missing")
        page = await call(server, b"GET", b"/metrics")
        assert page.status == 200
        assert page.header(b"content-type") == b"text/plain; version=0.0.4; charset=utf-8"
        lines = set(page.body.decode().splitlines())
        expected = {
            'corosm_http_requests_total{kind="seed_write",status="200"} 2',
            'corosm_http_requests_total{kind="seed_invalid",status="400"} 1',
            'corosm_http_requests_total{kind="kv_get",status="404"} 1',
            "# TYPE corosm_http_requests_total counter",
            "corosm_handlers_suspended 3",
            "corosm_input_queue_depth 7",
            "# TYPE corosm_journal_batch_records summary",
            "corosm_journal_batch_records_sum 10",
            "corosm_journal_batch_records_count 4",
            "corosm_journal_fsync_seconds_sum 0.25",
            "corosm_journal_fsync_seconds_count 4",
            'corosm_journal_fsync_seconds{quantile="0.99"} 0.125',
            "corosm_runtime_something_new 1.5",
            "corosm_http_connections_total 5",
        }
        assert expected <= lines, expected - lines
        for line in lines:  # every sample line is "name{labels} number"
            if line and not line.startswith("#"):
                float(line.rsplit(" ", 1)[1])

    serve_fake(body)


# -- backpressure and failures ---------------------------------------------------------


def test_overload_answers_503_with_retry_after() -> None:
    async def body(server: HttpServer, rt: FakeRuntime) -> None:
        rt.overloaded = True
        resp = await call(server, b"POST", b"/", b'Write "x" 1')
        assert resp.status == 503 and resp.header(b"retry-after") == b"1"
        assert b"overloaded" in resp.body
        assert rt.data == {}
        rt.overloaded = False
        assert await seed(server, b'Write "x" 1') == (200, b"Ok")

    serve_fake(body)


def test_real_runtime_overload_answers_503_and_keeps_order() -> None:
    async def main() -> None:
        runtime: Runtime[Any, Input, Output] = Runtime(KVMachine(), max_queue=2)
        await runtime.start()
        server = await start_http_server(KvHttpApp(runtime), HOST, 0)
        reader, writer = await asyncio.open_connection(HOST, server.port)
        try:
            # 20 pipelined writes arrive in one read: the inbox takes 2, the rest are refused.
            writer.write(b"".join(req(b"POST", b"/", b'Write "k%d" 1' % i) for i in range(20)))
            replies = [await read_response(reader) for _ in range(20)]
            statuses = [r.status for r in replies]
            assert set(statuses) == {200, 503}
            assert statuses[:2] == [200, 200]
            for i, r in enumerate(replies):
                read_back = await call(server, b"POST", b"/", b'Read "k%d"' % i)
                stored = read_back.body == b"Result (Just 1)"
                assert stored == (r.status == 200)
                if r.status == 503:
                    assert r.header(b"retry-after") == b"1"
        finally:
            writer.close()
            await server.shutdown(grace=2.0)
            await runtime.stop()

    run(main())


@pytest.mark.parametrize(
    ("error", "status", "fragment"),
    [
        (
            JournalError("fsync failed: EIO"),
            503,
            b"journal failed, nothing was stored: fsync failed",
        ),
        (HandlerError("boom"), 500, b"the request failed in the machine: boom"),
        (Stopped("runtime stopped"), 503, b"server is stopping; retry later"),
        (RuntimeError("bug"), 500, b"internal error"),
    ],
)
def test_failed_inputs_map_to_clear_errors(error: Exception, status: int, fragment: bytes) -> None:
    async def body(server: HttpServer, rt: FakeRuntime) -> None:
        rt.fail_with = error
        resp = await call(server, b"PUT", b"/kv/x", b"1")
        assert resp.status == status and fragment in resp.body
        rt.fail_with = None
        assert (await call(server, b"GET", b"/kv/x")).status == 404

    serve_fake(body)


def test_slow_machine_reply_times_out_with_503_and_late_reply_is_dropped() -> None:
    async def body(server: HttpServer, rt: FakeRuntime) -> None:
        rt.hold = True
        reader, writer = await asyncio.open_connection(HOST, server.port)
        try:
            writer.write(req(b"POST", b"/", b'Write "x" 1'))
            resp = await read_response(reader)
            assert resp.status == 503 and b"no reply within 0.2 s" in resp.body
            rt.hold = False
            rt.release()  # the machine finishes after all: the reply is dropped
            await asyncio.sleep(0)
            assert server.stats.late_replies_dropped == 1
            writer.write(req(b"POST", b"/", b'Read "x"'))
            assert (await read_response(reader)).body == b"Result (Just 1)"
        finally:
            writer.close()

    serve_fake(body, Limits(response_timeout=0.2))


def test_pipelined_mixed_requests_answer_in_order() -> None:
    async def body(server: HttpServer, rt: FakeRuntime) -> None:
        rt.hold = True
        reader, writer = await asyncio.open_connection(HOST, server.port)
        try:
            burst = []
            for i in range(100):
                if i % 4 == 0:
                    burst.append(req(b"POST", b"/", b"Read %d" % i))  # answered at once
                elif i % 4 == 1:
                    burst.append(req(b"GET", b"/health"))  # answered at once
                else:
                    burst.append(req(b"PUT", b"/kv/k%d" % i, b"v%d" % i))  # held
            writer.write(b"".join(burst))
            while len(rt.held) < 50:
                await asyncio.sleep(0)
            rt.release()
            replies = [await read_response(reader) for _ in range(100)]
            expected = [400 if i % 4 == 0 else 200 if i % 4 == 1 else 201 for i in range(100)]
            assert [r.status for r in replies] == expected
            assert all(b"found '%d'" % i in replies[i].body for i in range(0, 100, 4))
        finally:
            writer.close()

    serve_fake(body)
