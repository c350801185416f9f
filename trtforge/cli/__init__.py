"""The `trtforge` command: a thin Typer layer over the library."""

from __future__ import annotations

import typer

from trtforge.cli import build as build_cmd
from trtforge.cli import catalog as catalog_cmd
from trtforge.cli import info as info_cmd
from trtforge.cli import maintenance as maintenance_cmd

app = typer.Typer(
    name="trtforge",
    help="Build, catalog and look up TensorRT engines from declarative recipes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("build")(build_cmd.build)
app.command("list")(catalog_cmd.list_artifacts)
app.command("show")(catalog_cmd.show)
app.command("schema")(info_cmd.schema)
app.command("doctor")(info_cmd.doctor)
app.command("fsck")(maintenance_cmd.fsck)
app.command("gc")(maintenance_cmd.gc)


def main() -> None:
    app()
