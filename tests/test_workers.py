"""Builds run in worker processes: a worker's crash, hang or OOM kill costs one result, never the batch.

Faults are injected from outside, as on a user's machine: the test finds the worker building one
recipe of a batch (it stops at the `trt-building` crash point, inside TensorRT's build, and reports
its pid; the build lock names it too) and sends it a signal. Issue 24: on an H200, TensorRT-RTX
aborted the whole `trtforge build` on three corpus models and every result of the batch was lost.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import onnx_models
from tests.procs import CrashPoint, assert_store_clean, finish, start_build, wait_gone
from trtforge.core.crashpoints import CRASHPOINT_ENV


def _rows(store: Path) -> list[tuple[str, str]]:
    if not (store / "catalog.sqlite").exists():
        return []
    with sqlite3.connect(store / "catalog.sqlite") as conn:
        return conn.execute("SELECT id, build_key FROM artifacts").fetchall()


@pytest.mark.slow  # fault injection (.ci/run: pytest -m slow)
@pytest.mark.parametrize("signum", [signal.SIGABRT, signal.SIGSEGV, signal.SIGKILL], ids=lambda s: s.name)
def test_a_worker_killed_mid_build_costs_that_recipe_alone(
    signum: signal.Signals, mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    """SIGABRT is what TensorRT-RTX raised on an H200, SIGSEGV a native crash, SIGKILL what the OOM
    killer sends. Fails on 843520b: TensorRT ran in the `trtforge build` process itself, so the
    signal killed the whole batch: no JSON at all, every result lost (3-4 s each on a quiet machine)."""
    recipes = [mlp_recipe(f"w{i}", seed=40 + i) for i in range(3)]
    point = CrashPoint(tmp_path / "cp", "trt-building")
    batch = start_build(*recipes, "--store", store, "--json", env=point.env)
    victim = point.wait_reached(batch)  # a worker, inside TensorRT's build of one of the recipes
    os.kill(victim, signum)
    code, results, err = finish(batch)
    point.close()

    assert results is not None, f"no JSON (exit {code}): {err[-3000:]}"
    assert code == 1, err
    assert [r["name"] for r in results] == ["w0", "w1", "w2"]  # complete, in recipe order
    [crashed] = [r for r in results if r["status"] == "failed"]
    assert crashed["error_kind"] == "crashed" and signum.name in crashed["error"], crashed
    assert "\n" not in crashed["error"] and crashed["error_detail"]["signal"] == signum.name
    assert any(line.startswith("[TensorRT ") for line in crashed["error_detail"]["log_tail"]), crashed
    assert crashed["cost"]["wall_seconds"] > 0 and crashed["artifact_id"] is None
    if signum == signal.SIGKILL:
        assert "out-of-memory killer" in crashed["error"]  # the usual sender of an unexplained SIGKILL
    built = [r for r in results if r["status"] == "built"]
    assert len(built) == 2 and all(r["error_kind"] is None and r["cost"]["cpu_seconds"] > 0 for r in built)
    assert sorted(key for _, key in _rows(store)) == sorted(r["build_key"] for r in built)
    assert_store_clean(store, cli)

    again = cli("build", *recipes, "--store", store, "--json")  # the crashed recipe just builds now
    assert again.code == 0, again
    assert {r["name"]: r["status"] for r in again.json()} == {
        r["name"]: "built" if r is crashed else "cached" for r in results
    }


@pytest.mark.slow  # fault injection (.ci/run: pytest -m slow)
def test_the_build_lock_names_its_worker_and_a_waiter_builds_after_the_crash(
    mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path
) -> None:
    """`<store>/locks/<key>.lock` is the pid file of a running build: the holder and its worker.
    Another process waiting for the key says whom it waits for, and builds the key itself when the
    holder's worker crashes (single flight holds across processes and their workers)."""
    recipe = mlp_recipe("locked")
    point = CrashPoint(tmp_path / "cp", "trt-building")
    holder = start_build(recipe, "--store", store, "--json", env=point.env)
    worker = point.wait_reached(holder)
    [lock] = list((store / "locks").glob("*.lock"))
    written = json.loads(lock.read_text())
    assert written["pid"] == holder.pid and written["worker"] == worker != holder.pid

    waiter = start_build(recipe, "--store", store, "--json")
    line = waiter.stderr.readline()
    assert f"by pid {holder.pid} on host " in line and f"(build worker pid {worker})" in line, line
    os.kill(worker, signal.SIGSEGV)
    code, [crashed], err = finish(holder)
    point.close()
    assert code == 1 and crashed["error_kind"] == "crashed" and "SIGSEGV" in crashed["error"], err
    code, [built], err = finish(waiter)
    assert code == 0 and built["status"] == "built", err
    assert [key for _, key in _rows(store)] == [built["build_key"]] == [crashed["build_key"]]


