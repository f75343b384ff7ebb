"""The blocking client: one keep-alive ``http.client`` connection, reused.

Each method builds its :class:`~corosm.client.protocol.Call` and hands the
request to :meth:`Client._send`, which owns the connection. Connect errors and
errors after sending are told apart, because only the former guarantee that the
server saw nothing (:class:`ServerUnreachable` vs :class:`ConnectionLost`).

A server may close an idle keep-alive connection at any time. When a request on
a *reused* connection fails before any byte of a reply arrived, it is sent once
more on a fresh connection if it is idempotent (writes and puts set a value,
deletes and resets remove), so a repeat cannot do harm. ``submit`` is not (a
machine's input may be a deposit): it is never sent twice; before it goes
out on a reused connection, a connection the server has closed is replaced.

``timeout`` means what it means for :class:`~corosm.client.AsyncClient`: it
bounds connecting, and then each call as a whole, from sending its request to
reading its reply's last byte (not each socket read: a server that sends a
byte at a time cannot stretch a call past it). A reply body over
:data:`~corosm.client.http11.MAX_BODY` bytes is refused with
:class:`ProtocolError`, unread when its Content-Length announces it. Either
way the connection is closed, since its byte stream is out of step.

A ``Client`` is not thread-safe: use one per thread.
"""

from __future__ import annotations

import http.client
import select
import socket
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from corosm.client import protocol
from corosm.client._transport import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT,
    check_address,
    unreachable,
)
from corosm.client.errors import ConnectionLost, ProtocolError
from corosm.client.http11 import MAX_BODY
from corosm.client.protocol import Call, HttpRequest, HttpResponse

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

T = TypeVar("T")

# Failures that mean "the server closed this connection before reading our
# request": safe to retry once on a fresh connection.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Client:
    """A blocking client for a corosm server: key-value (seed protocol, REST) or any machine.

    ``timeout`` (seconds, or None to wait forever) bounds connecting, and then
    each call from its request's first byte to its reply's last; past it the
    call raises :class:`ServerUnreachable` or :class:`ConnectionLost`.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        check_address(host, port, timeout)
        self.host = host
        self.port = port
        self.timeout = timeout
        self._conn: _Connection | None = None

    # --- the seed protocol ----------------------------------------------------------

    def write(self, key: str, value: int) -> None:
        """Store the 64-bit int ``value`` under ``key`` (seed ``Write``)."""
        return self._run(protocol.write_call(key, value))

    def read(self, key: str) -> int | None:
        """The int under ``key``, or None when absent (seed ``Read``)."""
        return self._run(protocol.read_call(key))

    def reset(self) -> None:
        """Empty the whole store (seed ``DELETE /``)."""
        return self._run(protocol.reset_call())

    # --- REST -----------------------------------------------------------------------

    def get(self, key: bytes | str) -> bytes | None:
        """The raw value under ``key``, or None when absent."""
        return self._run(protocol.get_call(key))

    def put(self, key: bytes | str, value: bytes) -> bool:
        """Store ``value`` under ``key``; True when the key did not exist before."""
        return self._run(protocol.put_call(key, value))

    def delete(self, key: bytes | str) -> bool:
        """Remove ``key``; True when it existed."""
        return self._run(protocol.delete_call(key))

    # --- any machine ----------------------------------------------------------------

    def submit(self, input: Any, output_type: Any = None) -> Any:
        """Send ``input`` to the served machine (``POST /``, JSON); return its output.

        ``input`` is a dataclass instance (sent with its ``"type"``) or a
        JSON-able value; the output comes back as decoded JSON (dicts,
        lists...), or decoded into ``output_type`` when given. A 4xx raises
        :class:`RequestRejected` (its message names the field), a 503
        :class:`ServerUnavailable`, another 5xx :class:`ServerFailed`.
        """
        return self._run(protocol.submit_call(input, output_type))

    # --- operations -----------------------------------------------------------------

    def health(self) -> str | None:
        """None when the server is healthy, else its reason (e.g. a failed journal)."""
        return self._run(protocol.health_call())

    def metrics(self) -> str:
        """The server's metrics in Prometheus text format."""
        return self._run(protocol.metrics_call())

    # --- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; a later call opens a new one."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(host={self.host!r}, port={self.port}, timeout={self.timeout})"

    # --- transport ------------------------------------------------------------------

    def _run(self, call: Call[T]) -> T:
        return call.interpret(self._send(call.request))

    def _send(self, request: HttpRequest) -> HttpResponse:
        for attempt in range(2):
            conn, reused = self._connect(check_open=not request.idempotent)
            try:
                return self._exchange(conn, request)
            except _STALE as exc:
                self.close()
                if reused and attempt == 0 and request.idempotent:
                    continue
                raise ConnectionLost(
                    f"{self.host}:{self.port} closed the connection before replying ({exc})"
                ) from exc
            except TimeoutError as exc:
                self.close()
                raise ConnectionLost(
                    f"no reply from {self.host}:{self.port} within {self.timeout} s"
                ) from exc
            except http.client.HTTPException as exc:
                self.close()
                raise ProtocolError(
                    f"invalid HTTP reply from {self.host}:{self.port}: {exc!r}"
                ) from exc
            except OSError as exc:
                self.close()
                raise ConnectionLost(
                    f"connection to {self.host}:{self.port} failed: {exc}"
                ) from exc
            except BaseException:  # ProtocolError, KeyboardInterrupt: the stream is out of step
                self.close()
                raise
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _connect(self, check_open: bool = False) -> tuple[_Connection, bool]:
        """The open connection and whether it served a request before.

        ``check_open`` first drops a kept-alive connection that the server
        has closed meanwhile, for a request that must not be sent twice.
        """
        if self._conn is not None and self._conn.sock is not None:
            if not (check_open and _closed_by_peer(self._conn.sock)):
                return self._conn, True
            self.close()
        conn = _Connection(self.host, self.port, timeout=self.timeout)
        try:
            conn.connect()
            # A request is one send(); no reason to let Nagle hold back the next one.
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            conn.close()
            raise unreachable(self.host, self.port, exc, self.timeout) from exc
        self._conn = conn
        return conn, False

    def _exchange(self, conn: _Connection, request: HttpRequest) -> HttpResponse:
        headers = {"Content-Length": str(len(request.body))}
        if request.content_type is not None:
            headers["Content-Type"] = request.content_type
        conn.start_call()
        conn.request(request.method, request.path, body=request.body, headers=headers)
        with conn.getresponse() as response:
            body = _read_body(response)
            headers_seen = tuple((name.lower(), value) for name, value in response.getheaders())
            if response.will_close:
                self.close()
            return HttpResponse(response.status, headers_seen, body)


