"""The test harness that starts servers finds the serving line however it arrives.

A stand-in child prints what a real ``corosm serve`` might: other lines first
(Ray's warnings), then the serving line, in one write or split mid-port. The
harness must return with the port the line names, not wait out its timeout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from serverproc import ServerProcess

BEHIND_OTHER_LINES = (  # in one write: readline() left it in the reader's buffer
    "sys.stdout.write('a warning\\nanother\\n"
    "corosm: serving HTTP on 127.0.0.1:40463, RESP on 127.0.0.1:40464 (data x)\\n')\n"
    "sys.stdout.flush()"
)
SPLIT_INSIDE_THE_PORT = (  # half a port must not be taken for a port
    "sys.stdout.write('corosm: serving HTTP on 127.0.0.1:40'); sys.stdout.flush()\n"
    "time.sleep(0.3)\n"
    "sys.stdout.write('463 (data x)\\n'); sys.stdout.flush()"
)


@pytest.mark.parametrize(
    ("script", "ports"),
    [(BEHIND_OTHER_LINES, (40463, 40464)), (SPLIT_INSIDE_THE_PORT, (40463, None))],
)
def test_the_serving_line_is_found_however_it_arrives(
    tmp_path: Path, script: str, ports: tuple[int, int | None]
) -> None:
    # The child ignores the "serve ..." arguments it is given, and waits to be killed.
    command = (sys.executable, "-c", f"import sys, time\n{script}\ntime.sleep(60)")
    server = ServerProcess(tmp_path, command=command)
    try:
        server.start(timeout=10)
        assert (server.port, server.resp_port) == ports
    finally:
        server.close()
