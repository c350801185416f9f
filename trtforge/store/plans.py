"""Handing out a plan: only bytes that hash to what the catalog recorded, never a `corrupt` one.

Loading a TensorRT plan runs native code (NVIDIA's security guidance), so every path that gives a
plan to a loader or writes it for a user goes through here: the artifact must not be marked
corrupt, and the bytes must hash to the catalog's ``plan_sha256`` and have its size.
"""

from __future__ import annotations

from pathlib import Path

from trtforge.errors import IntegrityError
from trtforge.store import CORRUPT_STATUS, Store
from trtforge.store.blobs import atomic_write
from trtforge.store.catalog import Artifact

__all__ = ["CORRUPT_STATUS"]  # re-exported: callers that load plans check it


def read_verified_plan(store: Store, artifact: Artifact) -> bytes:
    """The artifact's plan bytes, checked against the catalog."""
    if artifact.status == CORRUPT_STATUS:
        raise IntegrityError(
            f"artifact {artifact.id[:12]} is marked corrupt; its plan is not handed out",
            hint="rebuild it (`trtforge build`), then `trtforge gc` removes the corrupt record",
        )
    data = store.blobs.read_verified(artifact.plan_sha256)
    if len(data) != artifact.plan_size:
        raise IntegrityError(f"plan of {artifact.id[:12]} has {len(data)} bytes; the catalog says {artifact.plan_size}")
    return data


def write_verified_plan(store: Store, artifact: Artifact, destination: Path) -> Path:
    """Write the verified plan to ``destination`` atomically (nothing is written if it fails)."""
    data = read_verified_plan(store, artifact)
    with atomic_write(destination) as handle:
        handle.write(data)
    return destination
