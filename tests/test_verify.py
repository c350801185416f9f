"""The verifier stage, run for real with ONNX Runtime in the candidate seat (no GPU here).

Artifacts are real TensorRT-RTX builds; the reference is polygraphy's OnnxrtRunner and the
comparison polygraphy's Comparator. Only the engine itself cannot run on this machine, so a
second ONNX Runtime runner (same model, or one weight perturbed) takes its place.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from tests import onnx_models
from tests.conftest import subprocess_env
from tests.gpu_steps import kept_results, runtime_up_to_loading, stopped
from tests.plugin_libraries import creator_library, plain_library
from trtforge.backend.loader import run_in_flavor
from trtforge.cli.verify import render_report
from trtforge.core.errors import BadInputError, RecipeError, VerificationUnavailableError
from trtforge.resolution.resolve import resolve
from trtforge.rules.keys import recipe_fingerprint
from trtforge.rules.onnx_model import read_model
from trtforge.rules.recipe import parse_recipe
from trtforge.rules.target import detect_gpus
from trtforge.stages.build import BuildStage
from trtforge.stages.verify import (
    OnnxModelCandidate,
    RuntimeInfo,
    check,
    generate_feed,
    iter_failures,
    run_reference_only,
    shape_points,
    subject_from_artifact,
    subject_from_recipe,
)
from trtforge.store import open_existing_store, open_store

RUNTIME = RuntimeInfo("ONNX Runtime stand-in (test)", None, "onnxruntime", "test")

TWO_HEADS = """\
name: heads
model:
  onnx: models/heads.onnx
backend: tensorrt_rtx
profiles:
  - x: {{min: [1, 4], opt: [2, 4], max: [4, 4]}}
  - x: {{min: [5, 4], opt: [6, 4], max: [8, 4]}}
build:
  optimization_level: 0
