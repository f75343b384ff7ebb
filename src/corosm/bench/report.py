"""The report: Markdown tables of figures and ratios, target verdicts, PNG plots.

Theory of operation
-------------------
Everything here is a pure function of :class:`~corosm.bench.results.Results`
(plus matplotlib for the plots), so a report can be rebuilt from a saved
``results.json``. Figures are medians over rounds; ratios are medians of the
per-round ratios (contenders ran alternately, round by round). Each target
of issues 7 and 13 gets a verdict, MET or MISSED, stated plainly; a scenario that
did not run says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from corosm.bench.bank import bank_section
from corosm.bench.results import Results, pairwise_ratio


@dataclass(frozen=True, slots=True)
class Verdict:
    """One performance target (issues 7 and 13) and how this run did."""

    target: str
    measured: float | None
    threshold: float
    higher_is_better: bool
    unit: str = "x"

    @property
    def met(self) -> bool | None:
        """True/False, or None when the figure was not measured."""
        if self.measured is None:
            return None
        if self.higher_is_better:
            return self.measured >= self.threshold
        return self.measured <= self.threshold

    def row(self) -> list[str]:
        """Cells of the targets table."""
        shown = "n/a" if self.measured is None else f"{self.measured:.2f}{self.unit}"
        want = (">= " if self.higher_is_better else "<= ") + f"{self.threshold:g}{self.unit}"
        verdict = {True: "MET", False: "**MISSED**", None: "not measured"}[self.met]
        return [self.target, shown, want, verdict]


def verdicts(results: Results) -> list[Verdict]:
    """The performance targets (issue 13 raised those of issue 7), judged on ``results``."""

    def vs(scenario: str, case: str, b: str) -> float | None:
        return pairwise_ratio(results, scenario, case, "corosm", b)

    recovery = [s for s in results.select("recovery", "journal") if s.values["recover_s"] > 0]
    replay = max(recovery, key=lambda s: s.x).values["replay_per_s"] / 1e3 if recovery else None
    always, ra = "redis appendfsync always", "redis-always"
    return [
        Verdict("HTTP seed reads, 64 conns: corosm / constant-Ok limit",
                vs("http", "reads 64 conns", "constant"), 0.85, True),
        Verdict("durable writes, 64 conns: corosm / constant-Ok limit",
                vs("durable_writes", "64 conns", "constant"), 0.65, True),
        Verdict("durable writes, 64 conns: corosm / blocking",
                vs("durable_writes", "64 conns", "blocking"), 8, True),
        Verdict("read p99 with 64 writers / reads alone (corosm)",
                _read_ratio(results, "corosm"), 2, False),
        Verdict(f"RESP SET -c 50: corosm / {always}", vs("redis", "SET -c 50", ra), 0.8, True),
        Verdict(f"RESP GET -c 50: corosm / {always}", vs("redis", "GET -c 50", ra), 0.8, True),
        Verdict(f"RESP SET -c 50 -P 16: corosm / {always}",
                vs("redis", "SET -c 50 -P 16", ra), 0.5, True),
        Verdict(f"RESP GET -c 50 -P 16: corosm / {always}",
                vs("redis", "GET -c 50 -P 16", ra), 0.3, True),
        Verdict("recovery replay rate (largest journal)", replay, 500, True, "k rec/s"),
    ]  # fmt: skip


def _read_ratio(results: Results, contender: str) -> float | None:
    loaded = results.median("reads", "reads + 64 writers", contender, "p99_ms")
    alone = results.median("reads", "reads alone", contender, "p99_ms")
    return loaded / alone if loaded is not None and alone else None


def _last_lines(text: str, keep: int = 2) -> str:
    """A process's output on one line: its last lines (a traceback's last is the error)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ... ".join(lines[-keep:])


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def durable_writes_section(results: Results) -> list[str]:
    """Scenarios 1 and 3: throughput per connection count, ratios pair by pair."""
    sc = "durable_writes"
    names = results.contenders(sc)
    disk = results.median("fdatasync", "100-byte write + fdatasync", "disk", "rps")
    header = ["connections", *(f"{n} req/s" for n in names), "raw fdatasync/s"]
    header += ["corosm / blocking", "corosm / constant", "corosm p50 / p99 / p99.9 ms"]
    header += [f"{n} CPU us/req (loop)" for n in names]
    rows = []
    for case, _ in results.cases(sc):
        p = [results.median(sc, case, "corosm", k) for k in ("p50_ms", "p99_ms", "p999_ms")]
        rows.append([
            case.split()[0],
            *(_num(results.median(sc, case, n, "rps")) for n in names),
            _num(disk),
            _ratio(pairwise_ratio(results, sc, case, "corosm", "blocking")),
            _ratio(pairwise_ratio(results, sc, case, "corosm", "constant")),
            " / ".join(_num(v, ".2f") for v in p),
            *(_cpu_cell(results, case, n) for n in names),
        ])  # fmt: skip
    return _table(header, rows)


def _cpu_cell(results: Results, case: str, name: str, scenario: str = "durable_writes") -> str:
    """Server CPU us per request: whole process (main/loop thread in parentheses)."""
    whole = results.median(scenario, case, name, "cpu_us_per_req")
    loop = results.median(scenario, case, name, "loop_us_per_req")
    return f"{_num(whole)} ({_num(loop)})" if whole is not None else "n/a"


