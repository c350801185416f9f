"""Rebuild an artifact from what the catalog recorded and say whether the plan bytes match.

The rebuild uses the recorded recipe, the model file (which must still hash to the recorded
digest: the builder reads a private copy of those very bytes, as a build does), the files the build
read, the same backend version, and the timing cache the original build started from. It records
nothing in the store. TensorRT does not promise bit-identical plans (tactic timing on a
GPU varies between runs), so a difference is reported, not hidden: which bytes differ, and whether
that is a known benign difference (:mod:`trtforge.core.plan_diff`; e.g. TensorRT-RTX lists a plan's
outputs in an order that changes from build to build).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trtforge.core.errors import BackendUnavailableError, BadInputError, CheckFailedError, ModelError, NotFoundError
from trtforge.core.plan_diff import PlanDifference, compare_plans
from trtforge.resolution.resolve import artifact_for, check_build_here, looks_like_recipe, resolve
from trtforge.rules.digests import model_digest
from trtforge.rules.flavors import BackendInfo, find_backend
from trtforge.rules.keys import recorded_build_key
from trtforge.rules.onnx_model import copy_for_reading
from trtforge.rules.recipe import Recipe
from trtforge.rules.target import build_target_for
from trtforge.store import Store, model_work_dir
from trtforge.store.catalog import Artifact
from trtforge.store.handle import StoreHandle


@dataclass
class ReproduceResult:
    artifact_id: str
    name: str
    identical: bool
    recorded_sha256: str
    rebuilt_sha256: str
    recorded_size: int
    rebuilt_size: int
    timing_cache: str | None
    seconds: float
    build_key: str
    record_key_matches: bool  # the recorded recipe, model digest and target still give the row's key
    difference: PlanDifference | None = None  # what differs, when the bytes do

    def __bool__(self) -> bool:
        return self.identical

    @property
    def benign(self) -> bool:
        """Identical, or differing only in known benign ways (the same engine for name-based code)."""
        return self.identical or (self.difference is not None and self.difference.benign)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["difference"] = self.difference.as_json() if self.difference is not None else None
        data["benign"] = self.benign
        return data

    def failure(self) -> CheckFailedError | None:
        """Why this is exit 1 (the rebuilt bytes differ), for `--json`; None when identical."""
        if self.identical:
            return None
        what = f": {self.difference.describe()}" if self.difference is not None else ""
        return CheckFailedError(
            f"the rebuilt plan of {self.name} ({self.artifact_id[:12]}) differs from the recorded one{what}"
        )


def reproduce(ref: str, store: str | Path | None = None, *, catalog: str | None = None) -> ReproduceResult:
    """Rebuild an artifact (an id, or a recipe: the artifact its build key names) and compare bytes."""
    handle = StoreHandle(store, catalog)
    try:
        opened = handle.existing()
        if looks_like_recipe(ref):
            artifact = artifact_for(resolve(ref, digests=handle.digests()), opened)
        elif opened is None:
            raise NotFoundError(f"no artifact with id {ref} (the store is empty)")
        else:
            artifact = opened.catalog.get_artifact(ref)
        assert opened is not None  # an artifact was found in it
        if artifact.details.origin == "adopted" or not artifact.recipe:
            raise BadInputError(
                f"artifact {artifact.id[:12]} was adopted (a plan built elsewhere): it has no recipe to rebuild from",
                hint="only artifacts trtforge built can be reproduced; build a recipe for the model instead",
            )
        recipe = Recipe.model_validate(artifact.recipe)
        backend = find_backend(artifact.flavor)
        if backend.version != artifact.trt_version:
            raise BackendUnavailableError(
                f"artifact {artifact.id[:12]} was built with {artifact.flavor} {artifact.trt_version}; "
                f"installed is {backend.label}",
                hint=f"install {artifact.flavor}=={artifact.trt_version} to reproduce it",
            )
        _check_same_build_machine(artifact.id, artifact.details.target, backend, recipe)
        check_build_here(recipe, backend)  # e.g. a refit mode on a machine without a GPU: exit 2, not a failed build
        model_path = artifact.details.model_path
        if not model_path.is_file():
            raise ModelError(f"model {model_path} of artifact {artifact.id[:12]} is gone; cannot reproduce")
        if model_digest(model_path) != artifact.model_sha256:
            raise ModelError(
                f"model {model_path} changed since artifact {artifact.id[:12]} was built "
                f"(recorded sha256 {artifact.model_sha256[:12]})"
            )
        files = artifact.details.files_read(artifact.id, "reproduce")
        cache_record = artifact.details.timing_cache or {}
        cache_sha = cache_record.get("started_from")
        cache_data = opened.blobs.read_verified(cache_sha) if cache_sha else None
        use_cache = bool(cache_record) and "skipped" not in cache_record
        from trtforge.backend.pool import build_once
        from trtforge.backend.worker import BuildJob

        started = time.perf_counter()
        with model_work_dir(opened.root) as folder:  # the builder reads a copy of the recorded bytes
            copy, _info = copy_for_reading(model_path, artifact.model_sha256, folder, "the reproduction")
            cache = {"use_timing_cache": use_cache, "timing_cache": cache_data}
            job = BuildJob(backend, recipe, copy, **cache, files=files, shown=model_path)
            output = build_once(job).unwrap()  # in a worker, as every build: a TensorRT crash is an error here
        view = output.plan_view
        rebuilt = hashlib.sha256(view).hexdigest()
        difference = None if rebuilt == artifact.plan_sha256 else _difference(opened, artifact, view)
        return ReproduceResult(
            artifact_id=artifact.id,
            name=artifact.name,
            identical=rebuilt == artifact.plan_sha256,
            recorded_sha256=artifact.plan_sha256,
            rebuilt_sha256=rebuilt,
            recorded_size=artifact.plan_size,
            rebuilt_size=view.nbytes,
            timing_cache=cache_sha,
            seconds=round(time.perf_counter() - started, 4),
            build_key=artifact.build_key,
            record_key_matches=recorded_key(artifact) == artifact.build_key,
            difference=difference,
        )
    finally:
        handle.close()


def _difference(opened: Store, artifact: Artifact, rebuilt: memoryview) -> PlanDifference | None:
    """What differs between the stored plan and the rebuilt one (read only when they differ)."""
    recorded = opened.blobs.read_verified(artifact.plan_sha256)
    names = [str(tensor.get("name")) for tensor in artifact.io_tensors or [] if isinstance(tensor, dict)]
    return compare_plans(recorded, rebuilt.tobytes(), names)


def recorded_key(artifact: Artifact) -> str | None:
    """The build key the artifact's own record (recipe, model digest, target) computes to, if it can.

    A record whose fields no longer give its key was not built from what it says (or was
    written by another key schema); reproduce reports it instead of trusting the row.
    """
    target = artifact.details.target
    if target is None:
        return None
    try:
        return recorded_build_key(artifact.recipe, artifact.model_sha256, target)
    except (KeyError, TypeError, ValueError):
        return None


def _check_same_build_machine(artifact_id: str, recorded: Any, backend: BackendInfo, recipe: Recipe) -> None:
    """Every recorded build-target field (flavor, version, GPU, compute capabilities, platform,
    CUDA variant, build environment) must be this machine's, or the rebuild is another build.

    Rows from before key schema 2 record fewer fields; only the recorded ones are compared.
    """
    recorded = recorded if isinstance(recorded, dict) else {}
    here = build_target_for(backend, recipe.compatibility.compute_capabilities).key_fields()
    for field, built in recorded.items():
        if field in here and built is not None and built != here[field]:
            label = _LABELS.get(field, field)
            raise BackendUnavailableError(
                f"artifact {artifact_id[:12]} was built with {label} {built}; this machine has {here[field]}",
                hint="reproduce it where (and as) it was built: the build key names the build target",
            )


_LABELS = {
    "os": "OS",
    "arch": "CPU architecture",
    "cuda": "CUDA variant",
    "env": "build environment",
    "gpu_name": "GPU",
    "compute_capabilities": "compute capabilities",
}
