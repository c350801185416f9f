"""The GitHub Actions workflows docs/ci.md publishes run as written (issue 23, item 1).

docs/ci/engines-rtx.yml (TensorRT-RTX on CPU-only runners) is run here job by job, step by step,
as a runner would (tests/ci_workflow.py): plan -> build -> verify (reference outputs) -> coverage,
lookup and a signed bundle -> import into the serving side's store -> deploy, on the repository's
recipes, against one shared store (PostgreSQL when TRTFORGE_TEST_POSTGRES_URL is set, else SQLite),
files crossing jobs only as uploaded artifacts. docs/ci/engines-gpu.yml (full TensorRT on GPU runners)
cannot run here: every trtforge command line in it is checked against the real command line
(tests/test_docs.py's checker), and the extras its `pip install` steps name must exist.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from tests import json_schemas
from tests.ci_workflow import Runner, WorkflowError, declared_extras, job_order, load, pip_extras, run_commands
from tests.conftest import MLP_RECIPE, POSTGRES_ENV, REPO, _fresh_postgres_database, subprocess_env
from tests.test_docs import Shown, links, parse_markdown, shown_problems

CI = REPO / "docs" / "ci"
CPU_WORKFLOW = CI / "engines-rtx.yml"
GPU_WORKFLOW = CI / "engines-gpu.yml"
RECIPES = sorted(str(p.relative_to(REPO)) for p in (REPO / "recipes").glob("*.yaml"))


@pytest.fixture
def shared_catalog(tmp_path: Path) -> Iterator[str]:
    """The catalog every job of a run shares: a fresh PostgreSQL database where CI provides one."""
    if os.environ.get(POSTGRES_ENV):
        yield from _fresh_postgres_database()
    else:
        yield f"sqlite:///{tmp_path / 'catalog.sqlite'}"


def keygen(folder: Path) -> tuple[str, str]:
    """The signing key pair the repository's secrets would hold, made by `trtforge keygen`."""
    key = folder / "signing.pem"
    subprocess.run(
        [sys.executable, "-m", "trtforge", "keygen", str(key)], env=subprocess_env(), check=True, capture_output=True
    )
    return key.read_text(), key.with_name("signing.pem.pub").read_text()


def runner_for(tmp_path: Path, catalog: str, run: str = "run") -> Runner:
    """A run of the workflow under tmp_path/RUN; every run under one tmp_path shares the store."""
    (tmp_path / run).mkdir()
    private, public = keygen(tmp_path / run)
    values = {
        "secrets.TRTFORGE_CATALOG": catalog,
        "secrets.TRTFORGE_SIGNING_KEY": private,
        "vars.TRTFORGE_STORE": str(tmp_path / "shared-store"),
        "vars.TRTFORGE_TRUSTED_KEY": public,
    }
    return Runner(tmp_path / run / "runner", values)


