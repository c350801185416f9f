"""What one build costs (wall time, CPU time, peak resident memory), and how many builds fit this machine.

A build worker is reused for build after build, so neither its lifetime CPU time nor its
lifetime peak memory (``ru_maxrss``) is one build's. The worker resets its resident-memory
high-water mark when a build starts (``/proc/self/clear_refs``, Linux 4.0 and later) and reports
its own figures when the build ends; the parent samples the worker from outside while it runs
(``/proc/<pid>/status`` and ``/proc/<pid>/stat``), so that a build whose worker dies still has a
cost. Where the reset is refused, the peak is the largest resident size sampled during the build.

How many builds run at once when nobody says (``default_jobs``): one per usable core (affinity,
and a cgroup CPU quota), as far as available memory (``MemAvailable``, and a cgroup memory
limit) gives each build ``PER_BUILD_MEMORY``.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
MIB = 1 << 20


@dataclass(frozen=True)
class BuildCost:
    """One build's cost; ``peak_rss_bytes`` is None where it could not be read."""

    wall_seconds: float
    cpu_seconds: float
    peak_rss_bytes: int | None

    def as_json(self) -> dict[str, float | None]:
        peak = None if self.peak_rss_bytes is None else round(self.peak_rss_bytes / MIB, 1)
        wall, cpu = round(self.wall_seconds, 4), round(self.cpu_seconds, 4)
        return {"wall_seconds": wall, "cpu_seconds": cpu, "peak_rss_mib": peak}


def cpu_seconds() -> float:
    """This process's CPU time so far (user + system, every thread), to the microsecond."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reset_peak_rss() -> bool:
    """Reset this process's resident-memory high-water mark (VmHWM) to its current size."""
    try:
        with open(_PROC / "self" / "clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def status_bytes(pid: int | str, field: str) -> int | None:
    """A memory field of ``/proc/<pid>/status`` (``VmHWM``, ``VmRSS``) in bytes; None if unreadable."""
    try:
        text = (_PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            parts = line.split()
            return int(parts[1]) * 1024 if len(parts) >= 2 and parts[1].isdigit() else None
    return None


class CostMeter:
    """Measures one build in another process (a worker) from outside, while it runs.

    ``peak_reset``: the worker resets its high-water mark at each build start, so sampling
    ``VmHWM`` catches peaks between samples; otherwise ``VmRSS`` samples are all there is.
    """

    def __init__(self, pid: int, *, peak_reset: bool) -> None:
        self.pid = pid
        self.field = "VmHWM" if peak_reset else "VmRSS"
        self.started = time.perf_counter()
        self.cpu_at_start: float | None = None  # the worker's own figure, once it says it started
        self.peak: int | None = None
        # When the caller last sampled (time.monotonic): the first sample is one interval after the
        # job was handed over, so a build shorter than that costs no /proc read (its worker reports
        # its own peak and CPU time when it finishes; wait4 gives a dead one's CPU time).
        self.sampled_at = time.monotonic()

    def sample(self) -> None:
        """Read the worker's peak now (for a build that dies: its worker reports nothing); nothing
        before it says the build started (until then its high-water mark is the previous build's)."""
        if self.cpu_at_start is None:
            return
        value = status_bytes(self.pid, self.field)
        if value is not None:
            self.peak = value if self.peak is None else max(self.peak, value)

    def finished(self, cpu: float | None = None, peak: int | None = None) -> BuildCost:
        """The cost now: the worker's own CPU time (0 where unknown) and peak where it reported them,
        else the sampled peak."""
        if peak is not None:
            self.peak = peak if self.peak is None else max(self.peak, peak)
        return BuildCost(time.perf_counter() - self.started, max(cpu or 0.0, 0.0), self.peak)

    def died(self, rusage: resource.struct_rusage | None) -> BuildCost:
        """The cost of a build whose worker died: its total CPU time (from wait4) less its CPU at start."""
        cpu = None
        if rusage is not None and self.cpu_at_start is not None:
            cpu = rusage.ru_utime + rusage.ru_stime - self.cpu_at_start
        return self.finished(cpu)


PER_BUILD_MEMORY = 2 << 30  # what one build is assumed to need, for the default number of jobs


def default_jobs() -> int:
    """Builds at once when not told: one per usable core, as far as available memory gives each 2 GiB."""
    cores = _usable_cores()
    memory = _available_memory()
    by_memory = cores if memory is None else memory // PER_BUILD_MEMORY
    return max(1, min(cores, by_memory))


def _usable_cores() -> int:
    """Cores this process may run on, under a cgroup CPU quota (``cpu.max``) if one is set."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def _available_memory() -> int | None:
    """MemAvailable, or less under a cgroup memory limit (``memory.max`` less ``memory.current``)."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            left = int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())
            available = left if available is None else min(available, left)
    except (OSError, ValueError):
        pass
    return available
