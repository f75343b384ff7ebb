"""JSON for a user's machine: what pydantic's reader lets through, and what no reader reads back.

pydantic reads ``1e400`` as infinite and keeps the last of two equal keys;
JSON proper has neither. Each is a 400 that names what the body held and
where: an overflowing number in an ``Any`` field (which no declared float
checks), an overflowing number in a typed field (named as written, not as
``Infinity``), a key repeated in any object of the body. The count that
finds repeated keys is checked where it must not be trusted (colons inside
strings, unions that try two members, classes pydantic reads its own way).
The Python client refuses an input holding a NaN or an infinity before it
sends anything (pydantic would write ``null`` for one under ``Any``). An
output holding an integer of more than 4300 digits, which no reader of
ours reads, is a 500 saying why; one of 4300 digits round-trips. A lone
dataclass as the output type refuses a NaN as a union of them does.
"""

from __future__ import annotations

import datetime
import enum
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import typing_extensions
from examples.bank.machine import Bank, Deposit

from corosm import Context, Machine
from corosm.client import AsyncClient, InvalidRequest, ServerFailed
from corosm.client.protocol import submit_call
from corosm.frontends.http import start_http_server
from corosm.frontends.http.machineapp import MachineHttpApp
from corosm.frontends.jsoncodec import (
    InvalidJson,
    MachineCodec,
    OutputMismatch,
    codec_for,
    dumps,
)
from corosm.runtime import Runtime
from corosm.runtime import run as corosm_run
from machines.jobqueue import Job, JobQueue, Push
from rawclient import RawResponse, exchange

T = TypeVar("T")
FINITE = "a finite number (JSON has no NaN or Infinity; a float is at most about 1.8e308)"
JOBS = MachineCodec(JobQueue())
BANK = MachineCodec(Bank())


def _where(body: str, token: str, *, last: bool = False) -> str:
    """``line L column C`` of the first (or last) ``token`` in ``body``, 1-based as messages say."""
    at = body.rindex(token) if last else body.index(token)
    return f"line {body.count(chr(10), 0, at) + 1} column {at - body.rfind(chr(10), 0, at)}"


def _refused(codec: Any, body: str) -> tuple[str, ...]:
    with pytest.raises(InvalidJson) as refused:
        codec.decode(body.encode())
    return refused.value.problems


# -- 1. a number beyond a float's range where no declared float checks it ------------

OVERFLOWING = ["1e400", "-1E+400", "1.5e309", "1" + "0" * 400 + ".0"]


@pytest.mark.parametrize("number", OVERFLOWING)
def test_an_overflowing_number_in_an_any_field_is_refused_with_where(number: str) -> None:
    body = '{"type": "Push",\n "name": "a",\n "meta": {"x": [1, N]}}'.replace("N", number)
    shown = number if len(number) <= 60 else number[:57] + "..."
    assert _refused(JOBS.input, body) == (
        f"the number {shown} at {_where(body, number)} is out of a float's range; "
        f"expected {FINITE}",
    )


@pytest.mark.parametrize("tp", [Any, list[Any], dict[str, Any], tuple[Any, ...], set[Any]])
def test_every_raw_type_refuses_an_overflowing_number(tp: Any) -> None:
    body = '{"x": 1e400}' if tp == dict[str, Any] else "[2, 1e400]"
    assert _refused(codec_for(tp), body) == (
        f"the number 1e400 at {_where(body, '1e400')} is out of a float's range; expected {FINITE}",
    )


def test_numbers_a_float_or_an_int_can_hold_still_pass_in_an_any_field() -> None:
    big_int = "1" + "0" * 400  # an int, however long (up to 4300 digits), not a float
    body = '{"type": "Push", "name": "a", "meta": {"x": [1e308, -2.5e-400, %s, "1e400"]}}'
    value = JOBS.input.decode((body % big_int).encode())
    assert value == Push("a", 1.0, {"x": [1e308, -0.0, 10**400, "1e400"]})


# -- 2. an overflowing number in a typed field is named as the body wrote it -----------


