"""``Machine.apply_encoded``, the batch hook recovery replays through, and its failures.

The hook's default is ``apply(state, decode_record(payload))`` per payload;
recovery hands it a chunk of payloads at a time and, when it raises, must
still name the exact record (LSN and byte offset) and tell a record that
does not decode (``CorruptJournal``) from one ``apply`` refused
(``ApplyFailed``), wherever the record sits in its chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.records import Put, encode_record
from corosm.core import Machine
from corosm.errors import ApplyFailed, CorruptJournal
from corosm.io.journal import recover, recovery
from corosm.io.journal.format import (
    FRAME_SIZE,
    HEADER_SIZE,
    JOURNAL_MAGIC,
    encode_frames,
    file_header,
    segment_name,
)


class Fold(Machine[tuple[int, ...], object, object]):
    """State is a tuple; each record is one byte folded in, so order matters. 0xFF is refused."""

    def initial_state(self) -> tuple[int, ...]:
        return ()

    def apply(self, state: tuple[int, ...], record: int) -> tuple[int, ...]:
        if record == 0xFF:
            raise ValueError("cannot fold 0xff")
        return (*state[-3:], (sum(state) * 31 + record) % 251)

    def decode_record(self, data: bytes) -> int:
        if len(data) != 1:
            raise ValueError(f"a record is one byte, not {len(data)}")
        return data[0]


class LoopingFold(Fold):
    """Overrides the hook with its own loop, as a machine author would."""

    def apply_encoded(self, state: tuple[int, ...], payloads: Iterator[bytes]) -> tuple[int, ...]:
        for payload in payloads:
            state = self.apply(state, self.decode_record(payload))
        return state


@given(st.lists(st.integers(0, 0xFE), max_size=40), st.lists(st.integers(0, 0xFE), max_size=4))
def test_default_apply_encoded_is_apply_one_by_one(records: list[int], start: list[int]) -> None:
    machine = Fold()
    expected = tuple(start)
    for record in records:
        expected = machine.apply(expected, record)
    payloads = [bytes([record]) for record in records]
    assert machine.apply_encoded(tuple(start), iter(payloads)) == expected


def write_segment(directory: Path, payloads: list[bytes]) -> list[int]:
    """One segment holding ``payloads`` as records 1, 2, ...; the byte offset of each frame."""
    directory.mkdir(exist_ok=True)
    (directory / segment_name(1)).write_bytes(
        file_header(JOURNAL_MAGIC) + encode_frames(payloads, 1)
    )
    offsets, pos = [], HEADER_SIZE
    for payload in payloads:
        offsets.append(pos)
        pos += FRAME_SIZE + len(payload)
    return offsets


@pytest.fixture(params=[3, 4096], ids=["chunk3", "chunk4096"])
def chunk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Replay in chunks of this many frames (3: a failure far into a later chunk)."""
    size: int = request.param
    monkeypatch.setattr(recovery, "_CHUNK", size)
    return size


@pytest.mark.parametrize("machine", [Fold(), LoopingFold()], ids=["default", "override"])
@pytest.mark.parametrize("bad", [0, 1, 2, 3, 7, 11])
def test_apply_failure_names_the_exact_lsn(
    tmp_path: Path, chunk: int, machine: Fold, bad: int
) -> None:
    payloads = [bytes([i + 1]) for i in range(12)]
    payloads[bad] = b"\xff"
    write_segment(tmp_path, payloads)
    with pytest.raises(ApplyFailed) as caught:
        recover(str(tmp_path), machine)
    assert caught.value.lsn == bad + 1
    assert isinstance(caught.value.__cause__, ValueError)
    assert f"{type(machine).__name__}.apply() raised ValueError: cannot fold 0xff" in str(
        caught.value
    )


@pytest.mark.parametrize("machine", [Fold(), LoopingFold()], ids=["default", "override"])
@pytest.mark.parametrize("bad", [0, 4, 10])
def test_record_that_does_not_decode_names_its_offset(
    tmp_path: Path, chunk: int, machine: Fold, bad: int
) -> None:
    payloads = [bytes([i + 1]) for i in range(12)]
    payloads[bad] = b"two"
    offsets = write_segment(tmp_path, payloads)
    with pytest.raises(CorruptJournal) as caught:
        recover(str(tmp_path), machine)
    assert caught.value.offset == offsets[bad]
    assert f"record lsn {bad + 1} could not be decoded" in caught.value.reason
    assert "a record is one byte, not 3" in caught.value.reason


@pytest.mark.parametrize(
    "payload", [b"", b"\x01\x00", b"\x01\x09\x00\x00\x00abc", b"\x00"], ids=repr
)
def test_kv_record_that_does_not_decode_is_corruption_at_its_frame(
    tmp_path: Path, chunk: int, payload: bytes
) -> None:
    good = [encode_record(Put(b"k%d" % i, b"v")) for i in range(8)]
    offsets = write_segment(tmp_path, [*good[:5], payload, *good[5:]])
    with pytest.raises(CorruptJournal) as caught:
        recover(str(tmp_path), KVMachine())
    assert caught.value.offset == offsets[5]
    assert "record lsn 6 could not be decoded: DataError(" in caught.value.reason


def test_hook_that_raises_before_taking_a_record_names_the_first(tmp_path: Path) -> None:
    class Broken(Fold):
        def apply_encoded(
            self, state: tuple[int, ...], payloads: Iterator[bytes]
        ) -> tuple[int, ...]:
            raise RuntimeError("broken hook")

    write_segment(tmp_path, [b"\x01", b"\x02"])
    with pytest.raises(ApplyFailed) as caught:
        recover(str(tmp_path), Broken())
    assert caught.value.lsn == 1
