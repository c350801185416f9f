"""Bounded YAML files a user points at (recipes, deny lists): safe loading, validation, file:line.

Every failure is one ``RecipeError`` naming the file, the line and the field; YAML tags, alias
bombs and deep nesting are refused before anything walks the data, and so is a key repeated in
one mapping (YAML says keys are unique; PyYAML would silently keep the last value).
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from trtforge.core.errors import RecipeError

MAX_RECIPE_VALUES = 100_000  # after YAML aliases are expanded; a real recipe has a few hundred
MAX_RECIPE_DEPTH = 32
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _refuse_repeated_keys(loader: yaml.constructor.SafeConstructor, node: yaml.MappingNode) -> None:
    """A key written twice in one mapping is an error at its second line (merge keys ``<<`` bring
    in defaults that explicit keys override, as YAML intends: those are not repeats)."""
    first: dict[Any, int] = {}
    for key_node, _value in node.value:
        if key_node.tag == _MERGE_TAG:
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = first.get(key)
        except TypeError:
            continue  # an unhashable key: the constructor refuses it with its own message
        if seen is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is repeated (first at line {seen})", key_node.start_mark
            )
        first[key] = key_node.start_mark.line + 1


def _with_unique_keys(base: type) -> type:
    class UniqueKeyLoader(base):  # type: ignore[misc,valid-type]
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            if isinstance(node, yaml.MappingNode):
                _refuse_repeated_keys(self, node)
            return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]

    UniqueKeyLoader.__name__ = f"UniqueKey{base.__name__}"
    return UniqueKeyLoader


# libyaml parses a recipe several times faster; the result is the same as SafeLoader's.
_SAFE_LOADER = _with_unique_keys(yaml.SafeLoader)
_FAST_LOADER = _with_unique_keys(getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def read_text_file(path: Path, shown: str, *, what: str, limit: int, missing_hint: str) -> str:
    """A small UTF-8 file a user pointed at (recipe, deny file); every failure is one RecipeError."""
    try:
        status = path.stat()
        if stat.S_ISDIR(status.st_mode):
            raise RecipeError(f"{shown}: is a directory, not a {what}")
        if not stat.S_ISREG(status.st_mode):  # a FIFO or device would block the read, or never end
            raise RecipeError(
                f"{shown}: is not a regular file (a FIFO or device), not a {what}", hint="give a file's path"
            )
        size = status.st_size
        if size > limit:
            raise RecipeError(f"{shown}: {what} is {size} bytes; the limit is {limit}")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{shown}: {what} not found", hint=missing_hint) from None
    except UnicodeDecodeError:
        raise RecipeError(f"{shown}: {what} is not UTF-8 text") from None
    except OSError as exc:
        raise RecipeError(f"{shown}: cannot read {what} ({exc.strerror})") from None


def load_yaml(text: str, shown: str) -> Any:
    """Safe, bounded YAML: no tags, no alias bombs, no deep nesting; errors name the line."""
    try:
        try:
            data = yaml.load(text, Loader=_FAST_LOADER)  # noqa: S506 - CSafeLoader, keys checked unique
        except yaml.YAMLError:
            data = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - SafeLoader; its messages and marks
        _check_bounds(data, shown)
    except RecursionError:
        raise RecipeError(f"{shown}: YAML is nested too deeply (the limit is {MAX_RECIPE_DEPTH} levels)") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise RecipeError(f"{shown}{line}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{shown}: invalid YAML: {exc}") from None
    return data


ModelT = TypeVar("ModelT", bound=BaseModel)
FuncT = TypeVar("FuncT", bound=Callable[..., Any])

# What YAML 1.1 (PyYAML, most CI validators) reads as text although it is plainly a number: an
# exponent without a decimal point, e.g. 1e-5 (1.0e-5 is a float to YAML 1.1, 1e-5 to YAML 1.2).
NUMBER_TEXT: dict[str, Any] = {
    "type": "string",
    "pattern": r"^[-+]?[0-9]+[eE][-+]?[0-9]+$",
    "description": "a number YAML 1.1 reads as text, e.g. 1e-5",
}


def also_accepts(alternative: dict[str, Any]) -> Callable[[FuncT], FuncT]:
    """Mark a ``mode="before"`` validator that turns another YAML spelling into the field's type.

    ``alternative`` is the JSON Schema of that spelling; :class:`YamlSpellingsSchema` adds it to the
    field's schema, so what trtforge accepts and what the published schema says cannot drift apart.
    """

    def mark(function: FuncT) -> FuncT:
        function.__yaml_spelling__ = alternative  # type: ignore[attr-defined]
        return function

    return mark


class YamlSpellingsSchema(GenerateJsonSchema):
    """JSON Schema generation that also lists the spellings each before-validator converts."""

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        inner = super().function_before_schema(schema)
        alternative = getattr(schema["function"]["function"], "__yaml_spelling__", None)
        if alternative is None:
            return inner
        options = inner["anyOf"] if set(inner) == {"anyOf"} else [inner]
        return {"anyOf": [*options, alternative]}


MAX_REPORTED_ERRORS = 20


def validate_yaml(model: type[ModelT], data: dict[str, Any], text: str, shown: str, hint: str | None = None) -> ModelT:
    """Validate loaded YAML; every error (up to 20) names ``shown``, its line and the field.

    The first is the message; the others ride along in ``more``, so one run lists all of them.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        tree = yaml.compose(text, Loader=yaml.SafeLoader)  # composed only to name the lines
        lines = [_error_line(error, tree, shown) for error in errors[:MAX_REPORTED_ERRORS]]
        if len(errors) > MAX_REPORTED_ERRORS:
            lines.append(f"{shown}: {len(errors) - MAX_REPORTED_ERRORS} more errors not shown")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RecipeError(lines[0] + more, hint=hint, more=tuple(lines[1:])) from None


def _error_line(error: Any, tree: yaml.Node | None, shown: str) -> str:
    loc = tuple(error["loc"])
    line = line_of(tree, loc)
    where = f"{shown}:{line}" if line else shown
    return f"{where} {_loc_text(loc)}: {_clean_message(error)}"


def _check_bounds(data: Any, shown: str) -> None:
    """Refuse alias bombs and deep nesting before anything walks the expanded data.

    Loaded YAML is a graph in which an alias is a shared object, so sizes are counted once per
    object (memoized by identity) and the check is linear in the text, whatever the expansion.
    """
    sizes: dict[int, int] = {}

    def measure(value: Any, depth: int) -> int:
        if depth > MAX_RECIPE_DEPTH:
            raise RecipeError(f"{shown}: YAML is nested more than {MAX_RECIPE_DEPTH} levels deep")
        if isinstance(value, dict):
            children: list[Any] = [child for pair in value.items() for child in pair]
        elif isinstance(value, list):
            children = value
        else:
            return 1
        known = sizes.get(id(value))
        if known is not None:
            return known
        total = 1 + sum(measure(child, depth + 1) for child in children)
        if total > MAX_RECIPE_VALUES:
            raise RecipeError(
                f"{shown}: recipe expands to more than {MAX_RECIPE_VALUES} values (YAML aliases?)",
                hint="recipes are small; write the values out instead of nesting aliases",
            )
        sizes[id(value)] = total
        return total

    measure(data, 0)


def _loc_text(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "<recipe>"


def _clean_message(error: dict[str, Any]) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "field required"
    if "input" in error and kind.endswith("_type"):
        return f"{message} (got {json.dumps(error['input'], default=str)[:60]})"
    return message


def line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest YAML node that ``loc`` reaches."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line
