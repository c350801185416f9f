"""Recipe fields that act on the parsed network or the ONNX parser rather than on IBuilderConfig:
parser flags, I/O types and formats, per-layer precisions, output types and devices, debug tensors,
decomposable attentions.

Names follow trtexec: a layer (or attention) name is matched exactly, else by a pattern holding one
``*``. A name the recipe gives that matches nothing in the network is bad input (exit 2) before the
build, not a silent no-op. Each function returns what it set, for the artifact's settings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import Any

from trtforge.core.errors import BadInputError
from trtforge.rules.builder_options import DTYPE_ENUM, FORMAT_ENUM, PARSER_FLAG_ENUM
from trtforge.rules.recipe import Recipe

# The API each network-side field needs (checked before a build, with backend/config.py's FIELD_API).
NETWORK_API: dict[str, tuple[str, ...]] = {
    **{f"model.parser.{field}": (f"OnnxParserFlag.{member}",) for field, member in PARSER_FLAG_ENUM.items()},
    "io.<tensor>.dtype": ("ITensor.dtype=",),
    "io.<tensor>.formats": ("ITensor.allowed_formats",),
    "precision.layer_precisions": ("ILayer.precision",),
    "precision.layer_output_types": ("ILayer.set_output_type",),
    "build.debug_tensors": ("INetworkDefinition.mark_debug",),
    "build.debug_unfused_tensors": ("INetworkDefinition.mark_unfused_tensors_as_debug_tensors",),
    "build.decomposable_attentions": ("LayerType.ATTENTION_INPUT",),
    "build.dla.layers": ("IBuilderConfig.set_device_type", "DeviceType.DLA"),
}


def matches(pattern: str, name: str) -> bool:
    """trtexec's rule: exact, or ``prefix*suffix`` with one wildcard."""
    if "*" not in pattern:
        return pattern == name
    prefix, suffix = pattern.split("*", 1)
    return len(name) >= len(prefix) + len(suffix) and name.startswith(prefix) and name.endswith(suffix)


def lookup(patterns: Mapping[str, Any], name: str) -> str | None:
    """The pattern that names ``name``: an exact one first, else the first wildcard one that matches."""
    if name in patterns:
        return name
    return next((p for p in patterns if "*" in p and matches(p, name)), None)


def _unmatched(field: str, patterns: Iterable[str], names: list[str]) -> None:
    missing = [p for p in patterns if not any(matches(p, n) for n in names)]
    if missing:
        shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
        raise BadInputError(
            f"recipe option {field}: {', '.join(map(repr, missing))} names nothing in the network",
            hint=f"names in the parsed network: {shown}",
        )


def set_parser_flags(trt: ModuleType, parser: Any, recipe: Recipe) -> None:
    for field, on in recipe.model.parser.set_flags().items():
        member = getattr(trt.OnnxParserFlag, PARSER_FLAG_ENUM[field])
        parser.set_flag(member) if on else parser.clear_flag(member)


def parser_flags_read(trt: ModuleType, parser: Any, recipe: Recipe) -> dict[str, Any]:
    """The recipe's parser flags as the parser reads them back."""
    return {
        f"model.parser.{field}": bool(parser.get_flag(getattr(trt.OnnxParserFlag, PARSER_FLAG_ENUM[field])))
        for field in recipe.model.parser.set_flags()
    }


def _layers(network: Any) -> list[Any]:
    return [network.get_layer(i) for i in range(network.num_layers)]


def _io_tensors(network: Any) -> dict[str, Any]:
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    tensors += [network.get_output(i) for i in range(network.num_outputs)]
    return {t.name: t for t in tensors}


def set_io(trt: ModuleType, network: Any, recipe: Recipe) -> dict[str, Any]:
    applied: dict[str, Any] = {}
    for side, specs in (("inputs", recipe.io.inputs), ("outputs", recipe.io.outputs)):
        tensors = _io_tensors(network)
        wanted = {name: tensors.get(name) for name in specs}
        missing = [name for name, tensor in wanted.items() if tensor is None]
        if missing:
            raise BadInputError(
                f"recipe option io.{side}: {', '.join(map(repr, missing))} is not a network {side[:-1]}",
                hint=f"network {side}: {', '.join(sorted(tensors))}",
            )
        for name, spec in specs.items():
            tensor = wanted[name]
            if spec.dtype is not None:
                tensor.dtype = getattr(trt.DataType, DTYPE_ENUM[spec.dtype])
            if spec.formats is not None:
                mask = 0
                for fmt in spec.formats:
                    mask |= 1 << int(getattr(trt.TensorFormat, FORMAT_ENUM[fmt]))
                tensor.allowed_formats = mask
            applied[f"io.{side}.{name}"] = {"dtype": spec.dtype, "formats": spec.formats}
    return applied


