"""What a benchmark run produced: samples, medians, pairwise ratios, JSON.

Theory of operation
-------------------
Every measurement is a :class:`Sample`: which scenario, which case (e.g.
"64 conns"), which contender, which round, and a flat dict of figures.
Contenders are measured in alternation (A B A B ...), so round ``r`` of A
and round ``r`` of B ran side by side in time; :func:`pairwise_ratio` takes
the median of the per-round ratios, which cancels slow drifts of a noisy
machine better than a ratio of medians. :class:`Results` is saved as
``results.json`` so a report can be rebuilt without rerunning.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from corosm.bench.hostinfo import HostInfo
from corosm.errors import UsageError


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurement."""

    scenario: str
    case: str
    x: float
    contender: str
    round: int
    values: Mapping[str, float]


@dataclass(slots=True)
class Results:
    """Everything a run measured, plus what it could not measure and why."""

    host: HostInfo
    quick: bool
    pinning: str
    samples: list[Sample] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    profile: str = ""
    elapsed_s: float = 0.0

    def add(self, sample: Sample) -> None:
        """Record one measurement."""
        self.samples.append(sample)

    def select(self, scenario: str, contender: str | None = None) -> list[Sample]:
        """Samples of ``scenario`` (and of ``contender``, when given), in run order."""
        return [
            s
            for s in self.samples
            if s.scenario == scenario and (contender is None or s.contender == contender)
        ]

    def cases(self, scenario: str) -> list[tuple[str, float]]:
        """The (case, x) pairs of ``scenario``, in first-run order."""
        return list(dict.fromkeys((s.case, s.x) for s in self.select(scenario)))

    def contenders(self, scenario: str) -> list[str]:
        """Contender names of ``scenario``, in first-run order."""
        return list(dict.fromkeys(s.contender for s in self.select(scenario)))

    def median(self, scenario: str, case: str, contender: str, key: str) -> float | None:
        """Median of ``key`` over the rounds of one (scenario, case, contender); None if none."""
        # A key may be missing from some rounds (e.g. CPU time where /proc is not readable).
        values = [v[key] for v in self.by_round(scenario, case, contender).values() if key in v]
        return statistics.median(values) if values else None

    def by_round(self, scenario: str, case: str, contender: str) -> dict[int, Mapping[str, float]]:
        """Round number -> figures, for one (scenario, case, contender)."""
        return {
            s.round: s.values
            for s in self.samples
            if s.scenario == scenario and s.case == case and s.contender == contender
        }

    def save(self, path: Path) -> None:
        """Write as JSON."""
        path.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")

    @staticmethod
    def load(path: Path) -> Results:
        """Read what :meth:`save` wrote; a clear error for anything else."""
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            _check_fields(data)
            data["host"] = HostInfo(**data["host"])
            data["samples"] = [Sample(**s) for s in data["samples"]]
            return Results(**data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(
                f"cannot read benchmark results from {path}: {exc}; "
                "expected the results.json that `corosm bench` writes"
            ) from exc


def _check_fields(data: object) -> None:
    """Raise a TypeError naming the first field of a loaded results.json of the wrong type.

    The report formats every figure as a number: a string there would fail
    deep inside it, long after the file was read.
    """
    _need(data, dict, "the file")
    assert isinstance(data, dict)
    for name, kind in (("quick", bool), ("pinning", str), ("profile", str), ("notes", list),
                       ("unavailable", dict), ("samples", list), ("host", dict)):  # fmt: skip
        if name in data:
            _need(data[name], kind, name)
    if "elapsed_s" in data:
        _need_number(data["elapsed_s"], "elapsed_s")
    for i, note in enumerate(data.get("notes", [])):
        _need(note, str, f"notes[{i}]")
    for key, why in data.get("unavailable", {}).items():
        _need(why, str, f"unavailable[{key!r}]")
    for i, sample in enumerate(data.get("samples", [])):
        where = f"samples[{i}]"
        _need(sample, dict, where)
        for name in ("scenario", "case", "contender"):
            _need(sample.get(name), str, f"{where}.{name}")
        _need_number(sample.get("x"), f"{where}.x")
        _need(sample.get("round"), int, f"{where}.round")
        _need(sample.get("values"), dict, f"{where}.values")
        for key, value in sample["values"].items():
            _need_number(value, f"{where}.values[{key!r}]")


def _need(value: object, kind: type, where: str) -> None:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{where} is {value!r:.60}, expected a {kind.__name__}")


def _need_number(value: object, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{where} is {value!r:.60}, expected a number")


def pairwise_ratio(
    results: Results, scenario: str, case: str, a: str, b: str, *, key: str = "rps"
) -> float | None:
    """Median over rounds of ``a[key] / b[key]`` (rounds where both ran); None if none."""
    rounds_a = results.by_round(scenario, case, a)
    rounds_b = results.by_round(scenario, case, b)
    ratios = [
        rounds_a[r][key] / rounds_b[r][key]
        for r in sorted(rounds_a.keys() & rounds_b.keys())
        if rounds_b[r][key] > 0
    ]
    return statistics.median(ratios) if ratios else None
