"""Targets on this machine: no GPU here, so detection must say so; explicit targets are validated."""

from __future__ import annotations

import subprocess
import sys

import pytest

import trtforge
from tests.conftest import subprocess_env
from trtforge.core.errors import TargetError
from trtforge.rules.flavors import installed_backends
from trtforge.rules.target import RuntimeTarget, detect_gpus, resolve_target

NO_GPU_SCRIPT = """
import trtforge
from trtforge.core.errors import TargetError
from trtforge.rules.flavors import installed_backends
from trtforge.rules.target import detect_gpus, resolve_target
assert detect_gpus() == [], detect_gpus()
for call in (resolve_target, lambda: trtforge.lookup("anything")):
    try:
        call()
    except TargetError as exc:
        assert "no NVIDIA GPU detected" in exc.message, exc.message
        assert "--cc" in (exc.hint or ""), exc.hint
    else:
        raise SystemExit("no error")
print("ok")
"""


def test_detection_without_a_gpu_says_so() -> None:
    """No GPU visible to the process: here none exists; on a GPU machine CUDA_VISIBLE_DEVICES="" hides
    them all, as CUDA does (4692594 read NVML device 0 whatever the variable said)."""
    env = {**subprocess_env(), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", NO_GPU_SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_detection_names_the_gpu_this_process_uses() -> None:
    """With a GPU (the `doctor`/`lookup` target): the detected target names CUDA device 0, no flags needed."""
    gpus = detect_gpus()
    if not gpus:
        with pytest.raises(TargetError, match="no NVIDIA GPU detected"):
            resolve_target()
        return
    assert [g.index for g in gpus] == list(range(len(gpus)))
    if installed_backends():
        detected = resolve_target()
        assert detected.detected and (detected.gpu_name, detected.compute_capability) == (
            gpus[0].name,
            gpus[0].compute_capability,
        )


def test_explicit_target_normalizes_and_describes() -> None:
    target = trtforge.runtime_target(gpu="  NVIDIA A10G ", cc="8.6", trt="10.13.3")
    assert target == RuntimeTarget("tensorrt", "10.13.3", "8.6", "NVIDIA A10G")
    assert not target.detected and target.version_tuple == (10, 13, 3) and target.cc_tuple == (8, 6)
    assert target.describe() == "NVIDIA A10G (cc 8.6) with TensorRT 10.13.3"
    assert trtforge.runtime_target(cc="8.9", trt="1.7.1", flavor="tensorrt_rtx").describe() == (
        "a GPU of compute capability 8.9 with TensorRT-RTX 1.7.1"
    )
    with pytest.raises(TargetError, match="flavor 'cuda'"):
        resolve_target(flavor="cuda")


def test_importing_trtforge_imports_nothing_heavy() -> None:
    code = (
        "import sys, trtforge, trtforge.stages.lookup, trtforge.stages.bundle, trtforge.resolution.batch\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorrt', 'tensorrt_rtx', 'polygraphy', 'onnx', 'onnxruntime', 'alembic', 'pynvml', 'numpy')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
