"""The client-visible history of a simulated run.

Theory of operation
-------------------
Each input a simulated client sends is one :class:`Operation`: when it was
called, when it returned and with what output, all in virtual time. An
operation whose outcome the client cannot know (it timed out, the process
crashed under it, it got an I/O error) has ``returned = None``: it may or may
not have taken effect. A crash splits the history into *epochs*: every
operation of an epoch was called and ended (or was cut) between two restarts,
so whatever it did happened before the epoch ended. Recovery hands the next
epoch a state; if the machine can be observed (``observe``), that state is
recorded with the epoch so the checker can tell whether an acknowledged write
went missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corosm.testing.sim.trace import short


@dataclass(frozen=True, slots=True)
class Operation:
    """One client call. ``returned`` is None when its outcome is unknown."""

    id: int
    client: int
    input: Any
    called: float
    returned: float | None
    output: Any = None
    note: str = ""  # why the outcome is unknown: "timeout", "crash", the error

    @property
    def known(self) -> bool:
        return self.returned is not None

    def describe(self) -> str:
        head = f"op {self.id} client {self.client} [{self.called * 1000:.3f}ms"
        if self.returned is None:
            return f"{head} .. ?] {short(self.input)} -> unknown ({self.note})"
        return (
            f"{head} .. {self.returned * 1000:.3f}ms] {short(self.input)} -> {short(self.output)}"
        )


@dataclass(slots=True)
class Epoch:
    """The operations between two restarts, and the state recovery found after them."""

    index: int
    operations: list[Operation] = field(default_factory=list)
    #: ``observe(state)`` of the state recovered after this epoch's crash, if any.
    recovered: Any = None
    crashed: bool = False
