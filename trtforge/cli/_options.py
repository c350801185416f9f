"""Options shared by every command, defined once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from trtforge.resolution.targets import TargetOptions

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
# -- the target options: one vocabulary for every command that takes a target (docs/fleet.md) --------
# --target SPEC (repeatable), or the shorthand flags for one target, or --fleet FILE; each command
# turns them into targets with trtforge.resolution.targets.TargetOptions, so they mean the same
# and are checked the same everywhere. The flags are collected as lists only so that one given
# twice (`--cc 8.6 --cc 8.9`, which Click would quietly read as 8.9) is refused.

TARGET_PANEL = "Target (--target SPEC, or the flags for one target, or --fleet FILE)"
TargetsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        help="A target 'gpu=NAME,cc=X.Y,flavor=F,trt=VERSION,cuda=cuNN,os=OS,arch=ARCH' (trt= required), "
        "or the name of a --fleet entry; repeatable.",
        metavar="SPEC",
        show_default=False,
        rich_help_panel=TARGET_PANEL,
    ),
]
TargetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        help="The target 'gpu=NAME,cc=X.Y,flavor=F,trt=VERSION,cuda=cuNN,os=OS,arch=ARCH' (trt= required), "
        "or the name of a --fleet entry; one only.",
        metavar="SPEC",
        show_default=False,
        rich_help_panel=TARGET_PANEL,
    ),
]
FleetOpt = Annotated[
    Path | None,
    typer.Option(
        "--fleet",
        help="Fleet manifest (fleet.yaml): its entries are the targets (select some with --target NAME).",
        metavar="FILE",
        show_default=False,
        rich_help_panel=TARGET_PANEL,
    ),
]
GpuOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--gpu",
        help='Target GPU model as nvidia-smi names it or for short, e.g. "NVIDIA L4", L4, A10G, "RTX 4090": '
        "a GPU trtforge knows gives --cc; another needs --cc.",
        show_default=False,
        metavar="NAME",
        rich_help_panel=TARGET_PANEL,
    ),
]
CcOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--cc",
        help="Target compute capability, e.g. 8.6 (refused when --gpu says otherwise).",
        show_default=False,
        metavar="X.Y",
        rich_help_panel=TARGET_PANEL,
    ),
]
FlavorOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--flavor",
        help="Target runtime: tensorrt or tensorrt_rtx (default: the flavor whose installed runtime, or "
        "stored engines where the command reads the store, has the --trt release; else tensorrt).",
        show_default=False,
        metavar="FLAVOR",
        rich_help_panel=TARGET_PANEL,
    ),
]
TrtOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--trt",
        help="Target runtime release as `trtforge doctor` prints it there, e.g. 10.13.3.9 (default: the "
        "installed runtime's).",
        show_default=False,
        metavar="VERSION",
        rich_help_panel=TARGET_PANEL,
    ),
]
CudaOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--cuda",
        help="CUDA variant of the target runtime's wheel: cu12 or cu13 (keyed by builds; default: the "
        "installed runtime's when it is that release, else unknown).",
        show_default=False,
        metavar="cuNN",
        rich_help_panel=TARGET_PANEL,
    ),
]
OsOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--os",
        help="Target OS, e.g. linux or windows (default: unknown; detected: this one).",
        show_default=False,
        metavar="OS",
        rich_help_panel=TARGET_PANEL,
    ),
]
ArchOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--arch",
        help="Target CPU architecture, e.g. x86_64 or aarch64.",
        show_default=False,
        metavar="ARCH",
        rich_help_panel=TARGET_PANEL,
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


def target_options(
    specs: list[str] | None,
    *,
    gpu: list[str] | None,
    cc: list[str] | None,
    flavor: list[str] | None,
    trt: list[str] | None,
    cuda: list[str] | None,
    os_name: list[str] | None,
    arch: list[str] | None,
    fleet: Path | None = None,
) -> TargetOptions | None:
    """The target options as given, for the stage to check and resolve (the same way for every
    command); None when none was given (nothing imported: a cache hit stays light)."""
    flags = {"--gpu": gpu, "--cc": cc, "--flavor": flavor, "--trt": trt, "--cuda": cuda}
    flags.update({"--os": os_name, "--arch": arch})
    if not specs and fleet is None and not any(flags.values()):
        return None
    from trtforge.resolution.targets import TargetOptions

    one = {flag: values[-1] if values else None for flag, values in flags.items()}
    repeated = tuple(flag for flag, values in flags.items() if values and len(values) > 1)
    return TargetOptions(
        tuple(specs or ()),
        one["--gpu"],
        one["--cc"],
        one["--flavor"],
        one["--trt"],
        one["--cuda"],
        one["--os"],
        one["--arch"],
        fleet,
        repeated,
    )
