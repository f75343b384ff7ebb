"""The sequential reference model of the key-value machine.

``step(state, input) -> (output, state)`` is a plain function on an immutable,
hashable state: no coroutines, no journal, no intent records. It states what
the machine means, independently of how the machine gets there, so tests can
compare the two: one input at a time (sequential tests), or through the
linearizability checker (concurrent tests), which needs hashable states to
memoise on. Its cost per change is a dict copy, fine for test-sized stores.

It shares only :func:`~corosm.apps.kv.records.parse_int64` (what counts as a
stored integer) and the output values with the machine.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping

from corosm.apps.kv.inputs import (
    AppendBytes,
    Delete,
    DeleteMany,
    Exists,
    IncrBy,
    Input,
    Read,
    ReadMany,
    Reset,
    SetIf,
    Size,
    StrLen,
    Write,
    WriteMany,
)
from corosm.apps.kv.outputs import (
    NOT_INTEGER,
    OK,
    OVERFLOW,
    Count,
    IntValue,
    Output,
    SetOutcome,
    Value,
    Values,
)
from corosm.apps.kv.records import INT64_MAX, INT64_MIN, parse_int64
from corosm.errors import UsageError


class ModelState(Mapping[bytes, bytes]):
    """An immutable, hashable key-value mapping."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[bytes, bytes] | None = None) -> None:
        self._data: dict[bytes, bytes] = dict(data) if data else {}
        self._hash: int | None = None

    def __getitem__(self, key: bytes) -> bytes:
        return self._data[key]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ModelState):
            return self._data == other._data
        return NotImplemented

    def __repr__(self) -> str:
        return f"ModelState({self._data!r})"

    def with_changes(
        self, put: Mapping[bytes, bytes], remove: tuple[bytes, ...] = ()
    ) -> ModelState:
        """A new state with ``put`` stored and ``remove`` removed."""
        data = dict(self._data)
        for key in remove:
            data.pop(key, None)
        data.update(put)
        return ModelState(data)


EMPTY = ModelState()


def step(state: ModelState, input: Input) -> tuple[Output, ModelState]:
    """Apply ``input`` to ``state`` sequentially: its output and the next state."""
    get = state.get
    match input:
        case Write(key, value):
            return OK, state.with_changes({key: value})
        case Read(key):
            return Value(get(key)), state
        case ReadMany(keys):
            return Values(tuple(get(key) for key in keys)), state
        case Exists(keys):
            return Count(sum(key in state for key in keys)), state
        case StrLen(key):
            return Count(len(get(key, b""))), state
        case Size():
            return Count(len(state)), state
        case Delete(key):
            return _delete(state, (key,))
        case DeleteMany(keys):
            return _delete(state, keys)
        case Reset():
            return OK, EMPTY
        case WriteMany(pairs):
            return OK, state.with_changes(dict(pairs))
        case SetIf(key, value, nx, xx, _):
            old = get(key)
            if (nx and old is not None) or (xx and old is None):
                return SetOutcome(False, old), state
            return SetOutcome(True, old), state.with_changes({key: value})
        case IncrBy(key, delta):
            return _incr(state, key, delta)
        case AppendBytes(key, value):
            new = get(key, b"") + value
            return Count(len(new)), state.with_changes({key: new})
    raise UsageError(f"the key-value model does not take {input!r:.80}")


def _delete(state: ModelState, keys: tuple[bytes, ...]) -> tuple[Output, ModelState]:
    present = {key for key in keys if key in state}
    if not present:
        return Count(0), state
    return Count(len(present)), state.with_changes({}, tuple(present))


def _incr(state: ModelState, key: bytes, delta: int) -> tuple[Output, ModelState]:
    old = state.get(key)
    current = 0 if old is None else parse_int64(old)
    if current is None:
        return NOT_INTEGER, state
    new = current + delta
    if not INT64_MIN <= new <= INT64_MAX:
        return OVERFLOW, state
    return IntValue(new), state.with_changes({key: str(new).encode()})


def partition_key(input: Input) -> Hashable | None:
    """The one key ``input`` touches, for a per-key linearizability check.

    None for inputs that touch several keys or all of them (Reset, Size,
    multi-key reads and writes): a history with such inputs is checked whole.
    """
    match input:
        case Write(key) | Read(key) | Delete(key) | StrLen(key) | IncrBy(key) | AppendBytes(key):
            return key
        case SetIf(key):
            return key
        case Exists(keys) | ReadMany(keys) | DeleteMany(keys) if len(set(keys)) == 1:
            return keys[0]
    return None
