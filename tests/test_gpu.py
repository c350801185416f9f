"""The GPU acceptance suite (`pytest -m gpu`): every GPU-only path, end to end, on generated models.

Each test runs the CLI in a subprocess, as a user does, for each flavor (full TensorRT, TensorRT-RTX)
whose runtime can run engines on this machine's GPU, and skips with the reason where it cannot (no
GPU; full TensorRT not installed; TensorRT-RTX on compute capability 9.0). `trtforge selftest` runs
the same paths for users. Here (no GPU) every test skips, each with its reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from trtforge.rules.flavors import FLAVORS, RTX_COMPUTE_CAPABILITIES, flavor_name, installed_backend
from trtforge.rules.target import current_gpu
from trtforge.stages.selftest import runnable_reason, write_mlp, write_recipe

pytestmark = pytest.mark.gpu


def engine_skip(flavor: str) -> str | None:
    """Why engines of ``flavor`` cannot run here, or None."""
    backend = installed_backend(flavor)  # type: ignore[arg-type]
    if backend is None:
        extra = " (its wheels are not installable from the package index here)" if flavor == "tensorrt" else ""
        return f"{flavor_name(flavor)} is not installed{extra}"
    return runnable_reason(backend, current_gpu())


@pytest.fixture(params=FLAVORS)
def flavor(request: pytest.FixtureRequest) -> str:
    reason = engine_skip(request.param)
    if reason is not None:
        pytest.skip(reason)
    return request.param


# What TensorRT-RTX does not have, per test of a full-TensorRT feature (its tests skip with this).
RTX_LACKS = {
    "test_full_trt_build_with_a_shared_timing_cache": "TensorRT-RTX has no timing cache (its calls are no-ops)",
    "test_weak_typing_precisions_on_tensorrt_10": "TensorRT-RTX networks are strongly typed (no weak typing)",
    "test_compatible_builds_run_and_are_found": "TensorRT-RTX has no hardware/version compatibility levels",
    "test_show_has_the_engine_inspectors_layers": "trtforge records inspector layers for full TensorRT builds only",
    "test_denylist_enforced_end_to_end": "TensorRT-RTX has no timing cache or algorithm selector to deny tactics with",
    "test_per_layer_precisions_on_tensorrt_10": "TensorRT-RTX networks are strongly typed (no per-layer precisions)",
}


@pytest.fixture(params=FLAVORS)
def full_trt(request: pytest.FixtureRequest) -> str:
    """Full-TensorRT features: the TensorRT-RTX case skips with what it lacks."""
    if request.param == "tensorrt_rtx":
        pytest.skip(RTX_LACKS[request.function.__name__])
    reason = engine_skip("tensorrt")
    if reason is not None:
        pytest.skip(reason)
    return "tensorrt"


@pytest.fixture
def gpu() -> Any:
    found = current_gpu()
    if found is None:
        pytest.skip("no NVIDIA GPU is visible (NVML found no driver or device)")
    return found


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    return tmp_path / "recipes"


def recipe_for(recipes: Path, name: str, flavor: str, extra: str = "") -> Path:
    """The generated MLP with two profiles; TensorRT-RTX builds also for this GPU's capability."""
    gpu = current_gpu()
    ccs = None
    if flavor == "tensorrt_rtx" and gpu is not None and gpu.compute_capability in RTX_COMPUTE_CAPABILITIES:
        ccs = sorted({"8.0", "8.6", "8.9", "12.0", gpu.compute_capability})
    return write_recipe(recipes, name, flavor, extra, ccs)


def build(cli: Callable[..., Any], recipe: Path, store: Path) -> dict[str, Any]:
    result = cli("build", recipe, "--store", store, "--json")
    assert result.code == 0, result
    [built] = result.json()
    return built


def show(cli: Callable[..., Any], artifact_id: str, store: Path) -> dict[str, Any]:
    result = cli("show", artifact_id, "--store", store, "--json")
    assert result.code == 0, result
    return result.json()


