"""A short text summary of a cProfile output: where the server's loop spends its time.

py-spy would also see the journal thread, but it is not installed (and the
bench installs nothing); cProfile, run around ``corosm serve`` with
``python -m cProfile -o FILE``, sees the loop thread, where handlers, parsing
and encoding run, which is what limits throughput on one core.
"""

from __future__ import annotations

import io
import pstats
from pathlib import Path


def profile_summary(path: Path, top: int = 20) -> str:
    """The ``top`` functions by own time (tottime), as pstats prints them."""
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    text = out.getvalue()
    # Keep the table, drop pstats' preamble lines naming the file.
    start = text.find("   ncalls")
    return text[start:].rstrip() if start >= 0 else text.strip()
