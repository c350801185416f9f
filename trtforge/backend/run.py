"""GPU-only glue: load plan bytes, run them with polygraphy's TrtRunner, time them, refit them.

Kept thin on purpose: what to run and what the results mean lives in :mod:`trtforge.stages.verify` and
:mod:`trtforge.stages.refit`, which are tested on the CPU. Nothing here runs without a CUDA GPU.

This module takes bytes and settings and never reads the store: the stages hand it plans that
:func:`trtforge.store.plans.plan_for_loading` checked against the catalog, together with the
decision whether their embedded host code may run.
"""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from trtforge.backend.loader import import_backend
from trtforge.core.errors import NotRefittableError, RefitError, VerificationUnavailableError
from trtforge.rules.flavors import BackendInfo, Flavor, flavor_name, installed_backends, installed_version
from trtforge.rules.target import current_gpu

if TYPE_CHECKING:
    import numpy as np

    from trtforge.rules.compatibility import Envelope
    from trtforge.rules.recipe import Recipe, VerifySpec
    from trtforge.rules.target import RuntimeTarget

_CAPTURE_MODE_THREAD_LOCAL = 1  # cudaStreamCaptureModeThreadLocal



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
    trt: ModuleType, logger: Any, *, allow_host_code: bool = False, why: str = "", notify: Any = None
) -> Any:
    """A runtime that runs a plan's host code only when the caller says the plan was verified for it."""
    runtime = trt.Runtime(logger)
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
) -> Any:
    """Load plan bytes (host code only when ``allow_host_code``: a plan verified for it).

    ``records``: the list ``logger`` writes to; a refusal names the runtime's own last error.
    """
    engine = runtime_for(trt, logger, allow_host_code=allow_host_code, why=why).deserialize_cuda_engine(plan)
    if engine is None:
        raise VerificationUnavailableError(load_failure(trt.__name__, records or []))
    return engine


def load_failure(module: str, records: Sequence[Mapping[str, str]]) -> str:
    """One line: why the runtime refused a plan on this GPU, in the runtime's words where it gave any."""
    from trtforge.rules.compatibility import RTX_UNSUPPORTED_CCS

    gpu = current_gpu()
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
    backend: BackendInfo, plan: bytes, weights: Path, *, allow_host_code: bool = False, why: str = ""
) -> bytes:
    """A new plan: ``plan`` with the weights of ``weights`` (an ONNX file of the same graph)."""
    trt = import_backend(backend)
    records: list[dict[str, str]] = []
    logger = _logger(trt, records)
    engine = deserialize(trt, plan, logger, allow_host_code=allow_host_code, why=why, records=records)
    refit_from_onnx(trt, engine, weights, logger)
    return bytes(memoryview(engine.serialize()).cast("B"))


@dataclass(frozen=True)
class LayerwisePlan:
    """The per-layer diagnostic engine: the artifact's recipe and builder settings, every tensor marked."""

    plan: bytes
    settings: dict[str, Any]  # read back from the real IBuilderConfig, as a build records them


def layerwise_plan(backend: BackendInfo, recipe: Recipe, onnx_path: Path) -> LayerwisePlan:
    """A plan of the same recipe, with the same network flags and builder settings as its build, and
    every layer output marked (polygraphy's mark-all), for ``--per-layer``.

    Marking outputs changes fusion, so this is another engine than the stored plan: a diagnostic.
    Builds on the CPU with TensorRT-RTX; only running it needs the GPU.
    """
    from polygraphy.backend.trt import util as trt_util

    from trtforge.backend.build import make_config, network_flags, parse_network
    from trtforge.backend.compare import quiet

    trt = import_backend(backend)
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network, _parser = parse_network(trt, builder, logger, onnx_path, network_flags(trt, recipe))
    with quiet():
        trt_util.mark_layerwise(network)
    config, settings = make_config(trt, builder, network, recipe)
    plan = builder.build_serialized_network(network, config)
    if plan is None or plan.nbytes == 0:
        raise VerificationUnavailableError("building the layer-wise engine for --per-layer failed")
    return LayerwisePlan(bytes(memoryview(plan).cast("B")), settings)


