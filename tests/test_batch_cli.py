"""CI production: many recipes and globs per build, --fail-fast, and `plan` without building."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import onnx_models
from tests.conftest import MLP_RECIPE, subprocess_env


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    """recipes/a.yaml, recipes/b.yaml, recipes/nested/c.yaml (valid) and recipes/broken.yaml
    (a model TensorRT-RTX cannot parse: a real build failure, exit 1)."""
    root = tmp_path / "recipes"
    for name, seed in (("a", 1), ("b", 2)):
        onnx_models.save(onnx_models.mlp(seed), root / "models" / f"{name}.onnx")
        (root / f"{name}.yaml").write_text(MLP_RECIPE.format(name=name, model=f"models/{name}.onnx", level=0))
    onnx_models.save(onnx_models.mlp(3), root / "nested" / "models" / "c.onnx")
    (root / "nested" / "c.yaml").write_text(MLP_RECIPE.format(name="c", model="models/c.onnx", level=0))
    onnx_models.save(onnx_models.unsupported_op(), root / "models" / "bad.onnx")
    (root / "broken.yaml").write_text(MLP_RECIPE.format(name="broken", model="models/bad.onnx", level=0))
    return root


def statuses(results: list[dict]) -> list[tuple[str | None, str]]:
    return [(r["name"], r["status"]) for r in results]


def test_build_many_reports_each_and_builds_past_a_failure(cli, recipes: Path, store: Path) -> None:
    first = cli("build", recipes / "broken.yaml", f"{recipes}/**/*.yaml", "--store", store, "--json")
    assert first.code == 1, first
    results = first.json()
    # broken first (given explicitly), the glob adds the rest once each, sorted.
    assert statuses(results) == [("broken", "failed"), ("a", "built"), ("b", "built"), ("c", "built")]
    assert "ONNX parse failed" in results[0]["error"]

    again = cli("build", f"{recipes}/**/*.yaml", "--store", store, "--json")
    assert again.code == 1
    assert statuses(again.json()) == [("a", "cached"), ("b", "cached"), ("broken", "failed"), ("c", "cached")]

    ok = cli("build", recipes / "a.yaml", recipes / "b.yaml", "--store", store, "--json")
    assert ok.code == 0 and statuses(ok.json()) == [("a", "cached"), ("b", "cached")]


def test_fail_fast_stops_at_the_first_failure(cli, recipes: Path, store: Path) -> None:
    result = cli(
        "build",
        recipes / "a.yaml",
        recipes / "broken.yaml",
        recipes / "b.yaml",
        "--fail-fast",
        "--store",
        store,
        "--json",
    )
    assert result.code == 1
    assert statuses(result.json()) == [("a", "built"), ("broken", "failed")]
    listed = cli("list", "--store", store, "--json").json()
    assert [row["name"] for row in listed] == ["a"]


def test_unmatched_glob_is_a_failure_with_exit_2(cli, recipes: Path, store: Path) -> None:
    result = cli("build", recipes / "a.yaml", f"{recipes}/none/*.yaml", "--store", store, "--json")
    assert result.code == 2
    [built, unmatched] = result.json()
    assert built["status"] == "built"
    assert unmatched == {**unmatched, "status": "failed", "error": "no recipe file matches"}


def test_plan_shows_keys_and_cache_hits_without_building(cli, recipes: Path, store: Path) -> None:
    before = cli("plan", f"{recipes}/*.yaml", recipes / "nested" / "c.yaml", "--store", store, "--json")
    assert before.code == 0, before
    planned = before.json()
    assert [(p["name"], p["status"]) for p in planned] == [
        ("a", "build"),
        ("b", "build"),
        ("broken", "build"),
        ("c", "build"),
    ]
    assert all(len(p["build_key"]) == 64 and p["target"]["flavor"] == "tensorrt_rtx" for p in planned)
    assert not store.exists()  # planning never creates the store

    built = cli("build", recipes / "a.yaml", recipes / "nested" / "c.yaml", "--store", store, "--json").json()
    after = cli("plan", f"{recipes}/**/*.yaml", "--store", store, "--json").json()
    by_name = {p["name"]: p for p in after}
    for result in built:
        assert by_name[result["name"]]["status"] == "cached"
        assert by_name[result["name"]]["build_key"] == result["build_key"]
        assert by_name[result["name"]]["artifact_id"] == result["artifact_id"]
    assert by_name["b"]["status"] == "build" and by_name["b"]["artifact_id"] is None


def test_plan_for_explicit_targets(cli, recipes: Path, store: Path) -> None:
    built = cli("build", recipes / "a.yaml", "--store", store, "--json").json()[0]
    version = cli("show", built["artifact_id"], "--store", store, "--json").json()["trt_version"]
    targets = (
        "--target", f"flavor=tensorrt_rtx,trt={version},cc=8.9",
        "--target", "flavor=tensorrt_rtx,trt=1.8.0,cc=8.9",
        "--target", "flavor=tensorrt_rtx,trt=1.8.0,cc=8.9,cuda=cu13",
        "--target", "flavor=tensorrt,trt=10.13.3.9,cc=8.6,gpu=NVIDIA A10G",
    )  # fmt: skip
    result = cli("plan", recipes / "a.yaml", *targets, "--store", store, "--json")
    assert result.code == 0, result
    # 1.8.0 is not installed: without cuda= its key is unknown (issue 22: on 760f324 it said "build"
    # for a key no runner stores). The recipe asks for tensorrt_rtx: the TensorRT target is skipped.
    rows = result.json()
    assert [(p["target_request"]["trt_version"], p["status"]) for p in rows] == [
        (version, "cached"),
        ("1.8.0", "unknown"),
        ("1.8.0", "build"),
        ("10.13.3.9", "skipped"),
    ]
    assert "CUDA variant" in rows[1]["reason"] and rows[2]["target"]["cuda"] == "cu13"
    assert rows[1]["build_key"] != rows[2]["build_key"]
    assert rows[3]["reason"] == "recipe backend tensorrt_rtx does not build for tensorrt" and rows[3]["target"] is None


@pytest.mark.parametrize(
    "spec",
    ["tensorrt,10.13.3,8.6", "flavor=tensorrt,trt=10.13.3", "flavor=tensorrt,trt=10.13.3,cc=86", "os=linux,cc=8.6"],
)
def test_plan_malformed_target_exit_2(cli, recipes: Path, store: Path, spec: str) -> None:
    result = cli("plan", recipes / "a.yaml", "--target", spec, "--store", store)
    assert result.code == 2, result
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_plan_reports_bad_recipes_and_imports_nothing_heavy(recipes: Path, store: Path, tmp_path: Path) -> None:
    (recipes / "bad.yaml").write_text("name: bad\n")
    # onnx may be imported: models this store has not hashed yet are parsed for their external data.
    code = (
        "import json, sys\n"
        "from trtforge.stages.build import plan_builds\n"
        f"entries = plan_builds([{str(recipes / '*.yaml')!r}], store={str(store)!r})\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorrt', 'tensorrt_rtx', 'polygraphy', 'onnxruntime', 'alembic'))\n"
        "print(json.dumps({'entries': [e.as_json() for e in entries], 'heavy': heavy}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["heavy"] == []
    bad = next(e for e in report["entries"] if e["recipe"].endswith("bad.yaml"))
    assert bad["status"] == "failed" and "bad.yaml" in bad["error"]


def test_plan_refuses_what_the_target_backend_cannot_build(cli, recipes: Path, store: Path) -> None:
    recipe = recipes / "a.yaml"
    recipe.write_text(
        recipe.read_text().replace("backend: tensorrt_rtx", "backend: auto") + "tactics: {sources: [cudnn]}\n"
    )
    targets = (
        "--target", "flavor=tensorrt_rtx,trt=1.7.1,cc=8.9",
        "--target", "flavor=tensorrt,trt=10.13.3,cc=8.6,gpu=NVIDIA A10G,cuda=cu12",
        "--target", "flavor=tensorrt,trt=11.0.0,cc=8.6,gpu=NVIDIA A10G",
    )  # fmt: skip
    result = cli("plan", recipe, *targets, "--store", store, "--json")
    assert result.code == 2, result
    rows = result.json()
    assert [row["status"] for row in rows] == ["failed", "build", "failed"]
    assert "tactics.sources: cudnn is not available: TensorRT-RTX 1.7.1" in rows[0]["error"]  # the installed build
    assert "TensorRT 11.0.0 removed it" in rows[2]["error"]


def test_an_existing_file_with_glob_characters_is_that_file(cli, tmp_path: Path, store: Path) -> None:
    """`x[1].yaml` that exists names itself: it was read as a pattern and built x1.yaml instead
    (and `st[1].onnx` was 'no recipe file matches', exit 2). Only a name that is no file is a pattern."""
    folder = tmp_path / "brackets"
    for name, file in (("other-one", "x1.yaml"), ("br", "x[1].yaml")):
        onnx_models.save(onnx_models.mlp(len(name)), folder / "models" / f"{name}.onnx")
        (folder / file).write_text(MLP_RECIPE.format(name=name, model=f"models/{name}.onnx", level=0))
    model = onnx_models.save(onnx_models.mlp(7), folder / "st[1].onnx")
    built = cli("build", "x[1].yaml", "--store", store, "--json", cwd=folder)
    assert built.code == 0, built
    assert statuses(built.json()) == [("br", "built")]
    planned = cli("plan", model, "--store", store, "--json")
    assert planned.code == 0, planned
    assert [(p["recipe"], p["exit_code"]) for p in planned.json()] == [(str(model), 0)]
    pattern = cli("plan", "x?.yaml", "--store", store, "--json", cwd=folder)  # no such file: still a pattern
    assert [p["name"] for p in pattern.json()] == ["other-one"], pattern
