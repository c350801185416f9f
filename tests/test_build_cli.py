"""End to end through the CLI: real TensorRT-RTX builds, cache hits, catalog output, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import onnx_models
from tests.conftest import subprocess_env
from trtforge.rules.flavors import find_backend

BUILD_FIELDS = {
    "recipe",
    "name",
    "artifact_id",
    "build_key",
    "target",
    "status",
    "plan_path",
    "plan_sha256",
    "seconds",
    "error",
    "more_errors",
    "error_detail",
    "error_kind",
    "cost",
    "target_request",  # the target asked for (--target, --fleet); null: this machine (issue 22)
    "reason",  # why "skipped" (issue 22)
    "hint",  # what the text output's `hint:` line says, and the exit code per item (issue 23)
    "exit_code",
    "notes",  # the capability table's notes on this recipe here (issue 23)
    "node",  # where another executor built it (build --executor ray: node_id, node_ip, pid); null: here (issue 27)
}
LIST_FIELDS = {
    "artifact_id",
    "name",
    "build_key",
    "flavor",
    "trt_version",
    "plan_sha256",
    "plan_size",
    "created_at",
    "status",
}


def store_is_empty(store: Path) -> bool:
    """Nothing written: no store at all, or no blob files and no catalog rows."""
    if not store.exists():
        return True
    blobs = [p for p in (store / "blobs").rglob("*") if p.is_file()] if (store / "blobs").exists() else []
    return blobs == [] and not (store / "catalog.sqlite").exists()


def test_build_then_cache_hit_list_show(cli, example_recipe: Path, store: Path) -> None:
    first = cli("build", example_recipe, "--store", store, "--json")
    assert first.code == 0, first
    [built] = first.json()
    assert set(built) == BUILD_FIELDS
    assert built["status"] == "built" and built["error"] is None and built["name"] == "example-cnn"
    plan = Path(built["plan_path"])
    assert plan.is_absolute() and plan.stat().st_size > 0
    assert plan.parent.name == built["plan_sha256"][:2] and plan.name == built["plan_sha256"]

    second = cli("build", example_recipe, "--store", store, "--json")
    assert second.code == 0, second
    [cached] = second.json()
    assert cached["status"] == "cached"
    assert (cached["artifact_id"], cached["plan_sha256"]) == (built["artifact_id"], built["plan_sha256"])

    listed = cli("list", "--store", store, "--json").json()
    assert len(listed) == 1 and LIST_FIELDS <= set(listed[0])
    # `backend: auto` builds with full TensorRT where it is installed (on a GPU machine), else TensorRT-RTX.
    assert listed[0]["flavor"] == find_backend("auto").flavor and listed[0]["status"] == "unverified"

    shown = cli("show", built["artifact_id"][:6], "--store", store, "--json")
    assert shown.code == 0, shown
    record = shown.json()
    assert record["artifact_id"] == built["artifact_id"]
    assert len(record["profiles"]) == 2
    assert {t["name"] for t in record["io_tensors"]} == {"images", "logits"}
    assert record["details"]["settings"]["optimization_level"] == 3
    assert record["details"]["settings"]["workspace_mib"] == 1024

    human = cli("show", built["artifact_id"], "--store", store)
    assert human.code == 0 and "example-cnn" in human.stdout


def test_cache_hit_does_not_import_tensorrt(cli, example_recipe: Path, store: Path, tmp_path: Path) -> None:
    assert cli("build", example_recipe, "--store", store).code == 0
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, sys\n"
        "from trtforge.cli import app\n"
        f"sys.argv = ['trtforge', 'build', {str(example_recipe)!r}, '--store', {str(store)!r}, '--json']\n"
        "try:\n    app()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'tensorrt', 'tensorrt_rtx', 'polygraphy', 'onnx', 'onnxruntime', 'alembic'})\n"
        "sys.stderr.write('MODULES=' + json.dumps(heavy) + '\\n')\n"
    )
    proc = subprocess.run(
        [sys.executable, str(probe)], capture_output=True, text=True, timeout=120, env=subprocess_env()
    )
    assert json.loads(proc.stdout)[0]["status"] == "cached", proc
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("MODULES=")]
    assert json.loads(line.removeprefix("MODULES=")) == []


def test_force_rebuilds_and_cosmetic_edits_hit(cli, example_recipe: Path, store: Path) -> None:
    [first] = cli("build", example_recipe, "--store", store, "--json").json()
    text = example_recipe.read_text().replace("small CNN used by the quick start", "edited description")
    example_recipe.write_text(text)
    [edited] = cli("build", example_recipe, "--store", store, "--json").json()
    assert edited["status"] == "cached" and edited["build_key"] == first["build_key"]
    [forced] = cli("build", example_recipe, "--store", store, "--force", "--json").json()
    assert forced["status"] == "built" and forced["artifact_id"] != first["artifact_id"]
    assert forced["build_key"] == first["build_key"]
    example_recipe.write_text(text.replace("optimization_level: 3", "optimization_level: 1"))
    [changed] = cli("build", example_recipe, "--store", store, "--json").json()
    assert changed["status"] == "built" and changed["build_key"] != first["build_key"]
    assert len(cli("list", "--store", store, "--json").json()) == 3


def test_store_from_environment_and_default(cli, example_recipe: Path, tmp_path: Path) -> None:
    env_store = tmp_path / "env-store"
    assert cli("build", example_recipe, env={"TRTFORGE_STORE": str(env_store)}).code == 0
    assert (env_store / "catalog.sqlite").is_file()
    workdir = tmp_path / "work"
    workdir.mkdir()
    assert cli("list", "--json", cwd=workdir).json() == []
    assert not (workdir / "cache_store").exists()


def test_human_output_is_quiet_without_a_tty(cli, example_recipe: Path, store: Path) -> None:
    result = cli("build", example_recipe, "--store", store)
    assert result.code == 0
    assert "built" in result.stdout and "example-cnn" in result.stdout
    assert result.stderr == ""


def test_parse_error_names_the_node_and_writes_nothing(cli, mlp_recipe, store: Path) -> None:
    recipe = mlp_recipe("broken")
    onnx_models.save(onnx_models.unsupported_op(), recipe.parent / "models" / "broken.onnx")
    result = cli("build", recipe, "--store", store, "--json")
    assert result.code == 1, result
    [failed] = result.json()
    assert failed["status"] == "failed" and "mystery_node" in failed["error"] and "MysteryOp" in failed["error"]
    assert store_is_empty(store)


GOOD_PROFILE = "  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}\n"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t + "bogus: 1\n", "bogus: unknown field"),
        (lambda t: t.replace("optimization_level: 0", "optimization_level: high"), "valid integer"),
        (lambda t: t.replace("opt: [2, 4]", "opt: [9, 4]"), "opt [9,4] exceeds max [4,4]"),
        (lambda t: t.replace("min: [1, 4]", "min: [3, 4]"), "opt [2,4] is below min [3,4]"),
        (lambda t: t.replace("  - x:", "  - ghost:"), "no input 'ghost'"),
        (
            lambda t: t.replace("[1, 4], opt: [2, 4], max: [4, 4]", "[1, 4, 1], opt: [2, 4, 1], max: [4, 4, 1]"),
            "does not match the model input's rank",
        ),
        (lambda t: t.replace("[1, 4], opt: [2, 4], max: [4, 4]", "[1, 5], opt: [2, 5], max: [4, 5]"), "fixed to 4"),
        (lambda t: t.replace("name: mlp", "name: ../evil"), "name"),
        (lambda t: t.replace("name: mlp", "name: a/b"), "name"),
        (lambda t: t.replace("models/mlp.onnx", "models/missing.onnx"), "not found"),
        (lambda t: t.replace("models/mlp.onnx", "models/mlp.onnx\n  sha256: " + "ab" * 32), "pins"),
        (lambda t: t + "profiles: [\n", "invalid YAML"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(cli, mlp_recipe, store: Path, edit, message: str) -> None:
    recipe = mlp_recipe()
    recipe.write_text(edit(recipe.read_text()))
    result = cli("build", recipe, "--store", store, "--json")
    assert result.code == 2, result
    [failed] = result.json()
    assert failed["status"] == "failed" and message in failed["error"], failed
    assert "\n" not in failed["error"]
    assert store_is_empty(store)
    human = cli("build", recipe, "--store", store)
    assert human.code == 2 and "Traceback" not in human.stderr and "error:" in human.stderr


def test_every_recipe_error_is_listed_in_one_run(cli, mlp_recipe, store: Path) -> None:
    recipe = mlp_recipe()
    text = recipe.read_text().replace("build:\n  optimization_level: 0\n", "")  # one `build` key only
    recipe.write_text(text + "build: {optimization_level: 9, timing_cache: maybe}\nextra: 1\n")
    [failed] = cli("build", recipe, "--store", store, "--json").json()
    assert failed["error"].endswith("(and 2 more)") and len(failed["more_errors"]) == 2, failed
    assert all(line.startswith(f"{recipe}:") for line in [failed["error"], *failed["more_errors"]])
    human = cli("build", recipe, "--store", store)
    errors = [line for line in human.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and not errors[0].startswith(f"error: {recipe}: {recipe}"), human.stderr
    planned = cli("plan", recipe, "--store", store, "--json")
    assert planned.code == 2 and len(planned.json()[0]["more_errors"]) == 2, planned
    assert store_is_empty(store)


def test_checks_against_the_model_name_file_and_line(cli, mlp_recipe, store: Path) -> None:
    recipe = mlp_recipe()
    text = recipe.read_text()
    line = 1 + text.splitlines().index(next(t for t in text.splitlines() if t.startswith("  - x:")))
    recipe.write_text(text.replace("  - x:", "  - ghost:"))
    [failed] = cli("build", recipe, "--store", store, "--json").json()
    assert failed["error"].startswith(f"{recipe}:{line} profiles[0].ghost: the model has no input 'ghost'"), failed


def test_missing_recipe_and_not_onnx(cli, mlp_recipe, store: Path, tmp_path: Path) -> None:
    missing = cli("build", tmp_path / "absent.yaml", "--store", store, "--json")
    assert missing.code == 2 and "recipe file not found" in missing.json()[0]["error"]
    recipe = mlp_recipe()
    (recipe.parent / "models" / "mlp.onnx").write_text("this is not a protobuf")
    garbage = cli("build", recipe, "--store", store, "--json")
    assert garbage.code == 2 and "not a readable ONNX model" in garbage.json()[0]["error"], garbage
    assert store_is_empty(store)


def test_dynamic_input_without_profile(cli, tmp_path: Path, store: Path) -> None:
    folder = tmp_path / "r"
    onnx_models.save(onnx_models.mlp(), folder / "m.onnx")
    (folder / "r.yaml").write_text("name: r\nmodel: {onnx: m.onnx}\nprofiles:\n  - {}\n")
    result = cli("build", folder / "r.yaml", "--store", store, "--json")
    assert result.code == 2 and "dynamic input 'x'" in result.json()[0]["error"], result


def test_store_path_that_is_a_file(cli, example_recipe: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    result = cli("build", example_recipe, "--store", blocker, "--json")
    assert result.code == 2 and "not a directory" in result.json()[0]["error"]
    listed = cli("list", "--store", blocker)
    assert listed.code == 2 and "not a directory" in listed.stderr


def test_show_unknown_and_bad_ids(cli, example_recipe: Path, store: Path) -> None:
    assert cli("build", example_recipe, "--store", store).code == 0
    unknown = cli("show", "ffffffffff", "--store", store, "--json")
    assert unknown.code == 2 and unknown.json()["error"].startswith("no artifact")
    assert cli("show", "abc", "--store", store).code == 2


def test_schema_and_doctor(cli, store: Path) -> None:
    schema = cli("schema")
    assert schema.code == 0 and json.loads(schema.stdout)["title"] == "trtforge recipe"
    doctor = cli("doctor", "--store", store, "--json")
    assert doctor.code == 0
    report = doctor.json()
    assert "tensorrt_rtx" in [b["flavor"] for b in report["backends"]]  # full TensorRT, where installed, is first
    assert report["store"] == str(store)
