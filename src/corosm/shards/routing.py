"""Which shard an input goes to: a stable hash of its key, mod the shard count.

Theory of operation
-------------------
A sharded machine runs as N hosts, each with its own journal. An input goes
to the shard of its key (``Machine.key``); an input that names several keys
(``Keys(k1, k2)``) goes where they all are, and is refused when they are not
on one shard (:class:`CrossShardInput`) or when it names none
(:class:`UnkeyedInput`: it would need every shard).

The hash must give the same shard in every process and after every restart,
so Python's ``hash()`` (salted per process for str and bytes) will not do.
The function, exactly (its name, :data:`HASH_NAME`, is kept in the data
directory's manifest)::

    shard = int.from_bytes(blake2b(encode_key(key), digest_size=8).digest(), "big") % N

where ``encode_key`` is a canonical byte encoding in which keys that are
equal in Python encode equally:

============  ==========================================================
key           encoding
============  ==========================================================
``bytes``     ``b"b"`` + length (4 bytes, big-endian) + the bytes
``str``       ``b"s"`` + length + its UTF-8 bytes (lone surrogates kept)
``int``       ``b"i"`` + length + two's complement, big-endian, in
              ``n.bit_length() // 8 + 1`` bytes; ``bool`` is the int 0 or 1
``tuple``     ``b"t"`` + element count (4 bytes) + each element encoded
============  ==========================================================

Subclasses (``IntEnum``, ``StrEnum``) encode as their base value, as they
compare. Anything else (float, None, frozenset, an object) is refused with
:class:`UnshardableKey`: its equality is too loose or its bytes unstable.

Nothing here imports Ray or touches files: the router runs in every caller.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

from corosm.core.machine import Keys, Machine
from corosm.errors import CorosmError, HandlerError, UsageError
from corosm.shards.errors import CrossShardInput, UnkeyedInput, UnshardableKey

I = TypeVar("I")

#: The name of the hash function above, as the manifest records it.
HASH_NAME = "blake2b-64/corosm-key-v1"


def encode_key(key: Hashable) -> bytes:
    """The canonical bytes of ``key`` (table in the module docs)."""
    if type(key) is bytes:  # the key-value machine's keys: the common case first
        return b"b" + len(key).to_bytes(4, "big") + key
    out = bytearray()
    _encode(key, out)
    return bytes(out)


def _encode(key: object, out: bytearray) -> None:
    if isinstance(key, int):  # bool included: True == 1, so it must hash as 1
        n = int(key)
        data = n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True)
        tag = b"i"
    elif isinstance(key, str):
        data = str.encode(key, "utf-8", "surrogatepass")
        tag = b"s"
    elif isinstance(key, bytes):
        data = bytes(key)
        tag = b"b"
    elif isinstance(key, tuple):
        out += b"t" + len(key).to_bytes(4, "big")
        for item in key:
            _encode(item, out)
        return
    else:
        raise UnshardableKey(
            f"cannot shard on the key {key!r:.60} of type {type(key).__name__}: a shard key "
            "must be bytes, str, int or a tuple of those (so that every process hashes it alike)"
        )
    out += tag + len(data).to_bytes(4, "big") + data


def stable_hash(key: Hashable) -> int:
    """The 64-bit stable hash of ``key``: blake2b with an 8-byte digest of its encoding."""
    digest = hashlib.blake2b(encode_key(key), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_of(key: Hashable, shards: int) -> int:
    """The shard, in ``range(shards)``, that holds ``key``."""
    return stable_hash(key) % check_shard_count(shards)


def check_shard_count(shards: object) -> int:
    """``shards`` if it is a shard count (a positive int), else a :class:`UsageError`.

    The one check of a count given by a caller; a count read from a file is
    checked through it too (:mod:`.manifest`), and reported as bad data.
    """
    if type(shards) is not int or shards < 1:
        raise UsageError(
            f"the shard count must be a positive int, not {shards!r} ({type(shards).__name__})"
        )
    return shards


def check_machine(machine: object) -> Machine[Any, Any, Any]:
    """``machine`` if it is a corosm :class:`Machine` instance, else a :class:`UsageError`."""
    if not isinstance(machine, Machine):
        what = "the class itself" if isinstance(machine, type) else type(machine).__name__
        raise UsageError(
            f"machine must be an instance of a corosm Machine subclass, not {machine!r:.60} "
            f"({what})"
        )
    return machine


def keys_of(machine: Machine[Any, I, Any], input: I) -> tuple[Hashable, ...]:
    """The keys ``input`` touches: ``()`` for none, several for a ``Keys``."""
    key = machine.key(input)
    if key is None:
        return ()
    if type(key) is Keys:
        return tuple(key)
    return (key,)


def has_key_function(machine: Machine[Any, Any, Any]) -> bool:
    """Whether the machine's class defines ``key()`` (the base class only raises)."""
    return type(machine).key is not Machine.key


class Router(Generic[I]):
    """Routes inputs of ``machine`` over ``shards`` shards (see the module docs)."""

    def __init__(self, machine: Machine[Any, I, Any], shards: int) -> None:
        if not has_key_function(check_machine(machine)):
            raise UsageError(
                f"{type(machine).__name__} defines no key(): a machine runs as shards only "
                "when key(input) names what each input touches"
            )
        self.machine = machine
        self.shards = check_shard_count(shards)

    def shard_for(self, input: I) -> int:
        """The one shard ``input`` belongs to; raises a :class:`ShardingError` otherwise.

        A ``key()`` that raises fails the input as it does on one host: a
        corosm error as it is, any other as a :class:`~corosm.errors.HandlerError`
        naming it, the cause chained.
        """
        try:
            keys = keys_of(self.machine, input)
        except CorosmError:
            raise
        except Exception as exc:
            name = type(self.machine).__name__
            raise HandlerError(f"{name}.key() raised {type(exc).__name__}: {exc}") from exc
        if not keys:
            raise UnkeyedInput(
                f"{input!r:.80} has no key (key() returned None): it would need every "
                f"shard of {self.shards}, and a sharded machine runs an input on one shard"
            )
        n = self.shards  # checked once, here: the request path skips shard_of's check
        first = stable_hash(keys[0]) % n
        if len(keys) == 1 or n == 1:
            return first
        spread: dict[int, list[object]] = {}
        for key in keys:
            spread.setdefault(stable_hash(key) % n, []).append(key)
        if len(spread) > 1:
            raise CrossShardInput(input, spread)
        return first
