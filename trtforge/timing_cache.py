"""The build stage's timing-cache policy: which cache a build starts from, and where its new
entries go afterwards.

- ``shared``: start from the newest cache for the build target (flavor, TensorRT version, GPU,
  compute capability) and merge the build's cache back into it under a lock.
- ``private``: start empty; keep the resulting cache as a blob recorded on the artifact only.
- ``off``: no timing cache (BuilderFlag.DISABLE_TIMING_CACHE is set by the config rules).

TensorRT-RTX has no timing cache (its calls are no-ops), so nothing is loaded or stored there.
Each artifact records the cache blob it started from in ``details.timing_cache``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from trtforge.recipe import Recipe
from trtforge.store import Store
from trtforge.store.timing_caches import CacheKey, MergeFn, TimingCaches
from trtforge.target import BuildTarget

log = logging.getLogger(__name__)

RTX_NO_OP = "TensorRT-RTX timing caches are no-ops"


def cache_key_for(target: BuildTarget) -> CacheKey | None:
    """The cache a build for ``target`` shares, or None when the target has no single GPU."""
    if target.flavor == "tensorrt_rtx" or not target.gpu_name or len(target.compute_capabilities) != 1:
        return None
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

    @property
    def active(self) -> bool:
        return self.skipped is None


def start(store: Store | None, recipe: Recipe, target: BuildTarget) -> CacheStart:
    policy = recipe.build.timing_cache
    if policy == "off":
        return CacheStart(policy, skipped="timing_cache: off")
    if target.flavor == "tensorrt_rtx":
        return CacheStart(policy, skipped=RTX_NO_OP)
    key = cache_key_for(target)
    if key is None:
        return CacheStart(policy, skipped="the build target names no single GPU")
    if policy == "private" or store is None:
        return CacheStart(policy, key)
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
    if begun.blob_sha256 and not used:
        record["rejected"] = begun.blob_sha256
    if cache_out and begun.key is not None:
        caches = TimingCaches(store)
        if begun.policy == "shared":
            row = caches.merge_in(begun.key, cache_out, merge, artifact_id=artifact_id)
            record["merged_into_id"] = row.id
            record["merged_into"] = row.blob_sha256
        else:
            record["produced"] = caches.put_blob(cache_out)
    return record