@pytest.mark.slow  # fault injection (.ci/run: pytest -m slow)
def test_a_build_past_its_timeout_is_stopped_and_the_rest_build(
    mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    """The first build to start hangs (it waits at the crash point forever); `--timeout` stops it."""
    recipes = [mlp_recipe("one", seed=60), mlp_recipe("two", seed=61)]
    point = CrashPoint(tmp_path / "cp", "trt-building")
    batch = start_build(*recipes, "--store", store, "--json", "--jobs", "1", "--timeout", "3", env=point.env)
    point.wait_reached(batch)
    code, results, err = finish(batch)
    point.close()
    assert code == 1, err
    [hung] = [r for r in results if r["status"] == "failed"]
    [fine] = [r for r in results if r["status"] == "built"]
    assert hung["error_kind"] == "timed_out" and fine["error_kind"] is None, results
    assert "timeout (3 s)" in hung["error"] and hung["cost"]["wall_seconds"] >= 3
    assert_store_clean(store, cli)

    # --timeout is not part of the build key: without it, the same key builds
    again = cli("build", hung["recipe"], "--store", store, "--json")
    assert again.code == 0 and again.json()[0]["build_key"] == hung["build_key"], again
    assert again.json()[0]["status"] == "built"


def test_a_worker_does_not_outlive_its_parent(mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path) -> None:
    """`trtforge build` killed (SIGKILL: no cleanup of its own) while its worker builds: the worker goes too."""
    point = CrashPoint(tmp_path / "cp", "trt-building")
    batch = start_build(mlp_recipe("orphan"), "--store", store, "--json", env=point.env)
    worker = point.wait_reached(batch)
    batch.send_signal(signal.SIGKILL)
    assert batch.wait() == -signal.SIGKILL
    try:
        assert wait_gone(worker, 30), f"worker {worker} outlived its parent"
    finally:
        point.close()
        if not wait_gone(worker, 0):
            os.kill(worker, signal.SIGKILL)


def test_jobs_keep_recipe_order_build_each_key_once_and_name_each_failure(
    mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    recipes = [mlp_recipe(f"j{i}", seed=80 + i) for i in range(4)]
    twin = recipes[1].with_name("j1-twin.yaml")  # the same recipe in another file: the same build key
    twin.write_text(recipes[1].read_text())
    broken = mlp_recipe("broken")
    onnx_models.save(onnx_models.unsupported_op(), broken.parent / "models" / "broken.onnx")
    bad = recipes[0].with_name("bad.yaml")
    bad.write_text("name: bad\nmodel: {onnx: missing.onnx}\n")
    arguments = [recipes[0], recipes[1], twin, broken, str(tmp_path / "none-*.yaml"), bad, recipes[2], recipes[3]]

    run = cli("build", *arguments, "--store", store, "--json", "--jobs", "3")
    assert run.code == 2, run  # bad input wins over a failed build
    results = run.json()
    assert [r["recipe"] for r in results] == [str(a) for a in arguments]
    kinds = {r["recipe"]: r["error_kind"] for r in results}
    assert kinds[str(broken)] == "build_failed" and kinds[str(bad)] == "bad_input"
    assert kinds[str(tmp_path / "none-*.yaml")] == "bad_input"
    twins = sorted(r["status"] for r in results if r["recipe"] in (str(recipes[1]), str(twin)))
    assert twins == ["built", "cached"]  # one builds, the other waits for it and reuses it
    built_keys = [key for _, key in _rows(store)]
    assert len(built_keys) == len(set(built_keys)) == 4
    assert all(r["status"] in ("built", "cached") for r in results if r["recipe"] in map(str, recipes))


def test_build_cost_is_on_the_result_the_artifact_and_show(mlp_recipe: Callable[..., Path], store: Path, cli) -> None:
    built = cli("build", mlp_recipe("costly"), "--store", store, "--json")
    assert built.code == 0, built
    [result] = built.json()
    cost = result["cost"]
    assert cost["wall_seconds"] > 0 and cost["cpu_seconds"] > 0 and cost["peak_rss_mib"] > 0
    shown = cli("show", result["artifact_id"], "--store", store, "--json")
    assert shown.json()["details"]["cost"] == cost
    text = cli("show", result["artifact_id"], "--store", store)
    assert f"{cost['peak_rss_mib']} MiB peak" in text.stdout, text
    hit = cli("build", mlp_recipe("costly"), "--store", store, "--json").json()[0]
    assert hit["status"] == "cached" and hit["cost"] is None  # a hit builds nothing, in no worker


def test_a_hit_starts_no_worker(mlp_recipe: Callable[..., Path], store: Path, cli) -> None:
    recipes = [mlp_recipe(f"h{i}", seed=90 + i) for i in range(3)]
    assert cli("build", *recipes, "--store", store, "--json").code == 0
    from trtforge.stages.build import BuildStage

    stage = BuildStage(store, jobs=2)
    try:
        results = stage.build_all(recipes)
        assert [r.status for r in results] == ["cached"] * 3
        assert stage._pool is None  # no worker was started, not even a pool made
    finally:
        stage.close()


def _job(recipe: Path) -> Any:
    from trtforge.backend.worker import BuildJob
    from trtforge.resolution.resolve import load_effective, resolve

    resolution = resolve(load_effective(recipe))
    return BuildJob(resolution.backend, resolution.recipe, resolution.loaded.model_path)


def test_one_build_in_a_worker_of_its_own(mlp_recipe: Callable[..., Path]) -> None:
    """The API a task on a cluster calls: one job, one worker, the plan and the cost back."""
    from trtforge.backend.pool import build_once

    done = build_once(_job(mlp_recipe("once")))
    output = done.unwrap()
    assert output.plan_view.nbytes > 0 and output.io_tensors and done.cost.cpu_seconds > 0


def test_terminate_stops_a_running_build_at_once(
    mlp_recipe: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent can stop a build promptly from another thread (Ctrl-C, a cluster's cancel)."""
    from trtforge.backend.pool import WorkerPool
    from trtforge.core.errors import WorkerCrashedError

    point = CrashPoint(tmp_path / "cp", "trt-building")
    monkeypatch.setenv(CRASHPOINT_ENV, point.env[CRASHPOINT_ENV])  # the worker inherits it
    job = _job(mlp_recipe("stopped"))
    outcome: list[Any] = []
    with WorkerPool(1) as pool:
        thread = threading.Thread(target=lambda: outcome.append(pool.build(job)))
        thread.start()
        worker = point.wait_reached_pid()
        assert pool.pids() == [worker]
        pool.terminate("stopped by the test")
        thread.join(timeout=10)
        assert not thread.is_alive()
    point.close()
    [done] = outcome
    assert isinstance(done.error, WorkerCrashedError) and "stopped by the test" in done.error.message
    assert wait_gone(worker, 10)


def test_the_python_api_builds_with_jobs_and_a_timeout(mlp_recipe: Callable[..., Path], store: Path) -> None:
    import trtforge

    recipes = [mlp_recipe(f"api{i}", seed=70 + i) for i in range(3)]
    heard: list[str] = []
    results = trtforge.build(recipes, store=store, jobs=2, timeout=120, on_done=lambda r: heard.append(r.name))
    assert [r.name for r in results] == ["api0", "api1", "api2"] and all(r.status == "built" for r in results)
    assert sorted(heard) == ["api0", "api1", "api2"]
    with pytest.raises(trtforge.BadInputError):
        trtforge.build(recipes, store=store, timeout=0)


class _FailingBar:
    """A progress sink that breaks at TensorRT's first phase (as a broken terminal might)."""

    def phase_start(self, name: str, parent: str | None, steps: int) -> None:
        raise RuntimeError("the progress bar broke")

    def step(self, name: str, step: int) -> None: ...

    def phase_finish(self, name: str) -> None: ...


def test_an_error_in_the_parent_mid_build_leaves_no_worker_mid_job(mlp_recipe: Callable[..., Path]) -> None:
    """Whatever interrupts the parent while a worker builds (Ctrl-C, a failing callback) kills that
    worker, so the next job never reads the frames of the one before."""
    from dataclasses import replace

    from trtforge.backend.pool import WorkerPool

    with WorkerPool(1) as pool:
        with pytest.raises(RuntimeError, match="progress bar broke"):
            pool.build(replace(_job(mlp_recipe("first")), progress=True), progress=_FailingBar())
        assert pool.pids() == []  # killed, not left building
        done = pool.build(_job(mlp_recipe("second", seed=3)))
        assert done.error is None and done.output is not None and done.output.io_tensors[0]["name"] == "x"


@pytest.mark.slow  # fault injection (.ci/run: pytest -m slow)
def test_a_builds_peak_memory_is_its_own_in_a_reused_worker(tmp_path: Path, store: Path, cli) -> None:
    """A small model built right after a big one in the same worker (--jobs 1, in order) reports
    its own peak, not the big one's: the worker resets its high-water mark at each build, and the
    parent's samples count from then (on 843520b no build reported a cost at all)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).standard_normal((1024, 24 * 1024), dtype=np.float32)  # 96 MiB
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", weights.shape[1]])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    onnx_models.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "big.onnx")
    onnx_models.save(onnx_models.mlp(1), tmp_path / "small.onnx")
    recipes = [tmp_path / "big.yaml", tmp_path / "small.yaml"]
    for recipe, width in zip(recipes, (1024, 4), strict=True):
        profile = f"x: {{min: [1, {width}], opt: [1, {width}], max: [2, {width}]}}"
        recipe.write_text(f"name: {recipe.stem}\nmodel: {{onnx: {recipe.stem}.onnx}}\nprofiles: [{{{profile}}}]\n")
    run = cli("build", *recipes, "--store", store, "--jobs", "1", "--fail-fast", "--json")
    assert run.code == 0, run
    big, small = (r["cost"]["peak_rss_mib"] for r in run.json())
    assert small < big - 150, (big, small)


def test_a_worker_that_cannot_start_is_that_builds_failure(
    mlp_recipe: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that dies before it is ready (here: a broken module on its path) fails the build
    with what it printed, instead of hanging or killing the caller."""
    from trtforge.backend.pool import build_once
    from trtforge.core.errors import WorkerCrashedError

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "queue.py").write_text("raise ImportError('this queue module is broken on purpose')\n")
    job = _job(mlp_recipe("unborn"))
    monkeypatch.setenv("PYTHONPATH", str(broken))  # the worker's environment; this process has its queue
    done = build_once(job)
    assert isinstance(done.error, WorkerCrashedError), done
    assert "exited with code 1 before it was ready to build" in done.error.message
    assert any("broken on purpose" in line for line in done.error.detail["log_tail"])


def _parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _children_of(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").glob("*") for c in (task / "children").read_text().split()]


@pytest.mark.slow  # fault injection (.ci/run: pytest -m slow)
def test_with_jobs_a_build_process_that_dies_costs_its_recipe_alone(
    mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    """`--jobs 2`: each recipe is worked on by a build process (`trtforge-stage`, a child of `trtforge
    build`) whose worker builds it. That process killed (SIGKILL, as the OOM killer sends it) is its
    recipe's `crashed` result, its worker goes with it, the other recipes are built, and the same
    command then builds the lost one (the lock it held is taken over)."""
    recipes = [mlp_recipe(f"p{i}", seed=70 + i) for i in range(3)]
    point = CrashPoint(tmp_path / "cp", "trt-building")
    batch = start_build(*recipes, "--store", store, "--json", "--jobs", "2", env=point.env)
    worker = point.wait_reached(batch)
    process = _parent_of(worker)
    assert Path(f"/proc/{process}/comm").read_text().strip() == "trtforge-stage"
    assert _parent_of(process) == batch.pid
    os.kill(process, signal.SIGKILL)
    code, results, err = finish(batch)
    point.close()

    assert results is not None, f"no JSON (exit {code}): {err[-3000:]}"
    assert code == 1 and [r["recipe"] for r in results] == [str(r) for r in recipes], err
    [lost] = [r for r in results if r["status"] == "failed"]
    assert lost["error_kind"] == "crashed" and f"build process (pid {process}) was killed by SIGKILL" in lost["error"]
    assert wait_gone(worker, 30), f"worker {worker} outlived its build process"
    built = [r for r in results if r["status"] == "built"]
    assert len(built) == 2 and sorted(key for _, key in _rows(store)) == sorted(r["build_key"] for r in built)

    again = cli("build", *recipes, "--store", store, "--json", "--jobs", "2")
    assert again.code == 0, again
    assert [r["status"] for r in again.json()] == ["built" if r is lost else "cached" for r in results]
    assert_store_clean(store, cli)


@pytest.mark.slow  # fault injection (.ci/run: pytest -m slow)
def test_with_jobs_build_processes_do_not_outlive_their_parent(
    mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path
) -> None:
    """`trtforge build --jobs 2` killed (SIGKILL: no cleanup of its own) mid-batch: its build
    processes, and the worker of the build under way, go too, quietly (nobody is left to report to)."""
    recipes = [mlp_recipe(f"o{i}", seed=90 + i) for i in range(3)]
    point = CrashPoint(tmp_path / "cp", "trt-building")
    batch = start_build(*recipes, "--store", store, "--json", "--jobs", "2", env=point.env)
    worker = point.wait_reached(batch)
    left = [*_children_of(batch.pid), worker]
    batch.send_signal(signal.SIGKILL)
    assert batch.wait() == -signal.SIGKILL
    try:
        assert [pid for pid in left if not wait_gone(pid, 30)] == []
    finally:
        point.close()
        for pid in left:
            if not wait_gone(pid, 0):
                os.kill(pid, signal.SIGKILL)
    assert batch.stderr is not None
    said = batch.stderr.read()  # the build processes wrote here too, up to their end
    assert "Traceback" not in said and "Exception in thread" not in said, said
