"""Deny entries: the matching rules, the recipe field, the sidecar file and the build key."""

from __future__ import annotations

from pathlib import Path

import pytest

from trtforge.core.errors import RecipeError
from trtforge.rules.denylist import (
    DenyEntry,
    entry_hits,
    layer_matches,
    parse_deny_file,
    parse_layer_info,
    tactic_matches,
    violations_in,
)
from trtforge.rules.flavors import BackendInfo
from trtforge.rules.keys import build_key
from trtforge.rules.recipe import load_recipe, parse_recipe, with_deny_file
from trtforge.rules.target import BuildTarget

KERNEL = "sm80_xmma_gemm_f32f32_tf32f32_f32_nn_n_tilesize32x32x64_stage3_warpsize2x1x2_tensor16x8x8"


def entry(layer: str, tactic: str, reason: str = "drift") -> DenyEntry:
    return DenyEntry(layer=layer, tactic=tactic, reason=reason)


# -- matching -----------------------------------------------------------------------------


def test_layer_exact_glob_and_bracketed_names() -> None:
    assert layer_matches("conv1", "conv1")
    assert not layer_matches("conv1", "conv10")
    assert layer_matches("conv*", "conv10") and layer_matches("block?/conv", "block3/conv")
    assert not layer_matches("conv*", "head/conv1")
    # TensorRT names with glob characters match themselves exactly.
    assert layer_matches("{ForeignNode[fc1...act2]}", "{ForeignNode[fc1...act2]}")
    assert not layer_matches("{ForeignNode[fc1...act2]}", "{ForeignNode[f...]}")
    # TensorRT < 10 repeats layers per profile with a suffix; an entry covers every profile.
    assert layer_matches("fc2 + bias2", "fc2 + bias2 [profile 1]")


def test_tactic_by_name_id_or_star() -> None:
    assert tactic_matches("*", name=None, tactic_id=None)
    assert tactic_matches(KERNEL, name=KERNEL, tactic_id="0x665ded9abbf88")
    assert not tactic_matches(KERNEL, name="other_kernel", tactic_id="0x665ded9abbf88")
    assert tactic_matches("0x665DED9ABBF88", name=KERNEL, tactic_id="0x665ded9abbf88")
    assert tactic_matches("0x000000000000001f", tactic_id=31) and tactic_matches("31", tactic_id="0x1f")
    assert not tactic_matches("0x1f", name="0x1f", tactic_id=None)  # ids never match names
    assert not tactic_matches(KERNEL, name=None, tactic_id="0x1")


def test_entry_hits_needs_both_layer_and_tactic() -> None:
    denied = entry("matMul*", "0x665ded9abbf88")
    assert entry_hits(denied, "matMul1", tactic_id="0x665ded9abbf88")
    assert not entry_hits(denied, "matMul1", tactic_id="0x393e4ef8ad243")
    assert not entry_hits(denied, "softmax", tactic_id="0x665ded9abbf88")


def test_entry_fields_are_strict() -> None:
    with pytest.raises(ValueError, match="whitespace"):
        DenyEntry(layer=" conv1", tactic="*", reason="x")
    with pytest.raises(ValueError):
        DenyEntry(layer="conv1", tactic="*")  # a reason is required


def test_layer_info_and_violations() -> None:
    info = {
        "Layers": [
            {
                "Name": "matMul1_myl0_0",
                "LayerType": "gemm",
                "Inputs": [{"Name": "input"}],
                "Outputs": [],
                "TacticName": KERNEL,
            },
            {"Name": "relu [profile 1]", "Outputs": [{"Name": "r [profile 1]"}], "TacticValue": "0x0000000000000007"},
            "a layer name only",
        ],
        "Bindings": ["input", "r"],
    }
    layers = parse_layer_info(info)
    assert [layer.name for layer in layers] == ["matMul1_myl0_0", "relu", "a layer name only"]
    assert layers[1].outputs == ("r",) and layers[1].tactic == "0x0000000000000007"
    found = violations_in([entry("matMul1*", KERNEL), entry("relu", "7"), entry("relu", "0x8")], layers)
    assert [(v.layer, v.entry_tactic) for v in found] == [("matMul1_myl0_0", KERNEL), ("relu", "7")]
    with pytest.raises(ValueError, match="no 'Layers'"):
        parse_layer_info({"Bindings": []})


# -- recipe field and sidecar -------------------------------------------------------------

RECIPE = """\
name: net
model:
  onnx: models/net.onnx
profiles:
  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}
"""


def test_recipe_inline_entries_and_deny_file_path_rules() -> None:
    recipe = parse_recipe(
        RECIPE
        + "tactics:\n  deny:\n    - {layer: 'conv*', tactic: '*', reason: fp16 overflow}\n  deny_file: deny.yaml\n"
    )
    assert recipe.tactics.deny[0].layer == "conv*" and recipe.tactics.deny_file == "deny.yaml"
    with pytest.raises(RecipeError, match=r"tactics\.deny_file: must be a path"):
        parse_recipe(RECIPE + "tactics:\n  deny_file: ''\n", "r.yaml")
    with pytest.raises(RecipeError) as info:
        parse_recipe(RECIPE + "tactics:\n  deny:\n    - layer: conv1\n      tactic: '*'\n", "r.yaml")
    assert str(info.value) == "r.yaml:8 tactics.deny[0].reason: field required"


