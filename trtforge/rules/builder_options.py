"""The recipe's builder options beyond precision, profiles and pools: the ONNX parser's flags, INT8
calibration from a cache, I/O formats, DLA, plugin libraries and the builder-config escape hatch.

Each section covers trtexec build flags (docs/trtexec.md has the flag -> field table). Pure data
(Pydantic, as the rest of the recipe in :mod:`trtforge.rules.recipe`); which backend has which
option is :mod:`trtforge.rules.capabilities`' call, how each reaches the builder is
``backend/config.py``'s (builder config) and ``backend/network_settings.py``'s (network, parser).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trtforge.core.recipe_paths import path_text

# Full-matched (``fullmatch``): ``$`` would let a trailing newline through.
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# trtexec's data type and tensor format names (sampleOptions.cpp, stringToValue) -> the nvinfer
# enum members they name (DataType, TensorFormat).
DTYPE_ENUM: dict[str, str] = {
    "fp32": "FLOAT",
    "fp16": "HALF",
    "bf16": "BF16",
    "int8": "INT8",
    "fp8": "FP8",
    "int4": "INT4",
    "int32": "INT32",
    "int64": "INT64",
    "bool": "BOOL",
    "uint8": "UINT8",
}
FORMAT_ENUM: dict[str, str] = {
    "chw": "LINEAR",
    "chw2": "CHW2",
    "chw4": "CHW4",
    "hwc8": "HWC8",
    "chw16": "CHW16",
    "chw32": "CHW32",
    "dhwc8": "DHWC8",
    "cdhw32": "CDHW32",
    "hwc": "HWC",
    "dhwc": "DHWC",
    "hwc16": "HWC16",
    "dla_linear": "DLA_LINEAR",
    "dla_hwc4": "DLA_HWC4",
}
DType = Literal["fp32", "fp16", "bf16", "int8", "fp8", "int4", "int32", "int64", "bool", "uint8"]
TensorFormatName = Literal[
    "chw", "chw2", "chw4", "hwc8", "chw16", "chw32", "dhwc8", "cdhw32", "hwc", "dhwc", "hwc16", "dla_linear", "dla_hwc4"
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def sha256_pin(value: str | None) -> str | None:
    if value is not None and not SHA256_HEX.fullmatch(value.lower()):
        raise ValueError("must be 64 hexadecimal characters")
    return value.lower() if value is not None else None


def name_patterns(value: dict[str, Any], what: str) -> dict[str, Any]:
    """Layer or tensor names as trtexec takes them: exact, or with at most one '*' wildcard."""
    for name in value:
        if not name:
            raise ValueError(f"{what}: a name must not be empty")
        if name.count("*") > 1:
            raise ValueError(f"{what}: {name!r} has more than one '*' (a name may hold one wildcard)")
    return value


# -- the ONNX parser ---------------------------------------------------------------------------

# field -> OnnxParserFlag member (trtexec: --pluginInstanceNorm sets NATIVE_INSTANCENORM false).
PARSER_FLAG_ENUM: dict[str, str] = {
    "native_instancenorm": "NATIVE_INSTANCENORM",
    "plugin_override": "ENABLE_PLUGIN_OVERRIDE",
    "uint8_asymmetric_quantization_dla": "ENABLE_UINT8_AND_ASYMMETRIC_QUANTIZATION_DLA",
    "report_capability_dla": "REPORT_CAPABILITY_DLA",
    "adjust_for_dla": "ADJUST_FOR_DLA",
}


class ParserFlags(Strict):
    """Flags of TensorRT's ONNX parser (IParser::setFlag); unset fields keep the parser's default."""

    native_instancenorm: bool | None = Field(
        default=None, description="false: InstanceNormalization as a plugin (trtexec --pluginInstanceNorm)."
    )
    plugin_override: bool | None = Field(
        default=None, description="A registered plugin replaces a standard ONNX operator of its name."
    )
    uint8_asymmetric_quantization_dla: bool | None = Field(
        default=None, description="DLA: UINT8 quantization with zero points as given (DLA software >= 3.16)."
    )
    report_capability_dla: bool | None = Field(
        default=None, description="DLA: the parser reports nodes that cannot run on DLA."
    )
    adjust_for_dla: bool | None = Field(default=None, description="DLA: the parser rewrites layers to suit DLA.")

    def set_flags(self) -> dict[str, bool]:
        return {name: value for name in PARSER_FLAG_ENUM if (value := getattr(self, name)) is not None}


# -- INT8 calibration from a cache (TensorRT 10) ------------------------------------------------


class Calibration(Strict):
    """INT8 calibration from a calibration cache file (trtexec --calib); its bytes are in the build key."""

    cache: str = Field(description="Calibration cache file: relative to the recipe, absolute, ~, ${VAR}.")
    sha256: str | None = Field(default=None, description="Optional pin: the build refuses another file.")
    profile: int | None = Field(
        default=None, ge=0, description="Index of the optimization profile used for calibration (--calibProfile)."
    )

    @field_validator("cache")
    @classmethod
    def _path(cls, value: str) -> str:
        return path_text(value)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        return sha256_pin(value)


# -- network inputs and outputs -----------------------------------------------------------------


class TensorIO(Strict):
    """Type and memory layouts of one network input or output (trtexec --inputIOFormats)."""

    dtype: DType | None = Field(default=None, description="Element type (weakly typed TensorRT 10 networks only).")
    formats: list[TensorFormatName] | None = Field(
        default=None, min_length=1, description="Allowed memory layouts, e.g. [chw] or [hwc8]."
    )

    @field_validator("formats")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("formats must not repeat")
        return sorted(value) if value is not None else None


class IOSpec(Strict):
    """Types and layouts at the network's boundary, by tensor name."""

    inputs: dict[str, TensorIO] = Field(default_factory=dict, description="Input name -> dtype and formats.")
    outputs: dict[str, TensorIO] = Field(default_factory=dict, description="Output name -> dtype and formats.")
    direct: bool = Field(default=False, description="No reformatting at the network's boundary (--directIO).")


