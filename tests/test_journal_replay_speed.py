"""The tuned replay loop against a plain reading of the format, and the shortcuts it takes.

``recovery._replay`` is written for speed (the header CRC checked as a
residue, the applied count worked out from LSNs); these tests hold it to a
straightforward per-frame reading of ``docs/journal-format.md`` on intact and
damaged segments, with fixed seeds so a failure repeats. No timing here:
numbers come from ``bench/profile_replay.py`` and ``corosm bench``.
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corosm.io.journal import recovery
from corosm.io.journal.format import (
    CRC_RESIDUE,
    FRAME_HEADER,
    FRAME_SIZE,
    HEADER_SIZE,
    JOURNAL_MAGIC,
    LSN_MASK,
    MAX_RECORD_BYTES,
    encode_frames,
    file_header,
)
from corosm.io.journal.recovery import _replay
from journal_helpers import ListMachine


@dataclass
class Reference:
    """What a plain per-frame reader makes of a segment."""

    applied: list[bytes]
    pos: int
    lsn: int
    outcome: str  # "end", "bad frame" or "lsn mismatch"


def reference_replay(data: bytes, lsn: int, skip_upto: int) -> Reference:
    """Every check of the format, one frame at a time, spelled out."""
    applied: list[bytes] = []
    pos = HEADER_SIZE
    while pos < len(data):
        if len(data) - pos < FRAME_SIZE:
            return Reference(applied, pos, lsn, "bad frame")
        length, flsn, pcrc, hcrc = FRAME_HEADER.unpack_from(data, pos)
        n = length & MAX_RECORD_BYTES  # the top bit marks a batch's last frame
        if zlib.crc32(data[pos : pos + 16]) != hcrc:
            return Reference(applied, pos, lsn, "bad frame")
        payload = data[pos + FRAME_SIZE : pos + FRAME_SIZE + n]
        if len(payload) != n or zlib.crc32(payload) != pcrc:
            return Reference(applied, pos, lsn, "bad frame")
        flsn &= LSN_MASK  # the top 16 bits hold the frame's index in its batch
        if flsn != lsn:
            return Reference(applied, pos, lsn, "lsn mismatch")
        if flsn > skip_upto:
            applied.append(payload)
        lsn += 1
        pos += FRAME_SIZE + n
    return Reference(applied, pos, lsn, "end")


def check_against_reference(data: bytes, first: int = 1, skip_upto: int = 0) -> None:
    want = reference_replay(data, first, skip_upto)
    state: list[bytes] = []
    scan = _replay(
        data,
        lsn=first,
        skip_upto=skip_upto,
        state=state,
        machine=ListMachine(),
        path="seg",
        batches=True,
    )
    assert state == want.applied
    assert (scan.pos, scan.lsn, scan.applied) == (want.pos, want.lsn, len(want.applied))
    if want.outcome == "end":
        assert scan.error is None
    else:
        assert scan.error is not None and scan.error.offset == want.pos
        if want.outcome == "lsn mismatch":
            assert not scan.error.torn and "expected" in scan.error.reason


def segment(rng: random.Random, count: int, first: int = 1) -> bytes:
    payloads = [rng.randbytes(rng.randrange(0, 40)) for _ in range(count)]
    return file_header(JOURNAL_MAGIC) + encode_frames(payloads, first)


@given(st.binary(min_size=0, max_size=64))
def test_crc_residue_holds_for_any_header(head: bytes) -> None:
    good = head + struct.pack("<I", zlib.crc32(head))
    assert zlib.crc32(good) == CRC_RESIDUE
    bad = head + struct.pack("<I", zlib.crc32(head) ^ 1)
    assert zlib.crc32(bad) != CRC_RESIDUE


@pytest.mark.parametrize("skip_upto", [0, 1, 7, 30, 99])
def test_intact_segment_replays_like_the_reference(skip_upto: int) -> None:
    data = segment(random.Random(1), 30, first=5)
    check_against_reference(data, first=5, skip_upto=skip_upto)


@pytest.mark.parametrize("seed", range(40))
def test_damaged_segment_stops_where_the_reference_stops(seed: int) -> None:
    rng = random.Random(seed)
    data = bytearray(segment(rng, 25))
    match seed % 4:
        case 0:  # a flipped bit anywhere after the file header
            at = rng.randrange(HEADER_SIZE, len(data))
            data[at] ^= 1 << rng.randrange(8)
        case 1:  # cut anywhere: a torn tail
            del data[rng.randrange(HEADER_SIZE, len(data)) :]
        case 2:  # random bytes over a stretch
            at = rng.randrange(HEADER_SIZE, len(data))
            data[at : at + 8] = rng.randbytes(8)
        case _:  # garbage appended after the last frame
            data += rng.randbytes(rng.randrange(1, 30))
    check_against_reference(bytes(data))


def test_lsn_gap_inside_a_segment_counts_the_records_before_it() -> None:
    head = file_header(JOURNAL_MAGIC)
    data = head + encode_frames([b"a", b"b", b"c"], 1) + encode_frames([b"e"], 5)
    check_against_reference(data)
    scan = _replay(
        data, lsn=1, skip_upto=0, state=[], machine=ListMachine(), path="seg", batches=True
    )
    assert scan.applied == 3 and scan.error is not None and not scan.error.torn


def test_segment_that_ends_inside_a_frame_header_is_a_bad_frame() -> None:
    data = segment(random.Random(2), 4)
    for cut in range(1, FRAME_SIZE):
        check_against_reference(data + data[HEADER_SIZE : HEADER_SIZE + cut])


# _replay reads and applies CHUNK frames at a time: small chunks put chunk
# boundaries everywhere, next to skipped records, damage and LSN gaps.
@pytest.mark.parametrize("chunk", [1, 2, 7])
@pytest.mark.parametrize("skip_upto", [0, 1, 6, 7, 8, 30, 99])
def test_small_chunks_replay_like_the_reference(
    monkeypatch: pytest.MonkeyPatch, chunk: int, skip_upto: int
) -> None:
    monkeypatch.setattr(recovery, "_CHUNK", chunk)
    check_against_reference(segment(random.Random(3), 30, first=5), first=5, skip_upto=skip_upto)


@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("seed", range(12))
def test_small_chunks_stop_where_the_reference_stops(
    monkeypatch: pytest.MonkeyPatch, chunk: int, seed: int
) -> None:
    monkeypatch.setattr(recovery, "_CHUNK", chunk)
    rng = random.Random(seed)
    data = bytearray(segment(rng, 20))
    at = rng.randrange(HEADER_SIZE, len(data))
    data[at] ^= 1 << rng.randrange(8)
    check_against_reference(bytes(data), skip_upto=rng.randrange(0, 12))
    gap = segment(rng, 6) + encode_frames([b"x"], 9)  # lsn 9 where 7 belongs
    check_against_reference(gap)
