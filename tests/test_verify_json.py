"""`verify --json` against its JSON Schema (docs/schemas/verify.json), and what the verifier does
with an engine's timed runs, on the CPU.

An engine times itself on a GPU (trtforge/backend/timing.py) and hands the verifier trtexec's
figures and each timed stream's outputs. Here ONNX Runtime sits in the candidate seat (as in
tests/test_verify.py) and hands over the same: its timed outputs come from a real ONNX Runtime run of
a model (the same one, or one with a weight changed), its figures from event times through the real
arithmetic (trtforge/rules/timing.py). No TensorRT is faked: only the GPU's event times are given.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tests import json_schemas, onnx_models
from trtforge.backend.timing import TimedRun
from trtforge.cli._output import with_envelope
from trtforge.cli.verify import render_report
from trtforge.rules.timing import QueryTrace, StreamTrace, performance_report
from trtforge.stages.build import BuildStage
from trtforge.stages.verify import OnnxModelCandidate, RuntimeInfo, check, iter_failures, subject_from_artifact
from trtforge.store import open_existing_store

pytestmark = pytest.mark.slow  # reference-only verify runs through ONNX Runtime, many times (.ci/run: pytest -m slow)

RUNTIME = RuntimeInfo("ONNX Runtime stand-in (test)", None, "onnxruntime", "test")

RECIPE = """\
name: heads
model: {onnx: models/heads.onnx}
backend: tensorrt_rtx
profiles:
  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}
  - x: {min: [1, 4], opt: [3, 4], max: [8, 4]}
