"""GPU-only glue: load plan bytes, run them with polygraphy's TrtRunner, time them, refit them.

Kept thin on purpose: what to run and what the results mean lives in :mod:`trtforge.stages.verify` and
:mod:`trtforge.stages.refit`, which are tested on the CPU. Nothing here runs without a CUDA GPU.

This module takes bytes and settings and never reads the store: the stages hand it plans that
:func:`trtforge.store.plans.plan_for_loading` checked against the catalog, together with the
decision whether their embedded host code may run.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from trtforge.backend.loader import import_backend
from trtforge.backend.plugins import plugin_runtime
from trtforge.core.errors import BuildError, NotRefittableError, RefitError, VerificationUnavailableError
from trtforge.rules.flavors import BackendInfo, Flavor, flavor_name, installed_backends, installed_version
from trtforge.rules.target import current_gpu

if TYPE_CHECKING:
    import numpy as np

    from trtforge.backend.timing import TimedRun
    from trtforge.rules.builder_options import NamedFile
    from trtforge.rules.compatibility import Envelope
    from trtforge.rules.recipe import Recipe, VerifySpec
    from trtforge.rules.record import PluginRecord
    from trtforge.rules.target import LocalGpu, RuntimeTarget


@dataclass(frozen=True)
class RuntimeInfo:
    """Where an engine ran: one GPU model and one runtime (flavor + version)."""

    gpu_name: str
    compute_capability: str | None
    flavor: str
    version: str
    driver: str | None = None


# The lookup rules that decide whether this runtime and GPU can load a plan at all (platform and
# verification history do not apply to the engine in hand).
_LOAD_RULES = ("flavor", "rtx_version", "rtx_compute_capability", "trt_version", "lean_runtime", "hardware")


def gpu_runtime_for(
    flavor: Flavor,
    trt_version: str,
    purpose: str = "verification",
    *,
    envelope: Envelope | None = None,
    compute_capabilities: Sequence[str] = (),
) -> tuple[BackendInfo, RuntimeInfo]:
    """The local GPU and runtime that can run a plan built by ``flavor`` ``trt_version``; one clear line when none.

    The same release rules as ``lookup`` (:mod:`trtforge.rules.compatibility`): ``1.7.1`` is the release
    ``1.7.1.116``, a version-compatible ``envelope`` admits newer runtimes of the same major, and
    TensorRT-RTX refuses compute capabilities it does not support (9.0). Checked without importing
    TensorRT: NVML and the CUDA driver name the GPU, package metadata the runtime.
    """
    from trtforge.rules.target import RuntimeTarget

    gpu = current_gpu()
    installed = installed_backends()
    version = installed_version(flavor)
    needed = BackendInfo(flavor, trt_version).label
    if gpu is not None and version is not None:
        target = RuntimeTarget(flavor, version, gpu.compute_capability, gpu.name, gpu.driver_version, True)
        reason = load_refusal(flavor, trt_version, target, envelope=envelope, compute_capabilities=compute_capabilities)
        if reason is None:
            runtime = RuntimeInfo(gpu.name, gpu.compute_capability, flavor, version, gpu.driver_version)
            return BackendInfo(flavor, version), runtime
        raise VerificationUnavailableError(
            f"{purpose} cannot run this {needed} engine on {gpu.name} (cc {gpu.compute_capability}) "
            f"with {flavor_name(flavor)} {version}: {reason}",
            hint=f"run the {purpose} on a GPU and runtime the engine supports (`trtforge lookup` lists them)",
        )
    found_gpus = f"{gpu.name} (cc {gpu.compute_capability})" if gpu is not None else "no NVIDIA GPU"
    runtimes = "runtimes " + (", ".join(b.label for b in installed) or "none")
    raise VerificationUnavailableError(
        f"{purpose} needs a CUDA GPU with {needed} runtime; found: {found_gpus}; {runtimes}",
        hint=f"run the {purpose} on a GPU machine with that runtime"
        + ("; `trtforge verify --reference-only` checks the spec without one" if purpose == "verification" else ""),
    )


def load_refusal(
    flavor: Flavor,
    trt_version: str,
    target: RuntimeTarget,
    *,
    envelope: Envelope | None = None,
    compute_capabilities: Sequence[str] = (),
) -> str | None:
    """Why ``target``'s runtime and GPU cannot load a plan built by ``flavor`` ``trt_version``, or None:
    lookup's own rules, so verify, refit and lookup agree on releases and compute capabilities."""
    from datetime import datetime, timezone

    from trtforge.rules.compatibility import RULES, Candidate
    from trtforge.rules.compatibility import Envelope as _Envelope

    plan = Candidate("", "", flavor, trt_version, tuple(compute_capabilities), "", datetime.now(timezone.utc),
                     envelope=envelope or _Envelope())  # fmt: skip
    return next((r for name, rule in RULES if name in _LOAD_RULES and (r := rule(plan, target))), None)


def _logger(trt: ModuleType, records: list[dict[str, str]] | None = None) -> Any:
    from trtforge.backend.build import _make_logger

    return _make_logger(trt, records if records is not None else [])


