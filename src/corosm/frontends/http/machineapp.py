"""Any machine over HTTP: JSON inputs and outputs, health, metrics, ordering, errors.

Theory of operation
-------------------
:class:`MachineHttpApp` is the handler the HTTP layer calls once per request.
It routes on the path, turns the request into a machine input, submits it
with ``runtime.submit_callback`` (no task and no future per request) and
returns a :class:`~corosm.frontends.http.messages.Later` that is also the
runtime's callback: when the runtime dispatches the input's output (or
failure), the callback maps it to a Response and hands it straight to the
connection, inside the same loop pass. Reads (``Order.READ``) are submitted
with ``now=True``: the runtime steps them inside ``data_received`` when it
can. Requests that need no machine (bad input, health, metrics) get a ready
Response at once.

Routes for any machine (an absolute-form target such as
``http://host:8080/health`` is routed on its path, as RFC 9112 asks)::

    POST   /              a JSON input of the machine's declared type -> 200 its JSON output
    GET    /health        200 "ok", or 503 with the reason (e.g. the journal failed)
    GET    /metrics       Prometheus text format

The key-value app (:class:`~corosm.frontends.http.app.KvHttpApp`) is this
class with the seed protocol and REST in place of ``POST /``: it overrides
:meth:`MachineHttpApp._route_machine` and shares everything else.

Errors (:func:`failure_response`, the one mapping for every route): a body
that is not a valid input -> 400 naming each field and what was expected; a
full input queue or a stopping server -> 503 with ``Retry-After: 1``; a
journal failure -> 503 (nothing was stored); a handler that raised a
``UsageError`` -> 400 with its message; any other handler failure -> 500
with one line (never a traceback). Every error body is text, one line per
problem.

Read-your-writes per connection (:class:`_Session`) follows the machine's own
declaration, :meth:`corosm.core.Machine.order`, asked through
:class:`~corosm.frontends.ordering.Orders`: for every input, or once per
input type when the machine declares ``order_by_type`` (as the key-value
machine's ``ORDER`` table does).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Protocol

from corosm.core import Machine, Order
from corosm.errors import (
    CorosmError,
    HandlerError,
    HandlerMisuse,
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
from corosm.frontends.jsoncodec import InvalidJson, MachineCodec, OutputMismatch
from corosm.frontends.ordering import Orders

log: Final = logging.getLogger("corosm.http")

JSON: Final = b"application/json"
PROMETHEUS_TEXT: Final = b"text/plain; version=0.0.4; charset=utf-8"
RETRY_AFTER: Final = ((b"Retry-After", b"1"),)
_READ: Final = Order.READ
_LOGGED: Final = Order.LOGGED
_MESSAGE_LIMIT: Final = 300  # characters of an error message worth a client's reading


class MachineRuntime(Protocol):
    """What the app needs from :class:`corosm.runtime.Runtime` (a fake can stand in)."""

    def submit_callback(
        self,
        input: Any,
        callback: Callable[[Any, BaseException | None], None],
        /,
        *,
        now: bool = False,
    ) -> None: ...

    def stats(self) -> dict[str, float]: ...

    def health(self) -> str | None: ...

    @property
    def machine(self) -> Machine[Any, Any, Any]: ...


class Submitter:
    """Where a route hands its input: ``submit(kind, input)``, answered now or later.

    The app itself (:meth:`MachineHttpApp.__call__`: no ordering) or a
    connection's :class:`_Session` (read-your-writes). An object, not a bound
    method: compiled, a route's call of it is a native one.
    """

    def submit(self, kind: str, input: Any) -> Response | Later:
        """Submit ``input``; ``kind`` names its reply mapping and counter."""
        raise NotImplementedError


class MachineHttpApp(Submitter):
    """Any machine's routes; call it with a Request (see the module docs).

    ``codec`` (the machine's JSON types, checked at start-up) serves
    ``POST /``; a subclass with routes of its own may leave it out.
    """

    def __init__(
        self,
        runtime: MachineRuntime,
        codec: MachineCodec | None = None,
        *,
        http_stats: HttpStats | None = None,
    ) -> None:
        self.runtime = runtime
        self.codec = codec
        self.orders = Orders(runtime.machine)
        # Reads answered in the call (Runtime.reader), when the runtime has them.
        self._read: Callable[[Any], Any] | None = getattr(runtime, "reader", None)
        self.http_stats = http_stats or HttpStats()
        # Replies by kind, then status (see requests).
        self._tallies: dict[str, _Tally] = {}
        # One finisher per kind, made once, so a request allocates none.
        self._finish: dict[str, _Finisher] = {}
        if codec is not None:
            self._finish["submit"] = self._finisher("submit", self._json_reply)

    @property
    def requests(self) -> dict[tuple[str, int], int]:
        """Replies so far, by ``(kind, status)``: what the metrics page counts."""
        return {
            (kind, status): n
            for kind, tally in self._tallies.items()
            for status, n in tally.counts()
        }

    # -- routing ------------------------------------------------------------

    def __call__(self, request: Request) -> Response | Later:
        """Answer ``request`` with no per-connection ordering (see :meth:`connection_handler`)."""
        return self._route(request, self)

    def connection_handler(self) -> Handler:
        """A handler for one connection: its reads wait for its own earlier writes.

        The HTTP server calls this once per connection (see
        :class:`~corosm.frontends.http.messages.PerConnection`).
        """
        return _Session(self)

    def _route(self, request: Request, to: Submitter) -> Response | Later:
        target = request.target
        if target == b"/":  # the machine's own route, and the most common by far
            return self._route_machine(request.method, target, target, request.body, to)
        if target[:1] != b"/":
            target = origin_form(target)
        query = target.find(b"?")
        path = target if query < 0 else target[:query]
        method = request.method
        if path == b"/health":
            return self._only_get(method, "health") or self._health()
        if path == b"/metrics":
            return self._only_get(method, "metrics") or self._metrics()
        return self._route_machine(method, path, target, request.body, to)

    def _route_machine(
        self, method: bytes, path: bytes, target: bytes, body: bytes, to: Submitter
    ) -> Response | Later:
        """The machine's own routes: ``POST /`` with a JSON input."""
        if path != b"/":
            shown = target[:80].decode("ascii", "backslashreplace")
            return self._count(
                "other",
                error_response(
                    404,
                    f"no route for {method.decode('latin-1')} {shown}; expected POST / with a "
                    "JSON input, GET /health or GET /metrics",
                ),
            )
        if method != b"POST":
            resp = error_response(
                405,
                f"method {method.decode('latin-1')} not allowed on /; "
                "expected POST with a JSON input",
            )
            return self._count("other", with_allow(resp, b"POST"))
        assert self.codec is not None, "POST / needs the machine's codec"
        try:
            input = self.codec.input.decode(body)
        except InvalidJson as exc:
            message = "\n".join(exc.problems)
            return self._count("submit", error_response(400, f"{message}"))
        return to.submit("submit", input)

    def _only_get(self, method: bytes, kind: str) -> Response | None:
        if method in (b"GET", b"HEAD"):
            return None
        resp = error_response(405, f"method {method.decode('latin-1')} not allowed; use GET")
        return self._count(kind, with_allow(resp, b"GET, HEAD"))

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

    def submit(self, kind: str, input: Any) -> Response | Later:
        """Submit ``input`` with no connection order: its reply, or the Later for it."""
        try:
            order = self.orders.of(input)
            if order is _READ and self._read is not None:
                return self._read_reply(kind, input)
            reply = _Reply(self._finish[kind])
            self.runtime.submit_callback(input, reply.done, now=order is _READ)
        except Exception as exc:  # Overloaded, Stopped, or a bug: answered, never raised
            return self._failed(kind, exc)
        return reply

    def _read_reply(self, kind: str, input: Any) -> Response:
        """Answer a READ input in this call: no reply object, callback or turn."""
        assert self._read is not None
        try:
            output = self._read(input)
        except Exception as exc:
            return self._finish[kind].finish(None, exc)
        return self._finish[kind].finish(output, None)

    def _failed(self, kind: str, exc: Exception) -> Response:
        if not isinstance(exc, CorosmError):
            log.exception("submitting an input failed")
        return self._count(kind, failure_response(exc))

    def _finisher(self, kind: str, reply: Callable[[Any], Response]) -> _Finisher:
        return _Finisher(reply, self._tally(kind))

    def _count(self, kind: str, resp: Response) -> Response:
        self._tally(kind).add(resp.status)
        return resp

    def _tally(self, kind: str) -> _Tally:
        tally = self._tallies.get(kind)
        if tally is None:
            tally = self._tallies[kind] = _Tally()
        return tally

    def _json_reply(self, output: Any) -> Response:
        assert self.codec is not None
        try:
            body = self.codec.output.encode(output)
        except OutputMismatch as exc:
            log.error("%s", exc)
            return error_response(500, f"internal error: {one_line(str(exc))}")
        return Response(200, body, content_type=JSON)


class _Finisher:
    """One kind's reply mapping: the output (or failure) to its Response, counted.

    A class, not a closure: compiled, its call from the app is a native one.
    """

    def __init__(self, reply: Callable[[Any], Response], tally: _Tally) -> None:
        self.reply = reply
        self.tally = tally

    def finish(self, output: Any, error: BaseException | None) -> Response:
        """The Response for ``output``, or for ``error`` when it is not None."""
        resp = failure_response(error) if error is not None else self.reply(output)
        self.tally.add(resp.status)
        return resp


class _Tally:
    """One kind's replies by status; the common 200 is a plain counter.

    A :class:`_Finisher` holds its kind's tally, so counting a reply is one
    native call and an add: a dict keyed by ``(kind, status)`` cost a tuple
    and two hashed lookups per request.
    """

    def __init__(self) -> None:
        self.ok = 0
        self.others: dict[int, int] = {}

    def add(self, status: int) -> None:
        if status == 200:
            self.ok += 1
        else:
            self.others[status] = self.others.get(status, 0) + 1

    def counts(self) -> list[tuple[int, int]]:
        """``(status, count)`` for each status seen."""
        seen = [(200, self.ok)] if self.ok else []
        return seen + list(self.others.items())


class _Reply(Later):
    """One request's reply, and the runtime's callback that resolves it.

    ``session`` is set for a write submitted by a :class:`_Session`: its
    completion releases the reads that connection holds behind it.

    The callback is the bound method :meth:`done`, not ``__call__``: the
    pinned mypyc lays out a compiled subclass that adds ``__call__`` to a
    compiled base differently from the base (a crash on the first read of
    ``resp``).
    """

    # No __slots__: mypyc compiles this class and Later, and refuses them.

    def __init__(self, finish: _Finisher) -> None:
        self.resp = None
        self.waiter = None
        self.finish = finish
        self.session: _Session | None = None

    def done(self, output: Any, error: BaseException | None) -> None:
        """The runtime's callback: map the output (or error) to the Response, and resolve."""
        session = self.session
        if session is not None:
            self.session = None
            session._write_done()
        try:
            resp = self.finish.finish(output, error)
        except Exception:  # a bug in a reply mapping: answer 500, keep the loop going
            log.exception("HTTP reply mapping failed")
            resp = error_response(500, "internal error: the handler failed; see the server log")
        self.resolve(resp)


class _Session(Submitter):
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
    than :meth:`MachineHttpApp.__call__`.

    Held inputs are bounded by the connection's ``Limits.max_pending``: it
    stops reading at that many outstanding replies.
    """

    __slots__ = ("_app", "_held", "_writes")

    def __init__(self, app: MachineHttpApp) -> None:
        self._app = app
        self._writes = 0
        self._held: deque[tuple[Any, Order, _Reply]] = deque()

    def __call__(self, request: Request) -> Response | Later:
        return self._app._route(request, self)

    def submit(self, kind: str, input: Any) -> Response | Later:
        app = self._app
        try:
            order = app.orders.of(input)
        except Exception as exc:  # a machine's order() that raises fails this input alone
            return app._failed(kind, exc)
        if self._held or (self._writes and order is not _LOGGED):
            reply = _Reply(app._finish[kind])
            self._held.append((input, order, reply))
            return reply
        if order is _READ and app._read is not None:
            return app._read_reply(kind, input)  # answered now: no reply object
        reply = _Reply(app._finish[kind])
        try:
            self._start(input, order, reply)
        except Exception as exc:
            return app._failed(kind, exc)
        return reply

    def _start(self, input: Any, order: Order, reply: _Reply) -> None:
        if order is _READ:
            # A read answers from the applied state: at once (see
            # Runtime.reader) rather than queued behind other clients' writes.
            read = self._app._read
            if read is None:
                self._app.runtime.submit_callback(input, reply.done, now=True)
                return
            try:
                output = read(input)
            except Exception as exc:
                reply.done(None, exc)
            else:
                reply.done(output, None)
            return
        # Counted before submitting, in case a runtime calls back at once.
        self._writes += 1
        reply.session = self
        try:
            self._app.runtime.submit_callback(input, reply.done)
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
                reply.done(None, exc)


def with_allow(resp: Response, allow: bytes) -> Response:
    """``resp`` with an ``Allow`` header (for a 405)."""
    return Response(resp.status, resp.body, resp.content_type, ((b"Allow", allow),))


def origin_form(target: bytes) -> bytes:
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


def one_line(text: str) -> str:
    """``text`` on one line, bounded: what an error reply says."""
    text = " ".join(text.split())
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 3] + "..."


def failure_response(exc: BaseException) -> Response:
    """The reply for a request whose input failed or could not be submitted.

    One mapping for every route and machine: 503 (with ``Retry-After`` when
    a retry may work) for an overloaded or stopping server and a failed
    journal, 4xx for a handler that refused its input with a ``UsageError``
    (a :class:`HandlerMisuse`, e.g. ``ForeignAwaitError``, is the machine's
    bug: 500), 500 for anything else (an ``EffectError`` the handler let
    escape included), with one line and never a traceback.
    """
    if isinstance(exc, Overloaded):
        return Response(
            503,
            b"server overloaded: the input queue is full; retry later\n",
            headers=RETRY_AFTER,
        )
    if isinstance(exc, Stopped):
        return Response(503, b"server is stopping; retry later\n", headers=RETRY_AFTER)
    if getattr(exc, "retryable", False):  # e.g. a shard that is restarting
        body = f"temporarily unavailable, nothing was run: {one_line(str(exc))}\n"
        return Response(503, body.encode(), headers=RETRY_AFTER)
    if isinstance(exc, JournalError):
        return error_response(503, f"journal failed, nothing was stored: {one_line(str(exc))}")
    if isinstance(exc, LimitExceeded):
        return limit_response(exc)
    if isinstance(exc, UsageError) and not isinstance(exc, HandlerMisuse):
        return error_response(400, f"the machine refused the input: {one_line(str(exc))}")
    if isinstance(exc, HandlerError):  # its message says what the handler raised
        return error_response(500, f"the request failed in the machine: {one_line(str(exc))}")
    if isinstance(exc, CorosmError):
        return error_response(500, f"{type(exc).__name__}: {one_line(str(exc))}")
    return error_response(500, "internal error; see the server log")
