"""Building frozen values cheaply: each field set through its slot.

A frozen dataclass's generated ``__init__`` sets each field with
``object.__setattr__(self, name, value)`` (its own ``__setattr__`` refuses),
then calls ``__post_init__`` for any checks: three or four Python-level
calls for a one-field value. The few values built for every request (the
``Append`` of every write; in the key-value machine, the ``Read`` and
``Write`` inputs, the ``Put`` record and the ``Value`` a read answers)
instead declare ``init=False`` and write their own ``__init__``, which checks
inline and sets each field through the setter of its slot, the descriptor
that ``object.__setattr__`` ends up calling anyway. That costs half as much
(``Read(b"x")``: 0.8 -> 0.5 us) and changes nothing else: the values are
still frozen, and compare, hash, pickle, ``replace`` and match as before.

Compiled code is the exception: there ``object.__setattr__(self, name,
value)`` itself is the cheap way (mypyc calls it directly; a slot setter is a
method-wrapper called with an argument tuple), about 500 instructions less a
field. So the compiled classes of that list (``Read`` and ``Write`` in
:mod:`corosm.apps.kv.basics`, ``Put``, ``Value``) set their fields that way,
and so does the compiled stepper when it builds the interpreted ``Append``,
on an instance made with ``object.__new__``.

The key-value outputs and records, ``Read`` and ``Write`` are compiled
(``corosm.compiled``), and pickle cannot rebuild a compiled value its
default way: a compiled class's ``__new__`` runs ``__init__``, and the
``__setstate__`` that would follow meets the frozen ``__setattr__``. Each of
those classes says how it is rebuilt instead, with a ``__reduce__`` that
returns :func:`by_constructor`: its constructor, called with its fields in
order. The pure build pickles them the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

#: What a value's ``__reduce__`` returns: its class and the arguments that rebuild it.
Reduced: TypeAlias = tuple[Callable[..., Any], tuple[Any, ...]]


def by_constructor(value: Any) -> Reduced:
    """A value's ``__reduce__``: its class, called with its fields in order (``__match_args__``)."""
    return type(value), tuple([getattr(value, name) for name in value.__match_args__])


def slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """``set(obj, value)``: sets field ``name`` of the slotted class ``cls``, frozen or not."""
    setter: Callable[[Any, Any], None] = vars(cls)[name].__set__
    return setter
