"""`trtforge coverage`: which model lacks an engine (or a verification) for which fleet target."""

from __future__ import annotations

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
    TargetsOpt,
    TrtOpt,
    target_options,
)
from trtforge.cli._output import Output, styled

if TYPE_CHECKING:
    from rich.console import Console

STATUS_STYLE = {"covered": "green", "unverified": "yellow", "missing": "red"}


def coverage(
    refs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Recipe files or glob patterns (quoted), or names; default: every name in the store.",
            show_default=False,
        ),
    ] = None,
    target: TargetsOpt = None,
    fleet: FleetOpt = None,
    gpu: GpuOpt = None,
    cc: CcOpt = None,
    flavor: FlavorOpt = None,
    trt: TrtOpt = None,
    cuda: CudaOpt = None,
    os_name: OsOpt = None,
    arch: ArchOpt = None,
    engines_only: Annotated[
        bool,
        typer.Option("--engines-only", help="Count only missing engines, not missing verifications."),
    ] = False,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """For every recipe (or name) x target: an engine? verified on that GPU model? weight-stripped?

    An engine covers a target when `trtforge lookup` returns it for that target. A recipe means its
    model; a name its newest model. Exit 1 when something is missing (an engine, or a verification
    unless --engines-only), so a CI job can gate a release on it.
    """
    output = Output(json_output)
    options = target_options(
        target, gpu=gpu, cc=cc, flavor=flavor, trt=trt, cuda=cuda, os_name=os_name, arch=arch, fleet=fleet
    )

    def body() -> int:
        from trtforge.stages.coverage import coverage as coverage_stage
        from trtforge.stages.coverage import exit_code

        items = coverage_stage(refs or [], options, store=store, catalog=catalog, engines_only=engines_only)
        rows = [item.as_json() for item in items]
        output.result(rows, lambda console: _render(console, output, rows))
        return exit_code(items)

    run(output, body)


def _render(console: Console, output: Output, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("status", "name", "target", "gpu", "engine", "verified", "weight-stripped", "missing"):
        table.add_column(column)
    for row in rows:
        t = row["target"]
        table.add_row(
            styled((row["status"], STATUS_STYLE[row["status"]])),
            row["name"],
            t["label"] or f"{t['flavor']} {t['trt_version']}",
            t["gpu_name"] or f"cc {t['compute_capability']}",
            (row["artifact_id"] or "-")[:12],
            row["verification"] or "-",
            "yes" if row["weightless"] else ("-" if row["artifact_id"] is None else "no"),
            ", ".join(row["missing"]) or "-",
        )
    console.print(table)
    for row in rows:
        if row["reason"] and row["status"] == "missing":
            where = row["target"]["label"] or row["target"]["gpu_name"] or row["target"]["compute_capability"]
            output.info(f"{row['name']} for {where}: {row['reason']}")
    lacking = sum(1 for row in rows if row["missing"])
    output.info(f"{lacking} of {len(rows)} lack something" if lacking else f"all {len(rows)} covered")
