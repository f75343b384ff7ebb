"""The asyncio client: one connection, pipelined requests, replies in order.

Several tasks may call one :class:`AsyncClient` at once. Each call writes its
request at once (HTTP/1.1 pipelining), then waits for its *turn*: the future
that the previous call on the same connection resolves once it has read its
reply. Replies come back in request order, so turn order is reply order and no
background reader task is needed.

If a call fails mid-reply, or is cancelled or times out, the byte stream can no
longer be trusted: the connection is marked broken and closed, and calls queued
behind it fail with :class:`ConnectionLost` (their requests may have been
applied). When the server instead ended the connection cleanly (``Connection:
close``, or EOF before any byte of a reply: an idle keep-alive timeout), the
waiting calls are sent once more on a new connection when they are idempotent
(all but ``submit``), so a repeat cannot do harm; a ``submit`` fails with
:class:`ConnectionLost` instead (its input may or may not have been applied).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from corosm.client.errors import ConnectionLost
from corosm.client.http11 import READ_SIZE, EmptyReply, ReplyReader, encode_request
from corosm.client.protocol import Call, HttpRequest, HttpResponse

T = TypeVar("T")


class _Retry(Exception):
    """The server ended the connection without reading this request: send it again."""


class _Connection:
    """One TCP connection and the bookkeeping of the calls pipelined on it."""

    __slots__ = ("broken", "last_turn", "reader", "replies", "retry_safe", "writer", "written")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.replies = ReplyReader()  # parses what `reader` gives; keeps the next replies' bytes
        self.last_turn: asyncio.Future[None] | None = None
        self.written = 0  # requests written so far
        self.broken = False
        self.retry_safe = False  # broken by the server's clean close, not by an error

    def usable(self) -> bool:
        return not (self.broken or self.writer.is_closing() or self.reader.at_eof())

    def break_off(self, *, retry_safe: bool) -> None:
        if not self.broken:
            self.broken = True
            self.retry_safe = retry_safe
        self.writer.close()


class AsyncClient:
    """An asyncio client for a corosm server: key-value (seed protocol, REST) or any machine."""

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
        self._connect_lock = asyncio.Lock()

    # --- the seed protocol ----------------------------------------------------------

    async def write(self, key: str, value: int) -> None:
        """Store the 64-bit int ``value`` under ``key`` (seed ``Write``)."""
        return await self._run(protocol.write_call(key, value))

    async def read(self, key: str) -> int | None:
        """The int under ``key``, or None when absent (seed ``Read``)."""
        return await self._run(protocol.read_call(key))

    async def reset(self) -> None:
        """Empty the whole store (seed ``DELETE /``)."""
        return await self._run(protocol.reset_call())

    # --- REST -----------------------------------------------------------------------

    async def get(self, key: bytes | str) -> bytes | None:
        """The raw value under ``key``, or None when absent."""
        return await self._run(protocol.get_call(key))

    async def put(self, key: bytes | str, value: bytes) -> bool:
        """Store ``value`` under ``key``; True when the key did not exist before."""
        return await self._run(protocol.put_call(key, value))

    async def delete(self, key: bytes | str) -> bool:
        """Remove ``key``; True when it existed."""
        return await self._run(protocol.delete_call(key))

    # --- any machine ----------------------------------------------------------------

    async def submit(self, input: Any, output_type: Any = None) -> Any:
        """Send ``input`` to the served machine (``POST /``, JSON); return its output.

        As :meth:`corosm.client.Client.submit`; concurrent calls pipeline on
        one connection, and their replies reflect this connection's earlier
        writes (read-your-writes, as the machine declares its order).
        """
        return await self._run(protocol.submit_call(input, output_type))

    # --- operations -----------------------------------------------------------------

    async def health(self) -> str | None:
        """None when the server is healthy, else its reason (e.g. a failed journal)."""
        return await self._run(protocol.health_call())

    async def metrics(self) -> str:
        """The server's metrics in Prometheus text format."""
        return await self._run(protocol.metrics_call())

    # --- lifecycle ------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection; calls still waiting on it fail with ConnectionLost."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.break_off(retry_safe=False)
            with contextlib.suppress(OSError):
                await conn.writer.wait_closed()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient(host={self.host!r}, port={self.port}, timeout={self.timeout})"

    # --- transport ------------------------------------------------------------------

    async def _run(self, call: Call[T]) -> T:
        return call.interpret(await self._send(call.request))

    async def _send(self, request: HttpRequest) -> HttpResponse:
        data = encode_request(request, self._host_header)
        for attempt in range(2):
            conn = await self._connection()
            try:
                return await self._exchange(conn, data)
            except _Retry:
                if request.idempotent and attempt == 0:
                    continue
                raise lost(self.host, self.port, EmptyReply(), self.timeout) from None
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    async def _connection(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.usable():
            return conn
        async with self._connect_lock:
            conn = self._conn
            if conn is not None and conn.usable():
                return conn  # another task connected while we waited for the lock
            try:
                async with asyncio.timeout(self.timeout):
                    reader, writer = await asyncio.open_connection(self.host, self.port)
            except (OSError, TimeoutError) as exc:
                raise unreachable(self.host, self.port, exc, self.timeout) from exc
            self._conn = _Connection(reader, writer)
            return self._conn

    async def _exchange(self, conn: _Connection, data: bytes) -> HttpResponse:
        # No await between taking the turn and writing: turn order is write order.
        previous = conn.last_turn
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        conn.last_turn = turn
        position = conn.written
        conn.written += 1
        conn.writer.write(data)
        try:
            async with asyncio.timeout(self.timeout):
                await conn.writer.drain()
                if previous is not None:
                    await asyncio.wait((previous,))  # wait() never cancels `previous`
                if conn.broken:
                    if conn.retry_safe:
                        raise _Retry
                    raise ConnectionLost(
                        f"the connection to {self.host}:{self.port} broke while this request"
                        " waited for its reply"
                    )
                response, must_close = await _read_reply(conn)
        except EmptyReply:
            conn.break_off(retry_safe=True)
            if position == 0:  # a fresh connection closed at once: not a stale keep-alive
                raise lost(self.host, self.port, EmptyReply(), self.timeout) from None
            raise _Retry from None
        except OSError as exc:  # TimeoutError included
            conn.break_off(retry_safe=False)
            raise lost(self.host, self.port, exc, self.timeout) from exc
        except BaseException:  # ProtocolError, cancellation: the stream is out of step
            conn.break_off(retry_safe=False)
            raise
        finally:
            turn.set_result(None)
        if must_close:
            conn.break_off(retry_safe=True)
        return response


async def _read_reply(conn: _Connection) -> tuple[HttpResponse, bool]:
    """The next reply on ``conn``: read until its :class:`ReplyReader` has a whole one."""
    replies = conn.replies
    while (reply := replies.next_reply()) is None:
        replies.feed(await conn.reader.read(READ_SIZE))
    return reply
