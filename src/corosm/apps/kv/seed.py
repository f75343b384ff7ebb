"""The seed's wire protocol, byte for byte: Haskell ``read`` in, ``show`` out.

Requests are what GHC's derived ``Read`` instance of the seed's ``Input``
accepts: ``Write "x" 1``, ``Write "x" -5``, ``Write "x" (-5)``, ``Read "x"``,
with whitespace anywhere between tokens and redundant parentheses around the
whole or any argument, as ``read`` allows. Ints are decimal, ``0x``/``0o``
literals or a ``-`` lexeme before one; a value outside int64 is an error (the
seed wraps it silently). Strings take every Haskell escape: ``\\n``-style,
decimal ``\\1234``, ``\\x7f``, ``\\o17``, ``\\^A``, the ASCII names ``\\NUL``
.. ``\\DEL`` (``\\SOH`` wins over ``\\SO`` + ``H``), the empty ``\\&`` and
gaps ``\\   \\``.

Replies are what ``show`` prints: ``Ok``, ``Result (Just 1)``,
``Result (Just (-5))``, ``Result Nothing``. :func:`show_string` prints a
string exactly as ``show`` does (decimal escapes above ASCII, ``\\&`` where a
digit or ``H`` would change an escape), so ``read_string(show_string(s)) == s``.

Three paths read a request, each taking what the one before it leaves:

* exactly what ``show`` prints for a plain key (``Write "key" 123``,
  ``Write "key" (-5)``, ``Read "key"``), which is what the seed's client
  sends, is taken apart by slicing;
* the same plain forms with other whitespace, a bare ``-5`` or a number
  ``show`` would print otherwise (``007``) are matched by one regular
  expression;
* anything else goes to a small tokenizer and a descent parser, whose
  errors say what, where (line and column) and what was expected.

The parser counts parentheses in a loop rather than recursing, up to
:data:`MAX_NESTING`. The inputs it builds check the store's key limits
(:class:`~corosm.errors.LimitExceeded` for an empty or too long key).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from corosm.apps.kv.inputs import Read, Write
from corosm.apps.kv.outputs import Ok, Value
from corosm.apps.kv.records import INT64_MAX, INT64_MIN, parse_int64
from corosm.errors import UsageError

REQUEST_FORMS: Final = "'Write \"key\" <int>' or 'Read \"key\"'"
EXPECTED_REQUEST: Final = "expected " + REQUEST_FORMS
#: The most parentheses around a request or one of its arguments. Haskell's
#: ``read`` takes any number; no client sends more than a couple, and a bound
#: keeps a 2 MiB body of '(' from costing the event loop seconds.
MAX_NESTING: Final = 100


class SeedSyntaxError(UsageError):
    """A seed request that does not parse; the message says what, where, and what was expected."""


class SeedValueError(UsageError):
    """The stored value cannot be said in the seed protocol (it is not a decimal int64)."""


# -- show --------------------------------------------------------------------------

_ASCII_NAMES = (
    "NUL",
    "SOH",
    "STX",
    "ETX",
    "EOT",
    "ENQ",
    "ACK",
    "BEL",
    "BS",
    "HT",
    "LF",
    "VT",
    "FF",
    "CR",
    "SO",
    "SI",
    "DLE",
    "DC1",
    "DC2",
    "DC3",
    "DC4",
    "NAK",
    "SYN",
    "ETB",
    "CAN",
    "EM",
    "SUB",
    "ESC",
    "FS",
    "GS",
    "RS",
    "US",
    "SP",
)  # fmt: skip
_SHORT = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def show_string(text: str) -> str:
    """``text`` as Haskell's ``show`` prints a String, quotes included."""
    out = ['"']
    last = len(text) - 1
    for i, c in enumerate(text):
        code = ord(c)
        if c == '"':
            out.append('\\"')
        elif code > 0x7F:
            out.append(f"\\{code}")
            if i < last and "0" <= text[i + 1] <= "9":
                out.append("\\&")  # a following digit would extend the number
        elif code == 0x7F:
            out.append("\\DEL")
        elif c == "\\":
            out.append("\\\\")
        elif code >= 0x20:
            out.append(c)
        elif c in _SHORT:
            out.append(_SHORT[c])
        elif code == 0x0E:
            out.append("\\SO")
            if i < last and text[i + 1] == "H":
                out.append("\\&")  # "\SOH" would read back as one character
        else:
            out.append("\\" + _ASCII_NAMES[code])
    out.append('"')
    return "".join(out)


