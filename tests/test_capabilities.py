"""The capability table: version rules as data for TensorRT 10.x / 11.x, and the installed
TensorRT-RTX checked against the real module."""

from __future__ import annotations

import pytest

from trtforge.backend.config import TACTIC_SOURCE_ENUM, compute_capability_text
from trtforge.backend.loader import import_backend
from trtforge.core.errors import UnsupportedOptionError
from trtforge.rules.capabilities import (
    RTX_COMPUTE_CAPABILITIES,
    RULES,
    capability_table,
    check_recipe,
    cpu_build_fails,
    release,
    requested_options,
    valid_tactic_sources,
)
from trtforge.rules.flavors import BackendInfo, find_backend
from trtforge.rules.recipe import parse_recipe

BASE = """\
name: net
model: {onnx: net.onnx}
profiles:
  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}
"""
TRT_10_0 = BackendInfo("tensorrt", "10.0.1.6")
TRT_10_8 = BackendInfo("tensorrt", "10.8.0.43")
TRT_10_13 = BackendInfo("tensorrt", "10.13.3.9")
TRT_11 = BackendInfo("tensorrt", "11.0.0.1")
RTX = BackendInfo("tensorrt_rtx", "1.7.1.116")


def refusal(extra: str, backend: BackendInfo) -> UnsupportedOptionError:
    with pytest.raises(UnsupportedOptionError) as info:
        check_recipe(parse_recipe(BASE + extra), backend)
    assert "\n" not in info.value.message and info.value.exit_code == 2
    return info.value


def states(backend: BackendInfo) -> dict[str, str]:
    return {row["option"]: row["state"] for row in capability_table(backend)}


def test_parse_version() -> None:
    assert release("10.13.3.9") == (10, 13, 3, 9)
    assert release("11.0.0rc1") == (11, 0, 0)
    assert release("1.7.1.116") > release("1.7")


def test_tensorrt_10_table() -> None:
    table = states(TRT_10_13)
    assert table["precision.fp16"] == "yes" and table["precision.strongly_typed: false"] == "yes"
    assert table["tactics.sources: cublas"] == "deprecated" and table["tactics.sources: cudnn"] == "deprecated"
    assert table["compatibility.hardware: same_compute_capability"] == "yes"
    assert table["compatibility.compute_capabilities"] == "never"
    assert table["algorithm selector"] == "yes" and table["timing cache"] == "yes"
    assert states(TRT_10_8)["compatibility.hardware: same_compute_capability"] == "missing"
    assert states(TRT_10_8)["build.tiling_optimization_level"] == "yes"
    assert states(TRT_10_0)["build.tiling_optimization_level"] == "missing"
    assert states(TRT_10_0)["editable timing cache"] == "missing"
    assert valid_tactic_sources(TRT_10_13) == [
        "cublas",
        "cublas_lt",
        "cudnn",
        "edge_mask_convolutions",
        "jit_convolutions",
    ]


def test_tensorrt_11_table() -> None:
    table = states(TRT_11)
    for flag in ("fp16", "bf16", "int8", "fp8"):
        assert table[f"precision.{flag}"] == "removed"
    assert table["precision.strongly_typed: false"] == "removed"
    assert table["tactics.sources: cublas_lt"] == "removed"
    assert table["algorithm selector"] == "removed" and table["editable timing cache"] == "yes"
    assert valid_tactic_sources(TRT_11) == ["edge_mask_convolutions", "jit_convolutions"]


def test_weak_typing_on_tensorrt_11_explains_the_migration() -> None:
    assert check_recipe(parse_recipe(BASE + "precision: {fp16: true}\n"), TRT_10_13) == []
    error = refusal("precision: {fp16: true}\n", TRT_11)
    assert error.message == "recipe option precision.fp16 is not available: TensorRT 11.0.0.1 removed it (in 11.0)"
    assert "strongly_typed: true" in error.hint and "ONNX model" in error.hint


