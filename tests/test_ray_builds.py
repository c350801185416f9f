"""`build --executor ray` (issue 27): misses become Ray tasks on the nodes that fit their targets.

Real Ray: a local instance started by `trtforge build`, or ``ray.cluster_utils.Cluster`` with two
nodes carrying different ``accelerator_type:*`` resources (custom resources: no GPUs needed). Full
TensorRT is not installable here, so a task that must land on a node of a GPU type is a TensorRT-RTX
build pinned to its target's GPU type (``--ray-pin-gpu``): the same request a full-TensorRT task
makes, less the GPU itself (tests/test_ray_executor.py checks each target's request).

A node started with ``node_ip_address=127.0.0.2`` is, to Ray, a node on another machine: that is
how the refusals of a store other machines cannot reach, and the single flight across machines
(PostgreSQL's advisory lock; S3 blobs on a moto server; each node its own store directory), are
shown on one host. Slow (Ray starts in seconds, not milliseconds): run by .ci/run (`pytest -m slow`).
"""

from __future__ import annotations

import json
import os
import select
import signal
import sqlite3
import uuid
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.procs import CrashPoint, assert_store_clean, finish, start_build, wait_gone
from tests.test_s3_store import s3_endpoint  # noqa: F401 - a fixture, used below

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_spec("ray") is None, reason="ray is not installed (the 'ray' extra; .ci/run installs it)"),
]

RECIPE = """\
name: {name}
model:
  onnx: models/{name}.onnx
backend: tensorrt_rtx
profiles:
  - x: {{min: [1, 4], opt: [2, 4], max: [4, 4]}}
{extra}"""
FLEET = """\
targets:
  - {{name: l4, gpu: NVIDIA L4, flavor: tensorrt_rtx, trt: "{trt}"}}
  - {{name: a10g, gpu: NVIDIA A10G, flavor: tensorrt_rtx, trt: "{trt}"}}
{more}"""
A100 = '  - {{name: a100, gpu: "NVIDIA A100-SXM4-80GB", flavor: tensorrt_rtx, trt: "{trt}"}}\n'
NODE = {"num_cpus": 1, "object_store_memory": 80 << 20}  # Ray's floor is 75 MiB: this machine is small


def _rtx_release() -> str:
    from trtforge.rules.flavors import installed_backend

    backend = installed_backend("tensorrt_rtx")
    assert backend is not None, "TensorRT-RTX is installed by the rtx extra"
    return ".".join(backend.version.split(".")[:3])


def _recipe(folder: Path, name: str, *, seed: int = 0, ccs: str | None = None) -> Path:
    from tests import onnx_models

    onnx_models.save(onnx_models.mlp(seed), folder / "models" / f"{name}.onnx")
    extra = f"compatibility:\n  compute_capabilities: [{ccs}]\n" if ccs else ""
    path = folder / f"{name}.yaml"
    path.write_text(RECIPE.format(name=name, extra=extra))
    return path


def _fleet(folder: Path, *, a100: bool = False) -> Path:
    trt = _rtx_release()
    path = folder / "fleet.yaml"
    path.write_text(FLEET.format(trt=trt, more=A100.format(trt=trt) if a100 else ""))
    return path


