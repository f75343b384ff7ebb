"""``corosm sim``: run a simulation campaign from the command line.

Theory of operation
-------------------
``register(subparsers)`` adds the ``sim`` sub-command to the main CLI's
argparse parser; its handler loads a :class:`~.campaign.SimSpec` from
``--machine module:attribute`` (the key-value machine by default), runs the
seeds with a progress line on stderr, and prints a summary, or the first
failing seed's report. ``--replay`` with ``--seed S`` prints that seed's whole
trace and verdict. Exit status: 0 all passed, 1 a seed failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from dataclasses import replace
from typing import Any, TextIO

from corosm.errors import UsageError
from corosm.testing.sim.campaign import CampaignResult, SimSpec, run_campaign, run_seed
from corosm.testing.sim.mutants import MUTANTS

DEFAULT_SPEC = "corosm.testing.sim.kv:KV_SPEC"


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``sim`` to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sim",
        help="deterministic simulation campaign (faults, crashes, linearizability)",
        description="Run a machine in the simulated world for many seeds and check each run.",
    )
    parser.add_argument(
        "--machine",
        default=DEFAULT_SPEC,
        help="module:attribute of a SimSpec, or of a function returning one "
        f"(default: {DEFAULT_SPEC})",
    )
    parser.add_argument("--seeds", type=int, default=1000, help="how many seeds (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--replay", action="store_true", help="run --seed only; print its trace")
    parser.add_argument(
        "--mutant",
        choices=sorted(MUTANTS),
        help="plant this bug in the shipped host or journal (to check the checks)",
    )
    parser.set_defaults(run=run)  # the main CLI's contract: args.run(args) -> exit status
    return parser


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """The ``sim`` command's handler; returns the exit status."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        return _run(args, out, err)
    except UsageError as exc:  # a bad --machine, or a spec or model that cannot run
        print(f"corosm sim: {exc}", file=err)
        return 2


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    spec = load_spec(args.machine)
    if getattr(args, "mutant", None) is not None:
        spec = replace(spec, mutant=args.mutant)
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, not {args.seeds}")
    if args.replay:
        result = run_seed(spec, args.seed)
        out.write(result.trace)
        verdict = "ok" if result.violation is None else f"FAILED: {result.violation.summary}"
        print(f"seed {args.seed}: {verdict}", file=out)
        if result.violation is not None:
            print(result.violation.details, file=out)
        return 0 if result.violation is None else 1
    started = time.monotonic()
    total = args.seeds
    step = max(1, total // 100)

    def progress(seed: int, so_far: CampaignResult) -> None:
        if so_far.seeds_run % step == 0 or so_far.seeds_run == total:
            rate = so_far.seeds_run / max(time.monotonic() - started, 1e-9)
            bar = "#" * (30 * so_far.seeds_run // total)
            err.write(f"\r[{bar:<30}] {so_far.seeds_run}/{total} seeds  {rate:,.0f}/s ")
            err.flush()

    try:
        campaign = run_campaign(spec, range(args.seed, args.seed + total), progress)
    finally:
        err.write("\n")  # end the progress line, also before an error's message
    elapsed = time.monotonic() - started
    print(f"{campaign.summary()}\n({elapsed:.1f} s, {args.machine})", file=out)
    return 0 if campaign.ok else 1


def load_spec(target: str) -> SimSpec:
    """Import ``module:attribute``; accept a SimSpec or a function that returns one.

    Raises :class:`UsageError` saying what was wrong: not ``module:attribute``,
    a module that cannot be imported (or raised while importing), no such
    attribute, a function that raised, or something other than a SimSpec.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(
            f"--machine must be module:attribute (e.g. {DEFAULT_SPEC}), not {target!r}"
        )
    try:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())  # ./bank.py, as `corosm serve --machine` finds it
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"cannot import module {module_name!r} (from --machine {target}): {exc}. "
            f"Python looked in the current directory {os.getcwd()!r} and on sys.path; run from "
            "the folder that holds the module, or add that folder to PYTHONPATH "
            f"(e.g. PYTHONPATH=path/to/project corosm sim --machine {target})"
        ) from exc
    except Exception as exc:  # the module itself is broken: a syntax error, a bad SimSpec...
        raise UsageError(
            f"importing module {module_name!r} (from --machine {target}) raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        obj: Any = getattr(module, attr)
    except AttributeError as exc:
        raise UsageError(
            f"module {module_name!r} ({getattr(module, '__file__', '?')}) has no attribute "
            f"{attr!r}; expected a SimSpec or a function returning one"
        ) from exc
    if not isinstance(obj, SimSpec) and callable(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise UsageError(
                f"{target} is callable, so it was called to get a SimSpec, and it raised "
                f"{type(exc).__name__}: {exc}; expected a SimSpec or a function of no "
                "arguments returning one"
            ) from exc
    if not isinstance(obj, SimSpec):
        raise UsageError(f"{target} is {type(obj).__name__}; expected a corosm SimSpec")
    return obj if obj.name is not None else replace(obj, name=target)


def main(argv: list[str] | None = None) -> int:
    """Run ``sim`` alone (``python -m corosm.testing.sim.cli``), without the main CLI."""
    parser = argparse.ArgumentParser(prog="corosm")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
