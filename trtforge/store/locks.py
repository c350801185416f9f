"""Single-flight build locks: one process builds a BuildKey, the others wait and reuse it.

A lock is an ``fcntl.flock`` on ``<store>/locks/<key>.lock``. The kernel drops the lock when
its holder dies, so a crashed builder never blocks the others; the holder's pid, host and
start time are written into the file so waiters can say whom they wait for, and so a lock left
behind by a dead process (e.g. its descriptor survived in a forked child) is recognised and
taken over. Locks only save duplicate work: the atomic blob rename and the catalog re-check
after acquiring are what keep the store correct.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trtforge.errors import StoreError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

_KEY = re.compile(r"^[0-9A-Za-z_.-]{1,128}$")
POLL_FIRST_S = 0.02
POLL_MAX_S = 0.5
GUARD_NAME = ".acquire-guard"
_RETRY = object()  # an attempt found the file retired or replaced: try again at once


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a lock, as written in the lock file."""

    pid: int
    host: str
    started: float

    def is_dead_here(self) -> bool:
        """True only when the holder ran on this host and its process no longer exists."""
        return self.host == socket.gethostname() and not pid_alive(self.pid)

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}"


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs on this host; a zombie (exited, not yet reaped) is dead.

    A killed lock holder stays a zombie until its parent reaps it, and its locks are already
    released by then; treating it as alive would hide the takeover from the waiters' report.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True  # no /proc here: signal 0 is all we know
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]  # the field after "(comm)"
    return state not in (b"Z", b"X")


def _read_holder(fd: int) -> LockHolder | None:
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw.decode("utf-8")) if raw else None
        if not isinstance(data, dict):
            return None
        return LockHolder(int(data["pid"]), str(data["host"]), float(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_holder(fd: int) -> None:
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)


def _same_file(fd: int, path: Path) -> bool:
    """The lock we hold is still the file at ``path`` (not one unlinked by its last holder)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


class LockDir:
    """The ``locks/`` folder of a store."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, key: str) -> Path:
        if not _KEY.match(key):
            raise StoreError(f"not a valid lock key: {key[:80]!r}")
        return self.root / f"{key}.lock"

    @contextmanager
    def hold(
        self,
        key: str,
        *,
        what: str | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> Iterator[None]:
        """Hold the lock for ``key``; ``notify`` hears once whom we wait for, and takeovers."""
        path = self.path_for(key)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = _acquire(path, what or key, notify or (lambda _message: None))
        except OSError as exc:
            raise StoreError(f"cannot take the build lock in {self.root}: {exc.strerror}") from None
        try:
            yield
        finally:
            # Unlink while still holding the lock: a waiter that then gets the old inode sees
            # it is no longer the file at `path` and retries on a fresh one.
            try:
                if _same_file(fd, path):
                    path.unlink()
            finally:
                os.close(fd)


class _Waiter:
    """Between lock attempts: say once whom we wait for, then sleep with exponential backoff."""

    def __init__(self, what: str, notify: Callable[[str], None]) -> None:
        self.what = what
        self.notify = notify
        self.announced = False
        self.delay = POLL_FIRST_S

    def wait(self, who: Callable[[], str]) -> None:
        if not self.announced:
            self.notify(f"waiting for build of {self.what} by {who()}")
            self.announced = True
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, POLL_MAX_S)


def _acquire(path: Path, what: str, notify: Callable[[str], None]) -> int:
    waiter = _Waiter(what, notify)
    while True:
        with _guard(path.parent):
            fd, holder = _try_acquire(path, what, notify)
        if fd is not None:
            return fd
        if isinstance(holder, LockHolder):
            waiter.wait(holder.describe)
        elif holder is not _RETRY:
            waiter.wait(lambda: "another process")


@contextmanager
def _guard(root: Path) -> Iterator[None]:
    """Serialise lock attempts in one store, so a takeover never unlinks a file just taken.

    Without it, a waiter that saw a dead holder could unlink the lock file moments after another
    waiter acquired it, and both would build. The guard is held for a few syscalls only.
    """
    fd = os.open(root / GUARD_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _try_acquire(path: Path, what: str, notify: Callable[[str], None]) -> tuple[int | None, object]:
    """One attempt, under the guard: the held descriptor, or None and the holder (or _RETRY)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_holder(fd) if exc.errno in (errno.EAGAIN, errno.EACCES) else None
        stale = holder is not None and holder.is_dead_here() and _same_file(fd, path)
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        if stale and holder is not None:
            # The holder is gone but its descriptor lives on elsewhere (e.g. a forked child):
            # retire that file; the guard makes sure nobody acquired it since we looked.
            notify(f"taking over the lock for {what} from {holder.describe()}, which is no longer running")
            path.unlink(missing_ok=True)
            return None, _RETRY
        return None, holder
    if not _same_file(fd, path):  # its last holder unlinked it on release: use the new file
        os.close(fd)
        return None, _RETRY
    previous = _read_holder(fd)
    if previous is not None and previous.pid != os.getpid() and previous.is_dead_here():
        notify(f"took over the lock for {what} left by crashed {previous.describe()}")
    _write_holder(fd)
    return fd, None


# -- across machines: PostgreSQL advisory locks --------------------------------------------------

APPLICATION_PREFIX = "trtforge "


def application_name() -> str:
    """How a trtforge session names itself to PostgreSQL, so waiters can say whom they wait for."""
    return f"{APPLICATION_PREFIX}pid {os.getpid()} on host {socket.gethostname()}"[:63]


def _advisory_id(key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"trtforge-build:{key}".encode()).digest()[:8], "big", signed=True)


def _advisory_holder(conn: Connection, lock_id: int) -> str | None:
    """The holder's application name, from pg_locks (a bigint lock is split into classid/objid)."""
    from sqlalchemy import text  # lazy: only PostgreSQL catalogs take advisory locks

    unsigned = lock_id & 0xFFFF_FFFF_FFFF_FFFF
    row = conn.execute(
        text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid = CAST(:hi AS oid) AND l.objid = CAST(:lo AS oid)"
        ),
        {"hi": unsigned >> 32, "lo": unsigned & 0xFFFF_FFFF},
    ).first()
    return row[0] if row is not None else None


@contextmanager
def advisory_lock(engine: Engine, key: str, *, what: str, notify: Callable[[str], None]) -> Iterator[None]:
    """Hold a session-level advisory lock for ``key`` on the catalog's PostgreSQL server.

    Runners on different machines share no file system for ``locks/``, but they share the
    catalog. PostgreSQL releases the lock when the holder's session ends (process death closes
    the connection), so a crashed runner does not block the others.
    """
    from sqlalchemy import text  # lazy: only PostgreSQL catalogs take advisory locks

    lock_id = _advisory_id(key)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        waiter = _Waiter(what, notify)

        def who() -> str:
            holder = _advisory_holder(conn, lock_id)
            return holder.removeprefix(APPLICATION_PREFIX) if holder else "another runner"

        while not conn.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": lock_id}).scalar():
            waiter.wait(who)
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": lock_id})
