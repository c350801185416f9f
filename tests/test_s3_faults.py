"""A team's S3 bucket under faults (issue 29): an endpoint that goes away mid-upload, objects replaced
behind trtforge's back, many runners importing while gc runs.

The S3 server is a private ``moto_server`` (tests/services.py) a test may kill; the catalog of the
team tests is a database on the suite's PostgreSQL server. Each asserts the exit code, the error
lines with no traceback and no secret, the JSON, and a clean ``fsck`` afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import CrashPoint, finish, start, start_build, trtforge_argv
from tests.services import FaultyS3, MotoServer
from trtforge.store.s3 import TOTAL_ATTEMPTS, S3BlobStore

pytestmark = pytest.mark.slow  # fault injection against moto_server (.ci/run: pytest -m slow)

SECRET = "s3cretKEY29"  # the secret access key and the endpoint's password: never printed


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.close()


def _new_bucket(server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on ``server``; boto3 here and in child processes talks to it, through an endpoint
    URL and credentials that hold the secret."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://minio:{SECRET}@127.0.0.1:{server.port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"trtforge-{uuid.uuid4().hex[:12]}"
    server.create_bucket(name)
    return name


@pytest.fixture
def bucket(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    return _new_bucket(moto, monkeypatch)


@pytest.fixture
def own_moto() -> Iterator[MotoServer]:
    """A server of the test's own, for a test that kills it."""
    server = MotoServer()
    yield server
    server.close()


def _client() -> Any:
    import boto3

    return boto3.client("s3")


def _clean(stderr: str) -> None:
    assert "Traceback" not in stderr and SECRET not in stderr, stderr


def _fsck(cli: Callable[..., Any], store: Path, env: dict[str, str], *catalog: str) -> dict[str, Any]:
    check = cli("fsck", "--store", store, *catalog, "--json", env=env)
    assert check.code == 0 and check.json()["ok"] and check.json()["missing"] == [], check
    return check.json()


@pytest.mark.slow
def test_an_endpoint_gone_mid_upload_fails_each_recipe_in_one_line(
    own_moto: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
    mlp_recipe: Callable[..., Path],
    store: Path,
    tmp_path: Path,
    cli: Callable[..., Any],
) -> None:
    """moto_server is killed while the first recipe's plan is about to go up: botocore retries, then
    each recipe is `failed` with `blobs_unavailable`, the JSON is complete, exit 1, no secret printed;
    with the endpoint back the same command builds both.

    Fails on c1e1ac4: botocore's EndpointConnectionError traceback, exit 1, no JSON."""
    moto, bucket = own_moto, _new_bucket(own_moto, monkeypatch)
    env = {"TRTFORGE_BLOBS": f"s3://{bucket}/team"}
    recipes = [mlp_recipe("gone0", seed=11), mlp_recipe("gone1", seed=12)]
    point = CrashPoint(tmp_path / "cp", "blob-temp-written")
    batch = start_build(*recipes, "--store", store, "--jobs", "1", "--json", env={**env, **point.env})
    point.wait_reached(batch)  # a plan spooled and hashed; its upload is next
    moto.kill()
    point.resume()
    code, results, err = finish(batch)
    point.close()
    _clean(err)
    assert code == 1, err
    assert [r["name"] for r in results] == ["gone0", "gone1"], results
    assert [(r["status"], r["error_kind"]) for r in results] == [("failed", "blobs_unavailable")] * 2
    for result in results:
        assert result["error"].startswith(f"S3 bucket {bucket}: ") and SECRET not in json.dumps(result), result

    # Still gone: the store cannot be opened: one line per recipe (and its hint), exit 2.
    again = cli("build", *recipes, "--store", store, env=env)
    _clean(again.stderr)
    assert again.code == 2, again
    lines = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 2 and all(f"cannot use S3 bucket {bucket}" in line for line in lines), again.stderr

    moto.start()  # a fresh, empty server on the same port
    moto.create_bucket(bucket)
    rebuilt = cli("build", *recipes, "--store", store, "--json", env=env)
    assert rebuilt.code == 0 and [r["status"] for r in rebuilt.json()] == ["built", "built"], rebuilt
    _fsck(cli, store, env)


