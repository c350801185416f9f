"""Each hint points the right way, and each test runs what its hint suggests (issue 23, item 7).

Before: `keygen` into a missing folder suggested making a key pair with `keygen`; `cache import`
without full TensorRT suggested installing `trtforge[rtx]`, already installed; `deploy triton
--verified-only` suggested building on a GPU when a verification was missing; `lookup --device`
said it picks the device "to build" on.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from tests.test_deploy_triton import add_trt_row
from trtforge.rules.flavors import installed_version
from trtforge.rules.target import detect_gpus

NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}


def quoted_commands(hint: str) -> list[str]:
    """The commands a hint gives in backticks."""
    return re.findall(r"`([^`]+)`", hint)


def test_keygen_into_a_missing_folder_says_make_the_folder(cli: Callable[..., Any], tmp_path: Path) -> None:
    key = tmp_path / "keys dir" / "ci" / "signing.pem"
    refused = cli("keygen", key, "--json")
    assert refused.code == 2, refused
    hint = refused.json()["hint"]
    assert "trtforge keygen" not in hint, hint  # keygen is what just failed: pointing back at it goes in a circle
    [command] = quoted_commands(hint)
    subprocess.run(command, shell=True, check=True)  # what the hint says, as the user would type it
    made = cli("keygen", key, "--json")
    assert made.code == 0, made
    assert key.is_file() and Path(made.json()["public_key"]).is_file()


def test_cache_import_without_full_tensorrt_names_what_is_missing(
    cli: Callable[..., Any], tmp_path: Path, store: Path
) -> None:
    data = b"timing cache bytes of a full-TensorRT build"
    exported = tmp_path / "a10g.cache"
    exported.write_bytes(data)
    meta = {
        "format": "trtforge-timing-cache/1",
        "flavor": "tensorrt",
        "trt_version": "10.13.3.9",
        "gpu_name": "NVIDIA A10G",
        "compute_capability": "8.6",
        "blob_sha256": hashlib.sha256(data).hexdigest(),
    }
    exported.with_name("a10g.cache.json").write_text(json.dumps(meta))
    if installed_version("tensorrt") is not None:
        pytest.skip("full TensorRT is installed here: the import gets past the step this hint is for")
    refused = cli("cache", "import", exported, "--store", store, "--json")
    assert refused.code == 2 and "need full TensorRT" in refused.json()["error"], refused
    # Every install it names must bring what is missing: an extra of this project whose requirements
    # include a full-TensorRT distribution not installed here (`rtx`, installed, would change nothing).
    hint = refused.json()["hint"]
    extras = re.findall(r"trtforge\[(\w+)\]", hint)
    assert extras, hint
    wanted = [Requirement(r) for r in importlib.metadata.requires("trtforge") or []]
    for extra in extras:
        names = [r.name for r in wanted if r.marker is not None and r.marker.evaluate({"extra": extra})]
        full = [n for n in names if n.startswith("tensorrt") and "rtx" not in n]
        assert full, f"the hint's trtforge[{extra}] installs no full TensorRT ({', '.join(names)})"
        for name in full:
            with pytest.raises(importlib.metadata.PackageNotFoundError):
                importlib.metadata.version(name)
    assert any(f"pip install 'trtforge[{e}]'" in quoted_commands(hint) for e in extras), hint  # as a command


def test_deploy_verified_only_says_verify(cli: Callable[..., Any], tmp_path: Path, store: Path) -> None:
    unverified = add_trt_row(store, cc="8.6")
    repo = tmp_path / "models"
    refused = cli(
        "deploy", "triton", "detector", "-o", repo, "--cc", "8.6", "--verified-only", "--store", store, "--json"
    )
    assert refused.code == 1, refused
    hint = refused.json()["hint"]
    assert "build" not in hint and "--verified-only" in hint, hint
    [verify] = quoted_commands(hint)
    assert verify == f"trtforge verify {unverified}"
    # What it suggests: verify that engine. It needs a GPU of that capability (and this row's model,
    # a build elsewhere); here the command runs, finds that artifact and says what it lacks ...
    ran = cli(*verify.split()[1:], "--store", store, "--json", env=NO_GPU)
    assert ran.code == 2 and f"artifact {unverified[:12]}" in ran.json()["error"], ran
    # ... or deploy without --verified-only, which works.
    deployed = cli("deploy", "triton", "detector", "-o", repo, "--cc", "8.6", "--store", store, "--json")
    assert deployed.code == 0 and deployed.json()["files"]["8.6"]["artifact_id"] == unverified, deployed


def test_lookup_device_help_says_it_picks_the_target(cli: Callable[..., Any], store: Path) -> None:
    shown = cli("lookup", "--help", env={"COLUMNS": "400"})
    [line] = [line for line in shown.stdout.splitlines() if "--device" in line]
    assert "target" in line and "build" not in line, line
    # What it says: with no --gpu/--cc, the device stands for the target. With none visible it is
    # refused naming what is visible; with a GPU, that GPU is the target lookup reports.
    if detect_gpus():
        ran = cli("lookup", "detector", "--device", "0", "--store", store, "--json")
        assert ran.json()["target"]["gpu_name"] == detect_gpus()[0].name, ran
    ran = cli("lookup", "detector", "--device", "0", "--store", store, "--json", env=NO_GPU)
    assert ran.code == 2 and "no such CUDA device here (visible: none)" in ran.json()["error"], ran
