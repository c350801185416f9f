"""`build --executor ray` without a cluster (issue 27): what each target asks of a Ray node, whether
a cluster's nodes offer it, and the paths that never start Ray (hits, refusals of the options).

What the tasks do on real Ray nodes is in tests/test_ray_builds.py (slow: Ray takes seconds to start).
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from tests.conftest import REPO, subprocess_env
from trtforge.core.errors import TargetError
from trtforge.rules.fleet import load_fleet
from trtforge.rules.ray_scheduling import Demand, demand_for, why_unoffered
from trtforge.rules.target import RuntimeTarget

needs_ray = pytest.mark.skipif(find_spec("ray") is None, reason="ray is not installed (the 'ray' extra)")
FLEET = REPO / "docs" / "fleet.example.yaml"
L4_NODE = {"CPU": 8.0, "GPU": 1.0, "accelerator_type:L4": 1.0, "node:10.0.0.3": 1.0}
CPU_NODE = {"CPU": 16.0, "node:10.0.0.4": 1.0}


def _fleet_targets() -> list[tuple[str, str | None, RuntimeTarget]]:
    """(entry name, the fleet entry's own Ray accelerator type, the entry as a target)."""
    fleet = load_fleet(FLEET)
    return [(e.name, e.ray_accelerator_type, e.request().resolve()) for e in fleet.targets]


@pytest.mark.parametrize("pin", [False, True], ids=["cpus", "pinned"])
def test_each_fleet_entry_asks_for_its_gpu_type_as_the_fleet_names_it(pin: bool) -> None:
    """Full TensorRT asks for one GPU of the entry's type; TensorRT-RTX for a CPU, or (pinned) a CPU
    on a node of the entry's type. The type is the one the fleet manifest gives the entry."""
    for name, kind, target in _fleet_targets():
        demand = demand_for(target, pin_gpu=pin)
        if target.flavor == "tensorrt":
            assert (demand.gpus, demand.accelerator_type) == (1.0, kind), name
        else:
            assert demand.gpus == 0.0 and demand.cpus == 1.0, name
            assert demand.accelerator_type == (kind if pin else None), name


def test_a_target_ray_cannot_place_is_refused_with_the_way_out() -> None:
    cc_only = RuntimeTarget("tensorrt", "10.13.3.9", "8.6", label="cc-only")
    with pytest.raises(TargetError, match="Ray schedules builds by GPU type, and target cc-only names no GPU model"):
        demand_for(cc_only)
    rtx = RuntimeTarget("tensorrt_rtx", "1.7.1", "8.9")
    assert demand_for(rtx) == Demand()  # anywhere: no GPU model needed
    with pytest.raises(TargetError) as pinned:
        demand_for(rtx, pin_gpu=True)
    assert "leave --ray-pin-gpu out" in (pinned.value.hint or "")
    with pytest.raises(TargetError, match="no target was given"):
        demand_for(None, pin_gpu=True)


def test_whether_a_node_offers_a_demand() -> None:
    by_name = {name: target for name, _, target in _fleet_targets()}
    l4, h100 = demand_for(by_name["gcp-g2"]), demand_for(by_name["dgx-h100"])
    assert why_unoffered(l4, [CPU_NODE, L4_NODE]) is None
    assert why_unoffered(h100, [CPU_NODE, L4_NODE]) == "no node offers accelerator_type:H100"
    no_gpu_left = {**L4_NODE, "GPU": 0.0}  # the label is there, the GPU is not
    assert why_unoffered(l4, [no_gpu_left]) == "no node offers accelerator_type:L4 with 1 GPU and 1 CPU"
    assert why_unoffered(Demand(), [{"CPU": 0.0}]) == "no node offers 1 CPU"
    assert why_unoffered(Demand().on_node("10.0.0.4"), [L4_NODE]) == "no node offers node:10.0.0.4 with 1 CPU"
    assert why_unoffered(Demand().on_node("10.0.0.4"), [L4_NODE, CPU_NODE]) is None


@needs_ray
def test_a_run_where_everything_hits_starts_no_ray(cli, mlp_recipe, store: Path) -> None:
    """Hits are answered here: Ray is never imported nor asked (the address given refuses every
    connection, so a run that went there would fail), and the results are those of a local run."""
    recipes = [mlp_recipe(f"hit{i}", seed=70 + i) for i in range(2)]
    first = cli("build", *recipes, "--store", store, "--json")
    assert first.code == 0, first
    on_ray = ["--store", str(store), "--executor", "ray", "--ray-address", "127.0.0.1:1", "--json"]
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "trtforge", "build", *map(str, recipes), *on_ray],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    assert [(r["status"], r["artifact_id"], r["node"]) for r in results] == [
        ("cached", r["artifact_id"], None) for r in first.json()
    ]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert "trtforge.stages.ray_builds" in imported  # the executor was chosen ...
    assert not [name for name in imported if name == "ray" or name.startswith("ray.")]  # ... and Ray never came


