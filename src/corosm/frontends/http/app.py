"""The key-value store over HTTP: the seed's protocol, a REST API, health and metrics.

Theory of operation
-------------------
:class:`KvHttpApp` is the handler the HTTP layer calls once per request. It
routes on the path, turns the request into a machine input, submits it with
``runtime.submit_callback`` (no task and no future per request) and returns a
:class:`~corosm.frontends.http.messages.Later` that is also the runtime's
callback: when the runtime dispatches the input's output (or failure), the
callback maps it to a Response and hands it straight to the connection,
inside the same loop pass. Reads are submitted with ``now=True``: the runtime
steps them inside ``data_received`` when it can, so a read under write load
is answered without waiting for the next turn (which delivers a whole group
commit's completions first). Requests that need no machine (bad input, health,
metrics) get a ready Response at once.

Routes (``{key}`` is percent-decoded to bytes)::

    GET    /health        200 "ok", or 503 with the reason (e.g. the journal failed)
    GET    /metrics       Prometheus text format
    GET    /kv/{key}      200 raw value | 404
    PUT    /kv/{key}      raw body: 201 created | 200 replaced
    DELETE /kv/{key}      200 | 404
    POST   any other path the seed protocol: Write "x" 1 -> Ok, Read "x" -> Result (Just 1)
    DELETE any other path reset the store: 200, empty body
    other methods there   400 "Unsupported method"

Errors: a seed body that does not parse (or an int outside int64) -> 400 with
the parser's message; a seed Read of a value that is not a decimal int64 ->
422 (the request is well-formed but the stored value cannot be said in the
seed's syntax); a key over ``max_key_bytes`` -> 414; a value over
``max_value_bytes`` -> 413; a full input queue -> 503 with ``Retry-After: 1``;
a journal failure -> 503; a handler failure -> 500. Every error body is one
line of text that says what was wrong and what was expected.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from corosm.apps.kv.inputs import Delete, Input, Read, Reset, SetIf, Write
from corosm.apps.kv.outputs import Count, Ok, Output, SetOutcome, Value
from corosm.apps.kv.seed import (
    SeedValueError,
    output_to_seed_reply,
    seed_request_to_input,
)
from corosm.errors import (
    CorosmError,
    HandlerError,
    JournalError,
    Overloaded,
    Stopped,
    UsageError,
)
from corosm.frontends.http.messages import (
    Handler,
    HttpStats,
    Later,
    Request,
    Response,
    error_response,
)
from corosm.frontends.http.metrics import render_metrics

log = logging.getLogger("corosm.http")

OCTET_STREAM = b"application/octet-stream"
PROMETHEUS_TEXT = b"text/plain; version=0.0.4; charset=utf-8"
RETRY_AFTER = ((b"Retry-After", b"1"),)

_OK = Response(200, b"Ok")
_EMPTY_200 = Response(200, b"", content_type=None)
_UNSUPPORTED = error_response(400, "Unsupported method")
_NOT_FOUND = error_response(404, "key not found")


class KvRuntime(Protocol):
    """What the app needs from :class:`corosm.runtime.Runtime` (a fake can stand in)."""

    def submit_callback(
        self,
        input: Input,
        callback: Callable[[Any, BaseException | None], None],
        /,
        *,
        now: bool = False,
    ) -> None: ...

    def stats(self) -> dict[str, float]: ...

    def health(self) -> str | None: ...


Finish = Callable[[Any, "BaseException | None"], Response]
Submit = Callable[[str, Input], "Response | Later"]

#: Inputs whose answer is decided when their journal record is applied, in log
#: order: they may go to the machine while earlier writes of the same
#: connection still wait for their fsync. Every other input answers from the
#: applied state at once (Read; Delete of an absent key), so on a connection
#: with a write in flight it waits, and so does everything after it.
LOG_ORDERED: tuple[type[Input], ...] = (Write, Reset, SetIf)
#: Inputs that change the store: what a read on the same connection waits for.
WRITES: tuple[type[Input], ...] = (Write, Reset, SetIf, Delete)


class KvHttpApp:
    """The key-value routes; call it with a Request (see the module docs)."""

    def __init__(
        self,
        runtime: KvRuntime,
        *,
        max_key_bytes: int = 1024,
        max_value_bytes: int = 1024 * 1024,
        http_stats: HttpStats | None = None,
    ) -> None:
        if max_key_bytes < 1 or max_value_bytes < 0:
            raise UsageError("max_key_bytes must be >= 1 and max_value_bytes >= 0")
        self.runtime = runtime
        self.max_key_bytes = max_key_bytes
        self.max_value_bytes = max_value_bytes
        self.http_stats = http_stats or HttpStats()
        # (kind, status) -> count; read by the metrics page.
        self.requests: dict[tuple[str, int], int] = {}
        # One finish function per kind, made once, so a request allocates none.
        self._finish: dict[str, Finish] = {
            "seed_write": self._finisher("seed_write", self._seed_reply),
            "seed_read": self._finisher("seed_read", self._seed_reply),
            "seed_reset": self._finisher("seed_reset", lambda out: _EMPTY_200),
            "kv_get": self._finisher("kv_get", _get_reply),
            "kv_put": self._finisher("kv_put", _put_reply),
            "kv_delete": self._finisher("kv_delete", _delete_reply),
        }

    # -- routing ------------------------------------------------------------

    def __call__(self, request: Request) -> Response | Later:
        """Answer ``request`` with no per-connection ordering (see :meth:`connection_handler`)."""
        return self._route(request, self._submit)

    def connection_handler(self) -> Handler:
        """A handler for one connection: its reads wait for its own earlier writes.

        The HTTP server calls this once per connection (see
        :class:`~corosm.frontends.http.messages.PerConnection`).
        """
        return _Session(self)

    def _route(self, request: Request, submit: Submit) -> Response | Later:
        target = request.target
        query = target.find(b"?")
        path = target if query < 0 else target[:query]
        method = request.method
        if path.startswith(b"/kv/"):
            return self._rest(method, path[4:], request.body, submit)
        if path == b"/health":
            return self._only_get(method, "health") or self._health()
        if path == b"/metrics":
            return self._only_get(method, "metrics") or self._metrics()
        if method == b"POST":
            return self._seed(request.body, submit)
        if method == b"DELETE":
            return submit("seed_reset", Reset())
        return self._count("seed_other", _UNSUPPORTED)

    def _seed(self, body: bytes, submit: Submit) -> Response | Later:
        try:
            input = seed_request_to_input(body)
        except UsageError as exc:
            return self._count("seed_invalid", error_response(400, str(exc)))
        return submit("seed_read" if type(input) is Read else "seed_write", input)

    def _rest(self, method: bytes, raw_key: bytes, body: bytes, submit: Submit) -> Response | Later:
        kind = _REST_KINDS.get(method)
        if kind is None:
            resp = error_response(
                405,
                f"method {method.decode('latin-1')} not allowed on /kv/{{key}}; "
                "expected GET, PUT or DELETE",
            )
            return self._count("kv_other", _with_allow(resp, b"GET, HEAD, PUT, DELETE"))
        # The encoded form is at most 3 bytes per key byte: reject early and cheaply.
        if len(raw_key) > 3 * self.max_key_bytes:
            return self._count(kind, self._key_too_long(len(raw_key)))
        key = unquote_to_bytes(raw_key) if b"%" in raw_key else raw_key
        if not key:
            return self._count(kind, error_response(400, "empty key; expected /kv/{key}"))
        if len(key) > self.max_key_bytes:
            return self._count(kind, self._key_too_long(len(key)))
        if kind == "kv_get":
            return submit(kind, Read(key))
        if kind == "kv_delete":
            return submit(kind, Delete(key))
        if len(body) > self.max_value_bytes:
            return self._count(
                kind,
                error_response(
                    413,
                    f"value too large: {len(body)} bytes, at most {self.max_value_bytes} allowed",
                ),
            )
        return submit(kind, SetIf(key, body))

    def _key_too_long(self, size: int) -> Response:
        return error_response(
            414, f"key too long: {size} bytes, at most {self.max_key_bytes} allowed"
        )

    def _only_get(self, method: bytes, kind: str) -> Response | None:
        if method in (b"GET", b"HEAD"):
            return None
        resp = error_response(405, f"method {method.decode('latin-1')} not allowed; use GET")
        return self._count(kind, _with_allow(resp, b"GET, HEAD"))

    def _health(self) -> Response:
        try:
            reason = self.runtime.health()
        except Exception as exc:  # a broken health check is itself unhealthy
            reason = f"health check failed: {exc!r}"
        if reason is None:
            return self._count("health", Response(200, b"ok\n"))
        return self._count("health", error_response(503, reason))

    def _metrics(self) -> Response:
        try:
            runtime_stats = self.runtime.stats()
        except Exception as exc:
            return self._count("metrics", error_response(500, f"runtime stats failed: {exc!r}"))
        text = render_metrics(self.requests, self.http_stats, runtime_stats)
        return self._count("metrics", Response(200, text, content_type=PROMETHEUS_TEXT))

    # -- submitting and finishing ------------------------------------------

    def _submit(self, kind: str, input: Input) -> Response | Later:
        reply = _Reply(self._finish[kind])
        try:
            self.runtime.submit_callback(input, reply, now=type(input) is Read)
        except Exception as exc:  # Overloaded, Stopped, or a bug: answered, never raised
            return self._failed(kind, exc)
        return reply

    def _failed(self, kind: str, exc: Exception) -> Response:
        if not isinstance(exc, CorosmError):
            log.exception("submit_callback failed")
        return self._count(kind, failure_response(exc))

    def _finisher(self, kind: str, reply: Callable[[Output], Response]) -> Finish:
        def finish(output: Any, error: BaseException | None) -> Response:
            if error is not None:
                return self._count(kind, failure_response(error))
            try:
                resp = reply(output)
            except SeedValueError as value_error:
                resp = error_response(422, str(value_error))
            return self._count(kind, resp)

        return finish

    def _count(self, kind: str, resp: Response) -> Response:
        key = (kind, resp.status)
        self.requests[key] = self.requests.get(key, 0) + 1
        return resp

    @staticmethod
    def _seed_reply(output: Output) -> Response:
        if isinstance(output, Ok):
            return _OK
        return Response(200, output_to_seed_reply(output))


class _Reply(Later):
    """One request's reply, and the runtime's callback that resolves it.

    ``session`` is set for a write submitted by a :class:`_Session`: its
    completion releases the reads that connection holds behind it.
    """

    __slots__ = ("finish", "session")

    def __init__(self, finish: Finish) -> None:
        self.resp = None
        self.waiter = None
        self.finish = finish
        self.session: _Session | None = None

    def __call__(self, output: Any, error: BaseException | None) -> None:
        session = self.session
        if session is not None:
            self.session = None
            session._write_done()
        try:
            resp = self.finish(output, error)
        except Exception:  # a bug in a reply mapping: answer 500, keep the loop going
            log.exception("HTTP reply mapping failed")
            resp = error_response(500, "internal error: the handler failed; see the server log")
        self.resolve(resp)


class _Session:
    """One connection's handler: read-your-writes for pipelined requests.

    ``_writes`` counts this connection's writes submitted and not yet done.
    While it is non-zero, an input that is not log-ordered is held (its reply
    slot waits on a :class:`_Reply` not yet submitted), and so is every input
    after a held one, to keep submission in request order. When a write
    finishes, the held inputs are submitted in order up to the next one that
    must wait. With nothing in flight a request costs two attribute reads
    more than :meth:`KvHttpApp.__call__`.

    Held inputs are bounded by the connection's ``Limits.max_pending``: it
    stops reading at that many outstanding replies.
    """

    __slots__ = ("_app", "_held", "_writes")

    def __init__(self, app: KvHttpApp) -> None:
        self._app = app
        self._writes = 0
        self._held: deque[tuple[Input, _Reply]] = deque()

    def __call__(self, request: Request) -> Response | Later:
        return self._app._route(request, self._submit)

    def _submit(self, kind: str, input: Input) -> Response | Later:
        app = self._app
        reply = _Reply(app._finish[kind])
        if self._held or (self._writes and type(input) not in LOG_ORDERED):
            self._held.append((input, reply))
            return reply
        try:
            self._start(input, reply)
        except Exception as exc:
            return app._failed(kind, exc)
        return reply

    def _start(self, input: Input, reply: _Reply) -> None:
        if type(input) not in WRITES:
            # A read answers from the applied state: step it at once (see
            # Runtime.submit_callback) rather than queue it behind the writes.
            self._app.runtime.submit_callback(input, reply, now=type(input) is Read)
            return
        # Counted before submitting, in case a runtime calls back at once.
        self._writes += 1
        reply.session = self
        try:
            self._app.runtime.submit_callback(input, reply)
        except Exception:
            self._writes -= 1
            reply.session = None
            raise

    def _write_done(self) -> None:
        self._writes -= 1
        held = self._held
        while held and not (self._writes and type(held[0][0]) not in LOG_ORDERED):
            input, reply = held.popleft()
            try:
                self._start(input, reply)
            except Exception as exc:  # the reply maps it (503 when overloaded)
                if not isinstance(exc, CorosmError):
                    log.error("submit_callback failed", exc_info=exc)
                reply(None, exc)


_REST_KINDS = {
    b"GET": "kv_get",
    b"HEAD": "kv_get",
    b"PUT": "kv_put",
    b"DELETE": "kv_delete",
}


def _with_allow(resp: Response, allow: bytes) -> Response:
    return Response(resp.status, resp.body, resp.content_type, ((b"Allow", allow),))


def _get_reply(output: Output) -> Response:
    if isinstance(output, Value):
        if output.value is None:
            return _NOT_FOUND
        return Response(200, output.value, content_type=OCTET_STREAM)
    return _unexpected(output)


def _put_reply(output: Output) -> Response:
    if isinstance(output, SetOutcome):
        return Response(201 if output.old is None else 200, b"", content_type=None)
    return _unexpected(output)


def _delete_reply(output: Output) -> Response:
    if isinstance(output, Count):
        return _EMPTY_200 if output.n else _NOT_FOUND
    return _unexpected(output)


def _unexpected(output: Output) -> Response:
    return error_response(500, f"internal error: unexpected machine output {output!r:.80}")


def failure_response(exc: BaseException) -> Response:
    """The reply for a request whose input failed or could not be submitted."""
    if isinstance(exc, Overloaded):
        return Response(
            503,
            b"server overloaded: the input queue is full; retry later\n",
            headers=RETRY_AFTER,
        )
    if isinstance(exc, Stopped):
        return Response(503, b"server is stopping; retry later\n", headers=RETRY_AFTER)
    if isinstance(exc, JournalError):
        return error_response(503, f"journal failed, nothing was stored: {exc}")
    if isinstance(exc, HandlerError):
        return error_response(500, f"the request failed in the machine: {exc}")
    if isinstance(exc, CorosmError):
        return error_response(500, f"{type(exc).__name__}: {exc}")
    return error_response(500, "internal error; see the server log")