def test_library_tactics_deprecated_in_10_refused_in_11() -> None:
    notes = check_recipe(parse_recipe(BASE + "tactics: {sources: [cublas]}\n"), TRT_10_13)
    assert notes == ["tactics.sources: cublas is deprecated in TensorRT 10.13.3.9"]
    error = refusal("tactics: {sources: [cublas, jit_convolutions]}\n", TRT_11)
    assert "tactics.sources: cublas" in error.message
    assert error.hint == "valid tactic sources for TensorRT 11.0.0.1: edge_mask_convolutions, jit_convolutions"


def test_version_floors() -> None:
    error = refusal("compatibility: {hardware: same_compute_capability}\n", TRT_10_8)
    assert "needs TensorRT >= 10.9" in error.message
    assert "needs TensorRT >= 10.8" in refusal("build: {tiling_optimization_level: fast}\n", TRT_10_0).message
    assert check_recipe(parse_recipe(BASE + "compatibility: {hardware: ampere_plus}\n"), TRT_10_0) == []


def test_compute_capabilities_are_tensorrt_rtx_only() -> None:
    error = refusal("compatibility: {compute_capabilities: [8.6]}\n", TRT_10_13)
    assert "TensorRT 10.13.3.9 does not have it" in error.message and "compatibility.hardware" in error.hint


@pytest.mark.parametrize(
    ("extra", "message", "hint"),
    [
        ("precision: {fp16: true}\n", "precision.fp16", "always strongly typed"),
        ("precision: {strongly_typed: false}\n", "precision.strongly_typed: false", "always strongly typed"),
        ("tactics: {sources: [cudnn]}\n", "tactics.sources: cudnn", "edge_mask_convolutions, jit_convolutions"),
        ("tactics: {sources: [cublass]}\n", "tactics.sources: cublass is not a tactic source", "jit_convolutions"),
        ("compatibility: {hardware: ampere_plus}\n", "compatibility.hardware: ampere_plus", "compute_capabilities"),
        ("compatibility: {compute_capabilities: [9.0]}\n", "9.0 is not a TensorRT-RTX", "Hopper"),
    ],
)
def test_tensorrt_rtx_refusals(extra: str, message: str, hint: str) -> None:
    error = refusal(extra, RTX)
    assert message in error.message
    assert hint in error.hint and "TensorRT-RTX 1.7.1.116" in error.message + error.hint


def test_tensorrt_rtx_timing_cache_note_only_when_asked() -> None:
    assert check_recipe(parse_recipe(BASE), RTX) == []
    [note] = check_recipe(parse_recipe(BASE + "build: {timing_cache: shared}\n"), RTX)
    assert "timing caches are no-ops" in note
    assert check_recipe(parse_recipe(BASE + "build: {timing_cache: off}\n"), RTX) == []


@pytest.mark.parametrize(
    ("extra", "failing"),
    [
        ("refit: strip_weights\n", ["refit: strip_weights"]),
        ("compatibility: {version_compatible: true}\n", ["compatibility.version_compatible"]),
        # Observed on TensorRT-RTX 1.7.1 without a GPU: with the lean runtime left out of the plan it builds.
        ("compatibility: {version_compatible: true, exclude_lean_runtime: true}\n", []),
        (
            "refit: refittable\ncompatibility: {version_compatible: true, exclude_lean_runtime: true}\n",
            ["refit: refittable"],
        ),
    ],
)
def test_what_a_cpu_build_cannot_complete_is_per_combination(extra: str, failing: list[str]) -> None:
    """Issue 23: the table marked exclude_lean_runtime as failing on the CPU, yet it is the way out."""
    assert cpu_build_fails(parse_recipe(BASE + extra), RTX) == failing


def test_every_recipe_option_has_a_rule() -> None:
    everything = parse_recipe(
        BASE
        + "precision: {strongly_typed: false, tf32: true, fp16: true, bf16: true, int8: true, fp8: true}\n"
        + "tactics: {sources: [cublas, cublas_lt, cudnn, edge_mask_convolutions, jit_convolutions]}\n"
        + "refit: strip_weights\n"
        + "compatibility: {hardware: same_compute_capability, version_compatible: true, exclude_lean_runtime: true,"
        + " compute_capabilities: [8.6]}\n"
        + "build: {tactic_dram_mib: 1, tactic_shared_memory_kib: 1, max_aux_streams: 1,"
        + " tiling_optimization_level: fast}\n"
    )
    rules = {rule.option for rule in RULES}
    assert set(requested_options(everything)) <= rules
    assert len(requested_options(everything)) == 20


