"""The catalog: what was built, for which target, from what, and where its plan blob is.

SQLAlchemy 2.x ORM; the schema is owned by Alembic migrations in ``migrations/``. Opening a
catalog checks the schema revision with one plain query and imports Alembic only when the
database must be created or upgraded, so a cache hit never pays for it. SQLite runs in WAL
mode with a busy timeout; write transactions start with ``BEGIN IMMEDIATE`` so that
read-then-write sequences of concurrent builders serialize instead of failing. PostgreSQL write
transactions start by taking one transaction-level advisory lock, for the same reason: a writer
that checks what is there and then adds to it (a blob row, an import's artifacts, gc's deletes)
never races another. Blob rows are inserted if absent (``ON CONFLICT DO NOTHING``) all the same.

Connections are checked before use and retried (``store/connections.py``); a database that stops
answering is one line (CatalogUnavailableError), never a driver's traceback.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker, validates
from sqlalchemy.sql import Select

from trtforge.core.crashpoints import crashpoint
from trtforge.core.errors import CatalogError, CatalogUnavailableError, NotFoundError, StoreReadOnlyError
from trtforge.core.extras import as_missing_extra
from trtforge.core.redact import redact, redact_url, remember
from trtforge.rules.record import ArtifactDetails, read_details
from trtforge.store.connections import (
    URL_HINT,
    ConnectRetry,
    checked_url,
    denied_error,
    engine_options,
    is_denied,
    is_unavailable,
    lost_error,
    opening_error,
    sqlstate,
)
from trtforge.store.integrity import CORRUPT_STATUS, INTEGRITY_OK
from trtforge.store.locks import advisory_fence, advisory_lock
from trtforge.store.lookup_sql import LookupQuery
from trtforge.store.sqlite_read import catalog_writable, connect_read_only

T = TypeVar("T")

# Every Alembic revision, oldest first. A database at a revision not listed here was written by
# a newer trtforge; tests check this tuple against the migration scripts.
SCHEMA_REVISIONS: tuple[str, ...] = (
    "0001_initial",
    "0002_build_surface",
    "0003_verify",
    "0004_integrity_pins",
    "0005_verification_claims",
    "0006_learned_order",
)
SCHEMA_HEAD = SCHEMA_REVISIONS[-1]
MIN_ID_PREFIX = 6
SQLITE_BUSY_TIMEOUT_MS = 60_000
MIGRATION_LOCK_KEY = 0x7472_7466_6F72_6765 >> 1  # "trtforge", as a PostgreSQL advisory lock id
# Serializes the write transactions of everyone sharing a PostgreSQL catalog (taken as each begins;
# learned_at stamps, which must increase, rely on it too), as BEGIN IMMEDIATE does on SQLite.
LEARNED_LOCK_KEY = MIGRATION_LOCK_KEY - 1
WRITE_LOCK_KEY = LEARNED_LOCK_KEY

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the catalog")
        return value.astimezone(timezone.utc) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class DetailsJSON(TypeDecorator[ArtifactDetails]):
    """``artifacts.details`` as :class:`trtforge.rules.record.ArtifactDetails`: validated on the way in
    and out, stored as JSON (rows of any earlier version read through ``read_details``)."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> dict[str, Any] | None:
        return None if value is None else read_details(value).as_json()

    def process_result_value(self, value: Any, dialect: Any) -> ArtifactDetails:
        return read_details(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


LEARNED_LOCAL = "local"  # artifacts.learned_via: built, adopted or refitted in this store
LEARNED_IMPORT = "import"  # came in a bundle


class Blob(Base):
    """A stored blob. A row exists only once the blob file is complete."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Artifact(Base):
    """One engine: its plan blob, how and for what it was built."""

    __tablename__ = "artifacts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    build_key: Mapped[str] = mapped_column(String(64), index=True)
    recipe_fingerprint: Mapped[str] = mapped_column(String(64))
    model_sha256: Mapped[str] = mapped_column(String(64), index=True)
    flavor: Mapped[str] = mapped_column(String(32))
    trt_version: Mapped[str] = mapped_column(String(32))
    gpu_name: Mapped[str | None] = mapped_column(String(128))
    compute_capabilities: Mapped[list[Any]]
    plan_sha256: Mapped[str] = mapped_column(String(64), ForeignKey("blobs.sha256"))
    plan_size: Mapped[int] = mapped_column(BigInteger)
    io_tensors: Mapped[list[Any]]
    profiles: Mapped[list[Any]]
    recipe: Mapped[dict[str, Any]]
    recipe_path: Mapped[str | None] = mapped_column(Text)
    build_seconds: Mapped[float] = mapped_column(Float)
    build_log: Mapped[list[Any]]
    details: Mapped[ArtifactDetails] = mapped_column(DetailsJSON)
    # What the builder says: this store's clock for local rows, the bundle's word for imported ones.
    # Shown, never used to order: "newest" everywhere is learned_at.
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # When this store learned of the artifact: this store's clock at insertion, strictly increasing
    # (stamped by _stamp_learned on every insert; nullable only in the schema, see 0006). The one
    # order of "newest": cache hits, lookup's model, gc.
    learned_at: Mapped[datetime | None] = mapped_column(index=True)
    # How: "local" (built, adopted or refitted here) or "import" (from a bundle). Within one build
    # key a local artifact is the cache hit before any imported one.
    learned_via: Mapped[str] = mapped_column(
        String(16), default=LEARNED_LOCAL, server_default=text("'local'")
    )
    # The newest verification's result on any GPU model (unverified | passed | failed); per GPU
    # model see Catalog.statuses. Never "corrupt": that is ``integrity``, a separate fact.
    status: Mapped[str] = mapped_column(String(16), default="unverified")
    # ok | corrupt: set to corrupt by `fsck --repair` or by a cache hit that found the plan damaged;
    # no verification changes it back.
    integrity: Mapped[str] = mapped_column(String(16), default=INTEGRITY_OK, server_default=text("'ok'"))
    # Set by `trtforge pin`: gc never removes a pinned artifact (a service may be using its blob).
    pinned_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ix_artifacts_name_flavor_version", "name", "flavor", "trt_version"),)

    @validates("details")
    def _typed_details(self, _key: str, value: Any) -> ArtifactDetails:
        return read_details(value)  # a dict given to the constructor becomes the model at once

    @property
    def corrupt(self) -> bool:
        return self.integrity == CORRUPT_STATUS

    @property
    def shown_status(self) -> str:
        """What `list`/`show` call its status: corrupt wins over any verification result."""
        return CORRUPT_STATUS if self.corrupt else self.status

    def summary(self) -> dict[str, Any]:
        """The fields `list --json` promises."""
        return {
            "artifact_id": self.id,
            "name": self.name,
            "build_key": self.build_key,
            "flavor": self.flavor,
            "trt_version": self.trt_version,
            "gpu_name": self.gpu_name,
            "compute_capabilities": list(self.compute_capabilities),
            "plan_sha256": self.plan_sha256,
            "plan_size": self.plan_size,
            "created_at": self.created_at.isoformat(),
            "learned_at": self.learned_at.isoformat() if self.learned_at is not None else None,
            "learned_via": self.learned_via,
            "status": self.shown_status,
            "integrity": self.integrity,
            "pinned": self.pinned_at is not None,
        }

    def record(self) -> dict[str, Any]:
        """Everything recorded, for `show --json`."""
        return {
            **self.summary(),
            "recipe_fingerprint": self.recipe_fingerprint,
            "model_sha256": self.model_sha256,
            "recipe_path": self.recipe_path,
            "recipe": self.recipe,
            "io_tensors": self.io_tensors,
            "profiles": self.profiles,
            "build_seconds": self.build_seconds,
            "build_log": self.build_log,
            "details": self.details.as_json(),
        }


# The cache hit among artifacts of one build key: local before imported, then the one learned last.
HIT_ORDER = ((Artifact.learned_via != LEARNED_LOCAL).asc(), Artifact.learned_at.desc(), Artifact.id.desc())


# Who vouches for a verification result (verifications.trust). Only ``local`` and ``signed``
# results count (statuses, lookup's ranking and --verified-only); a ``claimed`` one is what an
# unsigned or untrusted bundle said, kept for people to read.
TRUST_LOCAL = "local"  # run by `trtforge verify` against this catalog
TRUST_SIGNED = "signed"  # imported from a bundle signed by a key given to `import --trust`
TRUST_CLAIMED = "claimed"  # imported without a trusted signature: the exporter's word only
COUNTED_TRUST = (TRUST_LOCAL, TRUST_SIGNED)


class Verification(Base):
    """One verification of an artifact on one GPU model with one runtime version."""

    __tablename__ = "verifications"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    artifact_id: Mapped[str] = mapped_column(String(32), ForeignKey("artifacts.id"), index=True)
    gpu_name: Mapped[str] = mapped_column(String(128))
    compute_capability: Mapped[str | None] = mapped_column(String(16))
    runtime_flavor: Mapped[str] = mapped_column(String(32))
    runtime_version: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    checks: Mapped[list[Any]]
    perf: Mapped[list[Any]]
    details: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)  # the verifier's clock (a bundle's word if imported)
    learned_at: Mapped[datetime | None] = mapped_column(index=True)  # this store's order of results: see Artifact
    trust: Mapped[str] = mapped_column(String(16), default=TRUST_LOCAL, server_default=TRUST_LOCAL)
    signer: Mapped[str | None] = mapped_column(String(64))  # key id of the bundle signature it came with

    __table_args__ = (Index("ix_verifications_artifact_gpu_runtime", "artifact_id", "gpu_name", "runtime_version"),)

    def record(self) -> dict[str, Any]:
        return {
            "verification_id": self.id,
            "artifact_id": self.artifact_id,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "runtime_flavor": self.runtime_flavor,
            "runtime_version": self.runtime_version,
            "status": self.status,
            "checks": self.checks,
            "perf": self.perf,
            "details": self.details,
            "created_at": self.created_at.isoformat(),
            "learned_at": self.learned_at.isoformat() if self.learned_at is not None else None,
            "trust": self.trust,
            "signer": self.signer,
        }


class ReferenceOutput(Base):
    """ONNX Runtime outputs for one model and one set of inputs, stored as a blob for reuse."""

    __tablename__ = "reference_outputs"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_sha256: Mapped[str] = mapped_column(String(64), index=True)
    blob_sha256: Mapped[str] = mapped_column(String(64), ForeignKey("blobs.sha256"))
    details: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def _stamp_learned(session: Session, _context: Any, _instances: Any) -> None:
    """Give every new artifact and verification its ``learned_at``: this store's clock, strictly
    increasing per table, in the order the rows were added to the session.

    Writers serialize here (SQLite: the BEGIN IMMEDIATE of ``Catalog.writing``; PostgreSQL: an
    advisory lock until commit), so no row is ever stamped before one already there. A value set
    by the caller is kept (tests writing history); imports never carry one (stages/bundle.py).
    """
    for model in (Artifact, Verification):
        new = [row for row in session.new if isinstance(row, model) and row.learned_at is None]
        if not new:
            continue
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LEARNED_LOCK_KEY})
        # A Core query on the flush's connection: the ORM's select machinery costs more than the
        # query, once per recorded build (issue 24).
        latest = session.connection().scalar(select(func.max(model.__table__.c.learned_at)))
        stamp = utcnow()
        for row in new:
            if latest is not None and stamp <= latest:
                stamp = latest + timedelta(microseconds=1)
            row.learned_at = latest = stamp


event.listen(Session, "before_flush", _stamp_learned)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" hook, not the driver, decide how transactions start.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_read_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """A read-only catalog (store/sqlite_read.py): no journal mode to set, nothing to sync."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _read_only_sqlite_file(url: str) -> Path | None:
    """The file of a local SQLite catalog that exists and that this process cannot write, else None."""
    if not url.startswith("sqlite:///") or "?" in url:
        return None
    path = Path(url.removeprefix("sqlite:///"))
    return path if path.is_file() and not catalog_writable(path) else None


def _no_version_table(exc: DBAPIError) -> bool:
    """The database answered, and has no ``alembic_version`` table (a new catalog): not a failure.
    A missing *database* is one ("database ... does not exist"), and so is every failure to connect."""
    if sqlstate(exc) == "42P01":  # PostgreSQL's undefined_table
        return True
    said = str(exc.orig)
    return "alembic_version" in said and ("no such table" in said or "does not exist" in said)


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("trtforge_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _all_tables() -> set[str]:
    return set(Base.metadata.tables)


def _is_new_database(conn: Connection) -> bool:
    """No trtforge table yet (the caller holds the write lock, so this cannot change under it)."""
    existing = set(inspect(conn).get_table_names())
    return not existing & (_all_tables() | {"alembic_version"})


def _create_at_head(conn: Connection) -> None:
    """Create a new catalog straight at the head revision, without importing Alembic (~0.2 s).

    The models are the head schema: a test checks that the migrations produce exactly them
    (Alembic's compare_metadata finds no difference), and stamps the head revision the way
    ``alembic stamp head`` would. Existing catalogs are still upgraded by the migrations.
    """
    _all_tables()
    Base.metadata.create_all(conn)
    conn.execute(
        text(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
    )
    conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:head)"), {"head": SCHEMA_HEAD})


def add_blob_row(session: Session, sha256: str, size: int, kind: str) -> None:
    """Record a complete blob unless a row for it exists: insert-if-absent in one statement
    (``ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL), so two writers recording the same blob
    at once never collide; other dialects insert inside a savepoint and keep the existing row."""
    values = {"sha256": sha256, "size": size, "kind": kind, "created_at": utcnow()}
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        session.execute(insert(Blob).values(**values).on_conflict_do_nothing(index_elements=["sha256"]))
        return
    if session.get(Blob, sha256) is not None:
        return
    try:
        with session.begin_nested():
            session.add(Blob(**values))
    except IntegrityError:
        pass  # another writer's row, committed since our look: the blob is recorded


@dataclass(frozen=True)
class CacheKey:
    """Which builds may share a timing cache: same flavor, TensorRT version and GPU."""

    flavor: str
    trt_version: str
    gpu_name: str
    compute_capability: str

    @property
    def digest(self) -> str:
        text = "\x1f".join((self.flavor, self.trt_version, self.gpu_name, self.compute_capability))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def describe(self) -> str:
        return f"{self.flavor} {self.trt_version} on {self.gpu_name} (cc {self.compute_capability})"

    def as_json(self) -> dict[str, str]:
        return {
            "flavor": self.flavor,
            "trt_version": self.trt_version,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
        }


class TimingCacheRow(Base):
    """One version of one timing cache; its blob is complete before the row exists."""

    __tablename__ = "timing_caches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    cache_key: Mapped[str] = mapped_column(String(64), index=True)
    flavor: Mapped[str] = mapped_column(String(32))
    trt_version: Mapped[str] = mapped_column(String(32))
    gpu_name: Mapped[str] = mapped_column(String(128))
    compute_capability: Mapped[str] = mapped_column(String(16))
    generation: Mapped[int] = mapped_column(Integer)
    blob_sha256: Mapped[str] = mapped_column(String(64), ForeignKey("blobs.sha256"))
    size: Mapped[int] = mapped_column(BigInteger)
    parent_id: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    artifact_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("cache_key", "generation", name="uq_timing_caches_key_generation"),)

    @property
    def key(self) -> CacheKey:
        return CacheKey(self.flavor, self.trt_version, self.gpu_name, self.compute_capability)

    def summary(self) -> dict[str, Any]:
        return {
            "cache_id": self.id,
            **self.key.as_json(),
            "generation": self.generation,
            "blob_sha256": self.blob_sha256,
            "size": self.size,
            "parent_id": self.parent_id,
            "source": self.source,
            "artifact_id": self.artifact_id,
            "created_at": self.created_at.isoformat(),
        }



class Catalog:
    """A catalog database at a SQLAlchemy URL, at the current schema revision."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        remember(url)  # any later message that repeats its password is cleaned
        parsed = checked_url(url)  # a malformed URL is one line before anything connects
        # A catalog on a read-only store (a serving machine's mount) is read through read-only
        # connections; writing is refused (StoreReadOnlyError) before any statement.
        read_only_file = _read_only_sqlite_file(url)
        self.read_only = read_only_file is not None
        options = engine_options(parsed)
        if read_only_file is not None:
            options["creator"] = lambda: connect_read_only(read_only_file)
        try:
            self.engine: Engine = create_engine(parsed, future=True, **options)
        except ImportError as exc:  # the driver of a known dialect (psycopg: the 'postgres' extra)
            missing = as_missing_extra(exc, "postgres", f"a {url.partition(':')[0]} catalog")
            if missing is not None:
                raise missing from None
            raise CatalogError(redact(f"cannot open catalog {url}: {exc}", url), hint=URL_HINT) from None
        except (ArgumentError, ValueError) as exc:  # an unknown dialect, a query the driver refuses
            raise CatalogError(redact(f"cannot open catalog {url}: {exc}", url), hint=URL_HINT) from None
        self._connects = ConnectRetry()
        if self.engine.dialect.name != "sqlite":
            self._connects.install(self.engine)  # a server restarting is waited for, a few seconds
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_read_pragmas if self.read_only else _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._write_engine = self.engine.execution_options(trtforge_write=True)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self._write_engine, expire_on_commit=False)
        self._ensure_schema(create)

    @classmethod
    def sqlite(cls, path: Path, *, create: bool = True) -> Catalog:
        return cls(f"sqlite:///{path}", create=create)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def display_url(self) -> str:
        """The URL as shown to people: password and secret parameters hidden."""
        return redact_url(self.url)

    # -- schema ---------------------------------------------------------------------------

    def current_revision(self) -> str | None:
        """The schema revision; None for a database without trtforge's tables. Any failure to
        connect is one line (exit 2) saying what to do: connections.opening_error."""
        try:
            with self.engine.connect() as conn:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError as exc:
            if _no_version_table(exc):
                return None
            raise opening_error(exc, self.url) from None

    def _ensure_schema(self, create: bool) -> None:
        revision = self.current_revision()
        if revision == SCHEMA_HEAD:
            return
        if revision is not None and revision not in SCHEMA_REVISIONS:
            raise CatalogError(
                f"catalog schema {revision!r} is newer than this trtforge understands (up to {SCHEMA_HEAD!r})",
                hint="upgrade trtforge; nothing was written to the catalog",
            )
        if not create:
            raise CatalogError(f"catalog {self.display_url} is at schema {revision!r}, expected {SCHEMA_HEAD!r}")
        if self.read_only:
            raise StoreReadOnlyError(
                f"the store is read-only: catalog {self.display_url} is at schema {revision!r} and this trtforge "
                f"reads {SCHEMA_HEAD!r}, which needs an upgrade (a write)",
                hint="upgrade it once where the store is writable (any trtforge command that opens it), "
                "or use the trtforge that wrote it",
            )
        self._upgrade()

    def _upgrade(self) -> None:
        try:
            self._migrate()
        except DBAPIError as exc:  # e.g. no right to create tables, or the server went away
            raise opening_error(exc, self.url) from None

    def _migrate(self) -> None:
        with self._write_engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # Many CI jobs may open an empty database at once: migrate one at a time (the
                # lock ends with the transaction; Alembic then sees the schema already at head).
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            if _is_new_database(conn):
                _create_at_head(conn)
            else:
                from trtforge.store.migrations import upgrade  # lazy: imports alembic

                upgrade(conn)
            conn.commit()

    @contextmanager
    def single_flight(
        self,
        key: str,
        *,
        what: str,
        notify: Callable[[str], None],
        cancelled: Callable[[], bool] | None = None,
    ) -> Iterator[None]:
        """Serialize builds of ``key`` across machines sharing this catalog (PostgreSQL only;
        a SQLite catalog is local, and the store's file lock already covers its users)."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        with self.unavailable_as_error(), advisory_lock(
            self.engine, key, what=what, notify=notify, cancelled=cancelled
        ):
            yield

    @contextmanager
    def gc_fence(self, *, exclusive: bool, notify: Callable[[str], None]) -> Iterator[None]:
        """gc (exclusive) against builds recording blobs (shared), across machines sharing this
        catalog (PostgreSQL only; a SQLite catalog is local, and the store's fence file covers it)."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        with self.unavailable_as_error(), advisory_fence(self.engine, exclusive=exclusive, notify=notify):
            yield

    # -- sessions -------------------------------------------------------------------------

    @contextmanager
    def unavailable_as_error(self) -> Iterator[None]:
        """A database that stops answering inside the block is one line (CatalogUnavailableError,
        exit 1, password hidden), never a driver's traceback; so is a statement refused for lack of a
        privilege (CatalogError, exit 2: the role's grants are wrong). Errors about the data pass as
        they are."""
        try:
            yield
        except DBAPIError as exc:
            if is_denied(exc):
                raise denied_error(exc, self.url) from None
            if not is_unavailable(exc):
                raise
            raise lost_error(exc, self.url) from None

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self.unavailable_as_error(), self._read() as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A short write transaction, committed on success: BEGIN IMMEDIATE on SQLite, the write
        lock on PostgreSQL (writers serialize, see the module's docstring). Refused
        (StoreReadOnlyError, nothing written) on a read-only catalog."""
        if self.read_only:
            raise StoreReadOnlyError(f"the store is read-only: catalog {self.display_url} cannot be written")
        with self.unavailable_as_error(), self._write() as session, session.begin():
            if session.get_bind().dialect.name == "postgresql":
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})
            yield session

    def retried(self, work: Callable[[], T]) -> T:
        """Run ``work`` (whole transactions) once more when its connection was lost mid-way and the
        database is not known to be down: the new connection waits for a restarting server."""
        try:
            return work()
        except CatalogUnavailableError:
            if self._connects.down:
                raise
            return work()

    # -- queries --------------------------------------------------------------------------

    def find_by_build_key(self, key: str, *, intact: Callable[[Artifact], bool] | None = None) -> Artifact | None:
        """The cache hit of ``key``: of the artifacts with that key whose integrity is ok and that pass
        ``intact`` (e.g. its plan blob is present with the recorded size), a local one before any
        imported one, then the one learned last (several artifacts can share one key)."""
        stmt = (
            select(Artifact)
            .where(Artifact.build_key == key, Artifact.integrity != CORRUPT_STATUS)
            .order_by(*HIT_ORDER)
        )

        def candidates() -> list[Artifact]:
            with self.reading() as session:
                return list(session.scalars(stmt))

        for artifact in self.retried(candidates):
            if intact is None or intact(artifact):
                return artifact
        return None

    def mark_corrupt(self, plan_sha256s: list[str]) -> list[str]:
        """Mark every artifact whose plan is one of ``plan_sha256s`` corrupt (never a hit or handed
        out again); returns their ids. `fsck --repair` later moves the damaged blobs aside."""
        if not plan_sha256s:
            return []

        def mark() -> list[str]:
            with self.writing() as session:
                stmt = select(Artifact).where(
                    Artifact.plan_sha256.in_(plan_sha256s), Artifact.integrity != CORRUPT_STATUS
                )
                marked = list(session.scalars(stmt))
                for artifact in marked:
                    artifact.integrity = CORRUPT_STATUS
                return [artifact.id for artifact in marked]

        return self.retried(mark)

    def list_artifacts(self, name: str | None = None) -> list[Artifact]:
        with self.reading() as session:
            stmt = select(Artifact).order_by(Artifact.learned_at.desc(), Artifact.id)
            if name is not None:
                stmt = stmt.where(Artifact.name == name)
            return list(session.scalars(stmt))

    def get_artifact(self, ref: str) -> Artifact:
        """An artifact by id or by a unique id prefix of at least MIN_ID_PREFIX characters."""
        ref = ref.strip().lower()
        if len(ref) < MIN_ID_PREFIX or not all(c in "0123456789abcdef" for c in ref):
            raise NotFoundError(
                f"artifact id {ref[:40]!r} is not valid",
                hint=f"use the id from `trtforge list` (at least {MIN_ID_PREFIX} hex characters)",
            )
        with self.reading() as session:
            stmt = select(Artifact).where(Artifact.id.startswith(ref, autoescape=True)).limit(2)
            found = list(session.scalars(stmt))
        if not found:
            raise NotFoundError(f"no artifact with id {ref}", hint="see `trtforge list`")
        if len(found) > 1:
            raise NotFoundError(f"artifact id prefix {ref} is ambiguous", hint="give more characters")
        return found[0]

    def add_artifact(self, artifact: Artifact, plan_blob: Blob) -> None:
        """Record a built artifact; its plan blob must already be complete in the blob store.

        Tried once more when the connection is lost mid-way: a row already there (the first
        attempt committed, its answer was lost) is the artifact recorded, not a second one.
        """

        given = artifact.learned_at  # None (stamped at insert), or a history a test writes
        attempts = 0

        def record() -> None:
            nonlocal attempts
            attempts += 1
            with self.writing() as session:
                # Only a retry can find the row (the first attempt's commit whose answer was lost):
                # the first attempt spares the parent of a busy batch this query.
                if attempts > 1 and session.get(Artifact, artifact.id) is not None:
                    return
                # The blob row first (the artifact's foreign key points at it), if absent.
                add_blob_row(session, plan_blob.sha256, plan_blob.size, plan_blob.kind)
                artifact.learned_at = given  # a lost attempt's stamp is not kept
                session.add(artifact)
                session.flush()
                crashpoint("catalog-uncommitted")

        self.retried(record)

    # -- verifications --------------------------------------------------------------------

    def add_verification(self, verification: Verification) -> None:
        """Record a verification; the artifact's verification summary follows its latest one.

        Integrity is a separate fact: a verification never makes a corrupt artifact usable.
        """
        with self.writing() as session:
            artifact = session.get(Artifact, verification.artifact_id)
            if artifact is None:
                raise NotFoundError(f"no artifact with id {verification.artifact_id}")
            session.add(verification)
            artifact.status = verification.status

    @staticmethod
    def latest_counted_status(session: Session, artifact_id: str) -> str | None:
        """The status of the artifact's verification that counts (run here or signed) and that this
        store learned last."""
        stmt = (
            select(Verification.status)
            .where(Verification.artifact_id == artifact_id, Verification.trust.in_(COUNTED_TRUST))
            .order_by(Verification.learned_at.desc(), Verification.id)
            .limit(1)
        )
        return session.scalars(stmt).first()

    # -- pins and removal -----------------------------------------------------------------

    def set_pinned(self, ref: str, pinned: bool) -> tuple[Artifact, bool]:
        """Pin (gc never removes it) or unpin an artifact; returns it and whether that changed."""
        artifact_id = self.get_artifact(ref).id
        with self.writing() as session:
            artifact = session.get(Artifact, artifact_id)
            if artifact is None:  # removed by a concurrent gc since get_artifact
                raise NotFoundError(f"no artifact with id {ref}", hint="see `trtforge list`")
            changed = (artifact.pinned_at is not None) != pinned
            if changed:
                artifact.pinned_at = utcnow() if pinned else None
            return artifact, changed

    @staticmethod
    def delete_artifacts(session: Session, ids: list[str]) -> int:
        """Delete artifacts and what hangs off them (verifications) in the caller's transaction.

        Pinned artifacts are skipped, so a pin taken after gc planned still holds.
        """
        if not ids:
            return 0
        unpinned = select(Artifact.id).where(Artifact.id.in_(ids), Artifact.pinned_at.is_(None))
        going = list(session.scalars(unpinned))
        if not going:
            return 0
        session.execute(delete(Verification).where(Verification.artifact_id.in_(going)))
        return session.execute(delete(Artifact).where(Artifact.id.in_(going))).rowcount or 0

    def verifications(self, artifact_id: str) -> list[Verification]:
        """All verifications of an artifact, the one learned last first."""
        with self.reading() as session:
            stmt = (
                select(Verification)
                .where(Verification.artifact_id == artifact_id)
                .order_by(Verification.learned_at.desc(), Verification.id)
            )
            return list(session.scalars(stmt))

    def statuses(self, artifact_id: str) -> dict[str, str]:
        """Status per GPU model: that of the verification on it learned last (absent: unverified)."""
        return self.statuses_of(select(Artifact.id).where(Artifact.id == artifact_id)).get(artifact_id, {})

    def statuses_of(self, artifact_ids: Select[Any]) -> dict[str, dict[str, str]]:
        """Status per GPU model for every artifact an id query selects, in one query.

        Only results run here or imported under a trusted signature count: a bundle's unsigned
        claims neither satisfy ``--verified-only`` nor raise an artifact in lookup's ranking.
        """
        stmt = (
            select(Verification.artifact_id, Verification.gpu_name, Verification.status)
            .where(Verification.artifact_id.in_(artifact_ids.scalar_subquery()))
            .where(Verification.trust.in_(COUNTED_TRUST))
            .order_by(Verification.learned_at.desc(), Verification.id)
        )
        latest: dict[str, dict[str, str]] = {}
        with self.reading() as session:
            for artifact_id, gpu_name, status in session.execute(stmt):
                latest.setdefault(artifact_id, {}).setdefault(gpu_name, status)
        return latest

    def lookup_rows(self, query: LookupQuery) -> list[Any]:
        """Run one of lookup's queries (trtforge/store/lookup_sql.py: the text sqlite3 runs too)."""
        stmt: Any = text(query.sql)
        if query.artifact_columns:
            stmt = stmt.columns(*(getattr(Artifact, column) for column in query.artifact_columns))
        with self.reading() as session:
            return list(session.execute(stmt, query.params))

    # -- reference outputs ----------------------------------------------------------------

    def find_reference(self, key: str) -> ReferenceOutput | None:
        with self.reading() as session:
            return session.get(ReferenceOutput, key)

    def add_reference(self, reference: ReferenceOutput, blob: Blob) -> None:
        """Record stored reference outputs; the blob must already be complete. Re-adding is a no-op."""
        with self.writing() as session:
            if session.get(ReferenceOutput, reference.key) is not None:
                return
            add_blob_row(session, blob.sha256, blob.size, blob.kind)
            session.add(reference)
