"""The client's requests and the meaning of their replies, without any I/O.

Each public operation (``write``, ``get``, ``health``...) is described once here
as a :class:`Call`: the HTTP request to send and a function that turns the
reply into the operation's result or raises the fitting :mod:`errors
<corosm.client.errors>` exception. The sync and asyncio clients are only
transports that move a :class:`HttpRequest` out and a :class:`HttpResponse`
back (the httpx ``auth_flow`` idea), so both behave the same by construction
and this module can be tested without sockets.

Endpoints used (see the server's README):

* seed protocol: ``POST /`` with ``Write "k" 1`` / ``Read "k"``; ``DELETE /`` resets;
* REST: ``GET``/``PUT``/``DELETE /kv/{percent-encoded key}``;
* any machine (``corosm serve --machine``): ``POST /`` with a JSON input;
* ``GET /health`` (200 healthy, 503 with the reason) and ``GET /metrics``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from corosm.client import seedcodec
from corosm.client.errors import (
    InvalidRequest,
    ProtocolError,
    RequestRejected,
    ServerFailed,
    ServerUnavailable,
)

T = TypeVar("T")

_MESSAGE_LIMIT = 300  # characters of an error body worth showing to a person


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP request as the transports send it (always with Content-Length).

    ``idempotent`` says whether sending it twice does no harm: only then may a
    transport send it again after a connection broke before its reply.
    """

    method: str
    path: str
    body: bytes = b""
    content_type: str | None = None
    idempotent: bool = True


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """One HTTP response; header names are lower-cased."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        return next((value for key, value in self.headers if key == wanted), None)


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """A request and the function that gives its reply a meaning."""

    request: HttpRequest
    interpret: Callable[[HttpResponse], T]


def error_message(response: HttpResponse) -> str:
    """The server's own words from an error reply, on one line and bounded."""
    text = response.body.decode("utf-8", "replace").strip()
    text = " ".join(text.split())
    if len(text) > _MESSAGE_LIMIT:
        text = text[:_MESSAGE_LIMIT] + "..."
    return text


