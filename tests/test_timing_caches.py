"""Timing caches: store/catalog side with real serialized bytes, concurrent merges under the
lock, history, corrupt caches, export/import refusal, prune, and `build --reproduce`.

TensorRT-RTX (the backend installed here) has no timing cache: its ITimingCache calls are
no-ops. The bytes it serializes are real, so they are used as cache contents; the merge
function given to the store appends entries it has not seen (separated by SEP), because the
point of these tests is the read-merge-write protocol, not TensorRT's combine.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from tests import onnx_models
from tests.conftest import subprocess_env
from trtforge.backend.loader import import_backend
from trtforge.core.errors import BadInputError, IntegrityError
from trtforge.resolution.timing_cache_policy import DENY_ISOLATED, RTX_NO_OP, finish, start
from trtforge.rules.flavors import find_backend
from trtforge.rules.recipe import parse_recipe
from trtforge.rules.target import BuildTarget
from trtforge.stages.timing_caches import export_cache, import_cache, read_export
from trtforge.store import open_store
from trtforge.store.timing_caches import CacheKey, TimingCaches

KEY = CacheKey("tensorrt", "10.13.3.9", "NVIDIA A10G", "8.6")
OTHER_GPU = CacheKey("tensorrt", "10.13.3.9", "NVIDIA L4", "8.9")
TARGET = BuildTarget("tensorrt", "10.13.3.9", "NVIDIA A10G", ("8.6",))
RECIPE = "name: n\nmodel: {onnx: m.onnx}\nprofiles:\n  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}\n"


SEP = b"\n--entry--\n"


def union(base: bytes | None, new: bytes) -> bytes:
    if not base:
        return new
    return base if new in base.split(SEP) else base + SEP + new


@pytest.fixture(scope="module")
def rtx_cache_bytes() -> bytes:
    """A timing cache serialized by the installed TensorRT-RTX (an empty one: its caches are no-ops)."""
    trt = import_backend(find_backend("tensorrt_rtx"))
    config = trt.Builder(trt.Logger(trt.Logger.ERROR)).create_builder_config()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "timing cache operations are no-ops"
        data = bytes(memoryview(config.create_timing_cache(b"").serialize()).cast("B"))
    assert data
    return data


def test_merges_make_a_history_and_never_overwrite(store: Path, rtx_cache_bytes: bytes) -> None:
    opened = open_store(store)
    caches = TimingCaches(opened)
    first = caches.merge_in(KEY, rtx_cache_bytes, union)
    assert first.generation == 1 and first.parent_id is None
    assert caches.merge_in(KEY, rtx_cache_bytes, union).id == first.id  # nothing new: no new version
    second = caches.merge_in(KEY, b"entry-b", union, artifact_id="a" * 32)
    assert (second.generation, second.parent_id, second.artifact_id) == (2, first.id, "a" * 32)
    assert [r.id for r in caches.history(KEY)] == [second.id, first.id]
    assert opened.blobs.read_verified(first.blob_sha256) == rtx_cache_bytes  # old version intact
    assert opened.blobs.read_verified(second.blob_sha256).split(SEP) == [rtx_cache_bytes, b"entry-b"]
    assert caches.latest(OTHER_GPU) is None
    assert [r.id for r in caches.list()] == [second.id]
    assert len(caches.list(all_versions=True)) == 2


WRITER = """
import sys
from trtforge.store import open_store
from trtforge.store.timing_caches import CacheKey, TimingCaches

SEP = b"\\n--entry--\\n"

def union(base, new):
    if not base:
        return new
    return base if new in base.split(SEP) else base + SEP + new

store, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
caches = TimingCaches(open_store(store))
for i in range(count):
    caches.merge_in(CacheKey("tensorrt", "10.13.3.9", "NVIDIA A10G", "8.6"), f"{name}-{i}".encode(), union)