verify:
  atol: 1e-5
  rtol: 1e-5
  inputs:
    x: {{low: 0.5, high: 1.0}}
  iterations: 5
  warmup: 1
{extra}"""


@pytest.fixture
def heads(tmp_path: Path):
    """(recipe path, model path, perturbed model path): the two-output model and a copy with w2 changed."""

    def make(extra: str = "") -> tuple[Path, Path, Path]:
        folder = tmp_path / "recipes"
        model = onnx_models.two_heads(seed=3)
        model_path = onnx_models.save(model, folder / "models" / "heads.onnx")
        bad = onnx_models.save(onnx_models.perturbed(model, "w2", delta=5.0), tmp_path / "bad" / "heads.onnx")
        recipe = folder / "heads.yaml"
        recipe.write_text(TWO_HEADS.format(extra=extra))
        return recipe, model_path, bad

    return make


def built_subject(recipe: Path, store: Path):
    stage = BuildStage(store)
    try:
        result = stage.build_one(recipe)
    finally:
        stage.close()
    assert result.status == "built", result
    opened = open_existing_store(store)
    assert opened is not None
    return opened, subject_from_artifact(opened.catalog.get_artifact(result.artifact_id))


def test_identical_model_passes_and_is_recorded(heads, store: Path, cli) -> None:
    recipe, model, _ = heads()
    opened, subject = built_subject(recipe, store)
    report = check(subject, OnnxModelCandidate(model), RUNTIME, store=opened)
    assert report.status == "passed" and bool(report)
    assert [(p.profile, p.label) for p in report.points] == [
        (0, "min"), (0, "opt"), (0, "max"), (1, "min"), (1, "opt"), (1, "max"),
    ]  # fmt: skip
    assert [p.shapes["x"][0] for p in report.points] == [1, 2, 4, 5, 6, 8]
    for point in report.points:
        assert [o["name"] for o in point.outputs] == ["y1", "y2"]
        assert all(o["passed"] and o["mismatches"] == 0 and o["max_abs"] == 0.0 for o in point.outputs)
    assert [(p["profile"], p["label"]) for p in report.perf] == [(0, "opt"), (1, "opt")]
    for perf in report.perf:
        lat = perf["latency_ms"]
        assert perf["iterations"] == 5 and lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"]

    artifact_id = subject.artifact.id
    assert opened.catalog.statuses(artifact_id) == {RUNTIME.gpu_name: "passed"}
    [row] = opened.catalog.verifications(artifact_id)
    assert row.id == report.verification_id and row.runtime_version == "test" and len(row.checks) == 6
    opened.close()
    shown = cli("show", artifact_id, "--store", store, "--json").json()
    assert shown["status"] == "passed" and shown["statuses"] == {RUNTIME.gpu_name: "passed"}
    assert shown["verifications"][0]["checks"][0]["outputs"][0]["name"] == "y1"


def test_perturbed_weight_fails_naming_the_output(heads, store: Path, cli) -> None:
    recipe, _, bad = heads()
    opened, subject = built_subject(recipe, store)
    report = check(subject, OnnxModelCandidate(bad), RUNTIME, store=opened)
    assert report.status == "failed" and not report
    assert {o["name"] for _, o in report.failures} == {"y2"}
    assert len(report.failures) == 6  # y2 fails at every shape point of both profiles
    for point in report.points:
        y1, y2 = point.outputs
        assert y1["passed"] and y1["max_abs"] == 0.0
        assert not y2["passed"] and y2["mismatches"] > 0 and y2["max_abs"] > 1.0 and y2["max_rel"] > 0
        assert y2["mean_abs"] <= y2["max_abs"] and y2["elements"] == point.shapes["x"][0] * 5
    lines = list(iter_failures(report))
    assert len(lines) == 6 and all("y2" in line and "out of tolerance" in line for line in lines)
    human = io.StringIO()
    render_report(Console(file=human, width=200), report)
    text = human.getvalue()
    assert text.startswith("failed heads") and text.count("FAIL") == 6
    assert "perf profile 1 opt (runner wall time): Throughput" in text and "  Latency:" in text
    assert opened.catalog.statuses(subject.artifact.id) == {RUNTIME.gpu_name: "failed"}
    opened.close()

    human = cli("show", subject.artifact.id, "--store", store)
    assert human.code == 0 and "failed" in human.stdout and RUNTIME.gpu_name in human.stdout
    assert "6 points, 6 failed outputs" in human.stdout


def test_newest_verification_decides_status_per_gpu(heads, store: Path) -> None:
    recipe, model, bad = heads()
    opened, subject = built_subject(recipe, store)
    other = RuntimeInfo("Other GPU", "8.9", "onnxruntime", "test")
    check(subject, OnnxModelCandidate(bad), RUNTIME, store=opened)
    check(subject, OnnxModelCandidate(model), other, store=opened)
    assert opened.catalog.statuses(subject.artifact.id) == {RUNTIME.gpu_name: "failed", "Other GPU": "passed"}
    check(subject, OnnxModelCandidate(model), RUNTIME, store=opened)
    assert opened.catalog.statuses(subject.artifact.id) == {RUNTIME.gpu_name: "passed", "Other GPU": "passed"}
    assert len(opened.catalog.verifications(subject.artifact.id)) == 3
    opened.close()


def test_per_output_tolerance_override(heads, store: Path) -> None:
    recipe, _, bad = heads("  outputs:\n    y2: {atol: 100}\n")
    opened, subject = built_subject(recipe, store)
    report = check(subject, OnnxModelCandidate(bad), RUNTIME, store=opened)
    assert report.status == "passed"
    y2 = [o for p in report.points for o in p.outputs if o["name"] == "y2"]
    assert all(o["atol"] == 100 and o["rtol"] == 1e-5 and o["max_abs"] > 1.0 for o in y2)
    assert all(o["atol"] == 1e-5 for p in report.points for o in p.outputs if o["name"] == "y1")
    opened.close()


def test_explicit_shape_points_go_to_every_profile_that_holds_them(tmp_path: Path) -> None:
    text = (
        "name: p\nmodel: {onnx: m.onnx}\nprofiles:\n"
        "  - x: {min: [1, 4], opt: [2, 4], max: [6, 4]}\n"
        "  - x: {min: [5, 4], opt: [6, 4], max: [8, 4]}\n"
        "verify:\n  shapes: [opt, {x: [3, 4]}, {x: [5, 4]}]\n"
    )
    recipe = parse_recipe(text)
    points = shape_points([{n: s.model_dump() for n, s in p.items()} for p in recipe.profiles], recipe.verify)
    assert [(p.profile, p.label, p.shape_map["x"]) for p in points] == [
        (0, "opt", [2, 4]), (0, "shapes[1]", [3, 4]), (0, "shapes[2]", [5, 4]),
        (1, "opt", [6, 4]), (1, "shapes[2]", [5, 4]),
    ]  # fmt: skip
    with pytest.raises(RecipeError, match=r"verify.shapes\[1\] \{x: \[9,4\]\} is inside no optimization profile"):
        parse_recipe(text.replace("{x: [3, 4]}", "{x: [9, 4]}"))


def test_verify_section_is_not_part_of_the_build_key() -> None:
    base = "name: p\nmodel: {onnx: m.onnx}\nprofiles:\n  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}\n"
    tuned = base + "verify:\n  atol: 1e-2\n  shapes: [max]\n  seed: 7\n  iterations: 3\n"
    assert recipe_fingerprint(parse_recipe(base)) == recipe_fingerprint(parse_recipe(tuned))
    assert parse_recipe(tuned).verify.atol == 0.01  # YAML 1.1 reads 1e-2 as text; the spec takes it
    with pytest.raises(RecipeError, match=r":6 verify.inputs.x: high 0.0 is below low 1.0$"):
        parse_recipe(base + "verify:\n  inputs: {x: {low: 1, high: 0}}\n")
    with pytest.raises(RecipeError, match=r"verify.data: must be a .npz file"):
        parse_recipe(base + "verify:\n  data: ../inputs.txt\n")
    with pytest.raises(RecipeError, match=r"verify.atol: Input should be greater than or equal to 0"):
        parse_recipe(base + "verify:\n  atol: -1\n")


def test_generated_inputs_are_seeded_ranged_and_typed(tmp_path: Path) -> None:
    from trtforge.rules.onnx_model import TensorInfo
    from trtforge.rules.recipe import VerifySpec
    from trtforge.stages.verify import ShapePoint

    inputs = [TensorInfo("x", "float", ("N", 4)), TensorInfo("ids", "int64", (2,)), TensorInfo("m", "bool", (3,))]
    point = ShapePoint(0, "opt", (("x", (6, 4)),))
    spec = VerifySpec.model_validate({"inputs": {"x": {"low": -2, "high": -1}, "ids": {"low": 3, "high": 5}}})
    feed = generate_feed(inputs, point, spec)
    assert feed["x"].shape == (6, 4) and feed["x"].dtype == np.float32
    assert feed["x"].min() >= -2 and feed["x"].max() <= -1
    assert feed["ids"].dtype == np.int64 and set(np.unique(feed["ids"])) <= {3, 4, 5}
    assert feed["m"].dtype == np.bool_
    again = generate_feed(inputs, point, spec)
    assert all(np.array_equal(feed[n], again[n]) for n in feed)
    other = generate_feed(inputs, point, spec.model_copy(update={"seed": 1}))
    assert not np.array_equal(feed["x"], other["x"])
    normal = VerifySpec.model_validate({"inputs": {"x": {"distribution": "normal", "mean": 100, "std": 0.1}}})
    assert 99 < generate_feed(inputs[:1], point, normal)["x"].mean() < 101


def test_user_inputs_from_npz_and_polygraphy_json(heads, store: Path, tmp_path: Path) -> None:
    from polygraphy.json import save_json

    recipe, model, bad = heads()
    opened, subject = built_subject(recipe, store)
    rng = np.random.default_rng(0)
    npz = tmp_path / "one.npz"
    np.savez(npz, x=rng.random((3, 4), dtype=np.float32))
    report = check(subject, OnnxModelCandidate(model), RUNTIME, store=opened, data=npz)
    assert [(p.profile, p.label, p.shapes["x"]) for p in report.points] == [(0, "data[0]", [3, 4])]
    assert report.status == "passed"

    feeds = [{"x": rng.random((n, 4), dtype=np.float32)} for n in (2, 7)]
    polygraphy_json = tmp_path / "inputs.json"
    save_json(feeds, str(polygraphy_json))
    report = check(subject, OnnxModelCandidate(bad), RUNTIME, store=opened, data=polygraphy_json)
    assert [(p.profile, p.label) for p in report.points] == [(0, "data[0]"), (1, "data[1]")]
    assert report.status == "failed" and {o["name"] for _, o in report.failures} == {"y2"}

    np.savez(tmp_path / "wrong.npz", z=np.zeros((2, 4), np.float32))
    with pytest.raises(BadInputError, match=r"no data for input\(s\) x"):
        check(subject, OnnxModelCandidate(model), RUNTIME, store=opened, data=tmp_path / "wrong.npz")
    np.savez(tmp_path / "big.npz", x=np.zeros((20, 4), np.float32))
    with pytest.raises(BadInputError, match=r"shapes \{x: \[20, 4\]\} are inside no optimization profile"):
        check(subject, OnnxModelCandidate(model), RUNTIME, store=opened, data=tmp_path / "big.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(BadInputError, match=r"junk.npz: not readable as an .npz archive of arrays \(This file"):
        check(subject, OnnxModelCandidate(model), RUNTIME, store=opened, data=tmp_path / "junk.npz")
    opened.close()


def test_save_results_writes_polygraphy_run_results(heads, store: Path, tmp_path: Path) -> None:
    from polygraphy.comparator import RunResults

    recipe, _, bad = heads()
    opened, subject = built_subject(recipe, store)
    target = tmp_path / "out" / "results.json"
    report = check(subject, OnnxModelCandidate(bad), RUNTIME, store=opened, save_results=target)
    opened.close()
    assert report.saved_results == str(target)
    loaded = RunResults.load(str(target))
    assert list(loaded.keys()) == ["onnxrt-candidate", "onnxrt-reference"]
    candidate, reference = loaded.values()
    assert len(candidate) == len(reference) == 6
    assert not np.array_equal(candidate[0]["y2"], reference[0]["y2"])
    assert np.array_equal(candidate[0]["y1"], reference[0]["y1"])


def test_per_layer_names_the_first_diverging_tensor(heads, store: Path) -> None:
    recipe, _, bad = heads()
    opened, subject = built_subject(recipe, store)
    report = check(subject, OnnxModelCandidate(bad, per_layer=True), RUNTIME, store=opened, per_layer=True)
    opened.close()
    assert report.status == "failed"
    for point in report.points:
        names = {o["name"]: o for o in point.outputs}
        assert {"h2", "h2b", "y1", "y2"} <= set(names)
        assert names["h2"]["intermediate"] and not names["y2"]["intermediate"]
        assert point.first_divergent == "h2"
    assert {o["name"] for _, o in report.failures} == {"y2"}  # only model outputs decide the verdict


def test_a_per_layer_run_is_a_diagnostic_never_recorded_on_the_artifact(heads, store: Path) -> None:
    """Regression (issue 12, item 5): on 55eb6bf a --per-layer run, which checks another engine (every
    tensor marked), recorded pass/fail as the artifact's verification."""
    recipe, model, _ = heads()
    opened, subject = built_subject(recipe, store)
    report = check(subject, OnnxModelCandidate(model, per_layer=True), RUNTIME, store=opened, per_layer=True)
    assert report.status == "passed" and report.verification_id is None
    assert "diagnostic" in report.as_json()["engine"]
    assert opened.catalog.verifications(subject.artifact.id) == []
    assert opened.catalog.statuses(subject.artifact.id) == {}
    opened.close()


