"""The layers of DESIGN.md, checked on the source with ``ast``.

1. The pure core imports nothing that does I/O, threads, clocks or asyncio,
   and no corosm module outside ``corosm.core`` and ``corosm.errors``.
2. No inner layer imports an outer one:
   errors (and _mypyc) < core < io < runtime < testing, apps < frontends,
   client < the rest.

Imports under ``if TYPE_CHECKING:`` count too: they are still a dependency a
reader has to follow. A module in a folder this table does not know yet is
treated as outermost, so new packages never break the check but can never be
imported by an inner layer either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "corosm"

# Modules the core must not import: I/O, threads, processes, clocks, randomness, loops.
FORBIDDEN_IN_CORE = {
    "asyncio",
    "concurrent",
    "datetime",
    "fcntl",
    "httptools",
    "io",
    "logging",
    "mmap",
    "multiprocessing",
    "os",
    "pathlib",
    "random",
    "select",
    "selectors",
    "shutil",
    "signal",
    "socket",
    "ssl",
    "subprocess",
    "tempfile",
    "threading",
    "time",
    "uvloop",
}

LAYER_RANK = {
    "corosm.errors": 0,
    "corosm._mypyc": 0,  # a decorator for the compiled build, importing nothing of corosm
    "corosm.core": 1,
    "corosm.io": 2,
    "corosm.runtime": 3,
    "corosm.testing": 4,
    "corosm.apps": 4,
    "corosm.frontends": 5,
    "corosm.client": 5,
}
OUTERMOST = 6


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Every absolute module name ``source`` imports, with its line number."""
    found: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # ``from corosm import io`` imports the subpackage corosm.io.
            subs = (f"{name}.{alias.name}" for alias in node.names)
            found.extend((node.lineno, sub) for sub in subs if is_corosm_module(sub))
    return found


def is_corosm_module(name: str) -> bool:
    path = SRC.joinpath(*name.split("."))
    return name.startswith("corosm.") and (path.is_dir() or path.with_suffix(".py").is_file())


def rank(name: str) -> int | None:
    """The layer of a corosm module (None for a module outside corosm)."""
    if name != "corosm" and not name.startswith("corosm."):
        return None
    best = ""
    for prefix in LAYER_RANK:
        if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > len(best):
            best = prefix
    return LAYER_RANK[best] if best else OUTERMOST


def core_violations(source: str, module: str, is_package: bool) -> list[str]:
    problems = []
    for line, name in imported_modules(source, module, is_package):
        top = name.split(".")[0]
        if top in FORBIDDEN_IN_CORE:
            problems.append(f"{module}:{line} imports {name} (I/O, threads, clocks or asyncio)")
        elif top == "corosm" and rank(name) not in (0, 1) and name != "corosm":
            problems.append(f"{module}:{line} imports {name} (outside corosm.core/errors)")
        elif name == "corosm":
            problems.append(f"{module}:{line} imports the corosm facade (import from core)")
    return problems


def layer_violations(source: str, module: str, is_package: bool) -> list[str]:
    own = rank(module)
    assert own is not None
    problems: dict[int, str] = {}  # one report per import statement
    for line, name in imported_modules(source, module, is_package):
        other = rank(name)
        if other is not None and other > own and name != "corosm":
            problems.setdefault(
                line, f"{module}:{line} (layer {own}) imports {name} (layer {other})"
            )
    return list(problems.values())


def modules_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def test_core_imports_nothing_impure() -> None:
    files = modules_under(PACKAGE / "core")
    assert len(files) >= 7, "the core package was not found"
    problems = []
    for path in files:
        problems += core_violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert problems == []


def test_no_inner_layer_imports_an_outer_one() -> None:
    problems = []
    for path in modules_under(PACKAGE):
        name = module_name(path)
        if name == "corosm":
            continue  # the facade re-exports everything by design
        problems += layer_violations(path.read_text(), name, path.name == "__init__.py")
    assert problems == []


# -- the checker checks what it claims ----------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os\n", "imports os"),
        ("import concurrent.futures\n", "imports concurrent.futures"),
        ("from time import monotonic\n", "imports time"),
        ("if TYPE_CHECKING:\n    import asyncio\n", "imports asyncio"),
        ("from corosm.runtime import Runtime\n", "imports corosm.runtime"),
        ("from ..io import memory\n", "imports corosm.io"),
        ("from corosm import io\n", "imports corosm.io"),
    ],
)
def test_core_check_catches(source: str, expected: str) -> None:
    problems = core_violations(source, "corosm.core.stepper", False)
    assert any(expected in p for p in problems), problems


def test_core_check_allows_pure_imports() -> None:
    source = (
        "from collections import deque\nfrom corosm.errors import UsageError\n"
        "from .futures import Future\nfrom corosm.core.traps import Wait\n"
    )
    assert core_violations(source, "corosm.core.stepper", False) == []


def test_layer_check_catches_an_outward_import() -> None:
    source = "from corosm.runtime import Runtime\nfrom corosm.core import Machine\n"
    assert layer_violations(source, "corosm.io.journal.writer", False) == [
        "corosm.io.journal.writer:1 (layer 2) imports corosm.runtime (layer 3)"
    ]
    assert layer_violations(source, "corosm.frontends.http.server", False) == []


#: The host's two thread-free objects: the simulator drives them as production does.
HOST_CORE = {
    "corosm.runtime.host": SRC / "corosm" / "runtime" / "host.py",
    "corosm.io.journal.control": SRC / "corosm" / "io" / "journal" / "control.py",
}
NO_THREADS_OR_CLOCKS = {"asyncio", "threading", "time", "socket", "selectors", "uvloop"}


@pytest.mark.parametrize("module", sorted(HOST_CORE))
def test_the_host_core_imports_no_threads_clocks_or_sockets(module: str) -> None:
    path = HOST_CORE[module]
    found = [
        (line, name)
        for line, name in imported_modules(path.read_text(), module, False)
        if name.split(".")[0] in NO_THREADS_OR_CLOCKS
    ]
    assert found == [], f"{module} must stay thread- and clock-free, but imports {found}"