def verify(cli: Callable[..., Any], ref: str, store: Path, *args: str) -> dict[str, Any]:
    result = cli("verify", ref, "--store", store, "--json", *args)
    assert result.code in (0, 1), result
    return result.json()


# -- builds -------------------------------------------------------------------------------------


def test_full_trt_build_with_a_shared_timing_cache(
    cli, full_trt: str, recipes: Path, store: Path, tmp_path: Path
) -> None:
    first = build(cli, recipe_for(recipes, "cache-a", full_trt, "build: {optimization_level: 1}\n"), store)
    second = build(cli, recipe_for(recipes, "cache-b", full_trt, "build: {optimization_level: 2}\n"), store)
    a, b = show(cli, first["artifact_id"], store), show(cli, second["artifact_id"], store)
    assert a["details"]["timing_cache"]["merged_into"], a["details"]["timing_cache"]
    # The second build starts from what the first produced, and the history grows.
    assert b["details"]["timing_cache"]["started_from"] == a["details"]["timing_cache"]["merged_into"]
    history = cli("cache", "list", "--all", "--store", store, "--json").json()
    assert sorted(r["generation"] for r in history) == list(range(1, len(history) + 1)) and len(history) >= 2
    gpu = current_gpu()
    assert gpu is not None and {r["gpu_name"] for r in history} == {gpu.name}
    # Export with the real key; import into another store; refused when the key names another GPU.
    newest = max(history, key=lambda r: r["generation"])
    dest = tmp_path / "c.cache"
    exported = cli("cache", "export", newest["cache_id"][:8], dest, "--store", store, "--json")
    assert exported.code == 0, exported
    key = json.loads((tmp_path / "c.cache.json").read_text())
    assert key["gpu_name"] == gpu.name and key["compute_capability"] == gpu.compute_capability
    imported = cli("cache", "import", dest, "--store", tmp_path / "other", "--json")
    assert imported.code == 0, imported
    key["gpu_name"] = "NVIDIA Some Other GPU"
    (tmp_path / "c.cache.json").write_text(json.dumps(key))
    refused = cli("cache", "import", dest, "--store", tmp_path / "other", "--json")
    assert refused.code == 2 and "not this machine" in refused.json()["error"], refused


def test_weak_typing_precisions_on_tensorrt_10(cli, full_trt: str, recipes: Path, store: Path) -> None:
    backend = installed_backend("tensorrt")
    assert backend is not None
    if not backend.version.startswith("10."):
        pytest.skip(f"TensorRT {backend.version} removed weak typing (TensorRT 11)")
    recipe = recipe_for(recipes, "fp16", full_trt, "precision: {fp16: true}\n")
    recipe.write_text(recipe.read_text().replace("atol: 0.001, rtol: 0.001", "atol: 0.05, rtol: 0.05"))
    built = build(cli, recipe, store)
    assert show(cli, built["artifact_id"], store)["details"]["settings"], "builder settings not recorded"
    assert verify(cli, built["artifact_id"], store)["status"] == "passed"


def test_per_layer_precisions_on_tensorrt_10(cli, full_trt: str, recipes: Path, store: Path) -> None:
    """trtexec's --layerPrecisions, --layerOutputTypes, --precisionConstraints, --avgTiming and
    --maxTactics on the builder that has them: built, recorded per layer, verified."""
    backend = installed_backend("tensorrt")
    assert backend is not None
    if not backend.version.startswith("10."):
        pytest.skip(f"TensorRT {backend.version} removed per-layer precisions (TensorRT 11)")
    extra = (
        "precision: {fp16: true, constraints: obey, layer_precisions: {'*': fp32}, layer_output_types: {'*': fp32}}\n"
        "tactics: {timing_iterations: 2, max_tactics: 4}\n"
    )
    built = build(cli, recipe_for(recipes, "layers", full_trt, extra), store)
    settings = show(cli, built["artifact_id"], store)["details"]["settings"]
    assert settings["precision.constraints"] == "obey" and settings["precision.layer_precisions"]
    assert settings["tactics.timing_iterations"] == 2 and settings["tactics.max_tactics"] == 4
    assert "OBEY_PRECISION_CONSTRAINTS" in settings["flags"]
    assert verify(cli, built["artifact_id"], store)["status"] == "passed"


