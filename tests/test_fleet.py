"""A store that holds a fleet (issue 21): one model with an engine per target, gc that keeps every
target's engine, lookup from what an operator knows, and an answer a script can capture.

The store is built as a platform team's would be: real TensorRT-RTX builds of one model for two
compute capabilities (two recipes that differ only in ``compatibility``), and plans built elsewhere
by full TensorRT for four data-center GPUs, registered with ``adopt`` under the same name and model
(their bytes are placeholders: lookup and gc read records, never run plans). Every hint that
suggests a flag is followed here, and must work.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import onnx_models
from tests.catalog_rows import add_row, add_verification_row
from tests.cli_server import CliServer
from tests.conftest import CliResult, subprocess_env
from trtforge.rules.flavors import installed_backend
from trtforge.store import open_store

RECIPE = """\
name: {name}
model:
  onnx: models/{model}.onnx
backend: tensorrt_rtx
profiles:
  - x: {{min: [1, 4], opt: [2, 4], max: [4, 4]}}
build:
  optimization_level: {level}
compatibility:
  compute_capabilities: [{ccs}]
"""
TRT = "10.13.3"
# (adopted engine, GPU as nvidia-smi names it, compute capability, extra adopt flags)
ADOPTED = (
    ("a10g", "NVIDIA A10G", "8.6", ()),
    ("l4", "NVIDIA L4", "8.9", ()),
    ("a100", "NVIDIA A100-SXM4-80GB", "8.0", ("--hardware", "ampere_plus")),
    ("h100", "NVIDIA H100 80GB HBM3", "9.0", ()),
)


Run = Callable[..., CliResult]


def module_cli(server: CliServer | None, cwd: Path) -> Run:
    """`cli` for a module fixture (the ``cli`` fixture is per test): forked from the same server."""

    def run(*args: str | Path) -> CliResult:
        argv = [str(a) for a in args]
        if server is not None:
            return CliResult(server.run(argv, subprocess_env(), cwd, timeout=600), argv)
        command = [sys.executable, "-m", "trtforge", *argv]
        proc = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), cwd=cwd, timeout=600)
        return CliResult(proc, argv)

    return run


def write_recipe(root: Path, file: str, name: str, model: str, ccs: str, level: int = 0) -> Path:
    path = root / file
    path.write_text(RECIPE.format(name=name, model=model, ccs=ccs, level=level))
    return path


def adopt(cli: Run, root: Path, store: Path, key: str, gpu: str, cc: str, extra: tuple[str, ...], version: str) -> str:
    plan = root / f"{key}-{version}.plan"
    plan.write_bytes(f"a plan trtexec built on an {gpu} ({version})".encode())
    done = cli("adopt", plan, "--name", "det", "--model", root / "models" / "det.onnx",
               "--trt", TRT, "--gpu", gpu, "--cc", cc, *extra, "--store", store, "--json")  # fmt: skip
    assert done.code == 0, done
    return done.json()["artifact_id"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, cli_server: CliServer | None) -> dict[str, object]:
    root = tmp_path_factory.mktemp("fleet")
    run = module_cli(cli_server, root)
    onnx_models.save(onnx_models.mlp(0), root / "models" / "det.onnx")
    store = root / "store"
    recipes = [write_recipe(root, f"det-{cc}.yaml", "det", "det", cc) for cc in ("8.6", "8.9")]
    built = run("build", *recipes, "--store", store, "--json")
    assert built.code == 0, built
    rtx86, rtx89 = (r["artifact_id"] for r in built.json())
    ids = {"rtx86": rtx86, "rtx89": rtx89}
    for key, gpu, cc, extra in ADOPTED:
        ids[key] = adopt(run, root, store, key, gpu, cc, extra, "v1")
    opened = open_store(store)
    try:
        rtx_version = opened.catalog.get_artifact(rtx86).trt_version
        digest = opened.catalog.get_artifact(rtx86).model_sha256
    finally:
        opened.close()
    return {"root": root, "store": store, "ids": ids, "rtx_version": rtx_version, "digest": digest}


def rtx_target(fleet: dict, gpu: str, cc: str) -> tuple[str, ...]:
    return ("--gpu", gpu, "--cc", cc, "--trt", str(fleet["rtx_version"]), "--flavor", "tensorrt_rtx")


def trt_target(gpu: str, cc: str) -> tuple[str, ...]:
    return ("--gpu", gpu, "--cc", cc, "--trt", TRT)


# -- 1. identity = name + model + target -----------------------------------------------------


def test_one_model_has_an_engine_per_target(cli, fleet: dict) -> None:
    """Fails on 843520b: the two recipes (differing only in compatibility) and the adopted plans were
    "other models" of each other, so every target but the newest recipe's got `other_model`."""
    ids, store = fleet["ids"], ("--store", fleet["store"])
    for target, expected in (
        (rtx_target(fleet, "NVIDIA RTX A6000", "8.6"), "rtx86"),
        (rtx_target(fleet, "NVIDIA GeForce RTX 4090", "8.9"), "rtx89"),
        *((trt_target(gpu, cc), key) for key, gpu, cc, _ in ADOPTED),
    ):
        found = cli("lookup", "det", *target, *store, "--explain", "--json")
        assert found.code == 0, (target, found)
        report = found.json()
        assert report["best"]["artifact_id"] == ids[expected], target
        assert report["model"]["model_sha256"] == fleet["digest"]
        assert "other_model" not in {r["rule"] for r in report["rejected"]}
        assert not any("span" in w for w in report["warnings"]), report["warnings"]


