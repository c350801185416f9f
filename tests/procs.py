"""Helpers for tests that run many real trtforge processes and kill some of them."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import subprocess_env
from trtforge.crashpoints import CRASHPOINT_ENV

WAIT_LIMIT_S = 300.0


def start_build(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[str]:
    full_env = subprocess_env()
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "trtforge", "build", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        cwd=cwd,
    )


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
