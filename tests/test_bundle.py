"""Export / import round trips, and every way a bundle can be refused (nothing half-imported)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests import onnx_models
from tests.catalog_rows import add_row, add_verification_row
from tests.conftest import MLP_RECIPE
from tests.procs import build_one
from trtforge.core.errors import BundleError, SignatureError
from trtforge.stages.bundle import export_bundle, import_bundle
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


RTX_4090 = ("--gpu", "NVIDIA GeForce RTX 4090", "--cc", "8.9", "--flavor", "tensorrt_rtx")


def add_verification(store_dir: Path, artifact_id: str, gpu: str, cc: str, status: str = "passed") -> None:
    """The row `trtforge verify` records on a GPU machine (verification needs a GPU; this one has none)."""
    store = open_store(store_dir)
    try:
        artifact = store.catalog.get_artifact(artifact_id)
        flavor, version = artifact.flavor, artifact.trt_version
        add_verification_row(store, artifact.id, gpu, status, cc=cc, flavor=flavor, version=version)
    finally:
        store.close()


def _build_one(recipe: str, store_dir: Path) -> str:
    """One recipe's artifact id. One command per version: in one batch, even with --jobs 1, the next
    recipe is resolved while a build runs and may reach the worker first, so the order the store
    learns them in (which decides the newest model) would be the order they finished."""
    return str(build_one(recipe, store_dir)["artifact_id"])


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
    older, newer = (_build_one(recipe, store_dir) for recipe in recipes)
    add_verification(store_dir, older, "NVIDIA GeForce RTX 4090", "8.9")
    store = open_store(store_dir)
    newest = store.catalog.get_artifact(newer)
    same = {  # the newest model
        "model_sha256": newest.model_sha256,
        "recipe_fingerprint": newest.recipe_fingerprint,
        "recipe": newest.recipe,
    }
    other = add_row(store, compatibility={"hardware": "ampere_plus"}, verified_on={"NVIDIA A10G": "passed"}, **same)
    rtx_version = store.catalog.get_artifact(older).trt_version
    store.close()
    return {
        "store": store_dir,
        "ids": sorted([older, newer, other]),
        "rtx": [older, newer],  # built in this order: `newer` has the later created_at
        "other": other,  # the TensorRT row
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
    """A `show --json` record minus what differs by design on the importing side (where the plan is,
    who vouches for a verification, and when and how this store learned of each row)."""
    record = {k: v for k, v in record.items() if k not in ("plan_path", "learned_at", "learned_via")}
    record["verifications"] = [
        {**v, "trust": None, "signer": None, "learned_at": None} for v in record["verifications"]
    ]
    return record


def test_signed_round_trip_is_the_readme_deployment_flow(cli, source: dict, keys: dict, tmp_path: Path) -> None:
    """docs/bundles-and-signing.md: export --sign on the build side; import --trust
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
    found = cli("lookup", "detector", *rtx, "--verified-only", "--any-model")  # v1 was verified, v2 not yet
    assert found.code == 0, found
    assert found.json()["best"]["artifact_id"] == older  # verified on this GPU model beats newer
    trt = ("--trt", "10.13.3", "--gpu", "NVIDIA A10G", "--store", target)
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

    def imported_as_claims(bundle: Path, *trust: str | Path) -> None:
        target = tmp_path / f"deploy-{bundle.stem}-{len(trust)}"
        imported = cli("import", bundle, *trust, "--store", target, "--json")
        assert imported.code == 0, imported
        # --any-model: the claimed (older) engine is of the model before the newest one.
        only = cli("lookup", "detector", *rtx, "--verified-only", "--any-model", "--store", target)
        assert only.code == 1, only  # a claim does not satisfy --verified-only
        ranked = cli("lookup", "detector", *rtx, "--any-model", "--store", target).json()
        assert ranked["best"]["artifact_id"] == newer  # nor does it raise the older engine above the newer
        assert [m["verified_here"] for m in ranked["matches"]] == [False, False]
        shown = cli("show", older, "--store", target, "--json").json()
        assert shown["status"] == "unverified" and shown["statuses"] == {}
        assert [v["trust"] for v in shown["verifications"]] == ["claimed"]  # kept, for people to read
        assert (imported.json()["verifications"], imported.json()["claims"]) == (0, 1)

    imported_as_claims(unsigned)
    imported_as_claims(unsigned, "--trust", keys["ci.pub"])
    signed_by_stranger = tmp_path / "stranger.tar"
    exported = cli(
        "export", older, newer, "-o", signed_by_stranger, "--sign", keys["stranger"], "--store", source["store"]
    )
    assert exported.code == 0, exported
    imported_as_claims(signed_by_stranger, "--trust", keys["ci.pub"])

    required = cli(
        "import", signed_by_stranger, "--trust", keys["ci.pub"], "--require-signature", "--store", tmp_path / "r"
    )
    assert required.code == 2 and "not trusted here" in required.stderr, required
    assert catalog_ids(tmp_path / "r") == []
    required = cli("import", unsigned, "--trust", keys["ci.pub"], "--require-signature", "--store", tmp_path / "r")
    assert required.code == 2 and "bundle is not signed" in required.stderr, required
    assert catalog_ids(tmp_path / "r") == []


