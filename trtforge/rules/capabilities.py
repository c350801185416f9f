"""Which recipe options exist for a (flavor, version): the capability table, as data.

The table decides before any build (and before TensorRT is imported) whether a recipe can be
built with the installed backend, and says why not in one line. Version facts come from
NVIDIA's documentation, cited next to each entry. trtforge supports TensorRT >= 10.0 and
TensorRT-RTX >= 1.0; entries older than that floor are listed from the floor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from trtforge.core.errors import UnsupportedOptionError
from trtforge.rules.builder_options import DLAOptions, ParserFlags, config_items
from trtforge.rules.denylist import DenyEntry, tactic_id_of
from trtforge.rules.flavors import (
    RTX_COMPUTE_CAPABILITIES,
    BackendInfo,
    Flavor,
    Version,
    flavor_name,
    release,
    runtime_releases_text,
)
from trtforge.rules.recipe import LIBRARY_TACTIC_SOURCES, WEAK_TYPING_FLAGS, Recipe, default_value, field_value

if TYPE_CHECKING:
    from trtforge.rules.target import RuntimeTarget

TENSORRT_FLOOR = "10.0"
TENSORRT_RTX_FLOOR = "1.0"


@dataclass(frozen=True)
class Availability:
    """When an option exists in one flavor: [since, removed), maybe deprecated, maybe GPU-only.

    ``cpu_build_fails``: a CPU-only build cannot complete the option (observed), unless the recipe
    also asks for ``cpu_build_unless`` (the rule is per combination of options).
    """

    since: str
    removed: str | None = None
    deprecated: str | None = None
    cpu_build_fails: bool = False
    cpu_build_unless: str | None = None

    def state(self, version: Version) -> str:
        if version < release(self.since):
            return "missing"
        if self.removed is not None and version >= release(self.removed):
            return "removed"
        if self.deprecated is not None and version >= release(self.deprecated):
            return "deprecated"
        return "yes"


@dataclass(frozen=True)
class OptionRule:
    """One recipe option (``field`` or ``field: value``) and where it is available."""

    option: str
    tensorrt: Availability | None
    tensorrt_rtx: Availability | None
    hint: str
    note: str = ""
    rtx_hint: str | None = None  # when TensorRT-RTX needs different advice
    cpu_hint: str = ""  # the way out when a CPU-only build cannot complete the option

    def availability(self, flavor: Flavor) -> Availability | None:
        return self.tensorrt if flavor == "tensorrt" else self.tensorrt_rtx

    def hint_for(self, flavor: Flavor) -> str:
        return self.rtx_hint if flavor == "tensorrt_rtx" and self.rtx_hint is not None else self.hint


_WEAK_HINT = (
    "TensorRT 11 builds strongly typed networks only: set precision.strongly_typed: true and put "
    "the precisions in the ONNX model (Cast / QuantizeLinear-DequantizeLinear), e.g. with ModelOpt"
)
_RTX_WEAK_HINT = (
    "TensorRT-RTX networks are always strongly typed: remove the flag and put the precisions in the "
    "ONNX model (Cast / QuantizeLinear-DequantizeLinear)"
)
_LIBRARY_HINT = "remove it from tactics.sources; edge_mask_convolutions and jit_convolutions remain"
_NO_DLA_HINT = "TensorRT-RTX builds for RTX GPUs, which have no DLA: drop the DLA options"
_RTX_NO_TIMING_CACHE = "TensorRT-RTX has no timing cache (its timing-cache calls are no-ops): drop the field"
_REFIT_CPU_HINT = "build on a machine with an NVIDIA GPU, or use refit: none"

# The table. Sources:
# [TRT-11-MIG] TensorRT 11.0 migration guide / release notes: weak typing (FP16/BF16/INT8/FP8
#   builder flags, precision constraints, INT8 calibrators) and IAlgorithmSelector removed;
#   cuBLAS/cuBLASLt/cuDNN tactic sources removed.
# [TRT-10.0-RN] TensorRT 10.0 release notes: cuBLAS, cuBLASLt and cuDNN tactic sources
#   deprecated; weight-stripped engines (BuilderFlag.STRIP_PLAN, REFIT_IDENTICAL) added;
#   IProgressMonitor added.
# [TRT-8.6-RN] TensorRT 8.6 release notes: hardware compatibility (AMPERE_PLUS) and version
#   compatibility (VERSION_COMPATIBLE, lean runtime), setMaxAuxStreams.
# [TRT-10.8-RN] TensorRT 10.8 release notes: tiling optimization (tiling_optimization_level,
#   l2_limit_for_tiling); editable timing cache (BuilderFlag.EDITABLE_TIMING_CACHE).
# [TRT-10.9-RN] TensorRT 10.9 release notes: HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY.
# [TRT-DG-HWC] TensorRT Developer Guide, "Hardware Compatibility": AMPERE_PLUS disables
#   cuBLAS/cuBLASLt/cuDNN tactics (enforced in recipe validation).
# [TRT-API] The Python API of each NVIDIA/TensorRT release tag (python/src: IBuilderConfig attributes,
#   BuilderFlag / PreviewFeature / OnnxParserFlag members): max_num_tactics 10.4, runtime_platform
#   10.2, l2_limit_for_tiling 10.8, INT4 10.1, DISTRIBUTIVE_INDEPENDENCE and
#   mark_unfused_tensors_as_debug_tensors 10.12, decomposable attentions 10.14, ENABLE_PLUGIN_OVERRIDE
#   10.15, ADJUST_FOR_DLA 10.16, ENABLE_UINT8_AND_ASYMMETRIC_QUANTIZATION_DLA 10.11.
# [TRT-SAMPLE] trtexec's help (samples/common/sampleOptions.cpp) per release: tests/data/trtexec_build_flags.txt.
# [RTX-DG] TensorRT-RTX documentation: ahead-of-time builds for a list of compute capabilities
#   (IBuilderConfig.set_compute_capability); no hardware compatibility level (setting one only
#   warns and reads back NONE, observed on 1.7); tactic sources EDGE_MASK_CONVOLUTIONS and
#   JIT_CONVOLUTIONS only; timing-cache calls are deprecated no-ops; networks are strongly typed.
RULES: tuple[OptionRule, ...] = (
    OptionRule(
        "precision.strongly_typed: true",
        Availability(TENSORRT_FLOOR),
        Availability(TENSORRT_RTX_FLOOR),
        hint="drop precision.strongly_typed",
    ),
    OptionRule(
        "precision.strongly_typed: false",
        Availability(TENSORRT_FLOOR, removed="11.0"),  # [TRT-11-MIG]
        None,  # [RTX-DG]
        hint=_WEAK_HINT,
        note="weakly typed networks",
        rtx_hint=_RTX_WEAK_HINT,
    ),
    OptionRule("precision.tf32", Availability(TENSORRT_FLOOR), Availability(TENSORRT_RTX_FLOOR), hint=""),
    *(
        OptionRule(
            f"precision.{flag}",
            Availability("10.1" if flag == "int4" else TENSORRT_FLOOR, removed="11.0"),  # [TRT-11-MIG] [TRT-API]
            None,  # [RTX-DG]: BuilderFlag has no FP16/BF16/INT8/FP8/INT4 in TensorRT-RTX
            hint=_WEAK_HINT,
            note="weak typing",
            rtx_hint=_RTX_WEAK_HINT,
        )
        for flag in WEAK_TYPING_FLAGS
    ),
    *(
        OptionRule(
            f"precision.{field}",
            Availability(TENSORRT_FLOOR, removed="11.0"),  # [TRT-11-MIG]: precision constraints, calibrators
            None,  # [RTX-DG] strongly typed; ILayer has no precision / set_output_type, no int8_calibrator (1.7)
            hint=_WEAK_HINT,
            note="weak typing",
            rtx_hint=_RTX_WEAK_HINT,
        )
        for field in ("constraints", "layer_precisions", "layer_output_types", "calibration")
    ),
    OptionRule(
        "io.<tensor>.dtype",
        Availability(TENSORRT_FLOOR, removed="11.0"),  # [TRT-11-MIG]: I/O types come from a strongly typed model
        None,  # [RTX-DG]: ITensor.dtype is read-only in TensorRT-RTX (1.7)
        hint="drop io.<tensor>.dtype: " + _WEAK_HINT,
        note="weak typing",
        rtx_hint="drop io.<tensor>.dtype: " + _RTX_WEAK_HINT,
    ),
    OptionRule("io.<tensor>.formats", Availability(TENSORRT_FLOOR), Availability(TENSORRT_RTX_FLOOR), hint=""),
    OptionRule(
        "io.direct",
        Availability(TENSORRT_FLOOR, deprecated="10.7"),  # [TRT-SAMPLE]: "[Deprecated] Avoid reformatting" from 10.7
        Availability(TENSORRT_RTX_FLOOR),
        hint="",
    ),
    *(
        OptionRule(
            f"model.parser.{field}",
            Availability(since),  # [TRT-API]: OnnxParserFlag members
            Availability(TENSORRT_RTX_FLOOR) if rtx else None,  # observed 1.7: OnnxParserFlag has every member
            hint=f"upgrade to TensorRT >= {since} or drop model.parser.{field}",
            note="DLA" if not rtx else "",
            rtx_hint=_NO_DLA_HINT,
        )
        for field, since, rtx in (
            ("native_instancenorm", TENSORRT_FLOOR, True),
            ("plugin_override", "10.15", True),
            ("uint8_asymmetric_quantization_dla", "10.11", False),
            ("report_capability_dla", "10.16", False),
            ("adjust_for_dla", "10.16", False),
        )
    ),
    *(
        OptionRule(
            f"tactics.sources: {source}",
            Availability(TENSORRT_FLOOR, removed="11.0", deprecated="10.0"),  # [TRT-10.0-RN] [TRT-11-MIG]
            None,  # [RTX-DG]
            hint=_LIBRARY_HINT,
        )
        for source in LIBRARY_TACTIC_SOURCES
    ),
    *(
        OptionRule(
            f"tactics.sources: {source}",
            Availability(TENSORRT_FLOOR),
            Availability(TENSORRT_RTX_FLOOR),
            hint="",
        )
        for source in ("edge_mask_convolutions", "jit_convolutions")
    ),
    OptionRule(
        "refit: refittable",
        Availability(TENSORRT_FLOOR),
        Availability(TENSORRT_RTX_FLOOR, cpu_build_fails=True),  # observed 1.7: CUDA needed to build
        hint="build on a machine with an NVIDIA GPU, or use refit: none",
        cpu_hint=_REFIT_CPU_HINT,
    ),
    OptionRule(
        "refit: refit_identical",
        Availability("10.0"),  # [TRT-10.0-RN]
        Availability(TENSORRT_RTX_FLOOR, cpu_build_fails=True),  # observed 1.7: CUDA needed to build
        hint="use refit: refittable, or upgrade to TensorRT >= 10.0",
        cpu_hint=_REFIT_CPU_HINT,
    ),
    OptionRule(
        "refit: strip_weights",
        Availability("10.0"),  # [TRT-10.0-RN]
        Availability(TENSORRT_RTX_FLOOR, cpu_build_fails=True),  # observed 1.7: CUDA needed to build
        hint="use refit: refittable, or upgrade to TensorRT >= 10.0",
        cpu_hint=_REFIT_CPU_HINT,
    ),
    OptionRule(
        "refit: strip_all_weights",
        Availability("10.0"),  # [TRT-10.0-RN]: STRIP_PLAN with REFIT
        Availability(TENSORRT_RTX_FLOOR, cpu_build_fails=True),
        hint="use refit: strip_weights or refittable",
    ),
    OptionRule(
        "compatibility.runtime_platform: windows_amd64",
        Availability("10.2"),  # [TRT-API]: RuntimePlatform from 10.2; the build must run on Linux x86-64
        None,  # observed 1.7: setRuntimePlatform refuses WINDOWS_AMD64 ("This version of TensorRT does not support")
        hint="build on Windows for Windows, or with full TensorRT >= 10.2 on Linux x86-64",
        note="the engine runs on Windows x86-64 only",
    ),
    OptionRule(
        "compatibility.hardware: ampere_plus",
        Availability("8.6"),  # [TRT-8.6-RN]
        None,  # [RTX-DG]
        hint="TensorRT-RTX targets GPUs by compute capability: use compatibility.compute_capabilities",
    ),
    OptionRule(
        "compatibility.hardware: same_compute_capability",
        Availability("10.9"),  # [TRT-10.9-RN]
        None,  # [RTX-DG]
        hint="upgrade to TensorRT >= 10.9, use ampere_plus, or (TensorRT-RTX) compatibility.compute_capabilities",
    ),
    OptionRule(
        "compatibility.version_compatible",
        Availability("8.6"),  # [TRT-8.6-RN]
        # Observed 1.7.1 on a CPU-only machine: the build loads libnvinfer_lean.so.1 to embed it in
        # the plan, which the tensorrt-rtx wheel does not ship; with exclude_lean_runtime it builds.
        Availability(TENSORRT_RTX_FLOOR, cpu_build_fails=True, cpu_build_unless="compatibility.exclude_lean_runtime"),
        hint="drop compatibility.version_compatible",
        note="loading needs the lean runtime and engine_host_code_allowed",
        cpu_hint="add compatibility.exclude_lean_runtime: true, or drop compatibility.version_compatible "
        "(a TensorRT-RTX engine loads only in the release that built it either way)",
    ),
    OptionRule(
        "compatibility.exclude_lean_runtime",
        Availability("8.6"),  # [TRT-8.6-RN]
        Availability(TENSORRT_RTX_FLOOR),  # observed 1.7.1: builds on a CPU-only machine
        hint="drop compatibility.exclude_lean_runtime",
    ),
    OptionRule(
        "compatibility.compute_capabilities",
        None,  # full TensorRT builds for the GPU it runs on
        Availability(TENSORRT_RTX_FLOOR),  # [RTX-DG]
        hint="TensorRT builds for the GPU it runs on: drop the field (use compatibility.hardware to widen)",
    ),
    OptionRule("build.tactic_dram_mib", Availability(TENSORRT_FLOOR), Availability(TENSORRT_RTX_FLOOR), hint=""),
    OptionRule(
        "build.tactic_shared_memory_kib", Availability(TENSORRT_FLOOR), Availability(TENSORRT_RTX_FLOOR), hint=""
    ),
    OptionRule(
        "build.max_aux_streams",
        Availability("8.6"),  # [TRT-8.6-RN]
        Availability(TENSORRT_RTX_FLOOR),
        hint="drop build.max_aux_streams",
    ),
    OptionRule(
        "build.tiling_optimization_level",
        Availability("10.8"),  # [TRT-10.8-RN]
        Availability(TENSORRT_RTX_FLOOR),
        hint="upgrade to TensorRT >= 10.8 or drop build.tiling_optimization_level",
    ),
    *(
        OptionRule(
            option,
            Availability(since),  # [TRT-API] (the first 10.x release whose Python API has it)
            Availability(TENSORRT_RTX_FLOOR) if rtx else None,
            hint=f"upgrade to TensorRT >= {since} or drop {option.split(':')[0]}" if since != TENSORRT_FLOOR else "",
            rtx_hint=rtx_hint,
        )
        for option, since, rtx, rtx_hint in (
            ("tactics.timing_iterations", TENSORRT_FLOOR, True, None),
            ("tactics.max_tactics", "10.4", True, None),
            ("build.profiling_verbosity", TENSORRT_FLOOR, True, None),
            ("build.sparse_weights", TENSORRT_FLOOR, True, None),
            ("build.weight_streaming", TENSORRT_FLOOR, True, None),
            ("build.debug_tensors", TENSORRT_FLOOR, True, None),
            ("build.debug_unfused_tensors", "10.12", True, None),
            ("build.distributive_independence", "10.12", True, None),
            ("build.tiling_l2_limit_kib", "10.8", True, None),
            ("build.preview_features", TENSORRT_FLOOR, True, None),
            ("build.config", TENSORRT_FLOOR, True, None),
            ("plugins: dynamic", TENSORRT_FLOOR, True, None),
            ("plugins: static", TENSORRT_FLOOR, True, None),
            ("build.error_on_timing_cache_miss", TENSORRT_FLOOR, False, _RTX_NO_TIMING_CACHE),
            ("build.compilation_cache", TENSORRT_FLOOR, False, _RTX_NO_TIMING_CACHE),
            (
                "build.decomposable_attentions",
                "10.14",
                False,
                "TensorRT-RTX 1.7 has no attention layer API (IAttention): drop build.decomposable_attentions",
            ),
        )
    ),
    OptionRule(
        "plugins.serialize",
        Availability(TENSORRT_FLOOR),  # [TRT-API] IBuilderConfig.plugins_to_serialize (version-compatible plans)
        Availability(TENSORRT_RTX_FLOOR, cpu_build_fails=True),  # version_compatible: needs the lean runtime
        hint="drop plugins[].serialize",
    ),
    *(
        OptionRule(
            f"build.preview_features: {name}",
            Availability(since, removed=removed),  # [TRT-API] PreviewFeature members
            Availability(TENSORRT_RTX_FLOOR) if rtx else None,  # observed 1.7
            hint=f"TensorRT {since}" + (f" to {removed}" if removed else "") + f" has {name}; drop it",
        )
        for name, since, removed, rtx in (
            ("profile_sharing_0806", TENSORRT_FLOOR, "11.0", False),
            ("aliased_plugin_io_10_03", "10.3", None, True),
            ("runtime_activation_resize_10_10", "10.10", None, True),
            ("multidevice_runtime_10_16", "10.16", "11.0", False),
        )
    ),
    *(
        OptionRule(
            f"build.dla.{field}",
            Availability(TENSORRT_FLOOR),  # builds need a platform with DLA cores (Jetson, DRIVE)
            None,  # RTX GPUs have no DLA
            hint="",
            note="needs a DLA (Jetson, DRIVE)",
            rtx_hint=_NO_DLA_HINT,
        )
        for field in ("core", "gpu_fallback", "sram_mib", "local_dram_mib", "global_dram_mib", "layers")
    ),
)
_BY_OPTION = {rule.option: rule for rule in RULES}

# Backend features trtforge uses that are not recipe options (shown by `doctor`).
FEATURES: tuple[OptionRule, ...] = (
    OptionRule("progress monitor", Availability("10.0"), Availability(TENSORRT_RTX_FLOOR), hint=""),  # [TRT-10.0-RN]
    OptionRule(
        "timing cache", Availability(TENSORRT_FLOOR), None, hint="", note="TensorRT-RTX: deprecated no-op"
    ),  # [RTX-DG]
    OptionRule("editable timing cache", Availability("10.8"), None, hint=""),  # [TRT-10.8-RN]
    OptionRule("algorithm selector", Availability(TENSORRT_FLOOR, removed="11.0"), None, hint=""),  # [TRT-11-MIG]
)


def requested_options(recipe: Recipe) -> list[str]:
    """The options of the table a recipe asks for (non-default values only)."""
    asked: list[str] = []
    precision = recipe.precision
    if precision.strongly_typed is not None:
        asked.append(f"precision.strongly_typed: {'true' if precision.strongly_typed else 'false'}")
    if precision.tf32 is not None:
        asked.append("precision.tf32")
    asked += [f"precision.{flag}" for flag in precision.weak_flags()]
    asked += [f"tactics.sources: {source}" for source in recipe.tactics.sources or ()]
    if recipe.refit != "none":
        asked.append(f"refit: {recipe.refit}")
    compat = recipe.compatibility
    if compat.hardware != "none":
        asked.append(f"compatibility.hardware: {compat.hardware}")
    if compat.version_compatible:
        asked.append("compatibility.version_compatible")
    if compat.exclude_lean_runtime:
        asked.append("compatibility.exclude_lean_runtime")
    if compat.compute_capabilities is not None:
        asked.append("compatibility.compute_capabilities")
    build = recipe.build
    for name in ("tactic_dram_mib", "tactic_shared_memory_kib", "max_aux_streams", "tiling_optimization_level"):
        if getattr(build, name) is not None:
            asked.append(f"build.{name}")
    return asked + _added_options(recipe)


# Fields whose rule is named by their path, asked for when they hold anything but their default.
_PLAIN_FIELDS: tuple[str, ...] = (
    *(f"model.parser.{name}" for name in ParserFlags.model_fields),
    "precision.constraints",
    "precision.layer_precisions",
    "precision.layer_output_types",
    "precision.calibration",
    "io.direct",
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
    "build.config",
    *(f"build.dla.{name}" for name in DLAOptions.model_fields),
)


def _is_set(recipe: Recipe, path: str) -> bool:
    """The field holds something else than its default ("none" precision constraints are the default)."""
    value = field_value(recipe, path)
    return value != default_value(path) and value != "none"


def _added_options(recipe: Recipe) -> list[str]:
    asked = [path for path in _PLAIN_FIELDS if _is_set(recipe, path)]
    if recipe.compatibility.runtime_platform != "same_as_build":
        asked.append(f"compatibility.runtime_platform: {recipe.compatibility.runtime_platform}")
    tensors = [*recipe.io.inputs.values(), *recipe.io.outputs.values()]
    asked += [f"io.<tensor>.{part}" for part in ("dtype", "formats") if any(getattr(t, part) for t in tensors)]
    for name in recipe.build.preview_features:
        known = f"build.preview_features: {name}"
        asked.append(known if known in _BY_OPTION else "build.preview_features")
    asked += sorted({f"plugins: {plugin.load}" for plugin in recipe.plugins})
    if any(plugin.serialize for plugin in recipe.plugins):
        asked.append("plugins.serialize")
    return list(dict.fromkeys(asked))


def unchecked_options(recipe: Recipe) -> list[str]:
    """What only the imported backend can check (build.config's names and values, preview features
    the table does not know): a build checks them before it starts; `plan`, which imports no
    TensorRT, reports them as unchecked."""
    unchecked = [f"build.config.{key}" for key, _value in config_items(recipe.build.config)]
    unchecked += [
        f"build.preview_features.{name}"
        for name in recipe.build.preview_features
        if f"build.preview_features: {name}" not in _BY_OPTION
    ]
    return unchecked


def valid_tactic_sources(backend: BackendInfo) -> list[str]:
    version = release(backend.version)
    names = []
    for rule in RULES:
        if rule.option.startswith("tactics.sources: "):
            availability = rule.availability(backend.flavor)
            if availability is not None and availability.state(version) in ("yes", "deprecated"):
                names.append(rule.option.removeprefix("tactics.sources: "))
    return names


def _state(rule: OptionRule, backend: BackendInfo) -> str:
    availability = rule.availability(backend.flavor)
    return "never" if availability is None else availability.state(release(backend.version))


def check_recipe(recipe: Recipe, backend: BackendInfo) -> list[str]:
    """Refuse a recipe the backend cannot build (UnsupportedOptionError); return notes to show.

    Pure data: never imports TensorRT, so it runs on the cache-hit path too.
    """
    notes: list[str] = []
    for option in requested_options(recipe):
        rule = _BY_OPTION.get(option)
        if rule is None:  # a tactic source name no backend has (the recipe model accepts any string)
            raise UnsupportedOptionError(
                f"recipe option {option} is not a tactic source",
                hint=f"valid tactic sources for {backend.label}: {', '.join(valid_tactic_sources(backend))}",
            )
        state = _state(rule, backend)
        availability = rule.availability(backend.flavor)
        if availability is None or state in ("missing", "removed"):
            if availability is None:
                why = f"{backend.label} does not have it"
            elif state == "missing":
                why = f"it needs {flavor_name(backend.flavor)} >= {availability.since} (found {backend.label})"
            else:
                why = f"{backend.label} removed it (in {availability.removed})"
            hint = rule.hint_for(backend.flavor)
            if option.startswith("tactics.sources: "):
                hint = f"valid tactic sources for {backend.label}: {', '.join(valid_tactic_sources(backend))}"
            raise UnsupportedOptionError(f"recipe option {option} is not available: {why}", hint=hint or None)
        if state == "deprecated":
            notes.append(f"{option} is deprecated in {backend.label}")
    _check_compute_capabilities(recipe, backend)
    _check_weight_streaming(recipe, backend)
    check_enforceable(backend, recipe.tactics.deny)  # e.g. TensorRT-RTX: refused before any build
    if backend.flavor == "tensorrt_rtx" and "timing_cache" in recipe.build.model_fields_set:
        # Said only when the recipe asks for a cache explicitly; the default policy stays quiet.
        if recipe.build.timing_cache != "off":
            notes.append(f"{backend.label}: timing caches are no-ops; trtforge skips the timing-cache work")
    return notes


def _check_compute_capabilities(recipe: Recipe, backend: BackendInfo) -> None:
    wanted = recipe.compatibility.compute_capabilities
    if not wanted or backend.flavor != "tensorrt_rtx":
        return
    unknown = [cc for cc in wanted if cc not in RTX_COMPUTE_CAPABILITIES]
    if unknown:
        raise UnsupportedOptionError(
            f"recipe option compatibility.compute_capabilities: {', '.join(unknown)} is not a {backend.label} target",
            hint=f"valid compute capabilities: {', '.join(RTX_COMPUTE_CAPABILITIES)}"
            + ("; for Hopper (9.0) build with full TensorRT" if "9.0" in unknown else ""),
        )
    if recipe.refit == "refittable" and len(wanted) > 1:
        # Observed with TensorRT-RTX 1.7.1: a REFIT build for several targets stops in the kernel
        # generator (MyelinCheckException "CHECK(sm_vers_.size() == 1)"); one target gets past it.
        raise UnsupportedOptionError(
            f"refit: refittable: {backend.label} builds a refittable engine for one compute capability, "
            f"and this build targets {', '.join(wanted)}",
            hint="set compatibility.compute_capabilities to the one GPU generation it runs on, e.g. [8.6]",
        )


def _check_weight_streaming(recipe: Recipe, backend: BackendInfo) -> None:
    # TensorRT Developer Guide, "Weight Streaming": the network must be strongly typed. TensorRT 10
    # builds weakly typed networks unless asked; TensorRT 11 and TensorRT-RTX are always strongly typed.
    weak_by_default = backend.flavor == "tensorrt" and release(backend.version)[0] < 11
    if recipe.build.weight_streaming and weak_by_default and recipe.precision.strongly_typed is not True:
        raise UnsupportedOptionError(
            f"recipe option build.weight_streaming needs a strongly typed network; {backend.label} builds "
            "weakly typed ones unless asked",
            hint="set precision.strongly_typed: true",
        )


def cpu_build_fails(recipe: Recipe, backend: BackendInfo) -> list[str]:
    """Requested options a CPU-only build cannot complete with this backend, given the others asked."""
    asked = requested_options(recipe)
    needs = []
    for option in asked:
        rule = _BY_OPTION.get(option)
        availability = rule.availability(backend.flavor) if rule is not None else None
        if availability is not None and availability.cpu_build_fails and availability.cpu_build_unless not in asked:
            needs.append(option)
    return needs


def check_cpu_build(recipe: Recipe, backend: BackendInfo) -> None:
    """Refuse (exit 2, before any work) a build this machine, having no GPU, cannot complete."""
    failing = cpu_build_fails(recipe, backend)
    if not failing:
        return
    raise UnsupportedOptionError(
        f"recipe option {', '.join(failing)}: a CPU-only build with {backend.label} cannot complete it "
        "and this machine has no GPU",
        hint=_BY_OPTION[failing[0]].cpu_hint or None,
    )


def check_runtime_target(build_ccs: Sequence[str], backend: BackendInfo, runtime: RuntimeTarget) -> None:
    """Refuse a target a TensorRT-RTX build cannot serve: a capability it has no target for, or one
    the build leaves out (the engine runs only on the compute capabilities it was built for)."""
    if backend.flavor != "tensorrt_rtx":
        return
    problem = rtx_target_problem(build_ccs, backend.label, runtime.compute_capability)
    if problem is not None:
        raise UnsupportedOptionError(problem[0], hint=problem[1])


def rtx_target_problem(build_ccs: Sequence[str], label: str, cc: str) -> tuple[str, str] | None:
    """(why, the way out) when a TensorRT-RTX build for ``build_ccs`` cannot serve a GPU of ``cc``:
    the one rule behind `plan --target`'s refusals and skips."""
    if cc not in RTX_COMPUTE_CAPABILITIES:
        hint = f"{label} targets {', '.join(RTX_COMPUTE_CAPABILITIES)}"
        if cc == "9.0":
            hint += "; for Hopper (9.0) plan and build with full TensorRT (flavor=tensorrt)"
        return f"target compute capability {cc}: {label} does not build or run engines for it", hint
    if cc not in build_ccs:
        return (
            f"target compute capability {cc}: the recipe builds for {', '.join(build_ccs)} only",
            f"add {cc} to compatibility.compute_capabilities",
        )
    return None


