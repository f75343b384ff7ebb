"""The trace: one readable line per event of a simulated run.

Theory of operation
-------------------
Every event the world handles (an input, an I/O start, a completion, a fault,
a crash, a restart, a reply) becomes one line stamped with virtual time. Lines
are built only from values that are the same in every run of a seed (virtual
time, request numbers, ``repr`` of inputs and outputs, function names rather
than their addresses), so the same seed yields the same trace byte for byte,
and a failing seed's trace can be read like a log of what went wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from corosm.core.effects import Call, Effect


class Trace:
    """An append-only list of trace lines."""

    __slots__ = ("lines",)

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, now: float, who: str, text: str) -> None:
        """Record ``text`` about ``who`` (``client 2``, ``journal``, ``world``) at ``now``."""
        self.lines.append(f"{now * 1000:11.3f}ms  {who:<9} {text}")

    def text(self) -> str:
        """The whole trace, one event per line."""
        return "\n".join(self.lines) + ("\n" if self.lines else "")

    def tail(self, n: int = 60) -> str:
        """The last ``n`` lines, with a note saying how many were left out."""
        skipped = len(self.lines) - n
        head = [f"... ({skipped} earlier lines)"] if skipped > 0 else []
        return "\n".join(head + self.lines[-n:])


def show_effect(effect: Effect[Any]) -> str:
    """A deterministic description of an effect (no memory addresses)."""
    if isinstance(effect, Call):
        return f"Call({_name(effect.fn)}{effect.args!r})"
    return short(effect)


def short(value: object, limit: int = 120) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    return cut(repr(value), limit)


def cut(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters with ``...`` when it was longer."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show_error(error: BaseException) -> str:
    """``Type: message`` for an exception, cut short."""
    return cut(f"{type(error).__name__}: {error}", 160)


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__
