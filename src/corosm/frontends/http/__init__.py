"""The HTTP front end: a small, fast HTTP/1.1 server, any machine's routes, the key-value ones.

- :mod:`~corosm.frontends.http.messages`: Request, Response, Deferred, Later, Limits, HttpStats.
- :mod:`~corosm.frontends.http.protocol`: one ``asyncio.Protocol`` per connection
  over httptools (keep-alive, pipelining in order, limits, timeouts, flow control).
- :mod:`~corosm.frontends.http.server`: :func:`start_http_server` and graceful shutdown.
- :mod:`~corosm.frontends.http.machineapp`: :class:`MachineHttpApp`, any machine
  (JSON on ``POST /``, health, metrics, read-your-writes, failures to statuses).
- :mod:`~corosm.frontends.http.app`: :class:`KvHttpApp`, that app with the
  key-value routes (seed protocol, REST) in place of JSON.
- :mod:`~corosm.frontends.http.metrics`: the Prometheus text page.
"""

from corosm.frontends.http.messages import (
    Deferred,
    Handler,
    HttpStats,
    Later,
    Limits,
    PerConnection,
    Request,
    Response,
    encode_response,
    error_response,
)
from corosm.frontends.http.protocol import HttpConnection
from corosm.frontends.http.server import HttpServer, start_http_server

__all__ = [
    "Deferred",
    "Handler",
    "HttpConnection",
    "HttpServer",
    "HttpStats",
    "Later",
    "Limits",
    "PerConnection",
    "Request",
    "Response",
    "encode_response",
    "error_response",
    "start_http_server",
]
