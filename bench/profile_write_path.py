"""Profile the durable write path: the real server, in-process, under wrk load.

Theory of operation
-------------------
Starts :class:`corosm.server.Server` (kv app, group-commit journal, fsync
``always``) on a free loopback port inside this process, pinned to one CPU,
runs ``wrk`` with the seed protocol's ``Write "k<N>" <N>`` bodies on the other
CPU, and reports what explains the batch size:

* requests/s and records per group commit (the journal's own counters);
* CPU seconds of the loop thread and of the journal thread (from
  ``/proc/self/task``), against the wall time: a loop near 100% busy is the
  limit, not the disk;
* with ``--cprofile``, the loop thread's top functions by own time.

    .venv/bin/python bench/profile_write_path.py [--connections 64] [--seconds 5] [--cprofile]

Linux only (``/proc``, ``taskset``-style affinity); needs ``wrk`` on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from corosm.server import Server, ServerConfig

WRITE_LUA = r"""
local counter = 0
wrk.method = "POST"
function request()
  counter = counter + 1
  return wrk.format(nil, "/", nil, 'Write "k' .. counter .. '" ' .. counter)
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_times(cpu: int) -> list[int]:
    """Jiffies of ``cpu`` from /proc/stat: user nice system idle iowait irq softirq steal."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            return [int(x) for x in line.split()[1:9]]
    return [0] * 8


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) of each thread of this process, by thread name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        base = f"/proc/self/task/{tid}"
        try:
            name = Path(f"{base}/comm").read_text().strip()
            fields = Path(f"{base}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        out[f"{name}[{tid}]"] = (int(fields[11]) + int(fields[12])) / tick
    return out


async def run(args: argparse.Namespace, lua: Path, data_dir: Path) -> None:
    port = free_port()
    server = Server(ServerConfig(port=port, data_dir=data_dir, log_level="warning"))
    await server.start()
    loop = asyncio.get_running_loop()
    argv = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--latency"]
    argv += ["-s", str(lua), f"http://127.0.0.1:{port}/"]
    before = thread_cpu_seconds()
    cpu_before = {cpu: cpu_times(cpu) for cpu in (args.server_cpu, args.wrk_cpu)}
    t0 = loop.time()
    profiler = cProfile.Profile() if args.cprofile else None
    if profiler is not None:
        profiler.enable()
    proc = await asyncio.create_subprocess_exec(
        "taskset", "-c", str(args.wrk_cpu), *argv, stdout=subprocess.PIPE
    )
    out, _ = await proc.communicate()
    if profiler is not None:
        profiler.disable()
    wall = loop.time() - t0
    after = thread_cpu_seconds()
    cpu_after = {cpu: cpu_times(cpu) for cpu in cpu_before}
    assert server.runtime is not None
    stats = server.runtime.stats()
    await server.stop()
    text = out.decode()
    print(next((ln for ln in text.splitlines() if "Requests/sec" in ln), text))
    print(next((ln for ln in text.splitlines() if " 99%" in ln), ""))
    batches = max(1.0, stats.get("journal_batches", 0))
    print(
        f"records/batch {stats.get('journal_records', 0) / batches:.1f}  "
        f"fsync p50 {stats.get('journal_fsync_p50_seconds', 0) * 1e3:.2f} ms  "
        f"turns {stats['turns']:.0f}  inputs {stats['inputs_processed']:.0f}"
    )
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    for cpu, role in ((args.server_cpu, "server"), (args.wrk_cpu, "wrk")):
        delta = [b - a for a, b in zip(cpu_before[cpu], cpu_after[cpu], strict=True)]
        total = max(1, sum(delta))
        shares = " ".join(f"{n} {100 * d / total:.0f}%" for n, d in zip(names, delta, strict=True))
        print(f"  cpu{cpu} ({role}): {shares}")
    for name, cpu in sorted(after.items()):
        used = cpu - before.get(name, 0.0)
        if used > 0.01:
            print(f"  cpu {name:28s} {used:6.2f} s = {100 * used / wall:5.1f}% of {wall:.1f} s")
    if profiler is not None:
        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(args.top)
        print(buf.getvalue()[buf.getvalue().find("   ncalls") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--cprofile", action="store_true", help="profile the loop thread")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--wrk-cpu", type=int, default=1)
    ap.add_argument("--switch-interval", type=float, default=None, help="sys.setswitchinterval")
    args = ap.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    os.sched_setaffinity(0, {args.server_cpu})
    with tempfile.TemporaryDirectory(prefix="corosm-profile-") as tmp:
        lua = Path(tmp, "write.lua")
        lua.write_text(WRITE_LUA)
        threading.current_thread().name = "loop"
        from corosm.runtime import run as run_on_uvloop

        run_on_uvloop(run(args, lua, Path(tmp, "data")))


if __name__ == "__main__":
    main()
