"""The benchmark suite: the scenarios of issue 7, run in alternation.

Theory of operation
-------------------
A :class:`Plan` fixes the sizes (``QUICK`` takes about a minute, ``FULL``
well under fifteen). :class:`Suite` runs the scenarios in order and records
:class:`~corosm.bench.results.Sample` values:

1. ``fdatasync``: the disk's raw rate, measured first, in the same run.
2. ``durable_writes``: corosm, blocking and constant-Ok servers all start
   at once (an idle server costs nothing), then for each connection count
   the load alternates between them round by round (A B C A B C ...).
3. ``reads``: read latency alone and while 64 connections write durably;
   the constant-``Ok`` stack takes the same load, as the reference for what
   one core beside 64 busy connections (and two load generators on one
   core) gives a server that does no work.
   ``http``: seed reads at 64 connections, and reads and writes pipelined
   16 deep, against the constant-``Ok`` stack (the HTTP layer's own limit).
4. ``redis``: redis-benchmark against corosm's RESP port and redis-server.
5. ``recovery`` and 6. ``rss_keys``/``rss_suspended``: each point in a fresh
   process (:mod:`corosm.bench.recovery`, :mod:`corosm.bench.memory`).
7. ``shards``: sharded writes through Ray against one host, in a fresh
   process (:mod:`corosm.bench.shards`); skipped when Ray is not installed.
8. ``bank``: the served bank example, JSON transfers at 64 connections,
   ``PER_KEY`` against ``EXCLUSIVE`` (:mod:`corosm.bench.bank`).

Servers run pinned to one core and load generators to the others. For
HTTP writes and RESP the suite also reads each server's CPU time from ``/proc``
around every load run (wrk, and redis-benchmark run once per command):
CPU microseconds per request, for the whole process
and for its loop thread, explain the throughput a single core allows. A
contender or tool that is missing is recorded in ``results.unavailable``
with the reason, and the rest of the suite still runs. So is a scenario that
fails part way (a load generator that fails or overruns its time, a worker
that crashes): the rows it measured stay, :attr:`Suite.failed` names it, and
the next scenario runs. Ctrl-C (or SIGTERM, see :mod:`corosm.bench.procs`)
stops the run; the results measured so far stay in :attr:`Suite.results`.
Every child process is started and stopped by :mod:`corosm.bench.procs`.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from corosm.bench import contenders as cont
from corosm.bench.hostinfo import fdatasync_rate, host_info
from corosm.bench.procs import (
    ContenderUnavailable,
    CpuTimes,
    Pinning,
    ToolFailed,
    check_exit,
    child,
    cpu_seconds,
    finish,
    free_port,
    need_tools,
    probe,
    run_tool,
    signal_name,
    start_server,
)
from corosm.bench.redisbench import parse_redis_benchmark_csv, redis_benchmark_command
from corosm.bench.results import Results, Sample
from corosm.bench.wrk import WrkResult, parse_wrk_output, write_script, wrk_command
from corosm.errors import CorosmError, UsageError


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes of one run."""

    quick: bool
    rounds: int
    seconds: int
    connections: tuple[int, ...]
    read_connections: int
    redis_requests: tuple[int, int]  # at -c 1, at -c 50 (and -P 16)
    recovery_sizes: tuple[int, ...]
    rss_keys: tuple[int, ...]
    rss_suspended: tuple[int, ...]
    fsync_seconds: float


QUICK = Plan(True, 1, 1, (1, 16, 64, 256), 8, (1_000, 20_000), (10_000, 100_000),
             (10_000, 100_000), (1_000, 10_000), 1.0)  # fmt: skip
FULL = Plan(False, 3, 4, (1, 16, 64, 256), 8, (4_000, 50_000),
            (10_000, 100_000, 1_000_000, 10_000_000),
            (10_000, 100_000, 1_000_000), (1_000, 10_000, 100_000), 2.0)  # fmt: skip

SCENARIOS = (
    "fdatasync",
    "durable_writes",
    "reads",
    "http",
    "redis",
    "recovery",
    "memory",
    "profile",
    "shards",
    "bank",
)
PIPELINE_DEPTH = 16


