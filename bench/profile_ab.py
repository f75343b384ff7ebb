"""Interleaved A/B runs of the issue-7 scenarios: one source tree against another.

Theory of operation
-------------------
The machine is noisy (rates swing by 2x between runs), so a change is judged
by running the *old* and the *new* tree alternately, round by round, on the
same scenarios, and comparing medians. Each tree is a ``src`` folder (e.g. an
old commit unpacked with ``git archive <commit> | tar -x -C /tmp/old``). For
every tree one server per contender (durable kv, blocking journal, constant
``Ok``) runs in its own process pinned to ``--server-cpu``; wrk runs on
``--wrk-cpu``. Scenarios:

* ``ok``: the constant-Ok server at 64 connections;
* ``w<N>``: durable seed writes at N connections (N from ``--conns``);
* ``blocking``: the blocking-journal server at 64 connections;
* ``reads``: seed reads at 8 connections alone, then while 64 connections
  write durably (p50/p99 in ms).

    git archive HEAD~3 | (mkdir -p /tmp/old && tar -x -C /tmp/old)
    .venv/bin/python bench/profile_ab.py /tmp/old/src src --rounds 3 --seconds 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from corosm.bench.procs import free_port
from corosm.bench.wrk import WrkResult, parse_wrk_output, write_script, wrk_command

CONTENDERS = {
    "kv": ("--journal-mode", "group"),
    "blocking": ("--journal-mode", "blocking"),
    "ok": ("--app", "constant"),
}


@contextlib.contextmanager
def servers(src: str, cpu: int, work: Path) -> Iterator[dict[str, int]]:
    """Start the three contenders from ``src``; yield name -> port."""
    procs: list[subprocess.Popen[bytes]] = []
    ports: dict[str, int] = {}
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src))
    try:
        for name, options in CONTENDERS.items():
            port = free_port()
            data = tempfile.mkdtemp(prefix=f"ab-{name}-", dir=work)
            argv = ["taskset", "-c", str(cpu), sys.executable, "-m", "corosm.bench.serve"]
            argv += ["--port", str(port), "--data-dir", data, *options]
            procs.append(subprocess.Popen(argv, env=env))
            ports[name] = port
        for port in ports.values():
            wait_listening(port)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def wait_listening(port: int, bound: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not start within {bound} s")


def wrk(cpu: int, port: int, script: Path, conns: int, seconds: float) -> WrkResult:
    argv = ["taskset", "-c", str(cpu)]
    argv += wrk_command(f"http://127.0.0.1:{port}/", script, conns, seconds)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return parse_wrk_output(out)


def reads_under_writes(cpu: int, port: int, scripts: dict[str, Path], seconds: float) -> WrkResult:
    argv = ["taskset", "-c", str(cpu)]
    argv += wrk_command(f"http://127.0.0.1:{port}/", scripts["write"], 64, seconds + 2)
    writer = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.7)  # a benchmark, not a test: let the writers reach a steady state
        return wrk(cpu, port, scripts["read"], 8, seconds)
    finally:
        writer.wait(timeout=seconds + 30)


def one_round(
    args: argparse.Namespace, ports: dict[str, int], scripts: dict[str, Path]
) -> dict[str, tuple[float, ...]]:
    cpu, secs = args.wrk_cpu, args.seconds
    out: dict[str, tuple[float, ...]] = {}
    out["ok"] = (wrk(cpu, ports["ok"], scripts["write"], 64, secs).rps,)
    for conns in args.conns:
        out[f"w{conns}"] = (wrk(cpu, ports["kv"], scripts["write"], conns, secs).rps,)
    if not args.skip_blocking:
        out["blocking"] = (wrk(cpu, ports["blocking"], scripts["write"], 64, secs).rps,)
    alone = wrk(cpu, ports["kv"], scripts["read"], 8, secs)
    out["reads alone"] = (alone.p50_us / 1e3, alone.p99_us / 1e3)
    loaded = reads_under_writes(cpu, ports["kv"], scripts, secs)
    out["reads+64w"] = (loaded.p50_us / 1e3, loaded.p99_us / 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trees", nargs="+", help="src folders to compare (A B ...)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--conns", type=int, nargs="*", default=[1, 16, 64, 256])
    ap.add_argument("--skip-blocking", action="store_true")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--wrk-cpu", type=int, default=1)
    args = ap.parse_args()
    results: dict[str, dict[str, list[tuple[float, ...]]]] = {t: {} for t in args.trees}
    with tempfile.TemporaryDirectory(prefix="corosm-ab-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        scripts = {kind: write_script(work, kind) for kind in ("write", "read")}
        all_ports = {t: stack.enter_context(servers(t, args.server_cpu, work)) for t in args.trees}
        for port in (p["kv"] for p in all_ports.values()):  # keys for the readers
            wrk(args.wrk_cpu, port, scripts["write"], 16, 1)
        for rnd in range(args.rounds):
            for tree in args.trees:
                for name, value in one_round(args, all_ports[tree], scripts).items():
                    results[tree].setdefault(name, []).append(value)
                print(f"round {rnd + 1} {tree}: done", file=sys.stderr, flush=True)
    report(args.trees, results)


def report(trees: list[str], results: dict[str, dict[str, list[tuple[float, ...]]]]) -> None:
    names = list(results[trees[0]])
    print(f"{'scenario':14s}" + "".join(f"{t[-28:]:>30s}" for t in trees))
    for name in names:
        cells = []
        for tree in trees:
            runs = results[tree][name]
            medians = [statistics.median(col) for col in zip(*runs, strict=True)]
            text = "/".join(f"{m:.2f}" if m < 100 else f"{m:.0f}" for m in medians)
            every = " ".join("/".join(f"{v:.3g}" for v in run) for run in runs)
            cells.append(f"{text} [{every}]")
        print(f"{name:14s}" + "".join(f"{c:>30s}" for c in cells))


if __name__ == "__main__":
    main()
