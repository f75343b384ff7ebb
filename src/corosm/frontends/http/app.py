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

Routes (``{key}`` is percent-decoded to bytes; an absolute-form target such
as ``http://host:8080/kv/x`` is routed on its path and query, as RFC 9112
asks)::

    GET    /health        200 "ok", or 503 with the reason (e.g. the journal failed)
    GET    /metrics       Prometheus text format
    GET    /kv/{key}      200 raw value | 404
    PUT    /kv/{key}      raw body: 201 created | 200 replaced
    DELETE /kv/{key}      200 | 404
    POST   any other path the seed protocol: Write "x" 1 -> Ok, Read "x" -> Result (Just 1)
    DELETE /              reset the store: 200, empty body (403 when allow_reset is False)
    DELETE anything else  404 naming the routes: a reset is never a guess
    other methods there   400 "Unsupported method" (the seed's bytes, no newline)

Errors: a seed body that does not parse (or an int outside int64) -> 400 with
the parser's message; a seed Read of a value that is not a decimal int64 ->
422 (the request is well-formed but the stored value cannot be said in the
seed's syntax). Key and value limits are the inputs' own
(:data:`~corosm.apps.kv.inputs.MAX_KEY_BYTES`,
:data:`~corosm.apps.kv.inputs.MAX_VALUE_BYTES`), for REST and the seed
protocol alike: an empty key -> 400, a key too long -> 414, a value too large
-> 413. A full input queue -> 503 with ``Retry-After: 1``; a journal failure
-> 503; a handler failure -> 500. Every error body is one line of text that
says what was wrong and what was expected.

Read-your-writes per connection (:class:`_Session`) follows the machine's own
declaration, :meth:`corosm.core.Machine.order`, asked once per input type
(the app assumes, as the key-value machine's ``ORDER`` table does, that the
order depends on the type alone); the app keeps no table of its own.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

from corosm.apps.kv.inputs import Delete, Input, Read, Reset, SetIf
from corosm.apps.kv.outputs import Count, Ok, Output, SetOutcome, Value
from corosm.apps.kv.seed import (
    SeedValueError,
    output_to_seed_reply,
    seed_request_to_input,
)
from corosm.core import Machine, Order
from corosm.errors import (
    CorosmError,
    HandlerError,
    JournalError,
    LimitExceeded,
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
_UNSUPPORTED = Response(400, b"Unsupported method")  # the seed's exact bytes
_NOT_FOUND = error_response(404, "key not found")
_RESET_REFUSED = error_response(
    403,
    "reset refused: this server was started with --no-reset; "
    "delete keys one at a time with DELETE /kv/{key}",
)
_ROUTES = (
    "expected DELETE / (reset the whole store) or DELETE /kv/{key} (one key); "
    "the other routes are POST / (seed protocol), GET, HEAD or PUT /kv/{key}, "
    "GET /health and GET /metrics"
)
_READ, _LOGGED = Order.READ, Order.LOGGED


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

    @property
    def machine(self) -> Machine[Any, Any, Any]: ...


Finish = Callable[[Any, "BaseException | None"], Response]
Submit = Callable[[str, Input], "Response | Later"]


class KvHttpApp:
    """The key-value routes; call it with a Request (see the module docs)."""

    def __init__(
        self,
        runtime: KvRuntime,
        *,
        allow_reset: bool = True,
        http_stats: HttpStats | None = None,
    ) -> None:
        self.runtime = runtime
        self.allow_reset = allow_reset
        self._machine_order: Callable[[Input], Order] = runtime.machine.order
        # Machine.order per input type, asked once per type: the key-value
        # machine declares its order by type (its ORDER table), and the dict
        # costs a quarter of the call, which reads an Enum member each time.
        self._orders: dict[type, Order] = {}
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

    def order(self, input: Input) -> Order:
        """How ``input`` orders on its connection, as the runtime's machine declares it."""
        order = self._orders.get(type(input))
        if order is None:
            order = self._orders[type(input)] = self._machine_order(input)
        return order

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
        if target[:1] != b"/":
            target = _origin_form(target)
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
            return self._reset(target, submit)
        return self._count("seed_other", _UNSUPPORTED)

    def _reset(self, target: bytes, submit: Submit) -> Response | Later:
        # Only the seed client's exact "DELETE /" wipes the store: a typo such
        # as "DELETE /kv" or "DELETE /KV/x" must not.
        if target != b"/":
            shown = target[:80].decode("ascii", "backslashreplace")
            return self._count(
                "seed_other", error_response(404, f"no route for DELETE {shown}; {_ROUTES}")
            )
        if not self.allow_reset:
            return self._count("seed_reset", _RESET_REFUSED)
        return submit("seed_reset", Reset())

    def _seed(self, body: bytes, submit: Submit) -> Response | Later:
        try:
            input = seed_request_to_input(body)
        except LimitExceeded as exc:
            return self._count("seed_invalid", limit_response(exc))
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
        key = unquote_to_bytes(raw_key) if b"%" in raw_key else raw_key
        input: Input
        try:  # the inputs check the key and value limits
            if kind == "kv_get":
                input = Read(key)
            elif kind == "kv_delete":
                input = Delete(key)
            else:
                input = SetIf(key, body)
        except LimitExceeded as exc:
            return self._count(kind, limit_response(exc, "expected /kv/{key}"))
        return submit(kind, input)

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
            order = self._orders.get(type(input)) or self.order(input)
            self.runtime.submit_callback(input, reply, now=order is _READ)
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

    The machine's :meth:`~corosm.core.Machine.order` says how each input
    orders: ``_writes`` counts this connection's writes (``LOGGED`` and
    ``WRITE`` inputs) submitted and not yet done. While it is non-zero, an
    input that is not ``LOGGED`` is held (its reply slot waits on a
    :class:`_Reply` not yet submitted), and so is every input after a held
    one, to keep submission in request order. When a write finishes, the held
    inputs are submitted in order up to the next one that must wait. A
    ``READ`` is stepped at once (``now=True``): it answers from the applied
    state. With nothing in flight a request costs two attribute reads more
    than :meth:`KvHttpApp.__call__`.

    Held inputs are bounded by the connection's ``Limits.max_pending``: it
    stops reading at that many outstanding replies.
    """

    __slots__ = ("_app", "_held", "_writes")

    def __init__(self, app: KvHttpApp) -> None:
        self._app = app
        self._writes = 0
        self._held: deque[tuple[Input, Order, _Reply]] = deque()

    def __call__(self, request: Request) -> Response | Later:
        return self._app._route(request, self._submit)

    def _submit(self, kind: str, input: Input) -> Response | Later:
        app = self._app
        reply = _Reply(app._finish[kind])
        order = app._orders.get(type(input)) or app.order(input)  # inlined: the hot path
        if self._held or (self._writes and order is not _LOGGED):
            self._held.append((input, order, reply))
            return reply
        try:
            self._start(input, order, reply)
        except Exception as exc:
            return app._failed(kind, exc)
        return reply

    def _start(self, input: Input, order: Order, reply: _Reply) -> None:
        if order is _READ:
            # A read answers from the applied state: step it at once (see
            # Runtime.submit_callback) rather than queue it behind the writes.
            self._app.runtime.submit_callback(input, reply, now=True)
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
        while held and not (self._writes and held[0][1] is not _LOGGED):
            input, order, reply = held.popleft()
            try:
                self._start(input, order, reply)
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


def _origin_form(target: bytes) -> bytes:
    """The path and query of an absolute-form target (``http://host:port/p?q`` -> ``/p?q``).

    RFC 9112 section 3.2.2: a server must accept the absolute form. An empty
    path is ``/``. Any other target (``*``, garbage) is returned as it is:
    no route matches it.
    """
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return target
    slash, query = rest.find(b"/"), rest.find(b"?")
    ends = [i for i in (slash, query) if i >= 0]
    start = min(ends) if ends else len(rest)
    if start == 0:  # no host: not an absolute URI
        return target
    origin = rest[start:]
    return origin if origin[:1] == b"/" else b"/" + origin


def limit_response(exc: LimitExceeded, empty_hint: str = "") -> Response:
    """The reply for a key or value outside the store's limits (the message says the limit).

    An empty key is 400 (``empty_hint`` may say what the route expects), a
    key too long 414, a value too large 413: the same for REST and the seed.
    """
    if exc.part == "value":
        return error_response(413, str(exc))
    if exc.empty:
        return error_response(400, f"{exc}; {empty_hint}" if empty_hint else str(exc))
    return error_response(414, str(exc))


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
