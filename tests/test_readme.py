"""The README's examples are real: run them.

The first Python block is run in-process; the command-line session and the
client example of "Command line and Python client" run against a real server
(on a free port, which ``$COROSM_URL`` and the test hand to them), the
commands exactly as written, in bash, from the repository's root, on a PATH
where ``corosm`` is found only through the README's own set-up step.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from corosm.runtime import Runtime
from serverproc import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _first_python_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README has no python example"
    return str(blocks[0])


def test_readme_counter_example_counts_durably_and_concurrently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace: dict[str, Any] = {"__name__": "readme_example"}
    exec(compile(_first_python_block(), str(README), "exec"), namespace)
    monkeypatch.chdir(tmp_path)  # the example keeps its journal in ./counter-data
    asyncio.run(namespace["main"]())
    asyncio.run(namespace["main"]())  # a second run recovers the first one's counts
    assert capsys.readouterr().out.splitlines() == ["[1, 2, 3]", "[4, 5, 6]"]
    assert sorted(p.name for p in (tmp_path / "counter-data").glob("journal-*.log"))

    async def in_memory() -> None:
        async with Runtime(namespace["Counter"]()) as rt:  # the machine alone, no journal
            outputs = await asyncio.gather(*(rt.submit(("incr", "hits")) for _ in range(5)))
            # Each increment resumes right after its own record is applied, in log order.
            assert sorted(outputs) == [1, 2, 3, 4, 5]
            assert await rt.submit(("get", "other")) == 0

    asyncio.run(in_memory())


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"### {title}\n")
    end = text.find("\n#", start + 1)
    return text[start : end if end != -1 else len(text)]


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


CLI_SECTION = "Command line and Python client"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("readme") / "data") as running:
        yield running


def _path_without_corosm() -> str:
    """$PATH minus every directory holding a ``corosm``: the README must put it there."""
    dirs = os.environ.get("PATH", os.defpath).split(os.pathsep)
    return os.pathsep.join(d for d in dirs if d and not os.path.exists(os.path.join(d, "corosm")))


def _checkout_with_a_venv(tmp_path: Path) -> Path:
    """The folder to run the README's session in: one whose ``.venv/bin/activate`` works.

    The checkout itself after ``make``; otherwise (the suite run by another
    interpreter) a folder whose ``activate`` puts that interpreter's scripts,
    ``corosm`` among them, on PATH, as the real one would.
    """
    if (ROOT / ".venv" / "bin" / "activate").exists():
        return ROOT
    scripts = Path(sys.executable).parent
    assert (scripts / "corosm").exists(), f"no corosm script beside {sys.executable}"
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "activate").write_text(f'export PATH="{scripts}:$PATH"\n', encoding="utf-8")
    return tmp_path


def test_readme_command_line_session_runs_as_written(
    server: ServerProcess, require_tool: Callable[..., str], tmp_path: Path
) -> None:
    bash = require_tool("bash", apt="bash")
    folder = _checkout_with_a_venv(tmp_path)
    (session,) = _blocks(_section(CLI_SECTION), "console")
    commands = [line[2:] for line in session.splitlines() if line.startswith("$ ")]
    expected = [line for line in session.splitlines() if not line.startswith("$ ")]
    assert commands[0].startswith(". .venv/bin/activate")  # the set-up step comes first
    env = {
        **os.environ,
        "PATH": _path_without_corosm(),
        "COROSM_URL": f"http://127.0.0.1:{server.port}",
    }
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        [bash, "-c", "\n".join(commands)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, ""), done
    # `kv get` prints the value's exact bytes, so the last line has no newline of its own.
    assert done.stdout.splitlines() == expected


def test_readme_client_example_runs_against_a_server(server: ServerProcess) -> None:
    (example,) = _blocks(_section(CLI_SECTION), "python")
    default = 'Client("127.0.0.1", 8080)'
    assert default in example
    code = example.replace(default, f'Client("127.0.0.1", {server.port})')
    exec(compile(code, str(README), "exec"), {})
    assert server.request("GET", "/kv/raw%20key") == (200, b"\x00bytes")
