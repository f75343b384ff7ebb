"""Listening socket, the set of live connections, and graceful shutdown.

Theory of operation
-------------------
:func:`start_http_server` binds with ``loop.create_server`` and a protocol
factory that registers each :class:`HttpConnection` in a set; a connection
removes itself when it is lost. A handler that offers ``connection_handler()``
(:class:`~corosm.frontends.http.messages.PerConnection`) gets asked for one
handler per connection, which is how the key-value app orders a connection's
reads after its own writes. :meth:`HttpServer.shutdown` is the graceful
stop: close the listening socket (no new connections), ask every connection to
answer what it has fully received and then close, wait (bounded) until the set
is empty, and abort whatever is left. The runtime must still be running while
this happens, so that in-flight replies can complete: stop the HTTP server
first, then the runtime.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from corosm.frontends.http.messages import Handler, HttpStats, Limits
from corosm.frontends.http.protocol import HttpConnection


class HttpServer:
    """A running HTTP server: its asyncio server, its connections, its counters."""

    def __init__(self, handler: Handler, limits: Limits, stats: HttpStats) -> None:
        self.handler = handler
        # Per-connection handlers (read-your-writes) when the handler offers them.
        per_connection = getattr(handler, "connection_handler", None)  # see PerConnection
        self._new_handler: Callable[[], Handler] = (
            per_connection if callable(per_connection) else lambda: handler
        )
        self.limits = limits
        self.stats = stats
        self.server: asyncio.Server | None = None
        self._connections: set[HttpConnection] = set()
        self._all_closed = asyncio.Event()
        self._all_closed.set()

    def _make_connection(self) -> HttpConnection:
        conn = HttpConnection(self._new_handler(), self.limits, self.stats, self._forget)
        self._connections.add(conn)
        self._all_closed.clear()
        return conn

    def _forget(self, conn: HttpConnection) -> None:
        self._connections.discard(conn)
        if not self._connections:
            self._all_closed.set()

    @property
    def port(self) -> int:
        """The port bound (useful after binding port 0)."""
        assert self.server is not None and self.server.sockets, "server is not listening"
        port = self.server.sockets[0].getsockname()[1]
        assert isinstance(port, int)
        return port

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def wait_no_connections(self, timeout: float = 5.0) -> None:
        """Wait until no connection is open (raises ``TimeoutError`` after ``timeout``)."""
        await asyncio.wait_for(self._all_closed.wait(), timeout)

    async def shutdown(self, grace: float = 10.0) -> None:
        """Stop accepting, let in-flight replies finish (at most ``grace`` s), then close."""
        if self.server is not None:
            self.server.close()
        for conn in list(self._connections):
            conn.shutdown()
        try:
            await asyncio.wait_for(self._all_closed.wait(), grace)
        except TimeoutError:
            for conn in list(self._connections):
                conn.abort()
            await asyncio.wait_for(self._all_closed.wait(), 1.0)
        if self.server is not None:
            await self.server.wait_closed()


async def start_http_server(
    handler: Handler,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    limits: Limits | None = None,
    stats: HttpStats | None = None,
    sock: socket.socket | None = None,
    backlog: int = 1024,
) -> HttpServer:
    """Listen on ``host:port`` (or on ``sock``) and serve ``handler``.

    ``handler`` is any callable from :class:`Request` to a reply, e.g. a
    :class:`corosm.frontends.http.app.KvHttpApp`. Port 0 picks a free port;
    read it back from :attr:`HttpServer.port`.
    """
    if stats is None:
        stats = getattr(handler, "http_stats", None) or HttpStats()
    server = HttpServer(handler, limits or Limits(), stats)
    loop = asyncio.get_running_loop()
    if sock is not None:
        server.server = await loop.create_server(server._make_connection, sock=sock)
    else:
        server.server = await loop.create_server(
            server._make_connection, host, port, backlog=backlog, reuse_address=True
        )
    return server
