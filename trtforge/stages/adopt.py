"""Adopting engines built elsewhere (trtexec, another pipeline) into the catalog.

An adopted plan gets a catalog row like a built one, marked ``details["origin"] = "adopted"``,
and follows the same lookup rules. Its target comes from the plan header where
:mod:`trtforge.core.plan_header` can read it (TensorRT-RTX), otherwise from the caller; a header that
contradicts the caller is an error. Adopting the same plan for the same target twice is a no-op.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.core.errors import BadInputError, ModelError, TargetError
from trtforge.core.plan_header import plan_problem, read_plan_header
from trtforge.rules import digests
from trtforge.rules.compatibility import HARDWARE_LEVELS
from trtforge.rules.flavors import parse_version, same_release
from trtforge.rules.keys import ADOPTED_FINGERPRINT, adopted_key, sha256_file
from trtforge.rules.recipe import name_problem
from trtforge.rules.record import Adopted, ArtifactDetails
from trtforge.rules.target import parse_cuda, parse_platform, target_gpu
from trtforge.store import Store, open_store
from trtforge.store.catalog import Artifact, Blob

if TYPE_CHECKING:
    from trtforge.resolution.targets import TargetOptions
    from trtforge.rules.onnx_model import ModelInfo

_HEADER_HINT = "the plan header is what the runtime checks; leave the option out or correct it"


@dataclass
class AdoptResult:
    artifact_id: str
    status: str  # "adopted" | "present"
    name: str
    flavor: str
    trt_version: str
    compute_capabilities: list[str]
    plan_sha256: str
    target_source: str  # "plan header" | "given"

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class AdoptRequest:
    plan: Path
    name: str
    model: Path
    flavor: str | None = None
    trt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    hardware: str = "none"
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    os: str | None = None  # the platform it was built on; unknown when not given
    arch: str | None = None
    cuda: str | None = None  # the CUDA variant of the TensorRT wheel that built it; unknown when not given
    target: TargetOptions | None = None  # the command line's target options: fill the fields above


def _with_target_options(request: AdoptRequest) -> AdoptRequest:
    """The command line's target (one: the flags, or one --target SPEC), checked as every command
    checks it, in the request's fields (the plan header may still supply flavor and version)."""
    if request.target is None:
        return request
    given = request.target.single()
    return replace(
        request,
        flavor=given.flavor,
        trt_version=given.trt,
        gpu_name=given.gpu,
        compute_capability=given.cc,
        os=given.os,
        arch=given.arch,
        cuda=given.cuda,
        target=None,
    )


def _resolve_target(request: AdoptRequest) -> tuple[str, str, str]:
    """(flavor, version, where it came from), header first, refusing contradictions."""
    header = read_plan_header(request.plan)
    if header is not None:
        if request.flavor is not None and request.flavor != header.flavor:
            raise TargetError(
                f"the plan header says {header.flavor}, but --flavor says {request.flavor}", hint=_HEADER_HINT
            )
        if request.trt_version is not None and not same_release(header.version, request.trt_version):
            raise TargetError(
                f"the plan header says version {header.version}, but --trt says {request.trt_version}",
                hint=_HEADER_HINT,
            )
        return header.flavor, request.trt_version or header.version, "plan header"
    if request.trt_version is None:
        raise TargetError(
            f"cannot read the runtime version from {request.plan.name}'s header; give it with --trt",
            hint="e.g. --trt 10.13.3 --gpu 'NVIDIA A10G' --cc 8.6 [--flavor tensorrt]",
        )
    parse_version(request.trt_version)
    flavor = request.flavor or "tensorrt"
    if flavor == "tensorrt" and request.compute_capability is None:
        raise TargetError("a TensorRT plan runs on the compute capability it was built on; give it with --cc")
    return flavor, request.trt_version, "given"