def assert_target_is_installed(workflow: dict[str, Any]) -> None:
    """The workflow's TARGET names the TensorRT-RTX release and CUDA variant its runners install: here,
    this environment's (else the build job skips every recipe and the run fails far from the cause)."""
    target = dict(field.split("=", 1) for field in workflow["env"]["TARGET"].split(","))
    doctor = subprocess.run(
        [sys.executable, "-m", "trtforge", "doctor", "--json"], env=subprocess_env(), capture_output=True, text=True
    )
    [rtx] = [b for b in json.loads(doctor.stdout)["backends"] if b["flavor"] == "tensorrt_rtx"]
    installed = (rtx["version"], rtx["cuda"])
    if not (f"{rtx['version']}.".startswith(f"{target['trt']}.") and rtx["cuda"] == target["cuda"]):
        pytest.fail(
            f"{CPU_WORKFLOW.name} builds for {target}, but TensorRT-RTX {installed} is installed: update its TARGET"
        )


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow  # 9 s on an idle 2-core machine, 15-21 s under load: run by .ci/run's `pytest -m slow`
def test_the_cpu_workflow_runs_as_published(tmp_path: Path, shared_catalog: str) -> None:
    if shutil.which("jq") is None:  # GitHub's runners have it; .ci/run installs it
        pytest.fail("the workflow reads build.jsonl with jq: install it (apt-get install jq)")
    workflow = load(CPU_WORKFLOW)
    assert_target_is_installed(workflow)
    runner = runner_for(tmp_path, shared_catalog)
    runner.run(workflow)  # raises at the first step that fails, with its output

    assert job_order(workflow) == ["plan", "build", "verify", "bundle", "deploy"]
    assert {step.job for step in runner.steps} == set(job_order(workflow))
    artifacts = runner.artifacts
    plan = json.loads((artifacts / "plan" / "plan.json").read_text())
    built = json_lines(artifacts / "build" / "build.jsonl")
    verified = json_lines(artifacts / "verify" / "verify.jsonl")
    covered = json_lines(artifacts / "coverage" / "coverage.jsonl")
    assert json_schemas.errors("plan", plan) == []
    for name, items in (("build", built), ("verify", verified), ("coverage", covered)):
        assert [e for item in items for e in json_schemas.errors(name, item, json_schemas.item_part(name))] == []

    # Every recipe of the repository, planned for the workflow's target and built there; the plan
    # job computed the keys the build job stored (its target names the flavor, release and CUDA variant).
    assert sorted(e["recipe"] for e in plan) == RECIPES
    assert [e["status"] for e in plan] == ["build"] * len(RECIPES)
    assert sorted(r["recipe"] for r in built) == RECIPES and {r["status"] for r in built} == {"built"}
    assert {e["recipe"]: e["build_key"] for e in plan} == {r["recipe"]: r["build_key"] for r in built}
    assert all(e["target_request"]["cuda"] == "cu12" for e in plan)
    # Reference outputs for every recipe (no GPU: nothing compared, never "passed").
    checkout = runner.root / "jobs" / "verify"
    assert sorted(Path(v["subject"]).relative_to(checkout).as_posix() for v in verified) == RECIPES
    assert {(v["status"], v["exit_code"]) for v in verified} == {("reference-only", 0)}
    assert {c["artifact_id"] for c in covered} == {r["artifact_id"] for r in built}

    # The bundle carried this run's engines, signed; the serving side trusted the signature and
    # deployed the engine lookup chose there.
    [deploy_job] = [p for p in (runner.root / "jobs").iterdir() if p.name == "deploy"]
    imported = json.loads((deploy_job / "import.json").read_text())
    assert sorted(imported["imported"]) == sorted(r["artifact_id"] for r in built)
    assert imported["signer"]["trusted"] is True
    deployed = json.loads((artifacts / "onnxruntime-model" / "deploy.json").read_text())
    assert json_schemas.errors("deploy-epcontext", deployed) == []
    [rtx] = [r for r in built if r["name"] == "example-cnn-rtx"]
    assert (deployed["artifact_id"], deployed["plan_sha256"]) == (rtx["artifact_id"], rtx["plan_sha256"])
    model = artifacts / "onnxruntime-model" / "model"
    assert (model / "example_ctx.onnx").is_file() and (model / Path(deployed["plan_path"]).name).is_file()

    # A rerun of the unchanged commit builds nothing: the plan says cached, the build finds each engine.
    again = runner_for(tmp_path, shared_catalog, "rerun")
    again.run(workflow, jobs=["plan", "build"])
    replanned = json.loads((again.artifacts / "plan" / "plan.json").read_text())
    rebuilt = json_lines(again.artifacts / "build" / "build.jsonl")
    assert {(e["recipe"], e["status"], e["artifact_id"]) for e in replanned} == {
        (r["recipe"], "cached", r["artifact_id"]) for r in built
    }
    assert {(r["recipe"], r["status"], r["artifact_id"]) for r in rebuilt} == {
        (r["recipe"], "cached", r["artifact_id"]) for r in built
    }


