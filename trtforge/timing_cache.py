"""The build stage's timing-cache policy: which cache a build starts from, and where its new
entries go afterwards.

- ``shared``: start from the newest cache for the build target (flavor, TensorRT version, GPU,
  compute capability) and merge the build's cache back into it under a lock.
- ``private``: start empty; keep the resulting cache as a blob recorded on the artifact only.
- ``off``: no timing cache (BuilderFlag.DISABLE_TIMING_CACHE is set by the config rules).

TensorRT-RTX has no timing cache (its calls are no-ops), so nothing is loaded or stored there.
Each artifact records the cache blob it started from in ``details.timing_cache``.

A recipe with deny entries never touches the shared cache, whatever its policy: enforcement
needs every layer autotuned (a cached key is not re-timed, so its candidates never reach the
log), and its cache is built in editable mode, where NVIDIA's sampleEditableTimingCache notes
that each layer gets its own tactics, and then edited to hold tactics that are not the
fastest. Merged into the shared cache, those entries would impose one recipe's deny list on
every other build for the same GPU. Such a build starts empty and keeps its cache private.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.errors import BackendUnavailableError, BadInputError, IntegrityError
from trtforge.fsutil import atomic_write
from trtforge.recipe import Recipe
from trtforge.store import Store
from trtforge.target import BuildTarget

if TYPE_CHECKING:  # the catalog side imports SQLAlchemy: only builds that use a cache pay for it
    from trtforge.store.timing_caches import CacheKey, MergeFn, TimingCacheRow

log = logging.getLogger(__name__)

RTX_NO_OP = "TensorRT-RTX timing caches are no-ops"
DENY_ISOLATED = "deny-list enforcement: starts empty and keeps its edited cache private"


def cache_key_for(target: BuildTarget) -> CacheKey | None:
    """The cache a build for ``target`` shares, or None when the target has no single GPU."""
    if target.flavor == "tensorrt_rtx" or not target.gpu_name or len(target.compute_capabilities) != 1:
        return None
    from trtforge.store.timing_caches import CacheKey

    return CacheKey(target.flavor, target.trt_version, target.gpu_name, target.compute_capabilities[0])


@dataclass
class CacheStart:
    """What a build starts from."""

    policy: str
    key: CacheKey | None = None
    row_id: str | None = None
    blob_sha256: str | None = None
    data: bytes | None = None
    skipped: str | None = None  # why no cache work is done at all
    isolated: str | None = None  # why the shared cache is neither read nor written

    @property
    def active(self) -> bool:
        return self.skipped is None


def start(open_store: Callable[[], Store | None], recipe: Recipe, target: BuildTarget) -> CacheStart:
    """The cache a build starts from; ``open_store`` is called only when the shared cache is read."""
    policy = recipe.build.timing_cache
    if policy == "off":
        return CacheStart(policy, skipped="timing_cache: off")
    if target.flavor == "tensorrt_rtx":
        return CacheStart(policy, skipped=RTX_NO_OP)
    key = cache_key_for(target)
    if key is None:
        return CacheStart(policy, skipped="the build target names no single GPU")
    if recipe.tactics.deny:
        return CacheStart(policy, key, isolated=DENY_ISOLATED)
    if policy == "private" or (store := open_store()) is None:
        return CacheStart(policy, key)
    from trtforge.store.timing_caches import TimingCaches

    row = TimingCaches(store).latest(key)
    if row is None:
        return CacheStart(policy, key)
    data = TimingCaches(store).read(row)  # None (logged) when the blob is corrupt or missing
    if data is None:
        return CacheStart(policy, key)
    return CacheStart(policy, key, row.id, row.blob_sha256, data)


def finish(
    store: Store, begun: CacheStart, cache_out: bytes | None, used: bool, artifact_id: str, merge: MergeFn
) -> dict[str, Any]:
    """Store the build's cache per policy; return what the artifact records."""
    record: dict[str, Any] = {
        "policy": begun.policy,
        "key": begun.key.as_json() if begun.key else None,
        "started_from": begun.blob_sha256 if used else None,
        "started_from_id": begun.row_id if used else None,
    }
    if begun.skipped:
        record["skipped"] = begun.skipped
        return record
    if begun.isolated:
        record["isolated"] = begun.isolated
    if begun.blob_sha256 and not used:
        record["rejected"] = begun.blob_sha256
    if cache_out and begun.key is not None:
        from trtforge.store.timing_caches import TimingCaches

        caches = TimingCaches(store)
        if begun.policy == "shared" and not begun.isolated:
            row = caches.merge_in(begun.key, cache_out, merge, artifact_id=artifact_id)
            record["merged_into_id"] = row.id
            record["merged_into"] = row.blob_sha256
        else:
            record["produced"] = caches.put_blob(cache_out)
    return record


