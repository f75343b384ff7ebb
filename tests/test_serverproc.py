"""The test harness that starts servers finds the serving line however it arrives.

A stand-in child prints what a real ``corosm serve`` might: other lines first
(Ray's warnings), then the serving line, in one write or split mid-port. The
harness must return with the port the line names, not wait out its timeout.
"""

from __future__ import annotations

import sys
from pathlib import Path

from serverproc import ServerProcess


def _child(script: str) -> tuple[str, ...]:
    """A command whose ``serve ...`` arguments are ignored and that runs ``script``."""
    return (sys.executable, "-c", f"import sys, time\n{script}\ntime.sleep(60)")


def test_the_serving_line_behind_other_lines_in_one_write_is_found(tmp_path: Path) -> None:
    script = (
        "sys.stdout.write('a warning\\nanother\\n"
        "corosm: serving HTTP on 127.0.0.1:40463, RESP on 127.0.0.1:40464 (data x)\\n')\n"
        "sys.stdout.flush()"
    )
    server = ServerProcess(tmp_path, command=_child(script))
    try:
        server.start(timeout=10)
        assert (server.port, server.resp_port) == (40463, 40464)
    finally:
        server.close()


def test_a_serving_line_split_inside_its_port_is_read_whole(tmp_path: Path) -> None:
    script = (
        "sys.stdout.write('corosm: serving HTTP on 127.0.0.1:40'); sys.stdout.flush()\n"
        "time.sleep(0.3)\n"
        "sys.stdout.write('463 (data x)\\n'); sys.stdout.flush()"
    )
    server = ServerProcess(tmp_path, command=_child(script))
    try:
        server.start(timeout=10)
        assert (server.port, server.resp_port) == (40463, None)
    finally:
        server.close()
