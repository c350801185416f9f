"""Recipe -> real IBuilderConfig (and network flags), driven by one table of rules.

Each rule reads recipe fields, applies them with the documented builder call, and returns
what the config reads back (``get_flag``, ``get_tactic_sources``, ...) under a settings key;
the settings are recorded on the artifact. Options the recipe leaves at ``None`` keep the
backend's default and are recorded as that default, so the artifact says what was used.
Whether an option exists for the backend is decided earlier, by ``capabilities.check_recipe``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from trtforge.core.errors import UnsupportedOptionError
from trtforge.rules.recipe import Recipe, field_value

MIB = 1 << 20
KIB = 1 << 10

# A rule: (tensorrt module, builder config, recipe) -> (settings key, read-back value), several of
# them as a dict, or None.
ConfigRule = Callable[[ModuleType, Any, Recipe], "tuple[str, Any] | dict[str, Any] | None"]

# refit mode -> builder flags. strip_weights: "weight-stripped engine" = STRIP_PLAN, refitted
# later from the same ONNX weights, hence REFIT_IDENTICAL (TensorRT Developer Guide,
# "Weight-Stripped Engine Generation").
REFIT_FLAGS: dict[str, tuple[str, ...]] = {
    "none": (),
    "refittable": ("REFIT",),
    "refit_identical": ("REFIT_IDENTICAL",),
    "strip_weights": ("STRIP_PLAN", "REFIT_IDENTICAL"),
    # trtexec --stripAllWeights: "--refit and --stripWeights": every weight refittable, all stripped.
    "strip_all_weights": ("STRIP_PLAN", "REFIT"),
}
TACTIC_SOURCE_ENUM: dict[str, str] = {
    "cublas": "CUBLAS",
    "cublas_lt": "CUBLAS_LT",
    "cudnn": "CUDNN",
    "edge_mask_convolutions": "EDGE_MASK_CONVOLUTIONS",
    "jit_convolutions": "JIT_CONVOLUTIONS",
}


def _enum_members(enum_type: Any) -> dict[str, Any]:
    return dict(enum_type.__members__)


def _set_flags(trt: ModuleType, config: Any, names: tuple[str, ...] | list[str]) -> None:
    for name in names:
        config.set_flag(getattr(trt.BuilderFlag, name))


def _optimization_level(trt: ModuleType, config: Any, recipe: Recipe) -> tuple[str, Any]:
    config.builder_optimization_level = recipe.build.optimization_level
    return "optimization_level", config.builder_optimization_level


def _pool(pool: str, field: str, unit: int) -> ConfigRule:
    def rule(trt: ModuleType, config: Any, recipe: Recipe) -> tuple[str, Any] | None:
        value = getattr(recipe.build, field)
        if value is None:
            return None
        pool_type = getattr(trt.MemoryPoolType, pool)
        config.set_memory_pool_limit(pool_type, value * unit)
        return field, config.get_memory_pool_limit(pool_type) // unit

    rule.__name__ = f"_pool_{pool.lower()}"
    return rule


def _precision(trt: ModuleType, config: Any, recipe: Recipe) -> tuple[str, Any] | None:
    precision = recipe.precision
    _set_flags(trt, config, [name.upper() for name in precision.weak_flags()])
    if precision.tf32 is True:
        config.set_flag(trt.BuilderFlag.TF32)
    elif precision.tf32 is False:
        config.clear_flag(trt.BuilderFlag.TF32)
    if precision.constraints in ("prefer", "obey"):
        config.set_flag(getattr(trt.BuilderFlag, f"{precision.constraints.upper()}_PRECISION_CONSTRAINTS"))
        return "precision.constraints", precision.constraints
    return None


def _preview_features(trt: ModuleType, config: Any, recipe: Recipe) -> tuple[str, Any] | None:
    wanted = recipe.build.preview_features
    if not wanted:
        return None
    for name, on in wanted.items():
        config.set_preview_feature(getattr(trt.PreviewFeature, name.upper()), on)
    read = {name: bool(config.get_preview_feature(getattr(trt.PreviewFeature, name.upper()))) for name in wanted}
    return "build.preview_features", read




def _refit(trt: ModuleType, config: Any, recipe: Recipe) -> tuple[str, Any]:
    _set_flags(trt, config, REFIT_FLAGS[recipe.refit])
    return "refit", recipe.refit


def _tactic_sources(trt: ModuleType, config: Any, recipe: Recipe) -> tuple[str, Any]:
    if recipe.tactics.sources is not None:
        mask = 0
        for name in recipe.tactics.sources:
            mask |= 1 << int(getattr(trt.TacticSource, TACTIC_SOURCE_ENUM[name]))
        config.set_tactic_sources(mask)
    applied = config.get_tactic_sources()
    by_enum = {v: k for k, v in TACTIC_SOURCE_ENUM.items()}
    names = [
        by_enum.get(name, name.lower())
        for name, member in _enum_members(trt.TacticSource).items()
        if applied & (1 << int(member))
    ]
    return "tactic_sources", sorted(names)


def _hardware_compatibility(trt: ModuleType, config: Any, recipe: Recipe) -> tuple[str, Any] | None:
    level = recipe.compatibility.hardware
    if level == "none":
        return None
    config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level.upper())
    return "hardware_compatibility", config.hardware_compatibility_level.name.lower()


def _version_compatibility(trt: ModuleType, config: Any, recipe: Recipe) -> tuple[str, Any] | None:
    compat = recipe.compatibility
    if compat.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if compat.exclude_lean_runtime:
        config.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)
    return None


def compute_capability_text(member_name: str) -> str:
    """'SM86' -> '8.6', 'SM120' -> '12.0' (TensorRT-RTX ComputeCapability names)."""
    digits = member_name.removeprefix("SM")
    return f"{digits[:-1]}.{digits[-1]}"


def _compute_capabilities(trt: ModuleType, config: Any, recipe: Recipe) -> tuple[str, Any] | None:
    wanted = recipe.compatibility.compute_capabilities
    if wanted is None:
        return None
    by_text = {
        compute_capability_text(name): member
        for name, member in _enum_members(trt.ComputeCapability).items()
        if name.startswith("SM")
    }
    config.num_compute_capabilities = len(wanted)
    for index, cc in enumerate(wanted):
        config.set_compute_capability(by_text[cc], index)
    read_back = [
        compute_capability_text(config.get_compute_capability(i).name) for i in range(config.num_compute_capabilities)
    ]
    return "compute_capabilities", read_back


def _max_aux_streams(trt: ModuleType, config: Any, recipe: Recipe) -> tuple[str, Any] | None:
    if recipe.build.max_aux_streams is None:
        return None
    config.max_aux_streams = recipe.build.max_aux_streams
    return "max_aux_streams", config.max_aux_streams


def _tiling(trt: ModuleType, config: Any, recipe: Recipe) -> tuple[str, Any] | None:
    level = recipe.build.tiling_optimization_level
    if level is None:
        return None
    config.tiling_optimization_level = getattr(trt.TilingOptimizationLevel, level.upper())
    return "tiling_optimization_level", config.tiling_optimization_level.name.lower()


def _timing_cache_policy(trt: ModuleType, config: Any, recipe: Recipe) -> tuple[str, Any]:
    if recipe.build.timing_cache == "off":
        config.set_flag(trt.BuilderFlag.DISABLE_TIMING_CACHE)
    return "timing_cache", recipe.build.timing_cache


# -- fields that map to one builder-config call each, as data -----------------------------------

SettingKind = Literal["flag", "flag_off", "attribute", "enum_attribute", "pool"]


@dataclass(frozen=True)
class FieldSetting:
    """One recipe field -> one IBuilderConfig call. ``api`` names what it needs of the backend
    ("BuilderFlag.X", "IBuilderConfig.attr", "MemoryPoolType.X"), checked before a build.

    flag: true sets the flag; flag_off: false sets it (a field saying "use X" for a flag saying
    "disable X"); attribute: the value times ``scale``; enum_attribute: the member of ``enum`` named
    by the value in upper case; pool: a memory pool limit of the value times ``scale`` bytes.
    """

    field: str
    api: str
    kind: SettingKind
    scale: int = 1
    enum: str = ""

    @property
    def name(self) -> str:
        return self.api.split(".", 1)[1]

    def apply(self, trt: ModuleType, config: Any, value: Any) -> Any:
        """Set ``value`` (not None) on ``config``; return what the config reads back, in recipe units."""
        if self.kind in ("flag", "flag_off"):
            member = getattr(trt.BuilderFlag, self.name)
            on = value if self.kind == "flag" else not value
            config.set_flag(member) if on else config.clear_flag(member)
            read = bool(config.get_flag(member))
            return read if self.kind == "flag" else not read
        if self.kind == "pool":
            pool = getattr(trt.MemoryPoolType, self.name)
            config.set_memory_pool_limit(pool, value * self.scale)
            return config.get_memory_pool_limit(pool) // self.scale
        if self.kind == "enum_attribute":
            setattr(config, self.name, getattr(getattr(trt, self.enum), str(value).upper()))
            return getattr(config, self.name).name.lower()
        setattr(config, self.name, value * self.scale)
        return getattr(config, self.name) // self.scale


FIELD_SETTINGS: tuple[FieldSetting, ...] = (
    FieldSetting("tactics.timing_iterations", "IBuilderConfig.avg_timing_iterations", "attribute"),
    FieldSetting("tactics.max_tactics", "IBuilderConfig.max_num_tactics", "attribute"),
    FieldSetting("build.error_on_timing_cache_miss", "BuilderFlag.ERROR_ON_TIMING_CACHE_MISS", "flag"),
    FieldSetting("build.compilation_cache", "BuilderFlag.DISABLE_COMPILATION_CACHE", "flag_off"),
    FieldSetting("build.sparse_weights", "BuilderFlag.SPARSE_WEIGHTS", "flag"),
    FieldSetting("build.weight_streaming", "BuilderFlag.WEIGHT_STREAMING", "flag"),
    FieldSetting("build.distributive_independence", "BuilderFlag.DISTRIBUTIVE_INDEPENDENCE", "flag"),
    FieldSetting("build.tiling_l2_limit_kib", "IBuilderConfig.l2_limit_for_tiling", "attribute", scale=KIB),
    FieldSetting(
        "build.profiling_verbosity", "IBuilderConfig.profiling_verbosity", "enum_attribute", enum="ProfilingVerbosity"
    ),
    FieldSetting("io.direct", "BuilderFlag.DIRECT_IO", "flag"),
    FieldSetting(
        "compatibility.runtime_platform", "IBuilderConfig.runtime_platform", "enum_attribute", enum="RuntimePlatform"
    ),
    FieldSetting("build.dla.core", "IBuilderConfig.DLA_core", "attribute"),
    FieldSetting("build.dla.gpu_fallback", "BuilderFlag.GPU_FALLBACK", "flag"),
    FieldSetting("build.dla.sram_mib", "MemoryPoolType.DLA_MANAGED_SRAM", "pool", scale=MIB),
    FieldSetting("build.dla.local_dram_mib", "MemoryPoolType.DLA_LOCAL_DRAM", "pool", scale=MIB),
    FieldSetting("build.dla.global_dram_mib", "MemoryPoolType.DLA_GLOBAL_DRAM", "pool", scale=MIB),
)
# The API each other new field needs (applied by the functions below or in backend/network_settings.py).
FIELD_API: dict[str, tuple[str, ...]] = {
    **{setting.field: (setting.api,) for setting in FIELD_SETTINGS},
    "build.dla.core": ("IBuilderConfig.DLA_core", "IBuilderConfig.default_device_type", "DeviceType.DLA"),
    "precision.int4": ("BuilderFlag.INT4",),
    "precision.constraints": ("BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "BuilderFlag.PREFER_PRECISION_CONSTRAINTS"),
    "precision.calibration": ("IBuilderConfig.int8_calibrator", "IInt8EntropyCalibrator2"),
    "precision.calibration.profile": ("IBuilderConfig.set_calibration_profile",),
    "build.preview_features": ("IBuilderConfig.set_preview_feature",),
    "refit: strip_all_weights": ("BuilderFlag.STRIP_PLAN", "BuilderFlag.REFIT"),
    "plugins: dynamic": ("IPluginRegistry.load_library", "IPluginRegistry.deregister_library"),
    "plugins.serialize": ("IBuilderConfig.plugins_to_serialize",),
}


def _unset(setting: FieldSetting, value: Any) -> bool:
    """The field leaves the backend's default (nothing set, nothing recorded)."""
    if value is None or value == "same_as_build":
        return True
    return value is False and setting.kind != "flag_off"


