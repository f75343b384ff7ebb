"""A user's first machine, served: ``corosm serve --machine`` as a newcomer meets it.

Real ``corosm serve`` processes on free loopback ports. The job queue of
``tests/machines/jobqueue.py`` gets bodies a careless client sends (NaN,
Infinity, numbers too long or too deep, bytes that are not UTF-8, JSON of
the wrong shape): each is a 400 saying what was wrong, it changes nothing,
and the connection goes on. A handler that journals and then fails (raises,
or returns what JSON cannot carry: a set, an object, bytes, a NaN) gets a
500 that says so, and its journaled push is recovered after ``kill -9``.
The README's counter is served as the docs say a plain declared type is.
The serving lines that README pages print are the ones the server prints.
And the ``--machine`` mistakes a newcomer makes, not covered by
``tests/test_serve_machine.py``, are each refused in one line, exit 2.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import corosm
from rawclient import RawResponse, exchange
from serverproc import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
JOBS = ("--machine", "tests.machines.jobqueue:JobQueue")


@pytest.fixture(autouse=True, scope="module")
def corosm_on_pythonpath() -> Iterator[None]:
    """Server processes import this very corosm from any folder they run in."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(Path(corosm.__file__).resolve().parent.parent))
        yield


@pytest.fixture(scope="module")
def queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # Run from the repository's root: the folder corosm serve searches first.
    with ServerProcess(tmp_path_factory.mktemp("jobs") / "data", *JOBS, cwd=ROOT) as server:
        yield server


def _post(body: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def _pipeline(server: ServerProcess, *bodies: bytes) -> list[RawResponse]:
    """The bodies as pipelined requests on one connection, and their replies."""
    raw = b"".join(_post(body) for body in bodies)
    return asyncio.run(exchange("127.0.0.1", server.port, raw, count=len(bodies), timeout=20))


SIZE = b'{"type": "Size"}'
FINITE = "a finite number (JSON has no NaN or Infinity; a float is at most about 1.8e308)"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"type": "Push", "name": "a", "weight": NaN}', f"weight: expected {FINITE}, got NaN"),
        (b'{"type": "Push", "name": "a", "weight": -Infinity}', "got -Infinity"),
        (b'{"type": "Push", "name": "a", "weight": 1e400}', "got 1e400"),
        (b'{"type": "Push", "name": "a", "meta": {"x": NaN}}', "not JSON: NaN at line 1"),
        (b'{"type": "Push", "name": "a", "weight": 1%s}' % (b"0" * 5000), "number out of range"),
        (
            b'{"type": "Push", "name": "a", "meta": {"x": %s}}' % (b"[" * 300 + b"]" * 300),
            "the body is not JSON: recursion limit exceeded",
        ),
        (
            b'{"type": "Push", "name": "caf\xe9"}',
            "the body is not JSON: invalid unicode code point at line 1 column 30; expected UTF-8",
        ),
        (
            b"\xef\xbb\xbf" + SIZE,
            "the body starts with a byte order mark: send the JSON without one",
        ),
        (b'"Push"', 'expected an object with "type" one of "Push", "Pop", "Size", "PushThenFail"'),
        (b'{"type": "Push", "name": "a", "weight": "1.5"}', 'weight: expected a number, got "1.5"'),
        (b'{"type": "Push", "name": "a", "meta": [1]}', "meta: expected an object, got [1]"),
        (b'{"type": "Pop", "name": "a"}', "name: unknown field"),
        (b'{"type": "Push"}', "name: missing"),
    ],
)
def test_a_bad_body_is_400_changes_nothing_and_the_connection_goes_on(
    queue: ServerProcess, body: bytes, message: str
) -> None:
    before, refused, after = _pipeline(queue, SIZE, body, SIZE)
    assert (refused.status, before.status, after.status) == (400, 200, 200), refused
    text = refused.body.decode()
    assert message in text and "Traceback" not in text, text
    assert after.body == before.body  # nothing was pushed


def test_the_words_nan_and_infinity_inside_strings_are_fine(queue: ServerProcess) -> None:
    body = b'{"type": "Push", "name": "NaN", "meta": {"Infinity": "x"}}'
    (pushed,) = _pipeline(queue, body)
    assert pushed.status == 200 and json.loads(pushed.body)["type"] == "Count"


FAILURES = {
    "set": "does not allow set {1, 2}",
    "object": "does not allow object <object object at",
    "bytes": "does not allow bytes b'\\xff'",
    "nan": "does not allow Job Job(name='f-nan', weight=nan) (JSON has no NaN or Infinity)",
    "raise": "handler raised RuntimeError: failed after the append of f-raise",
}


