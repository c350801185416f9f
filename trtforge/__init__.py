"""trtforge: TensorRT engine recipes, builds, catalog and lookup.

The public Python API. Importing ``trtforge`` imports nothing heavy: each function imports the
stage it needs when called, and lookup never imports tensorrt. Every error a user can cause is
a :class:`trtforge.TrtforgeError` subclass, re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from trtforge.core.errors import (
    BackendUnavailableError,
    BadInputError,
    BlobsUnavailableError,
    BlobsUnreachableError,
    BuildError,
    BuildInterruptedError,
    BuildTimeoutError,
    BundleConflictError,
    BundleError,
    CatalogError,
    CatalogUnavailableError,
    CatalogUnreachableError,
    CheckFailedError,
    DeployError,
    DeriveError,
    IntegrityError,
    MissingExtraError,
    ModelError,
    NoCompatibleEngineError,
    NotFoundError,
    NotRefittableError,
    RecipeError,
    RefitError,
    SelftestFailure,
    SignatureError,
    SigningKeyError,
    StoppedBySignalError,
    StoreError,
    StoreReadOnlyError,
    StoreWriteError,
    TargetError,
    TrtforgeError,
    UnsatisfiableDenyError,
    UnsupportedOptionError,
    VerificationUnavailableError,
    WorkerCrashedError,
)

if TYPE_CHECKING:
    from trtforge.rules.target import RuntimeTarget
    from trtforge.stages.build import BuildResult, Executor
    from trtforge.stages.deploy.epcontext import EpContextResult
    from trtforge.stages.deploy.triton import TritonResult
    from trtforge.stages.lookup import LookupResult

__all__ = [
    "BackendUnavailableError",
    "BadInputError",
    "BlobsUnavailableError",
    "BlobsUnreachableError",
    "BuildError",
    "BuildInterruptedError",
    "BuildTimeoutError",
    "BundleConflictError",
    "BundleError",
    "CatalogError",
    "CatalogUnavailableError",
    "CatalogUnreachableError",
    "CheckFailedError",
    "DeployError",
    "DeriveError",
    "IntegrityError",
    "MissingExtraError",
    "ModelError",
    "NoCompatibleEngineError",
    "NotFoundError",
    "NotRefittableError",
    "RecipeError",
    "RefitError",
    "SelftestFailure",
    "SignatureError",
    "SigningKeyError",
    "StoppedBySignalError",
    "StoreError",
    "StoreReadOnlyError",
    "StoreWriteError",
    "TargetError",
    "TrtforgeError",
    "UnsatisfiableDenyError",
    "UnsupportedOptionError",
    "VerificationUnavailableError",
    "WorkerCrashedError",
    "build",
    "deploy_epcontext",
    "deploy_triton",
    "lookup",
    "pin",
    "runtime_target",
    "unpin",
]


def runtime_target(
    gpu: str | None = None,
    cc: str | None = None,
    trt: str | None = None,
    flavor: str | None = None,
    *,
    os: str | None = None,
    arch: str | None = None,
    cuda: str | None = None,
) -> RuntimeTarget:
    """An explicit target when any of ``gpu``, ``cc``, ``trt`` is given, else this machine's.

    ``gpu`` as nvidia-smi names it or for short (``"L4"``, ``"NVIDIA L4"``) gives the compute
    capability of a GPU trtforge knows (a ``cc`` that disagrees is refused; another GPU needs
    ``cc``); without ``trt`` the installed runtime's release; without ``flavor`` the one whose
    installed runtime has the ``trt`` release, else ``tensorrt``; ``cuda`` the runtime wheel's CUDA
    variant (cu12/cu13). Checked as the command line's target options are (docs/fleet.md).
    (Not called ``target``: that is the :mod:`trtforge.rules.target` module.)
    """
    from trtforge.rules.target import TargetRequest

    return TargetRequest(gpu=gpu, cc=cc, trt=trt, flavor=flavor, os=os, arch=arch, cuda=cuda).checked().resolve()


def build(
    recipes: str | Path | Sequence[str | Path],
    *,
    store: str | Path | None = None,
    catalog: str | None = None,
    jobs: int | None = None,
    timeout: float | None = None,
    force: bool = False,
    fail_fast: bool = False,
    on_done: Callable[[BuildResult], None] | None = None,
    targets: Sequence[RuntimeTarget] = (),
    fleet: str | Path | None = None,
    executor: Literal["local", "ray"] = "local",
    ray_address: str | None = None,
    ray_pin_gpu: bool = False,
) -> list[BuildResult]:
    """Build recipes (files or glob patterns; an ONNX file with defaults), as `trtforge build` does.

    Every build runs in a worker process: a crash in TensorRT, a build running past ``timeout``
    seconds or an OOM kill is that recipe's failed result (``error_kind`` ``crashed`` or
    ``timed_out``), and the others go on. Up to ``jobs`` builds run at once (None: one per core,
    as far as memory gives each 2 GiB), then each recipe in a build process of its own (the calling
    process answers hits and hands out the rest: docs/workers.md); the results keep the recipes'
    order, and ``on_done`` hears each one as it is ready. A recipe's bad input is its result too
    (``error_kind`` ``bad_input``); a ``jobs`` below 1 or a ``timeout`` that is not positive raises
    ``trtforge.BadInputError``.

    ``targets`` (from :func:`runtime_target`) or ``fleet`` (a fleet manifest's path: every entry)
    build each recipe for each target, as ``--target``/``--fleet`` do. ``executor="ray"`` builds
    the misses as Ray tasks (`build --executor ray`, docs/ray.md): on the cluster at
    ``ray_address`` (else ``$RAY_ADDRESS``, else a local Ray instance; a ``ray.init()`` already made
    is used as it is), TensorRT-RTX tasks on a node of the target's GPU type with ``ray_pin_gpu``.
    """
    from trtforge.resolution.batch import expand_recipes
    from trtforge.stages.build import BuildStage, explicit_targets

    given = [recipes] if isinstance(recipes, (str, Path)) else list(recipes)
    chosen = list(targets)
    if fleet is not None:
        from trtforge.resolution.targets import TargetOptions

        chosen += explicit_targets(TargetOptions(fleet=Path(fleet)))
    stage = BuildStage(
        store,
        catalog=catalog,
        force=force,
        jobs=jobs,
        timeout=timeout,
        targets=chosen,
        executor=_executor(executor, ray_address, ray_pin_gpu),
    )
    try:
        return stage.build_all(expand_recipes([str(r) for r in given]), fail_fast=fail_fast, on_done=on_done)
    finally:
        stage.close()


def _executor(name: str, address: str | None, pin_gpu: bool) -> Executor:
    if name == "local":
        if address is not None or pin_gpu:
            raise BadInputError("ray_address and ray_pin_gpu go with executor='ray'")
        from trtforge.stages.build_processes import LocalProcesses

        return LocalProcesses()
    if name != "ray":
        raise BadInputError(f"executor {name!r} is not one of: local, ray")
    from trtforge.stages.ray_builds import RayExecutor, RaySettings

    return RayExecutor(RaySettings(address=address, pin_gpu=pin_gpu))


def lookup(
    name: str | None = None,
    target: RuntimeTarget | None = None,
    *,
    model_sha256: str | None = None,
    store: str | Path | None = None,
    catalog: str | None = None,
    verified_only: bool = False,
    output: str | Path | None = None,
    allow_weightless: bool = False,
    any_model: bool = False,
) -> LookupResult:
    """The best engine for ``target`` (this machine when None) as a hash-checked local plan path.

    A name means its newest model (``any_model`` lifts that; ``model_sha256`` picks one);
    weight-stripped plans only with ``allow_weightless``. Without ``output`` the path is inside
    the store: `trtforge pin` the artifact (or pass ``output`` for a private copy) so that
    `trtforge gc` cannot remove it under a running service.

    Raises ``trtforge.NotFoundError`` for an unknown name and ``trtforge.NoCompatibleEngineError``
    when no artifact can run on the target (every error is a ``trtforge.TrtforgeError``).
    """
    from trtforge.stages.lookup import find_engine

    return find_engine(
        name,
        target,
        model_sha256=model_sha256,
        store=store,
        catalog=catalog,
        verified_only=verified_only,
        output=output,
        allow_weightless=allow_weightless,
        any_model=any_model,
    )


def deploy_triton(
    repository: str | Path,
    name: str,
    *,
    trt: str | None = None,
    cc: list[str] | tuple[str, ...] = (),
    verified_only: bool = False,
    max_batch_size: int = 0,
    model_sha256: str | None = None,
    os: str | None = None,
    arch: str | None = None,
    store: str | Path | None = None,
    catalog: str | None = None,
) -> TritonResult:
    """Add a version of Triton model ``name`` to ``repository``: one plan per compute capability.

    Same as `trtforge deploy triton`: lookup's rules choose the plan for each capability (default:
    those the newest model's full-TensorRT plans were built on) and TensorRT release (default: the
    newest build's). Raises ``NoCompatibleEngineError`` when a capability has no engine and
    ``DeployError`` for TensorRT-RTX plans (Triton has no backend for them) or a changed config.
    """
    from trtforge.stages.deploy.triton import TritonRequest
    from trtforge.stages.deploy.triton import deploy_triton as run

    request = TritonRequest(
        repository=Path(repository),
        name=name,
        trt_version=trt,
        compute_capabilities=tuple(cc),
        verified_only=verified_only,
        max_batch_size=max_batch_size,
        model_sha256=model_sha256,
        os=os,
        arch=arch,
    )
    return run(request, store, catalog=catalog)


def deploy_epcontext(
    out: str | Path,
    ref: str,
    *,
    target: RuntimeTarget | None = None,
    model_sha256: str | None = None,
    verified_only: bool = False,
    embed: bool = False,
    store: str | Path | None = None,
    catalog: str | None = None,
) -> EpContextResult:
    """Write an ONNX model with one EPContext node wrapping a plan (`trtforge deploy epcontext`).

    ``ref`` is an artifact id, or a name whose engine lookup chooses for ``target`` (this machine
    when None). ``embed=False`` (default) puts a hash-checked copy of the plan beside ``out``;
    ``True`` puts the plan bytes inside the model. Raises ``DeployError`` for weight-stripped plans
    or a record without I/O, ``NoCompatibleEngineError`` when no engine of the name runs on the target.
    """
    from trtforge.stages.deploy.epcontext import export_epcontext

    return export_epcontext(
        out,
        ref,
        target=target,
        model_sha256=model_sha256,
        verified_only=verified_only,
        embed=embed,
        store=store,
        catalog=catalog,
    )


def pin(artifact_id: str, *, store: str | Path | None = None, catalog: str | None = None) -> bool:
    """Pin an artifact so that `trtforge gc` never removes it; True if it was not pinned before."""
    return _set_pinned(artifact_id, True, store, catalog)


def unpin(artifact_id: str, *, store: str | Path | None = None, catalog: str | None = None) -> bool:
    """Let `trtforge gc` remove the artifact again; True if it was pinned."""
    return _set_pinned(artifact_id, False, store, catalog)


def _set_pinned(artifact_id: str, pinned: bool, store: str | Path | None, catalog: str | None) -> bool:
    from trtforge.stages.inventory import set_pinned

    return set_pinned(store, catalog, artifact_id, pinned).changed