def exported_files(source: dict, tmp_path: Path, ids: list[str] | None = None) -> dict[str, bytes]:
    bundle = tmp_path / "good.tar"
    store = open_store(source["store"])
    try:
        export_bundle(store, ids or source["ids"], bundle)
    finally:
        store.close()
    return read_tar(bundle)


def import_refused(
    bundle: Path,
    target: Path,
    *,
    trust: list[Path] | None = None,
    require_signature: bool = False,
    error: type[Exception] = BundleError,
) -> str:
    """Import in-process; the error message. Checks that nothing reached the catalog."""
    store = open_store(target)
    try:
        options = (
            {"trust": trust, "require_signature": True} if require_signature else {"trust": trust} if trust else {}
        )
        with pytest.raises(error) as info:
            import_bundle(store, bundle, **options)
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


def rewrite_record(files: dict[str, bytes], artifact_id: str, change) -> None:
    """Rewrite a record the way an attacker would: the manifest is updated to match."""
    name = f"artifacts/{artifact_id}.json"
    record = json.loads(files[name])
    change(record)
    files[name] = json.dumps(record).encode()
    rewrite_manifest(files, **{name: {"sha256": hashlib.sha256(files[name]).hexdigest(), "size": len(files[name])}})


def _other_key(r: dict) -> None:
    r.update(status="passed", build_key="ab" * 32)


def _plan_size(r: dict) -> None:
    r["plan_size"] += 1


def _release(r: dict) -> None:
    r["trt_version"] = r["details"]["target"]["trt_version"] = "1.6.0.50"


def _flavor(r: dict) -> None:
    r["flavor"] = r["details"]["target"]["flavor"] = "tensorrt"


def _column_only(r: dict) -> None:
    r["compute_capabilities"] = ["8.9"]


def _recipe(r: dict) -> None:
    r["recipe"]["build"]["optimization_level"] = 5


def _recipe_and_fingerprint(r: dict) -> None:
    from trtforge.rules.keys import recipe_fingerprint
    from trtforge.rules.recipe import Recipe

    r["recipe"]["build"]["optimization_level"] = 5
    r["recipe_fingerprint"] = recipe_fingerprint(Recipe.model_validate(r["recipe"]))


def _model(r: dict) -> None:
    r["model_sha256"] = "cd" * 32


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_other_key, "its build key is not the one its recipe, model and target give"),
        (_plan_size, "but the plan has"),
        (_release, "the plan's header tensorrt_rtx 1.7"),
        (_flavor, "the plan's header tensorrt_rtx"),
        (_column_only, "compute_capabilities differ from the build target"),
        (_recipe, "recipe fingerprint is not the one its recipe gives"),
        (_recipe_and_fingerprint, "its build key is not the one"),
        (_model, "its build key is not the one"),
    ],
)
def test_rewritten_record_with_matching_manifest_is_refused(
    source: dict, tmp_path: Path, keys: dict, change, message: str
) -> None:
    """Fails on 55eb6bf, which imported such records as they were. A trusted signature does not
    excuse a mismatch either: what can be recomputed is checked whoever signed."""
    rtx = source["rtx"][0]
    files = exported_files(source, tmp_path, [rtx])
    rewrite_record(files, rtx, change)
    assert message in import_refused(write_tar(tmp_path / "bad.tar", files), tmp_path / "deploy")
    signed = tmp_path / "signed.tar"
    write_signed(files, keys["ci"], signed)
    assert message in import_refused(signed, tmp_path / "deploy2", trust=[keys["ci.pub"]])


def test_rewritten_status_is_recomputed(cli, source: dict, tmp_path: Path) -> None:
    """Fails on 55eb6bf: a record saying "passed" (and no verification) was imported as passed."""
    newer = source["rtx"][1]
    files = exported_files(source, tmp_path, [newer])
    rewrite_record(files, newer, lambda r: r.update(status="passed"))
    imported = cli("import", write_tar(tmp_path / "b.tar", files), "--store", tmp_path / "deploy", "--json")
    assert imported.code == 0, imported
    assert cli("show", newer, "--store", tmp_path / "deploy", "--json").json()["status"] == "unverified"


