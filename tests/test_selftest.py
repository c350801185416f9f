"""`trtforge selftest`: its report schema and exit codes, on a machine where no engine can run.

``CUDA_VISIBLE_DEVICES=""`` hides every GPU from the child process, so these hold on a GPU machine
too; there the `gpu`-marked tests and the selftest itself run the GPU checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trtforge.rules.flavors import BackendInfo, installed_backend
from trtforge.rules.target import LocalGpu
from trtforge.stages.selftest import SCHEMA, CheckResult, SelftestReport, runnable_reason

HIDE_GPUS = {"CUDA_VISIBLE_DEVICES": ""}
GPU_CHECKS = [
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
CHECK_FIELDS = {"check": str, "flavor": (str, type(None)), "result": str, "seconds": (int, float),
                "detail": str, "error": (str, type(None)), "trace": (str, type(None))}  # fmt: skip


def test_selftest_without_a_usable_gpu_exits_2_with_one_line_and_a_full_report(cli, tmp_path: Path) -> None:
    if installed_backend("tensorrt_rtx") is None:
        pytest.skip("TensorRT-RTX is not installed: the CPU/AOT build check needs it")
    keep = tmp_path / "kept"
    result = cli("selftest", "--json", "--keep", keep, env=HIDE_GPUS)
    assert result.code == 2, result
    # One line says why, on stderr; stdout is the JSON report alone.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "none is visible" in errors[0], result.stderr
    report = result.json()
    assert report["schema"] == SCHEMA and report["exit_code"] == 2
    assert report["runnable"] == [] and report["gpus"] == []
    assert report["reason"] and "\n" not in report["reason"] and report["reason"] in errors[0]
    assert {"python", "platform", "trtforge", "backends", "store"} <= report.keys()
    assert any(b["flavor"] == "tensorrt_rtx" and b["version"] for b in report["backends"])
    for check in report["checks"]:
        assert set(check) == set(CHECK_FIELDS), check
        for name, kind in CHECK_FIELDS.items():
            assert isinstance(check[name], kind), (name, check)
        assert check["result"] in ("passed", "failed", "skipped")
        if check["result"] == "skipped":
            assert check["detail"], check  # every skip says why
    by_name = {(c["check"], c["flavor"]): c for c in report["checks"]}
    assert by_name[("detect", None)]["result"] == "passed"
    # The checks that can run here did run: detection and a TensorRT-RTX build on the CPU.
    assert by_name[("build (CPU/AOT)", "tensorrt_rtx")]["result"] == "passed", by_name
    gpu_checks = [c for c in report["checks"] if c["flavor"] == "tensorrt_rtx" and "build" not in c["check"]]
    assert gpu_checks and all(c["result"] == "skipped" for c in gpu_checks)
    # One line per GPU check (issue 25), each listed even where it cannot run.
    assert [c["check"] for c in gpu_checks][: len(GPU_CHECKS)] == GPU_CHECKS
    assert report["store"] == str(keep) and (keep / "tensorrt_rtx" / "store").is_dir()


def test_selftest_human_table(cli) -> None:
    if installed_backend("tensorrt_rtx") is None:
        pytest.skip("TensorRT-RTX is not installed")
    result = cli("selftest", env=HIDE_GPUS)
    assert result.code == 2
    header = next(line for line in result.stdout.splitlines() if "check" in line and "result" in line)
    assert header.split() == ["check", "flavor", "result", "seconds", "detail"]
    assert "build (CPU/AOT)" in result.stdout and "Traceback" not in result.stderr


def _report(*results: str, runnable: tuple[str, ...] = ("tensorrt",)) -> SelftestReport:
    checks = [CheckResult(f"c{i}", "tensorrt", r, 0.1) for i, r in enumerate(results)]  # type: ignore[arg-type]
    return SelftestReport(checks, [], [], list(runnable), None if runnable else "no GPU")


def test_exit_codes() -> None:
    assert _report("passed", "skipped").exit_code == 0
    assert _report("passed", "failed").exit_code == 1
    assert _report("passed", runnable=()).exit_code == 2
    assert _report("failed", runnable=()).exit_code == 1  # a failure is a bug to report, whatever else
    data = _report("passed").as_json()
    assert json.loads(json.dumps(data))["exit_code"] == 0 and data["schema"] == SCHEMA


def test_which_runtime_can_run_engines_on_which_gpu() -> None:
    rtx, trt = BackendInfo("tensorrt_rtx", "1.7.1.116"), BackendInfo("tensorrt", "10.13.3.9")
    h200 = LocalGpu("NVIDIA H200", "9.0", "570.1")
    a10g = LocalGpu("NVIDIA A10G", "8.6", "570.1")
    assert runnable_reason(rtx, h200) == (
        "TensorRT-RTX 1.7.1.116 does not support compute capability 9.0 (NVIDIA H200); "
        "it runs on 7.5, 8.0, 8.6, 8.9, 12.0, 12.1"
    )
    assert runnable_reason(rtx, a10g) is None and runnable_reason(trt, h200) is None
    assert "none is visible" in (runnable_reason(trt, None) or "")
