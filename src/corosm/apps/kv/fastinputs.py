"""The two inputs nearly every request builds, for compiled front ends.

:class:`~corosm.apps.kv.inputs.Read` and :class:`~corosm.apps.kv.inputs.Write`
stay interpreted (see :mod:`corosm.compiled`), so in the compiled build their
``__init__`` is a Python frame inside an otherwise native request: about a
thousand instructions of a seed read's 24 thousand. :func:`read` and
:func:`write` make the constructors' checks, and set the fields on an
instance made with ``object.__new__``. Anything else (not bytes, outside
the limits) goes to the class itself, which raises its
:class:`~corosm.errors.UsageError`; so each returns what the constructor
returns, or raises what it raises.
"""

from __future__ import annotations

from typing import Final

from corosm.apps.kv.inputs import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    Read,
    Write,
)

__all__ = ["read", "write"]

# Looked up once: the compiled call of a module constant is direct.
_new: Final = object.__new__


def read(key: bytes) -> Read:
    """``Read(key)``."""
    if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_BYTES:
        return Read(key)  # raises, saying why
    built = _new(Read)
    object.__setattr__(built, "key", key)
    return built


def write(key: bytes, value: bytes) -> Write:
    """``Write(key, value)``."""
    if (
        type(key) is not bytes
        or not 0 < len(key) <= MAX_KEY_BYTES
        or type(value) is not bytes
        or len(value) > MAX_VALUE_BYTES
    ):
        return Write(key, value)  # raises, saying why
    built = _new(Write)
    object.__setattr__(built, "key", key)
    object.__setattr__(built, "value", value)
    return built
