"""Shared test helpers: a machine built from plain functions, and a by-hand host.

Kept small and generic on purpose: each test file defines the handlers it
needs and uses :func:`fn_machine` to wrap them, so a reader sees the whole
scenario in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Hashable
from typing import Any

import pytest

from corosm.core import Context, Machine, Policy

Handler = Callable[[Context[Any], Any], Coroutine[Any, Any, Any]]


class FnMachine(Machine[Any, Any, Any]):
    """A machine whose handler, key and apply are given as functions."""

    def __init__(
        self,
        handler: Handler,
        *,
        initial: Callable[[], Any] = dict,
        apply: Callable[[Any, Any], Any] | None = None,
        policy: Policy = Policy.INTERLEAVE,
        key: Callable[[Any], Hashable | None] | None = None,
    ) -> None:
        self._handler = handler
        self._initial = initial
        self._apply = apply
        self.policy = policy
        self._key = key

    def initial_state(self) -> Any:
        return self._initial()

    def handle(self, ctx: Context[Any], input: Any) -> Any:  # type: ignore[override]
        return self._handler(ctx, input)

    def key(self, input: Any) -> Hashable | None:
        assert self._key is not None, "test machine without a key function"
        return self._key(input)

    def apply(self, state: Any, record: Any) -> Any:
        assert self._apply is not None, "test machine without apply()"
        return self._apply(state, record)


@pytest.fixture
def fn_machine() -> type[FnMachine]:
    """The :class:`FnMachine` class, for tests that build machines from functions."""
    return FnMachine
