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
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_without_a_compiler_the_build_says_what_to_install_and_leaves_pure_python(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "compiled"
    (dest / "corosm").mkdir(parents=True)  # a copy left by an earlier build
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    monkeypatch.delenv("COROSM_REQUIRE_TOOLS", raising=False)
    assert compiled.main(["build", str(dest)]) == 0  # make goes on, on the sources
    err = capsys.readouterr().err
    assert "no C compiler" in err and "apt-get install gcc" in err and "pure Python" in err
    assert not (dest / "corosm").exists(), "a stale copy would still be run"
    monkeypatch.setenv("COROSM_REQUIRE_TOOLS", "1")  # what .ci/run sets: a failure there
    assert compiled.main(["build", str(dest)]) == 1


def test_without_the_python_headers_the_build_names_the_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(compiled.shutil, "which", lambda name: f"/usr/bin/{name}")
    paths = dict(compiled.sysconfig.get_paths(), include=str(tmp_path))
    monkeypatch.setattr(compiled.sysconfig, "get_paths", lambda: paths)
    with pytest.raises(compiled.BuildUnavailable, match="python3-dev"):
        compiled.check_toolchain()


def test_the_pure_package_imports_without_mypy() -> None:
    # corosm._mypyc stands in for mypy_extensions (a dev dependency) where it is
    # not installed: a subclass of the host is then a plain Python subclass.
    code = (
        "import sys; sys.modules['mypy_extensions'] = None\n"
        "from corosm.runtime.host import Host\n"
        "from corosm.runtime import Runtime\n"
        "from corosm.apps.kv.machine import KVMachine\n"
        "class Planted(Host): pass\n"
        "print(type(Runtime(KVMachine()).host).__name__, Planted.__mro__[1].__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["Host", "Host"]