"""


def test_concurrent_writers_lose_no_entries(store: Path, tmp_path: Path) -> None:
    open_store(store).close()  # create the catalog once, before the writers race
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writers = [
        subprocess.Popen(
            [sys.executable, str(script), str(store), f"w{n}", "6"], env=subprocess_env(), stderr=subprocess.PIPE
        )
        for n in range(4)
    ]
    for proc in writers:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    opened = open_store(store)
    caches = TimingCaches(opened)
    latest = caches.latest(KEY)
    assert latest is not None
    entries = set(opened.blobs.read_verified(latest.blob_sha256).split(SEP))
    assert entries == {f"w{n}-{i}".encode() for n in range(4) for i in range(6)}
    assert sorted(r.generation for r in caches.history(KEY)) == list(range(1, 25))


def test_build_records_the_cache_it_started_from(store: Path, rtx_cache_bytes: bytes) -> None:
    opened = open_store(store)
    recipe = parse_recipe(RECIPE)
    empty = start(lambda: opened, recipe, TARGET)
    assert empty.active and empty.data is None
    first = finish(opened, empty, rtx_cache_bytes, False, "1" * 32, union)
    assert first["started_from"] is None and first["merged_into"]

    begun = start(lambda: opened, recipe, TARGET)
    assert begun.data == rtx_cache_bytes and begun.blob_sha256 == first["merged_into"]
    second = finish(opened, begun, b"new-entry", True, "2" * 32, union)
    assert second["started_from"] == first["merged_into"] and second["merged_into"] != first["merged_into"]

    rejected = finish(opened, start(lambda: opened, recipe, TARGET), b"x", False, "3" * 32, union)
    assert rejected["started_from"] is None and rejected["rejected"] == second["merged_into"]

    private = parse_recipe(RECIPE + "build: {timing_cache: private}\n")
    begun = start(lambda: opened, private, TARGET)
    assert begun.data is None
    record = finish(opened, begun, b"private-entries", False, "4" * 32, union)
    assert opened.blobs.read_verified(record["produced"]) == b"private-entries"
    assert TimingCaches(opened).latest(KEY).blob_sha256 == rejected["merged_into"]  # shared cache untouched

    off = start(lambda: opened, parse_recipe(RECIPE + "build: {timing_cache: off}\n"), TARGET)
    assert not off.active and off.skipped == "timing_cache: off"


DENY = "tactics:\n  deny: [{layer: 'conv*', tactic: '0x665ded9abbf88', reason: 'drifts 3e-2 from ONNX Runtime'}]\n"


@pytest.mark.parametrize("policy", ["shared", "private"])
def test_deny_list_builds_neither_read_nor_write_the_shared_cache(store: Path, policy: str) -> None:
    """An edited (deny-enforcing) cache merged into the shared one would impose it on other recipes."""
    opened = open_store(store)
    shared = TimingCaches(opened).merge_in(KEY, b"shared-entries", union)
    recipe = parse_recipe(RECIPE + DENY + f"build: {{timing_cache: {policy}}}\n")
    begun = start(lambda: opened, recipe, TARGET)
    assert begun.active and begun.data is None and begun.blob_sha256 is None
    record = finish(opened, begun, b"edited-entries", False, "5" * 32, union)
    assert record["isolated"] == DENY_ISOLATED and record["started_from"] is None
    assert opened.blobs.read_verified(record["produced"]) == b"edited-entries"  # kept on the artifact
    assert "merged_into" not in record
    assert TimingCaches(opened).latest(KEY).id == shared.id
    assert [r.generation for r in TimingCaches(opened).history(KEY)] == [shared.generation]

    off = start(lambda: opened, parse_recipe(RECIPE + DENY + "build: {timing_cache: off}\n"), TARGET)
    assert not off.active  # off still means no cache at all


def test_corrupt_cache_is_logged_and_skipped(store: Path, rtx_cache_bytes: bytes, caplog) -> None:
    opened = open_store(store)
    row = TimingCaches(opened).merge_in(KEY, rtx_cache_bytes, union)
    path = opened.blobs.path_for(row.blob_sha256)
    os.chmod(path, 0o644)
    path.write_bytes(b"flipped bits")
    with caplog.at_level(logging.WARNING):
        begun = start(lambda: opened, parse_recipe(RECIPE), TARGET)
    assert begun.active and begun.data is None and begun.blob_sha256 is None
    assert "skipped" in caplog.text and "corrupted" in caplog.text


def test_tensorrt_rtx_builds_skip_timing_caches(cli, mlp_recipe, store: Path) -> None:
    recipe = mlp_recipe()
    [built] = cli("build", recipe, "--store", store, "--json").json()
    record = cli("show", built["artifact_id"], "--store", store, "--json").json()
    assert record["details"]["timing_cache"]["skipped"] == RTX_NO_OP
    assert record["details"]["timing_cache"]["started_from"] is None
    assert cli("cache", "list", "--store", store, "--json").json() == []


def test_export_and_import(store: Path, tmp_path: Path, rtx_cache_bytes: bytes) -> None:
    opened = open_store(store)
    row = TimingCaches(opened).merge_in(KEY, rtx_cache_bytes, union)
    dest = tmp_path / "out" / "a10g.cache"
    dest.parent.mkdir()
    info = export_cache(opened, row.id[:8], dest)
    assert dest.read_bytes() == rtx_cache_bytes and info["gpu_name"] == "NVIDIA A10G"
    assert read_export(dest) == (KEY, rtx_cache_bytes)

    with pytest.raises(BadInputError) as refused:
        import_cache(opened, dest, OTHER_GPU, union)
    message = refused.value.message
    assert "gpu_name 'NVIDIA A10G' (here 'NVIDIA L4')" in message and "compute_capability '8.6'" in message
    newer = CacheKey("tensorrt", "10.14.1.48", "NVIDIA A10G", "8.6")
    with pytest.raises(BadInputError, match=r"trt_version '10.13.3.9' \(here '10.14.1.48'\)"):
        import_cache(opened, dest, newer, union)

    other_store = open_store(tmp_path / "other")
    imported = import_cache(other_store, dest, KEY, union)
    assert imported.source == "import" and imported.blob_sha256 == row.blob_sha256

    dest.write_bytes(rtx_cache_bytes + b"tampered")
    with pytest.raises(IntegrityError):
        read_export(dest)
    (tmp_path / "out" / "a10g.cache.json").unlink()
    with pytest.raises(BadInputError, match="not found"):
        read_export(dest)


def test_cache_cli_list_export_import_prune(cli, store: Path, tmp_path: Path, rtx_cache_bytes: bytes) -> None:
    caches = TimingCaches(open_store(store))
    for entry in (rtx_cache_bytes, b"b", b"c"):
        caches.merge_in(KEY, entry, union)
    listed = cli("cache", "list", "--store", store, "--json")
    assert listed.code == 0, listed
    [newest] = listed.json()
    assert newest["generation"] == 3 and newest["gpu_name"] == "NVIDIA A10G"
    assert len(cli("cache", "list", "--all", "--store", store, "--json").json()) == 3
    assert "NVIDIA A10G" in cli("cache", "list", "--store", store).stdout

    dest = tmp_path / "c.cache"
    exported = cli("cache", "export", newest["cache_id"][:8], "-o", dest, "--store", store, "--json")
    assert exported.code == 0 and exported.json()["blob_sha256"] == newest["blob_sha256"], exported
    assert json.loads((tmp_path / "c.cache.json").read_text())["trt_version"] == "10.13.3.9"

    # The cache is for an A10G with TensorRT 10.13.3.9: import refuses it here and says why (no full
    # TensorRT, or no GPU, or another TensorRT/GPU: on a GPU machine the key differs).
    refused = cli("cache", "import", dest, "--store", store, "--json")
    reasons = ("timing caches need full TensorRT", "no NVIDIA GPU was found", "not this machine")
    assert refused.code == 2 and any(r in refused.json()["error"] for r in reasons), refused

    dry = cli("cache", "prune", "--store", store, "--dry-run", "--json").json()
    assert len(dry["rows"]) == 2 and dry["dry_run"] is True
    assert len(cli("cache", "list", "--all", "--store", store, "--json").json()) == 3
    done = cli("cache", "prune", "--store", store, "--json").json()
    assert len(done["rows"]) == 2 and len(done["blobs"]) == 2
    assert [r["generation"] for r in cli("cache", "list", "--all", "--store", store, "--json").json()] == [3]
    assert all(not open_store(store).blobs.exists(sha) for sha in done["blobs"])


@pytest.mark.parametrize("in_the_way", ["c.cache", "c.cache.json"])
def test_cache_export_that_cannot_write_leaves_no_half_export(
    cli, store: Path, tmp_path: Path, rtx_cache_bytes: bytes, in_the_way: str
) -> None:
    row = TimingCaches(open_store(store)).merge_in(KEY, rtx_cache_bytes, union)
    out = tmp_path / "out"
    (out / in_the_way).mkdir(parents=True)  # a directory where the export writes a file
    before = sorted(p.name for p in out.iterdir())

    refused = cli("cache", "export", row.id[:8], "-o", out / "c.cache", "--store", store, "--json")

    assert refused.code == 2, refused
    assert f"cannot write {out / in_the_way}" in refused.json()["error"] and "Traceback" not in refused.stderr
    assert [line.split(":")[0] for line in refused.stderr.splitlines()] == ["error", "hint"]
    assert sorted(p.name for p in out.iterdir()) == before
    assert cli("fsck", "--store", store).code == 0


def test_reproduce_reports_identical_plans(cli, mlp_recipe, store: Path) -> None:
    recipe = mlp_recipe()
    recipe.write_text(recipe.read_text() + "tactics: {sources: [jit_convolutions]}\n")
    [built] = cli("build", recipe, "--store", store, "--json").json()
    result = cli("build", "--reproduce", built["artifact_id"], "--store", store, "--json")
    assert result.code == 0, result
    report = result.json()
    assert report["identical"] is True and report["rebuilt_sha256"] == built["plan_sha256"]
    human = cli("build", "--reproduce", built["artifact_id"][:8], "--store", store)
    assert human.code == 0 and "identical" in human.stdout

    model = recipe.parent / "models" / "mlp.onnx"
    onnx_models.save(onnx_models.mlp(5), model)  # other weights (a stray byte would not be ONNX at all)
    changed = cli("build", "--reproduce", built["artifact_id"], "--store", store, "--json")
    assert changed.code == 2 and "changed since artifact" in changed.json()["error"], changed
    both = cli("build", recipe, "--reproduce", built["artifact_id"], "--store", store)
    assert both.code == 2 and "not recipe arguments" in both.stderr
