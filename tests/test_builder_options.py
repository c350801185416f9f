"""The trtexec build flags a recipe gained (issue 26): every new field changes the key, builds with
TensorRT-RTX here (read back from the real IBuilderConfig) or is refused with its reason before any
work, and its mapping to builder calls is data checked against TensorRT-RTX's real API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tests import onnx_models
from trtforge.backend.build import build_plan
from trtforge.backend.config import FIELD_API, FIELD_SETTINGS, has_api, make_config
from trtforge.backend.loader import import_backend
from trtforge.backend.network_settings import NETWORK_API, lookup, matches
from trtforge.core.errors import BuildError, RecipeError, UnsupportedOptionError
from trtforge.rules.capabilities import RULES, check_recipe, cpu_build_fails, requested_options
from trtforge.rules.flavors import BackendInfo, find_backend
from trtforge.rules.keys import recipe_fingerprint
from trtforge.rules.recipe import ADDED_FIELDS, Recipe, parse_recipe

BASE = """\
name: mlp
model: {onnx: mlp.onnx}
backend: tensorrt_rtx
profiles:
  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}
"""
PIN = "a" * 64

# One non-default value for every field added for issue 26 (leaf paths; a list of models by "[]").
KEY_SAMPLES: dict[str, str] = {
    "model.parser.native_instancenorm": "model: {onnx: mlp.onnx, parser: {native_instancenorm: false}}",
    "model.parser.plugin_override": "model: {onnx: mlp.onnx, parser: {plugin_override: true}}",
    "model.parser.uint8_asymmetric_quantization_dla": "model: {onnx: mlp.onnx, parser: "
    "{uint8_asymmetric_quantization_dla: true}}",
    "model.parser.report_capability_dla": "model: {onnx: mlp.onnx, parser: {report_capability_dla: true}}",
    "model.parser.adjust_for_dla": "model: {onnx: mlp.onnx, parser: {adjust_for_dla: true}}",
    "precision.int4": "precision: {int4: true}",
    "precision.constraints": "precision: {constraints: obey}",
    "precision.layer_precisions": "precision: {layer_precisions: {'mm*': fp16}}",
    "precision.layer_output_types": "precision: {layer_output_types: {mm: [fp16]}}",
    "precision.calibration.cache": f"precision: {{int8: true, calibration: {{cache: c.cache, sha256: '{PIN}'}}}}",
    "precision.calibration.sha256": f"precision: {{int8: true, calibration: {{cache: c.cache, sha256: '{'b' * 64}'}}}}",
    "precision.calibration.profile": f"precision: {{int8: true, calibration: {{cache: c.cache, sha256: '{PIN}', "
    "profile: 0}}",
    "compatibility.runtime_platform": "compatibility: {runtime_platform: windows_amd64}",
    "tactics.timing_iterations": "tactics: {timing_iterations: 3}",
    "tactics.max_tactics": "tactics: {max_tactics: 2}",
    "build.error_on_timing_cache_miss": "build: {error_on_timing_cache_miss: true}",
    "build.compilation_cache": "build: {compilation_cache: false}",
    "build.profiling_verbosity": "build: {profiling_verbosity: none}",
    "build.sparse_weights": "build: {sparse_weights: true}",
    "build.weight_streaming": "build: {weight_streaming: true}",
    "build.debug_tensors": "build: {debug_tensors: [w_output]}",
    "build.debug_unfused_tensors": "build: {debug_unfused_tensors: true}",
    "build.decomposable_attentions": "build: {decomposable_attentions: [attn]}",
    "build.distributive_independence": "build: {distributive_independence: true}",
    "build.tiling_l2_limit_kib": "build: {tiling_l2_limit_kib: 512}",
    "build.preview_features": "build: {preview_features: {aliased_plugin_io_10_03: true}}",
    "build.dla.core": "build: {dla: {core: 0}}",
    "build.dla.gpu_fallback": "build: {dla: {core: 0, gpu_fallback: true}}",
    "build.dla.sram_mib": "build: {dla: {sram_mib: 1}}",
    "build.dla.local_dram_mib": "build: {dla: {local_dram_mib: 1}}",
    "build.dla.global_dram_mib": "build: {dla: {global_dram_mib: 1}}",
    "build.dla.layers": "build: {dla: {layers: {mm: gpu}}}",
    "build.config": "build: {config: {flags: {DEBUG: true}}}",
    "io.inputs": "io: {inputs: {x: {formats: [chw]}}}",
    "io.outputs": "io: {outputs: {y: {formats: [chw]}}}",
    "io.direct": "io: {direct: true}",
    "plugins[].library": f"plugins: [{{library: p.so, sha256: '{PIN}'}}]",
    "plugins[].sha256": f"plugins: [{{library: p.so, sha256: '{'b' * 64}'}}]",
    "plugins[].load": f"plugins: [{{library: p.so, sha256: '{PIN}', load: static}}]",
    "plugins[].serialize": f"plugins: [{{library: p.so, sha256: '{PIN}', serialize: true}}]\n"
    "compatibility: {version_compatible: true}",
}
# Locations: the files they name are keyed by their bytes (the pins above), not where they are.
LOCATIONS = {"precision.calibration.cache", "plugins[].library"}


def recipe(extra: str = "") -> Recipe:
    """BASE with ``extra``; an extra that writes ``model:`` replaces BASE's (a repeated key is refused)."""
    base = BASE.replace("model: {onnx: mlp.onnx}\n", "") if extra.startswith("model:") else BASE
    return parse_recipe(base + extra + ("\n" if extra else ""))


