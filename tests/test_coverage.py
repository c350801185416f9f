"""A fleet declared once: `coverage`, `gc --fleet`, `lookup`/`deploy --fleet` (issue 22, items 2-3).

The store is the one the issue names: real TensorRT-RTX builds of one model for two compute
capabilities (two recipes differing only in ``compatibility``), plans built elsewhere by full
TensorRT for several GPUs registered with ``adopt`` (placeholder bytes: lookup, coverage and gc
read records, never run plans), verification rows as `verify` records them on those GPUs (passed
and failed), and one weight-stripped plan. Coverage must say, per fleet target, what lookup
returns there, whether it is verified on that GPU model, and what is missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import onnx_models
from tests.catalog_rows import add_row, add_verification_row
from tests.cli_server import CliServer
from tests.conftest import subprocess_env
from tests.test_fleet import Run, module_cli, write_recipe
from trtforge.store import open_store

TRT = "10.13.3.9"
FLEET = """\
targets:
  - {{name: a10g, gpu: A10G, flavor: tensorrt, trt: "{trt}"}}
  - {{name: l4, gpu: L4, flavor: tensorrt, trt: "{trt}"}}
  - {{name: a100-80, gpu: A100 SXM 80GB, flavor: tensorrt, trt: "{trt}"}}
  - {{name: a100-40, gpu: A100 SXM 40GB, flavor: tensorrt, trt: "{trt}"}}
  - {{name: h100, gpu: H100 SXM, flavor: tensorrt, trt: "{trt}"}}
  - {{name: t4, gpu: T4, flavor: tensorrt, trt: "{trt}"}}
  - {{name: b200, gpu: B200, flavor: tensorrt, trt: "{trt}"}}
  - {{name: rtx-a6000, gpu: RTX A6000, flavor: tensorrt_rtx, trt: "{rtx}"}}
  - {{name: rtx4090, gpu: RTX 4090, flavor: tensorrt_rtx, trt: "{rtx}"}}
  - {{name: rtx5090, gpu: RTX 5090, flavor: tensorrt_rtx, trt: "{rtx}"}}
