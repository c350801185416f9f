"""The refit stage: new weights into an existing refittable engine, saved as a new artifact.

``trtforge refit ARTIFACT --weights new.onnx`` loads the parent's plan (hash-checked, after the
plugin libraries it needs), refits it with TensorRT's ``OnnxParserRefitter`` on the GPU
(:mod:`trtforge.backend.run`), and records the result as a new artifact whose lineage points at its
parent. The weights file is read once: its digest, its inputs and outputs and the copy the refitter
reads are of the same bytes, so the digest recorded is that of the weights the engine took.
Everything but the refit itself runs, and is tested, on the CPU.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trtforge.core.errors import ModelError, NotRefittableError
from trtforge.rules.compatibility import Envelope
from trtforge.rules.digests import model_digest
from trtforge.rules.flavors import BackendInfo
from trtforge.rules.keys import refit_key
from trtforge.rules.onnx_model import BuildModel, private_copy, read_for_build
from trtforge.rules.recipe import refit_mode
from trtforge.rules.record import DETAILS_VERSION, Lineage
from trtforge.store import Store, model_work_dir, require_existing_store
from trtforge.store.catalog import Artifact, Blob

REFITTABLE_MODES = ("refittable", "refit_identical", "strip_weights", "strip_all_weights")


@dataclass
class RefitResult:
    parent_id: str
    artifact_id: str
    plan_sha256: str
    plan_path: str
    weights: str
    weights_sha256: str
    seconds: float
    verification: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def check_refittable(artifact: Artifact) -> str:
    mode = refit_mode(artifact.recipe)
    if mode not in REFITTABLE_MODES:
        raise NotRefittableError(
            f"artifact {artifact.id[:12]} ({artifact.name}) was built with refit mode {mode!r}; "
            "only refittable builds take new weights"
        )
    return mode


def check_weights(artifact: Artifact, weights: Path) -> str:
    """The new weights must be ONNX with the parent's inputs and outputs; returns their sha256."""
    return read_weights(artifact, weights).info.sha256


def read_weights(artifact: Artifact, weights: Path) -> BuildModel:
    """The new weights, read once: their digest, and their inputs and outputs checked against the
    parent's (the same graph); :func:`private_copy` of them is what the refitter reads."""
    if not weights.is_file():
        raise ModelError(f"weights file {weights} not found")
    model = read_for_build(weights, model_digest(weights))
    recorded = artifact.details.model.model_dump()
    for side, tensors in (("inputs", model.info.inputs), ("outputs", model.info.outputs)):
        expected = sorted(t["name"] for t in recorded.get(side, []))
        if expected and sorted(t.name for t in tensors) != expected:
            raise ModelError(
                f"{weights.name}: {side} {sorted(t.name for t in tensors)} differ from the engine's {expected}",
                hint="refit takes the same graph with new weights",
            )
    return model


def record_refit(
    store: Store, parent: Artifact, plan: bytes, weights: Path, weights_sha256: str, seconds: float
) -> Artifact:
    """Store a refitted plan as a new artifact; its build key never collides with a recipe build."""
    with store.recording_blobs():  # from storing (or reusing) the plan until its row commits, gc waits
        return _store_refit(store, parent, plan, weights, weights_sha256, seconds)


def _store_refit(
    store: Store, parent: Artifact, plan: bytes, weights: Path, weights_sha256: str, seconds: float
) -> Artifact:
    blob = store.blobs.put_bytes(plan)
    details = parent.details.model_copy(deep=True, update={"version": DETAILS_VERSION})
    details.model.path = str(weights.resolve())
    details.lineage = Lineage(
        parent=parent.id, operation="refit", weights_sha256=weights_sha256, weights_path=str(weights.resolve())
    )
    child = Artifact(
        id=uuid.uuid4().hex,
        name=parent.name,
        build_key=refit_key(parent.build_key, weights_sha256),
        recipe_fingerprint=parent.recipe_fingerprint,
        model_sha256=weights_sha256,
        flavor=parent.flavor,
        trt_version=parent.trt_version,
        gpu_name=parent.gpu_name,
        compute_capabilities=list(parent.compute_capabilities),
        plan_sha256=blob.sha256,
        plan_size=blob.size,
        io_tensors=list(parent.io_tensors),
        profiles=list(parent.profiles),
        recipe=dict(parent.recipe),
        recipe_path=parent.recipe_path,
        build_seconds=round(seconds, 4),
        build_log=[],
        details=details,
    )
    store.catalog.add_artifact(child, Blob(sha256=blob.sha256, size=blob.size, kind="plan"))
    return child


def _refitted(opened: Store, parent: Artifact, backend: BackendInfo, model: BuildModel) -> bytes:
    """The parent's plan (hash-checked) refitted on the GPU with a private copy of the weights' bytes,
    after the plugin libraries the plan needs."""
    from trtforge.backend.run import refit_plan
    from trtforge.store.plans import plan_for_loading

    verified = plan_for_loading(opened, parent)
    with model_work_dir(opened.root) as folder:
        copy = private_copy(model, folder, "the refit")  # ModelError if the file changed since it was read
        return refit_plan(
            backend,
            verified.data,
            copy,
            allow_host_code=verified.allow_host_code,
            why=verified.why,
            plugins=parent.details.plugins_needed,
        )


def refit(
    ref: str,
    weights: Path,
    *,
    store: str | Path | None = None,
    catalog: str | None = None,
    verify: bool = False,
) -> RefitResult:
    """`trtforge refit`: input checks on the CPU, the refit on the GPU, then an optional verify."""
    opened = require_existing_store(store, catalog=catalog, missing=f"no artifact with id {ref} (the store is empty)")
    try:
        parent = opened.catalog.get_artifact(ref)
        check_refittable(parent)
        model = read_weights(parent, weights)
        weights_sha256 = model.info.sha256
        from trtforge.backend.plugins import check_needed
        from trtforge.backend.run import gpu_runtime_for

        check_needed(parent.details.plugins_needed)  # a library gone or changed: refused before anything runs
        backend, _runtime = gpu_runtime_for(
            parent.flavor,  # type: ignore[arg-type]
            parent.trt_version,
            purpose="refit",
            envelope=Envelope.from_details(parent.details),
            compute_capabilities=parent.compute_capabilities,
        )
        started = time.perf_counter()
        plan = _refitted(opened, parent, backend, model)
        child = record_refit(opened, parent, plan, weights, weights_sha256, time.perf_counter() - started)
        result = RefitResult(
            parent_id=parent.id,
            artifact_id=child.id,
            plan_sha256=child.plan_sha256,
            plan_path=opened.blobs.location(child.plan_sha256),
            weights=str(weights),
            weights_sha256=weights_sha256,
            seconds=child.build_seconds,
        )
    finally:
        opened.close()
    if verify:
        from trtforge.stages.verify import verify as verify_artifact

        result.verification = verify_artifact(result.artifact_id, store=store, catalog=catalog).as_json()
    return result
