"""Catalog rows describing artifacts built elsewhere (TensorRT on GPUs this machine lacks).

Their plan blobs hold placeholder bytes: lookup reads the rows, never runs the plans.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from trtforge.store import Store
from trtforge.store.catalog import Artifact, Blob, Verification

BASE_TIME = datetime(2026, 1, 1, tzinfo=timezone.utc)


def placeholder_artifact(**fields: Any) -> Artifact:
    """An artifact row for tests: ``fields`` as given, every other column a placeholder.

    A row given a ``created_at`` (a history a test writes) is learned at that time too, unless the
    test says otherwise; without one, the catalog stamps when it learns of the row, as for any insert.
    """
    values: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "name": "n",
        "build_key": uuid.uuid4().hex * 2,
        "recipe_fingerprint": "f" * 64,
        "model_sha256": "m" * 64,
        "flavor": "tensorrt_rtx",
        "trt_version": "1.7",
        "gpu_name": None,
        "compute_capabilities": [],
        "plan_size": 1,
        "io_tensors": [],
        "profiles": [],
        "recipe": {},
        "recipe_path": None,
        "build_seconds": 0.0,
        "build_log": [],
        "details": {},
    }
    values.update(fields)
    if "created_at" in fields:
        values.setdefault("learned_at", fields["created_at"])
    return Artifact(**values)


def add_row(
    store: Store,
    *,
    name: str = "detector",
    flavor: str = "tensorrt",
    trt_version: str = "10.13.3",
    gpu_name: str | None = "NVIDIA A10G",
    ccs: tuple[str, ...] = ("8.6",),
    compatibility: dict[str, Any] | None = None,
    verified_on: dict[str, str] | None = None,  # GPU model -> status, recorded as verification rows
    age_minutes: int = 0,
    model_sha256: str = "a" * 64,
    recipe_fingerprint: str = "f" * 64,
    origin: str | None = None,
    weightless: bool = False,
    recipe: dict[str, Any] | None = None,
) -> str:
    """Insert one artifact row plus a placeholder plan blob; returns the artifact id.

    ``recipe`` is the recorded recipe (give a real build's to make a row of its model); without one
    a stand-in whose model-defining part is ``recipe_fingerprint`` (an adopted plan records none).
    """
    artifact_id = uuid.uuid4().hex
    blob = store.blobs.put_bytes(f"placeholder plan {artifact_id}".encode())
    details: dict[str, Any] = {}
    if compatibility is not None:
        details["compatibility"] = compatibility
    if origin is not None:
        details["origin"] = origin
    if weightless:  # as a build of a recipe with refit: strip_weights records it
        details.update(refit="strip_weights", weightless=True)
    store.catalog.add_artifact(
        placeholder_artifact(
            id=artifact_id,
            name=name,
            model_sha256=model_sha256,
            recipe_fingerprint=recipe_fingerprint,
            recipe=recipe if recipe is not None else {} if origin == "adopted" else {"stand_in": recipe_fingerprint},
            flavor=flavor,
            trt_version=trt_version,
            gpu_name=gpu_name,
            compute_capabilities=list(ccs),
            plan_sha256=blob.sha256,
            plan_size=blob.size,
            details=details,
            created_at=BASE_TIME + timedelta(minutes=1000 - age_minutes),
        ),
        Blob(sha256=blob.sha256, size=blob.size, kind="plan"),
    )
    for gpu, status in (verified_on or {}).items():
        cc = ccs[0] if ccs else None
        add_verification_row(store, artifact_id, gpu, status, cc=cc, flavor=flavor, version=trt_version)
    return artifact_id


def add_verification_row(
    store: Store,
    artifact_id: str,
    gpu: str,
    status: str = "passed",
    *,
    cc: str | None = "8.6",
    flavor: str = "tensorrt",
    version: str = "10.13.3",
    trust: str | None = None,
) -> None:
    """A verification row as `trtforge verify` records it on a GPU machine (``trust``: how an
    imported one was vouched for; None keeps the column's default, a result run here)."""
    extra: dict[str, Any] = {}
    if trust is not None:
        extra = {"trust": trust, "signer": "k" * 16 if trust == "signed" else None}
    store.catalog.add_verification(
        Verification(
            id=uuid.uuid4().hex,
            artifact_id=artifact_id,
            gpu_name=gpu,
            compute_capability=cc,
            runtime_flavor=flavor,
            runtime_version=version,
            status=status,
            checks=[],
            perf=[],
            details={},
            **extra,
        )
    )
