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

Everything that can be checked before minutes of measuring is checked
first, each a one-line :class:`~corosm.errors.UsageError` (exit 2): the
options, their combination, that ``--out`` and ``--data-dir`` are
directories it can write in, matplotlib. Then the exit code says how the
run went: 0, every chosen scenario ran or was skipped for a missing tool
(named at the end, with its install command); 1, the report was written but
a scenario failed part way (its rows are kept, the report says why); 130,
143 or 129, Ctrl-C, SIGTERM or SIGHUP stopped it: every child was stopped
and the figures measured so far are written as a report all the same. The
codes are the ``corosm`` command's (:data:`corosm.frontends.cli.EXIT_CODES_HELP`,
which ``--help`` shows).
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
from corosm.bench.procs import (
    Pinning,
    exit_code,
    install_hint,
    last_lines,
    signal_name,
    stop_signals_interrupt,
)
from corosm.bench.report import markdown
from corosm.bench.results import Results
from corosm.bench.suite import FULL, QUICK, SCENARIOS, Plan, Suite
from corosm.errors import UsageError
from corosm.frontends.cli import EXIT_CODES_HELP, EXIT_OK, EXIT_PART_FAILED, EXIT_USAGE

TOOLS = ("wrk", "redis-server", "redis-benchmark", "taskset")
MAX_ROUNDS = 100
MAX_SECONDS = 600  # per wrk run; a run is bounded in time


def register(subparsers: Any) -> None:
    """Add ``bench`` to the ``corosm`` command's subparsers."""
    parser = subparsers.add_parser(
        "bench",
        help="benchmark a corosm server",
        description="Run the benchmark suite of issue 7 and write report.md, results.json "
        "and PNG plots. --quick takes about a minute; the full run under 15 minutes.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(run=run_bench)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``corosm bench``."""
    parser.add_argument("--quick", action="store_true", help="short run (about a minute)")
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="report directory")
    parser.add_argument(
        "--only",
        default=None,
        help=f"comma-separated scenarios to run, among: {','.join(SCENARIOS)} (all)",
    )
    parser.add_argument(
        "--rounds", type=int, help=f"A/B rounds per comparison, 1..{MAX_ROUNDS} (overrides plan)"
    )
    parser.add_argument(
        "--seconds", type=int, help=f"seconds per wrk run, 1..{MAX_SECONDS} (overrides plan)"
    )
    parser.add_argument("--data-dir", type=Path, help="where servers keep data (default: in --out)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    parser.add_argument("--from-results", type=Path, help="rebuild the report from results.json")


def plan_from(args: argparse.Namespace) -> Plan:
    """The plan the options select, with overrides checked."""
    plan = QUICK if args.quick else FULL
    if args.rounds is not None:
        if not 1 <= args.rounds <= MAX_ROUNDS:
            raise UsageError(
                f"--rounds must be at least 1 and at most {MAX_ROUNDS}, got {args.rounds}"
            )
        plan = dataclasses.replace(plan, rounds=args.rounds)
    if args.seconds is not None:
        if not 1 <= args.seconds <= MAX_SECONDS:
            raise UsageError(
                f"--seconds must be at least 1 (wrk's resolution) and at most {MAX_SECONDS}, "
                f"got {args.seconds}"
            )
        plan = dataclasses.replace(plan, seconds=args.seconds)
    return plan


def scenarios_from(text: str | None) -> list[str]:
    """Parse ``--only`` (None: every scenario); a clear error for unknown names."""
    if text is None:
        return list(SCENARIOS)
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    expected = f"expected some of: {', '.join(SCENARIOS)}"
    if not chosen:
        raise UsageError(f"--only {text!r} names no scenario; {expected}")
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        raise UsageError(f"--only: unknown scenarios {unknown}; {expected}")
    return list(dict.fromkeys(chosen))


# Options that choose what a run measures: meaningless with --from-results.
_RUN_OPTIONS = ("quick", "only", "rounds", "seconds", "data_dir", "dry_run")


def check_combination(args: argparse.Namespace) -> None:
    """Refuse options that contradict each other."""
    if args.from_results is None:
        return
    given = [name for name in _RUN_OPTIONS if getattr(args, name) not in (None, False)]
    if given:
        shown = ", ".join("--" + name.replace("_", "-") for name in given)
        raise UsageError(
            f"--from-results rebuilds the report of a saved run; {shown} would choose what a "
            "new run measures: give one or the other"
        )


def writable_directory(path: Path, option: str) -> Path:
    """Create ``path`` if needed and check that files can be written in it; else a UsageError.

    Checked before the run, so that minutes of measuring are not lost at the end.
    """
    expected = "expected a directory the bench can write in"
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {str(path)!r} is a file, not a directory; {expected}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {str(path)!r}: {exc.strerror or exc}; {expected}") from None
    return path


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


def rebuild_report(path: Path, out: Path) -> Path:
    """``--from-results``: the report of a saved run; a UsageError for a file it cannot use."""
    results = Results.load(path)
    writable_directory(out, "--out")
    try:
        return write_report(results, out)
    except (KeyError, TypeError, ValueError) as exc:  # a hand-edited file: a figure missing
        raise UsageError(
            f"cannot build a report from {path}: {type(exc).__name__}: {exc}; "
            "expected the results.json that `corosm bench` writes"
        ) from None


def run_bench(args: argparse.Namespace) -> int:
    """Run ``corosm bench`` with parsed ``args``; return the exit code."""
    check_combination(args)
    if args.from_results is not None:
        print(f"report: {rebuild_report(args.from_results, args.out)}")
        return EXIT_OK
    plan = plan_from(args)
    only = scenarios_from(args.only)
    if args.dry_run:
        print(dry_run(plan, only))
        return EXIT_OK
    check_matplotlib()  # the plots come last: find out before the run, not after it
    writable_directory(args.out, "--out")
    parent = writable_directory(args.data_dir, "--data-dir") if args.data_dir else args.out
    work = Path(tempfile.mkdtemp(prefix="corosm-bench-", dir=parent))
    stopped: KeyboardInterrupt | None = None
    try:
        with stop_signals_interrupt():  # SIGTERM stops the children, as Ctrl-C does
            suite = Suite(plan, work)
            try:
                suite.run(only)
            except KeyboardInterrupt as exc:  # every child is stopped by now
                stopped = exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = write_report(suite.results, args.out)
    print(f"report: {report}")
    _say_unavailable(suite.results)
    if stopped is not None:
        _say(
            f"stopped by {signal_name(stopped)}; every server and load generator it started "
            f"was stopped; the figures measured until then are in {report}"
        )
        return exit_code(stopped)
    if suite.failed:
        _say(f"{len(suite.failed)} scenario(s) failed part way: {', '.join(suite.failed)}")
        return EXIT_PART_FAILED
    return EXIT_OK


def _say_unavailable(results: Results) -> None:
    """At the end of a run, what was not measured, grouped by reason (a missing tool...)."""
    reasons: dict[str, list[str]] = {}
    for what, why in results.unavailable.items():
        reasons.setdefault(last_lines(why, keep=2), []).append(what)
    for why, names in reasons.items():
        _say(f"not measured: {', '.join(names)}: {why}")


def _say(message: str) -> None:
    print(f"corosm bench: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m corosm.bench``: the same as ``corosm bench``."""
    parser = argparse.ArgumentParser(
        prog="corosm bench",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0), or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return run_bench(args)
    except UsageError as exc:
        _say(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt as exc:  # a second Ctrl-C while the report was being written
        _say(f"stopped by {signal_name(exc)}")
        return exit_code(exc)
