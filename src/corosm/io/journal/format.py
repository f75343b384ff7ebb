"""On-disk format of the journal: file headers, record frames, snapshots, names.

Theory of operation
-------------------
Every file starts with a 16-byte header: an 8-byte magic that says what the
file is (journal segment or snapshot) and a u32 format version, then four
reserved bytes that must be zero. A reader refuses a version it does not know
with a clear error instead of guessing, and a non-zero reserved byte as damage.

A journal segment is the header followed by frames. A frame is a 20-byte
frame header and the payload::

    u32 length | u64 lsn | u32 payload_crc | u32 header_crc | payload

``header_crc`` covers the first 16 bytes, so a damaged length field is caught
before it is trusted (otherwise a flipped bit in a length in the middle of a
file would look like a torn tail and silently cut the log). ``payload_crc``
covers the payload. All integers are little-endian. LSNs start at 1 and grow
by one per record across segments.

Telling a torn tail from corruption: damage after which no valid frame
follows is what a crash in the middle of the last write leaves behind;
damage followed by a valid frame is not. :func:`find_frame` is the resync
scan that decides: the first header after the damage whose header CRC checks
and whose LSN fits where it was found. It looks for the LSN's fixed high
bytes with ``bytes.find`` (C speed), skips runs of zeros with ``memcmp``
and checks only the candidates in Python: over random bytes, text or zeros
it runs at ``memchr`` speed; binary full of small integers costs about a
microsecond per candidate. It runs at most once per recovery.

A snapshot file is the header, ``u64 lsn | u64 length | u32 crc`` and the
payload; ``crc`` covers the 16 bytes before it and the payload. The state it
holds includes every record with an LSN <= ``lsn``.

Reading is :func:`read_frames`, the replay loop: it checks both CRCs and the
LSN of every frame and leaves anything it does not accept to
:func:`classify_bad_frame`, which says why.

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
FRAME_HEAD16 = struct.Struct("<IQI")  # FRAME_HEADER without header_crc: length, lsn, payload_crc
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
SNAPSHOT_HEADER = struct.Struct("<QQI")
HEADER_SIZE = FILE_HEADER.size  # 16
FRAME_SIZE = FRAME_HEADER.size  # 20
MAX_RECORD_BYTES = (1 << 31) - 1
"""Largest payload a frame may carry (the length field is a u32; keep a bit spare)."""

CRC_RESIDUE = 0x2144DF1C
"""``crc32(m + u32le(crc32(m)))`` for every ``m``: a CRC property, used to check a frame header.

