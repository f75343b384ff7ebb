"""``corosm serve --resp-port``: RESP beside HTTP, on one machine and one journal.

One real server process (:mod:`serverproc`) for the module: a key written over
HTTP (the seed's protocol and REST) is read over RESP and the other way round,
INFO reports the journal's counters, and SIGTERM stops both front ends cleanly.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from serverproc import ServerProcess

QUIET_SET_GET = ("-t", "set,get", "-q")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data: Path = tmp_path_factory.mktemp("serve") / "data"
    with ServerProcess(data, "--resp-port", "0", "--fsync", "always") as server:
        assert server.resp_port is not None, server.output
        yield server


@pytest.fixture
def r(served: ServerProcess) -> Iterator[redis.Redis]:
    assert served.resp_port is not None
    with redis.Redis(port=served.resp_port, socket_timeout=10) as client:
        yield client


def test_seed_write_over_http_is_read_over_resp(served: ServerProcess, r: redis.Redis) -> None:
    assert served.request("POST", "/", b'Write "seeded" 41') == (200, b"Ok")
    assert r.get("seeded") == b"41"
    assert r.incr("seeded") == 42
    assert served.request("POST", "/", b'Read "seeded"') == (200, b"Result (Just 42)")


def test_resp_write_is_read_over_http(served: ServerProcess, r: redis.Redis) -> None:
    value = bytes(range(256))
    assert r.mset({"resp-a": value, "resp-n": "-5"}) is True
    assert served.request("GET", "/kv/resp-a") == (200, value)
    assert served.request("POST", "/", b'Read "resp-n"') == (200, b"Result (Just (-5))")
    assert served.request("PUT", "/kv/rest-key", b"from rest")[0] in (200, 201)
    assert r.get("rest-key") == b"from rest"
    assert r.delete("rest-key") == 1
    assert served.request("GET", "/kv/rest-key")[0] == 404


def test_info_reports_the_journal(r: redis.Redis) -> None:
    r.set("counted", "1")
    info = r.info("persistence")
    assert info["journal_records"] >= 1  # the SET above went through the journal
    assert info["journal_fsyncs"] >= 1
    stats = r.info("stats")
    assert stats["total_commands_processed"] >= 1
    assert "journal_records" not in stats  # journal figures live under Persistence
    assert info["aof_enabled"] == 1 and info["appendfsync"] == "always"
    assert r.config_get("appendfsync") == {"appendfsync": "always"}


def test_redis_benchmark_pipelined_over_serve(
    served: ServerProcess, require_tool: Callable[..., str]
) -> None:
    tool = require_tool("redis-benchmark", apt="redis-tools")
    done = subprocess.run(
        [tool, "-p", str(served.resp_port), "-n", "3000", "-c", "8", "-P", "16", *QUIET_SET_GET],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    text = done.stdout + done.stderr
    assert "SET:" in text and "GET:" in text
    assert "ERR" not in text and "WARNING" not in text


def test_sigterm_stops_cleanly_and_keeps_writes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data, "--resp-port", "0") as server:
        assert server.resp_port is not None
        with redis.Redis(port=server.resp_port, socket_timeout=10) as c:
            pipe = c.pipeline(transaction=False)
            for i in range(200):
                pipe.set(f"k{i}", i)
            assert pipe.execute() == [True] * 200
        assert server.terminate() == 0
    with ServerProcess(data, "--resp-port", "0") as server:
        assert server.resp_port is not None
        with redis.Redis(port=server.resp_port, socket_timeout=10) as c:
            assert c.mget([f"k{i}" for i in range(200)]) == [str(i).encode() for i in range(200)]
