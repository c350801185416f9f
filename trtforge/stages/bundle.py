"""Deployment bundles: artifacts (plans + catalog records) in one tar, checked on the way in.

Layout of a bundle (a plain, uncompressed tar; plans do not compress much)::

    manifest.json              format, version, artifact ids, sha256 + size of every other file
    manifest.sig               optional: Ed25519 signature over manifest.json (trtforge.rules.signing)
    artifacts/<id>.json        the artifact's catalog record (every column) and its verifications
    plans/<sha256>.plan        each plan once, named by its digest

Import trusts nothing in the tar. It reads it once, as a stream: manifest.json must come first
and manifest.sig (if any) second, and both are checked (and the free space for what the manifest
declares) before any other member is read; each later member must be a regular file at one of
those names (no links, no absolute paths, no ``..``), listed in the manifest with the size its
header gives, and is copied into a private directory never beyond that size, hashed on the way
(plans against their names too; :mod:`trtforge.stages.bundle_read`). Records are held to a local record's rules
(:func:`trtforge.rules.record.validate_record`). Only then are blobs stored and all catalog rows
added in one transaction. A refused bundle leaves the catalog and the blob store untouched.

An artifact (or verification) id this catalog already holds must come with exactly the same
record and plan (:data:`IDENTITY_COLUMNS`); otherwise the whole bundle is refused as a conflict
(:class:`trtforge.core.errors.BundleConflictError`), so that a signature's results never attach to
a row with another plan or record, whichever bundle arrived first.

A record is not taken at its word either: what can be recomputed is, and a mismatch refuses the
bundle. The plan's size; the flavor and release its header names (TensorRT-RTX plans); the
build target in ``details`` against the columns lookup reads; the recipe fingerprint and the
build key (from recipe + model digest + target, from the plan for adopted plans, from the
parent's key for refits). A build key that cannot be recomputed here is accepted only under a
trusted signature. The artifact's status is recomputed from the verifications that count, and
verification results arrive as ``claimed`` unless the bundle is signed by a key the importer
trusts (``--trust``): claims are kept for people to read, but lookup does not count them.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from trtforge.core.crashpoints import crashpoint
from trtforge.core.errors import (
    BadInputError,
    BundleConflictError,
    BundleError,
    IntegrityError,
    TrtforgeError,
)
from trtforge.core.fsutil import atomic_write
from trtforge.core.plan_header import read_plan_header
from trtforge.rules.flavors import same_release
from trtforge.rules.keys import adopted_key, recipe_fingerprint, recorded_build_key, refit_key
from trtforge.rules.record import ArtifactDetails, ArtifactRecord, VerificationRecord, read_details
from trtforge.rules.signing import Signer, load_private_key, load_public_key, sign_manifest
from trtforge.stages.bundle_read import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    MANIFEST,
    SIGNATURE,
    Received,
    read_records,
    receive_bundle,
)
from trtforge.store import Store, note, open_store, require_existing_store
from trtforge.store.catalog import (
    LEARNED_IMPORT,
    TRUST_CLAIMED,
    TRUST_SIGNED,
    Artifact,
    Blob,
    Catalog,
    Verification,
    add_blob_row,
)
from trtforge.store.integrity import CORRUPT_STATUS

UNVERIFIED = "unverified"



@dataclass
class ExportReport:
    path: Path
    artifacts: list[str]
    plans: int
    bytes: int
    signed_by: str | None = None  # key id of the signing key

    def as_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "artifacts": self.artifacts,
            "plans": self.plans,
            "bytes": self.bytes,
            "signed_by": self.signed_by,
        }


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    plans: int = 0
    signer: Signer | None = None  # a valid signature's key, trusted or not; None: unsigned
    verifications: int = 0  # results added that count (trusted signature)
    claims: int = 0  # results added as the exporter's claims only

    def as_json(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "already_present": self.already_present,
            "plans": self.plans,
            "signer": self.signer.as_json() if self.signer else None,
            "verifications": self.verifications,
            "claims": self.claims,
        }


# -- records ------------------------------------------------------------------------------------


def _row_record(row: Artifact | Verification) -> dict[str, Any]:
    """Every column of a row, JSON-ready (datetimes as ISO 8601)."""
    record: dict[str, Any] = {}
    for column in type(row).__table__.columns:
        value = getattr(row, column.key)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, ArtifactDetails):
            value = value.as_json()
        record[column.key] = value
    return record


# Facts about one store's copy, not about the artifact: the importing store decides them itself
# (its copy is hash-checked on import; a pin protects a local service's file; when and how it
# learned of a row is its own clock: a bundle's created_at is kept as claimed and orders nothing).
_LOCAL_COLUMNS = frozenset({"integrity", "pinned_at", "learned_at", "learned_via"})


def artifact_record(artifact: Artifact, verifications: list[Verification] | None = None) -> dict[str, Any]:
    """The artifact's row plus its verification rows, so `--verified-only` works offline."""
    record = {k: v for k, v in _row_record(artifact).items() if k not in _LOCAL_COLUMNS}
    record["verifications"] = [
        {k: v for k, v in _row_record(row).items() if k not in _LOCAL_COLUMNS} for row in verifications or []
    ]
    return record


