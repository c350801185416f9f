"""Content-addressed blobs: ``<root>/blobs/sha256/<aa>/<sha256>``.

Every write goes to a uniquely named temp file in the blob directory's file system, is hashed
while written, fsynced, and renamed into place, so a blob path either does not exist or holds
exactly the bytes its name promises. Reads for loading re-hash the bytes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from trtforge.core.crashpoints import crashpoint
from trtforge.core.errors import IntegrityError, NotFoundError, StoreWriteError
from trtforge.core.fsutil import (
    STALE_TEMP_AGE_S,
    TEMP_PREFIX,
    fsync_dir,
    make_temp,
    remove_if_unheld,
    unheld,
)
from trtforge.rules.keys import sha256_stream

_SHA256 = re.compile(r"[0-9a-f]{64}")
_TEMP_OWNER = re.compile(r"^\.tmp-(\d+)@([A-Za-z0-9._]*)-")


@dataclass(frozen=True)
class BlobStat:
    size: int
    mtime: float


@dataclass(frozen=True)
class TempFile:
    """A leftover temp file (or unfinished S3 upload) and why it may be removed."""

    location: str  # a local path, or s3://bucket/key?uploadId=... for an S3 store
    age_s: float
    owner_pid: int | None  # from the name: informational only
    owner_dead: bool  # no live writer holds its lock

    @property
    def path(self) -> Path:
        return Path(self.location)


def scan_temp_files(folder: Path, *, max_age_s: float = STALE_TEMP_AGE_S, include_dirs: bool = False) -> list[TempFile]:
    """Temp files (and with ``include_dirs`` temp directories) in ``folder`` that no live writer
    holds: their flock can be taken (or, where we cannot open them to tell, they are older than
    ``max_age_s``). The pid and host in a name decide nothing."""
    now = time.time()
    stale = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        if not (entry.is_file(follow_symlinks=False) or (include_dirs and entry.is_dir(follow_symlinks=False))):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        match = _TEMP_OWNER.match(entry.name)
        pid = int(match.group(1)) if match else None
        with unheld(Path(entry.path)) as free:
            if free or (free is None and age > max_age_s):
                stale.append(TempFile(entry.path, round(age, 1), pid, bool(free)))
    return stale


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    size: int


@dataclass(frozen=True)
class BlobCheck:
    """What a cheap look at a blob says against the size (and digest) its catalog row records."""

    present: bool
    damage: str | None = None  # why its bytes are not the recorded ones, e.g. "has 70 bytes, its record says 908948"

    @property
    def intact(self) -> bool:
        return self.present and self.damage is None


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass  # a store shared read-only with us: gc there is someone else's job


# Errors of the storage itself (full, over quota, file too large, read-only, failing disk).
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


INLINE_DIGEST_BYTES = 16 << 20


class ParallelDigest:
    """sha256 of a byte stream, computed on a helper thread while the caller writes it.

    hashlib and file writes both release the GIL on large buffers, so hashing a plan and
    writing it take the longer of the two instead of their sum (~0.1 s per 256 MB here).
    Chunks must not change after ``update``: bytes, or views of memory nobody writes to.

    The first ``INLINE_DIGEST_BYTES`` are hashed on the caller's thread: a plan of a few MB starts
    no thread and passes through no queue, which a parent recording hundreds of small builds would
    pay for in GIL hand-offs (issue 24); the helper starts for the rest.

    The caller never waits on the helper without bound, so an interrupted write never hangs:
    ``update`` waits for room in slices and raises once the helper has stopped, and ``close`` (what
    a failed or interrupted write calls) abandons the helper without touching the queue. (A signal
    that lands while the queue's lock is taken can leave that lock held for good; a close that put
    an end marker on the queue then waited forever for a helper that could never take it.) An
    abandoned helper notices within ``POLL_S`` and ends.
    """

    POLL_S = 0.1

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._chunks: queue.Queue[bytes | memoryview | None] = queue.Queue(maxsize=8)
        self._abandoned = False
        self._failure: BaseException | None = None
        self._finished = threading.Event()
        self._thread: threading.Thread | None = None
        self._inline = INLINE_DIGEST_BYTES  # hashed on the caller's thread until this is used up

    def _run(self) -> None:
        try:
            while not self._abandoned:
                try:
                    chunk = self._chunks.get(timeout=self.POLL_S)
                except queue.Empty:
                    continue
                if chunk is None:
                    return
                self._digest.update(chunk)
        except BaseException as exc:  # e.g. a view of a buffer released meanwhile: the caller hears it
            self._failure = exc
        finally:
            self._finished.set()

    def _put(self, item: bytes | memoryview | None) -> None:
        while True:
            if self._finished.is_set() or self._abandoned:
                raise RuntimeError("the sha256 helper thread stopped before the stream ended") from self._failure
            try:
                self._chunks.put(item, timeout=self.POLL_S)
                return
            except queue.Full:
                continue

    def update(self, chunk: bytes | memoryview) -> None:
        if self._thread is None and len(chunk) <= self._inline:
            self._inline -= len(chunk)
            self._digest.update(chunk)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="trtforge-sha256", daemon=True)
            self._thread.start()
        self._put(chunk)

    def close(self) -> None:
        """Abandon the helper (idempotent, never blocks); the digest is not to be read after it
        unless ``hexdigest`` was called first."""
        self._abandoned = True

    def hexdigest(self) -> str:
        """The digest of everything given to ``update`` (waits for the helper to catch up)."""
        if self._thread is not None and not self._finished.is_set():
            self._put(None)
            while not self._finished.wait(self.POLL_S):
                if self._abandoned:
                    raise RuntimeError("the sha256 helper thread was abandoned")
        if self._failure is not None:
            raise RuntimeError("the sha256 helper thread failed") from self._failure
        return self._digest.hexdigest()


@contextmanager
def store_write_errors() -> Iterator[None]:
    """Turn a full or failing disk into one clean StoreWriteError (the caller cleans up)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        raise StoreWriteError(f"cannot write to the store: {exc.strerror}") from None


