"""Deny-list enforcement: the decisions are pure and tested here; the TensorRT calls need a GPU.

The autotuning log below is recorded text constructed from the format NVIDIA documents for the
editable timing cache (TensorRT 10.8 ``sampleEditableTimingCache`` README: "Autotuning op
<name>(key: 0x...)", the sorted tactic table, "The selected tactic is ..."), with the logger
prefixes a Python ``ILogger`` or trtexec adds. It was not captured from a GPU build here: full
TensorRT does not install on this machine. The timing-cache calls themselves
(``TimingCacheKey.parse``, ``TimingCacheValue``, ``ITimingCache.update``, the builder flags) are
exercised against the real nvinfer API of TensorRT-RTX, which shares those bindings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import onnx_models
from trtforge.backend.denylist_enforce import (
    AutotunedOp,
    Candidate,
    EnforcementReport,
    apply_cache_edits,
    build_timing_cache_path,
    check_report,
    filter_choices,
    op_layer_names,
    parse_autotuning_log,
    plan_cache_edits,
)
from trtforge.backend.loader import import_backend
from trtforge.core.errors import BuildError, UnsatisfiableDenyError, UnsupportedOptionError
from trtforge.rules.capabilities import check_enforceable, mechanism_for
from trtforge.rules.denylist import DenyEntry
from trtforge.rules.flavors import BackendInfo, find_backend
from trtforge.rules.target import detect_gpus

K32 = "sm80_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize32x32x64_stage3_warpsize2x1x2_tensor16x8x8"
K64S4 = "sm80_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize64x32x64_stage4_warpsize2x1x2_tensor16x8x8"
K64S5 = "sm80_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize64x32x64_stage5_warpsize2x2x1_tensor16x8x8"

RECORDED_LOG = [
    "[11/25/2026-10:00:00] [TRT] [V] Global timing cache in use. Profiling results in this builder pass will be stored",
    "[11/25/2026-10:00:01] [TRT] [V] Autotuning op matMul1(key: 0x1814870c44ff0f8574df6e3dda04cbd7):",
    "[11/25/2026-10:00:01] [TRT] [V] Sorted table of all evaluated tactics:",
    "[11/25/2026-10:00:01] [TRT] [V] tactic_id, cost(in ms), cost/fastest_cost, prediction_correlation, "
    "kernel_name, tactic_hash, tunable_parameter",
    f"[11/25/2026-10:00:01] [TRT] [V]    3, 0.0112640, 1.00000, 0.50673, {K32}, 0x665ded9abbf88,",
    f"[11/25/2026-10:00:01] [TRT] [V]    5, 0.0118784, 1.05455, 0.51157, {K64S4}, 0x393e4ef8ad243,",
    f"[11/25/2026-10:00:01] [TRT] [V]    6, 0.0123904, 1.10000, 0.50600, {K64S5}, 0x2ad3a182fb05c,",
    "[11/25/2026-10:00:01] [TRT] [V] The selected tactic is (tactic hash, cost(in ms)):0x665ded9abbf88,  0.011264",
    "[11/25/2026-10:00:01] [TRT] [V] Writing the best tactic (0x665ded9abbf88) to cache",
    # One logger call may carry several lines, as trtexec prints them.
    "Autotuning op matMul2(key: 0xb222b0832016f1115ff61116c094875a):\n"
    "Sorted table of all evaluated tactics:\n"
    "tactic_id, cost(in ms), cost/fastest_cost, prediction_correlation, kernel_name, tactic_hash, tunable_parameter\n"
    f"   3, 0.0112640, 1.00000, 0.50673, {K32}, 0x665ded9abbf88,\n"
    f"   6, 0.0123904, 1.10000, 0.50600, {K64S5}, 0x2ad3a182fb05c,\n"
    "The selected tactic is (tactic hash, cost(in ms)):0x665ded9abbf88,  0.011264",
    "[V] Engine generation completed in 0.5 seconds.",
]


def entry(layer: str, tactic: str) -> DenyEntry:
    return DenyEntry(layer=layer, tactic=tactic, reason="drift")


def test_parse_recorded_autotuning_log() -> None:
    ops = parse_autotuning_log(RECORDED_LOG)
    assert [(op.name, op.key) for op in ops] == [
        ("matMul1", "0x1814870c44ff0f8574df6e3dda04cbd7"),
        ("matMul2", "0xb222b0832016f1115ff61116c094875a"),
    ]
    first = ops[0]
    assert [c.tactic_hash for c in first.candidates] == ["0x665ded9abbf88", "0x393e4ef8ad243", "0x2ad3a182fb05c"]
    assert first.candidates[1] == Candidate("0x393e4ef8ad243", 0.0118784, K64S4, "5")
    assert first.selected_hash == "0x665ded9abbf88" and first.selected is first.candidates[0]
    assert len(ops[1].candidates) == 2
    assert parse_autotuning_log(["[V] nothing to see", "tactic_id, tactic_hash"]) == []


# As printed by a real TensorRT 10 build in NVIDIA's cookbook (trt-samples-for-hackathon-cn,
# cookbook/02-API/TimingCache README, case_force_tactic), kernel names shortened there: newer
# releases append the ONNX layer after the key, and the table is elided with "...".
COOKBOOK_LOG = """\
Autotuning op node_linear(key: 0xe5c222cd6b9e29cbe66c8bec07cb6a07): [ONNX Layer: node_linear]
Sorted table of all evaluated tactics:
tactic_id, cost(in ms), cost/fastest_cost, prediction_correlation, kernel_name, tactic_hash, tunable_parameter
   4, 0.0126784, 1.00000, 0.84378, sm80_xmma_gemm_f32f32_tf32f32_f32_tn_n_tilesize32x32x64_..., 0x2c80ce2f5c4a6,
  34, 0.0130784, 1.03155, 0.92579, sm86_xmma_gemm_f32f32_tf32f32_f32_tn_n_tilesize64x64x64_..., 0x650de5b566787,
  ...
