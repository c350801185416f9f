"""`trtforge plan`: what `build` would do, without building (for CI matrices)."""

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
from trtforge.cli._output import Output, naming, styled, target_cell

if TYPE_CHECKING:
    from rich.console import Console


STATUS_STYLE = {"build": "yellow", "cached": "cyan", "unknown": "magenta", "skipped": "dim", "failed": "red"}


def plan(
    recipes: Annotated[
        list[str], typer.Argument(help="Recipe YAML files or glob patterns (quoted).", show_default=False)
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
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Show each recipe's build key per target and whether it is already built.

    Targets: this machine by default; or --target SPEC (repeat), the flags for one target, or
    --fleet FILE (every entry, or those --target NAME selects). A target's status is cached, build,
    unknown (its CUDA variant is unknown here, so the key a runner stores is: give --cuda or cuda=)
    or skipped (the recipe does not build for it: the reason). --trt gives the release as
    `trtforge doctor` prints it on the runner: the key holds the exact version.
    """
    output = Output(json_output)
    options = target_options(
        target, gpu=gpu, cc=cc, flavor=flavor, trt=trt, cuda=cuda, os_name=os_name, arch=arch, fleet=fleet
    )

    def body() -> int:
        from trtforge.resolution.batch import exit_code_for
        from trtforge.stages.build import plan_builds

        entries = plan_builds(recipes, options, store=store, catalog=catalog)
        rows = [e.as_json() for e in entries]
        output.result(rows, lambda console: _render(console, output, rows))
        return exit_code_for([e.exit_code for e in entries])

    run(output, body)


def _render(console: Console, output: Output, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("status", "name", "target", "build key", "artifact"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            styled((row["status"], STATUS_STYLE[row["status"]])),
            row["name"] or row["recipe"],
            target_cell(row),
            (row["build_key"] or "-")[:16],
            (row["artifact_id"] or "-")[:12],
        )
    console.print(table)
    for row in rows:
        if row.get("unchecked"):
            output.info(
                f"note: {row['name'] or row['recipe']}: {', '.join(row['unchecked'])} unchecked "
                "(checked against the backend's API when the build runs)"
            )
        if row.get("reason"):
            output.info(f"{row['status']}: {row['name'] or row['recipe']} for {target_cell(row)}: {row['reason']}")
            if row.get("hint") and not row.get("error"):
                output.info(f"hint: {row['hint']}")
        if row["error"]:
            output.error_lines(naming(row["recipe"], row["error"]), row.get("hint"), row.get("more_errors", []))
