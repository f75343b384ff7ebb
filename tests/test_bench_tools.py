"""``corosm bench`` without its tools: it names what is missing and how to install it.

No tool is run here: ``shutil.which`` finds nothing, so every load scenario
is skipped at once, and a missing matplotlib stops the run before it starts
(the plots are drawn last, after minutes of measuring).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from corosm.bench.cli import main as bench_main
from corosm.bench.procs import Pinning
from corosm.bench.suite import QUICK, Suite


def test_missing_load_generators_are_named_with_their_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    said: list[str] = []
    suite = Suite(QUICK, tmp_path, progress=said.append, pinning=Pinning((), ()))
    results = suite.run(["durable_writes", "reads", "redis", "profile"])  # no traceback
    assert results.samples == []
    wrk = "'wrk' is not installed; install it with: sudo apt-get install wrk"
    redis_benchmark = (
        "'redis-benchmark' is not installed; install it with: sudo apt-get install redis-tools"
    )
    both = (  # every missing tool at once, so that one install is enough
        "'redis-benchmark' and 'redis-server' are not installed; "
        "install them with: sudo apt-get install redis-tools redis-server"
    )
    assert results.unavailable == {
        "durable_writes": wrk,
        "reads": wrk,
        "redis": both,
        "profile (HTTP)": wrk,
        "profile (RESP)": redis_benchmark,
    }
    assert said == [f"{scenario}: skipped: {why}" for scenario, why in results.unavailable.items()]


def test_dry_run_says_how_to_install_a_missing_tool(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    assert bench_main(["--dry-run", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "tool wrk: MISSING (sudo apt-get install wrk)" in out
    assert "tool redis-benchmark: MISSING (sudo apt-get install redis-tools)" in out
    assert "tool redis-server: MISSING (sudo apt-get install redis-server)" in out


def test_missing_matplotlib_stops_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "out"
    assert bench_main(["--quick", "--only", "fdatasync", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "need matplotlib; install it with: pip install 'corosm[bench]'" in err
    assert not out.exists()  # nothing was measured first
