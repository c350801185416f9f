"""The build backend with real TensorRT-RTX: progress callbacks, captured log, backend choice."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests import onnx_models
from tests.conftest import RecordingSink, subprocess_env
from trtforge.backend.build import build_plan
from trtforge.core.errors import BackendUnavailableError, BuildError
from trtforge.rules.flavors import find_backend, installed_version
from trtforge.rules.recipe import load_recipe


def test_progress_monitor_receives_phases(mlp_recipe) -> None:
    loaded = load_recipe(mlp_recipe())
    sink = RecordingSink()
    output = build_plan(find_backend("tensorrt_rtx"), loaded.recipe, loaded.model_path, sink)
    assert output.plan_view.nbytes > 0
    kinds = {kind for kind, _ in sink.events}
    assert kinds == {"start", "step", "finish"}
    starts = [name for kind, name in sink.events if kind == "start"]
    finishes = [name for kind, name in sink.events if kind == "finish"]
    assert sorted(starts) == sorted(finishes)
    assert {t["name"] for t in output.io_tensors} == {"x", "y"}


def test_parse_failure_is_a_build_error_naming_the_node(mlp_recipe) -> None:
    loaded = load_recipe(mlp_recipe())
    onnx_models.save(onnx_models.unsupported_op(), loaded.model_path)
    with pytest.raises(BuildError, match="mystery_node"):
        build_plan(find_backend("tensorrt_rtx"), loaded.recipe, loaded.model_path)


def test_missing_backend_is_bad_input() -> None:
    if installed_version("tensorrt") is not None:
        pytest.skip("full TensorRT is installed here")
    with pytest.raises(BackendUnavailableError, match="'tensorrt' is not installed"):
        find_backend("tensorrt")
    assert find_backend("auto").flavor == "tensorrt_rtx"


def test_progress_bar_on_a_terminal(mlp_recipe, tmp_path: Path) -> None:
    """On a TTY the build draws a progress bar on stderr; the test reads it through a pty."""
    recipe = mlp_recipe()
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "trtforge", "build", str(recipe), "--store", str(tmp_path / "s")],
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=follower,
        env={**subprocess_env(), "TERM": "xterm", "COLUMNS": "120"},
    )
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        drawn += chunk
    out, _ = proc.communicate(timeout=300)
    os.close(leader)
    assert proc.returncode == 0
    assert b"built" in out
    assert b"mlp" in drawn and b"Building engine" in drawn
