"""`trtforge deploy triton`: the model repository Triton reads, checked with Triton's own protobuf.

Every generated config.pbtxt is parsed into ``inference.ModelConfig`` from the ``tritonclient``
wheel (``tritonclient/grpc/model_config_pb2.py``, loaded from its file so that grpc is not needed)
with ``google.protobuf.text_format``. Full-TensorRT plans cannot be built here, so the artifacts
are catalog rows (placeholder plan bytes) and an adopted plan; nothing is loaded in Triton here
(``test_gpu_triton_loads_the_repository`` does that where ``tritonserver`` and a GPU exist).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import threading
import uuid
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import trtforge
from tests.catalog_rows import BASE_TIME, add_verification_row, placeholder_artifact
from tests.conftest import REPO
from trtforge.rules.target import detect_gpus
from trtforge.store import open_store
from trtforge.store.catalog import Blob

TRT = "10.13.3.9"
IO = [
    {"name": "images", "mode": "input", "dtype": "float", "shape": [-1, 3, 32, 32]},
    {"name": "logits", "mode": "output", "dtype": "float", "shape": [-1, 10]},
]
PROFILES = [
    {"images": {"min": [1, 3, 32, 32], "opt": [4, 3, 32, 32], "max": [8, 3, 32, 32]}},
    {"images": {"min": [9, 3, 32, 32], "opt": [16, 3, 32, 32], "max": [32, 3, 32, 32]}},
]
MODEL_IO = {
    "inputs": [{"name": "images", "dtype": "float", "shape": ["N", 3, 32, 32]}],
    "outputs": [{"name": "logits", "dtype": "float", "shape": ["N", 10]}],
}


def triton_model_config() -> ModuleType:
    """Triton's ModelConfig protobuf module, as the tritonclient wheel ships it."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tritonclient is not installed (pip install -e '.[test]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    with warnings.catch_warnings():  # gencode one protobuf major behind the runtime warns, and works
        warnings.simplefilter("ignore")
        module_spec.loader.exec_module(module)
    return module


_PB2: ModuleType | None = None


def parse_config(path: Path) -> Any:
    global _PB2
    from google.protobuf import text_format

    if _PB2 is None:
        _PB2 = triton_model_config()
    return text_format.Parse(path.read_text(), _PB2.ModelConfig())


def add_trt_row(
    store_dir: Path,
    *,
    name: str = "detector",
    cc: str = "8.6",
    gpu: str | None = "NVIDIA A10G",
    trt: str = TRT,
    io: list[dict[str, Any]] | None = None,
    profiles: list[dict[str, Any]] | None = None,
    compatibility: dict[str, Any] | None = None,
    model_sha256: str = "a" * 64,
    age_minutes: int = 0,
    verified: dict[str, tuple[str, str]] | None = None,  # GPU model -> (status, cc)
    flavor: str = "tensorrt",
    plugins: list[dict[str, Any]] | None = None,  # details.plugins: the libraries the build loaded
) -> str:
    """A full-TensorRT artifact as a build on that GPU records it (plan bytes are a placeholder)."""
    opened = open_store(store_dir)
    try:
        artifact_id = uuid.uuid4().hex
        blob = opened.blobs.put_bytes(f"placeholder TensorRT plan {artifact_id}".encode())
        details = {
            "origin": "built",
            "target": {"flavor": flavor, "trt_version": trt, "gpu_name": gpu, "compute_capabilities": [cc],
                       "os": "linux", "arch": "x86_64", "cuda": "cu12", "env": {}},
            "compatibility": compatibility or {"hardware": "none", "version_compatible": False,
                                               "exclude_lean_runtime": False},
            "model": {"path": "/models/detector.onnx", **MODEL_IO},
            "plugins": plugins or [],
        }
        opened.catalog.add_artifact(
            placeholder_artifact(
                id=artifact_id, name=name, model_sha256=model_sha256, flavor=flavor, trt_version=trt,
                gpu_name=gpu, compute_capabilities=[cc], plan_sha256=blob.sha256, plan_size=blob.size,
                io_tensors=IO if io is None else io, profiles=PROFILES if profiles is None else profiles,
                details=details, created_at=BASE_TIME + timedelta(minutes=1000 - age_minutes),
            ),
            Blob(sha256=blob.sha256, size=blob.size, kind="plan"),
        )
        for gpu_name, (status, at_cc) in (verified or {}).items():
            add_verification_row(opened, artifact_id, gpu_name, status, cc=at_cc, flavor=flavor, version=trt)
        return artifact_id
    finally:
        opened.close()