# -- DLA ------------------------------------------------------------------------------------------

DeviceName = Literal["gpu", "dla"]


class DLAOptions(Strict):
    """Deep Learning Accelerator (Jetson, DRIVE): which core, fallback, memory pools, per-layer devices."""

    core: int | None = Field(default=None, ge=0, description="DLA core to build for (--useDLACore).")
    gpu_fallback: bool = Field(default=False, description="Layers DLA cannot run go to the GPU (--allowGPUFallback).")
    sram_mib: int | None = Field(default=None, gt=0, description="DLA managed SRAM pool limit in MiB.")
    local_dram_mib: int | None = Field(default=None, gt=0, description="DLA local DRAM pool limit in MiB.")
    global_dram_mib: int | None = Field(default=None, gt=0, description="DLA global DRAM pool limit in MiB.")
    layers: dict[str, DeviceName] = Field(
        default_factory=dict, description="Layer name (one '*' allowed) -> gpu | dla (--layerDeviceTypes)."
    )

    @field_validator("layers")
    @classmethod
    def _patterns(cls, value: dict[str, Any]) -> dict[str, Any]:
        return name_patterns(value, "layers")

    @model_validator(mode="after")
    def _needs_core(self) -> DLAOptions:
        if self.core is None and (self.gpu_fallback or "dla" in self.layers.values()):
            raise ValueError("gpu_fallback and layers: dla need core (the DLA core to build for)")
        return self


# -- plugin libraries -----------------------------------------------------------------------------


class PluginLibrary(Strict):
    """A plugin library the build loads; its bytes are in the build key (like the model's)."""

    library: str = Field(description="Shared library: relative to the recipe file, absolute, ~, ${VAR}.")
    sha256: str | None = Field(default=None, description="Optional pin: the build refuses another file.")
    load: Literal["dynamic", "static"] = Field(
        default="dynamic",
        description="dynamic: IPluginRegistry.load_library (--dynamicPlugins); static: loaded into the builder "
        "process so that its creators register themselves (--staticPlugins).",
    )
    serialize: bool = Field(
        default=False,
        description="Embed the library in the plan (--setPluginsToSerialize; version-compatible engines).",
    )

    @field_validator("library")
    @classmethod
    def _path(cls, value: str) -> str:
        return path_text(value)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        return sha256_pin(value)

    @model_validator(mode="after")
    def _serialize_needs_dynamic(self) -> PluginLibrary:
        if self.serialize and self.load != "dynamic":
            raise ValueError("serialize: true needs load: dynamic (TensorRT serializes libraries it loaded itself)")
        return self


@dataclass(frozen=True)
class NamedFile:
    """A file the builder reads besides the model, as resolution found it: where the recipe names it
    (``plugins[0].library``), its absolute path, and the sha256 the build key holds."""

    field: str
    path: Path
    sha256: str


# -- the escape hatch: IBuilderConfig attributes and flags by their API names -----------------------

# Sub-mappings of build.config: group -> (the nvinfer enum its keys name, the value type).
CONFIG_GROUPS: dict[str, tuple[str, type]] = {
    "flags": ("BuilderFlag", bool),
    "quantization_flags": ("QuantizationFlag", bool),
    "memory_pool_limits": ("MemoryPoolType", int),
}
ConfigValue = bool | int | str

