"""Import the TensorRT module of a flavor: the heavy import, on paths that build or run engines.

Which flavor is installed, and its version, is known without importing it (:mod:`trtforge.rules.flavors`).

Polygraphy binds itself to one flavor per process: it reads ``POLYGRAPHY_USE_TENSORRT_RTX`` once,
when ``polygraphy.config`` is first imported. Work for the other flavor therefore runs in a child
process of its own (:func:`run_in_flavor`), so one run (tests, ``selftest``, the Python API) can use
both flavors.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from trtforge.core.errors import BackendUnavailableError
from trtforge.rules.flavors import BackendInfo, Flavor

POLYGRAPHY_RTX = "POLYGRAPHY_USE_TENSORRT_RTX"
T = TypeVar("T")


def polygraphy_flavor() -> Flavor | None:
    """The flavor polygraphy is bound to in this process, or None while it is not imported."""
    config = sys.modules.get("polygraphy.config")
    if config is None:
        return None
    return "tensorrt_rtx" if getattr(config, "USE_TENSORRT_RTX", False) else "tensorrt"


def bind_polygraphy(flavor: Flavor) -> None:
    """Make polygraphy's first import pick ``flavor`` (no effect once it is imported)."""
    if polygraphy_flavor() is not None:
        return
    if flavor == "tensorrt_rtx":
        os.environ[POLYGRAPHY_RTX] = "1"
    else:
        os.environ.pop(POLYGRAPHY_RTX, None)


def needs_own_process(flavor: str) -> bool:
    """True when polygraphy is already bound to the other flavor in this process."""
    bound = polygraphy_flavor()
    return bound is not None and bound != flavor


def import_backend(info: BackendInfo) -> ModuleType:
    """Import the TensorRT module of ``info`` (the heavy import; build and run paths only)."""
    bind_polygraphy(info.flavor)
    try:
        module = importlib.import_module(info.module_name)
    except ImportError as exc:
        raise BackendUnavailableError(f"cannot import {info.module_name}: {exc}") from None
    return module


def _child_init(flavor: Flavor) -> None:
    bind_polygraphy(flavor)


def run_in_flavor(flavor: Flavor, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``func(*args, **kwargs)`` where polygraphy uses ``flavor``: here when it can, else in a fresh
    (spawned) child process bound to that flavor. Results and trtforge errors come back as they are
    (both pickle); ``func`` must be a module-level function."""
    if not needs_own_process(flavor):
        bind_polygraphy(flavor)
        return func(*args, **kwargs)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    saved = os.environ.get(POLYGRAPHY_RTX)
    with ProcessPoolExecutor(1, mp_context=context, initializer=_child_init, initargs=(flavor,)) as pool:
        # The child starts (on submit) with this environment, before it imports anything.
        _set_rtx(flavor == "tensorrt_rtx")
        try:
            future = pool.submit(func, *args, **kwargs)
        finally:
            _set_rtx(saved)
        return future.result()


def _set_rtx(value: bool | str | None) -> None:
    if value is True:
        os.environ[POLYGRAPHY_RTX] = "1"
    elif isinstance(value, str):
        os.environ[POLYGRAPHY_RTX] = value
    else:
        os.environ.pop(POLYGRAPHY_RTX, None)