def plan_sha(store_dir: Path, artifact_id: str) -> str:
    opened = open_store(store_dir)
    try:
        return opened.catalog.get_artifact(artifact_id).plan_sha256
    finally:
        opened.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path / "models"


def test_config_is_triton_model_config_and_plans_are_lookups_choice(store: Path, repo: Path) -> None:
    a10g = add_trt_row(store, cc="8.6", gpu="NVIDIA A10G")
    l4 = add_trt_row(store, cc="8.9", gpu="NVIDIA L4", age_minutes=5)
    older_l4 = add_trt_row(store, cc="8.9", gpu="NVIDIA L4", age_minutes=50)

    result = trtforge.deploy_triton(repo, "detector", cc=["8.6", "8.9"], store=store)

    assert result.version == 1 and result.config_status == "written"
    config = parse_config(repo / "detector" / "config.pbtxt")
    assert config.name == "detector"
    assert config.platform == "tensorrt_plan"
    assert config.max_batch_size == 0
    assert [(i.name, config.DESCRIPTOR.fields_by_name["input"].message_type.fields_by_name["data_type"]
             .enum_type.values_by_number[i.data_type].name, list(i.dims)) for i in config.input] == [
        ("images", "TYPE_FP32", [-1, 3, 32, 32])
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [("logits", 11, [-1, 10])]  # TYPE_FP32
    groups = [(g.kind, g.count, list(g.profile)) for g in config.instance_group]
    kind_gpu = config.instance_group[0].KIND_GPU
    assert groups == [(kind_gpu, 1, ["0"]), (kind_gpu, 1, ["1"])]  # two different profiles
    assert dict(config.cc_model_filenames) == {"8.6": "model_cc86.plan", "8.9": "model_cc89.plan"}
    assert config.parameters["trtforge.tensorrt"].string_value == TRT

    # The layout Triton reads: config.pbtxt and integer version directories holding the named files.
    model_dir = repo / "detector"
    assert tree(model_dir) == [".trtforge.lock", "1", "1/model_cc86.plan", "1/model_cc89.plan",
                               "config.pbtxt", "trtforge.json"]
    assert sha256(model_dir / "1" / "model_cc86.plan") == plan_sha(store, a10g)
    assert sha256(model_dir / "1" / "model_cc89.plan") == plan_sha(store, l4)
    # The same choice lookup makes for that target (the newer of the two L4 plans).
    for cc, expected in (("8.6", a10g), ("8.9", l4)):
        engine = trtforge.lookup("detector", trtforge.runtime_target(cc=cc, trt=TRT), store=store)
        assert engine.artifact_id == expected != older_l4
    record = json.loads((model_dir / "trtforge.json").read_text())
    files = record["versions"]["1"]["files"]
    assert {cc: f["artifact_id"] for cc, f in files.items()} == {"8.6": a10g, "8.9": l4}
    assert files["8.6"]["cuda"] == "cu12" and files["8.6"]["trt_version"] == TRT
    assert files["8.6"]["version_compatible"] is False and files["8.6"]["plugins"] == []
    assert record["versions"]["1"]["model"]["model_sha256"] == "a" * 64


def test_a_new_version_never_overwrites_and_shares_the_config(store: Path, repo: Path, cli: Callable) -> None:
    add_trt_row(store, cc="8.6")
    first = cli("deploy", "triton", "detector", "-o", repo, "--store", store, "--json")
    assert first.code == 0, first
    config_before = (repo / "detector" / "config.pbtxt").read_bytes()
    plan_before = (repo / "detector" / "1" / "model_cc86.plan").read_bytes()
    newer = add_trt_row(store, cc="8.6", model_sha256="b" * 64, age_minutes=-10)  # a new model, same I/O

    second = cli("deploy", "triton", "detector", "-o", repo, "--store", store, "--json")

    assert second.code == 0, second
    assert second.json()["version"] == 2 and second.json()["config_status"] == "unchanged"
    assert (repo / "detector" / "config.pbtxt").read_bytes() == config_before
    assert (repo / "detector" / "1" / "model_cc86.plan").read_bytes() == plan_before
    assert sha256(repo / "detector" / "2" / "model_cc86.plan") == plan_sha(store, newer)
    record = json.loads((repo / "detector" / "trtforge.json").read_text())
    assert sorted(record["versions"]) == ["1", "2"]
    assert record["versions"]["2"]["model"]["model_sha256"] == "b" * 64


def test_a_version_with_other_io_is_refused_and_nothing_written(store: Path, repo: Path, cli: Callable) -> None:
    add_trt_row(store, cc="8.6")
    assert cli("deploy", "triton", "detector", "-o", repo, "--store", store).code == 0
    before = tree(repo)
    other_io = [IO[0], {"name": "scores", "mode": "output", "dtype": "float", "shape": [-1, 20]}]
    add_trt_row(store, cc="8.6", model_sha256="c" * 64, io=other_io, age_minutes=-10)

    refused = cli("deploy", "triton", "detector", "-o", repo, "--store", store, "--json")

    assert refused.code == 2, refused
    assert "config.pbtxt is shared by every version" in refused.json()["error"]
    assert "io" in refused.json()["error"]
    assert tree(repo) == before


def test_a_capability_without_engine_is_refused_with_the_reasons(store: Path, repo: Path, cli: Callable) -> None:
    add_trt_row(store, cc="8.6")
    add_trt_row(store, cc="8.9", trt="10.12.0.36", gpu="NVIDIA L4")  # another TensorRT release

    refused = cli("deploy", "triton", "detector", "-o", repo, "--target", f"cc=8.6,trt={TRT}",
                  "--target", f"cc=8.9,trt={TRT}", "--target", f"cc=7.5,trt={TRT}", "--store", store, "--json")

    assert refused.code == 1, refused
    doc = refused.json()
    assert "compute capability 8.9, 7.5" in doc["error"]
    rules = {cc: {r["rule"] for r in rejected} for cc, rejected in doc["error_detail"]["rejected"].items()}
    assert rules == {"8.9": {"trt_version", "hardware"}, "7.5": {"trt_version", "hardware"}}
    assert any("rejected by trt_version" in line for line in doc["more_errors"])
    assert not repo.exists() or not any(p.name.isdigit() for p in (repo / "detector").iterdir())


def test_tensorrt_rtx_engines_are_refused_for_triton(
    store: Path, repo: Path, cli: Callable, example_recipe: Path
) -> None:
    assert cli("build", example_recipe, "--store", store).code == 0  # a real TensorRT-RTX build

    refused = cli("deploy", "triton", "example-cnn", "-o", repo, "--store", store, "--json")

    assert refused.code == 2, refused
    assert "no backend for TensorRT-RTX plans" in refused.json()["error"]
    assert "deploy epcontext" in refused.json()["hint"]
    assert not (repo / "example-cnn").exists()
    suggested = refused.json()["hint"].split("`")[1].split()[1:]  # trtforge deploy epcontext ID -o OUT.onnx
    out = repo.parent / "example_ctx.onnx"
    followed = cli(*[str(out) if word == "OUT.onnx" else word for word in suggested], "--store", store)
    assert followed.code == 0 and out.is_file(), followed


def test_max_batch_size_drops_the_batch_dim_and_is_checked_against_profiles(store: Path, repo: Path) -> None:
    add_trt_row(store, cc="8.6")
    result = trtforge.deploy_triton(repo, "detector", max_batch_size=32, store=store)
    config = parse_config(result.model_dir / "config.pbtxt")
    assert config.max_batch_size == 32
    assert list(config.input[0].dims) == [3, 32, 32] and list(config.output[0].dims) == [10]

    with pytest.raises(trtforge.DeployError, match="exceeds the largest batch the engine's profiles allow"):
        trtforge.deploy_triton(repo / "x", "detector", max_batch_size=33, store=store)
    assert not (repo / "x" / "detector" / "1").exists()


def test_scalars_and_profiles_alike(store: Path, repo: Path) -> None:
    io = [{"name": 'x "ü"\\', "mode": "input", "dtype": "int64", "shape": []},
          {"name": "y", "mode": "output", "dtype": "half", "shape": [4]}]
    add_trt_row(store, name="scalar", io=io, profiles=[{}, {}])
    result = trtforge.deploy_triton(repo, "scalar", store=store)
    config = parse_config(result.model_dir / "config.pbtxt")
    assert [(i.name, i.data_type, list(i.dims), list(i.reshape.shape), i.HasField("reshape")) for i in config.input] \
        == [('x "ü"\\', 9, [1], [], True)]  # TYPE_INT64, Triton's scalar form; the name escaped and read back
    assert config.output[0].data_type == 10  # TYPE_FP16
    assert len(config.instance_group) == 1 and not config.instance_group[0].profile  # identical profiles


def test_verification_per_capability(store: Path, repo: Path, cli: Callable) -> None:
    verified = add_trt_row(store, cc="8.6", age_minutes=30, verified={"NVIDIA A10G": ("passed", "8.6")})
    add_trt_row(store, cc="8.6", age_minutes=0)  # newer, unverified
    failed = add_trt_row(store, cc="8.9", gpu="NVIDIA L4", verified={"NVIDIA L4": ("failed", "8.9")})

    ok = cli("deploy", "triton", "detector", "-o", repo, "--cc", "8.6", "--verified-only", "--store", store, "--json")
    assert ok.code == 0, ok
    assert ok.json()["files"]["8.6"]["artifact_id"] == verified

    refused = cli("deploy", "triton", "detector", "-o", repo, "--cc", "8.9", "--store", store, "--json")
    assert refused.code == 1, refused
    assert [r["rule"] for r in refused.json()["error_detail"]["rejected"]["8.9"] if r["artifact_id"] == failed] == [
        "verification"
    ]


def test_version_compatible_plans_name_the_backend_config(store: Path, repo: Path) -> None:
    add_trt_row(store, cc="8.6", trt="10.12.0.36",
                compatibility={"hardware": "ampere_plus", "version_compatible": True, "exclude_lean_runtime": False})
    default = trtforge.deploy_triton(repo / "default", "detector", trt="10.13.3", store=store)
    assert list(default.files) == ["8.6"]  # the capability it was built on, runnable by the newer release
    result = trtforge.deploy_triton(repo, "detector", trt="10.13.3", cc=["8.6", "8.9", "12.0"], store=store)
    text = (result.model_dir / "config.pbtxt").read_text()
    config = parse_config(result.model_dir / "config.pbtxt")
    assert config.parameters["trtforge.backend_config"].string_value == "tensorrt,version-compatible=true"
    assert "--backend-config=tensorrt,version-compatible=true" in text
    assert dict(config.cc_model_filenames) == {"8.6": "model_cc86.plan", "8.9": "model_cc89.plan",
                                              "12.0": "model_cc120.plan"}
    files = json.loads((result.model_dir / "trtforge.json").read_text())["versions"]["1"]["files"]
    assert files["12.0"]["host_code"] is True and files["12.0"]["lean_runtime_in_plan"] is True
    assert len({f["artifact_id"] for f in files.values()}) == 1  # one Ampere+ plan serves all three


def test_plugin_libraries_a_plan_needs_are_named_for_the_server(store: Path, repo: Path) -> None:
    """A plan built with plugin libraries it does not embed needs them loaded by Triton's backend."""
    needed = {"library": "/opt/plugins/libroi.so", "name": "libroi.so", "sha256": "c" * 64, "load": "dynamic",
              "serialized": False}
    embedded = {**needed, "library": "/opt/plugins/libvc.so", "name": "libvc.so", "serialized": True}
    add_trt_row(store, cc="8.6", plugins=[needed, embedded])
    result = trtforge.deploy_triton(repo, "detector", trt=TRT, store=store)
    record = json.loads((result.model_dir / "trtforge.json").read_text())
    assert record["versions"]["1"]["files"]["8.6"]["plugins"] == [needed]  # the embedded one travels in the plan
    runtime = record["versions"]["1"]["runtime"]
    assert runtime["plugins"] == ["/opt/plugins/libroi.so"]
    assert runtime["plugins_backend_config"] == "tensorrt,plugins=/opt/plugins/libroi.so"


def test_adopted_plan_takes_its_io_from_the_model(store: Path, repo: Path, cli: Callable, tmp_path: Path) -> None:
    plan = tmp_path / "trtexec.plan"
    plan.write_bytes(b"a full TensorRT plan built by trtexec (placeholder bytes)")
    model = REPO / "recipes" / "models" / "example_cnn.onnx"
    adopted = cli("adopt", plan, "--name", "cnn", "--model", model, "--trt", TRT, "--cc", "8.6",
                  "--gpu", "NVIDIA A10G", "--store", store, "--json")
    assert adopted.code == 0, adopted

    result = cli("deploy", "triton", "cnn", "-o", repo, "--store", store, "--json")

    assert result.code == 0, result
    config = parse_config(repo / "cnn" / "config.pbtxt")
    assert [(i.name, list(i.dims)) for i in config.input] == [("images", [-1, 3, 32, 32])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [-1, 10])]
    assert len(config.instance_group) == 1 and not config.instance_group[0].profile
    assert (repo / "cnn" / "1" / "model_cc86.plan").read_bytes() == plan.read_bytes()
    assert any("profiles not recorded" in n for n in result.json()["notes"])
    assert result.json()["files"]["8.6"]["plugins"] == "unknown (adopted plan)"


