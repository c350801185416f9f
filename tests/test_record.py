"""``artifacts.details`` is one typed record (trtforge.rules.record): written by builds, adopt and refit,
read back into the same model, and rows written before it existed still read.

The old-catalog test makes its catalog with trtforge as of 55eb6bf (the last commit before the
record was typed), taken from this repository's history, and then uses it with today's code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, subprocess_env
from trtforge.rules.record import DETAILS_VERSION, ArtifactDetails, read_details
from trtforge.store import open_store

OLD_COMMIT = "55eb6bf"


def old_trtforge(into: Path) -> Path:
    """trtforge/ as of OLD_COMMIT, extracted from git; skips where the history is not there."""
    proc = subprocess.run(["git", "-C", str(REPO), "archive", OLD_COMMIT, "trtforge"], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"commit {OLD_COMMIT} is not in this clone's history (a shallow clone?)")
    with tarfile.open(fileobj=BytesIO(proc.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_old(code: Path, *args: str | Path) -> Any:
    env = subprocess_env()  # this checkout's trtforge first on PYTHONPATH: put the old one there instead
    rest = [p for p in env["PYTHONPATH"].split(os.pathsep) if p and p != str(REPO)]
    env["PYTHONPATH"] = os.pathsep.join([str(code), *rest])
    proc = subprocess.run(  # cwd: not this checkout, whose trtforge `python -m` would find first
        [sys.executable, "-m", "trtforge", *map(str, args)], capture_output=True, text=True, env=env, timeout=600,
        cwd=code,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow  # seconds each: README's test command keeps its 5-minute cap (.ci/run runs it)
def test_a_catalog_written_before_the_typed_record_still_reads(
    tmp_path: Path, store: Path, mlp_recipe: Callable[..., Path], cli: Callable[..., Any]
) -> None:
    code = old_trtforge(tmp_path / "old")
    recipe = mlp_recipe("legacy")
    [built] = run_old(code, "build", recipe, "--store", store, "--json")
    plan = Path(built["plan_path"])
    model = recipe.parent / "models" / "legacy.onnx"
    adopted = run_old(code, "adopt", plan, "--name", "adopted", "--model", model, "--store", store, "--json")

    shown = cli("show", built["artifact_id"], "--store", store, "--json")
    assert shown.code == 0, shown
    details = shown.json()["details"]
    assert details["version"] == 0 and details["settings"] and details["model"]["path"] == str(model.absolute())
    assert cli("show", adopted["artifact_id"], "--store", store, "--json").json()["details"]["origin"] == "adopted"
    assert {row["artifact_id"] for row in cli("list", "--store", store, "--json").json()} == {
        built["artifact_id"],
        adopted["artifact_id"],
    }
    version = shown.json()["trt_version"]
    # Recorded before trtforge set the capability list explicitly: read as the documented default.
    found = cli("lookup", "legacy", "--flavor", "tensorrt_rtx", "--trt", version, "--cc", "8.6", "--store", store,
                "--explain", "--json")  # fmt: skip
    assert found.code == 0 and found.json()["best"]["artifact_id"] == built["artifact_id"], found
    assert any("not recorded" in note for note in found.json()["best"]["notes"])
    reproduced = cli("build", "--reproduce", built["artifact_id"], "--store", store, "--json")
    assert reproduced.code in (0, 1), reproduced  # the old key schema: its record no longer gives its key
    assert reproduced.json()["record_key_matches"] is False
    assert cli("fsck", "--store", store).code == 0
    assert cli("gc", "--dry-run", "--store", store, "--json").code == 0

    opened = open_store(store)
    try:
        artifact = opened.catalog.get_artifact(built["artifact_id"])
        assert isinstance(artifact.details, ArtifactDetails) and artifact.details.version == 0
        assert artifact.details.model_path == model.absolute()
    finally:
        opened.close()


def test_new_records_carry_the_current_version_and_round_trip(
    store: Path, mlp_recipe: Callable[..., Path], cli: Callable[..., Any]
) -> None:
    [built] = cli("build", mlp_recipe("typed"), "--store", store, "--json").json()
    opened = open_store(store)
    try:
        details = opened.catalog.get_artifact(built["artifact_id"]).details
    finally:
        opened.close()
    assert details.version == DETAILS_VERSION and details.origin == "built" and details.target is not None
    assert read_details(details.as_json()) == details
    shown = cli("show", built["artifact_id"], "--store", store, "--json").json()["details"]
    assert shown == details.as_json()


def test_unknown_keys_of_a_newer_writer_are_kept() -> None:
    newer = {"version": DETAILS_VERSION + 1, "settings": {}, "something_new": {"a": 1}}
    assert read_details(newer).as_json()["something_new"] == {"a": 1}


DAMAGED_AND_VALID = [
    {},
    {"origin": "adopted", "weightless": True, "refit": "strip_weights", "target": {"os": "linux"}},
    {"origin": "elsewhere", "weightless": "yes", "compatibility": {"hardware": "ampere_plus"}},
    {"origin": 3, "weightless": "YES", "refit": 7, "target": [1], "compatibility": "none"},
    {"weightless": 1, "refit": None, "target": None},
    {"weightless": 2, "compatibility": None},
    {"weightless": 0.0, "refit": "refittable"},
    {"weightless": "sometimes", "origin": None},
    {"weightless": None, "target": "linux"},
    {"weightless": " true"},
    {"weightless": [], "compatibility": {"version_compatible": True}},
    {"plugins": [{"library": "/l/a.so", "name": "a.so", "sha256": "1" * 64, "load": "static"}]},
    {"plugins": [{"library": "/l/a.so", "name": "a.so", "sha256": "1" * 64, "serialized": "yes"}]},
    {"plugins": [{"library": "a", "name": "a", "sha256": "2" * 64}, {"name": "b", "sha256": "3" * 64}]},
    {"plugins": [{"library": "a", "name": "a", "sha256": "2" * 64, "serialized": 0}, "junk"]},
    {"plugins": {"library": "a"}, "refit": "strip_all_weights"},
]


@pytest.mark.parametrize("stored", DAMAGED_AND_VALID, ids=range(len(DAMAGED_AND_VALID)))
def test_lookups_record_view_reads_what_the_model_reads(stored: dict[str, Any]) -> None:
    """Lookup reads its fields without building the pydantic models (rules/compatibility.py:
    RecordView); whatever a row holds, valid or damaged, it must read what read_details reads."""
    from trtforge.rules.compatibility import Envelope, RecordView

    model = read_details(stored)
    view = RecordView.of(stored)
    assert (view.origin, view.target, view.compatibility, view.weightless, view.refit) == (
        model.origin,
        model.target,
        model.compatibility,
        model.weightless,
        model.refit,
    )
    assert view.needs_weights == model.needs_weights
    assert view.plugins_needed == tuple((p.name, p.sha256) for p in model.plugins_needed)
    assert Envelope.from_details(view) == Envelope.from_details(model)
    assert RecordView.of(model) == view  # an ORM row's record reads the same
