"""The store: a blob directory plus a catalog database, found at one root.

Layout (owned here, nowhere else)::

    <root>/catalog.sqlite            catalog (unless a --catalog URL is given)
    <root>/blobs/sha256/<aa>/<sha>   plan and cache blobs
    <root>/blobs/sha256/.incoming/   temp files being written (stale ones are removed on open)
    <root>/locks/<build key>.lock    single-flight build locks
    <root>/locks/.blob-fence         shared by builds recording blobs, exclusive for gc deleting them
    <root>/locks/                    also timing-cache merge locks (see store/timing_caches.py)
    <root>/cache/digests.json        stat-keyed sha256 of model files (see trtforge.rules.digests)
    <root>/cache/resolved/<sha>.json remembered recipe resolutions (see trtforge.resolution.resolved_cache)
    <root>/cache/blobs/<aa>/<sha>    local copies of blobs kept in S3 (TRTFORGE_BLOBS), for loaders
    <root>/tmp/.tmp-<pid>@<host>-*/  work directories (bundle imports, private copies of models for
                                     builds, refits, reproductions); a dead owner's are removed

Importing this package is cheap: the catalog (SQLAlchemy) is imported when a store is opened.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.core.errors import NotFoundError, StoreError, StoreReadOnlyError
from trtforge.core.fsutil import make_temp, remove_if_unheld
from trtforge.store.blobs import BlobBackend, BlobStore, scan_temp_files
from trtforge.store.fs import network_mount

if TYPE_CHECKING:
    from trtforge.store.catalog import Artifact, Catalog
    from trtforge.store.locks import LockDir

DEFAULT_STORE = Path("cache_store")
STORE_ENV = "TRTFORGE_STORE"
CATALOG_ENV = "TRTFORGE_CATALOG"
CATALOG_FILE = "catalog.sqlite"
BLOBS_ENV = "TRTFORGE_BLOBS"
REMOTE_BLOB_CACHE = "cache/blobs"  # local copies of S3 blobs (plans a loader needs as a file)
WORK_DIR = "tmp"
LOCKS_DIR = "locks"
DIGESTS_FILE = Path("cache") / "digests.json"
RESOLVED_DIR = Path("cache") / "resolved"


def locks_dir(root: Path) -> Path:
    return root / LOCKS_DIR


def digests_path(root: Path) -> Path:
    return root / DIGESTS_FILE


def resolved_dir(root: Path) -> Path:
    """Remembered recipe resolutions (trtforge.resolution.resolved_cache), beside the digest cache."""
    return root / RESOLVED_DIR


def catalog_url(root: Path, catalog: str | None = None) -> str:
    """The catalog's URL: ``--catalog``, else ``$TRTFORGE_CATALOG``, else the store's SQLite file."""
    return catalog or os.environ.get(CATALOG_ENV) or f"sqlite:///{root / CATALOG_FILE}"


def resolve_store_root(store: str | Path | None = None) -> Path:
    """``--store``, else ``$TRTFORGE_STORE``, else ``./cache_store``."""
    chosen = store if store not in (None, "") else os.environ.get(STORE_ENV) or DEFAULT_STORE
    root = Path(chosen).expanduser()
    if root.exists() and not root.is_dir():
        raise StoreError(f"store path {root} exists and is not a directory")
    return root.absolute()


def blob_intact(blobs: BlobBackend, sha256: str, size: int) -> bool | None:
    """None: the blob is missing; False: it is damaged (another size than recorded, or an S3
    checksum naming other bytes: BlobBackend.check); True: as recorded."""
    found = blobs.check(sha256, size)
    return found.damage is None if found.present else None


def note(message: str) -> None:
    """Where waiting for the gc fence is said when the caller gave no sink: stderr (a lock file's
    holder is another process's word: control characters are shown escaped, never sent)."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
    print(f"trtforge: {shown}", file=sys.stderr, flush=True)


@contextmanager
def scratch_dir(root: Path) -> Iterator[Path]:
    """A private folder under ``<root>/tmp`` for one piece of work (a build's copy of its model),
    removed afterwards; its flock tells other commands' cleanup that its owner is alive."""
    parent = root / WORK_DIR
    parent.mkdir(parents=True, exist_ok=True)
    fd, path = make_temp(parent, directory=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


@contextmanager
def model_work_dir(root: Path) -> Iterator[Path]:
    """Where one piece of work keeps its private copy of a model (:func:`scratch_dir`), removed
    afterwards; on a store this process can only read (`build --reproduce` writes nothing to the
    store), a private folder in the system's temporary directory instead."""
    if root.is_dir() and os.access(root, os.W_OK | os.X_OK):
        with scratch_dir(root) as folder:
            yield folder
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="trtforge-") as folder:
        yield Path(folder)


@dataclass
class Store:
    root: Path
    blobs: BlobBackend
    catalog: Catalog
    _work_locks: list[int] = field(default_factory=list, repr=False)
    _recording: int = field(default=0, repr=False)  # depth of recording_blobs held through this store

    @property
    def locks(self) -> LockDir:
        from trtforge.store.locks import LockDir  # lazy, as below: a hit and lookup take no lock

        return LockDir(locks_dir(self.root))

    def work_dir(self) -> Path:
        """A private directory for multi-file work (bundle import); the caller removes it.

        Its flock is held until the store is closed, so another command's cleanup leaves it alone.
        """
        parent = self.root / WORK_DIR
        parent.mkdir(exist_ok=True)
        fd, path = make_temp(parent, directory=True)
        self._work_locks.append(fd)
        return path

    @contextmanager
    def recording_blobs(self, notify: Callable[[str], None] | None = None) -> Iterator[None]:
        """Held from writing or reusing blobs until the rows naming them commit: gc waits.

        Every writer takes it (build, import, adopt, refit, reference outputs, timing caches). It is
        re-entrant: a writer inside another's fence (a build merging its timing cache) does not
        take it again, which on PostgreSQL would queue behind a waiting gc while holding it.
        """
        if self._recording:
            self._recording += 1
            try:
                yield
            finally:
                self._recording -= 1
            return
        from trtforge.store.locks import recording_blobs  # not on the hit path

        say = notify or note
        with recording_blobs(locks_dir(self.root), say), self.catalog.gc_fence(exclusive=False, notify=say):
            self._recording = 1
            try:
                yield
            finally:
                self._recording = 0

    @contextmanager
    def collecting_blobs(self, notify: Callable[[str], None] | None = None) -> Iterator[None]:
        """Held by gc from its last look at the catalog until its blob files are deleted."""
        from trtforge.store.locks import collecting_blobs

        say = notify or note
        with collecting_blobs(locks_dir(self.root), say), self.catalog.gc_fence(exclusive=True, notify=say):
            yield

    def plan_intact(self, artifact: Artifact) -> bool:
        """The artifact's plan blob is present as its row records (a cheap check: the size, and an S3
        object's checksum; the bytes are hashed where a plan is handed to a loader)."""
        return blob_intact(self.blobs, artifact.plan_sha256, artifact.plan_size) is True

    def close(self) -> None:
        self.catalog.close()
        while self._work_locks:
            os.close(self._work_locks.pop())


def _catalog_url(root: Path, catalog: str | None) -> str:
    url = catalog_url(root, catalog)
    if url.startswith("sqlite:///"):
        _refuse_network_fs(Path(url.removeprefix("sqlite:///")))
    return url


def _refuse_network_fs(database: Path) -> None:
    """SQLite's locking (and WAL's shared memory) is unsafe on network file systems."""
    mount = network_mount(database.parent if not database.exists() else database)
    if mount is not None:
        raise StoreError(
            f"the SQLite catalog {database} is on a network file system ({mount.fs_type} from {mount.source}), "
            "where SQLite locking is unsafe",
            hint="use a PostgreSQL catalog for a shared store: --catalog postgresql+psycopg://... "
            "(or TRTFORGE_CATALOG); see docs/team-setup.md",
        )


def sqlite_catalog_path(store: str | Path | None = None, *, catalog: str | None = None) -> Path | None:
    """The catalog's file when it is a local SQLite database, else None."""
    url = _catalog_url(resolve_store_root(store), catalog)
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def require_writable(root: Path) -> None:
    """Refuse a command that writes to an existing store this process can only read, in one line."""
    if root.exists() and not os.access(root, os.W_OK | os.X_OK):
        raise StoreReadOnlyError(f"the store is read-only: {root} cannot be written by this process")


def open_store(store: str | Path | None = None, *, catalog: str | None = None) -> Store:
    """Open (creating if needed) the store and its catalog."""
    root = resolve_store_root(store)
    url = _catalog_url(root, catalog)  # refuses a network file system before creating anything
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create store {root}: {exc.strerror}") from None
    require_writable(root)
    from trtforge.store.catalog import Catalog  # lazy: SQLAlchemy is most of a cache hit's start-up

    blobs = _blob_backend(root)
    blobs.clean_stale_temp()
    for stale in scan_temp_files(root / WORK_DIR, include_dirs=True):
        remove_if_unheld(stale.path)
    return Store(root, blobs, Catalog(url))


def _blob_backend(root: Path) -> BlobBackend:
    """Blobs under the store root, or in the bucket named by ``$TRTFORGE_BLOBS`` (s3://bucket/prefix)."""
    remote = os.environ.get(BLOBS_ENV)
    if not remote:
        return BlobStore(root)
    from trtforge.store.s3 import S3BlobStore  # lazy: imports boto3

    return S3BlobStore.from_url(remote, cache_dir=root / REMOTE_BLOB_CACHE)


_preload: threading.Thread | None = None


def preload_catalog_modules() -> None:
    """Import the catalog's modules (SQLAlchemy's ORM, ~0.15 s) on a helper thread.

    A build calls this just before TensorRT starts: TensorRT's build releases the GIL, so the
    import finishes behind the build instead of after it. Importing has no side effects on the
    store; a failure is left for the main thread's own import to report.
    """
    global _preload
    if _preload is not None or "trtforge.store.catalog" in sys.modules:
        return

    def work() -> None:
        with contextlib.suppress(Exception):  # the main thread's import raises it again, where handled
            import trtforge.store.catalog  # noqa: F401

    # Not a daemon: exiting while a module is half-imported on another thread is not clean.
    _preload = threading.Thread(target=work, name="trtforge-preload-catalog")
    _preload.start()


def open_for_lookup(store: str | Path | None = None, *, catalog: str | None = None, missing: str) -> Any:
    """What `lookup` reads: sqlite3 on a local SQLite catalog at the head schema with local blobs
    (:class:`trtforge.store.lookup_sql.SqliteLookup`, no SQLAlchemy), else the existing store
    (NotFoundError(``missing``) when there is none). Both run the same SQL text."""
    db_path = sqlite_catalog_path(store, catalog=catalog)
    if db_path is not None and not os.environ.get(BLOBS_ENV):
        from trtforge.store.lookup_sql import SqliteLookup

        view = SqliteLookup.open(resolve_store_root(store), db_path)
        if view is not None:
            return view
    return require_existing_store(store, catalog=catalog, missing=missing)


def require_existing_store(store: str | Path | None = None, *, catalog: str | None = None, missing: str) -> Store:
    """The existing store, or NotFoundError(``missing``): commands that only read never create one."""
    opened = open_existing_store(store, catalog=catalog)
    if opened is None:
        raise NotFoundError(
            missing, hint=f"no catalog at {resolve_store_root(store)}: pass --store DIR, or build or import first"
        )
    return opened


def open_existing_store(store: str | Path | None = None, *, catalog: str | None = None) -> Store | None:
    """The store if it already has a catalog; None otherwise, without creating anything."""
    root = resolve_store_root(store)
    url = _catalog_url(root, catalog)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return None
    from trtforge.store.catalog import Catalog

    return Store(root, _blob_backend(root), Catalog(url))