So ``crc32(frame[0:20]) == CRC_RESIDUE`` exactly when the header CRC checks
(for a given ``m`` only one 4-byte value gives the residue), without
unpacking the stored CRC into an int and comparing: one step less per frame
in the replay loop.
"""

_SEGMENT_RE = re.compile(r"^journal-(\d{20})\.log$")
_SNAPSHOT_RE = re.compile(r"^snapshot-(\d{20})\.snap$")
TEMP_SUFFIX = ".tmp"
DAMAGED_SUFFIX = ".damaged"
"""Appended to the name of a snapshot that failed its checks, once recovery went past it."""
_ZERO_BLOCK = bytes(1 << 16)


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
    found, version, reserved = FILE_HEADER.unpack_from(data, 0)
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
    if reserved:
        raise CorruptJournal(
            path, 12, f"reserved {kind} header bytes are {reserved:#010x}, must be zero"
        )


def encode_frames(payloads: Sequence[bytes], first_lsn: int) -> bytes:
    """Frame ``payloads`` as consecutive records starting at ``first_lsn``, in one buffer."""
    parts: list[bytes] = []
    add = parts.extend
    crc32 = zlib.crc32
    pack_head = FRAME_HEAD16.pack  # the 16 bytes that header_crc covers
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


def read_frames(data: bytes, pos: int, lsn: int, count: int, out: list[bytes]) -> int:
    """Append to ``out`` the payloads of up to ``count`` valid frames from ``pos`` on.

    The frame at ``pos`` should hold ``lsn``, the next ``lsn + 1``, and so on.
    Stops early at the end of ``data`` or at the first frame it does not
    take: its header or payload CRC does not check, its payload runs past
    the end, or its LSN is not the expected one (:func:`classify_bad_frame`
    explains a damaged frame, and returns None for one with another LSN).
    Returns the offset after the last frame taken; the frames taken hold
    ``lsn`` up to ``lsn + k - 1`` for the ``k`` payloads added.

    This loop is the restart time (about 10^6 records per minute of
    writes), so every step in it counts: names are bound to locals, the LSN
    comes from the ``for`` loop, and the header CRC is checked as a residue
    over the whole 20-byte header (no stored CRC to unpack and compare).
    """
    unpack = FRAME_HEAD16.unpack_from
    crc32 = zlib.crc32
    residue = CRC_RESIDUE
    add = out.append
    frame_size = FRAME_SIZE
    end = len(data)
    try:
        for expected in range(lsn, lsn + count):
            n, flsn, pcrc = unpack(data, pos)
            start = pos + frame_size
            stop = start + n
            if crc32(data[pos:start]) != residue or stop > end or flsn != expected:
                break
            payload = data[start:stop]
            if crc32(payload) != pcrc:
                break
            add(payload)
            pos = stop
    except struct.error:  # no whole frame header at pos: the end of data, or a torn tail
        pass
    return pos


def frame_offset(data: bytes, pos: int, index: int) -> int:
    """Where the frame ``index`` frames after the one at ``pos`` starts (frames already read)."""
    for _ in range(index):
        pos += FRAME_SIZE + _U32.unpack_from(data, pos)[0]
    return pos


@dataclass(frozen=True, slots=True)
class FrameError:
    """Why the frame at ``offset`` could not be read, and whether that looks like a torn tail.

    ``torn`` is True when no valid frame follows ``offset`` in the file (see
    :func:`find_frame`): in the last segment, that is what a crash in the
    middle of the last write leaves behind, whatever the damaged bytes are.
    """

    offset: int
    reason: str
    torn: bool


def find_frame(data: bytes, start: int, *, origin: int, lsn: int) -> tuple[int, int] | None:
    """``(offset, lsn)`` of the first plausible frame header at or after ``start``, or None.

    The frame that should be at ``origin`` has LSN ``lsn``. A header found at
    ``p`` is plausible when its header CRC checks and its LSN is one that could
    sit there: at least ``lsn`` and at most ``lsn + (p - origin) // FRAME_SIZE``
    (every frame in between takes at least ``FRAME_SIZE`` bytes). That rules
    out stale frames of older LSNs in reused disk blocks. Only the header is
    checked: a header that checks is proof that a writer put a frame there.
    """
    end = len(data)
    last = end - FRAME_SIZE  # the last offset a whole header fits at
    if start > last:
        return None
    top = min(lsn + (end - origin) // FRAME_SIZE, (1 << 64) - 1)
    low_b, top_b = _U64.pack(lsn), _U64.pack(top)
    fixed = 8  # every plausible LSN ends (little-endian) with low_b[fixed:]
    while fixed > 0 and low_b[fixed - 1] == top_b[fixed - 1]:
        fixed -= 1
    literal = low_b[fixed:]
    shift = 4 + fixed  # where the literal sits in a frame header
    unpack, crc32 = FRAME_HEADER.unpack_from, zlib.crc32
    pos = start
    while pos <= last:
        if literal:
            hit = data.find(literal, pos + shift, last + 12)
            if hit < 0:
                return None
            pos = hit - shift
        _n, flsn, _pcrc, hcrc = unpack(data, pos)
        if (
            lsn <= flsn <= lsn + (pos - origin) // FRAME_SIZE
            and crc32(data[pos : pos + 16]) == hcrc
        ):
            return pos, flsn
        if flsn == 0:  # zeros (preallocated or never written): skip the run in C
            nonzero = _skip_zeros(data, pos + 12, last + 12)
            # a plausible LSN has a non-zero byte, so no header starts before this
            pos = nonzero - 11
        else:
            pos += 1
    return None


def _skip_zeros(data: bytes, pos: int, stop: int) -> int:
    """The offset of the first non-zero byte in ``data[pos:stop]``, or ``stop``."""
    head = data[pos : min(pos + 64, stop)]  # short runs: one small slice
    rest = len(head.lstrip(b"\x00"))
    if rest:
        return pos + len(head) - rest
    pos += len(head)
    block = len(_ZERO_BLOCK)
    while pos + block <= stop and data.startswith(_ZERO_BLOCK, pos):  # memcmp, no copy
        pos += block
    tail = data[pos : min(pos + block, stop)]
    return pos + len(tail) - len(tail.lstrip(b"\x00"))


def classify_bad_frame(data: bytes, offset: int, lsn: int) -> FrameError | None:
    """Explain why the frame at ``offset`` (which should hold ``lsn``) is not valid.

    Slow path, runs once per recovery at most. The frame is torn when no
    plausible frame follows it (:func:`find_frame`); when its own header
    checks, its length is trusted and the search starts after its payload.
    None when both CRCs of the frame check (whatever its LSN).
    """
    end = len(data)
    if end - offset < FRAME_SIZE:
        return FrameError(offset, f"incomplete frame header ({end - offset} bytes)", True)
    n, flsn, pcrc, hcrc = FRAME_HEADER.unpack_from(data, offset)
    view = memoryview(data)
    if zlib.crc32(view[offset : offset + 16]) != hcrc:
        reason, resume = "frame header checksum mismatch", offset + 1
    elif offset + FRAME_SIZE + n > end:
        reason = (
            f"incomplete record: header says {n} payload bytes, "
            f"file has {end - offset - FRAME_SIZE}"
        )
        resume = end
    elif zlib.crc32(view[offset + FRAME_SIZE : offset + FRAME_SIZE + n]) != pcrc:
        reason, resume = f"payload checksum mismatch (lsn {flsn})", offset + FRAME_SIZE + n
    else:
        return None
    found = find_frame(data, resume, origin=offset, lsn=lsn)
    if found is None:
        return FrameError(offset, reason, True)
    at, next_lsn = found
    return FrameError(
        offset, f"{reason}; a valid record (lsn {next_lsn}) follows at byte {at}", False
    )


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
