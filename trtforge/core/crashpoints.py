"""Test-only crash points: stop a process at a precise step so a test can SIGKILL it there.

Armed by ``TRTFORGE_TEST_CRASHPOINT=<name>:<dir>``, where ``<dir>`` holds two FIFOs made by the
test. At the named point the process writes its pid to ``<dir>/reached`` (the test is blocked
reading it) and then blocks opening ``<dir>/hold`` for reading: the test kills it there, or
writes RESUME to ``hold`` to let it go on (to interleave two processes at a precise step).
A point stops one process once: the first to reach it claims it (``<dir>/claimed``), and every
later arrival (a fresh build worker after the first was killed, another recipe) passes.
Unarmed (always, outside tests) each point is one environment lookup.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CRASHPOINT_ENV = "TRTFORGE_TEST_CRASHPOINT"
RESUME = "resume\n"  # written to <dir>/hold by a test that wants the process to go on
BUILD_POINTS = ("build-locked", "trt-building", "blob-temp-written", "blob-stored", "catalog-uncommitted")
GC_POINTS = ("gc-rows-deleted", "gc-blobs-rechecked")


def armed(name: str) -> Path | None:
    spec = os.environ.get(CRASHPOINT_ENV)
    if not spec:
        return None
    point, _, folder = spec.partition(":")
    return Path(folder) if point == name and folder else None


def crashpoint(name: str) -> None:
    """Block at ``name`` if a test armed it (until killed, or resumed); otherwise return at once."""
    folder = armed(name)
    if folder is None:
        return
    try:
        os.mkdir(folder / "claimed")  # atomic: exactly one process stops here
    except FileExistsError:
        return
    with open(folder / "reached", "w") as fifo:
        fifo.write(f"{name} {os.getpid()}\n")
    with open(folder / "hold") as fifo:  # blocks until the test opens it for writing, if ever
        if fifo.read() == RESUME:
            return  # the test interleaves another process here, then lets this one go on
    raise SystemExit(f"crash point {name} was released; tests must kill the process here")


class CrashingProgress:
    """Forwards TensorRT build progress and stops at the first step, inside the build."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def phase_start(self, name: str, parent: str | None, steps: int) -> None:
        if self.inner is not None:
            self.inner.phase_start(name, parent, steps)

    def step(self, name: str, step: int) -> None:
        crashpoint("trt-building")
        if self.inner is not None:
            self.inner.step(name, step)

    def phase_finish(self, name: str) -> None:
        if self.inner is not None:
            self.inner.phase_finish(name)


def wrap_progress(progress: Any) -> Any:
    return CrashingProgress(progress) if armed("trt-building") is not None else progress
