"""``corosm bench``'s ``shards`` scenario: skipped with the install command without Ray.

The scenario itself (a local Ray, a minute of load) is run by ``corosm bench
--only shards`` and reported in docs/scaling.md, not timed here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from corosm.bench import shards as bench_shards
from corosm.bench.suite import QUICK, SCENARIOS, Suite


def test_the_shards_scenario_is_skipped_with_the_install_command_without_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "shards" in SCENARIOS
    monkeypatch.setattr(
        bench_shards, "ray_missing", lambda: "Ray is not installed; install it with: X"
    )
    said: list[str] = []
    results = Suite(QUICK, tmp_path, progress=said.append).run(["shards"])
    assert results.unavailable == {"shards": "Ray is not installed; install it with: X"}
    assert said == ["shards: skipped: Ray is not installed; install it with: X"]
    assert not results.samples


def test_the_install_command_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert bench_shards.ray_missing() == (
        "Ray is not installed; install it with: pip install 'corosm[ray]'"
    )
    assert bench_shards.main(["--seconds", "1"]) == 2


def test_median_batch_is_over_calls() -> None:
    from collections import Counter

    assert bench_shards._median(Counter({1: 3, 256: 4})) == 256
    assert bench_shards._median(Counter({1: 5, 256: 4})) == 1
    assert bench_shards._median(Counter()) == 0
