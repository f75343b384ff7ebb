"""The key-value machine, shardable: its ``key()`` and its state split by key.

:class:`ShardableKV` is :class:`~corosm.apps.kv.machine.KVMachine` plus what
sharding needs, kept here so that the key-value app itself does not change:

- ``key(input)``: the key of a one-key input; ``Keys(...)`` for MGET,
  EXISTS, DEL and MSET (refused by the router when the keys fall on
  several shards); ``None`` for ``Reset`` and ``Size``, which would need
  every shard and are refused.
- ``state_items`` / ``state_from_items``: the :class:`~corosm.shards.reshard.Splittable`
  hooks, so ``python -m corosm.shards reshard`` can move keys between shard
  counts.

The policy stays ``INTERLEAVE``: the key routes inputs, it does not make
same-key inputs wait (the machine's intent records make that unnecessary).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from corosm.apps.kv.inputs import (
    AppendBytes,
    Delete,
    DeleteMany,
    Exists,
    IncrBy,
    Input,
    Read,
    ReadMany,
    SetIf,
    StrLen,
    Write,
    WriteMany,
)
from corosm.apps.kv.machine import KVMachine, KVState
from corosm.core.machine import Keys


class ShardableKV(KVMachine):
    """The key-value machine with a shard key (see the module docs)."""

    def key(self, input: Input) -> Keys | Hashable | None:
        match input:
            case Write() | Read() | Delete() | SetIf() | IncrBy() | AppendBytes() | StrLen():
                return input.key
            case ReadMany() | Exists() | DeleteMany():
                return Keys(*input.keys)
            case WriteMany():
                return Keys(*(key for key, _ in input.pairs))
        return None  # Reset, Size: every key

    def state_items(self, state: KVState) -> Iterable[tuple[Hashable, bytes]]:
        """Every key with its value: what moves between shards when re-sharding."""
        return state.data.items()

    def state_from_items(self, items: Iterable[tuple[Hashable, bytes]]) -> KVState:
        """A state holding exactly ``items`` (the keys re-sharding gave one shard)."""
        data: dict[bytes, bytes] = {}
        for key, value in items:
            assert type(key) is bytes
            data[key] = value
        return KVState(data)
