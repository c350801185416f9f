"""Blobs in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW...) through boto3.

Same contract as the local store: key ``<prefix>blobs/sha256/<aa>/<sha256>``, hashed while
written, visible only when complete, and re-hashed on every verified read. The bytes are
spooled to a local temp file first, because the digest (and so the key) is known only at the
end. The endpoint comes from boto3's usual configuration (``AWS_ENDPOINT_URL``, profiles,
instance roles).

A blob up to ``part_size`` goes up in one PUT; a larger one (a single PUT stops at 5 GiB, and
engines of large language models pass that) as a multipart upload, which S3 makes visible only
when it is completed. Every request carries the SHA-256 of its bytes, so the server rejects
bytes damaged in transit, and asks S3 to keep a SHA-256 checksum with the object
(``ChecksumAlgorithm="SHA256"``; multipart objects keep a checksum of their parts' checksums and
name their digest in their metadata). An upload whose writer died stays invisible and is listed
as a stale temp file by ``fsck`` (``--repair`` aborts it); a bucket lifecycle rule
(AbortIncompleteMultipartUpload) is the belt to that.

A cache hit checks what it serves with one HEAD (:meth:`S3BlobStore.check`): the object's size
must be the recorded one and its stored checksum must name the recorded digest; an object that
carries no such checksum (written by another tool, or replaced) is hashed instead. Anything else
is damage: the build marks the artifact corrupt and rebuilds it.

Transient S3 failures (endpoint unreachable, timeouts, throttling, 5xx) are retried by botocore's
own retry mode (:func:`client_config`: "standard", a few attempts, connect and read timeouts; the
usual ``AWS_RETRY_MODE`` and ``AWS_MAX_ATTEMPTS`` settings win). What remains is one line
(BlobsUnavailableError, exit 1, ``error_kind: blobs_unavailable`` for that recipe), with secrets
in ``AWS_ENDPOINT_URL`` or the credentials hidden.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from trtforge.core.crashpoints import crashpoint
from trtforge.core.errors import BlobsUnavailableError, BlobsUnreachableError, IntegrityError, StoreError
from trtforge.core.extras import needs
from trtforge.core.fsutil import atomic_write
from trtforge.core.redact import redact, remember
from trtforge.rules.keys import sha256_file
from trtforge.store.blobs import (
    BlobCheck,
    BlobRef,
    BlobStat,
    ParallelDigest,
    TempFile,
    check_digest,
    put_bytes_via,
    store_write_errors,
)

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_KEY_TAIL = re.compile(r"blobs/sha256/([0-9a-f]{2})/([0-9a-f]{64})\Z")
CHUNK = 1 << 22
MIB = 1 << 20
# S3's limits (Amazon S3 User Guide, "Amazon S3 multipart upload limits"): parts of 5 MiB to
# 5 GiB except the last, at most 10,000 parts; one PUT or CopyObject of at most 5 GiB.
MIN_PART = 5 * MIB
MAX_PARTS = 10_000
DEFAULT_PART = 64 * MIB
STALE_UPLOAD_AGE_S = 24 * 3600  # an unfinished upload this old is not coming back
# botocore's retries and timeouts (client_config): "standard" mode retries throttling, 5xx and
# connection errors with jittered exponential backoff (at most 1 + 2 + 4 s of waiting here).
RETRY_MODE = "standard"
TOTAL_ATTEMPTS = 4
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
DIGEST_METADATA = "trtforge-sha256"  # x-amz-meta-trtforge-sha256: the digest a multipart object holds
_MISSING = ("404", "NoSuchKey", "NotFound")
S3_URL_HINT = (
    "give TRTFORGE_BLOBS as s3://<bucket>[/<prefix>], the prefix's parts separated by single '/' and "
    "none of them '.' or '..' (e.g. s3://team-engines/trtforge)"
)


def client_config() -> Any:
    """botocore's Config for trtforge's S3 client: retry mode and attempts (unless the environment
    or the AWS config file set them: AWS_RETRY_MODE, AWS_MAX_ATTEMPTS), connect and read timeouts."""
    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    retries: dict[str, Any] = {}
    if session.get_config_variable("retry_mode") is None:
        retries["mode"] = RETRY_MODE
    if session.get_config_variable("max_attempts") is None:
        retries["total_max_attempts"] = TOTAL_ATTEMPTS
    return Config(retries=retries, connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S)


def _endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL", "")


def _said(exc: BaseException) -> str:
    """botocore's one line: the error code and message of a response, else the exception's text."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code, message = error.get("Code", "?"), error.get("Message", "")
        return " ".join(f"{code} (HTTP {status}) {message}".split())
    return " ".join(str(exc).split()) or type(exc).__name__