build: {optimization_level: 0}
verify: {atol: 1e-5, rtol: 1e-5, iterations: 3, warmup: 1, streams: 2, cuda_graph: true}
"""


def as_printed(report: Any) -> dict[str, Any]:
    """The report as `verify --json` prints it (with the envelope every result has; json.dumps with
    default=str, read back)."""
    printed = with_envelope(report.as_json(), 0 if report else 1, report.failure())
    return json.loads(json.dumps(printed, default=str))


def schema_errors(data: Any) -> list[str]:
    return json_schemas.errors("verify", data)


def event_times(streams: int, iterations: int) -> list[list[QueryTrace]]:
    """Queries back to back on each stream, streams staggered by 0.05 ms (their copies overlap compute)."""
    found = []
    for stream in range(streams):
        queries, start = [], 0.02 + 0.05 * stream
        for _ in range(iterations):
            q = QueryTrace(start - 0.02, start - 0.01, start, start + 0.1, start + 0.1, start + 1.1, start + 1.1,
                           start + 1.3)  # fmt: skip
            queries.append(q)
            start = q.d2h_end
        found.append(queries)
    return found


class TimedOnnxCandidate(OnnxModelCandidate):
    """ONNX Runtime in the candidate seat, timed the way an engine times itself: ``spec.streams``
    streams on the recipe's two profiles, each stream's outputs from a real ONNX Runtime run of ``timed``."""

    def __init__(self, model_path: Path, timed: Path) -> None:
        super().__init__(model_path)
        self.timed = timed

    def benchmark(self, profile: int, feed: dict[str, Any], spec: Any) -> TimedRun:
        from trtforge.backend.compare import onnxrt_runner, quiet

        profiles = [(profile + i) % 2 for i in range(spec.streams)]
        with quiet(), onnxrt_runner(self.timed, name="timed") as runner:
            outputs = [{n: v.copy() for n, v in runner.infer(dict(feed)).items()} for _ in profiles]
        times = event_times(len(profiles), spec.iterations)
        traces = [StreamTrace(i, p, q) for i, (p, q) in enumerate(zip(profiles, times, strict=True))]
        figures = {"method": "cuda events", "cuda_graph": spec.cuda_graph, "streams": len(profiles),
                   "stream_profiles": profiles, "iterations": spec.iterations, **performance_report(traces),
                   "device_memory_bytes": 4096, "engine_device_memory_bytes": 8192}  # fmt: skip
        return TimedRun(figures, outputs)


@pytest.fixture
def built(tmp_path: Path, store: Path):
    """A real TensorRT-RTX build of the two-head model; its model, and a copy with w2 changed."""
    folder = tmp_path / "recipes"
    model = onnx_models.two_heads(seed=3)
    model_path = onnx_models.save(model, folder / "models" / "heads.onnx")
    changed = onnx_models.save(onnx_models.perturbed(model, "w2", delta=5.0), tmp_path / "changed" / "heads.onnx")
    (folder / "heads.yaml").write_text(RECIPE)
    stage = BuildStage(store)
    try:
        result = stage.build_one(folder / "heads.yaml")
    finally:
        stage.close()
    assert result.status == "built", result
    opened = open_existing_store(store)
    assert opened is not None
    yield opened, subject_from_artifact(opened.catalog.get_artifact(result.artifact_id)), model_path, changed
    opened.close()


def test_reference_only_json_matches_the_schema(built, cli, store: Path) -> None:
    _opened, subject, _model, _changed = built
    result = cli("verify", subject.artifact.id, "--reference-only", "--store", store, "--json")
    assert result.code == 0, result
    assert schema_errors(result.json()) == []
    assert result.json()["perf"] == [] and result.json()["status"] == "reference-only"


def test_a_report_timed_by_wall_time_matches_the_schema(built) -> None:
    opened, subject, model, _changed = built
    report = check(subject, OnnxModelCandidate(model), RUNTIME, store=opened)
    data = as_printed(report)
    assert schema_errors(data) == [] and report.status == "passed"
    assert [(p["method"], p["queries"]) for p in data["perf"]] == [("runner wall time", 3)] * 2


def test_timed_streams_are_compared_with_the_plain_run(built) -> None:
    """Each timed stream's outputs (its own context, profile and CUDA graph on a GPU) are checked
    against the plain run's at the same inputs; a stream computing something else fails the
    verification, though every point matched the reference."""
    opened, subject, model, changed = built
    same = check(subject, TimedOnnxCandidate(model, timed=model), RUNTIME, store=opened)
    assert same.status == "passed" and all(p["outputs_match_plain_run"] for p in same.perf)
    for perf in same.perf:
        assert [s["plain_run"]["passed"] for s in perf["per_stream"]] == [True, True]
        assert {o["name"] for s in perf["per_stream"] for o in s["plain_run"]["outputs"]} == {"y1", "y2"}
    data = as_printed(same)
    assert schema_errors(data) == []

    other = check(subject, TimedOnnxCandidate(model, timed=changed), RUNTIME, store=opened)
    assert all(p.passed for p in other.points), "the plain run matches the reference"
    assert other.status == "failed" and not any(p["outputs_match_plain_run"] for p in other.perf)
    differing = {(s["stream"], o["name"]) for p in other.perf for s in p["per_stream"]
                 for o in s["plain_run"]["outputs"] if not o["passed"]}  # fmt: skip
    assert differing == {(0, "y2"), (1, "y2")}
    lines = [line for line in iter_failures(other) if "timed stream" in line]
    assert len(lines) == 4 and all("y2" in line and "CUDA graph" in line for line in lines), lines
    assert schema_errors(as_printed(other)) == []
    assert opened.catalog.statuses(subject.artifact.id) == {RUNTIME.gpu_name: "failed"}


def test_the_catalog_keeps_the_figures_without_the_per_query_traces(built) -> None:
    opened, subject, model, _changed = built
    report = check(subject, TimedOnnxCandidate(model, timed=model), RUNTIME, store=opened)
    assert all(len(s["trace"]) == 3 for p in report.perf for s in p["per_stream"])
    [row] = opened.catalog.verifications(subject.artifact.id)
    assert [sorted(p) for p in row.perf] == [sorted(p) for p in report.perf]
    for kept in row.perf:
        assert kept["per_stream"] and all("trace" not in s and "gpu_compute_time_ms" in s for s in kept["per_stream"])


def test_the_human_report_uses_trtexecs_names(built) -> None:
    opened, subject, model, _changed = built
    report = check(subject, TimedOnnxCandidate(model, timed=model), RUNTIME, store=opened)
    human = io.StringIO()
    render_report(Console(file=human, width=200), report)
    text = human.getvalue()
    assert "perf profile 0 opt (2 streams on profiles 0, 1, CUDA graphs): Throughput" in text
    lines = [line.strip() for line in text.splitlines()]
    for name in ("Latency:", "Enqueue Time:", "H2D Latency:", "GPU Compute Time:", "D2H Latency:",
                 "Total Host Walltime", "timed outputs match the plain run's"):  # fmt: skip
        assert sum(line.startswith(name) for line in lines) == 2, (name, text)
    assert text.count("Total GPU Compute Time") == 2


@pytest.mark.parametrize(
    "change",
    [
        "drop gpu_compute_time_ms of a stream",
        "drop the summary's h2d_latency_ms",
        "drop p99 of latency_ms",
        "a negative D2H latency",
        "an unknown field in a stream",
        "no outputs_match_plain_run",
    ],
)
def test_the_schema_rejects_a_report_missing_or_mangling_a_timing_field(built, change: str) -> None:
    opened, subject, model, _changed = built
    data = as_printed(check(subject, TimedOnnxCandidate(model, timed=model), RUNTIME, store=opened))
    broken = copy.deepcopy(data)
    perf = broken["perf"][0]
    if change == "drop gpu_compute_time_ms of a stream":
        del perf["per_stream"][1]["gpu_compute_time_ms"]
    elif change == "drop the summary's h2d_latency_ms":
        del perf["h2d_latency_ms"]
    elif change == "drop p99 of latency_ms":
        del perf["latency_ms"]["p99"]
    elif change == "a negative D2H latency":
        perf["d2h_latency_ms"]["min"] = -0.1
    elif change == "an unknown field in a stream":
        perf["per_stream"][0]["gpu_time"] = 1.0
    else:
        del perf["outputs_match_plain_run"]
    assert schema_errors(data) == [] and schema_errors(broken) != []
