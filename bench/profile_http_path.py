"""CPU per HTTP request through the real protocol, app and runtime, without sockets.

Theory of operation
-------------------
wrk on a shared 2-core machine measures the kernel, wrk itself and the
neighbours as much as corosm. This script feeds raw request bytes to
:class:`~corosm.frontends.http.protocol.HttpConnection` objects with a fake
transport that only counts what is written, on a real (uv)loop, and reports
CPU microseconds per request (``time.process_time``) for:

* ``ok``: the constant-``Ok`` handler (the HTTP stack's own cost);
* ``read``: seed ``Read "x"`` through the key-value app and runtime;
* ``write``: seed ``Write "x" 1`` with an in-memory journal (no disk: the
  cost of the loop's own work per durable write, minus the fsync);
* ``durable``: the same write through ``corosm.open``'s real journal
  (fsync ``always``, group commit, the journal thread) in a temporary
  directory: the CPU of every thread of the process, hand-offs included.

``--conns`` connections each send ``--pipeline`` requests per read, then the
script waits for every reply before the next round (a closed loop, like wrk).
``--profile`` prints the cProfile of one scenario::

    taskset -c 0 .venv/bin/python bench/profile_http_path.py
    taskset -c 0 .venv/bin/python bench/profile_http_path.py --profile read
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

from corosm.apps.kv.machine import KVMachine
from corosm.frontends.http.app import KvHttpApp
from corosm.frontends.http.messages import HttpStats, Limits, Response
from corosm.frontends.http.protocol import HttpConnection
from corosm.runtime import Runtime
from corosm.runtime.durable import durable_runtime
from inprocess import ClosedLoop, main

BODIES = {
    "ok": b'Read "x"',
    "read": b'Read "x"',
    "write": b'Write "x" 1',
    "durable": b'Write "x" 1',
}


_OK = Response(200, b"Ok")


async def measure(kind: str, conns: int, pipeline: int, rounds: int) -> float:
    """CPU microseconds per request for ``kind`` (see the module docs)."""
    with tempfile.TemporaryDirectory(prefix="corosm-profile-") as data_dir:
        runtime = durable_runtime(KVMachine(), data_dir) if kind == "durable" else None
        return await _measure(kind, runtime or Runtime(KVMachine()), conns, pipeline, rounds)


async def _measure(
    kind: str, runtime: Runtime[Any, Any, Any], conns: int, pipeline: int, rounds: int
) -> float:
    await runtime.start()
    handler: Any = (lambda request: _OK) if kind == "ok" else KvHttpApp(runtime)
    new_handler: Callable[[], Any] = getattr(handler, "connection_handler", lambda: handler)
    body = BODIES[kind]
    one = b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    replies = ClosedLoop(lambda data: data.count(b"HTTP/1.1 "), conns * pipeline)
    connections = []
    for _ in range(conns):
        conn = HttpConnection(new_handler(), Limits(), HttpStats())
        conn.connection_made(replies.transport())  # type: ignore[arg-type]
        connections.append(conn)
    if kind == "read":  # something to read
        await runtime.submit(_write_x())
    cpu = await replies.cpu_seconds(connections, one * pipeline, rounds)
    await runtime.stop()
    return cpu / (rounds * conns * pipeline) * 1e6


def _write_x() -> Any:
    from corosm.apps.kv.inputs import Write

    return Write(b"x", b"1")


if __name__ == "__main__":
    main(__doc__, BODIES, measure, conns=64, unit="request")
