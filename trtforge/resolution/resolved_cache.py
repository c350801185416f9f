"""The validated-recipe cache: what :func:`trtforge.resolution.resolve.resolve` decided for a recipe file,
remembered so that a cache hit needs neither the recipe models (pydantic) nor the capability table.

An entry is served only when everything resolution read is unchanged (a stale hit is worse than
a slow one), so each use re-checks, without trusting any stat:

- the recipe's text (read and hashed every time) and its real path;
- the sidecar deny file's text (its path expanded again, the file read and hashed);
- the sha256 of every other file the recipe names (plugin libraries, the calibration cache: their
  paths expanded again, each digest from the stat-keyed digest cache);
- the value of every environment variable the recipe text names and HOME (``${VAR}``, ``~``):
  the model, sidecar and verify.data paths are expanded again from the values of now;
- the model digest (the stat-keyed digest cache, which covers external data files) and the pin;
- trtforge's version and the size and mtime of the modules that decide a resolution;
- the backend ``find_backend`` picks now (flavor, version, CUDA variant), this platform, the
  BUILD_ENV values and the TensorRT-RTX default capability list;
- the key schema.

Anything else (no entry, a changed input, an unreadable file, an unset variable) sends the
caller down the full path, which reports errors exactly as before; entries are written only
after a resolution succeeded and its recipe passed the capability check. One small JSON file per
recipe, with its own checksum, so a torn write is a miss and a hit reads a few hundred bytes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.core.errors import TrtforgeError
from trtforge.core.recipe_paths import ENV_VAR, expand_path
from trtforge.rules.flavors import RTX_DEFAULT_COMPUTE_CAPABILITIES, find_backend, trtforge_version
from trtforge.rules.keys import KEY_SCHEMA, build_key_from, canonical_json, recipe_fingerprint, sha256_text
from trtforge.rules.target import build_env, build_target_for, this_platform

if TYPE_CHECKING:
    from trtforge.resolution.resolve import Resolution
    from trtforge.rules.digests import DigestCache

ENTRY_VERSION = 2  # 2: entries list the files the recipe names besides the model
# The modules whose code decides what a recipe resolves to (paths under trtforge/): editing one (a
# development checkout without a version bump) invalidates every entry.
DECIDING_MODULES = (
    "rules/recipe.py",
    "rules/builder_options.py",
    "core/recipe_paths.py",
    "core/yamlfile.py",
    "rules/denylist.py",
    "resolution/resolve.py",
    "resolution/resolved_cache.py",
    "rules/keys.py",
    "rules/flavors.py",
    "rules/target.py",
    "rules/capabilities.py",
    "rules/onnx_model.py",
    "rules/digests.py",
    "core/onnx_reader.py",
)


@dataclass(frozen=True)
class QuickResolution:
    """What a build needs to ask the catalog for a hit: the name, the key and the target."""

    name: str
    build_key: str
    target: dict[str, Any]
    notes: tuple[str, ...]


def code_stamp() -> list[Any]:
    """trtforge's version and the (size, mtime) of the modules that decide a resolution."""
    here = Path(__file__).parents[1]  # trtforge/
    stamp: list[Any] = [trtforge_version()]
    for name in DECIDING_MODULES:
        try:
            stat = os.stat(here / name)
            stamp.append([name, stat.st_size, stat.st_mtime_ns])
        except OSError:
            stamp.append([name, None, None])
    return stamp


def context_digest(recipe_text: str, real_path: str, stamp: list[Any]) -> str:
    """Hash of everything an entry is valid for that is known before the entry is read."""
    names = sorted({m.group(1) if m.group(1) is not None else m.group(2) for m in ENV_VAR.finditer(recipe_text)})
    context = {
        "entry": ENTRY_VERSION,
        "key_schema": KEY_SCHEMA,
        "recipe": real_path,
        "text": sha256_text(recipe_text),
        "env": {name: os.environ.get(name) for name in names},
        "home": os.environ.get("HOME"),
        "code": stamp,
        "platform": list(this_platform()),
        "build_env": [list(pair) for pair in build_env()],
        "rtx_default": list(RTX_DEFAULT_COMPUTE_CAPABILITIES),
    }
    return sha256_text(canonical_json(context))


