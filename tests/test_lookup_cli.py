"""Lookup end to end: a real TensorRT-RTX artifact plus rows for TensorRT engines built elsewhere."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.catalog_rows import add_row
from tests.conftest import subprocess_env
from tests.gpu_names import spellings
from tests.procs import build_one
from trtforge.rules.gpus import GPUS, GpuModel, normalize
from trtforge.store import open_store

RTX_4090 = ("--gpu", "NVIDIA GeForce RTX 4090", "--cc", "8.9", "--flavor", "tensorrt_rtx")


@pytest.fixture(scope="module")
def built_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One real TensorRT-RTX build of a tiny MLP, then rows describing TensorRT engines."""
    from tests import onnx_models

    root = tmp_path_factory.mktemp("lookup")
    model = onnx_models.save(onnx_models.mlp(0), root / "models" / "detector.onnx")
    recipe = root / "detector.yaml"
    recipe.write_text(
        "name: detector\nmodel:\n  onnx: models/detector.onnx\nbackend: tensorrt_rtx\n"
        "profiles:\n  - x: {min: [1, 4], opt: [2, 4], max: [4, 4]}\nbuild:\n  optimization_level: 0\n"
    )
    store_dir = root / "store"
    built = build_one(recipe, store_dir)
    store = open_store(store_dir)
    try:
        real = store.catalog.get_artifact(built["artifact_id"])
        rtx_version, model_sha = real.trt_version, real.model_sha256
        # Rows of the same model and recipe, built elsewhere (the newest build defines the model).
        same = {"model_sha256": model_sha, "recipe_fingerprint": real.recipe_fingerprint, "recipe": real.recipe}
        ids = {
            "rtx": built["artifact_id"],
            "rtx_version": rtx_version,
            "model_sha256": model_sha,
            "rtx_old": add_row(store, flavor="tensorrt_rtx", trt_version="1.6.0", gpu_name=None, ccs=(), **same),
            "a10g": add_row(store, gpu_name="NVIDIA A10G", ccs=("8.6",), trt_version="10.13.3", age_minutes=30, **same),
            "a100_wide": add_row(
                store,
                **same,
                gpu_name="NVIDIA A100-SXM4-80GB",
                ccs=("8.0",),
                trt_version="10.8.0",
                compatibility={"hardware": "ampere_plus", "version_compatible": True},
                age_minutes=10,
            ),
            "t4": add_row(store, gpu_name="Tesla T4", ccs=("7.5",), trt_version="10.13.3", **same),
            "other_model": add_row(store, name="classifier", model_sha256="b" * 64),
            "rtx_only_model": add_row(
                store,
                name="segmenter",
                flavor="tensorrt_rtx",
                trt_version="1.6.0",
                gpu_name=None,
                ccs=(),
                model_sha256="c" * 64,
            ),
        }
    finally:
        store.close()
    ids["store"] = str(store_dir)
    ids["model"] = str(model)
    return ids


def rejected_rules(report: dict) -> dict[str, str]:
    return {r["artifact_id"]: r["rule"] for r in report["rejected"]}


def test_rtx_target_finds_the_real_build(cli, built_store: dict[str, str]) -> None:
    version = built_store["rtx_version"].rsplit(".", 1)[0]  # a release given as MAJOR.MINOR.PATCH
    result = cli(
        "lookup", "detector", *RTX_4090, "--trt", version, "--store", built_store["store"], "--explain", "--json"
    )
    assert result.code == 0, result
    report = result.json()
    assert report["best"]["artifact_id"] == built_store["rtx"]
    assert Path(report["best"]["path"]).is_file()
    assert rejected_rules(report) == {
        built_store["rtx_old"]: "rtx_version",
        built_store["a10g"]: "flavor",
        built_store["a100_wide"]: "flavor",
        built_store["t4"]: "flavor",
    }


def test_rtx_build_refused_on_hopper_and_turing(cli, built_store: dict[str, str]) -> None:
    for cc in ("9.0", "7.5"):
        args = ("--gpu", "some gpu", "--cc", cc, "--flavor", "tensorrt_rtx", "--trt", built_store["rtx_version"])
        result = cli("lookup", "detector", *args, "--store", built_store["store"], "--explain", "--json")
        assert result.code == 1, result
        report = result.json()
        assert report["best"] is None and "no engine runs on" in report["error"]
        assert rejected_rules(report)[built_store["rtx"]] == "rtx_compute_capability"