# What a dedicated recipe field sets: build.config must not set it a second way (one spelling per
# engine, so one key). Keys: an IBuilderConfig attribute, or "<group>.<enum member>".
OWNED_CONFIG: dict[str, str] = {
    "builder_optimization_level": "build.optimization_level",
    "max_aux_streams": "build.max_aux_streams",
    "tiling_optimization_level": "build.tiling_optimization_level",
    "l2_limit_for_tiling": "build.tiling_l2_limit_kib",
    "profiling_verbosity": "build.profiling_verbosity",
    "hardware_compatibility_level": "compatibility.hardware",
    "runtime_platform": "compatibility.runtime_platform",
    "num_compute_capabilities": "compatibility.compute_capabilities",
    "avg_timing_iterations": "tactics.timing_iterations",
    "max_num_tactics": "tactics.max_tactics",
    "DLA_core": "build.dla.core",
    "default_device_type": "build.dla.core",
    "plugins_to_serialize": "plugins[].serialize",
    "flags.FP16": "precision.fp16",
    "flags.BF16": "precision.bf16",
    "flags.INT8": "precision.int8",
    "flags.FP8": "precision.fp8",
    "flags.INT4": "precision.int4",
    "flags.TF32": "precision.tf32",
    "flags.OBEY_PRECISION_CONSTRAINTS": "precision.constraints",
    "flags.PREFER_PRECISION_CONSTRAINTS": "precision.constraints",
    "flags.REFIT": "refit",
    "flags.REFIT_IDENTICAL": "refit",
    "flags.STRIP_PLAN": "refit",
    "flags.WEIGHTLESS": "refit",
    "flags.VERSION_COMPATIBLE": "compatibility.version_compatible",
    "flags.EXCLUDE_LEAN_RUNTIME": "compatibility.exclude_lean_runtime",
    "flags.DISABLE_TIMING_CACHE": "build.timing_cache",
    "flags.EDITABLE_TIMING_CACHE": "tactics.deny (trtforge sets it to enforce deny entries)",
    "flags.SPARSE_WEIGHTS": "build.sparse_weights",
    "flags.WEIGHT_STREAMING": "build.weight_streaming",
    "flags.DIRECT_IO": "io.direct",
    "flags.GPU_FALLBACK": "build.dla.gpu_fallback",
    "flags.ERROR_ON_TIMING_CACHE_MISS": "build.error_on_timing_cache_miss",
    "flags.DISABLE_COMPILATION_CACHE": "build.compilation_cache",
    "flags.DISTRIBUTIVE_INDEPENDENCE": "build.distributive_independence",
    "memory_pool_limits.WORKSPACE": "build.workspace_mib",
    "memory_pool_limits.TACTIC_DRAM": "build.tactic_dram_mib",
    "memory_pool_limits.TACTIC_SHARED_MEMORY": "build.tactic_shared_memory_kib",
    "memory_pool_limits.DLA_MANAGED_SRAM": "build.dla.sram_mib",
    "memory_pool_limits.DLA_LOCAL_DRAM": "build.dla.local_dram_mib",
    "memory_pool_limits.DLA_GLOBAL_DRAM": "build.dla.global_dram_mib",
}


def config_items(config: dict[str, Any]) -> list[tuple[str, Any]]:
    """build.config flattened: ("attribute", value) and ("group.MEMBER", value), in key order."""
    items: list[tuple[str, Any]] = []
    for key, value in config.items():
        if key in CONFIG_GROUPS:
            items += [(f"{key}.{member}", member_value) for member, member_value in value.items()]
        else:
            items.append((key, value))
    return items


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """The shape of build.config, checked without TensorRT: names, value types, dedicated fields.

    Whether each name exists in the installed backend's API is checked on the build path
    (backend/config_overrides.py), before the build.
    """
    for key, value in config.items():
        if not _IDENTIFIER.fullmatch(key):
            raise ValueError(f"{key!r} is not an IBuilderConfig attribute name")
        if key in CONFIG_GROUPS:
            _check_group(key, value)
        elif isinstance(value, dict) or isinstance(value, float):
            raise ValueError(f"{key}: give a bool, an integer or an enum member name, not {type(value).__name__}")
    for key, _value in config_items(config):
        owner = OWNED_CONFIG.get(key)
        if owner is not None:
            raise ValueError(f"{key} is set by the recipe field {owner}; use that field instead")
    return config


def _check_group(group: str, value: Any) -> None:
    enum, kind = CONFIG_GROUPS[group]
    if not isinstance(value, dict):
        raise ValueError(f"{group}: a mapping of {enum} member -> {kind.__name__}")
    for member, member_value in value.items():
        if not isinstance(member, str) or not _IDENTIFIER.fullmatch(member):
            raise ValueError(f"{group}: {member!r} is not a {enum} member name")
        if type(member_value) is not kind:
            raise ValueError(f"{group}.{member}: give a {kind.__name__}, not {type(member_value).__name__}")
        if kind is int and member_value < 0:
            raise ValueError(f"{group}.{member}: must not be negative")
