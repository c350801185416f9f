"""Blobs in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW...) through boto3.

Same contract as the local store: key ``<prefix>blobs/sha256/<aa>/<sha256>``, hashed while
written, visible only when complete (an S3 PUT creates the object whole or not at all, and the
request carries the SHA-256 checksum so the server rejects bytes damaged in transit), and
re-hashed on every verified read. The bytes are spooled to a local temp file first, because
the digest (and so the key) is known only at the end. The endpoint comes from boto3's usual
configuration (``AWS_ENDPOINT_URL``, profiles, instance roles).
"""

from __future__ import annotations

import base64
import hashlib
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from trtforge.crashpoints import crashpoint
from trtforge.errors import IntegrityError, StoreError
from trtforge.store.blobs import (
    STALE_TEMP_AGE_S,
    BlobRef,
    BlobStat,
    TempFile,
    check_digest,
    put_bytes_via,
    store_write_errors,
)

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_KEY_TAIL = re.compile(r"blobs/sha256/([0-9a-f]{2})/([0-9a-f]{64})$")
CHUNK = 1 << 22


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, "some/prefix/")."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    if not url.startswith("s3://") or not _BUCKET.match(bucket):
        raise StoreError(f"not an S3 location: {url[:120]!r}", hint="use s3://<bucket>[/<prefix>]")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise StoreError(f"S3 prefix {prefix!r} has empty, '.' or '..' parts")
    return bucket, f"{prefix}/" if prefix else ""


class S3BlobStore:
    """sha256-addressed blobs in one bucket under one prefix."""

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None) -> None:
        if client is None:
            import boto3  # lazy: only S3 stores pay for it

            client = boto3.client("s3")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self._check_bucket()

    @classmethod
    def from_url(cls, url: str) -> S3BlobStore:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix)

    def _check_bucket(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(
                f"cannot use S3 bucket {self.bucket}: {exc}",
                hint="create the bucket and check AWS_ENDPOINT_URL and credentials",
            ) from None

    def key_for(self, sha256: str) -> str:
        check_digest(sha256)
        return f"{self.prefix}blobs/sha256/{sha256[:2]}/{sha256}"

    def location(self, sha256: str) -> str:
        return f"s3://{self.bucket}/{self.key_for(sha256)}"

    def _head(self, sha256: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key_for(sha256))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def exists(self, sha256: str) -> bool:
        return self._head(sha256) is not None

    def stat(self, sha256: str) -> BlobStat | None:
        head = self._head(sha256)
        if head is None:
            return None
        return BlobStat(int(head["ContentLength"]), head["LastModified"].timestamp())

    def put_chunks(self, chunks: Iterable[bytes | memoryview]) -> BlobRef:
        digest = hashlib.sha256()
        size = 0
        with tempfile.TemporaryFile(prefix="trtforge-s3-") as spool:
            with store_write_errors():
                for chunk in chunks:
                    digest.update(chunk)
                    spool.write(chunk)
                    size += len(chunk)
                spool.flush()
            crashpoint("blob-temp-written")
            sha = digest.hexdigest()
            head = self._head(sha)
            if head is None or int(head["ContentLength"]) != size or not self.verify(sha):
                spool.seek(0)
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.key_for(sha),
                    Body=spool,
                    ContentLength=size,
                    ChecksumSHA256=base64.b64encode(digest.digest()).decode("ascii"),
                )
            else:
                self._touch(sha)
        return BlobRef(sha, size)

    def _touch(self, sha256: str) -> None:
        """Refresh LastModified of a reused blob (a copy onto itself), so gc leaves it alone."""
        key = self.key_for(sha256)
        self.client.copy_object(
            Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": key}, MetadataDirective="REPLACE"
        )

    def put_bytes(self, data: bytes | memoryview) -> BlobRef:
        return put_bytes_via(self, data)

    def put_file(self, path: Path) -> BlobRef:
        with open(path, "rb") as handle:
            return self.put_chunks(iter(lambda: handle.read(CHUNK), b""))

    def _stream(self, sha256: str) -> Iterator[bytes]:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key_for(sha256))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
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

    def iter_digests(self) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}blobs/sha256/"
        )
        for page in pages:
            for item in page.get("Contents", []):
                match = _KEY_TAIL.search(item["Key"])
                if match and match.group(2).startswith(match.group(1)):
                    yield match.group(2)

    def temp_files(self, *, max_age_s: float = STALE_TEMP_AGE_S) -> list[TempFile]:
        return []  # PUTs are whole-object; the spool file lives in the local temp dir

    def clean_stale_temp(self, *, max_age_s: float = STALE_TEMP_AGE_S) -> list[TempFile]:
        return []

    def delete(self, sha256: str) -> bool:
        if not self.exists(sha256):
            return False
        self.client.delete_object(Bucket=self.bucket, Key=self.key_for(sha256))
        return True

    def quarantine(self, sha256: str) -> str | None:
        """Copy the damaged object to ``<prefix>quarantine/`` and remove it from the blob namespace."""
        if not self.exists(sha256):
            return None
        target = f"{self.prefix}quarantine/{sha256}.{int(time.time())}"
        self.client.copy_object(
            Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": self.key_for(sha256)}
        )
        self.client.delete_object(Bucket=self.bucket, Key=self.key_for(sha256))
        return f"s3://{self.bucket}/{target}"
