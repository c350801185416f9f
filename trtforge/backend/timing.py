"""GPU-only glue for timing an engine: page-locked buffers, CUDA events, one context per stream,
CUDA graphs. Nothing here runs without a CUDA GPU; what the times mean is
:mod:`trtforge.rules.timing` (pure, tested on the CPU with synthetic event times).

The measurement follows TensorRT's advice for throughput and trtexec's way of timing:

- each timed stream has its own execution context on its own optimization profile (concurrent
  contexts of one engine need distinct profiles), its own device buffers and page-locked host
  buffers, so one stream's copies overlap another stream's compute;
- every query copies its inputs host-to-device, runs the engine (or the context's CUDA graph),
  and copies its outputs device-to-host, all on its stream, with a CUDA event between the phases;
  the host time around the enqueue is the Enqueue Time;
- each stream keeps one query in flight ahead of the one it waits for (trtexec: "enqueue batch 0
  -> enqueue batch 1 -> wait until batch 0 is done -> enqueue batch 2 ...");
- with CUDA graphs each context is captured once (full TensorRT: stream capture of one enqueue;
  TensorRT-RTX: ``CudaGraphStrategy.WHOLE_GRAPH_CAPTURE`` in the context's runtime config);
- after timing, each stream's page-locked outputs hold its last query's outputs, which the
  verifier compares with the plain run's.

CUDA runtime calls go through polygraphy's libcudart handle (``polygraphy.cuda.wrapper().handle``),
as polygraphy's own ``Stream`` and ``DeviceArray`` do.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from trtforge.core.errors import VerificationUnavailableError
from trtforge.rules.timing import QueryTrace, StreamTrace, performance_report, stream_profiles

if TYPE_CHECKING:
    import numpy as np

    from trtforge.rules.recipe import VerifySpec

_CAPTURE_MODE_THREAD_LOCAL = 1  # cudaStreamCaptureModeThreadLocal
_HOST_TO_DEVICE, _DEVICE_TO_HOST = 1, 2  # cudaMemcpyKind


class Cudart:
    """The few CUDA runtime calls timing needs; every failure is one line naming the call."""

    def __init__(self) -> None:
        from polygraphy import cuda

        self.lib = cuda.wrapper().handle

    def call(self, name: str, *args: Any) -> None:
        status = getattr(self.lib, name)(*args)
        if status != 0:
            raise VerificationUnavailableError(f"CUDA runtime error {status} in {name} while timing the engine")

    def event(self) -> ctypes.c_void_p:
        event = ctypes.c_void_p()
        self.call("cudaEventCreate", ctypes.byref(event))
        return event

    def record(self, event: ctypes.c_void_p, stream: int) -> None:
        self.call("cudaEventRecord", event, ctypes.c_void_p(stream))

    def elapsed_ms(self, start: ctypes.c_void_p, end: ctypes.c_void_p) -> float:
        ms = ctypes.c_float()
        self.call("cudaEventElapsedTime", ctypes.byref(ms), start, end)
        return float(ms.value)

    def wait(self, event: ctypes.c_void_p) -> None:
        self.call("cudaEventSynchronize", event)

    def stream_waits_for(self, stream: int, event: ctypes.c_void_p) -> None:
        self.call("cudaStreamWaitEvent", ctypes.c_void_p(stream), event, ctypes.c_uint(0))

    def copy(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
        self.call("cudaMemcpyAsync", ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes),
                  ctypes.c_int(kind), ctypes.c_void_p(stream))  # fmt: skip

    def pinned(self, shape: Sequence[int], dtype: np.dtype[Any]) -> tuple[np.ndarray, ctypes.c_void_p]:
        """A numpy array in page-locked host memory (cudaMallocHost), and its pointer to free."""
        import numpy as np

        count = int(np.prod(shape, dtype=np.int64))
        nbytes = max(count * dtype.itemsize, 1)
        pointer = ctypes.c_void_p()
        self.call("cudaMallocHost", ctypes.byref(pointer), ctypes.c_size_t(nbytes))
        raw = (ctypes.c_byte * nbytes).from_address(pointer.value or 0)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(tuple(shape)), pointer

    def launch(self, graph_exec: ctypes.c_void_p, stream: int) -> None:
        self.call("cudaGraphLaunch", graph_exec, ctypes.c_void_p(stream))


@dataclass
class Lane:
    """One execution context on its own stream, with its buffers and one event set per query."""

    index: int
    profile: int
    context: Any
    stream: Any  # polygraphy.cuda.Stream
    inputs: list[tuple[np.ndarray, Any]] = field(default_factory=list)  # (page-locked host, DeviceArray)
    outputs: list[tuple[str, np.ndarray, Any]] = field(default_factory=list)
    host_memory: list[ctypes.c_void_p] = field(default_factory=list)
    events: list[tuple[ctypes.c_void_p, ...]] = field(default_factory=list)
    enqueued: list[tuple[float, float]] = field(default_factory=list)  # host perf_counter around each enqueue
    graph: ctypes.c_void_p | None = None
    graph_exec: ctypes.c_void_p | None = None


@dataclass
class TimedRun:
    """What timing one profile gives the verifier: trtexec's figures and each stream's outputs."""

    figures: dict[str, Any]
    outputs: list[dict[str, np.ndarray]]  # per stream, the last timed query's outputs


def _numpy_dtype(trt_dtype: Any) -> Any:
    from polygraphy.datatype import DataType

    return DataType.to_dtype(DataType.from_dtype(trt_dtype), "numpy")


def open_lane(
    trt: ModuleType, engine: Any, cudart: Cudart, index: int, profile: int, feed: Mapping[str, np.ndarray],
    *, rtx_graph: bool,
) -> Lane:  # fmt: skip
    """A context on ``profile`` with page-locked copies of ``feed`` and device buffers for every tensor."""
    from polygraphy import cuda

    if rtx_graph:
        config = engine.create_runtime_config()
        config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
        context = engine.create_execution_context(config)
    else:
        context = engine.create_execution_context()
    if context is None:
        raise VerificationUnavailableError("TensorRT could not create an execution context for timing")
    lane = Lane(index, profile, context, cuda.Stream())
    try:
        _bind(trt, engine, cudart, lane, feed)
    except BaseException:
        close_lane(cudart, lane)
        raise
    return lane


def _bind(trt: ModuleType, engine: Any, cudart: Cudart, lane: Lane, feed: Mapping[str, np.ndarray]) -> None:
    from polygraphy import cuda

    context = lane.context
    if not context.set_optimization_profile_async(lane.profile, lane.stream.ptr):
        raise VerificationUnavailableError(
            f"TensorRT refused optimization profile {lane.profile} for a timing context (another context holds it)"
        )
    for name, array in feed.items():
        context.set_input_shape(name, array.shape)
        host, pointer = cudart.pinned(array.shape, array.dtype)
        host[...] = array
        lane.host_memory.append(pointer)
        device = cuda.DeviceArray.raw((max(array.nbytes, 1),))
        context.set_tensor_address(name, device.ptr)
        lane.inputs.append((host, device))
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) != trt.TensorIOMode.OUTPUT:
            continue
        shape, dtype = tuple(context.get_tensor_shape(name)), _numpy_dtype(engine.get_tensor_dtype(name))
        host, pointer = cudart.pinned(shape, dtype)
        lane.host_memory.append(pointer)
        device = cuda.DeviceArray.raw((max(host.nbytes, 1),))
        context.set_tensor_address(name, device.ptr)
        lane.outputs.append((name, host, device))
    lane.stream.synchronize()


def capture(cudart: Cudart, lane: Lane) -> None:
    """One CUDA graph per context (full TensorRT): capture one enqueue of the context on its stream."""
    stream = lane.stream.ptr
    if not lane.context.execute_async_v3(stream):  # TensorRT must run once before a capture
        raise VerificationUnavailableError("TensorRT failed to enqueue the engine before CUDA graph capture")
    lane.stream.synchronize()
    graph, graph_exec = ctypes.c_void_p(), ctypes.c_void_p()
    cudart.call("cudaStreamBeginCapture", ctypes.c_void_p(stream), ctypes.c_int(_CAPTURE_MODE_THREAD_LOCAL))
    lane.context.execute_async_v3(stream)
    cudart.call("cudaStreamEndCapture", ctypes.c_void_p(stream), ctypes.byref(graph))
    lane.graph = graph
    cudart.call("cudaGraphInstantiateWithFlags", ctypes.byref(graph_exec), graph, ctypes.c_ulonglong(0))
    lane.graph_exec = graph_exec


def enqueue_query(cudart: Cudart, lane: Lane, events: tuple[ctypes.c_void_p, ...]) -> None:
    """H2D copies, the engine (or its graph), D2H copies on the lane's stream, an event between phases."""
    stream = lane.stream.ptr
    started = time.perf_counter()
    cudart.record(events[0], stream)
    for host, device in lane.inputs:
        cudart.copy(device.ptr, host.ctypes.data, host.nbytes, _HOST_TO_DEVICE, stream)
    cudart.record(events[1], stream)
    if lane.graph_exec is not None:
        cudart.launch(lane.graph_exec, stream)
    elif not lane.context.execute_async_v3(stream):
        raise VerificationUnavailableError("TensorRT failed to enqueue the engine")
    cudart.record(events[2], stream)
    for _name, host, device in lane.outputs:
        cudart.copy(host.ctypes.data, device.ptr, host.nbytes, _DEVICE_TO_HOST, stream)
    cudart.record(events[3], stream)
    lane.enqueued.append((started, time.perf_counter()))