def test_unrecomputable_build_key_needs_a_trusted_signature(cli, source: dict, keys: dict, tmp_path: Path) -> None:
    """The TensorRT row of the fixture has no recipe or target: its key is the exporter's word."""
    trt = next(i for i in source["ids"] if i not in source["rtx"])
    unsigned, signed = tmp_path / "unsigned.tar", tmp_path / "signed.tar"
    assert cli("export", trt, "-o", unsigned, "--store", source["store"]).code == 0
    assert cli("export", trt, "-o", signed, "--sign", keys["ci"], "--store", source["store"]).code == 0
    refused = cli("import", unsigned, "--store", tmp_path / "a")
    assert refused.code == 2 and "cannot be recomputed here" in refused.stderr and "--trust" in refused.stderr
    assert catalog_ids(tmp_path / "a") == []
    untrusted = cli("import", signed, "--trust", keys["stranger.pub"], "--store", tmp_path / "b")
    assert untrusted.code == 2 and "cannot be recomputed here" in untrusted.stderr
    trusted = cli("import", signed, "--trust", keys["ci.pub"], "--store", tmp_path / "c", "--json")
    assert trusted.code == 0 and trusted.json()["imported"] == [trt], trusted


def write_signed(files: dict[str, bytes], key: Path, path: Path) -> Path:
    """The files with a fresh signature over their (possibly rewritten) manifest: the exporter's own."""
    from trtforge.rules.signing import load_private_key, sign_manifest

    signature = sign_manifest(files["manifest.json"], load_private_key(key))
    rest = {name: data for name, data in files.items() if name not in ("manifest.json", "manifest.sig")}
    return write_tar(path, {"manifest.json": files["manifest.json"], "manifest.sig": signature, **rest})


def test_signature_covers_every_member(cli, source: dict, keys: dict, tmp_path: Path) -> None:
    """A change after signing, even one recomputation cannot see (a verification's status), is refused."""
    older = source["rtx"][0]
    bundle = tmp_path / "signed.tar"
    assert cli("export", older, "-o", bundle, "--sign", keys["ci"], "--store", source["store"]).code == 0
    files = read_tar(bundle)

    def fail(r: dict) -> None:
        r["verifications"][0]["status"] = "failed"

    rewrite_record(files, older, fail)
    tampered = write_tar(tmp_path / "tampered.tar", files)
    for trust in ([keys["ci.pub"]], []):  # refused whether or not the key is trusted here
        message = import_refused(tampered, tmp_path / f"deploy{len(trust)}", trust=trust, error=SignatureError)
        assert "does not match its manifest: tampered after signing" in message
    files["manifest.sig"] = b'{"format": "trtforge-bundle-signature"}'
    malformed = write_tar(tmp_path / "malformed.tar", files)
    assert "malformed" in import_refused(malformed, tmp_path / "deploy3", error=SignatureError)
    del files["manifest.sig"]
    stripped = write_tar(tmp_path / "stripped.tar", files)
    message = import_refused(
        stripped, tmp_path / "deploy4", trust=[keys["ci.pub"]], require_signature=True, error=SignatureError
    )
    assert "not signed" in message
    resigned = write_signed(files, keys["stranger"], tmp_path / "resigned.tar")
    message = import_refused(
        resigned, tmp_path / "deploy5", trust=[keys["ci.pub"]], require_signature=True, error=SignatureError
    )
    assert "not trusted here" in message


@pytest.mark.parametrize("key", [".", "", "/"])
def test_keygen_to_a_path_without_a_file_name_is_bad_input(cli, tmp_path: Path, key: str) -> None:
    """`keygen .` (or '' or /) ended in a traceback (PosixPath('.') has an empty name): now one line, exit 2."""
    before = sorted(tmp_path.iterdir())
    refused = cli("keygen", key, "--json", cwd=tmp_path)
    assert refused.code == 2 and "Traceback" not in refused.stderr, refused
    report = refused.json()
    assert report["error_kind"] == "bad_input" and "names no file" in report["error"] and report["hint"], report
    assert report["private_key"] is None and refused.stderr.count("error: ") == 1, refused
    assert sorted(tmp_path.iterdir()) == before


