"""A missing optional dependency is one line naming the extra to install, exit 2, never a traceback.

Each CLI test hides one module behind a package that fails to import exactly as an absent one
does (ModuleNotFoundError naming it), first on the child's path. Fails on 843520b: an s3:// store
without boto3 and `verify` without onnxruntime or numpy ended in a traceback, and a PostgreSQL
catalog without psycopg in "cannot open catalog" without naming the extra.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import REPO, subprocess_env
from trtforge.core.extras import EXTRAS


def hiding(tmp_path: Path, *modules: str) -> dict[str, str]:
    """Environment for a child in which ``modules`` are not installed: a sitecustomize marks them
    absent in sys.modules, so importing one raises ModuleNotFoundError naming it and
    importlib.util.find_spec answers None, as for a module that is not there."""
    folder = tmp_path / "hidden"
    folder.mkdir(parents=True)
    (folder / "sitecustomize.py").write_text(f"import sys\nsys.modules.update(dict.fromkeys({list(modules)!r}))\n")
    return {"PYTHONPATH": os.pathsep.join([str(folder), subprocess_env()["PYTHONPATH"]])}


def one_line(result, extra: str) -> None:
    assert result.code == 2, result
    assert "Traceback" not in result.stderr, result
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and f"(the '{extra}' extra)" in lines[0], result
    assert lines[1:] == [f"hint: pip install 'trtforge[{extra}]'"], result


def test_an_s3_store_without_boto3(cli, tmp_path: Path) -> None:
    (tmp_path / "b.tar").write_bytes(b"")
    env = {**hiding(tmp_path, "boto3"), "TRTFORGE_BLOBS": "s3://trtforge-test/p"}
    result = cli("import", tmp_path / "b.tar", "--store", tmp_path / "s", env=env)
    one_line(result, "s3")
    assert "boto3" in result.stderr


def test_a_postgresql_catalog_without_psycopg(cli, tmp_path: Path) -> None:
    url = "postgresql+psycopg://ci@127.0.0.1:1/trtforge"
    for args in (("list",), ("list", "--json"), ("doctor",)):
        result = cli(*args, "--store", tmp_path / "s", "--catalog", url, env=hiding(tmp_path / args[-1], "psycopg"))
        if args == ("doctor",):  # doctor names the catalog; it does not open it
            assert result.code == 0, result
            continue
        if "--json" in args:  # a list command: the error that stopped it is its one item
            [stopped] = result.json()
            assert result.code == 2 and stopped["hint"] == "pip install 'trtforge[postgres]'", result
            assert stopped["error_kind"] == "bad_input" and stopped["artifact_id"] is None, stopped
            continue
        one_line(result, "postgres")


@pytest.mark.parametrize("module", ["onnxruntime", "polygraphy", "numpy"])
def test_verify_without_its_extra(cli, mlp_recipe, tmp_path: Path, module: str) -> None:
    result = cli("verify", mlp_recipe(), "--reference-only", "--store", tmp_path / "s", env=hiding(tmp_path, module))
    one_line(result, "verify")
    assert module in result.stderr


def test_building_on_ray_without_ray(cli, mlp_recipe, tmp_path: Path) -> None:
    """Refused before any work, hit or miss: the executor was asked for by name (issue 27)."""
    result = cli("build", mlp_recipe(), "--store", tmp_path / "s", "--executor", "ray", env=hiding(tmp_path, "ray"))
    one_line(result, "ray")
    assert "build --executor ray needs ray" in result.stderr and not (tmp_path / "s").exists()


def test_every_extra_named_is_one_of_the_package() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(declared)
