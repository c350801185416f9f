"""GPU-only glue: load a verified plan, run it with polygraphy's TrtRunner, time it, refit it.

Kept thin on purpose: what to run and what the results mean lives in :mod:`trtforge.verify` and
:mod:`trtforge.refit`, which are tested on the CPU. Nothing here runs without a CUDA GPU.

Loading a plan runs native code, so a plan is only ever deserialized from bytes that were read
back from the store and re-hashed against the sha256 the catalog recorded for the artifact.
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
from trtforge.flavors import BackendInfo, installed_backends, installed_version

if TYPE_CHECKING:
    import numpy as np

    from trtforge.recipe import VerifySpec
    from trtforge.store import Store
    from trtforge.store.catalog import Artifact
    from trtforge.verify import RuntimeInfo

_CAPTURE_MODE_THREAD_LOCAL = 1  # cudaStreamCaptureModeThreadLocal



def gpu_runtime_for(artifact: Artifact, purpose: str = "verification") -> tuple[BackendInfo, RuntimeInfo]:
    """The local GPU and runtime that can run ``artifact``; one clear line when there is none.

    Checked without importing TensorRT: NVML lists the GPUs, package metadata the runtime.
    """
    from trtforge.target import detect_gpus
    from trtforge.verify import RuntimeInfo

    needed = BackendInfo(artifact.flavor, artifact.trt_version).label
    gpus = detect_gpus()
    version = installed_version(artifact.flavor)  # type: ignore[arg-type]
    if gpus and version == artifact.trt_version:
        gpu = gpus[0]
        runtime = RuntimeInfo(gpu.name, gpu.compute_capability, artifact.flavor, version, gpu.driver_version)
        return BackendInfo(artifact.flavor, version), runtime  # type: ignore[arg-type]
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


def needs_host_code(artifact: Artifact) -> bool:
    """Version-compatible plans embed the lean runtime, i.e. host code the runtime must execute.

    TensorRT refuses to run it unless ``IRuntime.engine_host_code_allowed`` is set (TensorRT
    Developer Guide, "Version Compatibility"; NVIDIA's security guidance: a plan is code).
    """
    return bool((artifact.details or {}).get("compatibility", {}).get("version_compatible"))


def runtime_for(trt: ModuleType, logger: Any, artifact: Artifact | None = None, notify: Any = None) -> Any:
    """A runtime that runs host code only for a catalog artifact whose plan was verified first.

    Callers pass ``artifact`` only after ``read_verified_plan`` checked the bytes against the catalog.
    """
    runtime = trt.Runtime(logger)
    if artifact is not None and needs_host_code(artifact):
        runtime.engine_host_code_allowed = True
        (notify or _to_stderr)(
            f"allowing host code for version-compatible plan {artifact.plan_sha256[:12]} of artifact "
            f"{artifact.id[:12]} (its sha256 matches the catalog)"
        )
    return runtime


def _to_stderr(message: str) -> None:
    print(f"trtforge: {message}", file=sys.stderr, flush=True)


def deserialize(trt: ModuleType, plan: bytes, logger: Any, verified: Artifact | None = None) -> Any:
    """Load plan bytes; ``verified`` is the artifact whose hash-checked plan these bytes are."""
    engine = runtime_for(trt, logger, verified).deserialize_cuda_engine(plan)
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


def refit_plan(backend: BackendInfo, plan: bytes, weights: Path, verified: Artifact | None = None) -> bytes:
    """A new plan: ``plan`` with the weights of ``weights`` (an ONNX file of the same graph)."""
    trt = import_backend(backend)
    logger = _logger(trt)
    engine = deserialize(trt, plan, logger, verified)
    refit_from_onnx(trt, engine, weights, logger)
    return bytes(memoryview(engine.serialize()).cast("B"))


def layerwise_plan(backend: BackendInfo, recipe: Mapping[str, Any], onnx_path: Path) -> bytes:
    """A plan of the same recipe with every layer output marked (polygraphy's mark-all), for --per-layer.

    Builds on the CPU with TensorRT-RTX; only running it needs the GPU.
    """
    from polygraphy.backend.trt import util as trt_util

    from trtforge.backend.build import make_config, parse_network
    from trtforge.backend.compare import quiet
    from trtforge.recipe import Recipe

    trt = import_backend(backend)
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network, _parser = parse_network(trt, builder, logger, onnx_path)
    with quiet():
        trt_util.mark_layerwise(network)
    config, _settings = make_config(trt, builder, network, Recipe.model_validate(dict(recipe), strict=False))
    plan = builder.build_serialized_network(network, config)
    if plan is None or plan.nbytes == 0:
        raise VerificationUnavailableError("building the layer-wise engine for --per-layer failed")
    return bytes(memoryview(plan).cast("B"))


@dataclass
class _Bound:
    context: Any
    stream: Any
    buffers: list[Any]
    graph: Any = None
    graph_exec: Any = None


class EngineCandidate:
    """A TensorRT engine in the verifier's candidate seat."""

    def __init__(self, store: Store, artifact: Artifact, backend: BackendInfo, *, model_path: Path,
                 per_layer: bool = False) -> None:  # fmt: skip
        self.trt = import_backend(backend)
        self.backend = backend
        self.name = f"trt-{backend.flavor}"
        self.logger = _logger(self.trt)
        if per_layer:
            self.engine = deserialize(self.trt, layerwise_plan(backend, artifact.recipe, model_path), self.logger)
        else:
            from trtforge.store.plans import read_verified_plan  # checks the catalog hash and status

            self.engine = deserialize(self.trt, read_verified_plan(store, artifact), self.logger, verified=artifact)
            if _refit_mode(artifact.recipe) == "strip_weights":
                # A weight-stripped plan computes garbage until it gets the model's weights back.
                refit_from_onnx(self.trt, self.engine, model_path, self.logger)

    def runner(self, profile: int) -> Any:
        from polygraphy.backend.trt import TrtRunner

        return TrtRunner(self.engine, name=self.name, optimization_profile=profile)

    def benchmark(self, profile: int, feed: Mapping[str, np.ndarray], spec: VerifySpec) -> dict[str, Any]:
        """Latency and throughput of ``spec.streams`` contexts on as many streams, optionally as CUDA graphs."""
        from polygraphy import cuda

        from trtforge.verify import latency_summary

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


def _refit_mode(recipe: Mapping[str, Any]) -> str:
    from trtforge.refit import refit_mode

    return refit_mode(recipe)
