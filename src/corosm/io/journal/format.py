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
by one per record across segments. Version 2 says which batch (one write,
one sync) each frame belongs to: the top bit of ``length`` (:data:`BATCH_END`)
marks the last frame of a batch (the payload length is the other 31 bits),
and the top 16 bits of ``lsn`` hold the frame's index in its batch, capped
at 65535 (:data:`LSN_MASK` keeps the 48 bits of the LSN itself). Version 1
sets neither.

Telling a torn tail from corruption: damage after which no valid frame
follows is what a crash in the middle of the last write leaves behind;
damage followed by a valid frame is not, unless (version 2) the damage lies
inside one batch and every valid frame after it belongs to that batch, which
is then the last one: a crash during that batch's sync may keep a later page
of it and lose an earlier one where the segment was written over zeros
reserved ahead (see :mod:`~corosm.io.journal.files`), and a batch is written
only once the one before it is synced. The first valid frame after the
damage says where its batch began (its LSN minus its index), so damage that
reaches back into an earlier batch is told apart. :func:`find_frame` is the
resync scan that decides: the first header after the damage whose header CRC
checks and whose LSN fits where it was found. It looks for the LSN's fixed
high bytes with ``bytes.find`` (C speed), skips runs of zeros with
``memcmp`` and checks only the candidates in Python: over random bytes, text
or zeros it runs at ``memchr`` speed; binary full of small integers costs
about a microsecond per candidate. It runs at most a few times per recovery.

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
from typing import Final

from corosm.errors import CorruptJournal, UsageError

JOURNAL_MAGIC: Final = b"CSMJRNL\x00"
SNAPSHOT_MAGIC: Final = b"CSMSNAP\x00"
FORMAT_VERSION: Final = 2
SUPPORTED_VERSIONS: Final = frozenset({1, 2})
BATCHES_MARKED: Final = 2
"""The first version whose frames mark the end of each batch (:data:`BATCH_END`)."""

FILE_HEADER: Final = struct.Struct("<8sII")
FRAME_HEADER: Final = struct.Struct("<IQII")
# FRAME_HEADER without header_crc: length, lsn, payload_crc
FRAME_HEAD16: Final = struct.Struct("<IQI")
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")
SNAPSHOT_HEADER: Final = struct.Struct("<QQI")
HEADER_SIZE: Final = FILE_HEADER.size  # 16
FRAME_SIZE: Final = FRAME_HEADER.size  # 20
MAX_RECORD_BYTES: Final = (1 << 31) - 1
"""Largest payload a frame may carry: the length field's low 31 bits."""
BATCH_END: Final = 1 << 31
"""Set in the length field of the last frame of a batch (version 2)."""
_INDEX_SHIFT: Final = 48  # where a frame's index in its batch sits in the lsn field (version 2)
_INDEX_MAX: Final = 0xFFFF  # an index from here on is written as this: "this or more"
LSN_MASK: Final = (1 << _INDEX_SHIFT) - 1
"""The LSN in a frame's ``lsn`` field, and the largest LSN (version 2 keeps the top 16 bits)."""
_LSN_AT: Final = _U32.size  # where the lsn field starts in a frame header (after the length)
_LSN_BYTES: Final = _INDEX_SHIFT // 8  # the low bytes of the lsn field that hold the LSN
_INDEX_ONE: Final = 1 << _INDEX_SHIFT
_NEXT_FRAME: Final = _INDEX_ONE + 1  # from one frame's lsn field to the next's, below the cap

CRC_RESIDUE: Final = 0x2144DF1C
"""``crc32(m + u32le(crc32(m)))`` for every ``m``: a CRC property, used to check a frame header.

So ``crc32(frame[0:20]) == CRC_RESIDUE`` exactly when the header CRC checks
(for a given ``m`` only one 4-byte value gives the residue), without
unpacking the stored CRC into an int and comparing: one step less per frame
in the replay loop.
"""

# Matched whole (fullmatch): "$" would also match before a trailing newline, and
# "\d" any Unicode digit, so that a stray "journal-<LSN>.log\n" was read as a segment.
_SEGMENT_RE: Final = re.compile(r"journal-([0-9]{20})\.log")
_SNAPSHOT_RE: Final = re.compile(r"snapshot-([0-9]{20})\.snap")
TEMP_SUFFIX: Final = ".tmp"
DAMAGED_SUFFIX: Final = ".damaged"
"""Appended to the name of a snapshot that failed its checks, once recovery went past it."""
_ZERO_BLOCK: Final = bytes(1 << 16)


def file_header(magic: bytes) -> bytes:
    """The 16-byte header that starts a file of the kind ``magic`` names."""
    return FILE_HEADER.pack(magic, FORMAT_VERSION, 0)


