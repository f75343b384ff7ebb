"""Pieces the sync and asyncio transports share: argument checks and error wording."""

from __future__ import annotations

import socket
import threading

from corosm.client.errors import InvalidRequest, ServerUnreachable

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_TIMEOUT = 10.0  # seconds; a durable write under load takes milliseconds


def check_address(host: str, port: int, timeout: float | None) -> None:
    """Reject an address or timeout that cannot work, before any I/O."""
    if not isinstance(host, str) or not host:
        raise InvalidRequest(f"host must be a non-empty str, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidRequest(f"port must be an int in 1..65535, got {port!r}")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout <= _MAX_TIMEOUT  # also refuses nan; inf would overflow a wait
    ):
        raise InvalidRequest(
            f"timeout must be a number of seconds above 0 and at most {_MAX_TIMEOUT:.0f}, "
            f"or None, got {timeout!r}"
        )


_MAX_TIMEOUT = threading.TIMEOUT_MAX  # the longest a socket or a lock may wait


def host_header(host: str, port: int) -> str:
    """The Host header value; IPv6 literals go in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def unreachable(
    host: str, port: int, exc: BaseException, timeout: float | None
) -> ServerUnreachable:
    """Word a failed connect the way a person at a shell wants to read it."""
    if isinstance(exc, ConnectionRefusedError):
        reason = "connection refused"
    elif isinstance(exc, socket.gaierror):
        reason = f"unknown host ({exc.strerror or exc})"
    elif isinstance(exc, TimeoutError):
        reason = f"no answer within {timeout} s" if timeout is not None else "connect timed out"
    else:
        reason = str(exc) or type(exc).__name__
    return ServerUnreachable(host, port, reason)
