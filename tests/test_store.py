"""Blob store atomicity and hash checks; catalog schema management and id lookup."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from tests.catalog_rows import placeholder_artifact
from trtforge.core.errors import CatalogError, IntegrityError, NotFoundError, StoreError
from trtforge.store import open_existing_store, open_store
from trtforge.store.blobs import BlobStore
from trtforge.store.catalog import SCHEMA_HEAD, SCHEMA_REVISIONS, Artifact, Blob, Catalog


def test_blob_path_is_content_addressed(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    data = b"plan bytes" * 1000
    ref = blobs.put_bytes(data)
    assert ref.sha256 == hashlib.sha256(data).hexdigest() and ref.size == len(data)
    assert blobs.path_for(ref.sha256) == tmp_path / "blobs" / "sha256" / ref.sha256[:2] / ref.sha256
    assert blobs.read_verified(ref.sha256) == data
    assert list((tmp_path / "blobs" / "sha256" / ".incoming").iterdir()) == []


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)

    def chunks():
        yield b"partial"
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        blobs.put_chunks(chunks())
    files = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert files == []


def test_corrupted_blob_is_detected(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    ref = blobs.put_bytes(b"abc")
    path = blobs.path_for(ref.sha256)
    path.chmod(0o644)
    path.write_bytes(b"abd")
    assert not blobs.verify(ref.sha256)
    with pytest.raises(IntegrityError, match="corrupted"):
        blobs.read_verified(ref.sha256)


def test_blob_names_are_validated(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        BlobStore(tmp_path).path_for("../../etc/passwd")


def test_store_path_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        open_store(tmp_path / "file")


def test_existing_store_is_not_created(tmp_path: Path) -> None:
    assert open_existing_store(tmp_path / "nothing") is None
    assert not (tmp_path / "nothing").exists()


def test_schema_revisions_match_migration_scripts() -> None:
    from alembic.script import ScriptDirectory

    from trtforge.store.migrations import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config())
    assert scripts.get_heads() == [SCHEMA_HEAD]
    history = [s.revision for s in scripts.walk_revisions()][::-1]
    assert tuple(history) == SCHEMA_REVISIONS


def test_catalog_is_created_in_wal_mode(tmp_path: Path) -> None:
    Catalog.sqlite(tmp_path / "c.sqlite").close()
    with sqlite3.connect(tmp_path / "c.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == SCHEMA_HEAD


def test_newer_schema_is_refused_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    Catalog.sqlite(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    before = path.read_bytes()
    with pytest.raises(CatalogError, match="newer than this trtforge"):
        Catalog.sqlite(path)
    assert path.read_bytes() == before


def _artifact(artifact_id: str, blob: str) -> Artifact:
    return placeholder_artifact(id=artifact_id, build_key="k" * 64, plan_sha256=blob)


def test_id_prefix_lookup(tmp_path: Path) -> None:
    catalog = Catalog.sqlite(tmp_path / "c.sqlite")
    blob = "b" * 64
    catalog.add_artifact(_artifact("abcdef0011", blob), Blob(sha256=blob, size=1, kind="plan"))
    catalog.add_artifact(_artifact("abcdef0022", blob), Blob(sha256=blob, size=1, kind="plan"))
    assert catalog.get_artifact("abcdef001").id == "abcdef0011"
    with pytest.raises(NotFoundError, match="ambiguous"):
        catalog.get_artifact("abcdef")
    with pytest.raises(NotFoundError, match="not valid"):
        catalog.get_artifact("abc")
    with pytest.raises(NotFoundError, match="not valid"):
        catalog.get_artifact("abcdef%")
    with pytest.raises(NotFoundError, match="no artifact"):
        catalog.get_artifact("ffffff")


def _schema_differences(engine_url: str) -> list[object]:
    """What Alembic's autogenerate sees between a database and the ORM models (empty: identical)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    import trtforge.store.timing_caches  # noqa: F401 - registers its table
    from trtforge.store.catalog import Base

    engine = create_engine(engine_url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        engine.dispose()


def test_migrations_produce_exactly_the_models(tmp_path: Path) -> None:
    """A new catalog is created from the models, so the migrations must build the same schema."""
    from sqlalchemy import create_engine

    from trtforge.store.migrations import upgrade

    url = f"sqlite:///{tmp_path / 'migrated.sqlite'}"
    engine = create_engine(url)
    with engine.connect() as conn:
        upgrade(conn)
        conn.commit()
    engine.dispose()
    assert _schema_differences(url) == []


def test_new_catalog_is_created_at_head_without_alembic(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import subprocess_env

    path = tmp_path / "new.sqlite"
    probe = (
        "import sys\nfrom pathlib import Path\nfrom trtforge.store.catalog import Catalog\n"
        f"Catalog.sqlite(Path({str(path)!r})).close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert Catalog.sqlite(path).current_revision() == SCHEMA_HEAD
    assert _schema_differences(f"sqlite:///{path}") == []


def test_parallel_digest_matches_hashlib_and_always_stops() -> None:
    import hashlib

    from trtforge.store.blobs import INLINE_DIGEST_BYTES, ParallelDigest

    chunks = [bytes([i]) * (i * 4099 + 1) for i in range(40)] + [b"z" * INLINE_DIGEST_BYTES, b"tail"]
    digest = ParallelDigest()
    for chunk in chunks:
        digest.update(memoryview(chunk))
    assert digest.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert digest.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()  # readable again
    assert digest._thread is not None  # past INLINE_DIGEST_BYTES: the rest on the helper thread
    abandoned = ParallelDigest()
    abandoned.update(b"partial")
    abandoned.update(b"x" * INLINE_DIGEST_BYTES)  # past the inline part: the helper thread starts
    assert abandoned._thread is not None
    abandoned.close()  # a failed write abandons the helper thread (never waiting for it: issue 29)...
    abandoned.close()
    abandoned._thread.join(timeout=10 * ParallelDigest.POLL_S)
    assert not abandoned._thread.is_alive()  # ...which ends on its own
    small = ParallelDigest()  # a small plan: hashed on the caller's thread, no thread started
    small.update(memoryview(b"plan"))
    small.update(b"more")
    assert small.hexdigest() == hashlib.sha256(b"planmore").hexdigest() and small._thread is None


def test_rows_marked_corrupt_before_0004_keep_their_integrity_mark(tmp_path: Path) -> None:
    """Before 0004 `fsck --repair` wrote "corrupt" into status; after the upgrade that is integrity,
    and status is what the newest verification said (or "unverified")."""
    from sqlalchemy import create_engine, text

    from trtforge.store.migrations import upgrade

    path = tmp_path / "old.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        upgrade(conn, "0003_verify")
        conn.execute(text("INSERT INTO blobs VALUES ('b', 1, 'plan', '2026-01-01 00:00:00')"))
        columns = (
            "id, name, build_key, recipe_fingerprint, model_sha256, flavor, trt_version, compute_capabilities, "
            "plan_sha256, plan_size, io_tensors, profiles, recipe, build_seconds, build_log, details, "
            "created_at, status"
        )
        for artifact_id, status in (("c0", "corrupt"), ("c1", "corrupt"), ("ok", "passed")):
            conn.execute(
                text(
                    f"INSERT INTO artifacts ({columns}) VALUES (:id, 'n', 'k', 'f', 'm', 'tensorrt', '10.13.3', "
                    "'[]', 'b', 1, '[]', '[]', '{}', 0, '[]', '{}', '2026-01-01 00:00:00', :status)"
                ),
                {"id": artifact_id, "status": status},
            )
        for ident, artifact_id, when, status in (
            ("v1", "c1", "2026-01-02 00:00:00", "failed"),
            ("v2", "c1", "2026-01-03 00:00:00", "passed"),  # recorded after the corrupt mark
            ("v3", "ok", "2026-01-02 00:00:00", "passed"),
        ):
            conn.execute(
                text(
                    "INSERT INTO verifications VALUES (:id, :a, 'GPU', '8.6', 'tensorrt', '10.13.3', :s, "
                    "'[]', '[]', '{}', :t)"
                ),
                {"id": ident, "a": artifact_id, "s": status, "t": when},
            )
        conn.commit()
    engine.dispose()
    from trtforge.store.sqlite_hits import UNANSWERED, probe_cached_plan

    assert probe_cached_plan(path, "k") == UNANSWERED  # the hit probe leaves an old schema to the full path
    catalog = Catalog.sqlite(path)  # upgrades to the head revision
    try:
        assert catalog.current_revision() == SCHEMA_HEAD
        rows = {a.id: (a.integrity, a.status, a.summary()["status"]) for a in catalog.list_artifacts()}
        assert rows == {
            "c0": ("corrupt", "unverified", "corrupt"),
            "c1": ("corrupt", "passed", "corrupt"),
            "ok": ("ok", "passed", "passed"),
        }
        assert catalog.find_by_build_key("k").id == "ok"
    finally:
        catalog.close()


def test_checked_copy_is_private_atomic_and_hash_checked(tmp_path: Path) -> None:
    from trtforge.core.fsutil import checked_copy

    blobs = BlobStore(tmp_path)
    data = bytes(range(256)) * 40_000  # ~10 MB: several chunks on every copy path
    ref = blobs.put_bytes(data)
    source = blobs.path_for(ref.sha256)
    out = tmp_path / "out" / "engine.plan"
    how = checked_copy(source, out, ref.sha256, temp_prefix=".tmp-test-")
    assert how in ("reflink", "copy_file_range", "copy")
    assert out.read_bytes() == data and not out.samefile(source) and source.stat().st_nlink == 1
    out.write_bytes(b"changed")  # the copy is the caller's own file
    assert blobs.verify(ref.sha256)

    with pytest.raises(IntegrityError, match="corrupted"):
        checked_copy(source, tmp_path / "out" / "other.plan", "0" * 64, temp_prefix=".tmp-test-")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["engine.plan"]  # nothing else appeared


def test_checked_copy_falls_back_to_a_plain_copy_after_a_partial_fast_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system without reflink whose copy_file_range stops part-way (EXDEV): a plain copy from the start."""
    import errno
    import os

    from trtforge.core import fsutil as fs

    real = os.copy_file_range
    calls = []

    def partial(src: int, dst: int, count: int) -> int:
        if calls:
            raise OSError(errno.EXDEV, "cross-device")
        calls.append(count)
        return real(src, dst, 1000)

    monkeypatch.setattr(fs.os, "copy_file_range", partial)
    data = b"0123456789" * 100_000
    source = tmp_path / "src"
    source.write_bytes(data)
    out = tmp_path / "dst"
    assert fs.checked_copy(source, out, hashlib.sha256(data).hexdigest(), temp_prefix=".tmp-") == "copy"
    assert out.read_bytes() == data and calls


def test_a_work_dir_cleanup_removed_before_its_lock_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another command's cleanup can remove a work directory between its creation and its flock
    (seen under load: 4 processes sharing a store, one failed with FileNotFoundError on its own
    fresh folder). The maker makes another instead of failing. Fails before the fix with that
    FileNotFoundError."""
    import os
    import tempfile

    from trtforge.core import fsutil as fs

    real = tempfile.mkdtemp
    removed: list[Path] = []

    def raced(*args: object, **kwargs: object) -> str:
        made = real(*args, **kwargs)  # type: ignore[arg-type]
        if not removed:  # the first folder: a cleaner finds it unlocked and removes it at once
            assert fs.remove_if_unheld(Path(made))
            removed.append(Path(made))
        return made

    monkeypatch.setattr(fs.tempfile, "mkdtemp", raced)
    fd, path = fs.make_temp(tmp_path, directory=True)
    try:
        assert removed and path != removed[0] and path.is_dir()
        assert not fs.remove_if_unheld(path)  # held: cleanup leaves it alone
    finally:
        os.close(fd)
