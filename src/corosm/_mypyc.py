"""``mypyc_attr``: mypyc's class options, and a no-op where mypyc is not installed.

mypyc reads the decorator by its name, ``mypy_extensions.mypyc_attr``, when
it compiles a module (see :mod:`corosm.compiled`); the pure-Python package
must import without mypy's packages, so there it is a decorator that returns
the class unchanged. This module is never compiled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["mypyc_attr"]

T = TypeVar("T")

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # no mypy here, so no compiled build either

    def mypyc_attr(*attrs: str, **kwattrs: object) -> Callable[[T], T]:
        """Return the class as it is: only mypyc acts on these options."""
        return lambda cls: cls
