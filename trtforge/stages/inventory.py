"""What is in the store: `list`, `show`, `pin` and `unpin`, each one call over the catalog.

Reading commands never create a store: an empty store lists nothing and shows nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.rules.compatibility import Envelope
from trtforge.store import open_existing_store, require_existing_store

if TYPE_CHECKING:
    from trtforge.rules.record import ArtifactDetails


def list_artifacts(store: str | Path | None, catalog: str | None, *, name: str | None = None) -> list[dict[str, Any]]:
    """Summaries of the artifacts (of one recipe name, or all), newest first; [] for an empty store."""
    opened = open_existing_store(store, catalog=catalog)
    if opened is None:
        return []
    try:
        return [a.summary() for a in opened.catalog.list_artifacts(name)]
    finally:
        opened.close()


def show_artifact(store: str | Path | None, catalog: str | None, ref: str) -> dict[str, Any]:
    """Everything recorded about one artifact: its record, plan path, statuses and verifications."""
    opened = require_existing_store(store, catalog=catalog, missing=f"no artifact with id {ref} (the store is empty)")
    try:
        artifact = opened.catalog.get_artifact(ref)
        record = artifact.record()
        _runtime_versions_by_the_rule(record, artifact.details)
        record["plan_path"] = opened.blobs.location(record["plan_sha256"])
        record["statuses"] = opened.catalog.statuses(record["artifact_id"])
        record["verifications"] = [v.record() for v in opened.catalog.verifications(record["artifact_id"])]
        return record
    finally:
        opened.close()


def _runtime_versions_by_the_rule(record: dict[str, Any], details: ArtifactDetails) -> None:
    """Which runtime releases load the plan, as lookup decides it today (also for rows whose record
    was written by an older trtforge, e.g. TensorRT-RTX rows that said "same major, >= build")."""
    compatibility = record["details"].get("compatibility")
    if compatibility:
        compatibility["runtime_versions"] = Envelope.from_details(details).runtime_versions(record["flavor"])


@dataclass(frozen=True)
class PinChange:
    artifact_id: str
    name: str
    pinned: bool
    changed: bool  # whether it was otherwise before

    def as_json(self) -> dict[str, Any]:
        return {"artifact_id": self.artifact_id, "name": self.name, "pinned": self.pinned, "changed": self.changed}


def set_pinned(store: str | Path | None, catalog: str | None, ref: str, pinned: bool) -> PinChange:
    """Pin (gc never removes it) or unpin an artifact."""
    opened = require_existing_store(store, catalog=catalog, missing=f"no artifact with id {ref} (the store is empty)")
    try:
        found, changed = opened.catalog.set_pinned(ref, pinned)
    finally:
        opened.close()
    return PinChange(found.id, found.name, pinned, changed)