def test_sidecar_errors_name_file_line_and_field() -> None:
    text = "deny:\n  - layer: a\n    tactic: '*'\n    reason: ok\n  - layer: b\n    tactic: [5]\n    reason: x\n"
    with pytest.raises(RecipeError) as info:
        parse_deny_file(text, "deny.yaml")
    assert str(info.value).startswith("deny.yaml:6 deny[1].tactic: Input should be a valid string")
    # An unquoted id is read by YAML as an integer: still the same tactic id.
    [unquoted] = parse_deny_file("deny:\n  - {layer: a, tactic: 0x1f, reason: x}\n", "deny.yaml")
    assert unquoted.tactic == "31" and unquoted.key() == ("a", "0x1f")
    with pytest.raises(RecipeError, match=r"deny.yaml:3 deny\[0\].layr: unknown field"):
        parse_deny_file("deny:\n  - layer: a\n    layr: a\n    tactic: '*'\n    reason: x\n", "deny.yaml")
    with pytest.raises(RecipeError, match=r"deny.yaml:4: invalid YAML: key 'tactic' is repeated \(first at line 3\)"):
        parse_deny_file("deny:\n  - layer: a\n    tactic: '*'\n    tactic: '0x1f'\n    reason: x\n", "deny.yaml")
    with pytest.raises(RecipeError, match=r"deny.yaml:1: a deny file is a mapping"):
        parse_deny_file("- layer: a\n", "deny.yaml")
    with pytest.raises(RecipeError, match=r"deny.yaml:3: invalid YAML"):
        parse_deny_file("deny:\n  - [\n", "deny.yaml")
    assert parse_deny_file("", "deny.yaml") == []


def write_recipe(folder: Path, extra: str = "", sidecar: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "net.yaml"
    path.write_text(RECIPE + extra)
    if sidecar is not None:
        (folder / "deny.yaml").write_text(sidecar)
    return path


def key_of(path: Path) -> str:
    loaded = with_deny_file(load_recipe(path))
    return build_key(loaded.recipe, "0" * 64, BuildTarget("tensorrt", "10.8.0"))


def test_deny_entries_are_part_of_the_build_key(tmp_path: Path) -> None:
    plain = key_of(write_recipe(tmp_path / "a"))
    inline = "tactics:\n  deny:\n    - {layer: fc1, tactic: '0x1F', reason: drift}\n"
    with_entry = key_of(write_recipe(tmp_path / "b", inline))
    assert with_entry != plain
    # The same entry from a sidecar, with another reason and an equivalent id: the same engine.
    sidecar = "deny:\n  - {layer: fc1, tactic: '31', reason: other words}\n"
    via_file = key_of(write_recipe(tmp_path / "c", "tactics:\n  deny_file: deny.yaml\n", sidecar))
    assert via_file == with_entry
    # Appending to the sidecar changes the key.
    more = sidecar + "  - {layer: fc2, tactic: '*', reason: x}\n"
    assert key_of(write_recipe(tmp_path / "d", "tactics:\n  deny_file: deny.yaml\n", more)) != via_file
    # Order does not matter.
    two = "tactics:\n  deny:\n    - {layer: b, tactic: '*', reason: x}\n    - {layer: a, tactic: '*', reason: y}\n"
    swapped = "tactics:\n  deny:\n    - {layer: a, tactic: '*', reason: y}\n    - {layer: b, tactic: '*', reason: x}\n"
    assert key_of(write_recipe(tmp_path / "e", two)) == key_of(write_recipe(tmp_path / "f", swapped))


def test_sidecar_merged_and_checked(tmp_path: Path) -> None:
    extra = "tactics:\n  deny:\n    - {layer: fc1, tactic: '*', reason: a}\n  deny_file: deny.yaml\n"
    path = write_recipe(tmp_path / "r", extra, "# appended by CI\ndeny:\n  - {layer: fc2, tactic: k, reason: b}\n")
    merged = with_deny_file(load_recipe(path)).recipe.tactics
    assert [e.layer for e in merged.deny] == ["fc1", "fc2"] and merged.deny_file is None

    missing = write_recipe(tmp_path / "m", "tactics:\n  deny_file: deny.yaml\n")
    with pytest.raises(RecipeError, match=r"deny\.yaml: deny file not found"):
        with_deny_file(load_recipe(missing))
    broken = write_recipe(tmp_path / "x", "tactics:\n  deny_file: deny.yaml\n", "deny:\n  - {layer: fc2}\n")
    with pytest.raises(RecipeError, match=r"x/deny.yaml:2 deny\[0\].tactic: field required"):
        with_deny_file(load_recipe(broken))
    # A shared sidecar outside the recipe's directory is the user's choice (issue 13).
    (tmp_path / "deny.yaml").write_text("deny:\n  - {layer: fc3, tactic: k, reason: c}\n")
    shared = write_recipe(tmp_path / "y", "tactics:\n  deny_file: ../deny.yaml\n")
    assert [e.layer for e in with_deny_file(load_recipe(shared)).recipe.tactics.deny] == ["fc3"]


def test_build_stage_checks_deny_entries_without_importing_tensorrt() -> None:
    # The build stage checks enforceability before a build without importing TensorRT.
    import subprocess
    import sys

    from tests.conftest import subprocess_env

    code = (
        "import sys; import trtforge.stages.build, trtforge.rules.denylist, trtforge.backend.denylist_enforce;"
        "heavy = [m for m in sys.modules if m.split('.')[0] in {'tensorrt', 'tensorrt_rtx', 'polygraphy', 'onnx'}];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert out.stdout.strip() == "[]", out
    assert BackendInfo("tensorrt", "10.8.0").label == "TensorRT 10.8.0"


def test_deny_file_refuses_alias_bombs() -> None:
    from trtforge.core.errors import RecipeError
    from trtforge.rules.denylist import parse_deny_file

    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    with pytest.raises(RecipeError, match="expands to more than"):
        parse_deny_file("\n".join(lines) + "\ndeny: *l8\n", "deny.yaml")
