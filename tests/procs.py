"""Helpers for tests that run many real trtforge processes and kill some of them."""

from __future__ import annotations

import json
import os
import select
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import subprocess_env
from trtforge.core.crashpoints import CRASHPOINT_ENV, RESUME

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
        """The child's pid once it reports the crash point; fails if it exits first.

        The pid is the process at the point: ``proc`` itself, or a build worker it started.
        """
        return self._reached(proc)

    def wait_reached_pid(self) -> int:
        """The pid of whichever process reports the crash point (a worker started in this process)."""
        return self._reached(None)

    def _reached(self, proc: subprocess.Popen[str] | None) -> int:
        buffer = b""
        waited = 0.0
        while b"\n" not in buffer:
            ready, _, _ = select.select([self._fd], [], [], 1.0)
            if ready:
                buffer += os.read(self._fd, 256)
                continue
            waited += 1.0
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"child exited ({proc.returncode}) before {self.name}: {proc.stderr.read()}")
            if waited > WAIT_LIMIT_S:
                raise AssertionError(f"nothing reached {self.name} in {WAIT_LIMIT_S:.0f} s")
        name, pid = buffer.decode().split()
        assert name == self.name
        return int(pid)

    def resume(self) -> None:
        """Let the child (which reported the point) go on past it, instead of killing it there."""
        with open(self.folder / "hold", "w") as fifo:
            fifo.write(RESUME)

    def close(self) -> None:
        os.close(self._fd)


def unshare_refusal() -> str | None:
    """Why processes cannot be started in their own pid namespace here (needs root), or None."""
    try:
        probe = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True, timeout=60
        )
    except OSError as exc:
        return f"unshare is not available: {exc}"
    return None if probe.returncode == 0 else f"unshare --pid is not permitted: {probe.stderr.strip()[:200]}"


def in_pid_namespace(argv: list[str], *, burn: int = 0) -> list[str]:
    """``argv`` in a fresh pid namespace with the same hostname (a container on host networking).

    Its pid there is ``2 + burn``: bash is pid 1, ``burn`` short-lived processes come first, and
    the trailing ``true`` keeps bash from exec'ing it (so it is not the namespace's init).
    Killing the returned process (unshare) kills the whole namespace (``--kill-child``).
    """
    script = "; ".join(["/bin/true"] * burn + [shlex.join(argv), "true"])
    return ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "bash", "-c", script]


HOLD_FOREVER = (
    "import fcntl, os, sys\n"
    "fds = [os.open(path, os.O_RDONLY) for path in sys.argv[1:]]\n"
    "for fd in fds:\n"
    "    fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


def hold_in_child(*paths: Path) -> subprocess.Popen[str]:
    """A child process holding flocks on ``paths`` until its stdin is closed."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_FOREVER, *map(str, paths)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    return child


def release(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    assert child.wait() == 0


def build_one(recipe: str | Path, store: Path) -> dict[str, Any]:
    """`trtforge build RECIPE --json` in a process of its own, which must succeed: its one result."""
    proc = subprocess.run(
        trtforge_argv("build", recipe, "--store", store, "--json"),
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(proc.stdout)
    return dict(result)


def wait_gone(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` (not our child) ends within ``seconds`` (a pidfd: no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], seconds)
        return bool(ready)
    finally:
        os.close(fd)


def assert_store_clean(store: Path, cli: Callable[..., Any], *, recorded: bool = True) -> None:
    """No lock or temp file left behind, and fsck finds every recorded plan intact. ``recorded``:
    the run recorded something, so the store has a catalog to check (a batch stopped early may not)."""
    assert list(store.glob("locks/*.lock")) == []
    assert list(store.glob("blobs/**/.tmp-*")) == [] and list(store.glob("tmp/.tmp-*")) == []
    if recorded or (store / "catalog.sqlite").exists():
        check = cli("fsck", "--store", store, "--json")
        assert check.code == 0 and check.json()["ok"] and check.json()["missing"] == [], check
        assert check.json()["stale_temp"] == [], check
