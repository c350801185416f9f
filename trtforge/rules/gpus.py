"""NVIDIA GPU models by name: what an operator types (``L4``, ``NVIDIA L4``) -> the GPU and its
compute capability. Data and a name matcher; nothing here asks a driver.

Sources:

- Names: the name NVML reports for a GPU (``nvidia-smi --query-gpu=name``,
  ``nvmlDeviceGetName``) is the driver's marketing name of its PCI device, listed in NVIDIA's
  open GPU kernel modules, ``src/nvidia/generated/g_nv_name_released.h``
  (github.com/NVIDIA/open-gpu-kernel-modules, read at df1c9a3, March 2026). That list covers
  Turing (compute capability 7.5) and newer; older GPUs are given with ``--cc``. Observed:
  ``nvidia-smi --query-gpu=name,compute_cap`` on an H200 machine says "NVIDIA H200, 9.0"
  (driver 580.159.04, December 2026).
- Compute capabilities: NVIDIA, "CUDA GPU Compute Capability" (developer.nvidia.com/cuda-gpus);
  per architecture: Turing 7.5, Ampere GA100 8.0, Ampere GA10x 8.6, Ada 8.9, Hopper 9.0,
  Blackwell data center 10.0 (B300/GB300: 10.3), Blackwell RTX and workstation 12.0.
- Ray accelerator types: what Ray's NVIDIA accelerator manager reports for a node whose GPU has
  this NVML name (``ray/_private/accelerators/nvidia_gpu.py``, ``_gpu_name_to_accelerator_type``:
  the first upper-case/digit run after the vendor word, so "NVIDIA A100-SXM4-80GB" -> "A100",
  "NVIDIA GeForce RTX 4090" -> "G"), which is what ``accelerator_type=`` and the constants of
  ``ray.util.accelerators`` (``NVIDIA_L4 = "L4"``, ``NVIDIA_TESLA_A10G = "A10G"``, ...) match.
  Ray cannot tell GeForce ("G") or RTX workstation ("RTX") models apart; its ``A100-40G`` /
  ``A100-80G`` labels are set by hand, never detected.

Matching ignores case, the vendor word and the difference between '-', '_' and a space. A full
NVML name picks its GPU. Short forms (the name without ``NVIDIA``/``Tesla``/``Quadro``/
``GeForce``/``RTX`` in front), the listed aliases and the Ray type name a GPU only when exactly
one GPU answers to them: ``H100`` is four GPU models (SXM, PCIe, NVL and the one NVML calls
"NVIDIA H100"), and which one matters wherever verification results are kept per GPU model.
Typed with vendor or brand words in front ("NVIDIA RTX 4090", "GeForce 4090", "NVIDIA H100
SXM") they name what they name without them; a brand word must fit the GPU (``GeForce`` a
GeForce, ``Quadro`` a workstation GPU, ``Tesla`` a data-center one). A MIG slice
(``... MIG 1g.10gb``) is its GPU's model; its profile is written as NVML writes it, in lower case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from trtforge.core.errors import TargetError

Segment = Literal["data center", "workstation", "geforce"]


@dataclass(frozen=True)
class GpuModel:
    """One GPU model: the NVML name, its compute capability, Ray's accelerator type, where it sells."""

    name: str
    compute_capability: str
    ray_accelerator_type: str
    segment: Segment
    aliases: tuple[str, ...] = ()


def _gpu(name: str, cc: str, ray: str, segment: Segment, *aliases: str) -> GpuModel:
    return GpuModel(name, cc, ray, segment, aliases)


DC: Segment = "data center"
WS: Segment = "workstation"
GF: Segment = "geforce"

