"""Small file utilities every layer may use: atomic writes, locked temp files, checked copies.

A temp file's liveness is its flock: a writer holds the lock from creating the file until it is
renamed or removed, so cleanup (which removes only temp files whose lock it can take) never
removes a file another process is still filling, whatever pid namespace or host it runs in.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from trtforge.core.errors import BadInputError, IntegrityError

TEMP_PREFIX = ".tmp-"
STALE_TEMP_AGE_S = 30 * 60


def owner_prefix() -> str:
    """``.tmp-<pid>@<host>-``: says who wrote a leftover; whether that writer lives is the flock's
    to say (pids repeat across pid namespaces and containers that share a hostname)."""
    host = re.sub(r"[^A-Za-z0-9._]", "_", socket.gethostname())[:64]
    return f"{TEMP_PREFIX}{os.getpid()}@{host}-"


def child_path(directory: Path, name: str, what: str) -> Path:
    """``directory / name`` for a ``name`` that is one plain entry of it; anything else is refused.

    Names that become paths come from catalogs and bundles someone else may have written: no
    separator, ``.``/``..``, control character or empty name gets to choose where a file goes.
    """
    plain = bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and name.isprintable()
    path = directory / name
    if not plain or path.parent != directory or path.name != name:
        raise BadInputError(
            f"{what} {name[:80]!r} is not a plain file name; nothing was written",
            hint="give the full output path instead of a directory",
        )
    return path


def same_file(fd: int, path: Path) -> bool:
    """The lock we hold is still the file at ``path`` (not one unlinked by its last holder)."""
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


# flock is not available on this file system (some network mounts): fall back to age.
NO_FLOCK = frozenset({errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL})


def lock_created(fd: int, path: Path) -> bool:
    """Lock a temp file (or directory) we just created at ``path``, for as long as ``fd`` (or a
    dup of it) stays open. False (and ``fd`` closed) when cleanup removed it before we got the
    lock: the caller makes another. The wait is only for a cleaner holding it for a moment."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        if exc.errno in NO_FLOCK:
            return True  # unlockable here: cleanup cannot open a lock either, and goes by age
        os.close(fd)
        raise
    if same_file(fd, path):
        return True
    os.close(fd)
    return False