@pytest.mark.parametrize(
    ("codec", "body", "problem"),
    [
        (BANK.input, '{"type": "Deposit", "account": "a", "amount": 1e400}', "amount: "),
        (JOBS.input, '{"type": "Push", "name": "a", "weight": -1E+400}', "weight: "),
        (codec_for(int), "1e400", ""),
        (codec_for(list[int]), "[1, 2, 3e999]", "[2]: "),
        (codec_for(dict[str, str]), '{"k": 1e400}', "k: "),
    ],
)
def test_an_overflowing_number_in_a_typed_field_is_named_as_written(
    codec: Any, body: str, problem: str
) -> None:
    written = next(word for word in ("1e400", "-1E+400", "3e999") if word in body)
    (message,) = _refused(codec, body)
    assert message.startswith(problem) and message.endswith(f", got {written}"), message
    assert "Infinity" not in message.replace(FINITE, "")


@pytest.mark.parametrize(("literal", "shown"), [("NaN", "NaN"), ("-Infinity", "-Infinity")])
def test_nan_and_infinity_in_a_typed_field_are_still_named_so(literal: str, shown: str) -> None:
    body = '{"type": "Deposit", "account": "a", "amount": N}'.replace("N", literal)
    assert _refused(BANK.input, body) == (f"amount: expected an integer, got {shown}",)


# -- 3. a key repeated in an object ----------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "body", "key"),
    [
        (BANK.input, '{"type": "Deposit", "account": "a", "amount": 1, "amount": 2}', '"amount"'),
        (
            BANK.input,
            '{"type": "Deposit", "type": "Deposit", "account": "a", "amount": 1}',
            '"type"',
        ),
        (JOBS.input, '{"type": "Push", "name": "a",\n "meta": {"x": {"y": 1, "y": 2}}}', '"y"'),
        # The same key written two ways; the message shows the second as written.
        (JOBS.input, '{"type": "Push", "name": "a", "meta": {"k": 1, "\\u006b": 2}}', '"\\u006b"'),
        (codec_for(dict[str, int]), '{"a": 1, "b": 2, "a": 3}', '"a"'),
        (codec_for(list[Deposit]), '[{"account": "a", "amount": 1, "account": "b"}]', '"account"'),
        (codec_for(Any), '[{"a": 1}, {"b": {"c": 1, "c": 1}}]', '"c"'),
        # A colon in a string: the count proves nothing, the strict parse decides.
        (BANK.input, '{"type": "Deposit", "account": "a:b", "amount": 1, "amount": 1}', '"amount"'),
    ],
)
def test_a_repeated_key_is_refused_naming_it_and_where(codec: Any, body: str, key: str) -> None:
    assert _refused(codec, body) == (
        f"the body repeats the key {key} at {_where(body, key, last=True)}; "
        "expected each key once in an object",
    )


def test_a_big_body_names_what_it_repeats_without_where() -> None:
    # Over 64 KiB, saying where would cost more than the parse: the key alone is named.
    entries = ", ".join(f'"k{i}": [{i}]' for i in range(8000))
    body = '{"type": "Push", "name": "a", "meta": {ENTRIES, "k7": 0}}'.replace("ENTRIES", entries)
    assert len(body) > 64 * 1024
    assert _refused(JOBS.input, body) == (
        'the body repeats the key "k7"; expected each key once in an object',
    )
    body = body.replace('"k7": 0', '"z": 1e400')
    assert _refused(JOBS.input, body) == (
        f"the number 1e400 is out of a float's range; expected {FINITE}",
    )


class Color(enum.Enum):
    RED = "red"


@dataclass(frozen=True)
class Stamp:
    when: datetime.datetime
    color: Color


def test_enums_and_datetimes_count_their_objects_keys_like_any_field() -> None:
    stamp = '{"when": "2026-01-02T03:04:05", "color": "red", "color": "red"}'
    second = _where(stamp, '"color"', last=True)
    assert _refused(codec_for(Stamp), stamp) == (
        f'the body repeats the key "color" at {second}; expected each key once in an object',
    )
    one = stamp.replace(', "color": "red"}', "}")
    assert codec_for(Stamp).decode(one) == Stamp(datetime.datetime(2026, 1, 2, 3, 4, 5), Color.RED)


