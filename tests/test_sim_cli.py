"""``corosm sim`` through its own argparse hook (no subprocess needed: pure and fast)."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import pytest

from corosm.testing.sim import cli


def run(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="corosm")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sim", *argv])
    out, err = io.StringIO(), io.StringIO()
    return cli.run(args, out, err), out.getvalue(), err.getvalue()


def test_campaign_prints_progress_and_summary() -> None:
    status, out, err = run("--seeds", "50")
    assert status == 0
    assert "50 seeds" in out and "all linearizable" in out
    assert "50/50 seeds" in err


def test_replay_prints_the_whole_trace_of_one_seed() -> None:
    status, out, _ = run("--seed", "7", "--replay")
    assert status == 0
    assert out.rstrip().endswith("seed 7: ok")
    assert out.count("\n") > 20
    assert run("--seed", "7", "--replay")[1] == out  # the same bytes again


def test_bad_machine_argument_gets_a_clear_error() -> None:
    status, _, err = run("--machine", "nomodule")
    assert status == 2 and "module:attribute" in err
    status, _, err = run("--machine", "corosm.errors:CorosmError")
    assert status == 2 and "expected a corosm SimSpec" in err
    status, _, err = run("--seeds", "0")
    assert status == 2 and "at least 1" in err


def test_corosm_sim_through_the_main_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from corosm.frontends.cli import main

    assert main(["sim", "--seeds", "30", "--seed", "5"]) == 0
    captured = capsys.readouterr()
    assert "30 seeds" in captured.out and "all linearizable" in captured.out
    assert "30/30 seeds" in captured.err
    assert main(["sim", "--seeds", "0"]) == 2


def test_a_spec_in_the_current_folder_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mysim_here.py").write_text(
        "from corosm.testing.sim.kv import KV_SPEC\nSPEC = KV_SPEC\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    status, out, err = run("--machine", "mysim_here:SPEC", "--seeds", "3")
    assert status == 0, err
    assert "3 seeds" in out
    status, _, err = run("--machine", "nosuchmodule_here:SPEC")
    assert status == 2 and "nosuchmodule_here" in err and "PYTHONPATH" in err
