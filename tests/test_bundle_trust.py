"""Bundles, names and keys an adversary controls (issue 20: items 1, 6, 7, 9, 10 and 15b).

Real TensorRT-RTX plans, real bundles written by `trtforge export` and rewritten the way an
attacker would (manifest kept consistent), real key files. Every test here failed on main
843520b because of the defect it names, except the guard that a second import of the same
artifact is no conflict on SQLite and PostgreSQL.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from contextlib import closing
from pathlib import Path

import pytest

from tests import onnx_models
from tests.catalog_rows import add_row, add_verification_row
from tests.conftest import MLP_RECIPE, REPO, subprocess_env
from tests.procs import CrashPoint, finish, start, trtforge_argv
from trtforge.core.errors import BundleError, SignatureError
from trtforge.stages.bundle import import_bundle
from trtforge.store import open_store

RTX_4090 = ("--gpu", "NVIDIA GeForce RTX 4090", "--cc", "8.9", "--flavor", "tensorrt_rtx")


def read_tar(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isreg()}  # type: ignore[union-attr]


def write_tar(path: Path, files: dict[str, bytes], mode: str = "w") -> Path:
    """``files`` in the order given (export writes manifest.json first, manifest.sig second)."""
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def entry(data: bytes) -> dict[str, object]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def rewritten(files: dict[str, bytes], artifact_id: str, change) -> dict[str, bytes]:
    """The bundle with one record rewritten and the manifest made to match, unsigned."""
    files = {k: v for k, v in files.items() if k != "manifest.sig"}
    name = f"artifacts/{artifact_id}.json"
    record = json.loads(files[name])
    change(record)
    files[name] = json.dumps(record).encode()
    manifest = json.loads(files["manifest.json"])
    manifest["files"][name] = entry(files[name])
    files["manifest.json"] = json.dumps(manifest).encode()
    return files


def resigned(files: dict[str, bytes], key: Path) -> dict[str, bytes]:
    """The files with a fresh signature over their manifest: what the key's holder would export."""
    from trtforge.rules.signing import load_private_key, sign_manifest

    signature = sign_manifest(files["manifest.json"], load_private_key(key))
    rest = {k: v for k, v in files.items() if k not in ("manifest.json", "manifest.sig")}
    return {"manifest.json": files["manifest.json"], "manifest.sig": signature, **rest}


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A store with two real TensorRT-RTX artifacts of two models; the first verified on an RTX 4090
    (the row `trtforge verify` records on a GPU machine)."""
    root = tmp_path_factory.mktemp("origin")
    recipes = []
    for seed, name in ((0, "detector"), (1, "other")):
        onnx_models.save(onnx_models.mlp(seed), root / "models" / f"{name}.onnx")
        recipe = root / f"{name}.yaml"
        recipe.write_text(MLP_RECIPE.format(name=name, model=f"models/{name}.onnx", level=0))
        recipes.append(str(recipe))
    store_dir = root / "store"
    proc = subprocess.run(
        [sys.executable, "-m", "trtforge", "build", *recipes, "--store", str(store_dir), "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    built = json.loads(proc.stdout)
    store = open_store(store_dir)
    try:
        artifact = store.catalog.get_artifact(built[0]["artifact_id"])
        version = artifact.trt_version
        add_verification_row(store, artifact.id, "NVIDIA GeForce RTX 4090", cc="8.9", flavor="tensorrt_rtx",
                             version=version)  # fmt: skip
        plans = {r["artifact_id"]: store.blobs.local_file(r["plan_sha256"]).read_bytes() for r in built}
    finally:
        store.close()
    keys = root / "keys"
    keys.mkdir()
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", keys / "k1.pem"], check=True)
    subprocess.run(["openssl", "pkey", "-in", keys / "k1.pem", "-pubout", "-out", keys / "k1.pub"], check=True)
    return {
        "store": store_dir,
        "id": built[0]["artifact_id"],
        "other": built[1]["artifact_id"],
        "plans": plans,
        "version": version,
        "key": keys / "k1.pem",
        "pub": keys / "k1.pub",
    }


@pytest.fixture(scope="module")
def signed_bundle(origin: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """s1.tar: the verified artifact, exported and signed with k1."""
    bundle = tmp_path_factory.mktemp("s1") / "s1.tar"
    proc = subprocess.run(
        [sys.executable, "-m", "trtforge", "export", origin["id"], "-o", str(bundle), "--sign", str(origin["key"]),
         "--store", str(origin["store"])],
        capture_output=True, text=True, env=subprocess_env(), timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return bundle


def forged_from(files: dict[str, bytes], artifact_id: str, plan: bytes) -> dict[str, bytes]:
    """Same artifact id, recipe, build key and model digest; another valid plan; no signature."""
    sha = hashlib.sha256(plan).hexdigest()
    old = next(n for n in files if n.startswith("plans/"))

    def swap(record: dict) -> None:
        record.update(plan_sha256=sha, plan_size=len(plan), verifications=[])

    forged = rewritten(files, artifact_id, swap)
    del forged[old]
    forged[f"plans/{sha}.plan"] = plan
    manifest = json.loads(forged["manifest.json"])
    del manifest["files"][old]
    manifest["files"][f"plans/{sha}.plan"] = entry(plan)
    forged["manifest.json"] = json.dumps(manifest).encode()
    return forged


# -- item 1: a signature vouches only for what it signed ----------------------------------------


def test_signed_results_never_attach_to_a_forged_plan(cli, origin: dict, signed_bundle: Path, tmp_path: Path) -> None:
    """The attack of issue 20 item 1. On main the signed import answered "already_present ... 1
    verification counted" and `lookup --verified-only` served the forged plan."""
    artifact_id, real_plan = origin["id"], origin["plans"][origin["id"]]
    forged = write_tar(tmp_path / "forged.tar", forged_from(read_tar(signed_bundle), artifact_id,
                                                            origin["plans"][origin["other"]]))  # fmt: skip
    target = ("--store", tmp_path / "serving")
    assert cli("import", forged, *target).code == 0  # unsigned: accepted, as a consistent record
    signed = cli("import", signed_bundle, "--trust", origin["pub"], "--require-signature", *target, "--json")
    assert signed.code == 2, signed
    assert f"artifact {artifact_id} is already in this catalog with another plan" in signed.stderr
    [conflict] = signed.json()["error_detail"]["conflicts"]
    assert conflict["plan_sha256_in_bundle"] == hashlib.sha256(real_plan).hexdigest()

    rtx = (*RTX_4090, "--trt", origin["version"], *target)
    assert cli("lookup", "detector", *rtx, "--verified-only").code == 1  # nothing vouches for the forged plan
    shown = cli("show", artifact_id, *target, "--json").json()
    assert shown["verifications"] == [] and shown["status"] == "unverified"
    assert "signed by key" not in cli("show", artifact_id, *target).stdout

    # The other order: the signed bundle first, then the forgery is the conflict.
    first = ("--store", tmp_path / "first")
    assert cli("import", signed_bundle, "--trust", origin["pub"], "--require-signature", *first).code == 0
    refused = cli("import", forged, *first)
    assert refused.code == 2 and "with another plan" in refused.stderr, refused
    found = cli("lookup", "detector", *RTX_4090, "--trt", origin["version"], *first, "--verified-only", "--json")
    assert found.code == 0 and Path(found.json()["best"]["path"]).read_bytes() == real_plan, found


