"""Store maintenance: `fsck` (is every row backed by an intact blob?) and `gc` (what may go?).

Both are plan-then-execute: a scan returns frozen dataclasses and warnings and changes nothing;
the plan states its expected effect (``--dry-run`` prints just that); executing it deletes
referrers before what they refer to (artifact rows, then blob rows, then blob files), so a
crash half-way leaves unreferenced blobs, which the next gc collects, never a row pointing at a
missing blob.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import delete, select, update

from trtforge.core.crashpoints import crashpoint
from trtforge.core.errors import BadInputError
from trtforge.core.fsutil import STALE_TEMP_AGE_S
from trtforge.resolution.targets import TargetOptions, many_targets, resolve_all
from trtforge.rules.compatibility import serving_group
from trtforge.rules.target import RuntimeTarget, TargetGroup
from trtforge.stages.lookup import candidate_from_row, covering_engine, stored_releases
from trtforge.store import Store, lookup_sql, require_existing_store
from trtforge.store.catalog import Artifact, Blob, Catalog, ReferenceOutput, TimingCacheRow, utcnow
from trtforge.store.integrity import CORRUPT_STATUS

VERIFIED_STATUS = "passed"  # the newest verification on some GPU model says so
# A blob written or reused this recently may belong to a build about to record it (writers touch
# a blob they reuse), so gc leaves its file for a later run even when no row refers to it.
BLOB_GRACE_S = STALE_TEMP_AGE_S

Problem = Literal["corrupt", "missing", "orphan"]


@dataclass(frozen=True)
class BlobFinding:
    """A blob that is damaged, missing behind catalog rows, or present without any row; and the rows
    that use it: artifacts (their plan), timing-cache versions and stored reference outputs."""

    sha256: str
    problem: Problem
    artifact_ids: tuple[str, ...] = ()
    timing_cache_ids: tuple[str, ...] = ()
    reference_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class FsckReport:
    blobs_checked: int
    artifacts_checked: int
    findings: tuple[BlobFinding, ...]
    stale_temp: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    def of(self, problem: Problem) -> tuple[BlobFinding, ...]:
        return tuple(f for f in self.findings if f.problem == problem)

    @property
    def damaged(self) -> tuple[BlobFinding, ...]:
        """Corrupt or missing blobs behind catalog rows: what makes fsck fail."""
        return tuple(f for f in self.findings if f.problem != "orphan")

    def __bool__(self) -> bool:
        return not self.damaged

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": bool(self),
            "blobs_checked": self.blobs_checked,
            "artifacts_checked": self.artifacts_checked,
            "corrupt": [asdict(f) for f in self.of("corrupt")],
            "missing": [asdict(f) for f in self.of("missing")],
            "orphans": [f.sha256 for f in self.of("orphan")],
            "stale_temp": list(self.stale_temp),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class BlobUsers:
    """Every catalog row that names a blob, by blob: what a damaged blob takes with it."""

    artifacts: dict[str, tuple[str, ...]]
    timing_caches: dict[str, tuple[str, ...]]
    references: dict[str, tuple[str, ...]]

    @classmethod
    def read(cls, session: Any) -> BlobUsers:
        return cls(
            _by_blob(session.execute(select(Artifact.plan_sha256, Artifact.id))),
            _by_blob(session.execute(select(TimingCacheRow.blob_sha256, TimingCacheRow.id))),
            _by_blob(session.execute(select(ReferenceOutput.blob_sha256, ReferenceOutput.key))),
        )

    def named(self) -> set[str]:
        return set(self.artifacts) | set(self.timing_caches) | set(self.references)

    def finding(self, sha: str, problem: Problem) -> BlobFinding:
        return BlobFinding(
            sha, problem, self.artifacts.get(sha, ()), self.timing_caches.get(sha, ()), self.references.get(sha, ())
        )


def _by_blob(rows: Any) -> dict[str, tuple[str, ...]]:
    users: dict[str, list[str]] = defaultdict(list)
    for sha, user in rows:
        users[sha].append(user)
    return {sha: tuple(sorted(ids)) for sha, ids in users.items()}


def scan_store(store: Store, *, temp_age_s: float | None = None) -> FsckReport:
    """Re-hash every blob and compare the blob store with the catalog. Changes nothing."""
    with store.catalog.reading() as session:
        integrity = dict(session.execute(select(Artifact.id, Artifact.integrity)).all())
        blob_rows = set(session.scalars(select(Blob.sha256)))
        users = BlobUsers.read(session)
    on_disk = set(store.blobs.iter_digests())
    already = {artifact_id for artifact_id, status in integrity.items() if status == CORRUPT_STATUS}
    findings = []
    known = 0
    for sha in sorted(on_disk):
        if not store.blobs.verify(sha):
            findings.append(users.finding(sha, "corrupt"))
        elif sha not in blob_rows:
            findings.append(BlobFinding(sha, "orphan"))
    for sha in sorted((users.named() | blob_rows) - on_disk):
        finding = users.finding(sha, "missing")
        ids = finding.artifact_ids
        if ids and set(ids) <= already and not finding.timing_cache_ids and not finding.reference_keys:
            known += 1  # quarantined earlier; its artifacts are marked and never handed out
            continue
        findings.append(finding)
    warnings = [f"{known} blob(s) quarantined earlier; their artifacts stay marked {CORRUPT_STATUS}"] if known else []
    # Each store has its own default age (local files: 30 min or a dead writer; S3 uploads: a day).
    temps = store.blobs.temp_files() if temp_age_s is None else store.blobs.temp_files(max_age_s=temp_age_s)
    stale = tuple(t.location for t in temps)
    return FsckReport(len(on_disk), len(integrity), tuple(findings), stale, tuple(warnings))


@dataclass(frozen=True)
class FsckRepair:
    """What `fsck --repair` will do, derived from a report.

    An artifact whose plan is damaged is marked corrupt and keeps its row (and so its blob row): it
    says what was lost. A timing-cache version or stored reference outputs whose blob is damaged
    are dropped: each is an optimisation that the next build (timing cache) or verify (reference
    outputs) makes again. A damaged blob no artifact names loses its blob row."""

    quarantine: tuple[str, ...]
    mark_corrupt: tuple[str, ...]
    drop_blob_rows: tuple[str, ...]
    remove_temp: tuple[str, ...]
    drop_timing_caches: tuple[str, ...] = ()
    drop_reference_outputs: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def plan_repair(report: FsckReport) -> FsckRepair:
    damaged = report.damaged
    marked = sorted({a for f in damaged for a in f.artifact_ids})
    unused_rows = tuple(f.sha256 for f in damaged if not f.artifact_ids)
    caches = tuple(sorted({c for f in damaged for c in f.timing_cache_ids}))
    references = tuple(sorted({r for f in damaged for r in f.reference_keys}))
    quarantine = tuple(f.sha256 for f in report.of("corrupt"))
    return FsckRepair(quarantine, tuple(marked), unused_rows, report.stale_temp, caches, references)


def execute_repair(store: Store, repair: FsckRepair) -> dict[str, Any]:
    """Mark artifacts first (so no lookup hands out a bad plan), then drop the rows of what is lost
    (cache rows before the blob rows they name), then move blobs aside."""
    if repair.mark_corrupt:
        with store.catalog.writing() as session:
            marked = Artifact.id.in_(repair.mark_corrupt)
            session.execute(update(Artifact).where(marked).values(integrity=CORRUPT_STATUS))
    dropped: list[str] = []
    if repair.drop_blob_rows or repair.drop_timing_caches or repair.drop_reference_outputs:
        with store.catalog.writing() as session:
            session.execute(delete(TimingCacheRow).where(TimingCacheRow.id.in_(repair.drop_timing_caches)))
            session.execute(delete(ReferenceOutput).where(ReferenceOutput.key.in_(repair.drop_reference_outputs)))
            dropped = _drop_blob_rows_unused(session, repair.drop_blob_rows)
    moved = []
    for sha in repair.quarantine:
        target = store.blobs.quarantine(sha)
        if target is not None:
            moved.append(target)
    removed = [p for p in repair.remove_temp if store.blobs.remove_temp(p)]
    return {
        "marked_corrupt": list(repair.mark_corrupt),
        "quarantined": moved,
        "dropped_blob_rows": dropped,
        "dropped_timing_caches": list(repair.drop_timing_caches),
        "dropped_reference_outputs": list(repair.drop_reference_outputs),
        "removed_temp": removed,
    }


def _drop_blob_rows_unused(session: Any, candidates: tuple[str, ...]) -> list[str]:
    """Delete the blob rows of ``candidates`` that exist and that no row names now (judged in the
    deleting transaction: a writer may have recorded the blob again since the scan)."""
    if not candidates:
        return []
    wanted = Blob.sha256.in_(candidates)
    existing = set(session.scalars(select(Blob.sha256).where(wanted)))
    for column in (Artifact.plan_sha256, TimingCacheRow.blob_sha256, ReferenceOutput.blob_sha256):
        existing -= set(session.scalars(select(column).where(column.in_(candidates))))
    if existing:
        session.execute(delete(Blob).where(Blob.sha256.in_(existing)))
    return sorted(existing)


# -- gc ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactEntry:
    artifact_id: str
    name: str
    status: str
    created_at: str  # as recorded (an imported artifact's: as its bundle claims)
    plan_sha256: str
    reason: str
    learned_at: str = ""  # when this store learned of it: what retention counts by
    target: str = ""  # its retention group's target, in words


@dataclass(frozen=True)
class BlobEntry:
    sha256: str
    size: int
    reason: str


@dataclass(frozen=True)
class GcGroup:
    """The engines of one model of one name for one target: what retention counts in. Ids newest first."""

    name: str
    model_sha256: str
    recipe_variant: str | None
    target: TargetGroup
    keep: tuple[str, ...]
    remove: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_sha256": self.model_sha256,
            "recipe_variant": self.recipe_variant,
            "target": self.target.as_json(),
            "keep": list(self.keep),
            "remove": list(self.remove),
        }


@dataclass(frozen=True)
class GcPlan:
    """A deletion strategy: what goes, what is kept on purpose, and the expected effect."""

    artifacts: tuple[ArtifactEntry, ...]
    blob_rows: tuple[BlobEntry, ...]
    blob_files: tuple[BlobEntry, ...]
    kept: tuple[ArtifactEntry, ...] = ()
    warnings: tuple[str, ...] = ()
    groups: tuple[GcGroup, ...] = ()
    blob_grace_s: float = BLOB_GRACE_S  # judged again at unlink time, under the gc fence

    @property
    def expected_freed_bytes(self) -> int:
        return sum(b.size for b in self.blob_files)

    def as_json(self) -> dict[str, Any]:
        return {
            "artifacts": [asdict(a) for a in self.artifacts],
            "blob_rows": [asdict(b) for b in self.blob_rows],
            "blob_files": [asdict(b) for b in self.blob_files],
            "kept": [asdict(a) for a in self.kept],
            "groups": [g.as_json() for g in self.groups],
            "expected_freed_bytes": self.expected_freed_bytes,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class GcPolicy:
    """``keep_last``: the newest N artifacts of each model of a name for each target survive;
    ``older_than_days``: only artifacts this store learned of longer ago go. "Newest" and "older"
    are this store's order (``learned_at``), never a bundle's ``created_at``. ``targets`` (a fleet):
    the only intact engine of a name that lookup returns for one of them is never removed."""

    keep_last: int | None = None
    older_than_days: float | None = None
    force: bool = False
    blob_grace_s: float = BLOB_GRACE_S
    now: datetime = field(default_factory=utcnow)
    targets: tuple[RuntimeTarget, ...] = ()  # fleet targets: each keeps the engine lookup returns for it

    def __post_init__(self) -> None:
        days = self.older_than_days
        if days is not None and not (math.isfinite(days) and days >= 0):
            raise BadInputError(
                f"--older-than {days}: not a number of days",
                hint="give a finite number of days of 0 or more, e.g. --older-than 30",
            )

    @property
    def selects_artifacts(self) -> bool:
        return self.keep_last is not None or self.older_than_days is not None

    @property
    def learned_before(self) -> datetime | None:
        """With ``older_than_days``: the time before which an artifact is old enough to go; None when
        that is before any date (more days than datetime spans): nothing is that old."""
        if self.older_than_days is None:
            return None
        try:
            return self.now - timedelta(days=self.older_than_days)
        except OverflowError:
            return None


GroupKey = tuple[str, str, str | None, TargetGroup]


def retention_group(artifact: Artifact) -> GroupKey:
    """(name, model digest, recipe without its target fields, target): engines of one model of a
    name for one target. Another target's engine never counts against this one's. The target is
    read as lookup reads the artifact (serving_group), envelope included: an ampere_plus or
    version-compatible engine serves other machines than the default engine of the same GPU."""
    candidate = candidate_from_row(artifact)
    return artifact.name, artifact.model_sha256, candidate.recipe_variant, serving_group(candidate)


def plan_gc(store: Store, policy: GcPolicy) -> GcPlan:
    """Decide what gc would delete. Changes nothing.

    Retention counts per (name, model, target) (see retention_group), newest first in this store's
    order. Never planned for removal: a pinned artifact (not even with --force), and without --force
    the newest intact artifact of a group verified on any GPU model when all such would go.
    """
    with store.catalog.reading() as session:
        order = (Artifact.learned_at.desc(), Artifact.id)
        artifacts = list(session.scalars(select(Artifact).order_by(*order)))
        blob_rows = {b.sha256: b for b in session.scalars(select(Blob))}
    passed_on = _passed_on(store.catalog)
    groups: dict[GroupKey, list[Artifact]] = defaultdict(list)
    for artifact in artifacts:
        groups[retention_group(artifact)].append(artifact)
    doomed: list[ArtifactEntry] = []
    kept: list[ArtifactEntry] = []
    warnings: list[str] = []
    planned: list[GcGroup] = []
    for key, group in groups.items():  # newest first within each group
        going = _plan_group(key, group, policy, passed_on, kept, warnings)
        doomed += going
        gone = {entry.artifact_id for entry in going}
        keep = tuple(a.id for a in group if a.id not in gone)
        planned.append(GcGroup(key[0], key[1], key[2], key[3], keep, tuple(e.artifact_id for e in going)))
    if policy.targets:
        saved = _fleet_keeps(store, policy.targets, {a.id: a for a in artifacts}, doomed, kept, warnings)
        doomed = [d for d in doomed if d.artifact_id not in saved]
        planned = [_unplan(g, saved) for g in planned]
    planned.sort(key=lambda g: (g.name, g.target, g.model_sha256, g.recipe_variant or ""))
    doomed_ids = {d.artifact_id for d in doomed}
    still_used = {a.plan_sha256 for a in artifacts if a.id not in doomed_ids}
    rows_to_drop = [
        BlobEntry(sha, row.size, "no artifact uses it")
        for sha, row in sorted(blob_rows.items())
        if row.kind == "plan" and sha not in still_used
    ]
    files = _blob_files(store, policy, blob_rows, {b.sha256: b for b in rows_to_drop}, warnings)
    return GcPlan(
        tuple(doomed), tuple(rows_to_drop), files, tuple(kept), tuple(warnings), tuple(planned), policy.blob_grace_s
    )


def _plan_group(
    key: GroupKey,
    group: list[Artifact],
    policy: GcPolicy,
    passed_on: dict[str, list[str]],
    kept: list[ArtifactEntry],
    warnings: list[str],
) -> list[ArtifactEntry]:
    """What goes of one retention group (newest first); pinned and protected ones go to ``kept``."""
    name, target = key[0], key[3].describe()
    chosen = [(a, _why_remove(a, index, policy)) for index, a in enumerate(group)]
    going = [(a, why) for a, why in chosen if why is not None]
    for artifact in [a for a, _ in going if a.pinned_at is not None]:
        kept.append(_entry(artifact, "pinned", target))
        warnings.append(f"kept {artifact.id[:12]} of {name}: pinned (`trtforge unpin` lets gc remove it)")
    going = [(a, why) for a, why in going if a.pinned_at is None]
    verified = [a for a in group if passed_on.get(a.id) and not a.corrupt]
    going_ids = {a.id for a, _ in going}
    if verified and all(a.id in going_ids for a in verified) and not policy.force:
        keep = verified[0]
        going = [(a, why) for a, why in going if a is not keep]
        gpus = ", ".join(passed_on[keep.id])
        kept.append(_entry(keep, "only artifact of its name verified on any GPU model", target))
        warnings.append(
            f"kept {keep.id[:12]}: the only artifact of {name} verified on any GPU model "
            f"(passed on {gpus}) among its engines of this model for {target}; use --force to remove it"
        )
    return [_entry(a, why, target) for a, why in going]


def _fleet_keeps(
    store: Store,
    targets: tuple[RuntimeTarget, ...],
    by_id: dict[str, Artifact],
    doomed: list[ArtifactEntry],
    kept: list[ArtifactEntry],
    warnings: list[str],
) -> set[str]:
    """For each name and fleet target: when every engine lookup could return for it (its ranking's
    matches; weight-stripped plans only where nothing else runs there) is planned to go, the one it
    returns stays. Lookup's ranking decides, as for `coverage` (stages.lookup.covering_engine)."""
    going = {d.artifact_id for d in doomed}
    saved: set[str] = set()
    for (name,) in store.catalog.lookup_rows(lookup_sql.names()):
        for target in targets:
            ranking = covering_engine(store, target, name=name)
            ids = [m.candidate.artifact_id for m in ranking.matches]
            if not ids or not set(ids) <= going or ids[0] in saved:
                continue
            saved.add(ids[0])
            where = target.label or target.describe()
            kept.append(_entry(by_id[ids[0]], f"the only engine of fleet target {where}", target.describe()))
            warnings.append(
                f"kept {ids[0][:12]} of {name}: the only engine lookup returns for fleet target {where} "
                f"({target.describe()}); gc never removes it while the fleet has that target"
            )
    return saved