class Point(typing_extensions.TypedDict):
    x: int
    y: int


@pytest.mark.parametrize(
    ("tp", "body"),
    [
        # pydantic tries both members: one may count the object, the other read it again.
        (dict[str, int] | dict[str, str], '{"a": 1, "a": 2}'),
        (list[dict[str, int]] | list[dict[str, bool]], '[{"a": 1, "a": 2}]'),
        (Point, '{"x": 1, "y": 2, "x": 3}'),  # a class pydantic reads its own way
    ],
)
def test_types_whose_keys_are_not_counted_refuse_a_repeated_key_too(tp: Any, body: str) -> None:
    (message,) = _refused(codec_for(tp), body)
    assert message.startswith("the body repeats the key "), message


@pytest.mark.parametrize(
    ("codec", "body"),
    [
        (BANK.input, '{"type": "Deposit", "account": "x: y", "amount": 5}'),
        (codec_for(list[dict[str, int]]), '[{"a": 1}, {"a": 2}, {}]'),
        (codec_for(dict[str, Any]), '{"a:b": {"a": 1}, "a": {"a:b": "c:d"}}'),
        (codec_for(dict[str, int] | dict[str, str]), '{"a": 1, "b": 2}'),
        (codec_for(Point), '{"x": 1, "y": 2}'),
    ],
)
def test_equal_keys_in_different_objects_and_colons_in_strings_pass(codec: Any, body: str) -> None:
    assert codec.decode(body.encode()) == (
        Deposit("x: y", 5) if codec is BANK.input else json.loads(body)
    )


