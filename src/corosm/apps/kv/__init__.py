"""The key-value store: its machine, inputs and outputs, codecs and reference model.

* :mod:`~corosm.apps.kv.inputs` and :mod:`~corosm.apps.kv.outputs`: the values
  front ends exchange with the machine.
* :mod:`~corosm.apps.kv.machine`: :class:`KVMachine`, its state and ``apply``.
* :mod:`~corosm.apps.kv.records`: journal records, record and snapshot codecs.
* :mod:`~corosm.apps.kv.seed`: the seed's Haskell ``read``/``show`` wire format.
* :mod:`~corosm.apps.kv.model`: the sequential reference model, for tests.
"""

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
from corosm.apps.kv.machine import KVMachine
from corosm.apps.kv.outputs import (
    OK,
    Count,
    IntValue,
    Ok,
    Output,
    Rejected,
    RejectReason,
    SetOutcome,
    Value,
    Values,
)
from corosm.apps.kv.records import decode_record, encode_record, parse_int64
from corosm.apps.kv.seed import (
    SeedSyntaxError,
    SeedValueError,
    output_to_seed_reply,
    seed_request_to_input,
)
from corosm.apps.kv.state import KVState, apply_record

__all__ = [
    "OK",
    "AppendBytes",
    "Count",
    "Delete",
    "DeleteMany",
    "Exists",
    "Input",
    "IncrBy",
    "IntValue",
    "KVMachine",
    "KVState",
    "Ok",
    "Output",
    "Read",
    "ReadMany",
    "Rejected",
    "RejectReason",
    "Reset",
    "SeedSyntaxError",
    "SeedValueError",
    "SetIf",
    "SetOutcome",
    "Size",
    "StrLen",
    "Value",
    "Values",
    "Write",
    "WriteMany",
    "apply_record",
    "decode_record",
    "encode_record",
    "output_to_seed_reply",
    "parse_int64",
    "seed_request_to_input",
]