"""
# (fleet target, status, the engine that covers it, newest verification there, weight-stripped, missing)
EXPECTED = [
    ("a10g", "covered", "a10g", "passed", False, []),
    ("l4", "unverified", "l4", None, False, ["verification"]),
    ("a100-80", "covered", "a100", "passed", False, []),
    ("a100-40", "unverified", "a100", None, False, ["verification"]),  # same capability, another GPU model
    ("h100", "missing", None, None, False, ["engine"]),  # nothing built for 9.0
    ("t4", "missing", None, None, False, ["engine"]),  # its only engine failed verification on a T4
    ("b200", "unverified", "b200", None, True, ["verification"]),  # a weight-stripped plan only
    ("rtx-a6000", "covered", "rtx86", "passed", False, []),
    ("rtx4090", "unverified", "rtx89", None, False, ["verification"]),
    ("rtx5090", "missing", None, None, False, ["engine"]),  # neither recipe builds for 12.0
]


def adopt(run: Run, root: Path, store: Path, key: str, gpu: str, *extra: str) -> str:
    plan = root / f"{key}.plan"
    plan.write_bytes(f"a plan trtexec built on an {gpu}".encode())
    done = run("adopt", plan, "--name", "det", "--model", root / "models" / "det.onnx", "--trt", TRT,
               "--gpu", gpu, *extra, "--store", store, "--json")  # fmt: skip
    assert done.code == 0, done
    return str(done.json()["artifact_id"])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, cli_server: CliServer | None) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("coverage")
    run = module_cli(cli_server, root)
    onnx_models.save(onnx_models.mlp(0), root / "models" / "det.onnx")
    store = root / "store"
    recipes = [write_recipe(root, f"det-{cc}.yaml", "det", "det", cc) for cc in ("8.6", "8.9")]
    built = run("build", *recipes, "--store", store, "--json")
    assert built.code == 0, built
    ids = {key: result["artifact_id"] for key, result in zip(("rtx86", "rtx89"), built.json(), strict=True)}
    rtx = run("show", ids["rtx86"], "--store", store, "--json").json()["trt_version"]
    for key, gpu in (("a10g", "NVIDIA A10G"), ("l4", "L4"), ("a100", "NVIDIA A100-SXM4-80GB"), ("t4", "T4")):
        ids[key] = adopt(run, root, store, key, gpu)
    opened = open_store(store)
    try:
        digest = opened.catalog.get_artifact(ids["rtx86"]).model_sha256
        ids["b200"] = add_row(opened, name="det", gpu_name="NVIDIA B200", ccs=("10.0",), trt_version=TRT,
                              model_sha256=digest, origin="adopted", weightless=True)  # fmt: skip
        for key, gpu, status, cc, flavor, version in (
            ("a10g", "NVIDIA A10G", "passed", "8.6", "tensorrt", TRT),
            ("a100", "NVIDIA A100-SXM4-80GB", "passed", "8.0", "tensorrt", TRT),
            ("t4", "Tesla T4", "failed", "7.5", "tensorrt", TRT),
            ("rtx86", "NVIDIA RTX A6000", "passed", "8.6", "tensorrt_rtx", rtx),
        ):
            add_verification_row(opened, ids[key], gpu, status, cc=cc, flavor=flavor, version=version)
    finally:
        opened.close()
    manifest = root / "fleet.yaml"
    manifest.write_text(FLEET.format(trt=TRT, rtx=rtx))
    return {"root": root, "store": store, "ids": ids, "fleet": manifest, "recipes": recipes, "rtx": rtx}


def table(items: list[dict[str, Any]], ids: dict[str, str]) -> list[tuple[Any, ...]]:
    names = {v: k for k, v in ids.items()}
    return [
        (t["target"]["label"], t["status"], names.get(t["artifact_id"]), t["verification"], t["weightless"],
         t["missing"])
        for t in items
    ]  # fmt: skip


def test_coverage_of_a_fleet_store(cli, fleet: dict[str, Any]) -> None:
    """Fails on 760f324: there was no `coverage` (and no --fleet to name the targets)."""
    result = cli("coverage", "det", "--fleet", fleet["fleet"], "--store", fleet["store"], "--json")
    assert result.code == 1, result  # something is missing: a release gate fails
    items = result.json()
    assert isinstance(items, list) and len(items) == len(EXPECTED)
    assert table(items, fleet["ids"]) == EXPECTED
    assert {i["name"] for i in items} == {"det"} and all(i["recipes"] == [] for i in items)
    h100 = next(i for i in items if i["target"]["label"] == "h100")
    assert "no engine runs on NVIDIA H100 80GB HBM3 (cc 9.0)" in h100["reason"]
    t4 = next(i for i in items if i["target"]["label"] == "t4")
    assert "verification" in t4["reason"]  # the rule that rejected its one engine

    human = cli("coverage", "det", "--fleet", fleet["fleet"], "--store", fleet["store"])
    assert human.code == 1
    rows = [line.split() for line in human.stdout.splitlines()[1:]]
    assert [(r[0], r[2]) for r in rows] == [(status, label) for label, status, *_ in EXPECTED]
    assert "7 of 10 lack something" in human.stderr


def test_an_engine_covers_a_target_when_lookup_returns_it(cli, fleet: dict[str, Any]) -> None:
    """The same fleet entry, asked of lookup: the engine coverage names, or none (exit 1)."""
    where = ("--fleet", fleet["fleet"], "--store", fleet["store"])
    items = cli("coverage", *where, "--json").json()  # no name: every name in the store
    assert table(items, fleet["ids"]) == EXPECTED
    for item in items:
        weightless = ("--allow-weightless",) if item["weightless"] else ()
        found = cli("lookup", "det", "--target", item["target"]["label"], *weightless, *where, "--json")
        if item["artifact_id"] is None:
            assert found.code == 1, (item["target"]["label"], found)
        else:
            assert found.code == 0 and found.json()["best"]["artifact_id"] == item["artifact_id"], item


def test_engines_only_and_a_chosen_set_of_targets(cli, fleet: dict[str, Any]) -> None:
    where = ("--fleet", fleet["fleet"], "--store", fleet["store"])
    chosen = ("--target", "a10g", "--target", "l4", "--target", "rtx4090")
    assert cli("coverage", "det", *chosen, *where).code == 1  # l4 and rtx4090 lack a verification
    engines = cli("coverage", "det", *chosen, *where, "--engines-only", "--json")
    assert engines.code == 0, engines
    assert [(i["status"], i["missing"]) for i in engines.json()] == [
        ("covered", []), ("unverified", []), ("unverified", [])
    ]
    spec = cli("coverage", "det", "--target", f"gpu=A10G,trt={TRT}", "--store", fleet["store"], "--json")
    assert spec.code == 0 and spec.json()[0]["artifact_id"] == fleet["ids"]["a10g"], spec
    refused = cli("coverage", "det", "--store", fleet["store"])
    assert refused.code == 2 and "coverage needs the targets" in refused.stderr


def test_a_recipe_means_its_model(cli, fleet: dict[str, Any]) -> None:
    """Recipes that differ only in target fields are one model: one row per target. A recipe edited
    into another model (not built yet) has no engine of its own: only the adopted plans, which
    belong to whichever recipe built their model file, still cover their targets."""
    where = ("--fleet", fleet["fleet"], "--store", fleet["store"])
    recipes = fleet["recipes"]
    both = cli("coverage", *recipes, *where, "--json")
    assert both.code == 1, both
    assert table(both.json(), fleet["ids"]) == EXPECTED
    assert all(i["recipes"] == [str(r) for r in recipes] for i in both.json())

    edited = write_recipe(fleet["root"], "det-next.yaml", "det", "det", "8.6", level=1)
    try:
        items = cli("coverage", edited, *where, "--json").json()
    finally:
        edited.unlink()
    built_here = {"rtx-a6000", "rtx4090", "rtx5090"}
    assert [i["status"] for i in items if i["target"]["label"] in built_here] == ["missing"] * 3
    assert all("other_model" in i["reason"] for i in items if i["target"]["label"] in built_here), items
    adopted = [row for row in table(items, fleet["ids"]) if row[0] not in built_here]
    assert adopted == [row for row in EXPECTED if row[0] not in built_here]


def test_gc_never_removes_the_engine_of_a_fleet_target(cli, fleet: dict[str, Any], tmp_path: Path) -> None:
    """Fails on 760f324 (gc had no --fleet): with every artifact selected (--older-than 0 --force),
    gc keeps exactly the engines coverage names, and coverage is the same afterwards."""
    store = tmp_path / "store"
    shutil.copytree(fleet["store"], store)
    before = cli("coverage", "det", "--fleet", fleet["fleet"], "--store", store, "--json").json()
    covering = {i["artifact_id"] for i in before if i["artifact_id"]}

    everything = cli("gc", "--older-than", "0", "--force", "--dry-run", "--store", store, "--json").json()
    assert covering <= {a["artifact_id"] for a in everything["plan"]["artifacts"]}  # without the fleet: all go

    planned = cli("gc", "--older-than", "0", "--force", "--dry-run", "--fleet", fleet["fleet"], "--store", store,
                  "--json").json()  # fmt: skip
    kept = {a["artifact_id"] for a in planned["plan"]["kept"] if a["reason"].startswith("the only engine")}
    assert kept == covering
    assert not covering & {a["artifact_id"] for a in planned["plan"]["artifacts"]}
    assert fleet["ids"]["t4"] in {a["artifact_id"] for a in planned["plan"]["artifacts"]}  # covers nothing

    done = cli("gc", "--older-than", "0", "--force", "--fleet", fleet["fleet"], "--store", store, "--json")
    assert done.code == 0, done
    assert done.json()["result"]["artifacts_removed"] == len(fleet["ids"]) - len(covering)
    after = cli("coverage", "det", "--fleet", fleet["fleet"], "--store", store, "--json").json()
    assert table(after, fleet["ids"]) == table(before, fleet["ids"])


def test_deploy_selects_engines_as_lookup_does(cli, fleet: dict[str, Any], tmp_path: Path) -> None:
    """`deploy epcontext` and `deploy triton` take a name plus target (lookup's choice) or an id."""
    where = ("--fleet", fleet["fleet"], "--store", fleet["store"])
    ids = fleet["ids"]
    out = tmp_path / "det_ctx.onnx"
    by_name = cli("deploy", "epcontext", "det", "-o", out, "--target", "rtx4090", *where, "--json")
    assert by_name.code == 0 and by_name.json()["artifact_id"] == ids["rtx89"], by_name
    by_id = cli("deploy", "epcontext", ids["rtx86"], "-o", out, "--store", fleet["store"], "--json")
    assert by_id.code == 0 and by_id.json()["artifact_id"] == ids["rtx86"], by_id
    refused = cli("deploy", "epcontext", ids["rtx86"], "-o", out, "--gpu", "L4", "--store", fleet["store"])
    assert refused.code == 2 and "an artifact id names one engine" in refused.stderr, refused
    missing = cli("deploy", "epcontext", "det", "-o", out, "--target", "rtx5090", *where)
    assert missing.code == 1 and "no engine runs on NVIDIA GeForce RTX 5090" in missing.stderr, missing

    repo = tmp_path / "repo"
    served = cli("deploy", "triton", "det", "-o", repo, "--target", "a10g", "--target", "l4", "--target", "rtx4090",
                 *where, "--json")  # fmt: skip
    assert served.code == 0, served
    doc = served.json()
    assert {cc: f["artifact_id"] for cc, f in doc["files"].items()} == {"8.6": ids["a10g"], "8.9": ids["l4"]}
    assert doc["trt_version"] == TRT
    assert any(n.startswith("fleet target rtx4090: TensorRT-RTX, not served by Triton") for n in doc["notes"])
    one = cli("deploy", "triton", ids["l4"], "-o", tmp_path / "one", "--store", fleet["store"], "--json")
    assert one.code == 0 and list(one.json()["files"]) == ["8.9"], one
    assert one.json()["files"]["8.9"]["artifact_id"] == ids["l4"]


def test_coverage_and_gc_fleet_on_either_catalog(cli, catalog_url: str, tmp_path: Path) -> None:
    """The same answers through SQLite (sqlite3, no ORM) and PostgreSQL (the ORM): coverage names
    the engine lookup returns per entry, and gc --fleet keeps exactly those."""
    store = tmp_path / "store"
    opened = open_store(store, catalog=catalog_url)
    try:
        newest = add_row(opened, name="cam", gpu_name="NVIDIA A10G", ccs=("8.6",), trt_version=TRT,
                         verified_on={"NVIDIA A10G": "passed"})  # fmt: skip
        older = add_row(opened, name="cam", gpu_name="NVIDIA A10G", ccs=("8.6",), trt_version=TRT, age_minutes=60)
        l4 = add_row(opened, name="cam", gpu_name="NVIDIA L4", ccs=("8.9",), trt_version=TRT, age_minutes=30)
    finally:
        opened.close()
    manifest = tmp_path / "fleet.yaml"
    manifest.write_text(f'targets:\n  - {{name: g5, gpu: A10G, flavor: tensorrt, trt: "{TRT}"}}\n'
                        f'  - {{name: g2, gpu: L4, flavor: tensorrt, trt: "{TRT}"}}\n')  # fmt: skip
    where = ("--fleet", manifest, "--store", store, "--catalog", catalog_url)
    items = cli("coverage", *where, "--json")
    assert items.code == 1, items  # g2's engine is not verified on an L4
    assert [(i["target"]["label"], i["status"], i["artifact_id"]) for i in items.json()] == [
        ("g5", "covered", newest), ("g2", "unverified", l4)
    ]
    done = cli("gc", "--older-than", "0", "--force", *where, "--json")
    assert done.code == 0, done
    kept = {a["artifact_id"] for a in done.json()["plan"]["kept"]}
    assert kept == {newest, l4} and [a["artifact_id"] for a in done.json()["plan"]["artifacts"]] == [older]


def test_coverage_imports_neither_tensorrt_nor_sqlalchemy(fleet: dict[str, Any]) -> None:
    """Like lookup: on a local SQLite catalog coverage asks sqlite3, and nothing runs an engine."""
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from trtforge.resolution.targets import TargetOptions\n"
        "from trtforge.stages.coverage import coverage\n"
        f"options = TargetOptions(fleet=Path({str(fleet['fleet'])!r}))\n"
        f"items = coverage(['det'], options, store={str(fleet['store'])!r})\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorrt', 'tensorrt_rtx', 'polygraphy', 'onnxruntime', 'sqlalchemy', 'alembic'))\n"
        "print(json.dumps({'items': len(items), 'heavy': heavy}))\n"
    )
    command = [sys.executable, "-c", code]
    proc = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"items": len(EXPECTED), "heavy": []}
