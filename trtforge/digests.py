"""A stat-keyed cache of file digests, so a cache hit does not re-hash an unchanged model.

Like git's index: a file whose path, size, mtime, ctime, inode and device are unchanged since
it was hashed is taken to have the same sha256. Re-hashing a 200 MB model costs far more than
the rest of a cache hit. Two guards keep the cache honest:

- racy timestamps: a file modified within :data:`RACY_SECONDS` of being hashed could change
  again without its mtime moving, so such digests are used once but not remembered;
- concurrent writers: the cache file is replaced atomically (temp file + rename) and read
  tolerantly, so the worst a race can do is forget an entry, which only costs a re-hash.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from trtforge.keys import sha256_file

CACHE_VERSION = 1
RACY_SECONDS = 2.0
MAX_ENTRIES = 4096

StatKey = list[int]


def _stat_key(stat: os.stat_result) -> StatKey:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


class DigestCache:
    """sha256 of files, remembered by their stat; ``save`` writes new entries to ``path``."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, tuple[StatKey, str]] | None = None
        self._new: dict[str, tuple[StatKey, str]] = {}

    def _load(self) -> dict[str, tuple[StatKey, str]]:
        if self._entries is None:
            self._entries = _read_entries(self.path) if self.path is not None else {}
        return self._entries

    def sha256(self, file: Path) -> str:
        """The file's sha256, from the cache when its stat is unchanged, else by hashing it."""
        key = str(file.resolve())
        before = file.stat()
        stat_key = _stat_key(before)
        cached = self._load().get(key)
        if cached is not None and cached[0] == stat_key:
            return cached[1]
        started_ns = time.time_ns()
        digest = sha256_file(file)
        after = file.stat()
        racy = before.st_mtime_ns >= started_ns - int(RACY_SECONDS * 1e9)
        if _stat_key(after) == stat_key and not racy:
            self._new[key] = (stat_key, digest)
        return digest

    def save(self) -> None:
        """Merge new entries into the cache file (atomically); a no-op when nothing is new."""
        if not self._new or self.path is None or not self.path.parent.parent.is_dir():
            return
        entries = _read_entries(self.path)  # re-read: another process may have added entries
        entries.update(self._new)
        if len(entries) > MAX_ENTRIES:
            entries = dict(list(entries.items())[-MAX_ENTRIES:])
        payload = {"version": CACHE_VERSION, "entries": {k: [*s, d] for k, (s, d) in entries.items()}}
        from trtforge.store.blobs import atomic_write

        try:
            with atomic_write(self.path) as handle:
                handle.write(json.dumps(payload, separators=(",", ":")).encode())
        except OSError:
            return  # a read-only store still serves hits; the digest is simply recomputed next time
        self._entries = entries
        self._new.clear()


def _read_entries(path: Path | None) -> dict[str, tuple[StatKey, str]]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_bytes())
        if data.get("version") != CACHE_VERSION:
            return {}
        return {k: (list(v[:5]), str(v[5])) for k, v in data["entries"].items() if len(v) == 6}
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return {}  # missing or damaged: start over, it is only a cache
