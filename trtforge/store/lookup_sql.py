"""Lookup's catalog queries: ONE SQL text each, run by the ORM catalog or by ``sqlite3``.

`trtforge lookup` reads five things: the candidate rows of a name/digest, their verification
statuses, the newest intact model of the name, whether any row matches at all, and the releases
stored for the name (to infer ``--flavor``). "Newest" is always the order in which this store
learned of a row (``learned_at``), never the ``created_at`` a bundle may claim. Each is
written here once as SQL text with named parameters. :meth:`trtforge.store.catalog.Catalog.lookup_rows`
runs it through SQLAlchemy (any catalog, typed columns); :class:`SqliteLookup` runs the same
text through the standard ``sqlite3`` module on a local SQLite catalog at the head schema, so a
lookup there never imports SQLAlchemy (its ORM costs more than the rest of a lookup together).
Values come back alike: JSON columns parsed, datetimes aware in UTC.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trtforge.rules.keys import ADOPTED_FINGERPRINT
from trtforge.store.blobs import BlobStore
from trtforge.store.integrity import CORRUPT_STATUS
from trtforge.store.sqlite_hits import BUSY_TIMEOUT_SECONDS, known_revisions
from trtforge.store.sqlite_read import connect_for_reading

# Verifications that count (catalog.COUNTED_TRUST: run here, or imported under a trusted signature).
COUNTED_TRUST = ("local", "signed")
CANDIDATE_COLUMNS = (
    "id",
    "name",
    "flavor",
    "trt_version",
    "gpu_name",
    "compute_capabilities",
    "plan_sha256",
    "plan_size",
    "model_sha256",
    "recipe_fingerprint",
    "created_at",
    "learned_at",
    "learned_via",
    "build_key",
    "recipe",
    "details",
)
MODEL_COLUMNS = ("id", "name", "model_sha256", "recipe_fingerprint", "recipe", "created_at", "learned_at")
JSON_COLUMNS = frozenset({"compute_capabilities", "details", "recipe"})
DATETIME_COLUMNS = frozenset({"created_at", "learned_at"})



@dataclass(frozen=True)
class LookupQuery:
    """SQL text, its parameters, and the artifact columns it returns (typed on the ORM side)."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)
    artifact_columns: tuple[str, ...] = ()  # empty: plain text columns (verifications)


def _where(name: str | None, model_sha256: str | None, flavor: str | None, *, intact: bool) -> tuple[str, dict]:
    conditions, params = [], {}
    if intact:  # `fsck --repair` quarantined its plan
        conditions.append("integrity != :corrupt")
        params["corrupt"] = CORRUPT_STATUS
    for column, value in (("name", name), ("model_sha256", model_sha256), ("flavor", flavor)):
        if value is not None:
            conditions.append(f"{column} = :{column}")
            params[column] = value
    return (" WHERE " + " AND ".join(conditions)) if conditions else "", params


def candidates(name: str | None, model_sha256: str | None, flavor: str | None) -> LookupQuery:
    """Only the columns lookup reads (build logs and recipes stay in the database)."""
    where, params = _where(name, model_sha256, flavor, intact=True)
    sql = f"SELECT {', '.join(CANDIDATE_COLUMNS)} FROM artifacts{where}"  # noqa: S608 - constant names; values are bound
    return LookupQuery(sql, params, CANDIDATE_COLUMNS)


def statuses(name: str | None, model_sha256: str | None, flavor: str | None) -> LookupQuery:
    """(artifact_id, gpu_name, status) of the candidates' counted verifications, newest first."""
    where, params = _where(name, model_sha256, flavor, intact=True)
    trust = ", ".join(f":trust{i}" for i in range(len(COUNTED_TRUST)))
    params.update({f"trust{i}": value for i, value in enumerate(COUNTED_TRUST)})
    sql = (
        "SELECT artifact_id, gpu_name, status FROM verifications "  # noqa: S608 - constant names; values are bound
        f"WHERE artifact_id IN (SELECT id FROM artifacts{where}) AND trust IN ({trust}) "
        "ORDER BY learned_at DESC, id"
    )
    return LookupQuery(sql, params)


