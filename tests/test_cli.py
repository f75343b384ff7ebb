"""The ``corosm`` command line: ``main(argv)`` in-process and ``python -m corosm``.

The kv commands talk to the :class:`FakeKV` server of ``test_client.py`` over
loopback; ``serve`` is checked up to the hand-over to ``corosm.server.run``
(replaced here by a recorder), so these tests do not depend on the server.
"""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from corosm.errors import InternalError
from corosm.frontends import cli
from corosm.frontends.cli import main
from test_client import FakeKV, free_port

PYTHON = sys.executable


@pytest.fixture
def fake() -> Any:
    with FakeKV() as server:
        yield server


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- kv -----------------------------------------------------------------------------


def test_kv_seed_commands(fake: FakeKV, capsys: pytest.CaptureFixture[str]) -> None:
    port = str(fake.port)
    assert run(capsys, "kv", "read", "x", "--port", port) == (1, "", "")  # absent: silent, 1
    assert run(capsys, "kv", "write", "x", "-5", "--port", port) == (0, "", "")
    assert fake.requests[-1] == ("POST", "/", b'Write "x" (-5)')
    assert run(capsys, "kv", "read", "x", "--port", port) == (0, "-5\n", "")
    assert run(capsys, "kv", "reset", "--port", port) == (0, "", "")
    assert run(capsys, "kv", "read", "x", "--port", port)[0] == 1


def test_kv_rest_commands(
    fake: FakeKV, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = str(fake.port)
    assert run(capsys, "kv", "put", "a/b", "hello", "--port", port) == (0, "", "")
    assert fake.store == {b"a/b": b"hello"}
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(b"\x00raw\n")))
    assert run(capsys, "kv", "put", "bin", "-", "--port", port) == (0, "", "")
    assert fake.store[b"bin"] == b"\x00raw\n"
    code = main(["kv", "get", "a/b", "--port", port])
    assert (code, capsys.readouterr().out) == (0, "hello")  # exact bytes, no newline added
    assert run(capsys, "kv", "delete", "a/b", "--port", port) == (0, "", "")
    assert run(capsys, "kv", "delete", "a/b", "--port", port) == (1, "", "")
    assert run(capsys, "kv", "get", "a/b", "--port", port) == (1, "", "")


def test_kv_health_and_metrics(fake: FakeKV, capsys: pytest.CaptureFixture[str]) -> None:
    port = str(fake.port)
    assert run(capsys, "kv", "health", "--port", port) == (0, "ok\n", "")
    fake.mode = "unhealthy"
    assert run(capsys, "kv", "health", "--port", port) == (1, "journal failed: ENOSPC\n", "")
    fake.mode = "normal"
    code, out, _ = run(capsys, "kv", "metrics", "--port", port)
    assert code == 0
    assert "corosm_requests_total 3" in out


@pytest.mark.parametrize(
    ("mode", "code", "message"),
    [
        ("reject", 2, "server answered 400: bad request"),
        ("busy", 3, "server answered 503: overloaded"),
        ("fail", 4, "server answered 500: internal error"),
        ("garbage", 4, "unexpected seed reply 'Maybe Later'"),
    ],
)
def test_kv_server_errors_become_exit_codes(
    fake: FakeKV, capsys: pytest.CaptureFixture[str], mode: str, code: int, message: str
) -> None:
    fake.mode = mode
    got, out, err = run(capsys, "kv", "read", "x", "--port", str(fake.port))
    assert (got, out) == (code, "")
    assert err.startswith("corosm: ")
    assert message in err
    assert err.count("\n") == 1