class _DeadlineSocket(socket.socket):
    """A socket whose sends and receives all give up at ``deadline`` (``time.monotonic()``).

    A socket's timeout bounds each blocking call, and ``http.client`` reads a
    reply with one ``recv_into`` per arrival of bytes, so a server sending a
    byte at a time restarts it with every byte. Setting the timeout to the
    time left before each call makes it one bound for them all. With
    ``deadline`` None, each call waits as the socket's timeout says.
    """

    deadline: float | None = None

    @classmethod
    def adopt(cls, plain: socket.socket) -> _DeadlineSocket:
        """Take over the connection of ``plain``, which is left detached."""
        timeout = plain.gettimeout()
        sock = cls(fileno=plain.detach())
        sock.settimeout(timeout)  # also puts the descriptor back in the matching blocking mode
        return sock

    def _wait_no_later_than_deadline(self) -> None:
        if self.deadline is None:
            return
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.settimeout(left)

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        self._wait_no_later_than_deadline()
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0, /) -> None:
        self._wait_no_later_than_deadline()
        super().sendall(data, flags)


class _Connection(http.client.HTTPConnection):
    """An ``HTTPConnection`` whose ``timeout`` bounds each call as a whole.

    As in ``HTTPConnection``, ``timeout`` bounds the connect; then each
    :meth:`start_call` gives the request and its reply ``timeout`` seconds in
    all, however the server spreads out the bytes.
    """

    def connect(self) -> None:
        super().connect()
        self.sock = _DeadlineSocket.adopt(self.sock)

    def start_call(self) -> None:
        """Start the clock for the request about to be sent and its reply."""
        sock = self.sock
        assert isinstance(sock, _DeadlineSocket), "start_call() needs a connected connection"
        sock.deadline = None if self.timeout is None else time.monotonic() + self.timeout


def _read_body(response: http.client.HTTPResponse) -> bytes:
    """The reply's body, refused when longer than MAX_BODY (unread, if it says so upfront)."""
    if response.length is not None:  # Content-Length
        if response.length > MAX_BODY:
            raise ProtocolError(f"the reply body exceeds {MAX_BODY} bytes")
        return response.read()  # not read(n): only read() raises IncompleteRead on a short body
    body = response.read(MAX_BODY + 1)  # chunked, or until the server closes
    if len(body) > MAX_BODY:
        raise ProtocolError(f"the reply body exceeds {MAX_BODY} bytes")
    return body


def _closed_by_peer(sock: socket.socket) -> bool:
    """True when the server closed (or broke) an idle connection: it is readable now.

    An idle HTTP connection has nothing to read; if it is readable, the
    server sent its FIN (or garbage): either way it cannot carry a request.
    """
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
