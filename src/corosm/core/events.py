"""Events into the stepper and actions out of it.

The stepper is sans-I/O (like h11): a host feeds it :data:`Event` values and
carries out the :data:`Action` values it returns. Both are small values,
so a run is a list that can be printed, compared and replayed.

The actions are made once or twice per input, so they are plain slotted
dataclasses, not frozen ones (a frozen dataclass costs about three times
as much to construct): values all the same, that nothing changes once made.
This module is compiled in the compiled build (:mod:`corosm.compiled`), and
each action writes its own ``__init__``: mypyc compiles a dataclass's own
methods, while the ``__init__`` that ``dataclasses`` generates stays an
interpreted function, a Python frame for every action the stepper makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corosm.core.effects import Effect
from corosm.errors import CorosmError

ClientId = Any
"""Whatever the host uses to route a reply back (a connection, a future, an int)."""


@dataclass(frozen=True, slots=True)
class InputArrived:
    """Event: ``input`` arrived from ``client``."""

    client: ClientId
    input: Any


@dataclass(frozen=True, slots=True)
class IOCompleted:
    """Event: request ``request`` finished with ``value``, or failed with ``error``."""

    request: int
    value: Any = None
    error: BaseException | None = None


Event = InputArrived | IOCompleted


@dataclass(slots=True, init=False)
class StartIO:
    """Action: start ``effect``; report its completion as request ``request``."""

    request: int
    effect: Effect[Any]

    def __init__(self, request: int, effect: Effect[Any]) -> None:
        self.request = request
        self.effect = effect


@dataclass(slots=True, init=False)
class CancelIO:
    """Action: request ``request`` is no longer wanted; cancel it if possible.

    Its completion, if it still comes, is ignored.
    """

    request: int

    def __init__(self, request: int) -> None:
        self.request = request


@dataclass(slots=True, init=False)
class Reply:
    """Action: send ``output`` to ``client``; its input is done."""

    client: ClientId
    output: Any

    def __init__(self, client: ClientId, output: Any) -> None:
        self.client = client
        self.output = output


@dataclass(slots=True, init=False)
class ReplyError:
    """Action: ``client``'s input failed with ``error``; nothing else did."""

    client: ClientId
    error: CorosmError

    def __init__(self, client: ClientId, error: CorosmError) -> None:
        self.client = client
        self.error = error


Action = StartIO | CancelIO | Reply | ReplyError
