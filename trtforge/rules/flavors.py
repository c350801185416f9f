"""TensorRT flavors: their names, how their versions compare, and which one is installed.

One home for these rules, used by the capability table, targets, lookup and the backend. Nothing
here imports TensorRT: the installed version comes from package metadata, so a cache hit,
``lookup`` and ``list`` can ask for it where TensorRT's libraries are absent or slow to load.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from trtforge.core.errors import BackendUnavailableError, TargetError

Flavor = Literal["tensorrt", "tensorrt_rtx"]
FLAVORS: tuple[Flavor, ...] = ("tensorrt", "tensorrt_rtx")
Version = tuple[int, ...]

# Distributions that install each module, most specific first. The metadata version is the
# one trtforge records everywhere, so a cache hit (metadata) and a build (module) agree.
_DISTRIBUTIONS: dict[Flavor, tuple[str, ...]] = {
    "tensorrt": (
        "tensorrt-cu13",
        "tensorrt-cu12",
        "tensorrt-cu11",
        "tensorrt",
        "tensorrt-cu13-bindings",
        "tensorrt-cu12-bindings",
    ),
    "tensorrt_rtx": (
        "tensorrt-rtx-cu13",
        "tensorrt-rtx-cu12",
        "tensorrt-rtx",
        "tensorrt-rtx-cu13-bindings",
        "tensorrt-rtx-cu12-bindings",
    ),
}
_VERSION = re.compile(r"\d{1,3}(\.\d{1,6}){1,3}")

# TensorRT-RTX ComputeCapability targets (C++ enum nvinfer1::ComputeCapability, TensorRT-RTX
# API reference; observed in tensorrt_rtx 1.7: SM75, SM80, SM86, SM89, SM120, SM121). Hopper
# (9.0) is not a TensorRT-RTX target.
RTX_COMPUTE_CAPABILITIES: tuple[str, ...] = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
# What a recipe without compatibility.compute_capabilities builds for. NVIDIA's pages disagree on
# the builder's own default ("CPU-Only AOT and TensorRT-RTX Engines" > "Compute Capability": 8.0,
# 8.6, 8.9, 12.0 and later; the Support Matrix note: 8.6, 8.9, 12.0), so trtforge never relies on
# it: every TensorRT-RTX build sets this list explicitly (see trtforge.resolution.resolve), the artifact
# records it, and lookup reads only the recorded list. It is the first list's named releases.
RTX_DEFAULT_COMPUTE_CAPABILITIES: tuple[str, ...] = ("8.0", "8.6", "8.9", "12.0")


def flavor_name(flavor: str) -> str:
    """The product name users know: 'TensorRT-RTX' or 'TensorRT'."""
    return "TensorRT-RTX" if flavor == "tensorrt_rtx" else "TensorRT"


def release(text: str) -> Version:
    """Leading numeric release parts: '10.13.3.9' -> (10, 13, 3, 9), '11.0.0rc1' -> (11, 0, 0).

    Lenient, for versions that come from package metadata and the capability table.
    """
    parts = []
    for piece in text.split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    return tuple(parts)


@lru_cache(maxsize=1024)
def parse_version(text: str) -> Version:
    """A version a user typed: ``"10.13.3.9"`` -> ``(10, 13, 3, 9)``; TargetError for anything else."""
    if not _VERSION.fullmatch(text):  # the whole text: no whitespace or trailing newline either
        raise TargetError(f"TensorRT version {text[:40]!r} is not of the form MAJOR.MINOR[.PATCH[.BUILD]]")
    return release(text)


def same_release(built: str, running: str) -> bool:
    """Equal as releases: MAJOR.MINOR.PATCH always, the build number only when both name one.

    ``10.13.3`` matches ``10.13.3.9`` (a target given as MAJOR.MINOR.PATCH means that release);
    ``10.13`` means ``10.13.0`` and does not match ``10.13.3``.
    """
    a, b = release(built), release(running)
    width = max(3, min(len(a), len(b)))
    return (*a, 0, 0, 0)[:width] == (*b, 0, 0, 0)[:width]


# Which runtime releases load a plan: the one rule `show` records, `lookup` applies and `doctor`
# states. TensorRT: the release that built it, or with version compatibility any later release of
# the same major (TensorRT Developer Guide, "Version Compatibility"; lookup keeps to the major).
# TensorRT-RTX: the release that built it, whatever the flag (TensorRT-RTX documentation,
# "Engine Compatibility" > "Version Compatibility": engines are not compatible between releases).
SAME_RELEASE = "same"
SAME_MAJOR_OR_NEWER = "same major, >= build"
_RUNTIME_RELEASES_TEXT = {
    SAME_RELEASE: "the release that built them only",
    SAME_MAJOR_OR_NEWER: "the building release and later releases of the same major",
}


def runtime_releases(flavor: str, version_compatible: bool) -> str:
    """``same`` or ``same major, >= build``: which runtime releases load a plan of ``flavor``."""
    return SAME_MAJOR_OR_NEWER if flavor == "tensorrt" and version_compatible else SAME_RELEASE


def runtime_releases_text(flavor: str, version_compatible: bool) -> str:
    """:func:`runtime_releases` in words, for people (`doctor`)."""
    return _RUNTIME_RELEASES_TEXT[runtime_releases(flavor, version_compatible)]


_CUDA_VARIANT = re.compile(r"-(cu\d+)(?:-|$)")


def cuda_variant(distribution: str) -> str | None:
    """``tensorrt-rtx-cu12`` -> ``cu12``; None for a distribution that does not name one."""
    match = _CUDA_VARIANT.search(distribution)
    return match.group(1) if match else None


@dataclass(frozen=True)
class BackendInfo:
    """A TensorRT flavor and version: installed here, or named by a target.

    ``cuda`` is the variant of the wheel (``cu12``/``cu13``, from its distribution name): the same
    version exists built against different CUDA majors, and plans follow their builder's CUDA
    libraries, so it is part of the build target. None where no distribution names it.
    """

    flavor: Flavor
    version: str
    cuda: str | None = None

    @property
    def module_name(self) -> str:
        return self.flavor

    @property
    def label(self) -> str:
        return f"{flavor_name(self.flavor)} {self.version}"


def installed_version(flavor: Flavor) -> str | None:
    """Version of an installed flavor, or None; never imports the module."""
    found = installed_backend(flavor)
    return found.version if found is not None else None


@lru_cache(maxsize=4)
def installed_backend(flavor: Flavor) -> BackendInfo | None:
    """The installed flavor (version and CUDA variant from package metadata), or None; never imports it.

    Asked once per process (a build of many recipes asks per recipe): like an imported module,
    what is installed is taken to stay put while the process runs."""
    if importlib.util.find_spec(flavor) is None:
        return None
    for dist in _DISTRIBUTIONS[flavor]:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        # The PyPI "tensorrt" download stub has metadata but no working module; treat a
        # version without a release number as absent.
        if version and version[0].isdigit():
            return BackendInfo(flavor, version, cuda_variant(dist))
    return None


@lru_cache(maxsize=1)
def trtforge_version() -> str:
    """This trtforge's version, from its package metadata ("unknown" when run from a bare checkout)."""
    try:
        return importlib.metadata.version("trtforge")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def installed_backends() -> list[BackendInfo]:
    return [b for f in FLAVORS if (b := installed_backend(f)) is not None]


def find_backend(requested: str = "auto") -> BackendInfo:
    """The flavor a recipe builds with: ``auto`` prefers full TensorRT, else TensorRT-RTX."""
    wanted: tuple[Flavor, ...] = FLAVORS if requested == "auto" else (requested,)  # type: ignore[assignment]
    for flavor in wanted:
        found = installed_backend(flavor)
        if found is not None:
            return found
    found = ", ".join(b.label for b in installed_backends()) or "none"
    raise BackendUnavailableError(f"backend {requested!r} is not installed (installed: {found})")
