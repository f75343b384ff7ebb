"""Runs the code blocks of docs/semantics.md, so the contract's examples stay true.

The blocks run in order in one namespace (a later block may use a class an
earlier one defined), the way a reader follows the page.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "semantics.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_semantics_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 5
    namespace: dict[str, Any] = {"__name__": "semantics_md"}
    for number, block in enumerate(blocks, 1):
        code = compile(block, f"{DOC.name} block {number}", "exec")
        exec(code, namespace)
    printed = capsys.readouterr().out
    assert "ForeignAwaitError - a corosm handler awaited" in printed
    assert "HandlerError - handler raised KeyError" in printed
