"""The store: a blob directory plus a catalog database, found at one root.

Layout (owned here, nowhere else)::

    <root>/catalog.sqlite            catalog (unless a --catalog URL is given)
    <root>/blobs/sha256/<aa>/<sha>   plan and cache blobs
    <root>/locks/                    lock files (timing-cache merges, see store/timing_caches.py)
    <root>/cache/digests.json        stat-keyed sha256 of model files (see trtforge.digests)

Importing this package is cheap: the catalog (SQLAlchemy) is imported when a store is opened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from trtforge.errors import StoreError
from trtforge.store.blobs import BlobStore

if TYPE_CHECKING:
    from trtforge.store.catalog import Catalog

DEFAULT_STORE = Path("cache_store")
STORE_ENV = "TRTFORGE_STORE"
CATALOG_ENV = "TRTFORGE_CATALOG"
CATALOG_FILE = "catalog.sqlite"
DIGESTS_FILE = Path("cache") / "digests.json"


def resolve_store_root(store: str | Path | None = None) -> Path:
    """``--store``, else ``$TRTFORGE_STORE``, else ``./cache_store``."""
    chosen = store if store not in (None, "") else os.environ.get(STORE_ENV) or DEFAULT_STORE
    root = Path(chosen).expanduser()
    if root.exists() and not root.is_dir():
        raise StoreError(f"store path {root} exists and is not a directory")
    return root.absolute()


@dataclass
class Store:
    root: Path
    blobs: BlobStore
    catalog: Catalog

    def close(self) -> None:
        self.catalog.close()


def _catalog_url(root: Path, catalog: str | None) -> str:
    return catalog or os.environ.get(CATALOG_ENV) or f"sqlite:///{root / CATALOG_FILE}"


def sqlite_catalog_path(store: str | Path | None = None, *, catalog: str | None = None) -> Path | None:
    """The catalog's file when it is a local SQLite database, else None."""
    url = _catalog_url(resolve_store_root(store), catalog)
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def open_store(store: str | Path | None = None, *, catalog: str | None = None) -> Store:
    """Open (creating if needed) the store and its catalog."""
    root = resolve_store_root(store)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create store {root}: {exc.strerror}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise StoreError(f"store {root} is not writable")
    from trtforge.store.catalog import Catalog  # lazy: SQLAlchemy is most of a cache hit's start-up

    return Store(root, BlobStore(root), Catalog(_catalog_url(root, catalog)))


def open_existing_store(store: str | Path | None = None, *, catalog: str | None = None) -> Store | None:
    """The store if it already has a catalog; None otherwise, without creating anything."""
    root = resolve_store_root(store)
    url = _catalog_url(root, catalog)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    from trtforge.store.catalog import Catalog

    return Store(root, BlobStore(root), Catalog(url))