def test_reference_outputs_are_stored_and_reused(heads, store: Path, cli) -> None:
    from polygraphy.comparator import RunResults

    recipe, model, _ = heads()
    first = cli("verify", recipe, "--reference-only", "--store", store, "--json")
    assert first.code == 0, first
    data = first.json()  # polygraphy's log must not reach stdout
    assert data["status"] == "reference-only" and data["runtime"] is None
    assert len(data["points"]) == 6 and not any(p["reference_reused"] for p in data["points"])
    assert data["points"][0]["outputs"] == [
        {"name": "y1", "shape": [1, 3], "dtype": "float32"},
        {"name": "y2", "shape": [1, 5], "dtype": "float32"},
    ]
    saved = store.parent / "reference.json"
    again = cli("verify", recipe, "--reference-only", "--store", store, "--json", "--save-results", saved).json()
    assert all(p["reference_reused"] for p in again["points"])
    loaded = RunResults.load(str(saved))
    assert list(loaded.keys()) == ["onnxrt-reference"] and len(loaded["onnxrt-reference"]) == 6

    # A later verification (here: of the built artifact) reuses them instead of recomputing.
    opened, subject = built_subject(recipe, store)
    report = check(subject, OnnxModelCandidate(model), RUNTIME, store=opened)
    assert report.status == "passed" and all(p.reference_reused for p in report.points)
    # Different inputs are a different key.
    reseeded = subject_from_recipe(resolve(recipe))
    reseeded.spec = reseeded.spec.model_copy(update={"seed": 9})
    fresh = run_reference_only(reseeded, store=opened)
    assert not any(p.reference_reused for p in fresh.points)
    opened.close()


