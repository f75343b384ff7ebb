"""What can go wrong when talking to a corosm server, as one small tree.

Every error the client raises on purpose derives from :class:`ClientError`,
itself a :class:`corosm.errors.CorosmError`::

    ClientError                      a call through the client did not succeed
    ├── InvalidRequest (ValueError)  the arguments cannot be sent (checked before any I/O)
    ├── ServerUnreachable            no connection: refused, unknown host, connect timeout
    ├── ConnectionLost               the connection broke or timed out before a full reply;
    │                                the request may or may not have been applied
    ├── ProtocolError                the reply is not valid HTTP or not a valid seed reply
    └── ServerReplyError             the server answered with an error status
        ├── RequestRejected          4xx: the request was wrong (``message`` says how)
        ├── ServerUnavailable        503: overloaded or stopping; ``retry_after`` seconds
        └── ServerFailed             other 5xx: the server could not do it

The split follows what a caller does next: fix the arguments (InvalidRequest,
RequestRejected), start or find the server (ServerUnreachable), retry later
(ServerUnavailable, ConnectionLost for idempotent calls), or report a bug or an
operational problem (ProtocolError, ServerFailed). The CLI maps the same
families to its exit codes.
"""

from __future__ import annotations

from corosm.errors import CorosmError


class ClientError(CorosmError):
    """A call through :class:`corosm.client.Client` or ``AsyncClient`` failed."""


class InvalidRequest(ClientError, ValueError):
    """The arguments cannot be sent as given (e.g. a value outside 64 bits)."""


class ServerUnreachable(ClientError):
    """No connection could be made to ``host:port``."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(
            f"cannot connect to {host}:{port}: {reason} (is the server running on {host}:{port}?)"
        )
        self.host = host
        self.port = port
        self.reason = reason


class ConnectionLost(ClientError):
    """The connection failed after the request was (perhaps) sent.

    The request may or may not have been applied by the server.
    """


class ProtocolError(ClientError):
    """The server's reply does not follow HTTP or the seed protocol."""


class ServerReplyError(ClientError):
    """The server answered with an error status; ``message`` is what it said."""

    def __init__(self, status: int, message: str) -> None:
        shown = message or "(no message)"
        super().__init__(f"server answered {status}: {shown}")
        self.status = status
        self.message = message


class RequestRejected(ServerReplyError):
    """A 4xx reply: the server says the request itself was wrong."""


class ServerUnavailable(ServerReplyError):
    """A 503 reply: the server is overloaded or stopping. Retry after ``retry_after`` s."""

    def __init__(self, status: int, message: str, retry_after: float | None) -> None:
        super().__init__(status, message)
        self.retry_after = retry_after


class ServerFailed(ServerReplyError):
    """A 5xx reply other than 503: the server could not carry out the request."""