class BlobBackend(Protocol):
    """What the stages and maintenance need from a blob store (local directory or S3 bucket).

    Every implementation hashes while writing, makes a blob visible only when complete, and
    re-hashes on ``read_verified``/``verify``.
    """

    def exists(self, sha256: str) -> bool: ...
    def put_chunks(self, chunks: Iterable[bytes | memoryview]) -> BlobRef: ...
    def put_bytes(self, data: bytes | memoryview) -> BlobRef: ...
    def put_file(self, path: Path) -> BlobRef: ...
    def read_verified(self, sha256: str) -> bytes: ...
    def verify(self, sha256: str) -> bool: ...
    def local_file(self, sha256: str, *, verify: bool = True) -> Path: ...
    def location(self, sha256: str) -> str: ...
    def stat(self, sha256: str) -> BlobStat | None: ...
    def check(self, sha256: str, size: int) -> BlobCheck: ...
    def iter_digests(self) -> Iterator[str]: ...
    def temp_files(self, *, max_age_s: float = STALE_TEMP_AGE_S) -> list[TempFile]: ...
    def clean_stale_temp(self, *, max_age_s: float = STALE_TEMP_AGE_S) -> list[TempFile]: ...
    def remove_temp(self, location: str) -> bool: ...
    def delete(self, sha256: str) -> bool: ...
    def quarantine(self, sha256: str) -> str | None: ...


def check_digest(sha256: str) -> str:
    """A blob name must be a lowercase sha256 hex digest: nothing else reaches a path or key."""
    if not _SHA256.fullmatch(sha256):
        raise NotFoundError(f"not a sha256 digest: {sha256[:80]!r}")
    return sha256


def put_bytes_via(backend: BlobBackend, data: bytes | memoryview) -> BlobRef:
    view = memoryview(data).cast("B")
    step = 1 << 22
    return backend.put_chunks(view[i : i + step] for i in range(0, len(view), step))