def adopt_plan(request: AdoptRequest, store: str | Path | None = None, *, catalog: str | None = None) -> AdoptResult:
    """Register ``request.plan`` as an artifact of ``request.name`` built from ``request.model``.

    Everything is checked before the store is opened, so bad input never creates one.
    """
    request = _with_target_options(request)
    problem = name_problem(request.name)
    if problem is not None:
        raise BadInputError(f"name {request.name[:60]!r} {problem}")
    if not request.plan.is_file():
        raise BadInputError(f"plan {request.plan} does not exist or is not a file")
    problem = plan_problem(request.plan, request.flavor)
    if problem is not None:
        raise BadInputError(
            f"plan {request.plan} {problem}; nothing was adopted",
            hint="adopt takes a serialized engine (e.g. trtexec --saveEngine); an ONNX model is built with "
            "`trtforge build RECIPE`",
        )
    if not request.model.is_file():
        raise ModelError(f"model {request.model} does not exist or is not a file")
    if request.hardware not in HARDWARE_LEVELS:
        raise BadInputError(f"hardware level {request.hardware!r} is not one of {', '.join(HARDWARE_LEVELS)}")
    if request.flavor is not None and request.flavor not in ("tensorrt", "tensorrt_rtx"):
        raise TargetError(f"flavor {request.flavor[:40]!r} is not one of tensorrt, tensorrt_rtx")
    # --gpu through the GPU table (L4 -> "NVIDIA L4", its compute capability; a --cc that disagrees is refused)
    gpu_name, capability = target_gpu(request.gpu_name, request.compute_capability)
    request = replace(request, gpu_name=gpu_name, compute_capability=capability)
    flavor, version, source = _resolve_target(request)
    ccs = [capability] if capability is not None else []
    model_digest = digests.model_digest(request.model)  # composite with external data
    from trtforge.rules.onnx_model import read_model

    model = read_model(request.model, model_digest)
    plan_digest = sha256_file(request.plan)
    compatibility = {
        "hardware": request.hardware,
        "version_compatible": request.version_compatible,
        "exclude_lean_runtime": request.exclude_lean_runtime,
    }
    target: dict[str, Any] = {
        "flavor": flavor,
        "trt_version": version,
        "gpu_name": request.gpu_name,
        "compute_capabilities": ccs,
    }
    os_name, arch = parse_platform(request.os, request.arch)
    # Only when given, so re-adopting a plan adopted before platforms were recorded stays a no-op.
    given = (("os", os_name), ("arch", arch), ("cuda", parse_cuda(request.cuda)))
    target.update({k: v for k, v in given if v is not None})
    key = adopted_key(plan_digest, model_digest, target, compatibility)
    result = AdoptResult("", "adopted", request.name, flavor, version, ccs, plan_digest, source)
    opened = open_store(store, catalog=catalog)
    try:
        _record(opened, request, result, key, target, compatibility, model_digest, model)
    finally:
        opened.close()
    return result


def _record(
    store: Store,
    request: AdoptRequest,
    result: AdoptResult,
    key: str,
    target: dict[str, Any],
    compatibility: dict[str, Any],
    model_digest: str,
    model: ModelInfo,
) -> None:
    existing = store.catalog.find_by_build_key(key)
    if existing is not None and existing.name == request.name and store.blobs.exists(existing.plan_sha256):
        result.artifact_id, result.status = existing.id, "present"
        return

    with store.recording_blobs():  # from storing (or reusing) the plan until its row commits, gc waits
        _store_adopted(store, request, result, key, target, compatibility, model_digest, model)


def _store_adopted(
    store: Store,
    request: AdoptRequest,
    result: AdoptResult,
    key: str,
    target: dict[str, Any],
    compatibility: dict[str, Any],
    model_digest: str,
    model: ModelInfo,
) -> None:
    blob = store.blobs.put_file(request.plan)
    if blob.sha256 != result.plan_sha256:
        raise BadInputError(f"plan {request.plan} changed while it was being adopted")
    artifact = Artifact(
        id=uuid.uuid4().hex,
        name=request.name,
        build_key=key,
        recipe_fingerprint=ADOPTED_FINGERPRINT,
        model_sha256=model_digest,
        flavor=result.flavor,
        trt_version=result.trt_version,
        gpu_name=request.gpu_name,
        compute_capabilities=result.compute_capabilities,
        plan_sha256=blob.sha256,
        plan_size=blob.size,
        io_tensors=[],
        profiles=[],
        recipe={},
        recipe_path=None,
        build_seconds=0.0,
        build_log=[],
        details=ArtifactDetails(
            origin="adopted",
            adopted=Adopted(plan_path=str(request.plan.absolute()), target_source=result.target_source),
            target=target,
            compatibility=compatibility,
            model=model.record(),
        ),
    )
    store.catalog.add_artifact(artifact, Blob(sha256=blob.sha256, size=blob.size, kind="plan"))
    result.artifact_id = artifact.id
