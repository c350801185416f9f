"""The cache-hit question asked of a local SQLite catalog with the standard library alone.

Importing SQLAlchemy's ORM takes longer than everything else a cache hit does together, so
`build` first asks "is there an artifact with this build key?" through ``sqlite3``. The
answer is trusted only when it is certain: no database file yet (nothing was built), or a
database at a schema revision this trtforge knows, with or without a usable row. Every other
case (unknown or missing schema, a locked or damaged database) is UNANSWERED and the caller
takes the full catalog path, which behaves exactly as before (creating, upgrading or refusing
the schema).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from trtforge.store.integrity import CORRUPT_STATUS
from trtforge.store.sqlite_read import BUSY_TIMEOUT_SECONDS, connect_for_reading

MIGRATIONS = Path(__file__).resolve().parent / "migrations" / "versions"




@dataclass(frozen=True)
class CachedPlan:
    artifact_id: str
    plan_sha256: str
    plan_size: int


@lru_cache(maxsize=1)
def known_revisions() -> frozenset[str]:
    """Revision ids of the migration scripts shipped with this trtforge (file name = revision id)."""
    return frozenset(p.stem for p in MIGRATIONS.glob("*.py") if not p.stem.startswith("_"))


@dataclass(frozen=True)
class Probe:
    """What the local SQLite catalog says about a build key.

    ``answered`` is True only for a certain answer: a usable row (``plan``) or, at a known
    schema, no usable row at all (``plan`` None). Anything uncertain is left to the full path.
    """

    answered: bool
    plan: CachedPlan | None = None


UNANSWERED = Probe(answered=False)


def probe_cached_plan(db_path: Path, build_key: str) -> Probe:
    """The hit for ``build_key`` among artifacts not quarantined, a certain "none", or UNANSWERED.

    Several artifacts can share a key (full TensorRT need not give the same bytes twice; `--force`
    adds one; an import may bring one): a local one comes before any imported one, then the one
    this store learned last (the catalog's HIT_ORDER). Quarantined rows are skipped here; whether
    the blob is present with the recorded size is the caller's check (a missing or resized one
    sends it to the full path, which marks a resized one corrupt and walks on to older rows).
    """
    if not db_path.is_file():
        return Probe(answered=True)  # no catalog yet: nothing was ever built into this store
    try:  # never creates a database; a read-only store is read read-only
        conn = connect_for_reading(db_path, timeout=BUSY_TIMEOUT_SECONDS)
    except sqlite3.Error:
        return UNANSWERED
    try:
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        if revision is None or revision[0] not in known_revisions():
            return UNANSWERED
        # A quarantined (corrupt) plan is never a hit, whatever its verifications say. A catalog
        # older than the integrity or learned_at column fails here and is left to the full path,
        # which upgrades it.
        row = conn.execute(
            "SELECT id, plan_sha256, plan_size FROM artifacts WHERE build_key = ? AND integrity != ? "
            "ORDER BY learned_via != 'local', learned_at DESC, id DESC LIMIT 1",
            (build_key, CORRUPT_STATUS),
        ).fetchone()
    except sqlite3.Error:
        return UNANSWERED
    finally:
        conn.close()
    if row is None:  # none, or only quarantined plans: never a hit
        return Probe(answered=True)
    return Probe(answered=True, plan=CachedPlan(row[0], row[1], int(row[2])))
