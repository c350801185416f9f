"""What a verification found: per shape point, per output; truthy unless a check failed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

from trtforge.backend.run import RuntimeInfo
from trtforge.core.errors import CheckFailedError

VerifyStatus = Literal["passed", "failed", "reference-only"]


class Candidate(Protocol):
    """The runner in the candidate seat (a TensorRT engine on a GPU; ONNX Runtime in tests)."""

    name: str

    def runner(self, profile: int) -> AbstractContextManager[Any]:
        """A polygraphy runner (context manager with ``infer``) using optimization profile ``profile``."""
        ...


@dataclass
class PointResult:
    """One shape point. ``passed`` is None where nothing was compared (``--reference-only``)."""

    profile: int
    label: str
    shapes: dict[str, list[int]]
    passed: bool | None
    reference_reused: bool
    outputs: list[dict[str, Any]]
    first_divergent: str | None = None  # with --per-layer: first tensor (graph order) out of tolerance

    @property
    def status(self) -> VerifyStatus:
        if self.passed is None:
            return "reference-only"
        return "passed" if self.passed else "failed"


@dataclass
class VerificationReport:
    """The outcome of `trtforge verify`; truthy unless a check failed."""

    subject: str
    name: str
    status: VerifyStatus
    artifact_id: str | None
    runtime: RuntimeInfo | None
    points: list[PointResult]
    perf: list[dict[str, Any]] = field(default_factory=list)
    verification_id: str | None = None
    saved_results: str | None = None
    per_layer: bool = False
    engine: str | None = None  # which engine ran: the artifact's plan, or a per-layer diagnostic engine

    def __bool__(self) -> bool:
        return self.status != "failed"

    @property
    def failures(self) -> list[tuple[PointResult, dict[str, Any]]]:
        if self.status == "reference-only":
            return []
        return [(p, o) for p in self.points for o in p.outputs if not o["passed"] and not o["intermediate"]]

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["runtime"] = asdict(self.runtime) if self.runtime is not None else None
        for point, shown in zip(self.points, data["points"], strict=True):
            shown["status"] = point.status
        return data

    def failure(self) -> CheckFailedError | None:
        """Why this verification failed, in one line (the first failing output, and how many), for
        `--json`; None unless it failed."""
        if self.status != "failed":
            return None
        lines = list(iter_failures(self)) or ["outputs out of tolerance"]
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        return CheckFailedError(f"{self.name} failed verification: {lines[0]}{more}", more=tuple(lines[1:]))


def iter_failures(report: VerificationReport) -> Iterator[str]:
    """One line per failing output, for people: against the reference, then timed runs against the plain run."""
    yield from _reference_failures(report)
    yield from timed_failures(report.perf)


def timed_failures(perf: list[dict[str, Any]]) -> Iterator[str]:
    """One line per timed stream whose outputs differ from the plain run's at the same inputs."""
    for entry in perf:
        how = "CUDA graph, " if entry.get("cuda_graph") else ""
        for stream in entry.get("per_stream", []):
            compared = stream.get("plain_run")
            if compared is None or compared["passed"]:
                continue
            names = ", ".join(o["name"] for o in compared["outputs"] if not o["passed"])
            yield (
                f"profile {entry['profile']} {entry['label']}: timed stream {stream['stream']} ({how}context on "
                f"profile {stream['profile']}) computed {names} differently from the plain run at the same inputs"
            )


def _reference_failures(report: VerificationReport) -> Iterator[str]:
    for point, output in report.failures:
        where = f"profile {point.profile} {point.label} {point.shapes}"
        if output.get("problem"):
            yield f"{where}: {output['name']}: {output['problem']}"
        else:
            yield (
                f"{where}: {output['name']}: {output['mismatches']}/{output['elements']} elements out of tolerance "
                f"(max abs {output['max_abs']:.3g}, max rel {output['max_rel']:.3g}; "
                f"atol {output['atol']:g}, rtol {output['rtol']:g})"
            )
