"""Imported timestamps are not believed (issue 20, item 2): "newest" is the order in which this store
learned of a fact, and within one build key a local build comes first.

A bundle's ``created_at`` (of an artifact or a verification) is what its exporter claims; it is shown
as such and orders nothing: not the cache hit, not the model a name means, not gc's --keep-last or
--older-than, not which verification on a GPU model is the newest.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.catalog_rows import add_verification_row, placeholder_artifact
from tests.conftest import MLP_RECIPE
from trtforge.store import Store, open_store
from trtforge.store.catalog import SCHEMA_HEAD, Blob, Catalog, Verification

RTX_4090 = ("--gpu", "NVIDIA GeForce RTX 4090", "--cc", "8.9", "--flavor", "tensorrt_rtx")
DET = MLP_RECIPE.replace("name: {name}", "name: det")  # versions of "det" in files of their own


def forge(bundle: Path, out: Path, *, created_at: str) -> str:
    """``bundle`` rewritten as someone might: each artifact under a fresh id, claiming ``created_at``;
    the manifest made to match, unsigned. Returns the (last) new id."""
    with tarfile.open(bundle) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}  # type: ignore[union-attr]
    manifest = json.loads(files.pop("manifest.json"))
    files.pop("manifest.sig", None)
    new_id = ""
    for old_id in list(manifest["artifacts"]):
        record = json.loads(files.pop(f"artifacts/{old_id}.json"))
        new_id = uuid.uuid4().hex
        record.update(id=new_id, created_at=created_at, learned_at=created_at)
        data = json.dumps(record).encode()
        files[f"artifacts/{new_id}.json"] = data
        del manifest["files"][f"artifacts/{old_id}.json"]
        manifest["files"][f"artifacts/{new_id}.json"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        manifest["artifacts"] = [new_id if a == old_id else a for a in manifest["artifacts"]]
    with tarfile.open(out, "w") as tar:
        for name, data in {"manifest.json": json.dumps(manifest).encode(), **files}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return new_id


def built(cli, recipe: Path, store: Path, *flags: str) -> str:
    result = cli("build", recipe, *flags, "--store", store, "--json")
    assert result.code == 0, result
    return result.json()[0]["artifact_id"]


def import_forged(
    cli, tmp_path: Path, store: Path, artifact_id: str, created_at: str, source: Path | None = None
) -> str:
    bundle, forged = tmp_path / f"{artifact_id}.tar", tmp_path / f"forged-{uuid.uuid4().hex[:8]}.tar"
    assert cli("export", artifact_id, "-o", bundle, "--store", source or store).code == 0
    new_id = forge(bundle, forged, created_at=created_at)
    imported = cli("import", forged, "--store", store, "--json")
    assert imported.code == 0 and imported.json()["imported"] == [new_id], imported
    return new_id


def test_a_bundle_from_2099_is_never_the_cache_hit_over_a_local_build(cli, mlp_recipe, tmp_path: Path) -> None:
    """Fails on 843520b: the forged artifact (same build key, created_at 2099) became the cache hit,
    and stayed it right after `build --force`."""
    recipe, store = mlp_recipe("det"), tmp_path / "store"
    local = built(cli, recipe, store)
    forged = import_forged(cli, tmp_path, store, local, "2099-01-01T00:00:00+00:00")

    hit = cli("build", recipe, "--store", store, "--json").json()[0]
    assert (hit["status"], hit["artifact_id"]) == ("cached", local), hit
    forced = built(cli, recipe, store, "--force")
    hit = cli("build", recipe, "--store", store, "--json").json()[0]
    assert (hit["status"], hit["artifact_id"]) == ("cached", forced), hit
    opened = open_store(store)
    try:  # the catalog's own path (other catalogs, a missing blob) answers alike
        assert opened.catalog.find_by_build_key(hit["build_key"]).id == forced
    finally:
        opened.close()

    shown = cli("show", forged, "--store", store, "--json").json()
    assert shown["created_at"].startswith("2099") and shown["learned_via"] == "import"
    assert shown["learned_at"] < cli("show", forced, "--store", store, "--json").json()["learned_at"]
    human = cli("show", forged, "--store", store).stdout
    assert "2099-01-01" in human and "as its bundle claims" in human


def test_a_bundle_from_2099_does_not_decide_the_newest_model(cli, mlp_recipe, tmp_path: Path) -> None:
    """Fails on 843520b: a name meant the model of the imported 2099 artifact even after a newer local build."""
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    built(cli, mlp_recipe("det-v1", seed=1, text=DET), store)
    other = built(cli, mlp_recipe("det-v2", seed=2, text=DET), elsewhere)  # another model of det, built elsewhere
    import_forged(cli, tmp_path, store, other, "2099-01-01T00:00:00+00:00", source=elsewhere)
    newest = built(cli, mlp_recipe("det-v3", seed=3, text=DET), store)  # today: the model the name now means
    version = cli("show", newest, "--store", store, "--json").json()["trt_version"]
    found = cli("lookup", "det", *RTX_4090, "--trt", version, "--store", store, "--json")
    assert found.code == 0 and found.json()["best"]["artifact_id"] == newest, found


def test_gc_counts_by_when_this_store_learned(cli, mlp_recipe, tmp_path: Path) -> None:
    """Fails on 843520b: --keep-last 1 kept the artifact claiming 2099 and would delete both local
    builds; --older-than 30 would delete an artifact imported today that claims 2020."""
    recipe, store = mlp_recipe("det"), tmp_path / "store"
    first = built(cli, recipe, store)
    future = import_forged(cli, tmp_path, store, first, "2099-01-01T00:00:00+00:00")
    past = import_forged(cli, tmp_path, store, first, "2020-01-01T00:00:00+00:00")
    latest = built(cli, recipe, store, "--force")

    keep_last = cli("gc", "--keep-last", "1", "--dry-run", "--store", store, "--json").json()["plan"]
    assert sorted(a["artifact_id"] for a in keep_last["artifacts"]) == sorted([past, future, first])
    [group] = keep_last["groups"]  # one model, one target
    assert group["keep"] == [latest] and group["remove"] == [past, future, first]  # newest learned first
    older_than = cli("gc", "--older-than", "30", "--dry-run", "--store", store, "--json").json()["plan"]
    assert older_than["artifacts"] == [], older_than  # all four were learned today


def test_a_trusted_2030_pass_does_not_outlast_a_local_failure_today(cli, mlp_recipe, tmp_path: Path) -> None:
    """Fails on 843520b: after a signed bundle's "passed" dated 2030, a local "failed" today left
    --verified-only answering yes (the newest verification was the one dated latest)."""
    recipe, source, serving = mlp_recipe("det"), tmp_path / "source", tmp_path / "serving"
    artifact_id = built(cli, recipe, source)
    opened = open_store(source)
    try:
        artifact = opened.catalog.get_artifact(artifact_id)
        version = artifact.trt_version
        dated_2030 = datetime(2030, 1, 1, tzinfo=timezone.utc)
        opened.catalog.add_verification(_verification(artifact_id, "passed", version, dated_2030))
    finally:
        opened.close()
    key = tmp_path / "ci.key"
    assert cli("keygen", key).code == 0
    bundle = tmp_path / "signed.tar"
    assert cli("export", artifact_id, "-o", bundle, "--sign", key, "--store", source).code == 0
    imported = cli("import", bundle, "--trust", f"{key}.pub", "--require-signature", "--store", serving, "--json")
    assert imported.code == 0 and imported.json()["verifications"] == 1, imported
    target = (*RTX_4090, "--trt", version, "--store", serving, "--verified-only")
    assert cli("lookup", "det", *target).code == 0  # the signed pass counts

    opened = open_store(serving)
    try:  # verified here, today, on the same GPU model: it failed
        add_verification_row(opened, artifact_id, "NVIDIA GeForce RTX 4090", "failed", cc="8.9",
                             flavor="tensorrt_rtx", version=version)  # fmt: skip
    finally:
        opened.close()
    refused = cli("lookup", "det", *target)
    assert refused.code == 1 and refused.stdout == "", refused
    shown = cli("show", artifact_id, "--store", serving, "--json").json()
    assert shown["statuses"] == {"NVIDIA GeForce RTX 4090": "failed"} and shown["status"] == "failed"
    claimed = [v["created_at"][:4] for v in shown["verifications"]]
    assert sorted(claimed) == [str(datetime.now(timezone.utc).year), "2030"]  # shown as dated, ordered as learned


def _verification(artifact_id: str, status: str, version: str, created_at: datetime) -> Verification:
    return Verification(
        id=uuid.uuid4().hex, artifact_id=artifact_id, gpu_name="NVIDIA GeForce RTX 4090", compute_capability="8.9",
        runtime_flavor="tensorrt_rtx", runtime_version=version, status=status, checks=[], perf=[], details={},
        created_at=created_at,
    )  # fmt: skip


def _add(store: Store, **fields: object) -> str:
    blob = store.blobs.put_bytes(uuid.uuid4().bytes)
    artifact = placeholder_artifact(plan_sha256=blob.sha256, plan_size=blob.size, **fields)
    store.catalog.add_artifact(artifact, Blob(sha256=blob.sha256, size=blob.size, kind="plan"))
    return artifact.id


def test_learned_order_is_strictly_increasing_and_local_first_within_a_key(tmp_path: Path, catalog_url: str) -> None:
    """On SQLite and PostgreSQL: every insert is learned after every row already there (even one
    stamped ahead of the clock), and a build key's hit is a local artifact before an imported one."""
    store = open_store(tmp_path / "store", catalog=catalog_url)
    try:
        ahead = datetime(2099, 1, 1, tzinfo=timezone.utc)
        stamped_ahead = _add(store, build_key="k" * 64, learned_at=ahead)
        local = _add(store, build_key="k" * 64)
        imported = _add(store, build_key="k" * 64, learned_via="import")
        rows = {a.id: a for a in store.catalog.list_artifacts()}
        assert rows[stamped_ahead].learned_at < rows[local].learned_at < rows[imported].learned_at
        assert [a.id for a in store.catalog.list_artifacts()] == [imported, local, stamped_ahead]
        assert store.catalog.find_by_build_key("k" * 64).id == local  # learned last, but imported
        for status in ("passed", "failed", "passed"):
            add_verification_row(store, local, "NVIDIA A10G", status)
        stamps = [v.learned_at for v in store.catalog.verifications(local)]
        assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == 3
        assert store.catalog.statuses(local) == {"NVIDIA A10G": "passed"}
    finally:
        store.close()


