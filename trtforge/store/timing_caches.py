"""Timing caches in the store: a blob per version, a catalog row per version, a history per key.

A key is (flavor, TensorRT version, GPU name, compute capability). Versions are never
overwritten: each merge adds a row with the next ``generation``; the newest generation is the
cache a build starts from. Merging happens under a file lock that covers the read of the
latest version, the merge and the write of the next one, so concurrent builders lose no
entries; the unique (key, generation) constraint backs the lock up for catalogs shared by
machines that do not share the lock directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

from trtforge.core.errors import IntegrityError, NotFoundError
from trtforge.store import Store, locks_dir
from trtforge.store.catalog import MIN_ID_PREFIX, Artifact, Blob, CacheKey, TimingCacheRow, add_blob_row

log = logging.getLogger(__name__)

CACHE_BLOB_KIND = "timing_cache"
# Merge(base bytes or None, new bytes) -> merged bytes. The backend supplies ITimingCache.combine.
MergeFn = Callable[[bytes | None, bytes], bytes]


@contextmanager
def _file_lock(path: os.PathLike[str] | str) -> Iterator[None]:
    """An exclusive advisory lock held for the block (released by the OS if the process dies)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@dataclass(frozen=True)
class PrunePlan:
    """What `cache prune` will delete: rows first, then blobs nothing else refers to."""

    rows: tuple[dict[str, Any], ...]
    blobs: tuple[str, ...]
    freed_bytes: int

    def as_json(self) -> dict[str, Any]:
        return {"rows": list(self.rows), "blobs": list(self.blobs), "freed_bytes": self.freed_bytes}


