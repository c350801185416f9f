"""The timing breakdown's arithmetic (trtforge/rules/timing.py), on the CPU with synthetic event times.

On a GPU, :mod:`trtforge.backend.timing` records these times with CUDA events and the host clock;
everything from those times to `verify --json`'s figures is checked here, by hand-computed values.
"""

from __future__ import annotations

import pytest

from trtforge.rules.timing import QueryTrace, StreamTrace, performance_report, stats, wall_time_summary


def query(start: float, h2d: float, compute: float, d2h: float, enqueue: float = 0.01) -> QueryTrace:
    """A query whose H2D starts at ``start`` (ms), its phases back to back; enqueued just before."""
    return QueryTrace(
        enqueue_start=start - 0.02,
        enqueue_end=start - 0.02 + enqueue,
        h2d_start=start,
        h2d_end=start + h2d,
        compute_start=start + h2d,
        compute_end=start + h2d + compute,
        d2h_start=start + h2d + compute,
        d2h_end=start + h2d + compute + d2h,
    )


def test_trtexec_percentile_rule_and_median() -> None:
    values = [float(v) for v in range(1, 11)]  # 1..10
    found = stats(values)
    assert (found["min"], found["max"], found["mean"], found["median"]) == (1.0, 10.0, 5.5, 5.5)
    # trtexec: index n-1-int((1-p/100)*n): p90 -> 10-1-1 = 8 (value 9); p95 -> 9-int(0.5) = 9; p99 -> 9.
    assert (found["p90"], found["p95"], found["p99"]) == (9.0, 10.0, 10.0)
    odd = stats([5.0, 1.0, 3.0])
    assert odd["median"] == 3.0 and odd["p90"] == 5.0
    with pytest.raises(ValueError):
        stats([])


def test_one_stream_phases_latency_walltime_and_throughput() -> None:
    # Two queries on one stream: 0.1 ms H2D, 1.0 ms compute, 0.2 ms D2H; the second starts when the first ends.
    first = query(0.02, 0.1, 1.0, 0.2)
    second = query(first.d2h_end, 0.1, 3.0, 0.2, enqueue=0.05)
    report = performance_report([StreamTrace(0, 1, [first, second])])
    assert report["queries"] == 2
    assert report["h2d_latency_ms"]["median"] == pytest.approx(0.1)
    assert report["gpu_compute_time_ms"]["min"] == pytest.approx(1.0)
    assert report["gpu_compute_time_ms"]["max"] == pytest.approx(3.0)
    assert report["d2h_latency_ms"]["mean"] == pytest.approx(0.2)
    # Latency = H2D + compute + D2H of one query (trtexec), not the time between events of two queries.
    assert report["latency_ms"]["min"] == pytest.approx(1.3) and report["latency_ms"]["max"] == pytest.approx(3.3)
    assert report["enqueue_time_ms"]["max"] == pytest.approx(0.05)
    # Walltime: from the first enqueue (0.0) to the last D2H end (0.02 + 1.3 + 3.3).
    assert report["total_host_walltime_ms"] == pytest.approx(4.62)
    assert report["throughput_qps"] == pytest.approx(2 / 4.62 * 1000)
    assert report["total_gpu_compute_time_ms"] == pytest.approx(4.0)
    [stream] = report["per_stream"]
    assert (stream["stream"], stream["profile"], stream["queries"]) == (0, 1, 2)
    assert [q["h2d_start_ms"] for q in stream["trace"]] == [first.h2d_start, second.h2d_start]
    assert set(stream["trace"][0]) == {f"{name}_ms" for name in (
        "enqueue_start", "enqueue_end", "h2d_start", "h2d_end", "compute_start", "compute_end", "d2h_start", "d2h_end"
    )}  # fmt: skip


def test_overlapping_streams_count_every_query_over_the_shared_walltime() -> None:
    # Stream 1 copies while stream 0 computes: both streams' 4 queries finish by 2.62 ms.
    s0 = [query(0.02, 0.1, 1.0, 0.2), query(1.32, 0.1, 1.0, 0.2)]
    s1 = [query(0.12, 0.1, 1.0, 0.2), query(1.42, 0.1, 1.0, 0.2)]
    report = performance_report([StreamTrace(0, 0, s0), StreamTrace(1, 1, s1)])
    assert report["queries"] == 4
    assert report["total_host_walltime_ms"] == pytest.approx(2.72)
    assert report["throughput_qps"] == pytest.approx(4 / 2.72 * 1000)
    # Per stream: its own queries over its own walltime.
    assert [s["queries"] for s in report["per_stream"]] == [2, 2]
    assert report["per_stream"][0]["throughput_qps"] == pytest.approx(2 / 2.62 * 1000)
    assert [s["profile"] for s in report["per_stream"]] == [0, 1]


@pytest.mark.parametrize(
    "field, value, problem",
    [
        ("compute_end", 0.05, "compute_end"),  # compute ends before it starts
        ("d2h_start", 0.5, "d2h_start"),  # D2H starts before compute ends
        ("enqueue_end", -1.0, "enqueue_end"),
    ],
)
def test_events_out_of_order_are_a_measurement_bug(field: str, value: float, problem: str) -> None:
    good = query(0.02, 0.1, 1.0, 0.2)
    bad = QueryTrace(**{**good.__dict__, field: value})
    with pytest.raises(ValueError, match=f"stream 0 query 0: {problem}"):
        performance_report([StreamTrace(0, 0, [bad])])


def test_a_query_starting_before_the_previous_one_ended_on_its_stream_is_out_of_order() -> None:
    first = query(0.02, 0.1, 1.0, 0.2)
    overlapping = query(1.0, 0.1, 1.0, 0.2)  # same stream, starts before the first's D2H ended
    with pytest.raises(ValueError, match="query 1: h2d_start"):
        performance_report([StreamTrace(0, 0, [first, overlapping])])
    with pytest.raises(ValueError, match="at least one query"):
        performance_report([StreamTrace(0, 0, [])])


def test_bottleneck_hints_follow_trtexec() -> None:
    copies = performance_report([StreamTrace(0, 0, [query(0.02, 2.0, 1.0, 0.2)])])
    assert [h.split(" by ")[1].split(" ")[0] for h in copies["bottlenecks"]] == ["host-to-device"]
    enqueue = performance_report([StreamTrace(0, 0, [query(0.02, 0.1, 1.0, 0.2, enqueue=0.9)])])
    assert len(enqueue["bottlenecks"]) == 1 and "Enqueue Time" in enqueue["bottlenecks"][0]
    balanced = performance_report([StreamTrace(0, 0, [query(0.02, 0.1, 1.0, 0.2)])])
    assert balanced["bottlenecks"] == []


def test_wall_time_summary_of_a_runner_that_times_itself() -> None:
    found = wall_time_summary([0.001, 0.003])
    assert found["queries"] == 2 and found["throughput_qps"] == pytest.approx(500.0)
    assert found["latency_ms"]["median"] == pytest.approx(2.0) and found["latency_ms"]["max"] == pytest.approx(3.0)