def test_the_same_bundle_unsigned_then_signed_counts_its_results(
    cli, origin: dict, signed_bundle: Path, tmp_path: Path
) -> None:
    """An import without --trust keeps the results as claims; importing the same bundle again with
    the key makes them count (on main the claims stayed claims: 0 counted, --verified-only failed)."""
    target = ("--store", tmp_path / "serving")
    assert cli("import", signed_bundle, *target).code == 0
    again = cli("import", signed_bundle, "--trust", origin["pub"], "--require-signature", *target, "--json")
    assert again.code == 0, again
    assert again.json()["already_present"] == [origin["id"]] and again.json()["verifications"] == 1
    found = cli("lookup", "detector", *RTX_4090, "--trt", origin["version"], *target, "--verified-only")
    assert found.code == 0, found


def test_the_same_artifact_again_is_no_conflict_on_either_catalog(
    catalog_url: str, origin: dict, signed_bundle: Path, tmp_path: Path
) -> None:
    """Every identity field read back from SQLite and PostgreSQL compares equal to the bundle's
    (JSON columns, floats): a second import is `already_present`, a forged plan still conflicts."""
    store = open_store(tmp_path / "serving", catalog=catalog_url)
    try:
        first = import_bundle(store, signed_bundle, trust=[origin["pub"]])
        again = import_bundle(store, signed_bundle, trust=[origin["pub"]])
        assert (first.imported, again.already_present, again.verifications) == ([origin["id"]], [origin["id"]], 0)
        forged = forged_from(read_tar(signed_bundle), origin["id"], origin["plans"][origin["other"]])
        with pytest.raises(BundleError, match="with another plan"):
            import_bundle(store, write_tar(tmp_path / "forged.tar", forged))
    finally:
        store.close()


