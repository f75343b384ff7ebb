"""The blocking client: one keep-alive TCP connection, reused.

Each method builds its :class:`~corosm.client.protocol.Call` and hands the
request to :meth:`Client._send`, which owns the connection: it writes the
request (:func:`~corosm.client.http11.encode_request`) and feeds what it reads
to the connection's :class:`~corosm.client.http11.ReplyReader`, the same
reply parser the asyncio client uses, so both refuse a bad reply alike.
Connect errors and errors after sending are told apart, because only the
former guarantee that the server saw nothing (:class:`ServerUnreachable` vs
:class:`ConnectionLost`).

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
:class:`ProtocolError`, unread when its Content-Length announces it. After any
error the connection is closed, since its byte stream is out of step.

A ``Client`` is not thread-safe: use one per thread.
"""

from __future__ import annotations

import select
import socket
import time
from types import TracebackType
from typing import Any, TypeVar

from corosm.client import protocol
from corosm.client._transport import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT,
    check_address,
    host_header,
    lost,
    unreachable,
)
from corosm.client.http11 import READ_SIZE, EmptyReply, ReplyReader, encode_request
from corosm.client.protocol import Call, HttpRequest, HttpResponse

T = TypeVar("T")

# Failures that mean "the server closed this connection before reading our
# request": safe to retry once on a fresh connection.
_STALE = (EmptyReply, BrokenPipeError, ConnectionResetError)


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
        self._host_header = host_header(host, port)
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
        lists...), or decoded into ``output_type`` when given. An input
        JSON cannot carry (a NaN or an infinity in it) raises
        :class:`InvalidRequest` naming where, before anything is sent. A 4xx
        raises :class:`RequestRejected` (its message names the field), a 503
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
        data = encode_request(request, self._host_header)
        for attempt in range(2):
            conn, reused = self._connect(check_open=not request.idempotent)
            try:
                return self._exchange(conn, data)
            except _STALE as exc:
                self.close()
                if reused and attempt == 0 and request.idempotent:
                    continue
                raise lost(self.host, self.port, exc, self.timeout) from exc
            except OSError as exc:  # TimeoutError included
                self.close()
                raise lost(self.host, self.port, exc, self.timeout) from exc
            except BaseException:  # ProtocolError, KeyboardInterrupt: the stream is out of step
                self.close()
                raise
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def _connect(self, check_open: bool = False) -> tuple[_Connection, bool]:
        """The open connection and whether it served a request before.

        ``check_open`` first drops a kept-alive connection that the server
        has closed meanwhile, for a request that must not be sent twice.
        """
        if self._conn is not None:
            if not (check_open and _closed_by_peer(self._conn.sock)):
                return self._conn, True
            self.close()
        try:
            sock = socket.create_connection((self.host, self.port), self.timeout)
        except OSError as exc:
            raise unreachable(self.host, self.port, exc, self.timeout) from exc
        try:
            # A request is one send(); no reason to let Nagle hold back the next one.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            sock.close()
            raise unreachable(self.host, self.port, exc, self.timeout) from exc
        self._conn = _Connection(sock)
        return self._conn, False

    def _exchange(self, conn: _Connection, data: bytes) -> HttpResponse:
        """Send one request and read its reply, all within ``timeout``."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        sock, replies = conn.sock, conn.replies
        _wait_no_later_than(sock, deadline)
        sock.sendall(data)
        while (reply := replies.next_reply()) is None:
            _wait_no_later_than(sock, deadline)
            replies.feed(sock.recv(READ_SIZE))
        response, must_close = reply
        if must_close or replies.buffered:  # bytes nobody asked for: the stream is out of step
            self.close()
        return response


class _Connection:
    """One keep-alive connection: its socket and the replies read from it."""

    __slots__ = ("replies", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.replies = ReplyReader()

    def close(self) -> None:
        self.sock.close()


def _wait_no_later_than(sock: socket.socket, deadline: float | None) -> None:
    """Let the socket's next blocking call wait until ``deadline`` (``time.monotonic()``).

    A socket's timeout bounds each call, and a reply may take many reads (a
    server sending a byte at a time restarts a per-read timeout with each
    byte); setting it to the time left before each call makes it one bound
    for them all. With ``deadline`` None, the socket blocks as it was made to.
    """
    if deadline is None:
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    sock.settimeout(left)


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
