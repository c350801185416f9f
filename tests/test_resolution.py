"""One way from a recipe to its build key: `plan`, `build`, `verify RECIPE` and `build --reproduce RECIPE`
agree on it for recipes that together use every recipe field.

Regression test for issue 11; on 55eb6bf it fails: `plan` ignored the sidecar deny file (another key
than `build`), and `verify RECIPE` computed the target without the recipe's compute capabilities
("no engine is built for this recipe here" right after building it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import onnx_models
from tests.conftest import MLP_RECIPE
from trtforge.rules.flavors import RTX_COMPUTE_CAPABILITIES, find_backend
from trtforge.rules.target import detect_gpus

MODEL_DIR = "models"
PROFILE = "profiles:\n  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}\n"

# name -> recipe body after `name:` and `model:`; together they use every field of the recipe format.
RECIPES: dict[str, str] = {
    # Builds on TensorRT-RTX on a CPU.
    "plain": PROFILE,
    "every-build-option": """\
description: free text, not part of the key
backend: tensorrt_rtx
profiles:
  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}
  - x: {min: [5, 4], opt: [6, 4], max: [8, 4]}
precision: {strongly_typed: true, tf32: false}
tactics: {sources: [edge_mask_convolutions, jit_convolutions]}
refit: none
compatibility:
  hardware: none
  version_compatible: false
  exclude_lean_runtime: false
  compute_capabilities: [8.6, 12.0]
build:
  optimization_level: 2
  workspace_mib: 256
  tactic_dram_mib: 512
  tactic_shared_memory_kib: 48
  max_aux_streams: 1
  tiling_optimization_level: fast
  timing_cache: off
verify:
  atol: 1e-4
  rtol: 1e-4
  outputs: {y: {atol: 1e-3}}
  shapes: [min, opt, max, {x: [3, 4]}]
  seed: 3
  inputs: {x: {distribution: normal, mean: 0, std: 1}}
  iterations: 5
  warmup: 1
  cuda_graph: false
  streams: 1
""",
    "pinned-model": "model_pin: true\n" + PROFILE,
    # Refused on TensorRT-RTX before the build (exit 2), with the key reported.
    "sidecar-deny": """\
profiles:
  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}
tactics:
  deny:
    - {layer: "gemm*", tactic: "*", reason: inline}
  deny_file: deny.yaml
""",
    "ampere-plus": PROFILE + "compatibility: {hardware: ampere_plus}\n",
    "refittable": PROFILE + "refit: refittable\n",
    # Refused before the build where no GPU is visible (exit 2, the capability table knows): these
    # need a GPU with TensorRT-RTX.
    "refittable-one-target": """\
profiles:
  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}
refit: refittable
compatibility: {compute_capabilities: [8.6]}
""",
    "refit-identical": PROFILE + "refit: refit_identical\n",
    "strip-weights": PROFILE + "refit: strip_weights\n",
    "version-compatible-with-lean-runtime": """\
profiles:
  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}
compatibility: {version_compatible: true}
""",
    # Builds here: the lean runtime stays out of the plan.
    "version-compatible": """\
profiles:
  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}