def reads_section(results: Results) -> list[str]:
    """Scenario 2: read latency alone and under 64 durable writers (constant: the reference)."""
    rows = []
    for name in results.contenders("reads"):
        alone = [results.median("reads", "reads alone", name, k) for k in ("p50_ms", "p99_ms")]
        loaded = [
            results.median("reads", "reads + 64 writers", name, k) for k in ("p50_ms", "p99_ms")
        ]
        writes = results.median("reads_writers", "64 writers", name, "rps")
        rows.append([
            name,
            *(_num(v, ".2f") for v in alone),
            *(_num(v, ".2f") for v in loaded),
            _ratio(_read_ratio(results, name)),
            _num(writes),
            _cpu_cell(results, "reads alone", name, "reads"),
            _cpu_cell(results, "reads + 64 writers", name, "reads"),
        ])  # fmt: skip
    header = ["server", "alone p50 ms", "alone p99 ms", "loaded p50 ms", "loaded p99 ms"]
    header += ["p99 loaded / alone", "writes/s meanwhile"]
    header += ["CPU us/req (loop) alone", "CPU us/req (loop) loaded, reads and writes"]
    return _table(header, rows)


def http_section(results: Results) -> list[str]:
    """Seed reads and pipelined requests against the constant-Ok stack."""
    names = results.contenders("http")
    others = [n for n in names if n != "corosm"]
    header = ["case", *(f"{n} req/s" for n in names), *(f"corosm / {n}" for n in others)]
    header += [f"{n} CPU us/req (loop)" for n in names]
    rows = []
    for case, _ in results.cases("http"):
        rows.append([
            case,
            *(_num(results.median("http", case, n, "rps")) for n in names),
            *(_ratio(pairwise_ratio(results, "http", case, "corosm", n)) for n in others),
            *(_cpu_cell(results, case, n, "http") for n in names),
        ])  # fmt: skip
    return _table(header, rows)


def redis_section(results: Results) -> list[str]:
    """Scenario 4: redis-benchmark figures, corosm against each redis-server mode."""
    names = results.contenders("redis")
    others = [n for n in names if n != "corosm"]
    header = ["test", *(f"{n} req/s" for n in names), *(f"corosm / {n}" for n in others)]
    header += [f"{n} CPU us/req (main)" for n in names]
    rows = []
    for case, _ in results.cases("redis"):
        rows.append([
            case,
            *(_num(results.median("redis", case, n, "rps")) for n in names),
            *(_ratio(pairwise_ratio(results, "redis", case, "corosm", n)) for n in others),
            *(_cpu_cell(results, case, n, "redis") for n in names),
        ])  # fmt: skip
    return _table(header, rows)


def recovery_section(results: Results) -> list[str]:
    """Scenario 5: restart time against records written."""
    rows = []
    for s in results.select("recovery"):
        v = s.values
        rows.append([
            f"{int(v['records']):,}", s.contender, f"{v['disk_bytes'] / 2**20:.1f}",
            f"{int(v['replayed']):,}", f"{v['recover_s']:.3f}",
            _num(v["records"] / v["recover_s"] if v["recover_s"] > 0 else None),
        ])  # fmt: skip
    header = ["records written", "layout", "on disk MiB", "records replayed", "restart s"]
    return _table([*header, "records / restart s"], rows)


def memory_section(results: Results) -> list[str]:
    """Scenario 6: RSS against keys and suspended handlers."""
    rows = [
        [f"{int(s.x):,}", s.contender, f"{s.values['rss_mb']:.1f}", f"{s.values['bytes_each']:.0f}"]
        for scenario in ("rss_keys", "rss_suspended")
        for s in results.select(scenario)
    ]  # fmt: skip
    return _table(["count", "of", "RSS MiB", "bytes each (growth / count)"], rows)


Section = Callable[[Results], list[str]]
SECTIONS: tuple[tuple[str, str, Section], ...] = (
    ("durable_writes", "1 and 3. Durable writes (seed HTTP protocol, wrk)", durable_writes_section),
    ("reads", "2. Reads while 64 connections write durably", reads_section),
    ("http", "2b. Seed reads and pipelined HTTP (wrk, 64 conns)", http_section),
    ("redis", "4. Redis protocol (redis-benchmark -t set,get)", redis_section),
    ("recovery", "5. Recovery time against journal size", recovery_section),
    ("rss_keys", "6. Memory (RSS)", memory_section),
    ("bank", "8. The bank example: JSON transfers, PER_KEY against EXCLUSIVE", bank_section),
)


def markdown(results: Results, plots: Sequence[str] = ()) -> str:
    """The whole report as Markdown; ``plots`` are image paths relative to it."""
    mode = "quick" if results.quick else "full"
    out = [f"# corosm benchmark report ({mode} run, {results.elapsed_s:.0f} s)", ""]
    out += _table(["machine", ""], [*map(list, results.host.rows()), ["Pinning", results.pinning]])
    out += ["## Targets (issues 7 and 13)", ""]
    out += _table(["target", "measured", "wanted", "verdict"], [v.row() for v in verdicts(results)])
    for scenario, title, section in SECTIONS:
        out += [f"## {title}", ""]
        out += section(results) if results.select(scenario) else ["Not measured in this run.", ""]
    out += [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    if results.unavailable:
        out += ["## Not measured, and why", ""]
        out += [f"- **{k}**: {_last_lines(v)}" for k, v in results.unavailable.items()] + [""]
    if results.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in results.notes] + [""]
    if results.profile:
        out += ["## Where the time goes (cProfile of the server's loop thread)", ""]
        out += [results.profile]
    return "\n".join(out)