@dataclass
class _Bound:
    context: Any
    stream: Any
    buffers: list[Any]
    graph: Any = None
    graph_exec: Any = None


class EngineCandidate:
    """A TensorRT engine in the verifier's candidate seat, loaded from plan bytes.

    ``refit_weights``: an ONNX file whose weights go back into a weight-stripped plan before it
    runs (it computes garbage without them).
    """

    def __init__(
        self,
        plan: bytes,
        backend: BackendInfo,
        *,
        allow_host_code: bool = False,
        why: str = "",
        refit_weights: Path | None = None,
    ) -> None:
        self.trt = import_backend(backend)
        self.backend = backend
        self.name = f"trt-{backend.flavor}"
        self.records: list[dict[str, str]] = []
        self.logger = _logger(self.trt, self.records)
        self.engine = deserialize(
            self.trt, plan, self.logger, allow_host_code=allow_host_code, why=why, records=self.records
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

    def benchmark(self, profile: int, feed: Mapping[str, np.ndarray], spec: VerifySpec) -> dict[str, Any]:
        """Latency and throughput of up to ``spec.streams`` contexts on as many streams, optionally as
        CUDA graphs. Call it with no other context of this engine alive (the runner closed).

        Concurrent execution contexts need distinct optimization profiles (TensorRT: "Profile N has
        been chosen by another IExecutionContext"): the first stream runs ``profile``, the others
        other profiles whose ranges admit the same shapes; where there are too few, fewer streams
        are timed and ``streams_note`` says why.
        """
        from polygraphy import cuda

        from trtforge.backend.compare import latency_summary

        shapes = {name: tuple(array.shape) for name, array in feed.items()}
        ranges = self._profile_ranges() if spec.streams > 1 else [{}]
        profiles, note = stream_profiles(profile, spec.streams, ranges, shapes)
        bound: list[_Bound] = []
        try:
            for chosen in profiles:
                bound.append(self._bind(chosen, feed, spec.cuda_graph))
            if spec.cuda_graph and self.backend.flavor == "tensorrt":
                for b in bound:
                    _capture(cuda.wrapper().handle, b)

            def run_once() -> None:
                for b in bound:
                    if b.graph_exec is not None:
                        _check(cuda.wrapper().handle.cudaGraphLaunch(b.graph_exec, ctypes.c_void_p(b.stream.ptr)))
                    elif not b.context.execute_async_v3(b.stream.ptr):
                        raise VerificationUnavailableError("TensorRT failed to enqueue the engine")
                for b in bound:
                    b.stream.synchronize()

            for _ in range(spec.warmup):
                run_once()
            times = []
            for _ in range(spec.iterations):
                started = time.perf_counter()
                run_once()
                times.append(time.perf_counter() - started)
        finally:
            for b in bound:
                if b.graph_exec is not None:
                    cuda.wrapper().handle.cudaGraphExecDestroy(b.graph_exec)
                if b.graph is not None:
                    cuda.wrapper().handle.cudaGraphDestroy(b.graph)
                for buffer in b.buffers:
                    buffer.free()
                b.stream.free()
                b.context = None  # release the profile before the next context takes it
        figures: dict[str, Any] = {
            "method": "host wall time per enqueue + synchronize",
            "cuda_graph": spec.cuda_graph,
            "streams": len(profiles),
            "stream_profiles": profiles,
            **latency_summary(times, concurrency=len(profiles)),
            **device_memory(self.engine, profile),
        }
        if note is not None:
            figures["streams_requested"] = spec.streams
            figures["streams_note"] = note
        return figures

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

    def _bind(self, profile: int, feed: Mapping[str, np.ndarray], cuda_graph: bool) -> _Bound:
        from polygraphy import cuda
        from polygraphy.datatype import DataType

        trt, engine = self.trt, self.engine
        if cuda_graph and self.backend.flavor == "tensorrt_rtx":
            config = engine.create_runtime_config()
            config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
            context = engine.create_execution_context(config)
        else:
            context = engine.create_execution_context()
        if context is None:
            raise VerificationUnavailableError("TensorRT could not create an execution context for timing")
        stream = cuda.Stream()
        if not context.set_optimization_profile_async(profile, stream.ptr):
            stream.free()
            raise VerificationUnavailableError(
                f"TensorRT refused optimization profile {profile} for a timing context "
                "(another context of this engine holds it)"
            )
        buffers = []
        for name, array in feed.items():
            context.set_input_shape(name, array.shape)
            device = cuda.DeviceArray(shape=array.shape, dtype=DataType.from_dtype(array.dtype))
            device.copy_from(array, stream=stream)
            context.set_tensor_address(name, device.ptr)
            buffers.append(device)
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                shape = tuple(context.get_tensor_shape(name))
                device = cuda.DeviceArray(shape=shape, dtype=DataType.from_dtype(engine.get_tensor_dtype(name)))
                context.set_tensor_address(name, device.ptr)
                buffers.append(device)
        stream.synchronize()
        return _Bound(context, stream, buffers)


ProfileRanges = Sequence[Mapping[str, tuple[Sequence[int], Sequence[int]]]]


def stream_profiles(
    profile: int, streams: int, ranges: ProfileRanges, shapes: Mapping[str, Sequence[int]]
) -> tuple[list[int], str | None]:
    """Which profile each timed stream's context takes: ``profile`` first, then other profiles whose
    (min, max) ranges admit ``shapes``, one context per profile (concurrent contexts of one engine
    need distinct profiles). The note says why fewer than ``streams`` streams are timed, or None.
    """

    def admits(index: int) -> bool:
        for name, shape in shapes.items():
            bounds = ranges[index].get(name)
            if bounds is None:
                continue
            low, high = bounds
            if len(low) != len(shape) or any(not lo <= d <= hi for lo, d, hi in zip(low, shape, high, strict=True)):
                return False
        return True

    chosen = [profile]
    for index in range(len(ranges)):
        if len(chosen) >= streams:
            break
        if index != profile and admits(index):
            chosen.append(index)
    if len(chosen) >= streams:
        return chosen, None
    return chosen, (
        f"{streams} streams could not be timed for profile {profile}: concurrent execution contexts need distinct "
        f"optimization profiles, and {len(chosen)} of the engine's {len(ranges)} admit these shapes; "
        f"timed {len(chosen)} stream(s)"
    )


def device_memory(engine: Any, profile: int) -> dict[str, int]:
    """Device memory the engine needs for ``profile`` and at most: the ``_v2`` APIs from TensorRT 10.1,
    the older ones on 10.0 (which ``trtforge[tensorrt]`` allows; capability table: runtime APIs)."""
    total = engine.device_memory_size_v2 if hasattr(engine, "device_memory_size_v2") else engine.device_memory_size
    if hasattr(engine, "get_device_memory_size_for_profile_v2"):
        per_profile = engine.get_device_memory_size_for_profile_v2(profile)
    elif hasattr(engine, "get_device_memory_size_for_profile"):
        per_profile = engine.get_device_memory_size_for_profile(profile)
    else:
        per_profile = total
    return {"device_memory_bytes": int(per_profile), "engine_device_memory_bytes": int(total)}


def _check(status: int) -> None:
    if status != 0:
        raise VerificationUnavailableError(f"CUDA runtime error {status} while timing with CUDA graphs")


def _capture(cudart: Any, bound: _Bound) -> None:
    """Capture one enqueue of a TensorRT context into an instantiated CUDA graph (full TensorRT;
    TensorRT-RTX captures by itself with ``CudaGraphStrategy.WHOLE_GRAPH_CAPTURE``)."""
    stream = ctypes.c_void_p(bound.stream.ptr)
    bound.context.execute_async_v3(bound.stream.ptr)  # TensorRT must run once before capture
    bound.stream.synchronize()
    graph, graph_exec = ctypes.c_void_p(), ctypes.c_void_p()
    _check(cudart.cudaStreamBeginCapture(stream, _CAPTURE_MODE_THREAD_LOCAL))
    bound.context.execute_async_v3(bound.stream.ptr)
    _check(cudart.cudaStreamEndCapture(stream, ctypes.byref(graph)))
    bound.graph = graph
    _check(cudart.cudaGraphInstantiate(ctypes.byref(graph_exec), graph, ctypes.c_ulonglong(0)))
    bound.graph_exec = graph_exec