def artifact_from_record(record: ArtifactRecord) -> Artifact:
    """The catalog row of a validated record, made from the model's values (not the JSON's): what
    the model refuses never reaches the catalog, and what it accepts is what the row holds."""
    return Artifact(**record.model_dump(exclude={"verifications"}))


def exporter_order(row: ArtifactRecord | VerificationRecord) -> tuple[datetime, str]:
    """A record's (or a verification row's) place among the rows of its own bundle: the time its
    exporter gives it (``created_at``, UTC), then its id. It orders a bundle's rows among themselves
    only: all of them are learned when the bundle is imported, after everything learned before."""
    return row.created_at, row.id


def verifications_from_record(record: ArtifactRecord) -> list[Verification]:
    """The record's verification rows, oldest first by the times the bundle gives them (``trust``
    is the importer's to decide)."""
    return [
        Verification(**row.model_dump(exclude={"trust"}), artifact_id=record.id)
        for row in sorted(record.verifications, key=exporter_order)
    ]


# -- export -------------------------------------------------------------------------------------


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = int(mtime)
    tar.addfile(info, io.BytesIO(data))


def export_bundle(store: Store, refs: list[str], destination: Path, *, sign: Path | None = None) -> ExportReport:
    """Write the artifacts ``refs`` (ids or unique prefixes) and their plans to ``destination``,
    signed with the Ed25519 private key file ``sign`` when given."""
    if not refs:
        raise BadInputError("export needs at least one artifact id")
    _refuse_output_in_store(store, destination)
    key = load_private_key(sign) if sign is not None else None  # a bad key fails before any work
    artifacts: dict[str, Artifact] = {}
    for ref in refs:
        artifact = store.catalog.get_artifact(ref)
        if artifact.corrupt:
            raise IntegrityError(
                f"artifact {artifact.id[:12]} is marked corrupt; it is not exported",
                hint="rebuild it (`trtforge build`), then export the new artifact",
            )
        artifacts[artifact.id] = artifact
    files: dict[str, dict[str, Any]] = {}
    records = {
        a.id: json.dumps(artifact_record(a, store.catalog.verifications(a.id)), indent=2, sort_keys=True).encode()
        for a in artifacts.values()
    }
    plans: dict[str, Path] = {}
    for sha in sorted({a.plan_sha256 for a in artifacts.values()}):
        # Hash the blob before shipping it: a damaged store must not produce a "valid" bundle.
        try:
            plans[sha] = store.blobs.local_file(sha)
        except IntegrityError:
            raise IntegrityError(f"plan {sha[:12]} is missing or corrupted in the store; not exported") from None
        files[f"plans/{sha}.plan"] = {"sha256": sha, "size": plans[sha].stat().st_size}
    for artifact_id, data in records.items():
        files[f"artifacts/{artifact_id}.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    now = datetime.now(timezone.utc)
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "created_at": now.isoformat(),
        "artifacts": sorted(artifacts),
        "files": files,
    }
    manifest_bytes = json.dumps(manifest, indent=2, sort_keys=True).encode()
    signature = sign_manifest(manifest_bytes, key) if key is not None else None
    destination = destination.absolute()
    try:
        _write_bundle(destination, manifest_bytes, signature, records, plans, now)
    except OSError as exc:
        raise BadInputError(f"cannot write bundle {destination}: {exc.strerror or exc}") from None
    signed_by = json.loads(signature)["key_id"] if signature is not None else None
    return ExportReport(destination, sorted(artifacts), len(plans), destination.stat().st_size, signed_by)


