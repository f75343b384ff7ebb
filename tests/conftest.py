"""Shared test helpers: a machine built from plain functions, and system tools.

Kept small and generic on purpose: each test file defines the handlers it
needs and uses :func:`fn_machine` to wrap them, so a reader sees the whole
scenario in one place.

Tests that run a system tool (``redis-cli``, ``redis-benchmark``,
``redis-server``, ``wrk``) find it through :func:`require_tool` (or
:func:`find_tool`), the one place that decides what a missing tool means: on a
developer's machine the test is skipped with the install command; under
``COROSM_REQUIRE_TOOLS=1`` (set by ``.ci/run``, which installs every tool) it
fails, so CI skips nothing.
"""

from __future__ import annotations

import os
import shutil
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


# --- system tools -------------------------------------------------------------------

REQUIRE_TOOLS = "COROSM_REQUIRE_TOOLS"


def tools_required() -> bool:
    """Whether a missing tool fails the test (``COROSM_REQUIRE_TOOLS`` set, not 0)."""
    return os.environ.get(REQUIRE_TOOLS, "") not in ("", "0")


def find_tool(name: str, *, apt: str) -> str | None:
    """The path of the executable ``name`` on PATH, or None when it is missing.

    For a tool a test can do without (it then checks less). Under
    ``COROSM_REQUIRE_TOOLS`` a missing tool fails the test instead.
    """
    path = shutil.which(name)
    if path is None and tools_required():
        pytest.fail(
            f"{_missing(name, apt)} ({REQUIRE_TOOLS} is set: a missing tool fails the test)",
            pytrace=False,
        )
    return path


def require_tool(name: str, *, apt: str) -> str:
    """The path of the executable ``name`` on PATH; skips the test when it is missing.

    Under ``COROSM_REQUIRE_TOOLS`` a missing tool fails the test instead.
    ``apt`` is the Debian package that provides the tool, named in the reason.
    """
    path = find_tool(name, apt=apt)
    if path is None:
        pytest.skip(_missing(name, apt))
    return path


def _missing(name: str, apt: str) -> str:
    return f"{name} not found; install it with: apt-get install {apt}"


@pytest.fixture(name="require_tool", scope="session")
def require_tool_fixture() -> Callable[..., str]:
    """:func:`require_tool`, for tests and fixtures of any scope."""
    return require_tool


@pytest.fixture(name="find_tool", scope="session")
def find_tool_fixture() -> Callable[..., str | None]:
    """:func:`find_tool`, for tests and fixtures of any scope."""
    return find_tool


# --- optional Python modules ----------------------------------------------------------


def require_module(name: str, *, pip: str) -> Any:
    """Import the optional module ``name``; skip the test when it is not installed.

    ``pip`` is what to install (e.g. ``corosm[ray]``), named in the reason.
    Under ``COROSM_REQUIRE_TOOLS`` a missing module fails the test instead.
    """
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        reason = f"the Python module {name} is not installed; install it with: pip install '{pip}'"
        if tools_required():
            pytest.fail(
                f"{reason} ({REQUIRE_TOOLS} is set: a missing module fails the test)",
                pytrace=False,
            )
        pytest.skip(reason)