@pytest.fixture
def two_types(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """Two Ray nodes on this machine: one offers accelerator_type:L4, the other A10G. (address, type -> node id)"""
    yield from _cluster(tmp_path, other_ip=None)


def _cluster(tmp_path: Path, *, other_ip: str | None, env: dict[str, dict[str, str]] | None = None):
    from ray.cluster_utils import Cluster

    env = env or {}
    path = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    head = {**NODE, "resources": {"accelerator_type:L4": 1}, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={**head, "env_vars": {**path, **env.get("L4", {})}})
    try:
        other = {**NODE, "resources": {"accelerator_type:A10G": 1}, "env_vars": {**path, **env.get("A10G", {})}}
        node = cluster.add_node(**other, **({"node_ip_address": other_ip} if other_ip else {}))
        yield cluster.address, {"L4": cluster.head_node.node_id, "A10G": node.node_id}
    finally:
        cluster.shutdown()


def _rows(store: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(store / "catalog.sqlite") as conn:
        return conn.execute("SELECT name, build_key FROM artifacts ORDER BY name").fetchall()


def _by_target(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["name"], r["target_request"]["label"]): r for r in results}


def test_pinned_tasks_run_on_the_node_of_their_gpu_type_and_an_absent_type_is_refused_up_front(
    two_types: tuple[str, dict[str, str]], tmp_path: Path, store: Path, cli
) -> None:
    """Each recipe builds for one capability; the fleet names L4, A10G and A100 machines and no node
    offers an A100. The L4 recipe's task runs on the L4 node, the A10G recipe's on the A10G node; the
    A100 target fails at once with the reason (it is never a task left pending), the rest go on."""
    address, node_of = two_types
    recipes = [
        _recipe(tmp_path / "r", "on-l4", seed=1, ccs='"8.9"'),
        _recipe(tmp_path / "r", "on-a10g", seed=2, ccs='"8.6"'),
    ]
    recipes.append(_recipe(tmp_path / "r", "on-a100", seed=3, ccs='"8.0"'))
    fleet = _fleet(tmp_path, a100=True)
    argv = [*recipes, "--fleet", fleet, "--store", store, "--executor", "ray", "--ray-address", address]
    run = cli("build", *argv, "--ray-pin-gpu", "--json")

    assert run.code == 2, run  # the A100 target: bad input (a GPU type the cluster lacks)
    results = _by_target(run.json())
    assert results["on-l4", "l4"]["status"] == "built" and results["on-l4", "l4"]["node"]["node_id"] == node_of["L4"]
    built = results["on-a10g", "a10g"]
    assert built["status"] == "built" and built["node"]["node_id"] == node_of["A10G"], built
    refused = results["on-a100", "a100"]
    assert refused["status"] == "failed" and refused["error_kind"] == "bad_input", refused
    assert refused["error"] == "no node offers accelerator_type:A100" and refused["node"] is None
    assert "no node offers accelerator_type:A100: on-a100 for a100 is not built" in run.stderr
    skipped = [
        r for key, r in results.items() if key not in {("on-l4", "l4"), ("on-a10g", "a10g"), ("on-a100", "a100")}
    ]
    assert len(skipped) == 6 and all(r["status"] == "skipped" and r["node"] is None for r in skipped)
    assert [name for name, _ in _rows(store)] == ["on-a10g", "on-l4"]

    # again, for the targets the cluster has: every build is a hit, answered here (no task, no node)
    again = cli("build", *recipes[:2], *argv[3:], "--target", "l4", "--target", "a10g", "--json")
    assert again.code == 0, again
    statuses = {key: r["status"] for key, r in _by_target(again.json()).items()}
    assert statuses == {
        ("on-l4", "l4"): "cached",
        ("on-l4", "a10g"): "skipped",
        ("on-a10g", "l4"): "skipped",
        ("on-a10g", "a10g"): "cached",
    }
    assert all(r["node"] is None for r in again.json())


def test_unpinned_rtx_tasks_use_any_node_and_the_results_match_a_local_build(
    two_types: tuple[str, dict[str, str]], tmp_path: Path, cli
) -> None:
    """Unpinned TensorRT-RTX tasks ask for a CPU only: both nodes take them. Each result has the
    fields of a local build, and the keys are those a local build computes."""
    address, node_of = two_types
    recipes = [_recipe(tmp_path / "r", f"any{i}", seed=10 + i) for i in range(4)]
    on_ray = cli(
        "build", *recipes, "--store", tmp_path / "ray", "--executor", "ray", "--ray-address", address, "--json"
    )
    here = cli("build", *recipes, "--store", tmp_path / "here", "--json")
    assert on_ray.code == 0 and here.code == 0, (on_ray, here)
    assert [set(r) for r in on_ray.json()] == [set(r) for r in here.json()]
    assert [(r["name"], r["build_key"], r["status"]) for r in on_ray.json()] == [
        (r["name"], r["build_key"], r["status"]) for r in here.json()
    ]
    assert {r["node"]["node_id"] for r in on_ray.json()} <= set(node_of.values())
    assert all(r["node"] is None for r in here.json())


def test_the_python_api_builds_on_ray_and_hears_each_result_as_it_is_ready(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`trtforge.build(..., executor="ray")` (a local instance): a hit answered here (no node), the
    misses built by tasks; ``on_done`` hears every result once, and the list keeps the recipes' order."""
    import trtforge

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    recipes = [_recipe(tmp_path / "r", f"api{i}", seed=45 + i) for i in range(3)]
    [hit] = trtforge.build(recipes[1], store=store)
    heard: list[Any] = []
    results = trtforge.build(recipes, store=store, jobs=2, executor="ray", on_done=heard.append)
    assert [r.recipe for r in results] == [str(p) for p in recipes]
    assert [r.status for r in results] == ["built", "cached", "built"], results
    assert results[1].node is None and results[1].artifact_id == hit.artifact_id
    assert all(r.node is not None and r.node["executor"] == "ray" for r in (results[0], results[2]))
    assert sorted(map(id, heard)) == sorted(map(id, results))
    assert len(_rows(store)) == 3


def _holder_of(store: Path, worker: int) -> tuple[str, int]:
    """The build key and holder pid of the build lock naming build worker ``worker``."""
    for lock in (store / "locks").glob("*.lock"):
        written = json.loads(lock.read_text() or "{}")
        if written.get("worker") == worker:
            return lock.stem, written["pid"]
    raise AssertionError(f"no build lock names worker {worker}")


def test_a_task_whose_ray_worker_is_killed_mid_build_is_retried_and_the_store_stays_clean(
    tmp_path: Path, store: Path, cli
) -> None:
    """The Ray worker running a task (it holds the key's lock; its build worker is inside TensorRT's
    build) gets SIGKILL: Ray runs the task again in another worker, which builds the key. Nothing of
    the lost attempt stays: its build worker exits, no temp file, no lock, fsck is clean."""
    recipes = [_recipe(tmp_path / "r", f"k{i}", seed=20 + i) for i in range(2)]
    point = CrashPoint(tmp_path / "cp", "trt-building")
    batch = start_build(*recipes, "--store", store, "--executor", "ray", "--jobs", "2", "--json", env=point.env)
    builder = point.wait_reached(batch)
    key, task = _holder_of(store, builder)
    assert task not in (batch.pid, builder)  # the task runs in a Ray worker, not in `trtforge build`
    os.kill(task, signal.SIGKILL)
    code, results, err = finish(batch)
    point.close()

    assert code == 0 and results is not None, err[-3000:]
    assert [r["status"] for r in results] == ["built", "built"], results
    [retried] = [r for r in results if r["build_key"] == key]
    assert retried["node"]["pid"] != task and retried["error_kind"] is None
    assert wait_gone(builder, 60), "the lost task's build worker outlived it"
    assert_store_clean(store, cli)
    assert sorted(k for _, k in _rows(store)) == sorted(r["build_key"] for r in results)


def test_a_native_crash_is_reported_once_and_not_retried(tmp_path: Path, store: Path, cli) -> None:
    """The build worker dies of SIGSEGV inside TensorRT: the task returns a `crashed` result, which Ray
    does not retry (a retry would pass the crash point, claimed by the first arrival, and build it)."""
    recipe = _recipe(tmp_path / "r", "segv", seed=30)
    point = CrashPoint(tmp_path / "cp", "trt-building")
    batch = start_build(recipe, "--store", store, "--executor", "ray", "--json", env=point.env)
    builder = point.wait_reached(batch)
    os.kill(builder, signal.SIGSEGV)
    code, results, err = finish(batch)
    point.close()

    assert code == 1 and results is not None, err[-3000:]
    [crashed] = results
    assert crashed["status"] == "failed" and crashed["error_kind"] == "crashed", crashed
    assert "SIGSEGV" in crashed["error"] and crashed["error_detail"]["signal"] == "SIGSEGV"
    assert crashed["node"]["executor"] == "ray" and crashed["artifact_id"] is None
    blobs = [p for p in (store / "blobs").rglob("*") if p.is_file()] if (store / "blobs").exists() else []
    assert blobs == [] and list((store / "locks").glob("*.lock")) == []  # nothing of it stays
    assert not (store / "catalog.sqlite").exists() or _rows(store) == []


def test_timeout_bounds_a_task_and_the_others_build(tmp_path: Path, store: Path, cli) -> None:
    """The first task's build hangs (it waits at the crash point for good): `--timeout` stops it
    there, on the node, as locally (`timed_out`, not retried, nothing left); the other task builds."""
    recipes = [_recipe(tmp_path / "r", f"t{i}", seed=35 + i) for i in range(2)]
    point = CrashPoint(tmp_path / "cp", "trt-building")
    argv = [*recipes, "--store", store, "--executor", "ray", "--jobs", "2", "--timeout", "3", "--json"]
    batch = start_build(*argv, env=point.env)
    point.wait_reached(batch)
    code, results, err = finish(batch)
    point.close()

    assert code == 1 and results is not None, err[-3000:]
    [hung] = [r for r in results if r["status"] == "failed"]
    [fine] = [r for r in results if r["status"] == "built"]
    assert hung["error_kind"] == "timed_out" and "timeout (3 s)" in hung["error"], hung
    assert hung["node"]["executor"] == "ray" and hung["cost"]["wall_seconds"] >= 3
    assert fine["node"]["executor"] == "ray" and fine["error_kind"] is None
    assert_store_clean(store, cli)
    assert [k for _, k in _rows(store)] == [fine["build_key"]]


def test_ray_retries_a_lost_task_a_bounded_number_of_times(
    tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no retries left, a task whose Ray worker is killed is a failed result (`crashed`, "lost"),
    not a run that hangs or dies: the other recipe is built. (Through the Python API's executor.)"""
    import threading

    from trtforge.stages.build import BuildStage
    from trtforge.stages.ray_builds import RayExecutor, RaySettings

    recipes = [_recipe(tmp_path / "r", f"b{i}", seed=40 + i) for i in range(2)]
    point = CrashPoint(tmp_path / "cp", "trt-building")
    for name, value in point.env.items():
        monkeypatch.setenv(name, value)  # the local Ray instance, its workers and their build workers
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    stage = BuildStage(store, jobs=2, executor=RayExecutor(RaySettings(max_retries=0)), notify=lambda _: None)
    results: list[Any] = []
    runner = threading.Thread(target=lambda: results.extend(stage.build_all(recipes)))
    runner.start()
    try:
        builder = point.wait_reached_pid()
        key, task = _holder_of(store, builder)
        os.kill(task, signal.SIGKILL)
    finally:
        runner.join(timeout=300)
        stage.close()
        point.close()
    assert not runner.is_alive()
    by_key = {r.build_key: r for r in results}
    lost = by_key[key]
    assert lost.status == "failed" and lost.error_kind == "crashed" and lost.exit_code == 1
    assert lost.error.startswith("the Ray task was lost 1 times (its worker or node died)"), lost.error
    assert [r.status for r in results if r is not lost] == ["built"]


@pytest.fixture
def two_machines(
    tmp_path: Path,
    s3_endpoint: str,  # noqa: F811 - the fixture imported above
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, dict[str, str]]]:
    """Ray nodes as on two machines: the head at this machine's address (accelerator_type:L4) and a
    node at 127.0.0.2 (A10G), each with its own store directory (TRTFORGE_STORE, as a node's local
    disk) and the test S3 server's settings (a node's environment, as on a cluster)."""
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    roots = {kind: {"TRTFORGE_STORE": str(tmp_path / f"node-{kind.lower()}")} for kind in ("L4", "A10G")}
    yield from _cluster(tmp_path, other_ip="127.0.0.2", env=roots)


def _bucket() -> str:
    import boto3

    name = f"trtforge-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}/team"


def _nothing_written(store: Path) -> bool:
    return not store.exists() or not any(p.is_file() for p in store.rglob("*") if "cache" not in p.parts)


def test_a_cluster_across_machines_refuses_a_sqlite_catalog_before_any_work(
    two_machines: tuple[str, dict[str, str]], tmp_path: Path, store: Path, cli
) -> None:
    """Nodes on another machine cannot share a SQLite file: refused before any task (exit 2), with
    the way out; the same command without --ray-address (one machine, a local instance) is fine."""
    address, _ = two_machines
    recipe = _recipe(tmp_path / "r", "lonely", seed=50)
    run = cli("build", recipe, "--store", store, "--executor", "ray", "--ray-address", address)
    assert run.code == 2, run
    assert "nodes on other machines (127.0.0.2)" in run.stderr and "SQLite file on this machine" in run.stderr
    assert "hint: use a PostgreSQL catalog" in run.stderr and _nothing_written(store)


def test_two_same_key_tasks_on_different_machines_build_once_through_postgresql(
    two_machines: tuple[str, dict[str, str]], postgres_catalog: str, tmp_path: Path, cli
) -> None:
    """Both fleet entries (L4, A10G) share one key (the recipe's capabilities cover both), pinned to
    their GPU types: two tasks, one per node, each node its own store directory, so only the
    catalog's PostgreSQL advisory lock stands between them. The test holds that lock (as another
    runner would) until both tasks wait for it, then lets go: one builds, the other reuses it."""
    from sqlalchemy import create_engine, text

    from trtforge.store.locks import _advisory_id

    address, node_of = two_machines
    recipe = _recipe(tmp_path / "r", "shared", seed=60)
    fleet = _fleet(tmp_path)
    driver = tmp_path / "driver"
    where = {"TRTFORGE_BLOBS": _bucket()}
    on_disk = ["--store", driver, "--catalog", postgres_catalog, "--executor", "ray", "--ray-address", address]
    blobs_only = cli("build", recipe, *on_disk)
    assert blobs_only.code == 2 and "this machine's own disk" in blobs_only.stderr, blobs_only  # blobs refused
    assert _nothing_written(driver)

    common = ["--fleet", fleet, "--store", driver, "--catalog", postgres_catalog]
    planned = cli("plan", recipe, *common, "--json", env=where)
    assert planned.code == 0, planned
    [key] = {entry["build_key"] for entry in planned.json()}
    engine = create_engine(postgres_catalog, isolation_level="AUTOCOMMIT")
    with engine.connect() as held:
        held.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _advisory_id(key)})
        batch = start_build(
            recipe, *common, "--executor", "ray", "--ray-address", address, "--ray-pin-gpu", "--json", env=where
        )
        _until_waiting(held, 2, batch)
        held.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _advisory_id(key)})
    code, results, err = finish(batch)

    assert code == 0 and results is not None, err[-3000:]
    assert sorted(r["status"] for r in results) == ["built", "cached"], results
    assert {r["node"]["node_id"] for r in results} == set(node_of.values())  # one task on each node
    assert len({r["artifact_id"] for r in results}) == 1
    assert "[node 127.0.0.2] waiting for build of shared" in err, err
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM artifacts")).scalar() == 1
    engine.dispose()
    assert (tmp_path / "node-l4" / "locks").is_dir() and (tmp_path / "node-a10g" / "locks").is_dir()
    check = cli("fsck", "--store", driver, "--catalog", postgres_catalog, "--json", env=where)
    assert check.code == 0 and check.json()["ok"], check


def _until_waiting(conn: Any, count: int, proc: Any) -> None:
    """Until ``count`` trtforge sessions have tried the advisory lock this session holds (they wait)."""
    from sqlalchemy import text

    query = text(
        "SELECT count(DISTINCT pid) FROM pg_stat_activity WHERE application_name LIKE 'trtforge pid %' "
        "AND (query LIKE '%pg_try_advisory_lock(%' OR query LIKE '%FROM pg_locks%')"
    )
    for _ in range(3000):
        if conn.execute(query).scalar() >= count:
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        select.select([], [], [], 0.1)  # a bounded poll of the database, not a wait for luck
    raise AssertionError(f"{count} tasks did not come to wait for the lock")
