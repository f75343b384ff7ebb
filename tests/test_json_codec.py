"""The JSON codec of ``corosm serve --machine``: declared types, the wire, the errors.

No server here: :mod:`corosm.frontends.jsoncodec` on its own. How a machine's
types are found (generic base, generic intermediates, explicit attributes),
the ``"type"`` convention in and out, strictness, refused fields, the error
lines, and the types refused at start-up with one clear message.
"""

from __future__ import annotations

import enum
from dataclasses import InitVar, dataclass, field
from typing import Any, Generic, Literal, TypeVar

import pytest

from corosm import Machine
from corosm.errors import UsageError
from corosm.frontends.jsoncodec import (
    InvalidJson,
    JsonCodec,
    MachineCodec,
    OutputMismatch,
    declared_types,
    dumps,
    to_json_value,
)
from machines.ledger import (
    Balance,
    Deposit,
    Ledger,
    LedgerInput,
    LedgerOutput,
    Moved,
    Refused,
    Untyped,
    Withdraw,
)

T = TypeVar("T")


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Line:
    sku: str
    qty: int
    note: bytes = b""


@dataclass(frozen=True)
class Order:
    customer: str
    lines: tuple[Line, ...] = ()
    color: Color | None = None
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Cancel:
    order_id: int


@dataclass
class Box(Generic[T]):
    value: T


def problems(codec: JsonCodec, body: str) -> tuple[str, ...]:
    with pytest.raises(InvalidJson) as raised:
        codec.decode(body)
    return raised.value.problems


# --- the declared types -------------------------------------------------------------


def test_types_come_from_the_generic_base() -> None:
    assert declared_types(Ledger()) == (LedgerInput, LedgerOutput)
    assert declared_types(Ledger) == (LedgerInput, LedgerOutput)


def test_types_through_generic_and_plain_subclasses() -> None:
    class Base(Machine[dict[str, int], T, list[T]], Generic[T]):
        pass

    class Orders(Base[Order | Cancel]):
        pass

    class MoreOrders(Orders):
        pass

    assert declared_types(MoreOrders()) == (Order | Cancel, list[Order | Cancel])


def test_explicit_attributes_win() -> None:
    class Explicit(Machine[Any, Any, Any]):
        input_type = Cancel
        output_type = int | None

    assert declared_types(Explicit()) == (Cancel, int | None)


def test_a_machine_without_types_is_refused() -> None:
    with pytest.raises(UsageError, match=r"Untyped does not declare its types: subclass Machine"):
        MachineCodec(Untyped())


# --- inputs -------------------------------------------------------------------------


def test_a_union_of_dataclasses_is_chosen_by_type() -> None:
    codec = JsonCodec(Order | Cancel, "input")
    body = (
        '{"type": "Order", "customer": "ann", "lines": [{"sku": "x", "qty": 2, "note": "aGk="}],'
        ' "color": "red"}'
    )
    assert codec.decode(body) == Order("ann", (Line("x", 2, b"hi"),), Color.RED)
    assert codec.decode('{"type": "Cancel", "order_id": 7}') == Cancel(7)
    # A nested dataclass may name its class too; it must be the right one.
    assert codec.decode(
        '{"type": "Order", "customer": "c", "lines": [{"type": "Line", "sku": "y", "qty": 1}]}'
    ) == Order("c", (Line("y", 1),))


def test_errors_name_the_field_and_what_was_expected() -> None:
    codec = JsonCodec(Order | Cancel, "input")
    assert problems(codec, '{"type": "Cancel", "order_id": "7"}') == (
        'order_id: expected an integer, got "7"',  # strict: no coercion from strings
    )
    assert problems(codec, '{"type": "Cancel", "order_id": 1.5}') == (
        "order_id: expected an integer, got 1.5",
    )
    assert problems(codec, '{"type": "Cancel"}') == ("order_id: missing",)
    assert problems(codec, '{"type": "Cancel", "order_id": 1, "why": "x"}') == (
        "why: unknown field",
    )
    assert problems(codec, '{"type": "Order", "customer": "c", "lines": [{"sku": "y"}]}') == (
        "lines[0].qty: missing",
    )
    assert problems(
        codec, '{"type": "Order", "customer": "c", "lines": [{"sku": "y", "qty": 1, "x": 0}]}'
    ) == ("lines[0].x: unknown field",)
    assert problems(codec, '{"type": "Order", "customer": "c", "color": "green"}') == (
        "color: expected 'red' or 'blue', got \"green\"",
    )
    assert problems(codec, '{"type": "Refund"}') == (
        'type: expected one of "Order", "Cancel", got "Refund"',
    )
    assert problems(codec, '{"order_id": 1}') == (
        'type: missing; expected one of "Order", "Cancel"',
    )
    assert problems(codec, "7") == (
        'expected an object with "type" one of "Order", "Cancel", got 7',
    )
    assert problems(codec, "{") == (
        "the body is not JSON: EOF while parsing an object at line 1 column 1",
    )
    for lone in ('"\\ud800"', '"\\udc00"'):  # half a surrogate pair: the rule is named
        (problem,) = problems(codec, '{"type": "Order", "customer": ' + lone + "}")
        assert problem.startswith("the body is not JSON: ") and "surrogate pair" in problem


