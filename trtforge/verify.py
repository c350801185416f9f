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

import hashlib
import io
import statistics
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from trtforge.errors import BadInputError, ModelError, NotFoundError
from trtforge.keys import canonical_json, sha256_file, sha256_text
from trtforge.model import ModelInfo, TensorInfo, check_profiles, model_sha256, read_model
from trtforge.recipe import (
    InputShapes,
    LoadedRecipe,
    Recipe,
    VerifySpec,
    expand_path,
    load_recipe,
    shape_point_fits,
)
from trtforge.store import Store
from trtforge.store.blobs import atomic_write
from trtforge.store.catalog import Artifact, Blob, ReferenceOutput, Verification

if TYPE_CHECKING:
    import numpy as np

    from trtforge.backend.compare import OutputStats, Tolerance

VerifyStatus = Literal["passed", "failed", "reference-only"]
REFERENCE_NAME = "onnxrt-reference"
REFERENCE_KEY_SCHEMA = 1

# ONNX element types the input generator can make (name as trtforge.model reports it).
_NUMPY_DTYPES = {
    "float": "float32",
    "float16": "float16",
    "double": "float64",
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "int32": "int32",
    "int64": "int64",
    "bool": "bool",
}


# -- what is verified ----------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeInfo:
    """Where the candidate ran: one GPU model and one runtime (flavor + version)."""

    gpu_name: str
    compute_capability: str | None
    flavor: str
    version: str
    driver: str | None = None


@dataclass
class Subject:
    """What is verified: an artifact (with its recorded recipe) or a recipe file not built yet."""

    label: str
    name: str
    model_path: Path
    model_sha256: str
    profiles: list[dict[str, dict[str, list[int]]]]
    spec: VerifySpec
    base_dir: Path  # spec.data is relative to this
    artifact: Artifact | None = None


@dataclass(frozen=True)
class ShapePoint:
    profile: int
    label: str
    shapes: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def shape_map(self) -> dict[str, list[int]]:
        return {name: list(shape) for name, shape in self.shapes}


@dataclass
class Case:
    """One shape point in one profile, with its input feed."""

    point: ShapePoint
    feed: dict[str, np.ndarray]


class Candidate(Protocol):
    """The runner in the candidate seat (a TensorRT engine on a GPU; ONNX Runtime in tests)."""

    name: str

    def runner(self, profile: int) -> AbstractContextManager[Any]:
        """A polygraphy runner (context manager with ``infer``) using optimization profile ``profile``."""
        ...


# -- results -------------------------------------------------------------------------------


@dataclass
class PointResult:
    profile: int
    label: str
    shapes: dict[str, list[int]]
    passed: bool
    reference_reused: bool
    outputs: list[dict[str, Any]]
    first_divergent: str | None = None  # with --per-layer: first tensor (graph order) out of tolerance


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
        return data


# -- shape points and inputs ---------------------------------------------------------------


def normalized_profiles(recipe: Recipe) -> list[dict[str, dict[str, list[int]]]]:
    """Profiles as plain data, the form artifacts record them in."""
    return [{name: shapes.model_dump() for name, shapes in profile.items()} for profile in recipe.profiles]


def _as_point_profile(profile: Mapping[str, Mapping[str, list[int]]]) -> dict[str, InputShapes]:
    return {name: InputShapes.model_validate(shapes) for name, shapes in profile.items()}


def shape_points(profiles: Sequence[Mapping[str, Mapping[str, list[int]]]], spec: VerifySpec) -> list[ShapePoint]:
    """Every (profile, point) pair the spec names; explicit points go to each profile containing them."""
    points = []
    for index, profile in enumerate(profiles):
        for number, point in enumerate(spec.shapes):
            if isinstance(point, str):
                shapes = {name: list(bounds[point]) for name, bounds in profile.items()}
                label = point
            elif shape_point_fits(point, _as_point_profile(profile)):
                shapes, label = point, f"shapes[{number}]"
            else:
                continue
            points.append(ShapePoint(index, label, tuple((n, tuple(s)) for n, s in sorted(shapes.items()))))
    return points


def _numpy_dtype(tensor: TensorInfo) -> Any:
    import numpy as np

    name = _NUMPY_DTYPES.get(tensor.dtype)
    if name is None:
        raise ModelError(f"input {tensor.name!r} has type {tensor.dtype}, which verification cannot generate")
    return np.dtype(name)