def _retry_after(response: HttpResponse) -> float | None:
    value = response.header("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP-date: rare, and "later" is all a caller needs then
    return seconds if 0 <= seconds < math.inf else None  # not nan, not a wait for ever


def raise_for_error(response: HttpResponse) -> None:
    """Raise the exception that an error status means; return for 1xx-3xx."""
    status = response.status
    if status < 400:
        return
    message = error_message(response)
    if status == 503:
        raise ServerUnavailable(status, message, _retry_after(response))
    if status < 500:
        raise RequestRejected(status, message)
    raise ServerFailed(status, message)


def _expect_status(response: HttpResponse, *allowed: int) -> None:
    raise_for_error(response)
    if response.status not in allowed:
        expected = " or ".join(map(str, allowed))
        raise ProtocolError(
            f"unexpected status {response.status} for this request: expected {expected}"
        )


# --- the seed protocol ------------------------------------------------------------


def _seed_ok(response: HttpResponse) -> None:
    _expect_status(response, 200)
    reply = seedcodec.parse_seed_reply(response.body)
    if not isinstance(reply, seedcodec.SeedOk):
        raise ProtocolError(f"expected 'Ok' for a Write, got {reply}")


def _seed_result(response: HttpResponse) -> int | None:
    _expect_status(response, 200)
    reply = seedcodec.parse_seed_reply(response.body)
    if not isinstance(reply, seedcodec.SeedResult):
        raise ProtocolError("expected 'Result ...' for a Read, got 'Ok'")
    return reply.value


def _empty_ok(response: HttpResponse) -> None:
    _expect_status(response, 200, 204)


def write_call(key: str, value: int) -> Call[None]:
    """Seed ``Write key value``: store a 64-bit int under a text key."""
    body = seedcodec.encode_write(key, value)
    return Call(HttpRequest("POST", "/", body, "text/plain"), _seed_ok)


def read_call(key: str) -> Call[int | None]:
    """Seed ``Read key``: the int stored under ``key``, or None."""
    body = seedcodec.encode_read(key)
    return Call(HttpRequest("POST", "/", body, "text/plain"), _seed_result)


def reset_call() -> Call[None]:
    """Seed ``DELETE /``: empty the whole store."""
    return Call(HttpRequest("DELETE", "/"), _empty_ok)


# --- REST ---------------------------------------------------------------------------


def key_path(key: bytes | str) -> str:
    """``/kv/`` and the key percent-encoded (every byte outside A-Z a-z 0-9 -._~)."""
    if isinstance(key, str):
        try:
            raw = key.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from undecodable argv
            raise InvalidRequest(
                f"key {key!r} cannot be encoded as UTF-8 ({exc.reason}): pass its bytes instead"
            ) from None
    elif isinstance(key, bytes | bytearray | memoryview):
        raw = bytes(key)
    else:
        raise InvalidRequest(f"key must be bytes or str, got {type(key).__name__}")
    if not raw:
        raise InvalidRequest("key must not be empty")
    return "/kv/" + quote(raw, safe="")


def _value_bytes(value: bytes) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise InvalidRequest(f"value must be bytes, got {type(value).__name__}")


def _get_result(response: HttpResponse) -> bytes | None:
    if response.status == 404:
        return None
    _expect_status(response, 200)
    return response.body


def _put_result(response: HttpResponse) -> bool:
    _expect_status(response, 200, 201, 204)
    return response.status == 201


def _delete_result(response: HttpResponse) -> bool:
    if response.status == 404:
        return False
    _expect_status(response, 200, 204)
    return True


def get_call(key: bytes | str) -> Call[bytes | None]:
    """``GET /kv/{key}``: the value, or None when the key is absent (404)."""
    return Call(HttpRequest("GET", key_path(key)), _get_result)


def put_call(key: bytes | str, value: bytes) -> Call[bool]:
    """``PUT /kv/{key}``: store ``value``; True when the key was created (201)."""
    request = HttpRequest("PUT", key_path(key), _value_bytes(value), "application/octet-stream")
    return Call(request, _put_result)


def delete_call(key: bytes | str) -> Call[bool]:
    """``DELETE /kv/{key}``: True when a value was removed, False when absent (404)."""
    return Call(HttpRequest("DELETE", key_path(key)), _delete_result)


# --- any machine --------------------------------------------------------------------


def submit_call(input: Any, output_type: Any = None) -> Call[Any]:
    """``POST /`` with ``input`` as JSON: the machine's output.

    ``input`` is a dataclass instance (sent with ``"type"``, the wire
    convention of docs/serving.md) or any JSON-able value (dicts, lists,
    str, int, float, bool, None; bytes go as base64). An input that JSON
    cannot carry (a NaN or an infinity anywhere in it, which the server
    would refuse) raises :class:`InvalidRequest` naming where, and nothing
    is sent. The reply is returned as decoded JSON, or, given
    ``output_type``, checked and decoded into it. Not idempotent: it is
    never sent twice.
    """
    # Imported here: pydantic is for this call alone, not for `corosm kv read`.
    from corosm.errors import UsageError
    from corosm.frontends.jsoncodec import codec_for, dumps

    try:
        body = dumps(input)
        codec = None if output_type is None else codec_for(output_type)
    except (TypeError, ValueError, UsageError) as exc:
        raise InvalidRequest(f"cannot send this input as JSON: {exc}") from exc
    except RecursionError:
        raise InvalidRequest(
            "cannot send this input as JSON: it is nested too deeply or contains itself"
        ) from None

    def interpret(response: HttpResponse) -> Any:
        _expect_status(response, 200)
        try:
            return json.loads(response.body) if codec is None else codec.decode(response.body)
        except UsageError as exc:  # raised by codec.decode alone
            where = codec.where if codec is not None else "the output type"
            raise ProtocolError(f"the reply does not fit {where}: {exc}") from None
        except ValueError as exc:  # UnicodeDecodeError included
            raise ProtocolError(f"the reply is not JSON: {exc}") from None
        except RecursionError:
            raise ProtocolError(
                "the reply is not JSON this client can read: nested too deeply"
            ) from None

    request = HttpRequest("POST", "/", body, "application/json", idempotent=False)
    return Call(request, interpret)


# --- operations ---------------------------------------------------------------------


def _health_result(response: HttpResponse) -> str | None:
    if response.status == 200:
        return None
    if response.status == 503:
        return error_message(response) or "unhealthy (no reason given)"
    raise_for_error(response)
    raise ProtocolError(f"unexpected status {response.status} from /health")


def _metrics_result(response: HttpResponse) -> str:
    _expect_status(response, 200)
    return response.body.decode("utf-8", "replace")


def health_call() -> Call[str | None]:
    """``GET /health``: None when healthy, else the server's reason."""
    return Call(HttpRequest("GET", "/health"), _health_result)


def metrics_call() -> Call[str]:
    """``GET /metrics``: the Prometheus text exposition."""
    return Call(HttpRequest("GET", "/metrics"), _metrics_result)
