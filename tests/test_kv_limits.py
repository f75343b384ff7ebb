"""Key and value limits, held in one place: the key-value inputs' constructors.

Every input that carries a key or a value refuses an empty key, a key over
``MAX_KEY_BYTES`` and a value over ``MAX_VALUE_BYTES`` with
:class:`~corosm.errors.LimitExceeded`, so no front end (seed, REST, RESP,
the Python API) can store what another would refuse. A value that only grows
past the limit (APPEND) is refused by ``apply``, in log order, so that replay
decides exactly as the live machine did.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from corosm.apps.kv import inputs as kvi
from corosm.apps.kv.inputs import MAX_KEY_BYTES, MAX_VALUE_BYTES
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import OK, Count, Rejected, Value
from corosm.apps.kv.records import AppendTo, decode_record, encode_record
from corosm.apps.kv.state import VALUE_TOO_LARGE, KVState, apply_record
from corosm.core import Append, InputArrived, IOCompleted, Reply, StartIO, Stepper
from corosm.errors import LimitExceeded, UsageError

LONG_KEY = b"k" * (MAX_KEY_BYTES + 1)
BIG_VALUE = b"v" * (MAX_VALUE_BYTES + 1)

#: Every input that carries a key, built around one key.
WITH_KEY: dict[str, Callable[[bytes], object]] = {
    "Write": lambda k: kvi.Write(k, b"1"),
    "Read": kvi.Read,
    "Delete": kvi.Delete,
    "SetIf": lambda k: kvi.SetIf(k, b"1"),
    "IncrBy": lambda k: kvi.IncrBy(k, 1),
    "AppendBytes": lambda k: kvi.AppendBytes(k, b"1"),
    "StrLen": kvi.StrLen,
    "Exists": lambda k: kvi.Exists((b"ok", k)),
    "ReadMany": lambda k: kvi.ReadMany((b"ok", k)),
    "DeleteMany": lambda k: kvi.DeleteMany((b"ok", k)),
    "WriteMany": lambda k: kvi.WriteMany(((b"ok", b"1"), (k, b"1"))),
}

#: Every input that carries a value, built around one value.
WITH_VALUE: dict[str, Callable[[bytes], object]] = {
    "Write": lambda v: kvi.Write(b"k", v),
    "SetIf": lambda v: kvi.SetIf(b"k", v, nx=True),
    "AppendBytes": lambda v: kvi.AppendBytes(b"k", v),
    "WriteMany": lambda v: kvi.WriteMany(((b"a", b"1"), (b"k", v))),
}


@pytest.mark.parametrize("name", sorted(WITH_KEY))
def test_every_keyed_input_refuses_an_empty_or_too_long_key(name: str) -> None:
    build = WITH_KEY[name]
    with pytest.raises(LimitExceeded) as info:
        build(b"")
    empty = info.value
    assert (empty.part, empty.size, empty.limit, empty.empty) == ("key", 0, MAX_KEY_BYTES, True)
    assert str(empty) == f"empty key: a key must have 1 to {MAX_KEY_BYTES} bytes"
    with pytest.raises(LimitExceeded) as info:
        build(LONG_KEY)
    long = info.value
    assert (long.part, long.size, long.limit, long.empty) == (
        "key",
        MAX_KEY_BYTES + 1,
        MAX_KEY_BYTES,
        False,
    )
    assert str(long) == f"key too long: {MAX_KEY_BYTES + 1} bytes, at most {MAX_KEY_BYTES} allowed"
    assert isinstance(long, UsageError)  # a caller error, as the hierarchy says
    build(b"k" * MAX_KEY_BYTES)  # the limit itself is allowed
    build(b"k")


@pytest.mark.parametrize("name", sorted(WITH_VALUE))
def test_every_valued_input_refuses_a_value_over_the_limit(name: str) -> None:
    build = WITH_VALUE[name]
    with pytest.raises(LimitExceeded) as info:
        build(BIG_VALUE)
    exc = info.value
    assert (exc.part, exc.size, exc.limit, exc.empty) == (
        "value",
        MAX_VALUE_BYTES + 1,
        MAX_VALUE_BYTES,
        False,
    )
    assert str(exc) == (
        f"value too large: {MAX_VALUE_BYTES + 1} bytes, at most {MAX_VALUE_BYTES} allowed"
    )
    build(b"v" * MAX_VALUE_BYTES)
    build(b"")  # an empty value is a value


def test_type_errors_still_come_first_and_name_the_field() -> None:
    with pytest.raises(UsageError, match=r"Read.key must be bytes, not str") as info:
        kvi.Read("")  # type: ignore[arg-type]
    assert not isinstance(info.value, LimitExceeded)
    with pytest.raises(UsageError, match=r"Write.value must be bytes, not bytearray"):
        kvi.Write(b"k", bytearray(BIG_VALUE))  # type: ignore[arg-type]


def test_limit_exceeded_survives_pickling() -> None:
    exc = LimitExceeded("value", 7, 5)
    copy = pickle.loads(pickle.dumps(exc))
    assert (type(copy), copy.part, copy.size, copy.limit, str(copy)) == (
        LimitExceeded,
        "value",
        7,
        5,
        str(exc),
    )


# -- APPEND: decided in apply, in log order ------------------------------------------


def test_apply_refuses_an_append_past_the_value_limit_and_changes_nothing() -> None:
    state = KVState({b"k": b"x" * (MAX_VALUE_BYTES - 1)})
    apply_record(state, AppendTo(b"k", b"yy"))
    assert state.last_outcome == VALUE_TOO_LARGE
    assert isinstance(VALUE_TOO_LARGE, Rejected)
    assert str(MAX_VALUE_BYTES) in VALUE_TOO_LARGE.message
    assert state.data == {b"k": b"x" * (MAX_VALUE_BYTES - 1)}
    apply_record(state, AppendTo(b"k", b"y"))  # exactly at the limit: allowed
    assert state.last_outcome == Count(MAX_VALUE_BYTES)
    assert len(state.data[b"k"]) == MAX_VALUE_BYTES
    apply_record(state, AppendTo(b"k", b"z"))
    assert state.last_outcome == VALUE_TOO_LARGE
    assert len(state.data[b"k"]) == MAX_VALUE_BYTES


class Driver:
    """Feeds a KV stepper by hand; completes appends in log order when told."""

    def __init__(self) -> None:
        self.stepper: Stepper[Any, Any, Any] = Stepper(KVMachine())
        self.pending: deque[tuple[int, Any]] = deque()
        self.journal: list[bytes] = []
        self.replies: dict[int, Any] = {}

    def _take(self, actions: list[Any]) -> None:
        for action in actions:
            match action:
                case StartIO(request, Append(record)):
                    self.pending.append((request, record))
                case Reply(client, output):
                    self.replies[client] = output
                case _:
                    raise AssertionError(f"unexpected action {action!r}")

    def send(self, client: int, inp: object) -> None:
        self._take(self.stepper.feed(InputArrived(client, inp)))

    def complete_all(self) -> None:
        while self.pending:
            request, record = self.pending.popleft()
            self.journal.append(encode_record(record))
            self._take(self.stepper.feed(IOCompleted(request, None, None)))


def test_append_growing_a_value_past_the_limit_is_rejected_live_and_on_replay() -> None:
    driver = Driver()
    half = b"h" * (MAX_VALUE_BYTES // 2)
    driver.send(1, kvi.Write(b"k", half))
    driver.send(2, kvi.AppendBytes(b"k", half))  # exactly MAX_VALUE_BYTES: fine
    driver.send(3, kvi.AppendBytes(b"k", b"!"))  # one byte too many
    driver.send(4, kvi.AppendBytes(b"other", b"fine"))
    driver.complete_all()
    assert driver.replies == {
        1: OK,
        2: Count(MAX_VALUE_BYTES),
        3: VALUE_TOO_LARGE,
        4: Count(4),
    }
    live = driver.stepper.state.data
    assert live == {b"k": half + half, b"other": b"fine"}
    replayed = KVState()
    for blob in driver.journal:
        apply_record(replayed, decode_record(blob))
    assert replayed.data == live


def test_append_after_a_pending_write_that_shortens_the_value_succeeds() -> None:
    """APPEND is Order.LOGGED: it may run before an earlier write of its own
    connection is applied. Refusing it from the state the handler sees (the
    old, long value) would break read-your-writes; apply decides instead."""
    driver = Driver()
    driver.send(1, kvi.Write(b"k", b"x" * MAX_VALUE_BYTES))
    driver.complete_all()
    driver.send(2, kvi.Write(b"k", b""))  # pending: the applied value is still full
    driver.send(3, kvi.AppendBytes(b"k", b"y"))
    assert 3 not in driver.replies  # not answered from the stale state
    driver.complete_all()
    assert driver.replies[3] == Count(1)
    driver.send(4, kvi.Read(b"k"))
    assert driver.replies[4] == Value(b"y")


# -- docs/limits.md: one table, every default read from the code ------------------------

LIMITS_DOC = Path(__file__).resolve().parent.parent / "docs" / "limits.md"


def _default_in_code(dotted: str) -> object:
    """The value ``dotted`` names: a module constant, or a class's (or dataclass's) default."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for name in parts[split:-1]:
            obj = getattr(obj, name)
        last = parts[-1]
        if isinstance(obj, type):
            return inspect.signature(obj).parameters[last].default
        return getattr(obj, last)
    raise AssertionError(f"cannot resolve {dotted}")


def _shown(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g} s"
    assert isinstance(value, int), value
    return f"{value:,}"


def test_the_limits_table_states_the_defaults_the_code_has() -> None:
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in LIMITS_DOC.read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| Limit |")
    ]
    assert len(rows) >= 20
    checked = 0
    for limit, default, *_, set_in in rows:
        dotted = set_in.strip("`")
        value = _default_in_code(dotted)
        if dotted.endswith("INT64_MAX"):
            assert value == 2**63 - 1 and "64-bit" in default, limit
        else:
            assert _shown(value) in default, (limit, default, value)
        checked += 1
    assert checked == len(rows)
    # The key and value rows are the inputs' constants.
    assert f"1 to {MAX_KEY_BYTES:,} bytes" in LIMITS_DOC.read_text()