def test_a_later_dated_verification_does_not_win_over_a_later_learned_one(tmp_path: Path, catalog_url: str) -> None:
    """Fails on 843520b (catalog level, SQLite and PostgreSQL): statuses followed created_at."""
    store = open_store(tmp_path / "store", catalog=catalog_url)
    try:
        artifact_id = _add(store, flavor="tensorrt", trt_version="10.13.3")
        future = Verification(
            id=uuid.uuid4().hex, artifact_id=artifact_id, gpu_name="NVIDIA A10G", compute_capability="8.6",
            runtime_flavor="tensorrt", runtime_version="10.13.3", status="passed", checks=[], perf=[], details={},
            created_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
        )  # fmt: skip
        store.catalog.add_verification(future)
        add_verification_row(store, artifact_id, "NVIDIA A10G", "failed")  # learned after, dated today
        assert store.catalog.statuses(artifact_id) == {"NVIDIA A10G": "failed"}
        assert store.catalog.get_artifact(artifact_id).status == "failed"
    finally:
        store.close()


def test_rows_before_0006_keep_their_order_and_new_ones_come_after(tmp_path: Path) -> None:
    from trtforge.store.migrations import upgrade

    path = tmp_path / "old.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        upgrade(conn, "0005_verification_claims")
        conn.execute(text("INSERT INTO blobs VALUES ('b', 1, 'plan', '2026-01-01 00:00:00')"))
        columns = (
            "id, name, build_key, recipe_fingerprint, model_sha256, flavor, trt_version, compute_capabilities, "
            "plan_sha256, plan_size, io_tensors, profiles, recipe, build_seconds, build_log, details, "
            "created_at, status"
        )
        for artifact_id, day in (("second", 2), ("first", 1), ("third", 3)):
            conn.execute(
                text(f"INSERT INTO artifacts ({columns}) VALUES (:id, 'n', 'k', 'f', 'm', 'tensorrt', '10.13.3', "
                     "'[]', 'b', 1, '[]', '[]', '{}', 0, '[]', '{}', :at, 'unverified')"),
                {"id": artifact_id, "at": f"2026-01-0{day} 00:00:00"},
            )  # fmt: skip
        conn.commit()
    engine.dispose()
    catalog = Catalog.sqlite(path)  # upgrades to the head revision
    try:
        assert catalog.current_revision() == SCHEMA_HEAD
        assert [a.id for a in catalog.list_artifacts()] == ["third", "second", "first"]
        assert {a.learned_via for a in catalog.list_artifacts()} == {"local"}
        assert catalog.find_by_build_key("k").id == "third"
        later = placeholder_artifact(id="fourth", build_key="k", plan_sha256="b")  # stamped by the catalog
        catalog.add_artifact(later, Blob(sha256="b", size=1, kind="plan"))
        assert catalog.find_by_build_key("k").id == "fourth" and catalog.list_artifacts()[0].id == "fourth"
    finally:
        catalog.close()

