"""PNG plots of a benchmark run (matplotlib, Agg backend: no display needed).

Four figures, each saved only when its scenario ran:
``throughput.png`` (durable writes/s against connections, per contender,
with the disk's raw fdatasync rate as a line), ``latency.png`` (p50, p99,
p99.9 at 64 connections, and reads alone / under write load),
``recovery.png`` (restart time against records written) and
``memory.png`` (RSS against keys and against suspended handlers).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from corosm.bench.results import Results
from corosm.errors import UsageError


def check_matplotlib() -> None:
    """Raise the :class:`UsageError` of a missing matplotlib now, not after a long run."""
    _pyplot()


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UsageError(
            "the benchmark plots need matplotlib; install it with: "
            "pip install 'corosm[bench]' (make bench does)"
        ) from exc
    return plt


def write_plots(results: Results, out_dir: Path) -> list[Path]:
    """Draw every plot whose data exists into ``out_dir``; return the files written."""
    plt = _pyplot()
    written = []
    for name, draw in (
        ("throughput", _throughput),
        ("latency", _latency),
        ("recovery", _recovery),
        ("memory", _memory),
    ):
        fig = draw(plt, results)
        if fig is None:
            continue
        path = out_dir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _throughput(plt: Any, results: Results) -> Any:
    sc = "durable_writes"
    if not results.select(sc):
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    cases = results.cases(sc)
    for name in results.contenders(sc):
        ys = [results.median(sc, case, name, "rps") for case, _ in cases]
        ax.plot([x for _, x in cases], ys, marker="o", label=name)
    disk = results.median("fdatasync", "100-byte write + fdatasync", "disk", "rps")
    if disk is not None:
        ax.axhline(disk, color="grey", linestyle="--", label="raw fdatasync/s")
    ax.set_xscale("log", base=2)
    # Label the connection counts measured, as plain numbers rather than powers of two.
    ax.set_xticks([x for _, x in cases], [f"{x:g}" for _, x in cases])
    ax.xaxis.set_minor_locator(plt.NullLocator())
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda y, _: f"{y / 1e3:g}k"))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("connections (wrk)")
    ax.set_ylabel("requests/s (median of rounds)")
    ax.set_title("Durable writes, seed HTTP protocol")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def _latency(plt: Any, results: Results) -> Any:
    groups: list[tuple[str, list[float | None]]] = []
    keys = ("p50_ms", "p99_ms", "p999_ms")
    for name in results.contenders("durable_writes"):
        med = [results.median("durable_writes", "64 conns", name, k) for k in keys]
        groups.append((f"writes c64\n{name}", med))
    for name in results.contenders("reads"):
        for case, label in (("reads alone", "reads"), ("reads + 64 writers", "reads+w64")):
            groups.append(
                (f"{label}\n{name}", [results.median("reads", case, name, k) for k in keys])
            )
    groups = [(label, v) for label, v in groups if any(x is not None for x in v)]
    if not groups:
        return None
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(groups)), 4.2))
    width = 0.27
    for i, key in enumerate(("p50", "p99", "p99.9")):
        xs = [g + (i - 1) * width for g in range(len(groups))]
        ax.bar(xs, [v[i] or 0 for _, v in groups], width, label=key)
    ax.set_xticks(range(len(groups)), [label for label, _ in groups], fontsize=8)
    if any(x for _, v in groups for x in v):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda y, _: f"{y:g}"))
        # Start a decade below the shortest bar, so every bar has a visible height.
        lowest = min(x for _, v in groups for x in v if x)
        ax.set_ylim(bottom=10 ** math.floor(math.log10(lowest)))
    ax.set_ylabel("latency ms (median of rounds)")
    ax.set_title("Latency percentiles")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    return fig


def _recovery(plt: Any, results: Results) -> Any:
    if not results.select("recovery"):
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for mode in results.contenders("recovery"):
        samples = sorted(results.select("recovery", mode), key=lambda s: s.x)
        label = "journal only" if mode == "journal" else "snapshot + 1,000-record tail"
        ax.plot(
            [s.x for s in samples],
            [s.values["recover_s"] for s in samples],
            marker="o",
            label=label,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda y, _: f"{y:g}"))
    ax.set_xlabel("records written")
    ax.set_ylabel("restart (recovery) seconds")
    ax.set_title("Recovery time against journal size")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def _memory(plt: Any, results: Results) -> Any:
    present = [sc for sc in ("rss_keys", "rss_suspended") if results.select(sc)]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 4), squeeze=False)
    for ax, sc in zip(axes[0], present, strict=True):
        samples = sorted(results.select(sc), key=lambda s: s.x)
        ax.plot([s.x for s in samples], [s.values["rss_mb"] for s in samples], marker="o")
        for smp in samples:  # growth per key/handler, the figure that scales
            ax.annotate(
                f"{smp.values['bytes_each']:.0f} B each",
                (smp.x, smp.values["rss_mb"]),
                textcoords="offset points",
                xytext=(-10, 8),
                fontsize=8,
            )
        ax.set_xscale("log")
        ax.set_ylim(bottom=0, top=max(s.values["rss_mb"] for s in samples) * 1.15)
        ax.set_xlabel("keys" if sc == "rss_keys" else "suspended handlers")
        ax.set_ylabel("RSS MiB")
        ax.grid(True, alpha=0.3)
    fig.suptitle("Resident set size")
    return fig
