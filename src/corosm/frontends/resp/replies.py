"""The key-value machine's outputs as Redis replies.

Theory of operation
-------------------
:mod:`~corosm.frontends.resp.commands` turns a command into one input of the
key-value machine (:mod:`corosm.apps.kv.inputs`); the machine's output says
what happened in the machine's own terms. This module is the only place that
knows how Redis words each outcome: ``SetOutcome`` is ``+OK``, a null or the
old value depending on ``SET``'s ``GET`` option; ``Rejected`` is an ``-ERR``
with Redis's text; counts and integers are ``:n``. The semantics themselves
(what ``SET NX`` or ``INCR`` does) live in the machine and its reference model
:mod:`corosm.apps.kv.model`, not here.

:func:`encode_output` is on the hot path: the two outputs of ``GET`` and plain
``SET`` (``Value`` and ``Ok``) are encoded straight to bytes; every other one
goes through :func:`reply_for` and the general encoder. :func:`encode_answers`
encodes the output of an input that answers a run of commands (see
:func:`corosm.frontends.resp.commands.run_input`): one reply per command.
"""

from __future__ import annotations

from typing import Final

from corosm.apps.kv.inputs import Input, SetIf
from corosm.apps.kv.outputs import (
    Count,
    IntValue,
    Ok,
    Rejected,
    SetOutcome,
    Value,
    Values,
)
from corosm.errors import InternalError
from corosm.frontends.resp.protocol import (
    NULL_BULK,
    NULL_RESP3,
    OK,
    ErrorReply,
    Reply,
    SimpleString,
    encode_bulk,
    encode_reply,
)

__all__ = ["encode_answers", "encode_output", "reply_for"]

_OK: Final = SimpleString("OK")


def reply_for(input: Input, output: object) -> Reply:
    """The reply Redis gives to the command that became ``input``, given its ``output``.

    Anything but an :data:`~corosm.apps.kv.outputs.Output` is a bug of the
    machine: :class:`~corosm.errors.InternalError`, saying what it answered.
    """
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
            if isinstance(input, SetIf) and input.return_old:
                return old
            return _OK if stored else None
        case Rejected(_, message):
            return ErrorReply(f"ERR {message}")
    raise InternalError(f"the key-value machine answered {input!r:.60} with {output!r:.60}")


def encode_output(input: Input, output: object, resp3: bool = False) -> bytes:
    """:func:`reply_for`, encoded (RESP3 when ``resp3``): ``encode_answers(..., 1, ...)``."""
    return encode_answers(input, output, 1, resp3)


def encode_answers(input: Input, output: object, count: int, resp3: bool = False) -> bytes:
    """The replies, one per command, to the ``count`` commands that became ``input``.

    ``count`` is 1 for a single command; more for a run (see
    :func:`corosm.frontends.resp.commands.run_input`): the ``Values`` of a
    run of GETs is one bulk reply per key, the ``Ok`` of a run of SETs one
    ``+OK`` per pair. ``Value``, ``Values`` and ``Ok`` (GET and plain SET)
    are encoded here straight to bytes; every other output goes through
    :func:`reply_for` and the general encoder.
    """
    if type(output) is Value and count == 1:
        value = output.value
        if value is None:
            return NULL_RESP3 if resp3 else NULL_BULK
        return encode_bulk(value)
    if type(output) is Ok:
        return OK * count
    if type(output) is Values and count > 1:
        return _bulks(output.values, NULL_RESP3 if resp3 else NULL_BULK)
    return encode_reply(reply_for(input, output), resp3) * count


def _bulks(values: tuple[bytes | None, ...], null: bytes) -> bytes:
    """One bulk string per value (``null`` for None), joined."""
    return b"".join([null if value is None else encode_bulk(value) for value in values])
