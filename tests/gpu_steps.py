"""How the GPU acceptance suite (tests/test_gpu.py) goes as far as each machine allows.

A GPU test does every step that runs here (TensorRT-RTX builds on the CPU, `plan` for a full-TensorRT
target, lookups with an explicit target, record and JSON checks, reference outputs) and stops at the
first step that needs what the machine lacks, through :func:`reach`: one helper, whose skip reason
starts with that step, so `pytest -m gpu -rs` says where each test stopped, and CI runs every
test's arrangement on every commit. Nothing pretends to run an engine or to be TensorRT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Literal

import pytest

from trtforge.rules.flavors import RTX_COMPUTE_CAPABILITIES, flavor_name, installed_backend
from trtforge.rules.target import current_gpu
from trtforge.stages.selftest import runnable_reason

# What a step needs:
#   "installed"  the flavor's Python package (resolving a recipe, e.g. for `verify --reference-only`)
#   "build"      a build of the flavor (full TensorRT builds on a GPU; TensorRT-RTX on the CPU)
#   "gpu build"  a build that runs CUDA even for TensorRT-RTX (refittable and weight-stripped plans:
#                on a GPU TensorRT-RTX supports)
#   "engine"     running an engine of the flavor: a GPU, the flavor's runtime, a GPU it supports
#   "gpu"        a visible NVIDIA GPU (NVML)
Needs = Literal["installed", "build", "gpu build", "engine", "gpu"]
NO_GPU = "no NVIDIA GPU is visible (NVML found no driver or device)"


def missing(needs: Needs, flavor: str | None = None) -> str | None:
    """What this machine lacks for a step that ``needs`` it, or None."""
    gpu = current_gpu()
    if needs == "gpu":
        return NO_GPU if gpu is None else None
    assert flavor is not None
    backend = installed_backend(flavor)  # type: ignore[arg-type]
    if backend is None:
        extra = " (its wheels are not installable from the package index here)" if flavor == "tensorrt" else ""
        return f"{flavor_name(flavor)} is not installed{extra}"
    if needs == "installed":
        return None
    if needs == "engine":
        return runnable_reason(backend, gpu)
    if flavor == "tensorrt" and gpu is None:
        return f"{backend.label} builds engines on a GPU only, and {NO_GPU}"
    if flavor == "tensorrt_rtx" and needs == "gpu build":
        # Its refittable and weight-stripped builds compile on the device (on the CPU they fail in
        # Myelin's graph_jit with a CUDA error), so they are taken only on a GPU the runtime supports.
        why = runnable_reason(backend, gpu)
        if why is not None:
            return f"refittable and weight-stripped TensorRT-RTX builds run CUDA on a GPU the runtime supports: {why}"
    return None


def reach(step: str, needs: Needs, flavor: str | None = None) -> None:
    """Go on to ``step`` where this machine can take it; otherwise skip here, naming the step (the
    skip is reported at the test's line: this helper and the suite's step helpers hide their frames)."""
    __tracebackhide__ = True
    why = missing(needs, flavor)
    if why is not None:
        pytest.skip(f"stopped at {step}: {why}")


def target_cc(flavor: str, *, one: bool = False) -> list[str] | None:
    """The compute capabilities a test recipe builds for: this GPU's where the flavor runs on it
    (TensorRT-RTX also for its defaults), None (the flavor's default) otherwise. ``one``: a single
    capability, as TensorRT-RTX refittable and weight-stripped builds need."""
    gpu = current_gpu()
    here = gpu.compute_capability if gpu is not None else None
    if flavor != "tensorrt_rtx":
        return None
    if one:
        return [here if here in RTX_COMPUTE_CAPABILITIES else "8.6"]
    return sorted({"8.0", "8.6", "8.9", "12.0", here}) if here in RTX_COMPUTE_CAPABILITIES else None


def lookup_target(flavor: str) -> list[str]:
    """Explicit target flags for `lookup`: the installed runtime and this GPU's capability where the
    flavor runs on it, else 8.6 (so lookups run on machines without a GPU)."""
    backend = installed_backend(flavor)  # type: ignore[arg-type]
    version = backend.version if backend is not None else "10.13.3"
    gpu = current_gpu()
    cc = gpu.compute_capability if gpu is not None and runnable_reason(backend, gpu) is None else "8.6"  # type: ignore[arg-type]
    return ["--flavor", flavor, "--trt", version, "--cc", cc]


def plan_target(flavor: str) -> str:
    """A `plan --target` spec for ``flavor``: the installed version, or TensorRT 10.13.3 where full
    TensorRT is not installed (the capability table answers for it without TensorRT)."""
    backend = installed_backend(flavor)  # type: ignore[arg-type]
    version = backend.version if backend is not None else "10.13.3"
    gpu = current_gpu()
    cc = (target_cc(flavor, one=True) or [gpu.compute_capability if gpu is not None else "8.6"])[0]
    cuda = "" if backend is not None else ",cuda=cu12"  # a runner's wheel: the key is computed for it
    return f"flavor={flavor},trt={version},cc={cc}{cuda}"


def no_alternative_tactic(code: int, error: str) -> str | None:
    """A deny-list rebuild that failed: the skip reason when the denied layer has no other tactic
    (UnsatisfiableDenyError, exit 2, "... without a tactic"), else None, and the test fails. The
    fail-closed error ("cannot confirm that the deny entries were enforced", exit 1) is a failure."""
    if code == 2 and "without a tactic" in error:
        return f"the denied layer has no other tactic: {error[:200]}"
    return None


@contextmanager
def runtime_up_to_loading(flavor: str = "tensorrt_rtx") -> Iterator[None]:
    """Let `verify` and `refit` go past their choice of GPU and runtime (``gpu_runtime_for``) where this
    machine has none that can load the flavor's plans: the installed runtime answers for it, so every
    step before an engine loads runs for real (the plan's hash check, the plugin libraries loaded into
    a real runtime, private copies of models, the per-layer build) and ``deserialize_cuda_engine`` is
    the step that stops (VerificationUnavailableError; the test skips there with :func:`stopped`).
    Where the machine can load them, the real answer stands. Nothing pretends to be TensorRT.

    Polygraphy binds itself to one flavor per process, and `verify` goes to a child process when it is
    bound to the other: run the stage through ``run_in_flavor`` with this inside the function it runs."""
    from trtforge.backend import run
    from trtforge.core.errors import VerificationUnavailableError

    real = run.gpu_runtime_for
    backend = installed_backend(flavor)  # type: ignore[arg-type]
    if backend is None:
        pytest.skip(f"stopped at choosing a runtime: {flavor_name(flavor)} is not installed")

    def installed_runtime(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        try:
            return real(*args, **kwargs)
        except VerificationUnavailableError:
            where = missing("engine", flavor) or "this GPU"
            return backend, run.RuntimeInfo(f"none that loads plans ({where})", None, backend.flavor, backend.version)

    run.gpu_runtime_for = installed_runtime  # type: ignore[assignment]
    try:
        yield
    finally:
        run.gpu_runtime_for = real  # type: ignore[assignment]


@contextmanager
def kept_results(module: ModuleType, name: str, before: Callable[..., None] | None = None) -> Iterator[list[Any]]:
    """Calls of ``module.name`` go through unchanged while the block runs; each one's result is kept
    in the list yielded (``before(*args, **kwargs)`` runs as each call starts)."""
    real = getattr(module, name)
    results: list[Any] = []

    def kept(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before(*args, **kwargs)
        results.append(real(*args, **kwargs))
        return results[-1]

    setattr(module, name, kept)
    try:
        yield results
    finally:
        setattr(module, name, real)


def stopped(error: str) -> None:
    """Skip at deserialization: the plan could not load here (no GPU the runtime supports)."""
    __tracebackhide__ = True
    pytest.skip(f"stopped at deserialize_cuda_engine: {error}")
