"""The stepper's actions write their own ``__init__`` (so that mypyc compiles it).

They must still behave as the dataclasses they are declared as: fields by
position and by name, equality, repr, ``replace`` and ``match``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from corosm.core import Append
from corosm.core.events import CancelIO, Reply, ReplyError, StartIO
from corosm.errors import Overloaded

ERROR = Overloaded("full")
SAMPLES: list[tuple[type, tuple[Any, ...]]] = [
    (StartIO, (7, Append(b"record"))),
    (CancelIO, (7,)),
    (Reply, ("client", b"output")),
    (ReplyError, ("client", ERROR)),
]


@pytest.mark.parametrize(("cls", "args"), SAMPLES, ids=lambda x: getattr(x, "__name__", ""))
def test_actions_keep_their_dataclass_behaviour(cls: type, args: tuple[Any, ...]) -> None:
    action = cls(*args)
    names = [f.name for f in dataclasses.fields(action)]
    assert names == list(cls.__match_args__)
    assert [getattr(action, name) for name in names] == list(args)
    assert action == cls(**dict(zip(names, args, strict=True)))
    first = args[0] + 1 if isinstance(args[0], int) else "another client"
    assert action != cls(first, *args[1:])
    assert (
        repr(action)
        == f"{cls.__name__}({', '.join(f'{n}={a!r}' for n, a in zip(names, args, strict=True))})"
    )
    assert dataclasses.replace(action) == action
    match action:
        case StartIO(request, effect):
            assert (request, effect) == args
        case CancelIO(request):
            assert (request,) == args
        case Reply(client, output) | ReplyError(client, output):
            assert (client, output) == args
        case _:
            raise AssertionError(f"{action!r} did not match by position")
