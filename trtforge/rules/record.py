"""What an artifact's catalog row records beyond its columns (``artifacts.details``), as one model;
and the whole record as a bundle carries it (:class:`ArtifactRecord`), checked field by field.

Builds, refits and adopted plans write the details; the catalog reads them back into the same
model, so the nine places that used to read string keys out of a dict read typed fields instead.
They are versioned: rows written before it existed (version 0) still read, and keys a newer
trtforge wrote are kept (``extra="allow"``) rather than dropped when a record is copied.

A record from a bundle was written by someone else: :class:`ArtifactRecord` holds it to the
rules a local record follows (a recipe's name rule, ids and digests as trtforge makes them,
versions and compute capabilities as the target rules parse them), and no string anywhere in it
may hold a control character other than tab and newline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator, StrictInt, ValidationError

from trtforge.core.errors import ModelError, TrtforgeError
from trtforge.rules.builder_options import NamedFile
from trtforge.rules.flavors import parse_version
from trtforge.rules.keys import sha256_file
from trtforge.rules.recipe import name_problem
from trtforge.rules.target import parse_compute_capability

DETAILS_VERSION = 1  # 1: typed (this module); 0: any row written before


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")


class ModelRecord(_Section):
    """The ONNX model an engine came from: where it was, and its graph inputs and outputs."""

    path: str | None = None
    inputs: list[dict[str, Any]] = Field(default_factory=list)
    outputs: list[dict[str, Any]] = Field(default_factory=list)


class Lineage(_Section):
    """A refitted engine's parent and the weights it took."""

    parent: str
    operation: str = "refit"
    weights_sha256: str | None = None
    weights_path: str | None = None


class PluginRecord(_Section):
    """A plugin library a build loaded: where it was, its bytes' sha256, how it was loaded, whether the
    plan embeds it. One not embedded must be loaded by whatever runs the plan."""

    library: str
    name: str
    sha256: str
    load: str = "dynamic"
    serialized: bool = False


class FileRecord(_Section):
    """A file the build read besides the model (a plugin library, a calibration cache): where the
    recipe names it, where it was, the sha256 the key holds; `build --reproduce` reads it again."""

    field: str
    path: str
    sha256: str


class Adopted(_Section):
    """A plan built outside trtforge: where it came from and how its target was known."""

    plan_path: str | None = None
    target_source: str | None = None


class ArtifactDetails(BaseModel):
    """``artifacts.details``: how an engine was built and what it needs, beyond the columns."""

    model_config = ConfigDict(extra="allow")

    version: int = DETAILS_VERSION  # rows stored without one read as 0
    origin: Literal["built", "adopted"] = "built"
    backend: str | None = None  # the builder's label, e.g. "TensorRT-RTX 1.7.1.116"
    target: dict[str, Any] | None = None  # BuildTarget.key_fields(): what the build key names
    settings: dict[str, Any] = Field(default_factory=dict)  # read back from the real IBuilderConfig
    refit: str | None = None  # the recipe's refit mode
    weightless: bool = False  # built with strip_weights / strip_all_weights: refit with the weights before use
    timing_cache: dict[str, Any] | None = None  # the cache a build started from and produced
    compatibility: dict[str, Any] = Field(default_factory=dict)  # lookup_rules.Envelope.record()
    denylist: dict[str, Any] | None = None  # the deny-list enforcement report
    layer_info: Any = None  # engine inspector JSON, where an engine could be loaded (GPU)
    cost: dict[str, Any] | None = None  # the build's wall time, CPU time and peak memory (core/resources.py)
    model: ModelRecord = Field(default_factory=ModelRecord)
    lineage: Lineage | None = None
    adopted: Adopted | None = None
    plugins: list[PluginRecord] = Field(default_factory=list)  # the plugin libraries the build loaded
    files: list[FileRecord] = Field(default_factory=list)  # every file the build read besides the model

    @property
    def model_path(self) -> Path:
        """The model file recorded at build time ('' when none was: checks then report it missing)."""
        return Path(self.model.path or "")

    @property
    def needs_weights(self) -> bool:
        """A weight-stripped plan: it computes garbage until it is refitted with the model's weights."""
        return self.weightless or self.refit in ("strip_weights", "strip_all_weights")

    @property
    def plugins_needed(self) -> list[PluginRecord]:
        """Plugin libraries a runtime must load before it deserializes the plan (those not embedded in it)."""
        return [plugin for plugin in self.plugins if not plugin.serialized]

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def files_read(self, artifact_id: str, purpose: str) -> list[NamedFile]:
        """The plugin libraries and calibration cache the build read, each still where it was and with
        the bytes it had (else ModelError, exit 2: nothing can ``purpose``), for a build of the same
        recipe (`build --reproduce`, the per-layer engine)."""
        files = []
        for record in self.files:
            path = Path(record.path)
            if not path.is_file() or sha256_file(path) != record.sha256:
                state = "is gone" if not path.is_file() else "changed"
                raise ModelError(
                    f"{record.field} {path} of artifact {artifact_id[:12]} {state} since it was built; "
                    f"cannot {purpose}",
                    hint=f"restore the file with sha256 {record.sha256}",
                )
            files.append(NamedFile(record.field, path, record.sha256))
        return files