def _note(rule: OptionRule, backend: BackendInfo) -> str:
    if rule.option == "compatibility.version_compatible":  # the one rule: show and lookup say the same
        loads_on = f"engines load on {runtime_releases_text(backend.flavor, True)}"
        return f"{loads_on}; {rule.note}" if backend.flavor == "tensorrt" else loads_on
    return rule.note


def capability_table(backend: BackendInfo) -> list[dict[str, Any]]:
    """Rows for `doctor`: every option and feature, and its state with this backend."""
    rows = []
    for kind, rules in (("option", RULES), ("feature", FEATURES)):
        for rule in rules:
            availability = rule.availability(backend.flavor)
            state = _state(rule, backend)
            rows.append(
                {
                    "kind": kind,
                    "option": rule.option,
                    "state": state,
                    "available": state in ("yes", "deprecated"),
                    "since": availability.since if availability else None,
                    "removed": availability.removed if availability else None,
                    "cpu_build_fails": bool(availability and availability.cpu_build_fails),
                    "cpu_build_unless": availability.cpu_build_unless if availability else None,
                    "note": _note(rule, backend),
                }
            )
    return rows


# -- deny entries: how a backend can enforce them -----------------------------------------

Mechanism = Literal["editable_timing_cache", "algorithm_selector"]
_TIMING_CACHE_SINCE = (10, 8)


