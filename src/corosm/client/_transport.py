"""Pieces the sync and asyncio transports share: argument checks and error wording."""

from __future__ import annotations

import ipaddress
import socket
import threading

from corosm.client.errors import ConnectionLost, InvalidRequest, ServerUnreachable
from corosm.client.http11 import EmptyReply

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_TIMEOUT = 10.0  # seconds; a durable write under load takes milliseconds


def check_address(host: str, port: int, timeout: float | None) -> None:
    """Reject an address or timeout that cannot work, before any I/O."""
    _check_host(host)
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


def _check_host(host: str) -> None:
    """A host name or IP address the resolver can take; say what is wrong otherwise."""
    if not isinstance(host, str) or not host:
        raise InvalidRequest(f"host must be a non-empty str, got {host!r}")
    expected = "expected a host name or IP address such as 'localhost' or '127.0.0.1'"
    shown = repr(host) if len(host) <= 80 else f"{host[:80]!r}..."
    if "/" in host:
        raise InvalidRequest(f"host {shown} looks like a URL: {expected}, and the port apart")
    if not host.isprintable() or " " in host:  # isprintable() is False for other blanks
        raise InvalidRequest(f"host {shown} contains spaces or control characters: {expected}")
    if ":" in host:
        _check_ipv6(host, expected)
    try:
        host.encode("idna")  # what the resolver does with it: refuses empty or long labels
    except UnicodeError as exc:
        reason = str(exc.__cause__ or exc)
        raise InvalidRequest(
            f"host {shown} is not a valid host name ({reason}): {expected}"
        ) from None


def _check_ipv6(host: str, expected: str) -> None:
    """A host with a colon must be an IPv6 address (with a %zone, perhaps)."""
    if host.startswith("[") and host.endswith("]"):
        raise InvalidRequest(f"host {host!r}: write an IPv6 address without brackets")
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        name, _, port = host.rpartition(":")
        if port.isdecimal() and ":" not in name:
            raise InvalidRequest(
                f"host {host!r} includes a port: pass host={name!r} and port={port} apart"
            ) from None
        raise InvalidRequest(f"host {host!r} is not an IPv6 address: {expected}") from None


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


def lost(host: str, port: int, exc: BaseException, timeout: float | None) -> ConnectionLost:
    """Word a connection that failed once the request was (perhaps) sent."""
    if isinstance(exc, TimeoutError):
        return ConnectionLost(f"no reply from {host}:{port} within {timeout} s")
    if isinstance(exc, EmptyReply | ConnectionResetError | BrokenPipeError):
        detail = "" if isinstance(exc, EmptyReply) else f" ({exc})"
        return ConnectionLost(
            f"{host}:{port} closed the connection without replying{detail};"
            " the request may or may not have been applied"
        )
    return ConnectionLost(f"connection to {host}:{port} failed: {exc}")
