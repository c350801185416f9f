"""Recording a verification in the catalog, and saving run results for polygraphy's tools."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.core.errors import BadInputError
from trtforge.core.fsutil import atomic_write
from trtforge.stages.verify.reference import REFERENCE_NAME
from trtforge.stages.verify.report import VerificationReport
from trtforge.stages.verify.subject import Subject
from trtforge.store import Store
from trtforge.store.catalog import Verification

if TYPE_CHECKING:
    import numpy as np


def _write_text(path: Path, text: str) -> None:
    try:
        with atomic_write(path) as handle:
            handle.write(text.encode("utf-8"))
    except OSError as exc:
        raise BadInputError(f"cannot write {path}: {exc.strerror}") from None


def _save_run_results(
    path: Path, candidate_name: str, saved: Sequence[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]
) -> str:
    from trtforge.backend.compare import run_results_json

    runs = [(candidate_name, [c for c, _ in saved]), (REFERENCE_NAME, [r for _, r in saved])]
    _write_text(path, run_results_json(runs))
    return str(path)


def perf_for_catalog(perf: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The timing as the catalog keeps it: every figure, without the per-query traces (`verify --json` has them)."""
    kept = []
    for entry in perf:
        streams = [{k: v for k, v in s.items() if k != "trace"} for s in entry.get("per_stream", [])]
        kept.append({**entry, "per_stream": streams} if "per_stream" in entry else dict(entry))
    return kept


def _record(store: Store, subject: Subject, report: VerificationReport, seconds: float) -> str:
    assert subject.artifact is not None and report.runtime is not None
    runtime = report.runtime
    verification = Verification(
        id=uuid.uuid4().hex,
        artifact_id=subject.artifact.id,
        gpu_name=runtime.gpu_name,
        compute_capability=runtime.compute_capability,
        runtime_flavor=runtime.flavor,
        runtime_version=runtime.version,
        status=report.status,
        checks=[asdict(p) for p in report.points],
        perf=perf_for_catalog(report.perf),
        details={
            "spec": subject.spec.model_dump(mode="json"),
            "per_layer": report.per_layer,
            "driver": runtime.driver,
            "seconds": round(seconds, 4),
            "model_sha256": subject.model_sha256,
        },
    )
    store.catalog.add_verification(verification)
    return verification.id