def check_header(path: str, data: bytes | memoryview, magic: bytes) -> int:
    """The format version of ``data``'s header; :class:`CorruptJournal` unless we can read it."""
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
    return int(version)


def encode_frames(payloads: Sequence[bytes], first_lsn: int) -> bytes:
    """Frame ``payloads`` as one batch of records from ``first_lsn`` on, in one buffer.

    Each frame carries its index in the batch and the last one
    :data:`BATCH_END` (format version 2): the buffer is meant to be written
    with one write and synced before the next batch is written.
    """
    last = len(payloads) - 1
    if first_lsn + last > LSN_MASK:
        raise UsageError(f"journal LSNs end at {LSN_MASK}; this batch would go past it")
    parts: list[bytes] = []
    crc32 = zlib.crc32
    pack_head = FRAME_HEAD16.pack  # the 16 bytes that header_crc covers
    pack_crc = _U32.pack
    field = first_lsn  # the lsn field: the LSN, and the frame's index in the batch above it
    for i, payload in enumerate(payloads):
        n = len(payload)
        if n > MAX_RECORD_BYTES:
            raise UsageError(
                f"journal record of {n} bytes is larger than the maximum {MAX_RECORD_BYTES}"
            )
        head = pack_head(n | BATCH_END if i == last else n, field, crc32(payload))
        parts.append(head)
        parts.append(pack_crc(crc32(head)))
        parts.append(payload)
        field += _NEXT_FRAME if i < _INDEX_MAX else 1
    return b"".join(parts)


def check_records(entries: Sequence[tuple[object, object]]) -> None:
    """Raise :class:`UsageError` unless every ``(token, payload)`` holds a record the log takes.

    A record is ``bytes`` of at most :data:`MAX_RECORD_BYTES`. The journals
    call this in the appender's thread, before anything is queued, so that
    the journal thread never meets a record it cannot frame.
    """
    for entry in entries:
        payload = entry[1]
        if type(payload) is not bytes:
            raise UsageError(f"a journal record is bytes, not {type(payload).__name__}")
        if len(payload) > MAX_RECORD_BYTES:
            raise UsageError(f"journal record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")


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
    mask = MAX_RECORD_BYTES  # the length without the batch mark
    lsn_mask = LSN_MASK  # the LSN without the index in the batch
    add = out.append
    frame_size = FRAME_SIZE
    end = len(data)
    n: int  # typed, so that the compiled loop masks them as machine integers
    flsn: int
    try:
        for expected in range(lsn, lsn + count):
            n, flsn, pcrc = unpack(data, pos)
            start = pos + frame_size
            stop = start + (n & mask)
            if crc32(data[pos:start]) != residue or stop > end or flsn & lsn_mask != expected:
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
        pos += FRAME_SIZE + (_U32.unpack_from(data, pos)[0] & MAX_RECORD_BYTES)
    return pos


