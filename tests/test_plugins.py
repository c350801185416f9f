"""Plugin libraries in recipes (issue 26, item 2), end to end with real TensorRT-RTX builds.

TensorRT-RTX ships no plugin library and none can be built here without NVIDIA's headers, so the
libraries are real shared libraries that hold no plugin: a static one loads and registers nothing
(the model needs no plugin), a dynamic one is refused by TensorRT-RTX's own loader. The parser's
refusal of a custom operator nobody implements is TensorRT-RTX's, on a model made with onnx.helper.
"""

from __future__ import annotations

import _ctypes
import _json
import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import onnx
import onnx.helper as oh
import pytest

from tests import onnx_models
from tests.test_build_cli import store_is_empty
from trtforge.rules.flavors import find_backend
from trtforge.rules.target import current_gpu

RECIPE = """\
name: {name}
model: {{onnx: {model}}}
backend: tensorrt_rtx
{extra}
"""
MLP_PROFILE = "profiles:\n  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}\n"


def custom_op_model(path: Path) -> Path:
    """y = ScaleByTwo(x), an operator of a custom domain: only a plugin can implement it."""
    x = oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    node = oh.make_node("ScaleByTwo", ["x"], ["y"], domain="trtforge.test", name="custom0")
    graph = oh.make_graph([node], "custom", [x], [y])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("trtforge.test", 1)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_recipe(folder: Path, name: str, model: str, extra: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(RECIPE.format(name=name, model=model, extra=extra))
    return path


def shared_library(source: str, target: Path) -> Path:
    """A copy of a real shared library of this platform (a Python extension module: no plugin)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_custom_operator_without_its_plugin_fails_in_the_parsers_words(
    cli: Callable, tmp_path: Path, store: Path
) -> None:
    custom_op_model(tmp_path / "models" / "custom.onnx")
    recipe = write_recipe(tmp_path, "custom", "models/custom.onnx", "")
    result = cli("build", recipe, "--store", store, "--json")
    assert result.code == 1, result
    [failed] = result.json()
    assert "ONNX parse failed at node 'custom0' (ScaleByTwo)" in failed["error"]
    assert "Plugin not found" in failed["error"]
    assert [e["function"] for e in failed["error_detail"]] == ["checkFallbackPluginImporter"]
    human = cli("build", recipe, "--store", store)
    assert "hint: no plugin implements ScaleByTwo" in human.stderr


def test_a_library_that_does_not_exist_is_refused_before_the_build(
    cli: Callable, tmp_path: Path, store: Path
) -> None:
    onnx_models.save(onnx_models.mlp(), tmp_path / "models" / "mlp.onnx")
    recipe = write_recipe(tmp_path, "mlp", "models/mlp.onnx", MLP_PROFILE + "plugins:\n  - library: libs/nope.so\n")
    for command in ("build", "plan"):
        result = cli(command, recipe, "--store", store)
        assert result.code == 2, result
        assert f"{recipe}:7 plugins[0].library: libs/nope.so not found (looked at {tmp_path / 'libs' / 'nope.so'})" in (
            result.stderr
        ), result
    assert store_is_empty(store)


def test_a_library_that_is_not_a_plugin_library_is_refused_by_the_loader(
    cli: Callable, tmp_path: Path, store: Path
) -> None:
    onnx_models.save(onnx_models.mlp(), tmp_path / "models" / "mlp.onnx")
    shared_library(_ctypes.__file__, tmp_path / "libs" / "libnot_a_plugin.so")
    extra = MLP_PROFILE + "plugins: [{library: libs/libnot_a_plugin.so}]"
    recipe = write_recipe(tmp_path, "mlp", "models/mlp.onnx", extra)
    result = cli("build", recipe, "--store", store, "--json")
    assert result.code == 2, result
    [failed] = result.json()
    assert failed["error"].startswith("plugins[0].library: TensorRT-RTX")
    assert "could not load libnot_a_plugin.so as a plugin library" in failed["error"]
    assert "getCreators" in failed["error"]  # TensorRT-RTX's own loader says what is missing


@pytest.fixture
def built_with_static_library(cli: Callable, tmp_path: Path, store: Path) -> tuple[Path, Path, str]:
    onnx_models.save(onnx_models.mlp(), tmp_path / "models" / "mlp.onnx")
    library = shared_library(_json.__file__, tmp_path / "libs" / "libstatic_ops.so")
    extra = MLP_PROFILE + "plugins:\n  - {library: '${PLUGIN_DIR}/libstatic_ops.so', load: static}\n"
    recipe = write_recipe(tmp_path, "mlp", "models/mlp.onnx", extra)
    env = {"PLUGIN_DIR": str(library.parent)}
    result = cli("build", recipe, "--store", store, "--json", env=env)
    assert result.code == 0, result
    return recipe, library, result.json()[0]["artifact_id"]


def test_a_static_library_is_loaded_recorded_and_shown(
    cli: Callable, store: Path, built_with_static_library: tuple[Path, Path, str]
) -> None:
    _recipe, library, artifact_id = built_with_static_library
    shown = cli("show", artifact_id, "--store", store, "--json").json()
    [plugin] = shown["details"]["plugins"]
    assert plugin == {
        "library": str(library),
        "name": "libstatic_ops.so",
        "sha256": sha256(library),
        "load": "static",
        "serialized": False,
    }
    assert shown["recipe"]["plugins"] == [
        {"library": "${PLUGIN_DIR}/libstatic_ops.so", "sha256": sha256(library), "load": "static", "serialize": False}
    ]
    human = cli("show", artifact_id, "--store", store).stdout
    assert "plugin libraries (1)" in human and f"libstatic_ops.so sha256 {sha256(library)}" in human


def test_lookup_says_which_library_the_plan_needs(
    cli: Callable, store: Path, built_with_static_library: tuple[Path, Path, str]
) -> None:
    _recipe, library, artifact_id = built_with_static_library
    rtx = find_backend("tensorrt_rtx")
    target = ("--flavor", "tensorrt_rtx", "--trt", rtx.version, "--cc", "8.6", "--gpu", "NVIDIA RTX A4000")
    found = cli("lookup", "mlp", *target, "--store", store, "--json")
    assert found.code == 0, found
    best = found.json()["best"]
    assert best["artifact_id"] == artifact_id
    assert best["metadata"]["plugins_needed"] == [{"name": "libstatic_ops.so", "sha256": sha256(library)}]
    note = "needs plugin libraries loaded before the plan deserializes: "
    note += f"libstatic_ops.so (sha256 {sha256(library)[:12]})"
    assert note in best["notes"]
    human = cli("lookup", "mlp", *target, "--store", store)
    assert note in human.stderr and human.stdout.strip() == best["path"]  # stdout is the path alone


def test_the_epcontext_export_says_the_provider_must_load_it(
    cli: Callable, tmp_path: Path, store: Path, built_with_static_library: tuple[Path, Path, str]
) -> None:
    _recipe, library, artifact_id = built_with_static_library
    out = tmp_path / "out" / "mlp_ctx.onnx"
    result = cli("deploy", "epcontext", artifact_id, "-o", out, "--store", store, "--json")
    assert result.code == 0, result
    notes = result.json()["notes"]
    assert any(f"plugin libraries loaded by the provider's process: {library}" in note for note in notes), notes


def test_the_librarys_bytes_are_in_the_key(
    cli: Callable, store: Path, built_with_static_library: tuple[Path, Path, str]
) -> None:
    recipe, library, artifact_id = built_with_static_library
    env = {"PLUGIN_DIR": str(library.parent)}
    same = cli("build", recipe, "--store", store, "--json", env=env).json()[0]
    assert same["status"] == "cached" and same["artifact_id"] == artifact_id
    with open(library, "ab") as handle:  # another build of the library
        handle.write(b"\0")
    planned = cli("plan", recipe, "--store", store, "--json", env=env).json()[0]
    assert planned["status"] == "build" and planned["build_key"] != same["build_key"]
    rebuilt = cli("build", recipe, "--store", store, "--json", env=env).json()[0]
    assert rebuilt["status"] == "built" and rebuilt["build_key"] == planned["build_key"]
    # where the library lives is not in the key: the same bytes elsewhere are the same build
    moved = library.parent.parent / "elsewhere"
    moved.mkdir()
    shutil.copyfile(library, moved / library.name)
    again = cli("build", recipe, "--store", store, "--json", env={"PLUGIN_DIR": str(moved)}).json()[0]
    assert again["status"] == "cached" and again["build_key"] == rebuilt["build_key"]


def test_a_pin_that_is_not_the_librarys_digest_is_refused(cli: Callable, tmp_path: Path, store: Path) -> None:
    onnx_models.save(onnx_models.mlp(), tmp_path / "models" / "mlp.onnx")
    library = shared_library(_json.__file__, tmp_path / "libs" / "libx.so")
    pin = "0" * 64
    extra = MLP_PROFILE + f"plugins: [{{library: libs/libx.so, load: static, sha256: '{pin}'}}]"
    result = cli("build", write_recipe(tmp_path, "mlp", "models/mlp.onnx", extra), "--store", store)
    assert result.code == 2
    assert f"plugins[0].library: libs/libx.so has sha256 {sha256(library)}, but the recipe pins {pin}" in result.stderr
    assert store_is_empty(store)


def test_serializing_needs_a_version_compatible_plan_which_tensorrt_rtx_builds_on_a_gpu(
    cli: Callable, tmp_path: Path, store: Path
) -> None:
    onnx_models.save(onnx_models.mlp(), tmp_path / "models" / "mlp.onnx")
    shared_library(_json.__file__, tmp_path / "libs" / "libvc.so")
    extra = MLP_PROFILE + "plugins: [{library: libs/libvc.so, serialize: true}]\n"
    refused = cli("build", write_recipe(tmp_path, "a", "models/mlp.onnx", extra), "--store", store)
    assert refused.code == 2 and "needs compatibility.version_compatible: true" in refused.stderr
    vc = "compatibility: {version_compatible: true, exclude_lean_runtime: true}\n"
    planned = cli("plan", write_recipe(tmp_path, "b", "models/mlp.onnx", extra + vc), "--store", store, "--json")
    if current_gpu() is None:  # serializing a plugin is a GPU build for TensorRT-RTX: refused before any work
        assert planned.code == 2, planned
        assert "cannot complete it and this machine has no GPU" in planned.json()[0]["error"]
    else:
        assert planned.code == 0 and planned.json()[0]["status"] == "build", planned


def test_reproduce_loads_the_recorded_library_again(
    cli: Callable, store: Path, built_with_static_library: tuple[Path, Path, str]
) -> None:
    _recipe, library, artifact_id = built_with_static_library
    shown = cli("show", artifact_id, "--store", store, "--json").json()
    assert shown["details"]["files"] == [
        {"field": "plugins[0].library", "path": str(library), "sha256": sha256(library)}
    ]
    again = cli("build", "--reproduce", artifact_id, "--store", store, "--json")
    assert again.code == 0, again
    assert again.json()["record_key_matches"] is True
    with open(library, "ab") as handle:
        handle.write(b"\0")
    changed = cli("build", "--reproduce", artifact_id, "--store", store)
    assert changed.code == 2
    assert f"plugins[0].library {library} of artifact {artifact_id[:12]} changed" in changed.stderr
