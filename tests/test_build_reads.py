"""What the builder reads is what the key names (a model swapped during a build, keyed environment), and
what `build --reproduce` rebuilds from is what the artifact records."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest

from tests import onnx_models
from tests.conftest import REPO
from tests.gpu_steps import kept_results
from tests.procs import CrashPoint, finish, start_build
from tests.test_external_data import save_external
from trtforge.resolution.resolve import resolve
from trtforge.rules.digests import model_digest
from trtforge.rules.target import BUILD_ENV, BUILD_ENV_VARIABLES

RECIPE = """\
name: swap
model:
  onnx: models/m.onnx
backend: tensorrt_rtx
profiles:
  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}
build:
  optimization_level: 0
"""


def _save(model: onnx.ModelProto, folder: Path, external: bool) -> Path:
    path = folder / "m.onnx"
    return save_external(model, path) if external else onnx_models.save(model, path)


def _output_width(record: dict) -> int:
    [output] = [t for t in record["io_tensors"] if t["mode"] == "output"]
    return output["shape"][-1]


@pytest.mark.parametrize("layout", ["embedded", "external"])
def test_a_model_swapped_during_the_build_is_never_recorded_under_the_old_digest(
    cli, tmp_path: Path, store: Path, layout: str
) -> None:
    """The build stops after the model's digest is taken (at its build lock); another model is
    copied over the files; the build goes on. No row may then name the old model's digest with
    the new model's engine (a later build of the old model would be a `cached` hit on it).

    Fails on 843520b: TensorRT read the model file again when it built, so the row recorded the
    digest of the model it replaced (width 8) with the engine of the new one (width 6).
    """
    external = layout == "external"
    recipe = tmp_path / "r" / "swap.yaml"
    old = _save(onnx_models.mlp(0, width=8), tmp_path / "r" / "models", external)
    recipe.write_text(RECIPE)
    new = _save(onnx_models.mlp(1, width=6), tmp_path / "other", external)
    old_digest = model_digest(old)

    point = CrashPoint(tmp_path / "cp", "build-locked")
    builder = start_build(recipe, "--store", store, "--json", env=point.env)
    point.wait_reached(builder)  # resolved: the key names old_digest
    for file in new.parent.iterdir():
        shutil.copyfile(file, old.parent / file.name)  # in place, as `cp` does
    point.resume()
    code, data, err = finish(builder)
    point.close()

    rows = [cli("show", a["artifact_id"], "--store", store, "--json").json() for a in _listed(cli, store)]
    assert all(_output_width(r) == 8 for r in rows if r["model_sha256"] == old_digest), rows
    if external:  # the external file was copied after the swap: refused, nothing recorded
        assert code == 2 and rows == [], (code, data, err)
        assert "changed while it was being read" in data[0]["error"]
    else:  # the .onnx bytes were read before the swap: the old model is what was built
        assert code == 0 and [r["model_sha256"] for r in rows] == [old_digest], (code, data, err)


def _listed(cli, store: Path) -> list[dict]:
    listed = cli("list", "--store", store, "--json")
    return listed.json() if listed.code == 0 else []


@pytest.mark.parametrize("name", BUILD_ENV)
def test_each_keyed_variable_changes_the_key(mlp_recipe, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    recipe = mlp_recipe()
    for other in BUILD_ENV:
        monkeypatch.delenv(other, raising=False)
    keys = {"unset": resolve(recipe).build_key}
    for value in ("0", "1", ""):
        monkeypatch.setenv(name, value)
        keys[value] = resolve(recipe).build_key
    assert len(set(keys.values())) == len(keys), keys
    monkeypatch.delenv(name)
    assert resolve(recipe).build_key == keys["unset"]  # the value decides, nothing else


def test_docs_name_every_keyed_variable_with_its_source() -> None:
    page = (REPO / "docs" / "cache-hits-and-keys.md").read_text()
    rows = {line.split("|")[1].strip().strip("`") for line in page.splitlines() if line.startswith("| `")}
    assert set(BUILD_ENV) <= rows
    assert all(variable.source for variable in BUILD_ENV_VARIABLES)


def test_a_tf32_override_build_is_never_the_plain_builds_hit(cli, mlp_recipe, store: Path) -> None:
    """Fails on 843520b: NVIDIA_TF32_OVERRIDE was not keyed, so a plain build after an override
    build reported `cached` with the override's plan (TensorRT-RTX builds another plan under it)."""
    recipe = mlp_recipe()
    first = cli("build", recipe, "--store", store, "--json", env={"NVIDIA_TF32_OVERRIDE": "0"})
    assert first.code == 0, first
    [overridden] = first.json()
    assert overridden["target"]["env"] == {"NVIDIA_TF32_OVERRIDE": "0"}
    second = cli("build", recipe, "--store", store, "--json")
    assert second.code == 0, second
    [plain] = second.json()
    assert plain["status"] == "built" and plain["build_key"] != overridden["build_key"]
    assert plain["plan_sha256"] != overridden["plan_sha256"]  # the variable does change the engine
    again = cli("build", recipe, "--store", store, "--json", env={"NVIDIA_TF32_OVERRIDE": "0"}).json()
    assert [(r["status"], r["artifact_id"]) for r in again] == [("cached", overridden["artifact_id"])]


@pytest.mark.parametrize("layout", ["embedded", "external"])
def test_reproduce_builds_from_a_private_copy_of_the_recorded_model(
    cli, tmp_path: Path, store: Path, layout: str
) -> None:
    """`build --reproduce` hands its build worker a copy of the bytes the artifact records (external data
    copied too), as a build does: a model replaced as the worker is handed the job does not reach
    TensorRT, and the rebuild is the recorded engine. Fails on integration (c1e1ac4): the worker read the user's
    files, so it rebuilt the replacement (width 6) and compared that with the recorded plan."""
    from trtforge.backend import pool
    from trtforge.stages.reproduce import reproduce

    external = layout == "external"
    recipe = tmp_path / "r" / "swap.yaml"
    old = _save(onnx_models.mlp(0, width=8), tmp_path / "r" / "models", external)
    recipe.write_text(RECIPE)
    new = _save(onnx_models.mlp(1, width=6), tmp_path / "other", external)
    [built] = cli("build", recipe, "--store", store, "--json").json()
    assert built["status"] == "built", built
    read: list[str] = []

    def replaced(job, **_kwargs) -> None:
        for file in new.parent.iterdir():
            shutil.copyfile(file, old.parent / file.name)
        read.append(model_digest(job.onnx_path))

    with kept_results(pool, "build_once", replaced):
        result = reproduce(built["artifact_id"], store)
    recorded = cli("show", built["artifact_id"], "--store", store, "--json").json()["model_sha256"]
    assert model_digest(old) == model_digest(new) != recorded
    assert read == [recorded]
    assert result.benign, result.as_json()