def newest_model(name: str | None, model_sha256: str | None, *, with_recipe: bool = False) -> LookupQuery:
    """The intact row of the name (and digest) this store learned last: the model a lookup means.
    ``with_recipe``: only rows built from a recipe (an adopted plan has none)."""
    where, params = _where(name, model_sha256, None, intact=True)
    if with_recipe:
        where += " AND recipe_fingerprint != :adopted"
        params["adopted"] = ADOPTED_FINGERPRINT
    sql = f"SELECT {', '.join(MODEL_COLUMNS)} FROM artifacts{where} ORDER BY learned_at DESC, id LIMIT 1"  # noqa: S608 - constant names; values are bound
    return LookupQuery(sql, params, MODEL_COLUMNS)


def releases(name: str | None, model_sha256: str | None) -> LookupQuery:
    """The (flavor, trt_version) pairs of the intact rows of a name/digest."""
    where, params = _where(name, model_sha256, None, intact=True)
    sql = f"SELECT DISTINCT flavor, trt_version FROM artifacts{where}"  # noqa: S608 - constant names; values are bound
    return LookupQuery(sql, params)


def names() -> LookupQuery:
    """Every name with an intact artifact, in order."""
    where, params = _where(None, None, None, intact=True)
    sql = f"SELECT DISTINCT name FROM artifacts{where} ORDER BY name"  # noqa: S608 - constant names; values are bound
    return LookupQuery(sql, params, ("name",))


def any_artifact(name: str | None, model_sha256: str | None, *, intact: bool) -> LookupQuery:
    where, params = _where(name, model_sha256, None, intact=intact)
    sql = f"SELECT id FROM artifacts{where} LIMIT 1"  # noqa: S608 - constant names; values are bound
    return LookupQuery(sql, params, ("id",))


class Row:
    """One result row with attribute access and tuple unpacking, as SQLAlchemy's rows have."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values.values())

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None


def _convert(column: str, value: Any) -> Any:
    """What the ORM's column types give: JSON parsed, datetimes aware in UTC."""
    if value is None:
        return None
    if column in JSON_COLUMNS:
        return json.loads(value)
    if column in DATETIME_COLUMNS:
        stamp = value if isinstance(value, datetime) else datetime.fromisoformat(value)
        return stamp.replace(tzinfo=timezone.utc) if stamp.tzinfo is None else stamp
    return value


def head_revision() -> str:
    """The newest schema revision this trtforge ships (revision ids start with their number)."""
    return max(known_revisions())


class SqliteLookup:
    """A view of a local store for lookup (it only reads): sqlite3 rows and the local blob directory."""

    def __init__(self, root: Path, conn: sqlite3.Connection) -> None:
        self.root = root
        self.blobs = BlobStore(root)
        self._conn = conn

    @property
    def catalog(self) -> SqliteLookup:
        return self  # lookup asks ``store.catalog.lookup_rows`` of either kind of store

    @classmethod
    def open(cls, root: Path, db_path: Path) -> SqliteLookup | None:
        """The view, or None where the ORM path must decide (no catalog, another schema, an error)."""
        if not db_path.is_file():
            return None
        try:
            conn = connect_for_reading(db_path, timeout=BUSY_TIMEOUT_SECONDS)  # read-only stores too
        except sqlite3.Error:
            return None
        try:
            revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error:
            revision = None
        if revision is None or revision[0] != head_revision():
            conn.close()
            return None
        return cls(root, conn)

    def lookup_rows(self, query: LookupQuery) -> list[Row]:
        cursor = self._conn.execute(query.sql, query.params)
        names = [d[0] for d in cursor.description]
        return [Row({n: _convert(n, v) for n, v in zip(names, values, strict=True)}) for values in cursor]

    def close(self) -> None:
        self._conn.close()
