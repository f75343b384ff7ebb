"""On-disk format of the journal: file headers, record frames, snapshots, names.

Theory of operation
-------------------
Every file starts with a 16-byte header: an 8-byte magic that says what the
file is (journal segment or snapshot) and a u32 format version, then four
reserved zero bytes. A reader refuses a version it does not know with a clear
error instead of guessing.

A journal segment is the header followed by frames. A frame is a 20-byte
frame header and the payload::

    u32 length | u64 lsn | u32 payload_crc | u32 header_crc | payload

``header_crc`` covers the first 16 bytes, so a damaged length field is caught
before it is trusted (otherwise a flipped bit in a length in the middle of a
file would look like a torn tail and silently cut the log). ``payload_crc``
covers the payload. All integers are little-endian. LSNs start at 1 and grow
by one per record across segments.

A snapshot file is the header, ``u64 lsn | u64 length | u32 crc`` and the
payload; ``crc`` covers the 16 bytes before it and the payload. The state it
holds includes every record with an LSN <= ``lsn``.

CRC is ``zlib.crc32`` (stdlib, hardware-assisted on common builds): CRC32C
would be as good at detecting damage but needs a new dependency.
See ``docs/journal-format.md`` for the full description and version policy.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from corosm.errors import CorruptJournal, UsageError

JOURNAL_MAGIC = b"CSMJRNL\x00"
SNAPSHOT_MAGIC = b"CSMSNAP\x00"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

FILE_HEADER = struct.Struct("<8sII")
FRAME_HEADER = struct.Struct("<IQII")
_FRAME_HEAD16 = struct.Struct("<IQI")  # FRAME_HEADER without header_crc
_U32 = struct.Struct("<I")
SNAPSHOT_HEADER = struct.Struct("<QQI")
HEADER_SIZE = FILE_HEADER.size  # 16
FRAME_SIZE = FRAME_HEADER.size  # 20
MAX_RECORD_BYTES = (1 << 31) - 1
"""Largest payload a frame may carry (the length field is a u32; keep a bit spare)."""

_SEGMENT_RE = re.compile(r"^journal-(\d{20})\.log$")
_SNAPSHOT_RE = re.compile(r"^snapshot-(\d{20})\.snap$")
TEMP_SUFFIX = ".tmp"


def file_header(magic: bytes) -> bytes:
    """The 16-byte header that starts a file of the kind ``magic`` names."""
    return FILE_HEADER.pack(magic, FORMAT_VERSION, 0)


def check_header(path: str, data: bytes | memoryview, magic: bytes) -> None:
    """Raise :class:`CorruptJournal` unless ``data`` starts with a header we can read."""
    kind = "journal segment" if magic == JOURNAL_MAGIC else "snapshot"
    if len(data) < HEADER_SIZE:
        raise CorruptJournal(
            path, 0, f"file is {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header"
        )
    found, version, _reserved = FILE_HEADER.unpack_from(data, 0)
    if found != magic:
        raise CorruptJournal(
            path, 0, f"not a corosm {kind}: magic is {bytes(found)!r}, expected {magic!r}"
        )
    if version not in SUPPORTED_VERSIONS:
        raise CorruptJournal(
            path,
            8,
            f"{kind} format version {version} is not supported; this corosm reads "
            f"version(s) {', '.join(map(str, sorted(SUPPORTED_VERSIONS)))} "
            "(was the file written by a newer corosm?)",
        )


def encode_frames(payloads: Sequence[bytes], first_lsn: int) -> bytes:
    """Frame ``payloads`` as consecutive records starting at ``first_lsn``, in one buffer."""
    parts: list[bytes] = []
    add = parts.extend
    crc32 = zlib.crc32
    pack_head = _FRAME_HEAD16.pack  # the 16 bytes that header_crc covers
    pack_crc = _U32.pack
    lsn = first_lsn
    for payload in payloads:
        n = len(payload)
        if n > MAX_RECORD_BYTES:
            raise UsageError(
                f"journal record of {n} bytes is larger than the maximum {MAX_RECORD_BYTES}"
            )
        head = pack_head(n, lsn, crc32(payload))
        add((head, pack_crc(crc32(head)), payload))
        lsn += 1
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class FrameError:
    """Why the frame at ``offset`` could not be read, and whether that looks like a torn tail.

    ``torn`` is True when the damage is what a crash in the middle of the last
    write leaves behind: an incomplete frame that runs to the end of the file,
    a bad payload checksum on the frame that ends exactly at the end of the
    file, or nothing but zero bytes from ``offset`` on.
    """

    offset: int
    reason: str
    torn: bool


def classify_bad_frame(data: bytes, offset: int) -> FrameError:
    """Explain why the frame at ``offset`` of ``data`` is not valid (slow path, runs once)."""
    end = len(data)
    zeros = data.count(0, offset, end) == end - offset
    if end - offset < FRAME_SIZE:
        return FrameError(offset, f"incomplete frame header ({end - offset} bytes)", True)
    n, lsn, pcrc, hcrc = FRAME_HEADER.unpack_from(data, offset)
    if zlib.crc32(memoryview(data)[offset : offset + 16]) != hcrc:
        return FrameError(offset, "frame header checksum mismatch", zeros)
    if offset + FRAME_SIZE + n > end:
        return FrameError(
            offset,
            f"incomplete record: header says {n} payload bytes, "
            f"file has {end - offset - FRAME_SIZE}",
            True,
        )
    if zlib.crc32(memoryview(data)[offset + FRAME_SIZE : offset + FRAME_SIZE + n]) != pcrc:
        at_tail = offset + FRAME_SIZE + n == end
        return FrameError(offset, f"payload checksum mismatch (lsn {lsn})", at_tail or zeros)
    return FrameError(offset, "frame is valid", False)  # callers never get here


def segment_name(first_lsn: int) -> str:
    """File name of the segment whose first record has LSN ``first_lsn``."""
    return f"journal-{first_lsn:020d}.log"


def snapshot_name(lsn: int) -> str:
    """File name of the snapshot that covers records up to and including ``lsn``."""
    return f"snapshot-{lsn:020d}.snap"


def parse_segment_name(name: str) -> int | None:
    """The first LSN encoded in a segment file name, or None if ``name`` is not a segment."""
    m = _SEGMENT_RE.match(name)
    return int(m.group(1)) if m else None


def parse_snapshot_name(name: str) -> int | None:
    """The LSN encoded in a snapshot file name, or None if ``name`` is not a snapshot."""
    m = _SNAPSHOT_RE.match(name)
    return int(m.group(1)) if m else None


def encode_snapshot(lsn: int, payload: bytes) -> bytes:
    """The full contents of a snapshot file for ``payload`` taken at ``lsn``."""
    head = SNAPSHOT_HEADER.pack(lsn, len(payload), 0)[:16]
    crc = zlib.crc32(payload, zlib.crc32(head))
    return file_header(SNAPSHOT_MAGIC) + SNAPSHOT_HEADER.pack(lsn, len(payload), crc) + payload


def decode_snapshot(path: str, data: bytes) -> tuple[int, bytes]:
    """Check a snapshot file's contents and return ``(lsn, payload)``."""
    check_header(path, data, SNAPSHOT_MAGIC)
    if len(data) < HEADER_SIZE + SNAPSHOT_HEADER.size:
        raise CorruptJournal(path, HEADER_SIZE, "snapshot header is incomplete")
    lsn, n, crc = SNAPSHOT_HEADER.unpack_from(data, HEADER_SIZE)
    start = HEADER_SIZE + SNAPSHOT_HEADER.size
    if len(data) != start + n:
        raise CorruptJournal(
            path, start, f"snapshot says {n} payload bytes, file has {len(data) - start}"
        )
    payload = data[start:]
    if zlib.crc32(payload, zlib.crc32(data[HEADER_SIZE : HEADER_SIZE + 16])) != crc:
        raise CorruptJournal(path, HEADER_SIZE, "snapshot checksum mismatch")
    return lsn, payload
