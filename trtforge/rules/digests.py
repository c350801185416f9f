"""A stat-keyed cache of file digests, so a cache hit does not re-hash an unchanged model.

Like git's index: a file whose path, size, mtime, ctime, inode and device are unchanged since
it was hashed is taken to have the same sha256. Re-hashing a 200 MB model costs far more than
the rest of a cache hit. Two guards keep the cache honest:

- racy timestamps: a file modified within :data:`RACY_SECONDS` of being hashed could change
  again without its mtime moving, so such digests are used once but not remembered;
- concurrent writers: the cache file is replaced atomically (temp file + rename) and read
  tolerantly; writers take turns (a lock on its folder), each merging what the one before wrote,
  so the build processes of `build --jobs N` ending at once forget nothing.

A model's digest (:meth:`DigestCache.model_digest`) covers its external data files too; its
entry remembers the stat of the .onnx file and of every external file, and is used only when
all of them are unchanged (the list of external files is part of the .onnx bytes). Which files a
model names is read with onnx's own protobuf classes (``core/onnx_reader.py``) from the very
bytes that are hashed; a model protobuf refuses is refused here too, never taken for one
without external data. That list is a function of the .onnx bytes alone, so it is also
remembered by the .onnx file's sha256: a model re-hashed because its stat changed (or was too
recent to trust) but whose bytes did not is not parsed again. A hit parses nothing and imports
no onnx.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trtforge.core.errors import ModelError
from trtforge.rules.keys import composite_model_digest, sha256_file

# 2: model entries carry their external data files; 3: external data found by protobuf's rules
# (entries of 2 were found by a hand-written reader that could miss files: recomputed)
CACHE_VERSION = 3
RACY_SECONDS = 2.0
MAX_ENTRIES = 4096

StatKey = list[int]
# A model entry's external files: [location, resolved path, *stat key] each; None for a plain file.
Externals = list[list[Any]] | None
Entry = tuple[StatKey, str, Externals]
Locations = tuple[str, ...]


def _stat_key(stat: os.stat_result) -> StatKey:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]


class DigestCache:
    """sha256 of files, remembered by their stat; ``save`` writes new entries to ``path``."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, Entry] | None = None
        self._new: dict[str, Entry] = {}
        self._locations: dict[str, Locations] | None = None  # .onnx sha256 -> external data it names
        self._new_locations: dict[str, Locations] = {}

    def _load(self) -> dict[str, Entry]:
        if self._entries is None:
            self._entries, self._locations = _read_file(self.path)
        return self._entries

    def _external_locations(self, model: Path) -> tuple[str, tuple[str, ...]]:
        """The .onnx file's sha256 and the external data its bytes name (one read; parsed only
        for bytes not seen before). A model protobuf cannot parse is a ModelError (exit 2)."""
        from trtforge.core.onnx_reader import read_model_bytes

        data = read_model_bytes(model)
        sha = hashlib.sha256(data).hexdigest()
        self._load()
        known = (self._locations or {}).get(sha)
        if known is not None:
            return sha, known
        from trtforge.core.onnx_reader import parse_model

        locations = parse_model(data, model).external_locations
        self._new_locations[sha] = locations
        return sha, locations

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
        onnx_digest, locations = self._external_locations(model)
        externals: list[list[Any]] = []
        digests: dict[str, str] = {}
        racy = _racy(before, started_ns)
        for location in locations:
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
        if not (self._new or self._new_locations) or self.path is None or not self.path.parent.parent.is_dir():
            return
        from trtforge.core.fsutil import atomic_write

        try:
            self.path.parent.mkdir(exist_ok=True)
            with _taking_turns(self.path.parent):
                entries, locations = _read_file(self.path)  # re-read: another process may have added entries
                entries.update(self._new)
                locations.update(self._new_locations)
                entries = dict(list(entries.items())[-MAX_ENTRIES:])
                locations = dict(list(locations.items())[-MAX_ENTRIES:])
                payload = {
                    "version": CACHE_VERSION,
                    "entries": {k: [*s, d] if x is None else [*s, d, x] for k, (s, d, x) in entries.items()},
                    "locations": {k: list(v) for k, v in locations.items()},
                }
                with atomic_write(self.path) as handle:
                    handle.write(json.dumps(payload, separators=(",", ":")).encode())
        except OSError:
            return  # a read-only store still serves hits; the digest is simply recomputed next time
        self._entries, self._locations = entries, locations
        self._new.clear()
        self._new_locations.clear()


def model_digest(model: Path) -> str:
    """The model digest of an ONNX file, computed now (no cache): what artifacts record."""
    return DigestCache(None).model_digest(model)


def _racy(stat: os.stat_result, started_ns: int) -> bool:
    return stat.st_mtime_ns >= started_ns - int(RACY_SECONDS * 1e9)


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


@contextmanager
def _taking_turns(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` (flock on its descriptor: no lock file to leave behind),
    released when the block ends or the process dies."""
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_file(path: Path | None) -> tuple[dict[str, Entry], dict[str, Locations]]:
    """The stat-keyed entries and the content-keyed external data lists of a cache file."""
    if path is None:
        return {}, {}
    try:
        data = json.loads(path.read_bytes())
        if data.get("version") != CACHE_VERSION:
            return {}, {}
        entries: dict[str, Entry] = {}
        for k, v in data["entries"].items():
            if len(v) == 6:
                entries[k] = (list(v[:5]), str(v[5]), None)
            elif len(v) == 7 and isinstance(v[6], list) and all(isinstance(x, list) and len(x) == 7 for x in v[6]):
                entries[k] = (list(v[:5]), str(v[5]), v[6])
        locations = {
            str(k): tuple(v)
            for k, v in data.get("locations", {}).items()
            if isinstance(v, list) and all(isinstance(x, str) for x in v)
        }
        return entries, locations
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return {}, {}  # missing or damaged: start over, it is only a cache
