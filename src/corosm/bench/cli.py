"""``corosm bench``: run the benchmark suite and write the report.

Theory of operation
-------------------
:func:`register` adds the subcommand to the ``corosm`` parser (see
:mod:`corosm.frontends.cli`); :func:`run_bench` builds a
:class:`~corosm.bench.suite.Suite`, runs it with progress on stderr, and
writes ``report.md``, ``results.json`` and the PNG plots into ``--out``.
``--dry-run`` only prints what would run (tools found, contender command
lines, sizes) and ``--from-results`` rebuilds a report from a saved run.
``python -m corosm.bench`` runs the same thing without the ``corosm`` CLI.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from corosm.bench import contenders as cont
from corosm.bench.plots import check_matplotlib, write_plots
from corosm.bench.procs import Pinning, install_hint
from corosm.bench.report import markdown
from corosm.bench.results import Results
from corosm.bench.suite import FULL, QUICK, SCENARIOS, Plan, Suite
from corosm.errors import UsageError

TOOLS = ("wrk", "redis-server", "redis-benchmark", "taskset")


def register(subparsers: Any) -> None:
    """Add ``bench`` to the ``corosm`` command's subparsers."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmark a corosm server",
        description="Run the benchmark suite of issue 7 and write report.md, results.json "
        "and PNG plots. --quick takes about a minute; the full run under 15 minutes.",
    )
    add_arguments(parser)
    parser.set_defaults(run=run_bench)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``corosm bench``."""
    parser.add_argument("--quick", action="store_true", help="short run (about a minute)")
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="report directory")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios to run, among: {','.join(SCENARIOS)}",
    )
    parser.add_argument("--rounds", type=int, help="A/B rounds per comparison (overrides plan)")
    parser.add_argument("--seconds", type=int, help="seconds per wrk run (overrides plan)")
    parser.add_argument("--data-dir", type=Path, help="where servers keep data (default: in --out)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    parser.add_argument("--from-results", type=Path, help="rebuild the report from results.json")


def plan_from(args: argparse.Namespace) -> Plan:
    """The plan the options select, with overrides checked."""
    plan = QUICK if args.quick else FULL
    if args.rounds is not None:
        if args.rounds < 1:
            raise UsageError(f"--rounds must be at least 1, got {args.rounds}")
        plan = dataclasses.replace(plan, rounds=args.rounds)
    if args.seconds is not None:
        if args.seconds < 1:
            raise UsageError(f"--seconds must be at least 1 (wrk's resolution), got {args.seconds}")
        plan = dataclasses.replace(plan, seconds=args.seconds)
    return plan


def scenarios_from(text: str) -> list[str]:
    """Parse ``--only``; a clear error for unknown names."""
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown or not chosen:
        raise UsageError(f"--only: unknown scenarios {unknown}; expected some of {SCENARIOS}")
    return chosen


def dry_run(plan: Plan, only: Sequence[str]) -> str:
    """What a run would do, as text: tools, pinning, sizes, contender command lines."""
    lines = [f"plan: {plan}", f"scenarios: {', '.join(only)}"]
    lines += [f"tool {t}: {shutil.which(t) or f'MISSING ({install_hint(t)})'}" for t in TOOLS]
    lines.append(f"pinning: {Pinning.for_this_machine().describe()}")
    everyone = (
        cont.corosm_durable(),
        cont.corosm_blocking(),
        cont.corosm_constant(),
        cont.corosm_resp(),
        cont.redis("always"),
        cont.redis("everysec"),
        cont.redis(None),
    )
    for c in everyone:
        argv = c.command(8080, Path("DATA"), 6380)
        lines.append(f"contender {c.name} ({c.protocol}): {shlex.join(argv)}")
    return "\n".join(lines)


def write_report(results: Results, out: Path) -> Path:
    """Write results.json, the plots and report.md into ``out``; return the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    results.save(out / "results.json")
    plots = write_plots(results, out)
    report = out / "report.md"
    report.write_text(markdown(results, [p.name for p in plots]), encoding="utf-8")
    return report


def run_bench(args: argparse.Namespace) -> int:
    """Run ``corosm bench`` with parsed ``args``; return the exit code."""
    if args.from_results is not None:
        report = write_report(Results.load(args.from_results), args.out)
        print(f"report: {report}")
        return 0
    plan = plan_from(args)
    only = scenarios_from(args.only)
    if args.dry_run:
        print(dry_run(plan, only))
        return 0
    check_matplotlib()  # the plots come last: find out before the run, not after it
    args.out.mkdir(parents=True, exist_ok=True)
    parent = args.data_dir or args.out
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="corosm-bench-", dir=parent))
    try:
        results = Suite(plan, work).run(only)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = write_report(results, args.out)
    print(f"report: {report}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m corosm.bench``: the same as ``corosm bench``."""
    parser = argparse.ArgumentParser(prog="corosm bench")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_bench(args)
    except UsageError as exc:
        print(f"corosm bench: {exc}", file=sys.stderr)
        return 2