def test_the_gpu_workflows_plan_job_plans_every_fleet_entry_without_tensorrt(tmp_path: Path) -> None:
    """The GPU variant's plan job, run here (no full TensorRT, as on its runner) with the example
    fleet as the repository's fleet.yaml: every full-TensorRT entry gets the key its runner stores
    (`build`, never `unknown`: each entry names its CUDA variant), and the TensorRT-RTX recipe is
    skipped there with the reason, exit 0 (issue 23: the published workflow's first step exited 2)."""
    runner = runner_for(tmp_path, f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    runner.files["fleet.yaml"] = REPO / "docs" / "fleet.example.yaml"
    runner.run(load(GPU_WORKFLOW), jobs=["plan"])
    plan = json.loads((runner.artifacts / "plan" / "plan.json").read_text())
    assert json_schemas.errors("plan", plan) == []
    full = [e for e in plan if e["target_request"]["flavor"] == "tensorrt"]
    assert {e["target_request"]["label"] for e in full} == {"aws-g5", "gcp-g2", "dgx-h100"}
    by_recipe = {(e["recipe"], e["target_request"]["label"]): e for e in full}
    for label in ("aws-g5", "gcp-g2", "dgx-h100"):
        planned, skipped = by_recipe["recipes/example.yaml", label], by_recipe["recipes/example_rtx.yaml", label]
        assert planned["status"] == "build" and planned["target"]["cuda"] == planned["target_request"]["cuda"]
        assert skipped["status"] == "skipped" and skipped["exit_code"] == 0
        assert skipped["reason"] == "recipe backend tensorrt_rtx does not build for tensorrt"
    assert all(e["exit_code"] == 0 for e in plan)


def test_a_wrong_flag_in_a_step_fails_the_run(tmp_path: Path) -> None:
    """A command the CLI refuses fails its step, also piped into `tee` (the workflow's `shell: bash`
    adds pipefail), and the run stops there."""
    workflow = load(CPU_WORKFLOW)
    steps = workflow["jobs"]["build"]["steps"]
    [index] = [i for i, step in enumerate(steps) if "trtforge build" in str(step.get("run"))]
    assert "--json-lines | tee" in steps[index]["run"]
    steps[index]["run"] = steps[index]["run"].replace("--json-lines", "--json-line")
    runner = runner_for(tmp_path, f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    with pytest.raises(WorkflowError, match=rf"job build, step {index + 1} failed \(exit 2\)") as failed:
        runner.run(workflow)
    last = runner.steps[-1]
    assert (last.job, last.code) == ("build", 2) and "--json-line" in str(failed.value)
    assert "No such option: --json-line" in re.sub(r"\x1b\[[0-9;]*m", "", last.stderr), last.stderr
    assert {step.job for step in runner.steps} == {"plan", "build"}  # nothing after it ran


@pytest.fixture(scope="module")
def root_command() -> Any:
    from trtforge.cli import app

    return typer.main.get_command(app)


@pytest.mark.parametrize("path", [CPU_WORKFLOW, GPU_WORKFLOW], ids=lambda p: p.name)
def test_every_command_and_flag_of_a_workflow_exists(path: Path, root_command: Any) -> None:
    workflow = load(path)
    job_order(workflow)  # needs name real jobs, without a cycle
    invocations, problems = 0, []
    for job, command in run_commands(workflow):
        extras = pip_extras(command)
        if extras is not None:
            assert extras <= declared_extras(), (job, command)
            continue
        count, found = shown_problems(Shown(f"{path.name} job {job}", command), root_command)
        invocations += count
        problems += found
    assert problems == []
    assert invocations >= 8  # plan, build, verify, coverage, lookup, export, import, deploy at least


def test_the_checker_finds_a_wrong_flag_in_a_workflow(root_command: Any) -> None:
    """The static check reads `run:` steps as the docs' checker reads command lines: a flag the
    command lacks, in a pipe or a command substitution, is found."""
    for line, why in (
        ("trtforge build 'recipes/*.yaml' --target \"$TARGET\" --json-line | tee b.jsonl", "no option --json-line"),
        ("trtforge export $(trtforge list --nam x --json | jq -r '.[].artifact_id') -o e.tar", "no option --nam"),
        ('trtforge verify "${{ matrix.id }}" --reference', "no option --reference"),
    ):
        assert any(why in p for p in shown_problems(Shown("x", line), root_command)[1]), line


def test_docs_link_the_workflows_instead_of_copying_them() -> None:
    page = REPO / "docs" / "ci.md"
    markdown = parse_markdown(page.read_text(encoding="utf-8"))
    linked = {target.partition("#")[0] for _, target in links(markdown)}
    assert {"ci/engines-rtx.yml", "ci/engines-gpu.yml"} <= linked
    assert not any(line.text.strip().startswith("jobs:") for line in markdown.code)  # no inline copy


def test_coverage_skips_a_recipe_where_it_does_not_build_as_plan_does(cli, mlp_recipe, tmp_path: Path) -> None:
    """The GPU workflow's gate runs `coverage 'recipes/*.yaml'` for full-TensorRT entries: the
    repository's TensorRT-RTX recipe was counted `missing` there (exit 1, on every run) while `plan`
    skipped it. Now it is `skipped` with plan's reason, and a recipe that does build there still counts."""
    rtx_only = mlp_recipe("rtxonly")  # backend: tensorrt_rtx
    store = tmp_path / "store"
    assert cli("build", rtx_only, "--store", store).code == 0  # a store with an engine: coverage reads it
    full = ["--target", "flavor=tensorrt,trt=10.13.3.9,cuda=cu12,gpu=A10G"]
    [planned] = cli("plan", rtx_only, *full, "--store", store, "--json").json()
    covered = cli("coverage", rtx_only, *full, "--store", store, "--json")
    assert covered.code == 0, covered
    [item] = covered.json()
    assert (item["status"], item["exit_code"], item["missing"]) == ("skipped", 0, [])
    assert (planned["status"], planned["reason"]) == ("skipped", item["reason"])
    assert item["reason"] == "recipe backend tensorrt_rtx does not build for tensorrt"
    auto = mlp_recipe("auto", text=MLP_RECIPE.replace("backend: tensorrt_rtx", "backend: auto"))
    gated = cli("coverage", auto, *full, "--store", store, "--json")
    assert gated.code == 1 and [i["status"] for i in gated.json()] == ["missing"], gated