def test_keys_from_keygen_and_ssh_keygen(cli, source: dict, tmp_path: Path) -> None:
    made = cli("keygen", tmp_path / "team.key", "--json")
    assert made.code == 0, made
    assert (tmp_path / "team.key").stat().st_mode & 0o077 == 0  # private key readable by its owner only
    assert cli("keygen", tmp_path / "team.key").code == 2  # never overwrites a key
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "ssh"], check=True)
    older = source["rtx"][0]
    for private, public, key_id in (
        (tmp_path / "team.key", tmp_path / "team.key.pub", made.json()["key_id"]),
        (tmp_path / "ssh", tmp_path / "ssh.pub", None),
    ):
        bundle = tmp_path / f"{private.name}.tar"
        exported = cli("export", older, "-o", bundle, "--sign", private, "--store", source["store"], "--json")
        assert exported.code == 0, exported
        assert key_id in (None, exported.json()["signed_by"])
        target = tmp_path / f"deploy-{private.name}"
        imported = cli("import", bundle, "--trust", public, "--require-signature", "--store", target, "--json")
        assert imported.code == 0 and imported.json()["verifications"] == 1, imported


@pytest.mark.parametrize(
    ("flag", "content", "message"),
    [
        ("--trust", b"not a key", "is not a PEM or OpenSSH public key"),
        ("--trust", None, "cannot read trusted key"),
        ("--trust", "private", "is a private key"),
        (
            "--sign",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "is not a PEM or OpenSSH private key",
        ),
        ("--sign", "rsa", "not an Ed25519 key"),
    ],
)
def test_bad_key_files_are_one_line_errors(
    cli, source: dict, keys: dict, tmp_path: Path, flag, content, message
) -> None:
    key = tmp_path / "key"
    if content == "private":
        key = keys["ci"]
    elif content == "rsa":
        subprocess.run(
            ["openssl", "genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:1024", "-out", key], check=True
        )
    elif content is not None:
        key.write_bytes(content)
        key.chmod(0o600)  # a key file others can read is refused before it is parsed
    bundle = tmp_path / "b.tar"
    if flag == "--sign":
        result = cli("export", source["rtx"][0], "-o", bundle, "--sign", key, "--store", source["store"])
        assert not bundle.exists()
    else:
        assert cli("export", source["rtx"][0], "-o", bundle, "--store", source["store"]).code == 0
        result = cli("import", bundle, "--trust", key, "--store", tmp_path / "deploy")
        assert not (tmp_path / "deploy").exists()
    assert result.code == 2 and message in result.stderr and "Traceback" not in result.stderr, result
    assert len(result.stderr.strip().splitlines()) == 2, result.stderr  # one error line, one hint


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


def test_export_never_writes_into_its_store(cli, source: dict, keys: dict, tmp_path: Path) -> None:
    """Main wrote the bundle over the store's own catalog (`-o STORE/catalog.sqlite` exited 0; every
    command after it said "file is not a database"). A path inside the store is refused first."""
    store = source["store"]
    before = cli("list", "--store", store, "--json")
    assert before.code == 0, before
    inside = (store / "catalog.sqlite", store / "b.tar", store / "blobs" / "b.tar")
    for output in (*inside, tmp_path / "link" / "catalog.sqlite"):
        if output.parent.name == "link":
            output.parent.symlink_to(store)
        result = cli("export", source["ids"][0], "-o", output, "--sign", keys["ci"], "--store", store)
        assert result.code == 2 and "is inside the store" in result.stderr, result
        assert len(result.stderr.strip().splitlines()) == 2 and "hint:" in result.stderr, result.stderr
    assert [p for p in inside[1:] if p.exists()] == []
    assert cli("list", "--store", store, "--json").stdout == before.stdout
    check = cli("fsck", "--store", store, "--json")
    assert check.code == 0 and check.json()["ok"], check


def test_verifications_before_0005_still_count(tmp_path: Path) -> None:
    """Rows written before migration 0005 were run by `trtforge verify` (or imported when every
    bundle was trusted): the upgrade makes them `local`, and lookup keeps counting them."""
    from sqlalchemy import create_engine, text

    from trtforge.store.migrations import upgrade

    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    engine = create_engine(url)
    with engine.connect() as conn:
        upgrade(conn, "0003_verify")
        conn.execute(text("INSERT INTO blobs VALUES ('" + "b" * 64 + "', 1, 'plan', '2026-01-01')"))
        values = "'a1', 'n', 'k', 'f', 'm', 'tensorrt', '10.13.3', NULL, '[]', '" + "b" * 64 + "', 1, '[]', '[]', '{}'"
        conn.execute(text(f"INSERT INTO artifacts VALUES ({values}, NULL, 0, '[]', '{{}}', '2026-01-01', 'passed')"))
        conn.execute(
            text(
                "INSERT INTO verifications VALUES ('v1', 'a1', 'NVIDIA A10G', '8.6', 'tensorrt', '10.13.3', "
                "'passed', '[]', '[]', '{}', '2026-01-01')"
            )
        )
        conn.commit()
    engine.dispose()
    store = open_store(tmp_path, catalog=url)
    try:
        assert store.catalog.statuses("a1") == {"NVIDIA A10G": "passed"}
        assert [v.trust for v in store.catalog.verifications("a1")] == ["local"]
    finally:
        store.close()


