"""The journal's fast paths: sink-only batches, blocking appends mixed in, executor encoding."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from corosm.core.effects import Append
from corosm.errors import UsageError
from corosm.io.journal import Journal, JournalExecutor, JournalOptions
from corosm.io.journal.format import MAX_RECORD_BYTES


def test_blocking_appends_and_sink_tokens_in_the_same_batches(tmp_path: Path) -> None:
    got: list[tuple[Any, int | None, BaseException | None]] = []
    all_in = threading.Event()

    def sink(batch: Sequence[tuple[Any, int | None, BaseException | None]]) -> None:
        got.extend(batch)
        if len(got) == 200:
            all_in.set()

    journal = Journal(str(tmp_path), options=JournalOptions(fsync="never"))
    journal.start(sink)
    lsns: list[int] = []

    def blocking(n: int) -> None:
        lsns.extend(journal.append(b"b%d" % i, timeout=10) for i in range(n))

    threads = [threading.Thread(target=blocking, args=(25,)) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(0, 200, 10):
        journal.submit([(("tok", j), b"s%d" % j) for j in range(i, i + 10)])
    for t in threads:
        t.join(10)
    assert all_in.wait(10)
    journal.close()
    assert sorted(token for token, _, _ in got) == [("tok", j) for j in range(200)]
    assert all(error is None for _, _, error in got)
    every = sorted(lsns + [lsn for _, lsn, _ in got if lsn is not None])
    assert every == list(range(1, 301))  # each record exactly one LSN, none lost
    assert journal._waiters == 0  # every blocking appender was woken and uncounted


def _run_executor(
    tmp_path: Path, payloads: Sequence[Any]
) -> tuple[Journal, dict[int, tuple[Any, BaseException | None]]]:
    """Append records 0..n-1 through a JournalExecutor whose encode returns ``payloads[i]``.

    Returns the (closed) journal and each request's completion ``(lsn, error)``.
    """
    done: list[tuple[int, Any, BaseException | None]] = []
    finished = threading.Event()

    def sink(batch: Sequence[tuple[int, Any, BaseException | None]]) -> None:
        done.extend(batch)
        if len(done) == len(payloads):
            finished.set()

    journal = Journal(str(tmp_path), options=JournalOptions(fsync="never"))
    executor = JournalExecutor(journal, lambda i: payloads[i])
    executor.start(sink)
    executor.submit([(i, Append(i)) for i in range(len(payloads))])
    assert finished.wait(10)
    executor.close()
    return journal, {request: (value, error) for request, value, error in done}


def test_executor_accepts_bytes_like_and_fails_bad_encodings_alone(tmp_path: Path) -> None:
    class Blob(bytes):
        pass

    payloads = [b"p", Blob(b"s"), bytearray(b"a"), memoryview(b"v"), "not bytes"]
    _, by_request = _run_executor(tmp_path, payloads)
    assert [by_request[i][0] for i in range(4)] == [1, 2, 3, 4]  # LSNs in submission order
    value, error = by_request[4]
    assert value is None and isinstance(error, UsageError)
    assert "encode returned str, expected bytes" in str(error)


def test_a_record_the_journal_refuses_fails_its_request_alone(tmp_path: Path) -> None:
    huge = bytes(MAX_RECORD_BYTES + 1)  # calloc'd: its pages are never touched
    journal, by_request = _run_executor(tmp_path, [b"small", huge, b"fits", b"tiny"])
    assert [by_request[i][0] for i in (0, 2, 3)] == [1, 2, 3]  # the others, in order
    value, error = by_request[1]
    assert value is None and isinstance(error, UsageError)
    assert f"{MAX_RECORD_BYTES + 1} bytes exceeds {MAX_RECORD_BYTES}" in str(error)
    assert journal.failure is None  # the journal goes on
