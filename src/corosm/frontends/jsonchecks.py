"""What pydantic's JSON reader lets through and JSON proper does not: found, and said where.

Theory of operation
-------------------
pydantic's reader (a validator's ``validate_json``, ``pydantic_core.from_json``)
keeps the last of two equal keys in an object, without a word; it reads
``NaN``, ``Infinity`` and ``-Infinity``, and a number beyond a float's range
(``1e400``) as infinite. Its writer writes a non-finite float (as ``NaN``,
with our ``ser_json_inf_nan="constants"``) and an integer of any length,
though its reader refuses one of more than :data:`MAX_DIGITS` digits. JSON
proper (RFC 8259) has none of these. A declared float refuses non-finite
numbers inside pydantic (``allow_inf_nan=False``); this module finds the
rest. It knows no declared type: :class:`~corosm.frontends.jsoncodec.JsonCodec`
decides which checks a type's requests pay for, and counts keys so that
most bodies need no second parse.

How each is found, and what it costs when it runs:

* :func:`strict_problem` (a repeated key, NaN or Infinity, a number beyond
  a float's range, in a body pydantic read): a second parse by Python's
  own reader, in C, with hooks that refuse them: a Python call per object
  (a ``dict`` of its pairs) and per float, ``str`` per integer (its text
  is kept: no limit on digits). Only when it finds one does
  :func:`_first_problem` tokenize the body (a regular expression and a
  Python loop) to say at which line and column, and only in a body of up
  to 64 KiB. The error path of a raw value's NaN calls it too, to say where.
* :func:`keys_in` (NaN or an infinity in a raw value, ``Any`` and its
  kin, as pydantic parsed it): one walk of the value, by exact type,
  skipping leaves, that also counts its objects' keys for the codec.
* :func:`non_finite` (NaN in an output pydantic wrote): two
  ``bytes.partition`` searches of the body; a parse only when one of the
  words is there (in a string, say).
* :func:`too_long_integer` (an integer of more than MAX_DIGITS digits in an
  output): only for a body longer than that; one byte looked at per
  MAX_DIGITS bytes, the digit runs through those measured, a parse only
  when a run is that long. (In a request body pydantic refuses one itself.)
* :func:`non_finite_in` (NaN or an infinity in a value the client is about
  to send): one walk of the value, naming where (``meta.x[1] is inf``).
* :func:`written` (the error path only): the body parsed again, to show a
  number as it was written (``1e400``, not ``inf``).

This module imports nothing of corosm: jsoncodec imports it, never the
reverse.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable
from typing import Any

import pydantic_core

MAX_DIGITS = 4300
"""The longest integer pydantic's JSON reader reads (fixed, whatever ``sys.set_int_max_str_digits``
says; also Python's default limit): a longer one in a body is refused, and is never sent."""

# What a NaN, an Infinity or a float beyond 1.8e308 gets, typed or not.
FINITE = "a finite number (JSON has no NaN or Infinity; a float is at most about 1.8e308)"


# -- a body that pydantic read: the strict parse -------------------------------------