class BlobStore:
    """Local directory of sha256-addressed blobs."""

    def __init__(self, root: Path) -> None:
        self.root = root / "blobs" / "sha256"
        self.tmp_dir = self.root / ".incoming"
        self.quarantine_dir = root / "quarantine"

    def path_for(self, sha256: str) -> Path:
        check_digest(sha256)
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def put_chunks(self, chunks: Iterable[bytes | memoryview]) -> BlobRef:
        """Store a stream of bytes; returns its digest. Existing identical blobs are kept."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.clean_stale_temp()  # writers that died mid-write leave their temp files here
        size = 0
        with store_write_errors():
            fd, tmp = make_temp(self.tmp_dir)
        lock = os.dup(fd)  # the temp file's lock outlives the write handle, until the rename
        digest = ParallelDigest()
        try:
            with store_write_errors(), os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    digest.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            crashpoint("blob-temp-written")
            sha = digest.hexdigest()
            final = self.path_for(sha)
            if not self.verify(sha):  # absent, or a damaged copy that this write repairs
                with store_write_errors():
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.chmod(tmp, 0o444)
                    os.replace(tmp, final)
                fsync_dir(final.parent)
            else:
                _touch(final)  # reused: tell gc this blob is about to be referenced
            return BlobRef(sha, size)
        finally:
            digest.close()
            tmp.unlink(missing_ok=True)
            os.close(lock)

    def clean_stale_temp(self, *, max_age_s: float = STALE_TEMP_AGE_S) -> list[TempFile]:
        """Remove temp files whose writer is gone (no one holds their lock)."""
        scanned = scan_temp_files(self.tmp_dir, max_age_s=max_age_s)
        return [temp for temp in scanned if remove_if_unheld(temp.path, max_age_s=max_age_s)]

    def remove_temp(self, location: str) -> bool:
        """Remove one temp file that ``temp_files`` listed; anything else is left alone."""
        path = Path(location)
        if not path.name.startswith(TEMP_PREFIX) or not path.resolve().is_relative_to(self.root.resolve()):
            return False
        return remove_if_unheld(path)  # re-checked: listed a while ago, its lock decides now

    def put_bytes(self, data: bytes | memoryview) -> BlobRef:
        return put_bytes_via(self, data)

    def put_file(self, path: Path) -> BlobRef:
        with open(path, "rb") as handle:
            return self.put_chunks(iter(lambda: handle.read(1 << 22), b""))

    def _open_checked(self, sha256: str) -> BinaryIO:
        """Open a blob for reading, refusing symlinks anywhere below the blob root."""
        path = self.path_for(sha256)
        shard = path.parent
        if shard.is_symlink() or (shard.exists() and shard.resolve() != self.root.resolve() / sha256[:2]):
            raise IntegrityError(f"blob {sha256[:12]} is behind a symlinked folder in the store")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise IntegrityError(f"blob {sha256[:12]} is missing from the store") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise IntegrityError(f"blob {sha256[:12]} is a symlink; the store only holds regular files") from None
            raise
        return os.fdopen(fd, "rb")

    def read_verified(self, sha256: str) -> bytes:
        """The blob's bytes, after checking they still hash to their name."""
        with self._open_checked(sha256) as handle:
            data = handle.read()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise IntegrityError(f"blob {sha256[:12]} is corrupted (its bytes hash to {actual[:12]})")
        return data

    def verify(self, sha256: str) -> bool:
        """True when the blob is a regular file in the store whose bytes hash to its name."""
        try:
            with self._open_checked(sha256) as handle:
                return sha256_stream(handle) == sha256
        except IntegrityError:
            return False

    def local_file(self, sha256: str, *, verify: bool = True) -> Path:
        """The blob's file, for loaders that want a path; with ``verify``, hash-checked first."""
        path = self.path_for(sha256)
        if not path.is_file() or (verify and not self.verify(sha256)):
            raise IntegrityError(f"plan {sha256[:12]} is missing or corrupted in the store")
        return path

    def stat(self, sha256: str) -> BlobStat | None:
        try:
            info = self.path_for(sha256).stat()
        except FileNotFoundError:
            return None
        return BlobStat(info.st_size, info.st_mtime)

    def check(self, sha256: str, size: int) -> BlobCheck:
        """Present with the recorded size (a local file's bytes are hashed where they are loaded)."""
        info = self.stat(sha256)
        if info is None:
            return BlobCheck(False)
        if info.size != size:
            return BlobCheck(True, f"has {info.size} bytes, its record says {size}")
        return BlobCheck(True)

    def location(self, sha256: str) -> str:
        return str(self.path_for(sha256))

    def iter_digests(self) -> Iterator[str]:
        """Names of the blob files present (by listing; contents are not checked)."""
        if not self.root.is_dir():
            return
        for shard in sorted(self.root.iterdir()):
            if not re.fullmatch(r"[0-9a-f]{2}", shard.name) or not shard.is_dir():
                continue
            for entry in sorted(shard.iterdir()):
                if _SHA256.fullmatch(entry.name) and entry.name.startswith(shard.name):
                    yield entry.name

    def temp_files(self, *, max_age_s: float = STALE_TEMP_AGE_S) -> list[TempFile]:
        """Stale temp files anywhere under the blob root (the incoming folder and shards)."""
        folders = [self.tmp_dir]
        if self.root.is_dir():
            folders += [d for d in sorted(self.root.iterdir()) if d.is_dir() and d != self.tmp_dir]
        return [t for folder in folders for t in scan_temp_files(folder, max_age_s=max_age_s)]

    def delete(self, sha256: str) -> bool:
        """Remove a blob file; False if it was already gone."""
        try:
            self.path_for(sha256).unlink()
        except FileNotFoundError:
            return False
        return True

    def quarantine(self, sha256: str) -> str | None:
        """Move a damaged blob to ``<store>/quarantine/`` (kept for inspection); its new location."""
        source = self.path_for(sha256)
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        target = self.quarantine_dir / f"{sha256}.{int(time.time())}"
        try:
            os.replace(source, target)
        except FileNotFoundError:
            return None
        return str(target)
