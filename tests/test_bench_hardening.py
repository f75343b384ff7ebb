"""``corosm bench`` under bad input, missing tools, failures and signals.

Nothing here benchmarks anything: the children are tiny fake commands. Each
fake holds a FIFO open for writing, and so does a helper it forks into its
process group; the test holds the read end, where EOF means that every one
of them has exited (no sleeping, no polling ``ps``). The fakes are found and
killed at teardown if a test fails and leaves them behind.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from corosm.bench import procs
from corosm.bench import shards as bench_shards
from corosm.bench import suite as bench_suite
from corosm.bench.cli import main as bench_main
from corosm.bench.contenders import Contender
from corosm.bench.recovery import main as recovery_main
from corosm.bench.results import Sample
from corosm.bench.serve import parse as serve_parse
from corosm.bench.suite import QUICK, Suite
from corosm.frontends.cli import main as corosm_main

# A fake child: holds the FIFO argv[1] (and so does the helper it forks), writes
# both pids there, prints some lines, then per argv[2]: "crash" exits 3, "listen"
# answers HTTP 200 on port argv[3], "silent" waits for a signal.
FAKE = r"""
import os, socket, sys, threading
fifo, mode = sys.argv[1], sys.argv[2]
hold = os.open(fifo, os.O_WRONLY)
helper = os.fork()
if helper == 0:
    threading.Event().wait()
    os._exit(0)
os.write(hold, b"%d %d\n" % (os.getpid(), helper))
for i in range(8):
    print(f"{mode} line {i}", flush=True)
if mode == "crash":
    sys.exit(3)
if mode == "listen":
    server = socket.create_server(("127.0.0.1", int(sys.argv[3])))
    while True:
        conn, _ = server.accept()
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOk")
        except OSError:
            pass
        conn.close()
