"""Hostile or broken input: traversal, symlinks, YAML bombs, huge recipes, a disk that fills up."""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MLP_RECIPE, CliResult, subprocess_env
from trtforge.core.errors import IntegrityError, RecipeError, StoreError
from trtforge.rules.recipe import MAX_RECIPE_BYTES, parse_recipe
from trtforge.store.blobs import BlobStore
from trtforge.store.locks import LockDir

HEADER = "name: n\nmodel: {onnx: m.onnx}\nprofiles: [{x: {min: [1], opt: [1], max: [1]}}]\n"


def _alias_bomb(levels: int = 9) -> str:
    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "name: n\nmodel: {onnx: m.onnx}\n" + "\n".join(lines) + f"\nprofiles: *l{levels - 1}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_alias_bomb(), "expands to more than 100000 values"),
        (HEADER + "description: " + "[" * 40 + "]" * 40 + "\n", "nested more than 32 levels"),
        (HEADER + "description: " + "[" * 20000 + "]" * 20000 + "\n", "YAML is nested"),
        (HEADER + 'description: !!python/object/apply:os.system ["touch pwned"]\n', "could not determine"),
        ("name: ../../etc/cron.d/x\nmodel: {onnx: m.onnx}\nprofiles: []\n", "name"),
    ],
    ids=["alias-bomb", "deep-nesting", "very-deep-nesting", "python-tag", "name-traversal"],
)
def test_hostile_recipes_are_refused_cleanly(text: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        parse_recipe(text)


def test_huge_recipe_is_refused_by_the_cli(cli, tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    huge.write_text(HEADER + "description: '" + "x" * MAX_RECIPE_BYTES + "'\n")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_alias_bomb(12))
    result = cli("build", huge, bomb, "--store", tmp_path / "store", "--json")
    assert result.code == 2, result
    errors = [r["error"] for r in result.json()]
    assert "the limit is 1048576" in errors[0] and "expands to more than" in errors[1]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "store").exists()


def test_ids_and_names_cannot_leave_the_store(cli, tmp_path: Path) -> None:
    for bad in ("../../etc/passwd", "abcdef/../../x", "%2e%2e%2fabc"):
        result = cli("show", bad, "--store", tmp_path / "store", "--json")
        assert result.code == 2 and "Traceback" not in result.stderr, result
    with pytest.raises(StoreError):
        LockDir(tmp_path).path_for("../outside")
    with pytest.raises(StoreError):
        LockDir(tmp_path).path_for("a/b")


def test_symlinked_shard_folder_is_refused(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "store")
    ref = blobs.put_bytes(b"plan")
    shard = blobs.path_for(ref.sha256).parent
    elsewhere = tmp_path / "elsewhere"
    shard.rename(elsewhere)
    shard.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(IntegrityError, match="symlinked folder"):
        blobs.read_verified(ref.sha256)
    assert not blobs.verify(ref.sha256)


