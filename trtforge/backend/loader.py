"""Import the TensorRT module of a flavor: the heavy import, on paths that build or run engines.

Which flavor is installed, and its version, is known without importing it (:mod:`trtforge.flavors`).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from trtforge.errors import BackendUnavailableError
from trtforge.flavors import BackendInfo


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
