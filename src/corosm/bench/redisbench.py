"""redis-benchmark as the RESP load generator: command lines and CSV parsing.

Theory of operation
-------------------
``redis-benchmark --csv`` prints one header row and one row per test
(``"SET","64516.13","0.050",...``): requests per second and latency figures
in milliseconds. We run it with a fixed request count (it has no duration
option) and a random keyspace (``-r``), so SETs do not all hit one key.
The same command measures both corosm's RESP front end and redis-server.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from corosm.errors import UsageError

_NEEDED = ("test", "rps", "avg_latency_ms", "p50_latency_ms", "p99_latency_ms")


@dataclass(frozen=True, slots=True)
class RedisBenchRow:
    """One test's figures from redis-benchmark. Latencies in milliseconds."""

    test: str
    rps: float
    avg_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def redis_benchmark_command(
    port: int,
    tests: str,
    requests: int,
    clients: int,
    *,
    pipeline: int = 1,
    keyspace: int = 100_000,
) -> list[str]:
    """The ``redis-benchmark`` command line for one run against 127.0.0.1:``port``."""
    if requests < 1 or clients < 1 or pipeline < 1:
        raise UsageError(
            f"requests, clients and pipeline must be >= 1, got {requests}, {clients}, {pipeline}"
        )
    return [
        "redis-benchmark",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-t",
        tests,
        "-n",
        str(requests),
        "-c",
        str(clients),
        "-P",
        str(pipeline),
        "-r",
        str(keyspace),
        "--csv",
    ]


def parse_redis_benchmark_csv(text: str) -> dict[str, RedisBenchRow]:
    """Parse ``redis-benchmark --csv`` output into rows keyed by test name (``SET``, ``GET``)."""
    lines = [line for line in text.splitlines() if line.startswith('"')]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    if reader.fieldnames is None or not set(_NEEDED) <= set(reader.fieldnames):
        raise UsageError(
            f"redis-benchmark output lacks the CSV header {_NEEDED}; run it with --csv. "
            f"Got: {text.strip()[:200]!r}"
        )
    rows: dict[str, RedisBenchRow] = {}
    for raw in reader:
        try:
            row = RedisBenchRow(
                test=raw["test"],
                rps=float(raw["rps"]),
                avg_ms=float(raw["avg_latency_ms"]),
                p50_ms=float(raw["p50_latency_ms"]),
                p99_ms=float(raw["p99_latency_ms"]),
                max_ms=float(raw.get("max_latency_ms") or raw["p99_latency_ms"]),
            )
        except (TypeError, ValueError) as exc:
            raise UsageError(f"bad redis-benchmark CSV row {raw!r}: {exc}") from exc
        rows[row.test] = row
    if not rows:
        raise UsageError(f"redis-benchmark printed no results: {text.strip()[:200]!r}")
    return rows
