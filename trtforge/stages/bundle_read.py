"""Reading a bundle: the manifest first, every member bounded by it, records held to a local record's rules.

The tar is read as a stream, once. manifest.json must be its first member and manifest.sig (if
any) the second, as `export` writes them: both are read and checked (format, every file's size
and sha256 declared, the signature when one is required) before a single other byte is read,
and the free space for what the manifest declares is checked before anything is written. Every
later member must be listed in the manifest with the size its tar header gives; it is copied
into the private work directory bounded by that size and hashed on the way.

Nothing here touches the catalog: :mod:`trtforge.stages.bundle` takes what this module returns
(:class:`Received`, the records) and decides what becomes rows.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator

from trtforge.core.errors import BundleError, SignatureError
from trtforge.rules.record import ArtifactRecord, Id, Sha256, validate_record
from trtforge.rules.signing import Signer, check_signature
from trtforge.store import Store
from trtforge.store.blobs import BlobStore

BUNDLE_FORMAT = "trtforge-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MAX_JSON_BYTES = 64 << 20
MAX_JSON_DEPTH = 64  # arrays and objects in a manifest or record (records use under 10)
CHUNK = 1 << 22
FREE_SPACE_RESERVE = 32 << 20  # left free after an import, for the catalog and its journal
PLAN_NAME = re.compile(r"plans/([0-9a-f]{64})\.plan")
RECORD_NAME = re.compile(r"artifacts/([0-9a-f]{32})\.json")


class _FileEntry(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    sha256: Sha256
    size: StrictInt = Field(ge=0)


class Manifest(BaseModel):
    """manifest.json, validated: the artifacts a bundle holds and every other member's digest and size."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    format: Literal["trtforge-bundle"]
    version: StrictInt
    artifacts: list[Id]
    files: dict[str, _FileEntry]

    @field_validator("artifacts")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        twice = sorted({a for a in value if value.count(a) > 1})
        if twice:
            raise ValueError(f"lists artifact {twice[0]} more than once")
        return value

    @field_validator("files")
    @classmethod
    def _known_names(cls, value: dict[str, _FileEntry]) -> dict[str, _FileEntry]:
        for name in value:
            if not PLAN_NAME.fullmatch(name) and not RECORD_NAME.fullmatch(name):
                raise ValueError(f"lists {name[:120]!r}, which is not part of the bundle format")
        return value

    @model_validator(mode="after")
    def _one_record_per_artifact(self) -> Manifest:
        records = {m.group(1) for name in self.files if (m := RECORD_NAME.fullmatch(name))}
        listed = set(self.artifacts)
        if records != listed:
            odd = sorted(listed - records) or sorted(records - listed)
            which = "has no record for" if listed - records else "holds a record for unlisted"
            raise ValueError(f"{which} artifact {odd[0]}")
        return self


@dataclass
class Received:
    """What a bundle holds, checked against its manifest: members in the work directory, by name."""

    manifest: Manifest
    signer: Signer | None
    files: dict[str, Path]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys repeat is refused: parsers disagree on which value counts."""
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"key {next(k for k in keys if keys.count(k) > 1)[:60]!r} appears twice")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (Python's json reads and writes them): a catalog holding one
    would print invalid JSON under `--json`, and no comparison of it is equal."""
    raise ValueError(f"{name} is not a JSON number")


def _parse_json(data: bytes, what: str) -> Any:
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise BundleError(f"{what} nests too deeply to be read") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise BundleError(f"{what} is not valid JSON: {str(exc)[:200]}") from None
    if _nests_deeper(document, MAX_JSON_DEPTH):
        raise BundleError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    return document


def _nests_deeper(document: Any, limit: int) -> bool:
    """Whether ``document`` holds arrays or objects more than ``limit`` deep. Parsed but nearly as
    deep as the parser goes, it would crash whatever walks it recursively later (validation,
    the catalog's JSON columns); no record of trtforge's comes close."""
    level = [document]
    for _ in range(limit + 1):
        level = [child for node in level for child in _children(node)]
        if not level:
            return False
    return True


