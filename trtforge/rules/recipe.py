"""Recipes: the declarative description of an engine build.

A recipe is YAML validated by strict Pydantic models (``extra="forbid"``). Errors name the
file, the line and the field, e.g.
``recipes/x.yaml:7 profiles[0].images.opt: opt [64,3,32,32] exceeds max [32,3,32,32]``.
Checks that need the ONNX model live in :mod:`trtforge.rules.onnx_model`, so a cache hit never pays for
importing ``onnx``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trtforge.core.errors import RecipeError
from trtforge.core.recipe_paths import expand_path, path_hint, path_text
from trtforge.core.yamlfile import (
    NUMBER_TEXT,
    YamlSpellingsSchema,
    also_accepts,
    line_of,
    load_yaml,
    read_text_file,
    validate_yaml,
)
from trtforge.rules.builder_options import (
    Calibration,
    DLAOptions,
    DType,
    IOSpec,
    ParserFlags,
    PluginLibrary,
    check_config,
    name_patterns,
    sha256_pin,
)
from trtforge.rules.denylist import DenyEntry, deny_key, parse_deny_file, read_deny_text

MAX_RECIPE_BYTES = 1 << 20
# Anchored for Pydantic and JSON Schema, which search; Python code full-matches (name_problem).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

Shape = list[int]


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be an artifact name, or None: the one rule for recipes, adopt and bundles.

    The whole text must match (a trailing newline does not pass), and no name holds ``..``.
    """
    if not _NAME.fullmatch(value):
        return f"must match {NAME_PATTERN}"
    if ".." in value:
        return "must not contain '..'"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _fmt(shape: Shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


class InputShapes(_Strict):
    """min/opt/max shapes of one input in one optimization profile.

    Fields are declared min, max, opt so that ``opt`` is checked last against both bounds and
    errors point at the value that is out of range.
    """

    # Rank 0 ([]) is a scalar input; a zero-sized dimension is a valid (empty) tensor.
    min: Shape = Field(max_length=8)
    max: Shape = Field(max_length=8)
    opt: Shape = Field(max_length=8)

    @field_validator("min", "max", "opt")
    @classmethod
    def _not_negative(cls, shape: Shape) -> Shape:
        if any(d < 0 for d in shape):
            raise ValueError(f"dimensions must not be negative, got {_fmt(shape)}")
        return shape

    @field_validator("max")
    @classmethod
    def _max_not_below_min(cls, shape: Shape, info: Any) -> Shape:
        low = info.data.get("min")
        if low is not None:
            _check_rank("max", shape, "min", low)
            if any(a < b for a, b in zip(shape, low, strict=True)):
                raise ValueError(f"max {_fmt(shape)} is below min {_fmt(low)}")
        return shape

    @field_validator("opt")
    @classmethod
    def _opt_between(cls, shape: Shape, info: Any) -> Shape:
        low, high = info.data.get("min"), info.data.get("max")
        if low is not None:
            _check_rank("opt", shape, "min", low)
            if any(a < b for a, b in zip(shape, low, strict=True)):
                raise ValueError(f"opt {_fmt(shape)} is below min {_fmt(low)}")
        if high is not None:
            _check_rank("opt", shape, "max", high)
            if any(a > b for a, b in zip(shape, high, strict=True)):
                raise ValueError(f"opt {_fmt(shape)} exceeds max {_fmt(high)}")
        return shape


def _check_rank(name: str, shape: Shape, other_name: str, other: Shape) -> None:
    if len(shape) != len(other):
        raise ValueError(
            f"{name} {_fmt(shape)} has rank {len(shape)} but {other_name} {_fmt(other)} has rank {len(other)}"
        )


Profile = dict[str, InputShapes]


class ModelSpec(_Strict):
    onnx: str = Field(
        description="Path of the ONNX model: relative to the recipe file, absolute, or with ~ and ${VAR}."
    )
    sha256: str | None = Field(default=None, description="Optional pin: the build refuses another model.")
    parser: ParserFlags = Field(default=ParserFlags(), description="Flags of TensorRT's ONNX parser.")

    @field_validator("onnx")
    @classmethod
    def _path(cls, value: str) -> str:
        return path_text(value)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        return sha256_pin(value)


# TensorRT's setters take int32 counts and int64 byte sizes; a larger value passes pydantic and then
# crashes the build worker, so the fields are bounded here, in their own units.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MIB_MAX = INT64_MAX >> 20
KIB_MAX = INT64_MAX >> 10

TimingCachePolicy = Literal["shared", "private", "off"]
TilingLevel = Literal["none", "fast", "moderate", "full"]
ProfilingVerbosity = Literal["layer_names_only", "detailed", "none"]


class BuildOptions(_Strict):
    optimization_level: int = Field(default=3, ge=0, le=5, description="Builder optimization level 0-5.")
    workspace_mib: int | None = Field(
        default=None, gt=0, le=MIB_MAX, description="Workspace memory pool limit in MiB (default: the backend's)."
    )
    tactic_dram_mib: int | None = Field(
        default=None, gt=0, le=MIB_MAX, description="Tactic DRAM memory pool limit in MiB (default: the backend's)."
    )
    tactic_shared_memory_kib: int | None = Field(
        default=None, gt=0, le=KIB_MAX, description="Tactic shared memory pool limit in KiB (default: the backend's)."
    )
    max_aux_streams: int | None = Field(
        default=None,
        ge=0,
        le=INT32_MAX,
        description="Auxiliary CUDA streams the engine may use (0 = none; default: backend's).",
    )
    tiling_optimization_level: TilingLevel | None = Field(
        default=None, description="How hard the builder searches for tiling strategies (default: backend's)."
    )
    timing_cache: TimingCachePolicy = Field(
        default="shared",
        description="shared: start from and merge into the catalog's cache for the target; "
        "private: start empty, keep the result with the artifact only; off: disable the timing cache.",
    )
    error_on_timing_cache_miss: bool = Field(
        default=False, description="Fail the build when a tactic to time is not in the timing cache."
    )
    compilation_cache: bool | None = Field(
        default=None, description="false: no compilation cache (part of the timing cache; default: the backend's)."
    )
    profiling_verbosity: ProfilingVerbosity | None = Field(
        default=None,
        description="Layer information kept in the plan (default: detailed with TensorRT, for the engine "
        "inspector and deny lists; the backend's with TensorRT-RTX).",
    )
    sparse_weights: bool = Field(default=False, description="Allow sparse tactics for 2:4-sparse weights.")
    weight_streaming: bool = Field(
        default=False, description="Build an engine whose weights can stream from host memory (strongly typed)."
    )
    debug_tensors: list[str] = Field(
        default_factory=list, description="Tensors marked as debug tensors (inspectable at run time)."
    )
    debug_unfused_tensors: bool = Field(default=False, description="Mark every unfused tensor as a debug tensor.")
    decomposable_attentions: list[str] = Field(
        default_factory=list, description="Attention names (one '*' allowed) the builder may decompose."
    )
    distributive_independence: bool = Field(
        default=False, description="Results of a batch item do not depend on the other items (deterministic)."
    )
    tiling_l2_limit_kib: int | None = Field(
        default=None,
        ge=0,
        le=KIB_MAX,
        description="L2 cache the tiling optimization may use, in KiB (default: backend's).",
    )
    preview_features: dict[str, bool] = Field(
        default_factory=dict,
        description="Preview features on or off by name, e.g. {aliased_plugin_io_10_03: true} (IBuilderConfig "
        "set_preview_feature; the names are the backend's PreviewFeature members in lower case).",
    )
    dla: DLAOptions = Field(default=DLAOptions(), description="Deep Learning Accelerator options (Jetson, DRIVE).")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Escape hatch: IBuilderConfig attributes by their Python API names (avg_timing_iterations, "
        "engine_capability: SAFETY, ...) and the sub-mappings flags, quantization_flags, memory_pool_limits "
        "(member name -> value); checked against the installed backend before the build.",
        json_schema_extra={"additionalProperties": {"type": ["boolean", "integer", "string", "object"]}},
    )

    @field_validator("timing_cache", mode="before")
    @classmethod
    @also_accepts({"const": False, "description": "the same as off (YAML 1.1 reads a bare off as false)"})
    def _yaml_off(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as false; that is what the user meant.
        return "off" if value is False else value

    @field_validator("debug_tensors", "decomposable_attentions")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names must not repeat")
        name_patterns(dict.fromkeys(value), "names")
        return value

    @field_validator("preview_features")
    @classmethod
    def _feature_names(cls, value: dict[str, bool]) -> dict[str, bool]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"{name!r} is not a preview feature name (lower case, e.g. aliased_plugin_io_10_03)")
        return value

    @field_validator("config")
    @classmethod
    def _config(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_config(value)


# Weak-typing builder flags: the builder may pick these precisions for layers of a weakly typed
# network. TensorRT 11 removed them (strongly typed networks only).
WEAK_TYPING_FLAGS: tuple[str, ...] = ("fp16", "bf16", "int8", "fp8", "int4")
PrecisionConstraints = Literal["none", "prefer", "obey"]


class Precision(_Strict):
    strongly_typed: bool | None = Field(
        default=None,
        description="Build a strongly typed network (types come from the ONNX model). "
        "Default: the backend's (TensorRT 10 weak, TensorRT 11 and TensorRT-RTX strong).",
    )
    tf32: bool | None = Field(default=None, description="Allow TF32 for FP32 math (default: the backend's).")
    fp16: bool = Field(default=False, description="Weak typing: allow FP16 kernels (TensorRT 10 only).")
    bf16: bool = Field(default=False, description="Weak typing: allow BF16 kernels (TensorRT 10 only).")
    int8: bool = Field(default=False, description="Weak typing: allow INT8 kernels (TensorRT 10 only).")
    fp8: bool = Field(default=False, description="Weak typing: allow FP8 kernels (TensorRT 10 only).")
    int4: bool = Field(default=False, description="Weak typing: allow INT4 weight-only kernels (TensorRT 10.1+).")
    constraints: PrecisionConstraints | None = Field(
        default=None,
        description="How layer_precisions and layer_output_types bind: prefer | obey (TensorRT 10, weak typing).",
    )
    layer_precisions: dict[str, DType] = Field(
        default_factory=dict, description="Layer name (one '*' allowed) -> compute precision (TensorRT 10)."
    )
    layer_output_types: dict[str, DType | list[DType]] = Field(
        default_factory=dict,
        description="Layer name (one '*' allowed) -> output type, or one type per output (TensorRT 10).",
    )
    calibration: Calibration | None = Field(
        default=None, description="INT8 calibration from a cache file (TensorRT 10; needs int8: true)."
    )

    @field_validator("layer_precisions", "layer_output_types")
    @classmethod
    def _patterns(cls, value: dict[str, Any]) -> dict[str, Any]:
        return name_patterns(value, "layer names")

    @model_validator(mode="after")
    def _strong_excludes_weak(self) -> Precision:
        weak = self.weak_flags() + self.weak_fields()
        if self.strongly_typed and weak:
            raise ValueError(
                f"strongly_typed: true cannot be combined with weak-typing flags ({', '.join(weak)}); "
                "a strongly typed network takes its precisions from the model"
            )
        if self.calibration is not None and not self.int8:
            raise ValueError("calibration needs int8: true (the cache calibrates INT8 kernels)")
        return self

    def weak_flags(self) -> list[str]:
        return [name for name in WEAK_TYPING_FLAGS if getattr(self, name)]

    def weak_fields(self) -> list[str]:
        """The per-layer weak-typing fields this recipe sets."""
        names = ("constraints", "layer_precisions", "layer_output_types", "calibration")
        return [name for name in names if getattr(self, name) not in (None, {}, "none")]


# Every tactic source name any backend knows; which ones the installed backend has is the
# capability table's call (it names the valid ones for that backend when a recipe asks for another).
TACTIC_SOURCE_NAMES: tuple[str, ...] = ("cublas", "cublas_lt", "cudnn", "edge_mask_convolutions", "jit_convolutions")
LIBRARY_TACTIC_SOURCES: tuple[str, ...] = ("cublas", "cublas_lt", "cudnn")


class Tactics(_Strict):
    """Tactic policy: allowed sources, and (layer, tactic) pairs banned inline or in a sidecar file."""

    sources: list[str] | None = Field(
        default=None,
        description="Allowed tactic sources (default: the backend's); [] allows only built-ins.",
        json_schema_extra={"items": {"type": "string", "enum": list(TACTIC_SOURCE_NAMES)}},
    )
    deny: list[DenyEntry] = Field(default_factory=list, description="Banned (layer, tactic) pairs.")
    deny_file: str | None = Field(
        default=None,
        description="YAML file with more deny entries (`deny: [...]`): relative to the recipe, absolute, ~, ${VAR}.",
    )
    timing_iterations: int | None = Field(
        default=None,
        ge=1,
        le=INT32_MAX,
        description="Times each tactic is timed and averaged (--avgTiming; default: backend's).",
    )
    max_tactics: int | None = Field(
        # IBuilderConfig::setMaxNbTactics: 0 "has no effect" (observed with TensorRT-RTX 1.7: reads back -1);
        # its valid range ends below INT32_MAX (TensorRT-RTX 1.7's parameter check)
        default=None,
        ge=1,
        le=INT32_MAX - 1,
        description="At most this many tactics timed per layer (--maxTactics; default: backend's).",
    )

    @field_validator("sources")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("tactic sources must not repeat")
        return sorted(value) if value is not None else None

    @field_validator("deny_file")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return None if value is None else path_text(value)


RefitMode = Literal["none", "refittable", "refit_identical", "strip_weights", "strip_all_weights"]
WEIGHTLESS_REFIT_MODES: tuple[str, ...] = ("strip_weights", "strip_all_weights")
HardwareLevel = Literal["none", "ampere_plus", "same_compute_capability"]
RuntimePlatform = Literal["same_as_build", "windows_amd64"]
_CC = re.compile(r"[1-9][0-9]?\.[0-9]")
_CC_ITEM: dict[str, Any] = {  # JSON Schema patterns are not anchored: fullmatch is spelled out
    "anyOf": [
        {"type": "string", "pattern": f"^{_CC.pattern}$"},
        {"type": "number", "minimum": 1, "exclusiveMaximum": 100},
    ]
}
_CC_NUMBERS: dict[str, Any] = {
    "type": "array",
    "items": _CC_ITEM,
    "description": "capabilities written as numbers (8.6, 12.0) are read as their major.minor text",
}


def _cc_text(item: Any) -> Any:
    if isinstance(item, int | float) and not isinstance(item, bool):
        return str(float(item))
    return item


class Compatibility(_Strict):
    hardware: HardwareLevel = Field(default="none", description="Which other GPUs may load the engine (TensorRT).")
    version_compatible: bool = Field(
        default=False, description="Engine loads on newer TensorRT runtimes of the same major version (lean runtime)."
    )
    exclude_lean_runtime: bool = Field(
        default=False, description="With version_compatible: do not embed the lean runtime in the plan."
    )
    compute_capabilities: list[str] | None = Field(
        default=None,
        description="TensorRT-RTX: compute capabilities to build for, e.g. [8.6, 8.9, 12.0] (default: backend's).",
        json_schema_extra={"minItems": 1, "uniqueItems": True, "items": _CC_ITEM},
    )
    runtime_platform: RuntimePlatform = Field(
        default="same_as_build",
        description="windows_amd64: build on Linux x86-64 an engine that runs on Windows x86-64 (TensorRT 10.2+).",
    )

    @field_validator("compute_capabilities", mode="before")
    @classmethod
    @also_accepts(_CC_NUMBERS)
    def _numbers_to_text(cls, value: Any) -> Any:
        # YAML reads 8.6 as a float (and 12 as an integer); keep the canonical "major.minor" text.
        if isinstance(value, list):
            return [_cc_text(item) for item in value]
        return value

    @field_validator("compute_capabilities")
    @classmethod
    def _capabilities(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("give at least one compute capability, or leave the field out")
        for item in value:
            if not _CC.fullmatch(item):
                raise ValueError(f"{item!r} is not a compute capability like 8.6")
        if len(set(value)) != len(value):
            raise ValueError("compute capabilities must not repeat")
        return sorted(value, key=lambda cc: tuple(int(p) for p in cc.split(".")))

    @model_validator(mode="after")
    def _lean_needs_version_compatible(self) -> Compatibility:
        if self.exclude_lean_runtime and not self.version_compatible:
            raise ValueError("exclude_lean_runtime needs version_compatible: true")
        return self


ShapePointName = Literal["min", "opt", "max"]


def _float_text(value: Any) -> Any:
    """YAML 1.1 reads ``1e-5`` as text; accept it as the number it plainly is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


class OutputTolerance(_Strict):
    """Tolerances for one output; unset fields fall back to the spec's defaults."""

    atol: float | None = Field(default=None, ge=0, description="Absolute tolerance for this output.")
    rtol: float | None = Field(default=None, ge=0, description="Relative tolerance for this output.")

    @field_validator("atol", "rtol", mode="before")
    @classmethod
    @also_accepts(NUMBER_TEXT)
    def _numbers(cls, value: Any) -> Any:
        return _float_text(value)


class InputData(_Strict):
    """How generated values of one input are drawn (integers: whole numbers in [low, high])."""

    distribution: Literal["uniform", "normal"] = "uniform"
    low: float = Field(default=0.0, description="uniform: lowest value.")
    high: float = Field(default=1.0, description="uniform: highest value.")
    mean: float = Field(default=0.0, description="normal: mean.")
    std: float = Field(default=1.0, ge=0, description="normal: standard deviation.")

    @field_validator("low", "high", "mean", "std", mode="before")
    @classmethod
    @also_accepts(NUMBER_TEXT)
    def _numbers(cls, value: Any) -> Any:
        return _float_text(value)

    @model_validator(mode="after")
    def _ordered(self) -> InputData:
        if self.high < self.low:
            raise ValueError(f"high {self.high} is below low {self.low}")
        return self


class VerifySpec(_Strict):
    """How `trtforge verify` checks an engine against ONNX Runtime; not part of the build key."""

    atol: float = Field(default=1e-5, ge=0, description="Absolute tolerance (an element passes within atol OR rtol).")
    rtol: float = Field(default=1e-5, ge=0, description="Relative tolerance, relative to the reference output.")
    outputs: dict[str, OutputTolerance] = Field(default_factory=dict, description="Per-output tolerance overrides.")
    shapes: list[ShapePointName | dict[str, Shape]] = Field(
        default_factory=lambda: ["min", "opt", "max"],
        min_length=1,
        description="Shape points tested in every profile: min/opt/max, or explicit input -> shape maps "
        "(tested in each profile that contains them).",
    )
    seed: int = Field(default=0, ge=0, description="Seed of the generated inputs.")
    inputs: dict[str, InputData] = Field(default_factory=dict, description="Per-input value distributions.")
    data: str | None = Field(
        default=None,
        description="User inputs instead of generated ones: .npz (one feed) or polygraphy inputs JSON "
        "(`polygraphy run --save-inputs`): relative to the recipe file, absolute, ~, ${VAR}.",
    )
    iterations: int = Field(default=50, ge=0, description="Timed iterations per profile (0: no timing).")
    warmup: int = Field(default=5, ge=0, description="Untimed iterations before timing.")
    cuda_graph: bool = Field(default=False, description="Also time with CUDA graph capture (GPU).")
    streams: int = Field(default=1, ge=1, le=16, description="Execution contexts/streams timed concurrently (GPU).")

    @field_validator("atol", "rtol", mode="before")
    @classmethod
    @also_accepts(NUMBER_TEXT)
    def _numbers(cls, value: Any) -> Any:
        return _float_text(value)

    @field_validator("data")
    @classmethod
    def _relative_data(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.endswith((".npz", ".json")):
            raise ValueError("must be a .npz file or a polygraphy inputs .json file")
        return path_text(value)


Backend = Literal["auto", "tensorrt", "tensorrt_rtx"]


class Recipe(_Strict):
    """A validated recipe. ``source`` is where it was read from (not part of the schema)."""

    name: str = Field(pattern=NAME_PATTERN, description="Artifact name: letters, digits, '.', '_' and '-'.")
    description: str = Field(default="", description="Free text; not part of the build key.")
    model: ModelSpec
    backend: Backend = "auto"
    profiles: list[Profile] = Field(
        default_factory=list,
        description="Optimization profiles; each maps input -> shapes. Needed only when an input is dynamic.",
    )
    precision: Precision = Precision()
    refit: RefitMode = Field(
        default="none",
        description="none | refittable | refit_identical | strip_weights (weightless plan, refit with the "
        "same weights before use) | strip_all_weights (weightless, every weight refittable).",
    )
    compatibility: Compatibility = Compatibility()
    tactics: Tactics = Tactics()  # after compatibility: its check below reads compatibility
    build: BuildOptions = BuildOptions()
    io: IOSpec = Field(default=IOSpec(), description="Types and memory layouts of network inputs and outputs.")
    plugins: list[PluginLibrary] = Field(
        default_factory=list, description="Plugin libraries the build loads (custom operators), in load order."
    )
    verify: VerifySpec = VerifySpec()

    @field_validator("profiles", mode="before")
    @classmethod
    def _input_names_are_text(cls, value: Any) -> Any:
        # YAML reads unquoted 1, on, yes, null... as numbers, booleans, None: not an input's name.
        if isinstance(value, list):
            for index, profile in enumerate(value):
                if isinstance(profile, dict):
                    _check_names(profile, f"profiles[{index}]")
        return value

    @field_validator("name")
    @classmethod
    def _no_dots_only(cls, value: str) -> str:
        problem = name_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _profiles_consistent(self) -> Recipe:
        if not self.profiles:
            return self
        first = self.profiles[0]
        for index, profile in enumerate(self.profiles[1:], start=1):
            for name, shapes in profile.items():
                if name in first and len(first[name].min) != len(shapes.min):
                    raise ValueError(
                        f"profiles[{index}].{name} has rank {len(shapes.min)} "
                        f"but profiles[0].{name} has rank {len(first[name].min)}"
                    )
        return self

    @model_validator(mode="after")
    def _verify_points_fit(self) -> Recipe:
        for index, point in enumerate(self.verify.shapes):
            if isinstance(point, dict) and not any(shape_point_fits(point, p) for p in self.profiles or [{}]):
                shown = ", ".join(f"{n}: {_fmt(s)}" for n, s in point.items())
                raise ValueError(f"verify.shapes[{index}] {{{shown}}} is inside no optimization profile")
        return self

    @model_validator(mode="after")
    def _options_consistent(self) -> Recipe:
        check_options(self)
        return self

    @field_validator("tactics")
    @classmethod
    def _ampere_plus_excludes_library_tactics(cls, tactics: Tactics, info: Any) -> Tactics:
        # "Hardware compatibility ... disables cuBLAS, cuBLASLt and cuDNN tactics" (TensorRT
        # Developer Guide, Hardware Compatibility), so asking for both is a contradiction.
        compatibility = info.data.get("compatibility")
        if compatibility is not None and compatibility.hardware == "ampere_plus" and tactics.sources:
            asked = [s for s in tactics.sources if s in LIBRARY_TACTIC_SOURCES]
            if asked:
                raise ValueError(
                    f"compatibility.hardware: ampere_plus disables {', '.join(asked)} tactics; "
                    "remove them from tactics.sources or drop hardware compatibility"
                )
        return tactics

    def build_fields(self) -> dict[str, Any]:
        """The fields that change the engine: everything but description, verify and file locations.

        Files are keyed by their bytes: the model by the key's model digest, plugin libraries and
        the calibration cache by the sha256 resolution writes into their entries (with_file_digests).
        """
        data = self.model_dump(mode="json", exclude={"description", "verify"})
        data["model"] = {"parser": data["model"]["parser"]}
        # Deny entries count by (layer, tactic) only. The build stage merges the sidecar's entries
        # in first (with_deny_file, through resolve), which leaves deny_file empty.
        data["tactics"]["deny"] = deny_key(self.tactics.deny)
        for plugin in data["plugins"]:
            plugin.pop("library")
        if data["precision"]["calibration"] is not None:
            data["precision"]["calibration"].pop("cache")
        return drop_unset_additions(data)


# Fields added after key schema 2, left out of the key while they hold their default, so a recipe
# that uses none of them keeps the key (and the cache hits) it had before they existed.
ADDED_FIELDS: tuple[str, ...] = (
    "model.parser",
    "precision.int4",
    "precision.constraints",
    "precision.layer_precisions",
    "precision.layer_output_types",
    "precision.calibration",
    "compatibility.runtime_platform",
    "tactics.timing_iterations",
    "tactics.max_tactics",
    "build.error_on_timing_cache_miss",
    "build.compilation_cache",
    "build.profiling_verbosity",
    "build.sparse_weights",
    "build.weight_streaming",
    "build.debug_tensors",
    "build.debug_unfused_tensors",
    "build.decomposable_attentions",
    "build.distributive_independence",
    "build.tiling_l2_limit_kib",
    "build.preview_features",
    "build.dla",
    "build.config",
    "io",
    "plugins",
)


@functools.cache
def _default_recipe() -> Recipe:
    return Recipe.model_validate({"name": "x", "model": {"onnx": "x.onnx"}})


def default_value(path: str) -> Any:
    """The default of the field at a dotted path (what a recipe that leaves it out has)."""
    return field_value(_default_recipe(), path)


@functools.cache
def _added_defaults() -> dict[str, Any]:
    defaults = _default_recipe().model_dump(mode="json")
    values: dict[str, Any] = {}
    for path in ADDED_FIELDS:
        node: Any = defaults
        for part in path.split("."):
            node = node[part]
        values[path] = node
    return values


def drop_unset_additions(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a recipe's JSON) without the ADDED_FIELDS that hold their default value."""
    defaults = _added_defaults()
    for path, default in defaults.items():
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        if node.get(leaf) == default:
            node.pop(leaf, None)
    return data


def check_options(recipe: Recipe) -> None:
    """Rules between sections (ValueError): what one field needs of another."""
    precision, build = recipe.precision, recipe.build
    calibration = precision.calibration
    if calibration is not None and calibration.profile is not None and calibration.profile >= len(recipe.profiles):
        raise ValueError(
            f"precision.calibration.profile {calibration.profile} names no optimization profile "
            f"(the recipe has {len(recipe.profiles)})"
        )
    typed = [name for name, io in (*recipe.io.inputs.items(), *recipe.io.outputs.items()) if io.dtype is not None]
    if precision.strongly_typed and typed:
        raise ValueError(
            f"io dtype ({', '.join(typed)}) needs a weakly typed network: a strongly typed network takes "
            "its input and output types from the model"
        )
    if build.weight_streaming and precision.strongly_typed is False:
        raise ValueError("build.weight_streaming needs a strongly typed network (precision.strongly_typed: true)")
    if recipe.tactics.deny and build.profiling_verbosity not in (None, "detailed"):
        raise ValueError(
            "tactics.deny needs build.profiling_verbosity: detailed (deny entries are checked against the "
            "engine's layer information)"
        )
    if any(p.serialize for p in recipe.plugins) and not recipe.compatibility.version_compatible:
        raise ValueError(
            "plugins[].serialize: true needs compatibility.version_compatible: true (TensorRT embeds "
            "plugin libraries in version-compatible plans only)"
        )
    written = [p.library for p in recipe.plugins]
    if len(set(written)) != len(written):
        raise ValueError("plugins: a library must not be listed twice")


def field_value(recipe: Recipe, path: str) -> Any:
    """The value of the field at a dotted path, e.g. ``build.dla.core``."""
    node: Any = recipe
    for part in path.split("."):
        node = getattr(node, part)
    return node


def _check_names(mapping: dict[Any, Any], where: str) -> None:
    for key in mapping:
        if isinstance(key, str):
            continue
        if isinstance(key, bool) or key is None:
            words = "on/off/yes/no/true/false" if key is not None else "null or ~"
            raise ValueError(f"YAML reads an input name in {where} as {json.dumps(key)} (from {words}); quote the name")
        raise ValueError(f"YAML reads input name {key} in {where} as a number; quote it: '{key}'")


def shape_point_fits(point: dict[str, Shape], profile: Profile) -> bool:
    """Whether explicit shapes name exactly the profile's inputs and lie within its min/max."""
    if set(point) != set(profile):
        return False
    for name, shape in point.items():
        bounds = profile[name]
        if len(shape) != len(bounds.min):
            return False
        if any(s < lo or s > hi for s, lo, hi in zip(shape, bounds.min, bounds.max, strict=True)):
            return False
    return True


class LoadedRecipe(BaseModel):
    """A recipe plus where it came from; paths in the recipe resolve against ``path``."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    recipe: Recipe
    path: Path
    shown: str = ""  # the path as the user gave it, for messages
    text: str = ""  # the YAML as read, so later checks can name a line
    # Once the sidecar is merged: its path as written and its text as read (resolution/resolved_cache keys them).
    sidecar: tuple[str, str] | None = None

    @property
    def model_path(self) -> Path:
        return self.resolve_path(self.recipe.model.onnx, "model", "onnx")

    def resolve_path(self, value: str, *loc: str | int) -> Path:
        """A path field of this recipe (at ``loc``) expanded and made absolute (see expand_path)."""
        field = ".".join(str(part) for part in loc)
        try:
            return expand_path(value, self.path.parent, field)
        except ValueError as exc:
            raise RecipeError(f"{self.where(*loc)} {exc}", hint=path_hint(exc)) from None

    def check_paths(self) -> LoadedRecipe:
        """Expand every path field once, so an unset variable fails at load time, naming file:line."""
        self.model_path  # noqa: B018 - resolving is the check
        if self.recipe.tactics.deny_file is not None:
            self.resolve_path(self.recipe.tactics.deny_file, "tactics", "deny_file")
        if self.recipe.verify.data is not None:
            self.resolve_path(self.recipe.verify.data, "verify", "data")
        for where, written, _digest in self.named_files():
            self.resolve_path(written, *where)
        return self

    def named_files(self) -> list[tuple[tuple[str | int, ...], str, str | None]]:
        """Files the builder reads besides the model, keyed by their bytes: (field location, path as
        written, sha256 pin or digest)."""
        files: list[tuple[tuple[str | int, ...], str, str | None]] = [
            (("plugins", index, "library"), plugin.library, plugin.sha256)
            for index, plugin in enumerate(self.recipe.plugins)
        ]
        calibration = self.recipe.precision.calibration
        if calibration is not None:
            files.append((("precision", "calibration", "cache"), calibration.cache, calibration.sha256))
        return files

    def where(self, *loc: str | int) -> str:
        """``file:line`` of the field at ``loc`` (``file`` alone when the line is unknown)."""
        shown = self.shown or str(self.path)
        try:
            line = line_of(yaml.compose(self.text, Loader=yaml.SafeLoader), loc) if self.text else None
        except yaml.YAMLError:
            line = None
        return f"{shown}:{line}" if line else shown


def json_schema() -> dict[str, Any]:
    """The recipe JSON Schema, for editors and `trtforge schema`."""
    schema = Recipe.model_json_schema(schema_generator=YamlSpellingsSchema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "trtforge recipe"
    return schema


ONNX_SUFFIX = ".onnx"


def load_recipe(path: str | Path, *, name: str | None = None) -> LoadedRecipe:
    """Read and validate a recipe; every failure is a one-line RecipeError naming file:line field.

    A path to an ``.onnx`` file stands for the recipe of just that model (``name`` or the file's
    stem made to fit the name rules): a user trying trtforge on a model they have needs no YAML.
    """
    path = Path(path)
    if path.name.lower().endswith(ONNX_SUFFIX):
        return model_recipe(path, name)
    text = read_text_file(path, str(path), what="recipe file", limit=MAX_RECIPE_BYTES, missing_hint="check the path")
    loaded = LoadedRecipe(recipe=parse_recipe(text, str(path)), path=path.resolve(), shown=str(path), text=text)
    return loaded.check_paths()


def name_from_stem(stem: str) -> str:
    """A file stem made into an artifact name: other characters become '-', at most 128."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem)
    name = re.sub(r"\.{2,}", ".", name).strip("._-")[:128].rstrip("._-")
    return name or "model"


def model_recipe(path: Path, name: str | None = None) -> LoadedRecipe:
    """The default recipe of one ONNX file (``trtforge build model.onnx``), as if written beside it."""
    if path.is_dir():
        raise RecipeError(f"{path}: is a directory, not an ONNX model", hint=None)
    if not path.is_file():
        raise RecipeError(f"{path}: model file not found", hint="check the path")
    chosen = name if name is not None else name_from_stem(path.stem)
    text = f"name: {json.dumps(chosen)}\nmodel: {{onnx: {json.dumps(path.name)}}}\n"
    shown = f"{path} (--name)" if name is not None else str(path)
    recipe = parse_recipe(text, shown)
    # absolute(), not resolve(): the model is looked up by this file name beside it, links included
    return LoadedRecipe(recipe=recipe, path=path.absolute(), shown=str(path), text=text)


def parse_recipe(text: str, shown: str = "<recipe>") -> Recipe:
    """Validate recipe text; ``shown`` names the source in error messages."""
    data = load_yaml(text, shown)
    if not isinstance(data, dict):
        raise RecipeError(f"{shown}:1: a recipe is a mapping of fields (name, model, profiles, ...)")
    return validate_yaml(Recipe, data, text, shown)


def deny_file_path(loaded: LoadedRecipe) -> Path | None:
    """Where the recipe's sidecar is (relative to the recipe, absolute, ``~`` or ``${VAR}``)."""
    value = loaded.recipe.tactics.deny_file
    return None if value is None else loaded.resolve_path(value, "tactics", "deny_file")


def with_deny_file(loaded: LoadedRecipe) -> LoadedRecipe:
    """The recipe with its sidecar's entries appended to the inline ones (sidecar read and checked).

    The build key and the artifact record use this effective recipe, so an edit to the sidecar
    is a different build, and where the entries were written does not matter.
    """
    path = deny_file_path(loaded)
    if path is None:
        return loaded
    text = read_deny_text(path, str(path))
    extra = parse_deny_file(text, str(path))
    merged = [*loaded.recipe.tactics.deny, *extra]
    tactics = loaded.recipe.tactics.model_copy(update={"deny": merged, "deny_file": None})
    recipe = loaded.recipe.model_copy(update={"tactics": tactics})
    written = loaded.recipe.tactics.deny_file
    return loaded.model_copy(update={"recipe": recipe, "sidecar": (written, text)})


def refit_mode(recipe: Mapping[str, Any]) -> str:
    """The refit mode a recorded recipe asked for (``refit:`` at the top or under ``build:``)."""
    value = recipe.get("refit", (recipe.get("build") or {}).get("refit", "none"))
    if isinstance(value, Mapping):
        value = value.get("mode", "none")
    return str(value or "none")
