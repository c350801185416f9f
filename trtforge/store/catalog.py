"""The catalog: what was built, for which target, from what, and where its plan blob is.

SQLAlchemy 2.x ORM; the schema is owned by Alembic migrations in ``migrations/``. Opening a
catalog checks the schema revision with one plain query and imports Alembic only when the
database must be created or upgraded, so a cache hit never pays for it. SQLite runs in WAL
mode with a busy timeout; write transactions start with ``BEGIN IMMEDIATE`` so that
read-then-write sequences of concurrent builders serialize instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    inspect,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.sql import Select

from trtforge.crashpoints import crashpoint
from trtforge.errors import CatalogError, NotFoundError
from trtforge.store import CORRUPT_STATUS
from trtforge.store.locks import advisory_lock, application_name

# Every Alembic revision, oldest first. A database at a revision not listed here was written by
# a newer trtforge; tests check this tuple against the migration scripts.
SCHEMA_REVISIONS: tuple[str, ...] = ("0001_initial", "0002_build_surface", "0003_verify")
SCHEMA_HEAD = SCHEMA_REVISIONS[-1]
MIN_ID_PREFIX = 6
SQLITE_BUSY_TIMEOUT_MS = 60_000
MIGRATION_LOCK_KEY = 0x7472_7466_6F72_6765 >> 1  # "trtforge", as a PostgreSQL advisory lock id

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


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


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
    details: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    status: Mapped[str] = mapped_column(String(16), default="unverified")

    __table_args__ = (Index("ix_artifacts_name_flavor_version", "name", "flavor", "trt_version"),)

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
            "status": self.status,
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
            "details": self.details,
        }


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
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

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
        }


class ReferenceOutput(Base):
    """ONNX Runtime outputs for one model and one set of inputs, stored as a blob for reuse."""

    __tablename__ = "reference_outputs"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_sha256: Mapped[str] = mapped_column(String(64), index=True)
    blob_sha256: Mapped[str] = mapped_column(String(64), ForeignKey("blobs.sha256"))
    details: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" hook, not the driver, decide how transactions start.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("trtforge_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _all_tables() -> set[str]:
    import trtforge.store.timing_caches  # noqa: F401 - its model registers the timing_caches table

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


class Catalog:
    """A catalog database at a SQLAlchemy URL, at the current schema revision."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = url
        connect_args = {"application_name": application_name()} if url.startswith("postgresql") else {}
        self.engine: Engine = create_engine(url, future=True, connect_args=connect_args)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
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

    # -- schema ---------------------------------------------------------------------------

    def current_revision(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except OperationalError as exc:
            if "no such table" in str(exc) or "does not exist" in str(exc):
                return None
            raise CatalogError(f"cannot open catalog {self.url}: {exc.orig}") from None
        except DBAPIError as exc:
            if "does not exist" in str(exc.orig):
                return None
            raise CatalogError(f"cannot open catalog {self.url}: {exc.orig}") from None

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
            raise CatalogError(f"catalog {self.url} is at schema {revision!r}, expected {SCHEMA_HEAD!r}")
        self._upgrade()

    def _upgrade(self) -> None:
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
    def single_flight(self, key: str, *, what: str, notify: Callable[[str], None]) -> Iterator[None]:
        """Serialize builds of ``key`` across machines sharing this catalog (PostgreSQL only;
        a SQLite catalog is local, and the store's file lock already covers its users)."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        with advisory_lock(self.engine, key, what=what, notify=notify):
            yield

    # -- sessions -------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A short write transaction (BEGIN IMMEDIATE on SQLite), committed on success."""
        with self._write() as session, session.begin():
            yield session

    # -- queries --------------------------------------------------------------------------

    def find_by_build_key(self, key: str, *, intact: Callable[[str], bool] | None = None) -> Artifact | None:
        """The newest artifact with ``key`` that is not quarantined and whose plan blob passes
        ``intact`` (e.g. the blob store's ``exists``); several artifacts can share one key."""
        with self.reading() as session:
            stmt = (
                select(Artifact)
                .where(Artifact.build_key == key, or_(Artifact.status.is_(None), Artifact.status != CORRUPT_STATUS))
                .order_by(Artifact.created_at.desc(), Artifact.id.desc())
            )
            for artifact in session.scalars(stmt):
                if intact is None or intact(artifact.plan_sha256):
                    return artifact
            return None

    def list_artifacts(self, name: str | None = None) -> list[Artifact]:
        with self.reading() as session:
            stmt = select(Artifact).order_by(Artifact.created_at.desc(), Artifact.id)
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
        """Record a built artifact; its plan blob must already be complete in the blob store."""
        with self.writing() as session:
            if session.get(Blob, plan_blob.sha256) is None:
                session.add(plan_blob)
                session.flush()  # the blob row first: the artifact's foreign key points at it
            session.add(artifact)
            session.flush()
            crashpoint("catalog-uncommitted")

    # -- verifications --------------------------------------------------------------------

    def add_verification(self, verification: Verification) -> None:
        """Record a verification; the artifact's own status follows its latest verification."""
        with self.writing() as session:
            artifact = session.get(Artifact, verification.artifact_id)
            if artifact is None:
                raise NotFoundError(f"no artifact with id {verification.artifact_id}")
            session.add(verification)
            artifact.status = verification.status

    def verifications(self, artifact_id: str) -> list[Verification]:
        """All verifications of an artifact, newest first."""
        with self.reading() as session:
            stmt = (
                select(Verification)
                .where(Verification.artifact_id == artifact_id)
                .order_by(Verification.created_at.desc(), Verification.id)
            )
            return list(session.scalars(stmt))

    def statuses(self, artifact_id: str) -> dict[str, str]:
        """Status per GPU model: that of the newest verification on it (absent: unverified)."""
        return self.statuses_of(select(Artifact.id).where(Artifact.id == artifact_id)).get(artifact_id, {})

    def statuses_of(self, artifact_ids: Select[Any]) -> dict[str, dict[str, str]]:
        """Status per GPU model for every artifact an id query selects, in one query."""
        stmt = (
            select(Verification.artifact_id, Verification.gpu_name, Verification.status)
            .where(Verification.artifact_id.in_(artifact_ids.scalar_subquery()))
            .order_by(Verification.created_at.desc(), Verification.id)
        )
        latest: dict[str, dict[str, str]] = {}
        with self.reading() as session:
            for artifact_id, gpu_name, status in session.execute(stmt):
                latest.setdefault(artifact_id, {}).setdefault(gpu_name, status)
        return latest

    # -- reference outputs ----------------------------------------------------------------

    def find_reference(self, key: str) -> ReferenceOutput | None:
        with self.reading() as session:
            return session.get(ReferenceOutput, key)

    def add_reference(self, reference: ReferenceOutput, blob: Blob) -> None:
        """Record stored reference outputs; the blob must already be complete. Re-adding is a no-op."""
        with self.writing() as session:
            if session.get(ReferenceOutput, reference.key) is not None:
                return
            if session.get(Blob, blob.sha256) is None:
                session.add(blob)
                session.flush()
            session.add(reference)
