"""The floor of a Typer CLI: an app with `trtforge build`'s parameter types that only imports
yaml, sqlite3 and hashlib. Typer 0.29 coerces every non-flag value through a pydantic TypeAdapter,
so any Typer command with such options pays for importing pydantic and building the adapters."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(add_completion=False)


@app.command()
def build(
    recipes: Annotated[list[str] | None, typer.Argument()] = None,
    store: Annotated[str | None, typer.Option("--store")] = None,
    catalog: Annotated[str | None, typer.Option("--catalog")] = None,
    force: Annotated[bool, typer.Option("--force")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast")] = False,
    reproduce: Annotated[str | None, typer.Option("--reproduce")] = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    import hashlib  # noqa: F401
    import sqlite3  # noqa: F401

    import yaml  # noqa: F401


@app.command()
def other() -> None:
    """A second command, so that `build` is a subcommand as in trtforge."""


if __name__ == "__main__":
    app()
