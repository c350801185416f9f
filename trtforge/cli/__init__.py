"""The `trtforge` command: a thin Typer layer over the library."""

from __future__ import annotations

import typer

from trtforge.cli import adopt as adopt_cmd
from trtforge.cli import build as build_cmd
from trtforge.cli import bundle as bundle_cmd
from trtforge.cli import cache as cache_cmd
from trtforge.cli import catalog as catalog_cmd
from trtforge.cli import denylist as denylist_cmd
from trtforge.cli import info as info_cmd
from trtforge.cli import lookup as lookup_cmd
from trtforge.cli import maintenance as maintenance_cmd
from trtforge.cli import plan as plan_cmd
from trtforge.cli import verify as verify_cmd

app = typer.Typer(
    name="trtforge",
    help="Build, catalog and look up TensorRT engines from declarative recipes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("build")(build_cmd.build)
app.command("plan")(plan_cmd.plan)
app.command("list")(catalog_cmd.list_artifacts)
app.command("show")(catalog_cmd.show)
app.command("lookup")(lookup_cmd.lookup)
app.command("export")(bundle_cmd.export)
app.command("import")(bundle_cmd.import_)
app.command("keygen")(bundle_cmd.keygen)
app.command("adopt")(adopt_cmd.adopt)
app.command("schema")(info_cmd.schema)
app.command("doctor")(info_cmd.doctor)
app.command("verify")(verify_cmd.verify)
app.command("refit")(verify_cmd.refit)
app.add_typer(denylist_cmd.app, name="denylist")
app.add_typer(cache_cmd.app, name="cache")
app.command("fsck")(maintenance_cmd.fsck)
app.command("gc")(maintenance_cmd.gc)
app.command("pin")(maintenance_cmd.pin)
app.command("unpin")(maintenance_cmd.unpin)
app.add_typer(__import__("trtforge.cli.deploy", fromlist=["app"]).app, name="deploy")
app.command("selftest")(__import__("trtforge.cli.selftest", fromlist=["selftest"]).selftest)


def main() -> None:
    app()
