"""Helpers shared by the sharding tests: keys that land on a chosen shard, a damaged journal."""

from __future__ import annotations

from pathlib import Path

from corosm.io.journal.format import HEADER_SIZE
from corosm.shards import shard_of


def keys_on(shard: int, shards: int, count: int) -> list[bytes]:
    """``count`` distinct keys ``k<i>`` that live on ``shard`` of ``shards``."""
    found = []
    i = 0
    while len(found) < count:
        key = f"k{i}".encode()
        if shard_of(key, shards) == shard:
            found.append(key)
        i += 1
    return found


def corrupt_first_record(directory: str) -> None:
    """Flip a byte inside the first record of the first segment (valid records follow)."""
    segment = sorted(Path(directory).glob("journal-*.log"))[0]
    data = bytearray(segment.read_bytes())
    data[HEADER_SIZE + 30] ^= 0xFF
    segment.write_bytes(bytes(data))