def _limit_file_size(limit: int) -> None:
    # Writes beyond `limit` bytes fail with EFBIG (instead of SIGXFSZ killing the process).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_disk_that_fills_mid_write_fails_cleanly_and_records_nothing(cli, mlp_recipe, store: Path) -> None:
    first = cli("build", mlp_recipe("fits"), "--store", store, "--json")
    assert first.code == 0, first
    plan_size = Path(first.json()[0]["plan_path"]).stat().st_size
    recipe = mlp_recipe("overflows", seed=1)
    proc = subprocess.run(
        [sys.executable, "-m", "trtforge", "build", str(recipe), "--store", str(store), "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        preexec_fn=lambda: _limit_file_size(plan_size // 2),
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "cannot write to the store: File too large" in proc.stdout
    with sqlite3.connect(store / "catalog.sqlite") as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM artifacts")] == ["fits"]
    files = [p for p in (store / "blobs").rglob("*") if p.is_file()]
    assert [p.name for p in files] == [first.json()[0]["plan_sha256"]]  # no partial blob, no temp file


def test_unwritable_store_fails_cleanly(cli, mlp_recipe, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "locks").write_text("not a folder")
    result = cli("build", mlp_recipe("blocked"), "--store", store, "--json")
    assert result.code == 2 and "Traceback" not in result.stderr, result
    assert "cannot take the build lock" in result.json()[0]["error"]


def test_bracketed_text_in_errors_is_printed_as_given(cli, mlp_recipe, tmp_path: Path) -> None:
    """Paths and hints such as `trtforge[verify]` reach the terminal verbatim (rich markup is off)."""
    folder = tmp_path / "a[" / "b] [bold]c"  # the full path holds "[/b]", a closing tag to rich
    folder.mkdir(parents=True)
    recipe = mlp_recipe()
    moved = folder / "r.yaml"
    moved.write_text(recipe.read_text())  # its model path is now wrong: an error naming the folder
    for args in (["build", moved], ["plan", moved]):
        result = cli(*args, "--store", tmp_path / "store")
        assert result.code == 2, result
        assert "Traceback" not in result.stderr and "a[/b] [bold]c" in result.stderr, result


def test_symlink_loop_in_a_recipe_path_is_bad_input_for_that_recipe_only(cli, mlp_recipe, tmp_path: Path) -> None:
    """A path field that resolves into a symlink loop fails its own recipe (exit 2); the batch keeps the rest."""
    good = mlp_recipe("good")
    folder = good.parent
    (folder / "loopa").symlink_to("loopb")
    (folder / "loopb").symlink_to("loopa")
    model_loop = folder / "model-loop.yaml"
    model_loop.write_text("name: a\nmodel: {onnx: loopa}\n")
    deny_loop = mlp_recipe("deny-loop", text=MLP_RECIPE + "tactics: {{deny_file: loopa}}\n")
    store = tmp_path / "store"
    built = cli("build", model_loop, good, deny_loop, "--store", store, "--json")
    assert built.code == 2 and "Traceback" not in built.stderr, built
    results = built.json()
    assert [(r["status"], r["error_kind"]) for r in results] == [
        ("failed", "bad_input"),
        ("built", None),
        ("failed", "bad_input"),
    ]
    assert "model.onnx loopa" in results[0]["error"] and "tactics.deny_file loopa" in results[2]["error"]
    assert all("symlink loop" in r["error"] and r["hint"] for r in (results[0], results[2]))
    planned = cli("plan", good, model_loop, "--store", store, "--json-lines")
    assert planned.code == 2 and "Traceback" not in planned.stderr, planned
    assert [(p["status"], p["exit_code"]) for p in planned.lines()] == [("cached", 0), ("failed", 2)]
    reproduced = cli("build", "--reproduce", model_loop, "--store", store, "--json")
    assert reproduced.code == 2 and reproduced.json()["error_kind"] == "bad_input", reproduced


def test_fifo_as_recipe_or_deny_file_is_refused_not_read(mlp_recipe, tmp_path: Path) -> None:
    """Reading a FIFO blocks until a writer comes: a FIFO recipe file or tactics.deny_file hung the
    command forever. Now each is its recipe's bad input (exit 2) and the batch goes on."""
    good = mlp_recipe("good")
    fifo = good.parent / "fifo.yaml"
    os.mkfifo(fifo)
    deny_fifo = mlp_recipe("deny-fifo", text=MLP_RECIPE + "tactics: {{deny_file: fifo.yaml}}\n")
    argv = ["build", str(fifo), str(deny_fifo), str(good), "--store", str(tmp_path / "store"), "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "trtforge", *argv],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,  # the hang: far longer than a tiny build takes
    )
    result = CliResult(proc, argv)
    assert result.code == 2 and "Traceback" not in result.stderr, result
    results = result.json()
    assert [(r["status"], r["error_kind"]) for r in results] == [
        ("failed", "bad_input"),
        ("failed", "bad_input"),
        ("built", None),
    ]
    assert all("fifo.yaml: is not a regular file" in r["error"] and r["hint"] for r in results[:2]), results