GPUS: tuple[GpuModel, ...] = (
    # -- data center ------------------------------------------------------------------------
    _gpu("Tesla T4", "7.5", "T4", DC, "NVIDIA T4"),
    _gpu("NVIDIA A100-SXM4-40GB", "8.0", "A100", DC, "A100 SXM 40GB"),
    _gpu("NVIDIA A100-SXM4-80GB", "8.0", "A100", DC, "A100 SXM 80GB"),
    _gpu("NVIDIA A100-PCIE-40GB", "8.0", "A100", DC, "A100 PCIe 40GB"),
    _gpu("NVIDIA A100 80GB PCIe", "8.0", "A100", DC, "A100 PCIe 80GB"),
    _gpu("NVIDIA A800-SXM4-80GB", "8.0", "A800", DC),
    _gpu("NVIDIA A800 80GB PCIe", "8.0", "A800", DC),
    _gpu("NVIDIA A30", "8.0", "A30", DC),
    _gpu("NVIDIA A10", "8.6", "A10", DC),
    _gpu("NVIDIA A10G", "8.6", "A10G", DC),
    _gpu("NVIDIA A16", "8.6", "A16", DC),
    _gpu("NVIDIA A2", "8.6", "A2", DC),
    _gpu("NVIDIA A40", "8.6", "A40", DC),
    _gpu("NVIDIA L4", "8.9", "L4", DC),
    _gpu("NVIDIA L40", "8.9", "L40", DC),
    _gpu("NVIDIA L40S", "8.9", "L40S", DC),
    _gpu("NVIDIA L20", "8.9", "L20", DC),
    _gpu("NVIDIA L2", "8.9", "L2", DC),
    _gpu("NVIDIA H100 80GB HBM3", "9.0", "H100", DC, "H100 SXM", "H100 SXM5"),
    _gpu("NVIDIA H100 PCIe", "9.0", "H100", DC),
    _gpu("NVIDIA H100 NVL", "9.0", "H100", DC),
    _gpu("NVIDIA H100", "9.0", "H100", DC),
    _gpu("NVIDIA H800", "9.0", "H800", DC),
    _gpu("NVIDIA H800 PCIe", "9.0", "H800", DC),
    _gpu("NVIDIA H200", "9.0", "H200", DC, "H200 SXM"),
    _gpu("NVIDIA H200 NVL", "9.0", "H200", DC),
    _gpu("NVIDIA H20", "9.0", "H20", DC),
    _gpu("NVIDIA GH200 480GB", "9.0", "GH200", DC),
    _gpu("NVIDIA GH200 120GB", "9.0", "GH200", DC),
    _gpu("NVIDIA GH200 144G HBM3e", "9.0", "GH200", DC),
    _gpu("NVIDIA B200", "10.0", "B200", DC),
    _gpu("NVIDIA GB200", "10.0", "GB200", DC),
    _gpu("NVIDIA B300 SXM6 AC", "10.3", "B300", DC, "B300"),
    _gpu("NVIDIA GB300", "10.3", "GB300", DC),
    _gpu("NVIDIA RTX PRO 6000 Blackwell Server Edition", "12.0", "RTX", DC, "RTX PRO 6000 Server"),
    # -- workstation ------------------------------------------------------------------------
    _gpu("Quadro RTX 4000", "7.5", "RTX", WS),
    _gpu("Quadro RTX 5000", "7.5", "RTX", WS),
    _gpu("Quadro RTX 6000", "7.5", "RTX", WS),
    _gpu("Quadro RTX 8000", "7.5", "RTX", WS),
    _gpu("NVIDIA RTX A2000", "8.6", "RTX", WS),
    _gpu("NVIDIA RTX A2000 12GB", "8.6", "RTX", WS),
    _gpu("NVIDIA RTX A4000", "8.6", "RTX", WS),
    _gpu("NVIDIA RTX A4500", "8.6", "RTX", WS),
    _gpu("NVIDIA RTX A5000", "8.6", "RTX", WS),
    _gpu("NVIDIA RTX A5500", "8.6", "RTX", WS),
    _gpu("NVIDIA RTX A6000", "8.6", "RTX", WS),
    _gpu("NVIDIA RTX 2000 Ada Generation", "8.9", "RTX", WS, "RTX 2000 Ada"),
    _gpu("NVIDIA RTX 4000 Ada Generation", "8.9", "RTX", WS, "RTX 4000 Ada"),
    _gpu("NVIDIA RTX 4500 Ada Generation", "8.9", "RTX", WS, "RTX 4500 Ada"),
    _gpu("NVIDIA RTX 5000 Ada Generation", "8.9", "RTX", WS, "RTX 5000 Ada"),
    _gpu("NVIDIA RTX 5880 Ada Generation", "8.9", "RTX", WS, "RTX 5880 Ada"),
    _gpu("NVIDIA RTX 6000 Ada Generation", "8.9", "RTX", WS, "RTX 6000 Ada"),
    _gpu("NVIDIA RTX PRO 4000 Blackwell", "12.0", "RTX", WS),
    _gpu("NVIDIA RTX PRO 4500 Blackwell", "12.0", "RTX", WS),
    _gpu("NVIDIA RTX PRO 5000 Blackwell", "12.0", "RTX", WS),
    _gpu("NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "12.0", "RTX", WS, "RTX PRO 6000"),
    _gpu("NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition", "12.0", "RTX", WS, "RTX PRO 6000 Max-Q"),
    # -- GeForce RTX ------------------------------------------------------------------------
    _gpu("NVIDIA TITAN RTX", "7.5", "TITAN", GF),
    _gpu("NVIDIA GeForce RTX 2060", "7.5", "G", GF),
    _gpu("NVIDIA GeForce RTX 2060 SUPER", "7.5", "G", GF),
    _gpu("NVIDIA GeForce RTX 2070", "7.5", "G", GF),
    _gpu("NVIDIA GeForce RTX 2070 SUPER", "7.5", "G", GF),
    _gpu("NVIDIA GeForce RTX 2080", "7.5", "G", GF),
    _gpu("NVIDIA GeForce RTX 2080 SUPER", "7.5", "G", GF),
    _gpu("NVIDIA GeForce RTX 2080 Ti", "7.5", "G", GF),
    _gpu("NVIDIA GeForce RTX 3050", "8.6", "G", GF),
    _gpu("NVIDIA GeForce RTX 3060", "8.6", "G", GF),
    _gpu("NVIDIA GeForce RTX 3060 Ti", "8.6", "G", GF),
    _gpu("NVIDIA GeForce RTX 3070", "8.6", "G", GF),
    _gpu("NVIDIA GeForce RTX 3070 Ti", "8.6", "G", GF),
    _gpu("NVIDIA GeForce RTX 3080", "8.6", "G", GF),
    _gpu("NVIDIA GeForce RTX 3080 Ti", "8.6", "G", GF),
    _gpu("NVIDIA GeForce RTX 3090", "8.6", "G", GF),
    _gpu("NVIDIA GeForce RTX 3090 Ti", "8.6", "G", GF),
    _gpu("NVIDIA GeForce RTX 4060", "8.9", "G", GF),
    _gpu("NVIDIA GeForce RTX 4060 Ti", "8.9", "G", GF),
    _gpu("NVIDIA GeForce RTX 4070", "8.9", "G", GF),
    _gpu("NVIDIA GeForce RTX 4070 SUPER", "8.9", "G", GF),
    _gpu("NVIDIA GeForce RTX 4070 Ti", "8.9", "G", GF),
    _gpu("NVIDIA GeForce RTX 4070 Ti SUPER", "8.9", "G", GF),
    _gpu("NVIDIA GeForce RTX 4080", "8.9", "G", GF),
    _gpu("NVIDIA GeForce RTX 4080 SUPER", "8.9", "G", GF),
    _gpu("NVIDIA GeForce RTX 4090", "8.9", "G", GF),
    _gpu("NVIDIA GeForce RTX 4090 D", "8.9", "G", GF),
    _gpu("NVIDIA GeForce RTX 5050", "12.0", "G", GF),
    _gpu("NVIDIA GeForce RTX 5060", "12.0", "G", GF),
    _gpu("NVIDIA GeForce RTX 5060 Ti", "12.0", "G", GF),
    _gpu("NVIDIA GeForce RTX 5070", "12.0", "G", GF),
    _gpu("NVIDIA GeForce RTX 5070 Ti", "12.0", "G", GF),
    _gpu("NVIDIA GeForce RTX 5080", "12.0", "G", GF),
    _gpu("NVIDIA GeForce RTX 5090", "12.0", "G", GF),
    _gpu("NVIDIA GeForce RTX 5090 D", "12.0", "G", GF),
)

# Words in front of a model name that people leave out ("A10G" for "NVIDIA A10G", "RTX 4090"
# or "4090" for "NVIDIA GeForce RTX 4090", "A6000" for "NVIDIA RTX A6000").
_LEADING_WORDS = ("nvidia", "tesla", "quadro", "geforce", "rtx")
# Vendor and brand words an operator may put in front of any name above ("NVIDIA RTX 4090",
# "GeForce 4090"), with the segment a brand word says (None: any). Not "RTX": it is part of names.
_VENDOR_WORDS: dict[str, Segment | None] = {"nvidia": None, "tesla": DC, "quadro": WS, "geforce": GF}
_MIG = re.compile(r"(?P<gpu>.+?)\s+MIG\s+(?P<profile>\S+)", re.IGNORECASE)
SHOWN_CHOICES = 8


def normalize(text: str) -> str:
    """Case, '-'/'_' versus spaces and repeated spaces do not matter: ``"a100 sxm4 40gb"``."""
    return " ".join(re.sub(r"[-_]+", " ", text).casefold().split())


def _short_forms(name: str) -> list[str]:
    """``"nvidia geforce rtx 4090"`` -> ``["geforce rtx 4090", "rtx 4090", "4090"]``."""
    words = normalize(name).split()
    forms = []
    while len(words) > 1 and words[0] in _LEADING_WORDS:
        words = words[1:]
        forms.append(" ".join(words))
    return forms


@lru_cache(maxsize=1)
def _index() -> tuple[dict[str, GpuModel], dict[str, tuple[GpuModel, ...]]]:
    """(full NVML name -> GPU, every other form -> the GPUs answering to it)."""
    full = {normalize(gpu.name): gpu for gpu in GPUS}
    other: dict[str, list[GpuModel]] = {}
    for gpu in GPUS:
        for form in (*_short_forms(gpu.name), *map(normalize, (*gpu.aliases, gpu.ray_accelerator_type))):
            if form not in full and gpu not in other.setdefault(form, []):
                other[form].append(gpu)
    return full, {form: tuple(gpus) for form, gpus in other.items()}


def _all_forms() -> list[str]:
    full, other = _index()
    return [*full, *other]


class UnknownGpuError(TargetError):
    """A GPU name that is in no row of the table (exit 2)."""


class AmbiguousGpuError(TargetError):
    """A short name or alias several GPU models answer to (exit 2)."""


@dataclass(frozen=True)
class NamedGpu:
    """A GPU name resolved through the table: the NVML name to record and look up by, and its model."""

    name: str
    model: GpuModel


def find_gpu(text: str) -> NamedGpu:
    """The GPU ``text`` names (a MIG slice keeps its suffix, its profile in NVML's lower case, the
    name its verifications are recorded under); raises UnknownGpuError or AmbiguousGpuError."""
    stripped = text.strip()
    mig = _MIG.fullmatch(stripped)
    base = mig.group("gpu") if mig else stripped
    model = _model_for(base, text)
    return NamedGpu(f"{model.name} MIG {mig.group('profile').lower()}" if mig else model.name, model)


def _answering(key: str) -> tuple[GpuModel, ...]:
    """The GPUs a normalized name answers to: as typed, else without the vendor or brand words in
    front (``"nvidia rtx 4090"`` -> ``"rtx 4090"``), so that these never change what a name means."""
    full, other = _index()
    words = key.split()
    brands: set[Segment] = set()
    while True:
        form = " ".join(words)
        found = (full[form],) if form in full else other.get(form, ())
        if len(found) > 1:  # several stay several: a brand word does not pick one
            return found
        if found:
            return found if _brand_fits(brands, form, found[0]) else ()
        if len(words) < 2 or words[0] not in _VENDOR_WORDS:
            return ()
        segment = _VENDOR_WORDS[words.pop(0)]
        if segment is not None:
            brands.add(segment)


def _brand_fits(brands: set[Segment], form: str, gpu: GpuModel) -> bool:
    """A brand word typed names its own segment; before a bare number only GeForce does ("GeForce
    4090"): "Quadro 6000" is a 2010 GPU, not the Quadro RTX 6000 that "6000" alone means."""
    return brands <= {gpu.segment} and (not brands or not form.isdigit() or gpu.segment == GF)


def _model_for(base: str, text: str) -> GpuModel:
    key = normalize(base)
    found = _answering(key)
    if len(found) == 1:
        return found[0]
    if found:
        names = [gpu.name for gpu in found]
        shown = ", ".join(repr(n) for n in names[:SHOWN_CHOICES]) + (", ..." if len(names) > SHOWN_CHOICES else "")
        ccs = sorted({gpu.compute_capability for gpu in found})
        raise AmbiguousGpuError(
            f"--gpu {text.strip()[:60]!r} names {len(found)} GPU models: {shown}",
            hint=f'give the one `nvidia-smi --query-gpu=name --format=csv` shows, e.g. --gpu "{names[0]}"'
            + (f" (or only --cc {ccs[0]}: they are all compute capability {ccs[0]})" if len(ccs) == 1 else ""),
        )
    raise UnknownGpuError(f"--gpu {text.strip()[:60]!r} is not a GPU trtforge knows", hint=_closest_hint(key))


def closest_names(text: str, count: int = 3) -> list[str]:
    """The NVML names of the GPUs whose names (or short forms) are nearest to ``text``."""
    import difflib  # only for a name not found: not on lookup's path

    full, other = _index()
    names: list[str] = []
    for form in difflib.get_close_matches(normalize(text), _all_forms(), n=12, cutoff=0.5):
        for gpu in (full[form],) if form in full else other[form]:
            if gpu.name not in names:
                names.append(gpu.name)
    return names[:count]


def _closest_hint(key: str) -> str:
    near = closest_names(key)
    known = f"closest known: {', '.join(repr(n) for n in near)}; " if near else ""
    return f"{known}for a GPU not in trtforge's table give its compute capability too (--cc X.Y)"


def known_gpu(name: str) -> GpuModel | None:
    """The table's model for a name, or None when the table does not know it (or it is ambiguous)."""
    try:
        return find_gpu(name).model
    except TargetError:
        return None
