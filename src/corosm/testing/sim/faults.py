"""What may go wrong in a simulated run: the fault plan, and deliberate host bugs.

Theory of operation
-------------------
A :class:`FaultPlan` is a value that says how hostile the world is: how many
clients, how long I/O takes (ranges sampled from the run's seeded random
generator), how often the journal's write or fsync fails (which fail-stops the
journal until a restart), how often the process crashes (at any step, keeping
only what was fsynced and maybe tearing the last write), how often a snapshot
is taken (every ``snapshot_every_records`` records, like the server) and
how often a crash lands in the middle of writing one. The same plan and seed
always give the same run.

The host's own limits are part of the plan too: ``max_inflight`` and
``turn_completions`` are passed to the shipped :class:`~corosm.runtime.host.Host`.
``turn_completions`` is 1 by default (production's is 16), so every batch of
completions is delivered in slices, with the other phases in between;
``max_inflight`` defaults to production's 10,000, and a plan below the number
of clients exercises the admission bound (the world checks it after every
event).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from corosm.errors import UsageError
from corosm.testing._args import need_int, need_probability, need_range, need_seconds

Range = tuple[float, float]

_MAY_BE_ZERO = ("max_crashes", "snapshot_every_records")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The shape and the hostility of one simulated run (see module docs).

    Times are virtual seconds. Probabilities are per event handled by the
    world (``crash``), per journal batch (the I/O errors) or per snapshot step
    (``snapshot_crash``). ``snapshot_every_records=0`` never snapshots.
    Every field is checked when the plan is built (a ``UsageError`` says
    which one, and what it must be).
    """

    clients: int = 3
    ops_per_client: int = 6
    think_time: Range = (0.0, 0.002)
    io_latency: Range = (0.0001, 0.004)
    write_latency: Range = (0.00002, 0.0002)
    fsync_latency: Range = (0.0002, 0.002)
    client_timeout: float = 0.05
    restart_delay: float = 0.003
    crash_probability: float = 0.01
    max_crashes: int = 2
    tear_probability: float = 0.5
    write_error_probability: float = 0.01
    enospc_probability: float = 0.01
    fsync_error_probability: float = 0.01
    snapshot_every_records: int = 4
    snapshot_crash_probability: float = 0.05
    max_inflight: int = 10_000
    turn_completions: int = 1
    max_events: int = 200_000

    def __post_init__(self) -> None:
        for f in fields(self):
            what, value = f"FaultPlan.{f.name}", getattr(self, f.name)
            if isinstance(f.default, tuple):
                need_range(what, value)
            elif f.name.endswith("_probability"):
                need_probability(what, value)
            elif isinstance(f.default, float):
                need_seconds(what, value)
            else:
                need_int(what, value, 0 if f.name in _MAY_BE_ZERO else 1)

    @classmethod
    def calm(cls, **overrides: object) -> FaultPlan:
        """A plan with no faults and no crashes (random latencies only)."""
        names = [f.name for f in fields(cls) if f.name.endswith("_probability")]
        quiet: dict[str, object] = dict.fromkeys(names, 0.0)
        quiet["max_crashes"] = 0
        known = [f.name for f in fields(cls)]
        for name in overrides:
            if name not in known:
                raise UsageError(f"FaultPlan has no field {name!r}; it has: {', '.join(known)}")
        quiet.update(overrides)
        return cls(**quiet)  # type: ignore[arg-type]

    def describe(self) -> str:
        """The fields that differ from the defaults, as Python keyword arguments."""
        default = FaultPlan()
        changed = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        ]
        return ", ".join(changed)