def test_reference_only_reports_points_as_reference_only_never_passed(heads, store: Path, cli) -> None:
    """Issue 23: `verify --reference-only --json` said "passed": true on every point, although
    nothing was compared. Each point now says reference-only, in JSON and in text."""
    recipe, _, _ = heads()
    data = cli("verify", recipe, "--reference-only", "--store", store, "--json").json()
    assert data["points"] and all(p["passed"] is None for p in data["points"]), data["points"]
    assert {p["status"] for p in data["points"]} == {data["status"]} == {"reference-only"}
    human = cli("verify", recipe, "--reference-only", "--store", store, env={"COLUMNS": "200"})
    rows = [line for line in human.stdout.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    assert len(rows) == len(data["points"]) and all(row.rstrip().endswith("reference-only") for row in rows), human
    assert "passed" not in human.stdout and "ok" not in human.stdout.split(), human


def test_reference_only_without_a_store_entry_for_the_recipe(heads, store: Path, cli) -> None:
    recipe, _, _ = heads()
    human = cli("verify", recipe, "--reference-only", "--store", store)
    assert human.code == 0 and "computed, stored" in human.stdout
    broken = recipe.read_text().replace("  - x: {min: [1, 4]", "  - q: {min: [1, 4]")
    recipe.write_text(broken)
    bad = cli("verify", recipe, "--reference-only", "--store", store, "--json")
    assert bad.code == 2 and "no input 'q'" in bad.json()["error"]


def test_verify_without_gpu_exits_2_and_stays_unverified(heads, store: Path, cli) -> None:
    """No GPU visible: here none exists; on a GPU machine CUDA_VISIBLE_DEVICES="" hides them."""
    recipe, _, _ = heads()
    assert cli("build", recipe, "--store", store).code == 0
    [artifact] = cli("list", "--store", store, "--json").json()
    no_gpu = {"CUDA_VISIBLE_DEVICES": ""}
    for target in (artifact["artifact_id"][:8], str(recipe)):
        result = cli("verify", target, "--store", store, "--json", env=no_gpu)
        assert result.code == 2, result
        error = result.json()["error"]
        assert error.startswith("verification needs a CUDA GPU with TensorRT-RTX ")
        assert "found: no NVIDIA GPU" in error and "\n" not in error
        human = cli("verify", target, "--store", store, env=no_gpu)
        assert human.code == 2 and "Traceback" not in human.stderr
        assert human.stderr.startswith("error: verification needs a CUDA GPU")
    shown = cli("show", artifact["artifact_id"], "--store", store, "--json").json()
    assert shown["status"] == "unverified" and shown["verifications"] == [] and shown["statuses"] == {}


@pytest.mark.skipif(bool(detect_gpus()), reason="this machine has a GPU: the no-GPU path does not apply")
def test_no_gpu_answer_imports_no_runtime(heads, store: Path, tmp_path: Path) -> None:
    recipe, _, _ = heads()
    stage = BuildStage(store)
    artifact_id = stage.build_one(recipe).artifact_id
    stage.close()
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, sys\n"
        "from trtforge.cli import app\n"
        f"sys.argv = ['trtforge', 'verify', {artifact_id!r}, '--store', {str(store)!r}, '--json']\n"
        "try:\n    app()\nexcept SystemExit as exc:\n    sys.stderr.write(f'CODE={exc.code}\\n')\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'tensorrt', 'tensorrt_rtx', 'polygraphy', 'onnx', 'onnxruntime'})\n"
        "sys.stderr.write('MODULES=' + json.dumps(heavy) + '\\n')\n"
    )
    proc = subprocess.run(
        [sys.executable, str(probe)], capture_output=True, text=True, timeout=120, env=subprocess_env()
    )
    assert "CODE=2" in proc.stderr.splitlines(), proc
    assert "MODULES=[]" in proc.stderr.splitlines(), proc


