"""fsck and gc: plans first, referrers deleted before blobs, verified artifacts protected."""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.catalog_rows import add_verification_row, placeholder_artifact
from trtforge.stages.maintenance import (
    GcPolicy,
    execute_gc,
    execute_repair,
    plan_gc,
    plan_repair,
    scan_store,
)
from trtforge.store import Store, open_store
from trtforge.store.blobs import BlobStore
from trtforge.store.catalog import Artifact, Blob, ReferenceOutput, utcnow
from trtforge.store.timing_caches import CacheKey, TimingCaches


def _add(store: Store, name: str, payload: bytes, *, age_days: float = 0) -> Artifact:
    ref = store.blobs.put_bytes(payload)
    artifact = placeholder_artifact(
        name=name,
        plan_sha256=ref.sha256,
        plan_size=ref.size,
        created_at=utcnow() - timedelta(days=age_days),
    )
    store.catalog.add_artifact(artifact, Blob(sha256=ref.sha256, size=ref.size, kind="plan"))
    if age_days and isinstance(store.blobs, BlobStore):  # the plan was written when it was built
        stamp = artifact.created_at.timestamp()
        os.utime(store.blobs.path_for(ref.sha256), (stamp, stamp))
    return artifact


def _ids(store: Store) -> set[str]:
    return {a.id for a in store.catalog.list_artifacts()}


def _damage(store: Store, sha: str, data: bytes = b"not the plan") -> None:
    path = store.blobs.path_for(sha)
    path.chmod(0o644)
    path.write_bytes(data)


@pytest.fixture
def opened(tmp_path: Path, catalog_url: str) -> Store:
    store = open_store(tmp_path / "store", catalog=catalog_url)
    yield store
    store.close()


def test_clean_store_is_ok(opened: Store) -> None:
    _add(opened, "a", b"plan-a")
    report = scan_store(opened)
    assert report and report.blobs_checked == 1 and report.artifacts_checked == 1 and report.findings == ()


def test_fsck_finds_each_kind_of_damage_and_repair_quarantines(opened: Store) -> None:
    good = _add(opened, "good", b"good")
    bad = _add(opened, "bad", b"bad")
    gone = _add(opened, "gone", b"gone")
    _damage(opened, bad.plan_sha256)
    opened.blobs.path_for(gone.plan_sha256).unlink()
    orphan = opened.blobs.put_bytes(b"orphan")
    stale = opened.blobs.tmp_dir / ".tmp-999999999@elsewhere-x"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    report = scan_store(opened)
    assert not report
    assert [(f.sha256, f.artifact_ids) for f in report.of("corrupt")] == [(bad.plan_sha256, (bad.id,))]
    assert [(f.sha256, f.artifact_ids) for f in report.of("missing")] == [(gone.plan_sha256, (gone.id,))]
    assert [f.sha256 for f in report.of("orphan")] == [orphan.sha256]
    assert report.stale_temp == (str(stale),)

    repair = plan_repair(report)
    assert set(repair.mark_corrupt) == {bad.id, gone.id} and repair.quarantine == (bad.plan_sha256,)
    done = execute_repair(opened, repair)
    assert len(done["quarantined"]) == 1 and Path(done["quarantined"][0]).read_bytes() == b"not the plan"
    assert not opened.blobs.path_for(bad.plan_sha256).exists() and not stale.exists()
    outsider = opened.root / ".tmp-1@h-not-in-blobs"  # a repair plan names only temp files of the blob store
    outsider.write_bytes(b"keep")
    assert not opened.blobs.remove_temp(str(outsider)) and outsider.exists()
    assert not opened.blobs.remove_temp(str(opened.blobs.path_for(good.plan_sha256)))
    integrity = {a.id: (a.integrity, a.summary()["status"]) for a in opened.catalog.list_artifacts()}
    assert integrity == {good.id: ("ok", "unverified"), bad.id: ("corrupt", "corrupt"), gone.id: ("corrupt", "corrupt")}
    after = scan_store(opened)
    assert after, after  # repaired: only the orphan (for gc) and a note remain
    assert [f.problem for f in after.findings] == ["orphan"]


def test_blob_replaced_by_a_different_file_or_a_symlink_is_corrupt(opened: Store, tmp_path: Path) -> None:
    one = _add(opened, "one", b"one")
    two = _add(opened, "two", b"two")
    _damage(opened, one.plan_sha256, b"two")  # a valid-looking plan with another name
    outside = tmp_path / "outside"
    outside.write_bytes(b"two")
    path = opened.blobs.path_for(two.plan_sha256)
    path.unlink()
    path.symlink_to(outside)
    assert {f.sha256 for f in scan_store(opened).of("corrupt")} == {one.plan_sha256, two.plan_sha256}


