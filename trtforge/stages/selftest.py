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
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from trtforge.core.errors import SelftestFailure, TrtforgeError
from trtforge.rules.compatibility import RTX_UNSUPPORTED_CCS
from trtforge.rules.flavors import RTX_COMPUTE_CAPABILITIES, BackendInfo, Flavor, flavor_name, installed_backends
from trtforge.rules.target import LocalGpu, detect_gpus, this_platform

SCHEMA = "trtforge-selftest/1"
Outcome = Literal["passed", "failed", "skipped"]


@dataclass
class CheckResult:
    """One check: ``error`` is the one-line error (or the exception type and message of a bug)."""

    check: str
    flavor: str | None
    result: Outcome
    seconds: float
    detail: str = ""
    error: str | None = None
    trace: str | None = None  # the traceback of an unexpected exception (a trtforge bug), for the report


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
        checks.append(CheckResult("detect", None, "passed", _since(started), f"{seen}; driver {driver}; {runtimes}"))
    except TrtforgeError as exc:
        checks.append(CheckResult("detect", None, "failed", _since(started), error=exc.message))
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
    root.mkdir(parents=True, exist_ok=True)
    try:
        for backend in backends:
            work = root / backend.flavor
            try:
                found = run_in_flavor(backend.flavor, flavor_checks, backend.flavor, work, reasons[backend.flavor])
            except Exception as exc:  # the child itself died: report it, go on with the other flavor
                found = [_bug(f"checks ({backend.flavor})", backend.flavor, exc, 0.0)]
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


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 3)


def _bug(name: str, flavor: str | None, exc: BaseException, seconds: float) -> CheckResult:
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]
    line = " ".join(str(exc).split())[:400]
    return CheckResult(name, flavor, "failed", seconds, error=f"{type(exc).__name__}: {line}", trace=trace)


class _Runner:
    """Runs checks in order; a check returns its detail line, raises to fail, or is skipped."""

    def __init__(self, flavor: str) -> None:
        self.flavor = flavor
        self.results: list[CheckResult] = []

    def run(self, name: str, check: Callable[[], str], *, skip: str | None = None) -> bool:
        if skip is not None:
            self.results.append(CheckResult(name, self.flavor, "skipped", 0.0, skip))
            return False
        started = time.perf_counter()
        try:
            detail = check()
        except TrtforgeError as exc:
            self.results.append(CheckResult(name, self.flavor, "failed", _since(started), error=exc.message))
            return False
        except Exception as exc:
            self.results.append(_bug(name, self.flavor, exc, _since(started)))
            return False
        self.results.append(CheckResult(name, self.flavor, "passed", _since(started), detail))
        return True


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise SelftestFailure(message)


# -- generated models and recipes ------------------------------------------------------------


