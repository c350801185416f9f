"""SIGKILL a real build at each crash point: nothing partial is visible, the next run just works."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.procs import CrashPoint, finish, start_build
from trtforge.crashpoints import POINTS
from trtforge.store.blobs import BlobStore


def _rows(store: Path) -> list[tuple[str, str]]:
    if not (store / "catalog.sqlite").exists():
        return []
    with sqlite3.connect(store / "catalog.sqlite") as conn:
        return conn.execute("SELECT id, plan_sha256 FROM artifacts").fetchall()


def _temp_files(store: Path) -> list[Path]:
    return [p for p in (store / "blobs").rglob(".tmp-*")] if (store / "blobs").exists() else []


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_crash_point_leaves_a_usable_store(
    point: str, mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    recipe = mlp_recipe("crashy")
    crash = CrashPoint(tmp_path / "cp", point)
    victim = start_build(recipe, "--store", store, "--json", env=crash.env)
    crash.wait_reached(victim)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    crash.close()

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