def _hint_for(exc: BaseException) -> str:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
        return "check the AWS credentials and the bucket's policy for this machine"
    if code == "NoSuchBucket":
        return "the bucket is gone: create it again, or point TRTFORGE_BLOBS at another one"
    return "the S3 endpoint kept failing after botocore's retries: check AWS_ENDPOINT_URL and the service, then retry"


def _bad_setting(exc: BaseException) -> tuple[str, str]:
    """Which AWS setting botocore refused while making the client, and what a valid one looks like."""
    from botocore.exceptions import (
        InvalidMaxRetryAttemptsError,
        InvalidRegionError,
        InvalidRetryModeError,
        ProfileNotFound,
    )

    said = str(exc)
    if isinstance(exc, ProfileNotFound):
        return "AWS_PROFILE", "name a profile of ~/.aws/config (or unset AWS_PROFILE)"
    if isinstance(exc, InvalidRegionError):
        return "the region (AWS_REGION, AWS_DEFAULT_REGION)", "give a region name such as us-east-1"
    if isinstance(exc, InvalidRetryModeError):
        return "AWS_RETRY_MODE", "use standard, adaptive or legacy (or unset it: trtforge uses standard)"
    if isinstance(exc, InvalidMaxRetryAttemptsError) or "int()" in said:
        return "AWS_MAX_ATTEMPTS", "give a whole number of attempts such as 4 (or unset it)"
    if "endpoint" in said.lower():
        name = "AWS_ENDPOINT_URL_S3" if os.environ.get("AWS_ENDPOINT_URL_S3") else "AWS_ENDPOINT_URL"
        return name, f"give {name} as a URL with its scheme, such as https://minio.internal:9000"
    return "the AWS configuration", "check the AWS_* environment variables and ~/.aws/config"


def _new_client(boto3: Any, bucket: str) -> Any:
    """boto3's S3 client; a setting botocore refuses is one line naming it (StoreError, exit 2)."""
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.client("s3", config=client_config())
    except (ValueError, BotoCoreError) as exc:
        setting, hint = _bad_setting(exc)
        said = " ".join(str(exc).split()) or type(exc).__name__
        raise StoreError(
            redact(f"cannot use S3 bucket {bucket}: {setting} is not valid: {said}", _endpoint()), hint=hint
        ) from None


