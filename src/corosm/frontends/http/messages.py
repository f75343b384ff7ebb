"""The values of the HTTP layer: requests, replies, limits, counters, and encoding.

Theory of operation
-------------------
Everything a handler sees or returns is a small frozen value: a parsed
:class:`Request` in, a :class:`Response` (or a :class:`Deferred` reply still to
come, through an asyncio future, or a :class:`Later` that its producer
resolves by a direct call) out. :func:`encode_response` turns a Response into wire bytes: always a
``Content-Length``, a ``Content-Type`` whenever the Response has one (an empty
body too), a ``Connection`` header only when the connection is about to close
or when an HTTP/1.0 client asked for keep-alive. A Response that is
reused (a constant such as the seed's ``Ok``) is encoded once and the bytes
are cached on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final, Protocol, TypeAlias

from corosm.errors import UsageError

TEXT_PLAIN: Final = b"text/plain; charset=utf-8"


@dataclass(slots=True, init=False)
class Request:
    """One parsed request. Header names are lower-cased; ``target`` is the raw URL.

    A value, never changed once parsed; not declared frozen for the same
    reason as :class:`Response` (one is made per request).
    """

    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    keep_alive: bool

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: tuple[tuple[bytes, bytes], ...],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        # Written out rather than generated: mypyc compiles a dataclass's own
        # __init__, while the generated one stays an interpreted function.
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(slots=True, init=False)
class Response:
    """A reply. ``Content-Length`` is always sent; ``close`` ends the connection after it.

    A value: nothing changes a Response once made (constants such as the
    seed's ``Ok`` are shared by every connection). It is not declared frozen
    only because a frozen dataclass costs four times as much to construct,
    and most replies are constructed on the hot path.
    """

    status: int
    body: bytes
    content_type: bytes | None
    headers: tuple[tuple[bytes, bytes], ...]
    close: bool
    # The common encoding (no Connection header, with body), filled on first
    # use: a constant Response (e.g. the seed's "Ok") is then encoded once.
    _wire: bytes | None = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: bytes | None = TEXT_PLAIN,
        headers: tuple[tuple[bytes, bytes], ...] = (),
        close: bool = False,
    ) -> None:
        # Written out for the same reason as Request's.
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers
        self.close = close
        self._wire = None


@dataclass(frozen=True, slots=True)
class Deferred:
    """A reply still to come: ``finish(future)`` makes the Response once ``future`` is done.

    ``finish`` must not raise (it should map the future's exception to a reply);
    if it does, the client gets a 500.
    """

    future: asyncio.Future[Any]
    finish: Callable[[asyncio.Future[Any]], Response]


class ReplyWaiter:
    """What waits for a :class:`Later`: the server's place for the reply.

    A class, not a callable: compiled, :meth:`Later.resolve`'s call of
    :meth:`fill` is a native one, and no bound method is made per reply.
    """

    __slots__ = ()

    def fill(self, resp: Response) -> None:
        """Take the Response that ``resolve`` was given."""
        raise NotImplementedError


class Later:
    """A reply still to come, resolved by a direct call: no asyncio future, no loop pass.

    The producer calls :meth:`resolve` once (later calls are ignored). The
    server sets ``waiter`` when it queues the reply, and ``resolve`` hands
    the Response to its :meth:`~ReplyWaiter.fill`; if ``resolve`` came first,
    the server finds the Response in ``resp``.
    """

    # No __slots__: mypyc compiles this class (see corosm.compiled), and refuses them.

    def __init__(self) -> None:
        self.resp: Response | None = None
        self.waiter: ReplyWaiter | None = None

    def resolve(self, resp: Response) -> None:
        """Give the reply (the first call wins)."""
        if self.resp is not None:
            return
        self.resp = resp
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.fill(resp)


Reply: TypeAlias = "Response | Deferred | Later | asyncio.Future[Response]"


class Handler(Protocol):
    """What the server calls for each complete request."""

    def __call__(self, request: Request, /) -> Reply: ...


class PerConnection(Protocol):
    """A handler that wants one handler object per connection (e.g. for ordering).

    When the object given to the server has this method, the server calls it
    once per accepted connection and routes that connection's requests to the
    handler it returns.
    """

    def connection_handler(self) -> Handler: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection limits. Sizes in bytes, times in seconds."""

    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    max_body_bytes: int = 2 * 1024 * 1024
    max_pending: int = 128
    request_timeout: float = 10.0
    response_timeout: float = 10.0
    idle_timeout: float = 75.0

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_headers", "max_body_bytes", "max_pending"):
            if getattr(self, name) < 1:
                raise UsageError(f"Limits.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("request_timeout", "response_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise UsageError(f"Limits.{name} must be > 0 seconds, got {getattr(self, name)!r}")


@dataclass(slots=True)
class HttpStats:
    """Counters of the connection layer (mutable; read by the metrics page)."""

    connections_opened: int = 0
    connections_open: int = 0
    requests: int = 0
    rejected: dict[int, int] = field(default_factory=dict)  # 400/408/413/417/431/500 by status
    response_timeouts: int = 0
    late_replies_dropped: int = 0
    handler_crashes: int = 0

    def reject(self, status: int) -> None:
        self.rejected[status] = self.rejected.get(status, 0) + 1


# -- encoding -----------------------------------------------------------------

_STATUS_LINES: Final[dict[int, bytes]] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode("ascii")) for s in HTTPStatus
}
# Which Connection header a reply carries (an index into CONN_HEADERS).
CONN_NONE: Final = 0
CONN_CLOSE: Final = 1
CONN_KEEP: Final = 2
CONN_HEADERS: Final = (b"", b"Connection: close\r\n", b"Connection: keep-alive\r\n")


def encode_response(resp: Response, conn: int = CONN_NONE, head_only: bool = False) -> bytes:
    """Serialise ``resp``; ``conn`` picks the Connection header, ``head_only`` drops the body."""
    common = conn == CONN_NONE and not head_only
    if common and resp._wire is not None:
        return resp._wire
    wire = _encode(resp, conn, head_only)
    if common:
        resp._wire = wire  # a cache, not a change of value
    return wire


def _encode(resp: Response, conn: int, head_only: bool) -> bytes:
    # The lines that depend only on the status and the content type are made
    # once per pair and kept; so is the Content-Length line of a short body.
    status, content_type = resp.status, resp.content_type
    if status == 200 and content_type is TEXT_PLAIN:  # the default: no tuple, no hashing
        head = _HEAD_200_TEXT
    else:
        key = (status, content_type)
        head = _HEADS.get(key) or _head(*key)
    body = resp.body
    length = len(body)
    if conn == CONN_NONE and not (head_only or resp.headers) and length < _SHORT:
        return head + _LENGTH_LINES[length] + body  # the common reply: one concatenation
    extra = b"".join([b"%s: %s\r\n" % pair for pair in resp.headers]) if resp.headers else b""
    return b"%sContent-Length: %d\r\n%s%s\r\n%s" % (
        head,
        length,
        extra,
        CONN_HEADERS[conn],
        b"" if head_only else body,
    )


_HEADS: Final[dict[tuple[int, bytes | None], bytes]] = {}
_SHORT: Final = 256
_LENGTH_LINES: Final = [b"Content-Length: %d\r\n\r\n" % n for n in range(_SHORT)]


def _head(status: int, content_type: bytes | None) -> bytes:
    """Status line, Server and (if any) Content-Type: the same for every such reply."""
    line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status
    # An empty body keeps its type: GET of an empty value is still octet-stream.
    # Replies that have no type at all say so with content_type=None.
    typed = b"" if content_type is None else b"Content-Type: %s\r\n" % content_type
    head = line + b"Server: corosm\r\n" + typed
    if len(_HEADS) < 1024:  # statuses x types: a handful, unless a handler invents many
        _HEADS[(status, content_type)] = head
    return head


_HEAD_200_TEXT: Final = _head(200, TEXT_PLAIN)


def error_response(status: int, message: str, close: bool = False) -> Response:
    """A short text reply saying what was wrong (the message ends with a newline)."""
    return Response(status, message.encode("utf-8", "replace") + b"\n", close=close)
