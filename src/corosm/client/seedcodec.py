"""The client's half of the seed protocol: requests out, replies in.

The seed speaks Haskell ``show``/``read`` syntax over HTTP: a request body is
``Write "x" 1`` or ``Read "x"``, a reply body is ``Ok``, ``Result (Just 1)``,
``Result (Just (-5))`` or ``Result Nothing``. To stay byte-compatible with the
seed's own Haskell client we encode exactly as GHC's ``show`` does:

* strings go through ``showLitString``: ``"`` and ``\\`` are escaped, the
  control characters get their mnemonic (``\\n``, ``\\SOH``, ``\\DEL``), every
  code point above 127 becomes ``\\<decimal>``, and ``\\&`` separates an escape
  from a following character that would otherwise extend it (a digit after a
  numeric escape, an ``H`` after ``\\SO``). The body is therefore pure ASCII.
* a negative int is parenthesised, as a derived ``Show`` instance does for an
  argument of a constructor (``Write "x" (-5)``).

The string escaping itself is the key-value app's ``show_string``
(:mod:`corosm.apps.kv.seed`), the same function the server's tests read back
with ``read_string``: one codec for both ends. This module adds what only a
client needs: argument checks before any I/O, request bodies, and a parser for
the four reply forms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from corosm.apps.kv.seed import show_int, show_string
from corosm.client.errors import InvalidRequest, ProtocolError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def encode_haskell_string(text: str) -> str:
    """Return ``show text`` as GHC prints it, quotes included (pure ASCII)."""
    return show_string(text)


def encode_int(value: int) -> str:
    """A 64-bit int as a constructor argument: negative ones in parentheses."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"value must be an int, got {type(value).__name__}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidRequest(f"value {value} is outside the 64-bit range {INT64_MIN}..{INT64_MAX}")
    return show_int(value)


def _check_key(key: str) -> str:
    if not isinstance(key, str):
        raise InvalidRequest(f"seed keys are str, got {type(key).__name__}")
    return key


def encode_write(key: str, value: int) -> bytes:
    """The body of a seed ``Write`` request."""
    return f"Write {encode_haskell_string(_check_key(key))} {encode_int(value)}".encode("ascii")


def encode_read(key: str) -> bytes:
    """The body of a seed ``Read`` request."""
    return f"Read {encode_haskell_string(_check_key(key))}".encode("ascii")


@dataclass(frozen=True, slots=True)
class SeedOk:
    """The reply ``Ok`` (a Write was applied)."""


@dataclass(frozen=True, slots=True)
class SeedResult:
    """The reply ``Result (Just n)`` or ``Result Nothing`` (``value`` is None)."""

    value: int | None


SeedReply = SeedOk | SeedResult

# Whitespace is free around tokens in Haskell's read, so allow it everywhere.
_RESULT_JUST = re.compile(
    rb"\s*Result\s*\(\s*Just\s+(?:(\d+)|\(\s*(-\d+)\s*\)|(-\d+))\s*\)\s*", re.ASCII
)
_RESULT_NOTHING = re.compile(rb"\s*Result\s+Nothing\s*", re.ASCII)
_OK = re.compile(rb"\s*Ok\s*", re.ASCII)


def parse_seed_reply(body: bytes) -> SeedReply:
    """Parse a seed reply body; raise :class:`ProtocolError` naming what was expected."""
    if _OK.fullmatch(body):
        return SeedOk()
    if _RESULT_NOTHING.fullmatch(body):
        return SeedResult(None)
    match = _RESULT_JUST.fullmatch(body)
    if match is None:
        shown = body[:80].decode("utf-8", "replace")
        raise ProtocolError(
            f"unexpected seed reply {shown!r}: expected 'Ok', 'Result (Just <int>)'"
            " or 'Result Nothing'"
        )
    digits = next(group for group in match.groups() if group is not None)
    # Bound the digits before int(): it refuses more than 4300 of them with a bare ValueError.
    value = int(digits) if len(digits.lstrip(b"-0")) <= 19 else None
    if value is None or not INT64_MIN <= value <= INT64_MAX:
        shown = digits[:40].decode("ascii") + ("..." if len(digits) > 40 else "")
        raise ProtocolError(
            f"the seed reply's value {shown} is outside the 64-bit range {INT64_MIN}..{INT64_MAX}"
        )
    return SeedResult(value)