def test_tensorrt_targets(cli, built_store: dict[str, str]) -> None:
    store = ("--store", built_store["store"])
    a10g = cli("lookup", "detector", "--gpu", "NVIDIA A10G", "--cc", "8.6", "--trt", "10.13.3", *store, "--json")
    assert a10g.code == 0, a10g
    report = a10g.json()
    assert [m["artifact_id"] for m in report["matches"]] == [built_store["a10g"], built_store["a100_wide"]]
    assert "rejected" not in report  # only with --explain

    # Same capability, another GPU model: still the exact build first, with a note.
    a6000 = cli("lookup", "detector", "--gpu", "NVIDIA RTX A6000", "--cc", "8.6", "--trt", "10.13.3", *store, "--json")
    best = a6000.json()["best"]
    assert best["artifact_id"] == built_store["a10g"] and any("may run slower" in n for n in best["notes"])

    # Hopper on a newer 10.x runtime: only the Ampere+ version-compatible engine can run.
    h100 = cli(
        "lookup", "detector", "--gpu", "NVIDIA H100", "--cc", "9.0", "--trt", "10.14.1", *store, "--explain", "--json"
    )
    assert h100.code == 0, h100
    report = h100.json()
    assert report["best"]["artifact_id"] == built_store["a100_wide"]
    rules = rejected_rules(report)
    assert rules[built_store["a10g"]] == "trt_version" and rules[built_store["t4"]] == "trt_version"
    assert rules[built_store["rtx"]] == "flavor"

    # Turing with the build's runtime: only the T4 engine.
    t4 = cli(
        "lookup", "detector", "--gpu", "Tesla T4", "--cc", "7.5", "--trt", "10.13.3", *store, "--explain", "--json"
    )
    rules = rejected_rules(t4.json())
    assert t4.json()["best"]["artifact_id"] == built_store["t4"]
    assert rules[built_store["a10g"]] == "hardware" and rules[built_store["a100_wide"]] == "hardware"

    # An older runtime than every build: nothing, exit 1, and the reasons in human form.
    rtx_only = cli("lookup", "--model-sha256", "c" * 64, "--cc", "8.6", "--trt", "10.13.3", *store)
    assert rtx_only.code == 1 and "none was built for tensorrt" in rtx_only.stderr

    old = cli("lookup", "detector", "--cc", "8.6", "--trt", "10.7.0", *store, "--explain")
    assert old.code == 1, old
    assert old.stdout == "" and "trt_version" in old.stderr and "no engine runs on" in old.stderr