def test_a_bucket_gone_mid_batch_fails_the_recipe_in_one_line(
    bucket: str, mlp_recipe: Callable[..., Path], store: Path, tmp_path: Path, cli
) -> None:
    """The bucket is deleted while a plan is about to go up (botocore does not retry NoSuchBucket):
    that recipe is `failed` with `blobs_unavailable` and a hint, at once; exit 1, JSON complete.

    Fails on c1e1ac4: botocore's ClientError traceback, exit 1, no JSON."""
    env = {"TRTFORGE_BLOBS": f"s3://{bucket}/team"}
    recipe = mlp_recipe("bucketless", seed=13)
    point = CrashPoint(tmp_path / "cp", "blob-temp-written")
    batch = start_build(recipe, "--store", store, "--json", env={**env, **point.env})
    point.wait_reached(batch)
    _client().delete_bucket(Bucket=bucket)
    point.resume()
    code, results, err = finish(batch)
    point.close()
    _clean(err)
    assert code == 1, err
    [result] = results
    assert result["status"] == "failed" and result["error_kind"] == "blobs_unavailable", result
    assert "NoSuchBucket" in result["error"] and SECRET not in json.dumps(result), result
    human = cli("build", recipe, "--store", store, env=env)  # the store cannot be opened now: exit 2
    _clean(human.stderr)
    assert human.code == 2 and "cannot use S3 bucket" in human.stderr and "hint: create the bucket" in human.stderr



