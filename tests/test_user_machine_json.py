"""A user's machine's JSON, in-process: numbers JSON cannot carry, and outputs it cannot encode.

The codec of ``tests/machines/jobqueue.py`` (a float field and a free-form
``dict[str, Any]`` field among its inputs), driven directly. pydantic's
parser reads ``NaN``, ``Infinity`` and ``1e400`` (as infinite), which JSON
does not have: each is a 400 naming what the body held, where it was and
what was expected, while the words inside a string are plain text. An
output holding a NaN is refused as an output mismatch (the server's 500),
not written as ``null``, and so is one holding an integer too long for a
reader; an output whose ``repr`` raises still gets its mismatch message.
"""

from __future__ import annotations

from typing import Any

import pytest

from corosm.frontends.jsoncodec import InvalidJson, MachineCodec, OutputMismatch, codec_for
from machines.jobqueue import Count, Job, JobQueue, Push

CODEC = MachineCodec(JobQueue())
FINITE = "a finite number (JSON has no NaN or Infinity; a float is at most about 1.8e308)"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('{"type": "Push", "name": "a", "weight": NaN}', f"weight: expected {FINITE}, got NaN"),
        (
            '{"type": "Push", "name": "a", "weight": Infinity}',
            f"weight: expected {FINITE}, got Infinity",
        ),
        (
            '{"type": "Push", "name": "a", "weight": -Infinity}',
            f"weight: expected {FINITE}, got -Infinity",
        ),
        # Beyond a float's range: pydantic reads it as infinite, the message says 1e400.
        (
            '{"type": "Push", "name": "a", "weight": 1e400}',
            f"weight: expected {FINITE}, got 1e400",
        ),
    ],
)
def test_a_declared_float_refuses_nan_and_infinity(body: str, problem: str) -> None:
    with pytest.raises(InvalidJson) as refused:
        CODEC.input.decode(body.encode())
    assert refused.value.problems == (problem,)


@pytest.mark.parametrize(
    ("body", "token"),
    [
        ('{"type": "Push", "name": "a", "meta": {"x": NaN}}', "NaN}"),
        ('{"type": "Push", "name": "NaN", "meta": {"x": [1, -Infinity]}}', "-Infinity]"),
        ('{"type": "Push",\n "name": "Infinity",\n "meta": {"NaN": NaN}}', "NaN}"),
    ],
)
def test_nan_and_infinity_anywhere_else_are_refused_with_where(body: str, token: str) -> None:
    line = body[: body.index(token)].count("\n") + 1
    column = body.index(token) - body.rfind("\n", 0, body.index(token))
    with pytest.raises(InvalidJson) as refused:
        CODEC.input.decode(body.encode())
    assert refused.value.problems == (
        f"the body is not JSON: {token[:-1]} at line {line} column {column}; expected {FINITE}",
    )


def test_the_words_nan_and_infinity_in_strings_are_text() -> None:
    body = b'{"type": "Push", "name": "NaN", "meta": {"Infinity": "-Infinity"}}'
    assert CODEC.input.decode(body) == Push("NaN", 1.0, {"Infinity": "-Infinity"})
    assert CODEC.output.encode(Job("NaN Infinity", 2.5)) == (
        b'{"type":"Job","name":"NaN Infinity","weight":2.5}'
    )


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), float("-inf")])
def test_an_output_holding_a_nan_is_a_mismatch_not_null(weight: float) -> None:
    with pytest.raises(OutputMismatch) as refused:
        CODEC.output.encode(Job("j", weight))
    assert str(refused.value) == (
        "JobQueue's output type is machines.jobqueue.Count | machines.jobqueue.Job | "
        "machines.jobqueue.Full | machines.jobqueue.Empty, which does not allow "
        f"Job Job(name='j', weight={weight!r}) (JSON has no NaN or Infinity)"
    )


@pytest.mark.parametrize("tp", [float, Any, dict[str, Any], list[float | None]])
def test_a_nan_is_found_in_any_output_type_that_could_hold_one(tp: Any) -> None:
    value = [float("nan")] if tp == list[float | None] else float("nan")
    value = {"x": value} if tp == dict[str, Any] else value
    with pytest.raises(OutputMismatch, match=r"\(JSON has no NaN or Infinity\)$"):
        codec_for(tp).encode(value)


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


@pytest.mark.parametrize(
    ("output", "shown"),
    [
        ({1, 2}, "set {1, 2}"),
        (b"\xff", "bytes b'\\xff'"),
        (Unprintable(), "Unprintable <Unprintable, repr() raised RuntimeError>"),
        # JSON allows it, but no reader of ours reads it back (tests/test_json_gaps.py).
        (
            Count(10**5000),
            "Count <Count, repr() raised ValueError> (an integer of more than 4300 digits, "
            "which JSON readers such as pydantic's and Python's refuse)",
        ),
    ],
)
def test_an_output_the_type_does_not_allow_is_a_mismatch(output: Any, shown: str) -> None:
    with pytest.raises(OutputMismatch) as refused:
        CODEC.output.encode(output)
    assert str(refused.value).endswith(f"which does not allow {shown}")