The selected tactic is (tactic hash, cost(in ms)):0x2c80ce2f5c4a6, 0.0126784
"""


def test_parse_log_with_onnx_layer_suffix_and_elided_rows() -> None:
    [op] = parse_autotuning_log([COOKBOOK_LOG])
    assert (op.name, op.key) == ("node_linear", "0xe5c222cd6b9e29cbe66c8bec07cb6a07")
    assert [(c.tactic_id, c.tactic_hash, c.cost_ms) for c in op.candidates] == [
        ("4", "0x2c80ce2f5c4a6", 0.0126784),
        ("34", "0x650de5b566787", 0.0130784),
    ]
    assert op.selected is op.candidates[0]
    [edit] = plan_cache_edits([op], [entry("node_linear", "0x2c80ce2f5c4a6")])
    assert edit.replacement.tactic_hash == "0x650de5b566787"  # the tactic that cookbook run forced


def test_denied_selection_is_replaced_by_fastest_allowed() -> None:
    ops = parse_autotuning_log(RECORDED_LOG)
    [edit] = plan_cache_edits(ops, [entry("matMul1", K32)])
    assert (edit.op, edit.key) == ("matMul1", "0x1814870c44ff0f8574df6e3dda04cbd7")
    assert edit.denied.kernel_name == K32 and edit.replacement.tactic_hash == "0x393e4ef8ad243"
    # Deny the next one too (by hash): the third candidate is chosen.
    [edit] = plan_cache_edits(ops, [entry("matMul1", K32), entry("matMul1", "0x393E4EF8AD243")])
    assert edit.replacement.kernel_name == K64S5
    # A glob over both ops edits both keys.
    assert [e.op for e in plan_cache_edits(ops, [entry("matMul*", K32)])] == ["matMul1", "matMul2"]
    # A denied tactic that was not selected needs no edit.
    assert plan_cache_edits(ops, [entry("matMul1", K64S4)]) == []


def test_entry_naming_the_engine_layer_reaches_its_op() -> None:
    ops = parse_autotuning_log(RECORDED_LOG)
    names = op_layer_names("matMul1", ["matMul1_myl0_0", "matMul10_myl0_4", "__myl_DivMul_myl0_2", "matMul1 + relu"])
    assert names == ["matMul1", "matMul1_myl0_0", "matMul1 + relu"]
    [edit] = plan_cache_edits(ops, [entry("matMul1_myl0_0", K32)], ["matMul1_myl0_0", "matMul2_myl0_3"])
    assert edit.op == "matMul1" and edit.entry_layer == "matMul1_myl0_0"


def test_no_allowed_alternative_names_the_layer() -> None:
    ops = parse_autotuning_log(RECORDED_LOG)
    with pytest.raises(UnsatisfiableDenyError, match="layer 'matMul2' without a tactic: all 2 candidates are denied"):
        plan_cache_edits(ops, [entry("matMul2", "*")])
    only_selected = [AutotunedOp("conv", "0x1", [], "0xabc", 0.5)]
    with pytest.raises(UnsatisfiableDenyError, match="'conv'") as info:
        plan_cache_edits(only_selected, [entry("conv", "0xabc")])
    assert info.value.exit_code == 2


def test_algorithm_selector_filter() -> None:
    entries = [entry("conv1", "0x1f"), entry("conv*", "7"), entry("fc", "*")]
    keep, removed = filter_choices(entries, "conv1", [31, 7, 8])
    assert keep == [2] and [(t, e.tactic) for t, e in removed] == [(31, "0x1f"), (7, "7")]
    assert filter_choices(entries, "conv2", [31, 8])[0] == [0, 1]
    assert filter_choices(entries, "fc", [1, 2])[0] == []
    assert filter_choices(entries, "other", [1, 2])[0] == [0, 1]


def test_mechanism_per_backend_and_refusals() -> None:
    assert mechanism_for(BackendInfo("tensorrt", "10.7.0.23")) == "algorithm_selector"
    assert mechanism_for(BackendInfo("tensorrt", "10.8.0.43")) == "editable_timing_cache"
    assert mechanism_for(BackendInfo("tensorrt", "11.0.0")) == "editable_timing_cache"
    assert mechanism_for(BackendInfo("tensorrt_rtx", "1.7.1")) is None
    assert check_enforceable(BackendInfo("tensorrt_rtx", "1.7.1"), []) is None
    with pytest.raises(UnsupportedOptionError, match=r"TensorRT-RTX 1\.7\.1 cannot enforce tactics\.deny"):
        check_enforceable(BackendInfo("tensorrt_rtx", "1.7.1"), [entry("a", "*")])
    old = BackendInfo("tensorrt", "10.7.0")
    assert check_enforceable(old, [entry("a", "0x1f"), entry("b", "*")]) == "algorithm_selector"
    with pytest.raises(UnsupportedOptionError, match="sees tactic ids only"):
        check_enforceable(old, [entry("a", K32)])


def test_after_build_check_reports_violations() -> None:
    entries = [entry("matMul1*", K32)]
    report = EnforcementReport("editable_timing_cache", [])
    clean = {"Layers": [{"Name": "matMul1_myl0_0", "TacticName": K64S4}, {"Name": "matMul2_myl0_3", "TacticName": K32}]}
    check_report(report, entries, clean)
    assert report.checked_layers == 2 and report.violations == []
    dirty = {"Layers": [{"Name": "matMul1_myl0_0", "TacticName": K32}]}
    with pytest.raises(BuildError, match="still runs denied tactic"):
        check_report(report, entries, dirty)
    assert report.violations[0]["layer"] == "matMul1_myl0_0"


@pytest.mark.parametrize(
    ("layer_info", "why"),
    [
        (None, "layer information is unavailable"),
        ({"Layers": ["matMul1_myl0_0", "matMul2_myl0_3"]}, "names no tactics"),  # LAYER_NAMES_ONLY
        ({"Bindings": []}, "unreadable"),
    ],
)
def test_after_build_check_fails_closed_when_it_cannot_confirm(layer_info: object, why: str) -> None:
    """Enforcement that cannot be confirmed fails the build (exit 1) instead of storing the plan.

    Fails on 55eb6bf: no layer information returned quietly, names-only information "passed"
    the check, and unreadable information raised a bare ValueError (a traceback).
    """
    report = EnforcementReport("editable_timing_cache", [])
    with pytest.raises(BuildError, match=f"cannot confirm that the deny entries were enforced: .*{why}") as info:
        check_report(report, [entry("matMul1*", K32)], layer_info)
    assert info.value.exit_code == 1 and "nothing was stored" in (info.value.hint or "")
    assert report.checked_layers is None and report.violations == []


# -- the TensorRT calls, against the real nvinfer API of TensorRT-RTX ----------------------


@pytest.fixture
def rtx():
    # TensorRT-RTX marks its no-op timing-cache calls deprecated; the warnings are expected here.
    return import_backend(find_backend("tensorrt_rtx"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_timing_cache_edit_calls_real_api(rtx) -> None:
    """TensorRT-RTX's timing cache is a no-op, so the key is unknown and ``update`` refuses: the
    calls are the real ones, and a refused edit is a clear error naming the layer."""
    config = rtx.Builder(rtx.Logger(rtx.Logger.ERROR)).create_builder_config()
    cache = config.create_timing_cache(b"")
    ops = parse_autotuning_log(RECORDED_LOG)
    edits = plan_cache_edits(ops, [entry("matMul1", K32)])
    report = EnforcementReport("editable_timing_cache", [])
    with pytest.raises(BuildError, match="refused the timing-cache edit for layer 'matMul1'"):
        apply_cache_edits(rtx, cache, edits, report)
    assert report.removed == []


def _real_build_inputs(rtx: Any, tmp_path: Path) -> tuple[Any, Any, Any, list[str]]:
    """A real builder, network (a tiny MLP) and config, and the list the VERBOSE log goes to."""
    from trtforge.backend.build import _make_logger, parse_network

    model = onnx_models.save(onnx_models.mlp(0, batch=2), tmp_path / "mlp.onnx")
    records: list[dict[str, str]] = []
    verbose: list[str] = []
    logger = _make_logger(rtx, records, verbose)
    builder = rtx.Builder(logger)
    network, _parser = parse_network(rtx, builder, logger, model)
    config = builder.create_builder_config()
    config.builder_optimization_level = 0
    return builder, network, config, verbose


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_timing_cache_path_builds_with_real_builder(rtx, tmp_path: Path) -> None:
    """The flags and calls of the timing-cache path run on a real builder; TensorRT-RTX logs no
    autotuning (no timing), so there is nothing to edit and the first plan is returned."""
    builder, network, config, verbose = _real_build_inputs(rtx, tmp_path)
    report = EnforcementReport("editable_timing_cache", [])
    plan = build_timing_cache_path(rtx, builder, network, config, [entry("matmul", "*")], verbose, report)
    assert plan.nbytes > 0 and report.removed == []
    assert report.notes == ["the builder logged no autotuned ops; only the after-build check applies"]
    assert config.get_flag(rtx.BuilderFlag.EDITABLE_TIMING_CACHE)
    assert config.profiling_verbosity == rtx.ProfilingVerbosity.DETAILED
    assert verbose, "the VERBOSE/INFO log was captured for parsing"


@pytest.mark.skipif(bool(detect_gpus()), reason="on a GPU the runtime may load the engine, and the check can run")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_unconfirmable_enforcement_fails_instead_of_returning_the_plan(rtx, tmp_path: Path) -> None:
    """The whole enforcement path on a real builder, where the built engine cannot be inspected
    (no GPU): the build fails with exit 1 and no plan comes back to be stored.

    TensorRT-RTX's nvinfer bindings stand in for full TensorRT >= 10.8 (the same API; full TensorRT
    does not install here), so the backend is described as that TensorRT. Fails on 55eb6bf: the
    plan came back with the note "the after-build check was skipped", and the build stored it.
    """
    from trtforge.backend.denylist_enforce import build_with_denylist

    builder, network, config, verbose = _real_build_inputs(rtx, tmp_path)
    full_trt = BackendInfo("tensorrt", "10.8.0.43")
    with pytest.raises(BuildError, match="cannot confirm that the deny entries were enforced") as info:
        build_with_denylist(rtx, full_trt, builder, network, config, [entry("matmul", "*")], verbose)
    assert info.value.exit_code == 1
