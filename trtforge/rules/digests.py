"""A stat-keyed cache of file digests, so a cache hit does not re-hash an unchanged model.

Like git's index: a file whose path, size, mtime, ctime, inode and device are unchanged since
it was hashed is taken to have the same sha256. Re-hashing a 200 MB model costs far more than
the rest of a cache hit. Two guards keep the cache honest:

- racy timestamps: a file modified within :data:`RACY_SECONDS` of being hashed could change
  again without its mtime moving, so such digests are used once but not remembered;
- concurrent writers: the cache file is replaced atomically (temp file + rename) and read
  tolerantly, so the worst a race can do is forget an entry, which only costs a re-hash.

A model's digest (:meth:`DigestCache.model_digest`) covers its external data files too; its
entry remembers the stat of the .onnx file and of every external file, and is used only when
all of them are unchanged (the list of external files is part of the .onnx bytes).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from trtforge.core.errors import ModelError
from trtforge.rules.keys import composite_model_digest, sha256_file

CACHE_VERSION = 2  # 2: model entries carry their external data files
RACY_SECONDS = 2.0
MAX_ENTRIES = 4096

StatKey = list[int]
# A model entry's external files: [location, resolved path, *stat key] each; None for a plain file.
Externals = list[list[Any]] | None
Entry = tuple[StatKey, str, Externals]


def _stat_key(stat: os.stat_result) -> StatKey:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


class DigestCache:
    """sha256 of files, remembered by their stat; ``save`` writes new entries to ``path``."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, Entry] | None = None
        self._new: dict[str, Entry] = {}

    def _load(self) -> dict[str, Entry]:
        if self._entries is None:
            self._entries = _read_entries(self.path) if self.path is not None else {}
        return self._entries

    def sha256(self, file: Path) -> str:
        """The file's sha256, from the cache when its stat is unchanged, else by hashing it."""
        key = str(file.resolve())
        before = file.stat()
        stat_key = _stat_key(before)
        cached = self._load().get(key)
        if cached is not None and cached[0] == stat_key and not cached[2]:
            return cached[1]
        started_ns = time.time_ns()
        digest = sha256_file(file)
        after = file.stat()
        if _stat_key(after) == stat_key and not _racy(before, started_ns):
            self._new[key] = (stat_key, digest, None)
        return digest

    def model_digest(self, model: Path) -> str:
        """The model digest of an ONNX file (keys.composite_model_digest): its sha256, or with
        external data a digest over it and every external file, from the cache when the stat of
        every one of them is unchanged.

        A missing or unreadable external data file is a ModelError (bad input, exit 2).
        """
        key = str(model.resolve())
        before = model.stat()
        stat_key = _stat_key(before)
        cached = self._load().get(key)
        if cached is not None and cached[0] == stat_key and cached[2] is not None:
            if all(_still(model, *entry) for entry in cached[2]):
                return cached[1]
        started_ns = time.time_ns()
        onnx_digest = sha256_file(model)
        externals: list[list[Any]] = []
        digests: dict[str, str] = {}
        racy = _racy(before, started_ns)
        for location in _locations(model):
            file = model.parent / location
            file_before = _stat_external(model, location, file)
            try:
                digests[location] = sha256_file(file)
            except OSError as exc:
                raise _unreadable(model, location, file, exc) from None
            racy = racy or _racy(file_before, started_ns)
            if _stat_key(_stat_external(model, location, file)) != _stat_key(file_before):
                racy = True  # changed while hashed: use this digest once, remember nothing
            externals.append([location, str(file.resolve()), *_stat_key(file_before)])
        digest = composite_model_digest(onnx_digest, digests)
        if _stat_key(model.stat()) == stat_key and not racy:
            self._new[key] = (stat_key, digest, externals)
        return digest

    def save(self) -> None:
        """Merge new entries into the cache file (atomically); a no-op when nothing is new."""
        if not self._new or self.path is None or not self.path.parent.parent.is_dir():
            return
        entries = _read_entries(self.path)  # re-read: another process may have added entries
        entries.update(self._new)
        if len(entries) > MAX_ENTRIES:
            entries = dict(list(entries.items())[-MAX_ENTRIES:])
        payload = {
            "version": CACHE_VERSION,
            "entries": {k: [*s, d] if x is None else [*s, d, x] for k, (s, d, x) in entries.items()},
        }
        from trtforge.core.fsutil import atomic_write

        try:
            with atomic_write(self.path) as handle:
                handle.write(json.dumps(payload, separators=(",", ":")).encode())
        except OSError:
            return  # a read-only store still serves hits; the digest is simply recomputed next time
        self._entries = entries
        self._new.clear()


def model_digest(model: Path) -> str:
    """The model digest of an ONNX file, computed now (no cache): what artifacts record."""
    return DigestCache(None).model_digest(model)


def _racy(stat: os.stat_result, started_ns: int) -> bool:
    return stat.st_mtime_ns >= started_ns - int(RACY_SECONDS * 1e9)


def _locations(model: Path) -> tuple[str, ...]:
    """External data locations named by the model; none for bytes that do not parse as ONNX
    (such a model never builds: read_model reports it on the miss path)."""
    from trtforge.core.onnx_proto import ProtoError, external_data_locations

    try:
        locations = external_data_locations(model)
    except ProtoError:
        return ()
    for location in locations:
        if not location.isprintable():
            raise ModelError(f"{model}: external data location {location[:80]!r} has control characters")
    return locations


def _stat_external(model: Path, location: str, file: Path) -> os.stat_result:
    try:
        stat = file.stat()
    except FileNotFoundError:
        raise ModelError(
            f"{model}: external data file {location!r} not found (looked at {file})",
            hint="external data files are read from the model's directory; keep them next to the .onnx",
        ) from None
    except OSError as exc:
        raise _unreadable(model, location, file, exc) from None
    if not os.path.isfile(file):
        raise ModelError(f"{model}: external data {location!r} is not a file ({file})")
    return stat


def _unreadable(model: Path, location: str, file: Path, exc: OSError) -> ModelError:
    return ModelError(f"{model}: cannot read external data file {location!r} ({file}: {exc.strerror or exc})")


def _still(model: Path, location: str, resolved: str, *stat_key: int) -> bool:
    """An external file of a cached model entry is the same path with the same stat."""
    file = model.parent / location
    try:
        return str(file.resolve()) == resolved and _stat_key(file.stat()) == list(stat_key)
    except OSError:
        return False  # gone: recompute, which reports it


def _read_entries(path: Path | None) -> dict[str, Entry]:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_bytes())
        if data.get("version") != CACHE_VERSION:
            return {}
        entries: dict[str, Entry] = {}
        for k, v in data["entries"].items():
            if len(v) == 6:
                entries[k] = (list(v[:5]), str(v[5]), None)
            elif len(v) == 7 and isinstance(v[6], list) and all(isinstance(x, list) and len(x) == 7 for x in v[6]):
                entries[k] = (list(v[:5]), str(v[5]), v[6])
        return entries
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return {}  # missing or damaged: start over, it is only a cache
