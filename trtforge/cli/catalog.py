"""`trtforge list` and `trtforge show`: what is in the catalog."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from trtforge.cli._errors import run
from trtforge.cli._options import ArtifactArg, CatalogOpt, JsonOpt, StoreOpt
from trtforge.cli._output import Output
from trtforge.errors import NotFoundError
from trtforge.store import open_existing_store


def list_artifacts(
    name: Annotated[str | None, typer.Option("--name", help="Only artifacts of this recipe name.")] = None,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """List artifacts in the catalog, newest first."""
    output = Output(json_output)

    def body() -> None:
        opened = open_existing_store(store, catalog=catalog)
        artifacts = opened.catalog.list_artifacts(name) if opened is not None else []
        rows = [a.summary() for a in artifacts]
        output.result(rows, lambda console: _render_list(console, rows))

    run(output, body)


def _render_list(console: Console, rows: list[dict]) -> None:
    if not rows:
        console.print("no artifacts")
        return
    table = Table(box=None, header_style="bold")
    for column in ("id", "name", "backend", "target", "size", "status", "created"):
        table.add_column(column)
    for row in rows:
        target = row["gpu_name"] or "cc " + (",".join(row["compute_capabilities"]) or "default")
        table.add_row(
            row["artifact_id"][:12],
            row["name"],
            f"{row['flavor']} {row['trt_version']}",
            target,
            f"{row['plan_size'] / 1024:.0f} KiB",
            row["status"],
            row["created_at"][:19],
        )
    console.print(table)


def show(
    artifact: ArtifactArg, store: StoreOpt = None, catalog: CatalogOpt = None, json_output: JsonOpt = False
) -> None:
    """Show everything recorded about one artifact."""
    output = Output(json_output)

    def body() -> None:
        opened = open_existing_store(store, catalog=catalog)
        if opened is None:
            raise NotFoundError(f"no artifact with id {artifact} (the store is empty)")
        record = opened.catalog.get_artifact(artifact).record()
        record["plan_path"] = opened.blobs.location(record["plan_sha256"])
        output.result(record, lambda console: _render_show(console, record))

    run(output, body)


def _render_show(console: Console, record: dict) -> None:
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key in (
        "artifact_id",
        "name",
        "status",
        "flavor",
        "trt_version",
        "gpu_name",
        "compute_capabilities",
        "build_key",
        "recipe_fingerprint",
        "model_sha256",
        "plan_sha256",
        "plan_size",
        "plan_path",
        "build_seconds",
        "created_at",
        "recipe_path",
    ):
        value = record.get(key)
        table.add_row(key, json.dumps(value) if isinstance(value, (list, dict)) else str(value))
    console.print(table)
    console.print("[bold]io tensors[/]")
    for tensor in record["io_tensors"]:
        console.print(f"  {tensor['mode']:6} {tensor['name']} {tensor['dtype']} {tensor['shape']}")
    console.print("[bold]profiles[/]")
    for index, profile in enumerate(record["profiles"]):
        for name, shapes in profile.items():
            console.print(f"  [{index}] {name}: min {shapes['min']} opt {shapes['opt']} max {shapes['max']}")
    console.print("[bold]builder settings[/]")
    for key, value in record["details"].get("settings", {}).items():
        console.print(f"  {key}: {value}")
    warnings = [r for r in record["build_log"] if r["level"] != "info"]
    if warnings:
        console.print(f"[bold]build log[/] ({len(warnings)} warnings/errors)")
        for entry in warnings[:20]:
            console.print(f"  {entry['level']}: {entry['message']}")