@pytest.mark.parametrize(
    "compatibility",
    ["{hardware: ampere_plus}", "{version_compatible: true}", "{version_compatible: true, exclude_lean_runtime: true}"],
)
def test_compatible_builds_run_and_are_found(
    cli, full_trt: str, recipes: Path, store: Path, compatibility: str
) -> None:
    gpu = current_gpu()
    assert gpu is not None
    if "ampere_plus" in compatibility and tuple(map(int, gpu.compute_capability.split("."))) < (8, 0):
        pytest.skip(f"hardware compatibility needs Ampere or newer; this GPU is cc {gpu.compute_capability}")
    built = build(cli, recipe_for(recipes, "compat", full_trt, f"compatibility: {compatibility}\n"), store)
    assert verify(cli, built["artifact_id"], store)["status"] == "passed"
    found = cli("lookup", "compat", "--store", store, "--flavor", full_trt, "--json")
    assert found.code == 0 and found.json()["artifact_id"] == built["artifact_id"], found


@pytest.mark.parametrize("mode", ["refittable", "refit_identical", "strip_weights", "strip_all_weights"])
def test_refit_mode_builds(cli, flavor: str, recipes: Path, store: Path, mode: str) -> None:
    built = build(cli, recipe_for(recipes, f"mode-{mode}", flavor, f"refit: {mode}\n"), store)
    record = show(cli, built["artifact_id"], store)
    assert record["recipe"]["refit"] == mode
    assert verify(cli, built["artifact_id"], store)["status"] == "passed"  # strip_weights: refitted first


def test_show_has_the_engine_inspectors_layers(cli, full_trt: str, recipes: Path, store: Path) -> None:
    built = build(cli, recipe_for(recipes, "layers", full_trt), store)
    record = show(cli, built["artifact_id"], store)
    assert record["details"]["layer_info"], "no layer information recorded"
    human = cli("show", built["artifact_id"], "--store", store)
    assert "engine inspector" in human.stdout and "not recorded" not in human.stdout


# -- running engines ----------------------------------------------------------------------------


def test_verify_per_profile_with_timing(cli, flavor: str, recipes: Path, store: Path) -> None:
    built = build(cli, recipe_for(recipes, "verify", flavor), store)
    report = verify(cli, built["artifact_id"], store)
    assert report["status"] == "passed", report
    assert sorted({p["profile"] for p in report["points"]}) == [0, 1]
    assert {p["label"] for p in report["points"]} == {"min", "opt", "max"}
    assert sorted(p["profile"] for p in report["perf"]) == [0, 1]
    for perf in report["perf"]:
        assert perf["latency_ms"]["median"] > 0 and perf["device_memory_bytes"] >= 0
    gpu = current_gpu()
    assert gpu is not None and report["runtime"]["gpu_name"] == gpu.name
    assert show(cli, built["artifact_id"], store)["statuses"], "the verification was not recorded"


def test_cuda_graphs_and_several_streams(cli, flavor: str, recipes: Path, store: Path) -> None:
    recipe = recipe_for(recipes, "graphs", flavor)
    recipe.write_text(recipe.read_text().replace("verify: {", "verify: {cuda_graph: true, streams: 2, "))
    built = build(cli, recipe, store)
    report = verify(cli, built["artifact_id"], store)
    assert report["status"] == "passed", report
    for perf in report["perf"]:
        # Both profiles admit the other's opt shape, so each profile is timed on 2 streams with
        # contexts on distinct profiles.
        assert perf["cuda_graph"] is True and perf["streams"] == 2, perf
        assert sorted(perf["stream_profiles"]) == [0, 1] and "streams_note" not in perf
    three = recipe.read_text().replace("streams: 2", "streams: 3")
    recipe.write_text(three)
    built = build(cli, recipe, store)
    report = verify(cli, built["artifact_id"], store)
    assert report["status"] == "passed" and all("streams_note" in p for p in report["perf"]), report["perf"]


