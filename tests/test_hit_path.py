"""The cache-hit path: stat-keyed model digests and the SQLite hit query without SQLAlchemy."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import subprocess_env
from trtforge.rules.digests import DigestCache
from trtforge.store.sqlite_hits import UNANSWERED, Probe, known_revisions, probe_cached_plan


def _old(path: Path, seconds: float = 60.0) -> None:
    """Move a file's mtime into the past, so its digest is not 'racy' and may be remembered."""
    stamp = path.stat().st_mtime - seconds
    os.utime(path, (stamp, stamp))


def test_digest_is_remembered_by_stat_and_invalidated_by_change(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"a" * 1000)
    _old(model)
    cache_file = tmp_path / "store" / "cache" / "digests.json"
    (tmp_path / "store").mkdir()
    first = DigestCache(cache_file)
    assert first.sha256(model) == hashlib.sha256(b"a" * 1000).hexdigest()
    first.save()
    stored = json.loads(cache_file.read_text())
    [(path, entry)] = stored["entries"].items()
    assert path == str(model.resolve()) and entry[0] == 1000

    # The remembered digest is what a later process gets for an unchanged stat ...
    entry[5] = "f" * 64
    cache_file.write_text(json.dumps(stored))
    assert DigestCache(cache_file).sha256(model) == "f" * 64
    # ... and any change to the file (here: same size, new content and mtime) re-hashes it.
    model.write_bytes(b"b" * 1000)
    assert DigestCache(cache_file).sha256(model) == hashlib.sha256(b"b" * 1000).hexdigest()


