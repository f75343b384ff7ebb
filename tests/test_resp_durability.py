"""kill -9 over RESP: every write a Redis client saw acknowledged survives a restart.

A real ``corosm serve --resp-port 0`` process (:mod:`serverproc`) runs with its
data in ``tmp_path`` (fsync ``always``). Writer threads send SET, MSET and INCR
while the server is killed with SIGKILL; after a restart on the same data
directory every acknowledged write must be there, and each counter must lie
between the number of acknowledged and the number of sent increments.
"""

from __future__ import annotations

import threading
from pathlib import Path

import redis

from serverproc import ServerProcess


def start(data: Path) -> tuple[ServerProcess, int]:
    server = ServerProcess(data, "--resp-port", "0", "--fsync", "always").start()
    assert server.resp_port is not None, server.output
    return server, server.resp_port


class Writer(threading.Thread):
    """Writes until the connection breaks; remembers what was acknowledged."""

    def __init__(self, port: int, name: str) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis(port=port, socket_timeout=10)
        self.prefix = name
        self.acked: dict[str, str] = {}
        self.incr_sent = 0
        self.incr_acked = 0
        self.progress = threading.Event()

    def run(self) -> None:
        i = 0
        try:
            while True:
                key = f"{self.prefix}:{i}"
                self.client.set(key, f"v{i}")
                self.acked[key] = f"v{i}"
                pair = {f"{self.prefix}:m{i}a": str(i), f"{self.prefix}:m{i}b": str(-i)}
                self.client.mset(pair)
                self.acked.update(pair)
                self.incr_sent += 1
                self.client.incr(f"{self.prefix}:counter")
                self.incr_acked += 1
                i += 1
                if i >= 50:
                    self.progress.set()
        except (redis.ConnectionError, redis.TimeoutError):
            return


def test_kill_9_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, port = start(data)
    writers = [Writer(port, f"w{n}") for n in range(4)]
    try:
        for w in writers:
            w.start()
        for w in writers:
            assert w.progress.wait(30), "writers made no progress"
        proc.kill()  # SIGKILL: no flush, no goodbye
        for w in writers:
            w.join(timeout=30)
            assert not w.is_alive()
    finally:
        proc.close()

    proc, port = start(data)
    try:
        with redis.Redis(port=port, socket_timeout=10) as c:
            for w in writers:
                assert w.acked, "the writer never got an acknowledgement"
                keys = list(w.acked)
                got = c.mget(keys)
                missing = [k for k, v in zip(keys, got, strict=True) if v is None]
                assert not missing, f"acknowledged but lost: {missing[:5]}"
                assert [v.decode() for v in got] == [w.acked[k] for k in keys]
                counter = int(c.get(f"{w.prefix}:counter") or 0)
                assert w.incr_acked <= counter <= w.incr_sent
        assert proc.terminate(timeout=30) == 0
    finally:
        proc.close()
