"""The key-value machine's fast paths agree with the general ones (Put, many-key checks)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corosm.apps.kv.basics import need_key
from corosm.apps.kv.inputs import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    Read,
    ReadMany,
    Write,
    WriteMany,
    _need_pair,
)
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import OK, Count
from corosm.apps.kv.records import (
    AppendTo,
    Clear,
    Increment,
    Put,
    PutIf,
    PutMany,
    Record,
    Remove,
    decode_record,
    encode_record,
)
from corosm.apps.kv.state import KVState, apply_payloads, apply_record
from corosm.errors import DataError, LimitExceeded, UsageError


@given(st.binary(max_size=30), st.binary(max_size=30))
def test_put_decodes_the_same_from_any_buffer_type(key: bytes, value: bytes) -> None:
    blob = encode_record(Put(key, value))
    for buffer in (blob, bytearray(blob), memoryview(blob)):
        record = decode_record(buffer)  # type: ignore[arg-type]
        assert record == Put(key, value)
        assert type(record.key) is bytes and type(record.value) is bytes  # type: ignore[union-attr]


def test_put_whose_key_length_runs_past_the_end_is_an_error() -> None:
    blob = encode_record(Put(b"abc", b""))
    with pytest.raises(DataError, match="truncated"):
        decode_record(blob[:-1])  # key length 3, only 2 key bytes left


def test_apply_takes_a_put_by_its_fast_path_and_other_records_by_the_match() -> None:
    # The records are final classes (and compiled ones cannot be subclassed),
    # so a Put is always exactly a Put: the fast path is its only way in.
    state = KVState()
    state.last_outcome = Count(7)
    apply_record(state, Put(b"a", b"1"))
    assert state.data == {b"a": b"1"} and state.last_outcome is OK
    apply_record(state, AppendTo(b"a", b"x"))
    assert state.data[b"a"] == b"1x" and state.last_outcome == Count(2)


def test_machine_methods_are_the_codec_functions() -> None:
    m = KVMachine()
    record = Put(b"k", b"v")
    assert m.decode_record(m.encode_record(record)) == record
    assert m.apply(KVState(), record).data == {b"k": b"v"}


# apply_payloads (KVMachine.apply_encoded, what recovery runs) against the
# definition: decode_record then apply_record, one record at a time. Few keys
# and small integer values, so that records meet on a key and Increment finds
# integers as well as other bytes.
KEYS = st.sampled_from([b"a", b"b", b"", b"key"])
VALUES = st.one_of(st.sampled_from([b"1", b"-7", b"x", b""]), st.binary(max_size=8))
KV_RECORDS: st.SearchStrategy[Record] = st.one_of(
    st.builds(Put, KEYS, VALUES),
    st.builds(PutMany, st.lists(st.tuples(KEYS, VALUES), max_size=3).map(tuple)),
    st.builds(
        lambda k, v, mode: PutIf(k, v, mode == 1, mode == 2), KEYS, VALUES, st.integers(0, 2)
    ),
    st.builds(Remove, st.lists(KEYS, max_size=3).map(tuple)),
    st.just(Clear()),
    st.builds(Increment, KEYS, st.integers(-(2**63), 2**63 - 1)),
    st.builds(AppendTo, KEYS, VALUES),
)


@given(st.dictionaries(KEYS, VALUES), st.lists(KV_RECORDS, max_size=30))
def test_apply_payloads_is_decode_then_apply_one_by_one(
    start: dict[bytes, bytes], records: list[Record]
) -> None:
    payloads = [encode_record(record) for record in records]
    one_by_one = KVState(dict(start))
    outcomes = []
    for payload in payloads:
        one_by_one = apply_record(one_by_one, decode_record(payload))
        outcomes.append(one_by_one.last_outcome)
    batched = apply_payloads(KVState(dict(start)), iter(payloads))
    assert batched.data == one_by_one.data
    assert list(batched.data) == list(one_by_one.data)  # the same insertion order too
    assert batched.last_outcome == one_by_one.last_outcome
    # Every prefix ends with the outcome of its own last record.
    for cut, outcome in enumerate(outcomes, start=1):
        prefix = apply_payloads(KVState(dict(start)), iter(payloads[:cut]))
        assert prefix.last_outcome == outcome


def test_machine_apply_encoded_is_apply_payloads() -> None:
    state = KVMachine().apply_encoded(KVState(), iter([encode_record(Put(b"k", b"v"))]))
    assert state.data == {b"k": b"v"} and state.last_outcome is OK


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # no tag
        b"\x01\x00",  # a Put cut inside its key length
        b"\x01\x09\x00\x00\x00abc",  # a Put whose key runs past its end
        b"\x00",  # no such tag
    ],
)
def test_apply_payloads_raises_where_decode_record_does(payload: bytes) -> None:
    with pytest.raises(DataError):
        decode_record(payload)
    state = KVState({b"a": b"1"})
    # Not always DataError: recovery decodes the payload again to say what is wrong.
    with pytest.raises((DataError, IndexError, struct.error)):
        apply_payloads(state, iter([encode_record(Put(b"b", b"2")), payload]))
    assert state.data == {b"a": b"1", b"b": b"2"}  # the records before it were applied


# --------------------------------------------------------------------------- many-key inputs

_ITEMS = st.one_of(
    st.binary(max_size=3),
    st.sampled_from([b"k" * MAX_KEY_BYTES, b"k" * (MAX_KEY_BYTES + 1), "str", 7, bytearray(b"b")]),
)


def _outcome(build: Callable[[], object]) -> str:
    try:
        build()
    except UsageError as refused:
        return f"{type(refused).__name__}: {refused}"
    return "ok"


@given(st.lists(_ITEMS, max_size=6))
def test_many_keys_are_checked_as_each_key_alone(keys: list[Any]) -> None:
    """ReadMany's inline test refuses what need_key refuses, with its message."""

    def one_by_one() -> None:
        for key in keys:
            need_key("each of ReadMany.keys", key)

    assert _outcome(lambda: ReadMany(tuple(keys))) == _outcome(one_by_one)