def test_gc_plan_then_execute_by_keep_last_and_age(opened: Store) -> None:
    old = [_add(opened, "det", f"old{i}".encode(), age_days=30 + i) for i in range(3)]
    new = _add(opened, "det", b"new", age_days=1)
    shared = _add(opened, "other", b"new", age_days=40)  # same plan bytes as `new`
    plan = plan_gc(opened, GcPolicy(keep_last=1, older_than_days=7))
    assert {a.artifact_id for a in plan.artifacts} == {a.id for a in old}
    assert {b.sha256 for b in plan.blob_files} == {a.plan_sha256 for a in old}
    assert plan.expected_freed_bytes == sum(a.plan_size for a in old)
    assert _ids(opened) == {a.id for a in [*old, new, shared]}  # planning changed nothing

    result = execute_gc(opened, plan)
    assert result == {"artifacts_removed": 3, "blob_rows_removed": 3, "blob_files_removed": 3, "bytes_freed": 12}
    assert _ids(opened) == {new.id, shared.id}
    assert opened.blobs.verify(new.plan_sha256)
    assert scan_store(opened).findings == ()


def test_gc_keeps_a_blob_that_a_build_just_reused(opened: Store) -> None:
    old = _add(opened, "det", b"same plan", age_days=40)
    _add(opened, "det", b"newer plan", age_days=1)
    opened.blobs.put_bytes(b"same plan")  # a build reuses the blob; its row is not recorded yet
    plan = plan_gc(opened, GcPolicy(keep_last=1))
    assert [a.artifact_id for a in plan.artifacts] == [old.id]
    assert plan.blob_files == () and "reused recently" in plan.warnings[0]
    execute_gc(opened, plan)
    assert opened.blobs.verify(old.plan_sha256)  # still there for the build's row


def _verify(store: Store, artifact_id: str, gpu: str, status: str) -> None:
    """A verification row as `trtforge verify` records it."""
    add_verification_row(store, artifact_id, gpu, status)


def test_gc_never_removes_the_only_verified_artifact_without_force(opened: Store) -> None:
    """ "Verified" means: the newest verification on some GPU model passed. With --force it goes,
    with its verification rows (fails on 55eb6bf: execute_gc raised a foreign-key IntegrityError)."""
    verified = _add(opened, "det", b"verified", age_days=20)
    _verify(opened, verified.id, "NVIDIA A10G", "passed")
    _verify(opened, verified.id, "NVIDIA L4", "failed")
    newer = _add(opened, "det", b"newer", age_days=10)
    plan = plan_gc(opened, GcPolicy(older_than_days=5))
    assert [a.artifact_id for a in plan.artifacts] == [newer.id]
    assert [k.artifact_id for k in plan.kept] == [verified.id]
    assert "the only artifact of det verified on any GPU model (passed on NVIDIA A10G)" in plan.warnings[0]
    forced = plan_gc(opened, GcPolicy(older_than_days=5, force=True))
    assert {a.artifact_id for a in forced.artifacts} == {verified.id, newer.id}
    assert execute_gc(opened, forced)["artifacts_removed"] == 2
    assert _ids(opened) == set() and opened.catalog.verifications(verified.id) == []
    assert scan_store(opened).findings == ()


def test_a_later_failed_verification_is_not_verified_for_gc(opened: Store) -> None:
    old = _add(opened, "det", b"old", age_days=20)
    _verify(opened, old.id, "NVIDIA A10G", "passed")
    _verify(opened, old.id, "NVIDIA A10G", "failed")  # the newest result on that GPU model decides
    plan = plan_gc(opened, GcPolicy(older_than_days=5))
    assert [a.artifact_id for a in plan.artifacts] == [old.id] and plan.kept == ()
    execute_gc(opened, plan)
    assert _ids(opened) == set()


