"""A stand-alone RESP key-value server: ``python -m corosm.frontends.resp``.

Theory of operation
-------------------
The smallest assembly of the pieces: recover the journal directory (if one is
given) into a :class:`~corosm.apps.kv.machine.KVMachine` state, run it on a
:class:`~corosm.runtime.Runtime` whose ``Append`` effects go to that journal,
and serve RESP on one port. It exists for benchmarks against
``redis-server`` and for the kill -9 durability test until ``corosm serve
--resp-port`` assembles the HTTP and RESP front ends on one machine. It prints
``ready <host> <port>`` on stdout once it accepts connections (``--port 0``
picks a free port) and stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from corosm.apps.kv.machine import KVMachine
from corosm.core.effects import Append
from corosm.frontends.resp.server import start_resp_server, stop_resp_server
from corosm.io.journal import JournalExecutor, JournalOptions, open_journal
from corosm.runtime import Runtime


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m corosm.frontends.resp",
        description="Serve corosm's key-value store over the Redis protocol (RESP2/RESP3).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6380, help="0: any free port")
    parser.add_argument("--journal", metavar="DIR", help="journal directory (default: memory only)")
    parser.add_argument("--fsync", choices=["always", "interval", "never"], default="always")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    machine = KVMachine()
    runtime_kw: dict[str, Any] = {}
    if args.journal:
        journal, recovered = open_journal(
            args.journal, machine, options=JournalOptions(fsync=args.fsync)
        )
        runtime_kw["state"] = recovered.state
        runtime_kw["executors"] = {Append: JournalExecutor(journal, machine.encode_record)}
    runtime = Runtime(machine, **runtime_kw)
    await runtime.start()
    server = await start_resp_server(runtime, args.host, args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"ready {args.host} {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await stop_resp_server(server)
    await runtime.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio works, a little slower
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
