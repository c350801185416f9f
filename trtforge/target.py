"""Targets: the backend and hardware an engine is built for.

A TensorRT engine is specific to the TensorRT version and (by default) to the GPU's compute
capability it was built on; TensorRT-RTX builds ahead of time, on any machine, for a list of
compute capabilities. The target is part of the BuildKey.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from trtforge.backend.loader import BackendInfo
from trtforge.errors import BackendUnavailableError


@dataclass(frozen=True)
class BuildTarget:
    """What an engine is built for.

    ``compute_capabilities`` is empty when the backend's default set is used (TensorRT-RTX
    ahead-of-time builds); ``gpu_name`` is None when the build does not depend on a GPU.
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


def build_target_for(backend: BackendInfo, compute_capabilities: Sequence[str] | None = None) -> BuildTarget:
    """The target a build with ``backend`` on this machine produces an engine for.

    ``compute_capabilities`` (TensorRT-RTX, from the recipe) selects the ahead-of-time targets;
    None keeps the backend's default set.
    """
    if backend.flavor == "tensorrt_rtx":
        return BuildTarget(backend.flavor, backend.version, compute_capabilities=tuple(compute_capabilities or ()))
    gpus = detect_gpus()
    if not gpus:
        raise BackendUnavailableError(
            f"{backend.label} builds engines on a GPU, and no NVIDIA GPU was found",
            hint="build on a GPU machine, or use `backend: tensorrt_rtx` for CPU ahead-of-time builds",
        )
    gpu = gpus[0]
    return BuildTarget(backend.flavor, backend.version, gpu.name, (gpu.compute_capability,))