def test_refit_weights_outputs_follow_the_new_weights(
    cli, flavor: str, recipes: Path, store: Path, tmp_path: Path
) -> None:
    parent = build(cli, recipe_for(recipes, "refit", flavor, "refit: refittable\n"), store)
    weights = write_mlp(tmp_path / "new.onnx", seed=7)
    refit = cli("refit", parent["artifact_id"], "--weights", weights, "--verify", "--store", store, "--json")
    assert refit.code == 0, refit
    child = refit.json()
    assert child["verification"]["status"] == "passed"  # against the new weights' reference
    # Against the old weights' reference the refitted engine must fail: its outputs follow the new weights.
    old = check_against_parent(child["artifact_id"], parent["artifact_id"], store, flavor)
    assert old == "failed"


def check_against_parent(child_id: str, parent_id: str, store: Path, flavor: str) -> str:
    """The refitted plan in the candidate seat, the parent's model (old weights) as reference."""
    from trtforge.backend.loader import run_in_flavor

    return run_in_flavor(flavor, _check_against_parent, child_id, parent_id, str(store))  # type: ignore[arg-type]


def _check_against_parent(child_id: str, parent_id: str, store: str) -> str:
    from trtforge.backend.run import EngineCandidate, gpu_runtime_for
    from trtforge.stages.verify import check, subject_from_artifact
    from trtforge.store import open_store
    from trtforge.store.plans import plan_for_loading

    opened = open_store(store)
    try:
        parent, child = opened.catalog.get_artifact(parent_id), opened.catalog.get_artifact(child_id)
        backend, runtime = gpu_runtime_for(
            child.flavor, child.trt_version, compute_capabilities=child.compute_capabilities  # type: ignore[arg-type]
        )
        verified = plan_for_loading(opened, child)
        candidate = EngineCandidate(verified.data, backend, allow_host_code=verified.allow_host_code, why=verified.why)
        return check(subject_from_artifact(parent), candidate, runtime, store=opened, record=False).status
    finally:
        opened.close()


def test_strip_weights_refit_before_verify(cli, flavor: str, recipes: Path, store: Path) -> None:
    built = build(cli, recipe_for(recipes, "strip", flavor, "refit: strip_weights\n"), store)
    assert verify(cli, built["artifact_id"], store)["status"] == "passed"
    assert "weight-stripped" in " ".join(
        cli("lookup", "strip", "--store", store, "--flavor", flavor, "--allow-weightless", "--json").json()["notes"]
    )


def test_denylist_enforced_end_to_end(cli, full_trt: str, recipes: Path, store: Path) -> None:
    from trtforge.rules.denylist import parse_layer_info

    recipe = recipe_for(recipes, "deny", full_trt)
    built = build(cli, recipe, store)
    layers = parse_layer_info(show(cli, built["artifact_id"], store)["details"]["layer_info"])
    chosen = next((layer for layer in layers if layer.tactic), None)
    assert chosen is not None, "no layer names a tactic"
    entry = {"layer": chosen.name, "tactic": chosen.tactic, "reason": "gpu acceptance test"}
    recipe.write_text(recipe.read_text() + f"tactics: {{deny: [{json.dumps(entry)}]}}\n")
    rebuilt = cli("build", recipe, "--store", store, "--json")
    if rebuilt.code != 0:
        # Only possible when the layer has no other tactic: the build must say so in one line.
        assert "no allowed tactic" in rebuilt.stdout + rebuilt.stderr or "deny" in rebuilt.stderr, rebuilt
        pytest.skip(f"layer {chosen.name} has no alternative to {chosen.tactic}: {rebuilt.stderr.strip()[:200]}")
    [after] = rebuilt.json()
    record = show(cli, after["artifact_id"], store)
    report = record["details"]["denylist"]
    assert report["violations"] == [] and report["checked_layers"], report
    assert any(r["layer"] == chosen.name for r in report["removed"]), report
    new_layers = {layer.name: layer.tactic for layer in parse_layer_info(record["details"]["layer_info"])}
    assert new_layers.get(chosen.name) != chosen.tactic
    assert "removed" in cli("show", after["artifact_id"], "--store", store).stdout