# -- 4. the client refuses what JSON cannot carry, before sending ----------------------


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (Push("a", float("nan")), "weight is nan"),
        # Under Any, pydantic would have written null: sent, and silently changed.
        (Push("a", 1.0, {"x": [1, float("inf")]}), "meta.x[1] is inf"),
        ([Deposit("a", 1), {"k": float("-inf")}], "[1].k is -inf"),
        (float("nan"), "the input is nan"),
    ],
)
def test_the_client_refuses_nan_and_infinity_naming_where(value: Any, where: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        submit_call(value)
    assert str(refused.value) == (
        f"cannot send this input as JSON: {where}; "
        "expected a finite number (JSON has no NaN or Infinity)"
    )


def test_the_client_sends_finite_floats_as_before() -> None:
    assert dumps(Push("a", 2.5, {"x": [1e308, -0.5]})) == (
        b'{"type":"Push","name":"a","weight":2.5,"meta":{"x":[1e+308,-0.5]}}'
    )


# -- 5. an output no reader reads back is never sent -----------------------------------


@pytest.mark.parametrize("digits", [4300, 4301, 9000])
@pytest.mark.parametrize("pad", [0, 1, 4299, 4300, 7000])
def test_an_output_with_an_integer_over_4300_digits_is_a_mismatch(digits: int, pad: int) -> None:
    # The padding moves the integer across the offsets the search looks at.
    value = {"pad": "p" * pad, "n": -(10**digits - 1), "runs": list(range(0, 10**6, 997))}
    codec = codec_for(dict[str, Any])
    if digits <= 4300:
        assert json.loads(codec.encode(value)) == value
        return
    with pytest.raises(OutputMismatch) as refused:
        codec.encode(value)
    assert str(refused.value).endswith(
        "(an integer of more than 4300 digits, which JSON readers such as pydantic's and "
        "Python's refuse)"
    )


def test_a_long_run_of_digits_in_a_string_is_text() -> None:
    text = "1" * 9000
    assert codec_for(str).encode(text) == b'"' + text.encode() + b'"'


def test_the_out_of_range_message_names_the_readers_limit_whatever_python_allows() -> None:
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # no limit for Python: pydantic's reader keeps 4300
    try:
        (message,) = _refused(codec_for(int), "1" * 4301)
    finally:
        sys.set_int_max_str_digits(limit)
    assert message.endswith("; expected an integer of at most 4300 digits"), message


# -- a lone dataclass as the output type -----------------------------------------------


def test_a_lone_dataclass_output_refuses_a_nan_as_a_union_does() -> None:
    with pytest.raises(OutputMismatch, match=r"\(JSON has no NaN or Infinity\)$"):
        codec_for(Job).encode(Job("j", float("nan")))
    with pytest.raises(OutputMismatch, match=r"\(JSON has no NaN or Infinity\)$"):
        codec_for(Push).encode(Push("p", 1.0, {"x": float("inf")}))


# -- served ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Put:
    name: str
    amount: int
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Digits:
    """Ask for an integer of ``count`` nines."""

    count: int


@dataclass(frozen=True)
class Number:
    value: int


class Recorder(Machine[None, Put | Digits, Number]):
    """Records every input its handler gets."""

    def __init__(self) -> None:
        self.seen: list[Put | Digits] = []

    def initial_state(self) -> None:
        return None

    async def handle(self, ctx: Context[None], input: Put | Digits) -> Number:
        self.seen.append(input)
        if isinstance(input, Digits):
            return Number(10**input.count - 1)
        return Number(len(self.seen))


def _served(machine: Recorder, talk: Callable[[int], Awaitable[T]]) -> T:
    async def main() -> T:
        async with Runtime(machine) as runtime:
            app = MachineHttpApp(runtime, MachineCodec(runtime.machine))
            server = await start_http_server(app, "127.0.0.1", 0)
            try:
                return await talk(server.port)
            finally:
                await server.shutdown(grace=2.0)

    return corosm_run(main())


def _post(body: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def test_served_bodies_pydantic_would_take_are_400_and_reach_no_handler() -> None:
    recorder = Recorder()
    bad = [
        b'{"type": "Put", "name": "a", "amount": 1, "amount": 1000000}',
        b'{"type": "Put", "name": "a", "amount": 1, "meta": {"x": 1e400}}',
        b'{"type": "Put", "name": "a", "amount": 1e400}',
    ]
    good = b'{"type": "Put", "name": "a", "amount": 1}'

    async def talk(port: int) -> list[RawResponse]:
        raw = b"".join(_post(body) for body in [*bad, good])
        return await exchange("127.0.0.1", port, raw, count=len(bad) + 1)

    *refused, ok = _served(recorder, talk)
    assert [r.status for r in refused] == [400, 400, 400]
    second = _where(bad[0].decode(), '"amount"', last=True)
    assert refused[0].body.decode() == (
        f'the body repeats the key "amount" at {second}; expected each key once in an object\n'
    )
    assert refused[1].body.decode() == (
        f"the number 1e400 at {_where(bad[1].decode(), '1e400')} is out of a float's range; "
        f"expected {FINITE}\n"
    )
    assert refused[2].body == b"amount: expected an integer, got 1e400\n"
    assert (ok.status, ok.body) == (200, b'{"type":"Number","value":1}')
    assert recorder.seen == [Put("a", 1)]


def test_served_output_too_long_to_read_is_500_and_4300_digits_round_trip() -> None:
    recorder = Recorder()

    async def talk(port: int) -> tuple[Any, Any, str]:
        async with AsyncClient("127.0.0.1", port, timeout=20) as client:
            typed = await client.submit(Digits(4300), Number)
            plain = await client.submit(Digits(4300))
            with pytest.raises(ServerFailed) as failed:
                await client.submit(Digits(4301), Number)
            return typed, plain, failed.value.message

    typed, plain, message = _served(recorder, talk)
    assert typed == Number(10**4300 - 1)
    assert plain == {"type": "Number", "value": 10**4300 - 1}
    assert message.startswith("internal error: Recorder's output type is ")
    assert message.endswith(
        "(an integer of more than 4300 digits, which JSON readers such as pydantic's and "
        "Python's refuse)"
    )


def test_the_served_client_refuses_a_nan_and_the_server_sees_nothing() -> None:
    recorder = Recorder()

    async def talk(port: int) -> Any:
        async with AsyncClient("127.0.0.1", port, timeout=20) as client:
            with pytest.raises(InvalidRequest, match=r"meta\.x is nan"):
                await client.submit(Put("a", 1, {"x": float("nan")}))
            return await client.submit(Put("b", 2), Number)

    assert _served(recorder, talk) == Number(1)
    assert recorder.seen == [Put("b", 2)]