def show_int(n: int) -> str:
    """``n`` as ``showsPrec 11`` prints it: negative numbers in parentheses."""
    return f"({n})" if n < 0 else str(n)


def show_request(request: Write | Read) -> bytes:
    """A request as the seed's Haskell client sends it (``show`` of ``Input``)."""
    if isinstance(request, Read):
        return f"Read {show_string(_key_text(request.key))}".encode()
    n = parse_int64(request.value)
    if n is None:
        raise SeedValueError(f"value {request.value!r:.60} is not a decimal 64-bit integer")
    return f"Write {show_string(_key_text(request.key))} {show_int(n)}".encode()


def _key_text(key: bytes) -> str:
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SeedValueError(
            f"key {key!r:.60} is not UTF-8, so the seed protocol cannot name it"
        ) from exc


def output_to_seed_reply(output: object) -> bytes:
    """Render the machine's output for a seed request as ``show`` would."""
    if isinstance(output, Ok):
        return b"Ok"
    if isinstance(output, Value):
        value = output.value
        if value is None:
            return b"Result Nothing"
        if _plain_digits(value):  # show prints these digits as they are
            return b"Result (Just %s)" % value
        n = parse_int64(value)
        if n is None:
            raise SeedValueError(
                f"the stored value is not a decimal 64-bit integer ({len(value)} bytes: "
                f"{value[:40]!r}); the seed protocol can only return integers, "
                "use GET /kv/{key} for raw bytes"
            )
        return f"Result (Just {show_int(n)})".encode()
    raise SeedValueError(f"the seed protocol has no reply for {output!r:.80}")


def _plain_digits(data: bytes) -> bool:
    """``data`` is a canonical non-negative decimal of at most 18 digits (so within int64).

    Canonical as in :func:`~corosm.apps.kv.records.parse_int64`: no sign, no
    leading zero. These are the numbers whose bytes ``show`` prints unchanged.
    """
    n = len(data)
    if not 0 < n <= 18 or (data[0] == 0x30 and n > 1):
        return False
    # Compiled, a loop over at most 18 bytes: cheaper than calling isdigit.
    return all(0x30 <= byte <= 0x39 for byte in data)


# -- read ----------------------------------------------------------------------------

#: The bytes a key may hold to be read by the fast paths: printable ASCII
#: but '"' and '\', which need no escape. One rule for both: the regular
#: expression's class, and this table (1 at each byte it matches) for the scan.
_PLAIN_KEY_CLASS: Final = rb'[^"\\\x00-\x1f\x7f-\xff]'
_PLAIN_KEY: Final = bytes(
    re.fullmatch(_PLAIN_KEY_CLASS, bytes([b])) is not None for b in range(256)
)


def _key_end(body: bytes, start: int) -> int:
    """Where the plain key that starts at ``start`` ends: the index of its closing '"'.

    -1 when a byte before that quote is not in :data:`_PLAIN_KEY`, or there
    is no quote. Compiled, one pass over the key's bytes is cheaper than a
    ``find`` and a test of the key (``bytes.find`` parses its arguments
    into a tuple). The pure build pays for the loop in the interpreter,
    about 50 ns a byte: ``Read "x"`` went from 0.8 to 1.1 us there, a read
    of a 200-byte key from 0.9 to 11 us.
    """
    for i in range(start, len(body)):
        byte = body[i]
        if byte == 0x22:  # '"'
            return i
        if not _PLAIN_KEY[byte]:
            return -1
    return -1


