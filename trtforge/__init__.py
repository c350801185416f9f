"""trtforge: TensorRT engine recipes, builds, catalog and lookup.

The public Python API. Importing ``trtforge`` imports nothing heavy: each function imports the
stage it needs when called, and lookup never imports tensorrt.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trtforge.lookup_stage import LookupResult
    from trtforge.target import RuntimeTarget

__all__ = ["lookup", "runtime_target"]


def runtime_target(
    gpu: str | None = None,
    cc: str | None = None,
    trt: str | None = None,
    flavor: str | None = None,
    *,
    os: str | None = None,
    arch: str | None = None,
) -> RuntimeTarget:
    """An explicit target (``cc`` and ``trt`` required), or this machine's when all are None.

    (Not called ``target``: that is the :mod:`trtforge.target` module.)
    """
    from trtforge.target import resolve_target

    return resolve_target(gpu=gpu, cc=cc, trt=trt, flavor=flavor, os=os, arch=arch)


def lookup(
    name: str | None = None,
    target: RuntimeTarget | None = None,
    *,
    model_sha256: str | None = None,
    store: str | Path | None = None,
    catalog: str | None = None,
    verified_only: bool = False,
    output: str | Path | None = None,
) -> LookupResult:
    """The best engine for ``target`` (this machine when None) as a hash-checked local plan path.

    Raises ``trtforge.errors.NotFoundError`` for an unknown name and
    ``trtforge.lookup_stage.NoCompatibleEngineError`` when no artifact can run on the target.
    """
    from trtforge.lookup_stage import find_engine

    return find_engine(
        name,
        target,
        model_sha256=model_sha256,
        store=store,
        catalog=catalog,
        verified_only=verified_only,
        output=output,
    )
