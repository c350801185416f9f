"""Errors a user can cause, each with one clear line and a hint.

The CLI prints ``error: <message>`` and ``hint: <hint>`` and exits with ``exit_code``;
anything that is not a ``TrtforgeError`` is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class TrtforgeError(Exception):
    """Base class: a one-line message, an optional hint, and the CLI exit code."""

    exit_code: int = 2
    default_hint: str | None = None
    error_kind: str | None = None  # `error_kind` of `build --json`; None: from the exit code (kind_of)

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        more: tuple[str, ...] = (),
        detail: dict[str, Any] | list[Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.more = more  # further problems of the same input, one line each (e.g. every recipe error)
        # Machine-readable context for `--json` (`error_detail`), never printed: e.g. every parser
        # message of a failed build, or the artifact a refused verification would have checked.
        self.detail: dict[str, Any] | list[Any] = detail if detail is not None else {}

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles whole (hint, detail...), so errors come back intact from a child process."""
        return (_rebuild, (type(self), self.message), dict(self.__dict__))


# `error_kind` of a failed result in `--json` (docs/schemas/common.json): bad input (exit 2); a build
# TensorRT refused, whose worker crashed or ran out of time; the shared catalog or bucket did not
# answer; SIGINT / SIGTERM; any other failure (exit 1: nothing compatible, a verification out of
# tolerance, damaged bytes, a full disk).
ERROR_KINDS = (
    "bad_input",
    "build_failed",
    "crashed",
    "timed_out",
    "catalog_unavailable",
    "blobs_unavailable",
    "interrupted",
    "failed",
)


def kind_of(error: TrtforgeError) -> str:
    """``error_kind`` of a failure: the class's own kind, else bad input (exit 2) or ``failed``."""
    if error.error_kind is not None:
        return error.error_kind
    return "bad_input" if error.exit_code == 2 else "failed"


def _rebuild(cls: type[TrtforgeError], message: str) -> TrtforgeError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


class BadInputError(TrtforgeError):
    """Something the user gave us is wrong (exit 2)."""


class RecipeError(BadInputError):
    """A recipe file is missing, unparsable or invalid."""

    default_hint = "run `trtforge schema` for the recipe format"


class ModelError(BadInputError):
    """The ONNX model is missing, not ONNX, or does not match the recipe."""


class StoreError(BadInputError):
    """The store location is unusable."""

    default_hint = "pass --store DIR or set TRTFORGE_STORE to a writable directory"


READ_ONLY_HINT = (
    "a read-only store serves cache hits, list, show, lookup and export; "
    "run commands that write where the store is writable"
)


class BlobsUnreachableError(StoreError):
    """The S3 endpoint did not answer when the command opened the store, retries included (exit 2)."""

    error_kind = "blobs_unavailable"
    default_hint = "check that the S3 endpoint (AWS_ENDPOINT_URL) answers from this machine, then run again"


class StoreReadOnlyError(StoreError):
    """A command would write to a store this process can only read (exit 2)."""

    default_hint = READ_ONLY_HINT


class CatalogError(TrtforgeError):
    """The catalog database cannot be used (a malformed URL, no such database, authentication
    refused, schema too new...): exit 2, nothing was done."""


class CatalogUnreachableError(CatalogError):
    """The catalog's server did not answer when the command opened it, retries included (exit 2)."""

    error_kind = "catalog_unavailable"


class CatalogUnavailableError(CatalogError):
    """The catalog stopped answering while the command worked, retries included (exit 1): what
    could not be recorded is that recipe's failure; nothing half-written is visible."""

    exit_code = 1
    error_kind = "catalog_unavailable"


class BlobsUnavailableError(TrtforgeError):
    """The blob store (an S3 bucket) refused or did not answer, botocore's retries included (exit 1)."""

    exit_code = 1
    error_kind = "blobs_unavailable"


class NotFoundError(BadInputError):
    """An artifact id, name or prefix matched nothing (or too much)."""


class BackendUnavailableError(BadInputError):
    """No TensorRT flavor that can do the requested work is installed."""

    default_hint = "install one: pip install 'trtforge[rtx]' (CPU builds) or 'trtforge[tensorrt]'"


class MissingExtraError(BackendUnavailableError):
    """An optional dependency a command needs is not installed; the hint names the extra (exit 2)."""


class UnsupportedOptionError(BadInputError):
    """The recipe asks for something the installed backend cannot do."""


class BuildError(TrtforgeError):
    """TensorRT failed to parse the model or build the engine (exit 1).

    ``detail`` keeps everything TensorRT said (every parser error, or the builder's error log),
    for `build --json` (``error_detail``): CI shows it without a rerun.
    """

    exit_code = 1
    error_kind = "build_failed"


