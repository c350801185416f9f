"""File-system facts and copies: which file system a path lives on, so SQLite is never used
where its locking is unsafe; and private copies of blobs handed out of the store.

SQLite's documentation warns that its file locking is broken on many network file systems
(https://www.sqlite.org/lockingv3.html#how_to_corrupt, "Things that can go wrong"), and WAL
mode needs shared memory that only works on one host (https://www.sqlite.org/wal.html). The
mount table of ``/proc/self/mountinfo`` gives the file-system type of the mount a path is on.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from trtforge.errors import IntegrityError

MOUNTINFO = Path("/proc/self/mountinfo")
NETWORK_FS_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smb2",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "9p",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.cephfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.rclone",
        "davfs",
        "fuse.davfs2",
    }
)


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fs_type: str
    source: str

    @property
    def is_network(self) -> bool:
        return self.fs_type in NETWORK_FS_TYPES or self.fs_type.split(".")[0] in {"nfs", "cifs", "smb3"}


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (``\\040``)."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Mounts from mountinfo text (``proc(5)``: fields, ``-``, fs type, source, options)."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 2:
            continue
        mounts.append(Mount(_unescape(fields[4]), tail[0], _unescape(tail[1])))
    return mounts


def mount_of(path: Path, mountinfo: str | None = None) -> Mount | None:
    """The mount holding ``path`` (or its nearest existing ancestor); None if unknown."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError:
            return None
    probe = Path(os.path.realpath(path))
    best: Mount | None = None
    for mount in parse_mountinfo(mountinfo):
        point = mount.mount_point.rstrip("/") or "/"
        inside = point == "/" or probe == Path(point) or str(probe).startswith(point + "/")
        # Later entries stack on earlier ones at the same mount point, so ">=" keeps the top one.
        if inside and (best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")):
            best = mount
    return best


def network_mount(path: Path) -> Mount | None:
    """The network mount ``path`` is on, or None when it is local (or cannot be told)."""
    mount = mount_of(path)
    return mount if mount is not None and mount.is_network else None


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