def test_claims_stay_claims_when_exported_again(cli, source: dict, keys: dict, tmp_path: Path) -> None:
    """A store that received a claim cannot turn it into a counted result by signing it onward."""
    older = source["rtx"][0]
    unsigned, resigned = tmp_path / "unsigned.tar", tmp_path / "resigned.tar"
    assert cli("export", older, "-o", unsigned, "--store", source["store"]).code == 0
    assert cli("import", unsigned, "--store", tmp_path / "middle").code == 0
    assert cli("export", older, "-o", resigned, "--sign", keys["ci"], "--store", tmp_path / "middle").code == 0
    imported = cli("import", resigned, "--trust", keys["ci.pub"], "--store", tmp_path / "end", "--json")
    assert imported.code == 0 and (imported.json()["verifications"], imported.json()["claims"]) == (0, 1), imported
    shown = cli("show", older, "--store", tmp_path / "end", "--json").json()
    assert [v["trust"] for v in shown["verifications"]] == ["claimed"] and shown["statuses"] == {}


def test_adopted_plan_key_is_recomputed(cli, source: dict, tmp_path: Path) -> None:
    """An adopted TensorRT-RTX plan (a real one) travels unsigned; its key comes from the plan."""
    store = open_store(source["store"])
    plan = store.blobs.local_file(store.catalog.get_artifact(source["rtx"][0]).plan_sha256)
    store.close()
    model = source["root"] / "models" / "detector-v1.onnx"
    adopted = cli(
        "adopt",
        plan,
        "--name",
        "adopted",
        "--model",
        model,
        "--flavor",
        "tensorrt_rtx",
        "--store",
        source["store"],
        "--json",
    )
    assert adopted.code == 0, adopted
    artifact_id = adopted.json()["artifact_id"]
    files = exported_files(source, tmp_path, [artifact_id])
    assert cli("import", write_tar(tmp_path / "good.tar", files), "--store", tmp_path / "ok").code == 0
    rewrite_record(files, artifact_id, lambda r: r["details"]["compatibility"].update(hardware="ampere_plus"))
    message = import_refused(write_tar(tmp_path / "bad.tar", files), tmp_path / "deploy")
    assert "its build key is not the one" in message


def test_refit_key_is_recomputed_from_the_parent(tmp_path: Path) -> None:
    """A refit's key is its parent's key and the new weights' digest (refit needs a GPU to make
    one, so the record is written here; the rule under test is pure)."""
    from trtforge.rules.keys import refit_key
    from trtforge.stages.bundle import check_record

    weights = "c" * 64
    record = {
        "id": "1" * 32,
        "build_key": refit_key("p" * 64, weights),
        "model_sha256": weights,
        "plan_sha256": "0" * 64,
        "plan_size": 5,
        "flavor": "tensorrt",
        "trt_version": "10.13.3",
        "details": {  # copied from an adopted parent, then the lineage added (refit.record_refit)
            "origin": "adopted",
            "compatibility": {"hardware": "none"},
            "target": {"flavor": "tensorrt", "trt_version": "10.13.3", "gpu_name": None, "compute_capabilities": []},
            "lineage": {"operation": "refit", "parent": "2" * 32, "weights_sha256": weights},
        },
        "gpu_name": None,
        "compute_capabilities": [],
    }
    plan = tmp_path / "placeholder.plan"  # a full TensorRT plan's header says nothing trtforge reads
    plan.write_bytes(b"plan!")
    assert check_record(record, plan, {"2" * 32: "p" * 64}) == ""
    assert "refit parent" in check_record(record, plan, {})
    with pytest.raises(BundleError, match="its build key is not the one"):
        check_record(record, plan, {"2" * 32: "q" * 64})


def test_pins_and_integrity_marks_stay_with_their_store(cli, source: dict, tmp_path: Path) -> None:
    """A pin protects a local service's file and integrity is the local copy's state: neither travels."""
    other, pinned = source["rtx"]
    assert cli("pin", pinned, "--store", source["store"]).code == 0
    bundle = tmp_path / "b.tar"
    assert cli("export", *source["rtx"], "-o", bundle, "--store", source["store"]).code == 0
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
