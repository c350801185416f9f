"""`trtforge deploy`: write what a server loads (Triton model repository, ONNX Runtime EPContext model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trtforge.cli._errors import run
from trtforge.cli._options import ArchOpt, ArtifactArg, CatalogOpt, JsonOpt, OsOpt, StoreOpt, TrtOpt
from trtforge.cli._output import Output

app = typer.Typer(help="Export engines where they are served: Triton, ONNX Runtime.", no_args_is_help=True)


@app.command("triton")
def triton(
    repository: Annotated[Path, typer.Argument(help="Triton model repository directory.", show_default=False)],
    name: Annotated[str, typer.Argument(help="Recipe name of the engines; also the Triton model name.")],
    trt: TrtOpt = None,
    cc: Annotated[
        list[str] | None,
        typer.Option("--cc", help="Compute capability to serve (repeat); default: those the plans were built on."),
    ] = None,
    verified_only: Annotated[
        bool, typer.Option("--verified-only", help="Only plans that passed verification on a GPU of each capability.")
    ] = False,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", help="Triton max_batch_size (0: explicit batch, whole shapes).")
    ] = 0,
    model_sha256: Annotated[
        str | None,
        typer.Option("--model-sha256", help="Export an older model of the name by its digest.", show_default=False),
    ] = None,
    os_name: OsOpt = None,
    arch: ArchOpt = None,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Add a version to REPO/NAME (config.pbtxt + one plan per compute capability)."""
    output = Output(json_output)

    def body() -> None:
        from trtforge.stages.deploy.triton import TritonRequest, deploy_triton

        request = TritonRequest(
            repository=repository,
            name=name,
            trt_version=trt,
            compute_capabilities=tuple(cc or ()),
            verified_only=verified_only,
            max_batch_size=max_batch_size,
            model_sha256=model_sha256,
            os=os_name,
            arch=arch,
        )
        result = deploy_triton(request, store, catalog=catalog)

        def human(console: object) -> None:
            print_ = console.print  # type: ignore[attr-defined]
            print_(f"{result.model_dir / str(result.version)} (config.pbtxt {result.config_status})")
            for cc_, need in result.files.items():
                print_(
                    f"  cc {cc_}: {need['file']} <- {need['artifact_id'][:12]} ({need['flavor']} {need['trt_version']})"
                )
            if result.runtime.get("backend_config"):
                print_(f"  start tritonserver with --backend-config={result.runtime['backend_config']}")
            for note in result.notes:
                print_(f"  note: {note}")

        output.result(result.as_json(), human)

    run(output, body)


@app.command("epcontext")
def epcontext(
    out: Annotated[Path, typer.Argument(help="The ONNX model to write (e.g. model_ctx.onnx).", show_default=False)],
    artifact: ArtifactArg,
    embed: Annotated[
        bool,
        typer.Option("--embed/--external", help="Plan inside the model, or a hash-checked copy beside it (default)."),
    ] = False,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Wrap an engine in an ONNX model with one EPContext node for ONNX Runtime's TensorRT providers."""
    output = Output(json_output)

    def body() -> None:
        from trtforge.stages.deploy.epcontext import export_epcontext

        result = export_epcontext(out, artifact, embed=embed, store=store, catalog=catalog)
        output.result(
            result.as_json(),
            lambda console: console.print(
                f"{result.path} ({result.source}, hardware_architecture {result.hardware_architecture}, "
                f"{'embedded' if result.embed else 'plan ' + str(result.plan_path)})"
            ),
        )

    run(output, body)
