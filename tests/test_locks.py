"""The build lock's takeover of a dead holder's file, raced against a second waiter."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from trtforge.store.locks import GUARD_NAME, LockDir

HOLD_FOREVER = (
    "import fcntl, os, sys\n"
    "fd = os.open(sys.argv[1], os.O_RDWR)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
)


def _blocked_on(path: Path) -> bool:
    """Some thread waits in the kernel for a flock on ``path`` (the '->' rows of /proc/locks)."""
    inode = os.stat(path).st_ino
    rows = Path("/proc/locks").read_text().splitlines()
    return any("->" in row and row.split()[6].endswith(f":{inode}") for row in rows if len(row.split()) > 6)


def test_takeover_never_unlinks_a_lock_another_waiter_just_took(tmp_path: Path) -> None:
    """A waiter retiring a dead holder's file must not race a second waiter into that same file.

    The dead holder's descriptor lives on in a child process. Waiter A sees the dead pid and
    starts its takeover; at that moment the child exits (freeing the old file) and waiter B
    arrives. Before the acquire guard, B took the old file and A, unlinking it, took a new one:
    two builders of one key. Each waiter holds its lock until the other is waiting or inside.
    """
    locks = LockDir(tmp_path / "locks")
    path = locks.path_for("k")
    path.parent.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0.0}))
    inheritor = subprocess.Popen(
        [sys.executable, "-c", HOLD_FOREVER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert inheritor.stdout is not None and inheritor.stdout.readline() == "held\n"

    inside: set[str] = set()
    most_inside = 0
    state = threading.Condition()
    ready = {"A": threading.Event(), "B": threading.Event()}  # waiting, inside or finished
    errors: list[BaseException] = []

    def waiter(me: str, other: str) -> None:
        nonlocal most_inside

        def notify(message: str) -> None:
            if message.startswith("waiting for build"):
                ready[me].set()
            if me == "A" and message.startswith("taking over"):
                assert inheritor.stdin is not None
                inheritor.stdin.close()  # the old file becomes free while A is mid-takeover
                inheritor.wait()
                b.start()
                with state:  # B either took the old file (the bug) or waits on the guard
                    while not ("B" in inside or _blocked_on(path.parent / GUARD_NAME)):
                        state.wait(timeout=0.01)  # B blocked in the kernel sends no notification

        try:
            with locks.hold("k", what="k", notify=notify):
                with state:
                    inside.add(me)
                    most_inside = max(most_inside, len(inside))
                    state.notify_all()
                ready[me].set()
                ready[other].wait(timeout=30)
                with state:
                    inside.discard(me)
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)
        finally:
            ready[me].set()

    b = threading.Thread(target=waiter, args=("B", "A"))
    a = threading.Thread(target=waiter, args=("A", "B"))
    a.start()
    a.join(timeout=60)
    b.join(timeout=60)
    assert not errors, errors
    assert not a.is_alive() and not b.is_alive()
    assert most_inside == 1
    assert not path.exists()


def test_an_exited_unreaped_holder_counts_as_dead() -> None:
    """Its flock is gone the moment it exits; waiting for its parent to reap it must not matter."""
    from trtforge.store.locks import pid_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    status = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left a zombie
    assert status is not None and status.si_pid == child.pid
    assert not pid_alive(child.pid)
    child.wait()
    assert not pid_alive(child.pid)
    assert pid_alive(os.getpid())
