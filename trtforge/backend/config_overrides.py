"""``build.config``: IBuilderConfig attributes and flags by their Python API names, checked against
the installed backend before a build, applied after the recipe's own fields, read back and recorded.

The recipe checks the shape without TensorRT (rules/builder_options.py: names, value types, keys a
dedicated field owns); here each name must exist in the imported module and each value must fit
what the attribute holds (a bool, an integer, a string, or a member of the enum it holds). So a
TensorRT feature is usable the day it ships, under the name its Python API gives it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from trtforge.core.errors import UnsupportedOptionError
from trtforge.rules.builder_options import CONFIG_GROUPS, config_items

# Attributes a recipe cannot sensibly hold: handles and callback objects trtforge manages itself.
NOT_FROM_A_RECIPE: dict[str, str] = {
    "profile_stream": "a CUDA stream handle of the building process",
    "progress_monitor": "trtforge's progress bar is the build's monitor",
    "int8_calibrator": "use precision.calibration",
    "algorithm_selector": "trtforge enforces tactics.deny with it",
}
_GROUP_CALLS: dict[str, tuple[str, str, str]] = {  # group -> (set, clear or "", get)
    "flags": ("set_flag", "clear_flag", "get_flag"),
    "quantization_flags": ("set_quantization_flag", "clear_quantization_flag", "get_quantization_flag"),
    "memory_pool_limits": ("set_memory_pool_limit", "", "get_memory_pool_limit"),
}


def _refuse(key: str, why: str, label: str) -> UnsupportedOptionError:
    return UnsupportedOptionError(
        f"recipe option build.config.{key}: {why}",
        hint=f"names and values are those of {label}'s Python API (tensorrt.IBuilderConfig); "
        "check the spelling, or drop the entry",
    )


def _is_enum(value: Any) -> bool:
    return hasattr(type(value), "__members__")


def _check_attribute(trt: ModuleType, config: Any, key: str, value: Any, label: str) -> Any:
    """The value to assign to attribute ``key``, or UnsupportedOptionError naming the problem."""
    if key in NOT_FROM_A_RECIPE:
        raise _refuse(key, f"cannot be set from a recipe ({NOT_FROM_A_RECIPE[key]})", label)
    descriptor = getattr(type(config), key, None)
    if descriptor is None:
        raise _refuse(key, f"{label}'s IBuilderConfig has no attribute {key}", label)
    if not isinstance(descriptor, property):
        raise _refuse(key, "is a method, not an attribute (build.config sets attributes and flags)", label)
    if descriptor.fset is None:
        raise _refuse(key, "is read-only", label)
    current = getattr(config, key)
    if _is_enum(current):
        members = type(current).__members__
        if not isinstance(value, str) or value not in members:
            raise _refuse(key, f"{value!r} is not a {type(current).__name__} member ({', '.join(members)})", label)
        return members[value]
    for kind in (bool, int, str):
        if type(current) is kind:
            if type(value) is not kind:
                raise _refuse(key, f"holds a {kind.__name__}, not {type(value).__name__} {value!r}", label)
            return value
    raise _refuse(key, f"holds a {type(current).__name__} object, which a recipe cannot give", label)


def _group_member(trt: ModuleType, group: str, member: str, label: str) -> Any:
    enum_name = CONFIG_GROUPS[group][0]
    enum = getattr(trt, enum_name, None)
    if enum is None:
        raise _refuse(f"{group}.{member}", f"{label} has no {enum_name}", label)
    if member not in enum.__members__:
        raise _refuse(f"{group}.{member}", f"{label}'s {enum_name} has no member {member}", label)
    return enum.__members__[member]


def check_overrides(trt: ModuleType, config: Any, overrides: dict[str, Any], label: str) -> None:
    """Refuse (exit 2) any entry the imported backend's API lacks or whose value does not fit."""
    for key, value in config_items(overrides):
        group, _, member = key.partition(".")
        if group in CONFIG_GROUPS and member:
            _group_member(trt, group, member, label)
        else:
            _check_attribute(trt, config, key, value, label)


def _plain(value: Any) -> Any:
    return value.name if _is_enum(value) else value


def apply_overrides(
    trt: ModuleType, config: Any, overrides: dict[str, Any], label: str = "the backend"
) -> dict[str, Any]:
    """Apply build.config to ``config``; what it reads back per entry (enum members by name).

    An entry the config does not take (it reads back something else, as TensorRT-RTX does for
    DLA_core) is refused: a recorded setting is one the engine was built with.
    """
    check_overrides(trt, config, overrides, label)
    applied: dict[str, Any] = {}
    for key, value in config_items(overrides):
        group, _, member = key.partition(".")
        if group in CONFIG_GROUPS and member:
            read = _apply_group(trt, config, group, member, value, label)
        else:
            setattr(config, key, _check_attribute(trt, config, key, value, label))
            read = _plain(getattr(config, key))
        if read != value:
            raise _refuse(key, f"{label} did not take {value!r}: the config reads back {read!r}", label)
        applied[key] = read
    return applied


def _apply_group(trt: ModuleType, config: Any, group: str, member: str, value: Any, label: str) -> Any:
    setter, clearer, getter = _GROUP_CALLS[group]
    enum_member = _group_member(trt, group, member, label)
    if clearer and value is False:
        getattr(config, clearer)(enum_member)
    else:
        getattr(config, setter)(*((enum_member,) if clearer else (enum_member, value)))
    read = getattr(config, getter)(enum_member)
    return bool(read) if clearer else int(read)