# -- `trtforge cache`: list, export, import, prune --------------------------------------------

EXPORT_FORMAT = "trtforge-timing-cache/1"


def local_cache_key() -> CacheKey:
    """The cache key of this machine: installed full TensorRT and the GPU builds run on."""
    from trtforge.flavors import installed_version
    from trtforge.target import current_gpu

    version = installed_version("tensorrt")
    if version is None:
        rtx = installed_version("tensorrt_rtx")
        detail = f" (TensorRT-RTX {rtx} is installed; {RTX_NO_OP})" if rtx else ""
        raise BackendUnavailableError(f"timing caches need full TensorRT, which is not installed{detail}")
    gpu = current_gpu()
    if gpu is None:
        raise BackendUnavailableError(f"TensorRT {version} is installed but no NVIDIA GPU was found")
    from trtforge.store.timing_caches import CacheKey

    return CacheKey("tensorrt", version, gpu.name, gpu.compute_capability)


def export_cache(store: Store, ref: str, dest: Path) -> dict[str, Any]:
    """Write the cache bytes to ``dest`` and its key to ``dest.json`` (both atomically)."""
    from trtforge.store.timing_caches import TimingCaches

    caches = TimingCaches(store)
    row = caches.get(ref)
    data = store.blobs.read_verified(row.blob_sha256)
    meta = {"format": EXPORT_FORMAT, **row.summary()}
    with atomic_write(dest) as handle:
        handle.write(data)
    with atomic_write(_meta_path(dest)) as handle:
        handle.write((json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    return {**meta, "path": str(dest), "metadata_path": str(_meta_path(dest))}


def read_export(path: Path) -> tuple[CacheKey, bytes]:
    """An exported cache and its key; refuses files without metadata or with wrong bytes."""
    meta_path = _meta_path(path)
    try:
        data = path.read_bytes()
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BadInputError(
            f"{exc.filename}: not found",
            hint="import takes a file written by `trtforge cache export` (cache bytes plus a .json beside it)",
        ) from None
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{meta_path}: unreadable timing-cache metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        raise BadInputError(f"{meta_path}: not a trtforge timing-cache export (format {EXPORT_FORMAT})")
    from trtforge.store.timing_caches import CacheKey

    try:
        key = CacheKey(
            str(meta["flavor"]), str(meta["trt_version"]), str(meta["gpu_name"]), str(meta["compute_capability"])
        )
    except KeyError as exc:
        raise BadInputError(f"{meta_path}: metadata lacks {exc.args[0]!r}") from None
    if hashlib.sha256(data).hexdigest() != meta.get("blob_sha256"):
        raise IntegrityError(f"{path}: bytes do not match the sha256 in {meta_path.name}")
    return key, data


def import_cache(store: Store, path: Path, local: CacheKey, merge: MergeFn) -> TimingCacheRow:
    """Merge an exported cache into this machine's cache; refuses one made for another target."""
    key, data = read_export(path)
    if key != local:
        different = [
            f"{name} {getattr(key, name)!r} (here {getattr(local, name)!r})"
            for name in ("flavor", "trt_version", "gpu_name", "compute_capability")
            if getattr(key, name) != getattr(local, name)
        ]
        raise BadInputError(
            f"timing cache {path.name} belongs to {key.describe()}, not this machine: {'; '.join(different)}",
            hint="a timing cache only helps builds for the same TensorRT version and GPU; import it there",
        )
    from trtforge.store.timing_caches import TimingCaches

    return TimingCaches(store).merge_in(local, data, merge, source="import")


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")