class TimingCaches:
    """Timing-cache versions of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.catalog = store.catalog

    # -- reading --------------------------------------------------------------------------

    def latest(self, key: CacheKey) -> TimingCacheRow | None:
        with self.catalog.reading() as session:
            stmt = (
                select(TimingCacheRow)
                .where(TimingCacheRow.cache_key == key.digest)
                .order_by(TimingCacheRow.generation.desc())
                .limit(1)
            )
            return session.scalars(stmt).first()

    def history(self, key: CacheKey) -> list[TimingCacheRow]:
        with self.catalog.reading() as session:
            stmt = (
                select(TimingCacheRow)
                .where(TimingCacheRow.cache_key == key.digest)
                .order_by(TimingCacheRow.generation.desc())
            )
            return list(session.scalars(stmt))

    def list(self, *, all_versions: bool = False) -> list[TimingCacheRow]:
        """Newest version of each cache (or every version), grouped by key."""
        with self.catalog.reading() as session:
            stmt = select(TimingCacheRow).order_by(
                TimingCacheRow.flavor,
                TimingCacheRow.trt_version,
                TimingCacheRow.gpu_name,
                TimingCacheRow.generation.desc(),
            )
            rows = list(session.scalars(stmt))
        if all_versions:
            return rows
        newest: dict[str, TimingCacheRow] = {}
        for row in rows:
            newest.setdefault(row.cache_key, row)
        return list(newest.values())

    def get(self, ref: str) -> TimingCacheRow:
        ref = ref.strip().lower()
        if len(ref) < MIN_ID_PREFIX or not all(c in "0123456789abcdef" for c in ref):
            raise NotFoundError(
                f"timing cache id {ref[:40]!r} is not valid",
                hint=f"use an id from `trtforge cache list` (at least {MIN_ID_PREFIX} hex characters)",
            )
        with self.catalog.reading() as session:
            stmt = select(TimingCacheRow).where(TimingCacheRow.id.startswith(ref, autoescape=True)).limit(2)
            found = list(session.scalars(stmt))
        if not found:
            raise NotFoundError(f"no timing cache with id {ref}", hint="see `trtforge cache list`")
        if len(found) > 1:
            raise NotFoundError(f"timing cache id prefix {ref} is ambiguous", hint="give more characters")
        return found[0]

    def read(self, row: TimingCacheRow) -> bytes | None:
        """The version's bytes, or None (logged) when the blob is missing or corrupt."""
        try:
            return self.store.blobs.read_verified(row.blob_sha256)
        except IntegrityError as exc:
            log.warning("timing cache %s skipped: %s", row.id[:12], exc.message)
            return None

    # -- writing --------------------------------------------------------------------------

    def lock(self, key: CacheKey) -> Any:
        return _file_lock(locks_dir(self.store.root) / f"timing-cache-{key.digest[:32]}.lock")

    def put_blob(self, data: bytes) -> str:
        """Store cache bytes as a blob with its catalog row (for private caches kept per artifact)."""
        with self.store.recording_blobs():  # from storing the blob until its row commits, gc waits
            ref = self.store.blobs.put_bytes(data)
            with self.catalog.writing() as session:
                add_blob_row(session, ref.sha256, ref.size, CACHE_BLOB_KIND)
        return ref.sha256

    def merge_in(
        self,
        key: CacheKey,
        new: bytes,
        merge: MergeFn,
        *,
        source: str = "build",
        artifact_id: str | None = None,
    ) -> TimingCacheRow:
        """Combine ``new`` into the latest version and record the result as the next version.

        The lock covers read, merge and write. If the merge changes nothing, the latest
        version is returned and no row is added.
        """
        with self.lock(key):
            latest = self.latest(key)
            base = self.read(latest) if latest is not None else None
            merged = merge(base, new)
            if latest is not None and base is not None and hashlib.sha256(merged).hexdigest() == latest.blob_sha256:
                return latest
            return self._append(key, merged, latest, source=source, artifact_id=artifact_id)

    def _append(
        self,
        key: CacheKey,
        data: bytes,
        parent: TimingCacheRow | None,
        *,
        source: str,
        artifact_id: str | None,
    ) -> TimingCacheRow:
        with self.store.recording_blobs():  # from storing the blob until its row commits, gc waits
            return self._record_version(key, data, parent, source=source, artifact_id=artifact_id)

    def _record_version(
        self,
        key: CacheKey,
        data: bytes,
        parent: TimingCacheRow | None,
        *,
        source: str,
        artifact_id: str | None,
    ) -> TimingCacheRow:
        ref = self.store.blobs.put_bytes(data)
        row = TimingCacheRow(
            id=uuid.uuid4().hex,
            cache_key=key.digest,
            **key.as_json(),
            generation=(parent.generation + 1) if parent is not None else 1,
            blob_sha256=ref.sha256,
            size=ref.size,
            parent_id=parent.id if parent is not None else None,
            source=source,
            artifact_id=artifact_id,
        )
        try:
            with self.catalog.writing() as session:
                add_blob_row(session, ref.sha256, ref.size, CACHE_BLOB_KIND)
                session.add(row)
        except SqlIntegrityError:
            # Another machine (not sharing our lock directory) wrote this generation first.
            raise IntegrityError(
                f"timing cache {key.describe()} changed while merging",
                hint="retry the build; its entries were not lost from the plan, only from the cache",
            ) from None
        return row

    # -- maintenance ----------------------------------------------------------------------

    def plan_prune(self, keep: int) -> PrunePlan:
        """Keep the newest ``keep`` versions per key; blobs go only when nothing refers to them."""
        rows = self.list(all_versions=True)
        seen: dict[str, int] = {}
        doomed: list[TimingCacheRow] = []
        for row in rows:
            seen[row.cache_key] = seen.get(row.cache_key, 0) + 1
            if seen[row.cache_key] > keep:
                doomed.append(row)
        doomed_ids = {row.id for row in doomed}
        kept_blobs = {row.blob_sha256 for row in rows if row.id not in doomed_ids}
        kept_blobs |= self._blobs_artifacts_started_from()
        blobs = sorted({row.blob_sha256 for row in doomed} - kept_blobs)
        sizes = {row.blob_sha256: row.size for row in doomed}
        return PrunePlan(tuple(row.summary() for row in doomed), tuple(blobs), sum(sizes[b] for b in blobs))

    def execute_prune(self, plan: PrunePlan) -> None:
        ids = [row["cache_id"] for row in plan.rows]
        if ids:
            with self.catalog.writing() as session:
                session.execute(delete(TimingCacheRow).where(TimingCacheRow.id.in_(ids)))
        with self.store.collecting_blobs():  # as gc: a writer reusing one of these blobs records it first
            if plan.blobs:  # under the fence, as gc's: no writer is between one of these blobs and its row
                with self.catalog.writing() as session:
                    session.execute(delete(Blob).where(Blob.sha256.in_(plan.blobs)))
            with self.catalog.reading() as session:
                recorded = set(session.scalars(select(Blob.sha256).where(Blob.sha256.in_(plan.blobs))))
            for sha in plan.blobs:
                if sha not in recorded:
                    self.store.blobs.delete(sha)

    def _blobs_artifacts_started_from(self) -> set[str]:
        """Cache blobs artifacts record (so `build --reproduce` keeps working after a prune)."""
        with self.catalog.reading() as session:
            details = session.scalars(select(Artifact.details)).all()
        found = set()
        for entry in details:
            cache = entry.timing_cache or {}
            for field in ("started_from", "produced"):
                if cache.get(field):
                    found.add(cache[field])
        return found