def _other_name(record: dict) -> None:
    record["name"] = "renamed"


def _failed_result(record: dict) -> None:
    record["verifications"][0]["status"] = "failed"


@pytest.mark.parametrize(("change", "differs"), [(_other_name, "name differ"), (_failed_result, "status differ")])
def test_an_id_held_with_another_record_is_a_conflict(
    cli, origin: dict, signed_bundle: Path, tmp_path: Path, change, differs: str
) -> None:
    """The same plan under another record (or a result id reused with another outcome) occupies the
    id first; the signed bundle is refused, naming what differs. On main it was "already present"."""
    files = read_tar(signed_bundle)
    first = write_tar(tmp_path / "first.tar", rewritten(files, origin["id"], change))
    target = ("--store", tmp_path / "serving")
    assert cli("import", first, *target).code == 0
    signed = cli("import", signed_bundle, "--trust", origin["pub"], *target)
    assert signed.code == 2 and differs in signed.stderr and "nothing was imported" in signed.stderr, signed


# -- item 15b: one artifact listed twice ----------------------------------------------------------


def test_a_manifest_listing_an_artifact_twice_is_refused(origin: dict, signed_bundle: Path, tmp_path: Path) -> None:
    """On main the artifact was reported both imported and already present."""
    files = {k: v for k, v in read_tar(signed_bundle).items() if k != "manifest.sig"}
    manifest = json.loads(files["manifest.json"])
    manifest["artifacts"] *= 2
    files["manifest.json"] = json.dumps(manifest).encode()
    store = open_store(tmp_path / "serving")
    try:
        with pytest.raises(BundleError, match=f"lists artifact {origin['id']} more than once"):
            import_bundle(store, write_tar(tmp_path / "twice.tar", files))
        assert store.catalog.list_artifacts() == []
    finally:
        store.close()


# -- item 6: records from a bundle are held to a local record's rules ---------------------------


def _set(path: str, value: object):
    """A change to one field of a record: "name", "verifications.0.gpu_name", "build_log.0.message"."""

    def change(record: dict) -> None:
        *parents, last = path.split(".")
        node = record
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "../../../../tmp/x/ESCAPED", "name must match"),
        ("name", "nl\n", "name must match"),
        ("name", "a..b", "name must not contain '..'"),
        ("name", "evil\x1b]0;owned\x07", "holds a control character"),
        ("recipe_path", "/r\x1b[2J.yaml", "recipe_path holds a control character"),
        ("build_log", [{"level": "warning", "message": "\x1b[31mred"}], "build_log[0].message holds a control"),
        ("verifications.0.gpu_name", "NVIDIA \x1b[2J", "holds a control character"),
        ("verifications.0.runtime_version", "1.7.1\n", "verifications.0.runtime_version TensorRT version"),
        ("verifications.0.id", "not-a-uuid", "verifications.0.id is not an artifact id"),
    ],
)
def test_imported_record_fields_are_validated_like_local_ones(
    origin: dict, signed_bundle: Path, tmp_path: Path, field: str, value: object, message: str
) -> None:
    """On main each of these imported (a name of ../.. let `lookup --output DIR` write outside DIR,
    escape sequences reached the terminal through list and show). A trusted signature does not
    excuse them either."""
    files = rewritten(read_tar(signed_bundle), origin["id"], _set(field, value))
    for trust, name in (([], "unsigned.tar"), ([origin["pub"]], "signed.tar")):
        bundle = write_tar(tmp_path / name, resigned(files, origin["key"]) if trust else files)
        store = open_store(tmp_path / f"serving-{name}")
        try:
            with pytest.raises(BundleError) as info:
                import_bundle(store, bundle, trust=trust)
            assert message in info.value.message and "artifacts/" in info.value.message
            assert store.catalog.list_artifacts() == []
        finally:
            store.close()


