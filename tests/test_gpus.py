"""The GPU table (trtforge/rules/gpus.py): names an operator types -> one GPU model and its compute
capability; unknown names get the closest known ones, ambiguous ones every GPU they could mean."""

from __future__ import annotations

import re

import pytest

from tests.gpu_names import spellings
from trtforge.core.errors import TargetError
from trtforge.rules.gpus import (
    GPUS,
    AmbiguousGpuError,
    GpuModel,
    UnknownGpuError,
    closest_names,
    find_gpu,
    normalize,
)
from trtforge.rules.target import parse_compute_capability, target_gpu

# Ray's NVIDIA accelerator manager names a node's accelerator type from the NVML name with this
# pattern (ray/_private/accelerators/nvidia_gpu.py, NVIDIA_GPU_NAME_PATTERN): the first run of
# upper-case letters and digits after the vendor word.
RAY_NVIDIA_GPU_NAME_PATTERN = re.compile(r"\w+\s+([A-Z0-9]+)")


def test_every_row_is_one_gpu_found_by_its_nvml_name() -> None:
    names = [normalize(gpu.name) for gpu in GPUS]
    assert len(names) == len(set(names))
    for gpu in GPUS:
        assert find_gpu(gpu.name).model == gpu
        assert find_gpu(gpu.name.upper().replace(" ", "-")).model == gpu  # case and separators do not matter
        assert find_gpu(f"{gpu.name} MIG 1g.10gb").name == f"{gpu.name} MIG 1g.10gb"  # a MIG slice is its GPU
        parse_compute_capability(gpu.compute_capability)
    assert {gpu.segment for gpu in GPUS} == {"data center", "workstation", "geforce"}


def test_ray_accelerator_type_is_what_ray_detects_for_the_nvml_name() -> None:
    for gpu in GPUS:
        match = RAY_NVIDIA_GPU_NAME_PATTERN.match(gpu.name)
        assert match is not None and gpu.ray_accelerator_type == match.group(1), gpu.name
    by_type = {gpu.ray_accelerator_type: gpu.name for gpu in GPUS}
    # The names in ray.util.accelerators that are NVIDIA GPUs this table covers.
    for ray_constant in ("T4", "A10G", "L4", "L40S", "A100", "H100", "H200", "H20", "B200"):
        assert ray_constant in by_type


@pytest.mark.parametrize(
    ("typed", "name", "cc"),
    [
        ("L4", "NVIDIA L4", "8.9"),
        ("NVIDIA L4", "NVIDIA L4", "8.9"),
        ("nvidia-l4", "NVIDIA L4", "8.9"),
        ("A10G", "NVIDIA A10G", "8.6"),
        ("T4", "Tesla T4", "7.5"),
        ("RTX 4090", "NVIDIA GeForce RTX 4090", "8.9"),
        ("4090", "NVIDIA GeForce RTX 4090", "8.9"),
        ("A6000", "NVIDIA RTX A6000", "8.6"),
        ("RTX 6000 Ada", "NVIDIA RTX 6000 Ada Generation", "8.9"),
        ("H100 SXM", "NVIDIA H100 80GB HBM3", "9.0"),
        ("nvidia h200", "NVIDIA H200", "9.0"),
        ("A100 SXM4 80GB", "NVIDIA A100-SXM4-80GB", "8.0"),
        ("RTX 5090", "NVIDIA GeForce RTX 5090", "12.0"),
    ],
)
def test_what_an_operator_types_names_one_gpu(typed: str, name: str, cc: str) -> None:
    assert target_gpu(typed, None) == (name, cc)
    assert target_gpu(typed, cc) == (name, cc)


@pytest.mark.parametrize("gpu", GPUS, ids=lambda gpu: gpu.name)
def test_every_way_of_writing_a_gpu_names_it_by_its_nvml_name(gpu: GpuModel) -> None:
    """Failed before its fix: "NVIDIA RTX 4090", "GeForce 4090", "NVIDIA H100 SXM" were unknown GPUs,
    and with --cc taken as given, so a verification recorded under NVML's name did not count."""
    cc = gpu.compute_capability
    for typed, unique in spellings(gpu).items():
        if unique:
            assert target_gpu(typed, cc) == (gpu.name, cc), typed  # not "taken as given"
            assert target_gpu(typed, None) == (gpu.name, cc), typed
        else:
            with pytest.raises(AmbiguousGpuError, match=re.escape(repr(gpu.name))):
                target_gpu(typed, cc)