def write_mlp(path: Path, seed: int) -> Path:
    """x[N, 4] -> MatMul -> Add -> Relu -> y[N, 8]: fast to build, weights from ``seed``."""
    try:
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper, save
    except ImportError as exc:
        raise SelftestFailure(f"selftest generates ONNX models with onnx and numpy: {exc}") from None
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (4, 8)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "b"], ["pre"], name="bias"),
        helper.make_node("Relu", ["pre"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


def write_recipe(folder: Path, name: str, flavor: str, extra: str = "", ccs: list[str] | None = None) -> Path:
    """A recipe for the generated MLP, with two optimization profiles (for streams on distinct profiles)."""
    model = folder / "models" / f"{name}.onnx"
    if not model.exists():
        write_mlp(model, seed=0)
    lines = [
        f"name: {name}",
        f"model: {{onnx: models/{name}.onnx}}",
        f"backend: {flavor}",
        "profiles:",
        "  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}",
        "  - x: {min: [1, 4], opt: [4, 4], max: [8, 4]}",
        "verify: {iterations: 5, warmup: 1, atol: 0.001, rtol: 0.001}",
    ]
    if ccs:
        lines.append(f"compatibility: {{compute_capabilities: [{', '.join(ccs)}]}}")
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


# -- the checks of one flavor ------------------------------------------------------------------


def flavor_checks(flavor: Flavor, work: Path, cannot_run: str | None) -> list[CheckResult]:
    """Every check of ``flavor``, in this process (polygraphy bound to ``flavor``)."""
    from trtforge.rules.target import current_gpu
    from trtforge.stages.build import BuildStage

    checks = _Runner(flavor)
    store = work / "store"
    recipes = work / "recipes"
    recipes.mkdir(parents=True, exist_ok=True)
    gpu = current_gpu()
    name = flavor_name(flavor)
    built: dict[str, str] = {}

    def build(recipe: Path) -> str:
        stage = BuildStage(store, notify=lambda _message: None)
        try:
            result = stage.build_one(recipe)
        finally:
            stage.close()
        if not result:
            raise SelftestFailure(f"build of {recipe.name} failed: {result.error}")
        assert result.artifact_id is not None
        return result.artifact_id

    # Builds: TensorRT-RTX builds ahead of time without a GPU; full TensorRT builds on the GPU.
    ccs = None
    if flavor == "tensorrt_rtx" and gpu is not None and cannot_run is None:
        ccs = sorted({"8.0", "8.6", "8.9", "12.0", gpu.compute_capability})
    no_gpu_build = f"{name} builds on a GPU, and none is visible" if flavor == "tensorrt" and gpu is None else None

    def build_check() -> str:
        built["plain"] = build(write_recipe(recipes, "selftest-mlp", flavor, ccs=ccs))
        again = BuildStage(store, notify=lambda _message: None)
        try:
            hit = again.build_one(recipes / "selftest-mlp.yaml")
        finally:
            again.close()
        _expect(hit.status == "cached", f"rebuilding an unchanged recipe was not a cache hit ({hit.status})")
        where = "on the CPU (ahead of time)" if flavor == "tensorrt_rtx" and gpu is None else "here"
        return f"built {built['plain'][:12]} {where}; the rebuild was a cache hit"

    label = "build (CPU/AOT)" if flavor == "tensorrt_rtx" else "build"
    checks.run(label, build_check, skip=no_gpu_build)
    skip = cannot_run or ("no engine was built" if "plain" not in built else None)

    if cannot_run is not None and gpu is not None and "plain" in built:
        # A GPU the runtime does not support (TensorRT-RTX on 9.0): verify must say so in one line.
        checks.run("verify refuses this GPU in one line", lambda: _refusal(store, built["plain"]))
    checks.run("verify (profiles, timing)", lambda: _verify(store, built["plain"]), skip=skip)
    checks.run(
        "CUDA graphs and 2 streams",
        lambda: _graphs_and_streams(store, recipes, flavor, ccs, build),
        skip=skip,
    )
    checks.run("lookup (detected target)", lambda: _lookup(store, built["plain"], flavor), skip=skip)
    checks.run("refit --weights", lambda: _refit(store, recipes, flavor, ccs, build), skip=skip)
    checks.run("strip weights, refit before verify", lambda: _strip(store, recipes, flavor, ccs, build), skip=skip)
    trt_only = (None if flavor == "tensorrt" else f"{name} has no timing cache and no engine inspector") or skip
    checks.run("timing cache shared by builds", lambda: _timing_cache(store, recipes, build), skip=trt_only)
    checks.run("engine inspector layer information", lambda: _layer_info(store, built["plain"]), skip=trt_only)
    return checks.results


def _verify(store: Path, artifact_id: str) -> str:
    from trtforge.stages.verify import verify

    report = verify(artifact_id, store=store)
    _expect(report.status == "passed", f"verification {report.status}: {_first_failure(report)}")
    _expect(bool(report.perf), "verification recorded no timing")
    median = (report.perf[0].get("latency_ms") or {}).get("median")
    profiles = len({p.profile for p in report.points})
    timing = f"median {median:.3f} ms" if isinstance(median, float) else "timed"
    return f"{len(report.points)} shape points over {profiles} profiles passed; {timing}"


def _refusal(store: Path, artifact_id: str) -> str:
    from trtforge.core.errors import VerificationUnavailableError
    from trtforge.stages.verify import verify

    try:
        verify(artifact_id, store=store)
    except VerificationUnavailableError as exc:
        _expect("\n" not in exc.message and "does not support compute capability" in exc.message,
                f"the refusal does not name the reason in one line: {exc.message[:300]!r}")  # fmt: skip
        return exc.message
    raise SelftestFailure("verify ran an engine on a GPU its runtime does not support")


def _first_failure(report: Any) -> str:
    for point in report.points:
        if not point.passed:
            return f"profile {point.profile} {point.label}"
    return "no point failed"


def _graphs_and_streams(store: Path, recipes: Path, flavor: str, ccs: list[str] | None, build: Any) -> str:
    from trtforge.stages.verify import verify

    recipe = write_recipe(recipes, "selftest-graphs", flavor, ccs=ccs)
    recipe.write_text(recipe.read_text().replace("verify: {", "verify: {cuda_graph: true, streams: 2, "))
    artifact_id = build(recipe)
    report = verify(artifact_id, store=store)
    _expect(report.status == "passed", f"verification with CUDA graphs {report.status}")
    streams = [p.get("streams") for p in report.perf]
    notes = [p["streams_note"] for p in report.perf if "streams_note" in p]
    _expect(all(p.get("cuda_graph") for p in report.perf), "timing did not use CUDA graphs")
    return f"streams timed per profile: {streams}" + (f"; {notes[0]}" if notes else "")


def _lookup(store: Path, artifact_id: str, flavor: str) -> str:
    from trtforge.rules.target import resolve_target
    from trtforge.stages.lookup import find_engine

    found = find_engine("selftest-mlp", resolve_target(flavor=flavor), store=store)
    _expect(found.artifact_id == artifact_id, f"lookup found {found.artifact_id[:12]}, not {artifact_id[:12]}")
    _expect(found.target.detected, "lookup did not detect this machine")
    validity = next((n for n in found.notes if n.startswith("runtime says")), "runtime says VALID")
    return f"{found.target.describe()}; {validity if flavor == 'tensorrt_rtx' else 'no validity API (TensorRT)'}"


def _refit(store: Path, recipes: Path, flavor: str, ccs: list[str] | None, build: Any) -> str:
    from trtforge.stages.refit import refit

    recipe = write_recipe(recipes, "selftest-refit", flavor, "refit: refittable\n", ccs)
    parent = build(recipe)
    weights = write_mlp(recipes / "models" / "selftest-refit-new.onnx", seed=1)
    result = refit(parent, weights, store=store, verify=True)
    status = (result.verification or {}).get("status")
    _expect(status == "passed", f"the refitted engine's verification against the new weights {status}")
    return f"refitted {parent[:12]} -> {result.artifact_id[:12]}; verified against the new weights"


def _strip(store: Path, recipes: Path, flavor: str, ccs: list[str] | None, build: Any) -> str:
    from trtforge.stages.verify import verify

    recipe = write_recipe(recipes, "selftest-strip", flavor, "refit: strip_weights\n", ccs)
    artifact_id = build(recipe)
    report = verify(artifact_id, store=store)
    _expect(report.status == "passed", f"the weight-stripped plan, refitted before verify, {report.status}")
    return f"weightless plan {artifact_id[:12]} refitted from its model and verified"


def _timing_cache(store: Path, recipes: Path, build: Any) -> str:
    from trtforge.store import open_store
    from trtforge.store.timing_caches import TimingCaches

    first = build(write_recipe(recipes, "selftest-cache-a", "tensorrt", "build: {optimization_level: 1}\n"))
    second = build(write_recipe(recipes, "selftest-cache-b", "tensorrt", "build: {optimization_level: 2}\n"))
    opened = open_store(store)
    try:
        a, b = opened.catalog.get_artifact(first), opened.catalog.get_artifact(second)
        rows = TimingCaches(opened).list(all_versions=True)
    finally:
        opened.close()
    started_from = (b.details.timing_cache or {}).get("started_from")
    _expect(started_from is not None, f"the second build ({b.id[:12]}) did not start from the shared timing cache")
    _expect(len(rows) >= 2, f"the shared timing cache has {len(rows)} version(s) after two builds; history must grow")
    return f"builds {a.id[:12]} and {b.id[:12]}; the second started from the shared cache; {len(rows)} versions"


def _layer_info(store: Path, artifact_id: str) -> str:
    from trtforge.rules.denylist import parse_layer_info
    from trtforge.store import open_store

    opened = open_store(store)
    try:
        artifact = opened.catalog.get_artifact(artifact_id)
    finally:
        opened.close()
    _expect(artifact.details.layer_info is not None, "the build recorded no engine inspector layer information")
    layers = parse_layer_info(artifact.details.layer_info)
    tactics = sum(1 for layer in layers if layer.tactic)
    _expect(bool(layers), "the layer information lists no layer")
    return f"{len(layers)} layers, {tactics} with a tactic"
