"""`trtforge lookup`: which engine runs on this (or the given) target."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
    TargetDeviceOpt,
    TargetOpt,
    TrtOpt,
    target_options,
)
from trtforge.cli._output import Output, styled

if TYPE_CHECKING:
    from rich.console import Console


def lookup(
    name: Annotated[str | None, typer.Argument(help="Recipe name of the engine.", show_default=False)] = None,
    model_sha256: Annotated[
        str | None,
        typer.Option("--model-sha256", help="Look up by ONNX model digest (also an older model).", show_default=False),
    ] = None,
    any_model: Annotated[
        bool,
        typer.Option("--any-model", help="Rank engines of every model of the name, not only the newest model."),
    ] = False,
    allow_weightless: Annotated[
        bool,
        typer.Option("--allow-weightless", help="Also hand out weight-stripped plans (they need a refit to run)."),
    ] = False,
    target: TargetOpt = None,
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
        typer.Option(
            "--verified-only",
            help="Only engines that passed verification on the target GPU model (what CI and services use); "
            "without it an unverified engine is handed out with a warning on stderr.",
        ),
    ] = False,
    output_path: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Put a private copy of the plan here (reflink or copy, hash-checked)."),
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Say which model was chosen and which rule rejected each other artifact.")
    ] = False,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    device: TargetDeviceOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Find the best engine for a target: this machine, or the one --target, the flags or --fleet name.

    Plain stdout is exactly the plan's path, so PLAN=$(trtforge lookup ...) captures it.
    Notes, tables and warnings go to stderr; --json prints one document instead.
    An engine not verified on the target GPU model comes with a warning; --verified-only refuses it.
    --gpu alone gives the compute capability of a GPU trtforge knows: L4, "NVIDIA L4", A10G, "RTX 4090".
    An unknown GPU needs --cc; a --cc that disagrees with --gpu is refused.
    Without --trt the target runs the installed runtime (--trt is required where none is installed).
    With --trt and no --flavor: the flavor whose installed runtime or stored engines have it (else tensorrt).
    With --fleet, --target NAME picks its entry (not needed when the fleet has one).
    """
    output = Output(json_output)
    options = target_options(
        target, gpu=gpu, cc=cc, flavor=flavor, trt=trt, cuda=cuda, os_name=os_name, arch=arch, fleet=fleet
    )

    def body() -> int:
        from trtforge.rules.target import select_device

        select_device(device)
        from trtforge.stages.lookup import lookup_report

        found = lookup_report(
            name,
            options,
            model_sha256=model_sha256,
            store=store,
            catalog=catalog,
            verified_only=verified_only,
            explain=explain,
            output=output_path,
            allow_weightless=allow_weightless,
            any_model=any_model,
        )
        report = found.data
        if not output.json_mode:  # stdout is the answer alone; everything said about it goes to stderr
            _render_details(output.err, report)
            for warning in found.warnings:
                output.err.print(styled(("warning:", "yellow"), f" {warning}"))
        if found.error is None:
            output.result(report, lambda console: console.print(report["best"]["path"]))
            return 0
        # One document on stdout even on failure: the rejections are the useful part.
        if output.json_mode:
            output.result(report, lambda console: None)
        else:
            output.error(found.error)
        return found.error.exit_code

    run(output, body)


def _render_details(console: Console, report: dict[str, Any]) -> None:
    """Notes, the chosen model and the tables: for people, on stderr."""
    from rich.table import Table

    best = report.get("best")
    if best is not None:
        for note in best["notes"]:
            console.print(styled(("note:", "dim"), f" {note}"))
    if "rejected" in report:
        model = report["model"]
        if model is None:
            console.print("model: any (--any-model)")
        else:
            digests = f"model sha256 {model['model_sha256'][:12]}, recipe {model['recipe_fingerprint'][:12]}"
            console.print(f"model: {digests}, chosen as {model['why']}")
    if report["matches"] and (len(report["matches"]) > 1 or "rejected" in report):
        table = Table(box=None, header_style="bold", title="compatible (best first)", title_justify="left")
        for column in ("id", "backend", "built for", "verified here", "exact version", "same gpu"):
            table.add_column(column)
        for m in report["matches"]:
            built_for = m["gpu_name"] or "cc " + (",".join(m["compute_capabilities"]) or "default")
            table.add_row(
                m["artifact_id"][:12],
                f"{m['flavor']} {m['trt_version']}",
                built_for,
                "yes" if m["verified_here"] else "-",
                "yes" if m["exact_version"] else "-",
                "yes" if m["same_gpu_model"] else "-",
            )
        console.print(table)
    if "rejected" in report:
        if not report["rejected"]:
            console.print("rejected: none")
            return
        table = Table(box=None, header_style="bold", title="rejected", title_justify="left")
        for column in ("id", "rule", "reason"):
            table.add_column(column)
        for r in report["rejected"]:
            table.add_row(r["artifact_id"][:12], r["rule"], r["reason"])
        console.print(table)
