"""What cannot work is refused before any work, and TensorRT-RTX version compatibility has one
answer (issue 23, item 4).

- `plan` for a TensorRT-RTX target whose compute capability the build cannot serve (9.0, which
  TensorRT-RTX does not support; or one the recipe leaves out) is refused (exit 2) with the way out,
  also when an engine of the recipe is already stored;
- `doctor`, `show` and `lookup` give the same answer to "which runtime releases load this
  TensorRT-RTX plan built with version_compatible?", from one rule.

The CPU-only refusals of `build` and `plan` (refit modes, version compatibility with the lean
runtime) are in tests/test_build_options.py.
"""

from __future__ import annotations

from pathlib import Path

from trtforge.rules.flavors import release

NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}


def rtx_target(version: str, cc: str) -> tuple[str, str]:
    return ("--target", f"flavor=tensorrt_rtx,trt={version},cc={cc}")


def test_plan_refuses_rtx_targets_the_build_cannot_serve(cli, mlp_recipe, store: Path) -> None:
    recipe = mlp_recipe()
    recipe.write_text(recipe.read_text() + "compatibility: {compute_capabilities: [8.6, 8.9]}\n")
    built = cli("build", recipe, "--store", store, "--json")
    assert built.code == 0, built
    version = cli("show", built.json()[0]["artifact_id"], "--store", store, "--json").json()["trt_version"]
    targets = [*rtx_target(version, "9.0"), *rtx_target(version, "8.0"), *rtx_target(version, "8.6")]
    planned = cli("plan", recipe, *targets, "--store", store, "--json")
    assert planned.code == 0, planned  # a target a recipe does not serve is skipped, as in a fleet plan
    hopper, left_out, served = planned.json()
    # A stored engine of the same key does not make it "cached" for a GPU it cannot run on.
    assert hopper["status"] == left_out["status"] == "skipped" and served["status"] == "cached", planned
    assert "9.0" in hopper["reason"] and "full TensorRT" in hopper["hint"], hopper
    assert "8.6, 8.9 only" in left_out["reason"] and left_out["hint"] == "add 8.0 to compatibility.compute_capabilities"
    human = cli("plan", recipe, *targets, "--store", store)
    assert human.code == 0 and "hint: add 8.0 to compatibility.compute_capabilities" in human.stderr, human

    # The way out works: with 8.0 added, the target is served (a new key, so `build`).
    recipe.write_text(recipe.read_text().replace("[8.6, 8.9]", "[8.0, 8.6, 8.9]"))
    again = cli("plan", recipe, *rtx_target(version, "8.0"), "--store", store, "--json")
    assert again.code == 0 and again.json()[0]["status"] == "build", again


def test_doctor_show_and_lookup_agree_on_rtx_version_compatibility(cli, mlp_recipe, store: Path) -> None:
    """Before: doctor said it fails on the CPU, show said "same major, >= build", lookup said another
    release cannot load it. Now show's answer predicts lookup's, and doctor says the same words."""
    recipe = mlp_recipe()
    recipe.write_text(recipe.read_text() + "compatibility: {version_compatible: true, exclude_lean_runtime: true}\n")
    built = cli("build", recipe, "--store", store, "--json", env=NO_GPU)
    assert built.code == 0, built  # with the lean runtime excluded it builds without a GPU
    artifact_id = built.json()[0]["artifact_id"]
    record = cli("show", artifact_id, "--store", store, "--json").json()
    said = record["details"]["compatibility"]["runtime_versions"]
    major, minor, patch = release(record["trt_version"])[:3]
    newer = f"{major}.{minor}.{patch + 1}"  # a later release of the same major

    found = cli("lookup", "mlp", "--flavor", "tensorrt_rtx", "--trt", newer, "--cc", "8.6", "--store", store,
                "--explain", "--json")  # fmt: skip
    loads = found.code == 0
    assert loads == (said == "same major, >= build"), (said, found)
    assert said == "same" and not loads  # TensorRT-RTX engines are not compatible between releases
    [rejection] = found.json()["rejected"]
    assert rejection["rule"] == "rtx_version" and "version_compatible" in rejection["reason"], rejection
    same = cli("lookup", "mlp", "--flavor", "tensorrt_rtx", "--trt", record["trt_version"], "--cc", "8.6",
               "--store", store, "--json")  # fmt: skip
    assert same.code == 0 and same.json()["best"]["artifact_id"] == artifact_id, same

    doctor = cli("doctor", "--store", store, "--json").json()
    [rtx] = [b for b in doctor["backends"] if b["flavor"] == "tensorrt_rtx"]
    rows = {row["option"]: row for row in rtx["capabilities"]}
    assert "the release that built them only" in rows["compatibility.version_compatible"]["note"]
    assert rows["compatibility.exclude_lean_runtime"]["cpu_build_fails"] is False