def read_details(value: Any, *, strict: bool = False) -> ArtifactDetails:
    """The one reader: a stored JSON object (any version) or a model -> the model.

    A catalog row is read tolerantly: a field that does not validate (a damaged row) reads as its
    default, the most restrictive value, instead of failing every command that lists the row.
    ``strict`` refuses it instead (ValidationError), for records from outside (bundles).
    """
    if isinstance(value, ArtifactDetails):
        return value
    data = {"version": 0, **value} if isinstance(value, dict) else {"version": 0}
    try:
        return ArtifactDetails.model_validate(data)
    except ValidationError as exc:
        if strict:
            raise
        damaged = {error["loc"][0] for error in exc.errors() if error["loc"]}
        return ArtifactDetails.model_validate({k: v for k, v in data.items() if k not in damaged})


# -- records from elsewhere (bundles) ---------------------------------------------------------

_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex, as build, adopt, refit and verify make them
_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_TEXT = 128  # the catalog's String(128) columns (names, GPU names)


def _pattern(regex: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"is not {what}")
        return value

    return AfterValidator(check)


def _name(value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _version(value: str) -> str:
    try:
        parse_version(value)
    except TrtforgeError as exc:
        raise ValueError(exc.message) from None
    return value


def _cc(value: str) -> str:
    try:
        major, minor = parse_compute_capability(value)
    except TrtforgeError as exc:
        raise ValueError(exc.message) from None
    if value != f"{major}.{minor}":
        raise ValueError(f"compute capability {value!r} is not written as MAJOR.MINOR")
    return value


def _timestamp(value: Any) -> datetime:
    """ISO 8601 text with an offset, as export writes it, as a UTC datetime. A number (pydantic's
    lax mode reads one as Unix time, the catalog does not) or a time outside years 1-9999 in UTC
    (which no column or comparison can hold) is refused here, not when its row is written."""
    if not isinstance(value, str):
        raise ValueError("is not ISO 8601 text")
    try:
        parsed = datetime.fromisoformat(value)
        utc = parsed.astimezone(timezone.utc) if parsed.tzinfo is not None else None
    except (ValueError, OverflowError):
        utc = None
    if utc is None:
        raise ValueError(f"{value[:40]!r} is not an ISO 8601 time with a UTC offset, within years 1-9999 in UTC")
    return utc


def _line(value: str) -> str:
    if not value.isprintable():
        raise ValueError("holds a control or format character")
    return value


Id = Annotated[str, _pattern(_ID, "an artifact id (32 lowercase hex digits)")]
Sha256 = Annotated[str, _pattern(_SHA256, "a sha256 digest (64 lowercase hex digits)")]
Name = Annotated[str, AfterValidator(_name)]
TrtVersion = Annotated[str, AfterValidator(_version)]
ComputeCapability = Annotated[str, AfterValidator(_cc)]
Line = Annotated[str, Field(min_length=1, max_length=MAX_TEXT), AfterValidator(_line)]
PathText = Annotated[str, Field(max_length=4096), AfterValidator(_line)]
Timestamp = Annotated[datetime, PlainValidator(_timestamp)]


class _Record(BaseModel):
    # strict: a number is not a string and a string is not a number. Columns a newer trtforge
    # added are ignored here, as the catalog (which has no such column) ignores them.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class TargetRecord(_Record):
    """``details.target`` as a bundle carries it (``BuildTarget.key_fields()``): the fields a build key
    names, with the types the target rules give them, so that recomputing a record's key works on
    what it says. Keys a newer trtforge added are kept (they change the key, so it will not match)."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    flavor: Literal["tensorrt", "tensorrt_rtx"]
    trt_version: TrtVersion
    gpu_name: Line | None = None
    compute_capabilities: list[ComputeCapability] = Field(default_factory=list)
    os: Line | None = None
    arch: Line | None = None
    cuda: Line | None = None
    env: dict[str, str] = Field(default_factory=dict)


class VerificationRecord(_Record):
    """One verification row as a bundle carries it."""

    id: Id
    gpu_name: Line
    compute_capability: ComputeCapability | None = None
    runtime_flavor: Literal["tensorrt", "tensorrt_rtx"]
    runtime_version: TrtVersion
    status: Literal["passed", "failed"]
    checks: list[Any]
    perf: list[Any]
    details: dict[str, Any]
    created_at: Timestamp
    trust: Literal["local", "signed", "claimed"] | None = None


class ArtifactRecord(_Record):
    """An artifact's row as a bundle carries it (every column but the importing store's own)."""

    id: Id
    name: Name
    build_key: Sha256
    recipe_fingerprint: Sha256
    model_sha256: Sha256
    flavor: Literal["tensorrt", "tensorrt_rtx"]
    trt_version: TrtVersion
    gpu_name: Line | None = None
    compute_capabilities: list[ComputeCapability]
    plan_sha256: Sha256
    plan_size: StrictInt = Field(ge=0)
    io_tensors: list[dict[str, Any]]
    profiles: list[dict[str, Any]]
    recipe: dict[str, Any]
    recipe_path: PathText | None = None
    build_seconds: float = Field(ge=0, allow_inf_nan=False)  # an int too (strict mode takes one for a float)
    build_log: list[Any]
    details: dict[str, Any]
    created_at: Timestamp
    verifications: list[VerificationRecord] = Field(default_factory=list)


def control_characters(value: Any, where: str = "") -> Iterator[str]:
    """Where ``value`` (any JSON) holds a control character other than tab and newline, keys included."""
    if isinstance(value, str):
        if any((ch < " " and ch not in "\t\n") or "\x7f" <= ch <= "\x9f" for ch in value):
            yield where or "(top)"
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from control_characters(key, f"{where}.{key!r}")
            yield from control_characters(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from control_characters(item, f"{where}[{index}]")


def validate_record(record: dict[str, Any]) -> ArtifactRecord:
    """``record`` (an artifact's JSON from a bundle) held to a local record's rules; raises
    ValueError naming the first field that breaks one."""
    for where in control_characters(record):
        raise ValueError(f"{where} holds a control character")
    try:
        checked = ArtifactRecord.model_validate(record)
        read_details(record["details"], strict=True)
    except ValidationError as exc:
        raise ValueError(_first_problem(exc)) from None
    target = checked.details.get("target")
    if target is not None:
        try:
            TargetRecord.model_validate(target)
        except ValidationError as exc:
            raise ValueError(_first_problem(exc, "details.target.")) from None
    lineage = checked.details.get("lineage")
    if isinstance(lineage, dict) and not _ID.fullmatch(str(lineage.get("parent"))):
        raise ValueError("details.lineage.parent is not an artifact id (32 lowercase hex digits)")
    return checked


def _first_problem(exc: ValidationError, prefix: str = "") -> str:
    """The first error as "<field path> <what is wrong>"."""
    error = exc.errors()[0]
    where = prefix + ".".join(str(part) for part in error["loc"]) or "(top)"
    return f"{where.rstrip('.')} {error['msg'].removeprefix('Value error, ')}"
