"""`trtforge deploy`: write what a server loads (Triton model repository, ONNX Runtime EPContext model)."""

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
    TargetsOpt,
    TrtOpt,
    target_options,
)
from trtforge.cli._output import Output

app = typer.Typer(help="Export engines where they are served: Triton, ONNX Runtime.", no_args_is_help=True)


RefArg = Annotated[
    str,
    typer.Argument(
        help="A name (its engine chosen by lookup's rules for the target options) or an artifact id.",
        show_default=False,
    ),
]
VerifiedOnlyOpt = Annotated[
    bool, typer.Option("--verified-only", help="Only engines that passed verification on the target GPU model.")
]
ModelSha256Opt = Annotated[
    str | None,
    typer.Option("--model-sha256", help="Export an older model of the name by its digest.", show_default=False),
]


@app.command("triton")
def triton(
    ref: RefArg,
    repository: Annotated[
        Path, typer.Option("--output", "-o", help="Triton model repository directory.", show_default=False)
    ],
    target: TargetsOpt = None,
    fleet: FleetOpt = None,
    gpu: GpuOpt = None,
    cc: CcOpt = None,
    flavor: FlavorOpt = None,
    trt: TrtOpt = None,
    cuda: CudaOpt = None,
    os_name: OsOpt = None,
    arch: ArchOpt = None,
    verified_only: Annotated[
        bool,
        typer.Option("--verified-only", help="Only plans that passed verification on a GPU of each capability."),
    ] = False,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", help="Triton max_batch_size (0: explicit batch, whole shapes).")
    ] = 0,
    model_sha256: ModelSha256Opt = None,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Add a version to REPO/NAME (config.pbtxt + one plan per compute capability).

    The targets' full-TensorRT release and compute capabilities are served (--target SPEC repeated,
    the flags for one, or --fleet FILE, whose TensorRT-RTX entries are left out with a note); by
    default the capabilities the newest model's plans were built on, with the newest build's release.
    REF may be an artifact id: its plan alone.
    """
    output = Output(json_output)
    options = target_options(
        target, gpu=gpu, cc=cc, flavor=flavor, trt=trt, cuda=cuda, os_name=os_name, arch=arch, fleet=fleet
    )

    def body() -> None:
        from trtforge.stages.deploy.triton import TritonRequest, deploy_triton

        request = TritonRequest(
            repository=repository,
            name=ref,
            verified_only=verified_only,
            max_batch_size=max_batch_size,
            model_sha256=model_sha256,
            targets=options,
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
    ref: RefArg,
    out: Annotated[
        Path, typer.Option("--output", "-o", help="The ONNX model to write (e.g. model_ctx.onnx).", show_default=False)
    ],
    target: TargetOpt = None,
    fleet: FleetOpt = None,
    gpu: GpuOpt = None,
    cc: CcOpt = None,
    flavor: FlavorOpt = None,
    trt: TrtOpt = None,
    cuda: CudaOpt = None,
    os_name: OsOpt = None,
    arch: ArchOpt = None,
    verified_only: VerifiedOnlyOpt = False,
    model_sha256: ModelSha256Opt = None,
    embed: Annotated[
        bool,
        typer.Option("--embed/--external", help="Plan inside the model, or a hash-checked copy beside it (default)."),
    ] = False,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Wrap an engine in an ONNX model with one EPContext node for ONNX Runtime's TensorRT providers.

    REF is an artifact id, or a name whose engine lookup chooses for the target: this machine, or
    the one --target, the flags or --fleet FILE --target NAME name.
    """
    output = Output(json_output)
    options = target_options(
        target, gpu=gpu, cc=cc, flavor=flavor, trt=trt, cuda=cuda, os_name=os_name, arch=arch, fleet=fleet
    )

    def body() -> None:
        from trtforge.stages.deploy.epcontext import export_epcontext

        result = export_epcontext(
            out,
            ref,
            target=options,
            model_sha256=model_sha256,
            verified_only=verified_only,
            embed=embed,
            store=store,
            catalog=catalog,
        )
        output.result(
            result.as_json(),
            lambda console: console.print(
                f"{result.path} ({result.source}, hardware_architecture {result.hardware_architecture}, "
                f"{'embedded' if result.embed else 'plan ' + str(result.plan_path)})"
            ),
        )

    run(output, body)