def _full_shape(tensor: TensorInfo, point: ShapePoint) -> tuple[int, ...]:
    shapes = dict(point.shapes)
    if tensor.name in shapes:
        return shapes[tensor.name]
    if tensor.is_dynamic:
        raise ModelError(f"input {tensor.name!r} {list(tensor.shape)} is dynamic and has no shape in the profile")
    return tuple(int(d) for d in tensor.shape)  # type: ignore[arg-type]


def generate_feed(inputs: Sequence[TensorInfo], point: ShapePoint, spec: VerifySpec) -> dict[str, np.ndarray]:
    """Seeded inputs for one shape point. The stream depends on seed, input name and shape only,
    so the same shapes in two profiles get the same data (and share stored reference outputs)."""
    import numpy as np

    feed = {}
    for tensor in inputs:
        shape = _full_shape(tensor, point)
        dtype = _numpy_dtype(tensor)
        rng = np.random.default_rng([spec.seed, zlib.crc32(tensor.name.encode()), *shape])
        data = spec.inputs.get(tensor.name)
        low, high = (data.low, data.high) if data is not None else (0.0, 1.0)
        if dtype == np.bool_:
            values = rng.random(shape) < 0.5
        elif np.issubdtype(dtype, np.integer):
            values = rng.integers(int(np.ceil(low)), int(np.floor(high)), size=shape, endpoint=True)
        elif data is not None and data.distribution == "normal":
            values = rng.normal(data.mean, data.std, size=shape)
        else:
            values = rng.uniform(low, high, size=shape)
        feed[tensor.name] = np.ascontiguousarray(values.astype(dtype))
    return feed


def load_user_feeds(path: Path) -> list[dict[str, np.ndarray]]:
    """User inputs: an ``.npz`` (one feed) or polygraphy inputs JSON (a list of feeds)."""
    import numpy as np

    if not path.is_file():
        raise BadInputError(f"input data file {path} not found")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return [{name: archive[name] for name in archive.files}]
        if path.suffix == ".json":
            from trtforge.backend.compare import load_inputs_json

            return load_inputs_json(path)
    except Exception as exc:  # numpy/zipfile/json raise many types for bad files
        expected = "an .npz archive of arrays" if path.suffix == ".npz" else "polygraphy inputs JSON"
        detail = str(exc).split(". ")[0].splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(
            f"{path}: not readable as {expected} ({detail})",
            hint="write inputs with numpy.savez (arrays only, no pickled objects) or polygraphy's --save-inputs",
        ) from None
    raise BadInputError(f"{path}: input data must be .npz or polygraphy inputs .json")


def user_cases(
    feeds: Sequence[Mapping[str, np.ndarray]],
    inputs: Sequence[TensorInfo],
    profiles: Sequence[Mapping[str, Mapping[str, list[int]]]],
    source: Path,
) -> list[Case]:
    """Each user feed, checked against the model's inputs, in every profile its shapes fit."""
    names = {t.name for t in inputs}
    cases = []
    for number, feed in enumerate(feeds):
        where = f"{source.name} feed {number}"
        missing, unknown = sorted(names - set(feed)), sorted(set(feed) - names)
        if missing:
            raise BadInputError(f"{where}: no data for input(s) {', '.join(missing)}")
        if unknown:
            raise BadInputError(f"{where}: the model has no input(s) {', '.join(unknown)}")
        placed = False
        for index, profile in enumerate(profiles):
            dynamic = {name: list(feed[name].shape) for name in profile}
            if shape_point_fits(dynamic, _as_point_profile(profile)):
                shapes = tuple((n, tuple(s)) for n, s in sorted(dynamic.items()))
                point = ShapePoint(index, f"data[{number}]", shapes)
                cases.append(Case(point, {t.name: feed[t.name] for t in inputs}))
                placed = True
        if not placed:
            shown = ", ".join(f"{n}: {list(feed[n].shape)}" for n in sorted(feed))
            raise BadInputError(f"{where}: shapes {{{shown}}} are inside no optimization profile")
    return cases


