"""The benchmark suite end to end, small: real wrk and processes on loopback, seconds each.

The HTTP contender here is a tiny stand-in server (below) that checks every
body against the seed protocol and answers 400 otherwise, so a wrong Lua
script shows up as wrk errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from corosm.bench.cli import main as bench_main
from corosm.bench.contenders import Contender
from corosm.bench.memory import rss_with_suspended
from corosm.bench.procs import Pinning, port_answers, probe
from corosm.bench.recovery import measure
from corosm.bench.suite import QUICK, Suite
from corosm.bench.wrk import WrkResult

SEED_SERVER = r"""
import asyncio, re, sys
BODY = re.compile(rb'^(Write "k\d+" \d+|Read "k\d+")$')
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            body = await reader.readexactly(length)
            ok = head.startswith(b"POST / ") and BODY.match(body)
            reply = b"Ok" if ok else b"bad"
            status = b"200 OK" if ok else b"400 Bad Request"
            head = b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(reply)
            writer.write(head + reply)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()
try:
    asyncio.run(main())
except KeyboardInterrupt:
    pass
"""


def _suite(tmp_path: Path) -> tuple[Suite, list[str]]:
    said: list[str] = []
    plan = dataclasses.replace(QUICK, rss_keys=(2000,), rss_suspended=(500,), fsync_seconds=0.2)
    return Suite(plan, tmp_path, progress=said.append, pinning=Pinning((), ())), said


def test_wrk_scripts_against_a_seed_protocol_server(
    tmp_path: Path, require_tool: Callable[..., str]
) -> None:
    require_tool("wrk", apt="wrk")  # Suite.wrk runs it from PATH
    suite, _ = _suite(tmp_path)
    fake = Contender("fake", "checks seed bodies", (sys.executable, "-c", SEED_SERVER, "{port}"))
    with suite.servers("smoke", [fake]) as ports:
        assert list(ports) == ["fake"]
        port = ports["fake"]
        writes = suite.wrk(port, suite.write_lua, 4, 1)
        reads = suite.wrk(port, suite.read_lua, 2, 1)
        # Pipelined 16 deep: every request of every batch is a seed body, each answered.
        piped = [suite.wrk(port, suite.pipelined_lua[kind], 2, 1) for kind in ("read", "write")]
        # It listens, but it does not speak RESP: the probe says so instead of hanging.
        trouble = probe(port, "resp", timeout=0.5)
        assert trouble is not None and "resp probe on port" in trouble
    assert not port_answers(port)  # stopped when the block ended
    for r in (writes, reads, *piped):
        assert r.requests > 50
        assert r.errors == 0  # every body matched the seed protocol
    for r in (writes, reads):  # wrk's latencies of pipelined batches mean little: not checked
        assert 0 < r.p50_us <= r.p99_us <= r.p999_us <= r.max_us


def test_reads_under_writes_count_the_servers_cpu_per_request(
    tmp_path: Path, require_tool: Callable[..., str]
) -> None:
    require_tool("wrk", apt="wrk")
    suite, _ = _suite(tmp_path)
    fake = Contender("fake", "checks seed bodies", (sys.executable, "-c", SEED_SERVER, "{port}"))
    with suite.servers("smoke", [fake]) as ports:
        reads, writes, cpu = suite._reads_under_writes(ports["fake"], suite.pids["fake"], 1)
    assert reads.requests > 50 and writes.requests > 50
    assert reads.errors == writes.errors == 0
    # the server's CPU over the readers' run, per read and write answered in it
    assert 0 < cpu["loop_us_per_req"] <= cpu["cpu_us_per_req"] < 1e6


def test_a_contender_that_cannot_start_is_reported_with_its_output(tmp_path: Path) -> None:
    suite, said = _suite(tmp_path)
    broken = Contender("broken", "dies", (sys.executable, "-c", "print('no such option')"))
    with suite.servers("smoke", [broken]) as ports:
        assert ports == {}
    reason = suite.results.unavailable["smoke/broken"]
    assert "exited with status 0 before listening" in reason
    assert "no such option" in reason
    assert any("broken unavailable" in line for line in said)


def memory_figures(kind: str, count: int) -> dict[str, float]:
    """``python -m corosm.bench.memory KIND COUNT`` in a fresh process, as the bench runs it.

    In this process, the garbage of earlier tests can be reused or handed back to
    the system meanwhile, and RSS fall while the load grows (a CI run saw it).
    """
    done = subprocess.run(
        [sys.executable, "-m", "corosm.bench.memory", kind, str(count)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


def test_memory_figures_grow_with_load() -> None:
    keys = memory_figures("keys", 20_000)
    assert keys["rss_after"] > keys["rss_before"] > 0
    parked = memory_figures("suspended", 2000)
    assert parked["count"] == 2000
    assert parked["rss_after"] > parked["rss_before"]


def test_suspended_handlers_are_released_and_answered_in_process() -> None:
    # The figures' own check: every parked handler answers once released.
    parked = asyncio.run(rss_with_suspended(50, timeout=30))
    assert parked["count"] == 50 and parked["rss_before"] > 0


def test_recovery_replays_what_was_written(tmp_path: Path) -> None:
    full = measure(tmp_path / "j", 3000, "journal")
    assert full["replayed"] == 3000 and full["recover_s"] > 0
    snap = measure(tmp_path / "s", 3000, "snapshot")
    assert snap["replayed"] == 1000  # only the tail after the snapshot
    assert not (tmp_path / "j").exists()


def test_cli_runs_small_scenarios_and_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = bench_main(["--quick", "--only", "fdatasync,memory", "--out", str(out)])
    assert code == 0
    report = (out / "report.md").read_text()
    assert "## 6. Memory (RSS)" in report and "| 10,000 | keys |" in report
    assert (out / "memory.png").stat().st_size > 1000
    saved = json.loads((out / "results.json").read_text())
    assert {s["scenario"] for s in saved["samples"]} == {"fdatasync", "rss_keys", "rss_suspended"}
    assert capsys.readouterr().err.count("] memory ") == 4  # progress lines were shown
    # The saved results rebuild the same report.
    assert (
        bench_main(["--from-results", str(out / "results.json"), "--out", str(tmp_path / "again")])
        == 0
    )
    assert (tmp_path / "again" / "report.md").read_text() == report


def test_cli_rejects_bad_options_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--only", "speed"]) == 2
    assert "unknown scenarios ['speed']" in capsys.readouterr().err
    assert bench_main(["--dry-run", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "contender blocking (http)" in out and "--journal-mode blocking" in out


def test_a_pipelined_run_keeps_no_latency_figures(tmp_path: Path) -> None:
    suite, said = _suite(tmp_path)
    r = WrkResult(1600, 1.0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # as wrk reports pipelined sends
    suite._record_wrk("http", "reads -P 16", 64, "fake", rnd=0, r=r, latency=False)
    timed = dataclasses.replace(r, p50_us=900.0, p99_us=2500.0, p999_us=4000.0, max_us=5000.0)
    suite._record_wrk("http", "reads", 64, "fake", rnd=0, r=timed)
    piped, lone = (
        suite.results.by_round("http", case, "fake")[0] for case in ("reads -P 16", "reads")
    )
    assert piped == {"rps": 1600.0, "errors": 0.0}
    assert lone["p99_ms"] == 2.5 and lone["p50_ms"] == 0.9
    assert said == [
        "http reads -P 16 fake: 1,600 req/s",
        "http reads fake: 1,600 req/s, p99 2.50 ms",
    ]
