"""The benchmark suite's pure parts: load-generator output, results, verdicts, report."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from corosm.bench import contenders as cont
from corosm.bench.cli import plan_from, scenarios_from
from corosm.bench.hostinfo import HostInfo
from corosm.bench.redisbench import parse_redis_benchmark_csv, redis_benchmark_command
from corosm.bench.report import markdown, verdicts
from corosm.bench.results import Results, Sample, pairwise_ratio
from corosm.bench.wrk import lua_script, parse_wrk_output, parse_wrk_text, wrk_command
from corosm.errors import UsageError

# Recorded from `wrk -t1 -c64 -d2s --latency` (wrk 4.1.0) against a local server.
WRK_TEXT = """\
Running 2s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.61ms  512.33us  12.40ms   91.02%
    Req/Sec    24.51k     1.20k   26.02k    80.00%
  Latency Distribution
     50%    2.50ms
     75%    2.71ms
     90%    3.02ms
     99%    4.87ms
  48790 requests in 2.00s, 3.77MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  24395.00
Transfer/sec:      1.88MB
"""

SUMMARY = (
    'CORSM {"requests": 1000, "duration_us": 2000000, "bytes": 5, "connect_errors": 0, '
    '"read_errors": 0, "write_errors": 0, "status_errors": 3, "timeouts": 1, "p50_us": 900, '
    '"p90_us": 1500, "p99_us": 2500, "p999_us": 9000, "mean_us": 1000.5, "max_us": 12000}'
)

REDIS_CSV = """\
"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"SET","64516.13","0.050","0.016","0.047","0.095","0.127","0.375"
"GET","86956.52","0.034","0.016","0.031","0.047","0.087","0.239"
"""


def test_wrk_text_is_parsed_with_units_and_errors() -> None:
    r = parse_wrk_text(WRK_TEXT)
    assert r.requests == 48790
    assert r.seconds == pytest.approx(2.0)
    assert r.errors == 2 + 1 + 7
    assert (r.p50_us, r.p90_us, r.p99_us) == (2500.0, 3020.0, 4870.0)
    assert r.mean_us == pytest.approx(2610.0)
    assert r.max_us == pytest.approx(12400.0)
    assert r.ok_rps == pytest.approx((48790 - 10) / 2.0)


def test_summary_line_wins_over_the_table() -> None:
    r = parse_wrk_output(WRK_TEXT + SUMMARY + "\n")
    assert r.requests == 1000
    assert r.errors == 4
    assert r.p999_us == 9000.0
    assert r.rps == pytest.approx(500.0)
    assert r.ok_rps == pytest.approx(498.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("wrk: connection refused\n", "no 'N requests in T' line"),
        ("  10 requests in 1.00s, 1KB read\n", "run wrk with --latency"),
        ('CORSM {"requests": "many"}', "bad wrk summary line"),
    ],
)
def test_bad_wrk_output_says_what_was_expected(text: str, expected: str) -> None:
    with pytest.raises(UsageError, match=expected):
        parse_wrk_output(text)


def test_lua_scripts_speak_the_seed_protocol() -> None:
    write = lua_script("write")
    assert "'Write \"k' .. counter .. '\" ' .. counter" in write
    assert "latency:percentile(99.9)" in write
    read = lua_script("read", keyspace=77)
    assert "counter % 77" in read and "'Read \"k'" in read
    with pytest.raises(UsageError, match="expected 'write' or 'read'"):
        lua_script("delete")
    with pytest.raises(UsageError, match="keyspace"):
        lua_script("read", keyspace=0)


def test_wrk_command_never_has_more_threads_than_connections() -> None:
    argv = wrk_command("http://127.0.0.1:1/", Path("s.lua"), 1, 2.4, threads=4)
    assert argv[:4] == ["wrk", "-t1", "-c1", "-d2s"]
    assert "--latency" in argv and argv[-1] == "http://127.0.0.1:1/"
    with pytest.raises(UsageError):
        wrk_command("http://x/", Path("s.lua"), 0, 1)


def test_redis_benchmark_csv() -> None:
    rows = parse_redis_benchmark_csv("noise line\n" + REDIS_CSV)
    assert set(rows) == {"SET", "GET"}
    assert rows["SET"].rps == pytest.approx(64516.13)
    assert rows["GET"].p99_ms == pytest.approx(0.087)
    with pytest.raises(UsageError, match="--csv"):
        parse_redis_benchmark_csv("SET: 1000.00 requests per second\n")
    with pytest.raises(UsageError, match="bad redis-benchmark CSV row"):
        parse_redis_benchmark_csv(REDIS_CSV.replace("64516.13", "fast"))
    argv = redis_benchmark_command(6379, "set,get", 1000, 50, pipeline=16)
    assert argv[argv.index("-P") + 1] == "16" and "--csv" in argv


def _host() -> HostInfo:
    return HostInfo("cpu", 2, "Linux", "CPython 3.11", "ext4", "/dev/x")


def _results() -> Results:
    res = Results(host=_host(), quick=True, pinning="none")
    # Two rounds; per-round ratios corosm/blocking are 10 and 6 -> median 8.
    for rnd, (a, b, c) in enumerate([(1000.0, 100.0, 1500.0), (600.0, 100.0, 1500.0)]):
        for name, rps in (("corosm", a), ("blocking", b), ("constant", c)):
            values = {"rps": rps, "p50_ms": 1.0, "p99_ms": 2.0, "p999_ms": 3.0, "errors": 0.0}
            res.add(Sample("durable_writes", "64 conns", 64, name, rnd, values))
    cpu = {"cpu_us_per_req": 12.0, "loop_us_per_req": 9.0}
    res.add(Sample("reads", "reads alone", 0, "corosm", 0, {"p50_ms": 1.0, "p99_ms": 1.0} | cpu))
    res.add(Sample("reads", "reads + 64 writers", 64, "corosm", 0, {"p50_ms": 1, "p99_ms": 3}))
    for name, rps in (("corosm", 900.0), ("constant", 1000.0)):
        res.add(Sample("http", "reads 64 conns", 64, name, 0, {"rps": rps}))
    return res


def test_medians_and_pairwise_ratios() -> None:
    res = _results()
    assert res.median("durable_writes", "64 conns", "corosm", "rps") == 800.0
    assert pairwise_ratio(res, "durable_writes", "64 conns", "corosm", "blocking") == 8.0
    assert pairwise_ratio(res, "durable_writes", "64 conns", "corosm", "nobody") is None
    assert res.contenders("durable_writes") == ["corosm", "blocking", "constant"]


def test_verdicts_say_met_and_missed_plainly() -> None:
    by_target = {v.target: v for v in verdicts(_results())}
    assert by_target["durable writes, 64 conns: corosm / blocking"].met is True
    limit = by_target["durable writes, 64 conns: corosm / constant-Ok limit"]
    assert limit.measured == pytest.approx((1000 / 1500 + 600 / 1500) / 2)
    assert limit.met is False  # 0.53x: issue 13 asks for 0.65x
    http = by_target["HTTP seed reads, 64 conns: corosm / constant-Ok limit"]
    assert http.measured == pytest.approx(0.9) and http.met is True
    reads = by_target["read p99 with 64 writers / reads alone (corosm)"]
    assert reads.measured == 3.0 and reads.met is False
    assert by_target["recovery replay rate (largest journal)"].met is None
    res = _results()
    res.unavailable["reads/blocking"] = "Traceback:\n  File x\n    boom()\nValueError: no port"
    text = markdown(res, ["throughput.png"])
    assert "- **reads/blocking**: boom() ... ValueError: no port\n" in text
    assert (
        "| read p99 with 64 writers / reads alone (corosm) | 3.00x | <= 2x | **MISSED** |" in text
    )
    assert "| 64 | 800 | 100 | 1,500 |" in text
    # every row says what a request cost the server, where it was measured
    assert "| corosm | 1.00 | 1.00 | 1.00 | 3.00 | 3.00x | n/a | 12 (9) | n/a |" in text
    assert "![throughput](throughput.png)" in text


def test_results_round_trip_and_bad_file(tmp_path: Path) -> None:
    res = _results()
    res.unavailable["redis/corosm"] = "no RESP port"
    res.save(tmp_path / "r.json")
    back = Results.load(tmp_path / "r.json")
    assert back == res
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UsageError, match=r"expected the results\.json"):
        Results.load(tmp_path / "bad.json")


def test_contender_templates() -> None:
    c = cont.corosm_blocking()
    argv = c.command(1234, Path("/d"), 5678)
    assert argv[argv.index("--port") + 1] == "1234"
    assert argv[argv.index("--data-dir") + 1] == "/d"
    assert argv[-2:] == ["--journal-mode", "blocking"]
    resp = cont.corosm_resp()
    assert resp.ports(1, 2) == [1] and resp.load_port(1, 2) == 1 and resp.protocol == "resp"
    off = cont.redis(None)
    assert off.command(9, Path("/d"))[-2:] == ["--appendonly", "no"] and off.load_port(9, 2) == 9
    assert cont.profiled(resp, Path("/p")).protocol == "resp"
    prof = cont.profiled(cont.corosm_durable(), Path("/p.prof"))
    assert prof.template[1:7] == ("-m", "cProfile", "-o", "/p.prof", "-m", "corosm.bench.serve")


def test_serve_prefix_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COROSM_BENCH_SERVE", "myserver 'with space'")
    assert cont.corosm_durable().template[:2] == ("myserver", "with space")


def test_cli_options_are_checked() -> None:
    args = argparse.Namespace(quick=True, rounds=3, seconds=None)
    assert plan_from(args).rounds == 3 and plan_from(args).quick
    with pytest.raises(UsageError, match="--rounds must be at least 1"):
        plan_from(argparse.Namespace(quick=False, rounds=0, seconds=None))
    assert scenarios_from("memory, recovery") == ["memory", "recovery"]
    with pytest.raises(UsageError, match="unknown scenarios"):
        scenarios_from("memory,speed")