def _children(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return list(node.values())
    return node if isinstance(node, list) else []


def _check_member(member: tarfile.TarInfo) -> str:
    """The member's name if it is a regular file at an expected, confined path; else refuse."""
    name = member.name
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or path.is_absolute() or "\\" in name or ".." in path.parts or "" in path.parts:
        raise BundleError(f"bundle member {name[:120]!r} has an unsafe path")
    if not member.isreg() or member.issparse():
        kind = "link" if (member.issym() or member.islnk()) else "non-file"
        raise BundleError(f"bundle member {name[:120]!r} is a {kind}; bundles hold regular files only")
    if name not in (MANIFEST, SIGNATURE) and not PLAN_NAME.fullmatch(name) and not RECORD_NAME.fullmatch(name):
        raise BundleError(f"bundle member {name[:120]!r} is not part of the bundle format")
    if not name.endswith(".plan") and member.size > MAX_JSON_BYTES:
        raise BundleError(f"bundle member {name[:120]!r} is too large for a manifest or record")
    return name


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A manifest or signature member's bytes (its size was bounded by _check_member)."""
    handle = tar.extractfile(member)
    data = handle.read(member.size + 1) if handle is not None else b""
    if len(data) != member.size:
        raise BundleError(f"bundle member {member.name} is truncated")
    return data


def _read_manifest(data: bytes) -> Manifest:
    document = _parse_json(data, "bundle manifest")
    if not isinstance(document, dict) or document.get("format") != BUNDLE_FORMAT:
        raise BundleError("not a trtforge bundle: manifest format is missing or wrong")
    if document.get("version") != BUNDLE_VERSION:
        raise BundleError(
            f"bundle format version {str(document.get('version'))[:20]!r} is not supported "
            f"(this trtforge reads {BUNDLE_VERSION})"
        )
    try:
        return Manifest.model_validate(document)
    except ValidationError as exc:
        raise BundleError(f"bundle manifest {_first_problem(exc)}") from None


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{where[:120]}: {message}" if where else message


def _signer(signature: bytes | None, manifest: bytes, trusted: list[Any], require: bool) -> Signer | None:
    """The bundle's signer (its signature checked over the exact manifest bytes), or None."""
    signer = check_signature(signature, manifest, trusted) if signature is not None else None
    if require and (signer is None or not signer.trusted):
        who = "not signed" if signer is None else f"signed by key {signer.key_id[:16]}, which is not trusted here"
        raise SignatureError(
            f"bundle is {who} and --require-signature was given",
            hint="pass the exporter's public key with --trust PUBKEY; nothing was imported",
        )
    return signer


def _check_free_space(store: Store, workdir: Path, manifest: Manifest) -> None:
    """Refuse a bundle whose declared members (plus the blobs they become) do not fit."""
    total = sum(entry.size for entry in manifest.files.values())
    needs: dict[int, list[Any]] = {}  # device -> [a path on it, bytes needed]

    def need(path: Path, size: int) -> None:
        device = path.stat().st_dev
        needs.setdefault(device, [path, 0])[1] += size

    need(workdir, total)
    if isinstance(store.blobs, BlobStore):  # the blob store copies each new plan
        plans = {m.group(1): e.size for n, e in manifest.files.items() if (m := PLAN_NAME.fullmatch(n))}
        need(store.root, sum(size for sha, size in plans.items() if not store.blobs.exists(sha)))
    for path, size in needs.values():
        free = shutil.disk_usage(path).free
        if size + FREE_SPACE_RESERVE > free:
            raise BundleError(
                f"bundle needs {_mib(size)} MiB and {path} has {_mib(free)} MiB free "
                f"(keeping {_mib(FREE_SPACE_RESERVE)} MiB for the catalog); nothing was imported",
                hint="free some space (`trtforge gc`) or import into a store with room",
            )


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.0f}"


