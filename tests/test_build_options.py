"""Every build option reaches a real TensorRT-RTX builder: real CPU builds where they complete,
flags read back from a real IBuilderConfig where a CPU build cannot complete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import onnx_models
from tests.conftest import RecordingSink
from trtforge.backend.build import build_plan, parse_network
from trtforge.backend.config import make_config, network_flags
from trtforge.backend.loader import import_backend
from trtforge.rules.flavors import find_backend
from trtforge.rules.recipe import Recipe, parse_recipe

MLP = """\
name: mlp
model: {onnx: mlp.onnx}
backend: tensorrt_rtx
profiles:
  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}
  - x: {min: [5, 4], opt: [8, 4], max: [16, 4]}
build: {optimization_level: 0}
"""
CNN = """\
name: cnn
model: {onnx: cnn.onnx}
backend: tensorrt_rtx
profiles:
  - images: {min: [1, 3, 32, 32], opt: [2, 3, 32, 32], max: [4, 3, 32, 32]}
  - images: {min: [5, 3, 32, 32], opt: [6, 3, 32, 32], max: [8, 3, 32, 32]}
build: {optimization_level: 0}
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "mlp": onnx_models.save(onnx_models.mlp(), folder / "mlp.onnx"),
        "cnn": onnx_models.save(onnx_models.example_cnn(), folder / "cnn.onnx"),
    }


@pytest.fixture(scope="module")
def backend():
    return find_backend("tensorrt_rtx")


def with_options(base: str, options: str) -> Recipe:
    text = base.replace("build: {optimization_level: 0}\n", "") + options
    if "build:" not in options:
        text += "build: {optimization_level: 0}\n"
    return parse_recipe(text)


@pytest.mark.parametrize(
    ("model", "options", "expected"),
    [
        (
            "mlp",
            "",
            {"profiles": 2, "refit": "none", "timing_cache": "shared", "strongly_typed": True, "flags": ["TF32"]},
        ),
        ("mlp", "build: {optimization_level: 2}\n", {"optimization_level": 2}),
        ("mlp", "build: {optimization_level: 5}\n", {"optimization_level": 5}),
        ("cnn", "tactics: {sources: [jit_convolutions]}\n", {"tactic_sources": ["jit_convolutions"]}),
        ("cnn", "tactics: {sources: [edge_mask_convolutions]}\n", {"tactic_sources": ["edge_mask_convolutions"]}),
        ("cnn", "tactics: {sources: []}\n", {"tactic_sources": []}),
        ("cnn", "compatibility: {compute_capabilities: [8.6]}\n", {"compute_capabilities": ["8.6"]}),
        (
            "cnn",
            "compatibility: {compute_capabilities: [8.0, 8.9, 12.1]}\n",
            {"compute_capabilities": ["8.0", "8.9", "12.1"]},
        ),
        (
            "mlp",
            "build: {optimization_level: 0, workspace_mib: 64, tactic_dram_mib: 128, tactic_shared_memory_kib: 48}\n",
            {"workspace_mib": 64, "tactic_dram_mib": 128, "tactic_shared_memory_kib": 48},
        ),
        ("mlp", "build: {optimization_level: 0, max_aux_streams: 0}\n", {"max_aux_streams": 0}),
        ("mlp", "build: {optimization_level: 0, max_aux_streams: 3}\n", {"max_aux_streams": 3}),
        (
            "cnn",
            "build: {optimization_level: 0, tiling_optimization_level: moderate}\n",
            {"tiling_optimization_level": "moderate"},
        ),
        ("mlp", "precision: {strongly_typed: true, tf32: false}\n", {"strongly_typed": True, "flags": []}),
        ("mlp", "precision: {tf32: true}\n", {"flags": ["TF32"]}),
        ("mlp", "build: {optimization_level: 0, timing_cache: off}\n", {"flags": ["DISABLE_TIMING_CACHE", "TF32"]}),
    ],
)
def test_real_build_applies_and_records_option(backend, models, model: str, options: str, expected: dict) -> None:
    recipe = with_options(MLP if model == "mlp" else CNN, options)
    output = build_plan(backend, recipe, models[model])
    assert output.plan_view.nbytes > 0
    for key, value in expected.items():
        assert output.settings[key] == value, (key, output.settings)


def test_options_change_the_plan(backend, models) -> None:
    """Read-back alone could hide an option the builder ignores; the plan bytes must differ."""
    narrow = build_plan(backend, with_options(CNN, "compatibility: {compute_capabilities: [8.6]}\n"), models["cnn"])
    wide = build_plan(
        backend, with_options(CNN, "compatibility: {compute_capabilities: [8.6, 8.9, 12.0]}\n"), models["cnn"]
    )
    assert bytes(narrow.plan_view) != bytes(wide.plan_view)


