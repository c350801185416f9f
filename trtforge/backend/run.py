"""GPU-only glue: load plan bytes, run them with polygraphy's TrtRunner, time them, refit them.

Kept thin on purpose: what to run and what the results mean lives in :mod:`trtforge.verify` and
:mod:`trtforge.refit`, which are tested on the CPU. Nothing here runs without a CUDA GPU.

This module takes bytes and settings and never reads the store: the stages hand it plans that
:func:`trtforge.store.plans.plan_for_loading` checked against the catalog, together with the
decision whether their embedded host code may run.
"""

from __future__ import annotations

import ctypes
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from trtforge.backend.loader import import_backend
from trtforge.errors import NotRefittableError, RefitError, VerificationUnavailableError
from trtforge.flavors import BackendInfo, Flavor, installed_backends, installed_version
from trtforge.target import detect_gpus

if TYPE_CHECKING:
    import numpy as np

    from trtforge.recipe import Recipe, VerifySpec

_CAPTURE_MODE_THREAD_LOCAL = 1  # cudaStreamCaptureModeThreadLocal



@dataclass(frozen=True)
class RuntimeInfo:
    """Where an engine ran: one GPU model and one runtime (flavor + version)."""

    gpu_name: str
    compute_capability: str | None
    flavor: str
    version: str
    driver: str | None = None


def gpu_runtime_for(flavor: Flavor, trt_version: str, purpose: str = "verification") -> tuple[BackendInfo, RuntimeInfo]:
    """The local GPU and runtime that can run a plan built by ``flavor`` ``trt_version``; one clear line when none.

    Checked without importing TensorRT: NVML lists the GPUs, package metadata the runtime.
    """
    needed = BackendInfo(flavor, trt_version).label
    gpus = detect_gpus()
    version = installed_version(flavor)
    if gpus and version == trt_version:
        gpu = gpus[0]
        runtime = RuntimeInfo(gpu.name, gpu.compute_capability, flavor, version, gpu.driver_version)
        return BackendInfo(flavor, version), runtime
    found_gpus = ", ".join(f"{g.name} (cc {g.compute_capability})" for g in gpus) or "no NVIDIA GPU"
    runtimes = "runtimes " + (", ".join(b.label for b in installed_backends()) or "none")
    raise VerificationUnavailableError(
        f"{purpose} needs a CUDA GPU with {needed} runtime; found: {found_gpus}; {runtimes}",
        hint=f"run the {purpose} on a GPU machine with that runtime"
        + ("; `trtforge verify --reference-only` checks the spec without one" if purpose == "verification" else ""),
    )


def _logger(trt: ModuleType) -> Any:
    from trtforge.backend.build import _make_logger

    return _make_logger(trt, [])


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


def deserialize(trt: ModuleType, plan: bytes, logger: Any, *, allow_host_code: bool = False, why: str = "") -> Any:
    """Load plan bytes (host code only when ``allow_host_code``: a plan verified for it)."""
    engine = runtime_for(trt, logger, allow_host_code=allow_host_code, why=why).deserialize_cuda_engine(plan)
    if engine is None:
        raise VerificationUnavailableError("the TensorRT runtime could not load the plan on this GPU")
    return engine


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
    logger = _logger(trt)
    engine = deserialize(trt, plan, logger, allow_host_code=allow_host_code, why=why)
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
        self.logger = _logger(self.trt)
        self.engine = deserialize(self.trt, plan, self.logger, allow_host_code=allow_host_code, why=why)
        if refit_weights is not None:
            refit_from_onnx(self.trt, self.engine, refit_weights, self.logger)

    def runner(self, profile: int) -> Any:
        from polygraphy.backend.trt import TrtRunner

        return TrtRunner(self.engine, name=self.name, optimization_profile=profile)

    def benchmark(self, profile: int, feed: Mapping[str, np.ndarray], spec: VerifySpec) -> dict[str, Any]:
        """Latency and throughput of ``spec.streams`` contexts on as many streams, optionally as CUDA graphs."""
        from polygraphy import cuda

        from trtforge.backend.compare import latency_summary

        bound = [self._bind(profile, feed, spec.cuda_graph) for _ in range(spec.streams)]
        try:
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
        return {
            "method": "host wall time per enqueue + synchronize",
            "cuda_graph": spec.cuda_graph,
            "streams": spec.streams,
            **latency_summary(times, concurrency=spec.streams),
            "device_memory_bytes": int(self.engine.get_device_memory_size_for_profile_v2(profile)),
            "engine_device_memory_bytes": int(self.engine.device_memory_size_v2),
        }

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
        stream = cuda.Stream()
        context.set_optimization_profile_async(profile, stream.ptr)
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
