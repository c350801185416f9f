"""The fleet manifest (issue 22, item 2): validated like a recipe, a JSON Schema, and `build --fleet`
/ `plan --fleet` that agree on every key.

Fails on 760f324: there was no fleet manifest, no `--fleet`, no `schema --fleet`, and `plan`
said "build" for a target whose CUDA variant it could not know.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import REPO
from trtforge.rules.flavors import find_backend
from trtforge.rules.fleet import load_fleet

EXAMPLE = REPO / "docs" / "fleet.example.yaml"
GOOD = """\
targets:
  - name: a10g
    gpu: A10G
    flavor: tensorrt
    trt: 10.13.3.9
  - name: rtx
    gpu: RTX 4090
    flavor: tensorrt_rtx
    trt: 1.7.1
"""


def test_the_committed_example_is_a_valid_fleet_and_matches_the_schema(cli: Callable[..., Any]) -> None:
    fleet = load_fleet(EXAMPLE)
    assert [e.name for e in fleet.targets] == ["aws-g5", "gcp-g2", "dgx-h100", "studio-workstation", "render-node"]
    requests = fleet.requests()
    assert [(r.gpu, r.cc) for r in requests[:3]] == [
        ("NVIDIA A10G", "8.6"), ("NVIDIA L4", "8.9"), ("NVIDIA H100 80GB HBM3", "9.0")
    ]  # the GPU table's NVML names: what verifications are recorded under
    assert [e.ray_accelerator_type for e in fleet.targets] == ["A10G", "L4", "H100", "G", "RTX"]
    schema = cli("schema", "--fleet")
    assert schema.code == 0, schema
    validator = jsonschema.Draft202012Validator(schema.json())
    validator.validate(yaml.safe_load(EXAMPLE.read_text()))
    assert schema.json()["title"] == "trtforge fleet"
    recipe_schema = cli("schema").json()
    assert recipe_schema["title"] == "trtforge recipe"  # without --fleet: the recipe's, as before
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"targets": [{"name": "x", "gpu": "L4", "flavor": "tensorrt", "trt": "10.13.3", "cc2": 1}]})


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (("A10G", "A10X"), ":3 targets[0].gpu:", "'A10X' is not a GPU trtforge knows (closest known: 'NVIDIA A10'"),
        (("A10G", "H100"), ":3 targets[0].gpu:", "'H100' names 4 GPU models"),
        (("RTX 4090", "H100 SXM"), ":6 targets[1]:", "TensorRT-RTX does not run on compute capability 9.0"),
        (("1.7.1", "1.7"), ":9 targets[1].trt:", "write it as text (quoted: '1.7')"),
        (("    trt: 10.13.3.9\n", "    trt: 10.13.3.9\n    cuda: cuda12\n"), ":6 targets[0].cuda:", "CUDA variant"),
        (("    trt: 10.13.3.9\n", "    trt: 10.13.3.9\n    os: Win 95\n"), ":6 targets[0].os:", "not a platform"),
        (("name: rtx", "name: a10g"), ":6 targets[1].name:", "'a10g' is repeated (first at targets[0])"),
        (("    trt: 1.7.1\n", "    trt: 1.7.1\n    gpu: L4\n"), ":10: invalid YAML:", "key 'gpu' is repeated"),
        (("flavor: tensorrt_rtx", "flavor: tensorrt-llm"), ":8 targets[1].flavor:", "'tensorrt' or 'tensorrt_rtx'"),
        (("    trt: 1.7.1\n", "    trt: 1.7.1\n    driver: 580\n"), ":10 targets[1].driver:", "unknown field"),
    ],
)
def test_a_bad_fleet_is_refused_with_file_line_and_field(
    cli: Callable[..., Any], tmp_path: Path, change: tuple[str, str], where: str, message: str
) -> None:
    manifest = tmp_path / "fleet.yaml"
    manifest.write_text(GOOD.replace(*change, 1))
    result = cli("coverage", "--fleet", manifest, "--store", tmp_path / "store")
    assert result.code == 2, result
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"error: {manifest}{where}") and message in first, first
    assert result.stderr.splitlines()[-1].startswith("hint: ")  # the format, or how entries are selected
    assert not (tmp_path / "store").exists()


FLEET = """\
targets:
  - {{name: render-node, gpu: RTX A6000, flavor: tensorrt_rtx, trt: "{rtx}"}}
  - {{name: studio, gpu: RTX 4090, flavor: tensorrt_rtx, trt: "{release}", os: windows}}
  - {{name: old-gen, gpu: RTX 2060, flavor: tensorrt_rtx, trt: "{rtx}"}}
  - {{name: aws-g5, gpu: A10G, flavor: tensorrt, trt: 10.13.3.9, cuda: cu12}}
  - {{name: gcp-g2, gpu: L4, flavor: tensorrt, trt: 10.13.3.9}}
