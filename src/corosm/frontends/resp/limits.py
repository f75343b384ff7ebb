"""The RESP server's limits: sizes, times and the listen backlog, in one value.

Theory of operation
-------------------
Everything that bounds what one client (or all of them together) can make the
server hold or wait for is a field of :class:`RespLimits`, given once to
:func:`~corosm.frontends.resp.server.start_resp_server`. The HTTP front end has
the same kind of value (:class:`corosm.frontends.http.messages.Limits`); the
fields differ because the protocols do, the protections do not:

* sizes: one argument, one command, arguments per command (the parser refuses
  more, a protocol error), and the bytes of *unfinished* commands across all
  connections (a shared budget: the connection whose bytes would go past it
  gets an error and is closed);
* times: a command that started arriving must be complete within
  ``request_timeout`` (slow clients cannot hold a connection with one byte a
  second), and a connection with nothing in progress and nothing owed is closed
  after ``idle_timeout``;
* flow: ``max_pending`` replies owed before a connection stops reading, and the
  listening socket's ``backlog``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from corosm.errors import UsageError
from corosm.frontends.resp.protocol import (
    DEFAULT_MAX_ARGS,
    DEFAULT_MAX_BULK_LEN,
    DEFAULT_MAX_COMMAND_BYTES,
)

__all__ = ["RespLimits"]


@dataclass(frozen=True, slots=True)
class RespLimits:
    """Limits of one RESP server. Sizes in bytes, times in seconds.

    ``max_bulk_len``, ``max_args`` and ``max_command_bytes`` bound one command
    (going past them is a protocol error: the reply says which, the connection
    closes). ``max_buffered_bytes`` bounds the bytes of unfinished commands of
    all connections together: the default equals ``max_command_bytes``, so one
    command of the largest size can always arrive on a quiet server, while six
    half-sent 64 MiB ones cannot hold 384 MiB. ``max_pending`` is how many
    replies a connection may owe before it stops reading (it reads again at
    half). ``request_timeout`` starts when a command's first byte arrives;
    ``idle_timeout`` counts while a connection has no command in progress and
    no reply owed (Redis's ``timeout`` setting, which Redis leaves off; pooled
    clients such as redis-py reconnect when it fires).
    """

    max_bulk_len: int = DEFAULT_MAX_BULK_LEN
    max_args: int = DEFAULT_MAX_ARGS
    max_command_bytes: int = DEFAULT_MAX_COMMAND_BYTES
    max_buffered_bytes: int = DEFAULT_MAX_COMMAND_BYTES
    max_pending: int = 1024
    request_timeout: float = 30.0
    idle_timeout: float = 300.0
    backlog: int = 1024

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "int" and (type(value) is not int or value < 1):
                raise UsageError(f"RespLimits.{field.name} must be an int >= 1, not {value!r}")
            if field.type == "float" and (
                type(value) not in (int, float) or not 0 < value < float("inf")
            ):
                raise UsageError(f"RespLimits.{field.name} must be > 0 seconds, not {value!r}")