def _field_settings(trt: ModuleType, config: Any, recipe: Recipe) -> dict[str, Any]:
    applied: dict[str, Any] = {}
    for setting in FIELD_SETTINGS:
        value = field_value(recipe, setting.field)
        if _unset(setting, value):
            continue
        read = setting.apply(trt, config, value)
        if read != value:
            raise UnsupportedOptionError(
                f"recipe option {setting.field}: {value} did not take: the builder config reads back {read}",
                hint=f"the installed backend refuses it (its build log says why); drop {setting.field}",
            )
        applied[setting.field] = read
    if recipe.build.dla.core is not None:
        config.default_device_type = trt.DeviceType.DLA  # as trtexec --useDLACore does
    return applied


CONFIG_RULES: tuple[ConfigRule, ...] = (
    _optimization_level,
    _pool("WORKSPACE", "workspace_mib", MIB),
    _pool("TACTIC_DRAM", "tactic_dram_mib", MIB),
    _pool("TACTIC_SHARED_MEMORY", "tactic_shared_memory_kib", KIB),
    _precision,
    _refit,
    _tactic_sources,
    _hardware_compatibility,
    _version_compatibility,
    _compute_capabilities,
    _max_aux_streams,
    _tiling,
    _timing_cache_policy,
    _field_settings,
    _preview_features,
)