def test_recently_modified_file_is_hashed_but_not_remembered(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    model = tmp_path / "m.onnx"
    model.write_bytes(b"fresh")
    cache = DigestCache(tmp_path / "store" / "cache" / "digests.json")
    assert cache.sha256(model) == hashlib.sha256(b"fresh").hexdigest()
    cache.save()
    assert not (tmp_path / "store" / "cache" / "digests.json").exists()


def _two_savers(tmp_path: Path) -> tuple[Path, Path, Path, DigestCache, DigestCache]:
    """The cache file, two old models, and two caches of that file, each having hashed one of them."""
    (tmp_path / "store").mkdir()
    cache_file = tmp_path / "store" / "cache" / "digests.json"
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    for path in (a, b):
        path.write_bytes(path.name.encode())
        _old(path)
    first, second = DigestCache(cache_file), DigestCache(cache_file)
    first.sha256(a)
    second.sha256(b)
    return cache_file, a, b, first, second


def test_concurrent_savers_merge_and_damaged_cache_is_ignored(tmp_path: Path) -> None:
    cache_file, a, b, first, second = _two_savers(tmp_path)
    first.save()
    second.save()
    assert set(json.loads(cache_file.read_text())["entries"]) == {str(a.resolve()), str(b.resolve())}
    cache_file.write_text("{not json")
    assert DigestCache(cache_file).sha256(a) == hashlib.sha256(b"a.onnx").hexdigest()



def test_savers_that_overlap_take_turns_and_forget_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two savers at once, as `build --jobs N`'s build processes end together: the second one's
    read of the file comes after the first one's write, so it merges both. Fails before the
    savers took turns: the first, paused between its read and its write, wrote back a file
    without the second's entry, which had been saved meanwhile."""
    import threading

    from trtforge.rules import digests

    cache_file, a, b, first, second = _two_savers(tmp_path)
    cache_file.parent.mkdir()
    has_read, go_on = threading.Event(), threading.Event()
    real_read = digests._read_file

    def pausing_read(path: Path | None) -> Any:
        read = real_read(path)
        if threading.current_thread().name == "first":
            has_read.set()
            go_on.wait(30)
        return read

    monkeypatch.setattr(digests, "_read_file", pausing_read)
    saver = threading.Thread(target=first.save, name="first")
    saver.start()
    assert has_read.wait(30)
    other = threading.Thread(target=second.save, name="second")
    other.start()
    other.join(1.0)  # finished by now unless it waits its turn; either way the first goes on
    go_on.set()
    saver.join(30)
    other.join(30)
    assert set(json.loads(cache_file.read_text())["entries"]) == {str(a.resolve()), str(b.resolve())}

def test_no_store_no_cache_file(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    _old(model)
    cache = DigestCache(tmp_path / "absent-store" / "cache" / "digests.json")
    cache.sha256(model)
    cache.save()
    assert not (tmp_path / "absent-store").exists()


def run_script(folder: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a script in a fresh interpreter (imports start from nothing)."""
    script = folder / "probe.py"
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=subprocess_env()
    )


def test_migration_file_names_are_revision_ids() -> None:
    from alembic.script import ScriptDirectory

    from trtforge.store.migrations import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config())
    assert {s.revision for s in scripts.walk_revisions()} == known_revisions()


def test_sqlite_hit_query_answers_only_a_clean_yes(cli, example_recipe: Path, store: Path) -> None:
    [built] = cli("build", example_recipe, "--store", store, "--json").json()
    db = store / "catalog.sqlite"
    hit = probe_cached_plan(db, built["build_key"]).plan
    assert hit is not None and (hit.artifact_id, hit.plan_sha256) == (built["artifact_id"], built["plan_sha256"])
    assert probe_cached_plan(db, "0" * 64).plan is None
    assert probe_cached_plan(store / "missing.sqlite", built["build_key"]).plan is None
    assert not (store / "missing.sqlite").exists()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    assert probe_cached_plan(db, built["build_key"]).plan is None
    assert probe_cached_plan(db, built["build_key"]) == UNANSWERED  # uncertain: not a miss either
    # The full catalog path then decides: a newer schema is refused, as without the fast path.
    refused = cli("build", example_recipe, "--store", store, "--json")
    assert refused.code == 2 and "newer than this trtforge" in refused.json()[0]["error"], refused


def test_sqlite_probe_is_certain_only_where_the_orm_would_agree(cli, example_recipe: Path, store: Path) -> None:
    """A certain miss lets a build skip the ORM before TensorRT runs; every other case defers."""
    from trtforge.stages.build import StoreHandle

    handle = StoreHandle(store, None)
    assert handle.quick_probe("0" * 64) == Probe(answered=True)  # no catalog yet
    [built] = cli("build", example_recipe, "--store", store, "--json").json()
    hit = handle.quick_probe(built["build_key"])
    assert hit.plan is not None and hit.plan.artifact_id == built["artifact_id"]
    assert handle.quick_probe("0" * 64) == Probe(answered=True)  # known schema, no row
    Path(built["plan_path"]).unlink()
    assert handle.quick_probe(built["build_key"]) == UNANSWERED  # row without its blob: the ORM path decides
    with sqlite3.connect(store / "catalog.sqlite") as conn:
        conn.execute("UPDATE artifacts SET integrity = 'corrupt'")
    assert handle.quick_probe(built["build_key"]) == Probe(answered=True)  # never a hit
    assert StoreHandle(store, "sqlite:////elsewhere/x.sqlite").quick_probe("0" * 64) == Probe(answered=True)
    assert StoreHandle(store, "postgresql+psycopg://u@h/db").quick_probe("0" * 64) == UNANSWERED


def test_a_miss_into_an_existing_store_imports_the_catalog_off_the_main_thread(
    cli, example_recipe: Path, mlp_recipe, store: Path, tmp_path: Path
) -> None:
    """The ORM import overlaps the TensorRT build: the build goes to its worker before the import is done."""
    assert cli("build", example_recipe, "--store", store).code == 0
    proc = run_script(
        tmp_path,
        "import trtforge.store as store_module\n"
        "from trtforge.backend.pool import WorkerPool\n"
        "seen = {}\n"
        "real = WorkerPool.build\n"
        "def spy(*args, **kwargs):\n"
        "    seen['preloading'] = store_module._preload is not None  # started only if main had not imported it\n"
        "    return real(*args, **kwargs)\n"
        "WorkerPool.build = spy\n"
        "from trtforge.stages.build import BuildStage\n"
        f"[result] = BuildStage({str(store)!r}).build_all([{str(mlp_recipe('second'))!r}])\n"
        "print(result.status, seen)\n",
    )
    assert proc.stdout.split()[0] == "built", proc
    assert "'preloading': True" in proc.stdout, proc


@pytest.mark.parametrize("json_flag", [["--json"], []])
def test_cache_hit_skips_sqlalchemy_and_imports_rich_only_for_a_table(
    cli, example_recipe: Path, store: Path, tmp_path: Path, json_flag: list[str]
) -> None:
    assert cli("build", example_recipe, "--store", store).code == 0
    proc = run_script(
        tmp_path,
        "import json, sys\n"
        "from trtforge.cli import app\n"
        f"sys.argv = ['trtforge', 'build', {str(example_recipe)!r}, '--store', {str(store)!r}, *{json_flag!r}]\n"
        "try:\n    app()\nexcept SystemExit as exc:\n    code = exc.code\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'rich', 'alembic', 'onnx'})\n"
        "sys.stderr.write('MODULES=' + json.dumps(loaded) + '\\n')\n",
    )
    assert "cached" in proc.stdout, proc
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("MODULES=")]
    expected = [] if json_flag else ["rich"]  # a person's table is drawn with rich
    assert json.loads(line.removeprefix("MODULES=")) == expected


def test_a_hit_and_a_lookup_build_no_record_models_and_start_no_worker(
    cli, example_recipe: Path, store: Path, tmp_path: Path
) -> None:
    """What the daily paths skip (issue 24): a hit never loads the build worker's code, and neither
    path builds the artifact record's pydantic models (about 0.05 s a lookup on 843520b)."""
    [built] = cli("build", example_recipe, "--store", store, "--json").json()
    watched = "{m for m in sys.modules if m.startswith(('trtforge.rules.record', 'trtforge.backend', 'sqlalchemy'))}"
    target = ["--flavor", "tensorrt_rtx", "--trt", built["target"]["trt_version"], "--cc", "8.6"]
    lookup = ["lookup", built["name"], *target]
    for argv in (["build", str(example_recipe)], lookup):
        proc = run_script(
            tmp_path,
            "import json, sys\n"
            "from trtforge.cli import app\n"
            f"sys.argv = ['trtforge', *{argv!r}, '--store', {str(store)!r}, '--json']\n"
            "try:\n    app()\nexcept SystemExit as exc:\n    code = exc.code\n"
            f"sys.stderr.write('MODULES=' + json.dumps(sorted({watched})) + '\\n')\n",
        )
        assert built["artifact_id"] in proc.stdout, proc
        [line] = [x for x in proc.stderr.splitlines() if x.startswith("MODULES=")]
        assert json.loads(line.removeprefix("MODULES=")) == [], (argv[0], line)