@given(
    st.lists(
        st.one_of(
            st.tuples(
                _ITEMS,
                st.one_of(
                    _ITEMS, st.sampled_from([b"v" * MAX_VALUE_BYTES, b"v" * (MAX_VALUE_BYTES + 1)])
                ),
            ),
            st.sampled_from([(b"k",), (b"k", b"v", b"w"), [b"k", b"v"], b"kv", (b"k", b"v" * 3)]),
        ),
        max_size=5,
    )
)
def test_many_pairs_are_checked_as_each_pair_alone(pairs: list[Any]) -> None:
    """WriteMany's inline test refuses what _need_pair refuses, with its message."""

    def one_by_one() -> None:
        for pair in pairs:
            _need_pair(pair)

    assert _outcome(lambda: WriteMany(tuple(pairs))) == _outcome(one_by_one)


_SIZES = st.sampled_from([0, 1, 2, MAX_KEY_BYTES, MAX_KEY_BYTES + 1])


@given(_SIZES, st.sampled_from([0, 1, MAX_VALUE_BYTES, MAX_VALUE_BYTES + 1]))
def test_read_and_write_build_within_the_limits_and_refuse_outside(
    key_size: int, value_size: int
) -> None:
    """Compiled or not, Read and Write check the limits and build frozen values."""
    key, value = b"k" * key_size, b"v" * value_size
    key_fits = 0 < key_size <= MAX_KEY_BYTES
    if not key_fits:
        with pytest.raises(LimitExceeded, match="key"):
            Read(key)
        with pytest.raises(LimitExceeded, match="key"):
            Write(key, value)
        return
    read = Read(key)
    assert type(read) is Read and read.key == key and read == Read(key)
    assert hash(read) == hash(Read(key))
    if value_size > MAX_VALUE_BYTES:
        with pytest.raises(LimitExceeded, match="value"):
            Write(key, value)
        return
    write = Write(key, value)
    assert type(write) is Write and (write.key, write.value) == (key, value)
    assert write == Write(key, value) and hash(write) == hash(Write(key, value))
    with pytest.raises(AttributeError):  # still frozen
        write.key = b"other"  # type: ignore[misc]


@pytest.mark.parametrize("bad", ["k", bytearray(b"k"), memoryview(b"k"), 1])
def test_read_and_write_refuse_what_is_not_bytes_naming_the_field(bad: Any) -> None:
    """A UsageError that names the field, in the compiled build too (not mypyc's TypeError)."""
    with pytest.raises(UsageError, match=r"Read\.key must be bytes"):
        Read(bad)
    with pytest.raises(UsageError, match=r"Write\.value must be bytes"):
        Write(b"k", bad)
    with pytest.raises(UsageError, match=r"Write\.key must be bytes"):
        Write(bad, b"v")