def ends_batch(data: bytes, pos: int) -> bool:
    """Whether the frame at ``pos`` (already read) carries :data:`BATCH_END`."""
    return bool(_U32.unpack_from(data, pos)[0] & BATCH_END)


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
    top = min(lsn + (end - origin) // FRAME_SIZE, LSN_MASK)
    low_b, top_b = _U64.pack(lsn), _U64.pack(top)
    # every plausible LSN's bytes end (little-endian) with low_b[fixed:_LSN_BYTES]
    fixed = _LSN_BYTES
    while fixed > 0 and low_b[fixed - 1] == top_b[fixed - 1]:
        fixed -= 1
    literal = low_b[fixed:_LSN_BYTES]  # the bytes above hold an index (version 2)
    shift = _LSN_AT + fixed  # where the literal sits in a frame header
    unpack, crc32 = FRAME_HEADER.unpack_from, zlib.crc32
    pos = start
    while pos <= last:
        if literal:
            hit = data.find(literal, pos + shift, last + _LSN_AT + _LSN_BYTES)
            if hit < 0:
                return None
            pos = hit - shift
        _n, field, _pcrc, hcrc = unpack(data, pos)
        flsn = field & LSN_MASK
        if (
            lsn <= flsn <= lsn + (pos - origin) // FRAME_SIZE
            and crc32(data[pos : pos + 16]) == hcrc
        ):
            return pos, flsn
        if field == 0:  # zeros (preallocated or never written): skip the run in C
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


def is_padding(data: bytes, offset: int) -> bool:
    """True when ``data`` holds only zero bytes from ``offset`` to its end.

    A segment written into reserved space (:mod:`~corosm.io.journal.files`)
    that was not closed ends so: zeros after its last record, which mark
    the end of the log, not damage (20 zero bytes are never a valid frame
    header: the CRC of 16 zero bytes is not zero).
    """
    return _skip_zeros(data, offset, len(data)) == len(data)


def classify_bad_frame(
    data: bytes, offset: int, lsn: int, *, batches: bool = False
) -> FrameError | None:
    """Explain why the frame at ``offset`` (which should hold ``lsn``) is not valid.

    Slow path, runs once per recovery at most. The frame is torn when no
    plausible frame follows it (:func:`find_frame`); when its own header
    checks, its length is trusted and the search starts after its payload.
    With ``batches`` (a segment of format version 2 on, whose frames say
    which batch they belong to) it is torn too when the first valid frame
    after it is of the batch that holds ``lsn`` and so is every later one:
    what a crash during the last batch's sync can leave (see the module
    docs). None when both CRCs of the frame check (whatever its LSN).
    """
    damage = _damage(data, offset)
    if damage is None:
        return None
    reason, resume = damage
    found = find_frame(data, resume, origin=offset, lsn=lsn)
    if found is None:
        return FrameError(offset, reason, True)
    at, next_lsn = found
    if batches:
        first = _batch_start(data, at)
        if first is not None and first <= lsn:  # the damage is inside that frame's batch
            other = _other_batch(data, at, next_lsn, first)
            if other is None:
                return FrameError(
                    offset,
                    f"{reason}; the valid records after it (lsn {next_lsn} on, from byte "
                    f"{at}) are of its own batch, the last, which began at lsn {first}: "
                    "a crash during that batch's sync",
                    True,
                )
            at, next_lsn = other
    return FrameError(
        offset, f"{reason}; a valid record (lsn {next_lsn}) follows at byte {at}", False
    )


def _damage(data: bytes, offset: int) -> tuple[str, int] | None:
    """Why the frame at ``offset`` is not valid and where to look for the next one; None if it is.

    When the frame's header checks, its length is trusted: the search
    resumes after its payload (a payload may hold bytes that look like a
    frame). Its LSN is not looked at.
    """
    end = len(data)
    if end - offset < FRAME_SIZE:
        return f"incomplete frame header ({end - offset} bytes)", end
    length, field, pcrc, hcrc = FRAME_HEADER.unpack_from(data, offset)
    n = length & MAX_RECORD_BYTES
    view = memoryview(data)
    if zlib.crc32(view[offset : offset + 16]) != hcrc:
        return "frame header checksum mismatch", offset + 1
    if offset + FRAME_SIZE + n > end:
        have = end - offset - FRAME_SIZE
        return f"incomplete record: header says {n} payload bytes, file has {have}", end
    if zlib.crc32(view[offset + FRAME_SIZE : offset + FRAME_SIZE + n]) != pcrc:
        return f"payload checksum mismatch (lsn {field & LSN_MASK})", offset + FRAME_SIZE + n
    return None


def _batch_start(data: bytes, pos: int) -> int | None:
    """The LSN that began the batch of the frame at ``pos`` (version 2); None if not known.

    The frame's index in its batch is capped at 65535: from there on the
    start is not known.
    """
    field = FRAME_HEAD16.unpack_from(data, pos)[1]
    index = field >> _INDEX_SHIFT
    return None if index == _INDEX_MAX else (field & LSN_MASK) - index


def _other_batch(data: bytes, pos: int, lsn: int, first: int) -> tuple[int, int] | None:
    """``(offset, lsn)`` of the first valid frame from ``pos`` on not in the batch ``first``.

    The frame at ``pos`` holds ``lsn`` (a header :func:`find_frame` found).
    Walks the valid frames from there, across further damage (resyncing
    with :func:`find_frame`), and returns the first one whose batch did not
    begin at LSN ``first``: one of a later batch. None when there is none.
    """
    while True:
        damage = _damage(data, pos)
        if damage is None and FRAME_HEAD16.unpack_from(data, pos)[1] & LSN_MASK == lsn:
            if _batch_start(data, pos) != first:
                return pos, lsn
            pos = frame_offset(data, pos, 1)
            lsn += 1
            continue
        resume = damage[1] if damage is not None else pos + 1
        found = find_frame(data, resume, origin=pos, lsn=lsn)
        if found is None:
            return None
        pos, lsn = found


def segment_name(first_lsn: int) -> str:
    """File name of the segment whose first record has LSN ``first_lsn``."""
    return f"journal-{first_lsn:020d}.log"


def snapshot_name(lsn: int) -> str:
    """File name of the snapshot that covers records up to and including ``lsn``."""
    return f"snapshot-{lsn:020d}.snap"


def parse_segment_name(name: str) -> int | None:
    """The first LSN encoded in a segment file name, or None if ``name`` is not a segment."""
    m = _SEGMENT_RE.fullmatch(name)
    return int(m.group(1)) if m else None


def parse_snapshot_name(name: str) -> int | None:
    """The LSN encoded in a snapshot file name, or None if ``name`` is not a snapshot."""
    m = _SNAPSHOT_RE.fullmatch(name)
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