def test_a_handler_that_fails_after_its_append_is_500_and_the_append_survives(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    failing = [
        json.dumps({"type": "PushThenFail", "name": f"f-{how}", "how": how}).encode()
        for how in FAILURES
    ]
    with ServerProcess(data, *JOBS, cwd=ROOT) as server:
        *replies, live = _pipeline(server, *failing, SIZE)
        for reply, expected in zip(replies, FAILURES.values(), strict=True):
            assert reply.status == 500, reply
            assert expected in reply.body.decode() and reply.body.count(b"\n") == 1, reply
        assert json.loads(live.body) == {"type": "Count", "size": len(FAILURES)}
        server.kill()  # kill -9: only what is on disk comes back
    with ServerProcess(data, *JOBS, cwd=ROOT) as server:
        pop = b'{"type": "Pop"}'
        recovered, *popped = _pipeline(server, SIZE, *[pop] * len(FAILURES))
    assert recovered.body == live.body
    assert [json.loads(reply.body) for reply in popped] == [
        {"type": "Job", "name": f"f-{how}", "weight": 1.0} for how in FAILURES
    ]


# --- the README's counter, served ---------------------------------------------------


def test_the_readme_counter_is_served_with_plain_json_values(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    (tmp_path / "counter.py").write_text(re.findall(r"```python\n(.*?)```", readme, re.S)[0])
    machine = ("--machine", "counter:Counter")
    with ServerProcess(tmp_path / "data", *machine, cwd=tmp_path) as server:
        incr, get = b'["incr", "hits"]', b'["get", "hits"]'
        replies = _pipeline(server, incr, incr, incr, get, b'["incr"]', b'{"op": "incr"}')
    counts = [(200, b"1"), (200, b"2"), (200, b"3"), (200, b"3")]
    assert [(reply.status, reply.body) for reply in replies[:4]] == counts
    short, wrong = replies[4:]
    assert (short.status, short.body) == (400, b"[1]: missing\n")
    assert (wrong.status, wrong.body) == (400, b'expected an array, got {"op": "incr"}\n')


# --- the serving lines the docs print -----------------------------------------------

SERVE = re.compile(r"^\$ (corosm serve --machine .*)\n(corosm: serving HTTP on .*)$", re.M)


@pytest.mark.parametrize("page", ["docs/serving.md", "examples/bank/README.md"])
def test_the_documented_serve_command_prints_the_documented_line(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (ROOT / page).read_text()
    command, line = SERVE.findall(text)[0]
    argv = command.split()[2:]  # after "corosm serve"; its --data-dir is relative
    if page == "docs/serving.md":  # its bank.py, served from the folder that holds it
        (tmp_path / "bank.py").write_text(re.findall(r"```python\n(.*?)```", text, re.S)[0])
    else:  # run from another folder, PYTHONPATH names the repository's root
        monkeypatch.setenv("PYTHONPATH", f"{ROOT}{os.pathsep}{os.environ['PYTHONPATH']}")
    assert _normal(_serving_line(tmp_path, argv)) == _normal(line)


def _serving_line(folder: Path, argv: list[str]) -> str:
    corosm_cli = str(Path(sys.executable).with_name("corosm"))
    with ServerProcess(folder / "ignored", *argv, command=[corosm_cli], cwd=folder) as server:
        output = server.output.decode()
    assert (folder / "bank-data").is_dir()
    return next(line for line in output.splitlines() if "serving HTTP" in line)


def _normal(line: str) -> str:
    """The line with its port, pid and build (which differ from run to run) made alike."""
    line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line)
    return re.sub(r"pid \d+, .+\)$", "pid PID, BUILD)", line)


# --- --machine mistakes, each one line and exit 2 -----------------------------------


def _serve(folder: Path, spec: str) -> tuple[int, list[str]]:
    command = [sys.executable, "-m", "corosm", "serve", "--port", "0", "--machine", spec]
    command += ["--data-dir", str(folder / "data")]
    done = subprocess.run(
        command, cwd=folder, capture_output=True, text=True, timeout=60, check=False
    )
    assert not (folder / "data").exists()  # refused before touching the disk
    return done.returncode, [line for line in done.stderr.splitlines() if line.strip()]


MODULE = """
import sys
from pathlib import Path
from corosm import Machine


class Launcher:  # not a machine; creating one has effects
    def __init__(self) -> None:
        Path("launched").touch()


class Quits(Machine[dict[str, int], int, int]):
    def __init__(self) -> None:
        sys.exit(3)


class Limited(Machine[dict[str, int], int, int]):
    def __init__(self, limit: int) -> None:
        self.limit = limit
"""


@pytest.mark.parametrize(
    ("spec", "line"),
    [
        (
            "jobs.py:Limited",
            "corosm: --machine jobs.py:Limited names a file; expected a module, as import names "
            "it: --machine jobs:Limited, run from the folder 'jobs.py' is in",
        ),
        (
            "sub/jobs.py:Limited",
            "corosm: --machine sub/jobs.py:Limited names a file; expected a module, as import "
            "names it: --machine sub.jobs:Limited, run from the folder 'sub/jobs.py' is in",
        ),
        (
            "jobs:Launcher",
            "corosm: --machine jobs:Launcher is the class Launcher, which is not a Machine "
            "subclass; expected a Machine subclass, an instance, or a function that returns one",
        ),
        (
            "jobs:Quits",
            "corosm: --machine jobs:Quits: Quits() raised SystemExit: 3 (corosm serve creates "
            "the machine with no arguments: give its parameters defaults, or name a function "
            "that returns the machine)",
        ),
        (
            "jobs:Limited",
            "corosm: --machine jobs:Limited: Limited() raised TypeError: Limited.__init__() "
            "missing 1 required positional argument: 'limit' (corosm serve creates the machine "
            "with no arguments: give its parameters defaults, or name a function that returns "
            "the machine)",
        ),
        (
            "broken:Any",
            "corosm: --machine broken:Any: importing 'broken' raised RuntimeError: "
            "no settings.toml here; copy settings.example.toml",
        ),
    ],
)
def test_a_machine_mistake_is_one_line_and_exit_2(tmp_path: Path, spec: str, line: str) -> None:
    (tmp_path / "jobs.py").write_text(MODULE)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "jobs.py").write_text(MODULE)
    (tmp_path / "broken.py").write_text(
        'raise RuntimeError("no settings.toml here;\\n  copy settings.example.toml")\n'
    )
    assert _serve(tmp_path, spec) == (2, [line])
    assert not (tmp_path / "launched").exists()  # a class that is not a machine is not called
