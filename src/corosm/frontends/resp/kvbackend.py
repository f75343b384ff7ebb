"""RESP ops to the key-value machine's inputs, and its outputs back to replies.

Theory of operation
-------------------
The only module of the RESP front end that knows :mod:`corosm.apps.kv`. Each
op becomes exactly one input (so ``MSET`` is one ``WriteMany``, one journal
record, atomic), and each output maps to the reply Redis gives for that
command. A ``Rejected`` output (INCR of a non-integer) is the machine saying
"no" to the client: it becomes an ``-ERR`` reply with Redis's wording.
"""

from __future__ import annotations

from typing import Any

from corosm.apps.kv import inputs as kv
from corosm.apps.kv.outputs import Count, IntValue, Ok, Rejected, SetOutcome, Value, Values
from corosm.errors import InternalError
from corosm.frontends.resp import ops
from corosm.frontends.resp.protocol import ErrorReply, Reply, SimpleString

__all__ = ["KVBackend"]

_OK = SimpleString("OK")


class KVBackend:
    """The RESP :class:`~corosm.frontends.resp.ops.Backend` of the key-value machine."""

    def to_input(self, op: ops.Op) -> kv.Input:
        match op:
            case ops.Get(key):
                return kv.Read(key)
            case ops.MGet(keys):
                return kv.ReadMany(keys)
            case ops.Set(key, value, "", False):
                return kv.Write(key, value)  # the plain SET: a Put record, no outcome
            case ops.Set(key, value, condition, get):
                return kv.SetIf(key, value, condition == "NX", condition == "XX", get)
            case ops.MSet(pairs):
                return kv.WriteMany(pairs)
            case ops.Del(keys):
                return kv.DeleteMany(keys)
            case ops.Exists(keys):
                return kv.Exists(keys)
            case ops.IncrBy(key, delta):
                return kv.IncrBy(key, delta)
            case ops.Append(key, value):
                return kv.AppendBytes(key, value)
            case ops.Strlen(key):
                return kv.StrLen(key)
            case ops.DbSize():
                return kv.Size()
            case ops.FlushAll():
                return kv.Reset()
        raise InternalError(f"no key-value input for RESP op {op!r:.80}")

    def to_reply(self, op: ops.Op, output: Any) -> Reply:
        match output:
            case Ok():
                return _OK
            case Value(value):
                return value
            case Values(values):
                return list(values)
            case Count(n) | IntValue(n):
                return n
            case SetOutcome(stored, old):
                assert isinstance(op, ops.Set)
                if op.get:
                    return old
                return _OK if stored else None
            case Rejected(_, message):
                return ErrorReply(f"ERR {message}")
        raise InternalError(f"the key-value machine answered {op!r:.60} with {output!r:.60}")