# -- detection and lookup -----------------------------------------------------------------------


def test_nvml_detection_in_doctor_and_lookup(cli, gpu: Any, recipes: Path, store: Path) -> None:
    doctor = cli("doctor", "--json", "--store", store)
    assert doctor.code == 0, doctor
    [first, *_] = doctor.json()["gpus"]
    assert (first["name"], first["compute_capability"], first["index"]) == (gpu.name, gpu.compute_capability, 0)
    assert first["driver_version"]
    # lookup with no target flags detects this GPU (an RTX engine may not run here: the error names the GPU).
    if installed_backend("tensorrt_rtx") is None:
        pytest.skip("TensorRT-RTX is not installed (it builds the engine without a target)")
    build(cli, recipe_for(recipes, "detect", "tensorrt_rtx"), store)
    found = cli("lookup", "detect", "--store", store, "--json")  # no target flags at all
    if found.code == 0:
        assert found.json()["target"]["gpu_name"] == gpu.name and found.json()["target"]["detected"] is True
    else:
        assert found.code in (1, 2) and gpu.name in found.stdout + found.stderr, found


def test_engine_validity_in_lookup(cli, flavor: str, recipes: Path, store: Path) -> None:
    if flavor == "tensorrt":
        pytest.skip("full TensorRT has no get_engine_validity: lookup's own rules stand")
    built = build(cli, recipe_for(recipes, "valid", "tensorrt_rtx"), store)
    found = cli("lookup", "valid", "--store", store, "--json", "--flavor", "tensorrt_rtx")
    assert found.code == 0 and found.json()["artifact_id"] == built["artifact_id"], found
    from trtforge.backend.validity import engine_validity

    verdict = engine_validity(installed_backend("tensorrt_rtx"), Path(found.json()["path"]))  # type: ignore[arg-type]
    assert verdict is not None and verdict.usable, verdict


def test_verify_on_a_gpu_the_runtime_refuses_says_why_in_one_line(cli, gpu: Any, recipes: Path, store: Path) -> None:
    backend = installed_backend("tensorrt_rtx")
    reason = runnable_reason(backend, gpu) if backend is not None else "TensorRT-RTX is not installed"
    if backend is None or reason is None:
        pytest.skip(reason or f"TensorRT-RTX supports this GPU (cc {gpu.compute_capability})")
    built = build(cli, recipe_for(recipes, "refused", "tensorrt_rtx"), store)
    result = cli("verify", built["artifact_id"], "--store", store)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.code == 2 and len(errors) == 1, result
    assert f"TensorRT-RTX does not support compute capability {gpu.compute_capability}" in errors[0]


def test_selftest_passes_here(cli, flavor: str, tmp_path: Path) -> None:
    result = cli("selftest", "--json", "--keep", tmp_path / "kept")
    report = result.json()
    failed = [c for c in report["checks"] if c["result"] == "failed"]
    assert result.code == 0 and not failed, json.dumps(failed, indent=1)[-4000:]
    assert any(c["flavor"] == flavor and c["result"] == "passed" and c["check"].startswith("verify")
               for c in report["checks"])  # fmt: skip
