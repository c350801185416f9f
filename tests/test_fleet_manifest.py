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
from tests.gpu_steps import missing, reach
from trtforge.rules.flavors import find_backend, installed_backend
from trtforge.rules.fleet import load_fleet
from trtforge.rules.gpus import known_gpu
from trtforge.rules.target import current_gpu

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
    assert "the recipe builds for 8.0, 8.6, 8.9, 12.0 only" in rows["old-gen"]["reason"]
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


@pytest.mark.gpu
def test_build_fleet_builds_the_entry_of_this_machines_gpu(
    cli: Callable[..., Any], mlp_recipe: Callable[..., Path], tmp_path: Path
) -> None:
    """On a GPU runner with full TensorRT, `build --fleet` builds the entry of this machine's GPU
    (under the key `plan --fleet` computed for it, the key a plain build stores) and skips another
    GPU's entry. Here: the plan and the skips run; the build itself is where it stops."""
    gpu, backend = current_gpu(), installed_backend("tensorrt")
    here = gpu.name if gpu is not None else "NVIDIA L4"
    cc = gpu.compute_capability if gpu is not None else "8.9"
    other = "NVIDIA A10G" if known_gpu(here) != known_gpu("NVIDIA A10G") else "NVIDIA L4"
    version, cuda = (backend.version, backend.cuda or "cu12") if backend is not None else ("10.13.3.9", "cu12")
    manifest = tmp_path / "fleet.yaml"
    manifest.write_text(
        "targets:\n"
        f"  - {{name: here, gpu: {json.dumps(here)}, cc: '{cc}', flavor: tensorrt, trt: '{version}', cuda: {cuda}}}\n"
        f"  - {{name: other, gpu: {json.dumps(other)}, flavor: tensorrt, trt: '{version}', cuda: {cuda}}}\n"
    )
    recipe = mlp_recipe(text=RECIPE.replace("backend: auto", "backend: tensorrt"))
    store = tmp_path / "store"
    planned = cli("plan", recipe, "--fleet", manifest, "--store", store, "--json")
    assert planned.code == 0 and [r["status"] for r in planned.json()] == ["build", "build"], planned
    built = cli("build", recipe, "--fleet", manifest, "--store", store, "--json")
    assert built.code == 0, built
    rows = {r["target_request"]["label"]: r for r in built.json()}
    other_reason = rows["other"]["reason"] or ""
    assert rows["other"]["status"] == "skipped", rows["other"]
    assert "full TensorRT builds on the GPU it targets" in other_reason or other_reason.startswith("needs TensorRT")
    why = missing("build", "tensorrt")
    if why is not None:
        assert rows["here"]["status"] == "skipped" and rows["here"]["reason"], rows["here"]
    reach("the full-TensorRT build of this GPU's fleet entry", "build", "tensorrt")
    assert rows["here"]["status"] == "built", rows["here"]
    assert rows["here"]["build_key"] == planned.json()[0]["build_key"]
    plain = cli("build", recipe, "--store", store, "--json").json()[0]
    assert (plain["status"], plain["build_key"]) == ("cached", rows["here"]["build_key"])
