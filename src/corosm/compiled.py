"""The optional compiled build: which hot modules mypyc compiles, and how to build them.

Theory of operation
-------------------
corosm is a pure-Python package and works as one everywhere. Where a C
compiler and the Python headers exist, ``make`` also builds a *compiled copy*:
the whole package copied to ``build/compiled/corosm`` with the modules in
:data:`MODULES` compiled by mypyc (it ships with the pinned mypy) into
extension modules beside their sources. Python loads an extension module in
preference to the ``.py`` file of the same name, so putting that directory
first on ``PYTHONPATH`` runs the compiled build, and leaving it off runs the
pure one: the same code, checked by the same suite (``make test`` runs it
against both, CI too).

The list holds the modules of the per-request path that compile to the same
behaviour. Left out on purpose, and why:

* ``corosm.apps.kv.machine`` and ``corosm.core.effects``: their classes
  derive from :class:`corosm.core.Machine` and :class:`corosm.core.Effect`,
  the base classes of every user's machines and effects, which stay
  interpreted, and a compiled class cannot derive from an interpreted one
  (``Effect``, a slotted frozen generic dataclass, does not import when
  compiled). The key-value state and its ``apply``, where replay spends its
  time, are in ``corosm.apps.kv.state``, which is compiled, and so is the
  machine's ``read``. The compiled stepper builds the one effect of every
  logged write, an ``Append``, without its interpreted ``__init__``;
* the input types but two: their constructors take typed parameters, and
  mypyc's own argument checks would replace their clear ``UsageError``s (a
  key that is not bytes) with bare ``TypeError``s. The two that nearly every
  request builds, ``Read`` and ``Write``, are compiled in
  ``corosm.apps.kv.basics``, whose constructors take ``object`` and check
  it themselves. The output and record types are compiled too: nothing
  outside the machine builds them. Each compiled value says how pickle
  rebuilds it (see :mod:`corosm.core.fields`).

``corosm.runtime.runtime`` is compiled, so in the compiled build
:class:`~corosm.runtime.Runtime` cannot be subclassed; it is configured (its
executors and bounds), not extended. Its ``__init__`` has no signature that
``inspect`` can read there; the defaults it takes are named constants of
:mod:`corosm.runtime.host`. The :class:`~corosm.runtime.host.Host` is
compiled as a class that interpreted code may subclass (``mypyc_attr``, see
:mod:`corosm._mypyc`): the simulator plants its host bugs in a subclass.

The journal's own steps are compiled too (``control``, ``log``, ``files``,
``format``, and the loop's side in ``executor``), so that the journal
thread holds the GIL, which the loop waits for, as briefly as it can. A
batch's steps cost the same for one record as for fifty, so this shows most
with few clients: compiling them took a durable write with one client from
141k to 121k instructions, all threads (callgrind of
``bench/profile_http_path.py --only durable --conns 1``), and one with 64
clients from 43.1k to 42.4k. Their classes may be subclassed in the same
way as the host's, which is how the simulator plants its journal bugs. The
journal thread's driver, ``corosm.io.journal.writer``, stays interpreted:
its ``Journal`` is public, and mypyc's argument checks would replace the
``UsageError`` of a record that is not bytes with a bare ``TypeError``.

Build it with ``python -m corosm.compiled build DEST`` (the Makefile does);
:func:`describe` says which build a process runs, for reports and logs.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

#: The modules mypyc compiles, by import name.
MODULES: tuple[str, ...] = (
    "corosm.apps.kv.basics",
    "corosm.apps.kv.outputs",
    "corosm.apps.kv.records",
    "corosm.apps.kv.seed",
    "corosm.apps.kv.state",
    "corosm.core.events",
    "corosm.core.stepper",
    "corosm.frontends.deadline",
    "corosm.frontends.http.app",
    "corosm.frontends.http.machineapp",
    "corosm.frontends.http.messages",
    "corosm.frontends.http.protocol",
    "corosm.frontends.ordering",
    "corosm.frontends.resp.commands",
    "corosm.frontends.resp.protocol",
    "corosm.frontends.resp.replies",
    "corosm.frontends.resp.server",
    "corosm.io.journal.control",
    "corosm.io.journal.executor",
    "corosm.io.journal.files",
    "corosm.io.journal.format",
    "corosm.io.journal.log",
    "corosm.runtime.host",
    "corosm.runtime.runtime",
)

_PACKAGE = Path(__file__).resolve().parent  # the corosm package this module belongs to


def compiled_modules() -> list[str]:
    """The modules of :data:`MODULES` that this process loads as extension modules."""
    compiled = []
    for name in MODULES:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin is not None and not origin.endswith(".py"):
            compiled.append(name)
    return compiled


def describe() -> str:
    """Which build this process runs, in a few words (for reports and logs)."""
    n = len(compiled_modules())
    if n == 0:
        return "pure Python"
    return f"compiled with mypyc ({n} of {len(MODULES)} hot modules)"


class BuildUnavailable(Exception):
    """The compiled build cannot be made here (no C compiler, headers or mypyc)."""


def check_toolchain() -> None:
    """Raise :class:`BuildUnavailable`, saying what to install, if a build cannot work."""
    for tool in ("mypyc", "setuptools"):
        if importlib.util.find_spec(tool) is None:
            raise BuildUnavailable(
                f"{tool} is not installed; install the dev dependencies: pip install -e '.[dev]'"
            )
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        raise BuildUnavailable(
            f"no C compiler ({compiler!r} is not on PATH); on Debian/Ubuntu: "
            "sudo apt-get install gcc"
        )
    include = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not include.exists():
        raise BuildUnavailable(
            f"the Python headers are missing ({include}); on Debian/Ubuntu: "
            "sudo apt-get install python3-dev"
        )


def build(dest: Path) -> None:
    """Copy the package to ``dest/corosm`` and compile :data:`MODULES` there.

    Raises :class:`BuildUnavailable` when the toolchain is missing and
    :class:`subprocess.CalledProcessError` when mypyc fails (its output is
    in ``dest/mypyc.log``).
    """
    check_toolchain()
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / "corosm"
    if target.exists():
        shutil.rmtree(target)
    for stale in dest.glob("*__mypyc*"):  # the shared runtime library of an older build
        stale.unlink()
    shutil.copytree(_PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    files = [str(Path(*name.split(".")).with_suffix(".py")) for name in MODULES]
    log_path = dest / "mypyc.log"
    with log_path.open("wb") as log:
        subprocess.run(
            [sys.executable, "-m", "mypyc", *files],
            cwd=dest,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=True,
        )
    shutil.rmtree(dest / "build", ignore_errors=True)  # mypyc's C sources and objects


def main(argv: list[str] | None = None) -> int:
    """``python -m corosm.compiled build DEST`` (see the module docs)."""
    parser = argparse.ArgumentParser(prog="python -m corosm.compiled", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("build", help="build the compiled copy of the package in DEST")
    make.add_argument("dest", type=Path)
    make.add_argument(
        "--require",
        action="store_true",
        default=os.environ.get("COROSM_REQUIRE_TOOLS") == "1",
        help="fail when the build cannot be made here (default: say why and go on pure)",
    )
    sub.add_parser("describe", help="say which build this Python runs")
    args = parser.parse_args(argv)
    if args.command == "describe":
        print(describe())
        return 0
    dest: Path = args.dest.resolve()
    print(f"compiling {len(MODULES)} hot modules with mypyc into {dest} (about a minute)")
    try:
        build(dest)
    except BuildUnavailable as exc:
        shutil.rmtree(dest / "corosm", ignore_errors=True)
        print(f"no compiled build: {exc}; corosm runs as pure Python", file=sys.stderr)
        return 1 if args.require else 0
    except subprocess.CalledProcessError:
        shutil.rmtree(dest / "corosm", ignore_errors=True)
        print(f"mypyc failed; see {dest / 'mypyc.log'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
