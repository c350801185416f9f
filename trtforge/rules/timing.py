"""From per-query event times to trtexec's performance report: pure arithmetic, no GPU.

The GPU side (:mod:`trtforge.backend.timing`) records, for every timed query on every stream, the
host time around its enqueue and CUDA events around its host-to-device copies, its compute and its
device-to-host copies, in milliseconds since timing started (one zero for the host clock and the
device events). This module turns those times into the figures trtexec prints, with trtexec's
names and meanings (TensorRT, samples/common/sampleReporting.cpp, "Explanations of the
performance metrics"):

- ``h2d_latency_ms``, ``gpu_compute_time_ms``, ``d2h_latency_ms``: each phase of one query;
- ``latency_ms``: H2D Latency + GPU Compute Time + D2H Latency of one query;
- ``end_to_end_ms``: from a query's H2D start to its D2H end, waiting for the query before it included;
- ``enqueue_time_ms``: host time to enqueue one query (its copies, the engine or its CUDA graph, events);
- ``total_host_walltime_ms``: from the first query's enqueue to the last query's D2H end;
- ``throughput_qps``: queries / Total Host Walltime;
- ``total_gpu_compute_time_ms``: the sum of the queries' GPU Compute Times.

Each figure is min, max, mean, median and the 90th, 95th and 99th percentile, chosen as trtexec
chooses them. Tested on the CPU with synthetic event times (tests/test_timing.py).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import Any

# The events of one query in the order CUDA must complete them on its stream.
DEVICE_EVENTS = ("h2d_start", "h2d_end", "compute_start", "compute_end", "d2h_start", "d2h_end")
PERCENTILES = (90, 95, 99)
# trtexec warns when the median enqueue time exceeds this share of the median GPU compute time.
ENQUEUE_BOUND = 0.8


@dataclass(frozen=True)
class QueryTrace:
    """One timed query on one stream, in ms since timing started (host clock for the enqueue,
    CUDA events for the rest); the field names are trtexec's ``--exportTimes`` ones."""

    enqueue_start: float
    enqueue_end: float
    h2d_start: float
    h2d_end: float
    compute_start: float
    compute_end: float
    d2h_start: float
    d2h_end: float

    @property
    def h2d(self) -> float:
        return self.h2d_end - self.h2d_start

    @property
    def compute(self) -> float:
        return self.compute_end - self.compute_start

    @property
    def d2h(self) -> float:
        return self.d2h_end - self.d2h_start

    @property
    def latency(self) -> float:
        return self.h2d + self.compute + self.d2h

    @property
    def end_to_end(self) -> float:
        return self.d2h_end - self.h2d_start

    @property
    def enqueue(self) -> float:
        return self.enqueue_end - self.enqueue_start

    def as_json(self) -> dict[str, float]:
        return {f"{name}_ms": value for name, value in asdict(self).items()}


@dataclass(frozen=True)
class StreamTrace:
    """The timed queries of one execution context on its own stream."""

    stream: int
    profile: int
    queries: Sequence[QueryTrace]


def stats(values: Sequence[float]) -> dict[str, float]:
    """min, max, mean, median and percentiles, with trtexec's percentile rule: the value at index
    ``n - 1 - int((1 - p/100) * n)`` of the sorted values (at least 0), in integers so that p90 of
    ten values is the 9th, as trtexec's float arithmetic gives, not the 10th a double's rounding gives."""
    if not values:
        raise ValueError("no values to summarize")
    ordered = sorted(values)
    count = len(ordered)
    result = {
        "min": ordered[0],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
        "median": statistics.median(ordered),
    }
    for p in PERCENTILES:
        result[f"p{p}"] = ordered[max(count - 1 - (100 - p) * count // 100, 0)]
    return result


def order_violation(stream: StreamTrace) -> str | None:
    """The first event out of order on ``stream``, or None.

    On one stream CUDA completes work in the order it was enqueued: within a query the events come
    in :data:`DEVICE_EVENTS` order, and a query's H2D starts no earlier than the previous query's
    D2H ended. The host's enqueue ends no earlier than it starts.
    """
    previous_end: float | None = None
    for number, query in enumerate(stream.queries):
        where = f"stream {stream.stream} query {number}"
        if query.enqueue_end < query.enqueue_start:
            return f"{where}: enqueue_end {query.enqueue_end} < enqueue_start {query.enqueue_start}"
        for a, b in pairwise(DEVICE_EVENTS):
            if getattr(query, b) < getattr(query, a):
                return f"{where}: {b} {getattr(query, b)} < {a} {getattr(query, a)}"
        if previous_end is not None and query.h2d_start < previous_end:
            return f"{where}: h2d_start {query.h2d_start} < the previous query's d2h_end {previous_end}"
        previous_end = query.d2h_end
    return None


def _summary(queries: Sequence[QueryTrace]) -> dict[str, Any]:
    walltime = max(q.d2h_end for q in queries) - min(q.enqueue_start for q in queries)
    compute = [q.compute for q in queries]
    return {
        "queries": len(queries),
        "throughput_qps": len(queries) / walltime * 1000 if walltime > 0 else None,
        "latency_ms": stats([q.latency for q in queries]),
        "end_to_end_ms": stats([q.end_to_end for q in queries]),
        "enqueue_time_ms": stats([q.enqueue for q in queries]),
        "h2d_latency_ms": stats([q.h2d for q in queries]),
        "gpu_compute_time_ms": stats(compute),
        "d2h_latency_ms": stats([q.d2h for q in queries]),
        "total_host_walltime_ms": walltime,
        "total_gpu_compute_time_ms": sum(compute),
    }


def bottlenecks(summary: dict[str, Any]) -> list[str]:
    """trtexec's hints: what bounds throughput, when not GPU compute."""
    compute = summary["gpu_compute_time_ms"]["median"]
    found = []
    if summary["enqueue_time_ms"]["median"] > ENQUEUE_BOUND * compute:
        found.append("throughput may be bound by Enqueue Time rather than GPU Compute (cuda_graph: true may help)")
    if summary["h2d_latency_ms"]["median"] >= compute:
        found.append("throughput may be bound by host-to-device transfers of the inputs rather than GPU Compute")
    if summary["d2h_latency_ms"]["median"] >= compute:
        found.append("throughput may be bound by device-to-host transfers of the outputs rather than GPU Compute")
    return found


def performance_report(streams: Sequence[StreamTrace]) -> dict[str, Any]:
    """trtexec's summary over every query of every stream, then the same per stream with its trace.

    Raises ValueError when a stream has no query or an event is out of order (a measurement bug).
    """
    if not streams or any(not s.queries for s in streams):
        raise ValueError("every timed stream needs at least one query")
    for stream in streams:
        problem = order_violation(stream)
        if problem is not None:
            raise ValueError(f"timing events out of order: {problem}")
    summary = _summary([q for s in streams for q in s.queries])
    per_stream = []
    for stream in streams:
        entry = {"stream": stream.stream, "profile": stream.profile, **_summary(stream.queries)}
        entry["trace"] = [q.as_json() for q in stream.queries]
        per_stream.append(entry)
    return {**summary, "bottlenecks": bottlenecks(summary), "per_stream": per_stream}


def wall_time_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """Latency figures from whole-inference wall times in seconds (a runner that times itself,
    e.g. ONNX Runtime in the candidate seat): no phases, one query at a time."""
    total = sum(seconds)
    return {
        "queries": len(seconds),
        "throughput_qps": len(seconds) / total if total > 0 else None,
        "latency_ms": stats([s * 1000 for s in seconds]),
    }


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


