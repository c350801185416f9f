"""Handing out a plan: only bytes that hash to what the catalog recorded, never a `corrupt` one.

Loading a TensorRT plan runs native code (NVIDIA's security guidance), so every path that gives a
plan to a loader goes through here: the artifact must not be marked corrupt, and the bytes must
hash to the catalog's ``plan_sha256`` and have its size. Whether the loader may also run the
plan's embedded host code is decided here too, from the verified artifact's record.
(`lookup --output` hands out a hash-checked file and never ranks a corrupt artifact; see ``lookup_stage``.)
"""

from __future__ import annotations

from dataclasses import dataclass

from trtforge.core.errors import IntegrityError
from trtforge.rules.compatibility import Envelope
from trtforge.store import Store
from trtforge.store.catalog import Artifact
from trtforge.store.integrity import CORRUPT_STATUS

__all__ = ["CORRUPT_STATUS"]  # re-exported: callers that load plans check it


@dataclass(frozen=True)
class VerifiedPlan:
    """Plan bytes checked against the catalog, and whether their host code may run."""

    data: bytes
    allow_host_code: bool
    why: str  # said when host code is allowed, naming the plan and the artifact
    weightless: bool  # built with strip_weights: refit it with the model's weights before it runs


def needs_host_code(artifact: Artifact) -> bool:
    """Version-compatible plans embed the lean runtime, i.e. host code the runtime must execute.

    TensorRT refuses to run it unless ``IRuntime.engine_host_code_allowed`` is set (TensorRT
    Developer Guide, "Version Compatibility"; NVIDIA's security guidance: a plan is code).
    """
    return Envelope.from_details(artifact.details).version_compatible


def read_verified_plan(store: Store, artifact: Artifact) -> bytes:
    """The artifact's plan bytes, checked against the catalog."""
    if artifact.corrupt:
        raise IntegrityError(
            f"artifact {artifact.id[:12]} is marked corrupt; its plan is not handed out",
            hint="rebuild it (`trtforge build`), then `trtforge gc` removes the corrupt record",
        )
    data = store.blobs.read_verified(artifact.plan_sha256)
    if len(data) != artifact.plan_size:
        raise IntegrityError(f"plan of {artifact.id[:12]} has {len(data)} bytes; the catalog says {artifact.plan_size}")
    return data


def plan_for_loading(store: Store, artifact: Artifact) -> VerifiedPlan:
    """What a loader gets: verified bytes, and host code allowed only for a version-compatible record."""
    data = read_verified_plan(store, artifact)
    why = (
        f"version-compatible plan {artifact.plan_sha256[:12]} of artifact {artifact.id[:12]} "
        "(its sha256 matches the catalog)"
    )
    return VerifiedPlan(data, needs_host_code(artifact), why, artifact.details.needs_weights)
