"""Content-addressed blobs: ``<root>/blobs/sha256/<aa>/<sha256>``.

Every write goes to a uniquely named temp file in the blob directory's file system, is hashed
while written, fsynced, and renamed into place, so a blob path either does not exist or holds
exactly the bytes its name promises. Reads for loading re-hash the bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from trtforge.errors import IntegrityError, NotFoundError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    size: int


def _fsync_dir(path: Path) -> None:
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
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


class BlobStore:
    """Local directory of sha256-addressed blobs."""

    def __init__(self, root: Path) -> None:
        self.root = root / "blobs" / "sha256"
        self.tmp_dir = self.root / ".incoming"

    def path_for(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise NotFoundError(f"not a sha256 digest: {sha256[:80]!r}")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def put_chunks(self, chunks: Iterable[bytes | memoryview]) -> BlobRef:
        """Store a stream of bytes; returns its digest. Existing identical blobs are kept."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.tmp_dir)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    digest.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            sha = digest.hexdigest()
            final = self.path_for(sha)
            if not final.is_file():
                final.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o444)
                os.replace(tmp, final)
                _fsync_dir(final.parent)
            return BlobRef(sha, size)
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, data: bytes | memoryview) -> BlobRef:
        view = memoryview(data).cast("B")
        step = 1 << 22
        return self.put_chunks(view[i : i + step] for i in range(0, len(view), step))

    def put_file(self, path: Path) -> BlobRef:
        with open(path, "rb") as handle:
            return self.put_chunks(iter(lambda: handle.read(1 << 22), b""))

    def read_verified(self, sha256: str) -> bytes:
        """The blob's bytes, after checking they still hash to their name."""
        path = self.path_for(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise IntegrityError(f"blob {sha256[:12]} is missing from the store") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise IntegrityError(f"blob {sha256[:12]} is corrupted (its bytes hash to {actual[:12]})")
        return data

    def verify(self, sha256: str) -> bool:
        path = self.path_for(sha256)
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 22):
                    digest.update(chunk)
        except FileNotFoundError:
            return False
        return digest.hexdigest() == sha256
