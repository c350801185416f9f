"""`trtforge plan`: what `build` would do, without building (for CI matrices)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from trtforge.cli._errors import run
from trtforge.cli._options import CatalogOpt, JsonOpt, StoreOpt
from trtforge.cli._output import Output, naming, styled

if TYPE_CHECKING:
    from rich.console import Console


STATUS_STYLE = {"build": "yellow", "cached": "cyan", "failed": "red"}


def plan(
    recipes: Annotated[
        list[str], typer.Argument(help="Recipe YAML files or glob patterns (quoted).", show_default=False)
    ],
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            help="Build target 'flavor=F,trt=VERSION,cc=X.Y[,gpu=NAME][,os=OS,arch=ARCH]'; repeat for several "
            "(default: this machine; os/arch default to this machine's).",
            show_default=False,
        ),
    ] = None,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Show each recipe's build key per target and whether it is already built."""
    output = Output(json_output)

    def body() -> int:
        from trtforge.resolution.batch import exit_code_for, parse_target_spec
        from trtforge.stages.build import plan_builds

        targets = [parse_target_spec(spec) for spec in target or []]
        entries = plan_builds(recipes, targets or None, store=store, catalog=catalog)
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
        t = row["target"] or {}
        where = f"{t.get('flavor', '-')} {t.get('trt_version', '')} {t.get('gpu_name') or ''}".strip()
        table.add_row(
            styled((row["status"], STATUS_STYLE[row["status"]])),
            row["name"] or row["recipe"],
            where,
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
        if row["error"]:
            output.error_lines(naming(row["recipe"], row["error"]), row.get("hint"), row.get("more_errors", []))