def test_verify_recipe_that_was_never_built(heads, store: Path, cli) -> None:
    recipe, _, _ = heads()
    open_store(store).close()
    result = cli("verify", recipe, "--store", store, "--json")
    assert result.code == 2 and "no engine is built for this recipe" in result.json()["error"]


def test_verify_artifact_whose_model_changed(heads, store: Path, cli) -> None:
    recipe, model, bad = heads()
    assert cli("build", recipe, "--store", store).code == 0
    [artifact] = cli("list", "--store", store, "--json").json()
    model.write_bytes(bad.read_bytes())
    result = cli("verify", artifact["artifact_id"], "--store", store, "--json")
    assert result.code == 2 and "changed since the engine was built" in result.json()["error"]


def test_read_model_outputs_match_the_two_heads(heads) -> None:
    _, model, _ = heads()
    info = read_model(model, "0" * 64)
    assert [t.name for t in info.outputs] == ["y1", "y2"]
    assert json.dumps([t.as_json() for t in info.inputs]) == '[{"name": "x", "dtype": "float", "shape": ["N", 4]}]'


def test_plan_is_hash_checked_before_any_load(heads, store: Path) -> None:
    from trtforge.core.errors import IntegrityError
    from trtforge.store.plans import read_verified_plan as read_plan

    recipe, _, _ = heads()
    opened, subject = built_subject(recipe, store)
    artifact = subject.artifact
    assert len(read_plan(opened, artifact)) == artifact.plan_size
    path = opened.blobs.path_for(artifact.plan_sha256)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(IntegrityError, match="corrupted"):
        read_plan(opened, artifact)
    opened.close()


