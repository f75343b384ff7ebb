"""conftest's tool helpers: a missing tool skips the test here and fails it in CI.

``.ci/run`` sets ``COROSM_REQUIRE_TOOLS=1`` after installing every tool, so a
tool that is still missing there is a broken CI image, not a reason to skip.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import pytest

NO_SUCH_TOOL = "corosm-no-such-tool-0f3a"


def test_a_missing_tool_skips_with_the_install_command(
    require_tool: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COROSM_REQUIRE_TOOLS", raising=False)
    with pytest.raises(pytest.skip.Exception) as info:
        require_tool(NO_SUCH_TOOL, apt="some-package")
    assert str(info.value) == (
        f"{NO_SUCH_TOOL} not found; install it with: apt-get install some-package"
    )


@pytest.mark.parametrize("value", ["0", ""])
def test_require_tools_set_to_0_or_empty_still_skips(
    require_tool: Callable[..., str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("COROSM_REQUIRE_TOOLS", value)
    with pytest.raises(pytest.skip.Exception):
        require_tool(NO_SUCH_TOOL, apt="some-package")


def test_a_missing_tool_fails_when_tools_are_required(
    require_tool: Callable[..., str],
    find_tool: Callable[..., str | None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COROSM_REQUIRE_TOOLS", "1")
    for lookup in (require_tool, find_tool):
        with pytest.raises(pytest.fail.Exception) as info:
            lookup(NO_SUCH_TOOL, apt="some-package")
        message = str(info.value)
        assert "apt-get install some-package" in message
        assert "COROSM_REQUIRE_TOOLS" in message


def test_an_optional_tool_that_is_missing_is_none(
    find_tool: Callable[..., str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COROSM_REQUIRE_TOOLS", raising=False)
    assert find_tool(NO_SUCH_TOOL, apt="some-package") is None


def test_a_tool_is_looked_up_on_path_in_both_modes(
    require_tool: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/opt/tools/{name}")
    for required in ("", "1"):
        monkeypatch.setenv("COROSM_REQUIRE_TOOLS", required)
        assert require_tool("wrk", apt="wrk") == "/opt/tools/wrk"
