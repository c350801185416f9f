"""The validated-recipe cache (trtforge/resolution/resolved_cache.py) never serves a stale resolution.

The invariant every test checks: what the cache answers for a recipe is either nothing (resolve
it the full way) or exactly the build key the full resolution gives now. Each test changes one
input resolution reads and asserts the cache does not answer with the old resolution.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests import onnx_models
from tests.conftest import MLP_RECIPE as RECIPE
from trtforge.resolution import resolved_cache as resolved_module
from trtforge.resolution.resolve import resolve
from trtforge.resolution.resolved_cache import ResolvedCache
from trtforge.rules.digests import DigestCache
from trtforge.rules.flavors import BackendInfo, find_backend


@pytest.fixture
def setup(tmp_path: Path):
    """A recipe with a model, a store root, and helpers to remember and ask."""
    store = tmp_path / "store"
    store.mkdir()
    folder = tmp_path / "recipes"
    onnx_models.save(onnx_models.mlp(0), folder / "models" / "m.onnx")
    recipe = folder / "r.yaml"
    recipe.write_text(RECIPE.format(name="r", model="models/m.onnx", level=0))
    cache_dir = store / "cache" / "resolved"

    def full(path: Path = recipe) -> str:
        return resolve(path, digests=DigestCache(None)).build_key

    def remember(path: Path = recipe, *, check: bool = True) -> str:
        resolution = resolve(path, digests=DigestCache(None))
        cache = ResolvedCache(cache_dir)
        # check=False: as on a machine whose backend can build it (TensorRT-RTX refuses deny entries)
        cache.remember(resolution, resolution.check_buildable() if check else [])
        cache.save()
        return resolution.build_key

    def ask(path: Path = recipe) -> str | None:
        quick = ResolvedCache(cache_dir).lookup(path, DigestCache(None))
        return None if quick is None else quick.build_key

    return recipe, remember, ask, full


def _same_stat_rewrite(path: Path, text: str) -> None:
    """Replace the file's bytes keeping its size and mtime (what a stat-keyed cache would miss)."""
    before = path.stat()
    assert len(text.encode()) == before.st_size
    path.write_text(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_an_unchanged_recipe_is_answered_with_the_full_key(setup) -> None:
    _recipe, remember, ask, full = setup
    assert ask() is None  # nothing remembered yet
    key = remember()
    assert ask() == key == full()


def test_an_edited_recipe_is_not_served(setup) -> None:
    recipe, remember, ask, full = setup
    old = remember()
    _same_stat_rewrite(recipe, recipe.read_text().replace("optimization_level: 0", "optimization_level: 1"))
    assert ask() is None
    assert full() != old


def test_touch_serves_the_same_key_and_replace_is_not_served(setup, tmp_path: Path) -> None:
    recipe, remember, ask, full = setup
    key = remember()
    os.utime(recipe)  # touch: same bytes, same resolution
    assert ask() == key == full()
    replacement = tmp_path / "new.yaml"
    replacement.write_text(RECIPE.format(name="s", model="models/m.onnx", level=0))
    os.replace(replacement, recipe)  # replaced by another file (rename over it)
    assert ask() is None
    assert full() != key


def test_a_sidecar_change_is_not_served(setup) -> None:
    recipe, remember, ask, full = setup
    sidecar = recipe.parent / "r.deny.yaml"
    sidecar.write_text("deny:\n  - {layer: a, tactic: '0x0000000000000001', reason: r}\n")
    recipe.write_text(recipe.read_text() + "tactics:\n  deny_file: r.deny.yaml\n")
    old = remember(check=False)
    assert ask() == old
    _same_stat_rewrite(sidecar, sidecar.read_text().replace("0001", "0002"))
    assert ask() is None
    assert full() != old
    new = remember(check=False)
    assert ask() == new
    sidecar.unlink()
    assert ask() is None  # gone: the full path reports it
    assert new != old


def test_a_different_trtforge_version_is_not_served(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    _recipe, remember, ask, _full = setup
    remember()
    monkeypatch.setattr(resolved_module, "trtforge_version", lambda: "999.0")
    assert ask() is None


def test_an_edited_deciding_module_is_not_served(setup, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A development checkout changes code without a version: the modules' stat is keyed."""
    _recipe, remember, ask, _full = setup
    remember()
    fake = tmp_path / "pkg" / "resolved.py"
    fake.parent.mkdir()
    fake.write_text("x")
    monkeypatch.setattr(resolved_module, "__file__", str(fake))
    assert ask() is None


def test_a_different_backend_is_not_served(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    _recipe, remember, ask, _full = setup
    remember()
    real = find_backend("tensorrt_rtx")
    for other in (BackendInfo(real.flavor, "9.9.9", real.cuda), BackendInfo(real.flavor, real.version, "cu99")):
        monkeypatch.setattr(resolved_module, "find_backend", lambda requested, other=other: other)
        assert ask() is None


def test_env_variables_home_and_build_env_are_keyed(setup, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    recipe, remember, ask, full = setup
    other = tmp_path / "other"
    onnx_models.save(onnx_models.mlp(1), other / "m.onnx")
    monkeypatch.setenv("MODELS", str(recipe.parent / "models"))
    recipe.write_text(RECIPE.format(name="r", model="${MODELS}/m.onnx", level=0))
    key = remember()
    assert ask() == key
    monkeypatch.setenv("MODELS", str(other))  # another model through the same recipe text
    assert ask() is None
    assert full() != key
    monkeypatch.delenv("MODELS")
    assert ask() is None  # unset: the full path names the variable

    recipe.write_text(RECIPE.format(name="r", model="~/m.onnx", level=0))
    monkeypatch.setenv("HOME", str(recipe.parent / "models"))
    key = remember()
    assert ask() == key
    monkeypatch.setenv("HOME", str(other))
    assert ask() is None
    assert full() != key

    monkeypatch.setenv("NVRTC_APPEND_FLAGS", "-O0")  # a BUILD_ENV variable is part of the target
    assert ask() is None


def test_a_changed_model_gives_the_new_key_and_a_broken_pin_is_not_served(setup) -> None:
    recipe, remember, ask, full = setup
    key = remember()
    model = recipe.parent / "models" / "m.onnx"
    onnx_models.save(onnx_models.mlp(5), model)
    assert ask() == full() != key  # the model digest is taken now, never remembered by the entry
    pinned = f"  onnx: models/m.onnx\n  sha256: {'a' * 64}\n"
    recipe.write_text(recipe.read_text().replace("  onnx: models/m.onnx\n", pinned))
    with pytest.raises(Exception, match="pins"):
        full()
    assert ask() is None


def test_a_torn_or_foreign_entry_is_ignored(setup) -> None:
    recipe, remember, ask, _full = setup
    remember()
    [entry] = (recipe.parents[1] / "store" / "cache" / "resolved").glob("*.json")
    data = json.loads(entry.read_text())
    inner = json.loads(data["entry"])
    inner["fingerprint"] = "0" * 64
    data["entry"] = json.dumps(inner)  # edited without its checksum
    entry.write_text(json.dumps(data))
    assert ask() is None
    entry.write_bytes(entry.read_bytes()[:40])
    assert ask() is None


def test_cli_edit_after_a_remembered_hit_rebuilds(cli, mlp_recipe, store: Path) -> None:
    """End to end: hit through the cache, edit the recipe in place (same size, same mtime), build."""
    recipe = mlp_recipe("m")
    [built] = cli("build", recipe, "--store", store, "--json").json()
    [hit] = cli("build", recipe, "--store", store, "--json").json()
    assert hit["status"] == "cached" and hit["build_key"] == built["build_key"]
    assert list((store / "cache" / "resolved").glob("*.json"))
    _same_stat_rewrite(recipe, recipe.read_text().replace("optimization_level: 0", "optimization_level: 1"))
    [rebuilt] = cli("build", recipe, "--store", store, "--json").json()
    assert rebuilt["status"] == "built" and rebuilt["build_key"] != built["build_key"]
    [planned] = cli("plan", recipe, "--store", store, "--json").json()
    assert planned["build_key"] == rebuilt["build_key"]


def test_a_hit_through_the_cache_loads_no_recipe_models(cli, example_recipe: Path, store: Path, tmp_path: Path) -> None:
    assert cli("build", example_recipe, "--store", store, "--json").code == 0
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, sys\n"
        "from trtforge.cli import app\n"
        f"sys.argv = ['trtforge', 'build', {str(example_recipe)!r}, '--store', {str(store)!r}, '--json']\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "names = ('trtforge.rules.recipe', 'trtforge.rules.capabilities', 'trtforge.rules.record',"
        " 'trtforge.cli.bundle', 'rich')\n"
        "sys.stderr.write('MODULES=' + json.dumps(sorted(set(names) & set(sys.modules))) + '\\n')\n"
    )
    import subprocess

    from tests.conftest import REPO, subprocess_env

    proc = subprocess.run([sys.executable, probe], capture_output=True, text=True, env=subprocess_env(), cwd=REPO)
    assert '"status": "cached"' in proc.stdout, proc
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("MODULES=")]
    assert json.loads(line.removeprefix("MODULES=")) == []


def test_a_changed_plugin_library_is_not_served(setup) -> None:
    """A file the recipe names besides the model is keyed by its bytes; the cache re-checks them."""
    recipe, remember, ask, full = setup
    library = recipe.parent / "libs" / "libplugin.so"
    library.parent.mkdir()
    library.write_bytes(b"\x7fELF plugin v1")
    recipe.write_text(recipe.read_text() + "plugins: [{library: libs/libplugin.so, load: static}]\n")
    old = remember()
    assert ask() == old
    _same_stat_rewrite(library, "\x7fELF plugin v2")
    assert ask() is None
    assert full() != old
    library.unlink()
    assert ask() is None  # a missing library: the full path reports it


def test_the_code_stamp_covers_the_modules_that_decide_a_resolution() -> None:
    """Regression: the stamp looked for rules/ and core/ modules beside resolved_cache.py (in
    resolution/) after the layout became folders, found none, so editing the recipe format or the
    capability table left remembered resolutions standing."""
    import trtforge.core.recipe_paths
    import trtforge.resolution.resolve
    import trtforge.rules.capabilities
    import trtforge.rules.keys
    import trtforge.rules.recipe

    stamped = {tuple(entry[1:]) for entry in resolved_module.code_stamp()[1:]}
    for module in (
        trtforge.rules.recipe,
        trtforge.rules.capabilities,
        trtforge.rules.keys,
        trtforge.resolution.resolve,
        trtforge.core.recipe_paths,
    ):
        stat = os.stat(module.__file__)
        assert (stat.st_size, stat.st_mtime_ns) in stamped, module.__name__
def test_the_code_stamp_names_modules_that_exist() -> None:
    """Editing a module that decides a resolution invalidates remembered ones: each must be found
    (after the move into layer folders the names pointed nowhere, so no edit invalidated anything)."""
    from trtforge.resolution.resolved_cache import code_stamp

    stamp = code_stamp()
    assert len(stamp) > 10 and all(size is not None for _name, size, _mtime in stamp[1:]), stamp