@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("AWS_ENDPOINT_URL", f"minio:{SECRET}@127.0.0.1:{{port}}", "AWS_ENDPOINT_URL"),  # no scheme
        ("AWS_ENDPOINT_URL", "not a url", "AWS_ENDPOINT_URL"),
        ("AWS_PROFILE", "no-such-profile", "AWS_PROFILE"),
        ("AWS_DEFAULT_REGION", "us east 1", "AWS_DEFAULT_REGION"),
        ("AWS_MAX_ATTEMPTS", "abc", "AWS_MAX_ATTEMPTS"),
        ("AWS_RETRY_MODE", "bogus", "AWS_RETRY_MODE"),
    ],
    ids=["endpoint-without-scheme", "endpoint-not-a-url", "profile", "region", "max-attempts", "retry-mode"],
)
def test_an_aws_setting_botocore_refuses_is_one_line_naming_it(
    setting: str,
    value: str,
    named: str,
    moto: MotoServer,
    bucket: str,
    postgres_catalog: str,
    monkeypatch: pytest.MonkeyPatch,
    mlp_recipe: Callable[..., Path],
    store: Path,
    cli: Callable[..., Any],
) -> None:
    """One AWS setting botocore refuses while trtforge makes its S3 client: list (human and --json)
    and build --json are one line naming the setting, a hint, exit 2 (bad input), and never show the
    endpoint's password.

    Fails on 38d4c89: botocore's ValueError ("Invalid endpoint: minio:<password>@..."),
    ProfileNotFound, InvalidRegionError or InvalidRetryModeError traceback, exit 1, no JSON."""
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "another-key")  # the secret is the endpoint's password alone
    monkeypatch.setenv(setting, value.format(port=moto.port))
    env = {"TRTFORGE_BLOBS": f"s3://{bucket}/team"}
    listed = cli("list", "--store", store, "--catalog", postgres_catalog, env=env)
    _clean(listed.stderr)
    assert listed.code == 2 and SECRET not in listed.stdout, listed
    [line] = [line for line in listed.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: cannot use S3 bucket {bucket}: ") and named in line, line
    assert "hint: " in listed.stderr, listed.stderr
    as_json = cli("list", "--store", store, "--catalog", postgres_catalog, "--json", env=env)
    _clean(as_json.stderr)
    [failure] = as_json.json()
    assert as_json.code == 2 and failure["error_kind"] == "bad_input" and named in failure["error"], failure
    assert SECRET not in as_json.stdout
    built = cli("build", mlp_recipe("unconfigured", seed=14), "--store", store, "--json", env=env)
    _clean(built.stderr)
    [result] = built.json()
    assert built.code == 2 and (result["status"], result["error_kind"]) == ("failed", "bad_input"), result
    assert named in result["error"] and SECRET not in built.stdout, result

def _replace(bucket: str, key: str, how: str) -> None:
    """Put other bytes at ``key``: of another size, or of the same size (with no SHA-256 checksum, as
    most tools write, or with one of their own)."""
    client = _client()
    stored = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    if how == "another size":
        client.put_object(Bucket=bucket, Key=key, Body=b"x" * 70)
        return
    other = bytes(b ^ 0xFF for b in stored[:64]) + stored[64:]
    if how == "same size":
        client.put_object(Bucket=bucket, Key=key, Body=other)
    else:
        checksum = base64.b64encode(hashlib.sha256(other).digest()).decode()
        client.put_object(Bucket=bucket, Key=key, Body=other, ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum)


@pytest.mark.parametrize("how", ["another size", "same size", "same size, its own checksum"])
def test_a_replaced_object_is_never_a_hit(
    how: str, bucket: str, mlp_recipe: Callable[..., Path], store: Path, cli
) -> None:
    """The plan object of an artifact is replaced in the bucket. The next build does not serve it: the
    artifact is marked corrupt, the recipe rebuilt, the object written again; fsck is clean.

    Fails on c1e1ac4 for the same-size replacements: an S3 hit checked the object's size alone and
    answered `cached` with the damaged bytes."""
    env = {"TRTFORGE_BLOBS": f"s3://{bucket}/team"}
    recipe = mlp_recipe("replaced", seed=21)
    [first] = cli("build", recipe, "--store", store, "--json", env=env).json()
    sha = first["plan_sha256"]
    _replace(bucket, f"team/blobs/sha256/{sha[:2]}/{sha}", how)

    again = cli("build", recipe, "--store", store, "--json", env=env)
    _clean(again.stderr)
    assert again.code == 0, again
    [rebuilt] = again.json()
    assert rebuilt["status"] == "built" and rebuilt["artifact_id"] != first["artifact_id"], rebuilt
    assert f"plan {sha[:12]} of artifact {first['artifact_id'][:12]}" in again.stderr, again.stderr
    assert "marked corrupt" in again.stderr
    listed = {a["artifact_id"]: a["integrity"] for a in cli("list", "--store", store, "--json", env=env).json()}
    assert listed == {first["artifact_id"]: "corrupt", rebuilt["artifact_id"]: "ok"}
    assert S3BlobStore(bucket, "team/").verify(rebuilt["plan_sha256"])  # written again, whole
    assert cli("build", recipe, "--store", store, "--json", env=env).json()[0]["status"] == "cached"
    _fsck(cli, store, env)


class CountingReads:
    """The real client, counting the objects it downloads."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def get_object(self, **kwargs: Any) -> Any:
        self.reads += 1
        return self._client.get_object(**kwargs)


def test_a_hit_checks_what_trtforge_wrote_without_downloading_it(bucket: str) -> None:
    """Objects trtforge wrote (one PUT or in parts, and after a reuse refreshed them) carry what a
    hit's HEAD compares; another tool's object of the right size is hashed, and found out."""
    client = CountingReads(_client())
    blobs = S3BlobStore(bucket, "h/", client=client, part_size=5 << 20)
    small, big = b"plan" * 1000, bytes(range(256)) * (45 << 10)  # 4 KB in one PUT, 11.25 MiB in 3 parts
    refs = [blobs.put_bytes(small), blobs.put_bytes(big)]
    for data in (small, big):  # reused: copied onto themselves (LastModified refreshed)
        blobs.put_bytes(data)
    client.reads = 0
    for ref in refs:
        assert blobs.check(ref.sha256, ref.size).intact
        assert not blobs.check(ref.sha256, ref.size + 1).intact  # another size than recorded
    assert client.reads == 0

    key = blobs.key_for(refs[1].sha256)  # the multipart one, replaced by a plain PUT of the same size
    _client().put_object(Bucket=bucket, Key=key, Body=bytes(len(big)))
    found = blobs.check(refs[1].sha256, refs[1].size)
    assert found.present and found.damage == "its bytes do not hash to its name" and client.reads == 1
    assert blobs.check("0" * 64, 1).present is False



class KillingAfterFirstPart:
    """The real client; the S3 server is killed once the first part of an upload is up."""

    def __init__(self, client: Any, server: MotoServer) -> None:
        self._client = client
        self._server = server

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def upload_part(self, **kwargs: Any) -> Any:
        sent = self._client.upload_part(**kwargs)
        if kwargs["PartNumber"] == 1:
            self._server.kill()
        return sent


@pytest.mark.slow
def test_an_endpoint_gone_between_the_parts_of_an_upload_is_one_line(
    own_moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto_server dies after the first of three parts: botocore's retries give up (on the upload and
    on its abort), and the write is one ``blobs_unavailable`` line naming the bucket, with no secret.

    Fails on c1e1ac4: botocore's EndpointConnectionError escaped (a traceback in the CLI)."""
    import boto3

    from trtforge.core.errors import TrtforgeError, kind_of

    bucket = _new_bucket(own_moto, monkeypatch)
    client = KillingAfterFirstPart(boto3.client("s3"), own_moto)
    blobs = S3BlobStore(bucket, "mid/", client=client, part_size=5 << 20)
    data = bytes(range(256)) * (45 << 10)  # 11.25 MiB: three parts
    with pytest.raises(TrtforgeError) as caught:
        blobs.put_bytes(data)
    said = str(caught.value)
    assert kind_of(caught.value) == "blobs_unavailable", said
    assert said.startswith(f"S3 bucket {bucket}: uploading blob ") and "\n" not in said, said
    assert SECRET not in said + str(caught.value.hint), said

# -- many runners, one catalog and one bucket, and gc -----------------------------------------------

GC_ROUNDS = """
import sys
from trtforge.stages.maintenance import GcPolicy, execute_gc, plan_gc
from trtforge.store import open_store

store = open_store(sys.argv[1], catalog=sys.argv[2])
removed = 0
for _ in range(int(sys.argv[3])):  # everything this store learned goes, its blobs with no grace
    removed += execute_gc(store, plan_gc(store, GcPolicy(older_than_days=0, blob_grace_s=0)))["artifacts_removed"]
store.close()
print(removed)
"""
IMPORTERS = 8
ROUNDS = 3


@pytest.mark.slow
def test_eight_runners_import_one_bundle_while_gc_runs(
    bucket: str, postgres_catalog: str, mlp_recipe: Callable[..., Path], tmp_path: Path, cli
) -> None:
    """8 processes import one bundle, each into its own store directory, sharing one PostgreSQL
    catalog and one bucket, while gc removes what they import (no grace for blobs), several rounds.
    No import and no gc fails, none prints a traceback, and every artifact left has its plan.

    Fails on c1e1ac4: imports racing on the blob row (UniqueViolation) or on the artifact
    (a BundleError "records do not fit this catalog"), and gc deleting a blob row an import had
    just referenced (ForeignKeyViolation)."""
    env = {"TRTFORGE_BLOBS": f"s3://{bucket}/team"}
    [built] = cli("build", mlp_recipe("shared", seed=31), "--store", tmp_path / "source", "--json").json()
    bundle = tmp_path / "shared.tar"
    assert cli("export", built["artifact_id"], "-o", bundle, "--store", tmp_path / "source").code == 0
    catalog = ("--catalog", postgres_catalog)
    assert cli("import", bundle, "--store", tmp_path / "gc", *catalog, env=env).code == 0  # the schema, once
    for round_ in range(ROUNDS):
        gc = start([sys.executable, "-c", GC_ROUNDS, str(tmp_path / "gc"), postgres_catalog, "20"], env)
        importers = [
            start(trtforge_argv("import", bundle, "--store", tmp_path / f"runner{i}", *catalog, "--json"), env)
            for i in range(IMPORTERS)
        ]
        outcomes = [finish(p) for p in importers]
        gc_code, _, gc_err = finish(gc)
        assert gc_code == 0 and "Traceback" not in gc_err, (round_, gc_err)
        for code, data, err in outcomes:
            assert code == 0 and "Traceback" not in err, (round_, err)
            assert data["imported"] + data["already_present"] == [built["artifact_id"]], (round_, data)
    _fsck(cli, tmp_path / "gc", env, *catalog)
    final = cli("import", bundle, "--store", tmp_path / "last", *catalog, "--json", env=env)
    assert final.code == 0, final
    _fsck(cli, tmp_path / "last", env, *catalog)


# -- an endpoint that throttles, fails or refuses: botocore's retries, then one line -----------------


@pytest.fixture
def faulty(moto: MotoServer) -> Iterator[FaultyS3]:
    proxy = FaultyS3(moto)
    yield proxy
    proxy.close()


@pytest.mark.slow  # three builds each, and botocore's backoff
@pytest.mark.parametrize(
    ("status", "code", "settings", "attempts"),
    [
        (503, "SlowDown", {}, TOTAL_ATTEMPTS),
        (500, "InternalError", {"AWS_MAX_ATTEMPTS": "2"}, 2),  # the usual AWS setting wins over trtforge's
        (403, "AccessDenied", {}, 1),  # not transient: botocore does not retry it
    ],
    ids=["throttled", "5xx-AWS_MAX_ATTEMPTS", "access-denied"],
)
def test_an_s3_error_botocore_did_not_get_past_is_that_recipes_one_line(
    status: int,
    code: str,
    settings: dict[str, str],
    attempts: int,
    faulty: FaultyS3,
    monkeypatch: pytest.MonkeyPatch,
    mlp_recipe: Callable[..., Path],
    store: Path,
    cli: Callable[..., Any],
) -> None:
    """Every PUT of a blob is answered with an S3 error: botocore's retry mode tries a throttled or
    failed request again (TOTAL_ATTEMPTS in all, or AWS_MAX_ATTEMPTS), an access denied once; then
    the recipe is `failed` with `blobs_unavailable`, one line, no secret, exit 1. With the endpoint
    healthy again, the same command builds it.

    Fails on c1e1ac4 (integration before issue 29): botocore's ClientError traceback ("reached max
    retries"), exit 1, no JSON."""
    bucket = _new_bucket(faulty.upstream, monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://minio:{SECRET}@127.0.0.1:{faulty.port}")
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    env = {"TRTFORGE_BLOBS": f"s3://{bucket}/team"}
    recipe = mlp_recipe("throttled", seed=41)
    faulty.failing = (status, code)
    failed = cli("build", recipe, "--store", store, "--json", env=env)
    _clean(failed.stderr)
    assert failed.code == 1, failed
    [result] = failed.json()
    assert result["status"] == "failed" and result["error_kind"] == "blobs_unavailable", result
    assert result["error"].startswith(f"S3 bucket {bucket}: uploading blob "), result
    assert f"{code} (HTTP {status})" in result["error"] and SECRET not in json.dumps(result), result
    assert faulty.puts and set(faulty.puts.values()) == {attempts}, faulty.puts  # each blob PUT, so many times
    assert cli("list", "--store", store, "--json", env=env).json() == []  # nothing recorded
    human = cli("build", recipe, "--store", store, env=env)  # as a person reads it: one line and a hint
    _clean(human.stderr)
    lines = [line for line in human.stderr.splitlines() if line.startswith("error:")]
    assert human.code == 1 and len(lines) == 1 and code in lines[0], human.stderr
    assert "hint: " in human.stderr, human.stderr

    faulty.failing = None
    built = cli("build", recipe, "--store", store, "--json", env=env)
    assert built.code == 0 and built.json()[0]["status"] == "built", built
    _fsck(cli, store, env)


def test_a_throttled_upload_goes_through_on_botocores_retry(
    faulty: FaultyS3, monkeypatch: pytest.MonkeyPatch, mlp_recipe: Callable[..., Path], store: Path, cli
) -> None:
    """Two throttled PUTs, then the endpoint takes them: botocore's retries get the plan up, the
    recipe is built, and the object is whole (a hit checks it)."""
    bucket = _new_bucket(faulty.upstream, monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://minio:{SECRET}@127.0.0.1:{faulty.port}")
    env = {"TRTFORGE_BLOBS": f"s3://{bucket}/team"}
    recipe = mlp_recipe("slowed", seed=42)
    faulty.failing, faulty.remaining = (503, "SlowDown"), 2
    built = cli("build", recipe, "--store", store, "--json", env=env)
    _clean(built.stderr)
    assert built.code == 0 and built.json()[0]["status"] == "built", built
    assert faulty.remaining == 0 and sum(faulty.puts.values()) >= 3, faulty.puts
    again = cli("build", recipe, "--store", store, "--json", env=env)
    assert again.code == 0 and again.json()[0]["status"] == "cached", again
    _fsck(cli, store, env)


def test_an_upload_s3_refuses_to_abort_is_one_line_for_fsck_repair(
    faulty: FaultyS3, postgres_catalog: str, monkeypatch: pytest.MonkeyPatch, store: Path, cli: Callable[..., Any]
) -> None:
    """A stale unfinished upload (a dead writer's) that the endpoint refuses to abort (403
    AccessDenied on AbortMultipartUpload): fsck --repair is one `blobs_unavailable` line with a
    hint, exit 1, JSON well-formed, no secret; the upload stays listed, and with the endpoint
    allowing it the same command removes it.

    Fails on 38d4c89: botocore's AccessDenied (ClientError) traceback, exit 1, no JSON."""
    bucket = _new_bucket(faulty.upstream, monkeypatch)
    key = f"team/blobs/sha256/ab/{'ab' * 32}"
    _client().create_multipart_upload(Bucket=bucket, Key=key)  # moto dates it 2010: stale
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://minio:{SECRET}@127.0.0.1:{faulty.port}")
    env = {"TRTFORGE_BLOBS": f"s3://{bucket}/team"}
    catalog = ("--catalog", postgres_catalog)
    before = cli("fsck", "--store", store, *catalog, "--json", env=env).json()
    [stale] = before["stale_temp"]
    faulty.failing, faulty.methods = (403, "AccessDenied"), ("DELETE",)

    human = cli("fsck", "--repair", "--store", store, *catalog, env=env)
    _clean(human.stderr)
    [line] = [line for line in human.stderr.splitlines() if line.startswith("error:")]
    assert human.code == 1 and line.startswith(f"error: S3 bucket {bucket}: ") and "AccessDenied" in line, human
    assert "hint: " in human.stderr, human.stderr
    as_json = cli("fsck", "--repair", "--store", store, *catalog, "--json", env=env)
    _clean(as_json.stderr)
    failure = as_json.json()
    assert as_json.code == 1 and failure["error_kind"] == "blobs_unavailable", failure
    assert SECRET not in as_json.stdout
    assert cli("fsck", "--store", store, *catalog, "--json", env=env).json()["stale_temp"] == [stale]  # left as it was

    faulty.failing = None
    repaired = cli("fsck", "--repair", "--store", store, *catalog, "--json", env=env)
    assert repaired.code == 0 and repaired.json()["repair"]["removed_temp"] == [stale], repaired
    assert _fsck(cli, store, env, *catalog)["stale_temp"] == []