def network_flags(trt: ModuleType, recipe: Recipe) -> int:
    """Flags for ``create_network``: STRONGLY_TYPED when the recipe asks for it."""
    if recipe.precision.strongly_typed:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def flags_set(trt: ModuleType, config: Any) -> list[str]:
    """Every BuilderFlag the config has on, read back from the config."""
    return sorted(name for name, member in _enum_members(trt.BuilderFlag).items() if config.get_flag(member))


def make_config(
    trt: ModuleType, builder: Any, network: Any, recipe: Recipe, *, calibration_cache: bytes | None = None
) -> tuple[Any, dict[str, Any]]:
    """A real IBuilderConfig for the recipe, and the settings it ended up with (``network`` may be
    None: the config does not depend on it; its strongly-typed flag is then not recorded here)."""
    config = builder.create_builder_config()
    settings: dict[str, Any] = {}
    for rule in CONFIG_RULES:
        applied = rule(trt, config, recipe)
        if isinstance(applied, dict):
            settings.update(applied)
        elif applied is not None:
            settings[applied[0]] = applied[1]
    profiles = []
    for profile_spec in recipe.profiles:
        profile = builder.create_optimization_profile()
        for name, shapes in profile_spec.items():
            profile.set_shape(name, shapes.min, shapes.opt, shapes.max)
        config.add_optimization_profile(profile)
        profiles.append(profile)
    if recipe.precision.calibration is not None:
        settings.update(_calibration(trt, config, recipe, profiles, calibration_cache))
    if recipe.build.config:
        from trtforge.backend.config_overrides import apply_overrides

        settings["build.config"] = apply_overrides(trt, config, recipe.build.config)
    settings["profiles"] = len(recipe.profiles)
    settings["flags"] = flags_set(trt, config)
    if network is not None:
        settings["strongly_typed"] = bool(network.get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    return config, settings


def _calibration(
    trt: ModuleType, config: Any, recipe: Recipe, profiles: list[Any], cache: bytes | None
) -> dict[str, Any]:
    """INT8 calibration from the recipe's cache (TensorRT 10): a calibrator that only reads the cache,
    as trtexec --calib does without data. The build reads the bytes (keyed by resolution)."""
    calibration = recipe.precision.calibration
    assert calibration is not None
    if cache is None:
        raise UnsupportedOptionError("precision.calibration: the build was given no calibration cache")
    config.int8_calibrator = cache_calibrator(trt, cache)
    applied: dict[str, Any] = {"precision.calibration": {"sha256": calibration.sha256}}
    if calibration.profile is not None:
        config.set_calibration_profile(profiles[calibration.profile])
        applied["precision.calibration"]["profile"] = calibration.profile
    return applied


def cache_calibrator(trt: ModuleType, cache: bytes) -> Any:
    """An IInt8EntropyCalibrator2 that hands TensorRT the cache and no batches."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

    return CacheCalibrator()


# -- what a recipe needs of the installed backend's API, checked before a build --------------------


def has_api(trt: ModuleType, api: str) -> bool:
    """Whether ``Class.member`` exists in the module (``Class.member=``: and can be assigned)."""
    owner_name, _, member = api.partition(".")
    settable = member.endswith("=")
    member = member.rstrip("=")
    owner = getattr(trt, owner_name, None)
    if owner is None or not member:
        return owner is not None
    found = getattr(owner, member, None)
    if found is None:
        return False
    return not settable or getattr(found, "fset", None) is not None


def api_needed(option: str) -> tuple[str, ...]:
    """The API names a requested option (capabilities.requested_options) needs."""
    from trtforge.backend.network_settings import NETWORK_API

    table = {**FIELD_API, **NETWORK_API}
    if option.startswith("build.preview_features: "):
        return ("PreviewFeature." + option.split(": ", 1)[1].upper(),)
    return table.get(option) or table.get(option.split(":")[0]) or ()


def check_api(trt: ModuleType, recipe: Recipe, label: str) -> None:
    """Refuse (exit 2), before any work, a recipe option whose API the imported backend lacks.

    The capability table decides from versions without importing TensorRT; this is the check
    against the module itself (a release the table does not know yet, a preview feature by name).
    """
    from trtforge.rules.capabilities import requested_options

    asked = requested_options(recipe)
    asked += [f"build.preview_features: {name}" for name in recipe.build.preview_features]
    for option in dict.fromkeys(asked):
        missing = [api for api in api_needed(option) if not has_api(trt, api)]
        if missing:
            raise UnsupportedOptionError(
                f"recipe option {option} is not available: {label} has no {', '.join(m.rstrip('=') for m in missing)}",
                hint=f"drop {option.split(':')[0]}, or build with a backend that has it",
            )