def test_lookup_output_never_leaves_the_directory_given(cli, tmp_path: Path) -> None:
    """A name from a catalog someone else wrote becomes no path outside `--output DIR` (main wrote
    deep/a/b/../../../escaped.plan, i.e. outside DIR)."""
    store_dir = tmp_path / "store"
    store = open_store(store_dir)
    try:
        add_row(store, name="../../../escaped", gpu_name="NVIDIA A10G", ccs=("8.6",))
    finally:
        store.close()
    out = tmp_path / "deep" / "a" / "b"
    out.mkdir(parents=True)
    target = ("--gpu", "NVIDIA A10G", "--cc", "8.6", "--trt", "10.13.3", "--flavor", "tensorrt")
    found = cli("lookup", "../../../escaped", *target, "--output", out, "--store", store_dir)
    assert found.code == 2 and "is not a plain file name" in found.stderr, found
    assert sorted(p.name for p in tmp_path.rglob("*.plan")) == []


def test_control_characters_are_escaped_wherever_text_is_printed(cli, tmp_path: Path) -> None:
    """Rows of a catalog written elsewhere (an older trtforge, a shared PostgreSQL) print their
    names escaped in list, show and lookup, and so do errors (main printed them raw)."""
    store_dir = tmp_path / "store"
    name, gpu = "evil\x1b]0;owned\x07", "NVIDIA \x1b[2JA10G"
    store = open_store(store_dir)
    try:
        artifact_id = add_row(store, name=name, gpu_name=gpu, ccs=("8.6",))
    finally:
        store.close()
    target = ("--gpu", "NVIDIA A10G", "--cc", "8.6", "--trt", "10.13.3", "--flavor", "tensorrt")
    outputs = [
        cli("list", "--store", store_dir, env={"COLUMNS": "200"}),  # wide enough that no cell is cut
        cli("show", artifact_id, "--store", store_dir),
        cli("lookup", name, *target, "--explain", "--store", store_dir),
    ]
    for result in outputs:
        assert result.code == 0, result
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout, result
    assert "evil\\x1b]0;owned\\x07" in outputs[0].stdout and "NVIDIA \\x1b[2JA10G" in outputs[1].stdout
    assert json.loads(cli("show", artifact_id, "--store", store_dir, "--json").stdout)["name"] == name  # JSON: exact
    bad_store = tmp_path / "file\x1b[31m"
    bad_store.write_text("not a directory")
    error = cli("list", "--store", bad_store)
    assert error.code == 2 and "\x1b" not in error.stderr and "file\\x1b[31m" in error.stderr, error


# -- item 7: every name pattern matches the whole text --------------------------------------------


def test_names_with_a_trailing_newline_are_refused(cli, tmp_path: Path) -> None:
    """`re.match("...$")` lets "nl\\n" through: main adopted it, and `deploy triton` made a directory
    named "nl\\n"."""
    plan, model = tmp_path / "x.plan", onnx_models.save(onnx_models.mlp(0), tmp_path / "m.onnx")
    plan.write_bytes(b"a plan built elsewhere")
    adopted = cli("adopt", plan, "--name", "nl\n", "--model", model, "--trt", "10.13.3", "--cc", "8.6",
                  "--store", tmp_path / "store")  # fmt: skip
    assert adopted.code == 2 and "must match" in adopted.stderr, adopted
    store = open_store(tmp_path / "store")
    try:
        add_row(store, name="nl\n")  # as a catalog written elsewhere may hold it
    finally:
        store.close()
    deployed = cli("deploy", "triton", "nl\n", "-o", tmp_path / "repo", "--store", tmp_path / "store")
    assert deployed.code == 2 and "is not a plain directory name" in deployed.stderr, deployed
    assert not (tmp_path / "repo").exists()


