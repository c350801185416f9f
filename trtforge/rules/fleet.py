"""The fleet manifest (``fleet.yaml``): the deployment targets a team serves on, declared once.

Each entry is an operator's name for a machine type plus the target it is: the GPU (by the names
of :mod:`trtforge.rules.gpus`), the runtime flavor and release it serves with, and optionally the
CUDA variant of that runtime's wheel, the OS and the CPU architecture. It is read like a recipe:
bounded YAML, a repeated key refused, every field validated with its file:line, and a JSON Schema
for editors (``trtforge schema --fleet``). Each entry checks exactly as ``--target`` does
(:meth:`trtforge.rules.target.TargetRequest.checked`), so a fleet and a command line mean the same.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from trtforge.core.errors import TARGET_HINT, RecipeError, TargetError
from trtforge.core.yamlfile import line_of, load_yaml, read_text_file, validate_yaml
from trtforge.rules.flavors import RTX_COMPUTE_CAPABILITIES, flavor_name
from trtforge.rules.gpus import known_gpu
from trtforge.rules.target import TargetRequest

MAX_FLEET_BYTES = 1 << 20
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)
SCHEMA_HINT = "the format: `trtforge schema --fleet`; targets: docs/fleet.md"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _message(exc: TargetError) -> str:
    """A TargetError said of a manifest field: its flags named as fields, the hint's advice kept."""
    text = f"{exc.message} ({exc.hint})" if exc.hint and exc.hint != TARGET_HINT else exc.message
    return re.sub(r"--(gpu|cc|trt|flavor|cuda|os|arch)\b", r"\1", text)


class FleetEntry(_Strict):
    """One machine type of the fleet and the target it serves with."""

    name: str = Field(description="The operator's name for the machine type (also `--target NAME`).")
    cc: str | None = Field(
        None, description="Compute capability, only for a GPU newer than trtforge's table (else the GPU gives it)."
    )
    gpu: str = Field(description='The GPU as nvidia-smi names it or for short: "NVIDIA L4", L4, A10G, "RTX 4090".')
    flavor: Literal["tensorrt", "tensorrt_rtx"] = Field(description="The runtime it serves with.")
    trt: str = Field(description="The runtime release, as `trtforge doctor` prints it on that machine (10.13.3.9).")
    cuda: str | None = Field(None, description="CUDA variant of the runtime's wheel: cu12 or cu13 (keyed by builds).")
    os: str | None = Field(None, description="linux or windows (default: unknown).")
    arch: str | None = Field(None, description="x86_64 or aarch64 (default: unknown).")
    description: str | None = Field(None, description="Free text.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"must match {NAME_PATTERN} (it is given as --target NAME)")
        return value

    @field_validator("cc", "trt", mode="before")
    @classmethod
    def _text(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name == "cc" and isinstance(value, float):
            return str(value)  # 8.6 means "8.6"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(f"write it as text (quoted: '{value}'); YAML reads {value} as a number")
        return value

    @field_validator("cc", "gpu", "trt", "cuda", "os", "arch")
    @classmethod
    def _as_target(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Each field checked as the same `--target` field is (the GPU with the cc given before it)."""
        fields = {info.field_name: value}
        if info.field_name == "gpu":
            fields["cc"] = info.data.get("cc")
        try:
            TargetRequest(**fields).checked()  # type: ignore[arg-type]
        except TargetError as exc:
            raise ValueError(_message(exc)) from None
        return value

    @model_validator(mode="after")
    def _rtx_capability(self) -> FleetEntry:
        checked = self.request()
        if self.flavor == "tensorrt_rtx" and checked.cc not in RTX_COMPUTE_CAPABILITIES:
            raise ValueError(
                f"{flavor_name(self.flavor)} does not run on compute capability {checked.cc} ({checked.gpu}): "
                f"its targets are {', '.join(RTX_COMPUTE_CAPABILITIES)}"
            )
        return self

    def request(self) -> TargetRequest:
        """The entry as a target, validated and normalized as `--target` is (GPU -> NVML name and cc)."""
        return TargetRequest(
            gpu=self.gpu,
            cc=self.cc,
            trt=self.trt,
            flavor=self.flavor,
            os=self.os,
            arch=self.arch,
            cuda=self.cuda,
            label=self.name,
        ).checked()

    @property
    def ray_accelerator_type(self) -> str | None:
        """What Ray's ``accelerator_type=`` matches for this GPU (None for a GPU the table does not know)."""
        model = known_gpu(self.gpu)
        return model.ray_accelerator_type if model is not None else None


class Fleet(_Strict):
    """A fleet manifest: the targets, one entry per machine type."""

    targets: list[FleetEntry] = Field(min_length=1, description="The machine types served on.")
    description: str | None = Field(None, description="Free text.")

    def entry(self, name: str) -> FleetEntry:
        for entry in self.targets:
            if entry.name == name:
                return entry
        known = ", ".join(e.name for e in self.targets)
        raise TargetError(f"the fleet has no target named {name[:60]!r} (its targets: {known})", hint=None)

    def requests(self) -> list[TargetRequest]:
        return [entry.request() for entry in self.targets]


def parse_fleet(text: str, shown: str = "<fleet>") -> Fleet:
    """Validate fleet manifest text; every error names ``shown``, its line and the field."""
    try:
        data = load_yaml(text, shown)
    except RecipeError as exc:
        raise RecipeError(exc.message, hint=SCHEMA_HINT) from None
    if not isinstance(data, dict):
        raise RecipeError(f"{shown}:1: a fleet manifest is a mapping with a `targets` list", hint=SCHEMA_HINT)
    fleet = validate_yaml(Fleet, data, text, shown, hint=SCHEMA_HINT)
    seen: dict[str, int] = {}
    for index, entry in enumerate(fleet.targets):
        if entry.name in seen:
            tree = yaml.compose(text, Loader=yaml.SafeLoader)
            line = line_of(tree, ("targets", index, "name"))
            first = seen[entry.name]
            raise RecipeError(
                f"{shown}:{line} targets[{index}].name: {entry.name!r} is repeated (first at targets[{first}])",
                hint="each machine type has one entry; its name is how commands select it (--target NAME)",
            )
        seen[entry.name] = index
    return fleet


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate ``fleet.yaml``; every failure is one RecipeError naming file:line field (exit 2)."""
    path = Path(path)
    text = read_text_file(
        path, str(path), what="fleet manifest", limit=MAX_FLEET_BYTES, missing_hint="check the --fleet path"
    )
    return parse_fleet(text, str(path))


def json_schema() -> dict[str, Any]:
    """The fleet manifest's JSON Schema, for editors and `trtforge schema --fleet`."""
    schema = Fleet.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "trtforge fleet"
    return schema