def test_kv_unreachable_server_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code, out, err = run(capsys, "kv", "write", "x", "1", "--port", str(port))
    assert (code, out) == (3, "")
    assert err == (
        f"corosm: cannot connect to 127.0.0.1:{port}: connection refused"
        f" (is the server running on 127.0.0.1:{port}?)\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["kv", "write", "x", "abc"], "expected a decimal integer, got 'abc'"),
        (["kv", "write", "x", str(2**63)], "outside the 64-bit range"),
        (["kv", "write", "x"], "the following arguments are required: VALUE"),
        (["kv", "read", "x", "--port", "0"], "expected a port number 1..65535"),
        (["kv", "read", "x", "--port", "http"], "expected a port number 1..65535, got 'http'"),
        (["kv"], "kv needs a command"),
        ([], "a subcommand is required"),
        (["nosuch"], "invalid choice: 'nosuch'"),
        (["kv", "read", "x", "--url", "ftp://h:1"], "is not a server address"),
        (["kv", "read", "x", "--url", "http://h:99999"], "does not parse (Port out of range"),
        (["kv", "read", "x", "--url", "http://[::1"], "does not parse (Invalid IPv6 URL)"),
        (["kv", "read", "x", "--url", "http://h:0"], "has port 0, which no server listens on"),
        (["kv", "read", "x", "--host", ""], "host must be a non-empty str, got ''"),
        (["kv", "write", "x", " 5"], "expected a decimal integer, got ' 5'"),
        (["kv", "write", "x", "1_000"], "expected a decimal integer, got '1_000'"),
        (["kv", "write", "x", "+5"], "expected a decimal integer, got '+5'"),
        (["kv", "write", "x", "\u0665"], "expected a decimal integer"),
        (["kv", "read", "x", "--port", "8_080"], "expected a port number 1..65535, got '8_080'"),
        (["kv", "read", "x", "--timeout", "-1"], "timeout must be a number of seconds above 0"),
        (["kv", "read", "x", "--timeout", "nan"], "at most 9223372036, or None, got nan"),
        (["kv", "read", "x", "--timeout", "1e400"], "at most 9223372036, or None, got inf"),
        (["serve", "--fsync", "sometimes"], "invalid choice: 'sometimes'"),
        (["serve", "--fsync-interval-ms", "0"], "expected a whole number >= 1"),
        (["serve", "--fsync-interval-ms", "86400001"], "expected at most 86400000 (a day)"),
        (["serve", "--port", "8080", "--resp-port", "8080"], "use two different ports"),
        (["serve", "--snapshot-every", "-1"], "expected a whole number >= 0"),
        (["serve", "--request-timeout", "0"], "expected a number of seconds > 0"),
        (["serve", "--max-queue", "x"], "expected a whole number >= 1"),
    ],
)
def test_usage_errors_exit_2_and_say_what_was_expected(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert message in err


def test_kv_address_from_url_and_env(
    fake: FakeKV, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.store[b"x"] = b"4"
    assert run(capsys, "kv", "read", "x", "--url", f"http://127.0.0.1:{fake.port}") == (
        0,
        "4\n",
        "",
    )
    monkeypatch.setenv("COROSM_URL", f"http://127.0.0.1:{fake.port}/")
    assert run(capsys, "kv", "read", "x") == (0, "4\n", "")
    # --port wins over the environment
    code, _, err = run(capsys, "kv", "read", "x", "--port", str(free_port()))
    assert code == 3
    assert "connection refused" in err
    monkeypatch.setenv("COROSM_URL", "localhost:8080")
    code, _, err = run(capsys, "kv", "read", "x")
    assert code == 2
    assert "COROSM_URL='localhost:8080' is not a server address" in err


# --- serve --------------------------------------------------------------------------


class RecordingServer:
    """Stands in for corosm.server: records the config that ``run`` receives."""

    def __init__(self) -> None:
        self.configs: list[SimpleNamespace] = []

    def ServerConfig(self, **fields: Any) -> SimpleNamespace:
        return SimpleNamespace(**fields)

    def run(self, config: SimpleNamespace) -> int:
        self.configs.append(config)
        return 0


def test_serve_hands_a_validated_config_to_the_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = RecordingServer()
    monkeypatch.setattr(cli, "_import_server", lambda: server)
    assert run(capsys, "serve")[0] == 0
    assert vars(server.configs[0]) == {
        "host": "127.0.0.1",
        "port": 8080,
        "data_dir": Path("corosm-data"),
        "fsync": "always",
        "fsync_interval_ms": 1000,
        "resp_port": None,
        "log_level": "info",
        "snapshot_every_records": 1_000_000,
        "max_queue": 10_000,
        "request_timeout": 10.0,
        "truncate_corrupt": False,
        "allow_reset": True,
        "machine": None,
        "ray": None,
        "shards": 1,
    }
    argv = ["serve", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path)]
    argv += ["--fsync", "interval", "--fsync-interval-ms", "50", "--resp-port", "6380"]
    argv += ["--snapshot-every", "0", "--max-queue", "5", "--request-timeout", "2.5"]
    argv += ["--truncate-corrupt", "--no-reset", "--machine", "bank:Bank"]
    assert run(capsys, *argv, "--log-level", "debug")[0] == 0
    assert vars(server.configs[1]) == {
        "host": "0.0.0.0",
        "port": 0,
        "data_dir": tmp_path,
        "fsync": "interval",
        "fsync_interval_ms": 50,
        "resp_port": 6380,
        "log_level": "debug",
        "snapshot_every_records": 0,
        "max_queue": 5,
        "request_timeout": 2.5,
        "truncate_corrupt": True,
        "allow_reset": False,
        "machine": "bank:Bank",
        "ray": None,
        "shards": 1,
    }


def test_serve_takes_ray_and_shards_together_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = RecordingServer()
    monkeypatch.setattr(cli, "_import_server", lambda: server)
    assert run(capsys, "serve", "--ray", "--shards", "2")[0] == 0
    assert (server.configs[0].ray, server.configs[0].shards) == ("", 2)
    assert run(capsys, "serve", "--ray", "10.0.0.5:6379")[0] == 0
    assert (server.configs[1].ray, server.configs[1].shards) == ("10.0.0.5:6379", 1)
    code, _, err = run(capsys, "serve", "--shards", "2")
    assert code == 2 and "--shards needs --ray" in err
    assert len(server.configs) == 2


def test_serve_refuses_an_empty_data_dir(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Path("") is "." : an unset variable put the journal in the current directory.
    server = RecordingServer()
    monkeypatch.setattr(cli, "_import_server", lambda: server)
    code, _, err = run(capsys, "serve", "--data-dir", "")
    assert code == 2
    assert "--data-dir: expected a directory path, got an empty one" in err
    assert server.configs == []


def test_serve_leaves_a_data_dir_it_cannot_examine_to_the_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Path.exists() raised (a name over 255 bytes), a traceback before any check.
    server = RecordingServer()
    monkeypatch.setattr(cli, "_import_server", lambda: server)
    path = tmp_path / ("x" * 300)
    code, _, _ = run(capsys, "serve", "--data-dir", str(path))
    assert code == 0 and [c.data_dir for c in server.configs] == [path]


class FailingServer(RecordingServer):
    """A server whose start fails with ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def run(self, config: SimpleNamespace) -> int:
        raise self.error


def test_serve_that_cannot_start_its_shards_says_why_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --ray with every shard's journal corrupt: ShardFailed (neither a DataError nor an
    # OSError) escaped as a traceback and exit 1.
    from corosm.shards.errors import ShardFailed

    failure = ShardFailed(0, "cannot start: CorruptJournal: bad magic")
    monkeypatch.setattr(cli, "_import_server", lambda: FailingServer(failure))
    code, out, err = run(capsys, "serve", "--data-dir", str(tmp_path))
    assert (code, out) == (4, "")
    assert err == "corosm: cannot start: shard 0: cannot start: CorruptJournal: bad magic\n"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (InternalError("a bug"), InternalError),
        (ZeroDivisionError("a bug"), ZeroDivisionError),
    ],
)
def test_serve_keeps_the_traceback_of_a_bug(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    error: Exception,
    kind: type[Exception],
) -> None:
    monkeypatch.setattr(cli, "_import_server", lambda: FailingServer(error))
    with pytest.raises(kind):
        main(["serve", "--data-dir", str(tmp_path)])


# --- extensions ---------------------------------------------------------------------

PLUGIN = """
import argparse

def register(subparsers):
    parser = subparsers.add_parser("demo", help="a demo extension")
    parser.add_argument("--times", type=int, default=1)
    parser.set_defaults(run=run)

def run(args: argparse.Namespace) -> int:
    print("demo " * args.times)
    return 7
"""


def test_extensions_load_only_when_chosen(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "corosm_demo_ext.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "corosm_demo_ext", raising=False)
    extensions = (
        cli.Extension("demo", "corosm_demo_ext", "a demo extension"),
        cli.Extension("ghost", "corosm_no_such_module", "never shown"),
    )
    monkeypatch.setattr(cli, "EXTENSIONS", extensions)
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "demo" in out
    assert "a demo extension" in out
    assert "ghost" not in out  # a missing module hides its subcommand
    assert "corosm_demo_ext" not in sys.modules  # listed without being imported
    assert run(capsys, "demo", "--times", "2") == (7, "demo demo \n", "")
    assert "invalid choice: 'ghost'" in run(capsys, "ghost")[2]


def test_help_lists_the_exit_codes_of_bench_too(capsys: pytest.CaptureFixture[str]) -> None:
    # bench's own (1 a scenario failed part way, 143 SIGTERM, 129 SIGHUP) were not listed.
    from corosm.bench.procs import Interrupted, exit_code

    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "\n     bench: a scenario failed part way" in out
    assert f"\n  {exit_code(KeyboardInterrupt())} stopped by Ctrl-C; bench also" in out
    for name in ("SIGTERM", "SIGHUP"):
        assert f"{name} ({exit_code(Interrupted(signal.Signals[name]))})" in out
    importtime = [PYTHON, "-X", "importtime", "-m", "corosm", "--help"]
    imported = subprocess.run(importtime, capture_output=True, text=True, timeout=60, check=True)
    assert "corosm.bench.procs" not in imported.stderr  # listed without importing the bench


# --- as a process -------------------------------------------------------------------


def corosm(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "corosm", *argv], capture_output=True, text=True, timeout=60, check=False
    )


def test_python_m_corosm_against_a_server(fake: FakeKV) -> None:
    port = str(fake.port)
    written = corosm("kv", "write", "k é", "42", "--port", port)
    assert (written.returncode, written.stdout, written.stderr) == (0, "", "")
    assert fake.store == {"k é".encode(): b"42"}
    read = corosm("kv", "read", "k é", "--port", port)
    assert (read.returncode, read.stdout) == (0, "42\n")


def test_python_m_corosm_unreachable_and_version() -> None:
    port = free_port()
    result = corosm("kv", "read", "x", "--port", str(port))
    assert result.returncode == 3
    assert result.stdout == ""
    assert f"is the server running on 127.0.0.1:{port}?" in result.stderr
    version = corosm("--version")
    assert (version.returncode, version.stdout.strip()) == (0, "corosm 0.1.0")