@pytest.mark.parametrize("gpu", GPUS, ids=lambda gpu: gpu.name)
def test_a_mig_slice_is_named_as_nvml_names_it_however_written(gpu: GpuModel) -> None:
    """Failed before its fix: the profile kept the case it was typed in ("... MIG 1G.5GB"), so a
    verification recorded under NVML's "... MIG 1g.5gb" did not count."""
    cc = gpu.compute_capability
    for typed in (typed for typed, unique in spellings(gpu).items() if unique):
        for mig in ("MIG 1g.5gb", "MIG 1G.5GB", "mig 1G.10gb+ME", "MIG  7G.80GB"):
            slice_name = f"{gpu.name} MIG {mig.split()[1].lower()}"
            assert target_gpu(f"{typed} {mig}", cc) == (slice_name, cc), typed
            assert find_gpu(f"{typed} {mig}").name == find_gpu(slice_name).name == slice_name, typed


@pytest.mark.parametrize(
    ("typed", "means"),
    [
        ("Tesla H100", AmbiguousGpuError),  # a vendor word does not pick one of several
        ("NVIDIA A100", AmbiguousGpuError),
        ("NVIDIA H100", "NVIDIA H100"),  # a full NVML name stays itself
        ("NVIDIA Tesla T4", "Tesla T4"),
        ("Quadro A6000", "NVIDIA RTX A6000"),
        ("NVIDIA A4000", "NVIDIA RTX A4000"),
        ("GeForce A6000", UnknownGpuError),  # a brand word names its own kind of GPU
        ("Tesla RTX 4090", UnknownGpuError),
        ("Quadro 6000", UnknownGpuError),  # the Quadro 6000 of 2010, not the Quadro RTX 6000
        ("NVIDIA GeForce", UnknownGpuError),
    ],
)
def test_vendor_words_in_front_never_make_a_name_mean_another_gpu(typed: str, means: object) -> None:
    if isinstance(means, str):
        assert find_gpu(typed).name == means
    else:
        with pytest.raises(means):  # type: ignore[call-overload]
            find_gpu(typed)


def test_unknown_names_are_refused_with_the_closest_known_ones_and_those_work() -> None:
    with pytest.raises(UnknownGpuError) as info:
        target_gpu("NVIDIA L44", None)
    assert info.value.exit_code == 2 and "'NVIDIA L4'" in (info.value.hint or "")
    assert closest_names("NVIDIA L44")[0] == "NVIDIA L4"
    assert target_gpu(closest_names("NVIDIA L44")[0], None) == ("NVIDIA L4", "8.9")  # the hint, followed
    # A GPU newer than the table: with its compute capability it is taken as given (the hint says so).
    assert "--cc" in (info.value.hint or "") and target_gpu("NVIDIA L44", "8.9") == ("NVIDIA L44", "8.9")


@pytest.mark.parametrize(("typed", "cc"), [("H100", "9.0"), ("A100", "8.0"), ("H200", "9.0")])
def test_names_of_several_gpu_models_are_refused_naming_each(typed: str, cc: str) -> None:
    with pytest.raises(AmbiguousGpuError) as info:
        target_gpu(typed, None)
    listed = re.findall(r"'([^']+)'", info.value.message.split(":", 1)[1])
    assert len(listed) >= 2 and all(find_gpu(name).model.compute_capability == cc for name in listed)
    for name in listed:  # the hint's way out: any one of them by its full name
        assert target_gpu(name, None) == (name, cc)
    assert f'--gpu "{listed[0]}"' in (info.value.hint or "") and f"--cc {cc}" in (info.value.hint or "")
    with pytest.raises(AmbiguousGpuError):
        target_gpu(typed, cc)  # a capability does not say which GPU model verifications count for


def test_a_capability_that_contradicts_the_gpu_is_refused() -> None:
    with pytest.raises(TargetError, match=r"compute capability 8\.9, but --cc says 8\.6") as info:
        target_gpu("L4", "8.6")
    assert info.value.exit_code == 2 and "leave --cc out" in (info.value.hint or "")
