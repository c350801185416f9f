"""An artifact's engine loaded on this GPU: the one way `verify`, `selftest` and the GPU acceptance
suite put an artifact's plan (or its per-layer diagnostic engine) in the candidate seat; what the
engine says of itself; and its outputs checked against another artifact's model (the refit check:
new weights, no longer the old model's outputs).

A plan is loaded hash-checked against the catalog, host code only for a plan verified for it, after
the plugin libraries its record says it needs (``ArtifactDetails.plugins_needed``: checked against
their recorded sha256, then loaded, :func:`trtforge.backend.plugins.load_for_runtime`), in a process
whose polygraphy is bound to the artifact's flavor. TensorRT never reads the user's model file
itself: a weight-stripped plan's weights and the per-layer engine's model are private copies of the
recorded bytes. Nothing here runs an engine without a GPU and the runtime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trtforge.rules.compatibility import Envelope
from trtforge.rules.flavors import BackendInfo
from trtforge.rules.onnx_model import copy_for_reading
from trtforge.rules.recipe import Recipe
from trtforge.store import Store, model_work_dir
from trtforge.store.catalog import Artifact

Model = tuple[Path, str]  # a model file and the digest recorded for it


@dataclass(frozen=True)
class EngineFacts:
    """What a loaded engine says of itself."""

    refittable: bool
    profiles: int
    device_memory_bytes: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def plan_candidate(store: Store, artifact: Artifact, backend: BackendInfo, *, weights: Model | None = None) -> Any:
    """The artifact's plan in the candidate seat, loaded after the plugin libraries it needs; a
    weight-stripped plan is refitted first with a private copy of ``weights`` when given (else it is
    loaded as stored)."""
    from trtforge.backend.run import EngineCandidate
    from trtforge.store.plans import plan_for_loading

    verified = plan_for_loading(store, artifact)
    plugins = artifact.details.plugins_needed
    load = {"allow_host_code": verified.allow_host_code, "why": verified.why, "plugins": plugins}
    if weights is None or not verified.weightless:
        return EngineCandidate(verified.data, backend, **load)
    with model_work_dir(store.root) as folder:
        copy, _info = copy_for_reading(*weights, folder, "the weight-stripped plan's refit")
        return EngineCandidate(verified.data, backend, refit_weights=copy, **load)


def diagnostic_candidate(store: Store, artifact: Artifact, backend: BackendInfo, model: Model) -> Any:
    """`verify --per-layer`'s engine in the candidate seat: the artifact's recorded recipe built as its
    build was (the files it read, a private copy of ``model``) with every tensor marked, then loaded
    after the plugin libraries it needs. Another engine than the stored plan: a diagnostic."""
    from trtforge.backend.run import EngineCandidate, layerwise_plan

    files = artifact.details.files_read(artifact.id, "build the per-layer engine")
    with model_work_dir(store.root) as folder:
        copy, _info = copy_for_reading(*model, folder, "the per-layer engine")
        diagnostic = layerwise_plan(backend, Recipe.model_validate(artifact.recipe), copy, files=files, shown=model[0])
    return EngineCandidate(diagnostic.plan, backend, plugins=artifact.details.plugins_needed)


def _candidate(store: Any, artifact: Artifact, *, refit: bool) -> tuple[Any, Any]:
    """The artifact's engine in the candidate seat; ``refit``: a weight-stripped plan gets its own
    model's weights first, as `verify` does (else it is loaded as stored)."""
    from trtforge.backend.plugins import check_needed
    from trtforge.backend.run import gpu_runtime_for

    check_needed(artifact.details.plugins_needed)
    backend, runtime = gpu_runtime_for(
        artifact.flavor,  # type: ignore[arg-type]
        artifact.trt_version,
        envelope=Envelope.from_details(artifact.details),
        compute_capabilities=artifact.compute_capabilities,
    )
    weights = (artifact.details.model_path, artifact.model_sha256) if refit else None
    return plan_candidate(store, artifact, backend, weights=weights), runtime


def _flavor_of(artifact_id: str, store: str) -> str:
    from trtforge.store import require_existing_store

    opened = require_existing_store(store, missing=f"no artifact with id {artifact_id} (the store is empty)")
    try:
        return opened.catalog.get_artifact(artifact_id).flavor
    finally:
        opened.close()


def engine_facts(artifact_id: str, store: str | Path) -> EngineFacts:
    """Load the artifact's plan on this GPU (not refitted, as stored) and ask the engine."""
    from trtforge.backend.loader import run_in_flavor

    return run_in_flavor(_flavor_of(artifact_id, str(store)), _engine_facts, artifact_id, str(store))  # type: ignore[arg-type]


def _engine_facts(artifact_id: str, store: str) -> EngineFacts:
    from trtforge.backend.timing import device_memory
    from trtforge.store import require_existing_store

    opened = require_existing_store(store, missing=f"no artifact with id {artifact_id}")
    try:
        candidate, _runtime = _candidate(opened, opened.catalog.get_artifact(artifact_id), refit=False)
        engine = candidate.engine
        memory = device_memory(engine, 0)["engine_device_memory_bytes"]
        return EngineFacts(candidate.refittable, int(engine.num_optimization_profiles), memory)
    finally:
        opened.close()


def check_against(artifact_id: str, reference_artifact_id: str, store: str | Path) -> str:
    """The status of ``artifact_id``'s engine checked against ``reference_artifact_id``'s model and
    spec (e.g. a refitted child against its parent, the old weights): "passed" or "failed"; never recorded."""
    from trtforge.backend.loader import run_in_flavor

    flavor = _flavor_of(artifact_id, str(store))
    return run_in_flavor(flavor, _check_against, artifact_id, reference_artifact_id, str(store))  # type: ignore[arg-type]


def _check_against(artifact_id: str, reference_artifact_id: str, store: str) -> str:
    from trtforge.stages.verify.checks import check
    from trtforge.stages.verify.subject import subject_from_artifact
    from trtforge.store import require_existing_store

    opened = require_existing_store(store, missing=f"no artifact with id {artifact_id}")
    try:
        reference = subject_from_artifact(opened.catalog.get_artifact(reference_artifact_id))
        candidate, runtime = _candidate(opened, opened.catalog.get_artifact(artifact_id), refit=True)
        return check(reference, candidate, runtime, store=opened, record=False).status
    finally:
        opened.close()
