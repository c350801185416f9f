"""Polygraphy on the CPU side of verification: ONNX Runtime runners, the Comparator, RunResults.

The verifier stage (:mod:`trtforge.stages.verify`) decides what to run and what the numbers mean; this
module is the only place it touches polygraphy for that. Polygraphy's logger prints to stdout,
which would corrupt ``--json`` output, so every call into it runs under :func:`quiet`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trtforge.core.extras import require

# polygraphy reports relative error against the second runner; trtforge puts the reference there.
_ZERO_EPSILON = 2.220446049250313e-16


def require_verify_deps() -> None:
    """The reference side runs polygraphy's ONNX Runtime runner: say so, not a traceback."""
    require("verify", "verification")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Polygraphy stays silent (critical messages only, on stderr) while the block runs."""
    with contextlib.redirect_stdout(sys.stderr):
        from polygraphy.logger import G_LOGGER  # its import may print a warning

        with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
            yield


def onnxrt_runner(model_path: Path, *, name: str, mark_all: bool = False) -> Any:
    """A polygraphy OnnxrtRunner on the CPU; ``mark_all`` makes every intermediate tensor an output."""
    from polygraphy import constants
    from polygraphy.backend.onnx import BytesFromOnnx, ModifyOutputs, OnnxFromPath
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    if mark_all:
        source: Any = BytesFromOnnx(ModifyOutputs(OnnxFromPath(str(model_path)), outputs=constants.MARK_ALL))
    else:
        source = str(model_path)
    return OnnxrtRunner(SessionFromOnnx(source, providers=["cpu"]), name=name)


def onnxruntime_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


@dataclass
class OutputStats:
    """How one candidate output differs from the reference."""

    name: str
    passed: bool
    atol: float
    rtol: float
    elements: int
    mismatches: int
    max_abs: float | None = None
    mean_abs: float | None = None
    max_rel: float | None = None
    mean_rel: float | None = None
    problem: str | None = None  # set when the outputs could not be compared at all

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


def compare(
    candidate: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    tolerances: Mapping[str, Tolerance],
    *,
    candidate_name: str,
    reference_name: str,
) -> dict[str, OutputStats]:
    """Compare the outputs both sides produced with polygraphy's SimpleCompareFunc (elementwise).

    An element mismatches when it exceeds both its absolute and its relative tolerance (or is
    NaN), which is polygraphy's ``elemwise`` rule; polygraphy gives the verdict and error
    statistics, and the mismatch count is computed here with the same rule.
    """
    from polygraphy.comparator import AccuracyResults, Comparator, RunResults, SimpleCompareFunc

    common = [name for name in reference if name in candidate]
    results = RunResults()
    results.add([{n: candidate[n] for n in common}], runner_name=candidate_name)
    results.add([{n: reference[n] for n in common}], runner_name=reference_name)
    func = SimpleCompareFunc(
        check_shapes=True,
        atol={name: tolerances[name].atol for name in common},
        rtol={name: tolerances[name].rtol for name in common},
    )
    with quiet():
        accuracy = Comparator.compare_accuracy(results, compare_func=func)
    if isinstance(accuracy, AccuracyResults):
        accuracy = accuracy[0]  # one AccuracyResult per compare function
    [iteration] = accuracy[(candidate_name, reference_name)]

    stats: dict[str, OutputStats] = {}
    for name in common:
        tol = tolerances[name]
        cand, ref = np.asarray(candidate[name]), np.asarray(reference[name])
        verdict = iteration.get(name, False)
        if cand.shape != ref.shape or not hasattr(verdict, "max_absdiff"):
            stats[name] = OutputStats(
                name, False, tol.atol, tol.rtol, int(ref.size), int(ref.size),
                problem=f"shape {list(cand.shape)} differs from the reference's {list(ref.shape)}",
            )  # fmt: skip
            continue
        stats[name] = OutputStats(
            name=name,
            passed=bool(verdict),
            atol=tol.atol,
            rtol=tol.rtol,
            elements=int(ref.size),
            mismatches=count_mismatches(cand, ref, tol),
            max_abs=verdict.max_absdiff,
            mean_abs=verdict.mean_absdiff,
            max_rel=verdict.max_reldiff,
            mean_rel=verdict.mean_reldiff,
        )
    return stats


def count_mismatches(candidate: np.ndarray, reference: np.ndarray, tol: Tolerance) -> int:
    """Elements outside both tolerances, by polygraphy's elemwise rule (relative to the reference)."""
    if candidate.dtype == np.bool_ and reference.dtype == np.bool_:
        return int(np.count_nonzero(candidate != reference))
    cand = candidate.astype(np.float64)
    ref = reference.astype(np.float64)
    absdiff = np.abs(cand - ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        reldiff = absdiff / np.abs(np.where(ref == 0, _ZERO_EPSILON, ref))
    bad = (np.greater(absdiff, tol.atol) | np.isnan(absdiff)) & (np.greater(reldiff, tol.rtol) | np.isnan(reldiff))
    return int(np.count_nonzero(bad))


def run_results_json(runs: Sequence[tuple[str, Sequence[Mapping[str, np.ndarray]]]]) -> str:
    """Polygraphy RunResults JSON (readable by `polygraphy inspect data` and `--load-outputs`)."""
    from polygraphy.comparator import RunResults
    from polygraphy.json import to_json

    results = RunResults()
    for runner_name, iterations in runs:
        results.add([dict(out) for out in iterations], runner_name=runner_name)
    with quiet():
        return str(to_json(results))


def load_inputs_json(path: Path) -> list[dict[str, np.ndarray]]:
    """Feeds saved by `polygraphy run --save-inputs` (a list of name -> array maps); no pickle."""
    from polygraphy.json import load_json

    with quiet():
        data = load_json(str(path), description="input data")
    feeds = [data] if isinstance(data, Mapping) else list(data)
    return [{str(k): np.asarray(v) for k, v in feed.items()} for feed in feeds]


def time_runner(runner: Any, feed: Mapping[str, np.ndarray], *, iterations: int, warmup: int) -> list[float]:
    """Per-iteration inference times (seconds) as the runner itself measures them."""
    with quiet():
        for _ in range(warmup):
            runner.infer(feed)
        times = []
        for _ in range(iterations):
            runner.infer(feed)
            times.append(float(runner.last_inference_time()))
    return times
