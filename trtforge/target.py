"""Targets: the backend and hardware an engine is built for.

A TensorRT engine is specific to the TensorRT version and (by default) to the GPU's compute
capability it was built on; TensorRT-RTX builds ahead of time, on any machine, for a list of
compute capabilities. The target is part of the BuildKey.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from trtforge.errors import TARGET_HINT, BackendUnavailableError, TargetError
from trtforge.flavors import FLAVORS, BackendInfo, Flavor, installed_backends, parse_version


@dataclass(frozen=True)
class BuildTarget:
    """What an engine is built for.

    ``compute_capabilities``: the GPU's for TensorRT, the ahead-of-time list for TensorRT-RTX
    (empty only in rows recorded before trtforge set it explicitly); ``gpu_name`` is None when
    the build does not depend on a GPU.
    """

    flavor: str
    trt_version: str
    gpu_name: str | None = None
    compute_capabilities: tuple[str, ...] = field(default_factory=tuple)

    def key_fields(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_capabilities"] = sorted(self.compute_capabilities)
        return data

    def describe(self) -> str:
        ccs = ",".join(self.compute_capabilities) or "default"
        gpu = f" on {self.gpu_name}" if self.gpu_name else ""
        return f"{self.flavor} {self.trt_version}{gpu} (cc {ccs})"


@dataclass(frozen=True)
class LocalGpu:
    name: str
    compute_capability: str
    driver_version: str | None = None


def detect_gpus() -> list[LocalGpu]:
    """GPUs visible through NVML; empty when there is no driver or no NVML binding."""
    try:
        import pynvml  # lazy: only builds for full TensorRT and `doctor` need it
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(LocalGpu(name if isinstance(name, str) else name.decode(), f"{major}.{minor}", driver))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def build_target_for(
    backend: BackendInfo, compute_capabilities: Sequence[str] | None = None, runtime: RuntimeTarget | None = None
) -> BuildTarget:
    """The target a build with ``backend`` produces an engine for.

    TensorRT-RTX builds ahead of time, on any machine, for ``compute_capabilities`` (the explicit
    list :mod:`trtforge.resolve` always gives). TensorRT builds on, and for, one GPU: the
    ``runtime`` target's when given (``plan --target``), else this machine's.
    """
    if backend.flavor == "tensorrt_rtx":
        return BuildTarget(backend.flavor, backend.version, compute_capabilities=tuple(compute_capabilities or ()))
    if runtime is not None:
        return BuildTarget(backend.flavor, backend.version, runtime.gpu_name, (runtime.compute_capability,))
    gpus = detect_gpus()
    if not gpus:
        raise BackendUnavailableError(
            f"{backend.label} builds engines on a GPU, and no NVIDIA GPU was found",
            hint="build on a GPU machine, or use `backend: tensorrt_rtx` for CPU ahead-of-time builds",
        )
    gpu = gpus[0]
    return BuildTarget(backend.flavor, backend.version, gpu.name, (gpu.compute_capability,))


# -- runtime targets: where an engine is meant to run (lookup, adopt, plan) ------------------

_CC = re.compile(r"^(\d{1,2})\.(\d)$")




@lru_cache(maxsize=256)
def parse_compute_capability(text: str) -> tuple[int, int]:
    """``"8.6"`` -> ``(8, 6)``; raises TargetError for anything else."""
    match = _CC.match(text.strip())
    if match is None:
        raise TargetError(f"compute capability {text[:40]!r} is not of the form MAJOR.MINOR (e.g. 8.6)")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class RuntimeTarget:
    """Where an engine should run: runtime flavor and version, GPU model and compute capability.

    ``gpu_name`` may be None for an explicit target that only names a compute capability; then
    no GPU-model preference or per-model verification status applies. ``detected`` is True when
    the target describes this machine, which is the only case where the runtime's own validity
    check can be asked.
    """

    flavor: Flavor
    trt_version: str
    compute_capability: str
    gpu_name: str | None = None
    driver_version: str | None = None
    detected: bool = False

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return parse_version(self.trt_version)

    @property
    def cc_tuple(self) -> tuple[int, int]:
        return parse_compute_capability(self.compute_capability)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        gpu = f"{self.gpu_name} " if self.gpu_name else ""
        return f"{gpu}(cc {self.compute_capability}) with {self.flavor} {self.trt_version}"


def explicit_target(*, gpu: str | None, cc: str | None, trt: str | None, flavor: str | None = None) -> RuntimeTarget:
    """A target from command-line values, validated; ``--cc`` and ``--trt`` are required."""
    missing = [flag for flag, value in (("--cc", cc), ("--trt", trt)) if not value]
    if missing:
        raise TargetError(f"an explicit target needs {' and '.join(missing)}")
    chosen = flavor or "tensorrt"
    if chosen not in FLAVORS:
        raise TargetError(f"flavor {chosen[:40]!r} is not one of {', '.join(FLAVORS)}")
    major, minor = parse_compute_capability(cc or "")
    parse_version(trt or "")
    name = gpu.strip() if gpu is not None else None
    if name is not None and not (0 < len(name) <= 128 and name.isprintable()):
        raise TargetError("GPU name must be 1-128 printable characters")
    return RuntimeTarget(chosen, (trt or "").strip(), f"{major}.{minor}", name or None)  # type: ignore[arg-type]


def detect_target(flavor: str | None = None) -> RuntimeTarget:
    """This machine as a target: first NVML GPU plus the installed runtime (not imported)."""
    gpus = detect_gpus()
    if not gpus:
        raise TargetError("no NVIDIA GPU detected on this machine (NVML found no driver or device)")
    backends = [b for b in installed_backends() if flavor in (None, b.flavor)]
    if not backends:
        raise TargetError(
            f"no {flavor or 'TensorRT'} runtime is installed here",
            hint="install one, or " + TARGET_HINT,
        )
    gpu, backend = gpus[0], backends[0]
    return RuntimeTarget(backend.flavor, backend.version, gpu.compute_capability, gpu.name, gpu.driver_version, True)


def resolve_target(
    *, gpu: str | None = None, cc: str | None = None, trt: str | None = None, flavor: str | None = None
) -> RuntimeTarget:
    """Explicit when any of gpu/cc/trt is given, else detected on this machine."""
    if gpu is not None or cc is not None or trt is not None:
        return explicit_target(gpu=gpu, cc=cc, trt=trt, flavor=flavor)
    if flavor is not None and flavor not in FLAVORS:
        raise TargetError(f"flavor {flavor[:40]!r} is not one of {', '.join(FLAVORS)}")
    return detect_target(flavor)
