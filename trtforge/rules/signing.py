"""Ed25519 signatures over bundle manifests, with keys in files that standard tools make.

Keys: PEM (``openssl genpkey -algorithm ed25519 -out key.pem``; the public half with
``openssl pkey -in key.pem -pubout -out key.pub``) or OpenSSH (``ssh-keygen -t ed25519``);
``trtforge keygen`` writes the PEM pair. A key is named by its id: the sha256 of its 32 raw
public bytes, in hex.

What is signed: the exact bytes of ``manifest.json``, after a fixed context line, so that a
signature made for a bundle cannot be replayed as a signature over anything else. The manifest
lists the sha256 and size of every other member, so the signature covers the whole bundle.
A valid signature proves that whoever holds the private key produced this manifest; it says
nothing about how the plans were built or whether their verification results are true.

Key files are refused when others may change or read them, as ssh refuses its own: a trusted
public key writable by group or others, a private key with any group or other permission.

``cryptography`` is imported only when a signature is made or checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shlex
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtforge.core.errors import SignatureError, SigningKeyError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_FORMAT = "trtforge-bundle-signature"
SIGNATURE_VERSION = 1
ALGORITHM = "ed25519"
CONTEXT = b"trtforge bundle manifest v1\n"
MAX_KEY_BYTES = 64 << 10


@dataclass(frozen=True)
class Signer:
    """Who signed a bundle (a valid signature), and whether the importer trusts that key."""

    key_id: str
    trusted: bool

    def as_json(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "trusted": self.trusted}


def _raw(public: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw(public)).hexdigest()


# Who else may touch a key file, as ssh decides for its own keys: a trusted public key others can
# write lets them choose which bundles count; a private key others can read (group included, as
# ssh refuses it) is no longer secret, so neither is used.
PRIVATE_KEY_FORBIDDEN = 0o077
PUBLIC_KEY_FORBIDDEN = 0o022


def _read_key_file(path: Path, what: str, forbidden: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode  # the file read, not whatever the path names later
            if stat.S_ISREG(mode) and mode & forbidden:
                raise _loose_permissions(path, what, mode, forbidden)
            data = handle.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise SigningKeyError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_BYTES:
        raise SigningKeyError(f"{what} {path} is too large to be a key file")
    return data


def _loose_permissions(path: Path, what: str, mode: int, forbidden: int) -> SigningKeyError:
    octal = f"{stat.S_IMODE(mode):04o}"
    if forbidden == PRIVATE_KEY_FORBIDDEN:
        return SigningKeyError(
            f"{what} {path} is accessible by others (mode {octal}); a private key must be its owner's alone",
            hint=f"chmod 600 {path}",
        )
    return SigningKeyError(
        f"{what} {path} is writable by others (mode {octal}); they could choose which bundles are trusted",
        hint=f"chmod go-w {path}",
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An unencrypted Ed25519 private key from a PEM (PKCS#8) or OpenSSH file."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_ssh_private_key

    data = _read_key_file(path, "signing key", PRIVATE_KEY_FORBIDDEN)
    try:
        loader = load_ssh_private_key if b"OPENSSH PRIVATE KEY" in data else load_pem_private_key
        key: Any = loader(data, None)
    except TypeError:
        raise SigningKeyError(
            f"signing key {path} is encrypted", hint="give an unencrypted key file (keep it in the CI secret store)"
        ) from None
    except (ValueError, binascii.Error):
        raise SigningKeyError(f"signing key {path} is not a PEM or OpenSSH private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"signing key {path} is a {type(key).__name__.removeprefix('_')}, not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file or an OpenSSH ``ssh-ed25519 ...`` line."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key, load_ssh_public_key

    data = _read_key_file(path, "trusted key", PUBLIC_KEY_FORBIDDEN)
    if b"PRIVATE KEY" in data:
        raise SigningKeyError(
            f"trusted key {path} is a private key", hint="give the public half (openssl pkey -in KEY -pubout)"
        )
    try:
        key: Any = load_ssh_public_key(data.strip()) if data.lstrip().startswith(b"ssh-") else load_pem_public_key(data)
    except (ValueError, binascii.Error):
        raise SigningKeyError(f"trusted key {path} is not a PEM or OpenSSH public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"trusted key {path} is a {type(key).__name__.removeprefix('_')}, not an Ed25519 key")
    return key


def generate_key_pair(private_path: Path) -> tuple[Path, str]:
    """Write a new private key (PEM, mode 0600) and its public half at ``<path>.pub``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    if not private_path.name:  # ".", "" or "/": a folder, where no key file can be written
        raise SigningKeyError(
            f"cannot write key {str(private_path)!r}: it names no file", hint="give the key's file name, e.g. keys/team"
        )
    public_path = private_path.with_name(private_path.name + ".pub")
    for path in (private_path, public_path):
        if path.exists():
            raise SigningKeyError(f"{path} already exists; not overwriting a key", hint="choose another path")
    _check_folder(private_path)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    try:
        for path, data, mode in ((private_path, private_pem, 0o600), (public_path, public_pem, 0o644)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), mode)  # whatever the umask: import refuses a group-writable key
                handle.write(data)
    except OSError as exc:
        raise SigningKeyError(
            f"cannot write key {private_path}: {exc.strerror or exc}",
            hint="give a path in a folder you can write to",  # not the default: keygen is what ran
        ) from None
    return public_path, key_id(key.public_key())


def _check_folder(private_path: Path) -> None:
    """The folder the key pair goes to must exist: keygen does not make folders for secrets."""
    folder = private_path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise SigningKeyError(
            f"cannot write key {private_path}: {folder} {what}",
            hint=f"create the folder first (`mkdir -p {shlex.quote(str(folder))}`), or give a path in an existing one",
        )


def sign_manifest(manifest: bytes, key: Ed25519PrivateKey) -> bytes:
    """The signature member's bytes for ``manifest`` (the exact manifest.json bytes)."""
    public = key.public_key()
    document = {
        "format": SIGNATURE_FORMAT,
        "version": SIGNATURE_VERSION,
        "algorithm": ALGORITHM,
        "key_id": key_id(public),
        "public_key": base64.b64encode(_raw(public)).decode("ascii"),
        "signature": base64.b64encode(key.sign(CONTEXT + manifest)).decode("ascii"),
    }
    return json.dumps(document, indent=2, sort_keys=True).encode()


def check_signature(document: bytes, manifest: bytes, trusted: Iterable[Ed25519PublicKey]) -> Signer:
    """The signer of ``manifest``; raises SignatureError if the signature does not verify.

    A signature that does not verify under its own key means the manifest (or the signature)
    was changed after signing: the bundle is refused whoever the signer is.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        parsed = json.loads(document)
        if not isinstance(parsed, dict) or parsed.get("format") != SIGNATURE_FORMAT:
            raise ValueError("not a trtforge bundle signature")
        if parsed.get("version") != SIGNATURE_VERSION or parsed.get("algorithm") != ALGORITHM:
            raise ValueError(f"unsupported signature {parsed.get('algorithm')!r} v{parsed.get('version')!r}")
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(parsed["public_key"], validate=True))
        signature = base64.b64decode(parsed["signature"], validate=True)
    except RecursionError:
        raise SignatureError("bundle signature is malformed: it nests too deeply to be read") from None
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise SignatureError(f"bundle signature is malformed: {str(exc)[:120]}") from None
    try:
        public.verify(signature, CONTEXT + manifest)
    except InvalidSignature:
        raise SignatureError("bundle signature does not match its manifest: tampered after signing") from None
    signer_id = key_id(public)
    return Signer(signer_id, any(key_id(key) == signer_id for key in trusted))
