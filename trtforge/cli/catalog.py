"""`trtforge list` and `trtforge show`: what is in the catalog."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trtforge.cli._errors import run
from trtforge.cli._options import ArtifactArg, CatalogOpt, JsonOpt, StoreOpt
from trtforge.cli._output import Output, styled

if TYPE_CHECKING:
    from rich.console import Console


def list_artifacts(
    name: Annotated[str | None, typer.Option("--name", help="Only artifacts of this recipe name.")] = None,
    store: StoreOpt = None,
    catalog: CatalogOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """List artifacts in the catalog, newest first."""
    output = Output.of("list", json_output)

    def body() -> None:
        from trtforge.stages.inventory import list_artifacts as list_stage

        rows = list_stage(store, catalog, name=name)
        output.result(rows, lambda console: _render_list(console, rows))

    run(output, body)


def _render_list(console: Console, rows: list[dict]) -> None:
    from rich.table import Table

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
    output = Output.of("show", json_output)

    def body() -> None:
        from trtforge.stages.inventory import show_artifact

        record = show_artifact(store, catalog, artifact)
        output.result(record, lambda console: _render_show(console, record))

    run(output, body)


def _render_show(console: Console, record: dict) -> None:
    from rich.table import Table

    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key in (
        "artifact_id",
        "name",
        "status",
        "integrity",
        "pinned",
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
        "learned_at",
        "learned_via",
        "recipe_path",
    ):
        value = record.get(key)
        shown = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        if key == "created_at" and record.get("learned_via") == "import":
            shown += "  (as its bundle claims; orders nothing)"
        table.add_row(key, shown)
    cost = record["details"].get("cost")
    if cost:  # builds before issue 24 recorded none
        peak = "" if cost.get("peak_rss_mib") is None else f", {cost['peak_rss_mib']} MiB peak"
        table.add_row("build_cost", f"{cost['wall_seconds']} s wall, {cost['cpu_seconds']} s CPU{peak}")
    console.print(table)
    console.print(styled(("io tensors", "bold")))
    for tensor in record["io_tensors"]:
        console.print(f"  {tensor['mode']:6} {tensor['name']} {tensor['dtype']} {tensor['shape']}")
    console.print(styled(("profiles", "bold")))
    for index, profile in enumerate(record["profiles"]):
        for name, shapes in profile.items():
            console.print(f"  [{index}] {name}: min {shapes['min']} opt {shapes['opt']} max {shapes['max']}")
    console.print(styled(("builder settings", "bold")))
    for key, value in record["details"].get("settings", {}).items():
        console.print(f"  {key}: {value}")
    _render_plugins(console, record["details"].get("plugins") or [])
    _render_verifications(console, record)
    _render_layers(console, record["details"].get("layer_info"))
    denylist = record["details"].get("denylist")
    if denylist:
        console.print(
            styled(
                ("deny list", "bold"),
                f" ({denylist['mechanism']}): {len(denylist['entries'])} entries, "
                f"{len(denylist['removed'])} removals, {len(denylist['violations'])} violations",
            )
        )
        for removed in denylist["removed"]:
            tactic = removed.get("tactic") or removed["removed"].get("kernel_name") or removed["removed"]["tactic_hash"]
            console.print(f"  removed {tactic} from {removed['layer']}")
    for section in ("compatibility", "timing_cache"):
        if record["details"].get(section):
            console.print(styled((section.replace("_", " "), "bold")))
            for key, value in record["details"][section].items():
                console.print(f"  {key}: {value}")
    if record["details"].get("weightless"):
        console.print(styled(("weightless plan", "bold yellow"), ": refit it with the model's weights before use"))
    warnings = [r for r in record["build_log"] if r["level"] != "info"]
    if warnings:
        console.print(styled(("build log", "bold"), f" ({len(warnings)} warnings/errors)"))
        for entry in warnings[:20]:
            console.print(f"  {entry['level']}: {entry['message']}")


def _render_plugins(console: Console, plugins: list[dict]) -> None:
    if not plugins:
        return
    console.print(styled(("plugin libraries", "bold"), f" ({len(plugins)})"))
    for plugin in plugins:
        where = "embedded in the plan" if plugin.get("serialized") else "load it before the plan deserializes"
        console.print(f"  {plugin['name']} sha256 {plugin['sha256']} ({plugin['load']}; {where}): {plugin['library']}")


def _render_verifications(console: Console, record: dict) -> None:
    lineage = record["details"].get("lineage")
    if lineage:
        console.print(styled(("lineage", "bold"), f" {lineage['operation']} of {lineage['parent']}"))
    verifications = record.get("verifications", [])
    if not verifications:
        console.print(styled(("verifications", "bold"), " none (unverified on every GPU)"))
        return
    console.print(styled(("verifications", "bold"), f" ({len(verifications)})"))
    for v in verifications:
        checks = [o for point in v["checks"] for o in point["outputs"] if not o.get("intermediate")]
        failed = sum(1 for o in checks if not o["passed"])
        worst = max((o["max_abs"] for o in checks if o.get("max_abs") is not None), default=None)
        line = (
            f"  {v['status']:7} {v['gpu_name']} {v['runtime_flavor']} {v['runtime_version']} "
            f"{v['created_at'][:19]}: {len(v['checks'])} points, {failed} failed outputs"
        )
        if worst is not None:
            line += f", max abs error {worst:.3g}"
        for perf in v["perf"]:
            line += f"; profile {perf['profile']} median {perf['latency_ms']['median']:.3f} ms"
        if v.get("trust") == "claimed":
            line += "  [claimed by an unsigned or untrusted bundle: not counted]"
        elif v.get("trust") == "signed":
            line += f"  [imported, signed by key {str(v.get('signer'))[:16]}]"
        console.print(line)


def _render_layers(console: Console, layer_info: Any) -> None:
    """The engine inspector's layers and the tactic each runs (recorded by builds on a GPU)."""
    from trtforge.rules.denylist import parse_layer_info

    if layer_info is None:
        console.print(styled(("layers", "bold"), " not recorded (engine inspector needs full TensorRT on a GPU)"))
        return
    try:
        layers = parse_layer_info(layer_info)
    except ValueError as exc:
        console.print(styled(("layers", "bold"), f" unreadable layer information ({exc})"))
        return
    console.print(styled(("layers", "bold"), f" ({len(layers)}, engine inspector)"))
    for layer in layers:
        console.print(f"  {layer.name}: {layer.tactic or '-'}")
