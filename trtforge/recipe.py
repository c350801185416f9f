"""Recipes: the declarative description of an engine build.

A recipe is YAML validated by strict Pydantic models (``extra="forbid"``). Errors name the
file, the line and the field, e.g.
``recipes/x.yaml:7 profiles[0].images.opt: opt [64,3,32,32] exceeds max [32,3,32,32]``.
Checks that need the ONNX model live in :mod:`trtforge.model`, so a cache hit never pays for
importing ``onnx``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trtforge.errors import RecipeError

MAX_RECIPE_BYTES = 1 << 20
MAX_RECIPE_VALUES = 100_000  # after YAML aliases are expanded; a real recipe has a few hundred
MAX_RECIPE_DEPTH = 32
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

Shape = list[int]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _fmt(shape: Shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


class InputShapes(_Strict):
    """min/opt/max shapes of one input in one optimization profile.

    Fields are declared min, max, opt so that ``opt`` is checked last against both bounds and
    errors point at the value that is out of range.
    """

    min: Shape = Field(min_length=1, max_length=8)
    max: Shape = Field(min_length=1, max_length=8)
    opt: Shape = Field(min_length=1, max_length=8)

    @field_validator("min", "max", "opt")
    @classmethod
    def _positive(cls, shape: Shape) -> Shape:
        if any(d <= 0 for d in shape):
            raise ValueError(f"dimensions must be positive, got {_fmt(shape)}")
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
    onnx: str = Field(description="Path of the ONNX model, relative to the recipe file.")
    sha256: str | None = Field(default=None, description="Optional pin: the build refuses another model.")

    @field_validator("onnx")
    @classmethod
    def _relative(cls, value: str) -> str:
        path = PurePosixPath(value.replace("\\", "/"))
        if not value or path.is_absolute() or re.match(r"^[A-Za-z]:", value):
            raise ValueError("must be a path relative to the recipe file")
        if ".." in path.parts:
            raise ValueError("must stay inside the recipe's directory (no '..')")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256.match(value.lower()):
            raise ValueError("must be 64 hexadecimal characters")
        return value.lower() if value is not None else None


class BuildOptions(_Strict):
    optimization_level: int = Field(default=3, ge=0, le=5, description="Builder optimization level 0-5.")
    workspace_mib: int | None = Field(
        default=None, gt=0, description="Workspace memory pool limit in MiB (default: the backend's)."
    )


Backend = Literal["auto", "tensorrt", "tensorrt_rtx"]


class Recipe(_Strict):
    """A validated recipe. ``source`` is where it was read from (not part of the schema)."""

    name: str = Field(pattern=NAME_PATTERN, description="Artifact name: letters, digits, '.', '_' and '-'.")
    description: str = Field(default="", description="Free text; not part of the build key.")
    model: ModelSpec
    backend: Backend = "auto"
    profiles: list[Profile] = Field(min_length=1, description="Optimization profiles; each maps input -> shapes.")
    build: BuildOptions = BuildOptions()

    @field_validator("name")
    @classmethod
    def _no_dots_only(cls, value: str) -> str:
        if ".." in value:
            raise ValueError("must not contain '..'")
        return value

    @model_validator(mode="after")
    def _profiles_consistent(self) -> Recipe:
        first = self.profiles[0]
        for index, profile in enumerate(self.profiles[1:], start=1):
            for name, shapes in profile.items():
                if name in first and len(first[name].min) != len(shapes.min):
                    raise ValueError(
                        f"profiles[{index}].{name} has rank {len(shapes.min)} "
                        f"but profiles[0].{name} has rank {len(first[name].min)}"
                    )
        return self

    def build_fields(self) -> dict[str, Any]:
        """The fields that change the engine: everything but description and model location."""
        data = self.model_dump(mode="json", exclude={"description"})
        data["model"] = {}
        return data


class LoadedRecipe(BaseModel):
    """A recipe plus where it came from; paths in the recipe resolve against ``path``."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    recipe: Recipe
    path: Path

    @property
    def model_path(self) -> Path:
        return (self.path.parent / self.recipe.model.onnx).resolve()


def json_schema() -> dict[str, Any]:
    """The recipe JSON Schema, for editors and `trtforge schema`."""
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "trtforge recipe"
    return schema


def load_recipe(path: str | Path) -> LoadedRecipe:
    """Read and validate a recipe; every failure is a one-line RecipeError naming file:line field."""
    path = Path(path)
    shown = str(path)
    try:
        if path.is_dir():
            raise RecipeError(f"{shown}: is a directory, not a recipe file")
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{shown}: recipe is {size} bytes; the limit is {MAX_RECIPE_BYTES}")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{shown}: recipe file not found", hint="check the path") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{shown}: recipe is not UTF-8 text") from None
    except OSError as exc:
        raise RecipeError(f"{shown}: cannot read recipe ({exc.strerror})") from None
    return LoadedRecipe(recipe=parse_recipe(text, shown), path=path.resolve())


def parse_recipe(text: str, shown: str = "<recipe>") -> Recipe:
    """Validate recipe text; ``shown`` names the source in error messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_bounds(root, shown)
        data = yaml.load(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise RecipeError(f"{shown}: YAML is nested too deeply (the limit is {MAX_RECIPE_DEPTH} levels)") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise RecipeError(f"{shown}{line}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{shown}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{shown}:1: a recipe is a mapping of fields (name, model, profiles, ...)")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        first = errors[0]
        loc = tuple(first["loc"])
        line = _line_of(root, loc)
        message = _clean_message(first)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        where = f"{shown}:{line}" if line else shown
        raise RecipeError(f"{where} {_loc_text(loc)}: {message}{more}") from None


def _check_bounds(root: yaml.Node | None, shown: str) -> None:
    """Refuse alias bombs and deep nesting before anything walks the expanded data.

    The composed YAML is a graph in which an alias is a shared node, so sizes are counted once
    per node (memoized) and the check is linear in the text, whatever the expansion would be.
    """
    sizes: dict[int, int] = {}

    def measure(node: yaml.Node, depth: int) -> int:
        if depth > MAX_RECIPE_DEPTH:
            line = node.start_mark.line + 1
            raise RecipeError(f"{shown}:{line}: YAML is nested more than {MAX_RECIPE_DEPTH} levels deep")
        known = sizes.get(id(node))
        if known is not None:
            return known
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        total = 1 + sum(measure(child, depth + 1) for child in children)
        if total > MAX_RECIPE_VALUES:
            raise RecipeError(
                f"{shown}: recipe expands to more than {MAX_RECIPE_VALUES} values (YAML aliases?)",
                hint="recipes are small; write the values out instead of nesting aliases",
            )
        sizes[id(node)] = total
        return total

    if root is not None:
        measure(root, 0)


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


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
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
