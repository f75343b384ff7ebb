"""Server CPU per request: reading /proc, the per-request figure, and its report column."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from corosm.bench.hostinfo import HostInfo
from corosm.bench.procs import CpuTimes, _stat_cpu, cpu_seconds
from corosm.bench.report import durable_writes_section
from corosm.bench.results import Results, Sample
from corosm.bench.suite import _cpu_per_request


def test_stat_line_with_a_tricky_command_name() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    # Fields after the name: state, ppid, pgrp, session, tty, tpgid, flags,
    # minflt, cminflt, majflt, cmajflt, utime, stime, ...
    stat = f"42 (a) b (c) S 1 1 1 0 -1 0 0 0 0 0 {3 * ticks} {ticks} 0 0 20 0 1"
    assert _stat_cpu(stat) == pytest.approx(4.0)


def test_cpu_seconds_of_this_process_grow_while_it_computes() -> None:
    first = cpu_seconds(os.getpid())
    assert first is not None
    assert first.main_thread <= first.process + 0.02  # one clock tick of slack
    deadline = time.monotonic() + 10.0
    now = first
    while now.main_thread <= first.main_thread and time.monotonic() < deadline:
        sum(i * i for i in range(20_000))  # burn CPU on this (main) thread
        got = cpu_seconds(os.getpid())
        assert got is not None
        now = got
    assert now.main_thread > first.main_thread
    assert now.process >= now.main_thread - 0.02


def test_an_interval_of_the_main_thread_lies_within_the_process_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The two files are read one after the other. The start of an interval reads the
    # process first, its end reads the main thread first: the thread's interval is then
    # inside the process's, and its CPU never exceeds the whole by a tick (it did, in a
    # CI run: 34.2 us per request on the loop, of 33.8 us for the whole process).
    read: list[str] = []
    real = Path.read_text

    def recording(path: Path, *args: object, **kwargs: object) -> str:
        read.append("main" if "/task/" in str(path) else "whole")
        return real(path)

    monkeypatch.setattr(Path, "read_text", recording)
    cpu_seconds(os.getpid())
    cpu_seconds(os.getpid(), end=True)
    assert read == ["whole", "main", "main", "whole"]


def test_cpu_seconds_of_a_missing_process_is_none() -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())  # no pid is ever above it
    assert cpu_seconds(pid_max + 1) is None


def test_cpu_per_request_divides_by_answered_requests() -> None:
    got = _cpu_per_request(CpuTimes(1.0, 0.5), CpuTimes(1.3, 0.7), 10_000)
    assert got["cpu_us_per_req"] == pytest.approx(30.0)
    assert got["loop_us_per_req"] == pytest.approx(20.0)
    assert _cpu_per_request(None, CpuTimes(1.0, 1.0), 10) == {}
    assert _cpu_per_request(CpuTimes(1.0, 1.0), CpuTimes(2.0, 2.0), 0) == {}


def test_report_shows_cpu_per_request_and_tolerates_its_absence() -> None:
    res = Results(
        host=HostInfo("cpu", 2, "Linux", "CPython", "ext4", "/dev/x"), quick=True, pinning=""
    )
    base = {"rps": 1.0, "p50_ms": 1.0, "p99_ms": 1.0, "p999_ms": 1.0, "errors": 0.0}
    for rnd, us in enumerate((30.0, 34.0, 90.0)):
        cpu = {"cpu_us_per_req": us, "loop_us_per_req": us - 4}
        res.add(Sample("durable_writes", "64 conns", 64, "corosm", rnd, base | cpu))
    res.add(Sample("durable_writes", "64 conns", 64, "constant", 0, base))  # an old results.json
    text = "\n".join(durable_writes_section(res))
    assert "corosm CPU us/req (loop)" in text
    assert "| 34 (30) | n/a |" in text  # medians over rounds; constant has no CPU figure