def _versions_store(cli, tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, str]]:
    """cam: model v1 built for 8.9, then model v2 for 8.6. seg: one model, built for 8.6 at
    optimization level 0, then for 8.9 at level 1 (another recipe: another version of the name)."""
    for model, seed in (("cam1", 1), ("cam2", 2), ("seg", 3)):
        onnx_models.save(onnx_models.mlp(seed), tmp_path / "models" / f"{model}.onnx")
    store = tmp_path / "store"
    steps = {
        "cam1": write_recipe(tmp_path, "cam-v1.yaml", "cam", "cam1", "8.9"),
        "cam2": write_recipe(tmp_path, "cam-v2.yaml", "cam", "cam2", "8.6"),
        "seg_a": write_recipe(tmp_path, "seg-a.yaml", "seg", "seg", "8.6", level=0),
        "seg_b": write_recipe(tmp_path, "seg-b.yaml", "seg", "seg", "8.9", level=1),
    }
    ids, warnings = {}, {}
    for key, recipe in steps.items():
        built = cli("build", recipe, "--store", store, "--json")
        assert built.code == 0, built
        [result] = built.json()
        ids[key], warnings[key] = result["artifact_id"], built.stderr
        ids[f"{key}_digest"] = _digest(store, result["artifact_id"])
    return store, ids, warnings


def _digest(store: Path, artifact_id: str) -> str:
    opened = open_store(store)
    try:
        return opened.catalog.get_artifact(artifact_id).model_sha256
    finally:
        opened.close()


def _suggested(text: str) -> list[list[str]]:
    """The flag sets a hint suggests: '(--model-sha256 X or --any-model)' -> [[--model-sha256, X], [--any-model]]."""
    inside = text[text.rindex("(") + 1 : text.rindex(")")]
    return [part.split() for part in inside.split(" or ")]


@pytest.mark.slow  # five real builds
def test_a_new_version_of_a_name_is_announced_and_every_suggested_flag_reaches_the_old_one(
    cli, tmp_path: Path, fleet: dict
) -> None:
    """Fails on 843520b: `build` said nothing when a name got another version, and for a recipe change
    of the same model the hint suggested --model-sha256, which gave the same failure again."""
    store, ids, warnings = _versions_store(cli, tmp_path)
    where = ("--store", store)
    assert "another version" not in warnings["cam1"] + warnings["seg_a"]  # a first build is no new version

    # cam: v2 is another model digest. build says so, and how to reach v1; both ways work.
    assert "adds another version of 'cam'" in warnings["cam2"], warnings["cam2"]
    assert f"`trtforge lookup cam --model-sha256 {ids['cam1_digest']}` (or --any-model)" in warnings["cam2"]
    at_89 = rtx_target(fleet, "NVIDIA GeForce RTX 4090", "8.9")
    refused = cli("lookup", "cam", *at_89, *where)
    assert refused.code == 1 and refused.stdout == "", refused
    hint = refused.stderr.split("hint: ", 1)[1].strip()
    assert _suggested(hint) == [["--model-sha256", ids["cam1_digest"]], ["--any-model"]], hint
    for flags in _suggested(hint):
        followed = cli("lookup", "cam", *flags, *at_89, *where, "--json")
        assert followed.code == 0 and followed.json()["best"]["artifact_id"] == ids["cam1"], (flags, followed)

    # seg: the same model from another recipe. --model-sha256 cannot tell the two apart, so the
    # hint (and build's warning) suggest only --any-model, which works.
    assert "adds another version of 'seg'" in warnings["seg_b"], warnings["seg_b"]
    assert "`trtforge lookup seg --any-model`" in warnings["seg_b"] and "--model-sha256" not in warnings["seg_b"]
    at_86 = rtx_target(fleet, "NVIDIA RTX A6000", "8.6")
    refused = cli("lookup", "seg", *at_86, *where)
    assert refused.code == 1, refused
    hint = refused.stderr.split("hint: ", 1)[1].strip()
    assert _suggested(hint) == [["--any-model"]], hint
    followed = cli("lookup", "seg", "--any-model", *at_86, *where, "--json")
    assert followed.code == 0 and followed.json()["best"]["artifact_id"] == ids["seg_a"], followed
    same_digest = cli("lookup", "seg", "--model-sha256", ids["seg_a_digest"], *at_86, *where)
    assert same_digest.code == 1  # why the hint leaves it out

    # Rebuilding a version for another target is no new version.
    again = write_recipe(tmp_path, "cam-v2-89.yaml", "cam", "cam2", "8.9")
    built = cli("build", again, "--store", store)
    assert built.code == 0 and "another version" not in built.stderr, built