def runtime_for(
    trt: ModuleType,
    logger: Any,
    *,
    allow_host_code: bool = False,
    why: str = "",
    notify: Any = None,
    plugins: Sequence[PluginRecord] = (),
    records: list[dict[str, str]] | None = None,
) -> Any:
    """A runtime for one plan: TensorRT's standard plugins and the plugin libraries the plan needs
    (``plugins``, the artifact's ``plugins_needed``) loaded into it, each checked against its recorded
    sha256 first (:func:`trtforge.backend.plugins.load_for_runtime`); it runs a plan's host code only
    when the caller says the plan was verified for it."""
    runtime = plugin_runtime(trt, logger, plugins, records if records is not None else [])
    if allow_host_code:
        runtime.engine_host_code_allowed = True
        (notify or _to_stderr)(f"allowing host code for {why}")
    return runtime


def _to_stderr(message: str) -> None:
    print(f"trtforge: {message}", file=sys.stderr, flush=True)


def deserialize(
    trt: ModuleType,
    plan: bytes,
    logger: Any,
    *,
    allow_host_code: bool = False,
    why: str = "",
    records: list[dict[str, str]] | None = None,
    plugins: Sequence[PluginRecord] = (),
) -> Any:
    """Load plan bytes (host code only when ``allow_host_code``: a plan verified for it): first the
    plugin libraries it needs (checked, then loaded, :func:`runtime_for`), then the plan.

    ``records``: the list ``logger`` writes to; a refusal names the runtime's own last error.
    """
    runtime = runtime_for(trt, logger, allow_host_code=allow_host_code, why=why, plugins=plugins, records=records)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise VerificationUnavailableError(load_failure(trt.__name__, records or [], current_gpu()))
    return engine


def load_failure(module: str, records: Sequence[Mapping[str, str]], gpu: LocalGpu | None) -> str:
    """One line: why the runtime refused a plan on ``gpu``, in the runtime's words where it gave any;
    first the reason trtforge knows (TensorRT-RTX does not support compute capability 9.0)."""
    from trtforge.rules.compatibility import RTX_UNSUPPORTED_CCS

    where = f"{gpu.name} (cc {gpu.compute_capability})" if gpu is not None else "this GPU"
    if module == "tensorrt_rtx" and gpu is not None and gpu.compute_capability in RTX_UNSUPPORTED_CCS:
        cc = gpu.compute_capability
        return f"TensorRT-RTX does not support compute capability {cc}: it cannot load plans on {where}"
    errors = [r["message"] for r in records if r.get("level") in ("error", "internal_error")]
    said = f": {' '.join(errors[-1].split())[:300]}" if errors else ""
    return f"the {flavor_name(module)} runtime could not load the plan on {where}{said}"