def test_lookup_by_model_digest_and_output(cli, built_store: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "deploy" / "detector.plan"
    version = built_store["rtx_version"]
    result = cli(
        "lookup",
        "--model-sha256",
        built_store["model_sha256"],
        *RTX_4090,
        "--trt",
        version,
        "--store",
        built_store["store"],
        "--output",
        out,
        "--json",
    )
    assert result.code == 0, result
    best = result.json()["best"]
    assert best["path"] == str(out)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == best["plan_sha256"]
    human = cli("lookup", "detector", *RTX_4090, "--trt", version, "--store", built_store["store"], "-o", tmp_path)
    assert human.code == 0, human
    assert (tmp_path / "detector.plan").is_file() and human.stdout.strip() == str(tmp_path / "detector.plan")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    bad = cli("lookup", "detector", *RTX_4090, "--trt", version, "--store", built_store["store"], "-o", blocked / "x")
    assert bad.code == 2 and "cannot write the plan" in bad.stderr


def test_verified_only(cli, built_store: dict[str, str], tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store = open_store(store_dir)
    plain = add_row(store, age_minutes=0)
    verified = add_row(store, age_minutes=100, verified_on={"NVIDIA A10G": "passed"})
    failed = add_row(store, age_minutes=0, verified_on={"NVIDIA A10G": "failed"})
    store.close()
    target = ("--gpu", "NVIDIA A10G", "--cc", "8.6", "--trt", "10.13.3", "--store", store_dir)
    ranked = cli("lookup", "detector", *target, "--explain", "--json").json()
    assert [m["artifact_id"] for m in ranked["matches"]] == [verified, plain]
    assert rejected_rules(ranked) == {failed: "verification"}
    only = cli("lookup", "detector", *target, "--verified-only", "--explain", "--json").json()
    assert [m["artifact_id"] for m in only["matches"]] == [verified]
    assert rejected_rules(only) == {failed: "verification", plain: "verified_only"}


@pytest.fixture(scope="module")
def every_gpu_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A TensorRT engine for every GPU of the table, each verified on its GPU and on a MIG slice of
    it under NVML's names."""
    store_dir = tmp_path_factory.mktemp("every-gpu") / "store"
    store = open_store(store_dir)
    try:
        rows = {}
        for gpu in GPUS:
            slice_name = f"{gpu.name} MIG 1g.10gb"
            verified_on = {gpu.name: "passed", slice_name: "passed"}
            rows[gpu.name] = add_row(store, gpu_name=gpu.name, ccs=(gpu.compute_capability,), verified_on=verified_on)
    finally:
        store.close()
    return store_dir, rows


@pytest.mark.slow  # seconds each: README's test command keeps its 5-minute cap (.ci/run runs it)
@pytest.mark.parametrize("gpu", GPUS, ids=lambda gpu: gpu.name)
def test_verified_only_finds_the_verified_engine_however_the_gpu_is_written(
    every_gpu_store: tuple[Path, dict[str, str]], gpu: GpuModel
) -> None:
    """Failed before its fix: "NVIDIA RTX 4090" with --cc 8.9 was a GPU taken as given, so the engine
    verified on "NVIDIA GeForce RTX 4090" was refused (verified_only) while "RTX 4090" found it."""
    import trtforge

    store_dir, rows = every_gpu_store
    written: dict[str, str] = {}  # one of each spelling that differs in more than case and separators
    for typed, unique in spellings(gpu).items():
        if unique:
            written.setdefault(normalize(typed), typed)
    for typed in written.values():
        for cc in (gpu.compute_capability, None):
            target = trtforge.runtime_target(gpu=typed, cc=cc, trt="10.13.3", flavor="tensorrt")
            found = trtforge.lookup("detector", target, store=store_dir, verified_only=True)
            assert found.artifact_id == rows[gpu.name], (typed, cc)


@pytest.mark.slow  # seconds each: README's test command keeps its 5-minute cap (.ci/run runs it)
@pytest.mark.parametrize("gpu", GPUS, ids=lambda gpu: gpu.name)
def test_verified_only_counts_a_mig_slices_verification_however_its_profile_is_written(
    every_gpu_store: tuple[Path, dict[str, str]], gpu: GpuModel
) -> None:
    """Failed before its fix: "... MIG 1G.10GB" kept its case, so the verification recorded under
    NVML's "... MIG 1g.10gb" did not count with --verified-only."""
    import trtforge

    store_dir, rows = every_gpu_store
    for typed in (f"{gpu.name} MIG 1g.10gb", f"{gpu.name} MIG 1G.10GB", f"{gpu.name.upper()} mig 1G.10gb"):
        target = trtforge.runtime_target(gpu=typed, cc=gpu.compute_capability, trt="10.13.3", flavor="tensorrt")
        found = trtforge.lookup("detector", target, store=store_dir, verified_only=True)
        assert found.artifact_id == rows[gpu.name], typed


def test_verified_only_answers_the_same_for_each_spelling_on_the_command_line(
    cli, every_gpu_store: tuple[Path, dict[str, str]]
) -> None:
    store_dir, rows = every_gpu_store
    answers = {}
    for typed in ("NVIDIA GeForce RTX 4090", "RTX 4090", "NVIDIA RTX 4090", "GeForce 4090", "nvidia-geforce-rtx-4090"):
        for cc in (("--cc", "8.9"), ()):
            target = ("--gpu", typed, *cc, "--trt", "10.13.3", "--store", store_dir)
            result = cli("lookup", "detector", *target, "--verified-only", "--json")
            report = result.json()
            gpu_name = (report["target"] or {}).get("gpu_name")
            answers[typed, cc] = (result.code, gpu_name, (report["best"] or {}).get("artifact_id"))
    assert set(answers.values()) == {(0, "NVIDIA GeForce RTX 4090", rows["NVIDIA GeForce RTX 4090"])}, answers


def test_tampered_blob_is_not_handed_out(cli, tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    store = open_store(store_dir)
    add_row(store)
    [artifact] = store.catalog.list_artifacts()
    blob = store.blobs.path_for(artifact.plan_sha256)
    store.close()
    blob.chmod(0o644)
    blob.write_bytes(b"evil")
    target = ("--cc", "8.6", "--trt", "10.13.3", "--store", store_dir)
    assert cli("lookup", "detector", *target).code == 1
    result = cli("lookup", "detector", *target, "--output", tmp_path / "x.plan")
    assert result.code == 1 and "corrupted" in result.stderr
    assert not (tmp_path / "x.plan").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope", "--cc", "8.6", "--trt", "10.13.3"), "no artifact named 'nope'"),
        (("detector", "--cc", "86", "--trt", "10.13.3"), "compute capability '86'"),
        (("detector", "--cc", "8.6", "--trt", "latest"), "TensorRT version 'latest'"),
        (("detector", "--gpu", "NVIDIA A1OG"), "'NVIDIA A1OG' is not a GPU trtforge knows"),
        (("detector", "--trt", "10.13.3"), "needs --cc, or a --gpu trtforge knows"),
        (("detector", "--cc", "8.6", "--trt", "10.1", "--flavor", "onnx"), "flavor 'onnx'"),
        (("--model-sha256", "xyz", "--cc", "8.6", "--trt", "10.1"), "not a lowercase hex sha256"),
        (("--cc", "8.6", "--trt", "10.1"), "needs a name or --model-sha256"),
        (("detector",), "no NVIDIA GPU detected"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    cli, built_store: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    # CUDA_VISIBLE_DEVICES="" hides every GPU from this process (as CUDA does), so the no-GPU case
    # holds on a GPU machine too (it failed there on 4692594, which read NVML device 0 regardless).
    result = cli("lookup", *args, "--store", built_store["store"], env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.code == 2, result
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")


def test_empty_store_is_exit_2(cli, tmp_path: Path) -> None:
    result = cli("lookup", "detector", "--cc", "8.6", "--trt", "10.13.3", "--store", tmp_path / "none")
    assert result.code == 2 and "store is empty" in result.stderr
    assert not (tmp_path / "none").exists()


def test_python_api_imports_nothing_heavy(built_store: dict[str, str]) -> None:
    code = f"""
import sys, trtforge
target = trtforge.runtime_target(gpu="NVIDIA A10G", cc="8.6", trt="10.13.3")
found = trtforge.lookup("detector", target, store={built_store["store"]!r})
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorrt", "tensorrt_rtx", "polygraphy", "onnx",
    "onnxruntime", "alembic", "numpy"))
print(found.artifact_id, found.path.is_file(), heavy)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [built_store["a10g"], "True", "[]"]


def test_python_api_errors(built_store: dict[str, str]) -> None:
    import trtforge
    from trtforge.core.errors import NoCompatibleEngineError, NotFoundError

    target = trtforge.runtime_target(cc="7.0", trt="10.13.3")
    with pytest.raises(NoCompatibleEngineError):
        trtforge.lookup("detector", target, store=built_store["store"])
    with pytest.raises(NotFoundError):
        trtforge.lookup("nope", target, store=built_store["store"])


def test_runtime_validity_has_the_final_word_on_a_detected_target(built_store: dict[str, str]) -> None:
    """The real TensorRT-RTX runtime judges the real plan. Without a GPU it answers INVALID, so
    the rules' best match is dropped with rule ``runtime_validity``; on a GPU it would stay."""
    from trtforge.rules.target import RuntimeTarget
    from trtforge.stages.lookup import rank_in_store
    from trtforge.store import open_existing_store

    here = RuntimeTarget("tensorrt_rtx", built_store["rtx_version"], "8.9", "NVIDIA GeForce RTX 4090", detected=True)
    store = open_existing_store(built_store["store"])
    assert store is not None
    try:
        unchecked = rank_in_store(store, here, name="detector", runtime_check=False)
        assert unchecked.best is not None and unchecked.best.candidate.artifact_id == built_store["rtx"]
        checked = rank_in_store(store, here, name="detector")
    finally:
        store.close()
    assert checked.best is None
    rejection = next(r for r in checked.rejected if r.candidate.artifact_id == built_store["rtx"])
    assert rejection.rule == "runtime_validity" and "INVALID" in rejection.reason


def test_a_corrupt_plan_is_never_handed_out(cli, tmp_path: Path) -> None:
    """A damaged newest plan fails the hash check; after `fsck --repair` lookup takes the next one."""
    store_dir = tmp_path / "store"
    store = open_store(store_dir)
    try:
        older = add_row(store, name="cam", age_minutes=60)
        newer = add_row(store, name="cam", age_minutes=0)
        damaged = store.blobs.path_for(store.catalog.get_artifact(newer).plan_sha256)
    finally:
        store.close()
    damaged.chmod(0o644)
    damaged.write_bytes(b"tampered")
    target = ("--gpu", "NVIDIA A10G", "--cc", "8.6", "--trt", "10.13.3", "--store", store_dir)

    refused = cli("lookup", "cam", *target, "--output", tmp_path / "out.plan", "--json")
    assert refused.code == 1 and "corrupted" in refused.json()["error"], refused
    assert not (tmp_path / "out.plan").exists()

    assert cli("fsck", "--repair", "--store", store_dir, "--json").code == 0
    found = cli("lookup", "cam", *target, "--output", tmp_path / "out.plan", "--json")
    assert found.code == 0 and found.json()["best"]["artifact_id"] == older, found
    assert hashlib.sha256((tmp_path / "out.plan").read_bytes()).hexdigest() == found.json()["best"]["plan_sha256"]


A10G = ("--gpu", "NVIDIA A10G", "--cc", "8.6", "--trt", "10.13.3")


def test_output_is_a_private_copy_so_writing_to_it_cannot_damage_the_store(
    cli, built_store: dict[str, str], tmp_path: Path
) -> None:
    """Fails on 55eb6bf: --output hard-linked the blob, so a deploy script writing to the file (root
    ignores the blob's 0444 mode) rewrote the store's plan."""
    out = tmp_path / "deploy" / "detector.plan"
    store = ("--store", built_store["store"])
    target = (*RTX_4090, "--trt", built_store["rtx_version"])
    result = cli("lookup", "detector", *target, *store, "--output", out, "--json")
    assert result.code == 0, result
    sha = result.json()["best"]["plan_sha256"]
    blob = Path(built_store["store"]) / "blobs" / "sha256" / sha[:2] / sha
    assert not out.samefile(blob) and blob.stat().st_nlink == 1
    assert out.stat().st_mode & 0o200  # an ordinary file of its owner, not a read-only blob
    out.chmod(0o644)
    out.write_bytes(b"overwritten by a deploy script")
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == sha
    again = cli("lookup", "detector", *target, *store, "--output", out, "--json")  # replaces it atomically
    assert again.code == 0 and hashlib.sha256(out.read_bytes()).hexdigest() == sha
    assert list(out.parent.iterdir()) == [out]  # no temp file left behind
    check = cli("fsck", *store, "--json")
    assert check.code == 0 and check.json()["corrupt"] == [], check


def test_weight_stripped_plans_are_handed_out_only_when_asked(cli, tmp_path: Path) -> None:
    """Fails on 55eb6bf: lookup returned a strip_weights plan like any other (only `show` warned)."""
    import trtforge

    store_dir = tmp_path / "store"
    store = open_store(store_dir)
    try:
        full = add_row(store, age_minutes=60)
        stripped = add_row(store, age_minutes=0, weightless=True, verified_on={"NVIDIA A10G": "passed"})
        only_stripped = add_row(store, name="lite", weightless=True)
    finally:
        store.close()
    found = cli("lookup", "detector", *A10G, "--store", store_dir, "--explain", "--json")
    assert found.code == 0 and found.json()["best"]["artifact_id"] == full, found
    [rejection] = found.json()["rejected"]
    assert rejection["artifact_id"] == stripped and rejection["rule"] == "weightless"
    assert "--allow-weightless" in rejection["reason"]
    human = cli("lookup", "detector", *A10G, "--store", store_dir, "--explain")
    assert "weightless" in human.stderr and "weight-stripped plan" in human.stderr

    allowed = cli("lookup", "detector", *A10G, "--store", store_dir, "--allow-weightless", "--json").json()["best"]
    assert allowed["artifact_id"] == stripped and any("refit" in note for note in allowed["notes"])
    assert allowed["metadata"]["weightless"] is True

    none = cli("lookup", "lite", *A10G, "--store", store_dir)
    assert none.code == 1 and "(weightless)" in none.stderr, none
    target = trtforge.runtime_target(gpu="NVIDIA A10G", cc="8.6", trt="10.13.3")
    assert trtforge.lookup("detector", target, store=store_dir).artifact_id == full
    assert trtforge.lookup("lite", target, store=store_dir, allow_weightless=True).artifact_id == only_stripped
    assert cli("fsck", "--store", store_dir).code == 0  # lookups leave the store as they found it


def test_a_name_means_its_newest_model(cli, tmp_path: Path) -> None:
    """Fails on 55eb6bf: "verified on this GPU" ranked before "newest", so after a model update a
    service kept receiving the old model's verified engine."""
    import trtforge

    old_model, new_model = "a" * 64, "d" * 64
    store_dir = tmp_path / "store"
    store = open_store(store_dir)
    try:
        old_verified = add_row(store, model_sha256=old_model, age_minutes=600, verified_on={"NVIDIA A10G": "passed"})
        old_plain = add_row(store, model_sha256=old_model, age_minutes=500)
        new = add_row(store, model_sha256=new_model, age_minutes=0)
        # "cam": the new model is built only for another GPU so far
        cam_old = add_row(store, name="cam", model_sha256=old_model, age_minutes=100)
        add_row(store, name="cam", model_sha256=new_model, gpu_name="NVIDIA L4", ccs=("8.9",), age_minutes=0)
        # "seg": same model digest, a changed recipe (e.g. new profiles) is a new model too
        add_row(store, name="seg", recipe_fingerprint="1" * 64, age_minutes=100, verified_on={"NVIDIA A10G": "passed"})
        seg_new = add_row(store, name="seg", recipe_fingerprint="2" * 64, age_minutes=0)
    finally:
        store.close()
    where = (*A10G, "--store", store_dir)

    found = cli("lookup", "detector", *where, "--explain", "--json")
    assert found.code == 0, found
    report = found.json()
    assert report["best"]["artifact_id"] == new
    assert report["model"]["model_sha256"] == new_model and "newest build of 'detector'" in report["model"]["why"]
    assert rejected_rules(report) == {old_verified: "other_model", old_plain: "other_model"}
    assert len(report["warnings"]) == 2 and "span 2 models" in report["warnings"][0]
    assert "is not verified on NVIDIA A10G" in report["warnings"][1]
    human = cli("lookup", "detector", *where, "--explain")
    assert f"model: model sha256 {new_model[:12]}" in human.stderr and "newest build" in human.stderr
    assert "warning: the candidates span 2 models" in human.stderr

    asked = cli("lookup", "detector", "--model-sha256", old_model, *where, "--explain", "--json").json()
    assert asked["best"]["artifact_id"] == old_verified and "--model-sha256" in asked["model"]["why"]
    assert rejected_rules(asked) == {}  # --model-sha256 selects the rows in SQL: only that model's
    anything = cli("lookup", "detector", "--any-model", *where, "--json").json()
    assert anything["model"] is None and anything["best"]["artifact_id"] == old_verified
    assert "not of the newest" in anything["warnings"][0]

    cam = cli("lookup", "cam", *where)
    assert cam.code == 1 and "other_model" in cam.stderr, cam
    assert f"--model-sha256 {old_model}" in cam.stderr and "--any-model" in cam.stderr
    assert cli("lookup", "cam", "--any-model", *where, "--json").json()["best"]["artifact_id"] == cam_old
    assert cli("lookup", "seg", *where, "--json").json()["best"]["artifact_id"] == seg_new

    target = trtforge.runtime_target(gpu="NVIDIA A10G", cc="8.6", trt="10.13.3")
    assert trtforge.lookup("detector", target, store=store_dir).artifact_id == new
    assert trtforge.lookup("detector", target, store=store_dir, any_model=True).artifact_id == old_verified
    assert cli("fsck", "--store", store_dir).code == 0