def test_progress_monitor_receives_phases(backend, models) -> None:
    recorder = RecordingSink()
    build_plan(backend, with_options(MLP, ""), models["mlp"], recorder)
    kinds = {kind for kind, _ in recorder.events}
    assert kinds == {"start", "step", "finish"}
    started = [name for kind, name in recorder.events if kind == "start"]
    finished = [name for kind, name in recorder.events if kind == "finish"]
    assert sorted(started) == sorted(finished)


# -- options a CPU-only build cannot complete: the real config reads them back --------------


def real_config(recipe: Recipe, model: Path) -> tuple[Any, Any, dict[str, Any]]:
    trt = import_backend(find_backend("tensorrt_rtx"))
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network, _parser = parse_network(trt, builder, logger, model, network_flags(trt, recipe))
    config, settings = make_config(trt, builder, network, recipe)
    return trt, config, settings


@pytest.mark.parametrize(
    ("options", "flags"),
    [
        ("refit: refittable\n", {"REFIT"}),
        ("refit: refit_identical\n", {"REFIT_IDENTICAL"}),
        ("refit: strip_weights\n", {"STRIP_PLAN", "REFIT_IDENTICAL"}),
        ("compatibility: {version_compatible: true}\n", {"VERSION_COMPATIBLE"}),
        (
            "compatibility: {version_compatible: true, exclude_lean_runtime: true}\n",
            {"VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"},
        ),
    ],
)
def test_flags_read_back_from_a_real_builder_config(models, options: str, flags: set[str]) -> None:
    trt, config, settings = real_config(with_options(MLP, options), models["mlp"])
    for name in flags:
        assert config.get_flag(getattr(trt.BuilderFlag, name))
    assert set(settings["flags"]) == flags | {"TF32"}  # TF32 is on by default
    others = {"REFIT", "REFIT_IDENTICAL", "STRIP_PLAN", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"} - flags
    assert not any(config.get_flag(getattr(trt.BuilderFlag, name)) for name in others)


def test_tactic_sources_and_pools_read_back(models) -> None:
    recipe = with_options(
        CNN,
        "tactics: {sources: [edge_mask_convolutions]}\n"
        "build: {optimization_level: 4, workspace_mib: 32, tactic_shared_memory_kib: 64}\n",
    )
    trt, config, _ = real_config(recipe, models["cnn"])
    assert config.get_tactic_sources() == 1 << int(trt.TacticSource.EDGE_MASK_CONVOLUTIONS)
    assert config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE) == 32 << 20
    assert config.get_memory_pool_limit(trt.MemoryPoolType.TACTIC_SHARED_MEMORY) == 64 << 10
    assert config.builder_optimization_level == 4
    assert config.num_optimization_profiles == 2


NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}  # CUDA's "no device": a CPU-only machine, also on a GPU host


@pytest.mark.parametrize(
    ("options", "hint"),
    [
        ("refit: refittable\ncompatibility: {compute_capabilities: [8.6]}\n", "refit: none"),
        ("refit: refit_identical\ncompatibility: {compute_capabilities: [8.6]}\n", "refit: none"),
        ("refit: strip_weights\n", "refit: none"),
        ("compatibility: {version_compatible: true}\n", "add compatibility.exclude_lean_runtime: true"),
    ],
)
def test_cpu_only_build_is_refused_before_any_work(cli, mlp_recipe, store: Path, options: str, hint: str) -> None:
    """Issue 23: these were started, printed TensorRT's internal error and exited 1 (a build failure);
    the capability table knows a CPU-only TensorRT-RTX build cannot complete them: exit 2, the way out."""
    recipe = mlp_recipe()
    recipe.write_text(recipe.read_text() + options)
    planned = cli("plan", recipe, "--store", store, "--json", env=NO_GPU)
    assert planned.code == 2 and planned.json()[0]["status"] == "failed", planned
    assert hint in planned.json()[0]["hint"], planned
    result = cli("build", recipe, "--store", store, "--json", env=NO_GPU)
    assert result.code == 2, result
    [failed] = result.json()
    assert "a CPU-only build with TensorRT-RTX" in failed["error"] and failed["build_key"], failed
    assert failed["error_detail"] == [] and not store.exists()  # nothing attempted, nothing written
    human = cli("build", recipe, "--store", store, env=NO_GPU)
    hint_line = human.stderr.split("hint: ", 1)[-1].replace("\n", " ")
    assert human.code == 2 and hint in hint_line, human
    assert "Traceback" not in human.stderr and "Internal Error" not in human.stderr


