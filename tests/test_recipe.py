"""Recipe validation: strict fields, file:line:field errors, JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trtforge.core.errors import RecipeError
from trtforge.rules.recipe import json_schema, load_recipe, parse_recipe

GOOD = """\
name: net
model:
  onnx: models/net.onnx
profiles:
  - images: {min: [1, 3, 32, 32], opt: [4, 3, 32, 32], max: [8, 3, 32, 32]}
"""


def error_of(text: str) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, "r.yaml")
    return str(info.value)


def test_good_recipe_has_defaults() -> None:
    recipe = parse_recipe(GOOD)
    assert recipe.backend == "auto"
    assert recipe.build.optimization_level == 3
    assert recipe.profiles[0]["images"].opt == [4, 3, 32, 32]


def test_opt_above_max_names_file_line_and_field() -> None:
    text = GOOD + "  - images:\n      min: [1, 3, 32, 32]\n      opt: [64, 3, 32, 32]\n      max: [32, 3, 32, 32]\n"
    assert error_of(text) == "r.yaml:8 profiles[1].images.opt: opt [64,3,32,32] exceeds max [32,3,32,32]"


def test_every_error_is_reported_with_its_line() -> None:
    text = GOOD.replace("name: net", "name: bad name!") + "build: {optimization_level: 9}\nextra: 1\n"
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, "r.yaml")
    assert info.value.message.startswith("r.yaml:1 name: ") and info.value.message.endswith("(and 2 more)")
    assert info.value.more == (
        "r.yaml:6 build.optimization_level: Input should be less than or equal to 5",
        "r.yaml:7 extra: unknown field",
    )
    many = GOOD + "".join(f"x{i}: 1\n" for i in range(30))
    with pytest.raises(RecipeError) as capped:
        parse_recipe(many, "r.yaml")
    assert len(capped.value.more) == 20 and capped.value.more[-1] == "r.yaml: 10 more errors not shown"


def test_min_above_opt() -> None:
    text = GOOD.replace("min: [1, 3", "min: [6, 3")
    assert error_of(text) == "r.yaml:5 profiles[0].images.opt: opt [4,3,32,32] is below min [6,3,32,32]"


def test_rank_mismatch_and_non_positive_dims() -> None:
    assert "has rank 3 but min" in error_of(GOOD.replace("max: [8, 3, 32, 32]", "max: [8, 3, 32]"))
    assert "dimensions must not be negative" in error_of(GOOD.replace("min: [1, 3", "min: [-1, 3"))


def test_unknown_field_points_at_its_line() -> None:
    assert error_of(GOOD + "precison: fp16\n") == "r.yaml:6 precison: unknown field"


def test_wrong_type_is_not_coerced() -> None:
    message = error_of(GOOD + "build:\n  optimization_level: '3'\n")
    assert message.startswith("r.yaml:7 build.optimization_level: Input should be a valid integer")


def test_optimization_level_range() -> None:
    assert "less than or equal to 5" in error_of(GOOD + "build:\n  optimization_level: 9\n")


@pytest.mark.parametrize("name", ["a/b", "..", "a..b", "-x", "", "x" * 200, "sp ace"])
def test_unsafe_names_are_refused(name: str) -> None:
    assert "name" in error_of(GOOD.replace("name: net", f"name: {json.dumps(name)}"))


@pytest.mark.parametrize("path", ["''", "' '"])
def test_model_path_must_be_given(path: str) -> None:
    assert "model.onnx" in error_of(GOOD.replace("models/net.onnx", path))


def test_sha256_pin_format() -> None:
    assert "64 hexadecimal" in error_of(GOOD.replace("models/net.onnx", "m.onnx\n  sha256: abc"))


def test_invalid_yaml_names_line() -> None:
    assert error_of("name: [unclosed\nmodel: {}\n").startswith("r.yaml:2: invalid YAML")


def test_a_repeated_key_is_refused_at_its_line() -> None:
    """Fails on 843520b: PyYAML kept the last value, so `name: a` then `name: b` built `b`."""
    assert error_of("name: a\nname: b\nmodel:\n  onnx: m.onnx\n") == (
        "r.yaml:2: invalid YAML: key 'name' is repeated (first at line 1)"
    )
    nested = GOOD.replace("  onnx: models/net.onnx\n", "  onnx: models/net.onnx\n  onnx: other.onnx\n")
    assert error_of(nested) == "r.yaml:4: invalid YAML: key 'onnx' is repeated (first at line 3)"
    flow = GOOD.replace("{min: [1, 3, 32, 32], opt:", "{min: [1, 3, 32, 32], min: [1, 3, 32, 32], opt:")
    assert error_of(flow).startswith("r.yaml:5: invalid YAML: key 'min' is repeated")
    # A merge key brings in defaults that explicit keys override: not a repeat.
    merged = "x-defaults: &d {optimization_level: 1}\n" + GOOD + "build:\n  <<: *d\n  optimization_level: 2\n"
    with pytest.raises(RecipeError, match="unknown field"):  # x-defaults is not a recipe field, the merge is fine
        parse_recipe(merged, "r.yaml")


def test_python_tags_are_refused() -> None:
    assert "invalid YAML" in error_of("name: !!python/object/apply:os.system ['true']\n")


def test_not_a_mapping() -> None:
    assert "a recipe is a mapping" in error_of("- just\n- a list\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_model_path_resolves_against_recipe(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(GOOD)
    assert load_recipe(tmp_path / "r.yaml").model_path == (tmp_path / "models" / "net.onnx").resolve()


def test_json_schema_describes_fields() -> None:
    schema = json_schema()
    assert set(schema["required"]) == {"name", "model"}
    assert schema["additionalProperties"] is False
    assert "build" in schema["properties"]