def _refuse_output_in_store(store: Store, destination: Path) -> None:
    """A bundle is never written inside the store it is exported from (links followed): it would
    replace the catalog, a blob or a lock, and the store would be lost."""
    target = destination.expanduser().resolve()
    url = store.catalog.url
    catalog = Path(url.removeprefix("sqlite:///")).resolve() if url.startswith("sqlite:///") else None
    if target.is_relative_to(store.root.resolve()) or target == catalog:
        raise BadInputError(
            f"bundle output {destination} is inside the store {store.root}; nothing was written",
            hint="write the bundle outside the store directory (and not over its catalog)",
        )


def _write_bundle(
    destination: Path,
    manifest: bytes,
    signature: bytes | None,
    records: dict[str, bytes],
    plans: dict[str, Path],
    now: datetime,
) -> None:
    with atomic_write(destination) as handle, tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, MANIFEST, manifest, now.timestamp())
        if signature is not None:
            _add_bytes(tar, SIGNATURE, signature, now.timestamp())
        for artifact_id, data in sorted(records.items()):
            _add_bytes(tar, f"artifacts/{artifact_id}.json", data, now.timestamp())
        for sha, path in plans.items():
            info = tarfile.TarInfo(f"plans/{sha}.plan")
            info.size = path.stat().st_size
            info.mode = 0o644
            info.mtime = int(now.timestamp())
            with open(path, "rb") as plan:
                tar.addfile(info, plan)


# -- recomputation: a record is checked against what its plan and its own inputs give ----------


def _refuse(record: dict[str, Any], what: str) -> BundleError:
    return BundleError(f"bundle record artifacts/{record['id']}.json: {what}: tampered or damaged")


def _details_of(record: dict[str, Any]) -> ArtifactDetails:
    """The record's details through the catalog's one reader; a malformed one refuses the bundle."""

    try:
        return read_details(record.get("details"), strict=True)
    except ValidationError:
        raise _refuse(record, "its details do not validate") from None


def _expected_build_key(
    record: dict[str, Any], details: ArtifactDetails, known_keys: dict[str, str]
) -> tuple[str | None, str]:
    """The build key the record's own inputs give, or (None, why it cannot be recomputed here)."""
    target, lineage = details.target, details.lineage
    # A refit copies its parent's details (an adopted parent's origin too): lineage comes first.
    if lineage is not None and lineage.operation == "refit":
        parent_key = known_keys.get(lineage.parent)
        if parent_key is None:
            return None, "its refit parent is neither in the bundle nor in this catalog"
        if lineage.weights_sha256 != record["model_sha256"]:
            raise _refuse(record, "the refit's weights digest differs from its model digest")
        return refit_key(parent_key, record["model_sha256"]), ""
    if details.origin == "adopted":
        if target is None or not details.compatibility:
            return None, "the adopted plan's target is not recorded"
        return adopted_key(record["plan_sha256"], record["model_sha256"], target, details.compatibility), ""
    if target is None:
        return None, "its build target is not recorded"

    from trtforge.rules.recipe import Recipe

    try:
        recipe = Recipe.model_validate(record.get("recipe"))
        expected = recorded_build_key(record.get("recipe") or {}, record["model_sha256"], target)
    except (ValidationError, KeyError, TypeError, ValueError):
        return None, "its recipe or build target does not validate in this trtforge"
    if recipe_fingerprint(recipe) != record.get("recipe_fingerprint"):
        raise _refuse(record, "the recipe fingerprint is not the one its recipe gives")
    return expected, ""