def _version() -> None:
    from trtforge.rules.flavors import parse_version

    parse_version("10.13.3\n")


def _digest() -> None:
    from trtforge.store.blobs import check_digest

    check_digest("a" * 64 + "\n")


def _lock_key() -> None:
    from trtforge.store.locks import LockDir

    LockDir(Path("/nonexistent")).path_for("key\n")


def _bucket() -> None:
    from trtforge.store.s3 import parse_s3_url

    parse_s3_url("s3://bucket\n/prefix")


def _model_pin() -> None:
    from trtforge.rules.recipe import ModelSpec

    ModelSpec(onnx="m.onnx", sha256="a" * 64 + "\n")


def _recipe_cc() -> None:
    from trtforge.rules.recipe import Compatibility

    Compatibility(compute_capabilities=["8.6\n"])


@pytest.mark.parametrize("check", [_version, _digest, _lock_key, _bucket, _model_pin, _recipe_cc])
def test_validators_full_match(check) -> None:
    """Each pattern that checks a name, id, digest or version refuses a trailing newline (main's
    `re.match("...$")` let every one of these through)."""
    from trtforge.core.errors import TrtforgeError

    with pytest.raises((TrtforgeError, ValueError)):
        check()


def _anchored_patterns_matched_with_match(path: Path) -> list[str]:
    """``re.compile("...$")`` / ``re.match("...$", ...)`` in a module: ``$`` also matches before a
    trailing newline, so a pattern that validates must be written unanchored and full-matched."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "re"):
            continue
        if node.func.attr not in ("compile", "match", "search") or not node.args:
            continue
        pattern = node.args[0]
        text = pattern.value if isinstance(pattern, ast.Constant) and isinstance(pattern.value, str) else None
        if isinstance(pattern, ast.JoinedStr) and pattern.values and isinstance(pattern.values[-1], ast.Constant):
            text = str(pattern.values[-1].value)
        if text is not None and text.endswith("$") and not text.endswith("\\$"):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_no_pattern_relies_on_dollar_for_the_end_of_the_text() -> None:
    modules = sorted((REPO / "trtforge").rglob("*.py"))
    offenders = [hit for path in modules for hit in _anchored_patterns_matched_with_match(path)]
    assert offenders == [], "use re.fullmatch (or \\Z): " + ", ".join(offenders)


# -- item 9: import reads the manifest (and signature) before anything else ----------------------


def _bytes_written() -> int:
    """Bytes this process has passed to write(2) so far (Linux /proc/self/io ``wchar``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/self/io")


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, read in chunks: a "plan" that compresses to almost nothing."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


BOMB = 256 << 20


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .tar.gz of a few hundred KiB holding a 256 MiB "plan" and no manifest."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("plans/" + "0" * 64 + ".plan")
        info.size = BOMB
        tar.addfile(info, io.BufferedReader(_Zeros(BOMB)))
    assert path.stat().st_size < 2 << 20
    return path


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="bytes written are read from /proc/self/io")
@pytest.mark.parametrize("signature_required", [False, True])
def test_a_small_bundle_cannot_fill_the_disk(
    bomb: Path, origin: dict, tmp_path: Path, signature_required: bool
) -> None:
    """Main extracted all 256 MiB (a 2 GiB one filled a 300 MB disk) before finding no manifest,
    even with --require-signature. Now the first member decides, and nothing is written."""
    store_dir = tmp_path / "serving"
    store = open_store(store_dir)
    options = {"trust": [origin["pub"]], "require_signature": True} if signature_required else {}
    try:
        before = _bytes_written()
        with pytest.raises((BundleError, SignatureError), match=r"manifest\.json is missing"):
            import_bundle(store, bomb, **options)
        written = _bytes_written() - before
    finally:
        store.close()
    assert written < 1 << 20, f"{written} bytes written for a refused bundle"
    assert sum(p.stat().st_size for p in store_dir.rglob("*") if p.is_file()) < 4 << 20


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="bytes written are read from /proc/self/io")
def test_members_are_bounded_by_the_manifest(origin: dict, signed_bundle: Path, tmp_path: Path) -> None:
    """A member bigger than the manifest declares, or one it does not list, is refused before its
    bytes are written (main extracted them all first); a manifest that declares more than the disk
    has is refused before any member is read (main had no such check); the signature must come
    right after the manifest, so it is checked before anything else is read."""
    files = {k: v for k, v in read_tar(signed_bundle).items() if k != "manifest.sig"}
    plan = next(n for n in files if n.startswith("plans/"))
    padding = bytes(32 << 20)
    longer = write_tar(tmp_path / "longer.tar", {**files, plan: files[plan] + padding})
    message, written = _refused(longer, tmp_path / "a")
    assert "has the wrong size" in message and written < 1 << 20
    extra = write_tar(tmp_path / "extra.tar", {**files, "plans/" + "1" * 64 + ".plan": padding})
    message, written = _refused(extra, tmp_path / "b")
    assert "is not listed" in message and written < 1 << 20

    manifest = json.loads(files["manifest.json"])
    manifest["files"][plan]["size"] = 1 << 50
    huge = write_tar(tmp_path / "huge.tar", {**files, "manifest.json": json.dumps(manifest).encode()})
    message, written = _refused(huge, tmp_path / "c")
    assert "bundle needs" in message and "MiB free" in message and written < 1 << 20
    late = write_tar(tmp_path / "late.tar", {**files, "manifest.sig": resigned(files, origin["key"])["manifest.sig"]})
    assert "the signature must follow the manifest" in _refused(late, tmp_path / "d")[0]