class WorkerCrashedError(BuildError):
    """The build worker died (abort, segfault, a signal, the OOM killer): one recipe's result (exit 1).

    ``detail``: the signal or exit code and the last lines the worker logged (TensorRT's messages
    and anything native code wrote to stderr).
    """

    error_kind = "crashed"


class BuildTimeoutError(BuildError):
    """A build ran longer than the ``timeout`` it was given and its worker was stopped (exit 1)."""

    error_kind = "timed_out"
    default_hint = "raise --timeout (or leave it out for no limit) if the model needs longer"


class CheckFailedError(TrtforgeError):
    """A command ran and its answer is no (exit 1): a verification out of tolerance, a coverage gap,
    a rebuild that differs, damage found. Describes that result in `--json` (``error``); not raised."""

    exit_code = 1


class BuildInterruptedError(TrtforgeError):
    """A recipe's build was stopped by SIGINT or SIGTERM before it was recorded (its result in a
    batch that was interrupted; the command exits 130 or 143)."""

    exit_code = 1
    error_kind = "interrupted"
    default_hint = "run the command again: recipes already recorded are cache hits"


class StoppedBySignalError(TrtforgeError):
    """A whole command stopped by SIGINT or SIGTERM outside a batch's results (exit 130 / 143)."""

    error_kind = "interrupted"
    default_hint = "run the command again: what was recorded before the signal stays in the store"

    def __init__(self, signal_name: str, exit_code: int) -> None:
        super().__init__(f"interrupted by {signal_name}: stopped")
        self.exit_code = exit_code


class IntegrityError(TrtforgeError):
    """Stored bytes do not match their recorded hash (exit 1)."""

    exit_code = 1
    default_hint = "run `trtforge fsck` to find and quarantine damaged blobs"


class VerificationUnavailableError(BadInputError):
    """Running an engine needs a CUDA GPU and the engine's TensorRT runtime (exit 2)."""


class NotRefittableError(BadInputError):
    """The artifact was not built to take new weights (exit 2)."""

    default_hint = "set `refit: refittable` in the recipe and rebuild"


class RefitError(TrtforgeError):
    """TensorRT could not refit the engine with the given weights (exit 1)."""

    exit_code = 1


class StoreWriteError(TrtforgeError):
    """The store's disk is full or failing; nothing was recorded (exit 1)."""

    exit_code = 1
    default_hint = "free space in the store (or fix its disk) and run the command again; nothing was recorded"


TARGET_HINT = 'give the target explicitly: --gpu "NVIDIA A10G" --cc 8.6 --trt 10.13.3 [--flavor tensorrt]'


class TargetError(BadInputError):
    """A target given on the command line is malformed, or none can be detected here."""

    default_hint = TARGET_HINT


class NoCompatibleEngineError(TrtforgeError):
    """Artifacts exist for the name, but none can run on the target (exit 1)."""

    exit_code = 1
    default_hint = "run `trtforge lookup ... --explain` to see the rule that rejected each artifact"


class UnsatisfiableDenyError(BadInputError):
    """Deny entries leave a layer with no tactic at all (exit 2: the recipe must change)."""


class DeriveError(BadInputError):
    """The diff, the artifact or the model cannot yield deny entries."""


class BundleError(BadInputError):
    """A bundle is unreadable, malformed, unsafe or does not match its manifest (exit 2)."""

    default_hint = "re-export the bundle from the source store; nothing was imported"


class BundleConflictError(BundleError):
    """A bundle names an artifact (or verification) id this catalog holds with other contents (exit 2)."""

    default_hint = (
        "an id names one record and one plan everywhere: see where the row here came from "
        "(`trtforge show ID`), or import into another store"
    )


class SigningKeyError(BadInputError):
    """A signing or trusted key file is missing, unreadable or not an Ed25519 key (exit 2)."""

    default_hint = "make a key pair with `trtforge keygen KEY` or `openssl genpkey -algorithm ed25519 -out KEY`"


class SignatureError(BadInputError):
    """A bundle's signature is invalid, or a trusted one is required and missing (exit 2)."""

    default_hint = "get the bundle again from its exporter, or the exporter's public key; nothing was imported"


class DeployError(BadInputError):
    """An engine cannot be exported for the server asked for (e.g. no I/O recorded, a TensorRT-RTX plan for Triton)."""

    default_hint = "see `trtforge show ID` for what the artifact records"


class SelftestFailure(TrtforgeError):
    """A `trtforge selftest` check saw a wrong result (reported in the check's row; exit 1)."""

    exit_code = 1