def test_reproduce_refuses_what_a_cpu_build_cannot_complete(cli, mlp_recipe, store: Path) -> None:
    """`build --reproduce` is a build too: without a GPU it refuses a refit mode before rebuilding."""
    recipe = mlp_recipe()
    recipe.write_text(recipe.read_text() + "refit: refittable\ncompatibility: {compute_capabilities: [8.6]}\n")
    built = cli("build", recipe, "--store", store, "--json")
    if built.code != 0:
        pytest.skip(f"building the refittable artifact needs a GPU TensorRT-RTX supports: {built.json()[0]['error']}")
    reproduced = cli("build", "--reproduce", built.json()[0]["artifact_id"], "--store", store, "--json", env=NO_GPU)
    assert reproduced.code == 2 and "CPU-only build" in reproduced.json()["error"], reproduced


def test_the_way_out_of_the_lean_runtime_refusal_builds(cli, mlp_recipe, store: Path) -> None:
    """The table's rule is per combination: version compatibility with the lean runtime excluded
    builds on a CPU-only machine, so `plan` says build and `build` builds."""
    recipe = mlp_recipe()
    recipe.write_text(recipe.read_text() + "compatibility: {version_compatible: true, exclude_lean_runtime: true}\n")
    planned = cli("plan", recipe, "--store", store, "--json", env=NO_GPU)
    assert planned.code == 0 and planned.json()[0]["status"] == "build", planned
    built = cli("build", recipe, "--store", store, "--json", env=NO_GPU)
    assert built.code == 0 and built.json()[0]["status"] == "built", built


def test_a_refittable_rtx_build_targets_one_compute_capability(cli, mlp_recipe, store: Path) -> None:
    """TensorRT-RTX 1.7's kernel generator stops a REFIT build for several targets (observed on the
    CPU: CHECK(sm_vers_.size() == 1)); the default list has four, so it is refused before the build."""
    recipe = mlp_recipe()
    recipe.write_text(recipe.read_text() + "refit: refittable\n")
    result = cli("build", recipe, "--store", store, "--json")
    assert result.code == 2, result
    [failed] = result.json()
    assert "refittable engine for one compute capability" in failed["error"] and failed["build_key"]
    assert not store.exists()  # refused before anything is written


def test_unsupported_option_is_refused_before_the_build(cli, mlp_recipe, store: Path) -> None:
    recipe = mlp_recipe()
    recipe.write_text(recipe.read_text() + "tactics: {sources: [cublas]}\n")
    result = cli("build", recipe, "--store", store, "--json")
    assert result.code == 2, result
    [failed] = result.json()
    assert failed["error"] == (
        "recipe option tactics.sources: cublas is not available: TensorRT-RTX 1.7.1.116 does not have it"
    )
    human = cli("build", recipe, "--store", store)
    assert "hint: valid tactic sources for TensorRT-RTX 1.7.1.116: edge_mask_convolutions, jit_convolutions" in (
        human.stderr
    )
    assert not store.exists()


def test_artifact_records_settings_and_target(cli, mlp_recipe, store: Path) -> None:
    recipe = mlp_recipe()
    recipe.write_text(
        recipe.read_text().replace("build:\n  optimization_level: 0\n", "")
        + "precision: {strongly_typed: true}\n"
        + "tactics: {sources: [jit_convolutions]}\n"
        + "compatibility: {compute_capabilities: [8.9, 12.0]}\n"
        + "build: {optimization_level: 1, max_aux_streams: 1, tiling_optimization_level: fast, timing_cache: private}\n"
    )
    built = cli("build", recipe, "--store", store, "--json")
    assert built.code == 0, built
    [result] = built.json()
    record = cli("show", result["artifact_id"], "--store", store, "--json").json()
    settings = record["details"]["settings"]
    assert settings["tactic_sources"] == ["jit_convolutions"] and settings["compute_capabilities"] == ["8.9", "12.0"]
    assert settings["max_aux_streams"] == 1 and settings["tiling_optimization_level"] == "fast"
    assert record["compute_capabilities"] == ["8.9", "12.0"]
    assert sorted(record["details"]["target"]["compute_capabilities"]) == ["12.0", "8.9"]
    assert record["details"]["refit"] == "none" and record["details"]["weightless"] is False
    envelope = record["details"]["compatibility"]
    assert envelope["compute_capabilities"] == ["8.9", "12.0"] and envelope["runtime_versions"] == "same"
    assert envelope["version_compatible"] is False and envelope["hardware"] == "none"
    assert "timing caches are no-ops" in built.stderr or built.stderr == ""
    human = cli("build", recipe, "--store", store)
    assert human.code == 0 and "cached" in human.stdout
    assert "note: TensorRT-RTX 1.7.1.116: timing caches are no-ops" in human.stderr
    shown = cli("show", result["artifact_id"], "--store", store)
    assert "tactic_sources: ['jit_convolutions']" in shown.stdout


