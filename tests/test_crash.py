"""SIGKILL a real build at each crash point: nothing partial is visible, the next run just works."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.procs import CrashPoint, finish, kill_at, start, start_build, trtforge_argv
from trtforge.core.crashpoints import BUILD_POINTS
from trtforge.stages.maintenance import GcPolicy, execute_gc, plan_gc
from trtforge.store import open_store
from trtforge.store.blobs import BlobStore

pytestmark = pytest.mark.slow  # fault injection: processes killed at every crash point (.ci/run: pytest -m slow)


def _rows(store: Path) -> list[tuple[str, str]]:
    if not (store / "catalog.sqlite").exists():
        return []
    with sqlite3.connect(store / "catalog.sqlite") as conn:
        return conn.execute("SELECT id, plan_sha256 FROM artifacts").fetchall()


def _temp_files(store: Path) -> list[Path]:
    return [p for p in (store / "blobs").rglob(".tmp-*")] if (store / "blobs").exists() else []


@pytest.mark.parametrize("point", BUILD_POINTS)
def test_kill_at_crash_point_leaves_a_usable_store(
    point: str, mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    recipe = mlp_recipe("crashy")
    kill_at(point, tmp_path / "cp", trtforge_argv("build", recipe, "--store", store, "--json"))

    assert _rows(store) == []  # no artifact is visible from a build that did not finish
    if point == "blob-temp-written":
        assert len(_temp_files(store)) == 1  # the dead writer's partial file, until the next command

    code, data, err = finish(start_build(recipe, "--store", store, "--json"))
    assert code == 0 and data[0]["status"] == "built", err
    assert _temp_files(store) == []
    assert list((store / "locks").glob("*.lock")) == []
    blobs = BlobStore(store)
    for _artifact_id, sha in _rows(store):
        assert blobs.verify(sha)
    check = cli("fsck", "--store", store, "--json")
    assert check.code == 0 and check.json()["ok"] and check.json()["missing"] == [], check


def test_kill_gc_between_rows_and_files_leaves_only_unreferenced_blobs(
    mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    built = cli("build", mlp_recipe("a"), mlp_recipe("b", seed=1), "--store", store, "--json")
    assert built.code == 0, built
    kill_at("gc-rows-deleted", tmp_path / "cp", trtforge_argv("gc", "--keep-last", "0", "--store", store))

    assert _rows(store) == []  # the referrers went first...
    check = cli("fsck", "--store", store, "--json").json()
    assert check["ok"] and check["missing"] == [] and len(check["orphans"]) == 2  # ...so nothing dangles
    opened = open_store(store)
    try:
        result = execute_gc(opened, plan_gc(opened, GcPolicy(blob_grace_s=0)))
    finally:
        opened.close()
    assert result["blob_files_removed"] == 2
    assert cli("fsck", "--store", store, "--json").json()["blobs_checked"] == 0


def test_builders_carry_on_while_others_are_killed_mid_build(
    mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    """One victim per crash point holds a key (and, at catalog-uncommitted, SQLite's write lock)
    while 8 builders work through overlapping recipes; the victims are killed; nothing is lost."""
    recipes = [mlp_recipe(f"mix{i}", seed=200 + i) for i in range(10)]
    victims = []
    for index, point in enumerate(BUILD_POINTS):
        crash = CrashPoint(tmp_path / f"cp{index}", point)
        victim = start_build(recipes[index], "--store", store, "--json", env=crash.env)
        crash.wait_reached(victim)
        victims.append((victim, crash))
    batches = [[recipes[(p + j) % len(recipes)] for j in range(5)] for p in range(8)]  # covers every recipe
    builders = [start_build(*batch, "--store", store, "--json") for batch in batches]
    for victim, crash in victims:
        victim.send_signal(signal.SIGKILL)
        assert victim.wait() == -signal.SIGKILL
        crash.close()
    outcomes = [finish(b) for b in builders]
    assert all(code == 0 for code, _, _ in outcomes), [err[-2000:] for _, _, err in outcomes]

    final = cli("build", *recipes, "--store", store, "--json")
    assert final.code == 0 and all(r["status"] == "cached" for r in final.json()), final
    rows = _rows(store)
    assert len(rows) == len(recipes)  # one artifact per key: no duplicates, none lost
    assert {r["artifact_id"] for r in final.json()} == {row_id for row_id, _ in rows}
    assert _temp_files(store) == [] and list((store / "locks").glob("*.lock")) == []
    check = cli("fsck", "--store", store, "--json")
    assert check.code == 0 and check.json()["missing"] == [] and check.json()["corrupt"] == [], check


@pytest.mark.parametrize("point", ["import-blobs-stored", "import-uncommitted"])
def test_kill_import_leaves_nothing_half_imported(point: str, cli, example_recipe: Path, tmp_path: Path) -> None:
    source = tmp_path / "source"
    [built] = cli("build", example_recipe, "--store", source, "--json").json()
    bundle = tmp_path / "engines.tar"
    assert cli("export", built["artifact_id"], "-o", bundle, "--store", source).code == 0
    target = tmp_path / "target"
    assert cli("list", "--store", target, "--json").json() == []  # an empty catalog already exists

    kill_at(point, tmp_path / "cp", trtforge_argv("import", bundle, "--store", target, "--json"))

    assert _rows(target) == []  # the transaction never committed: no artifact is visible
    again = cli("import", bundle, "--store", target, "--json")
    assert again.code == 0 and again.json()["imported"] == [built["artifact_id"]], again
    assert _rows(target) == [(built["artifact_id"], built["plan_sha256"])]
    assert not list((target / "tmp").iterdir())  # the dead import's work dir is gone too
    check = cli("fsck", "--store", target, "--json")
    assert check.code == 0 and check.json()["ok"], check


def test_gc_and_a_build_reusing_its_blob_interleaved_never_lose_the_plan(
    mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    """gc stops right after its last look at the blob rows; a build of the same plan then reuses
    the blob gc is about to delete. Whatever the order after that, the build's row must end up
    pointing at a blob that exists.

    Fails on 55eb6bf: the build reused (touched) the blob and committed its row while gc was past
    its re-check, then gc deleted the file: fsck reported the new artifact's plan missing.
    """
    recipe = mlp_recipe("reuse")
    first = cli("build", recipe, "--store", store, "--json")
    assert first.code == 0, first
    plan = Path(first.json()[0]["plan_path"])
    long_ago = time.time() - 7200  # built long ago: past gc's grace for recently used blobs
    os.utime(plan, (long_ago, long_ago))

    point = CrashPoint(tmp_path / "cp", "gc-blobs-rechecked")
    gc = start(trtforge_argv("gc", "--keep-last", "0", "--store", store, "--json"), point.env)
    point.wait_reached(gc)  # the artifact and blob rows are gone; the plan file is next
    builder = start_build(recipe, "--store", store, "--json")  # a miss now; builds the same bytes
    said = []
    while line := builder.stderr.readline():  # until it waits for gc, or (unfenced) has finished
        said.append(line)
        if "waiting for gc" in line:
            break
    point.resume()
    gc_code, gc_data, gc_err = finish(gc)
    point.close()
    code, data, err = finish(builder)
    assert gc_code == 0 and code == 0, (gc_err, err)
    assert gc_data["result"]["artifacts_removed"] == 1
    [rebuilt] = data
    assert rebuilt["status"] == "built" and rebuilt["plan_sha256"] == first.json()[0]["plan_sha256"]
    check = cli("fsck", "--store", store, "--json")
    assert check.code == 0 and check.json()["missing"] == [], check  # the new row's plan is there
    assert BlobStore(store).verify(rebuilt["plan_sha256"])
    assert any("waiting for gc" in line for line in said), said  # the build met gc inside its window


@pytest.mark.parametrize("writer", ["import", "adopt"])
def test_gc_and_an_import_or_adopt_reusing_its_blob_interleaved_never_lose_the_plan(
    mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli, writer: str
) -> None:
    """As above, with the plan's blob reused by `import` (of a bundle holding it) or `adopt` (of a
    copy of the plan file) while gc is past its last look at the catalog.

    Fails on 843520b: import and adopt did not take the gc fence, so they reused (touched) the
    blob and committed their rows while gc was held; gc then deleted the file and fsck reported
    the imported (adopted) artifact's plan missing.
    """
    recipe = mlp_recipe("reuse")
    [built] = cli("build", recipe, "--store", store, "--json").json()
    plan = Path(built["plan_path"])
    bundle, plan_copy = tmp_path / "b.tar", tmp_path / "copy.plan"
    assert cli("export", built["artifact_id"], "-o", bundle, "--store", store).code == 0
    plan_copy.write_bytes(plan.read_bytes())
    model = recipe.parent / "models" / "reuse.onnx"
    long_ago = time.time() - 7200  # past gc's grace for recently used blobs
    os.utime(plan, (long_ago, long_ago))

    point = CrashPoint(tmp_path / "cp", "gc-blobs-rechecked")
    gc = start(trtforge_argv("gc", "--keep-last", "0", "--store", store, "--json"), point.env)
    point.wait_reached(gc)  # the artifact and blob rows are gone; the plan file is next
    args = ("import", bundle) if writer == "import" else ("adopt", plan_copy, "--name", "adopted", "--model", model)
    other = start(trtforge_argv(*args, "--store", store, "--json"))
    said = []
    while line := other.stderr.readline():  # until it waits for gc, or (unfenced) has finished
        said.append(line)
        if "waiting for gc" in line:
            break
    point.resume()
    gc_code, gc_data, gc_err = finish(gc)
    point.close()
    code, data, err = finish(other)
    assert gc_code == 0 and code == 0, (gc_err, err, data)
    assert gc_data["result"]["artifacts_removed"] == 1
    check = cli("fsck", "--store", store, "--json")
    assert check.code == 0 and check.json()["missing"] == [], check  # the new row's plan is there
    assert BlobStore(store).verify(built["plan_sha256"])
    assert any("waiting for gc" in line for line in said), said  # it met gc inside its window
