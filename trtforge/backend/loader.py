"""Find the installed TensorRT flavor and its version without importing it.

Importing TensorRT costs time and needs its native libraries; a cache hit, ``lookup`` and
``list`` must work without it. So the version comes from package metadata, and the module is
imported only by :func:`import_backend`, on paths that build or run engines.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from trtforge.errors import BackendUnavailableError

Flavor = Literal["tensorrt", "tensorrt_rtx"]
FLAVORS: tuple[Flavor, ...] = ("tensorrt", "tensorrt_rtx")

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


_CUDA_VARIANT = re.compile(r"-(cu\d+)(?:-|$)")


def cuda_variant(distribution: str) -> str | None:
    """``tensorrt-rtx-cu12`` -> ``cu12``; None for a distribution that does not name one."""
    match = _CUDA_VARIANT.search(distribution)
    return match.group(1) if match else None


@dataclass(frozen=True)
class BackendInfo:
    """An installed TensorRT flavor: its module name, version and CUDA variant.

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
        return f"{'TensorRT-RTX' if self.flavor == 'tensorrt_rtx' else 'TensorRT'} {self.version}"


def installed_version(flavor: Flavor) -> str | None:
    """Version of an installed flavor, or None; never imports the module."""
    found = installed_backend(flavor)
    return found.version if found is not None else None


def installed_backend(flavor: Flavor) -> BackendInfo | None:
    """The installed flavor (version and CUDA variant from package metadata), or None; never imports it."""
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


def import_backend(info: BackendInfo) -> ModuleType:
    """Import the TensorRT module of ``info`` (the heavy import; build and run paths only)."""
    if info.flavor == "tensorrt_rtx":
        # Polygraphy picks its TensorRT module from this variable at import time.
        os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1"
    try:
        module = importlib.import_module(info.module_name)
    except ImportError as exc:
        raise BackendUnavailableError(f"cannot import {info.module_name}: {exc}") from None
    return module
