"""Sharded durable writes through Ray, against one host, in the same run.

Theory of operation
-------------------
Run as ``python -m corosm.bench.shards`` (``corosm bench --only shards``
runs it in a fresh process). It starts a local Ray (``corosm[ray]``), then
for each fsync mode (``always``, then ``never``, which leaves the disk out
and shows what the hop itself costs) measures, one after the other:

- ``single``: one ``corosm.open`` host in this process;
- ``ray-1`` and ``ray-2``: the key-value machine as 1 and 2 shard actors,
  driven through :class:`~corosm.shards.client.ShardedClient` from here.

The load is closed-loop: ``writers`` tasks each submit a ``Write`` of a new
key and await its answer, for ``seconds`` after a short warm-up. For each
run: writes/s; CPU microseconds per write over every process involved (this
one and the shard actors, read from ``/proc``; Ray's own daemons are not
counted); and the client's batches: inputs per call (mean) and the median
call size. The Ray hop's cost per input is the difference in CPU per write
between ``ray-1`` and ``single`` under ``never``. One JSON line on stdout
closes the run (for the suite); the rest is a table on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import corosm
from corosm.apps.kv.inputs import Write
from corosm.apps.kv.machine import KVMachine
from corosm.bench.procs import cpu_seconds, last_lines, run_tool
from corosm.shards.client import Limits

if TYPE_CHECKING:
    from corosm.bench.suite import Suite

MODES = ("always", "never")
INSTALL = "pip install 'corosm[ray]'"


async def _load(
    submit: Callable[[Any], Awaitable[Any]], writers: int, seconds: float, tag: str
) -> tuple[int, float]:
    """Closed-loop writes from ``writers`` tasks for ``seconds``; (writes answered, elapsed)."""
    deadline = time.monotonic() + seconds
    value = b"v" * 16

    async def writer(w: int) -> int:
        done = 0
        while time.monotonic() < deadline:
            await submit(Write(f"{tag}-{w}-{done}".encode(), value))
            done += 1
        return done

    started = time.monotonic()
    counts = await asyncio.gather(*(writer(w) for w in range(writers)))
    return sum(counts), time.monotonic() - started


def _cpu(pids: Sequence[int]) -> float:
    """CPU seconds of this process plus ``pids`` (shard actors)."""
    total = time.process_time()
    for pid in pids:
        times = cpu_seconds(pid)
        total += times.process if times is not None else 0.0
    return total


async def _measure(
    submit: Callable[[Any], Awaitable[Any]], pids: Sequence[int], writers: int, seconds: float
) -> dict[str, float]:
    await _load(submit, writers, min(1.0, seconds / 3), "warm")
    cpu0 = _cpu(pids)
    count, elapsed = await _load(submit, writers, seconds, uuid.uuid4().hex[:6])
    cpu = _cpu(pids) - cpu0
    return {"rps": count / elapsed, "cpu_us_per_write": cpu / max(count, 1) * 1e6}


async def single(mode: str, data: Path, writers: int, seconds: float) -> dict[str, float]:
    """One corosm.open host in this process."""
    async with corosm.open(KVMachine(), data, fsync=mode) as host:
        return await _measure(host.submit, [], writers, seconds)


async def on_ray(
    shards: int, mode: str, data: Path, writers: int, seconds: float, *, limits: Limits
) -> dict[str, float]:
    """``shards`` shard actors, through a sharded client in this process."""
    from corosm.shards.ray import start

    kv = await start(KVMachine(), data, shards=shards, name=f"bench{uuid.uuid4().hex[:6]}",
                     num_cpus=0, fsync=mode, limits=limits)  # fmt: skip
    try:
        pids = [link.hello.pid for link in kv.links if link.hello is not None]
        before = kv.batch_sizes()
        figures = await _measure(kv.submit, pids, writers, seconds)
        sizes = kv.batch_sizes() - before
    finally:
        await kv.close()
    calls = sum(sizes.values())
    inputs = sum(n * c for n, c in sizes.items())
    figures["mean_batch"] = inputs / calls if calls else 0.0
    figures["median_batch"] = float(_median(sizes))
    return figures


def _median(sizes: Counter[int]) -> int:
    half = sum(sizes.values()) / 2
    seen = 0
    for size in sorted(sizes):
        seen += sizes[size]
        if seen >= half:
            return size
    return 0


async def run_all(
    work: Path, writers: int, seconds: float, say: Callable[[str], None], limits: Limits
) -> dict[str, float]:
    """Every mode and contender; flat figures keyed ``mode/contender/figure``."""
    results: dict[str, float] = {}
    for mode in MODES:
        for name, shards in (("single", 0), ("ray-1", 1), ("ray-2", 2)):
            data = work / f"{mode}-{name}"
            if shards:
                got = await on_ray(shards, mode, data, writers, seconds, limits=limits)
            else:
                got = await single(mode, data, writers, seconds)
            shutil.rmtree(data, ignore_errors=True)
            results.update({f"{mode}/{name}/{k}": v for k, v in got.items()})
            batch = (
                f", batches: mean {got['mean_batch']:.1f}, median {got['median_batch']:.0f}"
                if shards
                else ""
            )
            say(
                f"shards fsync={mode} {name}: {got['rps']:,.0f} writes/s, "
                f"{got['cpu_us_per_write']:.0f} us CPU/write{batch}"
            )
        hop = results[f"{mode}/ray-1/cpu_us_per_write"] - results[f"{mode}/single/cpu_us_per_write"]
        results[f"{mode}/hop_cpu_us_per_write"] = hop
        say(f"shards fsync={mode}: the Ray hop costs {hop:.0f} us CPU per write (ray-1 - single)")
    return results


def ray_missing() -> str | None:
    """Why the scenario cannot run here (Ray not installed), or None."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        return f"Ray is not installed; install it with: {INSTALL}"
    return None


