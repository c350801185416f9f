"""Handing out a plan: only bytes that hash to what the catalog recorded, never a `corrupt` one.

Loading a TensorRT plan runs native code (NVIDIA's security guidance), so every path that gives a
plan to a loader goes through here: the artifact must not be marked corrupt, and the bytes must
hash to the catalog's ``plan_sha256`` and have its size. (`lookup --output` hard-links the blob
and hash-checks the link, and never ranks a corrupt artifact; see ``lookup_stage``.)
"""

from __future__ import annotations

from trtforge.errors import IntegrityError
from trtforge.store import CORRUPT_STATUS, Store
from trtforge.store.catalog import Artifact

__all__ = ["CORRUPT_STATUS"]  # re-exported: callers that load plans check it


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
