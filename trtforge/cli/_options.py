"""Options shared by every command, defined once."""

from __future__ import annotations

from typing import Annotated, Any

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store", envvar="TRTFORGE_STORE", help="Store directory (default ./cache_store).", show_default=False
    ),
]
CatalogOpt = Annotated[
    str | None,
    typer.Option(
        "--catalog",
        envvar="TRTFORGE_CATALOG",
        help="Catalog SQLAlchemy URL (default sqlite in the store).",
        show_default=False,
    ),
]
ArtifactArg = Annotated[str, typer.Argument(help="Artifact id or a unique prefix of at least 6 characters.")]
GpuOpt = Annotated[
    str | None,
    typer.Option(
        "--gpu",
        help='Target GPU model as nvidia-smi names it or for short, e.g. "NVIDIA L4", L4, A10G, "RTX 4090": '
        "a GPU trtforge knows gives --cc; another needs --cc.",
        show_default=False,
    ),
]
CcOpt = Annotated[
    str | None,
    typer.Option(
        "--cc", help="Target compute capability, e.g. 8.6 (refused when --gpu says otherwise).", show_default=False
    ),
]
TrtOpt = Annotated[
    str | None,
    typer.Option(
        "--trt",
        help="Target TensorRT (or TensorRT-RTX) release, e.g. 10.13.3 (default: see the command's help).",
        show_default=False,
    ),
]
OsOpt = Annotated[
    str | None,
    typer.Option(
        "--os", help="Target OS, e.g. linux or windows (default: unknown; detected: this one).", show_default=False
    ),
]
ArchOpt = Annotated[
    str | None,
    typer.Option("--arch", help="Target CPU architecture, e.g. x86_64 or aarch64.", show_default=False),
]
FlavorOpt = Annotated[
    str | None,
    typer.Option(
        "--flavor",
        help="Target runtime: tensorrt or tensorrt_rtx (default: see the command's help).",
        show_default=False,
    ),
]


def _device(purpose: str) -> Any:
    """``--device N``: one option, worded for what the command does with the device."""
    help_text = f"CUDA device index (among CUDA_VISIBLE_DEVICES) {purpose} (default 0)."
    return typer.Option("--device", min=0, help=help_text, show_default=False)


DeviceOpt = Annotated[int | None, _device("to build, run and detect on")]
# lookup builds and runs nothing: the device only stands for the target when none is given.
TargetDeviceOpt = Annotated[int | None, _device("whose GPU is the target when --gpu/--cc are not given")]
DetectDeviceOpt = Annotated[int | None, _device("to detect and describe")]
