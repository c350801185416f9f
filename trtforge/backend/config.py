"""Recipe -> real IBuilderConfig (and network flags), driven by one table of rules.

Each rule reads recipe fields, applies them with the documented builder call, and returns
what the config reads back (``get_flag``, ``get_tactic_sources``, ...) under a settings key;
the settings are recorded on the artifact. Options the recipe leaves at ``None`` keep the
backend's default and are recorded as that default, so the artifact says what was used.
Whether an option exists for the backend is decided earlier, by ``capabilities.check_recipe``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from trtforge.rules.recipe import Recipe

MIB = 1 << 20
KIB = 1 << 10

# A rule: (tensorrt module, builder config, recipe) -> (settings key, read-back value) or None.
ConfigRule = Callable[[ModuleType, Any, Recipe], "tuple[str, Any] | None"]

# refit mode -> builder flags. strip_weights: "weight-stripped engine" = STRIP_PLAN, refitted
# later from the same ONNX weights, hence REFIT_IDENTICAL (TensorRT Developer Guide,
# "Weight-Stripped Engine Generation").
REFIT_FLAGS: dict[str, tuple[str, ...]] = {
    "none": (),
    "refittable": ("REFIT",),
    "refit_identical": ("REFIT_IDENTICAL",),
    "strip_weights": ("STRIP_PLAN", "REFIT_IDENTICAL"),
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


def _precision(trt: ModuleType, config: Any, recipe: Recipe) -> None:
    precision = recipe.precision
    _set_flags(trt, config, [name.upper() for name in precision.weak_flags()])
    if precision.tf32 is True:
        config.set_flag(trt.BuilderFlag.TF32)
    elif precision.tf32 is False:
        config.clear_flag(trt.BuilderFlag.TF32)


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
)


def network_flags(trt: ModuleType, recipe: Recipe) -> int:
    """Flags for ``create_network``: STRONGLY_TYPED when the recipe asks for it."""
    if recipe.precision.strongly_typed:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def flags_set(trt: ModuleType, config: Any) -> list[str]:
    """Every BuilderFlag the config has on, read back from the config."""
    return sorted(name for name, member in _enum_members(trt.BuilderFlag).items() if config.get_flag(member))


def make_config(trt: ModuleType, builder: Any, network: Any, recipe: Recipe) -> tuple[Any, dict[str, Any]]:
    """A real IBuilderConfig for the recipe, and the settings it ended up with."""
    config = builder.create_builder_config()
    settings: dict[str, Any] = {}
    for rule in CONFIG_RULES:
        applied = rule(trt, config, recipe)
        if applied is not None:
            settings[applied[0]] = applied[1]
    for profile_spec in recipe.profiles:
        profile = builder.create_optimization_profile()
        for name, shapes in profile_spec.items():
            profile.set_shape(name, shapes.min, shapes.opt, shapes.max)
        config.add_optimization_profile(profile)
    settings["profiles"] = len(recipe.profiles)
    settings["flags"] = flags_set(trt, config)
    settings["strongly_typed"] = bool(network.get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    return config, settings