def run_in_suite(suite: Suite) -> None:
    """The ``shards`` scenario of ``corosm bench``: run this module in a fresh process."""
    from corosm.bench.results import Sample

    missing = ray_missing()
    if missing is not None:
        suite.results.unavailable["shards"] = missing
        suite.say(f"shards: skipped: {missing}")
        return
    from corosm.bench.suite import last_json_line

    seconds = 2 if suite.plan.quick else 5
    argv = [sys.executable, "-m", "corosm.bench.shards", "--seconds", str(seconds),
            "--work", str(suite.work)]  # fmt: skip
    done = run_tool(argv, timeout=900)  # its own process group: Ray's helpers go with it
    for line in done.stderr.splitlines():
        if line.startswith("shards "):
            suite.say(line)
    if done.returncode != 0:  # Ray would not start here, say: not measured, and why
        suite.results.unavailable["shards"] = last_lines(done.stderr, keep=3)
        return
    figures = last_json_line(done)
    for key, value in figures.items():
        mode, name, *rest = key.split("/")
        if rest:
            suite.results.add(Sample("shards", f"fsync {mode}", 0, name, 0, {rest[0]: value}))
    for mode in MODES:
        f = {k.split("/", 1)[1]: v for k, v in figures.items() if k.startswith(mode + "/")}
        suite.results.notes.append(
            f"shards (fsync {mode}, local Ray, {seconds} s each): single host "
            f"{f['single/rps']:,.0f} writes/s; 1 shard {f['ray-1/rps']:,.0f}/s (batch mean "
            f"{f['ray-1/mean_batch']:.0f}); 2 shards {f['ray-2/rps']:,.0f}/s (batch mean "
            f"{f['ray-2/mean_batch']:.0f}); Ray hop {f['hop_cpu_us_per_write']:.0f} us CPU/write"
        )


MAX_SECONDS = 600.0


def _bad_option(args: argparse.Namespace) -> str | None:
    """What is wrong with the options (checked before Ray starts), or None."""
    if not 0 < args.seconds <= MAX_SECONDS:  # also refuses nan; inf would never end
        return f"--seconds must be above 0 and at most {MAX_SECONDS:g}, got {args.seconds}"
    if args.writers < 1:
        return f"--writers must be at least 1, got {args.writers}"
    if args.window < 1:
        return f"--window must be at least 1 (calls in flight per shard), got {args.window}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m corosm.bench.shards``: see the module docs."""
    parser = argparse.ArgumentParser(prog="python -m corosm.bench.shards")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per run")
    parser.add_argument("--writers", type=int, default=256, help="concurrent writers")
    parser.add_argument("--work", type=Path, default=None, help="where the data goes")
    parser.add_argument("--window", type=int, default=Limits().window, help="calls in flight/shard")
    args = parser.parse_args(argv)
    problem = _bad_option(args) or ray_missing()
    if problem is not None:
        print(f"corosm.bench.shards: {problem}", file=sys.stderr)
        return 2
    try:  # before Ray starts: a bad --work costs nothing
        work = Path(tempfile.mkdtemp(prefix="corosm-shards-", dir=args.work))
    except OSError as exc:
        print(
            f"corosm.bench.shards: --work {args.work}: {exc.strerror or exc}; "
            "expected a directory to write into",
            file=sys.stderr,
        )
        return 2
    import ray

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.monotonic()
    try:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        say(f"shards: ray.init took {time.monotonic() - started:.1f} s")
        limits = Limits(window=args.window)
        results = asyncio.run(run_all(work, args.writers, args.seconds, say, limits))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        ray.shutdown()
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