def test_gc_removes_verified_artifacts_with_their_verifications(cli, tmp_path: Path) -> None:
    """Fails on 55eb6bf: `gc` died with a foreign-key IntegrityError traceback on verified artifacts."""
    store_dir = tmp_path / "store"
    opened = open_store(store_dir)
    try:
        old = [_add(opened, "det", f"plan{i}".encode(), age_days=30 + i) for i in range(2)]
        keep = _add(opened, "det", b"newest", age_days=1)
        for artifact in [*old, keep]:
            _verify(opened, artifact.id, "NVIDIA A10G", "passed")
    finally:
        opened.close()
    result = cli("gc", "--keep-last", "1", "--store", store_dir, "--json")
    assert result.code == 0 and "Traceback" not in result.stderr, result
    assert result.json()["result"]["artifacts_removed"] == 2
    with sqlite3.connect(store_dir / "catalog.sqlite") as conn:
        assert conn.execute("SELECT DISTINCT artifact_id FROM verifications").fetchall() == [(keep.id,)]
    assert [row["artifact_id"] for row in cli("list", "--store", store_dir, "--json").json()] == [keep.id]
    check = cli("fsck", "--store", store_dir, "--json")
    assert check.code == 0 and check.json()["corrupt"] == check.json()["missing"] == [], check


