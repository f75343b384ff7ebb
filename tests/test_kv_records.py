"""Journal records and snapshots of the key-value machine: codecs and integers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corosm.apps.kv.machine import KVMachine
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
    decode_snapshot,
    encode_record,
    encode_snapshot,
    parse_int64,
)
from corosm.apps.kv.state import KVState
from corosm.errors import DataError

B = st.binary(max_size=20)
RECORDS: st.SearchStrategy[Record] = st.one_of(
    st.builds(Put, B, B),
    st.builds(PutMany, st.lists(st.tuples(B, B), max_size=4).map(tuple)),
    st.builds(lambda k, v, mode: PutIf(k, v, mode == 1, mode == 2), B, B, st.integers(0, 2)),
    st.builds(Remove, st.lists(B, max_size=4).map(tuple)),
    st.just(Clear()),
    st.builds(Increment, B, st.integers(-(2**63), 2**63 - 1)),
    st.builds(AppendTo, B, B),
)


@given(RECORDS)
def test_records_round_trip(record: Record) -> None:
    assert decode_record(encode_record(record)) == record


@given(RECORDS, st.data())
def test_truncated_or_extended_records_fail_cleanly(record: Record, data: st.DataObject) -> None:
    blob = encode_record(record)
    cut = data.draw(st.integers(0, len(blob) - 1))
    try:
        decoded = decode_record(blob[:cut])
    except DataError:
        pass
    else:
        # Only a record whose last field runs to the end may decode when cut.
        assert isinstance(decoded, Put | PutIf | AppendTo)
        assert decoded != record


@given(st.binary(max_size=40))
def test_garbage_decodes_or_raises_data_error(blob: bytes) -> None:
    try:
        record = decode_record(blob)
    except DataError as exc:
        assert "record" in str(exc)
    else:
        assert encode_record(record) == blob  # the codec is canonical


def test_record_errors_say_what_is_wrong() -> None:
    with pytest.raises(DataError, match="empty"):
        decode_record(b"")
    with pytest.raises(DataError, match="unknown key-value record tag 99"):
        decode_record(b"\x63abc")
    with pytest.raises(DataError, match="truncated"):
        decode_record(encode_record(Put(b"key", b"v"))[:3])
    with pytest.raises(DataError, match="stray bytes"):
        decode_record(encode_record(Clear()) + b"x")
    with pytest.raises(DataError, match="not a key-value journal record"):
        encode_record("Put")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="unknown key-value record tag 0"):
        decode_record(b"\x00")
    with pytest.raises(DataError, match="unknown key-value record tag 255"):
        decode_record(b"\xff\x00")


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_decoded_put_is_a_plain_frozen_put(wrap: type) -> None:
    # Whatever shortcut the decoder takes, the result must be indistinguishable
    # from Put(key, value).
    record = decode_record(wrap(encode_record(Put(b"key", b"value"))))
    assert type(record) is Put
    assert record == Put(b"key", b"value")
    assert hash(record) == hash(Put(b"key", b"value"))
    assert repr(record) == repr(Put(b"key", b"value"))
    assert type(record.key) is bytes and type(record.value) is bytes
    with pytest.raises(AttributeError):  # FrozenInstanceError
        record.key = b"other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"0", 0), (b"1", 1), (b"-1", -1), (b"42", 42),
        (b"9223372036854775807", 2**63 - 1), (b"-9223372036854775808", -(2**63)),
        (b"9223372036854775808", None), (b"-9223372036854775809", None),
        (b"", None), (b"-", None), (b"-0", None), (b"007", None), (b"+1", None),
        (b" 1", None), (b"1 ", None), (b"1.0", None), (b"0x1", None), (b"\xd9\xa1", None),
        (b"1" * 21, None),
    ],
)  # fmt: skip
def test_parse_int64_takes_canonical_decimal_only(data: bytes, value: int | None) -> None:
    assert parse_int64(data) == value


@given(st.integers(-(2**63), 2**63 - 1))
def test_every_int64_round_trips_through_its_decimal_bytes(n: int) -> None:
    assert parse_int64(str(n).encode()) == n


@given(st.dictionaries(B, B, max_size=30))
def test_snapshots_round_trip(data: dict[bytes, bytes]) -> None:
    assert decode_snapshot(encode_snapshot(data)) == data


def test_damaged_snapshots_are_refused() -> None:
    blob = encode_snapshot({b"k": b"v", b"key2": b"value2"})
    with pytest.raises(DataError, match="CRC32"):
        decode_snapshot(blob[:20] + bytes([blob[20] ^ 1]) + blob[21:])
    with pytest.raises(DataError, match="CRC32"):
        decode_snapshot(blob[:-5] + blob[-4:])
    with pytest.raises(DataError, match="not a key-value snapshot"):
        decode_snapshot(b"XXXX" + blob[4:])
    with pytest.raises(DataError, match="too short"):
        decode_snapshot(b"CKVS")


def test_snapshot_of_many_keys_round_trips_through_the_machine() -> None:
    machine = KVMachine()
    state = KVState({b"key:%d" % i: b"value:%d" % i for i in range(200_000)})
    restored = machine.restore(machine.snapshot(state))
    assert restored.data == state.data
    assert restored is not state


def test_copy_state_is_independent() -> None:
    machine = KVMachine()
    state = KVState({b"a": b"1"})
    copy = machine.copy_state(state)
    state.data[b"a"] = b"2"
    state.data[b"b"] = b"3"
    assert copy.data == {b"a": b"1"}