def run_queries(cudart: Cudart, lanes: Sequence[Lane], first: int, count: int) -> None:
    """Queries ``first .. first+count-1`` on every lane, each lane one query ahead of its wait."""
    for number in range(first, first + count):
        for lane in lanes:
            enqueue_query(cudart, lane, lane.events[number])
        if number > first:
            for lane in lanes:
                cudart.wait(lane.events[number - 1][3])
    for lane in lanes:
        lane.stream.synchronize()


def traces(
    cudart: Cudart, lanes: Sequence[Lane], base: ctypes.c_void_p, host_zero: float, first: int
) -> list[StreamTrace]:
    """Every timed query's times in ms since timing started: host clock for the enqueue, events for the rest."""
    found = []
    for lane in lanes:
        queries = []
        for number in range(first, len(lane.events)):
            h2d_start, h2d_end, compute_end, d2h_end = (cudart.elapsed_ms(base, e) for e in lane.events[number])
            enq_start, enq_end = ((t - host_zero) * 1000 for t in lane.enqueued[number])
            queries.append(
                QueryTrace(enq_start, enq_end, h2d_start, h2d_end, h2d_end, compute_end, compute_end, d2h_end)
            )
        found.append(StreamTrace(lane.index, lane.profile, queries))
    return found


def close_lane(cudart: Cudart, lane: Lane) -> None:
    for name, handle in (("cudaGraphExecDestroy", lane.graph_exec), ("cudaGraphDestroy", lane.graph)):
        if handle is not None:
            getattr(cudart.lib, name)(handle)
    for events in lane.events:
        for event in events:
            cudart.lib.cudaEventDestroy(event)
    for _host, device in lane.inputs:
        device.free()
    for _name, _host, device in lane.outputs:
        device.free()
    for pointer in lane.host_memory:
        cudart.lib.cudaFreeHost(pointer)
    lane.stream.free()
    lane.context = None  # releases the profile before another context takes it


