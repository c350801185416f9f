"""The GPU acceptance suite (`pytest -m gpu`): every GPU-only path, end to end, on generated models.

Each test runs the CLI in a subprocess, as a user does. It first does every step this machine can
take (TensorRT-RTX builds on the CPU, `plan` for a full-TensorRT target, lookups with an explicit
target, record and JSON checks, reference outputs), and stops at the first step that needs a GPU or
full TensorRT through tests/gpu_steps.py's ``reach``, whose skip reason names that step: CI runs
every test's arrangement on every commit, and `pytest -m gpu -rs` says where each test stopped.
Past that step, each docstring names the failure the test's assertions catch. Flavor-parametrized
tests run for full TensorRT and TensorRT-RTX; tests of a full-TensorRT feature for full TensorRT only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import json_schemas, onnx_models
from tests.gpu_steps import lookup_target, no_alternative_tactic, plan_target, reach, stopped, target_cc
from trtforge.rules.flavors import FLAVORS, flavor_name, installed_backend
from trtforge.rules.target import current_gpu, detect_gpus
from trtforge.stages.selftest import runnable_reason, write_mlp, write_recipe

pytestmark = [pytest.mark.gpu, pytest.mark.slow]  # here every test stops at a named GPU step: .ci/run runs them


@pytest.fixture(params=FLAVORS)
def flavor(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    return tmp_path / "recipes"


def recipe_for(recipes: Path, name: str, flavor: str, extra: str = "", *, one_cc: bool = False) -> Path:
    """The generated MLP with two profiles; TensorRT-RTX builds also for this GPU's capability
    (``one_cc``: for this GPU's alone, as its refittable and weight-stripped builds need)."""
    return write_recipe(recipes, name, flavor, extra, target_cc(flavor, one=one_cc))


def plan(cli: Callable[..., Any], recipe: Path, store: Path, flavor: str) -> dict[str, Any]:
    """`plan` for the flavor's target (full TensorRT too: the capability table answers without it)."""
    result = cli("plan", recipe, "--store", store, "--target", plan_target(flavor), "--json")
    assert result.code == 0, result
    [entry] = result.json()
    assert entry["status"] in ("build", "cached") and entry["error"] is None and entry["build_key"], entry
    return entry


def build(cli: Callable[..., Any], recipe: Path, store: Path, flavor: str, needs: str = "build") -> dict[str, Any]:
    """`plan` (here, for any flavor), then the build where this machine can build it; the build's key
    is the one `plan` announced."""
    __tracebackhide__ = True
    planned = plan(cli, recipe, store, flavor)
    reach(f"the {flavor_name(flavor)} build of {recipe.stem}", needs, flavor)  # type: ignore[arg-type]
    result = cli("build", recipe, "--store", store, "--json")
    assert result.code == 0, result
    [built] = result.json()
    assert built["build_key"] == planned["build_key"], (planned, built)
    return built


def show(cli: Callable[..., Any], artifact_id: str, store: Path) -> dict[str, Any]:
    result = cli("show", artifact_id, "--store", store, "--json")
    assert result.code == 0, result
    return result.json()


def schema_errors(report: dict[str, Any]) -> list[str]:
    return json_schemas.errors("verify", report)


def reference_only(
    cli: Callable[..., Any], ref: str | Path, store: Path, flavor: str, *args: str | Path
) -> dict[str, Any]:
    """`verify --reference-only`: ONNX Runtime at every shape point, outputs stored (no GPU; resolving
    a recipe needs its flavor installed)."""
    __tracebackhide__ = True
    step = f"verify --reference-only of {Path(ref).name[:12]} (resolves with {flavor_name(flavor)})"
    reach(step, "installed", flavor)
    result = cli("verify", ref, "--reference-only", "--store", store, "--json", *args)
    assert result.code == 0, result
    report = result.json()
    assert report["status"] == "reference-only" and schema_errors(report) == []
    return report


def verify(cli: Callable[..., Any], ref: str, store: Path, flavor: str, *args: str) -> dict[str, Any]:
    __tracebackhide__ = True
    reach(f"verify of {ref[:12]} (runs the {flavor_name(flavor)} engine)", "engine", flavor)
    result = cli("verify", ref, "--store", store, "--json", *args)
    assert result.code in (0, 1), result
    report = result.json()
    assert schema_errors(report) == []
    return report


def lookup_best(cli: Callable[..., Any], name: str, store: Path, flavor: str, *args: str) -> dict[str, Any]:
    """`lookup --json`'s ``best`` for an explicit target (this GPU where the flavor runs on it)."""
    found = cli("lookup", name, "--store", store, *lookup_target(flavor), "--json", *args)
    assert found.code == 0, found
    return found.json()["best"]


def check_trace(perf: dict[str, Any], iterations: int) -> None:
    """Every timed query's events in order: on its stream CUDA completes H2D, compute and D2H in the
    order enqueued, and a query starts after the one before it ended."""
    for stream in perf["per_stream"]:
        assert len(stream["trace"]) == iterations
        previous_end = None
        for q in stream["trace"]:
            assert q["enqueue_start_ms"] <= q["enqueue_end_ms"]
            device = [q[f"{e}_ms"] for e in ("h2d_start", "h2d_end", "compute_start", "compute_end",
                                             "d2h_start", "d2h_end")]  # fmt: skip
            assert device == sorted(device), q
            assert previous_end is None or q["h2d_start_ms"] >= previous_end, q
            previous_end = q["d2h_end_ms"]


# -- builds -------------------------------------------------------------------------------------


def test_full_trt_build_with_a_shared_timing_cache(cli, recipes: Path, store: Path, tmp_path: Path) -> None:
    """Past the build: fails if the second build does not start from the first's timing cache, the
    history does not grow, or `cache import` takes a cache keyed to another GPU."""
    a = recipe_for(recipes, "cache-a", "tensorrt", "build: {optimization_level: 1}\n")
    b = recipe_for(recipes, "cache-b", "tensorrt", "build: {optimization_level: 2}\n")
    assert plan(cli, a, store, "tensorrt")["build_key"] != plan(cli, b, store, "tensorrt")["build_key"]
    first = build(cli, a, store, "tensorrt")
    second = build(cli, b, store, "tensorrt")
    x, y = show(cli, first["artifact_id"], store), show(cli, second["artifact_id"], store)
    assert x["details"]["timing_cache"]["merged_into"], x["details"]["timing_cache"]
    # The second build starts from what the first produced, and the history grows.
    assert y["details"]["timing_cache"]["started_from"] == x["details"]["timing_cache"]["merged_into"]
    history = cli("cache", "list", "--all", "--store", store, "--json").json()
    assert sorted(r["generation"] for r in history) == list(range(1, len(history) + 1)) and len(history) >= 2
    gpu = current_gpu()
    assert gpu is not None and {r["gpu_name"] for r in history} == {gpu.name}
    # Export with the real key; import into another store; refused when the key names another GPU.
    newest = max(history, key=lambda r: r["generation"])
    dest = tmp_path / "c.cache"
    exported = cli("cache", "export", newest["cache_id"][:8], "-o", dest, "--store", store, "--json")
    assert exported.code == 0, exported
    key = json.loads((tmp_path / "c.cache.json").read_text())
    assert key["gpu_name"] == gpu.name and key["compute_capability"] == gpu.compute_capability
    imported = cli("cache", "import", dest, "--store", tmp_path / "other", "--json")
    assert imported.code == 0, imported
    key["gpu_name"] = "NVIDIA Some Other GPU"
    (tmp_path / "c.cache.json").write_text(json.dumps(key))
    refused = cli("cache", "import", dest, "--store", tmp_path / "other", "--json")
    assert refused.code == 2 and "not this machine" in refused.json()["error"], refused


WIDE = """\
name: {name}
model: {{onnx: models/wide.onnx}}
backend: tensorrt
profiles:
  - x: {{min: [1, 1024], opt: [32, 1024], max: [64, 1024]}}
verify: {{iterations: 5, warmup: 1, atol: 0.05, rtol: 0.01}}
{extra}"""


def test_weak_typing_precisions_on_tensorrt_10(cli, recipes: Path, store: Path) -> None:
    """Past the build: the engine inspector must show FP16 layers in the fp16 build and none in the
    FP32 one. Fails if the FP16 flag never reaches the builder: an FP32 engine passes the loose
    tolerance too, so verify alone cannot tell. (A 1024-wide MatMul: TensorRT picks FP16 kernels
    for it when allowed.)"""
    from trtforge.rules.denylist import parse_layer_info

    onnx_models.save(onnx_models.mlp(seed=0, width=1024, features=1024), recipes / "models" / "wide.onnx")
    half, full = recipes / "wide-fp16.yaml", recipes / "wide-fp32.yaml"
    half.write_text(WIDE.format(name="wide-fp16", extra="precision: {fp16: true}\n"))
    full.write_text(WIDE.format(name="wide-fp32", extra=""))
    plan(cli, half, store, "tensorrt")  # TensorRT 10 takes the weak-typing flag (TensorRT 11 refuses it at plan)
    backend = installed_backend("tensorrt")
    if backend is not None and not backend.version.startswith("10."):
        pytest.skip(f"TensorRT {backend.version} removed weak typing (TensorRT 11)")
    built_half = build(cli, half, store, "tensorrt")
    built_full = build(cli, full, store, "tensorrt")

    def fp16_layers(artifact_id: str) -> list[str]:
        info = show(cli, artifact_id, store)["details"]["layer_info"]
        assert info, "no engine inspector information recorded"
        return [layer.name for layer in parse_layer_info(info) if "FP16" in layer.output_types]

    assert fp16_layers(built_half["artifact_id"]), "the fp16 build has no FP16 layer"
    assert fp16_layers(built_full["artifact_id"]) == [], "the FP32 build has FP16 layers"
    assert verify(cli, built_half["artifact_id"], store, "tensorrt")["status"] == "passed"


def test_per_layer_precisions_on_tensorrt_10(cli, recipes: Path, store: Path) -> None:
    """trtexec's --layerPrecisions, --layerOutputTypes, --precisionConstraints, --avgTiming and
    --maxTactics on the builder that has them. Past the build: fails if the settings are not
    recorded as the builder read them back, or the constrained engine does not verify."""
    extra = (
        "precision: {fp16: true, constraints: obey, layer_precisions: {'*': fp32}, layer_output_types: {'*': fp32}}\n"
        "tactics: {timing_iterations: 2, max_tactics: 4}\n"
    )
    recipe = recipe_for(recipes, "layers", "tensorrt", extra)
    plan(cli, recipe, store, "tensorrt")  # TensorRT 10 takes these (TensorRT 11 refuses them at plan)
    backend = installed_backend("tensorrt")
    if backend is not None and not backend.version.startswith("10."):
        pytest.skip(f"TensorRT {backend.version} removed per-layer precisions (TensorRT 11)")
    built = build(cli, recipe, store, "tensorrt")
    settings = show(cli, built["artifact_id"], store)["details"]["settings"]
    assert settings["precision.constraints"] == "obey" and settings["precision.layer_precisions"]
    assert settings["tactics.timing_iterations"] == 2 and settings["tactics.max_tactics"] == 4
    assert "OBEY_PRECISION_CONSTRAINTS" in settings["flags"]
    assert verify(cli, built["artifact_id"], store, "tensorrt")["status"] == "passed"


def test_per_layer_engine_with_a_calibration_cache_on_tensorrt_10(cli, recipes: Path, store: Path) -> None:
    """`verify --per-layer` of an INT8 build from a calibration cache: the diagnostic engine is built
    through the build's own path, with the cache the build read. Past the build: fails if the
    diagnostic build is not given the cache (on integration c1e1ac4 it was refused: "the build was
    given no calibration cache") or its settings read back differ from the artifact's. The cache
    holds a scale for every tensor of the generated MLP (TensorRT 10's text format)."""
    recipe = recipe_for(recipes, "calibrated", "tensorrt", "precision: {int8: true, calibration: {cache: mlp.cache}}\n")
    backend = installed_backend("tensorrt")
    version = [int(part) for part in (backend.version if backend else "10.0.0").split(".")[:3]]
    header = f"TRT-{version[0] * 10000 + version[1] * 100 + version[2]}-EntropyCalibration2"
    scales = "".join(f"{tensor}: 3c010204\n" for tensor in ("x", "mm", "pre", "y"))  # 1/127 each
    (recipes / "mlp.cache").write_text(header + "\n" + scales)
    plan(cli, recipe, store, "tensorrt")  # TensorRT 10 calibrates (TensorRT 11 refuses it at plan)
    if backend is not None and not backend.version.startswith("10."):
        pytest.skip(f"TensorRT {backend.version} removed INT8 calibration (TensorRT 11)")
    built = build(cli, recipe, store, "tensorrt")
    settings = show(cli, built["artifact_id"], store)["details"]["settings"]
    assert settings["precision.calibration"]["sha256"]
    from tests.test_verify import per_layer_run
    from trtforge.backend.loader import run_in_flavor

    ran = run_in_flavor("tensorrt", per_layer_run, built["artifact_id"], str(store), None, "tensorrt")
    [diagnostic] = ran.diagnostics
    assert diagnostic.settings == settings
    if ran.error is not None:
        stopped(ran.error)


@pytest.mark.parametrize(
    "compatibility",
    ["{hardware: ampere_plus}", "{version_compatible: true}", "{version_compatible: true, exclude_lean_runtime: true}"],
)
def test_compatible_builds_run_and_are_found(cli, recipes: Path, store: Path, compatibility: str) -> None:
    """Past the build: fails if a compatible engine does not verify here or lookup does not find it."""
    recipe = recipe_for(recipes, "compat", "tensorrt", f"compatibility: {compatibility}\n")
    gpu = current_gpu()
    older = gpu is not None and tuple(map(int, gpu.compute_capability.split("."))) < (8, 0)
    if "ampere_plus" in compatibility and older:
        pytest.skip(f"hardware compatibility needs Ampere or newer; this GPU is cc {gpu.compute_capability}")  # type: ignore[union-attr]
    built = build(cli, recipe, store, "tensorrt")
    assert verify(cli, built["artifact_id"], store, "tensorrt")["status"] == "passed"
    assert lookup_best(cli, "compat", store, "tensorrt")["artifact_id"] == built["artifact_id"]


@pytest.mark.parametrize("mode", ["none", "refittable", "refit_identical", "strip_weights", "strip_all_weights"])
def test_refit_mode_builds(cli, flavor: str, recipes: Path, store: Path, mode: str) -> None:
    """Past the engine step: the engine's own ``refittable`` must be true for every refit mode and
    false without one (fails if the REFIT/STRIP_PLAN flag is lost on the way to the builder, which
    the recipe echoed in the record cannot show), and verify passes (strip_weights: refitted first)."""
    from trtforge.stages.verify.loaded import engine_facts

    recipe = recipe_for(recipes, f"mode-{mode}", flavor, f"refit: {mode}\n", one_cc=True)
    built = build(cli, recipe, store, flavor, "build" if mode == "none" else "gpu build")
    assert show(cli, built["artifact_id"], store)["recipe"]["refit"] == mode
    best = lookup_best(cli, f"mode-{mode}", store, flavor, "--allow-weightless")
    assert best["artifact_id"] == built["artifact_id"]
    assert best["metadata"]["weightless"] is (mode in ("strip_weights", "strip_all_weights")), best["metadata"]
    reach(f"loading the {mode} engine", "engine", flavor)
    assert engine_facts(built["artifact_id"], store).refittable is (mode != "none")
    assert verify(cli, built["artifact_id"], store, flavor)["status"] == "passed"


def test_show_has_the_engine_inspectors_layers(cli, recipes: Path, store: Path) -> None:
    """Past the build: fails if a full-TensorRT build records no inspector layers or `show` hides them."""
    recipe = recipe_for(recipes, "layers", "tensorrt")
    built = build(cli, recipe, store, "tensorrt")
    record = show(cli, built["artifact_id"], store)
    assert record["details"]["layer_info"], "no layer information recorded"
    human = cli("show", built["artifact_id"], "--store", store)
    assert "engine inspector" in human.stdout and "not recorded" not in human.stdout


# -- running engines ----------------------------------------------------------------------------


PHASES = ("enqueue_time_ms", "h2d_latency_ms", "gpu_compute_time_ms", "d2h_latency_ms", "latency_ms")


def test_verify_per_profile_with_timing(cli, flavor: str, recipes: Path, store: Path) -> None:
    """Past the engine step: fails if a profile's points are not all checked against the stored
    reference outputs, a timing figure is missing (schema), a phase measures zero, the events of a
    query come out of order, or the timed run's outputs differ from the plain run's."""
    built = build(cli, recipe_for(recipes, "verify", flavor), store, flavor)
    assert len(show(cli, built["artifact_id"], store)["profiles"]) == 2
    stored = reference_only(cli, built["artifact_id"], store, flavor)
    assert [(p["profile"], p["label"]) for p in stored["points"]] == [
        (0, "min"), (0, "opt"), (0, "max"), (1, "min"), (1, "opt"), (1, "max")
    ]  # fmt: skip
    report = verify(cli, built["artifact_id"], store, flavor)
    assert report["status"] == "passed", report
    labels = [(p["profile"], p["label"]) for p in stored["points"]]
    assert [(p["profile"], p["label"]) for p in report["points"]] == labels
    assert all(p["reference_reused"] for p in report["points"]), "verify recomputed the stored reference"
    timed = [(p["profile"], p["method"], p["streams"]) for p in report["perf"]]
    assert timed == [(0, "cuda events", 1), (1, "cuda events", 1)]
    for perf in report["perf"]:
        assert all(perf[phase]["min"] > 0 for phase in PHASES), perf
        assert perf["queries"] == perf["iterations"] == 5 and perf["throughput_qps"] > 0
        check_trace(perf, 5)
        assert perf["outputs_match_plain_run"] is True
    gpu = current_gpu()
    assert gpu is not None and report["runtime"]["gpu_name"] == gpu.name
    record = show(cli, built["artifact_id"], store)
    assert record["statuses"] == {gpu.name: "passed"}, "the verification was not recorded"


def test_cuda_graphs_and_several_streams(cli, flavor: str, recipes: Path, store: Path) -> None:
    """Past the engine step: each context runs its own CUDA graph on its own stream and profile;
    fails if a graph's or another context's outputs differ from the plain run's at the same inputs
    (``plain_run`` per stream), or the streams do not take distinct profiles."""
    recipe = recipe_for(recipes, "graphs", flavor)
    recipe.write_text(recipe.read_text().replace("verify: {", "verify: {cuda_graph: true, streams: 2, "))
    built = build(cli, recipe, store, flavor)
    reference_only(cli, built["artifact_id"], store, flavor)
    report = verify(cli, built["artifact_id"], store, flavor)
    assert report["status"] == "passed", report
    for perf in report["perf"]:
        # Both profiles admit the other's opt shape: each profile is timed on 2 streams, contexts on distinct profiles.
        assert perf["cuda_graph"] is True and perf["streams"] == 2 and "streams_note" not in perf, perf
        assert sorted(perf["stream_profiles"]) == [0, 1] and perf["stream_profiles"][0] == perf["profile"]
        assert [s["profile"] for s in perf["per_stream"]] == perf["stream_profiles"]
        assert [s["plain_run"]["passed"] for s in perf["per_stream"]] == [True, True]
        assert perf["outputs_match_plain_run"] is True
        check_trace(perf, 5)
    recipe.write_text(recipe.read_text().replace("streams: 2", "streams: 3"))
    report = verify(cli, str(recipe), store, flavor)
    assert report["status"] == "passed" and all("streams_note" in p for p in report["perf"]), report["perf"]


def test_refit_weights_outputs_follow_the_new_weights(
    cli, flavor: str, recipes: Path, store: Path, tmp_path: Path
) -> None:
    """The new weights' reference differs from the old at every point (checked here, on the CPU), so
    past the engine step the refitted engine must pass against the new weights and fail against the
    old: fails if the refit leaves the old weights in place or the plan is not refittable."""
    from trtforge.backend.compare import Tolerance, count_mismatches
    from trtforge.backend.run_results import load_run_results
    from trtforge.stages.verify.loaded import check_against, engine_facts

    recipe = recipe_for(recipes, "refit", flavor, "refit: refittable\n", one_cc=True)
    weights = write_mlp(recipes / "models" / "refit-new.onnx", seed=7)
    new_recipe = recipe_for(recipes, "refit-new", flavor, "refit: refittable\n", one_cc=True)  # the model above
    plan(cli, recipe, store, flavor)
    reference_only(cli, recipe, store, flavor, "--save-results", tmp_path / "old.json")
    reference_only(cli, new_recipe, store, flavor, "--save-results", tmp_path / "new.json")
    [(_, old)], [(_, new)] = load_run_results(tmp_path / "old.json"), load_run_results(tmp_path / "new.json")
    assert len(old) == len(new) == 6
    assert all(count_mismatches(n["y"], o["y"], Tolerance(1e-3, 1e-3)) > 0 for n, o in zip(new, old, strict=True))
    parent = build(cli, recipe, store, flavor, "gpu build")
    reach("refit --weights (loads and refits the engine)", "engine", flavor)
    refit = cli("refit", parent["artifact_id"], "--weights", weights, "--verify", "--store", store, "--json")
    assert refit.code == 0, refit
    child = refit.json()
    assert child["verification"]["status"] == "passed"  # against the new weights' reference
    assert engine_facts(child["artifact_id"], store).refittable
    assert check_against(child["artifact_id"], parent["artifact_id"], store) == "failed"  # the old weights'


def test_strip_weights_refit_before_verify(cli, flavor: str, recipes: Path, store: Path) -> None:
    """Past the engine step: fails if verify runs the weightless plan without refitting it from its
    model first (it computes garbage), or lookup hands it out without --allow-weightless."""
    recipe = recipe_for(recipes, "strip", flavor, "refit: strip_weights\n", one_cc=True)
    plan(cli, recipe, store, flavor)
    reference_only(cli, recipe, store, flavor)
    built = build(cli, recipe, store, flavor, "gpu build")
    refused = cli("lookup", "strip", "--store", store, *lookup_target(flavor), "--json")
    assert refused.code != 0 and refused.json()["best"] is None, refused
    best = lookup_best(cli, "strip", store, flavor, "--allow-weightless")
    assert best["artifact_id"] == built["artifact_id"] and "weight-stripped" in " ".join(best["notes"]), best
    report = verify(cli, built["artifact_id"], store, flavor)
    assert report["status"] == "passed" and all(p["reference_reused"] for p in report["points"]), report


def test_denylist_enforced_end_to_end(cli, recipes: Path, store: Path) -> None:
    """Past the build: deny the tactic a layer chose and rebuild; fails if the tactic is still there,
    the report does not say it was removed, or the rebuild fails closed ("cannot confirm that the
    deny entries were enforced"). Only a layer with no other tactic (exit 2) skips."""
    from trtforge.rules.denylist import parse_layer_info

    recipe = recipe_for(recipes, "deny", "tensorrt")
    built = build(cli, recipe, store, "tensorrt")
    layers = parse_layer_info(show(cli, built["artifact_id"], store)["details"]["layer_info"])
    chosen = next((layer for layer in layers if layer.tactic), None)
    assert chosen is not None, "no layer names a tactic"
    entry = {"layer": chosen.name, "tactic": chosen.tactic, "reason": "gpu acceptance test"}
    recipe.write_text(recipe.read_text() + f"tactics: {{deny: [{json.dumps(entry)}]}}\n")
    rebuilt = cli("build", recipe, "--store", store, "--json")
    if rebuilt.code != 0:
        [failed] = rebuilt.json()
        reason = no_alternative_tactic(rebuilt.code, failed["error"] or "")
        assert reason is not None, f"the deny-list rebuild failed: {failed['error']}"
        pytest.skip(reason)
    [after] = rebuilt.json()
    record = show(cli, after["artifact_id"], store)
    report = record["details"]["denylist"]
    assert report["violations"] == [] and report["checked_layers"], report
    assert any(r["layer"] == chosen.name for r in report["removed"]), report
    new_layers = {layer.name: layer.tactic for layer in parse_layer_info(record["details"]["layer_info"])}
    assert new_layers.get(chosen.name) != chosen.tactic
    assert "removed" in cli("show", after["artifact_id"], "--store", store).stdout


# -- detection and lookup -----------------------------------------------------------------------


def test_nvml_detection_in_doctor_and_lookup(cli, recipes: Path, store: Path) -> None:
    """Past the GPU step: fails if doctor or a lookup without target flags does not name this GPU."""
    built = build(cli, recipe_for(recipes, "detect", "tensorrt_rtx"), store, "tensorrt_rtx")
    assert lookup_best(cli, "detect", store, "tensorrt_rtx")["artifact_id"] == built["artifact_id"]
    doctor = cli("doctor", "--json", "--store", store)
    assert doctor.code == 0, doctor
    assert [g["name"] for g in doctor.json()["gpus"]] == [g.name for g in detect_gpus()]
    reach("NVML detection", "gpu")
    gpu = current_gpu()
    assert gpu is not None
    [first, *_] = doctor.json()["gpus"]
    assert (first["name"], first["compute_capability"], first["index"]) == (gpu.name, gpu.compute_capability, 0)
    assert first["driver_version"]
    # lookup with no target flags detects this GPU (an RTX engine may not run here: the error names the GPU).
    found = cli("lookup", "detect", "--store", store, "--json")
    if found.code == 0:
        assert found.json()["target"]["gpu_name"] == gpu.name and found.json()["target"]["detected"] is True
    else:
        assert found.code in (1, 2) and gpu.name in found.stdout + found.stderr, found


def test_engine_validity_in_lookup(cli, recipes: Path, store: Path) -> None:
    """TensorRT-RTX's get_engine_validity (full TensorRT has none). Past the engine step: fails if the
    runtime calls the plan lookup chose for this GPU unusable, or lookup does not ask it."""
    from trtforge.backend.validity import engine_validity

    built = build(cli, recipe_for(recipes, "valid", "tensorrt_rtx"), store, "tensorrt_rtx")
    best = lookup_best(cli, "valid", store, "tensorrt_rtx")
    assert best["artifact_id"] == built["artifact_id"] and Path(best["path"]).is_file()
    reach("the runtime's validity check of the plan", "engine", "tensorrt_rtx")
    found = cli("lookup", "valid", "--store", store, "--flavor", "tensorrt_rtx", "--json")  # detected target
    assert found.code == 0, found
    detected = found.json()["best"]
    assert detected["artifact_id"] == built["artifact_id"]
    assert any(note.startswith("runtime says") for note in detected["notes"]), detected["notes"]
    verdict = engine_validity(installed_backend("tensorrt_rtx"), Path(detected["path"]))  # type: ignore[arg-type]
    assert verdict is not None and verdict.usable, verdict


def test_verify_where_the_runtime_cannot_run_says_why_in_one_line(cli, recipes: Path, store: Path) -> None:
    """Where TensorRT-RTX cannot run engines, verify exits 2 with one error line; on a GPU it does
    not support (compute capability 9.0), the line names the capability. Fails on a traceback or a
    second line."""
    built = build(cli, recipe_for(recipes, "refused", "tensorrt_rtx"), store, "tensorrt_rtx")
    backend, gpu = installed_backend("tensorrt_rtx"), current_gpu()
    if runnable_reason(backend, gpu) is None:  # type: ignore[arg-type]
        pytest.skip(f"TensorRT-RTX runs engines on this GPU (cc {gpu.compute_capability}): nothing to refuse")  # type: ignore[union-attr]
    result = cli("verify", built["artifact_id"], "--store", store)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.code == 2 and len(errors) == 1 and "Traceback" not in result.stderr, result
    reach("verify on a GPU the runtime does not support", "gpu")
    assert gpu is not None
    assert f"TensorRT-RTX does not support compute capability {gpu.compute_capability}" in errors[0]


SELFTEST_GPU_CHECKS = [
    "load",
    "inference vs ONNX Runtime, profile 0",
    "inference vs ONNX Runtime, profile 1",
    "timing breakdown",
    "CUDA graph (outputs equal)",
    "streams and contexts (outputs equal)",
    "refit",
    "weight-stripped refit",
    "deny-list enforcement",
    "engine validity",
]


def test_selftest_reports_every_gpu_check_and_passes_here(cli, tmp_path: Path) -> None:
    """One pass/fail line per GPU check for each installed flavor, none failed, wherever it runs.
    Past the engine step: fails if a check of a flavor that runs engines here does not pass."""
    result = cli("selftest", "--json", "--keep", tmp_path / "kept")
    report = result.json()
    failed = [c for c in report["checks"] if c["result"] == "failed"]
    assert not failed, json.dumps(failed, indent=1)[-4000:]
    installed = [b["flavor"] for b in report["backends"]]
    for flavor in installed:
        names = [c["check"] for c in report["checks"] if c["flavor"] == flavor]
        assert [n for n in names if n in SELFTEST_GPU_CHECKS] == SELFTEST_GPU_CHECKS, names
    assert result.code == (0 if report["runnable"] else 2), result
    for flavor in sorted(installed, key=lambda f: f not in report["runnable"]):
        reach(f"the selftest's engine checks for {flavor_name(flavor)}", "engine", flavor)
        ran = {c["check"]: c["result"] for c in report["checks"] if c["flavor"] == flavor}
        applicable = [n for n in SELFTEST_GPU_CHECKS if not _not_applicable(flavor, n)]
        assert all(ran[n] == "passed" for n in applicable), ran


def _not_applicable(flavor: str, check: str) -> bool:
    """Checks a flavor has no API for: deny lists need full TensorRT, the validity check TensorRT-RTX."""
    return (flavor, check) in {("tensorrt_rtx", "deny-list enforcement"), ("tensorrt", "engine validity")}
