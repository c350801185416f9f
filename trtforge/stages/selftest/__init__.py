"""`trtforge selftest`: the GPU paths, run on the user's machine with generated models.

For the first user with a GPU, not for the developer: detection, builds, verification (CUDA graphs,
several streams), refit, weight-stripped plans, lookup with the runtime's validity check and, with
full TensorRT, timing caches and the engine inspector, each in a throwaway store. The report is fit
to attach to a bug report: versions, GPU, driver, each check's outcome and error.

Each installed flavor's checks run where polygraphy is bound to it (a child process for the second
flavor, :func:`trtforge.backend.loader.run_in_flavor`), so both flavors are checked in one run.
Exit codes: 0 all passed, 1 a check failed, 2 no installed runtime can run engines on this machine
(no GPU, no runtime, or a GPU the runtime does not support); the checks that could run are in the
report either way.
"""

from __future__ import annotations

import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trtforge.core.errors import BadInputError, CheckFailedError, TrtforgeError, VerificationUnavailableError
from trtforge.rules.compatibility import RTX_UNSUPPORTED_CCS
from trtforge.rules.flavors import RTX_COMPUTE_CAPABILITIES, BackendInfo, installed_backends
from trtforge.rules.target import LocalGpu, detect_gpus, this_platform
from trtforge.stages.selftest.checks import flavor_checks
from trtforge.stages.selftest.models import write_mlp, write_recipe
from trtforge.stages.selftest.runner import CheckResult, Outcome, bug, since

__all__ = [
    "SCHEMA",
    "CheckResult",
    "Outcome",
    "SelftestReport",
    "runnable_reason",
    "selftest",
    "write_mlp",
    "write_recipe",
]

SCHEMA = "trtforge-selftest/1"


@dataclass
class SelftestReport:
    checks: list[CheckResult]
    backends: list[dict[str, Any]]
    gpus: list[dict[str, Any]]
    runnable: list[str]  # flavors whose runtime can run engines on this machine's GPU
    reason: str | None  # one line when exit code 2: why no engine could run here
    store: str | None = None  # the kept store (--keep), else None (it was removed)
    schema: str = SCHEMA
    trtforge: str = ""
    python: str = field(default_factory=platform.python_version)
    platform: dict[str, str] = field(default_factory=lambda: dict(zip(("os", "arch"), this_platform(), strict=True)))

    @property
    def exit_code(self) -> int:
        if any(c.result == "failed" for c in self.checks):
            return 1
        return 2 if not self.runnable else 0

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["exit_code"] = self.exit_code
        return data

    def failure(self) -> TrtforgeError | None:
        """Why the exit code is not 0, in one line (for `--json` and stderr); None when it is 0."""
        failed = [c for c in self.checks if c.result == "failed"]
        if failed:
            first = failed[0]
            why = first.error or first.detail
            return CheckFailedError(f"{len(failed)} of {len(self.checks)} checks failed; first: {first.check}: {why}")
        if not self.runnable:
            return VerificationUnavailableError(
                self.reason or "no installed runtime can run engines here",
                hint="run it on a GPU machine with a runtime that supports that GPU",
            )
        return None


def _make_folder(root: Path) -> None:
    """The folder ``--keep`` names (made where missing); a file or an unwritable place is bad input."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(
            f"--keep {root}: cannot make that folder ({exc.strerror})", hint="give --keep a folder, new or empty"
        ) from None


def runnable_reason(backend: BackendInfo, gpu: LocalGpu | None) -> str | None:
    """Why ``backend``'s runtime cannot run engines on ``gpu``, or None when it can."""
    name = backend.label
    if gpu is None:
        return f"{name} runs engines on an NVIDIA GPU, and none is visible (NVML found no driver or device)"
    if backend.flavor == "tensorrt_rtx":
        if gpu.compute_capability in RTX_UNSUPPORTED_CCS or gpu.compute_capability not in RTX_COMPUTE_CAPABILITIES:
            return (
                f"{name} does not support compute capability {gpu.compute_capability} ({gpu.name}); "
                f"it runs on {', '.join(RTX_COMPUTE_CAPABILITIES)}"
            )
    return None


def selftest(*, keep: Path | None = None, device: int | None = None) -> SelftestReport:
    """Run every check for every installed flavor; never raises for a failing check."""
    from importlib.metadata import PackageNotFoundError, version

    from trtforge.backend.loader import run_in_flavor
    from trtforge.rules.target import select_device

    if keep is not None:
        _make_folder(keep)  # bad input is refused before any check runs
    checks: list[CheckResult] = []
    started = time.perf_counter()
    try:
        select_device(device)
        gpus = detect_gpus()
        backends = installed_backends()
        gpu = gpus[0] if gpus else None
        seen = ", ".join(f"{g.name} (cc {g.compute_capability})" for g in gpus) or "no GPU"
        driver = gpu.driver_version if gpu is not None else None
        runtimes = ", ".join(b.label for b in backends) or "no TensorRT runtime"
        checks.append(CheckResult("detect", None, "passed", since(started), f"{seen}; driver {driver}; {runtimes}"))
    except TrtforgeError as exc:
        checks.append(CheckResult("detect", None, "failed", since(started), error=exc.message))
        gpus, backends, gpu = [], installed_backends(), None
    reasons = {b.flavor: runnable_reason(b, gpu) for b in backends}
    runnable = [flavor for flavor, why in reasons.items() if why is None]
    if not backends:
        reason: str | None = "no TensorRT runtime is installed (pip install 'trtforge[rtx]' or 'trtforge[tensorrt]')"
    elif not runnable:
        reason = "; ".join(why for why in reasons.values() if why)
    else:
        reason = None

    if all(b.flavor != "tensorrt" for b in backends):
        checks.append(CheckResult("build", "tensorrt", "skipped", 0.0,
                                  "full TensorRT is not installed (pip install 'trtforge[tensorrt]')"))  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="trtforge-selftest-")) if keep is None else keep
    try:
        for backend in backends:
            work = root / backend.flavor
            try:
                found = run_in_flavor(backend.flavor, flavor_checks, backend.flavor, work, reasons[backend.flavor])
            except Exception as exc:  # the child itself died: report it, go on with the other flavor
                found = [bug(f"checks ({backend.flavor})", backend.flavor, exc, 0.0)]
            checks.extend(found)
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    try:
        trtforge_version = version("trtforge")
    except PackageNotFoundError:
        trtforge_version = "unknown"
    return SelftestReport(
        checks=checks,
        backends=[{"flavor": b.flavor, "version": b.version, "cuda": b.cuda} for b in backends],
        gpus=[asdict(g) for g in gpus],
        runnable=runnable,
        reason=reason,
        store=str(keep) if keep is not None else None,
        trtforge=trtforge_version,
    )


