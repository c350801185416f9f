"""Export / import round trips, and every way a bundle can be refused (nothing half-imported)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests import onnx_models
from tests.catalog_rows import add_row
from tests.conftest import MLP_RECIPE, subprocess_env
from trtforge.bundle import BundleError, export_bundle, import_bundle
from trtforge.store import open_existing_store, open_store


def read_tar(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}  # type: ignore[union-attr]


def write_tar(path: Path, files: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info)
    return path


def catalog_ids(store_dir: Path) -> list[str]:
    store = open_existing_store(store_dir)
    if store is None:
        return []
    try:
        return sorted(a.id for a in store.catalog.list_artifacts())
    finally:
        store.close()


@pytest.fixture(scope="module")
def built_source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A store with one real TensorRT-RTX artifact and one TensorRT row (built once per module)."""
    root = tmp_path_factory.mktemp("bundle")
    onnx_models.save(onnx_models.mlp(0), root / "models" / "detector.onnx")
    recipe = root / "detector.yaml"
    recipe.write_text(MLP_RECIPE.format(name="detector", model="models/detector.onnx", level=0))
    store_dir = root / "source"
    proc = subprocess.run(
        [sys.executable, "-m", "trtforge", "build", str(recipe), "--store", str(store_dir), "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    store = open_store(store_dir)
    built = store.catalog.get_artifact(json.loads(proc.stdout)[0]["artifact_id"])
    same = {"model_sha256": built.model_sha256, "recipe_fingerprint": built.recipe_fingerprint}  # one model
    other = add_row(store, compatibility={"hardware": "ampere_plus"}, verified_on={"NVIDIA A10G": "passed"}, **same)
    store.close()
    return {"store": store_dir, "ids": sorted([built.id, other])}


@pytest.fixture
def source(built_source: dict[str, object], tmp_path: Path) -> dict[str, object]:
    """A private copy of the built store, so a test may damage it."""
    copy = tmp_path / "source"
    shutil.copytree(built_source["store"], copy)  # type: ignore[arg-type]
    return {"store": copy, "ids": built_source["ids"]}


def test_round_trip_then_offline_lookup(cli, source: dict, tmp_path: Path) -> None:
    bundle = tmp_path / "out" / "bundle.tar"
    exported = cli("export", *[i[:8] for i in source["ids"]], "-o", bundle, "--store", source["store"], "--json")
    assert exported.code == 0, exported
    assert exported.json()["artifacts"] == source["ids"] and exported.json()["plans"] == 2

    files = read_tar(bundle)
    manifest = json.loads(files["manifest.json"])
    assert set(manifest["files"]) == set(files) - {"manifest.json"}
    for name, entry in manifest["files"].items():
        assert hashlib.sha256(files[name]).hexdigest() == entry["sha256"] and len(files[name]) == entry["size"]

    target = tmp_path / "deploy"
    imported = cli("import", bundle, "--store", target, "--json")
    assert imported.code == 0, imported
    assert sorted(imported.json()["imported"]) == source["ids"]
    for artifact_id in source["ids"]:
        before = cli("show", artifact_id, "--store", source["store"], "--json").json()
        after = cli("show", artifact_id, "--store", target, "--json").json()
        before.pop("plan_path"), after.pop("plan_path")
        assert before == after

    rtx_version = cli("show", source["ids"][0], "--store", target, "--json").json()["trt_version"]
    found = cli("lookup", "detector", "--cc", "8.9", "--trt", "10.13.3", "--gpu", "NVIDIA A10G", "--store", target)
    assert found.code == 0, found
    assert rtx_version  # both flavors came across
    again = cli("import", bundle, "--store", target, "--json")
    assert (
        again.code == 0 and again.json()["imported"] == [] and sorted(again.json()["already_present"]) == source["ids"]
    )


def exported_files(source: dict, tmp_path: Path) -> dict[str, bytes]:
    bundle = tmp_path / "good.tar"
    store = open_store(source["store"])
    try:
        export_bundle(store, source["ids"], bundle)
    finally:
        store.close()
    return read_tar(bundle)


def import_refused(bundle: Path, target: Path) -> str:
    """Import in-process; the error message. Checks that nothing reached the catalog."""
    store = open_store(target)
    try:
        with pytest.raises(BundleError) as info:
            import_bundle(store, bundle)
        assert info.value.exit_code == 2
        assert store.catalog.list_artifacts() == []
    finally:
        store.close()
    assert not any(p.name.startswith(".import-") for p in target.iterdir())
    return info.value.message


def plan_names(files: dict[str, bytes]) -> list[str]:
    return sorted(n for n in files if n.startswith("plans/"))


def rewrite_manifest(files: dict[str, bytes], **changes: dict) -> None:
    manifest = json.loads(files["manifest.json"])
    for name, entry in changes.items():
        manifest["files"][name] = entry
    files["manifest.json"] = json.dumps(manifest).encode()


def tamper_plan_bytes(files: dict[str, bytes]) -> None:
    name = plan_names(files)[-1]
    files[name] = files[name][:-1] + bytes([files[name][-1] ^ 1])


def tamper_plan_and_manifest(files: dict[str, bytes]) -> None:
    name = plan_names(files)[-1]
    files[name] = b"evil plan"
    rewrite_manifest(files, **{name: {"sha256": hashlib.sha256(b"evil plan").hexdigest(), "size": 9}})


def tamper_record(files: dict[str, bytes]) -> None:
    name = next(n for n in files if n.startswith("artifacts/"))
    files[name] = files[name].replace(b'"name"', b'"nAme"')


def drop_plan(files: dict[str, bytes]) -> None:
    del files[plan_names(files)[0]]


def add_unlisted(files: dict[str, bytes]) -> None:
    files["plans/" + "0" * 64 + ".plan"] = b"x"


def drop_manifest(files: dict[str, bytes]) -> None:
    del files["manifest.json"]


def wrong_format(files: dict[str, bytes]) -> None:
    files["manifest.json"] = json.dumps({"format": "zip", "version": 1, "files": {}, "artifacts": []}).encode()


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (tamper_plan_bytes, "does not match its manifest sha256"),
        (tamper_plan_and_manifest, "does not hash to its name"),
        (tamper_record, "does not match its manifest sha256"),
        (drop_plan, "does not match its manifest"),
        (add_unlisted, "does not match its manifest"),
        (drop_manifest, "manifest.json is missing"),
        (wrong_format, "manifest format"),
    ],
)
def test_tampered_bundle_is_refused_and_nothing_is_imported(source: dict, tmp_path: Path, tamper, message: str) -> None:
    files = exported_files(source, tmp_path)
    tamper(files)
    bundle = write_tar(tmp_path / "bad.tar", files)
    assert message in import_refused(bundle, tmp_path / "deploy")