def set_layer_precisions(trt: ModuleType, network: Any, recipe: Recipe) -> dict[str, Any]:
    """precision.layer_precisions and layer_output_types (TensorRT 10, weakly typed networks)."""
    precision = recipe.precision
    layers = _layers(network)
    names = [layer.name for layer in layers]
    _unmatched("precision.layer_precisions", precision.layer_precisions, names)
    _unmatched("precision.layer_output_types", precision.layer_output_types, names)
    set_to: dict[str, Any] = {}
    for layer in layers:
        pattern = lookup(precision.layer_precisions, layer.name)
        if pattern is not None:
            layer.precision = getattr(trt.DataType, DTYPE_ENUM[precision.layer_precisions[pattern]])
            set_to.setdefault("precision.layer_precisions", {})[layer.name] = precision.layer_precisions[pattern]
        pattern = lookup(precision.layer_output_types, layer.name)
        if pattern is not None:
            types = precision.layer_output_types[pattern]
            per_output = types if isinstance(types, list) else [types] * layer.num_outputs
            for index, dtype in enumerate(per_output[: layer.num_outputs]):
                layer.set_output_type(index, getattr(trt.DataType, DTYPE_ENUM[dtype]))
            set_to.setdefault("precision.layer_output_types", {})[layer.name] = per_output[: layer.num_outputs]
    return set_to


def _tensor_names(network: Any) -> dict[str, Any]:
    tensors = dict(_io_tensors(network))
    for layer in _layers(network):
        for index in range(layer.num_outputs):
            output = layer.get_output(index)
            if output is not None:
                tensors[output.name] = output
    return tensors


def set_debug_tensors(trt: ModuleType, network: Any, recipe: Recipe) -> dict[str, Any]:
    applied: dict[str, Any] = {}
    wanted = recipe.build.debug_tensors
    if wanted:
        tensors = _tensor_names(network)
        _unmatched("build.debug_tensors", wanted, list(tensors))
        marked = sorted(name for name, tensor in tensors.items() if lookup(dict.fromkeys(wanted), name))
        for name in marked:
            network.mark_debug(tensors[name])
        applied["build.debug_tensors"] = [name for name in marked if network.is_debug_tensor(tensors[name])]
    if recipe.build.debug_unfused_tensors:
        applied["build.debug_unfused_tensors"] = bool(network.mark_unfused_tensors_as_debug_tensors())
    return applied


def set_decomposable_attentions(trt: ModuleType, network: Any, recipe: Recipe) -> dict[str, Any]:
    wanted = dict.fromkeys(recipe.build.decomposable_attentions, True)
    if not wanted:
        return {}
    attentions = {}
    for layer in _layers(network):
        if layer.type == trt.LayerType.ATTENTION_INPUT:
            attention = layer.attention
            attentions[attention.name] = attention
    _unmatched("build.decomposable_attentions", wanted, list(attentions))
    decomposed = sorted(name for name in attentions if lookup(wanted, name))
    for name in decomposed:
        attentions[name].decomposable = True
    return {"build.decomposable_attentions": decomposed}


def set_layer_devices(trt: ModuleType, network: Any, config: Any, recipe: Recipe) -> dict[str, Any]:
    wanted = recipe.build.dla.layers
    if not wanted:
        return {}
    layers = _layers(network)
    _unmatched("build.dla.layers", wanted, [layer.name for layer in layers])
    devices = {}
    for layer in layers:
        pattern = lookup(wanted, layer.name)
        if pattern is not None:
            config.set_device_type(layer, getattr(trt.DeviceType, wanted[pattern].upper()))
            devices[layer.name] = config.get_device_type(layer).name.lower()
    return {"build.dla.layers": devices}


def apply_network_settings(trt: ModuleType, network: Any, config: Any, recipe: Recipe) -> dict[str, Any]:
    """Every network-side field of the recipe, after parsing and before the build."""
    applied: dict[str, Any] = {}
    applied.update(set_io(trt, network, recipe))
    applied.update(set_layer_precisions(trt, network, recipe))
    applied.update(set_debug_tensors(trt, network, recipe))
    applied.update(set_decomposable_attentions(trt, network, recipe))
    applied.update(set_layer_devices(trt, network, config, recipe))
    return applied