threading.Event().wait()
"""


class Holders:
    """The read end of a FIFO that fake children and their helpers hold open."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "holders.fifo"
        os.mkfifo(self.path)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self.data = b""

    def argv(self, mode: str, *more: str) -> list[str]:
        """A fake child's command line."""
        return [sys.executable, "-c", FAKE, str(self.path), mode, *more]

    def all_gone(self, timeout: float = 5.0) -> bool:
        """True once every fake and helper has closed the FIFO, i.e. exited."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.fd], [], [], left)[0]:
                break
            chunk = os.read(self.fd, 4096)
            if not chunk:
                return True
            self.data += chunk
        return False

    def kill_leftovers(self) -> None:
        """SIGKILL every fake still running (a failed test's leftovers)."""
        for pid in map(int, self.data.split()):
            try:
                if str(self.path) in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                    os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        os.close(self.fd)


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[Holders]:
    h = Holders(tmp_path)
    try:
        yield h
    finally:
        h.all_gone(timeout=0.1)  # read the pids written meanwhile
        h.kill_leftovers()


def _suite(tmp_path: Path) -> tuple[Suite, list[str]]:
    said: list[str] = []
    return Suite(QUICK, tmp_path, progress=said.append, pinning=procs.Pinning((), ())), said


def _fake(holders: Holders, mode: str = "listen") -> Contender:
    argv = [part.replace("{", "{{").replace("}", "}}") for part in holders.argv(mode)]
    return Contender("fake", "a fake server", (*argv, "{port}"))  # a template: braces doubled


# --- bad options: one line, exit 2, nothing run ------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--out", "{file}"], "--out '{file}' is a file, not a directory; expected a directory"),
        (["--out", "{file}/sub"], "--out '{file}/sub': Not a directory; expected a directory"),
        (["--data-dir", "{file}"], "--data-dir '{file}' is a file, not a directory"),
        (["--only", " , "], "--only ' , ' names no scenario; expected some of: fdatasync,"),
        (["--dry-run", "--seconds", "100000"], "--seconds must be at least 1 (wrk's resolution) "
         "and at most 600, got 100000"),
        (["--dry-run", "--rounds", "1000"], "--rounds must be at least 1 and at most 100"),
        (["--from-results", "{file}", "--quick", "--only", "memory"],
         "--from-results rebuilds the report of a saved run; --quick, --only would choose"),
        (["--seconds", "abc"], "argument --seconds: invalid int value: 'abc'"),
    ],
)  # fmt: skip
def test_bad_options_are_one_line_with_exit_2(
    args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "a-file"
    file.write_text("not a directory")
    argv = [a.replace("{file}", str(file)) for a in ["--quick", "--only", "fdatasync", *args]]
    assert bench_main(argv) == 2
    err = capsys.readouterr().err
    assert expected.replace("{file}", str(file)) in err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("corosm bench: ")
    assert [p.name for p in tmp_path.iterdir()] == ["a-file"]  # nothing measured or written


def test_the_corosm_command_refuses_an_out_that_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "report"
    file.write_text("")
    assert corosm_main(["bench", "--quick", "--only", "fdatasync", "--out", str(file)]) == 2
    assert capsys.readouterr().err == (
        f"corosm: --out '{file}' is a file, not a directory; "
        "expected a directory the bench can write in\n"
    )


def _results_json(path: Path, samples: list[dict[str, object]]) -> Path:
    host = {"cpu_model": "c", "cores": 2, "kernel": "k", "python": "p", "filesystem": "f",
            "device": "d"}  # fmt: skip
    data = {"host": host, "quick": True, "pinning": "", "samples": samples}
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"rps": "fast"}, "samples[0].values['rps'] is 'fast', expected a number"),
        ({"rps": 1.0}, "cannot build a report from"),  # a recovery row without its figures
    ],
)
def test_a_damaged_results_file_is_refused_in_one_line(
    values: dict[str, object], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = {"scenario": "recovery", "case": "c", "x": 1, "contender": "journal", "round": 0}
    saved = _results_json(tmp_path / "results.json", [sample | {"values": values}])
    assert bench_main(["--from-results", str(saved), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert expected in err and "expected the results.json that `corosm bench` writes" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


# --- missing tools: which, what is skipped, how to install -------------------------------


def test_missing_tools_are_summed_up_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    out = tmp_path / "out"
    assert bench_main(["--quick", "--only", "durable_writes,reads,redis", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert (
        "corosm bench: not measured: durable_writes, reads: "
        "'wrk' is not installed; install it with: sudo apt-get install wrk\n"
    ) in err
    assert (
        "corosm bench: not measured: redis: 'redis-benchmark' and 'redis-server' are not "
        "installed; install them with: sudo apt-get install redis-tools redis-server\n"
    ) in err
    assert "'wrk' is not installed" in (out / "report.md").read_text()


# --- children: bounded waits, and nothing left behind ------------------------------------


def test_a_server_that_crashes_at_start_is_named_and_leaves_nothing(
    tmp_path: Path, holders: Holders
) -> None:
    argv = holders.argv("crash")
    with (
        pytest.raises(procs.ContenderUnavailable) as caught,
        procs.running(argv, [procs.free_port()], tmp_path / "log"),
    ):
        pytest.fail("a server that exited was taken as started")
    assert holders.all_gone(), "the helper it forked is still running"
    message = str(caught.value)
    assert message.startswith("exited with status 3 before listening: ")
    assert "crash line 6 | crash line 7 (command: " in message


def test_a_server_that_never_listens_is_given_up_in_bounded_time(
    tmp_path: Path, holders: Holders
) -> None:
    argv = holders.argv("silent")
    started = time.monotonic()
    with (
        pytest.raises(procs.ContenderUnavailable) as caught,
        procs.running(argv, [procs.free_port()], tmp_path / "log", start_timeout=1.0),
    ):
        pytest.fail("a server that never listened was taken as started")
    assert time.monotonic() - started < 4.0
    assert holders.all_gone(), "the helper it forked is still running"
    message = str(caught.value)
    assert "did not answer within 1 s: " in message
    assert (
        "silent line 3 | silent line 4 | silent line 5 | silent line 6 | silent line 7" in message
    )
    assert f"(command: {sys.executable} -c " in message  # which command it was


def test_a_port_already_taken_is_named_before_starting(tmp_path: Path, holders: Holders) -> None:
    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        with (
            pytest.raises(procs.ContenderUnavailable, match=f"port {port} on 127.0.0.1 is "),
            procs.running(holders.argv("silent"), [port], tmp_path / "log"),
        ):
            pytest.fail("another process's port was taken for the server's")


def test_an_error_in_the_middle_of_a_scenario_stops_every_server(
    tmp_path: Path, holders: Holders
) -> None:
    suite, _ = _suite(tmp_path)
    with (
        pytest.raises(RuntimeError, match="mid-scenario"),
        suite.servers("x", [_fake(holders)]) as ports,
    ):
        assert list(ports) == ["fake"]
        raise RuntimeError("mid-scenario")
    assert holders.all_gone(), "a server (or a helper it forked) outlived its scenario"


def test_ctrl_c_while_a_server_is_probed_stops_it(
    tmp_path: Path, holders: Holders, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(port: int, protocol: str) -> str | None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bench_suite, "probe", interrupted)
    suite, _ = _suite(tmp_path)
    with pytest.raises(KeyboardInterrupt), suite.servers("x", [_fake(holders)]):
        pytest.fail("unreachable")
    assert holders.all_gone()


def test_a_tool_that_overruns_its_time_is_stopped_with_its_helpers(holders: Holders) -> None:
    argv = holders.argv("silent")
    with pytest.raises(procs.ToolFailed) as caught:
        procs.run_tool(argv, timeout=1.0)
    assert str(caught.value).startswith(f"python did not finish within 1 s (command: {argv[0]}")
    assert holders.all_gone()


# --- a scenario that fails part way ------------------------------------------------------


def test_a_worker_that_prints_no_figures_is_one_row_not_measured(tmp_path: Path) -> None:
    suite, said = _suite(tmp_path)
    assert suite._worker("this", "1") is None  # exits 0, but prints the Zen of Python
    why = suite.results.unavailable["this 1"]
    assert why.endswith(
        """do more of those!" last; expected one line of JSON figures (an object of numbers)"""
    )
    assert said == [f"this 1 failed: {why}"]


def test_a_scenario_that_fails_part_way_keeps_its_rows_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    wrk = tools / "wrk"  # a wrk that cannot connect
    wrk.write_text(f"#!{sys.executable}\nimport sys\nsys.exit('unable to connect: refused')\n")
    wrk.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")

    def fdatasync(self: Suite) -> None:  # one row measured, then the load generator fails
        self.results.add(Sample("fdatasync", "100-byte write + fdatasync", 0, "disk", 0,
                                {"rps": 123.0}))  # fmt: skip
        self.wrk(1, self.write_lua, 1, 1)

    def memory(self: Suite) -> None:  # the next scenario still runs
        values = {"rss_before": 1.0, "rss_after": 2.0, "rss_mb": 2.0, "bytes_each": 0.5}
        self.results.add(Sample("rss_keys", "2 keys", 2, "keys", 0, values))

    monkeypatch.setattr(Suite, "fdatasync", fdatasync)
    monkeypatch.setattr(Suite, "memory", memory)
    out = tmp_path / "out"
    assert bench_main(["--quick", "--only", "fdatasync,memory", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "corosm bench: 1 scenario(s) failed part way: fdatasync\n" in err
    assert "Traceback" not in err
    saved = json.loads((out / "results.json").read_text())
    assert [s["values"].get("rps") for s in saved["samples"]] == [123.0, None]
    report = (out / "report.md").read_text()
    assert (
        "- **fdatasync**: failed part way (1 row kept): wrk exited with status 1: "
        "unable to connect: refused (command: "
    ) in report
    assert "| 2 | keys | 2.0 | 0 |" in report


# --- signals: the bench stops, and so does everything it started -------------------------

DRIVER = r"""
import sys
from corosm.bench import cli, suite
from corosm.bench.contenders import Contender
from corosm.bench.results import Sample
fake_source, fifo, out = sys.argv[1:]
fake_source = fake_source.replace("{", "{{").replace("}", "}}")  # a template: braces doubled
fake = Contender("fake", "fake", (sys.executable, "-c", fake_source, fifo, "listen", "{port}"))
def fdatasync(self):
    self.results.add(Sample("fdatasync", "100-byte write + fdatasync", 0, "disk", 0,
                            {"rps": 123.0}))
    with self.servers("fdatasync", [fake]) as ports:
        assert ports, self.results.unavailable
        print("READY", flush=True)
        sys.stdin.read()  # until the test's signal
suite.Suite.fdatasync = fdatasync
sys.exit(cli.main(["--quick", "--only", "fdatasync", "--out", out]))
"""


def _read_line(stream: int, timeout: float) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while (
        not got.endswith(b"\n") and select.select([stream], [], [], deadline - time.monotonic())[0]
    ):
        chunk = os.read(stream, 1)
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_bench_its_children_and_keeps_the_rows_done(
    signum: int, code: int, tmp_path: Path, holders: Holders
) -> None:
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    with subprocess.Popen(
        [sys.executable, "-c", DRIVER, FAKE, str(holders.path), str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    ) as bench:  # fmt: skip
        assert bench.stdout is not None
        try:
            assert _read_line(bench.stdout.fileno(), timeout=20) == b"READY\n"
            bench.send_signal(signum)
            _, err = bench.communicate(timeout=20)
        finally:
            bench.kill()
    name = signal.Signals(signum).name
    assert holders.all_gone(), "a server (or a helper it forked) outlived the bench"
    assert bench.returncode == code
    text = err.decode()
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1] == (
        f"corosm bench: stopped by {name}; every server and load generator it started was "
        f"stopped; the figures measured until then are in {out / 'report.md'}"
    )
    saved = json.loads((out / "results.json").read_text())
    assert [s["values"] for s in saved["samples"]] == [{"rps": 123.0}]
    assert f"the run was interrupted ({name}) during fdatasync" in (out / "report.md").read_text()


# --- the workers' own entry points ---------------------------------------------------------


def test_the_recovery_worker_never_empties_a_directory_that_holds_something(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    assert recovery_main(["10", "journal", str(tmp_path)]) == 2
    assert precious.read_text() == "keep me"
    assert "is a directory that is not empty; expected a new or empty directory" in (
        capsys.readouterr().err
    )
    assert recovery_main(["10", "journal", str(precious)]) == 2
    assert precious.read_text() == "keep me"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--window", "0"], "--window must be at least 1"),
        (["--writers", "0"], "--writers must be at least 1"),
        (["--seconds", "0"], "--seconds must be above 0 and at most 600"),
        (["--seconds", "inf"], "--seconds must be above 0 and at most 600, got inf"),
        (["--seconds", "nan"], "--seconds must be above 0 and at most 600, got nan"),
    ],
)
def test_the_shards_worker_checks_its_options_before_ray(
    args: list[str],
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(bench_shards, "ray_missing", lambda: "Ray is not installed (test)")
    assert bench_shards.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"corosm.bench.shards: {expected}") and err.count("\n") == 1


def test_the_shards_worker_checks_its_work_directory_before_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_ray(**kwargs: object) -> None:
        raise AssertionError("Ray was started before the options were checked")

    monkeypatch.setattr(bench_shards, "ray_missing", lambda: None)
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(init=no_ray, shutdown=no_ray))
    file = tmp_path / "file"
    file.write_text("")
    assert bench_shards.main(["--work", str(file)]) == 2
    assert capsys.readouterr().err == (
        f"corosm.bench.shards: --work {file}: Not a directory; expected a directory to write into\n"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--host", "0.0.0.0"], "a benchmark server listens on loopback only"),
        (["--port", "99999"], "argument --port: expected a port number 0..65535, got '99999'"),
        (["--port", "-5"], "argument --port: expected a port number 0..65535, got '-5'"),
        (["--data-dir", "{file}"], "--data-dir '{file}' exists and is not a directory"),
        (["--port", "7", "--resp-port", "7"], "--resp-port and --port are both 7"),
    ],
)
def test_the_bench_server_launcher_refuses_bad_options(
    args: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "file"
    file.write_text("")
    argv = [a.replace("{file}", str(file)) for a in ["--port", "1", "--data-dir", "d", *args]]
    with pytest.raises(SystemExit) as exited:
        serve_parse(argv)
    assert exited.value.code == 2
    assert expected.replace("{file}", str(file)) in capsys.readouterr().err


def test_the_bench_server_launcher_says_why_it_cannot_start(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "corosm.bench.serve", "--port", str(port),
             "--data-dir", str(tmp_path / "data")],
            capture_output=True, text=True, timeout=30, check=False,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
        )  # fmt: skip
    assert done.returncode == 4
    assert done.stderr.startswith("python -m corosm.bench.serve: cannot start: ")
    assert "address already in use" in done.stderr and "Traceback" not in done.stderr
