"""The verifier stage: does an engine compute what its ONNX model computes, and how fast?

For each optimization profile and each shape point of the recipe's ``verify`` spec (default:
min, opt and max of every profile) the stage makes inputs (seeded, per-input distributions, or
the user's data), runs the candidate (the engine, selecting the profile) and the reference
(ONNX Runtime on the CPU), and compares them with polygraphy's Comparator. Results are recorded
per (artifact, GPU model, runtime version); an artifact's status on a GPU model is that of its
newest verification there.

The logic here does not care what sits in the candidate seat: on a GPU it is a TensorRT engine
(:mod:`trtforge.backend.run`); in tests and for ``--candidate-onnx`` style checks it is another
ONNX Runtime runner. Reference outputs are stored in the store, keyed by model sha256, inputs and
shapes, so they are computed once (``--reference-only`` fills them without a GPU).
"""


from __future__ import annotations

from pathlib import Path

from trtforge.backend.run import RuntimeInfo
from trtforge.core.errors import VerificationUnavailableError
from trtforge.rules.compatibility import Envelope
from trtforge.stages.verify.checks import DIAGNOSTIC_ENGINE, check, make_cases, run_reference_only, tolerances_for
from trtforge.stages.verify.inputs import (
    Case,
    ShapePoint,
    generate_feed,
    load_user_feeds,
    normalized_profiles,
    shape_points,
    user_cases,
)
from trtforge.stages.verify.loaded import diagnostic_candidate, plan_candidate
from trtforge.stages.verify.reference import REFERENCE_NAME, OnnxModelCandidate, Reference, reference_key
from trtforge.stages.verify.report import Candidate, PointResult, VerificationReport, VerifyStatus, iter_failures
from trtforge.stages.verify.subject import Subject, resolve_subject, subject_from_artifact, subject_from_recipe
from trtforge.store.handle import StoreHandle

__all__ = [
    "REFERENCE_NAME",
    "Candidate",
    "Case",
    "OnnxModelCandidate",
    "PointResult",
    "Reference",
    "RuntimeInfo",
    "ShapePoint",
    "Subject",
    "VerificationReport",
    "VerifyStatus",
    "check",
    "generate_feed",
    "iter_failures",
    "load_user_feeds",
    "make_cases",
    "normalized_profiles",
    "reference_key",
    "resolve_subject",
    "run_reference_only",
    "shape_points",
    "subject_from_artifact",
    "subject_from_recipe",
    "tolerances_for",
    "user_cases",
    "verify",
]


def verify(
    ref: str,
    *,
    store: str | Path | None = None,
    catalog: str | None = None,
    per_layer: bool = False,
    reference_only: bool = False,
    save_results: Path | None = None,
    data: Path | None = None,
) -> VerificationReport:
    """`trtforge verify`: check an artifact (or a recipe's built artifact) on this machine's GPU.

    Without a usable GPU and runtime this raises VerificationUnavailableError before anything is
    run or recorded: the artifact stays unverified. ``reference_only`` needs no GPU and no build.
    """
    from trtforge.backend.compare import require_verify_deps

    require_verify_deps()
    handle = StoreHandle(store, catalog)
    try:
        if reference_only:
            subject = resolve_subject(ref, handle, need_artifact=False)
            return run_reference_only(
                subject, store=handle.ensure(), per_layer=per_layer, data=data, save_results=save_results
            )
        subject = resolve_subject(ref, handle, need_artifact=True)
        artifact = subject.artifact
        assert artifact is not None
        from trtforge.backend.loader import needs_own_process, run_in_flavor
        from trtforge.backend.plugins import check_needed
        from trtforge.backend.run import gpu_runtime_for  # neither imports TensorRT

        if needs_own_process(artifact.flavor):  # polygraphy is bound to the other flavor here
            return run_in_flavor(
                artifact.flavor,  # type: ignore[arg-type]
                verify,
                ref,
                store=store,
                catalog=catalog,
                per_layer=per_layer,
                save_results=save_results,
                data=data,
            )
        check_needed(artifact.details.plugins_needed)  # a library gone or changed: refused before anything runs
        try:
            backend, runtime = gpu_runtime_for(
                artifact.flavor,  # type: ignore[arg-type]
                artifact.trt_version,
                envelope=Envelope.from_details(artifact.details),
                compute_capabilities=artifact.compute_capabilities,
            )
        except VerificationUnavailableError as exc:  # say which engine it would have checked
            exc.detail.update(artifact_id=artifact.id, build_key=artifact.build_key)
            raise
        opened = handle.ensure()
        model = (subject.model_path, subject.model_sha256)
        if per_layer:
            # A diagnostic: the recorded (effective) recipe rebuilt with every tensor marked. It is
            # another engine than the stored plan, so its result is reported, never recorded.
            candidate = diagnostic_candidate(opened, artifact, backend, model)
            engine = DIAGNOSTIC_ENGINE
        else:
            candidate = plan_candidate(opened, artifact, backend, weights=model)  # a stripped plan needs them first
            engine = f"the artifact's plan {artifact.plan_sha256[:12]}"
        report = check(
            subject, candidate, runtime, store=opened, per_layer=per_layer, save_results=save_results, data=data
        )
        report.engine = engine
        if save_results is not None:  # name the engine the saved outputs came from, for `denylist derive`
            from trtforge.backend.run_results import DIAGNOSTIC_ENGINE as DIAGNOSTIC
            from trtforge.backend.run_results import PLAN_ENGINE, write_engine_record

            write_engine_record(
                save_results,
                DIAGNOSTIC if per_layer else PLAN_ENGINE,
                artifact_id=artifact.id,
                plan_sha256=None if per_layer else artifact.plan_sha256,
                layer_info=candidate.layer_info() if per_layer else None,
            )
        return report
    finally:
        handle.close()
