"""The GPU paths' decisions, tested on the CPU (issue 14, part 3): which runtime may load a plan,
which GPU this process runs on, which profiles timed streams take, why a plan did not load.

Each of these fails on 4692594, where the logic did not exist: verify/refit compared versions with
``==``, detection took NVML device 0 whatever CUDA_VISIBLE_DEVICES said, and benchmark put every
stream's context on the profile the runner's context already held.
"""

from __future__ import annotations

import pytest

from trtforge.backend.run import load_failure, load_refusal
from trtforge.rules.compatibility import Envelope
from trtforge.rules.denylist import parse_layer_info
from trtforge.rules.target import (
    LocalGpu,
    RuntimeTarget,
    _match_cuda_order,
    apply_visible_devices,
    parse_visible_devices,
)
from trtforge.rules.timing import stream_profiles


def target(flavor: str, version: str, cc: str = "8.6") -> RuntimeTarget:
    return RuntimeTarget(flavor, version, cc, "NVIDIA A10G", detected=True)  # type: ignore[arg-type]


def test_runtime_release_rules_match_lookup() -> None:
    # An adopted plan recorded as 1.7.1 runs on the installed 1.7.1.116 (== refused it).
    adopted = load_refusal("tensorrt_rtx", "1.7.1", target("tensorrt_rtx", "1.7.1.116"), compute_capabilities=["8.6"])
    assert adopted is None
    assert load_refusal("tensorrt", "10.13.3", target("tensorrt", "10.13.3.9"), compute_capabilities=["8.6"]) is None
    # A version-compatible engine runs on a newer runtime of the same major; a plain one does not.
    compatible = Envelope(version_compatible=True)
    assert load_refusal("tensorrt", "10.8.0", target("tensorrt", "10.13.3"), envelope=compatible,
                        compute_capabilities=["8.6"]) is None  # fmt: skip
    plain = load_refusal("tensorrt", "10.8.0", target("tensorrt", "10.13.3"), compute_capabilities=["8.6"])
    assert plain is not None and "without version compatibility" in plain
    older = load_refusal("tensorrt", "10.13.3", target("tensorrt", "10.8.0"), envelope=compatible,
                         compute_capabilities=["8.6"])  # fmt: skip
    assert older is not None and "newer runtimes only" in older
    # TensorRT-RTX never loads on Hopper, whatever the engine's list says; and a different release is refused.
    hopper = load_refusal("tensorrt_rtx", "1.7.1", target("tensorrt_rtx", "1.7.1.116", "9.0"),
                          compute_capabilities=["8.6", "9.0"])  # fmt: skip
    assert hopper == "TensorRT-RTX does not support compute capability 9.0"
    other = load_refusal("tensorrt_rtx", "1.6.0", target("tensorrt_rtx", "1.7.1.116"), compute_capabilities=["8.6"])
    assert other is not None and "different release" in other


A10G = LocalGpu("NVIDIA A10G", "8.6", "570.1")
H200 = LocalGpu("NVIDIA H200", "9.0", "580.159.04")


@pytest.mark.parametrize("gpu", [A10G, H200, None], ids=["A10G", "H200", "no-gpu"])
def test_a_refused_plan_names_the_runtimes_reason(gpu: LocalGpu | None) -> None:
    """The same on every host (the GPU is an argument). Failed on an H200 before: the test took the
    host's GPU and expected the generic message, but there TensorRT-RTX's specific reason comes first."""
    records = [{"level": "warning", "message": "w"}, {"level": "error", "message": "Serialization  assertion\nfailed"}]
    where = f"{gpu.name} (cc {gpu.compute_capability})" if gpu is not None else "this GPU"
    message = load_failure("tensorrt", records, gpu)
    assert message == f"the TensorRT runtime could not load the plan on {where}: Serialization assertion failed"
    rtx = load_failure("tensorrt_rtx", records, gpu)
    if gpu is H200:  # the reason trtforge knows comes first, whatever the runtime logged
        assert rtx == "TensorRT-RTX does not support compute capability 9.0: it cannot load plans on " + where
    else:
        assert rtx.startswith(f"the TensorRT-RTX runtime could not load the plan on {where}: Serialization")
    assert load_failure("tensorrt_rtx", [], A10G) == "the TensorRT-RTX runtime could not load the plan on " + (
        "NVIDIA A10G (cc 8.6)"
    )


def test_timed_streams_take_distinct_profiles() -> None:
    ranges = [
        {"x": ((1, 4), (4, 4))},
        {"x": ((1, 4), (8, 4))},
        {"x": ((8, 4), (16, 4))},  # does not admit batch 2
        {"x": ((2, 4), (2, 4))},
    ]
    assert stream_profiles(1, 1, ranges, {"x": (2, 4)}) == ([1], None)
    assert stream_profiles(1, 3, ranges, {"x": (2, 4)}) == ([1, 0, 3], None)
    chosen, note = stream_profiles(0, 4, ranges, {"x": (2, 4)})
    assert chosen == [0, 1, 3] and len(set(chosen)) == len(chosen)
    assert note is not None and "4 streams could not be timed for profile 0" in note and "timed 3 stream(s)" in note
    single, why = stream_profiles(0, 2, [{"x": ((1, 4), (4, 4))}], {"x": (2, 4)})
    assert single == [0] and why is not None and "distinct optimization profiles" in why


