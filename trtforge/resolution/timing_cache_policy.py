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

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trtforge.rules.recipe import Recipe
from trtforge.rules.target import BuildTarget
from trtforge.store import Store

if TYPE_CHECKING:  # the catalog side imports SQLAlchemy: only builds that use a cache pay for it
    from trtforge.store.timing_caches import CacheKey, MergeFn

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