def mechanism_for(backend: BackendInfo) -> Mechanism | None:
    """How ``backend`` can enforce deny entries (from its flavor and version; nothing imported)."""
    if backend.flavor == "tensorrt_rtx":
        return None
    if release(backend.version)[:2] >= _TIMING_CACHE_SINCE:
        return "editable_timing_cache"
    return "algorithm_selector"


def check_enforceable(backend: BackendInfo, entries: Sequence[DenyEntry]) -> Mechanism | None:
    """Refuse, before any build starts, deny entries the backend has no way to enforce."""
    if not entries:
        return None
    mechanism = mechanism_for(backend)
    if mechanism is None:
        raise UnsupportedOptionError(
            f"{backend.label} cannot enforce tactics.deny ({len(entries)} entries): it has no timing cache "
            "and no algorithm selector",
            hint="build this recipe with full TensorRT (backend: tensorrt), or remove the deny entries",
        )
    if mechanism == "algorithm_selector":
        named = [e for e in entries if e.tactic != "*" and tactic_id_of(e.tactic) is None]
        if named:
            raise UnsupportedOptionError(
                f"{backend.label} enforces deny entries with IAlgorithmSelector, which sees tactic ids only; "
                f"entry for layer {named[0].layer!r} names tactic {named[0].tactic!r}",
                hint="give the tactic id (TacticValue, 0x...) or build with TensorRT >= 10.8 (editable timing cache)",
            )
    return mechanism
