"""Prometheus text exposition (format 0.0.4) of the HTTP and runtime counters.

Theory of operation
-------------------
Nothing here keeps state: :func:`render_metrics` reads three sources at scrape
time and prints them. The app's ``(kind, status) -> count`` table becomes
``corosm_http_requests_total{kind,status}``; :class:`HttpStats` gives the
connection-layer series; ``runtime.stats()`` (a flat dict) gives the machine's.
The runtime keys we know get proper names, types and help; any other key is
still exported, as a gauge ``corosm_runtime_<key>``, so a new counter in the
runtime shows up without a change here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from corosm.frontends.http.messages import HttpStats

# runtime.stats() key -> (metric name, type, help)
_KNOWN: dict[str, tuple[str, str, str]] = {
    "suspended": ("corosm_handlers_suspended", "gauge", "Handlers suspended on I/O now."),
    "queue_depth": ("corosm_input_queue_depth", "gauge", "Inputs waiting in the inbox now."),
    "waiting_for_key": (
        "corosm_handlers_waiting_for_key",
        "gauge",
        "Inputs waiting behind an earlier input on the same key.",
    ),
    "inputs_received": ("corosm_inputs_received_total", "counter", "Inputs submitted."),
    "inputs_processed": ("corosm_inputs_processed_total", "counter", "Inputs finished."),
    "inputs_failed": ("corosm_inputs_failed_total", "counter", "Inputs whose handler failed."),
    "completions": ("corosm_io_completions_total", "counter", "I/O completions delivered."),
}
# Summaries assembled from a (sum, count) pair of runtime keys, first match wins.
_SUMMARIES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "corosm_journal_batch_records",
        "Records per journal group commit (sum = records, count = batches).",
        ("journal_records", "records"),
        ("journal_batches", "batches"),
    ),
    (
        "corosm_journal_fsync_seconds",
        "Time spent in fsync of the journal.",
        ("journal_fsync_seconds_sum", "journal_fsync_seconds_total", "fsync_seconds_total"),
        ("journal_fsyncs", "fsyncs"),
    ),
)
_QUANTILES = (
    ("0.5", ("journal_fsync_p50_seconds", "journal_fsync_recent_p50", "fsync_recent_p50")),
    ("0.99", ("journal_fsync_p99_seconds", "journal_fsync_recent_p99", "fsync_recent_p99")),
)
_NAME_OK = re.compile(r"[^a-zA-Z0-9_]")


def render_metrics(
    requests: Mapping[tuple[str, int], int],
    http: HttpStats,
    runtime: Mapping[str, float],
) -> bytes:
    """The whole ``/metrics`` page."""
    lines: list[str] = []
    _family(lines, "corosm_http_requests_total", "counter", "HTTP requests by kind and status.")
    for (kind, status), count in sorted(requests.items()):
        lines.append(f'corosm_http_requests_total{{kind="{kind}",status="{status}"}} {count}')
    _single(
        lines, "corosm_http_connections_open", "gauge", "Open connections.", http.connections_open
    )
    _single(
        lines,
        "corosm_http_connections_total",
        "counter",
        "Connections accepted.",
        http.connections_opened,
    )
    _family(
        lines,
        "corosm_http_rejected_total",
        "counter",
        "Requests refused by the HTTP layer (400 malformed, 408 slow, 413 body, 417 expectation, "
        "431 head, 500 a failure while parsing).",
    )
    for status, count in sorted(http.rejected.items()):
        lines.append(f'corosm_http_rejected_total{{status="{status}"}} {count}')
    _single(
        lines,
        "corosm_http_response_timeouts_total",
        "counter",
        "Requests answered 503 because their reply took too long.",
        http.response_timeouts,
    )
    _single(
        lines,
        "corosm_http_late_replies_dropped_total",
        "counter",
        "Replies dropped because their client had left or had timed out.",
        http.late_replies_dropped,
    )
    _runtime(lines, runtime)
    lines.append("")
    return "\n".join(lines).encode()


def _runtime(lines: list[str], runtime: Mapping[str, float]) -> None:
    used: set[str] = set()
    for key, (name, kind, help_text) in _KNOWN.items():
        if key in runtime:
            _single(lines, name, kind, help_text, runtime[key])
            used.add(key)
    for name, help_text, sum_keys, count_keys in _SUMMARIES:
        total = _first(runtime, sum_keys, used)
        count = _first(runtime, count_keys, used)
        if total is None or count is None:
            continue
        _family(lines, name, "summary", help_text)
        if name == "corosm_journal_fsync_seconds":
            for quantile, keys in _QUANTILES:
                value = _first(runtime, keys, used)
                if value is not None:
                    lines.append(f'{name}{{quantile="{quantile}"}} {_num(value)}')
        lines.append(f"{name}_sum {_num(total)}")
        lines.append(f"{name}_count {_num(count)}")
    for key in sorted(runtime):
        if key in used:
            continue
        value = runtime[key]
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue  # e.g. a failure message: /health reports it
        name = "corosm_runtime_" + _NAME_OK.sub("_", key)
        _single(
            lines, name, "gauge", f"The runtime stat {name[15:]} (from runtime.stats()).", value
        )


def _first(runtime: Mapping[str, float], keys: tuple[str, ...], used: set[str]) -> float | None:
    for key in keys:
        if key in runtime:
            used.add(key)
            return runtime[key]
    return None


def _family(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")


def _single(lines: list[str], name: str, kind: str, help_text: str, value: float) -> None:
    _family(lines, name, kind, help_text)
    lines.append(f"{name} {_num(value)}")


def _num(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