def test_pinned_artifacts_survive_gc_even_forced_and_when_pinned_after_planning(cli, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    opened = open_store(store_dir)
    try:
        old = _add(opened, "det", b"old", age_days=30)
        late = _add(opened, "det", b"late", age_days=20)
        _add(opened, "det", b"newest", age_days=1)
        _verify(opened, old.id, "NVIDIA A10G", "passed")
    finally:
        opened.close()
    pinned = cli("pin", old.id[:8], "--store", store_dir, "--json")
    assert pinned.code == 0, pinned
    assert {k: pinned.json()[k] for k in ("artifact_id", "pinned", "changed")} == {
        "artifact_id": old.id,
        "pinned": True,
        "changed": True,
    }, pinned
    assert cli("pin", old.id, "--store", store_dir, "--json").json()["changed"] is False
    assert cli("list", "--store", store_dir, "--json").json()[-1]["pinned"] is True

    dry = cli("gc", "--keep-last", "1", "--force", "--dry-run", "--store", store_dir, "--json").json()["plan"]
    assert [a["artifact_id"] for a in dry["artifacts"]] == [late.id]
    assert [(k["artifact_id"], k["reason"]) for k in dry["kept"]] == [(old.id, "pinned")]
    assert any("pinned" in w and "trtforge unpin" in w for w in dry["warnings"])

    opened = open_store(store_dir)
    try:
        plan = plan_gc(opened, GcPolicy(keep_last=1, force=True))
        opened.catalog.set_pinned(late.id, True)  # a service pins it between planning and deleting
        assert execute_gc(opened, plan)["artifacts_removed"] == 0
        assert opened.blobs.verify(late.plan_sha256) and late.id in _ids(opened)
    finally:
        opened.close()

    assert cli("unpin", old.id, "--store", store_dir, "--json").json()["pinned"] is False
    assert cli("unpin", late.id, "--store", store_dir).code == 0
    removed = cli("gc", "--keep-last", "1", "--force", "--store", store_dir, "--json")
    assert removed.code == 0 and removed.json()["result"]["artifacts_removed"] == 2, removed
    missing = cli("pin", "abcdef123456", "--store", store_dir)
    assert missing.code == 2 and missing.stderr.startswith("error: no artifact"), missing


def test_gc_older_than_more_days_than_dates_span_removes_nothing_by_age(cli, store: Path) -> None:
    """Fails on 386a244: `gc --older-than 1000000` (or 1e10, 1e300) crashed with OverflowError
    computing the cut-off date, and inf/nan did too, `--json` printing nothing. A finite age no date
    reaches means nothing is that old: the plan is that of a century; a non-finite one is bad
    input (exit 2, one line and a hint) and changes nothing."""
    opened = open_store(store)
    try:
        old = _add(opened, "det", b"old plan", age_days=400)
        _add(opened, "det", b"new plan", age_days=1)
    finally:
        opened.close()
    century = cli("gc", "--older-than", "36500", "--keep-last", "0", "--dry-run", "--store", store, "--json")
    year = cli("gc", "--older-than", "365", "--keep-last", "0", "--dry-run", "--store", store, "--json")
    assert century.code == 0 and year.code == 0, (century, year)
    assert [a["artifact_id"] for a in year.json()["plan"]["artifacts"]] == [old.id]  # age does select
    for days in ("1000000", "1e10", "1e300"):
        dry = cli("gc", "--older-than", days, "--keep-last", "0", "--dry-run", "--store", store, "--json")
        assert dry.code == 0 and dry.json()["plan"] == century.json()["plan"], (days, dry)
    done = cli("gc", "--older-than", "1e300", "--store", store, "--json")
    assert done.code == 0 and done.json()["result"]["artifacts_removed"] == 0, done
    listed = cli("list", "--store", store, "--json").json()
    for days in ("inf", "nan"):
        for json_flag in ((), ("--json",)):
            refused = cli("gc", "--older-than", days, "--store", store, *json_flag)
            assert refused.code == 2 and "Traceback" not in refused.stderr, (days, refused)
            if json_flag:
                assert refused.json()["error_kind"] == "bad_input" and refused.json()["hint"], refused
            else:
                assert "--older-than" in refused.stderr, refused
    assert cli("list", "--store", store, "--json").json() == listed


def test_gc_removes_old_orphans_and_corrupt_artifacts_but_not_fresh_orphans(opened: Store) -> None:
    keep = _add(opened, "keep", b"keep")
    bad = _add(opened, "bad", b"bad")
    _damage(opened, bad.plan_sha256)
    execute_repair(opened, plan_repair(scan_store(opened)))
    fresh = opened.blobs.put_bytes(b"a build is about to record me")
    old = opened.blobs.put_bytes(b"left by a crash")
    path = opened.blobs.path_for(old.sha256)
    os.utime(path, (time.time() - 7200, time.time() - 7200))
    plan = plan_gc(opened, GcPolicy())
    assert [a.artifact_id for a in plan.artifacts] == [bad.id]
    assert {b.sha256 for b in plan.blob_files} == {old.sha256}
    execute_gc(opened, plan)
    assert _ids(opened) == {keep.id}
    assert opened.blobs.exists(fresh.sha256) and not opened.blobs.exists(old.sha256)


def test_gc_judges_the_grace_period_again_when_it_unlinks(opened: Store) -> None:
    """A blob old when gc planned but written or reused (touched) since, by a writer outside the
    fence, stays: the grace period is judged at unlink time. Fails on 843520b (judged at planning)."""
    old = opened.blobs.put_bytes(b"left by a crash, then reused")
    path = opened.blobs.path_for(old.sha256)
    os.utime(path, (time.time() - 7200, time.time() - 7200))
    plan = plan_gc(opened, GcPolicy())
    assert {b.sha256 for b in plan.blob_files} == {old.sha256}
    opened.blobs.put_bytes(b"left by a crash, then reused")  # reused: touched, its row not yet written
    assert execute_gc(opened, plan)["blob_files_removed"] == 0
    assert opened.blobs.exists(old.sha256)


def test_cli_fsck_repair_then_rebuild(cli, mlp_recipe, store: Path) -> None:
    recipe = mlp_recipe("fix")
    first = cli("build", recipe, "--store", store, "--json")
    assert first.code == 0, first
    [built] = first.json()
    plan = Path(built["plan_path"])
    plan.chmod(0o644)
    with open(plan, "r+b") as handle:  # flip one byte in the middle of the engine
        handle.seek(plan.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    check = cli("fsck", "--store", store, "--json")
    assert check.code == 1 and check.json()["corrupt"][0]["artifact_ids"] == [built["artifact_id"]], check
    repaired = cli("fsck", "--repair", "--store", store, "--json")
    assert repaired.code == 0 and repaired.json()["repair"]["marked_corrupt"] == [built["artifact_id"]]
    again = cli("build", recipe, "--store", store, "--json")
    assert again.code == 0 and again.json()[0]["status"] == "built", again  # a corrupt hit is not reused
    assert cli("fsck", "--store", store, "--json").code == 0
    dry = cli("gc", "--dry-run", "--store", store, "--json")
    assert dry.code == 0 and [a["artifact_id"] for a in dry.json()["plan"]["artifacts"]] == [built["artifact_id"]]
    with sqlite3.connect(store / "catalog.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM artifacts").fetchone()[0] == 2  # dry run changed nothing
    assert cli("gc", "--store", store).code == 0
    listed = cli("list", "--store", store, "--json").json()
    assert [row["artifact_id"] for row in listed] == [again.json()[0]["artifact_id"]]


@pytest.mark.parametrize("damage", ["corrupted", "deleted"])
def test_fsck_repair_mends_lost_timing_cache_and_reference_blobs(cli, store: Path, damage: str) -> None:
    """A timing-cache version (recorded as builds record them) and stored reference outputs whose
    blobs are damaged or gone: one `fsck --repair` drops those cache rows (a build or a verify
    makes them again) and leaves a store the next fsck calls clean; a second repair does nothing.

    Fails on 386a244: only artifacts counted as users of a blob, so a corrupted blob was
    quarantined under rows still naming it (the next fsck: "missing"), and repairing a missing one
    deleted its blob row under those rows (a FOREIGN KEY traceback).
    """
    opened = open_store(store)
    try:
        key = CacheKey("tensorrt", "10.13.3.9", "NVIDIA A10G", "8.6")
        cache = TimingCaches(opened)._append(key, b"timing cache v1", None, source="build", artifact_id=None)
        ref = opened.blobs.put_bytes(b"reference outputs")
        row = ReferenceOutput(key="r" * 64, model_sha256="m" * 64, blob_sha256=ref.sha256, details={})
        opened.catalog.add_reference(row, Blob(sha256=ref.sha256, size=ref.size, kind="reference"))
        lost = sorted([cache.blob_sha256, ref.sha256])
        for sha in lost:
            if damage == "corrupted":
                _damage(opened, sha)
            else:
                opened.blobs.path_for(sha).unlink()
    finally:
        opened.close()
    found = cli("fsck", "--store", store, "--json")
    problem = "corrupt" if damage == "corrupted" else "missing"
    assert found.code == 1 and sorted(f["sha256"] for f in found.json()[problem]) == lost, found
    first = cli("fsck", "--repair", "--store", store, "--json")
    assert first.code == 0, first
    after = cli("fsck", "--store", store, "--json")
    assert after.code == 0 and after.json()["corrupt"] == after.json()["missing"] == [], after
    second = cli("fsck", "--repair", "--store", store, "--json")
    assert second.code == 0 and not any(second.json()["repair"].values()), second
    done = first.json()["repair"]
    assert done["dropped_timing_caches"] == [cache.id] and done["dropped_reference_outputs"] == ["r" * 64]
    assert cli("cache", "list", "--store", store, "--json").json() == []


@pytest.mark.slow  # seconds each: README's test command keeps its 5-minute cap (.ci/run runs it)
@pytest.mark.parametrize("damage", ["truncated", "grown"])
def test_a_hit_on_a_blob_of_the_wrong_size_rebuilds_and_marks_it(cli, mlp_recipe, store: Path, damage: str) -> None:
    """A cache hit compares the blob's size with its record (a stat, no hashing): a mismatch is a
    damaged plan, never handed out; it is marked corrupt and the recipe is built again.

    Fails on 843520b: `build` reported `cached` with the path of the damaged blob (only lookup,
    export and deploy checked it).
    """
    recipe = mlp_recipe("sized")
    [built] = cli("build", recipe, "--store", store, "--json").json()
    plan = Path(built["plan_path"])
    data = plan.read_bytes()
    plan.chmod(0o644)
    plan.write_bytes(data[: len(data) // 2] if damage == "truncated" else data + b"\0")
    for _ in range(2):  # the remembered resolution (quick path), then the full path, both refuse it
        again = cli("build", recipe, "--store", store, "--json")
        assert again.code == 0, again
        [rebuilt] = again.json()
        if rebuilt["status"] == "cached":
            assert rebuilt["artifact_id"] != built["artifact_id"], rebuilt  # never the damaged one
        else:
            assert rebuilt["status"] == "built" and "marked corrupt" in again.stderr, again
    shown = cli("show", built["artifact_id"], "--store", store, "--json").json()
    assert shown["integrity"] == "corrupt" and shown["status"] == "corrupt"
    assert BlobStore(store).verify(rebuilt["plan_sha256"])  # the new row's plan is whole
    assert Path(rebuilt["plan_path"]).stat().st_size == len(data)


def test_gc_fence_spans_runners_sharing_a_postgresql_catalog(postgres_catalog: str) -> None:
    """Runners share the catalog and the bucket but not ``locks/``: on PostgreSQL the fence is an
    advisory lock. Builds (shared) do not wait for each other; gc (exclusive) waits for them."""
    import threading

    from trtforge.store.catalog import Catalog

    runner_a, runner_b, runner_gc = Catalog(postgres_catalog), Catalog(postgres_catalog), Catalog(postgres_catalog)
    heard: list[str] = []
    waiting, inside = threading.Event(), threading.Event()

    def notify(message: str) -> None:
        heard.append(message)
        waiting.set()

    def gc() -> None:
        with runner_gc.gc_fence(exclusive=True, notify=notify):
            inside.set()

    try:
        with runner_a.gc_fence(exclusive=False, notify=notify):
            with runner_b.gc_fence(exclusive=False, notify=notify):
                assert heard == []  # two builds recording blobs at once
            thread = threading.Thread(target=gc)
            thread.start()
            assert waiting.wait(timeout=60)
            assert heard == ["waiting for builds to record their blobs (another runner)"]
            assert not inside.is_set()
        thread.join(timeout=60)
        assert inside.is_set()
    finally:
        for catalog in (runner_a, runner_b, runner_gc):
            catalog.close()


def test_a_verification_after_fsck_repair_never_makes_a_corrupt_artifact_usable(cli, mlp_recipe, store: Path) -> None:
    """Integrity and verification are separate facts (fails on 55eb6bf: the verification set the
    artifact's one status column to "passed", so it was a cache hit and shown as passed again)."""
    from trtforge.stages.verify import OnnxModelCandidate, RuntimeInfo, check, subject_from_artifact
    from trtforge.store.sqlite_hits import probe_cached_plan

    recipe = mlp_recipe("late")
    [built] = cli("build", recipe, "--store", store, "--json").json()
    plan = Path(built["plan_path"])
    plan.chmod(0o644)
    plan.write_bytes(b"damaged on disk")
    assert cli("fsck", "--repair", "--store", store, "--json").json()["repair"]["marked_corrupt"] == [
        built["artifact_id"]
    ]
    opened = open_store(store)
    try:  # a verification that was already running records its (real, ONNX Runtime) result afterwards
        artifact = opened.catalog.get_artifact(built["artifact_id"])
        runtime = RuntimeInfo("NVIDIA GeForce RTX 4090", "8.9", "tensorrt_rtx", artifact.trt_version)
        subject = subject_from_artifact(artifact)
        assert check(subject, OnnxModelCandidate(subject.model_path), runtime, store=opened).status == "passed"
        assert opened.catalog.statuses(artifact.id) == {runtime.gpu_name: "passed"}
        assert opened.catalog.find_by_build_key(built["build_key"]) is None  # not a cache hit
    finally:
        opened.close()
    assert probe_cached_plan(store / "catalog.sqlite", built["build_key"]).plan is None  # the hit path agrees

    [listed] = cli("list", "--store", store, "--json").json()
    assert (listed["status"], listed["integrity"]) == ("corrupt", "corrupt"), listed
    target = ("--gpu", runtime.gpu_name, "--cc", "8.9", "--flavor", "tensorrt_rtx", "--trt", artifact.trt_version)
    found = cli("lookup", "late", *target, "--store", store, "--explain", "--json")
    assert found.code == 1 and "marked corrupt" in found.json()["error"], found

    rebuilt = cli("build", recipe, "--store", store, "--json").json()[0]
    assert rebuilt["status"] == "built" and rebuilt["artifact_id"] != built["artifact_id"], rebuilt
    gc = cli("gc", "--store", store, "--json")  # no --force needed: corrupt is never "the only verified"
    assert gc.code == 0 and [a["artifact_id"] for a in gc.json()["plan"]["artifacts"]] == [built["artifact_id"]], gc
    assert gc.json()["plan"]["artifacts"][0]["status"] == "corrupt"
    check_after = cli("fsck", "--store", store, "--json")
    assert check_after.code == 0 and check_after.json()["warnings"] == [], check_after
    assert [row["artifact_id"] for row in cli("list", "--store", store, "--json").json()] == [rebuilt["artifact_id"]]


def test_a_writer_inside_the_fence_does_not_queue_behind_a_waiting_gc(postgres_catalog: str, tmp_path: Path) -> None:
    """A build records its timing cache inside its own fence. On PostgreSQL a second shared lock
    from another session queues behind a waiting exclusive one (gc on another runner), which waits
    for the first: the writer would hang with gc. The fence is re-entrant per store instead."""
    import threading

    builder = open_store(tmp_path / "runner-a", catalog=postgres_catalog)
    collector = open_store(tmp_path / "runner-b", catalog=postgres_catalog)  # shares only the catalog
    gc_waits, nested_done = threading.Event(), threading.Event()

    def gc() -> None:
        with collector.collecting_blobs(notify=lambda _message: gc_waits.set()):
            pass

    def nested() -> None:
        with builder.recording_blobs():
            nested_done.set()

    try:
        with builder.recording_blobs():
            collecting = threading.Thread(target=gc)
            collecting.start()
            assert gc_waits.wait(60), "gc did not wait for the build's fence"
            threading.Thread(target=nested, daemon=True).start()
            assert nested_done.wait(30), "a writer inside its own fence queued behind the waiting gc"
        collecting.join(60)
        assert not collecting.is_alive()
    finally:
        builder.close()
        collector.close()

