"""A machine whose state is the list of journaled payloads, for the journal's tests."""

from __future__ import annotations

from corosm.core import Machine
from corosm.io.journal import FileSystem, Recovered, recover


class ListMachine(Machine[list[bytes], object, object]):
    """Replays records into a list of payloads, in LSN order."""

    def initial_state(self) -> list[bytes]:
        return []

    def apply(self, state: list[bytes], record: bytes) -> list[bytes]:
        state.append(record)
        return state

    def restore(self, data: bytes) -> list[bytes]:
        raise AssertionError("no snapshots in these tests")


def replay(directory: str, fs: FileSystem | None = None) -> Recovered[list[bytes]]:
    """Recover ``directory`` into a list of payloads."""
    return recover(directory, ListMachine(), fs=fs)
