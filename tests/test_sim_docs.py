"""docs/testing.md: its 20-line example runs, prints what the page says, and fails as promised."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "testing.md"


def example() -> tuple[str, str]:
    """The page's first Python block, and the output block that follows it."""
    text = DOC.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code is not None, "docs/testing.md lost its example"
    output = re.search(r"Output:\n\n```\n(.*?)```", text[code.end() :], re.S)
    assert output is not None, "docs/testing.md lost the example's output"
    return code.group(1), output.group(1)


def run(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), {"__name__": "docs_example"})
    return out.getvalue()


def test_the_example_is_twenty_lines_and_prints_the_documented_output() -> None:
    code, expected = example()
    assert len(code.strip().splitlines()) <= 22
    assert run(code) == expected


def test_the_example_with_interleave_fails_as_the_page_shows() -> None:
    code, _ = example()
    broken = code.replace("policy = Policy.PER_KEY", "policy = Policy.INTERLEAVE")
    assert broken != code
    printed = run(broken)
    text = DOC.read_text()
    first = printed.splitlines()[1]  # after the campaign's one-line summary
    assert first.startswith("seed 0 FAILED: not linearizable")
    assert first in text, "the page's failure report is out of date"
    assert "(model would give 2)" in printed
