"""`trtforge adopt`: register a plan built elsewhere (e.g. by trtexec)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trtforge.cli._errors import run
from trtforge.cli._options import ArchOpt, CatalogOpt, CcOpt, FlavorOpt, GpuOpt, JsonOpt, OsOpt, StoreOpt, TrtOpt
from trtforge.cli._output import Output


def adopt(
    plan: Annotated[Path, typer.Argument(help="Serialized engine (plan) file.", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Name to look it up by (like a recipe name).")],
    model: Annotated[Path, typer.Option("--model", help="The ONNX model it was built from.")],
    trt: TrtOpt = None,
    gpu: GpuOpt = None,
    cc: CcOpt = None,
    flavor: FlavorOpt = None,
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
    """Register an engine built outside trtforge; its target comes from the plan header or the flags."""
    output = Output(json_output)

    def body() -> None:
        from trtforge.stages.adopt import AdoptRequest, adopt_plan

        request = AdoptRequest(
            plan=plan,
            name=name,
            model=model,
            flavor=flavor,
            trt_version=trt,
            gpu_name=gpu,
            compute_capability=cc,
            hardware=hardware,
            version_compatible=version_compatible,
            exclude_lean_runtime=exclude_lean_runtime,
            os=os_name,
            arch=arch,
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
