"""Start and stop a real ``corosm serve`` process for end-to-end tests.

The server is told ``--port 0`` and prints the port it got on its first line
of output; we read that line (with a bound) instead of guessing a free port.
"""

from __future__ import annotations

import http.client
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

_SERVING = re.compile(rb"serving HTTP on [^:]+:(\d+)(?:, RESP on [^:]+:(\d+))?")


def serving_ports(output: bytes) -> tuple[int, int | None] | None:
    """The HTTP (and RESP) port of the serving line in ``output``, once that line is whole.

    Only complete lines count: a read may end inside the port, and half a
    port must not be taken for one.
    """
    match = _SERVING.search(output, 0, output.rfind(b"\n") + 1)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


class ServerProcess:
    """A ``python -m corosm serve`` child on 127.0.0.1 with its data in ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        *extra: str,
        command: Sequence[str] = (sys.executable, "-m", "corosm"),
        cwd: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.command = tuple(command)
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.resp_port: int | None = None
        self.output = b""

    def start(self, timeout: float = 30.0) -> ServerProcess:
        args = [*self.command, "serve", "--port", "0"]
        args += ["--data-dir", str(self.data_dir), "--log-level", "warning", *self.extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=self.cwd
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                # read1, not readline: readline would leave the lines after the
                # first in the reader's buffer, where select() cannot see them.
                chunk = self.proc.stdout.read1(65536)
                self.output += chunk
                ports = serving_ports(self.output)
                if ports is not None:
                    self.port, self.resp_port = ports
                    return self
                if not chunk:
                    break
            if self.proc.poll() is not None:
                break
        stacks = self.dump_stacks() if self.proc.poll() is None else b""
        self.close()
        raise AssertionError(
            f"server did not start in {timeout} s; output:\n"
            f"{(self.output + stacks).decode(errors='replace')}"
        )

    def dump_stacks(self, timeout: float = 10.0) -> bytes:
        """SIGUSR1 (the server prints every thread's stack): what it printed then.

        Reads until a stack has come and the output has paused for half a
        second, or ``timeout``; for the report of a server that hangs.
        """
        assert self.proc is not None and self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR1)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                chunk = self.proc.stdout.read1(65536)
                if not chunk:
                    break
                out += chunk
            elif b"most recent call first" in out:
                break
        return out

    def request(self, method: str, path: str = "/", body: bytes = b"") -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body)
            reply = conn.getresponse()
            return reply.status, reply.read()
        finally:
            conn.close()

    def kill(self) -> None:
        """kill -9: no flush, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait: returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def close(self) -> None:
        """Kill the process if it still runs and release its pipe."""
        self.kill()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def __exit__(self, *exc: object) -> None:
        self.close()