def time_engine(
    trt: ModuleType, engine: Any, flavor: str, profile: int, feed: Mapping[str, np.ndarray], spec: VerifySpec,
    ranges: Sequence[Mapping[str, tuple[Sequence[int], Sequence[int]]]],
) -> TimedRun:  # fmt: skip
    """Time ``spec.streams`` contexts (``profile`` first, then other profiles admitting the feed's
    shapes), with CUDA graphs when ``spec.cuda_graph``. Call it with no other context of this
    engine alive."""
    shapes = {name: tuple(array.shape) for name, array in feed.items()}
    profiles, note = stream_profiles(profile, spec.streams, ranges, shapes)
    cudart = Cudart()
    lanes: list[Lane] = []
    base = None
    try:
        rtx_graph = spec.cuda_graph and flavor == "tensorrt_rtx"
        for index, chosen in enumerate(profiles):
            lanes.append(open_lane(trt, engine, cudart, index, chosen, feed, rtx_graph=rtx_graph))
            lanes[-1].events = [tuple(cudart.event() for _ in range(4)) for _ in range(spec.warmup + spec.iterations)]
        if spec.cuda_graph and flavor == "tensorrt":
            for lane in lanes:
                capture(cudart, lane)
        run_queries(cudart, lanes, 0, spec.warmup)
        base = cudart.event()
        host_zero = time.perf_counter()
        cudart.record(base, lanes[0].stream.ptr)
        for lane in lanes[1:]:
            cudart.stream_waits_for(lane.stream.ptr, base)
        run_queries(cudart, lanes, spec.warmup, spec.iterations)
        report = performance_report(traces(cudart, lanes, base, host_zero, spec.warmup))
        outputs = [{name: host.copy() for name, host, _device in lane.outputs} for lane in lanes]
    finally:
        for lane in lanes:
            close_lane(cudart, lane)
        if base is not None:
            cudart.lib.cudaEventDestroy(base)
    figures: dict[str, Any] = {
        "method": "cuda events",
        "cuda_graph": spec.cuda_graph,
        "streams": len(profiles),
        "stream_profiles": profiles,
        "iterations": spec.iterations,
        **report,
    }
    if note is not None:
        figures["streams_requested"] = spec.streams
        figures["streams_note"] = note
    return TimedRun(figures, outputs)


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
