"""Helpers for tests that run many real trtforge processes and kill some of them."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import subprocess_env
from trtforge.crashpoints import CRASHPOINT_ENV

WAIT_LIMIT_S = 300.0


def trtforge_argv(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "trtforge", *map(str, args)]


def start(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[str]:
    full_env = subprocess_env()
    full_env.update(env or {})
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=cwd)


def start_build(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[str]:
    return start(trtforge_argv("build", *args), env, cwd)


def kill_at(point: str, folder: Path, argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run ``argv`` until it reaches crash point ``point``, then SIGKILL it."""
    crash = CrashPoint(folder, point)
    try:
        victim = start(argv, {**(env or {}), **crash.env})
        crash.wait_reached(victim)
        victim.send_signal(signal.SIGKILL)
        assert victim.wait() == -signal.SIGKILL
    finally:
        crash.close()


def finish(proc: subprocess.Popen[str]) -> tuple[int, Any, str]:
    out, err = proc.communicate(timeout=WAIT_LIMIT_S)
    try:
        data = json.loads(out)
    except json.JSONDecodeError:
        data = None
    return proc.returncode, data, err


class CrashPoint:
    """Arms a crash point for one child; :meth:`wait_reached` blocks until the child is there."""

    def __init__(self, folder: Path, name: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.name = name
        os.mkfifo(folder / "reached")
        os.mkfifo(folder / "hold")
        # O_RDWR keeps the FIFO open without a writer, so reads block instead of seeing EOF.
        self._fd = os.open(folder / "reached", os.O_RDWR | os.O_NONBLOCK)

    @property
    def env(self) -> dict[str, str]:
        return {CRASHPOINT_ENV: f"{self.name}:{self.folder}"}

    def wait_reached(self, proc: subprocess.Popen[str]) -> int:
        """The child's pid once it reports the crash point; fails if it exits first."""
        buffer = b""
        while b"\n" not in buffer:
            ready, _, _ = select.select([self._fd], [], [], 1.0)
            if ready:
                buffer += os.read(self._fd, 256)
            elif proc.poll() is not None:
                raise AssertionError(f"child exited ({proc.returncode}) before {self.name}: {proc.stderr.read()}")
        name, pid = buffer.decode().split()
        assert name == self.name
        return int(pid)

    def close(self) -> None:
        os.close(self._fd)
