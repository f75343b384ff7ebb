"""The machine a benchmark ran on, and the raw fdatasync rate of its disk.

Theory of operation
-------------------
Figures mean little without the machine that produced them, so every report
records the CPU model, core count, kernel, Python and the filesystem of the
data directory. The disk's raw fdatasync rate (write 100 bytes, fdatasync,
repeat) is the ceiling of any design that fsyncs once per write; measuring it
in the same run as the servers lets the report compare like with like. The
probe writes its file as the journal writes a segment in ``fsync=always``
mode, over zeros reserved ahead (:mod:`corosm.io.journal.files`), so that
the ceiling holds for the blocking contender too, which writes the same way.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from corosm.compiled import describe
from corosm.io.journal.files import OSFileSystem


@dataclass(frozen=True, slots=True)
class HostInfo:
    """What the report says about the machine."""

    cpu_model: str
    cores: int
    kernel: str
    python: str
    filesystem: str
    device: str

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs for the report's machine table."""
        return [
            ("CPU", self.cpu_model),
            ("Cores", str(self.cores)),
            ("Kernel", self.kernel),
            ("Python", self.python),
            ("Data dir filesystem", f"{self.filesystem} on {self.device}"),
        ]


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or platform's guess elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> list[int]:
    """The CPUs this process may run on (affinity), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def mount_of(path: Path) -> tuple[str, str]:
    """(filesystem type, device) of the mount that holds ``path`` (from /proc/mounts)."""
    target = os.path.realpath(path)
    best = ("", "unknown", "unknown")
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                device, mount, fstype = parts[0], parts[1], parts[2]
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best[0]):
                    best = (mount, fstype, device)
    except OSError:
        pass
    return best[1], best[2]


def host_info(data_dir: Path) -> HostInfo:
    """Describe this machine, with the filesystem that holds ``data_dir``."""
    fstype, device = mount_of(data_dir)
    return HostInfo(
        cpu_model=cpu_model(),
        cores=len(usable_cores()),
        kernel=f"{platform.system()} {platform.release()}",
        # The servers a bench starts inherit its PYTHONPATH, so they run this build.
        python=f"{platform.python_implementation()} {sys.version.split()[0]}, {describe()}",
        filesystem=fstype,
        device=device,
    )


def fdatasync_rate(directory: Path, seconds: float = 2.0, record: int = 100) -> float:
    """fdatasyncs per second: write ``record`` bytes and fdatasync, for ``seconds``.

    The file is created in ``directory`` (so on the disk under test), written
    as a journal segment is (see the module docs), and removed.
    """
    path = directory / ".corosm-fdatasync-probe"
    payload = b"x" * record
    f = OSFileSystem().create(os.fspath(path), reserve=True)
    try:
        f.write(payload)  # the first write sets the reserve aside: not timed
        f.fdatasync()
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        now = start
        while now < deadline:
            f.write(payload)
            f.fdatasync()
            count += 1
            now = time.perf_counter()
        return count / (now - start)
    finally:
        f.close()
        path.unlink(missing_ok=True)
