"""Open a store only when a command needs it, so bad input never creates or touches one.

The build stage asks for a cache hit first (a local SQLite catalog answers through sqlite3, no
SQLAlchemy), and opens or creates the catalog only on the paths that need it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from trtforge.core.errors import StoreError, TrtforgeError
from trtforge.rules.digests import DigestCache
from trtforge.store import (
    Store,
    blob_intact,
    catalog_url,
    digests_path,
    locks_dir,
    open_existing_store,
    open_store,
    require_writable,
    resolve_store_root,
    resolved_dir,
    scratch_dir,
    sqlite_catalog_path,
)
from trtforge.store.blobs import BlobStore
from trtforge.store.sqlite_hits import UNANSWERED, Probe, probe_cached_plan

if TYPE_CHECKING:
    from trtforge.store.locks import LockDir


class StoreHandle:
    """Opens the store only when needed, so bad input never creates or touches it (from any thread)."""

    def __init__(self, store: str | Path | None, catalog: str | None) -> None:
        self._location = store
        self._catalog = catalog
        self._store: Store | None = None
        self._opening = threading.Lock()  # builds on several threads open one store, once
        self._sqlite_path: tuple[Path | None] | None = None  # computed once: it reads the mount table
        self._failed: TrtforgeError | None = None  # why opening the store failed, once it has

    @property
    def location(self) -> str | Path | None:
        """The store as given (``--store``; None: ``$TRTFORGE_STORE``, else ./cache_store)."""
        return self._location

    @property
    def catalog(self) -> str | None:
        """The catalog URL as given (``--catalog``; None: ``$TRTFORGE_CATALOG``, else the root's SQLite file)."""
        return self._catalog

    def _local_sqlite(self) -> Path | None:
        """The local SQLite catalog file (None for other catalogs); StoreError on a network file system."""
        if self._sqlite_path is None:
            self._sqlite_path = (sqlite_catalog_path(self._location, catalog=self._catalog),)
        return self._sqlite_path[0]

    def digests(self) -> DigestCache:
        """Model digests remembered in this store (nothing is written until the store exists)."""
        try:
            return DigestCache(digests_path(resolve_store_root(self._location)))
        except StoreError:
            return DigestCache(None)  # an unusable store is reported where the store is opened

    def resolved_dir(self) -> Path | None:
        """Where remembered recipe resolutions live (None for an unusable store location)."""
        try:
            return resolved_dir(resolve_store_root(self._location))
        except StoreError:
            return None

    def blobs(self) -> BlobStore:
        return BlobStore(resolve_store_root(self._location))

    def quick_probe(self, build_key: str) -> Probe:
        """Hit or certain miss, found without SQLAlchemy (local SQLite catalog and local blobs only).

        UNANSWERED sends the caller to the full catalog path: other catalogs, an unknown schema,
        or a row whose blob is not in the local blob directory with the recorded size (an S3
        store, a missing or damaged blob).
        """
        db_path = self._local_sqlite()
        if db_path is None:
            return UNANSWERED
        probe = probe_cached_plan(db_path, build_key)
        if probe.plan is not None and not blob_intact(self.blobs(), probe.plan.plan_sha256, probe.plan.plan_size):
            return UNANSWERED
        return probe

    def is_local_sqlite(self) -> bool:
        return self._local_sqlite() is not None

    def existing(self) -> Store | None:
        with self._opening:
            if self._store is None:
                self._store = self._open(open_existing_store)
            return self._store

    def ensure(self) -> Store:
        """The store, created if needed, for a command that writes (refused on a read-only store)."""
        with self._opening:
            if self._store is None:
                self._store = self._open(open_store)
        assert self._store is not None
        require_writable(self._store.root)  # also when it was opened earlier, to read
        return self._store

    def _open(self, opener: Callable[..., Store | None]) -> Store | None:
        """Open once: a store that could not be opened (a wrong catalog URL, a database or an S3
        endpoint that did not answer) is the same one-line error for every later recipe of the
        batch, without asking (and waiting) again."""
        if self._failed is not None:
            raise self._failed
        try:
            return opener(self._location, catalog=self._catalog)
        except TrtforgeError as exc:
            self._failed = exc
            raise

    @contextmanager
    def scratch_dir(self) -> Iterator[Path]:
        """A private folder in the store for one build's work, removed when it ends."""
        with scratch_dir(resolve_store_root(self._location)) as folder:
            yield folder

    def require_writable(self) -> None:
        """Refuse (the store is read-only) before a build takes its lock or writes anything."""
        require_writable(resolve_store_root(self._location))

    def locks(self) -> LockDir:
        """The store's build locks, usable before (and without) opening the catalog."""
        from trtforge.store.locks import LockDir  # lazy: a hit takes no lock

        return LockDir(locks_dir(resolve_store_root(self._location)))

    def root(self) -> Path:
        """The store's root directory (``--store``, else ``$TRTFORGE_STORE``, else ./cache_store), absolute."""
        return resolve_store_root(self._location)

    def catalog_url(self) -> str:
        """The catalog's URL (``--catalog``, else ``$TRTFORGE_CATALOG``, else the root's SQLite file)."""
        return catalog_url(self.root(), self._catalog)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