def _refused(bundle: Path, store_dir: Path) -> tuple[str, int]:
    """Import in-process: the error message and the bytes written meanwhile; nothing reached the store."""
    store = open_store(store_dir)
    try:
        before = _bytes_written()
        with pytest.raises(BundleError) as info:
            import_bundle(store, bundle)
        written = _bytes_written() - before
        assert store.catalog.list_artifacts() == []
    finally:
        store.close()
    leftovers = [p for p in store_dir.rglob("*") if p.is_file() and "blobs" in p.parts]
    assert leftovers == []  # no blob of a refused bundle
    return info.value.message, written


# -- item 10: key files others can change or read ------------------------------------------------


def test_key_files_others_can_touch_are_refused(cli, origin: dict, signed_bundle: Path, tmp_path: Path) -> None:
    """On main a world-writable trusted key and a world-readable signing key were used silently."""
    public = tmp_path / "k1.pub"
    public.write_bytes(origin["pub"].read_bytes())
    public.chmod(0o666)
    result = cli("import", signed_bundle, "--trust", public, "--require-signature", "--store", tmp_path / "s")
    assert result.code == 2 and "is writable by others (mode 0666)" in result.stderr, result
    assert f"hint: chmod go-w {public}" in result.stderr and not (tmp_path / "s").exists()
    public.chmod(0o644)
    assert cli("import", signed_bundle, "--trust", public, "--store", tmp_path / "s").code == 0

    private = tmp_path / "k1.pem"
    private.write_bytes(origin["key"].read_bytes())
    for mode in (0o644, 0o640):  # group-readable too, as ssh refuses it
        private.chmod(mode)
        result = cli("export", origin["id"], "-o", tmp_path / "b.tar", "--sign", private, "--store", origin["store"])
        assert result.code == 2 and f"(mode {mode:04o})" in result.stderr, result
        assert f"hint: chmod 600 {private}" in result.stderr and not (tmp_path / "b.tar").exists()
    private.chmod(0o600)
    exported = cli("export", origin["id"], "-o", tmp_path / "b.tar", "--sign", private, "--store", origin["store"])
    assert exported.code == 0, exported


def test_keygen_writes_keys_import_accepts_whatever_the_umask(tmp_path: Path) -> None:
    from trtforge.rules.signing import generate_key_pair, load_private_key, load_public_key

    previous = os.umask(0o002)  # a shared-group umask would make the public key group-writable
    try:
        public, _ = generate_key_pair(tmp_path / "team.key")
    finally:
        os.umask(previous)
    assert (tmp_path / "team.key").stat().st_mode & 0o777 == 0o600 and public.stat().st_mode & 0o777 == 0o644
    load_private_key(tmp_path / "team.key")
    load_public_key(public)


# -- a refused import leaves the store exactly as it was ------------------------------------------


