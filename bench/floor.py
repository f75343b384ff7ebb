"""How fast can a durable write be in Python here? The floor beside corosm.

Theory of operation
-------------------
Issue 13 asks durable seed writes at 64 connections to reach 0.65x the
constant-``Ok`` stack. This script asks whether *any* Python server on this
machine can: ``serve`` runs the least a durable seed write needs, with none
of corosm's layers (no machine, no stepper, no runtime, no ordering, no
limits, no error handling): uvloop, the same httptools parser, a ``dict``, one
writer thread with group commit (every record that arrived while the last
``fdatasync`` ran goes out in one ``write`` and one ``fdatasync``) and one
reply per write, sent only after its batch is on disk. ``--mode inline``
does the same with no thread: what one loop iteration parsed is written and
fsynced on the loop itself, then answered (the blocking design, batched per
iteration). ``--mode constant`` is the same server answering ``Ok`` at once,
with no journal.

``compare`` starts, one at a time and in alternating rounds, corosm's
constant-``Ok`` stack (the target's reference), corosm with ``--fsync
always``, the blocking design (corosm with each fsync inline on the loop,
the other target's reference) and both floor servers: each pinned as ``corosm bench`` pins
(server on the first core, ``wrk -t1 -c64`` with the seed-write script on
the others), and prints each round's requests a second, the server's CPU
microseconds a request, and the ratios to the constant stack and to the
blocking design::

    .venv/bin/python bench/floor.py compare --rounds 3 --seconds 4

It is not a server for anything else: it trusts its input and the disk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Any

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nOk"
_FRAME = struct.Struct("<II")  # length, crc32: what a journal record needs at the least


class GroupCommit:
    """One thread: write every record queued since the last fdatasync, sync, then reply."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.loop = loop
        self.queue: list[tuple[bytes, Any]] = []
        self.wake = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def submit(self, record: bytes, conn: Any) -> None:
        with self.wake:
            self.queue.append((record, conn))
            if len(self.queue) == 1:
                self.wake.notify()

    def _run(self) -> None:
        while True:
            with self.wake:
                while not self.queue:
                    self.wake.wait()
                batch, self.queue = self.queue, []
            frames = [_FRAME.pack(len(r), zlib.crc32(r)) + r for r, _ in batch]
            os.write(self.fd, b"".join(frames))
            os.fdatasync(self.fd)
            self.loop.call_soon_threadsafe(_reply, [conn for _, conn in batch])


class InlineCommit:
    """No thread: what one loop iteration parsed is written and fsynced on the loop, then answered.

    The loop blocks for each fdatasync (as the blocking design does), but once
    per iteration's batch, not once per write; it saves the thread's wake-ups.
    """

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.loop = loop
        self.queue: list[tuple[bytes, Any]] = []

    def submit(self, record: bytes, conn: Any) -> None:
        self.queue.append((record, conn))
        if len(self.queue) == 1:
            self.loop.call_soon(self._commit)

    def _commit(self) -> None:
        batch, self.queue = self.queue, []
        frames = [_FRAME.pack(len(r), zlib.crc32(r)) + r for r, _ in batch]
        os.write(self.fd, b"".join(frames))
        os.fdatasync(self.fd)
        _reply([conn for _, conn in batch])


def _reply(conns: list[Any]) -> None:
    counts: dict[Any, int] = {}
    for conn in conns:
        counts[conn] = counts.get(conn, 0) + 1
    for conn, n in counts.items():
        if not conn.transport.is_closing():
            conn.transport.write(_OK * n)


class Conn(asyncio.Protocol):
    """One connection: parse, apply, journal (or answer at once in constant mode)."""

    def __init__(
        self, store: dict[bytes, bytes], journal: GroupCommit | InlineCommit | None
    ) -> None:
        import httptools

        self.store, self.journal = store, journal
        self.parser = httptools.HttpRequestParser(self)
        self.body = b""
        self.out: list[bytes] = []
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        if self.out:
            self.transport.write(b"".join(self.out))
            self.out.clear()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        body, self.body = self.body, b""
        if self.journal is None:
            self.out.append(_OK)
            return
        _, key, value = body.split(b" ", 2)  # Write "k" v
        self.store[key] = value
        self.journal.submit(body, self)


