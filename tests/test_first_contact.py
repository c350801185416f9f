"""First contact (issue 13): a model a user already has builds without ceremony.

Each test here fails on 55eb6bf (before issue 13): static models needed `profiles`, rank-0
shapes and no-input models could not be described, model paths were fenced to the recipe's
directory, `trtforge build model.onnx` was read as YAML, and parser errors were not in --json.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import onnx_models
from trtforge.core.errors import RecipeError
from trtforge.rules.recipe import deny_file_path, load_recipe, parse_recipe

TWO_LINES = "name: {name}\nmodel: {{onnx: {model}}}\n"


def two_line_recipe(folder: Path, name: str, model: object, model_text: str | None = None) -> Path:
    """A recipe of just name + model, the model saved beside it."""
    onnx_models.save(model, folder / f"{name}.onnx")  # type: ignore[arg-type]
    path = folder / f"{name}.yaml"
    path.write_text(TWO_LINES.format(name=name, model=model_text or f"{name}.onnx"))
    return path


# -- item 1: profiles are optional when every input is static ------------------------------


def test_static_model_builds_from_a_two_line_recipe(cli, tmp_path: Path, store: Path) -> None:
    recipe = two_line_recipe(tmp_path, "cnn", onnx_models.static_cnn())
    first = cli("build", recipe, "--store", store, "--json")
    assert first.code == 0, first
    assert first.json()[0]["status"] == "built"
    again = cli("build", recipe, "--store", store, "--json")
    assert again.code == 0 and again.json()[0]["status"] == "cached", again
    shown = cli("show", first.json()[0]["artifact_id"], "--store", store, "--json")
    assert shown.json()["profiles"] == [], shown


def test_static_model_verifies_reference_only_at_its_own_shapes(cli, tmp_path: Path, store: Path) -> None:
    recipe = two_line_recipe(tmp_path, "cnn", onnx_models.static_cnn())
    for target in (recipe, tmp_path / "cnn.onnx"):
        result = cli("verify", target, "--reference-only", "--store", store, "--json")
        assert result.code == 0, result
        [point] = result.json()["points"]
        assert point["label"] == "static" and point["outputs"][0]["shape"] == [1, 4, 1, 1]


def test_dynamic_input_without_profile_is_named_and_a_profile_suggested(cli, tmp_path: Path, store: Path) -> None:
    recipe = two_line_recipe(tmp_path, "mlp", onnx_models.mlp())  # x[N, 4]
    result = cli("build", recipe, "--store", store)
    assert result.code == 2, result
    assert "dynamic input 'x' [N,4] (dynamic dimension 0 (N)) and no optimization profile covers them" in result.stderr
    assert "Traceback" not in result.stderr
    hint = next(line for line in result.stderr.splitlines() if line.startswith("hint:"))
    suggested = hint.split("`")[1]
    assert suggested == 'profiles: [{"x": {min: [1, 4], opt: [1, 4], max: [1, 4]}}]'
    # The suggestion is a working recipe line: pasted in, the model builds.
    recipe.write_text(recipe.read_text() + suggested + "\n")
    built = cli("build", recipe, "--store", store, "--json")
    assert built.code == 0 and built.json()[0]["status"] == "built", built


# -- item 2: rank-0 inputs ------------------------------------------------------------------


def test_scalar_inputs_can_be_written_and_built(cli, tmp_path: Path, store: Path) -> None:
    recipe = parse_recipe("name: s\nmodel: {onnx: s.onnx}\nprofiles:\n  - x: {min: [], opt: [], max: []}\n")
    assert recipe.profiles[0]["x"].opt == []
    bare = two_line_recipe(tmp_path, "scalar", onnx_models.scalar_input())
    with_profile = tmp_path / "scalar_profile.yaml"
    with_profile.write_text(
        TWO_LINES.format(name="scalar-profile", model="scalar.onnx") + "profiles: [{x: {min: [], opt: [], max: []}}]\n"
    )
    result = cli("build", bare, with_profile, "--store", store, "--json")
    assert result.code == 0, result
    assert [r["status"] for r in result.json()] == ["built", "built"]


def test_zero_sized_dimensions_are_fixed_sizes(cli, tmp_path: Path, store: Path) -> None:
    """A dimension of 0 is an empty, fixed size: neither dynamic nor refused in a profile."""
    assert parse_recipe("name: z\nmodel: {onnx: z.onnx}\nprofiles: [{x: {min: [0, 4], opt: [0, 4], max: [2, 4]}}]\n")
    recipe = two_line_recipe(tmp_path, "zero", onnx_models.zero_sized_input())
    result = cli("build", recipe, "--store", store, "--json")
    assert result.code == 0 and result.json()[0]["status"] == "built", result


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("1", "YAML reads input name 1 in profiles[0] as a number; quote it: '1'"),
        ("on", "YAML reads an input name in profiles[0] as true (from on/off/yes/no/true/false); quote the name"),
    ],
)
def test_input_names_yaml_reads_as_other_things_are_named(key: str, message: str) -> None:
    profile = "{min: [1], opt: [1], max: [1]}"
    with pytest.raises(RecipeError) as info:
        parse_recipe(f"name: n\nmodel: {{onnx: m.onnx}}\nprofiles:\n  - {key}: {profile}\n", "r.yaml")
    assert str(info.value) == f"r.yaml:3 profiles: {message}"
    quoted = parse_recipe(f"name: n\nmodel: {{onnx: m.onnx}}\nprofiles:\n  - '{key}': {profile}\n")
    assert list(quoted.profiles[0]) == [key]


# -- item 3: models without runtime inputs --------------------------------------------------


def test_models_without_runtime_inputs_build(cli, tmp_path: Path, store: Path) -> None:
    recipes = [
        two_line_recipe(tmp_path, "initializers-only", onnx_models.initializer_inputs_only()),
        two_line_recipe(tmp_path, "no-inputs", onnx_models.no_graph_inputs()),
    ]
    result = cli("build", *recipes, "--store", store, "--json")
    assert result.code == 0, result
    assert [r["status"] for r in result.json()] == ["built", "built"]


# -- item 4: model paths are the user's -----------------------------------------------------


def test_models_beside_recipes_shared_mounts_home_and_variables(cli, tmp_path: Path, store: Path) -> None:
    models = tmp_path / "models"
    onnx_models.save(onnx_models.static_cnn(), models / "cnn.onnx")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    spellings = {
        "up": "../models/cnn.onnx",
        "absolute": str(models / "cnn.onnx"),
        "home": "~/cnn.onnx",
        "braced": "${MODELS}/cnn.onnx",
        "bare": "$MODELS/cnn.onnx",
    }
    for name, spelled in spellings.items():
        (recipes / f"{name}.yaml").write_text(TWO_LINES.format(name="cnn", model=f'"{spelled}"'))
    env = {"HOME": str(models), "MODELS": str(models)}
    result = cli("build", *(recipes / f"{n}.yaml" for n in spellings), "--store", store, "--json", env=env)
    assert result.code == 0, result
    # The same model: the same key, built once (which recipe builds is up to --jobs' scheduling).
    assert sorted(r["status"] for r in result.json()) == ["built"] + ["cached"] * 4
    (recipes / "unset.yaml").write_text(TWO_LINES.format(name="unset", model="'${NOT_SET_ANYWHERE}/cnn.onnx'"))
    unset = cli("build", recipes / "unset.yaml", "--store", store, "--json")
    assert unset.code == 2, unset
    assert unset.json()[0]["error"].endswith(
        "unset.yaml:2 model.onnx ${NOT_SET_ANYWHERE}/cnn.onnx: environment variable NOT_SET_ANYWHERE is not set"
    )


def test_deny_file_and_verify_data_paths_expand_like_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    monkeypatch.setenv("SHARED", str(shared))
    monkeypatch.delenv("NOPE", raising=False)
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.parent.mkdir()
    recipe.write_text(
        "name: r\nmodel: {onnx: /models/m.onnx}\n"
        "tactics: {deny_file: '${SHARED}/deny.yaml'}\nverify: {data: ../inputs/feed.npz}\n"
    )
    loaded = load_recipe(recipe)
    assert loaded.model_path == Path("/models/m.onnx")
    assert deny_file_path(loaded) == shared / "deny.yaml"
    assert loaded.resolve_path(loaded.recipe.verify.data or "", "verify", "data") == tmp_path / "inputs" / "feed.npz"
    recipe.write_text("name: r\nmodel: {onnx: m.onnx}\nverify:\n  data: $NOPE/feed.npz\n")
    with pytest.raises(RecipeError, match=r"r.yaml:4 verify.data \$NOPE/feed.npz: environment variable NOPE is not"):
        load_recipe(recipe)


# -- item 5: parser failures ----------------------------------------------------------------


def test_parser_failure_is_one_line_and_json_has_every_parser_message(cli, tmp_path: Path, store: Path) -> None:
    folder = tmp_path / "bad"
    onnx_models.save(onnx_models.unsupported_op(), folder / "bad.onnx")
    recipe = folder / "bad.yaml"
    recipe.write_text("name: bad\nmodel: {onnx: bad.onnx}\nprofiles: [{x: {min: [1, 4], opt: [1, 4], max: [2, 4]}}]\n")
    result = cli("build", recipe, "--store", store, "--json")
    assert result.code == 1, result
    [failed] = result.json()
    assert failed["error"].startswith("ONNX parse failed at node 'mystery_node' (MysteryOp): ")
    assert "\n" not in failed["error"]
    detail = failed["error_detail"]
    assert detail and all(d["node_name"] == "mystery_node" and d["operator"] == "MysteryOp" for d in detail)
    assert all(d["message"] and d["code"] for d in detail)
    plain = cli("build", recipe, "--store", store)
    assert plain.code == 1 and "Traceback" not in plain.stderr
    assert sum(line.startswith("error:") for line in plain.stderr.splitlines()) == 1, plain


def test_what_tensorrt_cannot_take_is_named_in_words(cli, tmp_path: Path, store: Path) -> None:
    """The corpus's most common refusals, said in one plain line (TensorRT fails on both too)."""
    recipes = [
        two_line_recipe(tmp_path, "uint32", onnx_models.uint32_input()),
        two_line_recipe(tmp_path, "reshape", onnx_models.shape_tensor_input()),
    ]
    result = cli("build", *recipes, "--store", store, "--json")
    assert result.code == 1 and "Traceback" not in result.stderr, result
    uint32, reshape = result.json()
    assert uint32["error"] == "ONNX parse failed at input 'x': element type uint32 is not supported by TensorRT"
    assert "convertDtype" in uint32["error_detail"][0]["message"]  # TensorRT's own words stay in --json
    assert reshape["error"] == (
        "input 'shape' [2] is a shape tensor: TensorRT needs its values in an optimization profile, "
        "which a recipe cannot give"
    )


