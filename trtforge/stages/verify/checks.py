"""The checks: candidate vs reference at every case, within tolerances, and timed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.backend.run import RuntimeInfo
from trtforge.core.errors import BadInputError
from trtforge.core.recipe_paths import path_hint
from trtforge.rules.onnx_model import ModelInfo, read_model
from trtforge.rules.recipe import VerifySpec, expand_path
from trtforge.rules.timing import wall_time_summary
from trtforge.stages.verify.inputs import Case, ShapePoint, generate_feed, load_user_feeds, shape_points, user_cases
from trtforge.stages.verify.record import _record, _save_run_results, _write_text
from trtforge.stages.verify.reference import REFERENCE_NAME, Reference
from trtforge.stages.verify.report import Candidate, PointResult, VerificationReport, VerifyStatus
from trtforge.stages.verify.subject import Subject
from trtforge.store import Store

if TYPE_CHECKING:
    import numpy as np

    from trtforge.backend.compare import OutputStats, Tolerance


def make_cases(subject: Subject, model: ModelInfo, data: Path | None = None) -> list[Case]:
    if data is None and subject.spec.data is not None:
        try:
            data = expand_path(subject.spec.data, subject.base_dir, "verify.data")
        except ValueError as exc:
            raise BadInputError(str(exc), hint=path_hint(exc)) from None
    # No profiles (every input static): the engine's one implicit profile, at the model's shapes.
    profiles = subject.profiles or [{}]
    if data is not None:
        return user_cases(load_user_feeds(data), model.inputs, profiles, data)
    points = shape_points(profiles, subject.spec) if subject.profiles else [ShapePoint(0, "static", ())]
    return [Case(p, generate_feed(model.inputs, p, subject.spec)) for p in points]


DIAGNOSTIC_ENGINE = (
    "per-layer diagnostic engine (the recorded recipe rebuilt with every tensor marked; not the stored plan); "
    "not recorded as a verification"
)


def tolerances_for(spec: VerifySpec, names: Sequence[str]) -> dict[str, Tolerance]:
    from trtforge.backend.compare import Tolerance

    result = {}
    for name in names:
        override = spec.outputs.get(name)
        atol = override.atol if override is not None and override.atol is not None else spec.atol
        rtol = override.rtol if override is not None and override.rtol is not None else spec.rtol
        result[name] = Tolerance(atol, rtol)
    return result


def _stats_json(stats: OutputStats, intermediate: bool) -> dict[str, Any]:
    data = stats.as_json()
    data["intermediate"] = intermediate
    return data


def _missing_output(name: str, tol: Tolerance, problem: str) -> dict[str, Any]:
    return {"name": name, "passed": False, "atol": tol.atol, "rtol": tol.rtol, "elements": 0, "mismatches": 0,
            "max_abs": None, "mean_abs": None, "max_rel": None, "mean_rel": None, "problem": problem}  # fmt: skip


def _check_case(
    case: Case,
    runner: Any,
    reference: Reference,
    candidate_name: str,
    model_outputs: Sequence[str],
    spec: VerifySpec,
    saved: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] | None,
) -> tuple[PointResult, dict[str, np.ndarray]]:
    """The candidate's outputs at ``case`` against the reference's; also returns those outputs."""
    from trtforge.backend.compare import compare, quiet

    ref_out, reused = reference.outputs(case.feed, case.point)
    with quiet():
        cand_out = {name: value.copy() for name, value in runner.infer(dict(case.feed)).items()}
    if saved is not None:
        saved.append((cand_out, ref_out))
    stats = compare(
        cand_out,
        ref_out,
        tolerances_for(spec, list(ref_out)),
        candidate_name=candidate_name,
        reference_name=REFERENCE_NAME,
    )
    outputs = [_stats_json(s, name not in model_outputs) for name, s in stats.items()]
    for name in model_outputs:
        if name not in stats:
            tol = tolerances_for(spec, [name])[name]
            missing = _missing_output(name, tol, "the candidate did not produce this output")
            outputs.append({**missing, "intermediate": False})
    per_layer = reference.per_layer
    first = next((o["name"] for o in outputs if not o["passed"]), None) if per_layer else None
    point = PointResult(
        profile=case.point.profile,
        label=case.point.label,
        shapes=case.point.shape_map,
        passed=all(o["passed"] for o in outputs if not o["intermediate"]),
        reference_reused=reused,
        outputs=outputs,
        first_divergent=first,
    )
    return point, cand_out


def _time_profile(
    candidate: Any, runner: Any, profile: int, case: Case, spec: VerifySpec, plain: dict[str, np.ndarray]
) -> dict[str, Any]:
    """GPU candidates time themselves (trtexec's figures; CUDA graphs, several streams), and their
    timed outputs are compared with ``plain``, the plain run's at the same point; others are timed
    by runner wall time."""
    benchmark = getattr(candidate, "benchmark", None)
    if benchmark is not None:
        run = benchmark(profile, case.feed, spec)
        figures: dict[str, Any] = run.figures
        compare_timed_outputs(figures, run.outputs, plain, spec)
    else:
        from trtforge.backend.compare import time_runner

        times = time_runner(runner, case.feed, iterations=spec.iterations, warmup=spec.warmup)
        figures = {"method": "runner wall time", "iterations": spec.iterations, **wall_time_summary(times)}
    return {"profile": profile, "label": case.point.label, "shapes": case.point.shape_map, **figures}


def compare_timed_outputs(
    figures: dict[str, Any], timed: Sequence[dict[str, np.ndarray]], plain: dict[str, np.ndarray], spec: VerifySpec
) -> None:
    """Each timed stream's outputs (its context, its profile, its CUDA graph) against the plain run's
    at the same inputs, within the verify tolerances: ``per_stream[i]["plain_run"]`` and
    ``outputs_match_plain_run``. A stream that computes something else fails the verification."""
    from trtforge.backend.compare import compare

    tolerances = tolerances_for(spec, list(plain))
    for entry, outputs in zip(figures["per_stream"], timed, strict=True):
        stats = compare(outputs, plain, tolerances, candidate_name=f"timed stream {entry['stream']}",
                        reference_name="plain run")  # fmt: skip
        found = [s.as_json() for s in stats.values()]
        for name in sorted(set(plain) - set(stats)):
            found.append(_missing_output(name, tolerances[name], "the timed run did not produce this output"))
        entry["plain_run"] = {"passed": all(o["passed"] for o in found), "outputs": found}
    figures["outputs_match_plain_run"] = all(e["plain_run"]["passed"] for e in figures["per_stream"])


def check(
    subject: Subject,
    candidate: Candidate,
    runtime: RuntimeInfo,
    *,
    store: Store | None,
    per_layer: bool = False,
    save_results: Path | None = None,
    data: Path | None = None,
    record: bool = True,
) -> VerificationReport:
    """Run the candidate and the reference at every case, compare, time, and record the result.

    A ``per_layer`` run is a diagnostic of another engine (every tensor marked changes fusion):
    it is reported, never recorded as the artifact's verification.
    """
    model = read_model(subject.model_path, subject.model_sha256)
    model_outputs = [t.name for t in model.outputs]
    cases = make_cases(subject, model, data)
    saved: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] | None = [] if save_results else None
    points: list[PointResult] = []
    perf: list[dict[str, Any]] = []
    started = time.perf_counter()
    with Reference(subject, store, per_layer=per_layer) as reference:
        for profile in sorted({c.point.profile for c in cases}):
            in_profile = [c for c in cases if c.point.profile == profile]
            timed = next((c for c in in_profile if c.point.label == "opt"), in_profile[0])
            plain: dict[str, np.ndarray] = {}
            with candidate.runner(profile) as runner:
                for case in in_profile:
                    point, outputs = _check_case(
                        case, runner, reference, candidate.name, model_outputs, subject.spec, saved
                    )
                    points.append(point)
                    plain = outputs if case is timed else plain
                if subject.spec.iterations > 0 and getattr(candidate, "benchmark", None) is None:
                    perf.append(_time_profile(candidate, runner, profile, timed, subject.spec, plain))
            # An engine times itself with contexts of its own, each needing a profile no other live
            # context holds: only once the runner (whose context holds ``profile``) is closed.
            if subject.spec.iterations > 0 and getattr(candidate, "benchmark", None) is not None:
                perf.append(_time_profile(candidate, None, profile, timed, subject.spec, plain))
    agree = all(p.get("outputs_match_plain_run", True) for p in perf)
    status: VerifyStatus = "passed" if all(p.passed for p in points) and agree else "failed"
    report = VerificationReport(
        subject=subject.label,
        name=subject.name,
        status=status,
        artifact_id=subject.artifact.id if subject.artifact is not None else None,
        runtime=runtime,
        points=points,
        perf=perf,
        per_layer=per_layer,
    )
    if saved is not None and save_results is not None:
        report.saved_results = _save_run_results(save_results, candidate.name, saved)
    if per_layer:
        report.engine = DIAGNOSTIC_ENGINE
    elif record and store is not None and subject.artifact is not None:
        report.verification_id = _record(store, subject, report, time.perf_counter() - started)
    return report


def run_reference_only(subject: Subject, *, store: Store | None, per_layer: bool = False, data: Path | None = None,
                   save_results: Path | None = None) -> VerificationReport:  # fmt: skip
    """Run just the reference at every case (no GPU), storing its outputs for later verifications."""
    model = read_model(subject.model_path, subject.model_sha256)
    cases = make_cases(subject, model, data)
    points = []
    saved = []
    with Reference(subject, store, per_layer=per_layer) as reference:
        for case in cases:
            outputs, reused = reference.outputs(case.feed, case.point)
            saved.append(outputs)
            points.append(
                PointResult(
                    profile=case.point.profile,
                    label=case.point.label,
                    shapes=case.point.shape_map,
                    passed=None,  # compared against nothing: reference-only, never "passed"
                    reference_reused=reused,
                    outputs=[{"name": n, "shape": list(v.shape), "dtype": str(v.dtype)} for n, v in outputs.items()],
                )
            )
    report = VerificationReport(
        subject=subject.label,
        name=subject.name,
        status="reference-only",
        artifact_id=subject.artifact.id if subject.artifact is not None else None,
        runtime=None,
        points=points,
        per_layer=per_layer,
    )
    if save_results is not None:
        from trtforge.backend.compare import run_results_json

        _write_text(save_results, run_results_json([(REFERENCE_NAME, saved)]))
        report.saved_results = str(save_results)
    return report
