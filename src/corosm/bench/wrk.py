"""wrk as the HTTP load generator: Lua scripts for the seed protocol, and parsing.

Theory of operation
-------------------
Each run of ``wrk`` gets a generated Lua script that builds the seed
protocol's requests (``POST /`` with ``Write "k<N>" <N>`` or ``Read "k<N>"``)
and, in ``done()``, prints one line ``CORSM {...}`` of JSON with the request
count, the error counters and the latency percentiles that wrk's own
``--latency`` table lacks (p99.9). We parse that line rather than wrk's
human-readable table, because its units vary (us/ms/s) and it rounds;
:func:`parse_wrk_text` still reads the table, as a cross-check and for
recorded outputs without the summary line.

Keys are spread by thread (wrk gives every thread its own Lua state), so two
threads never write the same sequence of keys.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from corosm.errors import UsageError

SUMMARY_TAG = "CORSM "

_COMMON_LUA = r"""
local counter = 0
local thread_no = 0
local threads = {}

function setup(thread)
  thread:set("thread_no", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = thread_no * 100000000
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'CORSM {"requests": %d, "duration_us": %d, "bytes": %d, '
    .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, '
    .. '"status_errors": %d, "timeouts": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, '
    .. '"mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
"""

_WRITE_LUA = r"""
wrk.method = "POST"
function request()
  counter = counter + 1
  return wrk.format(nil, "/", nil, 'Write "k' .. counter .. '" ' .. counter)
end
"""

_READ_LUA = r"""
wrk.method = "POST"
function request()
  counter = counter + 1
  local n = counter % KEYSPACE
  return wrk.format(nil, "/", nil, 'Read "k' .. n .. '"')
end
"""


# Pipelined: each request() returns DEPTH requests in one string (wrk counts
# every response), built once per thread in init() with that thread's keys.
_PIPELINE_LUA = r"""
wrk.method = "POST"
function init(args)
  counter = thread_no * 100000000
  local parts = {}
  for i = 1, DEPTH do
    counter = counter + 1
    parts[i] = wrk.format(nil, "/", nil, BODY)
  end
  batch = table.concat(parts)
end

function request()
  return batch
end
"""
_PIPELINE_BODIES = {
    "write": """'Write "k' .. counter .. '" ' .. counter""",
    "read": """'Read "k' .. (counter % KEYSPACE) .. '"'""",
}


def lua_script(kind: str, keyspace: int = 10_000, depth: int = 1) -> str:
    """The Lua script for ``kind``: ``"write"`` or ``"read"`` (over ``keyspace`` keys).

    ``depth`` > 1 pipelines: every send carries ``depth`` requests.
    """
    if kind not in ("write", "read"):
        raise UsageError(f"unknown wrk workload {kind!r}; expected 'write' or 'read'")
    if keyspace < 1 or depth < 1:
        raise UsageError(f"keyspace and depth must be at least 1, got {keyspace}, {depth}")
    if depth > 1:
        body = _PIPELINE_BODIES[kind].replace("KEYSPACE", str(keyspace))
        return _COMMON_LUA + _PIPELINE_LUA.replace("DEPTH", str(depth)).replace("BODY", body)
    if kind == "write":
        return _COMMON_LUA + _WRITE_LUA
    return _COMMON_LUA + _READ_LUA.replace("KEYSPACE", str(keyspace))


def write_script(directory: Path, kind: str, keyspace: int = 10_000, depth: int = 1) -> Path:
    """Write the script for ``kind`` into ``directory`` and return its path."""
    suffix = "" if depth == 1 else f"-p{depth}"
    path = directory / f"seed-{kind}{suffix}.lua"
    path.write_text(lua_script(kind, keyspace, depth), encoding="utf-8")
    return path


def wrk_command(
    url: str, script: Path, connections: int, seconds: float, threads: int = 1
) -> list[str]:
    """The ``wrk`` command line for one run (threads never exceed connections)."""
    if connections < 1 or seconds <= 0:
        raise UsageError(f"need connections >= 1 and seconds > 0, got {connections}, {seconds}")
    threads = max(1, min(threads, connections))
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured. Latencies are in microseconds."""

    requests: int
    seconds: float
    errors: int
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    mean_us: float
    max_us: float

    @property
    def rps(self) -> float:
        """Completed requests per second (errors included, as wrk counts them)."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok_rps(self) -> float:
        """Requests per second that got a 2xx/3xx reply."""
        good = max(0, self.requests - self.errors)
        return good / self.seconds if self.seconds > 0 else 0.0


def parse_wrk_output(text: str) -> WrkResult:
    """Parse a wrk run's stdout: the ``CORSM`` summary line if present, else the table."""
    for line in text.splitlines():
        if line.startswith(SUMMARY_TAG):
            return _parse_summary(line[len(SUMMARY_TAG) :])
    return parse_wrk_text(text)


def _parse_summary(payload: str) -> WrkResult:
    try:
        data = json.loads(payload)
        errors = sum(
            int(data[k])
            for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        )
        return WrkResult(
            requests=int(data["requests"]),
            seconds=int(data["duration_us"]) / 1e6,
            errors=errors,
            p50_us=float(data["p50_us"]),
            p90_us=float(data["p90_us"]),
            p99_us=float(data["p99_us"]),
            p999_us=float(data["p999_us"]),
            mean_us=float(data["mean_us"]),
            max_us=float(data["max_us"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"bad wrk summary line {payload!r:.200}: {exc}") from exc


_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}
_DURATION = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s*(50|90|99)(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_LATENCY_ROW = re.compile(
    r"^\s*Latency\s+([\d.]+)(us|ms|s|m)\s+[\d.]+\w+\s+([\d.]+)(us|ms|s|m)", re.MULTILINE
)
_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk_text(text: str) -> WrkResult:
    """Parse wrk's human-readable output (run with ``--latency``).

    p99.9 is not in the table; it is reported as the max, an upper bound.
    """
    total = _DURATION.search(text)
    if total is None:
        raise UsageError(
            "wrk output has no 'N requests in T' line; expected wrk's normal report, got: "
            f"{text.strip()[:200]!r}"
        )
    requests = int(total.group(1))
    seconds = float(total.group(2)) * _UNITS_US[total.group(3)] / 1e6
    pct = {
        m.group(1): float(m.group(2)) * _UNITS_US[m.group(3)] for m in _PERCENTILE.finditer(text)
    }
    if not {"50", "90", "99"} <= pct.keys():
        raise UsageError("wrk output has no latency distribution; run wrk with --latency")
    row = _LATENCY_ROW.search(text)
    mean = float(row.group(1)) * _UNITS_US[row.group(2)] if row else pct["50"]
    worst = float(row.group(3)) * _UNITS_US[row.group(4)] if row else pct["99"]
    errors = 0
    if (sock := _ERRORS.search(text)) is not None:
        errors += sum(int(g) for g in sock.groups())
    if (non2xx := _NON_2XX.search(text)) is not None:
        errors += int(non2xx.group(1))
    return WrkResult(
        requests=requests,
        seconds=seconds,
        errors=errors,
        p50_us=pct["50"],
        p90_us=pct["90"],
        p99_us=pct["99"],
        p999_us=worst,
        mean_us=mean,
        max_us=worst,
    )
