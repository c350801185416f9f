"""Opening a local SQLite catalog for reading, also where the store is read-only.

Serving machines often mount the store read-only (or run as a user who cannot write it). A
catalog in WAL mode then cannot be opened the usual way: SQLite wants to create its ``-shm``
(and ``-wal``) files beside the database. Where the catalog cannot be written, it is opened with
``mode=ro``, and where SQLite cannot even make its WAL index there, as ``immutable``: nothing can
change it on a read-only store, and a catalog closed cleanly has no ``-wal`` file whose commits
an immutable reader would miss (one that has is refused instead of read stale). Standard library
only: the cache-hit probe and lookup use it without SQLAlchemy, the catalog through it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

BUSY_TIMEOUT_SECONDS = 60.0  # as the catalog's SQLITE_BUSY_TIMEOUT_MS: wait out a writer, do not fail


def catalog_writable(db_path: Path) -> bool:
    """Whether this process can write the catalog: the file, and its folder (WAL's side files)."""
    return os.access(db_path, os.W_OK) and os.access(db_path.parent, os.W_OK | os.X_OK)


def connect_for_reading(db_path: Path, *, timeout: float = BUSY_TIMEOUT_SECONDS) -> sqlite3.Connection:
    """A connection to an existing catalog: ``mode=rw`` where it can be written (never creates
    one), else read-only as the module docstring says. Raises sqlite3.Error when it cannot be read."""
    base = f"file:{quote(str(db_path))}"
    if catalog_writable(db_path):
        return sqlite3.connect(f"{base}?mode=rw", uri=True, timeout=timeout, isolation_level=None)
    return connect_read_only(db_path, timeout=timeout)


def connect_read_only(db_path: Path, *, timeout: float = BUSY_TIMEOUT_SECONDS) -> sqlite3.Connection:
    """A connection that cannot write: ``mode=ro``, or ``immutable`` where the WAL index cannot be made."""
    base = f"file:{quote(str(db_path))}"
    conn = sqlite3.connect(f"{base}?mode=ro", uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the WAL index, if it can
        return conn
    except sqlite3.OperationalError:
        conn.close()
    wal = db_path.with_name(f"{db_path.name}-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        raise sqlite3.OperationalError(
            f"{wal.name} holds commits not yet in {db_path.name}, and a read-only store cannot merge them"
        )
    return sqlite3.connect(
        f"{base}?mode=ro&immutable=1", uri=True, timeout=timeout, isolation_level=None, check_same_thread=False
    )
