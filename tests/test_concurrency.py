"""Many real build processes on one store: single flight per key, parallel keys, no lost rows."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.procs import CrashPoint, finish, hold_in_child, release, start_build
from trtforge.core.errors import StoreError
from trtforge.store import fs, open_store

pytestmark = pytest.mark.slow  # many processes building at once (.ci/run: pytest -m slow)

PROCESSES = 8
RECIPES_PER_PROCESS = 20


def _artifact_rows(store: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(store / "catalog.sqlite") as conn:
        return conn.execute("SELECT id, build_key, plan_sha256 FROM artifacts").fetchall()


def test_same_key_from_many_processes_builds_once(mlp_recipe: Callable[..., Path], store: Path) -> None:
    recipe = mlp_recipe("shared")
    procs = [start_build(recipe, "--store", store, "--json") for _ in range(PROCESSES)]
    outcomes = [finish(p) for p in procs]
    assert all(code == 0 for code, _, _ in outcomes), outcomes
    statuses = Counter(data[0]["status"] for _, data, _ in outcomes)
    assert statuses == {"built": 1, "cached": PROCESSES - 1}
    assert len({data[0]["artifact_id"] for _, data, _ in outcomes}) == 1
    assert len(_artifact_rows(store)) == 1


def test_waiters_name_the_holder_and_take_over_when_it_dies(
    mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path
) -> None:
    recipe = mlp_recipe("held")
    point = CrashPoint(tmp_path / "cp", "build-locked")
    holder = start_build(recipe, "--store", store, "--json", env=point.env)
    holder_pid = point.wait_reached(holder)
    waiters = [start_build(recipe, "--store", store, "--json") for _ in range(3)]
    for waiter in waiters:  # each says whom it waits for before the holder is killed
        line = waiter.stderr.readline()
        assert "waiting for build of held (" in line and f"by pid {holder_pid} on host " in line, line
    holder.send_signal(signal.SIGKILL)
    assert holder.wait() == -signal.SIGKILL
    point.close()
    outcomes = [finish(w) for w in waiters]
    assert all(code == 0 for code, _, _ in outcomes), outcomes
    assert Counter(data[0]["status"] for _, data, _ in outcomes) == {"built": 1, "cached": 2}
    takeovers = [err for _, _, err in outcomes if f"left by crashed pid {holder_pid} on host" in err]
    assert len(takeovers) == 1, [err for _, _, err in outcomes]
    assert len(_artifact_rows(store)) == 1
    assert not list((store / "locks").glob("*.lock"))


def test_many_processes_many_keys(mlp_recipe: Callable[..., Path], store: Path) -> None:
    batches = [
        [mlp_recipe(f"p{p}-r{r}", seed=p * RECIPES_PER_PROCESS + r) for r in range(RECIPES_PER_PROCESS)]
        for p in range(PROCESSES)
    ]
    procs = [start_build(*batch, "--store", store, "--json") for batch in batches]
    outcomes = [finish(p) for p in procs]
    assert all(code == 0 for code, _, _ in outcomes), [err[-2000:] for _, _, err in outcomes]
    results = [r for _, data, _ in outcomes for r in data]
    assert Counter(r["status"] for r in results) == {"built": PROCESSES * RECIPES_PER_PROCESS}
    assert not any("database is locked" in err for _, _, err in outcomes)
    rows = _artifact_rows(store)
    assert len(rows) == PROCESSES * RECIPES_PER_PROCESS
    assert len({key for _, key, _ in rows}) == len(rows)  # no duplicate builds
    assert {r["artifact_id"] for r in results} == {row_id for row_id, _, _ in rows}
    for _, _, sha in rows:
        assert (store / "blobs" / "sha256" / sha[:2] / sha).is_file()


NFS_MOUNTINFO = """\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
96 22 0:52 / {point} rw,relatime shared:50 - nfs4 fileserver:/export/ci rw,vers=4.2
"""


def test_sqlite_catalog_on_network_fs_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(NFS_MOUNTINFO.format(point=tmp_path / "shared"))
    monkeypatch.setattr(fs, "MOUNTINFO", mountinfo)
    with pytest.raises(StoreError, match=r"network file system \(nfs4 from fileserver:/export/ci\)") as info:
        open_store(tmp_path / "shared" / "store")
    assert "PostgreSQL" in (info.value.hint or "")
    assert not (tmp_path / "shared").exists()
    open_store(tmp_path / "local").close()  # the same machine's local disk is fine


def test_mountinfo_parsing_picks_the_deepest_mount(tmp_path: Path) -> None:
    text = NFS_MOUNTINFO.format(point="/mnt/with\\040space")
    text += "97 96 0:53 / /mnt/with\\040space/in rw - ext4 /dev/x rw\n"
    assert fs.mount_of(Path("/mnt/with space/a/b"), text).fs_type == "nfs4"
    assert fs.mount_of(Path("/mnt/with space/in/c"), text).fs_type == "ext4"
    assert fs.mount_of(Path("/mnt/with spaces"), text).fs_type == "ext4"
    assert fs.mount_of(Path("/mnt/with space/a"), text).is_network


def test_a_running_build_is_not_disturbed_by_a_concurrent_open(store: Path) -> None:
    """Temp files and work directories whose writer holds their lock are live, whatever pid their
    name carries (a writer in another pid namespace); unlocked ones are a dead writer's, removed on open.

    Fails on 55eb6bf: liveness came from the pid in the name, so the held file named by a pid
    that is dead here was removed and the unlocked one named by pid 1 was kept.
    """
    from trtforge.store.blobs import scan_temp_files

    open_store(store).close()
    incoming = store / "blobs" / "sha256" / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    work = store / "tmp"
    work.mkdir(exist_ok=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname().replace("-", "_")
    live = incoming / f".tmp-{dead.pid}@{host}-abc"  # named by a dead pid, held by a live writer
    live.write_bytes(b"partial")
    live_dir = work / f".tmp-{dead.pid}@{host}-import"
    live_dir.mkdir()
    leftover = incoming / f".tmp-1@{host}-xyz"  # pid 1 is alive, but nobody holds the file
    leftover.write_bytes(b"partial")
    leftover_dir = work / f".tmp-1@{host}-import"
    leftover_dir.mkdir()
    writer = hold_in_child(live, live_dir)
    try:
        assert [t.path.name for t in scan_temp_files(incoming)] == [leftover.name]
        open_store(store).close()
        assert sorted(p.name for p in incoming.iterdir()) == [live.name]
        assert sorted(p.name for p in work.iterdir()) == [live_dir.name]
    finally:
        release(writer)
    open_store(store).close()  # the writer is gone: now its leftovers go too
    assert list(incoming.iterdir()) == [] and list(work.iterdir()) == []
