"""Runs the code blocks of docs/semantics.md and docs/policies.md, so their examples stay true.

The blocks of a page run in order in one namespace (a later block may use a
class an earlier one defined), the way a reader follows the page.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def run_page(name: str) -> int:
    """Run every python block of ``docs/<name>``; return how many there were."""
    doc = DOCS / name
    blocks = python_blocks(doc.read_text())
    namespace: dict[str, Any] = {"__name__": doc.stem}
    for number, block in enumerate(blocks, 1):
        # dont_inherit: run as a reader would, without this file's __future__ imports.
        code = compile(block, f"{doc.name} block {number}", "exec", dont_inherit=True)
        exec(code, namespace)
    return len(blocks)


def test_semantics_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_page("semantics.md") >= 5
    printed = capsys.readouterr().out
    assert "ForeignAwaitError - a corosm handler awaited" in printed
    assert "HandlerError - handler raised KeyError" in printed


def test_policies_examples_run() -> None:
    assert run_page("policies.md") >= 5
