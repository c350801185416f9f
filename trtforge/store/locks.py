"""Single-flight build locks: one process builds a BuildKey, the others wait and reuse it.

A lock is an ``fcntl.flock`` on ``<store>/locks/<key>.lock``. Liveness comes from the kernel
lock alone: while it is held its holder is alive, whatever pid namespace or container it runs in
(two containers may share a hostname and reuse each other's pids, so pids prove nothing); the
kernel drops it when the holder dies, so a crashed builder never blocks the others. The holder's
pid, host and start time are written into the file only so waiters can say whom they wait for.
Locks only save duplicate work: the atomic blob rename and the catalog re-check after acquiring
are what keep the store correct.

The same rule tells a temp file (or work directory) being written from a dead writer's leftover:
its writer holds an flock on it while writing (:func:`lock_created`), and cleanup removes only
what it can lock itself (:func:`unheld`).
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

from trtforge.core.errors import BuildInterruptedError, CatalogUnavailableError, StoreError, StoreReadOnlyError
from trtforge.core.fsutil import same_file

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

_KEY = re.compile(r"[0-9A-Za-z_.-]{1,128}")
POLL_FIRST_S = 0.02
POLL_MAX_S = 0.5
_RETRY = object()  # an attempt found the file retired or replaced: try again at once


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a lock, as written in the lock file: for messages only."""

    pid: int
    host: str
    started: float
    worker: int | None = None  # the pid of the build worker doing the holder's build, once it has one

    def describe(self) -> str:
        worker = f" (build worker pid {self.worker})" if self.worker is not None else ""
        return f"pid {self.pid} on host {self.host}{worker}"


def _read_holder(fd: int) -> LockHolder | None:
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw.decode("utf-8")) if raw else None
        if not isinstance(data, dict):
            return None
        worker = data.get("worker")
        return LockHolder(
            int(data["pid"]), str(data["host"]), float(data["started"]), int(worker) if worker is not None else None
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_holder(fd: int, **extra: int) -> None:
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), **extra}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)


@dataclass(frozen=True)
class HeldLock:
    """A build lock this process holds (what ``LockDir.hold`` yields)."""

    fd: int
    path: Path

    def note_worker(self, pid: int) -> None:
        """Name the build worker in the lock file: `cat <store>/locks/<key>.lock` finds the process
        building that key, and waiters say whom they wait for."""
        _write_holder(self.fd, worker=pid)


_HELD: set[int] = set()  # descriptors of locks this process holds (closed in forked children)


def _forget_held_in_child() -> None:
    """A child forked (without exec) while we hold a lock must not keep it alive after we die."""
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_held_in_child)


def _release(fd: int) -> bool:
    """Close a lock we hold; False in a child forked while it was held (the parent's, closed at fork)."""
    if fd not in _HELD:
        return False
    _HELD.discard(fd)
    os.close(fd)
    return True


def _lock_error(what: str, root: Path, exc: OSError) -> StoreError:
    """A lock file that cannot be made: on a read-only store, the one line every write gets."""
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StoreReadOnlyError(f"the store is read-only: cannot take {what} in {root} ({exc.strerror})")
    return StoreError(f"cannot take {what} in {root}: {exc.strerror}")


class LockDir:
    """The ``locks/`` folder of a store."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise StoreError(f"not a valid lock key: {key[:80]!r}")
        return self.root / f"{key}.lock"

    @contextmanager
    def hold(
        self,
        key: str,
        *,
        what: str | None = None,
        notify: Callable[[str], None] | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Iterator[HeldLock]:
        """Hold the lock for ``key``; ``notify`` hears once whom we wait for, and takeovers; waiting
        ends with BuildInterruptedError once ``cancelled()`` says so (a batch being stopped)."""
        path = self.path_for(key)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = _acquire(path, what or key, notify or (lambda _message: None), cancelled)
        except OSError as exc:
            raise _lock_error("the build lock", self.root, exc) from None
        try:
            yield HeldLock(fd, path)
        finally:
            # Unlink while still holding the lock: a waiter that then gets the old inode sees
            # it is no longer the file at `path` and retries on a fresh one. A child forked while
            # we held it (and unwinding here) leaves both alone: the lock is still its parent's.
            if fd in _HELD:
                try:
                    if same_file(fd, path):
                        path.unlink()
                finally:
                    _release(fd)


class _Waiter:
    """Between lock attempts: say once whom we wait for, then sleep with exponential backoff."""

    def __init__(self, what: str, notify: Callable[[str], None], cancelled: Callable[[], bool] | None = None) -> None:
        self.what = what
        self.notify = notify
        self.cancelled = cancelled
        self.announced = False
        self.delay = POLL_FIRST_S

    def wait(self, who: Callable[[], str]) -> None:
        if self.cancelled is not None and self.cancelled():
            raise BuildInterruptedError(f"stopped while waiting for the build of {self.what}")
        if not self.announced:
            self.notify(f"waiting for build of {self.what} by {who()}")
            self.announced = True
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, POLL_MAX_S)


def _acquire(path: Path, what: str, notify: Callable[[str], None], cancelled: Callable[[], bool] | None = None) -> int:
    waiter = _Waiter(what, notify, cancelled)
    while True:
        fd, holder = _try_acquire(path, what, notify)
        if fd is not None:
            return fd
        if isinstance(holder, LockHolder):
            waiter.wait(holder.describe)
        elif holder is not _RETRY:
            waiter.wait(lambda: "another process")


def _try_acquire(path: Path, what: str, notify: Callable[[str], None]) -> tuple[int | None, object]:
    """One attempt: the held descriptor, or None and the holder (or _RETRY).

    A held lock is never taken over, whatever the pid in the file says: only the kernel knows
    whether its holder lives (its pid may belong to another pid namespace, or be reused).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_holder(fd) if exc.errno in (errno.EAGAIN, errno.EACCES) else None
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return None, holder
    if not same_file(fd, path):  # its last holder unlinked it on release: use the new file
        os.close(fd)
        return None, _RETRY
    _HELD.add(fd)
    previous = _read_holder(fd)
    if previous is not None:  # a holder that released would have unlinked the file: it died
        notify(f"took over the lock for {what} left by crashed {previous.describe()}")
    _write_holder(fd)
    return fd, None


