"""What an artifact's catalog row records beyond its columns (``artifacts.details``), as one model.

Builds, refits and adopted plans write it; the catalog reads it back into the same model, so the
nine places that used to read string keys out of a dict read typed fields instead. It is
versioned: rows written before it existed (version 0) still read, and keys a newer trtforge
wrote are kept (``extra="allow"``) rather than dropped when a record is copied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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
    weightless: bool = False  # built with strip_weights: refit with the model's weights before use
    timing_cache: dict[str, Any] | None = None  # the cache a build started from and produced
    compatibility: dict[str, Any] = Field(default_factory=dict)  # lookup_rules.Envelope.record()
    denylist: dict[str, Any] | None = None  # the deny-list enforcement report
    layer_info: Any = None  # engine inspector JSON, where an engine could be loaded (GPU)
    cost: dict[str, Any] | None = None  # the build's wall time, CPU time and peak memory (core/resources.py)
    model: ModelRecord = Field(default_factory=ModelRecord)
    lineage: Lineage | None = None
    adopted: Adopted | None = None

    @property
    def model_path(self) -> Path:
        """The model file recorded at build time ('' when none was: checks then report it missing)."""
        return Path(self.model.path or "")

    @property
    def needs_weights(self) -> bool:
        """A weight-stripped plan: it computes garbage until it is refitted with the model's weights."""
        return self.weightless or self.refit == "strip_weights"

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


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
