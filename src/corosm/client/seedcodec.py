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

Only what the client needs lives here; the server's parser is in
``corosm.apps.kv.seed``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from corosm.client.errors import InvalidRequest, ProtocolError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Names GHC uses for the ASCII control characters that have no single-letter
# escape (asciiTab in GHC.Show); the letter escapes take precedence below.
_ASCII_NAMES = (
    "NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL", "BS", "HT", "LF", "VT",
    "FF", "CR", "SO", "SI", "DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB",
    "CAN", "EM", "SUB", "ESC", "FS", "GS", "RS", "US",
)  # fmt: skip
_LETTER_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def _escape_char(ch: str) -> str:
    """One character as showLitString writes it (without the ``\\&`` guard)."""
    code = ord(ch)
    if ch in _LETTER_ESCAPES:
        return _LETTER_ESCAPES[ch]
    if code < 32:
        return "\\" + _ASCII_NAMES[code]
    if code == 127:
        return "\\DEL"
    if code > 127:
        return f"\\{code}"
    return ch


def encode_haskell_string(text: str) -> str:
    """Return ``show text`` as GHC prints it, quotes included.

    >>> encode_haskell_string('a"b\\n\\u00e9')
    '"a\\\\"b\\\\n\\\\233"'
    """
    out: list[str] = ['"']
    previous = ""
    for ch in text:
        # \& keeps "\233" followed by "4" from being read as "\2334", and
        # "\SO" followed by "H" from being read as "\SOH".
        if (
            previous.startswith("\\") and previous[1:].isdigit() and ch.isascii() and ch.isdigit()
        ) or (previous == "\\SO" and ch == "H"):
            out.append("\\&")
        previous = _escape_char(ch)
        out.append(previous)
    out.append('"')
    return "".join(out)


def encode_int(value: int) -> str:
    """A 64-bit int as a constructor argument: negative ones in parentheses."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"value must be an int, got {type(value).__name__}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidRequest(f"value {value} is outside the 64-bit range {INT64_MIN}..{INT64_MAX}")
    return f"({value})" if value < 0 else str(value)


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
    return SeedResult(int(digits))
