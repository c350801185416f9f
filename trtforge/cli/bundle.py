"""`trtforge export` and `trtforge import`: deployment bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trtforge.cli._errors import run
from trtforge.cli._options import CatalogOpt, JsonOpt, StoreOpt
from trtforge.cli._output import Output


def export(
    artifacts: Annotated[list[str], typer.Argument(help="Artifact ids (or unique prefixes).", show_default=False)],
    output_path: Annotated[Path, typer.Option("--output", "-o", help="Bundle file to write (.tar).")],
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Write artifacts (plans + records + manifest of sha256s) to one tar bundle."""
    output = Output(json_output)

    def body() -> None:
        from trtforge.bundle import export_bundle
        from trtforge.store import require_existing_store

        opened = require_existing_store(store, catalog=catalog, missing="the store is empty: nothing to export")
        try:
            report = export_bundle(opened, artifacts, output_path)
        finally:
            opened.close()
        data = report.as_json()
        output.result(
            data,
            lambda console: console.print(
                f"exported {len(report.artifacts)} artifact(s), {report.plans} plan(s), "
                f"{report.bytes / 1024:.0f} KiB -> {report.path}"
            ),
        )

    run(output, body)


def import_(
    bundle: Annotated[Path, typer.Argument(help="Bundle written by `trtforge export`.", show_default=False)],
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Import a bundle into this store, all or nothing, after checking every hash."""
    output = Output(json_output)

    def body() -> None:
        from trtforge.bundle import import_bundle
        from trtforge.errors import BundleError
        from trtforge.store import open_store

        if not bundle.is_file():
            raise BundleError(f"bundle {bundle} does not exist or is not a file", hint="check the path")
        opened = open_store(store, catalog=catalog)
        try:
            report = import_bundle(opened, bundle)
        finally:
            opened.close()
        output.result(
            report.as_json(),
            lambda console: console.print(
                f"imported {len(report.imported)} artifact(s) ({len(report.already_present)} already present), "
                f"{report.plans} plan(s)"
            ),
        )

    run(output, body)
