"""`trtforge cache list|export|import|prune`: timing caches per (flavor, TensorRT version, GPU)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trtforge.cli._errors import run
from trtforge.cli._options import CatalogOpt, JsonOpt, StoreOpt
from trtforge.cli._output import Output

if TYPE_CHECKING:
    from rich.console import Console


app = typer.Typer(help="Timing caches: one per TensorRT flavor, version and GPU, with history.", no_args_is_help=True)

CacheIdArg = Annotated[str, typer.Argument(help="Timing cache id (or a unique prefix of at least 6 characters).")]


@app.command("list")
def list_caches(
    all_versions: Annotated[bool, typer.Option("--all", help="Every version, not only the newest.")] = False,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """List timing caches (newest version of each, or --all versions)."""
    output = Output(json_output)

    def body() -> None:
        from trtforge.stages.timing_caches import list_caches

        rows = list_caches(store, catalog, all_versions=all_versions)
        output.result(rows, lambda console: _render_list(console, rows))

    run(output, body)


def _render_list(console: Console, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    if not rows:
        console.print("no timing caches")
        return
    table = Table(box=None, header_style="bold")
    for column in ("id", "backend", "gpu", "cc", "gen", "size", "source", "created"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["cache_id"][:12],
            f"{row['flavor']} {row['trt_version']}",
            row["gpu_name"],
            row["compute_capability"],
            str(row["generation"]),
            f"{row['size']} B",
            row["source"],
            row["created_at"][:19],
        )
    console.print(table)


@app.command("export")
def export(
    cache_id: CacheIdArg,
    dest: Annotated[
        Path, typer.Option("--output", "-o", help="File to write; its key goes to FILE.json.", show_default=False)
    ],
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Write one timing cache version to a file (plus FILE.json naming its flavor, version and GPU)."""
    output = Output(json_output)

    def body() -> None:
        from trtforge.stages.timing_caches import export_cache_file

        info = export_cache_file(store, catalog, cache_id, dest)
        output.result(info, lambda console: console.print(f"exported {info['cache_id'][:12]} to {info['path']}"))

    run(output, body)


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A file written by `trtforge cache export`.")],
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Merge an exported timing cache into this machine's; refuses caches for another TensorRT or GPU."""
    output = Output(json_output)

    def body() -> None:
        from trtforge.stages.timing_caches import import_cache_file

        row = import_cache_file(store, catalog, path)
        summary = row.summary()
        output.result(summary, lambda console: console.print(f"imported into {row.id[:12]} ({row.key.describe()})"))

    run(output, body)


@app.command("prune")
def prune(
    keep: Annotated[int, typer.Option("--keep", min=1, help="Versions to keep per cache.")] = 1,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be deleted.")] = False,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Delete old timing cache versions; blobs an artifact started from are kept."""
    output = Output(json_output)

    def body() -> None:
        from trtforge.stages.timing_caches import prune_caches

        data = prune_caches(store, catalog, keep=keep, dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        output.result(
            data,
            lambda console: console.print(
                f"{verb} {len(data['rows'])} cache versions and {len(data['blobs'])} blobs"
                f" ({data['freed_bytes']} bytes)"
            ),
        )

    run(output, body)
