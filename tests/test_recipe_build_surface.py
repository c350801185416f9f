"""Recipe fields of the build surface: validation, defaults, errors that name file:line field."""

from __future__ import annotations

import pytest

from trtforge.core.errors import RecipeError
from trtforge.rules.keys import build_key
from trtforge.rules.recipe import parse_recipe
from trtforge.rules.target import BuildTarget

BASE = """\
name: net
model: {onnx: net.onnx}
profiles:
  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}
"""


def error_of(text: str) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, "r.yaml")
    return str(info.value)


def test_defaults_keep_backend_defaults() -> None:
    recipe = parse_recipe(BASE)
    assert recipe.precision.strongly_typed is None and recipe.precision.tf32 is None
    assert recipe.precision.weak_flags() == []
    assert recipe.tactics.sources is None
    assert recipe.refit == "none"
    assert recipe.compatibility.hardware == "none" and recipe.compatibility.compute_capabilities is None
    assert recipe.build.timing_cache == "shared" and recipe.build.max_aux_streams is None


def test_full_surface_parses() -> None:
    recipe = parse_recipe(
        BASE
        + "precision: {strongly_typed: false, tf32: true, fp16: true, int8: true}\n"
        + "tactics: {sources: [jit_convolutions, cublas]}\n"
        + "refit: strip_weights\n"
        + "compatibility: {hardware: same_compute_capability, version_compatible: true, exclude_lean_runtime: true}\n"
        + "build: {optimization_level: 5, workspace_mib: 64, tactic_dram_mib: 128, tactic_shared_memory_kib: 48,"
        + " max_aux_streams: 0, tiling_optimization_level: full, timing_cache: off}\n"
    )
    assert recipe.precision.weak_flags() == ["fp16", "int8"]
    assert recipe.tactics.sources == ["cublas", "jit_convolutions"]  # sorted: order does not change the key
    assert recipe.refit == "strip_weights"
    assert recipe.build.tiling_optimization_level == "full" and recipe.build.max_aux_streams == 0


def test_compute_capabilities_from_yaml_numbers() -> None:
    recipe = parse_recipe(BASE + "compatibility:\n  compute_capabilities: [12.0, 8.6, '8.9']\n")
    assert recipe.compatibility.compute_capabilities == ["8.6", "8.9", "12.0"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "precision: {strongly_typed: true, fp16: true}\n",
            "r.yaml:5 precision: strongly_typed: true cannot be combined with weak-typing flags (fp16)",
        ),
        ("tactics: {sources: [cublas, cublas]}\n", "r.yaml:5 tactics.sources: tactic sources must not repeat"),
        ("tactics: {sources: [cudnn, cudnn]}\n", "r.yaml:5 tactics.sources: tactic sources must not repeat"),
        ("refit: sometimes\n", "r.yaml:5 refit: Input should be 'none', 'refittable'"),
        ("compatibility: {hardware: turing_plus}\n", "r.yaml:5 compatibility.hardware: Input should be 'none'"),
        (
            "compatibility: {exclude_lean_runtime: true}\n",
            "r.yaml:5 compatibility: exclude_lean_runtime needs version_compatible: true",
        ),
        (
            "compatibility: {compute_capabilities: [8.6, sm_89]}\n",
            "r.yaml:5 compatibility.compute_capabilities: 'sm_89' is not a compute capability like 8.6",
        ),
        (
            "compatibility: {compute_capabilities: []}\n",
            "r.yaml:5 compatibility.compute_capabilities: give at least one compute capability",
        ),
        ("build: {max_aux_streams: -1}\n", "r.yaml:5 build.max_aux_streams: Input should be greater than or equal"),
        ("build: {tactic_dram_mib: 0}\n", "r.yaml:5 build.tactic_dram_mib: Input should be greater than 0"),
        ("build: {tiling_optimization_level: 2}\n", "r.yaml:5 build.tiling_optimization_level: Input should be"),
        ("build: {timing_cache: global}\n", "r.yaml:5 build.timing_cache: Input should be 'shared', 'private'"),
        (
            "compatibility: {hardware: ampere_plus}\ntactics: {sources: [cudnn, jit_convolutions]}\n",
            "r.yaml:6 tactics: compatibility.hardware: ampere_plus disables cudnn tactics",
        ),
    ],
)
def test_bad_values_name_line_and_field(extra: str, expected: str) -> None:
    assert error_of(BASE + extra).startswith(expected)


def test_compute_capabilities_and_build_surface_change_the_key() -> None:
    target = BuildTarget("tensorrt_rtx", "1.7.1")
    base = build_key(parse_recipe(BASE), "a" * 64, target)
    for extra in (
        "tactics: {sources: [jit_convolutions]}\n",
        "precision: {strongly_typed: true}\n",
        "build: {max_aux_streams: 1}\n",
        "build: {tiling_optimization_level: fast}\n",
        "compatibility: {compute_capabilities: [8.6]}\n",
    ):
        assert build_key(parse_recipe(BASE + extra), "a" * 64, target) != base, extra
    narrowed = BuildTarget("tensorrt_rtx", "1.7.1", compute_capabilities=("8.6",))
    assert build_key(parse_recipe(BASE), "a" * 64, narrowed) != base
    swapped = "tactics: {sources: [edge_mask_convolutions, jit_convolutions]}\n"
    assert build_key(parse_recipe(BASE + swapped), "a" * 64, target) == build_key(
        parse_recipe(
            BASE
            + swapped.replace("edge_mask_convolutions, jit_convolutions", "jit_convolutions, edge_mask_convolutions")
        ),
        "a" * 64,
        target,
    )
