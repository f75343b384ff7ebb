"""Journal records of the key-value machine, and their binary codecs.

Records are *intents*, not results: ``Increment(key, delta)`` rather than
"set key to 42". Their effect is computed by ``apply`` at the moment the record
is applied, which is log order, both live and in recovery (see
:mod:`corosm.apps.kv.machine` for why this matters under interleaving).

Record codec
------------
One tag byte, then fixed-size little-endian fields packed with :mod:`struct`,
then length-prefixed byte strings; the last byte string of a record runs to the
end and needs no prefix. The tag set *is* the version: a record whose layout
changes gets a new tag, and old tags stay decodable forever. Lengths are u32
(Redis's own bulk limit is 512 MiB). Any malformed input raises
:class:`~corosm.errors.DataError` saying which record and what was wrong.

Snapshot codec
--------------
``magic, version, count, then all key lengths and value lengths as one u32
array, then all keys, then all values, then a CRC32``. Building it is a few
C-level joins, and restoring it slices two blobs, so 10^6 keys take well under
a second either way; the CRC catches a snapshot truncated or damaged on disk.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Any, Final, final

from corosm.core.fields import Reduced, by_constructor
from corosm.errors import DataError


@final
@dataclass(frozen=True, slots=True, init=False)
class Put:
    """Store ``value`` under ``key``."""

    key: bytes
    value: bytes

    def __init__(self, key: bytes, value: bytes) -> None:
        # Built for every write; compiled, object.__setattr__ is the cheap way (corosm.core.fields).
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "value", value)

    def __reduce__(self) -> Reduced:
        return by_constructor(self)


@final
@dataclass(frozen=True, slots=True)
class PutMany:
    """Store every pair, in order (later pairs win): MSET, atomic as one record."""

    pairs: tuple[tuple[bytes, bytes], ...]

    def __reduce__(self) -> Reduced:
        return by_constructor(self)


@final
@dataclass(frozen=True, slots=True)
class PutIf:
    """Store ``value`` unless NX (key exists) or XX (key absent) says no."""

    key: bytes
    value: bytes
    nx: bool
    xx: bool

    def __reduce__(self) -> Reduced:
        return by_constructor(self)


@final
@dataclass(frozen=True, slots=True)
class Remove:
    """Remove ``keys``; the outcome counts those that existed."""

    keys: tuple[bytes, ...]

    def __reduce__(self) -> Reduced:
        return by_constructor(self)


@final
@dataclass(frozen=True, slots=True)
class Clear:
    """Remove every key."""

    def __reduce__(self) -> Reduced:
        return by_constructor(self)


@final
@dataclass(frozen=True, slots=True)
class Increment:
    """Add ``delta`` to the decimal integer at ``key``; a no-op if that is impossible."""

    key: bytes
    delta: int

    def __reduce__(self) -> Reduced:
        return by_constructor(self)


@final
@dataclass(frozen=True, slots=True)
class AppendTo:
    """Append ``value`` to the bytes at ``key``."""

    key: bytes
    value: bytes

    def __reduce__(self) -> Reduced:
        return by_constructor(self)


Record = Put | PutMany | PutIf | Remove | Clear | Increment | AppendTo

# -- integers stored as bytes --------------------------------------------------

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
_DIGITS: Final = frozenset(b"0123456789")


def parse_int64(data: bytes) -> int | None:
    """The int64 that ``data`` spells in canonical decimal, or None.

    Canonical is Redis's rule (``string2ll``): an optional ``-``, then digits,
    no ``+``, no spaces, no leading zeros, no ``-0``; so every stored integer
    has exactly one spelling and ``str(n).encode()`` round-trips.
    """
    if not 0 < len(data) <= 20:
        return None
    digits = data[1:] if data[0] == 0x2D else data  # '-'
    if not digits or not _DIGITS.issuperset(digits):
        return None
    if digits[0] == 0x30 and (len(digits) > 1 or digits is not data):  # '0'
        return None
    n = int(digits)
    if digits is not data:
        n = -n
    return n if INT64_MIN <= n <= INT64_MAX else None


# -- record codec ---------------------------------------------------------------

TAG_PUT: Final = 1
TAG_PUT_MANY: Final = 2
TAG_PUT_IF: Final = 3
TAG_REMOVE: Final = 4
TAG_CLEAR: Final = 5
TAG_INCREMENT: Final = 6
TAG_APPEND_TO: Final = 7

_HEAD: Final = struct.Struct("<BI")  # tag, length of the first byte string
_COUNT: Final = struct.Struct("<BI")  # tag, number of items
_LEN: Final = struct.Struct("<I")
_PAIR: Final = struct.Struct("<II")
_PUT_IF: Final = struct.Struct("<BBI")  # tag, flags (1 = nx, 2 = xx), key length
_INCREMENT: Final = struct.Struct("<BqI")  # tag, delta, key length
_CLEAR: Final = bytes([TAG_CLEAR])
_HEAD_SIZE: Final = _HEAD.size
_pack_head: Final = _HEAD.pack
_unpack_len: Final = _LEN.unpack_from

#: A Put's payload is its head (``unpack_put_head(payload)`` gives the tag and
#: the key's length), the key from ``PUT_KEY_AT`` on, then the value to the
#: end: what :func:`~corosm.apps.kv.state.apply_payloads` reads in place.
PUT_KEY_AT: Final = _HEAD_SIZE
unpack_put_head: Final[Callable[[bytes], tuple[int, int]]] = _HEAD.unpack_from


# One encoder and one decoder per record type, found through a table (by the
# record's type, by the tag byte): no chain of patterns to walk, so the record
# that dominates every log (Put) costs one dict lookup, like every other.


def _encode_put(record: Put) -> bytes:
    key = record.key
    return _pack_head(TAG_PUT, len(key)) + key + record.value


def _encode_append_to(record: AppendTo) -> bytes:
    key = record.key
    return _pack_head(TAG_APPEND_TO, len(key)) + key + record.value


def _encode_put_if(record: PutIf) -> bytes:
    key = record.key
    return _PUT_IF.pack(TAG_PUT_IF, record.nx | (record.xx << 1), len(key)) + key + record.value


def _encode_increment(record: Increment) -> bytes:
    return _INCREMENT.pack(TAG_INCREMENT, record.delta, len(record.key)) + record.key


def _encode_clear(record: Clear) -> bytes:
    return _CLEAR


def _encode_put_many(record: PutMany) -> bytes:
    parts = [_COUNT.pack(TAG_PUT_MANY, len(record.pairs))]
    for key, value in record.pairs:
        parts += (_PAIR.pack(len(key), len(value)), key, value)
    return b"".join(parts)


def _encode_remove(record: Remove) -> bytes:
    parts = [_COUNT.pack(TAG_REMOVE, len(record.keys))]
    for key in record.keys:
        parts += (_LEN.pack(len(key)), key)
    return b"".join(parts)


_ENCODERS: Final[dict[type, Callable[[Any], bytes]]] = {
    Put: _encode_put,
    AppendTo: _encode_append_to,
    PutIf: _encode_put_if,
    Increment: _encode_increment,
    Clear: _encode_clear,
    PutMany: _encode_put_many,
    Remove: _encode_remove,
}


def encode_record(record: object) -> bytes:
    """Serialise ``record``; inverse of :func:`decode_record` (DataError if not a Record)."""
    encode = _ENCODERS.get(type(record))
    if encode is None:
        raise DataError(f"not a key-value journal record: {record!r:.80}")
    return encode(record)


def decode_record(data: bytes | bytearray | memoryview) -> Record:
    """Parse one record; raise DataError naming what is wrong with it."""
    # From a memoryview or bytearray, a copy: the fields must be immutable bytes.
    raw = data if type(data) is bytes else bytes(data)
    try:
        return _DECODERS[raw[0]](raw)
    except IndexError:
        if raw:
            raise
        raise DataError("key-value record is empty; expected a tag byte") from None
    except struct.error as exc:
        raise DataError(f"key-value record is truncated ({len(raw)} bytes): {exc}") from None


def _decode_unknown(data: bytes) -> Record:
    raise DataError(
        f"unknown key-value record tag {data[0]}; expected 1..7 (record from a newer corosm?)"
    )


def _decode_put(data: bytes) -> Put:
    key = _take(data, _HEAD_SIZE, _unpack_len(data, 1)[0])
    return Put(key, data[_HEAD_SIZE + len(key) :])


def _decode_append_to(data: bytes) -> AppendTo:
    klen = _unpack_len(data, 1)[0]
    key = _take(data, _HEAD_SIZE, klen)
    return AppendTo(key, data[_HEAD_SIZE + klen :])


def _decode_put_if(data: bytes) -> PutIf:
    _, flags, klen = _PUT_IF.unpack_from(data)
    if flags not in (0, 1, 2):
        raise DataError(f"PutIf record has bad flags {flags}; expected 0, 1 (nx) or 2 (xx)")
    key = _take(data, _PUT_IF.size, klen)
    return PutIf(key, data[_PUT_IF.size + klen :], bool(flags & 1), bool(flags & 2))


def _decode_increment(data: bytes) -> Increment:
    _, delta, klen = _INCREMENT.unpack_from(data)
    key = _take(data, _INCREMENT.size, klen)
    _expect_end(data, _INCREMENT.size + klen, "Increment")
    return Increment(key, delta)


def _decode_clear(data: bytes) -> Clear:
    _expect_end(data, 1, "Clear")
    return Clear()


def _decode_put_many(data: bytes) -> PutMany:
    _, count = _COUNT.unpack_from(data)
    offset = _COUNT.size
    pairs = []
    for _ in range(count):
        klen, vlen = _PAIR.unpack_from(data, offset)
        offset += _PAIR.size
        key = _take(data, offset, klen)
        value = _take(data, offset + klen, vlen)
        offset += klen + vlen
        pairs.append((key, value))
    _expect_end(data, offset, "PutMany")
    return PutMany(tuple(pairs))


def _decode_remove(data: bytes) -> Remove:
    _, count = _COUNT.unpack_from(data)
    offset = _COUNT.size
    keys = []
    for _ in range(count):
        (klen,) = _LEN.unpack_from(data, offset)
        offset += _LEN.size
        keys.append(_take(data, offset, klen))
        offset += klen
    _expect_end(data, offset, "Remove")
    return Remove(tuple(keys))


_BY_TAG: Final[dict[int, Callable[[bytes], Record]]] = {
    TAG_PUT: _decode_put,
    TAG_APPEND_TO: _decode_append_to,
    TAG_PUT_IF: _decode_put_if,
    TAG_INCREMENT: _decode_increment,
    TAG_CLEAR: _decode_clear,
    TAG_PUT_MANY: _decode_put_many,
    TAG_REMOVE: _decode_remove,
}
# Indexed by the tag byte: one tuple subscript per record, no method call.
_DECODERS: Final[tuple[Callable[[bytes], Record], ...]] = tuple(
    _BY_TAG.get(tag, _decode_unknown) for tag in range(256)
)


def _take(data: bytes, offset: int, length: int) -> bytes:
    if offset + length > len(data):
        raise DataError(
            f"key-value record is truncated: a field of {length} bytes at offset {offset} "
            f"runs past its end ({len(data)} bytes)"
        )
    return data[offset : offset + length]


def _expect_end(data: bytes, offset: int, kind: str) -> None:
    if offset != len(data):
        raise DataError(f"{kind} record has {len(data) - offset} stray bytes after offset {offset}")


# -- snapshot codec ---------------------------------------------------------------

_MAGIC: Final = b"CKVS"
_SNAP_HEAD: Final = struct.Struct("<4sBQ")  # magic, version, count
_SNAP_VERSION: Final = 1
_CRC: Final = struct.Struct("<I")
# An array typecode with 4-byte items, stored little-endian on disk.
_U32: Final = next(code for code in "IL" if array(code).itemsize == 4)
_BIG_ENDIAN: Final = sys.byteorder == "big"


def encode_snapshot(data: dict[bytes, bytes]) -> bytes:
    """Serialise the whole key-value dict; inverse of :func:`decode_snapshot`."""
    keys = list(data)
    values = list(data.values())
    lengths = array(_U32, map(len, keys))
    lengths.extend(map(len, values))
    if _BIG_ENDIAN:
        lengths.byteswap()
    body = b"".join(
        (_SNAP_HEAD.pack(_MAGIC, _SNAP_VERSION, len(keys)), lengths.tobytes(), *keys, *values)
    )
    return body + _CRC.pack(zlib.crc32(body))


def decode_snapshot(blob: bytes) -> dict[bytes, bytes]:
    """Parse a snapshot; raise DataError if it is not one or is damaged."""
    view = memoryview(blob)
    if len(view) < _SNAP_HEAD.size + _CRC.size:
        raise DataError(f"key-value snapshot is too short ({len(view)} bytes) to have a header")
    magic, version, count = _SNAP_HEAD.unpack_from(view)
    if magic != _MAGIC or version != _SNAP_VERSION:
        raise DataError(
            f"not a key-value snapshot (magic {bytes(magic)!r} version {version}; "
            f"expected {_MAGIC!r} version {_SNAP_VERSION})"
        )
    (crc,) = _CRC.unpack_from(view, len(view) - _CRC.size)
    body = view[: len(view) - _CRC.size]
    if zlib.crc32(body) != crc:
        raise DataError("key-value snapshot fails its CRC32 check: the file is damaged")
    start = _SNAP_HEAD.size
    end = start + 8 * count
    if end > len(body):
        raise DataError(f"key-value snapshot claims {count} keys but is only {len(view)} bytes")
    lengths = array(_U32)
    lengths.frombytes(body[start:end])
    if _BIG_ENDIAN:
        lengths.byteswap()
    ends = list(accumulate(lengths, initial=end))
    if ends[-1] != len(body):
        raise DataError(f"key-value snapshot lengths add up to {ends[-1]}, not {len(body)} bytes")
    raw = bytes(body)
    fields = [raw[a:b] for a, b in pairwise(ends)]  # count keys, then count values
    return dict(zip(fields[:count], fields[count:], strict=True))