def _receive(tar: tarfile.TarFile, workdir: Path, store: Store, trusted: list[Any], require: bool) -> Received:
    """Manifest, signature, free space, then each member bounded by its declared size."""
    member = tar.next()
    if member is None or member.name != MANIFEST:
        first = "nothing" if member is None else repr(member.name[:120])
        raise BundleError(f"not a trtforge bundle: manifest.json is missing or not its first member ({first} is)")
    _check_member(member)
    manifest_bytes = _read_small(tar, member)
    manifest = _read_manifest(manifest_bytes)
    member = tar.next()
    signature = None
    if member is not None and member.name == SIGNATURE:
        _check_member(member)
        signature = _read_small(tar, member)
        member = tar.next()
    signer = _signer(signature, manifest_bytes, trusted, require)
    _check_free_space(store, workdir, manifest)
    files: dict[str, Path] = {}
    while member is not None:
        name = _check_member(member)
        entry = manifest.files.get(name)
        if name in files or name in (MANIFEST, SIGNATURE):
            where = " (the signature must follow the manifest)" if name == SIGNATURE else ""
            raise BundleError(f"bundle has duplicate or misplaced member {name}{where}")
        if entry is None:
            raise BundleError(f"bundle does not match its manifest: member {name} is not listed")
        if member.size != entry.size:
            raise BundleError(f"bundle file {name} has the wrong size: tampered or truncated")
        files[name] = _extract(tar, member, workdir, entry)
        member = tar.next()
    missing = sorted(set(manifest.files) - set(files))
    if missing:
        raise BundleError(f"bundle does not match its manifest (missing: {missing[:3]})")
    return Received(manifest, signer, files)


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, workdir: Path, entry: _FileEntry) -> Path:
    """Copy one member into the work directory, never more than its declared size, hashing it."""
    name = member.name
    target = _confined(workdir, name)
    target.parent.mkdir(exist_ok=True)
    source = tar.extractfile(member)
    digest = hashlib.sha256()
    written = 0
    with open(target, "xb") as out:
        while source is not None and written <= entry.size:
            chunk = source.read(min(CHUNK, entry.size + 1 - written))
            if not chunk:
                break
            digest.update(chunk)
            out.write(chunk)
            written += len(chunk)
    if written != entry.size:
        raise BundleError(f"bundle file {name} has the wrong size: tampered or truncated")
    actual = digest.hexdigest()
    if actual != entry.sha256:
        raise BundleError(f"bundle file {name} does not match its manifest sha256: tampered or damaged")
    plan = PLAN_NAME.fullmatch(name)
    if plan and plan.group(1) != actual:
        raise BundleError(f"bundle plan {name} does not hash to its name: tampered")
    return target


def _confined(root: Path, name: str) -> Path:
    """``root / name`` resolved, refusing anything that ends up outside ``root``."""
    resolved = (root / name).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise BundleError(f"bundle member {name[:120]!r} escapes the extraction directory")
    return resolved


def read_records(received: Received) -> list[ArtifactRecord]:
    """Every artifact record, held to a local record's rules (trtforge.rules.record): the validated
    models, from which (not from the JSON) the catalog rows are made."""
    records = []
    seen_verifications: set[str] = set()
    for artifact_id in received.manifest.artifacts:
        name = f"artifacts/{artifact_id}.json"
        record = _parse_json(received.files[name].read_bytes(), f"bundle record {name}")
        if not isinstance(record, dict):
            raise BundleError(f"bundle record {name} is not a JSON object")
        try:
            checked = validate_record(record)
        except ValueError as exc:
            raise BundleError(f"bundle record {name}: {exc}") from None
        if checked.id != artifact_id:
            raise BundleError(f"bundle record {name} describes artifact {checked.id}")
        if f"plans/{checked.plan_sha256}.plan" not in received.files:
            raise BundleError(f"bundle record {name} points at a plan the bundle does not hold")
        for verification in checked.verifications:
            if verification.id in seen_verifications:
                raise BundleError(f"bundle record {name}: verification {verification.id} appears twice in the bundle")
            seen_verifications.add(verification.id)
        records.append(checked)
    return records


def receive_bundle(bundle: Path, workdir: Path, store: Store, trusted: list[Any], require: bool) -> Received:
    """Read ``bundle`` into ``workdir``: the manifest and signature first, then every member
    checked against them (see the module docstring); raises BundleError / SignatureError."""
    try:
        with tarfile.open(bundle, mode="r|*") as tar:
            return _receive(tar, workdir, store, trusted, require)
    except tarfile.ReadError:
        raise BundleError(f"cannot read bundle {bundle.name}: not a tar archive, or a truncated one") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BundleError(f"cannot read bundle {bundle.name}: {detail}") from None