compatibility: {version_compatible: true, exclude_lean_runtime: true}
""",
}
BUILDS_HERE = {"plain", "every-build-option", "pinned-model", "version-compatible"}
REFUSED_BEFORE_BUILD = {"sidecar-deny", "ampere-plus", "refittable"}  # exit 2, in plan and build alike


def write_corpus(folder: Path) -> dict[str, Path]:
    model = onnx_models.save(onnx_models.mlp(0), folder / MODEL_DIR / "mlp.onnx")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    (folder / "deny.yaml").write_text('deny:\n  - {layer: "relu*", tactic: "0x1f", reason: sidecar}\n')
    paths = {}
    for name, body in RECIPES.items():
        model_block = f"model:\n  onnx: {MODEL_DIR}/mlp.onnx\n"
        if body.startswith("model_pin: true\n"):
            body = body.removeprefix("model_pin: true\n")
            model_block += f"  sha256: {digest}\n"
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(f"name: {name}\n{model_block}{body}")
    return paths


def by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in rows}


@pytest.mark.slow  # seconds each: README's test command keeps its 5-minute cap (.ci/run runs it)
def test_plan_build_verify_and_reproduce_agree_on_the_key(tmp_path: Path, store: Path, cli: Callable[..., Any]) -> None:
    paths = write_corpus(tmp_path / "corpus")
    recipes = sorted(map(str, paths.values()))

    planned = cli("plan", *recipes, "--store", store, "--json")
    built = cli("build", *recipes, "--store", store, "--json")
    assert planned.code == 2 and built.code == 2, (planned, built)  # some recipes are refused here
    plan_rows, build_rows = by_name(planned.json()), by_name(built.json())
    assert set(plan_rows) == set(build_rows) == set(RECIPES)

    for name in RECIPES:
        plan_row, build_row = plan_rows[name], build_rows[name]
        assert plan_row["build_key"] and len(plan_row["build_key"]) == 64, plan_row
        assert build_row["build_key"] == plan_row["build_key"], (name, plan_row, build_row)
        assert build_row["target"] == plan_row["target"], name
        if name in BUILDS_HERE:
            assert (plan_row["status"], build_row["status"]) == ("build", "built"), (name, build_row)
        elif name in REFUSED_BEFORE_BUILD:
            assert plan_row["status"] == build_row["status"] == "failed", (name, build_row)
        elif not detect_gpus():  # a GPU machine builds it; a CPU-only one refuses it before any work
            assert plan_row["status"] == build_row["status"] == "failed", (name, build_row)
            assert "CPU-only build" in build_row["error"], build_row

    # After the build, `plan` finds what `build` stored, under the same key.
    again = by_name(cli("plan", *recipes, "--store", store, "--json").json())
    for name in BUILDS_HERE:
        assert again[name]["status"] == "cached" and again[name]["artifact_id"] == build_rows[name]["artifact_id"]
        assert again[name]["build_key"] == build_rows[name]["build_key"]

    for name in BUILDS_HERE:
        artifact_id = build_rows[name]["artifact_id"]
        verified = cli("verify", paths[name], "--store", store, "--json")
        if verified.code == 2:  # no GPU (or no runtime for it) here: it names the engine it would check
            assert verified.json()["error_detail"]["artifact_id"] == artifact_id, verified
            assert verified.json()["error_detail"]["build_key"] == build_rows[name]["build_key"]
        else:
            assert verified.json()["artifact_id"] == artifact_id, verified
        reproduced = cli("build", "--reproduce", paths[name], "--store", store, "--json")
        assert reproduced.code == 0, reproduced
        report = reproduced.json()
        assert report["artifact_id"] == artifact_id and report["identical"], report
        assert report["build_key"] == build_rows[name]["build_key"] and report["record_key_matches"], report


def test_a_sidecar_edit_is_another_key_for_plan_and_build_alike(
    tmp_path: Path, store: Path, cli: Callable[..., Any]
) -> None:
    paths = write_corpus(tmp_path / "corpus")
    recipe = paths["sidecar-deny"]
    before = cli("plan", recipe, "--store", store, "--json").json()[0]["build_key"]
    (recipe.parent / "deny.yaml").write_text('deny:\n  - {layer: "relu*", tactic: "0x2e", reason: sidecar}\n')
    after_plan = cli("plan", recipe, "--store", store, "--json").json()[0]["build_key"]
    after_build = cli("build", recipe, "--store", store, "--json").json()[0]["build_key"]
    assert before != after_plan == after_build


def test_rtx_default_capabilities_are_what_show_records_and_lookup_accepts(
    mlp_recipe: Callable[..., Path], store: Path, cli: Callable[..., Any]
) -> None:
    """Regression (issue 11): on 55eb6bf `show` said 8.6, 8.9, 12.0 while lookup accepted 8.0-12.1."""
    recipe = mlp_recipe("default-ccs")  # no compatibility.compute_capabilities
    built = cli("build", recipe, "--store", store, "--json").json()[0]
    shown = cli("show", built["artifact_id"], "--store", store, "--json").json()
    recorded = set(shown["compute_capabilities"])
    assert recorded, "the default list is recorded on the artifact"
    assert set(shown["details"]["compatibility"]["compute_capabilities"]) == recorded
    assert set(shown["recipe"]["compatibility"]["compute_capabilities"]) == recorded  # what the builder was given
    settings = shown["details"]["settings"]
    assert set(settings["compute_capabilities"]) == recorded  # read back from the real IBuilderConfig

    version = find_backend("tensorrt_rtx").version
    accepted = set()
    for cc in sorted({*RTX_COMPUTE_CAPABILITIES, "9.0", "10.0"}):
        target = ("--flavor", "tensorrt_rtx", "--trt", version, "--cc", cc)
        found = cli("lookup", "default-ccs", *target, "--store", store, "--json")
        assert found.code in (0, 1), found
        if found.code == 0:
            accepted.add(cc)
    assert accepted == recorded


def test_an_explicit_default_list_is_the_same_key_as_none(
    mlp_recipe: Callable[..., Path], store: Path, cli: Callable[..., Any]
) -> None:
    """Omitting the list means the documented default, written out: the same engine, the same key."""
    implicit = mlp_recipe("same")
    plan = cli("plan", implicit, "--store", store, "--json").json()[0]
    explicit_list = ", ".join(plan["target"]["compute_capabilities"])
    text = implicit.read_text() + f"compatibility:\n  compute_capabilities: [{explicit_list}]\n"
    explicit = implicit.with_name("explicit.yaml")
    explicit.write_text(text)
    again = cli("plan", explicit, "--store", store, "--json").json()[0]
    assert again["build_key"] == plan["build_key"]


@pytest.mark.parametrize("spec", ["flavor=tensorrt,trt=10.13.3.9,cc=8.6,gpu=NVIDIA A10G,cuda=cu12"])
def test_plan_for_an_explicit_target_is_the_build_path_stopped_early(
    mlp_recipe: Callable[..., Path], store: Path, cli: Callable[..., Any], spec: str
) -> None:
    """A target that cannot build here still gets its key, from the same resolution as a build."""
    recipe = mlp_recipe("elsewhere", text=MLP_RECIPE.replace("backend: tensorrt_rtx", "backend: auto"))
    row = cli("plan", recipe, "--target", spec, "--store", store, "--json").json()[0]
    assert row["status"] == "build" and row["target"]["gpu_name"] == "NVIDIA A10G", row
    assert json.dumps(row["target"]["compute_capabilities"]) == '["8.6"]'
    assert not store.exists()  # a plan creates nothing