class _Refused(Exception):
    """Raised by the strict parse's hooks: what JSON proper refuses, as (kind, text)."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(kind, text)
        self.problem = (kind, text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> None:
    if len(dict(pairs)) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused("key", json.dumps(key, ensure_ascii=False))
            seen.add(key)


def _no_constant(literal: str) -> None:
    raise _Refused("constant", literal)


def _finite(literal: str) -> None:
    if math.isinf(float(literal)):
        raise _Refused("number", literal)


# Python's own reader, with hooks that refuse what JSON proper has not; the
# values are not kept (an int is left as its text: no limit on its digits).
_STRICT = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_float=_finite, parse_int=str
)
_LOCATED = 64 * 1024  # characters of a body worth tokenizing to say where its problem is


def strict_problem(body: bytes) -> str | None:
    """What JSON proper refuses in ``body`` (which pydantic read), saying where; or None.

    A repeated key in an object, NaN or Infinity, a number beyond a float's
    range. Python's reader looks (in C); only when it finds one does
    :func:`_first_problem` tokenize the body to say where, in a body of up
    to 64 KiB (a bigger one costs more than its parse: the problem is named
    without its place).
    """
    text = body.decode()
    try:
        _STRICT.decode(text)
    except _Refused as refused:
        located = _first_problem(text) if len(text) <= _LOCATED else None
        return located or _problem(*refused.problem, "")
    except (ValueError, RecursionError):  # what pydantic read and Python's reader does not
        return _first_problem(text) if len(text) <= _LOCATED else None
    return None


def _problem(kind: str, text: str, where: str) -> str:
    """The message for a problem of :func:`strict_problem` (``where``: "at line L column C")."""
    at = f" at {where}" if where else ""
    if kind == "key":
        return f"the body repeats the key {cut(text)}{at}; expected each key once in an object"
    if kind == "constant":
        return f"the body is not JSON: {text}{at}; expected {FINITE}"
    return f"the number {cut(text)}{at} is out of a float's range; expected {FINITE}"


# A JSON token: a string (and the colon that makes it a key), a bare word, a bracket.
_TOKEN = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")(\s*:)?|[^\s{}\[\],:"]+|[{}\[\]]')
_NOT_NUMBERS = ("true", "false", "null")


def _first_problem(text: str) -> str | None:
    """The first repeated key or non-finite number in ``text`` (JSON that pydantic read)."""
    objects: list[set[str]] = []  # the keys seen so far in each open object (or array)
    for token in _TOKEN.finditer(text):
        word = token.group()
        if token.group(2) is not None:
            key = json.loads(token.group(1))
            if not objects:  # not so in JSON that pydantic read; said for mypy's sake
                return None
            if key in objects[-1]:
                return _problem("key", token.group(1), _line_column(text, token.start()))
            objects[-1].add(key)
        elif word in ("{", "["):
            objects.append(set())
        elif word in ("}", "]") and objects:
            objects.pop()
        elif word[0] != '"' and word not in _NOT_NUMBERS and not word.lstrip("-").isdigit():
            kind = _non_finite_kind(word)
            if kind is not None:
                return _problem(kind, word, _line_column(text, token.start()))
    return None


def _non_finite_kind(word: str) -> str | None:
    try:
        number = float(word)
    except ValueError:
        return None
    if math.isnan(number) or word.lstrip("-") == "Infinity":
        return "constant"
    return "number" if math.isinf(number) else None


def _line_column(text: str, at: int) -> str:
    return f"line {text.count(chr(10), 0, at) + 1} column {at - text.rfind(chr(10), 0, at)}"


# -- a raw value, as pydantic parsed it ----------------------------------------------


def keys_in(value: Any) -> int:
    """The keys of the objects in ``value`` (JSON as pydantic parsed it); -1 if it holds a NaN.

    Exact types, not isinstance: parsed JSON holds no subclasses, and this
    runs on every raw value of every request.
    """
    kind = type(value)
    if kind is float:
        return 0 if math.isfinite(value) else -1
    items: Iterable[Any]
    if kind is dict:
        keys, items = len(value), value.values()
    elif kind in _ARRAYS:
        keys, items = 0, value
    else:
        return 0
    for item in items:
        if type(item) not in _LEAVES:
            inner = keys_in(item)
            if inner < 0:
                return inner
            keys += inner
    return keys


_ARRAYS = frozenset((list, tuple, set, frozenset))
_LEAVES = frozenset((str, int, bool, type(None)))  # in parsed JSON: nothing to count or refuse


# -- an output, as pydantic wrote it -------------------------------------------------


def non_finite(body: bytes) -> bool:
    """Whether ``body`` (an output, as pydantic wrote it) holds a NaN or an Infinity.

    Two searches of the body, no parse unless one of the words is in it (in
    a string, say): then a strict parse says whether it is a number. The
    searches are ``partition``, the cheapest call: ``in`` first tries the
    word as an int (a TypeError raised and cleared), ``find`` parses a
    format string for its arguments.
    """
    if not body.partition(b"NaN")[1] and not body.partition(b"Infinity")[1]:
        return False
    try:
        pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:  # or an integer too long, before any NaN: see too_long_integer
        return "number out of range" not in str(exc)
    return False


_DIGITS = b"0123456789"
_DIGIT_RUN = re.compile(rb"[0-9]*")


def too_long_integer(body: bytes) -> bool:
    """Whether ``body`` (as pydantic wrote it) holds an integer of more than MAX_DIGITS digits.

    A run of that many digits covers one of the offsets 0, MAX_DIGITS,
    2 * MAX_DIGITS...: only the runs through those are measured, and only a
    body with a run that long is parsed (its digits may be a string's).
    """
    for at in range(0, len(body), MAX_DIGITS):
        if body[at] not in _DIGITS:
            continue
        before = body[max(0, at - MAX_DIGITS) : at]
        run = len(before) - len(before.rstrip(_DIGITS))
        match = _DIGIT_RUN.match(body, at)
        run += (match.end() if match else at) - at
        if run > MAX_DIGITS:
            try:
                pydantic_core.from_json(body)
            except ValueError as exc:
                return "number out of range" in str(exc)
            return False
    return False


# -- a value the client is about to send ---------------------------------------------


def non_finite_in(value: Any, path: str) -> str | None:
    """Where ``value`` (an input to send) holds a NaN or an infinity: ``"meta.x[1] is inf"``."""
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path or 'the input'} is {value!r}"
    items: Iterable[tuple[Any, Any]]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value) if f.init]
    elif isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list | tuple | set | frozenset):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        step = f"[{key!r}]" if not isinstance(key, str) else f".{key}" if path else key
        where = non_finite_in(item, path + step)
        if where is not None:
            return where
    return None


# -- the error path ------------------------------------------------------------------


class _Written(str):
    """A number as a body wrote it (see :func:`written`)."""


def written(body: bytes, loc: Iterable[Any]) -> str | None:
    """How ``body`` wrote the number at ``loc`` (pydantic reads ``1e400`` as infinite).

    The error path only: the body is parsed again, keeping each number's
    text, and followed along ``loc``; parts that name no key or index of
    the body (pydantic's names for union members) are passed over.
    """
    try:
        node = json.loads(body, parse_int=_Written, parse_float=_Written, parse_constant=_Written)
    except (ValueError, RecursionError):
        return None
    for part in loc:
        if isinstance(node, list) and isinstance(part, int):
            node = node[part] if -len(node) <= part < len(node) else node
        elif isinstance(node, dict) and part in node:
            node = node[part]
    return node if isinstance(node, _Written) else None


def cut(text: str, limit: int = 60) -> str:
    """``text``, or its first ``limit`` characters ending in "..." (for a message)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