def _gpu(name: str, index: int, uuid: str, pci: str, mig: str | None = None) -> LocalGpu:
    return LocalGpu(name, "9.0" if "H" in name else "8.6", "570.1", index, uuid, pci, mig)


PHYSICAL = [
    _gpu("NVIDIA A10G", 0, "GPU-aaaaaaaa-0000-0000-0000-000000000001", "00000000:1B:00.0"),
    _gpu("NVIDIA H100 80GB HBM3", 1, "GPU-bbbbbbbb-0000-0000-0000-000000000002", "00000000:3B:00.0"),
    _gpu("NVIDIA H100 80GB HBM3 MIG 1g.10gb", 1, "MIG-cccccccc-0000-0000-0000-000000000003", "00000000:3B:00.0",
         "1g.10gb"),
]  # fmt: skip


def test_cuda_visible_devices_is_read_as_cuda_reads_it() -> None:
    assert parse_visible_devices(None) is None
    assert parse_visible_devices("") == []
    assert parse_visible_devices("0,1,-1,2") == ["0", "1"]
    assert parse_visible_devices(" 1 , GPU-aaaa") == ["1", "GPU-aaaa"]
    assert [g.name for g in apply_visible_devices(PHYSICAL, None)] == ["NVIDIA A10G", "NVIDIA H100 80GB HBM3"]
    second = apply_visible_devices(PHYSICAL, "1")
    assert [(g.index, g.name) for g in second] == [(0, "NVIDIA H100 80GB HBM3")]  # CUDA renumbers from 0
    assert [g.name for g in apply_visible_devices(PHYSICAL, "GPU-bbbb,0")] == ["NVIDIA H100 80GB HBM3", "NVIDIA A10G"]
    assert apply_visible_devices(PHYSICAL, "-1") == []
    mig = apply_visible_devices(PHYSICAL, "MIG-cccccccc")
    assert [(g.name, g.mig) for g in mig] == [("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "1g.10gb")]


def test_cuda_order_decides_which_gpu_is_device_0() -> None:
    # CUDA's default order is fastest first: the H100 is device 0 though NVML lists the A10G first.
    order = [("bbbbbbbb000000000000000000000002", "0000:3B:00.0"), ("aaaaaaaa000000000000000000000001", "0000:1B:00.0")]
    gpus = _match_cuda_order(PHYSICAL, order)
    assert [(g.index, g.name) for g in gpus] == [(0, "NVIDIA H100 80GB HBM3"), (1, "NVIDIA A10G")]
    # A MIG slice given in CUDA_VISIBLE_DEVICES: the driver reports the slice's UUID.
    slice_only = _match_cuda_order(PHYSICAL, [("cccccccc000000000000000000000003", "0000:3B:00.0")])
    assert [(g.name, g.mig) for g in slice_only] == [("NVIDIA H100 80GB HBM3 MIG 1g.10gb", "1g.10gb")]
    # No UUID from the driver: the PCI bus id names the whole GPU.
    by_bus = _match_cuda_order(PHYSICAL, [(None, "0000:1B:00.0")])
    assert [g.name for g in by_bus] == ["NVIDIA A10G"]


@pytest.mark.parametrize("device", [0, 3])
def test_device_flag_out_of_range_is_one_line(device: int) -> None:
    from trtforge.core.errors import TargetError
    from trtforge.rules.target import detect_gpus, select_device

    if len(detect_gpus()) > device:
        pytest.skip(f"this machine has a CUDA device {device}")
    with pytest.raises(TargetError, match=f"--device {device}: no such CUDA device here"):
        select_device(device)


FLAVOR_SCRIPT = """
import sys
from pathlib import Path
import polygraphy.config  # polygraphy binds itself to full TensorRT here: the variable is unset
from tests import onnx_models
from trtforge.backend.loader import polygraphy_flavor, run_in_flavor
from trtforge.backend.run import layerwise_plan
from trtforge.rules.flavors import installed_backend
from trtforge.rules.recipe import Recipe

model = onnx_models.save(onnx_models.mlp(0), Path(sys.argv[1]) / "m.onnx")
recipe = Recipe.model_validate({"name": "m", "model": {"onnx": str(model)}, "backend": "tensorrt_rtx",
                                "profiles": [{"x": {"min": [1, 4], "opt": [2, 4], "max": [4, 4]}}]})
rtx = installed_backend("tensorrt_rtx")
plan = run_in_flavor("tensorrt_rtx", layerwise_plan, rtx, recipe, model)
print(polygraphy_flavor(), len(plan.plan) > 0)
"""


def test_work_for_the_other_flavor_runs_in_a_child_process(tmp_path) -> None:
    """Polygraphy reads POLYGRAPHY_USE_TENSORRT_RTX once; bound to full TensorRT, a TensorRT-RTX build
    through polygraphy (the --per-layer engine) still works, in a child. Fails on 4692594: no run_in_flavor,
    and in-process the build fails with "Module: 'tensorrt' is required"."""
    import subprocess
    import sys

    from tests.conftest import REPO, subprocess_env
    from trtforge.rules.flavors import installed_backend

    if installed_backend("tensorrt_rtx") is None:
        pytest.skip("TensorRT-RTX is not installed")
    env = subprocess_env()
    env.pop("POLYGRAPHY_USE_TENSORRT_RTX", None)
    proc = subprocess.run([sys.executable, "-c", FLAVOR_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The parent stays bound to full TensorRT; the plan came from the child's TensorRT-RTX build.
    assert proc.stdout.split() == ["tensorrt", "True"], proc.stdout


def test_layer_output_types_from_the_engine_inspector() -> None:
    """What the weak-typing GPU test reads: each layer's output data types from the inspector's
    "Format/Datatype" texts (DETAILED verbosity, as TensorRT 10 prints them)."""
    info = {
        "Layers": [
            {"Name": "Reformatting CopyNode for Input Tensor 0 to conv", "LayerType": "Reformat",
             "Inputs": [{"Name": "x", "Format/Datatype": "Row major linear FP32"}],
             "Outputs": [{"Name": "x_h", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}]},
            {"Name": "conv", "LayerType": "CaskConvolution", "TacticName": "sm80_xmma_fprop", "TacticValue": "0x1",
             "Outputs": [{"Name": "y_h", "Format/Datatype": "Row major linear FP16 format"},
                         {"Name": "idx", "Format/Datatype": "Row major linear Int32"}]},
            {"Name": "out", "Outputs": [{"Name": "y", "Format/Datatype": "Row major linear FP32"}]},
            {"Name": "no-detail", "Outputs": [{"Name": "z"}]},
        ]
    }  # fmt: skip
    layers = {layer.name: layer.output_types for layer in parse_layer_info(info)}
    assert layers == {
        "Reformatting CopyNode for Input Tensor 0 to conv": ("FP16",),
        "conv": ("FP16", "INT32"),
        "out": ("FP32",),
        "no-detail": (),
    }


def test_a_deny_list_rebuild_that_fails_closed_fails_the_gpu_test() -> None:
    """The GPU deny-list test skips only when the denied layer has no other tactic. Before, it skipped
    on any failed rebuild whose stderr said "deny", which the fail-closed error does ("cannot confirm
    that the deny entries were enforced"): the error the test exists to catch became a skip."""
    from tests.gpu_steps import no_alternative_tactic
    from trtforge.backend.denylist_enforce import AutotunedOp, Candidate, _unconfirmed, plan_cache_edits
    from trtforge.core.errors import UnsatisfiableDenyError
    from trtforge.rules.denylist import DenyEntry

    closed = _unconfirmed("the built engine's layer information is unavailable (engine not loadable here)")
    assert "deny" in closed.message  # what the old test matched on
    assert no_alternative_tactic(closed.exit_code, closed.message) is None
    op = AutotunedOp("conv", "0x1", [Candidate("0xa", 0.1, "sm80_conv")], selected_hash="0xa")
    with pytest.raises(UnsatisfiableDenyError) as raised:
        plan_cache_edits([op], [DenyEntry(layer="conv", tactic="sm80_conv", reason="test")])
    reason = no_alternative_tactic(raised.value.exit_code, raised.value.message)
    assert reason is not None and "no other tactic" in reason


def test_every_cuda_runtime_call_of_the_timing_code_exists() -> None:
    """backend/timing.py calls libcudart through ctypes, by name, and runs only on a GPU: a misspelt
    call would surface there first. Each name must resolve in the CUDA runtime polygraphy loads
    (graphs are instantiated with cudaGraphInstantiateWithFlags, whose signature CUDA 12 and 13 share;
    cudaGraphInstantiate's changed in CUDA 12)."""
    import re

    from tests.conftest import REPO

    source = (REPO / "trtforge" / "backend" / "timing.py").read_text()
    names = set(re.findall(r'"(cuda[A-Z]\w*)"', source)) | set(re.findall(r"\.lib\.(cuda[A-Z]\w*)", source))
    assert {"cudaEventRecord", "cudaEventElapsedTime", "cudaMallocHost", "cudaGraphInstantiateWithFlags"} <= names
    try:
        from trtforge.backend.timing import Cudart

        lib = Cudart().lib
    except OSError as exc:
        pytest.skip(f"no CUDA runtime library to look the names up in: {exc}")
    assert sorted(n for n in names if not hasattr(lib, n)) == []