def part_size_for(size: int, preferred: int) -> int:
    """The part size for a ``size``-byte upload: ``preferred``, grown (in MiB) to fit 10,000 parts."""
    needed = -(-size // MAX_PARTS)
    return max(preferred, MIN_PART, -(-needed // MIB) * MIB)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, "some/prefix/")."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not url.startswith("s3://") or not _BUCKET.fullmatch(bucket):
        raise StoreError(f"not an S3 location: {redact(url, url)[:120]!r}", hint=S3_URL_HINT)
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise StoreError(f"S3 prefix {prefix!r} has empty, '.' or '..' parts", hint=S3_URL_HINT)
    return bucket, f"{prefix}/" if prefix else ""


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class S3BlobStore:
    """sha256-addressed blobs in one bucket under one prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        part_size: int = DEFAULT_PART,
        cache_dir: Path | None = None,
    ) -> None:
        if client is None:
            with needs("s3", "an s3:// blob store (TRTFORGE_BLOBS)"):
                import boto3  # lazy: only S3 stores pay for it

            remember(_endpoint())  # a password in the endpoint URL is never printed
            client = _new_client(boto3, bucket)
        if part_size < MIN_PART:
            raise StoreError(f"S3 part size {part_size} is below S3's minimum of {MIN_PART} bytes")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self.cache_dir = cache_dir  # local copies of blobs, for loaders that want a path
        self._check_bucket()

    @classmethod
    def from_url(cls, url: str, *, cache_dir: Path | None = None) -> S3BlobStore:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, cache_dir=cache_dir)

    def _check_bucket(self) -> None:
        """The bucket answers: exit 2 when it does not (missing, refused: the setup is wrong; an
        endpoint that does not answer after botocore's retries: ``blobs_unavailable``)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            error = BlobsUnreachableError if status >= 500 else StoreError
            raise error(
                redact(f"cannot use S3 bucket {self.bucket}: {_said(exc)}", _endpoint()),
                hint="create the bucket and check AWS_ENDPOINT_URL and credentials",
            ) from None
        except BotoCoreError as exc:
            raise BlobsUnreachableError(redact(f"cannot use S3 bucket {self.bucket}: {exc}", _endpoint())) from None

    @contextmanager
    def _unavailable(self, doing: str) -> Iterator[None]:
        """An S3 failure botocore's retries did not get past is one line (BlobsUnavailableError)."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            message = f"S3 bucket {self.bucket}: {doing} failed: {_said(exc)}"
            raise BlobsUnavailableError(redact(message, _endpoint()), hint=_hint_for(exc)) from None

    def key_for(self, sha256: str) -> str:
        check_digest(sha256)
        return f"{self.prefix}blobs/sha256/{sha256[:2]}/{sha256}"

    def location(self, sha256: str) -> str:
        return f"s3://{self.bucket}/{self.key_for(sha256)}"

    def _head(self, sha256: str, *, checksums: bool = False) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        extra = {"ChecksumMode": "ENABLED"} if checksums else {}
        with self._unavailable(f"looking up blob {sha256[:12]}"):
            try:
                return self.client.head_object(Bucket=self.bucket, Key=self.key_for(sha256), **extra)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _MISSING:
                    return None
                raise

    def exists(self, sha256: str) -> bool:
        return self._head(sha256) is not None

    def stat(self, sha256: str) -> BlobStat | None:
        head = self._head(sha256)
        if head is None:
            return None
        return BlobStat(int(head["ContentLength"]), head["LastModified"].timestamp())

    def check(self, sha256: str, size: int) -> BlobCheck:
        """Is the object what its row records? One HEAD: its size, and the SHA-256 checksum S3 keeps
        with it (a single PUT's names the digest itself; a multipart object names its digest in its
        metadata). An object with neither (replaced by another tool, or written before checksums)
        is hashed instead."""
        head = self._head(sha256, checksums=True)
        if head is None:
            return BlobCheck(False)
        stored = int(head["ContentLength"])
        if stored != size:
            return BlobCheck(True, f"has {stored} bytes, its record says {size}")
        checksum = head.get("ChecksumSHA256")
        if checksum == _b64(bytes.fromhex(sha256)):
            return BlobCheck(True)
        multipart = re.search(r"-\d+\Z", str(head.get("ETag", "")).strip('"')) is not None
        if multipart and head.get("Metadata", {}).get(DIGEST_METADATA) == sha256:
            return BlobCheck(True)
        if checksum is not None and not multipart:
            return BlobCheck(True, f"its S3 SHA-256 checksum ({checksum}) names other bytes")
        return BlobCheck(True) if self.verify(sha256) else BlobCheck(True, "its bytes do not hash to its name")

    def put_chunks(self, chunks: Iterable[bytes | memoryview]) -> BlobRef:
        size = 0
        digest = ParallelDigest()
        with tempfile.TemporaryFile(prefix="trtforge-s3-") as spool:
            try:
                with store_write_errors():
                    for chunk in chunks:
                        digest.update(chunk)
                        spool.write(chunk)
                        size += len(chunk)
                    spool.flush()
                sha = digest.hexdigest()
            finally:
                digest.close()
            crashpoint("blob-temp-written")
            if not self.check(sha, size).intact:  # absent, or a damaged object that this write repairs
                spool.seek(0)
                with self._unavailable(f"uploading blob {sha[:12]}"):
                    self._upload(spool, sha, size)
            else:
                self._touch(sha)
        return BlobRef(sha, size)

    def _upload(self, spool: BinaryIO, sha: str, size: int) -> None:
        if size > self.part_size:
            self._put_multipart(spool, sha, size)
            return
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.key_for(sha),
            Body=spool,
            ContentLength=size,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=_b64(bytes.fromhex(sha)),
            Metadata={DIGEST_METADATA: sha},
        )

    def _put_multipart(self, spool: BinaryIO, sha: str, size: int) -> None:
        """Upload ``size`` bytes from ``spool`` in parts; the object appears only on completion."""
        step = part_size_for(size, self.part_size)
        key = self.key_for(sha)
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256", Metadata={DIGEST_METADATA: sha}
        )
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number in range(1, -(-size // step) + 1):
                body = spool.read(step)
                checksum = _b64(hashlib.sha256(body).digest())
                sent = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ContentLength=len(body),
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                )
                parts.append({"PartNumber": number, "ETag": sent["ETag"], "ChecksumSHA256": checksum})
                crashpoint("s3-part-uploaded")
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):  # the upload's own error is the one to report
                self._abort(key, upload_id)
            raise

    def _abort(self, key: str, upload_id: str) -> bool:
        """Abort an unfinished upload; False when it is gone already or the endpoint is unreachable
        (fsck --repair or the lifecycle rule gets it later). An S3 error answer (access denied) is
        one line (BlobsUnavailableError): the upload stays, and the user must be told why."""
        from botocore.exceptions import BotoCoreError, ClientError

        with self._unavailable(f"aborting the unfinished upload of {key}"):
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchUpload", "404"):
                    return False
                raise
            except BotoCoreError:
                return False
        return True

    def _copy(self, source_key: str, key: str, **extra: Any) -> None:
        """Server-side copy; above ``part_size`` a multipart copy (CopyObject stops at 5 GiB)."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=self.part_size, multipart_chunksize=self.part_size)
        self.client.copy({"Bucket": self.bucket, "Key": source_key}, self.bucket, key, ExtraArgs=extra, Config=config)

    def _touch(self, sha256: str) -> None:
        """Refresh LastModified of a reused blob (a copy onto itself), so gc leaves it alone; the
        copy keeps (or gains) the SHA-256 checksum and digest metadata a hit checks."""
        key = self.key_for(sha256)
        with self._unavailable(f"refreshing blob {sha256[:12]}"):
            self._copy(
                key,
                key,
                MetadataDirective="REPLACE",
                Metadata={DIGEST_METADATA: sha256},
                ChecksumAlgorithm="SHA256",
            )

    def put_bytes(self, data: bytes | memoryview) -> BlobRef:
        return put_bytes_via(self, data)

    def put_file(self, path: Path) -> BlobRef:
        with open(path, "rb") as handle:
            return self.put_chunks(iter(lambda: handle.read(CHUNK), b""))

    def _stream(self, sha256: str) -> Iterator[bytes]:
        from botocore.exceptions import ClientError

        with self._unavailable(f"reading blob {sha256[:12]}"):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=self.key_for(sha256))["Body"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _MISSING:
                    raise IntegrityError(f"blob {sha256[:12]} is missing from the store") from None
                raise
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

    def read_verified(self, sha256: str) -> bytes:
        data = b"".join(self._stream(sha256))
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise IntegrityError(f"blob {sha256[:12]} is corrupted (its bytes hash to {actual[:12]})")
        return data

    def verify(self, sha256: str) -> bool:
        digest = hashlib.sha256()
        try:
            for chunk in self._stream(sha256):
                digest.update(chunk)
        except IntegrityError:
            return False
        return digest.hexdigest() == sha256

    def local_file(self, sha256: str, *, verify: bool = True) -> Path:
        """A local copy of the blob (downloaded once into ``cache_dir``, hashed while written).

        An inference service or ``lookup --output`` needs a file; the copy is re-hashed on
        every call with ``verify`` and fetched again when it does not match.
        """
        if self.cache_dir is None:
            raise StoreError("this S3 blob store has no local cache directory for plan files")
        path = self.cache_dir / sha256[:2] / check_digest(sha256)
        if path.is_file() and (not verify or sha256_file(path) == sha256):
            return path
        digest = hashlib.sha256()
        with store_write_errors(), atomic_write(path) as handle:
            for chunk in self._stream(sha256):
                digest.update(chunk)
                handle.write(chunk)
            if digest.hexdigest() != sha256:  # raising here leaves no file behind
                raise IntegrityError(f"blob {sha256[:12]} is corrupted (its bytes hash to {digest.hexdigest()[:12]})")
        os.chmod(path, 0o444)
        return path

    def iter_digests(self) -> Iterator[str]:
        with self._unavailable("listing blobs"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}blobs/sha256/"
            )
            for page in pages:
                for item in page.get("Contents", []):
                    match = _KEY_TAIL.search(item["Key"])
                    if match and match.group(2).startswith(match.group(1)):
                        yield match.group(2)

    def temp_files(self, *, max_age_s: float = STALE_UPLOAD_AGE_S) -> list[TempFile]:
        """Multipart uploads under this store's blobs started more than ``max_age_s`` ago.

        S3 cannot say whether their writer is alive, so age alone decides; the default leaves
        a day for the slowest upload of a large engine.
        """
        now = time.time()
        stale = []
        with self._unavailable("listing unfinished uploads"):
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}blobs/sha256/"
            )
            for page in pages:
                for upload in page.get("Uploads", []):
                    age = now - upload["Initiated"].timestamp()
                    if age > max_age_s:
                        location = f"s3://{self.bucket}/{upload['Key']}?uploadId={upload['UploadId']}"
                        stale.append(TempFile(location, round(age, 1), None, False))
        return stale

    def clean_stale_temp(self, *, max_age_s: float = STALE_UPLOAD_AGE_S) -> list[TempFile]:
        return []  # a listing per command is not worth it: fsck --repair and lifecycle rules do this

    def remove_temp(self, location: str) -> bool:
        """Abort one unfinished upload that ``temp_files`` listed."""
        match = re.fullmatch(r"s3://([^/]+)/(.+)\?uploadId=(.+)", location)
        if match is None or match.group(1) != self.bucket or not match.group(2).startswith(f"{self.prefix}blobs/"):
            return False
        return self._abort(match.group(2), match.group(3))

    def delete(self, sha256: str) -> bool:
        self._drop_local_copy(sha256)
        if not self.exists(sha256):
            return False
        with self._unavailable(f"deleting blob {sha256[:12]}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key_for(sha256))
        return True

    def _drop_local_copy(self, sha256: str) -> None:
        if self.cache_dir is not None:
            (self.cache_dir / sha256[:2] / check_digest(sha256)).unlink(missing_ok=True)

    def quarantine(self, sha256: str) -> str | None:
        """Copy the damaged object to ``<prefix>quarantine/`` and remove it from the blob namespace."""
        self._drop_local_copy(sha256)
        if not self.exists(sha256):
            return None
        target = f"{self.prefix}quarantine/{sha256}.{int(time.time())}"
        with self._unavailable(f"quarantining blob {sha256[:12]}"):
            self._copy(self.key_for(sha256), target)
            self.client.delete_object(Bucket=self.bucket, Key=self.key_for(sha256))
        return f"s3://{self.bucket}/{target}"
