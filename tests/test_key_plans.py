"""Several plans under one build key: the hit is the newest intact one (not quarantined, blob present).

Full TensorRT need not produce the same bytes twice for one key (tactic timing), and `--force`
stores the new plan beside the old. TensorRT-RTX builds here are deterministic, so the second
plan is a real engine of another model, filed under the first key the way a nondeterministic
rebuild would file it. Fails on 55eb6bf: a quarantined or blob-less newest row made the build
rebuild ("built") although an older intact plan of the same key was there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from trtforge.store.blobs import BlobStore


def _two_plans_one_key(cli, mlp_recipe: Callable[..., Path], store: Path) -> tuple[Path, dict, dict]:
    recipe = mlp_recipe("mlp", seed=0)
    [older] = cli("build", recipe, "--store", store, "--json").json()
    [newer] = cli("build", mlp_recipe("other", seed=1), "--store", store, "--json").json()
    assert older["status"] == newer["status"] == "built"
    assert older["plan_sha256"] != newer["plan_sha256"]
    with sqlite3.connect(store / "catalog.sqlite") as conn:
        conn.execute(
            "UPDATE artifacts SET build_key = ?, name = 'mlp' WHERE id = ?",
            (older["build_key"], newer["artifact_id"]),
        )
    return recipe, older, newer


def _set_integrity(store: Path, artifact_id: str, integrity: str) -> None:
    with sqlite3.connect(store / "catalog.sqlite") as conn:
        conn.execute("UPDATE artifacts SET integrity = ? WHERE id = ?", (integrity, artifact_id))


def test_newest_intact_plan_of_a_key_is_the_hit(cli, mlp_recipe: Callable[..., Path], store: Path) -> None:
    recipe, older, newer = _two_plans_one_key(cli, mlp_recipe, store)

    [hit] = cli("build", recipe, "--store", store, "--json").json()
    assert (hit["status"], hit["artifact_id"]) == ("cached", newer["artifact_id"])

    _set_integrity(store, newer["artifact_id"], "corrupt")  # as `fsck --repair` quarantines it
    [hit] = cli("build", recipe, "--store", store, "--json").json()
    assert (hit["status"], hit["artifact_id"]) == ("cached", older["artifact_id"])

    _set_integrity(store, newer["artifact_id"], "ok")
    BlobStore(store).path_for(newer["plan_sha256"]).unlink()  # the newest plan's blob is gone
    [hit] = cli("build", recipe, "--store", store, "--json").json()
    assert (hit["status"], hit["artifact_id"]) == ("cached", older["artifact_id"])
    assert Path(hit["plan_path"]).is_file()

    planned = cli("plan", recipe, "--store", store, "--json")
    assert planned.code == 0, planned
    assert [(e["status"], e["artifact_id"]) for e in planned.json()] == [("cached", older["artifact_id"])]


def test_no_intact_plan_rebuilds(cli, mlp_recipe: Callable[..., Path], store: Path) -> None:
    recipe, older, newer = _two_plans_one_key(cli, mlp_recipe, store)
    _set_integrity(store, newer["artifact_id"], "corrupt")
    BlobStore(store).path_for(older["plan_sha256"]).unlink()
    [again] = cli("build", recipe, "--store", store, "--json").json()
    assert again["status"] == "built" and again["plan_sha256"] == older["plan_sha256"]
    [hit] = cli("build", recipe, "--store", store, "--json").json()
    assert (hit["status"], hit["artifact_id"]) == ("cached", again["artifact_id"])