@dataclass
class PerLayerRun:
    """What `verify --per-layer` did as far as this machine goes."""

    diagnostics: list[Any]  # the diagnostic engines it built (LayerwisePlan)
    read: list[str]  # the digest of the model file each diagnostic build was given, as it started
    error: str | None  # why the engine could not load here (None: it loaded and ran)


def per_layer_run(
    artifact_id: str, store: str, replace: tuple[Path, Path] | None = None, flavor: str = "tensorrt_rtx"
) -> PerLayerRun:
    """`verify --per-layer` of an artifact, in a process whose polygraphy is bound to ``flavor``;
    ``replace`` (source, user's model) is copied over the user's model as the diagnostic build starts."""
    from trtforge.backend import run
    from trtforge.rules.digests import model_digest
    from trtforge.stages.verify import verify

    read: list[str] = []

    def starting(_backend: Any, _recipe: Any, onnx_path: Path, *args: Any, **kwargs: Any) -> None:
        if replace is not None:
            shutil.copyfile(*replace)
        read.append(model_digest(onnx_path))

    error = None
    with runtime_up_to_loading(flavor), kept_results(run, "layerwise_plan", starting) as built:
        try:
            verify(artifact_id, store=store, per_layer=True)
        except VerificationUnavailableError as exc:
            error = str(exc)
    return PerLayerRun(list(built), read, error)