def check_record(record: dict[str, Any], plan: Path, known_keys: dict[str, str]) -> str:
    """Refuse a record whose recomputable fields disagree with its plan or its own inputs.

    Returns "" when the build key was recomputed and matches, else why it could not be.
    """
    _check_against_plan(record, plan)
    details = _details_of(record)
    if details.target is not None:
        _check_target_columns(record, details.target)
    expected, why_not = _recomputed_key(record, details, known_keys)
    if expected is not None and expected != record["build_key"]:
        raise _refuse(record, "its build key is not the one its recipe, model and target give")
    return why_not


def _check_against_plan(record: dict[str, Any], plan: Path) -> None:
    """The plan's size, and the flavor and release its header names (TensorRT-RTX plans)."""
    size = plan.stat().st_size
    if record.get("plan_size") != size:
        raise _refuse(record, f"plan_size {record.get('plan_size')!r} but the plan has {size} bytes")
    header = read_plan_header(plan)
    if header is None:
        return
    try:
        same = record["flavor"] == header.flavor and same_release(record["trt_version"], header.version)
    except TrtforgeError:  # an unparsable version
        same = False
    if not same:
        raise _refuse(
            record,
            f"it says {record['flavor']} {record['trt_version'][:40]}, "
            f"the plan's header {header.flavor} {header.version}",
        )


def _check_target_columns(record: dict[str, Any], target: dict[str, Any]) -> None:
    """The columns lookup reads must be the build target recorded in details."""
    for column in ("flavor", "trt_version", "gpu_name"):
        if target.get(column) != record.get(column):
            raise _refuse(record, f"{column} differs from the build target recorded in its details")
    ccs = record.get("compute_capabilities")
    if not isinstance(ccs, list) or sorted(map(str, ccs)) != sorted(map(str, target.get("compute_capabilities") or [])):
        raise _refuse(record, "compute_capabilities differ from the build target recorded in its details")


def _recomputed_key(
    record: dict[str, Any], details: ArtifactDetails, known_keys: dict[str, str]
) -> tuple[str | None, str]:
    """:func:`_expected_build_key`, where any failure to compute a key from the record's fields (what
    validation did not foresee) refuses the bundle: a record from elsewhere never crashes import."""
    try:
        return _expected_build_key(record, details, known_keys)
    except TrtforgeError:
        raise
    except Exception as exc:
        raise _refuse(record, f"its build key cannot be computed from its fields ({type(exc).__name__})") from None


def _known_build_keys(store: Store, records: list[ArtifactRecord]) -> dict[str, str]:
    """Build keys of the bundle's artifacts and of refit parents already in this catalog."""
    keys = {r.id: r.build_key for r in records}
    lineages = (read_details(r.details, strict=True).lineage for r in records)
    parents = {lineage.parent for lineage in lineages if lineage is not None} - set(keys)
    if parents:
        from sqlalchemy import select

        with store.catalog.reading() as session:
            keys.update(session.execute(select(Artifact.id, Artifact.build_key).where(Artifact.id.in_(parents))).all())
    return keys


# -- import: conflicts with what this catalog holds -------------------------------------------

# What makes two copies of an artifact one artifact: every column a bundle carries except when it
# was built (the exporter's word) and its status (recomputed where it lands). A signature vouches
# for exactly these fields and the plan's bytes, and the verification results it carries attach
# only to a row that has exactly them: an id already here with anything else is a conflict.
IDENTITY_COLUMNS = (
    "name",
    "build_key",
    "recipe_fingerprint",
    "model_sha256",
    "flavor",
    "trt_version",
    "gpu_name",
    "compute_capabilities",
    "plan_sha256",
    "plan_size",
    "io_tensors",
    "profiles",
    "recipe",
    "recipe_path",
    "build_seconds",
    "build_log",
    "details",
)
VERIFICATION_COLUMNS = (
    "artifact_id",
    "gpu_name",
    "compute_capability",
    "runtime_flavor",
    "runtime_version",
    "status",
    "checks",
    "perf",
    "details",
)


