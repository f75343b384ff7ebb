"""The key-value machine's fast paths (Put decode and apply) agree with the general ones."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corosm.apps.kv.machine import KVMachine, KVState, apply_record
from corosm.apps.kv.outputs import OK, Count
from corosm.apps.kv.records import AppendTo, Put, decode_record, encode_record
from corosm.errors import DataError


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


def test_apply_put_fast_path_and_subclass_give_the_same_state() -> None:
    class LoudPut(Put):
        __slots__ = ()

    state = KVState()
    state.last_outcome = Count(7)
    apply_record(state, Put(b"a", b"1"))
    assert state.data == {b"a": b"1"} and state.last_outcome is OK
    state.last_outcome = Count(7)
    apply_record(state, LoudPut(b"b", b"2"))
    assert state.data == {b"a": b"1", b"b": b"2"} and state.last_outcome is OK
    apply_record(state, AppendTo(b"a", b"x"))
    assert state.data[b"a"] == b"1x"


def test_machine_methods_are_the_codec_functions() -> None:
    m = KVMachine()
    record = Put(b"k", b"v")
    assert m.decode_record(m.encode_record(record)) == record
    assert m.apply(KVState(), record).data == {b"k": b"v"}