def _unplan(group: GcGroup, saved: set[str]) -> GcGroup:
    """A retention group with the engines kept for fleet targets moved from ``remove`` to ``keep``."""
    if not saved & set(group.remove):
        return group
    keep = tuple(i for i in (*group.keep, *group.remove) if i in group.keep or i in saved)
    return replace(group, keep=keep, remove=tuple(i for i in group.remove if i not in saved))


def _blob_files(
    store: Store, policy: GcPolicy, blob_rows: dict[str, Blob], dropped: dict[str, BlobEntry], warnings: list[str]
) -> tuple[BlobEntry, ...]:
    """Blob files no row will name: unreferenced ones, and those of the rows gc drops (grace applied)."""
    files = []
    for sha in store.blobs.iter_digests():
        if sha in blob_rows and sha not in dropped:
            continue
        info = store.blobs.stat(sha)
        if info is None or policy.now.timestamp() - info.mtime < policy.blob_grace_s:
            if sha in dropped:
                warnings.append(f"blob {sha[:12]} was written or reused recently; a later gc removes it")
            continue
        files.append(BlobEntry(sha, info.size, dropped[sha].reason if sha in dropped else "no catalog row"))
    return tuple(files)


def _passed_on(catalog: Catalog) -> dict[str, list[str]]:
    """Artifact id -> the GPU models whose newest verification of it passed."""
    statuses = catalog.statuses_of(select(Artifact.id))
    return {
        artifact_id: sorted(gpu for gpu, status in per_gpu.items() if status == VERIFIED_STATUS)
        for artifact_id, per_gpu in statuses.items()
    }