@dataclass(frozen=True)
class Conflict:
    """An id of the bundle that this catalog already holds with other contents."""

    kind: str  # "artifact" | "verification"
    id: str
    differs: tuple[str, ...]  # the columns that differ
    plans: tuple[str, str] | None = None  # (here, in the bundle) when the plan differs

    def line(self) -> str:
        if self.plans is not None:
            here, there = self.plans
            return (
                f"artifact {self.id} is already in this catalog with another plan "
                f"({here[:12]} here, {there[:12]} in the bundle)"
            )
        differs = ", ".join(self.differs)
        return f"{self.kind} {self.id} is already in this catalog with other contents ({differs} differ)"

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "id": self.id, "differs": list(self.differs)}
        if self.plans is not None:
            data["plan_sha256_here"], data["plan_sha256_in_bundle"] = self.plans
        return data


def _values(row: Artifact | Verification, columns: tuple[str, ...]) -> dict[str, Any]:
    values = {column: getattr(row, column) for column in columns}
    return {k: v.as_json() if isinstance(v, ArtifactDetails) else v for k, v in values.items()}


def find_conflicts(session: Any, artifacts: list[Artifact], verifications: list[Verification]) -> list[Conflict]:
    """Every artifact or verification of the bundle whose id this catalog holds with other contents."""
    conflicts = []
    for artifact in artifacts:
        existing = session.get(Artifact, artifact.id)
        if existing is None:
            continue
        here, there = _values(existing, IDENTITY_COLUMNS), _values(artifact, IDENTITY_COLUMNS)
        differs = tuple(c for c in IDENTITY_COLUMNS if here[c] != there[c])
        if differs:
            plans = (existing.plan_sha256, artifact.plan_sha256) if "plan_sha256" in differs else None
            conflicts.append(Conflict("artifact", artifact.id, differs, plans))
    for verification in verifications:
        found = session.get(Verification, verification.id)
        if found is None:
            continue
        here, there = _values(found, VERIFICATION_COLUMNS), _values(verification, VERIFICATION_COLUMNS)
        differs = tuple(c for c in VERIFICATION_COLUMNS if here[c] != there[c])
        if differs:
            conflicts.append(Conflict("verification", verification.id, differs))
    return conflicts


def _refuse_conflicts(conflicts: list[Conflict]) -> None:
    if not conflicts:
        return
    raise BundleConflictError(
        f"bundle conflicts with this catalog: {conflicts[0].line()}"
        + (f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else "")
        + "; nothing was imported",
        more=tuple(c.line() for c in conflicts[1:]),
        detail={"conflicts": [c.as_json() for c in conflicts]},
    )


# -- import: check everything, then one transaction -----------------------------------------


def export_from_store(
    store: str | Path | None, catalog: str | None, refs: list[str], destination: Path, *, sign: Path | None = None
) -> ExportReport:
    """`trtforge export`: :func:`export_bundle` from the existing store (never creates one)."""
    opened = require_existing_store(store, catalog=catalog, missing="the store is empty: nothing to export")
    try:
        return export_bundle(opened, refs, destination, sign=sign)
    finally:
        opened.close()


def import_into_store(
    store: str | Path | None,
    catalog: str | None,
    bundle: Path,
    *,
    trust: list[Path] | tuple[Path, ...] = (),
    require_signature: bool = False,
) -> ImportReport:
    """`trtforge import`: :func:`import_bundle`, its request checked before a store is created."""
    _check_import_request(bundle, trust, require_signature)
    opened = open_store(store, catalog=catalog)
    try:
        return import_bundle(opened, bundle, trust=trust, require_signature=require_signature)
    finally:
        opened.close()