# -- the installed TensorRT-RTX agrees with the table ---------------------------------------


@pytest.fixture(scope="module")
def rtx() -> tuple[BackendInfo, object]:
    backend = find_backend("tensorrt_rtx")
    return backend, import_backend(backend)


def test_installed_rtx_tactic_sources_match_the_table(rtx) -> None:
    backend, trt = rtx
    module_sources = {name for name, enum in TACTIC_SOURCE_ENUM.items() if hasattr(trt.TacticSource, enum)}
    assert module_sources == set(valid_tactic_sources(backend))


def test_installed_rtx_has_no_weak_typing_flags(rtx) -> None:
    backend, trt = rtx
    for flag in ("FP16", "BF16", "INT8", "FP8"):
        assert not hasattr(trt.BuilderFlag, flag)
        assert states(backend)[f"precision.{flag.lower()}"] == "never"
    for flag in ("TF32", "REFIT", "REFIT_IDENTICAL", "STRIP_PLAN", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"):
        assert hasattr(trt.BuilderFlag, flag)


def test_installed_rtx_networks_are_strongly_typed(rtx) -> None:
    _, trt = rtx
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    assert builder.create_network(0).get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def test_installed_rtx_compute_capabilities_match_the_table(rtx) -> None:
    _, trt = rtx
    names = [name for name in trt.ComputeCapability.__members__ if name.startswith("SM")]
    assert sorted(compute_capability_text(n) for n in names) == sorted(RTX_COMPUTE_CAPABILITIES)


def test_installed_rtx_ignores_hardware_compatibility(rtx) -> None:
    """Why the table refuses compatibility.hardware for TensorRT-RTX: the setting does not stick."""
    backend, trt = rtx
    config = trt.Builder(trt.Logger(trt.Logger.ERROR)).create_builder_config()
    config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    assert config.hardware_compatibility_level == trt.HardwareCompatibilityLevel.NONE
    assert states(backend)["compatibility.hardware: ampere_plus"] == "never"


def test_doctor_prints_the_table(cli, store) -> None:
    report = cli("doctor", "--store", store, "--json")
    assert report.code == 0, report
    [backend] = [b for b in report.json()["backends"] if b["flavor"] == "tensorrt_rtx"]
    rows = {row["option"]: row for row in backend["capabilities"]}
    assert rows["precision.fp16"]["available"] is False
    assert rows["refit: refittable"]["cpu_build_fails"] is True
    assert rows["compatibility.exclude_lean_runtime"]["cpu_build_fails"] is False
    vc = rows["compatibility.version_compatible"]
    assert vc["cpu_build_fails"] is True and vc["cpu_build_unless"] == "compatibility.exclude_lean_runtime"
    assert rows["compatibility.compute_capabilities"]["available"] is True
    human = cli("doctor", "--store", store, env={"COLUMNS": "200"})
    assert human.code == 0 and "tactics.sources: jit_convolutions" in human.stdout
    assert "fails in a CPU-only build" in human.stdout


def test_unknown_tactic_source_lists_the_valid_ones_for_each_backend() -> None:
    rtx = refusal("tactics: {sources: [jit_convolution]}\n", RTX)
    assert rtx.hint == "valid tactic sources for TensorRT-RTX 1.7.1.116: edge_mask_convolutions, jit_convolutions"
    trt11 = refusal("tactics: {sources: [jit_convolution]}\n", TRT_11)
    assert "cublas" not in trt11.hint and "jit_convolutions" in trt11.hint
    trt10 = refusal("tactics: {sources: [jit_convolution]}\n", TRT_10_13)
    assert "cublas, cublas_lt, cudnn" in trt10.hint
