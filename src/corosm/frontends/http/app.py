"""The key-value store over HTTP: the seed's protocol and a REST API, on the generic app.

Theory of operation
-------------------
:class:`KvHttpApp` is :class:`~corosm.frontends.http.machineapp.MachineHttpApp`
(the app that serves any machine: health, metrics, per-connection ordering,
the mapping of failures to statuses) with the key-value routes in place of
its JSON ``POST /``. It turns each request into a key-value input and hands
it to the shared submit path; a finisher per kind maps the output to
the reply the route promises.

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
-> 413. Failed inputs map as for any machine
(:func:`~corosm.frontends.http.machineapp.failure_response`): a full input
queue -> 503 with ``Retry-After: 1``; a journal failure -> 503; a handler
failure -> 500. Every error body is one line of text that says what was
wrong and what was expected.

Read-your-writes per connection is the generic app's, following
:meth:`corosm.core.Machine.order`; the key-value machine declares its order
by input type (its ``ORDER`` table, ``order_by_type``), so the app asks once
per type.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote_to_bytes

from corosm.apps.kv.inputs import Delete, Input, Read, Reset, SetIf
from corosm.apps.kv.outputs import Count, Ok, SetOutcome, Value
from corosm.apps.kv.seed import (
    SeedValueError,
    output_to_seed_reply,
    seed_request_to_input,
)
from corosm.errors import LimitExceeded, UsageError
from corosm.frontends.http.machineapp import (
    MachineHttpApp,
    MachineRuntime,
    Submitter,
    failure_response,
    limit_response,
    with_allow,
)
from corosm.frontends.http.messages import HttpStats, Later, Response, error_response

__all__ = ["KvHttpApp", "KvRuntime", "failure_response", "limit_response"]

OCTET_STREAM: Final = b"application/octet-stream"

KvRuntime = MachineRuntime  # the key-value app needs nothing more from its runtime

_OK: Final = Response(200, b"Ok")
_EMPTY_200: Final = Response(200, b"", content_type=None)
_UNSUPPORTED: Final = Response(400, b"Unsupported method")  # the seed's exact bytes
_NOT_FOUND: Final = error_response(404, "key not found")
_RESET_REFUSED: Final = error_response(
    403,
    "reset refused: this server was started with --no-reset; "
    "delete keys one at a time with DELETE /kv/{key}",
)
_ROUTES: Final = (
    "expected DELETE / (reset the whole store) or DELETE /kv/{key} (one key); "
    "the other routes are POST / (seed protocol), GET, HEAD or PUT /kv/{key}, "
    "GET /health and GET /metrics"
)


class KvHttpApp(MachineHttpApp):
    """The key-value routes; call it with a Request (see the module docs)."""

    def __init__(
        self,
        runtime: MachineRuntime,
        *,
        allow_reset: bool = True,
        http_stats: HttpStats | None = None,
    ) -> None:
        super().__init__(runtime, http_stats=http_stats)
        self.allow_reset = allow_reset
        self._finish.update(
            {
                "seed_write": self._finisher("seed_write", _seed_reply),
                "seed_read": self._finisher("seed_read", _seed_reply),
                "seed_reset": self._finisher("seed_reset", lambda out: _EMPTY_200),
                "kv_get": self._finisher("kv_get", _get_reply),
                "kv_put": self._finisher("kv_put", _put_reply),
                "kv_delete": self._finisher("kv_delete", _delete_reply),
            }
        )

    def _route_machine(
        self, method: bytes, path: bytes, target: bytes, body: bytes, to: Submitter
    ) -> Response | Later:
        if path.startswith(b"/kv/"):
            return self._rest(method, path[4:], body, to)
        if method == b"POST":
            return self._seed(body, to)
        if method == b"DELETE":
            return self._reset(target, to)
        return self._count("seed_other", _UNSUPPORTED)

    def _reset(self, target: bytes, to: Submitter) -> Response | Later:
        # Only the seed client's exact "DELETE /" wipes the store: a typo such
        # as "DELETE /kv" or "DELETE /KV/x" must not.
        if target != b"/":
            shown = target[:80].decode("ascii", "backslashreplace")
            return self._count(
                "seed_other", error_response(404, f"no route for DELETE {shown}; {_ROUTES}")
            )
        if not self.allow_reset:
            return self._count("seed_reset", _RESET_REFUSED)
        return to.submit("seed_reset", Reset())

    def _seed(self, body: bytes, to: Submitter) -> Response | Later:
        try:
            input = seed_request_to_input(body)
        except LimitExceeded as exc:
            return self._count("seed_invalid", limit_response(exc))
        except UsageError as exc:
            return self._count("seed_invalid", error_response(400, str(exc)))
        return to.submit("seed_read" if type(input) is Read else "seed_write", input)

    def _rest(self, method: bytes, raw_key: bytes, body: bytes, to: Submitter) -> Response | Later:
        kind = _REST_KINDS.get(method)
        if kind is None:
            resp = error_response(
                405,
                f"method {method.decode('latin-1')} not allowed on /kv/{{key}}; "
                "expected GET, PUT or DELETE",
            )
            return self._count("kv_other", with_allow(resp, b"GET, HEAD, PUT, DELETE"))
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
        return to.submit(kind, input)


_REST_KINDS: Final = {
    b"GET": "kv_get",
    b"HEAD": "kv_get",
    b"PUT": "kv_put",
    b"DELETE": "kv_delete",
}


def _seed_reply(output: object) -> Response:
    if isinstance(output, Ok):
        return _OK
    try:
        return Response(200, output_to_seed_reply(output))
    except SeedValueError as exc:  # a stored value the seed's syntax cannot say
        return error_response(422, str(exc))


def _get_reply(output: object) -> Response:
    if isinstance(output, Value):
        if output.value is None:
            return _NOT_FOUND
        return Response(200, output.value, content_type=OCTET_STREAM)
    return _unexpected(output)


def _put_reply(output: object) -> Response:
    if isinstance(output, SetOutcome):
        return Response(201 if output.old is None else 200, b"", content_type=None)
    return _unexpected(output)


def _delete_reply(output: object) -> Response:
    if isinstance(output, Count):
        return _EMPTY_200 if output.n else _NOT_FOUND
    return _unexpected(output)


def _unexpected(output: object) -> Response:
    return error_response(500, f"internal error: unexpected machine output {output!r:.80}")