def refit_from_onnx(trt: ModuleType, engine: Any, onnx_path: Path, logger: Any) -> None:
    """Load weights from an ONNX file into a refittable engine; missing weights are named."""
    if not engine.refittable:
        raise NotRefittableError("the engine was not built refittable; it cannot take new weights")
    refitter = trt.Refitter(engine, logger)
    parser = trt.OnnxParserRefitter(refitter, logger)
    if not parser.refit_from_file(str(onnx_path)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        detail = "; ".join(f"{e.node_name() or '?'}: {e.desc()}" for e in errors) or "no error was reported"
        missing = [name for name in refitter.get_missing_weights() if name]
        if missing:
            raise RefitError(f"{onnx_path.name} lacks weights the engine needs: {', '.join(missing)}")
        raise RefitError(f"refit from {onnx_path.name} failed: {detail}")
    missing = [name for name in refitter.get_missing_weights() if name]
    if missing:
        raise RefitError(f"{onnx_path.name} lacks weights the engine needs: {', '.join(missing)}")
    if not refitter.refit_cuda_engine():
        raise RefitError(f"TensorRT rejected the weights from {onnx_path.name}")


def refit_plan(
    backend: BackendInfo,
    plan: bytes,
    weights: Path,
    *,
    allow_host_code: bool = False,
    why: str = "",
    plugins: Sequence[PluginRecord] = (),
) -> bytes:
    """A new plan: ``plan`` (which needs ``plugins`` loaded) with the weights of ``weights`` (an ONNX
    file of the same graph: the stage's private copy of the user's file)."""
    trt = import_backend(backend)
    records: list[dict[str, str]] = []
    logger = _logger(trt, records)
    engine = deserialize(trt, plan, logger, allow_host_code=allow_host_code, why=why, records=records, plugins=plugins)
    refit_from_onnx(trt, engine, weights, logger)
    return bytes(memoryview(engine.serialize()).cast("B"))


@dataclass(frozen=True)
class LayerwisePlan:
    """The per-layer diagnostic engine: the artifact's recipe and builder settings, every tensor marked."""

    plan: bytes
    settings: dict[str, Any]  # read back from the real IBuilderConfig, as a build records them
    plugins: list[dict[str, Any]] = field(default_factory=list)  # the plugin libraries its build loaded


def layerwise_plan(
    backend: BackendInfo,
    recipe: Recipe,
    onnx_path: Path,
    *,
    files: Sequence[NamedFile] = (),
    shown: Path | None = None,
) -> LayerwisePlan:
    """A plan of the same recipe, built as its build was (:func:`trtforge.backend.build.build_plan`, in a
    build worker: parser flags, plugin libraries, calibration cache, builder-config overrides, network
    settings) with every layer output marked (polygraphy's mark-all), for ``--per-layer``. ``files``:
    the plugin libraries and calibration cache the build read (the artifact's record); ``onnx_path``:
    a private copy of the model, ``shown`` the user's.

    Marking outputs changes fusion, so this is another engine than the stored plan: a diagnostic.
    Builds on the CPU with TensorRT-RTX; only running it needs the GPU.
    """
    from trtforge.backend.pool import build_once
    from trtforge.backend.worker import BuildJob

    job = BuildJob(backend, recipe, onnx_path, files=tuple(files), shown=shown, layerwise=True)
    try:
        output = build_once(job).unwrap()
    except BuildError as exc:
        raise VerificationUnavailableError(
            f"building the layer-wise engine for --per-layer failed: {exc.message}", hint=exc.hint
        ) from None
    return LayerwisePlan(bytes(output.plan_view), output.settings, output.plugins)


class EngineCandidate:
    """A TensorRT engine in the verifier's candidate seat, loaded from plan bytes.

    ``plugins``: the plugin libraries the plan needs (the artifact's ``plugins_needed``), loaded
    before it deserializes. ``refit_weights``: an ONNX file (a private copy) whose weights go back
    into a weight-stripped plan before it runs (it computes garbage without them).
    """

    def __init__(
        self,
        plan: bytes,
        backend: BackendInfo,
        *,
        allow_host_code: bool = False,
        why: str = "",
        refit_weights: Path | None = None,
        plugins: Sequence[PluginRecord] = (),
    ) -> None:
        self.trt = import_backend(backend)
        self.backend = backend
        self.name = f"trt-{backend.flavor}"
        self.records: list[dict[str, str]] = []
        self.logger = _logger(self.trt, self.records)
        self.engine = deserialize(
            self.trt, plan, self.logger, allow_host_code=allow_host_code, why=why, records=self.records, plugins=plugins
        )
        if refit_weights is not None:
            refit_from_onnx(self.trt, self.engine, refit_weights, self.logger)

    def layer_info(self) -> Any:
        """The engine inspector's JSON for this engine (None where the runtime offers none)."""
        import json

        try:
            inspector = self.engine.create_engine_inspector()
            return json.loads(inspector.get_engine_information(self.trt.LayerInformationFormat.JSON))
        except Exception:  # no inspector in this runtime, or unreadable: derive then says so
            return None

    def runner(self, profile: int) -> Any:
        from polygraphy.backend.trt import TrtRunner

        return TrtRunner(self.engine, name=self.name, optimization_profile=profile)

    @property
    def refittable(self) -> bool:
        """The engine's own word: built with REFIT, REFIT_IDENTICAL or STRIP_PLAN."""
        return bool(self.engine.refittable)

    def benchmark(self, profile: int, feed: Mapping[str, np.ndarray], spec: VerifySpec) -> TimedRun:
        """trtexec's figures for ``profile`` (:mod:`trtforge.backend.timing`): ``spec.streams``
        contexts on distinct profiles, CUDA graphs when ``spec.cuda_graph``, and each stream's
        outputs for the verifier to compare with the plain run's. Call it with no other context
        of this engine alive (the runner closed).

        Concurrent execution contexts need distinct optimization profiles (TensorRT: "Profile N has
        been chosen by another IExecutionContext"): the first stream runs ``profile``, the others
        other profiles whose ranges admit the same shapes; where there are too few, fewer streams
        are timed and ``streams_note`` says why.
        """
        from trtforge.backend.timing import device_memory, time_engine

        ranges = self._profile_ranges() if spec.streams > 1 else [{}]
        run = time_engine(self.trt, self.engine, self.backend.flavor, profile, feed, spec, ranges)
        run.figures.update(device_memory(self.engine, profile))
        return run

    def _profile_ranges(self) -> list[dict[str, tuple[tuple[int, ...], tuple[int, ...]]]]:
        """(min, max) shape of every input, per optimization profile of the engine."""
        trt, engine = self.trt, self.engine
        inputs = [
            engine.get_tensor_name(i)
            for i in range(engine.num_io_tensors)
            if engine.get_tensor_mode(engine.get_tensor_name(i)) == trt.TensorIOMode.INPUT
        ]
        ranges = []
        for index in range(engine.num_optimization_profiles):
            per_input = {}
            for name in inputs:
                try:
                    shapes = engine.get_tensor_profile_shape(name, index)
                except Exception:  # a static input has no profile range on some versions: any shape fits
                    shapes = None
                if shapes:
                    per_input[name] = (tuple(shapes[0]), tuple(shapes[-1]))
            ranges.append(per_input)
        return ranges
