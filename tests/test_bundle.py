"""Export / import round trips, and every way a bundle can be refused (nothing half-imported)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from tests import onnx_models
from tests.catalog_rows import add_row
from tests.conftest import MLP_RECIPE, subprocess_env
from trtforge.bundle import BundleError, export_bundle, import_bundle
from trtforge.store import open_existing_store, open_store
from trtforge.store.catalog import Verification


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


RTX_4090 = ("--gpu", "NVIDIA GeForce RTX 4090", "--cc", "8.9", "--flavor", "tensorrt_rtx")


def add_verification(store_dir: Path, artifact_id: str, gpu: str, cc: str, status: str = "passed") -> None:
    """The row `trtforge verify` records on a GPU machine (verification needs a GPU; this one has none)."""
    store = open_store(store_dir)
    try:
        artifact = store.catalog.get_artifact(artifact_id)
        store.catalog.add_verification(
            Verification(
                id=uuid.uuid4().hex,
                artifact_id=artifact.id,
                gpu_name=gpu,
                compute_capability=cc,
                runtime_flavor=artifact.flavor,
                runtime_version=artifact.trt_version,
                status=status,
                checks=[],
                perf=[],
                details={},
            )
        )
    finally:
        store.close()


@pytest.fixture(scope="module")
def built_source(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A store with two real TensorRT-RTX artifacts of one name (the older one verified on an
    RTX 4090) and one TensorRT row verified on an A10G (built once per module)."""
    root = tmp_path_factory.mktemp("bundle")
    recipes = []
    for version in (1, 2):  # two versions of the model, built in this order
        onnx_models.save(onnx_models.mlp(version), root / "models" / f"detector-v{version}.onnx")
        recipe = root / f"detector-v{version}.yaml"
        recipe.write_text(MLP_RECIPE.format(name="detector", model=f"models/detector-v{version}.onnx", level=0))
        recipes.append(str(recipe))
    store_dir = root / "source"
    proc = subprocess.run(
        [sys.executable, "-m", "trtforge", "build", *recipes, "--store", str(store_dir), "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    older, newer = (r["artifact_id"] for r in json.loads(proc.stdout))
    add_verification(store_dir, older, "NVIDIA GeForce RTX 4090", "8.9")
    store = open_store(store_dir)
    other = add_row(store, compatibility={"hardware": "ampere_plus"}, verified_on={"NVIDIA A10G": "passed"})
    rtx_version = store.catalog.get_artifact(older).trt_version
    store.close()
    return {
        "store": store_dir,
        "ids": sorted([older, newer, other]),
        "rtx": [older, newer],  # built in this order: `newer` has the later created_at
        "rtx_version": rtx_version,
        "root": root,
    }


@pytest.fixture
def source(built_source: dict[str, object], tmp_path: Path) -> dict[str, object]:
    """A private copy of the built store, so a test may damage it."""
    copy = tmp_path / "source"
    shutil.copytree(built_source["store"], copy)  # type: ignore[arg-type]
    return {**built_source, "store": copy}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two Ed25519 key pairs, made with openssl as a team would (PEM private, PEM public)."""
    root = tmp_path_factory.mktemp("keys")
    made: dict[str, Path] = {}
    for who in ("ci", "stranger"):
        private, public = root / f"{who}.pem", root / f"{who}.pub"
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", private], check=True)
        subprocess.run(["openssl", "pkey", "-in", private, "-pubout", "-out", public], check=True)
        made[who], made[f"{who}.pub"] = private, public
    return made


def _without_trust(record: dict) -> dict:
    """A `show --json` record minus what differs by design on the importing side."""
    record = dict(record)
    record.pop("plan_path")
    record["verifications"] = [{**v, "trust": None, "signer": None} for v in record["verifications"]]
    return record


def test_signed_round_trip_is_the_readme_deployment_flow(cli, source: dict, keys: dict, tmp_path: Path) -> None:
    """README "Deploying with bundles": export --sign on the build side; import --trust
    --require-signature on the serving machine; lookup --verified-only finds the verified engine."""
    bundle = tmp_path / "out" / "bundle.tar"
    exported = cli(
        "export",
        *[i[:8] for i in source["ids"]],
        "-o",
        bundle,
        "--sign",
        keys["ci"],
        "--store",
        source["store"],
        "--json",
    )
    assert exported.code == 0, exported
    assert exported.json()["artifacts"] == source["ids"] and exported.json()["plans"] == 3
    assert len(exported.json()["signed_by"]) == 64

    files = read_tar(bundle)
    manifest = json.loads(files["manifest.json"])
    assert set(manifest["files"]) == set(files) - {"manifest.json", "manifest.sig"}
    for name, entry in manifest["files"].items():
        assert hashlib.sha256(files[name]).hexdigest() == entry["sha256"] and len(files[name]) == entry["size"]

    target = tmp_path / "deploy"
    imported = cli("import", bundle, "--trust", keys["ci.pub"], "--require-signature", "--store", target, "--json")
    assert imported.code == 0, imported
    report = imported.json()
    assert sorted(report["imported"]) == source["ids"]
    assert report["signer"] == {"key_id": exported.json()["signed_by"], "trusted": True}
    assert (report["verifications"], report["claims"]) == (2, 0)
    for artifact_id in source["ids"]:
        before = cli("show", artifact_id, "--store", source["store"], "--json").json()
        after = cli("show", artifact_id, "--store", target, "--json").json()
        assert _without_trust(before) == _without_trust(after)
        assert {v["trust"] for v in after["verifications"]} <= {"signed"}

    older = source["rtx"][0]
    rtx = (*RTX_4090, "--trt", source["rtx_version"], "--store", target, "--json")
    found = cli("lookup", "detector", *rtx, "--verified-only")
    assert found.code == 0, found
    assert found.json()["best"]["artifact_id"] == older  # verified on this GPU model beats newer
    trt = ("--cc", "8.9", "--trt", "10.13.3", "--gpu", "NVIDIA A10G", "--store", target)
    assert cli("lookup", "detector", *trt, "--verified-only").code == 0
    again = cli("import", bundle, "--trust", keys["ci.pub"], "--store", target, "--json")
    assert again.code == 0 and again.json()["imported"] == []
    assert sorted(again.json()["already_present"]) == source["ids"]


def test_unsigned_verifications_are_only_claims(cli, source: dict, keys: dict, tmp_path: Path) -> None:
    """Fails on 55eb6bf: an unsigned bundle's "passed" rows made its engine verified and first."""
    older, newer = source["rtx"]
    rtx = (*RTX_4090, "--trt", source["rtx_version"], "--json")
    unsigned = tmp_path / "unsigned.tar"
    assert cli("export", older, newer, "-o", unsigned, "--store", source["store"]).code == 0
    signed_by_stranger = tmp_path / "stranger.tar"
    assert (
        cli(
            "export", older, newer, "-o", signed_by_stranger, "--sign", keys["stranger"], "--store", source["store"]
        ).code
        == 0
    )

    for bundle, trust in (
        (unsigned, ()),
        (unsigned, ("--trust", keys["ci.pub"])),
        (signed_by_stranger, ("--trust", keys["ci.pub"])),
    ):
        target = tmp_path / f"deploy-{bundle.stem}-{len(trust)}"
        imported = cli("import", bundle, *trust, "--store", target, "--json")
        assert imported.code == 0, imported
        assert (imported.json()["verifications"], imported.json()["claims"]) == (0, 1)
        shown = cli("show", older, "--store", target, "--json").json()
        assert shown["status"] == "unverified" and shown["statuses"] == {}
        assert [v["trust"] for v in shown["verifications"]] == ["claimed"]
        only = cli("lookup", "detector", *rtx, "--verified-only", "--store", target)
        assert only.code == 1, only  # a claim does not satisfy --verified-only
        ranked = cli("lookup", "detector", *rtx, "--store", target).json()
        assert ranked["best"]["artifact_id"] == newer  # nor does it raise the older engine above the newer
        assert [m["verified_here"] for m in ranked["matches"]] == [False, False]

    required = cli(
        "import", signed_by_stranger, "--trust", keys["ci.pub"], "--require-signature", "--store", tmp_path / "r"
    )
    assert required.code == 2 and "not trusted here" in required.stderr, required
    assert catalog_ids(tmp_path / "r") == []
    required = cli("import", unsigned, "--trust", keys["ci.pub"], "--require-signature", "--store", tmp_path / "r")
    assert required.code == 2 and "bundle is not signed" in required.stderr, required
    assert catalog_ids(tmp_path / "r") == []


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