def test_post_init_refusals_are_input_errors() -> None:
    codec = JsonCodec(LedgerInput, "input")
    assert problems(codec, '{"type": "Deposit", "account": "a", "amount": 0}') == (
        "Deposit: amount must be positive, got 0",
    )


def test_a_single_dataclass_may_leave_type_out() -> None:
    codec = JsonCodec(Cancel, "input")
    assert codec.decode('{"order_id": 3}') == Cancel(3)
    assert codec.decode('{"type": "Cancel", "order_id": 3}') == Cancel(3)
    assert problems(codec, '{"type": "Order", "order_id": 3}') == (
        "type: expected 'Cancel', got \"Order\"",
    )
    optional = JsonCodec(Cancel | None, "input")
    assert optional.decode("null") is None
    assert optional.decode('{"order_id": 4}') == Cancel(4)


def test_lists_of_unions_and_plain_types() -> None:
    codec = JsonCodec(list[Order | Cancel], "input")
    assert problems(codec, '[{"type": "Cancel", "order_id": 1}, {"order_id": 2}]') == (
        '[1].type: missing; expected one of "Order", "Cancel"',
    )
    assert JsonCodec(tuple[str, str], "input").decode('["incr", "hits"]') == ("incr", "hits")
    assert JsonCodec(Literal["a", "b"], "input").decode('"b"') == "b"
    assert JsonCodec(Box[int], "input").decode('{"value": 3}') == Box(3)
    assert problems(JsonCodec(Box[int], "input"), '{"value": "3"}') == (
        'value: expected an integer, got "3"',
    )


def test_many_errors_are_cut_short() -> None:
    codec = JsonCodec(list[int], "input")
    lines = problems(codec, "[" + ", ".join(['"x"'] * 15) + "]")
    assert len(lines) == 11 and lines[-1] == "... and 5 more"


# --- outputs ------------------------------------------------------------------------


def test_outputs_carry_their_type() -> None:
    codec = JsonCodec(LedgerOutput, "output")
    assert codec.encode(Refused("no")) == b'{"type":"Refused","reason":"no"}'
    moved = Moved(Balance("a", 1), Balance("b", 2))
    assert codec.encode(moved) == (
        b'{"type":"Moved","source":{"type":"Balance","account":"a","balance":1},'
        b'"target":{"type":"Balance","account":"b","balance":2}}'
    )
    assert codec.decode(codec.encode(moved)) == moved
    assert JsonCodec(int | None, "output").encode(None) == b"null"
    assert JsonCodec(bytes, "output").encode(b"\x00\xff") == b'"AP8="'


def test_an_output_outside_the_declared_type_is_refused() -> None:
    codec = JsonCodec(LedgerOutput, "Ledger's output type")
    for wrong in (5, Deposit("a", 1), {"type": "Refused", "reason": "x"}):
        with pytest.raises(OutputMismatch, match="Ledger's output type is"):
            codec.encode(wrong)


# --- the client's side --------------------------------------------------------------


def test_the_client_encodes_by_the_same_convention() -> None:
    assert to_json_value(Withdraw("a", 2)) == {"type": "Withdraw", "account": "a", "amount": 2}
    assert to_json_value([Cancel(1), {"raw": b"hi"}, (1, 2)]) == [
        {"type": "Cancel", "order_id": 1},
        {"raw": "aGk="},
        [1, 2],
    ]
    assert dumps({"k": "é"}) == '{"k":"é"}'.encode()
    assert JsonCodec(LedgerInput, "input").decode(dumps(Deposit("z", 9))) == Deposit("z", 9)


# --- types refused at start-up ------------------------------------------------------


@dataclass
class Tagged:
    type: str


@dataclass
class Node:
    children: list[Node]


@dataclass
class Seeded:
    value: int
    seed: InitVar[int]


class Opaque:
    pass


@dataclass
class Holder:
    thing: Opaque


def test_types_that_cannot_be_served_fail_in_one_line() -> None:
    cases: list[tuple[Any, str]] = [
        (Tagged, 'Tagged has a field named "type"'),
        (Node, "the dataclass Node contains itself"),
        (Seeded, "Seeded has the InitVar 'seed'"),
        (Opaque, "cannot be served as JSON: Unable to generate pydantic-core schema"),
        (Holder, "cannot be served as JSON"),
        (T, "is the unbound type variable T"),
    ]
    for tp, message in cases:
        with pytest.raises(UsageError) as raised:
            JsonCodec(tp, "X's input type")
        text = str(raised.value)
        assert message in text, text
        assert "\n" not in text


def test_two_classes_of_one_name_in_a_union_are_refused() -> None:
    first = Cancel

    @dataclass(frozen=True)
    class Cancel2:
        order_id: int

    Cancel2.__name__ = "Cancel"
    with pytest.raises(UsageError, match="two classes named Cancel"):
        JsonCodec(first | Cancel2, "input")
