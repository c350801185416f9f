"""`trtforge adopt`: register a plan built elsewhere (e.g. by trtexec)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trtforge.cli._errors import run
from trtforge.cli._options import (
    ArchOpt,
    CatalogOpt,
    CcOpt,
    CudaOpt,
    FlavorOpt,
    FleetOpt,
    GpuOpt,
    JsonOpt,
    OsOpt,
    StoreOpt,
    TargetOpt,
    TrtOpt,
    target_options,
)
from trtforge.cli._output import Output


def adopt(
    plan: Annotated[Path, typer.Argument(help="Serialized engine (plan) file.", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Name to look it up by (like a recipe name).")],
    model: Annotated[Path, typer.Option("--model", help="The ONNX model it was built from.")],
    target: TargetOpt = None,
    fleet: FleetOpt = None,
    gpu: GpuOpt = None,
    cc: CcOpt = None,
    flavor: FlavorOpt = None,
    trt: TrtOpt = None,
    cuda: CudaOpt = None,
    os_name: OsOpt = None,
    arch: ArchOpt = None,
    hardware: Annotated[
        str,
        typer.Option(
            "--hardware", help="Hardware compatibility it was built with: none|ampere_plus|same_compute_capability."
        ),
    ] = "none",
    version_compatible: Annotated[
        bool, typer.Option("--version-compatible", help="It was built with the version-compatible flag.")
    ] = False,
    exclude_lean_runtime: Annotated[
        bool, typer.Option("--exclude-lean-runtime", help="It was built excluding the lean runtime.")
    ] = False,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Register an engine built outside trtforge; its target comes from the plan header or the flags.

    The target it was built for: --target SPEC, the flags, or --fleet FILE --target NAME (a
    TensorRT-RTX plan's header gives its flavor and release; full TensorRT plans need --trt and the
    GPU or --cc).
    """
    output = Output(json_output)
    options = target_options(
        target, gpu=gpu, cc=cc, flavor=flavor, trt=trt, cuda=cuda, os_name=os_name, arch=arch, fleet=fleet
    )

    def body() -> None:
        from trtforge.stages.adopt import AdoptRequest, adopt_plan

        request = AdoptRequest(
            plan=plan,
            name=name,
            model=model,
            hardware=hardware,
            version_compatible=version_compatible,
            exclude_lean_runtime=exclude_lean_runtime,
            target=options,
        )
        result = adopt_plan(request, store, catalog=catalog)
        output.result(
            result.as_json(),
            lambda console: console.print(
                f"{result.status} {result.artifact_id[:12]} {result.name}: {result.flavor} {result.trt_version} "
                f"(target from {result.target_source})"
            ),
        )

    run(output, body)