# -- `trtforge build model.onnx` ------------------------------------------------------------


def test_build_an_onnx_file_directly(cli, tmp_path: Path, store: Path) -> None:
    model = onnx_models.save(onnx_models.static_cnn(), tmp_path / "My Model (v2).onnx")
    first = cli("build", model, "--store", store, "--json")
    assert first.code == 0, first
    assert first.json()[0]["name"] == "My-Model-v2" and first.json()[0]["status"] == "built"
    named = cli("build", model, "--name", "detector", "--store", store, "--json")
    assert named.code == 0 and named.json()[0]["name"] == "detector", named
    listed = cli("list", "--store", store, "--json").json()
    assert sorted(a["name"] for a in listed) == ["My-Model-v2", "detector"]
    # The same model through a two-line recipe is the same build key: the name is not part of it.
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TWO_LINES.format(name="detector", model='"My Model (v2).onnx"'))
    via_recipe = cli("build", recipe, "--store", store, "--json")
    assert via_recipe.json()[0]["build_key"] == named.json()[0]["build_key"], via_recipe
    both = cli("build", model, recipe, "--name", "x", "--store", store)
    assert both.code == 2 and "--name names the artifact of one ONNX file" in both.stderr, both
    missing = cli("build", tmp_path / "nope.onnx", "--store", store, "--json")
    assert missing.code == 2 and "model file not found" in missing.json()[0]["error"], missing
    dynamic = onnx_models.save(onnx_models.mlp(), tmp_path / "mlp.onnx")
    refused = cli("build", dynamic, "--store", store)
    assert refused.code == 2 and f"error: {dynamic}: dynamic input 'x' [N,4]" in refused.stderr, refused
    assert "hint: write a recipe (name, model, profiles) for this model, e.g. `profiles: [" in refused.stderr


@pytest.mark.parametrize(
    ("stem", "name"),
    [
        ("resnet50", "resnet50"),
        ("my model", "my-model"),
        ("..x", "x"),
        ("a..b", "a.b"),
        ("__", "model"),
        ("é", "model"),
    ],
)
def test_names_from_file_stems_fit_the_name_rules(stem: str, name: str) -> None:
    from trtforge.rules.recipe import name_from_stem  # new in issue 13 (imported here so the others run on old code)

    assert name_from_stem(stem) == name
    assert parse_recipe(f"name: {name}\nmodel: {{onnx: m.onnx}}\n").name == name