class Progress:
    """One line per step on ``stream``, with the elapsed time."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        elapsed = time.monotonic() - self.start
        self.stream.write(f"[{elapsed:6.1f}s] {message}\n")
        self.stream.flush()


class Suite:
    """Runs the scenarios of ``plan`` with files under ``work_dir``."""

    def __init__(
        self,
        plan: Plan,
        work_dir: Path,
        progress: Callable[[str], None] | None = None,
        pinning: Pinning | None = None,
    ) -> None:
        self.plan = plan
        self.work = work_dir
        self.say = progress or Progress()
        self.pin = pinning if pinning is not None else Pinning.for_this_machine()
        self.results = Results(
            host=host_info(work_dir), quick=plan.quick, pinning=self.pin.describe()
        )
        self.pids: dict[str, int] = {}  # contender name -> pid of the running server
        self.failed: dict[str, str] = {}  # scenario -> why it stopped part way
        self.write_lua = write_script(work_dir, "write")
        self.read_lua = write_script(work_dir, "read", keyspace=10_000)
        self.pipelined_lua = {
            kind: write_script(work_dir, kind, keyspace=10_000, depth=PIPELINE_DEPTH)
            for kind in ("read", "write")
        }

    def run(self, only: Sequence[str] = SCENARIOS) -> Results:
        """Run the chosen scenarios (all by default) and return the results."""
        unknown = set(only) - set(SCENARIOS)
        if unknown:
            raise UsageError(f"unknown scenarios {sorted(unknown)}; expected some of {SCENARIOS}")
        started = time.monotonic()
        steps: dict[str, Callable[[], None]] = {
            "fdatasync": self.fdatasync,
            "durable_writes": self.durable_writes,
            "reads": self.reads,
            "http": self.http,
            "redis": self.redis,
            "recovery": self.recovery,
            "memory": self.memory,
            "profile": self.profile,
            "shards": self.shards,
            "bank": self.bank,
        }
        try:
            for name in SCENARIOS:
                if name in only:
                    self._step(name, steps[name])
        finally:
            self.results.elapsed_s = time.monotonic() - started
        return self.results

    def _step(self, name: str, step: Callable[[], None]) -> None:
        """Run one scenario; if it fails part way, keep its rows and record why."""
        before = len(self.results.samples)
        try:
            step()
        except KeyboardInterrupt as exc:
            self.results.notes.append(
                f"the run was interrupted ({signal_name(exc)}) during {name}: "
                "later figures are missing"
            )
            raise
        except Exception as exc:  # one scenario's failure must not lose the others' rows
            kept = len(self.results.samples) - before
            expected = isinstance(exc, CorosmError | OSError | subprocess.SubprocessError)
            why = str(exc) if expected else f"{exc!r}"
            if not expected:  # a bug in the bench: its traceback, to report it
                self.say(f"{name}: unexpected error:\n{traceback.format_exc()}")
            reason = f"failed part way ({kept} row{'' if kept == 1 else 's'} kept): {why}"
            self.failed[name] = reason
            self.results.unavailable[name] = reason
            self.say(f"{name}: FAILED: {why}")

    # -- servers -------------------------------------------------------------------

    @contextlib.contextmanager
    def servers(
        self, scenario: str, contenders: Sequence[cont.Contender]
    ) -> Iterator[dict[str, int]]:
        """Start every contender; yield name -> load port for those that started."""
        with contextlib.ExitStack() as stack:
            ports: dict[str, int] = {}
            for c in contenders:
                port, resp_port = free_port(), free_port()
                data = self.work / f"{scenario}-{c.name}"
                data.mkdir(parents=True, exist_ok=True)
                argv = self.pin.wrap_server(c.command(port, data, resp_port))
                log = self.work / f"{scenario}-{c.name}.log"
                load_port = c.load_port(port, resp_port)

                def check(load_port: int = load_port, protocol: str = c.protocol) -> None:
                    trouble = probe(load_port, protocol)  # listens, but does it answer?
                    if trouble is not None:
                        raise ContenderUnavailable(trouble)

                try:
                    proc = start_server(stack, argv, c.ports(port, resp_port), log, check)
                except ContenderUnavailable as exc:
                    self.results.unavailable[f"{scenario}/{c.name}"] = str(exc)
                    self.say(f"{scenario}: {c.name} unavailable: {exc}")
                    continue
                ports[c.name] = load_port
                self.pids[c.name] = proc.pid  # taskset execs the server: same pid
            yield ports

    # -- load --------------------------------------------------------------------------

    def wrk(self, port: int, script: Path, connections: int, seconds: float) -> WrkResult:
        """One wrk run against 127.0.0.1:``port``."""
        threads = max(1, len(self.pin.load)) if self.pin.load else 2
        argv = wrk_command(f"http://127.0.0.1:{port}/", script, connections, seconds, threads)
        done = run_tool(self.pin.wrap_load(argv), timeout=seconds + 30)
        check_exit(done)
        return parse_wrk_output(done.stdout)

    def _record_wrk(
        self,
        scenario: str,
        case: str,
        x: float,
        name: str,
        *,
        rnd: int,
        r: WrkResult,
        cpu: dict[str, float] | None = None,
        latency: bool = True,
    ) -> None:
        """Keep one wrk run's figures; ``latency=False`` leaves out wrk's percentiles."""
        values = cpu or {}
        values |= {"rps": r.ok_rps, "errors": float(r.errors)}
        tail = ""
        if latency:
            values |= {
                "p50_ms": r.p50_us / 1e3,
                "p99_ms": r.p99_us / 1e3,
                "p999_ms": r.p999_us / 1e3,
            }
            tail = f", p99 {r.p99_us / 1e3:.2f} ms"
        self.results.add(Sample(scenario, case, x, name, rnd, values))
        bad = f", {r.errors} ERRORS" if r.errors else ""
        self.say(f"{scenario} {case} {name}: {r.ok_rps:,.0f} req/s{tail}{bad}")
        if r.errors > 0.01 * max(1, r.requests):
            self.results.notes.append(
                f"{scenario} {case} {name} round {rnd}: {r.errors} of {r.requests} requests failed"
            )

    # -- scenarios ---------------------------------------------------------------------------

    def _tools_installed(self, scenario: str, *tools: str) -> bool:
        """Whether every tool is on PATH; if not, say which (and how to install them) and skip."""
        try:
            need_tools(*tools)
        except ContenderUnavailable as exc:
            self.results.unavailable[scenario] = str(exc)
            self.say(f"{scenario}: skipped: {exc}")
            return False
        return True

    def fdatasync(self) -> None:
        """The disk's raw fdatasync rate (100-byte writes), on the data directory's disk."""
        rate = fdatasync_rate(self.work, self.plan.fsync_seconds)
        self.results.add(
            Sample("fdatasync", "100-byte write + fdatasync", 0, "disk", 0, {"rps": rate})
        )
        self.say(f"fdatasync: {rate:,.0f}/s")

    def durable_writes(self) -> None:
        """Scenarios 1 and 3: writes at each connection count, contenders alternating."""
        if not self._tools_installed("durable_writes", "wrk"):
            return
        field = (cont.corosm_durable(), cont.corosm_blocking(), cont.corosm_constant())
        with self.servers("durable_writes", field) as ports:
            for conns in self.plan.connections:
                for rnd in range(self.plan.rounds):
                    for name, port in ports.items():
                        r, cpu = self._wrk_and_cpu(name, port, self.write_lua, conns)
                        self._record_wrk(
                            "durable_writes", f"{conns} conns", conns, name, rnd=rnd, r=r, cpu=cpu
                        )

    def reads(self) -> None:
        """Scenario 2: read latency alone, and while 64 connections write durably.

        The constant-Ok stack takes the same load (its writes answered Ok, no
        journal): the tail the layout alone gives, beside corosm's.
        """
        if not self._tools_installed("reads", "wrk"):
            return
        seconds = self.plan.seconds
        field = (cont.corosm_durable(), cont.corosm_blocking(), cont.corosm_constant())
        with self.servers("reads", field) as ports:
            for port in ports.values():  # some keys to read
                self.wrk(port, self.write_lua, 16, 1)
            for rnd in range(self.plan.rounds):
                for name, port in ports.items():
                    conns = self.plan.read_connections
                    alone, cpu = self._wrk_and_cpu(name, port, self.read_lua, conns)
                    self._record_wrk("reads", "reads alone", 0, name, rnd=rnd, r=alone, cpu=cpu)
                    loaded, writes, cpu = self._reads_under_writes(port, self.pids[name], seconds)
                    self._record_wrk(
                        "reads", "reads + 64 writers", 64, name, rnd=rnd, r=loaded, cpu=cpu
                    )
                    self._record_wrk("reads_writers", "64 writers", 64, name, rnd=rnd, r=writes)

    def http(self) -> None:
        """Seed reads at 64 connections and pipelined requests, against the constant-Ok stack."""
        if not self._tools_installed("http", "wrk"):
            return
        depth = PIPELINE_DEPTH
        # wrk times a pipelined send by its first reply only: no latency for those rows.
        cases = (
            ("reads 64 conns", self.read_lua, True),
            (f"reads 64 conns -P {depth}", self.pipelined_lua["read"], False),
            (f"writes 64 conns -P {depth}", self.pipelined_lua["write"], False),
        )
        with self.servers("http", (cont.corosm_durable(), cont.corosm_constant())) as ports:
            for port in ports.values():  # some keys to read
                self.wrk(port, self.write_lua, 16, 1)
            for case, script, timed in cases:
                for rnd in range(self.plan.rounds):
                    for name, port in ports.items():
                        r, cpu = self._wrk_and_cpu(name, port, script, 64)
                        self._record_wrk(
                            "http", case, 64, name, rnd=rnd, r=r, cpu=cpu, latency=timed
                        )

    def _wrk_and_cpu(
        self, name: str, port: int, script: Path, connections: int
    ) -> tuple[WrkResult, dict[str, float]]:
        """One wrk run against contender ``name``, and its server's CPU per answered request."""
        pid = self.pids[name]
        before = cpu_seconds(pid)
        r = self.wrk(port, script, connections, self.plan.seconds)
        return r, _cpu_per_request(before, cpu_seconds(pid, end=True), r.requests - r.errors)

    def _reads_under_writes(
        self, port: int, pid: int, seconds: int
    ) -> tuple[WrkResult, WrkResult, dict[str, float]]:
        """Reads timed while 64 connections write; and the server's CPU per request then.

        The CPU is taken over the readers' run, and divided by every request
        answered in it: the reads, and the writes at the writers' rate.
        """
        threads = max(1, len(self.pin.load))
        argv = wrk_command(f"http://127.0.0.1:{port}/", self.write_lua, 64, seconds + 2, threads)
        argv = self.pin.wrap_load(argv)
        with child(argv, subprocess.PIPE, subprocess.PIPE) as writer:
            time.sleep(0.5)  # let the writers reach a steady state before reads are timed
            before = cpu_seconds(pid)
            reads = self.wrk(port, self.read_lua, self.plan.read_connections, seconds)
            after = cpu_seconds(pid, end=True)
            done = finish(writer, argv, timeout=seconds + 30)
        check_exit(done)
        writes = parse_wrk_output(done.stdout)
        answered = reads.requests - reads.errors + round(writes.ok_rps * reads.seconds)
        return reads, writes, _cpu_per_request(before, after, answered)

    def redis(self) -> None:
        """Scenario 4: redis-benchmark SET/GET against corosm RESP and redis-server."""
        if not self._tools_installed("redis", "redis-benchmark", "redis-server"):
            return
        field = (cont.corosm_resp(), cont.redis("always"), cont.redis("everysec"), cont.redis(None))
        small, large = self.plan.redis_requests
        cases = (("-c 1", 1, 1, small), ("-c 50", 50, 1, large), ("-c 50 -P 16", 50, 16, large * 4))
        with self.servers("redis", field) as ports:
            for label, clients, pipeline, requests in cases:
                for rnd in range(self.plan.rounds):
                    for name, port in ports.items():
                        self._redis_run(name, port, label, (clients, pipeline, requests), rnd)

    def _redis_run(
        self, name: str, port: int, label: str, shape: tuple[int, int, int], rnd: int
    ) -> None:
        clients, pipeline, requests = shape
        for command in ("set", "get"):  # one run each, so the server's CPU is per command
            argv = redis_benchmark_command(port, command, requests, clients, pipeline=pipeline)
            before = cpu_seconds(self.pids[name])
            done = run_tool(self.pin.wrap_load(argv), timeout=300)
            cpu = _cpu_per_request(before, cpu_seconds(self.pids[name], end=True), requests)
            try:
                rows = parse_redis_benchmark_csv(done.stdout)
            except UsageError as exc:
                stderr = done.stderr.strip()[:200]
                self.results.notes.append(f"redis {command} {label} {name}: {exc} {stderr}")
                continue
            for test, row in rows.items():
                values = cpu | {"rps": row.rps, "p50_ms": row.p50_ms, "p99_ms": row.p99_ms}
                self.results.add(
                    Sample("redis", f"{test} {label}", clients * pipeline, name, rnd, values)
                )
                self.say(
                    f"redis {test} {label} {name}: {row.rps:,.0f} req/s, "
                    f"p99 {row.p99_ms:.2f} ms, {values.get('cpu_us_per_req', 0):.1f} us CPU/req"
                )

    def _worker(self, module: str, *args: str) -> dict[str, float] | None:
        """One point of a fresh-process scenario; None (and the reason kept) if it failed."""
        argv = self.pin.wrap_server([sys.executable, "-m", module, *args])
        try:
            done = run_tool(argv, timeout=600)
            check_exit(done)
            return last_json_line(done)
        except ToolFailed as exc:
            self.results.unavailable[f"{module} {' '.join(args)}"] = str(exc)
            self.say(f"{module} {' '.join(args)} failed: {exc}")
            return None

    def recovery(self) -> None:
        """Scenario 5: recovery time against journal size, with and without snapshots."""
        for size in self.plan.recovery_sizes:
            for mode in ("journal", "snapshot"):
                directory = self.work / f"recovery-{size}-{mode}"
                got = self._worker("corosm.bench.recovery", str(size), mode, str(directory))
                if got is None:
                    continue
                self.results.add(
                    Sample("recovery", f"{size:,} records, {mode}", size, mode, 0, got)
                )
                rate = size / got["recover_s"] if got["recover_s"] > 0 else 0.0
                self.say(
                    f"recovery {size:,} ({mode}): {got['recover_s']:.2f} s, {rate:,.0f} records/s"
                )

    def memory(self) -> None:
        """Scenario 6: RSS against keys and against suspended handlers."""
        for kind, sizes in (("keys", self.plan.rss_keys), ("suspended", self.plan.rss_suspended)):
            for count in sizes:
                got = self._worker("corosm.bench.memory", kind, str(count))
                if got is None:
                    continue
                grown = got["rss_after"] - got["rss_before"]
                values = {**got, "rss_mb": got["rss_after"] / 2**20, "bytes_each": grown / count}
                self.results.add(Sample(f"rss_{kind}", f"{count:,} {kind}", count, kind, 0, values))
                mib, each = values["rss_mb"], values["bytes_each"]
                self.say(f"memory {count:,} {kind}: RSS {mib:.0f} MiB, {each:.0f} B each")

    def profile(self) -> None:
        """cProfile of corosm's loop: HTTP durable writes at 64 conns, RESP SET/GET at -c 50."""
        http = self._tools_installed("profile (HTTP)", "wrk")
        if http and "durable_writes/corosm" not in self.results.unavailable:
            path = self.work / "http.prof"
            with self.servers(
                "profile-http", (cont.profiled(cont.corosm_durable(), path),)
            ) as ports:
                for port in ports.values():
                    r = self.wrk(port, self.write_lua, 64, max(2, self.plan.seconds))
                    self.say(f"profile run (HTTP writes): {r.ok_rps:,.0f} req/s under cProfile")
            if ports:  # a server that failed to start still leaves a (useless) profile
                self._keep_profile("HTTP durable writes, wrk -c 64", path)
        if self._tools_installed("profile (RESP)", "redis-benchmark"):
            path = self.work / "resp.prof"
            with self.servers("profile-resp", (cont.profiled(cont.corosm_resp(), path),)) as ports:
                for port in ports.values():
                    argv = redis_benchmark_command(port, "set,get", self.plan.redis_requests[1], 50)
                    run_tool(self.pin.wrap_load(argv), timeout=300)
                    self.say("profile run (RESP SET, GET -c 50) done")
            if ports:
                self._keep_profile("RESP SET then GET, redis-benchmark -c 50", path)

    def _keep_profile(self, title: str, path: Path) -> None:
        from corosm.bench.profile import profile_summary

        if path.exists():
            self.results.profile += f"### {title}\n\n```\n{profile_summary(path)}\n```\n\n"
        else:
            self.results.notes.append(f"profile of {title}: the server wrote no profile file")

    def shards(self) -> None:
        """Sharded writes on a local Ray against one host (:mod:`corosm.bench.shards`)."""
        from corosm.bench.shards import run_in_suite

        run_in_suite(self)  # skipped, with the install command, when Ray is missing

    def bank(self) -> None:
        """The served bank example, PER_KEY against EXCLUSIVE (:mod:`corosm.bench.bank`)."""
        from corosm.bench.bank import run_in_suite

        run_in_suite(self)  # skipped, saying why, without wrk or a source checkout


def last_json_line(done: subprocess.CompletedProcess[str]) -> dict[str, float]:
    """The figures a worker printed as one JSON object on its last line of stdout.

    Raises :class:`ToolFailed` (naming the command and what came) for anything else.
    """
    lines = done.stdout.strip().splitlines()
    try:
        figures = json.loads(lines[-1]) if lines else None
    except ValueError:
        figures = None
    if not isinstance(figures, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in figures.values()
    ):
        shown = lines[-1][:200] if lines else "nothing"
        raise ToolFailed(
            f"{shlex.join(map(str, done.args))} printed {shown!r} last; expected one line "
            "of JSON figures (an object of numbers)"
        )
    return {str(k): float(v) for k, v in figures.items()}


def _cpu_per_request(
    before: CpuTimes | None, after: CpuTimes | None, answered: int
) -> dict[str, float]:
    """Server CPU microseconds per answered request over one load run (empty if unknown)."""
    if before is None or after is None or answered <= 0:
        return {}
    return {
        "cpu_us_per_req": (after.process - before.process) / answered * 1e6,
        "loop_us_per_req": (after.main_thread - before.main_thread) / answered * 1e6,
    }