def test_tampered_bundle_cli_exit_2(cli, source: dict, tmp_path: Path) -> None:
    files = exported_files(source, tmp_path)
    tamper_plan_bytes(files)
    bundle = write_tar(tmp_path / "bad.tar", files)
    result = cli("import", bundle, "--store", tmp_path / "deploy")
    assert result.code == 2, result
    assert result.stderr.startswith("error: bundle file plans/") and "Traceback" not in result.stderr
    assert catalog_ids(tmp_path / "deploy") == []


def _member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    ("files", "extra", "message"),
    [
        ({"../evil.json": b"{}"}, [], "unsafe path"),
        ({"/tmp/evil.json": b"{}"}, [], "unsafe path"),
        ({"plans/../../evil": b"x"}, [], "unsafe path"),
        ({}, [_member("plans/" + "1" * 64 + ".plan", tarfile.SYMTYPE, "/etc/passwd")], "is a link"),
        ({}, [_member("plans/" + "2" * 64 + ".plan", tarfile.LNKTYPE, "manifest.json")], "is a link"),
        ({}, [_member("artifacts", tarfile.DIRTYPE)], "non-file"),
        ({"notes.txt": b"hello"}, [], "not part of the bundle format"),
    ],
)
def test_unsafe_members_are_refused(source: dict, tmp_path: Path, files: dict, extra: list, message: str) -> None:
    good = exported_files(source, tmp_path)
    bundle = write_tar(tmp_path / "unsafe.tar", {**good, **files}, extra)
    assert message in import_refused(bundle, tmp_path / "deploy")
    assert not (tmp_path / "evil.json").exists() and not Path("/tmp/evil.json").exists()


def test_not_a_bundle(cli, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar file" * 100)
    result = cli("import", junk, "--store", tmp_path / "s")
    assert result.code == 2 and "cannot read bundle junk.tar: not a tar archive" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2, result.stderr  # one error line, one hint
    missing = cli("import", tmp_path / "missing.tar", "--store", tmp_path / "s2")
    assert missing.code == 2 and "does not exist" in missing.stderr
    assert not (tmp_path / "s2").exists()


def test_export_bad_input_and_damaged_store(cli, source: dict, tmp_path: Path) -> None:
    unknown = cli("export", "abcdef0123", "-o", tmp_path / "b.tar", "--store", source["store"])
    assert unknown.code == 2 and "no artifact with id" in unknown.stderr
    (tmp_path / "a-file").write_text("not a directory")
    unwritable = cli("export", *source["ids"], "-o", tmp_path / "a-file" / "b.tar", "--store", source["store"])
    assert unwritable.code == 2 and "cannot write bundle" in unwritable.stderr
    assert not (tmp_path / "b.tar").exists()

    store = open_store(source["store"])
    artifact = store.catalog.get_artifact(source["ids"][1])
    blob = store.blobs.path_for(artifact.plan_sha256)
    store.close()
    blob.chmod(0o644)
    blob.write_bytes(b"rot")
    damaged = cli("export", *source["ids"], "-o", tmp_path / "b.tar", "--store", source["store"])
    assert damaged.code == 1 and "corrupted" in damaged.stderr
    assert not (tmp_path / "b.tar").exists()


def test_pins_and_integrity_marks_stay_with_their_store(cli, source: dict, tmp_path: Path) -> None:
    """A pin protects a local service's file and integrity is the local copy's state: neither travels."""
    pinned, other = source["ids"]
    assert cli("pin", pinned, "--store", source["store"]).code == 0
    bundle = tmp_path / "b.tar"
    assert cli("export", *source["ids"], "-o", bundle, "--store", source["store"]).code == 0
    target = tmp_path / "deploy"
    assert cli("import", bundle, "--store", target).code == 0
    rows = {r["artifact_id"]: (r["pinned"], r["integrity"]) for r in cli("list", "--store", target, "--json").json()}
    assert rows == {pinned: (False, "ok"), other: (False, "ok")}

    store = open_store(source["store"])
    try:
        blob = store.blobs.path_for(store.catalog.get_artifact(other).plan_sha256)
    finally:
        store.close()
    blob.chmod(0o644)
    blob.write_bytes(b"rot")
    assert cli("fsck", "--repair", "--store", source["store"]).code == 0
    store = open_store(source["store"])
    try:  # the same bytes written again (a rebuild): the blob is whole, the old row stays marked
        store.blobs.put_bytes(read_tar(bundle)[f"plans/{store.catalog.get_artifact(other).plan_sha256}.plan"])
    finally:
        store.close()
    refused = cli("export", other, "-o", tmp_path / "c.tar", "--store", source["store"])
    assert refused.code == 1 and "marked corrupt" in refused.stderr, refused
    assert not (tmp_path / "c.tar").exists()