def serve(port: int, mode: str, data_dir: str) -> None:
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        journal: GroupCommit | InlineCommit | None = None
        path = os.path.join(data_dir, "floor.log")
        if mode == "durable":
            journal = GroupCommit(path, loop)
        elif mode == "inline":
            journal = InlineCommit(path, loop)
        store: dict[bytes, bytes] = {}
        server = await loop.create_server(lambda: Conn(store, journal), "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def compare(rounds: int, seconds: float, conns: int) -> None:
    from corosm.bench import procs, wrk

    pinning = procs.Pinning.for_this_machine()
    serve_cmd = [sys.executable, "-m", "corosm.bench.serve", "--host", "127.0.0.1"]
    floor_cmd = [sys.executable, __file__, "serve"]
    contenders = {
        "constant": [*serve_cmd, "--app", "constant"],
        "corosm": [*serve_cmd, "--fsync", "always"],
        "blocking": [*serve_cmd, "--fsync", "always", "--journal-mode", "blocking"],
        "floor-constant": [*floor_cmd, "--mode", "constant"],
        "floor-durable": [*floor_cmd, "--mode", "durable"],
        "floor-inline": [*floor_cmd, "--mode", "inline"],
    }
    rps: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    print(f"pinning: {pinning.describe()}; wrk -t1 -c{conns} seed writes, {seconds:g} s a run")
    with tempfile.TemporaryDirectory(prefix="corosm-floor-") as scratch:
        script = wrk.write_script(Path(scratch), "write")
        for r in range(rounds):
            order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
            for name in order:
                data_dir = Path(tempfile.mkdtemp(dir=scratch))
                port = procs.free_port()
                argv = [*contenders[name], "--port", str(port), "--data-dir", str(data_dir)]
                log = Path(scratch) / f"{name}.log"
                with procs.running(pinning.wrap_server(argv), [port], log) as proc:
                    load = wrk.wrk_command(f"http://127.0.0.1:{port}/", script, conns, seconds)
                    before = procs.cpu_seconds(proc.pid)
                    done = subprocess.run(
                        pinning.wrap_load(load), capture_output=True, text=True, check=True
                    )
                    after = procs.cpu_seconds(proc.pid, end=True)
                    result = wrk.parse_wrk_output(done.stdout)
                    with contextlib.suppress(Exception):
                        procs.stop_process(proc)
                used = (after.process - before.process) if after and before else float("nan")
                rps[name].append(result.ok_rps)
                cpu[name].append(used / max(1, result.requests - result.errors) * 1e6)
                print(
                    f"round {r + 1} {name:>14}: {result.ok_rps:9,.0f} req/s, "
                    f"{cpu[name][-1]:5.1f} us CPU a request, {result.errors} errors",
                    flush=True,
                )
    for reference in ("constant", "blocking"):
        print(f"\nmedians of per-round ratios to {reference}:")
        for name in contenders:
            ratios = [a / b for a, b in zip(rps[name], rps[reference], strict=True)]
            print(
                f"  {name:>14}: {statistics.median(ratios):.2f}x "
                f"(rounds {', '.join(f'{x:.2f}' for x in ratios)}), "
                f"{statistics.median(cpu[name]):.1f} us CPU a request"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the floor server")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--mode", choices=["durable", "inline", "constant"], default="durable")
    s.add_argument("--data-dir", required=True)
    c = sub.add_parser("compare", help="the floor beside corosm, alternating rounds")
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--seconds", type=float, default=4.0)
    c.add_argument("--conns", type=int, default=64)
    args = ap.parse_args()
    if args.command == "serve":
        serve(args.port, args.mode, args.data_dir)
    else:
        compare(args.rounds, args.seconds, args.conns)


if __name__ == "__main__":
    main()