def _check_import_request(bundle: Path, trust: list[Path] | tuple[Path, ...], require_signature: bool) -> list[Any]:
    """The trusted public keys; refuses a request that cannot work (bad key file, no bundle file)."""
    if require_signature and not trust:
        raise BadInputError("--require-signature needs at least one --trust PUBKEY")
    trusted = [load_public_key(path) for path in trust]  # a bad key file fails before any work
    if not bundle.is_file():
        raise BundleError(f"bundle {bundle} does not exist or is not a file", hint="check the path")
    return trusted


def _recompute(store: Store, received: Received, records: list[ArtifactRecord]) -> None:
    """Refuse records whose recomputable fields disagree; an unrecomputable key needs a trusted signature."""
    vouched = received.signer is not None and received.signer.trusted
    known_keys = _known_build_keys(store, records)
    for record in records:
        why_not = check_record(record.model_dump(), received.files[f"plans/{record.plan_sha256}.plan"], known_keys)
        if why_not and not vouched:
            raise BundleError(
                f"bundle record artifacts/{record.id}.json: its build key cannot be recomputed here "
                f"({why_not}), and the bundle has no trusted signature",
                hint="import it with --trust PUBKEY of the exporter's signing key (export --sign KEY)",
            )


def _incoming_verifications(records: list[ArtifactRecord], signer: Signer | None) -> list[Verification]:
    """The bundle's results: ``signed`` (they count) under a trusted signature, else ``claimed``."""
    vouched = signer is not None and signer.trusted
    claimed_at_source = {v.id for r in records for v in r.verifications if v.trust == TRUST_CLAIMED}
    verifications = [v for record in records for v in verifications_from_record(record)]
    for verification in verifications:
        counts = vouched and verification.id not in claimed_at_source
        verification.trust = TRUST_SIGNED if counts else TRUST_CLAIMED
        verification.signer = signer.key_id if signer is not None else None
    return verifications


def import_bundle(
    store: Store, bundle: Path, *, trust: list[Path] | tuple[Path, ...] = (), require_signature: bool = False
) -> ImportReport:
    """Verify the whole bundle, then store its plans and add its rows in one transaction.

    ``trust``: public key files; verification results count only from a bundle signed by one
    of them. ``require_signature``: refuse a bundle without such a signature. An id this catalog
    already holds with other contents refuses the whole bundle (BundleConflictError).
    """
    trusted = _check_import_request(bundle, trust, require_signature)
    workdir = store.work_dir()
    try:
        received = receive_bundle(bundle, workdir, store, trusted, require_signature)
        artifacts, verifications = _checked_rows(store, received)
        report = ImportReport(signer=received.signer)
        _record(store, received, report, artifacts, verifications)
        return report
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _checked_rows(store: Store, received: Received) -> tuple[list[Artifact], list[Verification]]:
    """The bundle's rows, from records validated and recomputed, none in conflict with this catalog."""
    records = read_records(received)
    _recompute(store, received, records)
    # This store learns the bundle's rows now, all at once; among themselves they keep the order
    # of the times their exporter gives them, ahead of nothing this store learns later.
    artifacts = [artifact_from_record(record) for record in sorted(records, key=exporter_order)]
    verifications = _incoming_verifications(records, received.signer)
    with store.catalog.reading() as session:  # before any blob is written
        _refuse_conflicts(find_conflicts(session, artifacts, verifications))
    return artifacts, verifications


def _record(
    store: Store, received: Received, report: ImportReport, artifacts: list[Artifact], verifications: list[Verification]
) -> None:
    """Store the plans, then add the rows in one transaction. If the rows do not go in (a conflict
    that arrived meanwhile, a catalog error), the plan blobs this import created go too: a refused
    bundle leaves no blob behind."""
    created: list[str] = []
    try:
        # From storing (or reusing) the plans until their rows commit, gc must not delete them.
        with store.recording_blobs():
            plan_sizes = _store_plans(store, received, artifacts, created)
            report.plans = len(plan_sizes)
            crashpoint("import-blobs-stored")
            _add_rows(store, report, plan_sizes, artifacts, verifications)
    except Exception:
        _remove_unrecorded(store, created)
        raise


