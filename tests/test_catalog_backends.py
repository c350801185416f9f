"""The catalog suite on every backend: SQLite and a real PostgreSQL server (from .ci/run)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.procs import finish, start_build
from tests.test_maintenance import _add
from trtforge.core.errors import CatalogError, NotFoundError
from trtforge.store import open_store
from trtforge.store.catalog import SCHEMA_HEAD, Catalog


def _scalar(url: str, sql: str) -> object:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def test_migrations_create_the_schema(catalog_url: str) -> None:
    Catalog(catalog_url).close()
    assert _scalar(catalog_url, "SELECT version_num FROM alembic_version") == SCHEMA_HEAD
    engine = create_engine(catalog_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"artifacts", "blobs", "alembic_version"} <= tables
    Catalog(catalog_url).close()  # reopening an up-to-date catalog is a no-op


def test_newer_schema_is_refused_without_writing(catalog_url: str) -> None:
    Catalog(catalog_url).close()
    engine = create_engine(catalog_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    with pytest.raises(CatalogError, match="newer than this trtforge") as info:
        Catalog(catalog_url)
    assert "nothing was written" in (info.value.hint or "")
    assert _scalar(catalog_url, "SELECT version_num FROM alembic_version") == "9999_future"
    assert _scalar(catalog_url, "SELECT count(*) FROM artifacts") == 0


def test_lookup_by_id_prefix(tmp_path: Path, catalog_url: str) -> None:
    store = open_store(tmp_path / "store", catalog=catalog_url)
    try:
        first = _add(store, "a", b"a")
        assert store.catalog.get_artifact(first.id[:8]).id == first.id
        assert store.catalog.find_by_build_key(first.build_key).id == first.id
        with pytest.raises(NotFoundError, match="not valid"):
            store.catalog.get_artifact("abc%__")
    finally:
        store.close()


@pytest.mark.slow  # 4 processes x 6 builds (.ci/run: pytest -m slow)
def test_processes_share_one_catalog(mlp_recipe: Callable[..., Path], tmp_path: Path, catalog_url: str) -> None:
    """4 processes x the same key -> 1 build; 4 processes x 5 own keys -> 20 more, all recorded once."""
    store = tmp_path / "store"
    shared = mlp_recipe("shared")
    own = [[mlp_recipe(f"own{p}-{r}", seed=100 + p * 5 + r) for r in range(5)] for p in range(4)]
    procs = [start_build(shared, *batch, "--store", store, "--catalog", catalog_url, "--json") for batch in own]
    outcomes = [finish(p) for p in procs]
    assert all(code == 0 for code, _, _ in outcomes), [err[-12000:] for _, _, err in outcomes if "Traceback" in err]
    assert Counter(data[0]["status"] for _, data, _ in outcomes) == {"built": 1, "cached": 3}
    assert Counter(r["status"] for _, data, _ in outcomes for r in data[1:]) == {"built": 20}
    assert _scalar(catalog_url, "SELECT count(*) FROM artifacts") == 21
    assert _scalar(catalog_url, "SELECT count(DISTINCT build_key) FROM artifacts") == 21
