"""corosm.open: any machine, durable in one call (recover, journal, snapshots, stop)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

import corosm
from corosm import Context, Machine
from corosm.core.effects import Append
from corosm.errors import UsageError
from corosm.io.memory import MemoryJournalExecutor


class Tally(Machine[dict[str, int], tuple[str, str], int]):
    """Counts per name; every increment is journaled, reads are not."""

    def initial_state(self) -> dict[str, int]:
        return {}

    def apply(self, state: dict[str, int], record: bytes) -> dict[str, int]:
        name = record.decode()
        state[name] = state.get(name, 0) + 1
        return state

    async def handle(self, ctx: Context[dict[str, int]], input: tuple[str, str]) -> int:
        op, name = input
        if op == "incr":
            await ctx.append(name.encode())
        return ctx.state.get(name, 0)

    def snapshot(self, state: dict[str, int]) -> bytes:
        return json.dumps(state).encode()

    def restore(self, data: bytes) -> dict[str, int]:
        restored: dict[str, int] = json.loads(data)
        return restored


def test_open_recovers_what_an_earlier_open_wrote(tmp_path: Path) -> None:
    async def first() -> None:
        async with corosm.open(Tally(), tmp_path) as host:
            assert host.recovery is not None and host.recovery.records_replayed == 0
            results = await asyncio.gather(*(host.submit(("incr", "x")) for _ in range(20)))
            assert sorted(results) == list(range(1, 21))
            assert host.health() is None
            assert host.stats()["journal_records"] == 20

    async def second() -> int:
        async with corosm.open(Tally(), tmp_path) as host:
            assert host.recovery is not None and host.recovery.records_replayed == 20
            return await host.submit(("read", "x"))

    asyncio.run(first())
    assert asyncio.run(second()) == 20


def test_open_takes_snapshots_on_its_own(tmp_path: Path) -> None:
    async def main() -> None:
        async with corosm.open(Tally(), tmp_path, snapshot_every=10) as host:
            for _ in range(35):
                await host.submit(("incr", "y"))

    asyncio.run(main())  # leaving the block waits for a snapshot being written
    assert sorted(tmp_path.glob("snapshot-*.snap")), sorted(p.name for p in tmp_path.iterdir())

    async def reopen() -> tuple[int, int]:
        async with corosm.open(Tally(), tmp_path) as host:
            assert host.recovery is not None
            return host.recovery.snapshot_lsn, await host.submit(("read", "y"))

    snapshot_lsn, value = asyncio.run(reopen())
    assert snapshot_lsn >= 10 and value == 35


def test_there_is_no_way_to_start_on_another_state(tmp_path: Path) -> None:
    async def main() -> None:
        async with corosm.open(Tally(), tmp_path, state={"x": 3}):
            pass

    with pytest.raises(UsageError, match="unknown option 'state'"):
        asyncio.run(main())


def test_append_runs_on_the_journal_it_opened(tmp_path: Path) -> None:
    async def main() -> None:
        executors: dict[Any, Any] = {Append: MemoryJournalExecutor()}
        async with corosm.open(Tally(), tmp_path, executors=executors):
            pass

    with pytest.raises(UsageError, match="Append"):
        asyncio.run(main())


def test_open_blocking_for_scripts(tmp_path: Path) -> None:
    with corosm.open_blocking(Tally(), tmp_path) as host:
        assert [host.submit(("incr", "z")) for _ in range(3)] == [1, 2, 3]
        assert host.health() is None
        assert host.stats()["appends_applied"] == 3
    with corosm.open_blocking(Tally(), tmp_path) as host:
        assert host.submit(("read", "z")) == 3


def test_a_data_directory_is_held_by_one_open_at_a_time(tmp_path: Path) -> None:
    # Two journals in one directory overwrote each other's segments: both
    # acknowledged writes, and a restart kept one side's alone.
    async def main() -> int:
        async with corosm.open(Tally(), tmp_path) as host:
            await host.submit(("incr", "x"))
            with pytest.raises(corosm.DataDirInUse, match="another journal in this process"):
                async with corosm.open(Tally(), tmp_path):
                    pass
            await host.submit(("incr", "x"))  # the holder goes on, unharmed
        async with corosm.open(Tally(), tmp_path) as host:  # closed: free again
            return await host.submit(("read", "x"))

    assert asyncio.run(main()) == 2


class UncopyableTally(Tally):
    def copy_state(self, state: dict[str, int]) -> dict[str, int]:
        raise RuntimeError("this state cannot be copied")


def test_a_copy_state_that_raises_fails_the_snapshot_not_the_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # It escaped the host's turn: writes already journaled were never answered.
    async def main() -> list[int]:
        async with corosm.open(UncopyableTally(), tmp_path, snapshot_every=1) as host:
            results = await asyncio.wait_for(
                asyncio.gather(*(host.submit(("incr", "x")) for _ in range(50))), 10
            )
            assert host.health() is None
            return sorted(results)

    assert asyncio.run(main()) == list(range(1, 51))
    assert "UncopyableTally.copy_state() raised RuntimeError: this state cannot be copied" in (
        caplog.text
    )
    assert not list(tmp_path.glob("snapshot-*.snap"))

    async def reopen() -> int:
        async with corosm.open(Tally(), tmp_path) as host:
            return await host.submit(("read", "x"))

    assert asyncio.run(reopen()) == 50


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_inflight": 1.5}, "max_inflight must be an int, got 1.5"),
        ({"max_queue": "10"}, "max_queue must be an int, got '10'"),
        ({"truncate_corrupt": "no"}, "truncate_corrupt must be True or False, got 'no'"),
        ({"bogus": 1}, "unknown option 'bogus'; expected one of fsync, "),
    ],
)
def test_options_of_the_wrong_name_or_type_are_refused_before_anything_opens(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    # A float limit failed every turn (no input answered); "no" read as true
    # for truncate_corrupt, which cuts the journal.
    async def main() -> None:
        async with corosm.open(Tally(), tmp_path / "data", **options):
            pass

    with pytest.raises(UsageError, match=re.escape(message)):
        asyncio.run(main())
    with (
        pytest.raises(UsageError, match=re.escape(message)),
        corosm.open_blocking(Tally(), tmp_path / "data", **options),
    ):
        pass
    assert not (tmp_path / "data").exists()


class RenamedTally(Tally):
    """A new version whose restore() cannot read the snapshots the old one wrote."""

    def restore(self, data: bytes) -> dict[str, int]:
        return dict(json.loads(data)["counts"])


def test_a_restore_that_raises_names_the_snapshot_and_changes_nothing(tmp_path: Path) -> None:
    async def write() -> None:
        async with corosm.open(Tally(), tmp_path, snapshot_every=5) as host:
            for _ in range(12):
                await host.submit(("incr", "z"))

    asyncio.run(write())
    snapshot = sorted(tmp_path.glob("snapshot-*.snap"))[-1]  # the newest is read first

    async def reopen(machine: Tally) -> int:
        async with corosm.open(machine, tmp_path) as host:
            return await host.submit(("read", "z"))

    with pytest.raises(corosm.DataError) as info:
        asyncio.run(reopen(RenamedTally()))
    message = str(info.value)
    assert message.startswith("RenamedTally.restore() raised KeyError: 'counts' on snapshot ")
    assert str(snapshot) in message and "fix restore()" in message
    assert isinstance(info.value.__cause__, KeyError)
    assert asyncio.run(reopen(Tally())) == 12  # nothing was changed


def test_a_stopped_runtime_says_it_cannot_start_again(tmp_path: Path) -> None:
    # It said "Journal.start() was called twice", naming a part the caller never touched.
    async def main() -> None:
        async with corosm.open(Tally(), tmp_path) as host:
            await host.submit(("incr", "x"))
        with pytest.raises(UsageError, match="a stopped Runtime cannot start again"):
            await host.start()

    asyncio.run(main())
