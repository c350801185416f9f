"""File-system facts and copies: which file system a path lives on, so SQLite is never used
where its locking is unsafe; and private copies of blobs handed out of the store.

SQLite's documentation warns that its file locking is broken on many network file systems
(https://www.sqlite.org/lockingv3.html#how_to_corrupt, "Things that can go wrong"), and WAL
mode needs shared memory that only works on one host (https://www.sqlite.org/wal.html). The
mount table of ``/proc/self/mountinfo`` gives the file-system type of the mount a path is on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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