@contextmanager
def unheld(path: Path) -> Iterator[bool | None]:
    """Hold ``path``'s flock while nobody else does, to remove a dead writer's temp entry safely.

    Yields True while we hold it (no live writer: safe to remove), False when a live process
    holds it or the path is gone, None when it cannot be opened to tell (e.g. another user's).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        yield False
        return
    except OSError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            yield False if exc.errno in (errno.EAGAIN, errno.EACCES) else None
            return
        yield same_file(fd, path)
    finally:
        os.close(fd)


def make_temp(folder: Path, *, directory: bool = False) -> tuple[int, Path]:
    """A new temp file (or directory) in ``folder`` and a descriptor holding its flock.

    The lock is held while that descriptor (or a dup) stays open; it is what tells cleanup that
    the writer is alive. For a directory the descriptor is read-only and only holds the lock.
    """
    while True:
        if directory:
            path = Path(tempfile.mkdtemp(prefix=owner_prefix(), dir=folder))
            try:
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # cleanup removed it before we could even open it: make another
        else:
            fd, name = tempfile.mkstemp(prefix=owner_prefix(), dir=folder)
            path = Path(name)
        if lock_created(fd, path):
            return fd, path
        # cleanup found it unlocked (before our flock) and removed it: make another


def remove_if_unheld(path: Path, *, max_age_s: float = STALE_TEMP_AGE_S) -> bool:
    """Remove a temp file or directory unless a live writer holds its lock; one we cannot open
    to tell (another user's) only once older than ``max_age_s``. True if removed."""
    with unheld(path) as free:
        if free is False:
            return False
        if free is None:
            try:
                if time.time() - path.lstat().st_mtime <= max_age_s:
                    return False
            except FileNotFoundError:
                return False
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:  # gone already, or not ours to remove: a leftover is not worth failing for
            return False
        return True


def in_the_way(*outputs: Path) -> Path | None:
    """The first of ``outputs`` (files about to be written) that exists and is not a file: a folder
    in the way, refused before anything is written."""
    return next((path for path in outputs if path.exists() and not path.is_file()), None)


def output_named(exc: OSError, *outputs: Path) -> str:
    """The output a failed write concerns: the file the error names when it is one of ``outputs``,
    else the first (a temp file's name means nothing to the user)."""
    named = {str(path) for path in outputs}
    return exc.filename if exc.filename in named else str(outputs[0])


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_write(target: Path) -> Iterator[BinaryIO]:
    """Write ``target`` all-or-nothing: temp file beside it, fsync, rename, cleanup on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = make_temp(target.parent)
    lock = os.dup(fd)  # keeps the temp file's lock until it is renamed or removed
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(lock)


# linux/fs.h: FICLONE = _IOW(0x94, 9, int). Shares the source's extents (btrfs, XFS, bcachefs...).
FICLONE = 0x40049409
_NO_FAST_COPY = frozenset({errno.EXDEV, errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.ENOSYS, errno.EBADF})


def _copy_bytes(src: int, dst: int, size: int) -> str:
    """Copy ``size`` bytes between fds at offset 0: reflink, else copy_file_range, else read/write."""
    try:
        fcntl.ioctl(dst, FICLONE, src)
        return "reflink"
    except OSError as exc:
        if exc.errno not in _NO_FAST_COPY:
            raise
    try:
        left = size
        while left > 0:
            copied = os.copy_file_range(src, dst, left)
            if copied == 0:
                break
            left -= copied
        if left == 0:
            return "copy_file_range"
    except OSError as exc:
        if exc.errno not in _NO_FAST_COPY:
            raise
    os.ftruncate(dst, 0)  # start over: a fast path may have stopped part-way
    os.lseek(src, 0, os.SEEK_SET)
    os.lseek(dst, 0, os.SEEK_SET)
    while chunk := os.read(src, 1 << 22):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
    return "copy"


def copy_hashed(source: Path, target: Path) -> str:
    """Copy the regular file ``source`` to a new file ``target`` and return the copy's sha256.

    The copy is hashed after it is written (a reflink shares extents copy-on-write, so later writes
    to ``source`` never reach it): the digest names the bytes ``target`` holds, whatever happened
    to ``source`` meanwhile. Raises OSError (IsADirectoryError for a folder, FileExistsError when
    ``target`` exists).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file", str(source))
        dst = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _copy_bytes(src.fileno(), dst, os.fstat(src.fileno()).st_size)
            os.lseek(dst, 0, os.SEEK_SET)
            digest = hashlib.sha256()
            while chunk := os.read(dst, 1 << 22):
                digest.update(chunk)
        finally:
            os.close(dst)
    return digest.hexdigest()


def checked_copy(source: Path, target: Path, sha256: str, *, temp_prefix: str) -> str:
    """Put a private copy of ``source`` at ``target``, atomically and only if it hashes to ``sha256``.

    Never a hard link: writing to a handed-out file (root ignores the blob's 0444 mode) must not
    change the store. The copy is a reflink or an in-kernel copy where the file system has them
    (no extra space or time), a plain copy otherwise; its mode follows the umask like any new
    file. Returns how it was copied. Raises IntegrityError (nothing written) on a hash mismatch.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{temp_prefix}{uuid.uuid4().hex}"
    dst = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with open(source, "rb") as src:
            how = _copy_bytes(src.fileno(), dst, os.fstat(src.fileno()).st_size)
        os.fsync(dst)
        os.lseek(dst, 0, os.SEEK_SET)
        digest = hashlib.sha256()
        while chunk := os.read(dst, 1 << 22):
            digest.update(chunk)
        if digest.hexdigest() != sha256:
            raise IntegrityError(
                f"plan {sha256[:12]} is corrupted in the store (its bytes hash to {digest.hexdigest()[:12]})",
                hint="run `trtforge fsck --repair`, then rebuild",
            )
        os.replace(tmp, target)
    finally:
        os.close(dst)
        tmp.unlink(missing_ok=True)
    return how
