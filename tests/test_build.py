"""The build the suite runs on is the one ``make`` said it would (see corosm/compiled.py).

``make test`` runs the suite twice: ``COROSM_BUILD=pure`` on the sources, and
``COROSM_BUILD=compiled`` on the copy whose hot modules mypyc compiled. If the
compiled run silently imported the pure sources (a wrong ``PYTHONPATH``, a
stale copy), every other test would pass and prove nothing about the
compiled build: this test fails instead.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from corosm import compiled

SRC = Path(__file__).resolve().parent.parent / "src"


def test_every_listed_module_exists_in_the_sources() -> None:
    for name in compiled.MODULES:
        source = SRC / Path(*name.split(".")).with_suffix(".py")
        assert source.is_file(), f"compiled.MODULES names {name}, but there is no {source}"


def test_the_suite_runs_on_the_build_make_asked_for() -> None:
    loaded = compiled.compiled_modules()
    # Never a mix: a copy with some extension modules missing is a broken build.
    assert loaded in ([], list(compiled.MODULES)), f"a partial build: {loaded}"
    build = os.environ.get("COROSM_BUILD")  # set by make test; either build is fine without it
    if build == "compiled":
        assert loaded == list(compiled.MODULES), "the compiled run imported the pure sources"
        for name in compiled.MODULES:
            path = importlib.import_module(name).__file__ or ""
            assert not path.endswith(".py"), f"{name} came from {path}"
        assert compiled.describe().startswith("compiled with mypyc")
    elif build == "pure":
        assert loaded == []
        assert compiled.describe() == "pure Python"
