"""Lock liveness comes from the kernel lock, never from the pid written in the file.

Containers that share a hostname (host networking) and a store see each other's pids through
different pid namespaces, so a pid that looks dead here may be a live builder there. The
namespace tests run real builds under ``unshare --pid`` (root; CI runs as root).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.procs import (
    CrashPoint,
    finish,
    hold_in_child,
    in_pid_namespace,
    release,
    start,
    trtforge_argv,
    unshare_refusal,
)
from trtforge.store.locks import LockDir


def test_a_held_lock_is_waited_for_whatever_pid_its_file_names(tmp_path: Path) -> None:
    """The file names a pid that no longer exists on this host, but a live process holds the lock
    (a holder in another pid namespace looks exactly like this): wait, never take over.

    Fails on 55eb6bf: the waiter said "taking over the lock ... which is no longer running",
    unlinked the file and held a second lock while the first holder still ran.
    """
    locks = LockDir(tmp_path / "locks")
    path = locks.path_for("k")
    path.parent.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    path.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0.0}))
    holder = hold_in_child(path)

    messages: list[str] = []
    waiting = threading.Event()
    inside = threading.Event()

    def notify(message: str) -> None:
        messages.append(message)
        if message.startswith("waiting for build"):
            waiting.set()

    def waiter() -> None:
        try:
            with locks.hold("k", what="k", notify=notify):
                inside.set()
        finally:
            waiting.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    assert waiting.wait(timeout=60)
    assert messages[0] == f"waiting for build of k by pid {dead.pid} on host {socket.gethostname()}", messages
    assert not inside.is_set() and path.exists()  # still the holder's file, not retired
    release(holder)
    thread.join(timeout=60)
    assert inside.is_set() and not thread.is_alive()
    assert messages[1:] == [f"took over the lock for k left by crashed pid {dead.pid} on host {socket.gethostname()}"]
    assert not path.exists()


FORK_AND_HOLD = (
    "import os, sys\n"
    "from pathlib import Path\n"
    "from trtforge.store.locks import LockDir\n"
    "with LockDir(Path(sys.argv[1])).hold('k'):\n"
    "    if os.fork() == 0:\n"
    "        print('forked', flush=True)\n"
    "        sys.stdin.read()\n"  # until the test says so; then unwind through hold(), as a parent would
    "    else:\n"
    "        os.kill(os.getpid(), 9)\n"
    "os._exit(0)\n"
)


def test_a_child_forked_by_a_holder_neither_keeps_nor_releases_its_lock(tmp_path: Path) -> None:
    """A holder forked (without exec) and died: its lock is free although the child runs on (the
    child closed its copy at fork), and the child leaving ``hold`` later does not unlink the file
    of the lock's next holder."""
    from tests.conftest import subprocess_env

    path = LockDir(tmp_path / "locks").path_for("k")
    proc = subprocess.Popen(
        [sys.executable, "-c", FORK_AND_HOLD, str(path.parent)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    assert proc.stdout.readline() == "forked\n"
    assert proc.wait() == -signal.SIGKILL  # the holder is dead; its forked child lives on
    messages: list[str] = []

    def notify(message: str) -> None:
        messages.append(message)
        if message.startswith("waiting for build"):  # the child kept the lock: let it go, then fail
            proc.stdin.close()

    with LockDir(path.parent).hold("k", what="k", notify=notify):
        if not proc.stdin.closed:
            proc.stdin.close()  # the child now unwinds through its copy of hold()
        assert proc.stdout.read() == ""  # EOF: the child has exited
        assert path.exists() and json.loads(path.read_text())["pid"] == os.getpid()  # still ours
    assert len(messages) == 1 and messages[0].startswith("took over the lock for k left by crashed pid"), messages


# -- real builders in separate pid namespaces, one hostname, one store --------------------------


@pytest.fixture
def namespaces() -> None:
    reason = unshare_refusal()
    if reason is not None:
        pytest.skip(reason)


def _rows(store: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(store / "catalog.sqlite") as conn:
        return conn.execute("SELECT id, plan_sha256 FROM artifacts").fetchall()


@pytest.mark.usefixtures("namespaces")
def test_builder_in_another_pid_namespace_is_not_taken_for_dead(
    mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path
) -> None:
    """Two `trtforge build` of one recipe, each in its own pid namespace (same hostname, one store).

    Fails on 55eb6bf: the second said "taking over the lock ... from pid 2 ..., which is no longer
    running" (pid 2 of the other namespace; its own pid 2 had exited) and built alongside.
    """
    recipe = mlp_recipe("ns")
    build = trtforge_argv("build", recipe, "--store", store, "--json")
    point = CrashPoint(tmp_path / "cp", "build-locked")
    holder = start(in_pid_namespace(build), point.env)
    assert point.wait_reached(holder) == 2  # its pid inside its namespace
    waiter = start(in_pid_namespace(build, burn=3))  # pid 5 there; pid 2 there has exited
    line = waiter.stderr.readline()
    assert "waiting for build of ns (" in line and f"by pid 2 on host {socket.gethostname()}" in line, line
    holder.send_signal(signal.SIGKILL)  # unshare --kill-child: the whole namespace goes
    holder.wait()
    point.close()
    code, data, err = finish(waiter)
    assert code == 0 and data[0]["status"] == "built", err
    assert "left by crashed pid 2 on host" in err and "taking over" not in err
    assert len(_rows(store)) == 1
    assert list((store / "locks").glob("*.lock")) == []


@pytest.mark.usefixtures("namespaces")
def test_temp_file_being_written_in_another_pid_namespace_is_left_alone(
    mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    """A writer in another pid namespace has its plan in `.incoming/` (named by its pid there);
    `fsck --repair` from a namespace where that pid is dead must not remove it.

    Fails on 55eb6bf: fsck judged the writer dead by its pid and removed its temp file.
    """
    recipe = mlp_recipe("tmpns")
    point = CrashPoint(tmp_path / "cp", "blob-temp-written")
    writer = start(in_pid_namespace(trtforge_argv("build", recipe, "--store", store, "--json")), point.env)
    assert point.wait_reached(writer) == 2
    incoming = store / "blobs" / "sha256" / ".incoming"
    [temp] = list(incoming.iterdir())
    assert temp.name.startswith(".tmp-2@")  # its pid inside its namespace

    proc = start(in_pid_namespace(trtforge_argv("fsck", "--repair", "--store", store, "--json"), burn=3))
    code, report, err = finish(proc)
    assert code == 0, err
    assert report["stale_temp"] == [] and report["repair"]["removed_temp"] == [], report
    assert temp.exists()

    writer.send_signal(signal.SIGKILL)
    writer.wait()
    point.close()
    after = cli("fsck", "--repair", "--store", store, "--json")  # now nobody holds it: a leftover
    assert after.json()["repair"]["removed_temp"] == [str(temp)], after
    assert not temp.exists()
    assert os.listdir(incoming) == []
