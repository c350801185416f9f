"""`trtforge refit`: everything before and after the GPU step, on real artifacts and real ONNX files.

The refit itself (TensorRT's OnnxParserRefitter) needs a GPU and a REFIT build, which this
machine cannot make; it is written in trtforge/backend/run.py and not executed here.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import onnx_models
from tests.conftest import MLP_RECIPE
from tests.gpu_steps import kept_results, missing, runtime_up_to_loading, stopped, target_cc
from trtforge.core.errors import ModelError, NotRefittableError, VerificationUnavailableError
from trtforge.rules.recipe import refit_mode
from trtforge.stages.build import BuildStage
from trtforge.stages.refit import check_refittable, check_weights, record_refit
from trtforge.stages.verify import OnnxModelCandidate, RuntimeInfo, check, subject_from_artifact
from trtforge.store import open_existing_store
from trtforge.store.catalog import Artifact, Blob


def build(recipe: Path, store: Path) -> str:
    stage = BuildStage(store)
    try:
        result = stage.build_one(recipe)
    finally:
        stage.close()
    assert result.status == "built", result
    return result.artifact_id or ""


def refittable_copy(store: Path, artifact_id: str, mode: str = "refittable") -> str:
    """The same artifact recorded as if its recipe had asked for a refittable build."""
    opened = open_existing_store(store)
    assert opened is not None
    parent = opened.catalog.get_artifact(artifact_id)
    columns = {c.key: getattr(parent, c.key) for c in Artifact.__table__.columns}
    columns.update(id=uuid.uuid4().hex, recipe={**parent.recipe, "refit": mode})
    blob = Blob(sha256=parent.plan_sha256, size=parent.plan_size, kind="plan")
    opened.catalog.add_artifact(Artifact(**columns), blob)
    opened.close()
    return columns["id"]


def test_refit_mode_is_read_from_the_recorded_recipe() -> None:
    assert refit_mode({}) == "none"
    assert refit_mode({"refit": "strip_weights"}) == "strip_weights"
    assert refit_mode({"build": {"refit": "refittable"}}) == "refittable"
    assert refit_mode({"refit": {"mode": "refit_identical"}}) == "refit_identical"


def test_refit_of_a_non_refittable_artifact_is_refused(cli, mlp_recipe, store: Path, tmp_path: Path) -> None:
    artifact_id = build(mlp_recipe(), store)
    weights = onnx_models.save(onnx_models.mlp(seed=1), tmp_path / "new.onnx")
    result = cli("refit", artifact_id, "--weights", weights, "--store", store, "--json")
    assert result.code == 2, result
    assert "was built with refit mode 'none'" in result.json()["error"]
    assert "refit: refittable" in result.json()["hint"]
    assert len(cli("list", "--store", store, "--json").json()) == 1


def test_refit_checks_the_weights_file(mlp_recipe, store: Path, tmp_path: Path) -> None:
    artifact_id = build(mlp_recipe(), store)
    opened = open_existing_store(store)
    assert opened is not None
    parent = opened.catalog.get_artifact(artifact_id)
    opened.close()
    with pytest.raises(NotRefittableError):
        check_refittable(parent)
    with pytest.raises(ModelError, match="not found"):
        check_weights(parent, tmp_path / "absent.onnx")
    other = onnx_models.save(onnx_models.two_heads(), tmp_path / "other.onnx")
    with pytest.raises(ModelError, match=r"outputs \['y1', 'y2'\] differ from the engine's \['y'\]"):
        check_weights(parent, other)
    good = onnx_models.save(onnx_models.mlp(seed=1), tmp_path / "good.onnx")
    assert len(check_weights(parent, good)) == 64


def test_refit_without_gpu_exits_2_before_touching_the_store(cli, mlp_recipe, store: Path, tmp_path: Path) -> None:
    """No GPU visible: here none exists; on a GPU machine CUDA_VISIBLE_DEVICES="" hides them."""
    artifact_id = refittable_copy(store, build(mlp_recipe(), store))
    weights = onnx_models.save(onnx_models.mlp(seed=1), tmp_path / "new.onnx")
    no_gpu = {"CUDA_VISIBLE_DEVICES": ""}
    result = cli("refit", artifact_id, "--weights", weights, "--store", store, "--json", env=no_gpu)
    assert result.code == 2, result
    assert result.json()["error"].startswith("refit needs a CUDA GPU with TensorRT-RTX ")
    assert len(cli("list", "--store", store, "--json").json()) == 2


def test_refitted_artifact_records_lineage_and_verifies_against_new_weights(
    cli, mlp_recipe, store: Path, tmp_path: Path
) -> None:
    parent_id = build(mlp_recipe(), store)
    weights = onnx_models.save(onnx_models.mlp(seed=1), tmp_path / "new.onnx")
    opened = open_existing_store(store)
    assert opened is not None
    parent = opened.catalog.get_artifact(parent_id)
    digest = check_weights(parent, weights)
    # The plan bytes stand in for the refitted engine (the refit itself needs a GPU).
    child = record_refit(opened, parent, opened.blobs.read_verified(parent.plan_sha256), weights, digest, 0.5)
    assert child.id != parent.id and child.build_key != parent.build_key
    assert child.details.lineage is not None and child.details.lineage.model_dump() == {
        "parent": parent.id,
        "operation": "refit",
        "weights_sha256": digest,
        "weights_path": str(weights.resolve()),
    }
    assert child.model_sha256 == digest and child.status == "unverified"
    assert opened.catalog.find_by_build_key(parent.build_key).id == parent.id  # recipe builds still hit the parent

    subject = subject_from_artifact(opened.catalog.get_artifact(child.id))
    assert subject.model_path == weights.resolve()
    runtime = RuntimeInfo("stand-in", None, "onnxruntime", "test")
    assert check(subject, OnnxModelCandidate(weights), runtime, store=opened).status == "passed"
    old_model = parent.details.model_path
    assert check(subject, OnnxModelCandidate(old_model), runtime, store=opened).status == "failed"
    opened.close()

    shown = cli("show", child.id, "--store", store)
    assert shown.code == 0 and f"lineage refit of {parent.id}" in shown.stdout


def refittable_parent(mlp_recipe: Callable[..., Path], store: Path) -> str:
    """A refittable artifact: built so on a GPU TensorRT-RTX builds and runs refittable plans on, else
    (refittable builds need CUDA) the MLP's plan recorded as refittable, whose refit then stops at
    deserialization."""
    if missing("gpu build", "tensorrt_rtx") is None:
        [cc] = target_cc("tensorrt_rtx", one=True) or ["8.6"]
        text = MLP_RECIPE + f"refit: refittable\ncompatibility:\n  compute_capabilities: [{cc}]\n"
        return build(mlp_recipe("refittable", text=text), store)
    return refittable_copy(store, build(mlp_recipe(), store))


def test_the_refitter_reads_a_private_copy_of_the_weights_whose_digest_is_recorded(
    mlp_recipe, store: Path, tmp_path: Path
) -> None:
    """The weights file is read once: its digest, its I/O check and the copy the refitter reads are of
    the same bytes, so a file replaced after it was read (here: while the GPU is chosen) never reaches
    TensorRT under the recorded digest. Fails on integration (c1e1ac4): the refitter read the user's file again, and
    the child artifact would have recorded the old digest with the new file's weights."""
    from trtforge.backend import run
    from trtforge.rules.digests import model_digest
    from trtforge.stages.refit import refit

    parent = refittable_parent(mlp_recipe, store)
    weights = onnx_models.save(onnx_models.mlp(seed=1), tmp_path / "new.onnx")
    other = onnx_models.save(onnx_models.mlp(seed=2), tmp_path / "other.onnx")
    digest = model_digest(weights)
    read: list[str] = []

    def replaced(*_args: Any, **_kwargs: Any) -> None:
        shutil.copyfile(other, weights)

    def refitting(_backend: Any, _plan: bytes, onnx_path: Path, **_kwargs: Any) -> None:
        read.append(model_digest(onnx_path))

    result, error = None, None
    with (
        runtime_up_to_loading(),
        kept_results(run, "gpu_runtime_for", replaced),
        kept_results(run, "refit_plan", refitting),
    ):
        try:
            result = refit(parent, weights, store=store)
        except VerificationUnavailableError as exc:
            error = str(exc)
    assert model_digest(weights) == model_digest(other) != digest
    assert read == [digest]
    if error is not None:
        stopped(error)
    assert result is not None and result.weights_sha256 == digest
