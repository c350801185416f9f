"""An artifact's engine loaded on this GPU: what the engine says of itself, and its outputs checked
against another artifact's model (the refit check: new weights, no longer the old model's outputs).

Both load the plan the way `verify` does (hash-checked against the catalog, host code only for a
plan verified for it) in a process whose polygraphy is bound to the artifact's flavor. Used by
`trtforge selftest` and the GPU acceptance suite; nothing here runs without a GPU and the runtime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trtforge.rules.compatibility import Envelope
from trtforge.store.catalog import Artifact


@dataclass(frozen=True)
class EngineFacts:
    """What a loaded engine says of itself."""

    refittable: bool
    profiles: int
    device_memory_bytes: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _candidate(store: Any, artifact: Artifact, *, refit: bool) -> tuple[Any, Any]:
    """The artifact's engine in the candidate seat; ``refit``: a weight-stripped plan gets its own
    model's weights first, as `verify` does (else it is loaded as stored)."""
    from trtforge.backend.run import EngineCandidate, gpu_runtime_for
    from trtforge.store.plans import plan_for_loading

    backend, runtime = gpu_runtime_for(
        artifact.flavor,  # type: ignore[arg-type]
        artifact.trt_version,
        envelope=Envelope.from_details(artifact.details),
        compute_capabilities=artifact.compute_capabilities,
    )
    verified = plan_for_loading(store, artifact)
    weights = artifact.details.model_path if refit and verified.weightless else None
    candidate = EngineCandidate(
        verified.data, backend, allow_host_code=verified.allow_host_code, why=verified.why, refit_weights=weights
    )
    return candidate, runtime


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