def _why_remove(artifact: Artifact, newest_index: int, policy: GcPolicy) -> str | None:
    if artifact.corrupt:
        return "marked corrupt (by fsck, or by a cache hit that found its plan damaged)"
    if not policy.selects_artifacts:
        return None
    if policy.keep_last is not None and newest_index < policy.keep_last:
        return None
    if policy.older_than_days is not None:
        learned = artifact.learned_at or artifact.created_at
        cutoff = policy.learned_before
        if cutoff is None or learned > cutoff:
            return None
    reasons = []
    if policy.keep_last is not None:
        reasons.append(f"not among the newest {policy.keep_last} for its target")
    if policy.older_than_days is not None:
        reasons.append(f"learned more than {policy.older_than_days:g} days ago")
    return " and ".join(reasons)


def _entry(artifact: Artifact, reason: str, target: str = "") -> ArtifactEntry:
    learned = artifact.learned_at.isoformat() if artifact.learned_at is not None else ""
    return ArtifactEntry(
        artifact.id,
        artifact.name,
        artifact.shown_status,
        artifact.created_at.isoformat(),
        artifact.plan_sha256,
        reason,
        learned,
        target,
    )


def execute_gc(store: Store, plan: GcPlan, *, notify: Callable[[str], None] | None = None) -> dict[str, int]:
    """Delete in referrer-first order; blobs a concurrent writer started using again are kept.

    Artifacts go with their verification rows in one transaction; one pinned since planning stays.
    Blob rows and files go under the store's gc fence: every writer (build, import, adopt, refit,
    reference outputs, timing caches) holds it (shared) from writing or reusing a blob until the
    row naming it commits, so while gc holds it no writer is between a blob and its row: a row
    gc finds unreferenced stays so until gc is done (a writer after gc writes the blob and its row
    again), and no writer can reuse a blob and record it unseen. With a PostgreSQL catalog the
    fence is also an advisory lock, covering runners on other machines that share the catalog and
    the bucket. Under the fence, at unlink time, each file is also judged again: one that a row
    names now, or that was written or reused within the grace period, stays.
    """
    with store.catalog.writing() as session:
        removed_rows = Catalog.delete_artifacts(session, [a.artifact_id for a in plan.artifacts])
    with store.collecting_blobs(notify or (lambda _message: None)):
        free_rows = _drop_unused_blob_rows(store, [b.sha256 for b in plan.blob_rows])
        crashpoint("gc-rows-deleted")
        with store.catalog.reading() as session:  # re-read: a writer may have recorded a blob since planning
            wanted = [b.sha256 for b in plan.blob_files]
            recorded = set(session.scalars(select(Blob.sha256).where(Blob.sha256.in_(wanted))))
        crashpoint("gc-blobs-rechecked")
        deleted = [
            b for b in plan.blob_files if _may_unlink(store, b.sha256, recorded, plan) and store.blobs.delete(b.sha256)
        ]
    return {
        "artifacts_removed": removed_rows,
        "blob_rows_removed": len(free_rows),
        "blob_files_removed": len(deleted),
        "bytes_freed": sum(b.size for b in deleted),
    }