def _remove_unrecorded(store: Store, created: list[str]) -> None:
    """Delete the blobs in ``created`` that no catalog row records, as gc would: under its exclusive
    fence, so no writer is between reusing one of them and committing its row. A failure here
    leaves them to gc (an orphan is harmless) rather than hide why the import failed."""
    if not created:
        return
    from sqlalchemy import select

    try:
        with store.collecting_blobs():
            with store.catalog.reading() as session:
                recorded = set(session.scalars(select(Blob.sha256).where(Blob.sha256.in_(created))))
            for sha in sorted(set(created) - recorded):
                store.blobs.delete(sha)
    except (TrtforgeError, SQLAlchemyError, OSError) as exc:
        note(f"could not remove the refused bundle's plans ({exc}); `trtforge gc` will")


def _store_plans(store: Store, received: Received, artifacts: list[Artifact], created: list[str]) -> dict[str, int]:
    """Each plan of the bundle as a blob (reused when present); their sizes by digest. The digests
    of blobs that were not there before are added to ``created``."""
    plan_sizes: dict[str, int] = {}
    for sha in sorted({a.plan_sha256 for a in artifacts}):
        if not store.blobs.exists(sha):
            created.append(sha)
        ref = store.blobs.put_file(received.files[f"plans/{sha}.plan"])
        if ref.sha256 != sha:  # the file changed between the check and the copy
            raise BundleError(f"bundle plan {sha[:12]} changed while importing")
        plan_sizes[sha] = ref.size
    return plan_sizes


def _add_rows(
    store: Store,
    report: ImportReport,
    plan_sizes: dict[str, int],
    artifacts: list[Artifact],
    verifications: list[Verification],
) -> None:
    """One transaction: blobs, new artifacts, new results (a claim here that the bundle's trusted
    signature vouches for becomes signed), statuses recomputed. Conflicts are checked again inside
    it, since another import may have run since the first look."""
    try:
        with store.catalog.writing() as session:
            _refuse_conflicts(find_conflicts(session, artifacts, verifications))
            for sha, size in plan_sizes.items():
                add_blob_row(session, sha, size, "plan")
            session.flush()
            for artifact in artifacts:
                if session.get(Artifact, artifact.id) is not None:
                    report.already_present.append(artifact.id)  # the same record and plan (no conflict)
                    continue
                artifact.status = UNVERIFIED  # the record's word is not taken: recomputed below
                artifact.learned_via = LEARNED_IMPORT
                session.add(artifact)
                report.imported.append(artifact.id)
            session.flush()
            for verification in verifications:  # results from the source store, as claims unless signed
                found = session.get(Verification, verification.id)
                if found is None:
                    session.add(verification)
                    if verification.trust == TRUST_CLAIMED:
                        report.claims += 1
                    else:
                        report.verifications += 1
                elif found.trust == TRUST_CLAIMED and verification.trust == TRUST_SIGNED:
                    found.trust, found.signer = TRUST_SIGNED, verification.signer  # the same result, now vouched for
                    report.verifications += 1
            session.flush()
            for artifact_id in {v.artifact_id for v in verifications if v.trust != TRUST_CLAIMED}:
                row = session.get(Artifact, artifact_id)
                status = Catalog.latest_counted_status(session, artifact_id)
                if row is not None and status is not None and row.status != CORRUPT_STATUS:
                    row.status = status
            session.flush()
            crashpoint("import-uncommitted")
    except (SQLAlchemyError, TypeError, ValueError) as exc:
        # The transaction rolled back: no row of this bundle is in the catalog.
        raise BundleError(f"bundle records do not fit this catalog: {str(exc).splitlines()[0][:200]}") from None