# -- gc against builds: a store-wide fence ---------------------------------------------------

FENCE_NAME = ".blob-fence"


@contextmanager
def _fence(root: Path, mode: int, waiting: Callable[[int], str], notify: Callable[[str], None]) -> Iterator[int]:
    """The store's fence file, flocked in ``mode`` (LOCK_SH or LOCK_EX); says once if it waits."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / FENCE_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise _lock_error("the gc fence", root, exc) from None
    _HELD.add(fd)
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            notify(waiting(fd))
            fcntl.flock(fd, mode)  # the other side holds it for a catalog commit or a few deletes
        yield fd
    finally:
        _release(fd)


@contextmanager
def recording_blobs(root: Path, notify: Callable[[str], None]) -> Iterator[None]:
    """Shared side of the fence: held by a build from writing (or reusing) its blobs until its
    catalog rows commit, so gc never deletes a blob between its last look at the catalog and
    that commit. Builds do not wait for each other."""

    def waiting(fd: int) -> str:
        holder = _read_holder(fd)
        return f"waiting for gc ({holder.describe() if holder else 'another process'}) to finish deleting blobs"

    with _fence(root, fcntl.LOCK_SH, waiting, notify):
        yield


@contextmanager
def collecting_blobs(root: Path, notify: Callable[[str], None]) -> Iterator[None]:
    """Exclusive side of the fence: held by gc from its last look at the catalog until its blob
    files are deleted; it waits for builds that are between a blob write and their commit."""
    with _fence(root, fcntl.LOCK_EX, lambda _fd: "waiting for builds to record their blobs", notify) as fd:
        _write_holder(fd)
        yield


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
def advisory_lock(
    engine: Engine,
    key: str,
    *,
    what: str,
    notify: Callable[[str], None],
    cancelled: Callable[[], bool] | None = None,
) -> Iterator[None]:
    """Hold a session-level advisory lock for ``key`` on the catalog's PostgreSQL server.

    Runners on different machines share no file system for ``locks/``, but they share the
    catalog. PostgreSQL releases the lock when the holder's session ends (process death closes
    the connection), so a crashed runner does not block the others.
    """
    from sqlalchemy import text  # lazy: only PostgreSQL catalogs take advisory locks

    lock_id = _advisory_id(key)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        waiter = _Waiter(what, notify, cancelled)

        def who() -> str:
            holder = _advisory_holder(conn, lock_id)
            return holder.removeprefix(APPLICATION_PREFIX) if holder else "another runner"

        while not conn.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": lock_id}).scalar():
            waiter.wait(who)
        with _releasing(conn, "SELECT pg_advisory_unlock(:id)", lock_id):
            yield


@contextmanager
def advisory_fence(engine: Engine, *, exclusive: bool, notify: Callable[[str], None]) -> Iterator[None]:
    """The gc fence on the catalog's PostgreSQL server: shared for builds recording blobs,
    exclusive for gc deleting them (runners share the bucket and the catalog, not ``locks/``)."""
    from sqlalchemy import text  # lazy: only PostgreSQL catalogs take advisory locks

    lock_id = _advisory_id(".blob-fence")  # a build key is hex: no build lock has this id
    mode = "" if exclusive else "_shared"
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        if not conn.execute(text(f"SELECT pg_try_advisory_lock{mode}(:id)"), {"id": lock_id}).scalar():
            waiting = "builds to record their blobs" if exclusive else "gc to finish deleting blobs"
            notify(f"waiting for {waiting} (another runner)")
            conn.execute(text(f"SELECT pg_advisory_lock{mode}(:id)"), {"id": lock_id})
        with _releasing(conn, f"SELECT pg_advisory_unlock{mode}(:id)", lock_id):
            yield


@contextmanager
def _releasing(conn: Connection, sql: str, lock_id: int) -> Iterator[None]:
    """Release the session-level advisory lock held on ``conn`` when the block ends. When the
    catalog stopped answering inside it, the unlock is not sent: a server that froze (host paused,
    processes stopped) would never answer it, and the command would hang. The connection is closed
    instead; the server ends its session, and the lock with it, once it sees the connection go."""
    try:
        yield
    except CatalogUnavailableError:
        conn.invalidate()
        raise
    except BaseException:
        _unlock(conn, sql, lock_id)
        raise
    _unlock(conn, sql, lock_id)


def _unlock(conn: Connection, sql: str, lock_id: int) -> None:
    """Release a session-level advisory lock. A connection lost meanwhile (the server restarted)
    ended the session, and the lock with it: nothing is left to release, and the error is not the
    caller's (the work done under the lock stands or failed on its own)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        conn.execute(text(sql), {"id": lock_id})
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        conn.invalidate()
