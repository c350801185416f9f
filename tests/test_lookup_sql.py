"""Lookup's SQL runs the same through the ORM catalog and through sqlite3 (trtforge/store/lookup_sql.py).

The parity catalog holds every state lookup must tell apart: a quarantined (corrupt) plan,
weight-stripped plans, verifications run here, signed and unsigned (claimed) ones, several models
under one name, other flavors and platforms, and rows without a platform.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.catalog_rows import add_row, add_verification_row
from tests.conftest import REPO, subprocess_env
from trtforge.rules.target import explicit_target
from trtforge.stages.lookup import choose_model, load_candidates, rank_in_store, result_for
from trtforge.store import lookup_sql, open_for_lookup, open_store
from trtforge.store.catalog import COUNTED_TRUST, SCHEMA_HEAD
from trtforge.store.lookup_sql import SqliteLookup, head_revision

A, B, C = "a" * 64, "b" * 64, "c" * 64


def _claim(store, artifact_id: str, gpu: str, status: str, trust: str) -> None:
    add_verification_row(store, artifact_id, gpu, status, trust=trust)


@pytest.fixture
def parity_store(tmp_path: Path):
    store = open_store(tmp_path / "store")
    add_row(store, model_sha256=A, age_minutes=50, verified_on={"NVIDIA A10G": "passed"})  # older model
    newest = add_row(store, model_sha256=B, age_minutes=1)
    add_row(store, model_sha256=B, age_minutes=2, weightless=True)
    corrupt = add_row(store, model_sha256=B, age_minutes=0, verified_on={"NVIDIA A10G": "passed"})
    claimed = add_row(store, model_sha256=B, age_minutes=3, trt_version="10.13.0")
    signed = add_row(store, model_sha256=B, age_minutes=4, trt_version="10.12.0")
    _claim(store, claimed, "NVIDIA A10G", "passed", "claimed")
    _claim(store, signed, "NVIDIA A10G", "passed", "signed")
    _claim(store, newest, "NVIDIA A10G", "failed", "local")
    add_row(store, model_sha256=B, flavor="tensorrt_rtx", trt_version="1.7.1", gpu_name=None, ccs=("8.6", "8.9"))
    add_row(store, name="other", model_sha256=C, origin="adopted")
    add_row(
        store,
        model_sha256=B,
        age_minutes=6,
        compatibility={"hardware": "ampere_plus", "version_compatible": True},
    )
    store.catalog.close()
    with sqlite3.connect(tmp_path / "store" / "catalog.sqlite") as conn:
        conn.execute("UPDATE artifacts SET integrity = 'corrupt' WHERE id = ?", (corrupt,))
    orm = open_store(tmp_path / "store")
    view = SqliteLookup.open(tmp_path / "store", tmp_path / "store" / "catalog.sqlite")
    assert view is not None
    yield orm, view
    orm.close()
    view.close()


QUERIES = [
    ("detector", None, None),
    ("detector", None, "tensorrt"),
    ("detector", None, "tensorrt_rtx"),
    ("detector", A, None),
    (None, B, "tensorrt"),
    ("other", None, None),
    ("absent", None, None),
]


def test_same_constants_and_head_as_the_catalog() -> None:
    assert lookup_sql.COUNTED_TRUST == COUNTED_TRUST
    assert head_revision() == SCHEMA_HEAD


@pytest.mark.parametrize(("name", "model", "flavor"), QUERIES)
def test_every_query_gives_the_same_rows(parity_store, name, model, flavor) -> None:
    orm, view = parity_store
    for query in (
        lookup_sql.candidates(name, model, flavor),
        lookup_sql.statuses(name, model, flavor),
        lookup_sql.newest_model(name, model),
        lookup_sql.any_artifact(name, model, intact=True),
        lookup_sql.any_artifact(name, model, intact=False),
        lookup_sql.names(),  # `coverage` and `gc --fleet`: every name with an intact artifact (issue 22)
    ):
        columns = query.artifact_columns or ("artifact_id", "gpu_name", "status")
        through_orm = [tuple(getattr(r, c) for c in columns) for r in orm.catalog.lookup_rows(query)]
        through_sqlite = [tuple(getattr(r, c) for c in columns) for r in view.lookup_rows(query)]
        if "details" in columns:  # the ORM types it; both read through record.read_details
            from trtforge.rules.record import read_details

            at = columns.index("details")
            through_orm = [(*r[:at], read_details(r[at]), *r[at + 1 :]) for r in through_orm]
            through_sqlite = [(*r[:at], read_details(r[at]), *r[at + 1 :]) for r in through_sqlite]
        assert sorted(through_orm, key=repr) == sorted(through_sqlite, key=repr), query.sql
    by_id = lambda candidates: sorted(candidates, key=lambda c: c.artifact_id)  # noqa: E731
    assert by_id(load_candidates(orm, name=name, model_sha256=model, flavor=flavor)) == by_id(
        load_candidates(view, name=name, model_sha256=model, flavor=flavor)
    )
    assert choose_model(orm, name=name, model_sha256=model) == choose_model(view, name=name, model_sha256=model)


@pytest.mark.parametrize(
    "options",
    [{}, {"verified_only": True}, {"allow_weightless": True}, {"any_model": True}, {"explain": True}],
)
@pytest.mark.parametrize(
    "target",
    [
        {"flavor": "tensorrt", "trt": "10.13.3", "cc": "8.6", "gpu": "NVIDIA A10G"},
        {"flavor": "tensorrt", "trt": "10.13.3", "cc": "8.6", "gpu": "NVIDIA A10G", "os": "linux", "arch": "x86_64"},
        {"flavor": "tensorrt_rtx", "trt": "1.7.1", "cc": "8.9", "gpu": None},
        {"flavor": "tensorrt", "trt": "10.14.0", "cc": "9.0", "gpu": "NVIDIA H100"},
    ],
)
def test_rankings_and_results_agree(parity_store, target, options) -> None:
    orm, view = parity_store
    chosen = explicit_target(**target)
    both = []
    for store in (orm, view):
        ranking = rank_in_store(store, chosen, name="detector", runtime_check=False, **options)
        try:
            best = result_for(store, ranking).as_json()
        except Exception as exc:  # NoCompatibleEngineError: the same message both ways
            best = repr(exc)
        both.append(
            (
                [m.as_json() for m in ranking.matches],
                sorted((r.as_json() for r in ranking.rejected), key=repr),
                ranking.model,
                ranking.warnings,
                best,
            )
        )
    assert both[0] == both[1]


def test_lookup_uses_sqlite3_only_at_the_head_schema_with_local_blobs(
    parity_store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    assert isinstance(open_for_lookup(root, missing="x"), SqliteLookup)
    import trtforge.store as store_module

    monkeypatch.setattr(store_module, "require_existing_store", lambda *args, **kwargs: "the ORM path")
    monkeypatch.setenv("TRTFORGE_BLOBS", "s3://bucket/prefix")  # blobs elsewhere: the ORM store fetches them
    assert open_for_lookup(root, missing="x") == "the ORM path"
    monkeypatch.delenv("TRTFORGE_BLOBS")
    assert open_for_lookup(root, catalog="postgresql+psycopg://u@h/db", missing="x") == "the ORM path"
    with sqlite3.connect(root / "catalog.sqlite") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0004_integrity_pins'")
    assert SqliteLookup.open(root, root / "catalog.sqlite") is None  # an older schema: the ORM upgrades it
    assert open_for_lookup(root, missing="x") == "the ORM path"


def test_cli_lookup_imports_neither_sqlalchemy_nor_tensorrt(
    cli, example_recipe: Path, store: Path, tmp_path: Path
) -> None:
    assert cli("build", example_recipe, "--store", store).code == 0
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, sys\n"
        "from trtforge.cli import app\n"
        "sys.argv = ['trtforge', 'lookup', 'example-cnn', '--flavor', 'tensorrt_rtx', '--trt', '1.7.1', '--cc', '8.6',"
        f" '--store', {str(store)!r}, '--json']\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "names = {'sqlalchemy', 'tensorrt', 'tensorrt_rtx', 'alembic', 'onnx'}\n"
        "sys.stderr.write('MODULES=' + json.dumps(sorted({m.split('.')[0] for m in sys.modules} & names)) + '\\n')\n"
    )
    proc = subprocess.run([sys.executable, probe], capture_output=True, text=True, env=subprocess_env(), cwd=REPO)
    assert '"best"' in proc.stdout, proc
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("MODULES=")]
    assert line == "MODULES=[]"