def make_cases(subject: Subject, model: ModelInfo, data: Path | None = None) -> list[Case]:
    if data is None and subject.spec.data is not None:
        try:
            data = expand_path(subject.spec.data, subject.base_dir, "verify.data")
        except ValueError as exc:
            raise BadInputError(str(exc), hint="set the variable, or write the path out in the recipe") from None
    # No profiles (every input static): the engine's one implicit profile, at the model's shapes.
    profiles = subject.profiles or [{}]
    if data is not None:
        return user_cases(load_user_feeds(data), model.inputs, profiles, data)
    points = shape_points(profiles, subject.spec) if subject.profiles else [ShapePoint(0, "static", ())]
    return [Case(p, generate_feed(model.inputs, p, subject.spec)) for p in points]


# -- the reference side --------------------------------------------------------------------


def _feed_digest(feed: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {
        name: {
            "dtype": str(array.dtype),
            "shape": list(array.shape),
            "sha256": hashlib.sha256(memoryview(array.tobytes())).hexdigest(),
        }
        for name, array in sorted(feed.items())
    }


def reference_key(model_digest: str, feed: Mapping[str, np.ndarray], *, per_layer: bool) -> str:
    """Stored reference outputs are found by model sha256, input bytes and shapes."""
    return sha256_text(
        canonical_json(
            {
                "schema": REFERENCE_KEY_SCHEMA,
                "model_sha256": model_digest,
                "outputs": "all-layers" if per_layer else "model",
                "inputs": _feed_digest(feed),
            }
        )
    )


def _pack(outputs: Mapping[str, np.ndarray]) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    arrays = {f"o{i}": np.asarray(a) for i, a in enumerate(outputs.values())}
    np.savez(buffer, names=np.array(list(outputs), dtype=np.str_), **arrays)
    return buffer.getvalue()


def _unpack(data: bytes) -> dict[str, np.ndarray]:
    import numpy as np

    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        names = [str(n) for n in archive["names"]]
        return {name: archive[f"o{i}"] for i, name in enumerate(names)}


class Reference:
    """ONNX Runtime outputs for the subject's model; computed once per input set, kept in the store."""

    def __init__(self, subject: Subject, store: Store | None, *, per_layer: bool) -> None:
        self.subject = subject
        self.store = store
        self.per_layer = per_layer
        self._stack = ExitStack()
        self._runner: Any = None

    def __enter__(self) -> Reference:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def outputs(self, feed: Mapping[str, np.ndarray], point: ShapePoint) -> tuple[dict[str, np.ndarray], bool]:
        """(outputs, reused): reused is True when they came from the store."""
        key = reference_key(self.subject.model_sha256, feed, per_layer=self.per_layer)
        if self.store is not None and (row := self.store.catalog.find_reference(key)) is not None:
            if self.store.blobs.exists(row.blob_sha256):
                return _unpack(self.store.blobs.read_verified(row.blob_sha256)), True
        outputs = self._run(feed)
        if self.store is not None:
            from trtforge.backend.compare import onnxruntime_version

            blob = self.store.blobs.put_bytes(_pack(outputs))
            row = ReferenceOutput(
                key=key,
                model_sha256=self.subject.model_sha256,
                blob_sha256=blob.sha256,
                details={
                    "shapes": point.shape_map,
                    "per_layer": self.per_layer,
                    "onnxruntime": onnxruntime_version(),
                    "inputs": _feed_digest(feed),
                },
            )
            self.store.catalog.add_reference(row, Blob(sha256=blob.sha256, size=blob.size, kind="reference"))
        return outputs, False

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from trtforge.backend.compare import onnxrt_runner, quiet

        with quiet():
            if self._runner is None:
                runner = onnxrt_runner(self.subject.model_path, name=REFERENCE_NAME, mark_all=self.per_layer)
                self._runner = self._stack.enter_context(runner)
            return _as_tensors(self._runner.infer(dict(feed)))


def _as_tensors(outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Outputs as arrays: a sequence output becomes ``name[0]``, ``name[1]``, ...; an empty optional
    output is left out. (ONNX Runtime runs such models; TensorRT builds none of them.)"""
    import numpy as np

    tensors: dict[str, np.ndarray] = {}
    for name, value in outputs.items():
        if isinstance(value, (list, tuple)):
            tensors.update({f"{name}[{i}]": np.array(item) for i, item in enumerate(value)})
        elif value is not None:
            tensors[name] = np.array(value)  # a copy, detached from the runner's buffers
    return tensors


class OnnxModelCandidate:
    """An ONNX model under ONNX Runtime in the candidate seat (profiles do not apply to it).

    Checks a changed model (e.g. new weights) against the subject's, and lets the verifier's
    logic run for real on machines without a GPU.
    """

    def __init__(self, model_path: Path, *, name: str = "onnxrt-candidate", per_layer: bool = False) -> None:
        self.model_path = model_path
        self.name = name
        self.per_layer = per_layer

    def runner(self, profile: int) -> AbstractContextManager[Any]:
        from trtforge.backend.compare import onnxrt_runner

        return onnxrt_runner(self.model_path, name=self.name, mark_all=self.per_layer)


# -- the stage -----------------------------------------------------------------------------


def tolerances_for(spec: VerifySpec, names: Sequence[str]) -> dict[str, Tolerance]:
    from trtforge.backend.compare import Tolerance

    result = {}
    for name in names:
        override = spec.outputs.get(name)
        atol = override.atol if override is not None and override.atol is not None else spec.atol
        rtol = override.rtol if override is not None and override.rtol is not None else spec.rtol
        result[name] = Tolerance(atol, rtol)
    return result


def latency_summary(times: Sequence[float], *, concurrency: int = 1) -> dict[str, Any]:
    """min/median/p90/p99 latency in ms and throughput (inferences/s) from per-iteration times."""
    ordered = sorted(times)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] * 1000

    total = sum(times)
    return {
        "iterations": len(times),
        "latency_ms": {
            "min": ordered[0] * 1000,
            "median": statistics.median(ordered) * 1000,
            "p90": pct(0.90),
            "p99": pct(0.99),
        },
        "throughput_per_s": (len(times) * concurrency / total) if total > 0 else None,
    }


def _stats_json(stats: OutputStats, intermediate: bool) -> dict[str, Any]:
    data = stats.as_json()
    data["intermediate"] = intermediate
    return data


def _check_case(
    case: Case,
    runner: Any,
    reference: Reference,
    candidate_name: str,
    model_outputs: Sequence[str],
    spec: VerifySpec,
    saved: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] | None,
) -> PointResult:
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
            outputs.append(
                {"name": name, "passed": False, "intermediate": False, "atol": tol.atol, "rtol": tol.rtol,
                 "elements": 0, "mismatches": 0, "max_abs": None, "mean_abs": None, "max_rel": None,
                 "mean_rel": None, "problem": "the candidate did not produce this output"}
            )  # fmt: skip
    per_layer = reference.per_layer
    first = next((o["name"] for o in outputs if not o["passed"]), None) if per_layer else None
    return PointResult(
        profile=case.point.profile,
        label=case.point.label,
        shapes=case.point.shape_map,
        passed=all(o["passed"] for o in outputs if not o["intermediate"]),
        reference_reused=reused,
        outputs=outputs,
        first_divergent=first,
    )


def _time_profile(candidate: Any, runner: Any, profile: int, case: Case, spec: VerifySpec) -> dict[str, Any]:
    """GPU candidates time themselves (CUDA graphs, several streams); others by runner wall time."""
    benchmark = getattr(candidate, "benchmark", None)
    if benchmark is not None:
        figures: dict[str, Any] = benchmark(profile, case.feed, spec)
    else:
        from trtforge.backend.compare import time_runner

        times = time_runner(runner, case.feed, iterations=spec.iterations, warmup=spec.warmup)
        figures = {"method": "runner wall time", **latency_summary(times)}
    return {"profile": profile, "label": case.point.label, "shapes": case.point.shape_map, **figures}


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
    """Run the candidate and the reference at every case, compare, time, and record the result."""
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
            with candidate.runner(profile) as runner:
                for case in in_profile:
                    points.append(
                        _check_case(case, runner, reference, candidate.name, model_outputs, subject.spec, saved)
                    )
                if subject.spec.iterations > 0:
                    timed = next((c for c in in_profile if c.point.label == "opt"), in_profile[0])
                    perf.append(_time_profile(candidate, runner, profile, timed, subject.spec))
    status: VerifyStatus = "passed" if all(p.passed for p in points) else "failed"
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
    if record and store is not None and subject.artifact is not None:
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
                    passed=True,
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
        perf=report.perf,
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


# -- finding what to verify ----------------------------------------------------------------


def looks_like_recipe(ref: str) -> bool:
    return ref.lower().endswith((".yaml", ".yml", ".onnx")) or Path(ref).is_file()


def subject_from_recipe(loaded: LoadedRecipe, artifact: Artifact | None = None) -> Subject:
    digest = model_sha256(loaded)
    return Subject(
        label=str(loaded.path),
        name=loaded.recipe.name,
        model_path=loaded.model_path,
        model_sha256=digest,
        profiles=normalized_profiles(loaded.recipe),
        spec=loaded.recipe.verify,
        base_dir=loaded.path.parent,
        artifact=artifact,
    )


def subject_from_artifact(artifact: Artifact) -> Subject:
    """The artifact's recorded recipe and model; the model file must still hold the same bytes."""
    model_path = Path(artifact.details.get("model", {}).get("path", ""))
    if not model_path.is_file():
        raise ModelError(
            f"artifact {artifact.id[:12]}: its model {model_path} is gone",
            hint="verify the recipe instead: trtforge verify RECIPE.yaml",
        )
    if sha256_file(model_path) != artifact.model_sha256:
        raise ModelError(
            f"artifact {artifact.id[:12]}: {model_path} changed since the engine was built",
            hint="rebuild, or restore the model the engine was built from",
        )
    recipe_path = Path(artifact.recipe_path) if artifact.recipe_path else model_path
    return Subject(
        label=artifact.id,
        name=artifact.name,
        model_path=model_path,
        model_sha256=artifact.model_sha256,
        profiles=list(artifact.profiles),
        spec=VerifySpec.model_validate(artifact.recipe.get("verify", {}), strict=False),
        base_dir=recipe_path.parent,
        artifact=artifact,
    )


def resolve_subject(ref: str, store: Store | None, *, need_artifact: bool) -> Subject:
    """An artifact id (prefix) or a recipe path; a recipe maps to its built artifact via the build key."""
    if not looks_like_recipe(ref):
        if store is None:
            raise NotFoundError(f"no artifact with id {ref} (the store is empty)")
        return subject_from_artifact(store.catalog.get_artifact(ref))
    loaded = load_recipe(ref)
    artifact = None
    if need_artifact:
        artifact = _artifact_for_recipe(loaded, store)
    else:
        check_profiles(loaded, read_model(loaded.model_path, model_sha256(loaded)))
    return subject_from_recipe(loaded, artifact)


def _artifact_for_recipe(loaded: LoadedRecipe, store: Store | None) -> Artifact:
    from trtforge.backend.loader import find_backend
    from trtforge.keys import build_key
    from trtforge.target import build_target_for

    backend = find_backend(loaded.recipe.backend)
    key = build_key(loaded.recipe, model_sha256(loaded), build_target_for(backend))
    hit = store.catalog.find_by_build_key(key) if store is not None else None
    if hit is None:
        raise NotFoundError(
            f"{loaded.path.name}: no engine is built for this recipe here",
            hint=f"run `trtforge build {loaded.path}` first",
        )
    return hit


def iter_failures(report: VerificationReport) -> Iterator[str]:
    """One line per failing output, for people."""
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
    from trtforge.build import StoreHandle

    require_verify_deps()
    handle = StoreHandle(store, catalog)
    try:
        if reference_only:
            subject = resolve_subject(ref, handle.existing(), need_artifact=False)
            return run_reference_only(
                subject, store=handle.ensure(), per_layer=per_layer, data=data, save_results=save_results
            )
        subject = resolve_subject(ref, handle.existing(), need_artifact=True)
        assert subject.artifact is not None
        from trtforge.backend.run import gpu_runtime_for  # does not import TensorRT

        backend, runtime = gpu_runtime_for(subject.artifact)
        from trtforge.backend.run import EngineCandidate

        opened = handle.ensure()
        candidate = EngineCandidate(
            opened, subject.artifact, backend, model_path=subject.model_path, per_layer=per_layer
        )
        return check(
            subject, candidate, runtime, store=opened, per_layer=per_layer, save_results=save_results, data=data
        )
    finally:
        handle.close()