def _shown_request(body: bytes) -> Write | Read | None:
    """``body`` parsed if it is exactly what ``show`` prints for a plain request, else None.

    That is what the seed's client sends: ``Read "k"``, ``Write "k" 5`` or
    ``Write "k" (-5)``, single spaces, a key of printable ASCII with no
    escape, a canonical value of at most 18 digits. A scan and slices cost
    about half of what the regular expression's match object and the
    value's round trip through ``int`` and ``str`` cost. None sends the body
    on to the general paths.
    """
    if body.startswith(b'Read "'):
        end = len(body) - 1
        if end > 6 and _key_end(body, 6) == end:
            return Read(body[6:end])
        return None
    if body.startswith(b'Write "'):
        end = _key_end(body, 7)
        if end > 7 and body[end + 1 : end + 2] == b" ":
            key, number = body[7:end], body[end + 2 :]
            if _plain_digits(number):
                return Write(key, number)
            if number[:2] == b"(-" and number[-1:] == b")":
                digits = number[2:-1]
                if _plain_digits(digits) and digits != b"0":  # show prints 0, never (-0)
                    return Write(key, b"-" + digits)
    return None


_FAST: Final = re.compile(
    rb'[ \t\r\n]*(?:Write[ \t\r\n]*"(%s*)"[ \t\r\n]*(-?[0-9]{1,19})'
    rb'|Read[ \t\r\n]*"(%s*)")[ \t\r\n]*' % (_PLAIN_KEY_CLASS, _PLAIN_KEY_CLASS)
)


def seed_request_to_input(body: bytes) -> Write | Read:
    """Parse a seed request body into a machine input; raise SeedSyntaxError if it is not one."""
    shown = _shown_request(body)
    if shown is not None:
        return shown
    match = _FAST.fullmatch(body)
    if match is not None:
        key, number, read_key = match.groups()
        if read_key is not None:
            return Read(read_key)
        n = int(number)
        if INT64_MIN <= n <= INT64_MAX:
            return Write(key, str(n).encode())
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SeedSyntaxError(
            f"request body is not UTF-8 (bad byte at offset {exc.start}); {EXPECTED_REQUEST}"
        ) from None
    return _Parser(text).request()


def read_string(text: str) -> str:
    """Parse one Haskell string literal (surrounding whitespace allowed)."""
    parser = _Parser(text)
    parser.skip_space()
    value = parser.string_literal("a string literal")
    parser.end("a string literal")
    return value


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "ident", "string", "number", "symbol", "(" or ")"
    text: str  # the source text (for numbers and idents) or the decoded string
    start: int