def test_example_rtx_recipe_builds(cli, store: Path, tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    folder = tmp_path / "recipes"
    (folder / "models").mkdir(parents=True)
    (folder / "example_rtx.yaml").write_text((repo / "recipes" / "example_rtx.yaml").read_text())
    model = repo / "recipes" / "models" / "example_cnn.onnx"
    (folder / "models" / "example_cnn.onnx").write_bytes(model.read_bytes())
    result = cli("build", folder / "example_rtx.yaml", "--store", store, "--json")
    assert result.code == 0, result
    record = cli("show", result.json()[0]["artifact_id"], "--store", store, "--json").json()
    settings = record["details"]["settings"]
    assert settings["tactic_sources"] == ["edge_mask_convolutions", "jit_convolutions"]
    assert settings["compute_capabilities"] == ["8.6", "8.9", "12.0"] and "DISABLE_TIMING_CACHE" in settings["flags"]
    assert any("Multi stream" in entry["message"] for entry in record["build_log"])  # the builder's own warnings


# Past what TensorRT's setters take (int32 counts; sizes whose byte value overflows int64).
TOO_LARGE = {
    ("build", "max_aux_streams"): 2**31,
    ("build", "workspace_mib"): 2**44,
    ("build", "tactic_dram_mib"): 2**44,
    ("build", "tactic_shared_memory_kib"): 2**54,
    ("build", "tiling_l2_limit_kib"): 2**53,
    ("tactics", "timing_iterations"): 2**31,
    ("tactics", "max_tactics"): 2**31,
}


def test_integer_options_too_large_for_the_builder_are_refused_at_validation(
    cli, mlp_recipe, models, store: Path
) -> None:
    """These passed validation and crashed the build worker (exit 1, "a bug in trtforge"): now each is
    its recipe's error (file:line field, exit 2), and the largest value allowed still reaches a real config."""
    recipes = []
    for (section, field), value in TOO_LARGE.items():
        recipe = mlp_recipe(f"{section}-{field}")
        tail = f"  {field}: {value}\n" if section == "build" else f"{section}: {{{field}: {value}}}\n"
        recipe.write_text(recipe.read_text() + tail)  # MLP_RECIPE ends inside its build: mapping
        recipes.append(recipe)
    for command in ("plan", "build"):
        result = cli(command, *recipes, "--store", store, "--json")
        assert result.code == 2 and "Traceback" not in result.stderr, result
        for recipe, item, (section, field) in zip(recipes, result.json(), TOO_LARGE, strict=True):
            assert item["error_kind"] == "bad_input" and item["hint"], item
            assert item["error"].startswith(f"{recipe}:") and f" {section}.{field}: " in item["error"], item
    assert not store.exists()  # refused before any work

    defs = Recipe.model_json_schema()["$defs"]
    models_of = {"build": "BuildOptions", "tactics": "Tactics"}
    largest = {
        (section, field): defs[models_of[section]]["properties"][field]["anyOf"][0]["maximum"]
        for section, field in TOO_LARGE
    }
    build = {"optimization_level": 0, **{f: v for (s, f), v in largest.items() if s == "build"}}
    tactics = {f: v for (s, f), v in largest.items() if s == "tactics"}
    recipe = with_options(MLP, f"build: {json.dumps(build)}\ntactics: {json.dumps(tactics)}\n")
    _trt, _config, settings = real_config(recipe, models["mlp"])  # every setter takes its largest value
    # (the pools TensorRT clamps, tactic DRAM and shared memory, read back smaller: the build log says so)
    assert settings["max_aux_streams"] == build["max_aux_streams"], settings
    assert settings["workspace_mib"] == build["workspace_mib"], settings
    assert settings["build.tiling_l2_limit_kib"] == build["tiling_l2_limit_kib"], settings
    assert settings["tactics.max_tactics"] == tactics["max_tactics"], settings
