"""The garbage test once more, against the real ``corosm serve`` process.

Same generators and the same per-request check as ``test_http_garbage.py``
(every reply a well-formed 4xx-or-better, or a closed connection), fewer
examples, but through the whole assembled server: recovery, the durable
journal, the front ends and their configuration as shipped. Afterwards the
seeded keys read back unchanged and the journal holds no record beyond the
seeding (the ``corosm_journal_batch_records_sum`` metric did not move).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serverproc import ServerProcess
from test_http_garbage import MUTATED, SEEDED, _mutate, _no_mutating_request, _send_and_drain

_RECORDS = re.compile(rb"^corosm_journal_batch_records_sum (\S+)$", re.MULTILINE)


def journal_records(server: ServerProcess) -> float:
    status, page = server.request("GET", "/metrics")
    assert status == 200
    match = _RECORDS.search(page)
    assert match is not None, page[:400]
    return float(match.group(1))


class Proc:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.seen: dict[str, int] = {"4xx": 0, "other": 0, "no reply": 0}
        for key, value in SEEDED.items():
            assert server.request("PUT", "/kv/" + quote(key), value)[0] == 201
        self.records = journal_records(server)

    def check(self, raw: bytes) -> None:
        statuses = asyncio.run(_send_and_drain(self.server.port, raw))
        assert all(100 <= s < 500 for s in statuses), (raw[:200], statuses)
        for s in statuses:
            self.seen["4xx" if s >= 400 else "other"] += 1
        if not statuses:
            self.seen["no reply"] += 1


@pytest.fixture(scope="module")
def proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    data: Path = tmp_path_factory.mktemp("garbage") / "data"
    with ServerProcess(data) as server:
        yield Proc(server)


GARBAGE = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@GARBAGE
@given(MUTATED)
def test_mutated_requests_to_the_server_process(
    proc: Proc, case: tuple[bytes, list[tuple[str, int, bytes]]]
) -> None:
    raw = _mutate(*case)
    if _no_mutating_request(raw):
        proc.check(raw)


@GARBAGE
@given(st.binary(max_size=600))
def test_random_bytes_to_the_server_process(proc: Proc, raw: bytes) -> None:
    if _no_mutating_request(raw):
        proc.check(raw)


def test_server_process_unchanged_after_the_garbage(proc: Proc) -> None:
    server = proc.server
    assert server.proc is not None and server.proc.poll() is None, "the server died"
    for key, value in SEEDED.items():
        assert server.request("GET", "/kv/" + quote(key)) == (200, value)
    assert journal_records(server) == proc.records, "garbage changed the journal"
    if sum(proc.seen.values()) >= 500:  # after the runs above, not when run alone
        assert proc.seen["4xx"] > 100 and proc.seen["no reply"] > 10, proc.seen
