"""The `trtforge cache` commands' work: list, export, import (merged by the backend), prune.

Timing caches are per (flavor, TensorRT version, GPU); see
:mod:`trtforge.resolution.timing_cache_policy` for which cache a build starts from.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.core.errors import BackendUnavailableError, BadInputError, IntegrityError
from trtforge.core.fsutil import atomic_write, in_the_way, output_named
from trtforge.resolution.timing_cache_policy import RTX_NO_OP
from trtforge.store import Store, open_existing_store, open_store, require_existing_store

if TYPE_CHECKING:
    from trtforge.store.timing_caches import CacheKey, MergeFn, PrunePlan, TimingCacheRow


def list_caches(store: Path | None, catalog: str | None, *, all_versions: bool) -> list[dict[str, Any]]:
    """Summaries of the newest version of each cache (or of every version); [] for an empty store."""
    from trtforge.store.timing_caches import TimingCaches

    opened = open_existing_store(store, catalog=catalog)
    return [r.summary() for r in TimingCaches(opened).list(all_versions=all_versions)] if opened else []


def export_cache_file(store: Path | None, catalog: str | None, ref: str, dest: Path) -> dict[str, Any]:
    """`trtforge cache export`: :func:`export_cache` from the existing store."""
    missing = f"no timing cache with id {ref} (the store is empty)"
    opened = require_existing_store(store, catalog=catalog, missing=missing)
    return export_cache(opened, ref, dest)


def import_cache_file(store: Path | None, catalog: str | None, path: Path) -> TimingCacheRow:
    """Merge an exported cache into this machine's, combined by the installed full TensorRT."""
    from trtforge.backend.loader import import_backend
    from trtforge.backend.timing_cache import combine
    from trtforge.rules.flavors import find_backend

    read_export(path)  # a malformed file is refused before anything else is looked at
    local = local_cache_key()
    trt = import_backend(find_backend(local.flavor))
    return import_cache(open_store(store, catalog=catalog), path, local, lambda base, new: combine(trt, base, new))


def prune_caches(store: Path | None, catalog: str | None, *, keep: int, dry_run: bool) -> dict[str, Any]:
    """Delete all but the ``keep`` newest versions of each cache (or only say which, with ``dry_run``)."""
    from trtforge.store.timing_caches import TimingCaches

    opened = open_existing_store(store, catalog=catalog)
    if opened is None:
        return {"rows": [], "blobs": [], "freed_bytes": 0, "dry_run": dry_run}
    caches = TimingCaches(opened)
    plan: PrunePlan = caches.plan_prune(keep)
    if not dry_run:
        caches.execute_prune(plan)
    return {**plan.as_json(), "dry_run": dry_run}


EXPORT_FORMAT = "trtforge-timing-cache/1"
FULL_TENSORRT_INSTALL = "pip install 'trtforge[tensorrt]'"


def local_cache_key() -> CacheKey:
    """The cache key of this machine: installed full TensorRT and the GPU builds run on."""
    from trtforge.rules.flavors import installed_version
    from trtforge.rules.target import current_gpu

    version = installed_version("tensorrt")
    if version is None:
        rtx = installed_version("tensorrt_rtx")
        detail = f" (TensorRT-RTX {rtx} is installed; {RTX_NO_OP})" if rtx else ""
        raise BackendUnavailableError(
            f"timing caches need full TensorRT, which is not installed{detail}",
            hint="import it on the GPU machine whose full-TensorRT builds should use it "
            f"(`{FULL_TENSORRT_INSTALL}` there)",
        )
    gpu = current_gpu()
    if gpu is None:
        raise BackendUnavailableError(
            f"TensorRT {version} is installed but no NVIDIA GPU was found",
            hint="a timing cache belongs to one GPU model: import it on the GPU machine that builds for it",
        )
    from trtforge.store.timing_caches import CacheKey

    return CacheKey("tensorrt", version, gpu.name, gpu.compute_capability)


def export_cache(store: Store, ref: str, dest: Path) -> dict[str, Any]:
    """Write the cache bytes to ``dest`` and its key to ``dest.json``: both, or neither."""
    from trtforge.store.timing_caches import TimingCaches

    caches = TimingCaches(store)
    row = caches.get(ref)
    data = store.blobs.read_verified(row.blob_sha256)
    meta = {"format": EXPORT_FORMAT, **row.summary()}
    hint = "-o names the cache file to write (its metadata goes beside it as OUT.json): pick a writable path"
    blocked = in_the_way(dest, _meta_path(dest))  # refused before either is written
    if blocked is not None:
        raise BadInputError(f"cannot write {blocked}: it exists and is not a file; nothing was written", hint=hint)
    try:
        # Nested: the cache file appears only once its metadata did, so a failure leaves neither
        # (import refuses a cache without its metadata).
        with atomic_write(dest) as handle:
            handle.write(data)
            handle.flush()  # out of space shows here, before the metadata is written
            with atomic_write(_meta_path(dest)) as meta_handle:
                meta_handle.write((json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    except OSError as exc:
        where = output_named(exc, dest, _meta_path(dest))
        raise BadInputError(f"cannot write {where}: {exc.strerror or exc}; nothing was exported", hint=hint) from None
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