def test_the_per_layer_engine_is_built_with_the_artifacts_settings(heads, store: Path) -> None:
    """The diagnostic engine differs from the stored plan only by its marked tensors: `verify --per-layer`
    builds it from the recorded recipe through the build's own path, so the settings read back from its
    real builder config equal the artifact's and it loads the same plugin libraries; here for a recipe
    with a parser flag, a build.config override and plugin libraries (dynamic and static). Fails on
    integration (c1e1ac4): the diagnostic's parser got no flags (and no library was loaded for it)."""
    plugins = "plugins:\n  - {library: libs/libnoop_plugins.so}\n  - {library: libs/libstatic_ops.so, load: static}\n"
    recipe, _model, _ = heads("compatibility:\n  compute_capabilities: [8.6]\n" + plugins)
    creator_library(recipe.parent / "libs" / "libnoop_plugins.so")
    plain_library(recipe.parent / "libs" / "libstatic_ops.so")
    text = recipe.read_text()
    for line, added in (("  onnx: models/heads.onnx\n", "  parser: {native_instancenorm: false}\n"),
                        ("  optimization_level: 0\n", "  config: {flags: {DEBUG: true}}\n")):  # fmt: skip
        text = text.replace(line, line + added)
    recipe.write_text(text)
    opened, subject = built_subject(recipe, store)
    artifact = subject.artifact
    opened.close()
    settings = artifact.details.settings
    assert settings["model.parser.native_instancenorm"] is False
    assert settings["build.config"] == {"flags.DEBUG": True}
    ran = run_in_flavor("tensorrt_rtx", per_layer_run, artifact.id, str(store))
    [diagnostic] = ran.diagnostics
    assert diagnostic.settings == settings
    assert diagnostic.plugins == [plugin.model_dump() for plugin in artifact.details.plugins]
    assert len(diagnostic.plan) > 1000
    if ran.error is not None:
        stopped(ran.error)


def test_the_per_layer_engine_reads_a_private_copy_of_the_recorded_model(heads, store: Path) -> None:
    """The diagnostic build reads a copy of the bytes whose digest the artifact records, never the
    user's file: a model replaced as the build starts does not reach it. Fails on integration (c1e1ac4): TensorRT
    read the user's file, which then held other weights than the recorded model."""
    from trtforge.rules.digests import model_digest

    recipe, model, bad = heads()
    opened, subject = built_subject(recipe, store)
    opened.close()
    # the user's model holds other weights (the same graph) from the moment the diagnostic build starts
    ran = run_in_flavor("tensorrt_rtx", per_layer_run, subject.artifact.id, str(store), (bad, model))
    assert model_digest(model) != subject.model_sha256
    assert ran.read == [subject.model_sha256]
    if ran.error is not None:
        stopped(ran.error)


def test_catalog_at_the_initial_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    """An existing store (schema 0001) gains the verification tables when it is opened."""
    from sqlalchemy import create_engine, inspect, text

    from trtforge.store.catalog import SCHEMA_HEAD, Catalog
    from trtforge.store.migrations import upgrade

    path = tmp_path / "old.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        upgrade(conn, "0001_initial")
        conn.commit()
    assert "verifications" not in inspect(engine).get_table_names()
    engine.dispose()
    catalog = Catalog.sqlite(path)
    assert catalog.current_revision() == SCHEMA_HEAD
    with catalog.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM verifications")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM reference_outputs")).scalar() == 0
    assert catalog.statuses("0" * 32) == {}
    catalog.close()


def test_missing_verify_dependencies_are_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the `verify` extra the command names what to install (simulated: both are installed here)."""
    import importlib.util

    from trtforge.backend import compare
    from trtforge.core import extras
    from trtforge.core.errors import BackendUnavailableError

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        extras.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a),
    )
    with pytest.raises(BackendUnavailableError, match="verification needs onnxruntime") as info:
        compare.require_verify_deps()
    assert info.value.hint == "pip install 'trtforge[verify]'" and info.value.exit_code == 2
