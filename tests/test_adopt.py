"""Adopting plans built elsewhere: header-read targets for TensorRT-RTX, explicit ones otherwise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import onnx_models
from tests.conftest import MLP_RECIPE, subprocess_env
from trtforge.core.plan_header import read_plan_header
from trtforge.rules.flavors import installed_version


@pytest.fixture(scope="module")
def rtx_plan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A real TensorRT-RTX plan built by trtforge in another store, copied out like a trtexec output."""
    root = tmp_path_factory.mktemp("adopt")
    model = onnx_models.save(onnx_models.mlp(3), root / "models" / "elsewhere.onnx")
    recipe = root / "elsewhere.yaml"
    recipe.write_text(MLP_RECIPE.format(name="elsewhere", model="models/elsewhere.onnx", level=0))
    proc = subprocess.run(
        [sys.executable, "-m", "trtforge", "build", str(recipe), "--store", str(root / "other"), "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    plan = root / "engine.plan"
    plan.write_bytes(Path(json.loads(proc.stdout)[0]["plan_path"]).read_bytes())
    return plan, model


def test_header_of_a_real_plan_names_the_installed_release(rtx_plan: tuple[Path, Path]) -> None:
    header = read_plan_header(rtx_plan[0])
    assert header is not None and header.flavor == "tensorrt_rtx"
    installed = installed_version("tensorrt_rtx")
    assert installed is not None and installed.startswith(header.version + ".")


def test_adopt_rtx_plan_from_its_header_then_lookup(cli, rtx_plan: tuple[Path, Path], tmp_path: Path) -> None:
    plan, model = rtx_plan
    store = ("--store", tmp_path / "store")
    adopted = cli("adopt", plan, "--name", "detector", "--model", model, *store, "--json")
    assert adopted.code == 0, adopted
    result = adopted.json()
    assert result["status"] == "adopted" and result["target_source"] == "plan header"
    assert result["flavor"] == "tensorrt_rtx" and result["compute_capabilities"] == []

    shown = cli("show", result["artifact_id"], *store, "--json").json()
    assert shown["details"]["origin"] == "adopted" and shown["details"]["model"]["inputs"][0]["name"] == "x"

    target = ("--gpu", "NVIDIA RTX A4000", "--cc", "8.6", "--trt", result["trt_version"], "--flavor", "tensorrt_rtx")
    found = cli("lookup", "detector", *target, *store, "--json")
    assert found.code == 0, found
    best = found.json()["best"]
    assert best["artifact_id"] == result["artifact_id"] and best["metadata"]["origin"] == "adopted"
    assert any("adopted" in note for note in best["notes"])

    again = cli("adopt", plan, "--name", "detector", "--model", model, *store, "--json")
    assert again.json()["status"] == "present" and again.json()["artifact_id"] == result["artifact_id"]

    wrong = cli("adopt", plan, "--name", "detector", "--model", model, "--trt", "1.6.0", *store)
    assert wrong.code == 2 and "plan header says version" in wrong.stderr
    wrong_flavor = cli("adopt", plan, "--name", "detector", "--model", model, "--flavor", "tensorrt", *store)
    assert wrong_flavor.code == 2 and "plan header says tensorrt_rtx" in wrong_flavor.stderr


def test_reproducing_an_adopted_plan_is_refused_in_one_line(cli, rtx_plan: tuple[Path, Path], tmp_path: Path) -> None:
    plan, model = rtx_plan
    store = ("--store", tmp_path / "store")
    adopted = cli("adopt", plan, "--name", "detector", "--model", model, *store, "--json")
    assert adopted.code == 0, adopted
    listed = cli("list", *store, "--json").json()

    refused = cli("build", "--reproduce", adopted.json()["artifact_id"], *store, "--json")

    assert refused.code == 2, refused
    error = refused.json()["error"]
    assert "was adopted" in error and "no recipe to rebuild from" in error
    assert "Traceback" not in refused.stderr
    assert [line.split(":")[0] for line in refused.stderr.splitlines()] == ["error", "hint"]
    assert cli("list", *store, "--json").json() == listed
    assert cli("fsck", *store).code == 0


def test_adopt_tensorrt_plan_with_explicit_target(cli, rtx_plan: tuple[Path, Path], tmp_path: Path) -> None:
    _, model = rtx_plan
    plan = tmp_path / "trtexec.engine"
    plan.write_bytes(b"a plan serialized by trtexec on an A10G (not readable here)")
    store = ("--store", tmp_path / "store")

    no_version = cli("adopt", plan, "--name", "detector", "--model", model, *store)
    assert no_version.code == 2 and "give it with --trt" in no_version.stderr
    no_cc = cli("adopt", plan, "--name", "detector", "--model", model, "--trt", "10.13.3", *store)
    assert no_cc.code == 2 and "--cc" in no_cc.stderr
    assert not (tmp_path / "store").exists()  # bad input never creates the store

    adopted = cli(
        "adopt", plan, "--name", "detector", "--model", model,
        "--trt", "10.13.3", "--gpu", "NVIDIA A10G", "--cc", "8.6", "--hardware", "ampere_plus", *store, "--json",
    )  # fmt: skip
    assert adopted.code == 0, adopted
    result = adopted.json()
    assert (result["flavor"], result["target_source"], result["compute_capabilities"]) == ("tensorrt", "given", ["8.6"])

    # Ampere+ hardware compatibility: an H100 with the same runtime may load it, a T4 may not.
    h100 = cli("lookup", "detector", "--gpu", "NVIDIA H100", "--cc", "9.0", "--trt", "10.13.3", *store, "--json")
    assert h100.code == 0 and h100.json()["best"]["artifact_id"] == result["artifact_id"]
    t4 = cli("lookup", "detector", "--cc", "7.5", "--trt", "10.13.3", *store, "--explain", "--json")
    assert t4.code == 1 and t4.json()["rejected"][0]["rule"] == "hardware"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--name", "bad name!", "--trt", "10.1", "--cc", "8.6"), "name 'bad name!'"),
        (("--name", "ok", "--trt", "10.1", "--cc", "86"), "compute capability '86'"),
        (("--name", "ok", "--trt", "v10", "--cc", "8.6"), "TensorRT version 'v10'"),
        (("--name", "ok", "--trt", "10.1", "--cc", "8.6", "--hardware", "all"), "hardware level 'all'"),
        (("--name", "ok", "--trt", "10.1", "--cc", "8.6", "--flavor", "cuda"), "flavor 'cuda'"),
    ],
)
def test_adopt_bad_input(cli, rtx_plan: tuple[Path, Path], tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    plan = tmp_path / "x.engine"
    plan.write_bytes(b"opaque")
    result = cli("adopt", plan, "--model", rtx_plan[1], *args, "--store", tmp_path / "store")
    assert result.code == 2, result
    assert message in result.stderr and not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda plan, model: b"", ("--trt", "10.13.3", "--cc", "8.6"), "is empty"),
        (lambda plan, model: b"\x00garb", ("--trt", "1.1.0", "--flavor", "tensorrt_rtx"), "no TensorRT-RTX plan"),
        (lambda plan, model: plan.read_bytes()[:1000], (), "truncated or damaged"),
        (lambda plan, model: plan.read_bytes() + b"\x00", (), "truncated or damaged"),
        (lambda plan, model: model.read_bytes(), ("--trt", "10.13.3", "--cc", "8.6"), "is an ONNX model"),
    ],
    ids=["empty", "garbage-rtx", "truncated", "appended", "onnx"],
)
def test_adopt_refuses_what_is_recognisably_not_a_plan(
    cli, rtx_plan: tuple[Path, Path], tmp_path: Path, make: Any, args: tuple[str, ...], message: str
) -> None:
    plan = tmp_path / "x.plan"
    plan.write_bytes(make(*rtx_plan))
    store = tmp_path / "store"

    refused = cli("adopt", plan, "--name", "detector", "--model", rtx_plan[1], *args, "--store", store, "--json")

    assert refused.code == 2, refused
    assert message in refused.json()["error"] and "Traceback" not in refused.stderr
    assert [line.split(":")[0] for line in refused.stderr.splitlines()] == ["error", "hint"]
    assert not store.exists()  # nothing stored: bad input never creates the store


def test_adopt_missing_files_and_non_onnx_model(cli, tmp_path: Path) -> None:
    plan = tmp_path / "x.engine"
    plan.write_bytes(b"opaque")
    target = ("--trt", "10.13.3", "--cc", "8.6", "--store", tmp_path / "store")
    missing = cli("adopt", tmp_path / "nope.engine", "--name", "n", "--model", plan, *target)
    assert missing.code == 2 and "does not exist" in missing.stderr
    not_onnx = cli("adopt", plan, "--name", "n", "--model", plan, *target)
    assert not_onnx.code == 2 and "not a readable ONNX model" in not_onnx.stderr
    assert not (tmp_path / "store").exists()
