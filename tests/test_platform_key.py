"""Inputs that change the engine besides recipe and model: platform (OS, CPU architecture), the
backend wheel's CUDA variant, the builder's own version. Keyed, recorded, checked by lookup and
by `build --reproduce`.

Fails on 55eb6bf: BuildTarget had no os/arch/cuda (the key and the row did not name them),
lookup had no platform rule and no --os/--arch, reproduce rebuilt on any platform, and a builder
module of another release than the metadata built under the metadata's key.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.catalog_rows import add_row
from tests.conftest import MLP_RECIPE
from trtforge.core.errors import BuildError
from trtforge.resolution.resolve import resolve
from trtforge.rules.compatibility import Candidate, first_failing_rule, rank
from trtforge.rules.flavors import BackendInfo, cuda_variant, find_backend
from trtforge.rules.keys import build_key
from trtforge.rules.recipe import load_recipe
from trtforge.rules.target import explicit_target
from trtforge.store import open_store

MACHINE = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def this_machine() -> tuple[str, str]:
    """Computed here, independently of trtforge.rules.target.this_platform."""
    os_name = {"linux": "linux", "win32": "windows", "darwin": "macos"}[sys.platform]
    return os_name, MACHINE[platform.machine().lower()]


def installed_rtx_cuda() -> str:
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"].lower()
        if name.startswith("tensorrt-rtx-cu") or name.startswith("tensorrt_rtx_cu"):
            return name.replace("_", "-").split("-")[2]
    raise AssertionError("no tensorrt-rtx-cuXX distribution installed")


def test_a_build_records_and_keys_platform_and_cuda_variant(cli, mlp_recipe: Callable[..., Path], store: Path) -> None:
    recipe = mlp_recipe()
    [built] = cli("build", recipe, "--store", store, "--json").json()
    shown = cli("show", built["artifact_id"], "--store", store, "--json").json()
    os_name, arch = this_machine()
    target = shown["details"]["target"]
    assert (target["os"], target["arch"], target["cuda"]) == (os_name, arch, installed_rtx_cuda())

    resolution = resolve(recipe)  # the one way from a recipe to its key
    backend, here = find_backend("tensorrt_rtx"), resolution.target
    assert (here.os, here.arch, here.cuda) == (os_name, arch, backend.cuda)
    digest = shown["model_sha256"]
    assert build_key(resolution.recipe, digest, here) == built["build_key"]  # the key names exactly these
    other_arch = "aarch64" if arch != "aarch64" else "x86_64"
    other_cuda = "cu13" if backend.cuda != "cu13" else "cu12"
    for other in (replace(here, os="windows"), replace(here, arch=other_arch), replace(here, cuda=other_cuda)):
        assert build_key(resolution.recipe, digest, other) != built["build_key"]


def test_cuda_variant_comes_from_the_distribution_name() -> None:
    assert cuda_variant("tensorrt-rtx-cu12") == "cu12"
    assert cuda_variant("tensorrt-cu13-bindings") == "cu13"
    assert cuda_variant("tensorrt") is None and cuda_variant("tensorrt-rtx") is None


def test_plan_for_a_target_on_another_platform_is_another_key(
    cli, mlp_recipe: Callable[..., Path], store: Path
) -> None:
    recipe = mlp_recipe(text=MLP_RECIPE.replace("backend: tensorrt_rtx", "backend: auto"))
    os_name, arch = this_machine()
    keys = {}
    for where in (os_name, "windows"):
        spec = f"flavor=tensorrt,trt=10.13.3.9,gpu=NVIDIA A10G,cuda=cu12,os={where},arch={arch}"
        planned = cli("plan", recipe, "--target", spec, "--store", store, "--json")
        assert planned.code == 0, planned
        [entry] = planned.json()
        assert entry["status"] == "build" and entry["target"]["os"] == where, entry
        keys[where] = entry["build_key"]
    assert keys[os_name] != keys["windows"]


def test_a_tensorrt_rtx_target_on_another_os_plans_this_machines_build(
    cli, mlp_recipe: Callable[..., Path], store: Path
) -> None:
    """TensorRT-RTX engines run on any OS and are built anywhere: a target's OS says where it runs,
    and `plan` computes the key `build` here stores for it (issue 22: a fleet's Windows
    workstations are served by a Linux build, and plan agrees with it)."""
    recipe = mlp_recipe()
    [built] = cli("build", recipe, "--store", store, "--json").json()
    version = find_backend("tensorrt_rtx").version
    os_name, arch = this_machine()
    for where in (os_name, "windows"):
        spec = f"flavor=tensorrt_rtx,trt={version},cc=8.6,os={where},arch={arch}"
        planned = cli("plan", recipe, "--target", spec, "--store", store, "--json")
        assert planned.code == 0, planned
        [entry] = planned.json()
        assert (entry["status"], entry["build_key"]) == ("cached", built["build_key"]), entry
        assert entry["target"]["os"] == os_name and entry["target_request"]["os"] == where


# -- lookup ---------------------------------------------------------------------------------


def _platform_store(root: Path) -> tuple[Path, dict[str, str]]:
    """TensorRT rows (engines from GPU machines this one lacks) built on three platforms."""
    store_dir = root / "store"
    store = open_store(store_dir)
    try:
        ids = {
            "linux": add_row(store, age_minutes=30),
            "windows": add_row(store, age_minutes=20),
            "unrecorded": add_row(store, age_minutes=10),  # a row from before key schema 2
        }
    finally:
        store.close()
    with sqlite3.connect(store_dir / "catalog.sqlite") as conn:
        for which, (os_name, arch) in (("linux", ("linux", "x86_64")), ("windows", ("windows", "x86_64"))):
            details = json.dumps({"target": {"os": os_name, "arch": arch}})
            conn.execute("UPDATE artifacts SET details = ? WHERE id = ?", (details, ids[which]))
    return store_dir, ids


A10G = ("--gpu", "NVIDIA A10G", "--cc", "8.6", "--trt", "10.13.3")


def test_lookup_platform_rule_and_unrecorded_rows(cli, tmp_path: Path) -> None:
    store_dir, ids = _platform_store(tmp_path)
    report = cli("lookup", "detector", *A10G, "--os", "Linux", "--arch", "amd64", "--explain", "--store", store_dir,
                 "--json")  # fmt: skip
    assert report.code == 0, report
    data = report.json()
    assert data["target"]["os"] == "linux" and data["target"]["arch"] == "x86_64"
    assert {r["artifact_id"]: r["rule"] for r in data["rejected"]} == {ids["windows"]: "platform"}
    assert "windows" in data["rejected"][0]["reason"]
    matches = {m["artifact_id"]: m for m in data["matches"]}
    assert set(matches) == {ids["linux"], ids["unrecorded"]}
    assert data["best"]["artifact_id"] == ids["unrecorded"]  # newest; the unknown platform is noted
    assert any("platform not checked" in n for n in matches[ids["unrecorded"]]["notes"])
    assert not any("platform" in n for n in matches[ids["linux"]]["notes"])

    windows = cli("lookup", "detector", *A10G, "--os", "windows", "--arch", "x86_64", "--store", store_dir, "--json")
    assert windows.code == 0 and windows.json()["best"]["artifact_id"] == ids["unrecorded"], windows
    assert {m["artifact_id"] for m in windows.json()["matches"]} == {ids["windows"], ids["unrecorded"]}

    bad = cli("lookup", "detector", *A10G, "--os", "linux;rm", "--store", store_dir, "--json")
    assert bad.code == 2, bad


def test_platform_rule_spares_tensorrt_rtx_and_unknown_targets() -> None:
    """TensorRT-RTX engines are portable across OS (its product page); unknown sides pass."""
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    common = {"name": "d", "trt_version": "10.13.3", "compute_capabilities": ("8.6",), "plan_sha256": "0" * 64,
              "created_at": t0, "gpu_name": "NVIDIA A10G"}  # fmt: skip
    win_trt = Candidate(artifact_id="w", flavor="tensorrt", os="windows", arch="x86_64", **common)
    linux = explicit_target(gpu="NVIDIA A10G", cc="8.6", trt="10.13.3", os="linux", arch="x86_64")
    unknown = explicit_target(gpu="NVIDIA A10G", cc="8.6", trt="10.13.3")
    assert first_failing_rule(win_trt, linux) == ("platform", "built on OS windows; the target runs linux")
    assert first_failing_rule(win_trt, unknown) is None
    assert "platform not checked" in rank([win_trt], unknown).matches[0].notes[-1]
    common.update(trt_version="1.7.1.116", compute_capabilities=())
    win_rtx = Candidate(artifact_id="r", flavor="tensorrt_rtx", os="windows", arch="x86_64", **common)
    rtx_linux = explicit_target(gpu=None, cc="8.6", trt="1.7.1.116", flavor="tensorrt_rtx", os="linux")
    assert first_failing_rule(win_rtx, rtx_linux) is None


# -- build --reproduce and the builder version ----------------------------------------------


def test_reproduce_refuses_another_platform_or_cuda_variant(cli, mlp_recipe: Callable[..., Path], store: Path) -> None:
    [built] = cli("build", mlp_recipe(), "--store", store, "--json").json()
    same = cli("build", "--reproduce", built["artifact_id"], "--store", store, "--json")
    assert same.code == 0 and same.json()["identical"], same
    other_cuda = "cu13" if installed_rtx_cuda() != "cu13" else "cu12"
    with sqlite3.connect(store / "catalog.sqlite") as conn:
        [details] = conn.execute("SELECT details FROM artifacts WHERE id = ?", (built["artifact_id"],)).fetchone()
        changed = json.loads(details)
        changed["target"]["cuda"] = other_cuda  # as if built by the other wheel of the same release
        conn.execute("UPDATE artifacts SET details = ? WHERE id = ?", (json.dumps(changed), built["artifact_id"]))
    refused = cli("build", "--reproduce", built["artifact_id"], "--store", store, "--json")
    assert refused.code == 2 and other_cuda in refused.stderr + refused.stdout, refused

    changed["target"]["cuda"] = installed_rtx_cuda()
    changed["target"]["gpu_name"] = "NVIDIA A10G"  # every recorded target field is compared
    with sqlite3.connect(store / "catalog.sqlite") as conn:
        conn.execute("UPDATE artifacts SET details = ? WHERE id = ?", (json.dumps(changed), built["artifact_id"]))
    refused = cli("build", "--reproduce", built["artifact_id"], "--store", store, "--json")
    assert refused.code == 2 and "GPU NVIDIA A10G" in refused.stderr + refused.stdout, refused


def test_builder_module_of_another_release_than_the_key_refuses_to_build(mlp_recipe: Callable[..., Path]) -> None:
    from trtforge.backend.build import build_plan

    loaded = load_recipe(mlp_recipe())
    real = find_backend("tensorrt_rtx")
    claimed = BackendInfo(real.flavor, real.version + ".1", real.cuda)  # metadata that disagrees with the module
    with pytest.raises(BuildError, match="package metadata"):
        build_plan(claimed, loaded.recipe, loaded.model_path)
    assert build_plan(real, loaded.recipe, loaded.model_path).plan_view.nbytes > 0


def test_builder_environment_variables_are_keyed(cli, mlp_recipe: Callable[..., Path], store: Path) -> None:
    """NVRTC_APPEND_FLAGS / TRT_INTERNAL_OPTIONS configure the builder's code generation: set, they
    are part of the key and of the recorded target; reproduce refuses a different value."""
    recipe = mlp_recipe()
    [built] = cli("build", recipe, "--store", store, "--json").json()
    shown = cli("show", built["artifact_id"], "--store", store, "--json").json()
    assert shown["details"]["target"]["env"] == {}
    [planned] = cli("plan", recipe, "--store", store, "--json", env={"NVRTC_APPEND_FLAGS": "-lineinfo"}).json()
    assert planned["status"] == "build" and planned["build_key"] != built["build_key"]
    assert planned["target"]["env"] == {"NVRTC_APPEND_FLAGS": "-lineinfo"}
    refused = cli("build", "--reproduce", built["artifact_id"], "--store", store, "--json",
                  env={"TRT_INTERNAL_OPTIONS": "x"})  # fmt: skip
    assert refused.code == 2 and "build environment" in refused.stderr + refused.stdout, refused


def test_adopted_tensorrt_plan_records_the_platform_given(cli, tmp_path: Path) -> None:
    from tests import onnx_models

    model = onnx_models.save(onnx_models.mlp(0), tmp_path / "m.onnx")
    plan = tmp_path / "trtexec.engine"
    plan.write_bytes(b"a plan serialized by trtexec on Windows (not readable here)")
    store = ("--store", tmp_path / "store")
    adopted = cli("adopt", plan, "--name", "detector", "--model", model, *A10G, "--os", "Windows", "--arch", "AMD64",
                  *store, "--json")  # fmt: skip
    assert adopted.code == 0, adopted
    shown = cli("show", adopted.json()["artifact_id"], *store, "--json").json()
    assert (shown["details"]["target"]["os"], shown["details"]["target"]["arch"]) == ("windows", "x86_64")
    linux = cli("lookup", "detector", *A10G, "--os", "linux", "--arch", "x86_64", "--explain", *store, "--json")
    assert linux.code == 1 and linux.json()["rejected"][0]["rule"] == "platform", linux
    windows = cli("lookup", "detector", *A10G, "--os", "windows", *store, "--json")
    assert windows.code == 0 and windows.json()["best"]["artifact_id"] == adopted.json()["artifact_id"]
    bad = cli("adopt", plan, "--name", "detector", "--model", model, *A10G, "--arch", "x86 64", *store)
    assert bad.code == 2 and "architecture" in bad.stderr, bad


def test_doctor_names_platform_and_cuda_variant(cli, store: Path) -> None:
    """What `plan --target` and the keys need to know about a runner, as doctor prints it."""
    report = cli("doctor", "--store", store, "--json").json()
    assert (report["platform"]["os"], report["platform"]["arch"]) == this_machine()
    rtx = [b for b in report["backends"] if b["flavor"] == "tensorrt_rtx"]
    assert [b["cuda"] for b in rtx] == [installed_rtx_cuda()]