"""
RECIPE = """\
name: det
model:
  onnx: {model}
backend: auto
profiles:
  - x: {{min: [1, 4], opt: [2, 4], max: [4, 4]}}
"""


def test_build_fleet_builds_what_this_machine_can_and_plan_agrees(
    cli: Callable[..., Any], mlp_recipe: Callable[..., Path], tmp_path: Path
) -> None:
    """TensorRT-RTX targets build here (any capability, the installed release, any target OS: the
    engine runs there); a capability the recipe leaves out and full-TensorRT targets are skipped with
    the reason. `plan --fleet` then finds every key `build --fleet` stored: one key, computed once."""
    rtx = find_backend("tensorrt_rtx").version
    manifest = tmp_path / "fleet.yaml"
    release = ".".join(rtx.split(".")[:3])  # "1.7.1": a release as an operator writes it
    manifest.write_text(FLEET.format(rtx=rtx, release=release))
    recipe = mlp_recipe(text=RECIPE)
    store = tmp_path / "store"
    built = cli("build", recipe, "--fleet", manifest, "--store", store, "--json")
    assert built.code == 0, built  # skipped targets are no failure
    rows = {r["target_request"]["label"]: r for r in built.json()}
    assert [(label, r["status"]) for label, r in rows.items()] == [
        ("render-node", "built"), ("studio", "cached"), ("old-gen", "skipped"), ("aws-g5", "skipped"),
        ("gcp-g2", "skipped"),
    ]
    assert rows["render-node"]["build_key"] == rows["studio"]["build_key"]  # one engine for 8.0 to 12.0
    assert rows["studio"]["target"]["os"] != "windows"  # built here: the key names this platform
    assert "compute capabilities 8.0, 8.6, 8.9, 12.0, not the target's 7.5" in rows["old-gen"]["reason"]
    assert rows["aws-g5"]["reason"] == "needs TensorRT 10.13.3.9 (cu12); installed here: none"
    plain = cli("build", recipe, "--store", store, "--json").json()[0]
    assert (plain["status"], plain["build_key"]) == ("cached", rows["render-node"]["build_key"])

    planned = cli("plan", recipe, "--fleet", manifest, "--store", store, "--json")
    assert planned.code == 0, planned
    plan_rows = {r["target_request"]["label"]: r for r in planned.json()}
    assert {label: r["status"] for label, r in plan_rows.items()} == {
        "render-node": "cached", "studio": "cached", "old-gen": "skipped", "aws-g5": "build", "gcp-g2": "unknown",
    }  # plan does not skip what another machine builds; without a CUDA variant the key is unknown
    for label in ("render-node", "studio"):
        assert plan_rows[label]["build_key"] == rows[label]["build_key"]
    assert plan_rows["aws-g5"]["target"]["cuda"] == "cu12" and "CUDA variant" in plan_rows["gcp-g2"]["reason"]
    assert plan_rows["aws-g5"]["target"]["gpu_name"] == "NVIDIA A10G"

    chosen = cli("build", recipe, "--fleet", manifest, "--target", "old-gen", "--store", store, "--json").json()
    assert [r["status"] for r in chosen] == ["skipped"]
    again = cli("build", recipe, "--fleet", manifest, "--store", store)
    assert again.code == 0 and "skipped: det for aws-g5: needs TensorRT 10.13.3.9" in again.stderr, again
    assert json.dumps(rows["render-node"]["target_request"]["label"]) == '"render-node"'
