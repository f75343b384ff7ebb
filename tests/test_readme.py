"""The README's first example is real code: run it."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from corosm.runtime import Runtime

README = Path(__file__).resolve().parent.parent / "README.md"


def _first_python_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README has no python example"
    return str(blocks[0])


def test_readme_counter_example_counts_durably_and_concurrently() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_first_python_block(), str(README), "exec"), namespace)
    counter = namespace["Counter"]()

    async def main() -> None:
        async with Runtime(counter) as rt:
            outputs = await asyncio.gather(*(rt.submit(("incr", "hits")) for _ in range(5)))
            # Each increment resumes right after its own record is applied, in log order.
            assert sorted(outputs) == [1, 2, 3, 4, 5]
            assert await rt.submit(("get", "hits")) == 5
            assert await rt.submit(("get", "other")) == 0

    asyncio.run(main())
