"""The cache-hit question asked of a local SQLite catalog with the standard library alone.

Importing SQLAlchemy's ORM takes longer than everything else a cache hit does together, so
`build` first asks "is there an artifact with this build key?" through ``sqlite3``. The
answer is trusted only when it is a clean yes: the database is at a schema revision this
trtforge knows and the row names a plan blob. Every other case (no file, no row, unknown or
missing schema, a locked or damaged database) returns None and the caller takes the full
catalog path, which behaves exactly as before (creating, upgrading or refusing the schema).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from trtforge.store import CORRUPT_STATUS

MIGRATIONS = Path(__file__).resolve().parent / "migrations" / "versions"


BUSY_TIMEOUT_SECONDS = 60.0  # as the catalog's SQLITE_BUSY_TIMEOUT_MS: wait out a writer, do not fail


@dataclass(frozen=True)
class CachedPlan:
    artifact_id: str
    plan_sha256: str


def known_revisions() -> frozenset[str]:
    """Revision ids of the migration scripts shipped with this trtforge (file name = revision id)."""
    return frozenset(p.stem for p in MIGRATIONS.glob("*.py") if not p.stem.startswith("_"))


def find_cached_plan(db_path: Path, build_key: str) -> CachedPlan | None:
    """The newest artifact with ``build_key``, or None when the full catalog path must decide."""
    if not db_path.is_file():
        return None
    uri = f"file:{quote(str(db_path))}?mode=rw"  # never creates a database
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        if revision is None or revision[0] not in known_revisions():
            return None
        row = conn.execute(
            "SELECT id, plan_sha256, status FROM artifacts WHERE build_key = ? ORDER BY created_at DESC LIMIT 1",
            (build_key,),
        ).fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    if row is None or row[2] == CORRUPT_STATUS:  # a quarantined plan is never a hit
        return None
    return CachedPlan(row[0], row[1])
