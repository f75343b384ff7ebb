"""CPU per RESP command through the real protocol, server and runtime, without sockets.

Theory of operation
-------------------
redis-benchmark on a shared 2-core machine measures the kernel, the
benchmark itself and the neighbours as much as corosm. This script feeds raw
command bytes to :class:`~corosm.frontends.resp.server.RespServerProtocol`
objects with a fake transport that only counts what is written, on a real
(uv)loop, and reports CPU microseconds per command (``time.process_time``) for:

* ``get``: ``GET x`` through the key-value machine and runtime;
* ``set``: ``SET x 1`` with an in-memory journal (no disk: the loop's own
  work per durable write, minus the fsync);
* ``mixed``: ``SET x 1`` then ``GET x`` on one connection, alternating (the
  reads wait for the writes before them: read-your-writes).

``--conns`` connections each send ``--pipeline`` commands per read, then the
script waits for every reply before the next round (a closed loop, like
redis-benchmark). ``--profile`` prints the cProfile of one scenario. For
stable figures count instructions instead of seconds: run one scenario under
``valgrind --tool=callgrind`` at two ``--requests`` and divide the difference
of the totals by the difference of the counts::

    taskset -c 0 .venv/bin/python bench/profile_resp_path.py
    taskset -c 0 .venv/bin/python bench/profile_resp_path.py --profile get --pipeline 16
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/profile_resp_path.py --only get --pipeline 16 \\
        --requests 20000 --repeat 1
"""

from __future__ import annotations

from typing import Any

from corosm.apps.kv.inputs import Write
from corosm.apps.kv.machine import KVMachine
from corosm.frontends.resp.protocol import encode_command
from corosm.frontends.resp.server import RespLimits, RespServerProtocol, _Shared
from corosm.runtime import Runtime
from inprocess import ClosedLoop, main

#: Scenario -> (the commands one pipelined step sends, in turn; the reply bytes each gets).
COMMANDS: dict[str, tuple[tuple[bytes, bytes], ...]] = {
    "get": ((encode_command("GET", "x"), b"$1\r\n1\r\n"),),
    "set": ((encode_command("SET", "x", "1"), b"+OK\r\n"),),
    "mixed": (
        (encode_command("SET", "x", "1"), b"+OK\r\n"),
        (encode_command("GET", "x"), b"$1\r\n1\r\n"),
    ),
}


async def measure(kind: str, conns: int, pipeline: int, rounds: int) -> float:
    """CPU microseconds per command for ``kind`` (see the module docs)."""
    runtime: Runtime[Any, Any, Any] = Runtime(KVMachine())
    await runtime.start()
    await runtime.submit(Write(b"x", b"1"))  # something to read
    steps = COMMANDS[kind]
    burst = b"".join(steps[i % len(steps)][0] for i in range(pipeline))
    expected = sum(len(steps[i % len(steps)][1]) for i in range(pipeline)) * conns
    replies = ClosedLoop(len, expected)  # counted in bytes
    shared = _Shared(runtime, {}, RespLimits())
    connections = []
    for _ in range(conns):
        conn = RespServerProtocol(shared)
        conn.connection_made(replies.transport())  # type: ignore[arg-type]
        connections.append(conn)
    cpu = await replies.cpu_seconds(connections, burst, rounds)
    for conn in connections:
        conn.connection_lost(None)
    await runtime.stop()
    return cpu / (rounds * conns * pipeline) * 1e6


if __name__ == "__main__":
    main(__doc__, COMMANDS, measure, conns=50, unit="command")
