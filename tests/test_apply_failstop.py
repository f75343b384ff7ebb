"""An apply() that raises is a fail-stop: writes refused, reads go on, the journal intact."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import corosm
from corosm import Context, Machine
from corosm.errors import ApplyFailed, JournalClosed
from corosm.runtime import Runtime


class Notes(Machine[list[str], tuple[str, str], int]):
    """Appends notes; its apply() has a bug: it cannot take a note that says "boom"."""

    fixed = False

    def initial_state(self) -> list[str]:
        return []

    def apply(self, state: list[str], record: bytes) -> list[str]:
        if record == b"boom" and not self.fixed:
            raise ValueError("cannot apply boom")
        state.append(record.decode())
        return state

    async def handle(self, ctx: Context[list[str]], input: tuple[str, str]) -> int:
        op, text = input
        if op == "add":
            await ctx.append(text.encode())
        return len(ctx.state)


class FixedNotes(Notes):
    fixed = True


async def _outcome(rt: Runtime[list[str], tuple[str, str], int], text: str) -> object:
    try:
        return await rt.submit(("add", text))
    except Exception as exc:
        return exc


def test_apply_that_raises_fails_that_write_then_refuses_writes_and_keeps_reads() -> None:
    async def main() -> None:
        async with Runtime(Notes()) as rt:
            assert await rt.submit(("add", "a")) == 1
            failed = await _outcome(rt, "boom")
            assert isinstance(failed, ApplyFailed)
            assert failed.lsn == 2 and failed.machine == "Notes"
            assert isinstance(failed.__cause__, ValueError)
            refused = await _outcome(rt, "b")
            assert isinstance(refused, JournalClosed)
            assert "apply() failed at lsn 2" in str(refused)
            assert await rt.submit(("read", "")) == 1  # reads go on, on the state before it
            health = rt.health()
            assert health is not None and "lsn 2" in health and "Notes.apply()" in health
            assert rt.stats()["apply_failed_lsn"] == 2

    asyncio.run(main())


def test_records_in_flight_behind_the_failed_one_are_not_applied_live() -> None:
    async def main() -> None:
        async with Runtime(Notes()) as rt:
            outcomes = await asyncio.gather(*(_outcome(rt, t) for t in ("x", "boom", "y")))
            assert outcomes[0] == 1
            assert isinstance(outcomes[1], ApplyFailed)
            assert isinstance(outcomes[2], JournalClosed)  # in the journal, not in the state
            assert await rt.submit(("read", "")) == 1

    asyncio.run(main())


def test_restart_names_the_record_and_a_fixed_apply_replays_everything(tmp_path: Path) -> None:
    async def first() -> None:
        async with corosm.open(Notes(), tmp_path) as host:
            assert await host.submit(("add", "a")) == 1
            assert isinstance(await _outcome(host, "boom"), ApplyFailed)
            assert host.health() is not None

    asyncio.run(first())

    async def reopen(machine: Notes) -> int:
        async with corosm.open(machine, tmp_path) as host:
            return await host.submit(("read", ""))

    with pytest.raises(ApplyFailed) as caught:
        asyncio.run(reopen(Notes()))
    message = str(caught.value)
    assert caught.value.lsn == 2
    assert "Notes.apply() raised ValueError: cannot apply boom" in message
    assert "fix apply()" in message
    # The journal was intact all along: the fixed machine replays both records.
    assert asyncio.run(reopen(FixedNotes())) == 2