def store_state(store_dir: Path) -> tuple[list[str], list[str]]:
    """Every blob file and every catalog row: what a refused import must leave as it was."""
    blobs = sorted(str(p.relative_to(store_dir)) for p in (store_dir / "blobs").rglob("*") if p.is_file())
    with closing(sqlite3.connect(store_dir / "catalog.sqlite")) as db:
        return blobs, list(db.iterdump())


@pytest.fixture(scope="module")
def serving_template(origin: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store that already holds the other artifact, imported from an unsigned bundle."""
    root = tmp_path_factory.mktemp("serving")
    bundle, store_dir = root / "other.tar", root / "store"
    for argv in (
        ["export", origin["other"], "-o", str(bundle), "--store", str(origin["store"])],
        ["import", str(bundle), "--store", str(store_dir)],
    ):
        proc = subprocess.run([sys.executable, "-m", "trtforge", *argv], capture_output=True, text=True,
                              env=subprocess_env(), timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    return store_dir


@pytest.fixture
def serving(serving_template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "serving"
    shutil.copytree(serving_template, copy)
    return copy


def assert_fsck_clean(cli, store_dir: Path) -> None:
    check = cli("fsck", "--store", store_dir, "--json")
    assert check.code == 0 and check.json()["ok"] and check.json()["orphans"] == [], check


def refused_untouched(cli, bundle: Path, store_dir: Path, *options: str | Path) -> str:
    """`trtforge import` refuses ``bundle`` (exit 2, no traceback) and ``store_dir`` is as it was."""
    before = store_state(store_dir)
    result = cli("import", bundle, *options, "--store", store_dir)
    assert result.code == 2 and "Traceback" not in result.stderr, result
    assert store_state(store_dir) == before
    assert_fsck_clean(cli, store_dir)
    return result.stderr


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("created_at", 1700000000),
        ("verifications.0.created_at", 1700000000),
        ("created_at", "1700000000"),
        ("created_at", "9999-12-31T23:59:59-23:59"),
        ("created_at", "0001-01-01T00:00:00+01:00"),
        ("verifications.0.created_at", "9999-12-31T23:59:59-23:59"),
    ],
    ids=["int", "verification-int", "digits", "past-9999-utc", "before-year-1-utc", "verification-past-9999"],
)
@pytest.mark.slow  # seconds each: README's test command keeps its 5-minute cap (.ci/run runs it)
def test_a_record_refused_for_its_timestamp_stores_nothing(
    cli, origin: dict, signed_bundle: Path, serving: Path, tmp_path: Path, field: str, value: object
) -> None:
    """A timestamp is ISO 8601 text with an offset, within years 1-9999 in UTC. Main refused an int
    only when inserting the rows ("do not fit this catalog"), after storing the plan (an orphan for
    fsck), and crashed with a traceback on the text ones (ValueError, OverflowError)."""
    files = resigned(rewritten(read_tar(signed_bundle), origin["id"], _set(field, value)), origin["key"])
    stderr = refused_untouched(cli, write_tar(tmp_path / "t.tar", files), serving, "--trust", origin["pub"])
    assert f"artifacts/{origin['id']}.json: {field}" in stderr, stderr


def test_an_import_refused_while_recording_removes_the_blobs_it_stored(
    cli, origin: dict, signed_bundle: Path, serving: Path, tmp_path: Path
) -> None:
    """Another import takes the artifact's id (with another plan) after the first look for conflicts
    and before the rows go in: the transaction refuses the bundle. Main left its plan in the blob
    store, an orphan for fsck."""
    forged = forged_from(read_tar(signed_bundle), origin["id"], origin["plans"][origin["other"]])
    crash = CrashPoint(tmp_path / "cp", "import-blobs-stored")
    try:
        first = start(trtforge_argv("import", signed_bundle, "--trust", origin["pub"], "--store", serving), crash.env)
        crash.wait_reached(first)
        assert cli("import", write_tar(tmp_path / "forged.tar", forged), "--store", serving).code == 0
        crash.resume()
        code, _, stderr = finish(first)
    finally:
        crash.close()
    assert code == 2 and "with another plan" in stderr, stderr
    signed_plan = hashlib.sha256(origin["plans"][origin["id"]]).hexdigest()
    assert not any(signed_plan in name for name in store_state(serving)[0])
    assert_fsck_clean(cli, serving)


def _adopted_with_nan(record: dict) -> None:
    record["details"].update(origin="adopted")
    record["details"]["target"]["note"] = float("nan")  # json.dumps writes NaN


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (_set("details.target.compute_capabilities", 5), "details.target.compute_capabilities"),
        (_set("details.target.env", ["a"]), "details.target.env"),
        (_adopted_with_nan, ""),
    ],
    ids=["ccs-int", "env-list", "adopted-nan"],
)
def test_a_record_whose_key_cannot_be_computed_is_refused_cleanly(
    cli, origin: dict, signed_bundle: Path, serving: Path, tmp_path: Path, change, where: str
) -> None:
    """The build target in details is typed as the target rules make it, and whatever else fails
    while a record's key is recomputed refuses the bundle. Main crashed with a traceback (TypeError
    in check_record, AttributeError in BuildTarget.from_key_fields, ValueError in canonical_json)."""
    files = resigned(rewritten(read_tar(signed_bundle), origin["id"], change), origin["key"])
    stderr = refused_untouched(cli, write_tar(tmp_path / "t.tar", files), serving, "--trust", origin["pub"])
    assert f"artifacts/{origin['id']}.json" in stderr and where in stderr, stderr


DEEP = b"[" * 100000 + b"]" * 100000  # valid JSON, nested deeper than any parser recursion goes


def _deep_manifest(files: dict[str, bytes], origin: dict) -> dict[str, bytes]:
    files = {k: v for k, v in files.items() if k != "manifest.sig"}  # unsigned
    files["manifest.json"] = b'{"deep": ' + DEEP + b", " + files["manifest.json"].lstrip()[1:]
    return files


def _deep_record(files: dict[str, bytes], origin: dict) -> dict[str, bytes]:
    files = rewritten(files, origin["id"], _set("build_log", "@deep@"))
    name = f"artifacts/{origin['id']}.json"
    files[name] = files[name].replace(b'"@deep@"', DEEP)
    manifest = json.loads(files["manifest.json"])
    manifest["files"][name] = entry(files[name])
    files["manifest.json"] = json.dumps(manifest).encode()
    return resigned(files, origin["key"])


def _deep_signature(files: dict[str, bytes], origin: dict) -> dict[str, bytes]:
    return {**files, "manifest.sig": DEEP}


@pytest.mark.parametrize(
    ("deepen", "message"),
    [(_deep_manifest, "bundle manifest"), (_deep_record, "artifacts/"), (_deep_signature, "bundle signature")],
    ids=["manifest", "record", "signature"],
)
def test_deeply_nested_json_is_refused_cleanly(
    cli, origin: dict, signed_bundle: Path, serving: Path, tmp_path: Path, deepen, message: str
) -> None:
    """Main crashed with a RecursionError traceback (bundle_read._parse_json, signing.check_signature),
    for the manifest before the signature was even checked."""
    bundle = write_tar(tmp_path / "deep.tar", deepen(read_tar(signed_bundle), origin))
    stderr = refused_untouched(cli, bundle, serving, "--trust", origin["pub"], "--require-signature")
    assert message in stderr and "nest" in stderr, stderr


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("build_seconds", float("inf")),
        ("verifications.0.perf", [{"ms": float("nan")}]),
        ("build_log", [{"level": "info", "message": "m", "at": -float("inf")}]),
    ],
    ids=["build-seconds-infinity", "perf-nan", "minus-infinity"],
)
def test_non_finite_numbers_in_a_record_are_refused(
    cli, origin: dict, signed_bundle: Path, serving: Path, tmp_path: Path, field: str, value: object
) -> None:
    """JSON has no NaN or Infinity (json.dumps writes them anyway). Main imported them, and
    `show --json` then printed invalid JSON ("build_seconds": Infinity)."""
    files = resigned(rewritten(read_tar(signed_bundle), origin["id"], _set(field, value)), origin["key"])
    stderr = refused_untouched(cli, write_tar(tmp_path / "t.tar", files), serving, "--trust", origin["pub"])
    assert f"artifacts/{origin['id']}.json" in stderr, stderr
