"""The floor of a Typer CLI: an app with two commands, `build` and `lookup`, whose parameters have
the types of trtforge's own (so Typer does the same work parsing them), and that only import yaml,
sqlite3 and hashlib. Typer 0.29 coerces every non-flag value through a pydantic TypeAdapter, so any
Typer command pays for importing pydantic and building one adapter per such parameter: what a
trtforge command costs above this app is trtforge's own work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False)


def _floor() -> None:
    import hashlib  # noqa: F401
    import sqlite3  # noqa: F401

    import yaml  # noqa: F401


@app.command()
def build(
    recipes: Annotated[list[str] | None, typer.Argument()] = None,
    store: Annotated[str | None, typer.Option("--store")] = None,
    catalog: Annotated[str | None, typer.Option("--catalog")] = None,
    force: Annotated[bool, typer.Option("--force")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast")] = False,
    reproduce: Annotated[str | None, typer.Option("--reproduce")] = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1)] = None,
    timeout: Annotated[float | None, typer.Option("--timeout")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    _floor()


@app.command()
def lookup(
    name: Annotated[str | None, typer.Argument()] = None,
    model_sha256: Annotated[str | None, typer.Option("--model-sha256")] = None,
    any_model: Annotated[bool, typer.Option("--any-model")] = False,
    allow_weightless: Annotated[bool, typer.Option("--allow-weightless")] = False,
    gpu: Annotated[str | None, typer.Option("--gpu")] = None,
    cc: Annotated[str | None, typer.Option("--cc")] = None,
    trt: Annotated[str | None, typer.Option("--trt")] = None,
    flavor: Annotated[str | None, typer.Option("--flavor")] = None,
    os_name: Annotated[str | None, typer.Option("--os")] = None,
    arch: Annotated[str | None, typer.Option("--arch")] = None,
    verified_only: Annotated[bool, typer.Option("--verified-only")] = False,
    output_path: Annotated[Path | None, typer.Option("--output", "-o")] = None,
    explain: Annotated[bool, typer.Option("--explain")] = False,
    store: Annotated[str | None, typer.Option("--store")] = None,
    catalog: Annotated[str | None, typer.Option("--catalog")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    _floor()


if __name__ == "__main__":
    app()
