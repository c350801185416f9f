"""`trtforge build`.

Rich and the build stage are imported inside the command, so `--help` and start-up stay light.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from trtforge.cli._errors import run
from trtforge.cli._options import CatalogOpt, JsonOpt, StoreOpt
from trtforge.cli._output import Output

if TYPE_CHECKING:
    from rich.console import Console

    from trtforge.build import BuildResult

STATUS_STYLE = {"built": "green", "cached": "cyan", "failed": "red"}


def exit_code_for(results: list[BuildResult]) -> int:
    """2 if any recipe was bad input, else 1 if any build failed, else 0."""
    codes = {r.exit_code for r in results if not r}
    if 2 in codes:
        return 2
    return 1 if codes else 0


def build(
    recipes: Annotated[list[Path], typer.Argument(help="Recipe YAML files.", show_default=False)],
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the build key is cached.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Build engines from recipes; unchanged recipes are cache hits."""
    output = Output(json_output)

    def body() -> int:
        from trtforge.build import BuildStage

        progress = None
        if output.interactive:
            from trtforge.cli._progress import BuildProgress  # rich: only for a person at a terminal

            progress = BuildProgress(output.err)
        stage = BuildStage(store, catalog=catalog, force=force, progress=progress)
        results = []
        try:
            with progress if progress is not None else nullcontext():
                for path in recipes:
                    if progress is not None:
                        progress.start_recipe(path.name)
                    results.append(stage.build_one(path))
        finally:
            stage.close()
        output.result([r.as_json() for r in results], lambda console: _render(console, output, results))
        return exit_code_for(results)

    run(output, body)


def _render(console: Console, output: Output, results: list[BuildResult]) -> None:
    from rich.table import Table

    table = Table(box=None, show_header=True, header_style="bold")
    for column in ("status", "name", "artifact", "seconds", "plan"):
        table.add_column(column)
    for r in results:
        style = STATUS_STYLE[r.status]
        table.add_row(
            f"[{style}]{r.status}[/]",
            r.name or "-",
            (r.artifact_id or "-")[:12],
            f"{r.seconds:.2f}",
            r.plan_path or "-",
        )
    console.print(table)
    for r in results:
        if r.error:
            output.err.print(f"[bold red]error:[/] {r.recipe}: {r.error}")
            if r.hint:
                output.err.print(f"[dim]hint:[/] {r.hint}")
