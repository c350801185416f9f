"""Measurement helpers: interleaved pairs, child-process CPU time, summary statistics.

Pairs are interleaved (A B A B ...) so that drift in machine load hits both sides alike.
Subprocess measurements record wall time and the child's CPU time (user + system), which
is the steadier figure on a busy machine.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Sample:
    wall: float
    cpu: float | None = None


@dataclass
class Series:
    """Repeated measurements of one thing."""

    label: str
    unit: str = "s"
    samples: list[Sample] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)

    @property
    def walls(self) -> list[float]:
        return [s.wall for s in self.samples]

    @property
    def cpus(self) -> list[float]:
        return [s.cpu for s in self.samples if s.cpu is not None]

    def median(self) -> float:
        return statistics.median(self.walls)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"label": self.label, "unit": self.unit, "wall": summary(self.walls)}
        if self.cpus:
            data["cpu"] = summary(self.cpus)
        return data


def summary(values: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "p99": percentile(ordered, 99),
        "values": [round(v, 6) for v in values],
    }


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def ratio(a: Series, b: Series) -> float:
    return a.median() / b.median()


def interleave(rounds: int, *steps: tuple[Series, Callable[[], Sample]]) -> None:
    """Run A B (C ...) A B (C ...) ... ``rounds`` times, appending each sample to its series."""
    for _ in range(rounds):
        for series, step in steps:
            series.add(step())


def child_env(**extra: str) -> dict[str, str]:
    """This checkout's trtforge first on the path; no TRTFORGE_* settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRTFORGE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def run_timed(
    argv: Sequence[str | Path], *, env: dict[str, str] | None = None, cwd: Path | None = None, check: bool = True
) -> tuple[Sample, subprocess.CompletedProcess[str]]:
    """Run a command; its wall time and its CPU time (user + system, children included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, env=env or child_env(), cwd=cwd, timeout=900
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Sample(wall, cpu), proc


def trtforge_argv(*args: str | Path) -> list[str | Path]:
    return [sys.executable, "-m", "trtforge", *args]


def timed_call(fn: Callable[[], object]) -> Sample:
    """Wall and process CPU time of an in-process call."""
    cpu0, started = time.process_time(), time.perf_counter()
    fn()
    return Sample(time.perf_counter() - started, time.process_time() - cpu0)


def top_imports(importtime_stderr: str, packages: Sequence[str]) -> dict[str, float]:
    """Cumulative import time (ms) of ``packages`` from ``python -X importtime`` output."""
    found: dict[str, float] = {}
    for line in importtime_stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cumulative, name = line.split("|")
        name = name.strip()
        if name in packages and name not in found and cumulative.strip().isdigit():
            found[name] = round(int(cumulative) / 1000, 1)
    return found