@needs_ray
def test_an_address_where_no_ray_listens_is_one_line_and_nothing_is_built(cli, mlp_recipe, store: Path) -> None:
    """A miss starts the Ray driver, which cannot connect: exit 2, the error and its hint, no
    traceback (the driver's own included), no build."""
    run = cli("build", mlp_recipe("nowhere"), "--store", store, "--executor", "ray", "--ray-address", "127.0.0.1:1")
    assert run.code == 2, run
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines[0] == "error: cannot connect to Ray at 127.0.0.1:1: Connection refused", run.stderr
    assert len(lines) == 2 and lines[1].startswith("hint: check --ray-address"), run.stderr
    assert "RAY_AUTH_TOKEN" in lines[1] and lines[1].endswith("docs/ray.md"), run.stderr
    listed = cli("list", "--store", store, "--json")
    assert listed.code == 0 and listed.json() == [], listed


@needs_ray
def test_options_that_do_not_go_together_are_refused_before_any_work(cli, mlp_recipe, store: Path) -> None:
    recipe = mlp_recipe("lone")
    cases = [
        (["--ray-address", "auto"], "--ray-address go with --executor ray"),
        (["--ray-pin-gpu"], "--ray-pin-gpu go with --executor ray"),
        (["--executor", "ray", "--fail-fast"], "--fail-fast builds one recipe at a time"),
        (["--executor", "ray", "--ray-pin-gpu"], "--ray-pin-gpu builds on a node of the target's GPU type"),
    ]
    for args, said in cases:
        run = cli("build", recipe, "--store", store, *args, "--json")
        assert run.code == 2, (args, run)
        assert said in run.stderr, (args, run)
    assert not store.exists()


def test_the_python_api_names_its_executors(tmp_path: Path) -> None:
    import trtforge

    with pytest.raises(trtforge.BadInputError, match="executor 'dask' is not one of: local, ray"):
        trtforge.build(tmp_path / "x.yaml", store=tmp_path / "s", executor="dask")  # type: ignore[arg-type]
    with pytest.raises(trtforge.BadInputError, match="go with executor='ray'"):
        trtforge.build(tmp_path / "x.yaml", store=tmp_path / "s", ray_address="auto")


def test_a_task_given_other_gpus_gets_a_fresh_build_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray names a task's GPUs in CUDA_VISIBLE_DEVICES, per task: the build worker a Ray worker keeps
    serves the tasks given the same GPUs, and one given others builds in a worker started with them."""
    from trtforge.stages import ray_tasks

    monkeypatch.setattr(ray_tasks, "_pool", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    first = ray_tasks._process_pool()
    assert ray_tasks._process_pool() is first
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    second = ray_tasks._process_pool()
    assert second is not first and ray_tasks._process_pool() is second
    second.close()


@needs_ray
def test_a_pattern_that_matches_nothing_is_reported_as_a_local_run_reports_it(cli, store: Path) -> None:
    """A glob that names no recipe is answered here, without Ray, and its result is the one a local
    run gives (the Ray executor once dropped its hint)."""
    pattern = str(store.parent / "nowhere" / "*.yaml")
    local = cli("build", pattern, "--store", store, "--json")
    on_ray = cli("build", pattern, "--store", store, "--executor", "ray", "--json")
    assert local.code == on_ray.code == 2, (local, on_ray)
    fields = ("status", "error", "hint", "exit_code", "error_kind")
    [here], [there] = local.json(), on_ray.json()
    assert here["hint"] and {f: there[f] for f in fields} == {f: here[f] for f in fields}, (here, there)
