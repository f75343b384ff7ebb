"""corosm serve --ray --shards N: the key-value store's seed protocol over shards on Ray."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import require_module
from serverproc import ServerProcess

RAY_START = 180.0  # a local Ray cluster takes a while to start on a busy 2-core machine


def _serve(data: Path) -> ServerProcess:
    return ServerProcess(data, "--ray", "--shards", "2").start(timeout=RAY_START)


def test_seed_writes_survive_a_restart_of_a_sharded_server(tmp_path: Path) -> None:
    require_module("ray", pip="corosm[ray]")
    data = tmp_path / "data"
    server = _serve(data)
    try:
        for i in range(20):
            assert server.request("POST", "/", f'Write "k{i}" {i}'.encode()) == (200, b"Ok")
        for i in range(20):
            body = f"Result (Just {i})".encode()
            assert server.request("POST", "/", f'Read "k{i}"'.encode()) == (200, body)
        assert server.request("GET", "/health")[0] == 200
        assert server.terminate(timeout=60) == 0
    finally:
        server.close()
    manifest = json.loads((data / "shards.json").read_text())
    assert manifest["shards"] == 2
    # Both shards got some of the keys: each has a journal of its own.
    journals = [p for p in data.rglob("journal-*.log") if p.stat().st_size > 16]
    assert len({p.parent for p in journals}) == 2, sorted(map(str, journals))
    server = _serve(data)
    try:
        for i in range(20):
            body = f"Result (Just {i})".encode()
            assert server.request("POST", "/", f'Read "k{i}"'.encode()) == (200, body)
        # A reset would need every shard: refused, and nothing was changed.
        status, reply = server.request("DELETE", "/")
        assert status >= 400 and b"shard" in reply.lower(), (status, reply)
        assert server.request("POST", "/", b'Read "k3"') == (200, b"Result (Just 3)")
        assert server.terminate(timeout=60) == 0
    finally:
        server.close()