class ResolvedCache:
    """Resolutions of recipe files remembered in ``folder`` (None: remember nothing)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._stamp = code_stamp()  # before any recipe is resolved with this process's code
        self._pending: dict[str, dict[str, Any]] = {}

    def _file(self, real_path: str) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / f"{hashlib.sha256(real_path.encode('utf-8', 'surrogateescape')).hexdigest()}.json"

    def lookup(self, recipe_path: str | Path, digests: DigestCache) -> QuickResolution | None:
        """The resolution of an unchanged recipe file, or None (resolve it the full way)."""
        path = Path(recipe_path)
        if self.folder is None or path.name.lower().endswith(".onnx"):
            return None
        try:
            text = _regular_file_text(path)  # as the recipe loader reads it
            real = str(path.resolve())
        except (OSError, UnicodeDecodeError, RuntimeError):
            return None
        entry = _read_entry(self._file(real))
        if entry is None or entry.get("context") != context_digest(text, real, self._stamp):
            return None
        try:
            return _replay(entry, Path(real).parent, digests)
        except (TrtforgeError, OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, RuntimeError):
            return None

    def remember(self, resolution: Resolution, notes: list[str]) -> None:
        """Note a successful resolution of a recipe file for this machine (written by ``save``)."""
        loaded, recipe, backend = resolution.loaded, resolution.recipe, resolution.backend
        if self.folder is None or not loaded.text or loaded.path.name.lower().endswith(".onnx"):
            return
        real = str(loaded.path)
        sidecar = None
        if loaded.sidecar is not None:
            written, sidecar_text = loaded.sidecar
            sidecar = [written, sha256_text(sidecar_text)]
        self._pending[real] = {
            "context": context_digest(loaded.text, real, self._stamp),
            "name": recipe.name,
            "backend_request": recipe.backend,
            "backend": [backend.flavor, backend.version, backend.cuda],
            "fingerprint": recipe_fingerprint(recipe),
            "compute_capabilities": list(recipe.compatibility.compute_capabilities or ()),
            "model": recipe.model.onnx,
            "pin": recipe.model.sha256,
            "sidecar": sidecar,
            "verify_data": recipe.verify.data,
            "files": [[named.field, written, named.sha256] for named, (_, written, _) in _named(resolution)],
            "notes": list(notes),
        }

    def save(self) -> None:
        """Write the new entries (each replaced atomically; no fsync: a lost entry is a slow hit,
        a torn one fails its checksum). Nothing is written when the store does not exist."""
        if not self._pending or self.folder is None or not self.folder.parent.parent.is_dir():
            return
        from trtforge.core.fsutil import owner_prefix

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            temp = os.path.join(self.folder, f"{owner_prefix()}{os.urandom(4).hex()}-")
            for number, (real, entry) in enumerate(self._pending.items()):
                _write_entry(f"{temp}{number}", self._file(real), entry)  # type: ignore[arg-type]
        except OSError:
            return  # a read-only store still serves hits, resolved the full way
        self._pending.clear()


def _write_entry(temp: str, file: Path, entry: dict[str, Any]) -> None:
    """One entry written to ``temp`` (a new name) and renamed onto ``file``: five system calls, no
    flock and no temp-file machinery, as a run of hundreds of recipes saves hundreds of them (issue 24)."""
    body = canonical_json(entry)
    data = canonical_json({"sum": sha256_text(body), "entry": body}).encode()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)  # a few hundred bytes: one write; a short one is caught by the checksum
        os.replace(temp, file)
    except OSError:
        os.close(fd)
        Path(temp).unlink(missing_ok=True)
        raise
    os.close(fd)


def _named(resolution: Resolution) -> list[tuple[Any, Any]]:
    """Each keyed file with the path the recipe wrote for it (in the same order)."""
    return list(zip(resolution.files, resolution.loaded.named_files(), strict=True))


def _read_entry(file: Path | None) -> dict[str, Any] | None:
    if file is None:
        return None
    try:
        outer = json.loads(file.read_bytes())
        body = outer["entry"]
        if sha256_text(body) != outer["sum"]:
            return None
        entry = json.loads(body)
        return entry if isinstance(entry, dict) else None
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _regular_file_text(path: Path) -> str:
    """A file's text, refusing (OSError) what is not a regular file: a FIFO would block the read
    (the full resolution then reports it)."""
    if not stat.S_ISREG(path.stat().st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return path.read_text(encoding="utf-8")


def _replay(entry: dict[str, Any], base: Path, digests: DigestCache) -> QuickResolution | None:
    """Redo the cheap part of a resolution (paths, backend, target, model digest) from an entry."""
    backend = find_backend(entry["backend_request"])
    if [backend.flavor, backend.version, backend.cuda] != entry["backend"]:
        return None
    model = expand_path(entry["model"], base, "model.onnx")
    if entry["sidecar"] is not None:
        written, digest = entry["sidecar"]
        sidecar = expand_path(written, base, "tactics.deny_file")
        if sha256_text(_regular_file_text(sidecar)) != digest:
            return None
    if entry["verify_data"] is not None:
        expand_path(entry["verify_data"], base, "verify.data")  # unset variable: the full path reports it
    for field, written, digest in entry["files"]:
        if digests.sha256(expand_path(written, base, field)) != digest:
            return None
    if not model.is_file():
        return None
    target = build_target_for(backend, entry["compute_capabilities"])
    digest = digests.model_digest(model)
    if entry["pin"] is not None and entry["pin"] != digest:
        return None
    key = build_key_from(entry["fingerprint"], digest, target.key_fields())
    return QuickResolution(entry["name"], key, target.key_fields(), tuple(entry["notes"]))
