"""Values built with a hand-written ``__init__`` (corosm.core.fields) behave as dataclasses do.

``Append``, and the key-value machine's ``Read``, ``Write``, ``Put`` and
``Value``, are frozen slotted dataclasses whose ``__init__`` is written by
hand for speed. These tests hold them to what the generated one gave: the
same fields in the same order, frozen, equal and hashable by value, pickled,
``replace``-able, matched by position, and the same checks.
"""

from __future__ import annotations

import dataclasses
import pickle
import typing
from dataclasses import dataclass
from typing import Any

import pytest

from corosm.apps.kv.inputs import MAX_KEY_BYTES, MAX_VALUE_BYTES, Read, Write
from corosm.apps.kv.outputs import (
    OK,
    Count,
    IntValue,
    Output,
    Rejected,
    RejectReason,
    SetOutcome,
    Value,
    Values,
)
from corosm.apps.kv.records import (
    AppendTo,
    Clear,
    Increment,
    Put,
    PutIf,
    PutMany,
    Record,
    Remove,
)
from corosm.core.effects import Append
from corosm.core.fields import slot_setter
from corosm.errors import LimitExceeded, UsageError

SAMPLES: list[Any] = [
    Read(b"k"),
    Write(b"k", b"v"),
    Put(b"k", b"v"),
    Value(b"v"),
    Value(None),
    Append(Put(b"k", b"v")),
]


@pytest.mark.parametrize("value", SAMPLES, ids=repr)
def test_the_init_takes_exactly_the_fields_in_order(value: Any) -> None:
    # A field added to the class but not to its __init__ would fail here. By
    # position rather than by inspect.signature: a compiled __init__ has none.
    names = [f.name for f in dataclasses.fields(value)]
    args = [getattr(value, name) for name in names]
    built = type(value)(*args)
    assert [getattr(built, name) for name in names] == args
    assert type(value).__match_args__ == tuple(names)


@pytest.mark.parametrize("value", SAMPLES, ids=repr)
def test_values_stay_frozen_equal_hashable_and_picklable(value: Any) -> None:
    fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    twin = type(value)(**fields)
    assert twin == value and hash(twin) == hash(value)
    assert pickle.loads(pickle.dumps(value)) == value
    assert repr(value).startswith(f"{type(value).__name__}(")
    name = next(iter(fields))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, name, b"other")
    assert getattr(value, name) == fields[name]


# One of each output and record: the classes compiled in the compiled build,
# which pickle through their __reduce__ (corosm.core.fields.by_constructor).
COMPILED_VALUES: list[Any] = [
    OK,
    Value(b"v"),
    Values((b"a", None)),
    Count(3),
    IntValue(-4),
    SetOutcome(True, b"old"),
    Rejected(RejectReason.OVERFLOW, "too big"),
    Put(b"k", b"v"),
    PutMany(((b"k", b"v"), (b"l", b"w"))),
    PutIf(b"k", b"v", True, False),
    Remove((b"a", b"b")),
    Clear(),
    Increment(b"k", -2),
    AppendTo(b"k", b"x"),
]


def test_every_output_and_record_class_has_a_sample() -> None:
    # A class added to Output or Record without a sample here would go unpickled.
    classes = set(typing.get_args(Output)) | set(typing.get_args(Record))
    assert {type(value) for value in COMPILED_VALUES} == classes


@pytest.mark.parametrize("value", COMPILED_VALUES, ids=repr)
def test_outputs_and_records_pickle_to_an_equal_value(value: Any) -> None:
    back = pickle.loads(pickle.dumps(value))
    assert type(back) is type(value) and back == value and hash(back) == hash(value)
    names = [f.name for f in dataclasses.fields(value)]
    assert [getattr(back, name) for name in names] == [getattr(value, name) for name in names]


def test_replace_and_match_by_position() -> None:
    write = dataclasses.replace(Write(b"k", b"v"), value=b"w")
    assert write == Write(b"k", b"w")
    match Put(b"k", b"v"):
        case Put(key, value):
            assert (key, value) == (b"k", b"v")
        case _:
            pytest.fail("Put did not match by position")


@pytest.mark.parametrize(
    ("build", "error", "says"),
    [
        (lambda: Read("k"), UsageError, "Read.key must be bytes, not str"),
        (lambda: Read(b""), LimitExceeded, "key"),
        (lambda: Read(b"k" * (MAX_KEY_BYTES + 1)), LimitExceeded, str(MAX_KEY_BYTES)),
        (lambda: Write(b"k", "v"), UsageError, "Write.value must be bytes, not str"),
        (lambda: Write(1, b"v"), UsageError, "Write.key must be bytes, not int"),
        (lambda: Write(b"k", b"v" * (MAX_VALUE_BYTES + 1)), LimitExceeded, str(MAX_VALUE_BYTES)),
    ],
)
def test_the_inputs_still_check_their_fields(build: Any, error: type, says: str) -> None:
    with pytest.raises(error, match=says):
        build()


def test_a_dataclass_subclass_of_append_gets_its_own_init() -> None:
    @dataclass(frozen=True, slots=True)
    class Tagged(Append):
        tag: str

    tagged = Tagged(b"record", "t")
    assert (tagged.record, tagged.tag) == (b"record", "t")
    with pytest.raises(dataclasses.FrozenInstanceError):
        tagged.tag = "u"  # type: ignore[misc]


def test_slot_setter_sets_a_frozen_field_and_only_on_its_class() -> None:
    @dataclass(frozen=True, slots=True)
    class Pair:
        a: int
        b: int

    pair = Pair(1, 2)
    slot_setter(Pair, "b")(pair, 3)
    assert pair == Pair(1, 3)
    with pytest.raises(KeyError):
        slot_setter(Pair, "c")
    with pytest.raises(TypeError):
        slot_setter(Pair, "a")(object(), 1)
