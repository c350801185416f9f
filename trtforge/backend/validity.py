"""The runtime's own verdict on a plan (TensorRT-RTX ``IRuntime::getEngineValidity``).

TensorRT-RTX documentation, "Engine Compatibility" > "Compatibility Checks": the check reads only
the plan header and reports VALID / SUBOPTIMAL / INVALID plus diagnostic flags (version mismatch,
unsupported compute capability, old CUDA driver or runtime, ...). It is meaningful only on a
machine with a GPU and driver, so lookup asks it only for a detected target. Full TensorRT has no
such API; there the answer is None and lookup's rules stand.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

from trtforge.backend.loader import import_backend
from trtforge.rules.flavors import BackendInfo


@dataclass(frozen=True)
class Validity:
    validity: str  # "VALID" | "SUBOPTIMAL" | "INVALID"
    diagnostics: tuple[str, ...]

    @property
    def usable(self) -> bool:
        return self.validity in ("VALID", "SUBOPTIMAL")

    def describe(self) -> str:
        flags = f" ({', '.join(self.diagnostics)})" if self.diagnostics else ""
        return f"{self.validity}{flags}"


def engine_validity(backend: BackendInfo, plan_path: Path) -> Validity | None:
    """Ask the installed runtime whether the plan at ``plan_path`` can run here."""
    trt = import_backend(backend)
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    if not hasattr(runtime, "get_engine_validity"):
        return None
    with open(plan_path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
        validity, diagnostics = runtime.get_engine_validity(view)
    flags = tuple(
        name for name, member in trt.EngineInvalidityDiagnostics.__members__.items() if int(diagnostics) & int(member)
    )
    return Validity(validity.name, flags)
