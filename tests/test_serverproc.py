"""The test harness that starts servers finds the serving line however it arrives.

A real ``corosm serve`` may print other lines first (Ray's warnings), in the
same write as the serving line; and a read may end inside the line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from serverproc import ServerProcess, serving_ports

SERVING = b"corosm: serving HTTP on 127.0.0.1:40463, RESP on 127.0.0.1:40464 (data x)\n"

# A stand-in for the server: it ignores the "serve ..." arguments, writes its
# lines in one write, and stays (as a server does: its exit would wake
# select()) until close() kills it.
CHILD = """
import signal, sys
sys.stdout.buffer.write(b"a warning\\nanother\\n" + SERVING)
sys.stdout.flush()
signal.pause()
"""


def test_the_serving_line_behind_other_lines_in_one_write_is_found(tmp_path: Path) -> None:
    # readline() left it in the reader's buffer, where select() could not see
    # it: the harness waited out its timeout on a server that had started.
    script = f"SERVING = {SERVING!r}\n{CHILD}"
    server = ServerProcess(tmp_path, command=(sys.executable, "-c", script))
    try:
        server.start(timeout=10)
        assert (server.port, server.resp_port) == (40463, 40464)
    finally:
        server.close()


def test_only_a_whole_serving_line_names_the_ports() -> None:
    assert serving_ports(b"warning\n" + SERVING) == (40463, 40464)
    assert serving_ports(b"corosm: serving HTTP on 127.0.0.1:40463 (data x)\n") == (40463, None)
    assert serving_ports(SERVING[:38]) is None  # cut inside the first port
    assert serving_ports(SERVING[:-1]) is None  # the line has not ended yet
    assert serving_ports(b"a warning\n") is None
