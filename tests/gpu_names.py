"""How people write the GPUs of trtforge's table (trtforge/rules/gpus.py), for invariants over every row."""

from __future__ import annotations

from collections import Counter

from trtforge.rules.gpus import GPUS, GpuModel, normalize

VENDOR_WORDS = ("NVIDIA", "Tesla", "Quadro", "GeForce")
# Ray types several GPUs share: a short name equal to one ("H100" for "NVIDIA H100") names them all.
SHARED_RAY_TYPES = {normalize(ray) for ray, count in Counter(g.ray_accelerator_type for g in GPUS).items() if count > 1}


def spellings(gpu: GpuModel) -> dict[str, bool]:
    """Ways people write ``gpu`` -> whether it names that one GPU (False: a short name several share).

    NVML's name, the name without its vendor words in front (the short name), each alias, each of
    those with "NVIDIA " in front (GeForce: also "GeForce 4090"), in other case and separators.
    """
    words = gpu.name.split()
    while len(words) > 1 and words[0] in VENDOR_WORDS:
        words = words[1:]
    short = " ".join(words)
    names = [gpu.name, short, *gpu.aliases]
    typed = names + [f"NVIDIA {name}" for name in names if not name.startswith("NVIDIA ")]
    if gpu.segment == "geforce":
        typed.append(f"GeForce {short.removeprefix('RTX ')}")
    return {
        variant: not (spelled == short and normalize(short) in SHARED_RAY_TYPES)
        for spelled in typed
        for variant in (spelled, spelled.lower(), spelled.upper().replace(" ", "-"), f" {spelled.replace(' ', '_')} ")
    }