def test_a_corrupt_plan_leaves_no_version_behind(store: Path, repo: Path, cli: Callable) -> None:
    # Nor a model directory without config and version (Triton refuses to start on one): the export
    # that created it and published nothing takes it back, lock included.
    artifact_id = add_trt_row(store, cc="8.6")
    blob = next((store / "blobs" / "sha256").glob(f"*/{plan_sha(store, artifact_id)}"))
    blob.chmod(0o644)
    blob.write_bytes(b"damaged")
    repo.mkdir()

    refused = cli("deploy", "triton", "detector", "-o", repo, "--store", store, "--json")

    assert refused.code == 1, refused
    assert "corrupted" in refused.json()["error"]
    assert tree(repo) == []


@pytest.mark.parametrize("name", ["config.pbtxt", ".trtforge.lock", "trtforge.json"])
def test_a_directory_where_a_model_file_belongs_is_one_line(
    store: Path, repo: Path, cli: Callable, name: str
) -> None:
    add_trt_row(store, cc="8.6")
    assert cli("deploy", "triton", "detector", "-o", repo, "--store", store).code == 0
    model_dir = repo / "detector"
    (model_dir / name).unlink()
    (model_dir / name).mkdir()
    before = tree(repo)

    refused = cli("deploy", "triton", "detector", "-o", repo, "--store", store, "--json")

    assert refused.code == 2, refused
    assert "Traceback" not in refused.stderr
    assert str(model_dir / name) in refused.json()["error"]
    assert [line.split(":")[0] for line in refused.stderr.splitlines()] == ["error", "hint"]
    assert tree(repo) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["../escape"], "not a plain directory name"),
        (["detector", "--cc", "eight"], "compute capability"),
        (["detector", "--max-batch-size", "-1"], "0 or more"),
        (["unknown"], "no artifact named 'unknown'"),
    ],
)
def test_bad_input_exits_2(store: Path, repo: Path, cli: Callable, args: list[str], message: str) -> None:
    add_trt_row(store)
    result = cli("deploy", "triton", *args, "-o", repo, "--store", store)
    assert result.code == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(
    shutil.which("tritonserver") is None or not detect_gpus(),
    reason="needs Triton Inference Server (tritonserver) and a GPU; nothing is loaded in Triton on this machine",
)
def test_gpu_triton_loads_the_repository(tmp_path: Path, cli: Callable, example_recipe: Path) -> None:
    """On a GPU runner with full TensorRT and Triton: build, export, and let Triton load it (strict config)."""
    store = tmp_path / "store"
    recipe = example_recipe.read_text().replace("backend: auto", "backend: tensorrt")
    example_recipe.write_text(recipe)
    assert cli("build", example_recipe, "--store", store).code == 0
    repo = tmp_path / "models"
    assert cli("deploy", "triton", "example-cnn", "-o", repo, "--store", store).code == 0
    server = subprocess.Popen(
        ["tritonserver", f"--model-repository={repo}", "--strict-model-config=true",
         "--model-control-mode=explicit", "--load-model=example-cnn", "--allow-http=false",
         "--allow-grpc=false", "--allow-metrics=false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    watchdog = threading.Timer(300, server.kill)
    watchdog.start()
    seen: list[str] = []
    try:
        assert server.stderr is not None
        for line in server.stderr:  # Triton logs each model's load result; it then keeps serving
            seen.append(line)
            if "successfully loaded 'example-cnn'" in line or "failed to load 'example-cnn'" in line:
                break
    finally:
        watchdog.cancel()
        server.terminate()
        server.wait(timeout=60)
    assert any("successfully loaded 'example-cnn'" in line for line in seen), "".join(seen[-50:])
