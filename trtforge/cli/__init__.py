"""The `trtforge` command: a thin Typer layer over the library.

Commands are registered by name in COMMANDS, one line each (``"name": "module:function"``, or a
``typer.Typer`` sub-app for a group); their modules are imported only when that command runs or
help lists it (trtforge/cli/_lazy.py), so a cache hit pays for `build` alone.
"""

from __future__ import annotations

from typing import Annotated

import typer

from trtforge.cli._lazy import lazy_group

COMMANDS: dict[str, str] = {
    "build": "trtforge.cli.build:build",
    "plan": "trtforge.cli.plan:plan",
    "list": "trtforge.cli.catalog:list_artifacts",
    "show": "trtforge.cli.catalog:show",
    "lookup": "trtforge.cli.lookup:lookup",
    "coverage": "trtforge.cli.coverage:coverage",
    "export": "trtforge.cli.bundle:export",
    "import": "trtforge.cli.bundle:import_",
    "keygen": "trtforge.cli.bundle:keygen",
    "adopt": "trtforge.cli.adopt:adopt",
    "schema": "trtforge.cli.info:schema",
    "doctor": "trtforge.cli.info:doctor",
    "verify": "trtforge.cli.verify:verify",
    "refit": "trtforge.cli.verify:refit",
    "denylist": "trtforge.cli.denylist:app",
    "cache": "trtforge.cli.cache:app",
    "fsck": "trtforge.cli.maintenance:fsck",
    "gc": "trtforge.cli.maintenance:gc",
    "pin": "trtforge.cli.maintenance:pin",
    "unpin": "trtforge.cli.maintenance:unpin",
    "deploy": "trtforge.cli.deploy:app",
    "selftest": "trtforge.cli.selftest:selftest",
}

app = typer.Typer(
    name="trtforge",
    cls=lazy_group(COMMANDS),
    help="Build, catalog and look up TensorRT engines from declarative recipes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from trtforge.cli.info import version_text

        typer.echo(version_text())
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the versions of trtforge, Python and the installed TensorRT backends, and exit.",
        ),
    ] = False,
) -> None:
    """Build, catalog and look up TensorRT engines from declarative recipes."""


def main() -> None:
    from trtforge.core.interrupts import end_if_stopped, stop_on_signals

    stop_on_signals()  # SIGINT / SIGTERM: the command unwinds and exits 130 / 143 (cli/_errors.py)
    try:
        app()
    except SystemExit:  # the command's end, its answer printed
        end_if_stopped()  # after SIGINT / SIGTERM: at once, without the interpreter's teardown
        raise
    except ModuleNotFoundError as exc:  # an optional dependency a command module imports
        from trtforge.cli._errors import missing_extra_exit

        raise SystemExit(missing_extra_exit(exc)) from None