def _leaves(model: type[BaseModel], prefix: str) -> list[str]:
    leaves = []
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        kind = info.annotation
        inner = [a for a in getattr(kind, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            leaves += _leaves(kind, path)
        elif inner and getattr(kind, "__origin__", None) is list:
            leaves += _leaves(inner[0], path + "[]")
        elif (inner and str(kind).startswith(("typing.Optional", "typing.Union"))) or (inner and "|" in str(kind)):
            leaves += _leaves(inner[0], path)
        else:
            leaves.append(path)
    return leaves


def added_leaves() -> list[str]:
    everything = _leaves(Recipe, "")
    picked = [
        leaf
        for leaf in everything
        if any(leaf.replace("[]", "") == f or leaf.replace("[]", "").startswith(f + ".") for f in ADDED_FIELDS)
    ]
    return sorted(picked)


def test_every_added_field_has_a_key_sample() -> None:
    # io.inputs/io.outputs are maps of TensorIO: their sample sets a value inside
    expected = {leaf for leaf in added_leaves()}
    assert expected == set(KEY_SAMPLES), expected ^ set(KEY_SAMPLES)


def test_the_key_changes_when_any_new_field_changes() -> None:
    base = recipe_fingerprint(recipe())
    fingerprints = {}
    for path, extra in KEY_SAMPLES.items():
        fingerprints[path] = recipe_fingerprint(recipe(extra))
        assert fingerprints[path] != base, f"{path} does not change the key"
    by_value: dict[str, list[str]] = {}
    for path, value in fingerprints.items():
        by_value.setdefault(value, []).append(path)
    # the location samples name the file the pin sample of the same field names: the same key
    shared = [sorted(paths) for paths in by_value.values() if len(paths) > 1]
    assert all(set(paths) & LOCATIONS for paths in shared), shared


@pytest.mark.parametrize("path", sorted(LOCATIONS))
def test_where_a_file_is_does_not_change_the_key_its_bytes_do(path: str) -> None:
    extra = KEY_SAMPLES[path]
    moved = extra.replace("c.cache", "../elsewhere/c.cache").replace("p.so", "/opt/plugins/p.so")
    assert recipe_fingerprint(recipe(moved)) == recipe_fingerprint(recipe(extra))
    assert recipe_fingerprint(recipe(extra.replace(PIN, "c" * 64))) != recipe_fingerprint(recipe(extra))



# Fingerprints of recipes that use none of the new fields, computed with trtforge before they
# existed (main at 843520b): upgrading keeps every key, so every cache hit.
OLD_KEYS = {
    "": "369fd7252541a3c367675ef2dd3ff475700081576c4b4970ae4521ae59dab37c",
    "precision: {strongly_typed: true}\nbuild: {optimization_level: 0, workspace_mib: 64, timing_cache: off}": (
        "494f846010077be835e47308ff119d729ebe6300262738552ae20ed16e896e0a"
    ),
    "refit: strip_weights\ncompatibility: {version_compatible: true, compute_capabilities: [8.6]}\n"
    "tactics: {sources: [jit_convolutions]}": "3205ce3fb4adf5ac198c4fb1f39371a97e80c3f4bb14ea20a80382522a646941",
}


def test_recipes_without_the_new_fields_keep_their_keys() -> None:
    for extra, fingerprint in OLD_KEYS.items():
        assert recipe_fingerprint(recipe(extra)) == fingerprint, extra


# -- every new option builds with TensorRT-RTX here, or is refused before any work -----------------

_DLA = (("core", 0), ("sram_mib", 1), ("local_dram_mib", 1), ("global_dram_mib", 1))
# A recipe fragment per new option of the capability table (plugins: see the plugin tests below).
OPTION_SAMPLES: dict[str, str] = {
    "precision.int4": "precision: {int4: true}",
    "precision.constraints": "precision: {constraints: prefer}",
    "precision.layer_precisions": "precision: {layer_precisions: {'*': fp16}}",
    "precision.layer_output_types": "precision: {layer_output_types: {'*': fp16}}",
    "precision.calibration": "precision: {int8: true, calibration: {cache: c.cache}}",
    "io.<tensor>.dtype": "io: {inputs: {x: {dtype: fp16}}}",
    "io.<tensor>.formats": "io: {inputs: {x: {formats: [chw]}}, outputs: {y: {formats: [chw]}}}",
    "io.direct": "io: {direct: true}",
    "model.parser.native_instancenorm": "model: {onnx: mlp.onnx, parser: {native_instancenorm: false}}",
    "model.parser.plugin_override": "model: {onnx: mlp.onnx, parser: {plugin_override: true}}",
    "model.parser.uint8_asymmetric_quantization_dla": "model: {onnx: mlp.onnx, parser: "
    "{uint8_asymmetric_quantization_dla: true}}",
    "model.parser.report_capability_dla": "model: {onnx: mlp.onnx, parser: {report_capability_dla: true}}",
    "model.parser.adjust_for_dla": "model: {onnx: mlp.onnx, parser: {adjust_for_dla: true}}",
    "refit: strip_all_weights": "refit: strip_all_weights\ncompatibility: {compute_capabilities: [8.6]}",
    "compatibility.runtime_platform: windows_amd64": "compatibility: {runtime_platform: windows_amd64}",
    "tactics.timing_iterations": "tactics: {timing_iterations: 3}",
    "tactics.max_tactics": "tactics: {max_tactics: 1}",
    "build.profiling_verbosity": "build: {profiling_verbosity: layer_names_only}",
    "build.sparse_weights": "build: {sparse_weights: true}",
    "build.weight_streaming": "build: {weight_streaming: true}",
    "build.debug_tensors": "build: {debug_tensors: ['w_*']}",
    "build.debug_unfused_tensors": "build: {debug_unfused_tensors: true}",
    "build.distributive_independence": "build: {distributive_independence: true}",
    "build.tiling_l2_limit_kib": "build: {tiling_l2_limit_kib: 512}",
    "build.preview_features": "build: {preview_features: {future_feature_12_1: true}}",  # checked by the module
    "build.config": "build: {config: {engine_capability: STANDARD, flags: {STRICT_NANS: true}}}",
    "build.error_on_timing_cache_miss": "build: {error_on_timing_cache_miss: true}",
    "build.compilation_cache": "build: {compilation_cache: false}",
    "build.decomposable_attentions": "build: {decomposable_attentions: ['*']}",
    "build.preview_features: profile_sharing_0806": "build: {preview_features: {profile_sharing_0806: true}}",
    "build.preview_features: aliased_plugin_io_10_03": "build: {preview_features: {aliased_plugin_io_10_03: true}}",
    "build.preview_features: runtime_activation_resize_10_10": "build: {preview_features: "
    "{runtime_activation_resize_10_10: true}}",
    "build.preview_features: multidevice_runtime_10_16": "build: {preview_features: {multidevice_runtime_10_16: true}}",
    **{f"build.dla.{name}": f"build: {{dla: {{{name}: {value}}}}}" for name, value in _DLA},
    "build.dla.gpu_fallback": "build: {dla: {core: 0, gpu_fallback: true}}",
    "build.dla.layers": "build: {dla: {layers: {'*': gpu}}}",
}
# What a build records for the option, read back from the real builder config or network.
RECORDED: dict[str, dict[str, Any]] = {
    "io.<tensor>.formats": {"io.inputs.x": {"dtype": None, "formats": ["chw"]}},
    "io.direct": {"io.direct": True},
    "model.parser.native_instancenorm": {"model.parser.native_instancenorm": False},
    "model.parser.plugin_override": {"model.parser.plugin_override": True},
    "tactics.timing_iterations": {"tactics.timing_iterations": 3},
    "tactics.max_tactics": {"tactics.max_tactics": 1},
    "build.profiling_verbosity": {"build.profiling_verbosity": "layer_names_only"},
    "build.sparse_weights": {"build.sparse_weights": True},
    "build.weight_streaming": {"build.weight_streaming": True},
    "build.debug_tensors": {"build.debug_tensors": ["w_output"]},
    "build.debug_unfused_tensors": {"build.debug_unfused_tensors": True},
    "build.distributive_independence": {"build.distributive_independence": True},
    "build.tiling_l2_limit_kib": {"build.tiling_l2_limit_kib": 512},
    "build.preview_features: aliased_plugin_io_10_03": {"build.preview_features": {"aliased_plugin_io_10_03": True}},
    "build.preview_features: runtime_activation_resize_10_10": {
        "build.preview_features": {"runtime_activation_resize_10_10": True}
    },
    "build.config": {"build.config": {"engine_capability": "STANDARD", "flags.STRICT_NANS": True}},
}


def _rule(option: str) -> Any:
    return next(rule for rule in RULES if rule.option == option)


def new_options() -> list[str]:
    """The options of the capability table for the fields issue 26 added (plugins aside)."""
    fields = tuple(field for field in ADDED_FIELDS if field != "plugins")
    added = {rule.option for rule in RULES if rule.option.split(":")[0].startswith((*fields, "io."))}
    return sorted(added | {"precision.int4", "refit: strip_all_weights"})


def test_every_new_option_has_a_sample() -> None:
    assert set(new_options()) == set(OPTION_SAMPLES)
    for option, extra in OPTION_SAMPLES.items():
        assert option in requested_options(recipe(extra)), option


@pytest.fixture(scope="module")
def mlp_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return onnx_models.save(onnx_models.mlp(), tmp_path_factory.mktemp("model") / "mlp.onnx")


@pytest.fixture(scope="module")
def rtx() -> BackendInfo:
    return find_backend("tensorrt_rtx")


@pytest.mark.parametrize("option", sorted(OPTION_SAMPLES))
def test_each_option_builds_with_tensorrt_rtx_or_is_refused_first(
    option: str, rtx: BackendInfo, mlp_model: Path
) -> None:
    rule = _rule(option)
    parsed = recipe(OPTION_SAMPLES[option])
    if rule.tensorrt_rtx is None:
        with pytest.raises(UnsupportedOptionError) as refused:
            check_recipe(parsed, rtx)  # pure data: no TensorRT import, no store, no model read
        # the first option the table refuses is named (the sample's own, or one it needs: int8, dla.core)
        named = [o for o in requested_options(parsed) if f"recipe option {o} " in refused.value.message]
        assert named and refused.value.exit_code == 2, refused.value.message
        assert refused.value.hint and "\n" not in refused.value.message
        return
    assert check_recipe(parsed, rtx) == []
    if option == "build.preview_features":  # a name the table does not know: the module decides, first
        with pytest.raises(UnsupportedOptionError, match=r"has no PreviewFeature\.FUTURE_FEATURE_12_1"):
            build_plan(rtx, parsed, mlp_model)
        return
    if rule.tensorrt_rtx.cpu_build_fails:
        assert cpu_build_fails(parsed, rtx) == [option]
        with pytest.raises(BuildError) as failed:
            build_plan(rtx, parsed, mlp_model)
        assert "cannot be built on a CPU-only machine" in str(failed.value.hint)
        return
    output = build_plan(rtx, parsed, mlp_model)
    assert output.plan_view.nbytes > 0
    for key, value in RECORDED[option].items():
        assert output.settings[key] == value, (key, output.settings)


def test_every_option_tensorrt_rtx_builds_is_recorded() -> None:
    buildable = {o for o in OPTION_SAMPLES if _rule(o).tensorrt_rtx is not None}
    assert buildable - {"refit: strip_all_weights", "build.preview_features"} == set(RECORDED)


# -- the mapping field -> builder call, as data, read back from TensorRT-RTX's real IBuilderConfig --

# kind, API name, value set by the sample in OPTION_SAMPLES (the raw value the config holds)
MAPPING: dict[str, tuple[str, str, Any]] = {
    "tactics.timing_iterations": ("attribute", "avg_timing_iterations", 3),
    "tactics.max_tactics": ("attribute", "max_num_tactics", 1),
    "build.error_on_timing_cache_miss": ("flag", "ERROR_ON_TIMING_CACHE_MISS", True),
    "build.compilation_cache": ("flag", "DISABLE_COMPILATION_CACHE", True),
    "build.sparse_weights": ("flag", "SPARSE_WEIGHTS", True),
    "build.weight_streaming": ("flag", "WEIGHT_STREAMING", True),
    "build.distributive_independence": ("flag", "DISTRIBUTIVE_INDEPENDENCE", True),
    "build.tiling_l2_limit_kib": ("attribute", "l2_limit_for_tiling", 512 * 1024),
    "build.profiling_verbosity": ("attribute", "profiling_verbosity", "LAYER_NAMES_ONLY"),
    "io.direct": ("flag", "DIRECT_IO", True),
    "compatibility.runtime_platform": ("attribute", "runtime_platform", "WINDOWS_AMD64"),
    "build.dla.core": ("attribute", "DLA_core", 0),
    "build.dla.gpu_fallback": ("flag", "GPU_FALLBACK", True),
    "build.dla.sram_mib": ("pool", "DLA_MANAGED_SRAM", 1 << 20),
    "build.dla.local_dram_mib": ("pool", "DLA_LOCAL_DRAM", 1 << 20),
    "build.dla.global_dram_mib": ("pool", "DLA_GLOBAL_DRAM", 1 << 20),
}
_API_OF_KIND = {"attribute": "IBuilderConfig", "flag": "BuilderFlag", "pool": "MemoryPoolType"}


def test_the_mapping_table_is_the_one_the_builder_uses() -> None:
    table = {s.field: (s.kind.replace("enum_", "").replace("flag_off", "flag"), s.api) for s in FIELD_SETTINGS}
    assert table == {field: (kind, f"{_API_OF_KIND[kind]}.{name}") for field, (kind, name, _) in MAPPING.items()}


def _read(trt: Any, config: Any, kind: str, name: str) -> Any:
    if kind == "flag":
        return bool(config.get_flag(getattr(trt.BuilderFlag, name)))
    if kind == "pool":
        return config.get_memory_pool_limit(getattr(trt.MemoryPoolType, name))
    value = getattr(config, name)
    return value.name if hasattr(type(value), "__members__") else value


def _sample_for(field: str) -> str:
    option = field if field in OPTION_SAMPLES else next(o for o in OPTION_SAMPLES if o.startswith(field + ":"))
    return OPTION_SAMPLES[option]


@pytest.mark.parametrize("field", sorted(MAPPING))
def test_each_field_reaches_the_real_builder_config(field: str, rtx: BackendInfo) -> None:
    """Applied through make_config to TensorRT-RTX's own IBuilderConfig and read back here, apart
    from what trtforge records; where TensorRT-RTX does not take the value (DLA, a Windows runtime
    platform), the build is refused, and the table refuses it before that."""
    kind, name, expected = MAPPING[field]
    trt = import_backend(rtx)
    builder = trt.Builder(trt.Logger(trt.Logger.INTERNAL_ERROR))
    parsed = recipe(_sample_for(field))
    try:
        config, _settings = make_config(trt, builder, None, parsed)
    except UnsupportedOptionError as refused:
        assert "did not take" in refused.message
        table_refuses = _rule(next(o for o in OPTION_SAMPLES if o.split(":")[0] == field)).tensorrt_rtx is None
        assert table_refuses, f"{field}: TensorRT-RTX does not take it, but the table lets it through"
        return
    assert _read(trt, config, kind, name) == expected


def test_every_api_a_field_needs_is_named_and_tensorrt_rtx_has_the_shared_ones(rtx: BackendInfo) -> None:
    trt = import_backend(rtx)
    table = {**FIELD_API, **NETWORK_API}
    # every option a recipe can ask for and that is not a plain old one names its API
    for option in new_options():
        if option.startswith("build.preview_features") or option == "build.config":
            continue  # checked by name against PreviewFeature / IBuilderConfig
        assert table.get(option) or table.get(option.split(":")[0]), option
    for option, apis in table.items():
        rule = next((r for r in RULES if r.option in (option, option.split(":")[0])), None)
        if rule is not None and rule.tensorrt_rtx is not None:
            assert all(has_api(trt, api) for api in apis), (option, apis)
    # the weak-typing fields' API is absent from TensorRT-RTX: the module check agrees with the table
    for option in ("precision.int4", "precision.layer_precisions", "precision.calibration", "io.<tensor>.dtype"):
        assert not all(has_api(trt, api) for api in table[option]), option


def test_names_match_as_trtexec_matches_them() -> None:
    assert matches("conv*", "conv1") and matches("*_output", "w_output") and matches("a*z", "az")
    assert not matches("conv*", "xconv") and not matches("a*z", "a") and not matches("mm", "mm2")
    assert lookup({"mm*": 1, "mm": 2}, "mm") == "mm"  # an exact name first
    assert lookup({"mm*": 1}, "mm1") == "mm*" and lookup({"x*": 1}, "mm") is None


def test_a_recipe_naming_nothing_in_the_network_is_refused(rtx: BackendInfo, mlp_model: Path) -> None:
    with pytest.raises(Exception) as refused:
        build_plan(rtx, recipe("build: {debug_tensors: [nope]}"), mlp_model)
    assert refused.value.exit_code == 2 and "'nope' names nothing in the network" in str(refused.value)
    with pytest.raises(Exception) as refused:
        build_plan(rtx, recipe("io: {inputs: {z: {formats: [chw]}}}"), mlp_model)
    assert refused.value.exit_code == 2 and "'z' is not a network input" in str(refused.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("precision: {calibration: {cache: c.cache}}", "calibration needs int8: true"),
        ("precision: {strongly_typed: true, layer_precisions: {a: fp16}}", "cannot be combined with weak-typing"),
        ("precision: {strongly_typed: true}\nio: {inputs: {x: {dtype: fp16}}}", "io dtype (x) needs a weakly typed"),
        ("precision: {int8: true, calibration: {cache: c.cache, profile: 1}}", "names no optimization profile"),
        ("precision: {strongly_typed: false}\nbuild: {weight_streaming: true}", "needs a strongly typed network"),
        ("build: {profiling_verbosity: none}\ntactics: {deny: [{layer: a, tactic: '0x1', reason: r}]}",
         "tactics.deny needs build.profiling_verbosity: detailed"),
        ("plugins: [{library: a.so, serialize: true}]", "needs compatibility.version_compatible"),
        ("plugins: [{library: a.so, load: static, serialize: true}]", "serialize: true needs load: dynamic"),
        ("plugins: [{library: a.so}, {library: a.so}]", "must not be listed twice"),
        ("build: {dla: {gpu_fallback: true}}", "need core"),
        ("build: {debug_tensors: ['a*b*']}", "more than one '*'"),
        ("build: {preview_features: {Bad-Name: true}}", "is not a preview feature name"),
        ("build: {config: {avg_timing_iterations: 4}}", "set by the recipe field tactics.timing_iterations"),
        ("build: {config: {flags: {FP16: true}}}", "set by the recipe field precision.fp16"),
        ("build: {config: {flags: {DEBUG: 1}}}", "flags.DEBUG: give a bool"),
        ("build: {config: {'not a name': 1}}", "is not an IBuilderConfig attribute name"),
        ("build: {config: {avg: 1.5}}", "give a bool, an integer or an enum member name"),
    ],
)
def test_inconsistent_options_are_refused_naming_the_line(extra: str, message: str) -> None:
    with pytest.raises(RecipeError) as refused:
        recipe(extra)
    assert message in refused.value.message and refused.value.exit_code == 2


def test_weight_streaming_needs_strong_typing_on_tensorrt_10() -> None:
    trt10, trt11 = BackendInfo("tensorrt", "10.13.3.9"), BackendInfo("tensorrt", "11.0.0.1")
    with pytest.raises(UnsupportedOptionError, match="strongly typed"):
        check_recipe(recipe("build: {weight_streaming: true}"), trt10)
    check_recipe(recipe("precision: {strongly_typed: true}\nbuild: {weight_streaming: true}"), trt10)
    check_recipe(recipe("build: {weight_streaming: true}"), trt11)


@pytest.mark.parametrize(
    ("option", "backend", "state"),
    [
        ("tactics.max_tactics", "10.3.0", "missing"),
        ("tactics.max_tactics", "10.4.0", "yes"),
        ("precision.int4", "10.0.1", "missing"),
        ("precision.int4", "10.1.0", "yes"),
        ("precision.layer_precisions", "11.0.0", "removed"),
        ("precision.calibration", "11.0.0", "removed"),
        ("compatibility.runtime_platform: windows_amd64", "10.2.0", "yes"),
        ("build.decomposable_attentions", "10.13.3", "missing"),
        ("build.preview_features: multidevice_runtime_10_16", "11.0.0", "removed"),
        ("model.parser.plugin_override", "10.14.0", "missing"),
        ("io.<tensor>.dtype", "11.0.0", "removed"),
        ("build.dla.core", "11.0.0", "yes"),
    ],
)
def test_tensorrt_releases_in_the_table(option: str, backend: str, state: str) -> None:
    from trtforge.rules.capabilities import capability_table

    rows = {row["option"]: row["state"] for row in capability_table(BackendInfo("tensorrt", backend))}
    assert rows[option] == state


# -- a plan built for another platform (compatibility.runtime_platform) --------------------------


def test_a_windows_plan_built_on_linux_is_found_for_windows_only() -> None:
    """TensorRT >= 10.2 builds on Linux x86-64 for kWINDOWS_AMD64: the record says so, lookup reads it."""
    from tests.catalog_rows import placeholder_artifact
    from trtforge.rules.compatibility import Envelope, rank
    from trtforge.rules.target import BuildTarget, RuntimeTarget
    from trtforge.stages.lookup import candidate_from_row

    built = recipe("compatibility: {runtime_platform: windows_amd64}")
    target = BuildTarget("tensorrt", "10.13.3.9", "NVIDIA A10G", ("8.6",), os="linux", arch="x86_64", cuda="cu12")
    details = {"target": target.key_fields(), "compatibility": Envelope.of(built.compatibility).record(target)}
    assert details["compatibility"]["runtime_platform"] == "windows_amd64"
    row = placeholder_artifact(
        flavor="tensorrt", trt_version="10.13.3.9", gpu_name="NVIDIA A10G", compute_capabilities=["8.6"],
        plan_sha256="p" * 64, details=details, created_at=__import__("datetime").datetime(2026, 1, 1),
    )
    candidate = candidate_from_row(row)
    assert (candidate.os, candidate.arch) == ("windows", "x86_64")
    on = {os: RuntimeTarget("tensorrt", "10.13.3.9", "8.6", "NVIDIA A10G", os=os, arch="x86_64") for os in
          ("linux", "windows")}
    assert rank([candidate], on["windows"]).best is not None
    linux = rank([candidate], on["linux"])
    assert linux.best is None and [r.rule for r in linux.rejected] == ["platform"]


# -- the escape hatch through the command line ------------------------------------------------------


def _config(mapping: str) -> str:
    """A build.config line for conftest's MLP recipe (a str.format template: braces doubled)."""
    return "  config: " + mapping.replace("{", "{{").replace("}", "}}") + "\n"


def test_build_config_is_checked_applied_keyed_recorded_and_shown(cli, mlp_recipe, store: Path) -> None:
    from tests.conftest import MLP_RECIPE

    plain = mlp_recipe("plain")
    hatch = mlp_recipe("hatch", text=MLP_RECIPE + _config("{engine_capability: STANDARD, flags: {STRICT_NANS: true}}"))
    planned = cli("plan", plain, hatch, "--store", store, "--json")
    assert planned.code == 0, planned
    keys = {Path(entry["recipe"]).stem: entry for entry in planned.json()}
    assert keys["hatch"]["build_key"] != keys["plain"]["build_key"]
    assert keys["hatch"]["unchecked"] == ["build.config.engine_capability", "build.config.flags.STRICT_NANS"]
    assert keys["plain"]["unchecked"] == []
    human = cli("plan", hatch, "--store", store)
    assert "build.config.engine_capability, build.config.flags.STRICT_NANS unchecked" in human.stderr

    built = cli("build", hatch, "--store", store, "--json")
    assert built.code == 0, built
    [result] = built.json()
    assert result["build_key"] == keys["hatch"]["build_key"]
    shown = cli("show", result["artifact_id"], "--store", store, "--json").json()
    settings = shown["details"]["settings"]
    assert settings["build.config"] == {"engine_capability": "STANDARD", "flags.STRICT_NANS": True}
    assert "STRICT_NANS" in settings["flags"]  # read back from the config with every other flag
    assert "build.config: {'engine_capability': 'STANDARD', 'flags.STRICT_NANS': True}" in cli(
        "show", result["artifact_id"], "--store", store
    ).stdout


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("{no_such_attribute: 1}", "build.config.no_such_attribute: TensorRT-RTX 1.7.1.116's IBuilderConfig has no "
         "attribute no_such_attribute"),
        ("{flags: {NO_SUCH_FLAG: true}}", "build.config.flags.NO_SUCH_FLAG: TensorRT-RTX 1.7.1.116's BuilderFlag has "
         "no member NO_SUCH_FLAG"),
        ("{engine_capability: NOPE}", "build.config.engine_capability: 'NOPE' is not a EngineCapability member"),
        ("{num_optimization_profiles: 2}", "build.config.num_optimization_profiles: is read-only"),
        ("{set_flag: 1}", "build.config.set_flag: is a method"),
        ("{builder_optimization_level: 2}", "is set by the recipe field build.optimization_level; use that field"),
        ("{progress_monitor: 1}", "build.config.progress_monitor: cannot be set from a recipe"),
        ("{build_route: 1}", "build.config.build_route: holds a str, not int 1"),
    ],
)
@pytest.mark.slow  # seconds each: README's test command keeps its 5-minute cap (.ci/run runs it)
def test_build_config_entries_the_backend_lacks_exit_2_naming_them(
    cli, mlp_recipe, store: Path, config: str, message: str
) -> None:
    from tests.conftest import MLP_RECIPE

    if find_backend("tensorrt_rtx").version != "1.7.1.116":
        message = message.split(": ", 1)[0]
    path = mlp_recipe("bad", text=MLP_RECIPE + _config(config))
    result = cli("build", path, "--store", store)
    assert result.code == 2, result
    assert message in result.stderr, result.stderr


def test_a_refused_option_exits_2_before_anything_is_written(cli, mlp_recipe, store: Path) -> None:
    from tests.conftest import MLP_RECIPE
    from tests.test_build_cli import store_is_empty

    path = mlp_recipe("dla", text=MLP_RECIPE + "  dla: {{core: 0}}\n")
    result = cli("build", path, "--store", store)
    assert result.code == 2, result
    assert "dla.yaml: recipe option build.dla.core is not available: TensorRT-RTX" in result.stderr
    assert "hint: TensorRT-RTX builds for RTX GPUs, which have no DLA: drop the DLA options" in result.stderr
    assert store_is_empty(store)
