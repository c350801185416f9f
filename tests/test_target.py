"""Targets on this machine: no GPU here, so detection must say so; explicit targets are validated."""

from __future__ import annotations

import subprocess
import sys

import pytest

import trtforge
from tests.conftest import subprocess_env
from trtforge.errors import TargetError
from trtforge.target import RuntimeTarget, detect_gpus, resolve_target


def test_detection_without_a_gpu_says_so() -> None:
    assert detect_gpus() == []  # real NVML binding, no driver on this machine
    with pytest.raises(TargetError, match="no NVIDIA GPU detected") as info:
        resolve_target()
    assert "--cc" in (info.value.hint or "")
    with pytest.raises(TargetError, match="no NVIDIA GPU detected"):
        trtforge.lookup("anything")


def test_explicit_target_normalizes_and_describes() -> None:
    target = trtforge.runtime_target(gpu="  NVIDIA A10G ", cc="8.6", trt="10.13.3")
    assert target == RuntimeTarget("tensorrt", "10.13.3", "8.6", "NVIDIA A10G")
    assert not target.detected and target.version_tuple == (10, 13, 3) and target.cc_tuple == (8, 6)
    assert target.describe() == "NVIDIA A10G (cc 8.6) with tensorrt 10.13.3"
    with pytest.raises(TargetError, match="flavor 'cuda'"):
        resolve_target(flavor="cuda")


def test_importing_trtforge_imports_nothing_heavy() -> None:
    code = (
        "import sys, trtforge, trtforge.lookup_stage, trtforge.bundle, trtforge.batch\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorrt', 'tensorrt_rtx', 'polygraphy', 'onnx', 'onnxruntime', 'alembic', 'pynvml', 'numpy')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