# -- 2. gc keeps every target ----------------------------------------------------------------


def test_gc_keep_last_counts_per_target(cli, fleet: dict, tmp_path: Path) -> None:
    """Fails on 843520b: `gc --keep-last 1` kept the newest artifact of the name and would have
    deleted every other GPU's engine."""
    root, store = fleet["root"], tmp_path / "store"
    shutil.copytree(fleet["store"], store)
    older = dict(fleet["ids"])
    newer = {key: adopt(cli, root, store, key, gpu, cc, extra, "v2") for key, gpu, cc, extra in ADOPTED[:3]}
    forced = cli("build", root / "det-8.6.yaml", "--force", "--store", store, "--json")
    assert forced.code == 0, forced
    newer["rtx86"] = forced.json()[0]["artifact_id"]  # four targets now hold two engines each

    dry = cli("gc", "--keep-last", "1", "--dry-run", "--store", store, "--json")
    assert dry.code == 0, dry
    plan = dry.json()["plan"]
    assert sorted(a["artifact_id"] for a in plan["artifacts"]) == sorted(older[key] for key in newer)
    groups = {(g["target"]["gpu"] or ",".join(g["target"]["compute_capabilities"])): g for g in plan["groups"]}
    assert set(groups) == {"NVIDIA A10G", "NVIDIA L4", "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "8.6", "8.9"}
    for key, gpu in (("a10g", "NVIDIA A10G"), ("l4", "NVIDIA L4"), ("a100", "NVIDIA A100-SXM4-80GB"), ("rtx86", "8.6")):
        assert (groups[gpu]["keep"], groups[gpu]["remove"]) == ([newer[key]], [older[key]]), gpu
    assert groups["8.9"]["keep"] == [older["rtx89"]] and groups["8.9"]["remove"] == []

    human = cli("gc", "--keep-last", "1", "--dry-run", "--store", store)
    assert human.code == 0, human
    for heading in ("TensorRT 10.13.3 on NVIDIA L4", "TensorRT 10.13.3 on NVIDIA H100 80GB HBM3", "TensorRT-RTX"):
        assert heading in human.stdout, human.stdout
    removing = [line.split()[2] for line in human.stdout.splitlines() if line.startswith("  would remove")]
    assert sorted(removing) == sorted(older[key][:12] for key in newer)

    done = cli("gc", "--keep-last", "1", "--store", store, "--json")
    assert done.code == 0 and done.json()["result"]["artifacts_removed"] == 4, done
    for key, gpu, cc, _ in ADOPTED:  # every GPU still gets its (newest) engine
        found = cli("lookup", "det", *trt_target(gpu, cc), "--store", store, "--json")
        assert found.code == 0 and found.json()["best"]["artifact_id"] == newer.get(key, older[key]), (gpu, found)


def test_gc_keep_last_never_takes_the_engine_another_envelope_serves(cli, tmp_path: Path) -> None:
    """Fails on 386a244: engines of one GPU whose compatibility envelopes differ were one retention
    group, so `gc --keep-last 1` removed the older ampere_plus and version-compatible engines, the
    only ones that L4, A100, H100 or a newer runtime load. For each target, lookup answers after gc
    as before; only the older engine of one envelope goes, the dry run says exactly that."""
    store = tmp_path / "store"
    opened = open_store(store)
    try:
        envelopes = [{"hardware": "ampere_plus"}, {"version_compatible": True}, {}, {}]  # oldest first
        ids = [add_row(opened, compatibility=e, age_minutes=100 - i) for i, e in enumerate(envelopes)]
    finally:
        opened.close()
    gpus = [("--gpu", gpu, "--cc", cc) for _, gpu, cc, _ in ADOPTED] + [("--cc", "7.5")]
    targets = [(*gpu, "--trt", trt) for gpu in gpus for trt in (TRT, "10.14.1")]

    def answers() -> dict[tuple[str, ...], str | None]:
        found = {t: cli("lookup", "detector", *t, "--store", store, "--json") for t in targets}
        assert all(r.code in (0, 1) for r in found.values()), found
        return {t: r.json()["best"]["artifact_id"] if r.code == 0 else None for t, r in found.items()}

    before = answers()
    assert before[trt_target("NVIDIA L4", "8.9")] == ids[0] and before[("--cc", "7.5", "--trt", TRT)] is None
    dry = cli("gc", "--keep-last", "1", "--dry-run", "--store", store, "--json")
    done = cli("gc", "--keep-last", "1", "--store", store, "--json")
    assert dry.code == 0 and done.code == 0, (dry, done)
    assert answers() == before
    assert done.json()["plan"] == dry.json()["plan"] and done.json()["result"]["artifacts_removed"] == 1
    assert [a["artifact_id"] for a in done.json()["plan"]["artifacts"]] == [ids[2]]


# -- 3. lookup from a GPU name -----------------------------------------------------------------


def test_a_gpu_name_stands_alone(cli, fleet: dict) -> None:
    """Fails on 843520b: `--gpu L4` was another GPU than "NVIDIA L4" and needed --cc anyway."""
    ids, store = fleet["ids"], ("--store", fleet["store"])
    for typed in ("L4", "NVIDIA L4", "nvidia-l4"):
        found = cli("lookup", "det", "--gpu", typed, "--trt", TRT, *store, "--json")
        assert found.code == 0, (typed, found)
        assert found.json()["best"]["artifact_id"] == ids["l4"] and found.json()["target"]["gpu_name"] == "NVIDIA L4"
        assert found.json()["target"]["compute_capability"] == "8.9"


def test_a_gpu_and_a_capability_that_disagree_are_refused(cli, fleet: dict) -> None:
    """Fails on 843520b: `--gpu "NVIDIA L4" --cc 8.6` was accepted (and found the A10G's engine)."""
    store = ("--store", fleet["store"])
    refused = cli("lookup", "det", "--gpu", "NVIDIA L4", "--cc", "8.6", "--trt", TRT, *store)
    assert refused.code == 2 and refused.stdout == "", refused
    assert "compute capability 8.9, but --cc says 8.6" in refused.stderr and "leave --cc out" in refused.stderr
    followed = cli("lookup", "det", "--gpu", "NVIDIA L4", "--trt", TRT, *store, "--json")  # the hint
    assert followed.code == 0 and followed.json()["best"]["artifact_id"] == fleet["ids"]["l4"], followed


def test_unknown_and_ambiguous_gpu_names_are_refused_with_names_that_work(cli, fleet: dict) -> None:
    ids, store = fleet["ids"], ("--store", fleet["store"])
    unknown = cli("lookup", "det", "--gpu", "NVIDIA L44", "--trt", TRT, *store)
    assert unknown.code == 2 and "not a GPU trtforge knows" in unknown.stderr, unknown
    closest = unknown.stderr.split("closest known: '", 1)[1].split("'", 1)[0]
    assert closest == "NVIDIA L4"
    followed = cli("lookup", "det", "--gpu", closest, "--trt", TRT, *store, "--json")
    assert followed.code == 0 and followed.json()["best"]["artifact_id"] == ids["l4"], followed

    ambiguous = cli("lookup", "det", "--gpu", "H100", "--trt", TRT, *store)
    assert ambiguous.code == 2 and "names 4 GPU models" in ambiguous.stderr, ambiguous
    assert '--gpu "NVIDIA H100 80GB HBM3"' in ambiguous.stderr and "only --cc 9.0" in ambiguous.stderr
    named = cli("lookup", "det", "--gpu", "NVIDIA H100 80GB HBM3", "--trt", TRT, *store, "--json")
    assert named.code == 0 and named.json()["best"]["artifact_id"] == ids["h100"], named
    by_cc = cli("lookup", "det", "--cc", "9.0", "--trt", TRT, *store, "--json")  # the hint's other way
    assert by_cc.code == 0 and by_cc.json()["best"]["artifact_id"] == ids["h100"], by_cc

    # Neither a GPU nor a capability: the hint's two ways both work.
    neither = cli("lookup", "det", "--trt", TRT, *store)
    assert neither.code == 2 and '--gpu "NVIDIA L4"' in neither.stderr and "--cc 8.9" in neither.stderr, neither
    for way in (("--gpu", "NVIDIA L4"), ("--cc", "8.9")):
        followed = cli("lookup", "det", *way, "--trt", TRT, *store, "--json")
        assert followed.code == 0 and followed.json()["best"]["artifact_id"] == ids["l4"], (way, followed)

    # A GPU newer than the table, with its capability: taken as given, and said so.
    new = cli("lookup", "det", "--gpu", "NVIDIA Z999", "--cc", "8.9", "--trt", TRT, *store, "--json")
    assert new.code == 0 and any("not in trtforge's GPU table" in w for w in new.json()["warnings"]), new


def test_the_flavor_follows_the_release_the_store_or_this_machine_has(cli, fleet: dict, tmp_path: Path) -> None:
    """Fails on 843520b: with `--trt 1.6.0` and a store holding only TensorRT-RTX 1.6.0 engines,
    lookup looked for (and answered about) "tensorrt 1.6.0", which does not exist."""
    only_stored = tmp_path / "store"
    opened = open_store(only_stored)
    try:  # a release this machine does not run: only the store's engines have it
        old = add_row(opened, name="old", flavor="tensorrt_rtx", trt_version="1.6.0", gpu_name=None, ccs=("8.6",))
        both = {flavor: add_row(opened, name="both", flavor=flavor, trt_version="1.6.0", gpu_name=None, ccs=("8.6",))
                for flavor in ("tensorrt", "tensorrt_rtx")}  # fmt: skip
    finally:
        opened.close()
    found = cli("lookup", "old", "--cc", "8.6", "--trt", "1.6.0", "--store", only_stored, "--json")
    assert found.code == 0 and found.json()["best"]["artifact_id"] == old, found
    assert found.json()["target"]["flavor"] == "tensorrt_rtx"
    at_86 = ("--cc", "8.6", "--trt", "1.6.0", "--store", only_stored)
    ambiguous = cli("lookup", "both", *at_86)
    assert ambiguous.code == 2 and "--flavor tensorrt or --flavor tensorrt_rtx" in ambiguous.stderr, ambiguous
    for flavor, artifact_id in both.items():  # the hint, followed either way
        chosen = cli("lookup", "both", *at_86, "--flavor", flavor, "--json")
        assert chosen.code == 0 and chosen.json()["best"]["artifact_id"] == artifact_id, chosen

    ids, store = fleet["ids"], ("--store", fleet["store"])
    release = ".".join(str(fleet["rtx_version"]).split(".")[:3])
    rtx = cli("lookup", "det", "--gpu", "RTX 4090", "--trt", release, *store, "--json")  # the installed release
    assert rtx.code == 0, rtx
    assert rtx.json()["target"]["flavor"] == "tensorrt_rtx" and rtx.json()["best"]["artifact_id"] == ids["rtx89"]
    if installed_backend("tensorrt") is None:  # this machine runs TensorRT-RTX only (as here)
        mine = cli("lookup", "det", "--gpu", "RTX 3090", *store, "--json")  # no --trt: the installed runtime
        assert mine.code == 0 and mine.json()["best"]["artifact_id"] == ids["rtx86"], mine
        none = cli("lookup", "det", "--gpu", "L4", "--flavor", "tensorrt", *store)
        assert none.code == 2 and "give --trt" in none.stderr and "--trt 10.13.3" in none.stderr, none
        followed = cli("lookup", "det", "--gpu", "L4", "--flavor", "tensorrt", "--trt", TRT, *store, "--json")
        assert followed.code == 0 and followed.json()["best"]["artifact_id"] == ids["l4"], followed


def test_without_a_gpu_the_error_names_the_capability(cli, fleet: dict) -> None:
    """Fails on 843520b: the message read "no engine runs on (cc 7.5) with tensorrt 10.13.3"."""
    nothing = cli("lookup", "det", "--cc", "7.5", "--trt", TRT, "--store", fleet["store"])
    assert nothing.code == 1, nothing
    assert "no engine runs on a GPU of compute capability 7.5 with TensorRT 10.13.3" in nothing.stderr, nothing


# -- 4. scriptable output -------------------------------------------------------------------------


def test_plain_stdout_is_exactly_the_plan_path(cli, fleet: dict) -> None:
    """Fails on 843520b: `PLAN=$(trtforge lookup ...)` captured the path, the notes and a table."""
    target = trt_target("NVIDIA L4", "8.9")  # the L4's engine and the A100's Ampere+ one both run there
    found = cli("lookup", "det", *target, "--store", fleet["store"])
    assert found.code == 0, found
    [path] = found.stdout.splitlines()
    assert found.stdout == path + "\n" and Path(path).is_file()
    assert "note: adopted" in found.stderr and "compatible (best first)" in found.stderr  # for people, on stderr
    as_json = cli("lookup", "det", *target, "--store", fleet["store"], "--json").json()
    assert as_json["best"]["path"] == path and len(as_json["matches"]) == 2


def test_an_unverified_engine_comes_with_a_warning_and_verified_only_refuses_it(
    cli, fleet: dict, tmp_path: Path
) -> None:
    """Fails on 843520b: an engine never verified on that GPU model was returned, exit 0, with no word."""
    store = tmp_path / "store"
    shutil.copytree(fleet["store"], store)
    target = (*trt_target("NVIDIA A10G", "8.6"), "--store", store)
    found = cli("lookup", "det", *target)
    assert found.code == 0 and "is not verified on NVIDIA A10G" in found.stderr, found
    assert "--verified-only" in found.stderr and found.stdout.count("\n") == 1
    assert any("not verified on NVIDIA A10G" in w for w in cli("lookup", "det", *target, "--json").json()["warnings"])
    refused = cli("lookup", "det", *target, "--verified-only")  # what the warning suggests
    assert refused.code == 1 and refused.stdout == "", refused

    opened = open_store(store)
    try:
        add_verification_row(opened, fleet["ids"]["a10g"], "NVIDIA A10G", "passed", cc="8.6", version=TRT)
    finally:
        opened.close()
    verified = cli("lookup", "det", *target, "--verified-only")
    assert verified.code == 0 and "warning" not in verified.stderr, verified


def test_the_explain_hint_is_given_only_without_explain_and_following_it_explains(cli, tmp_path: Path) -> None:
    """Fails on 843520b: "run `trtforge lookup ... --explain`" came with --explain too."""
    store = tmp_path / "store"
    opened = open_store(store)
    try:
        add_row(opened, name="det", gpu_name="NVIDIA A10G", ccs=("8.6",), trt_version=TRT)
    finally:
        opened.close()
    target = ("--cc", "7.5", "--trt", TRT, "--store", store)
    plain = cli("lookup", "det", *target)
    assert plain.code == 1 and "--explain` to see the rule" in plain.stderr, plain
    explained = cli("lookup", "det", *target, "--explain")
    assert explained.code == 1 and "--explain` to see the rule" not in explained.stderr, explained
    assert "hardware" in explained.stderr + explained.stdout  # what the hint promised: the rule that rejected it
    assert explained.stdout == "" and "hardware" in explained.stderr


def test_json_keeps_its_structure(cli, fleet: dict) -> None:
    """`lookup --json`'s documented shape (docs/lookup.md): keys are only ever added."""
    found = cli("lookup", "det", *trt_target("NVIDIA L4", "8.9"), "--store", fleet["store"], "--explain", "--json")
    report = found.json()
    assert {"target", "model", "matches", "warnings", "rejected", "best"} <= set(report)
    assert {"path", "artifact_id", "name", "flavor", "trt_version", "plan_sha256", "target", "notes", "metadata",
            "warnings"} <= set(report["best"])  # fmt: skip
    assert {"model_sha256", "recipe_fingerprint", "why"} <= set(report["model"])
    failed = cli("lookup", "det", "--cc", "7.5", "--trt", TRT, "--store", fleet["store"], "--json")
    assert failed.code == 1 and {"best", "error", "matches", "target"} <= set(failed.json()), failed