class _Parser:
    """Descent over Haskell lexemes, as ``Text.Read.Lex`` splits them (no recursion)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    # grammar: request := "(" request ")" | "Write" str int | "Read" str
    # Parentheses are counted in a loop, never by recursion, and at most
    # MAX_NESTING deep: a body of 100,000 '(' is a 400, not a RecursionError.

    def request(self) -> Write | Read:
        result = self._request()
        self.end(REQUEST_FORMS)
        return result

    def _request(self) -> Write | Read:
        opens, token = self.opened(REQUEST_FORMS)
        if token.kind == "ident" and token.text == "Write":
            key = self.argument_string("the key: a string in double quotes after 'Write'")
            value = self.argument_int()
            result: Write | Read = Write(key, str(value).encode())
        elif token.kind == "ident" and token.text == "Read":
            result = Read(self.argument_string("the key: a string in double quotes after 'Read'"))
        else:
            raise self.error(token.start, f"found {self.describe(token)}; {EXPECTED_REQUEST}")
        for start in reversed(opens):
            self.expect(")", "')' to close the '(' at " + self.where(start))
        return result

    def argument_string(self, expected: str) -> bytes:
        opens, token = self.opened(expected)
        if token.kind != "string":
            raise self.error(token.start, f"found {self.describe(token)}; expected {expected}")
        self.closed(opens, "')' after the key")
        try:
            return token.text.encode("utf-8")
        except UnicodeEncodeError:
            raise self.error(
                token.start, "the key contains a surrogate code point, which UTF-8 cannot encode"
            ) from None

    def argument_int(self) -> int:
        expected = "the value: a 64-bit integer such as 1, -5 or (-5)"
        opens, token = self.opened(expected)
        sign = 1
        if token.kind == "symbol" and token.text == "-":
            sign = -1
            token = self.token("a number after '-'")
        if token.kind != "number":
            wanted = expected if sign == 1 else "a number right after '-', as in -5 or (-5)"
            raise self.error(token.start, f"found {self.describe(token)}; expected {wanted}")
        if not _INT_LITERAL.fullmatch(token.text):
            raise self.error(token.start, f"{token.text} is not an integer; expected {expected}")
        n = _number_value(token.text)
        if n is None or not INT64_MIN <= sign * n <= INT64_MAX:
            shown = ("-" if sign < 0 else "") + _shorten(token.text)
            raise self.error(
                token.start,
                f"the value {shown} is out of range; expected a 64-bit integer "
                f"from {INT64_MIN} to {INT64_MAX}",
            )
        self.closed(opens, "')' after the value")
        return sign * n

    def opened(self, expected: str) -> tuple[list[int], _Token]:
        """Skip '(' tokens; return their positions and the first other token."""
        opens: list[int] = []
        token = self.token(expected)
        while token.kind == "(":
            if len(opens) == MAX_NESTING:
                raise self.error(
                    token.start,
                    f"more than {MAX_NESTING} nested '(' (the most allowed); {EXPECTED_REQUEST}",
                )
            opens.append(token.start)
            token = self.token(expected)
        return opens, token

    def closed(self, opens: list[int], expected: str) -> None:
        """Expect one ')' for each '(' that :meth:`opened` skipped."""
        for _ in opens:
            self.expect(")", expected)

    # -- lexing

    def skip_space(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and _is_space(text[pos]):
            pos += 1
        self.pos = pos

    def token(self, expected: str) -> _Token:
        self.skip_space()
        text, start = self.text, self.pos
        if start >= len(text):
            raise self.error(start, f"the request ends too early; expected {expected}")
        c = text[start]
        if c in "()":
            self.pos = start + 1
            return _Token(c, c, start)
        if c == '"':
            return _Token("string", self.string_literal(expected), start)
        match = _LEXEME.match(text, start)
        if match is None:
            raise self.error(start, f"unexpected character {c!r}; expected {expected}")
        self.pos = match.end()
        kind = match.lastgroup
        assert kind is not None
        return _Token(kind, match.group(), start)

    def expect(self, kind: str, expected: str) -> None:
        token = self.token(expected)
        if token.kind != kind:
            raise self.error(token.start, f"found {self.describe(token)}; expected {expected}")

    def end(self, expected: str) -> None:
        self.skip_space()
        if self.pos < len(self.text):
            found = self.text[self.pos : self.pos + 20]
            raise self.error(
                self.pos, f"unexpected text after the request: {found!r}; expected {expected}"
            )

    def string_literal(self, expected: str) -> str:
        text, start = self.text, self.pos
        if start >= len(text) or text[start] != '"':
            raise self.error(start, f"expected {expected}")
        pos = start + 1
        out: list[str] = []
        while True:
            end = _PLAIN.match(text, pos).end()  # type: ignore[union-attr]
            out.append(text[pos:end])
            pos = end
            if pos >= len(text):
                raise self.error(
                    start, "this string has no closing double quote; expected one at its end"
                )
            if text[pos] == '"':
                self.pos = pos + 1
                return "".join(out)
            pos = self._escape(pos, out)

    def _escape(self, pos: int, out: list[str]) -> int:
        """Decode the escape at ``text[pos] == '\\'``; return the position after it."""
        text = self.text
        rest = text[pos + 1 : pos + 2]
        if rest in _SIMPLE:
            out.append(_SIMPLE[rest])
            return pos + 2
        if rest == "&":
            return pos + 2
        if rest == "^":
            c = text[pos + 2 : pos + 3]
            if c and "@" <= c <= "_":
                out.append(chr(ord(c) - 64))
                return pos + 3
            raise self.error(pos, "bad control escape; expected \\^@ .. \\^_ (such as \\^A)")
        if rest and _is_space(rest):
            gap = pos + 1
            while gap < len(text) and _is_space(text[gap]):
                gap += 1
            if text[gap : gap + 1] != "\\":
                raise self.error(gap, "string gap not closed; expected '\\' after the whitespace")
            return gap + 1
        match = _NUMERIC_ESCAPE.match(text, pos + 1)
        if match is not None:
            code = _escape_value(match)
            if code > 0x10FFFF:
                raise self.error(
                    pos,
                    f"character escape {_shorten(match.group())} is too large; "
                    "expected at most 1114111",
                )
            out.append(chr(code))
            return match.end()
        match = _NAMED_ESCAPE.match(text, pos + 1)
        if match is not None:
            out.append(chr(_ESCAPE_NAMES[match.group()]))
            return match.end()
        raise self.error(
            pos,
            'bad escape in string; expected one of \\" \\\\ \\n \\t \\a \\b \\f \\r \\v \\& '
            "\\^A, a code (\\65, \\x41, \\o101), an ASCII name (\\NUL .. \\DEL) or a gap",
        )

    # -- errors

    def where(self, pos: int) -> str:
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return f"column {column}" if line == 1 else f"line {line}, column {column}"

    def error(self, pos: int, message: str) -> SeedSyntaxError:
        return SeedSyntaxError(f"at {self.where(pos)}: {message}")

    def describe(self, token: _Token) -> str:
        if token.kind == "string":
            return f"the string {show_string(token.text)[:40]}"
        return repr(token.text[:40])


_SIMPLE = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", '"': '"', "'": "'",
}  # fmt: skip
_ESCAPE_NAMES = {name: code for code, name in enumerate(_ASCII_NAMES)} | {"DEL": 0x7F}
# Longest names first, so that SOH wins over SO (as in Text.Read.Lex).
_NAMED_ESCAPE = re.compile("|".join(sorted(_ESCAPE_NAMES, key=len, reverse=True)))
_NUMERIC_ESCAPE = re.compile(r"(?P<dec>[0-9]+)|x(?P<hex>[0-9a-fA-F]+)|o(?P<oct>[0-7]+)")
_INT_LITERAL = re.compile(r"0[xX][0-9a-fA-F]+|0[oO][0-7]+|[0-9]+")
_PLAIN = re.compile(r'[^"\\]*')
_SYMBOL_CHARS = re.escape("!#$%&*+./<=>?@\\^|-~:")
_LEXEME = re.compile(
    rf"(?P<number>0[xX][0-9a-fA-F]+|0[oO][0-7]+|[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
    rf"|(?P<ident>[A-Za-z_][A-Za-z0-9_']*)"
    rf"|(?P<symbol>[{_SYMBOL_CHARS}]+)"
    rf"|(?P<punct>[,;\[\]{{}}`'])"
)


_NOT_HASKELL_SPACE = frozenset("\x1c\x1d\x1e\x1f\x85")


def _is_space(c: str) -> bool:
    """Haskell's ``isSpace``: Python's, minus the separators \x1c-\x1f and NEL."""
    return c.isspace() and c not in _NOT_HASKELL_SPACE


def _escape_value(match: re.Match[str]) -> int:
    """The code of a numeric escape; past 8 significant digits, just "too large"."""
    if match.group("dec") is not None:
        digits, base = match.group("dec"), 10
    elif match.group("hex") is not None:
        digits, base = match.group("hex"), 16
    else:
        digits, base = match.group("oct"), 8
    digits = digits.lstrip("0") or "0"
    return int(digits, base) if len(digits) <= 8 else _TOO_LARGE_ESCAPE


_TOO_LARGE_ESCAPE = 0x110000  # any code above 0x10FFFF: the caller reports it


def _number_value(text: str) -> int | None:
    """The value of an integer literal, or None when it is far beyond int64.

    Leading zeros are allowed (Haskell reads ``007``), so the digits that
    count are checked: this keeps ``int()`` off 5,000-digit literals, which it
    refuses (and which no int64 needs).
    """
    base, digits = 10, text
    if text[:2] in ("0x", "0X"):
        base, digits = 16, text[2:]
    elif text[:2] in ("0o", "0O"):
        base, digits = 8, text[2:]
    digits = digits.lstrip("0") or "0"
    if len(digits) > _MAX_DIGITS[base]:
        return None
    return int(digits, base)


# More digits than any int64 needs (after leading zeros are dropped), per base.
_MAX_DIGITS = {10: 20, 16: 17, 8: 23}


def _shorten(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} digits)"