def _drop_unused_blob_rows(store: Store, candidates: list[str]) -> list[str]:
    """Delete the rows of ``candidates`` no artifact uses now (the caller holds the gc fence)."""
    with store.catalog.writing() as session:
        in_use = set(session.scalars(select(Artifact.plan_sha256).where(Artifact.plan_sha256.in_(candidates))))
        free_rows = [sha for sha in candidates if sha not in in_use]
        if free_rows:
            session.execute(delete(Blob).where(Blob.sha256.in_(free_rows)))
    return free_rows


def _may_unlink(store: Store, sha: str, recorded: set[str], plan: GcPlan) -> bool:
    """Judged under the fence, just before the unlink: no row names the blob, and its file was not
    written or reused (touched) within the grace period."""
    if sha in recorded:
        return False
    info = store.blobs.stat(sha)
    return info is not None and time.time() - info.mtime >= plan.blob_grace_s


# -- the commands: one call each ------------------------------------------------------------

NO_STORE = "there is no store here yet"


def fsck(store: str | Path | None, catalog: str | None, *, repair: bool = False) -> dict[str, Any]:
    """`trtforge fsck`: scan the existing store (and repair what can be, with ``repair``)."""
    opened = require_existing_store(store, catalog=catalog, missing=NO_STORE)
    try:
        report = scan_store(opened)
        data: dict[str, Any] = report.as_json()
        if repair:
            data["repair"] = execute_repair(opened, plan_repair(report))
            data["ok"] = True
        return data
    finally:
        opened.close()


def gc(
    store: str | Path | None,
    catalog: str | None,
    policy: GcPolicy,
    *,
    dry_run: bool = False,
    notify: Callable[[str], None] | None = None,
    targets: TargetOptions | None = None,
) -> dict[str, Any]:
    """`trtforge gc`: plan what may go under ``policy`` and (unless ``dry_run``) remove it.

    ``targets`` (``--fleet``, ``--target``, the flags): each keeps its engine (see GcPolicy)."""
    requests = many_targets(targets)  # checked before the store is opened
    opened = require_existing_store(store, catalog=catalog, missing=NO_STORE)
    try:
        if requests:
            stored = stored_releases(opened, name=None, model_sha256=None)
            policy = replace(policy, targets=tuple(resolve_all(requests, stored)))
        plan = plan_gc(opened, policy)
        data: dict[str, Any] = {"dry_run": dry_run, "plan": plan.as_json()}
        if not dry_run:
            data["result"] = execute_gc(opened, plan, notify=notify)
        return data
    finally:
        opened.close()
