"""`trtforge schema` and `trtforge doctor`."""

from __future__ import annotations

import json
import platform
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from trtforge.cli._errors import run
from trtforge.cli._options import CatalogOpt, DetectDeviceOpt, JsonOpt, StoreOpt
from trtforge.cli._output import Output, styled

if TYPE_CHECKING:
    from rich.console import Console


def schema(
    fleet: Annotated[bool, typer.Option("--fleet", help="The fleet manifest's schema instead (fleet.yaml).")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Print the recipe JSON Schema (with --fleet: the fleet manifest's), for editors and validation."""
    if fleet:
        from trtforge.rules.fleet import json_schema
    else:
        from trtforge.rules.recipe import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


def doctor(
    store: StoreOpt = None, catalog: CatalogOpt = None, device: DetectDeviceOpt = None, json_output: JsonOpt = False
) -> None:
    """What this machine offers: TensorRT flavors, GPUs, store and catalog."""
    output = Output(json_output)

    def body() -> None:
        from trtforge.rules.target import select_device
        from trtforge.stages.doctor import doctor_report

        select_device(device)
        report = doctor_report(store, catalog)
        output.result(report, lambda console: _render(console, report))

    run(output, body)


def _render(console: Console, report: dict[str, Any]) -> None:
    console.print(f"python    {report['python']}")
    console.print(f"platform  {report['platform']['os']}/{report['platform']['arch']}")
    backends = ", ".join(
        f"{b['flavor']} {b['version']}" + (f" ({b['cuda']})" if b["cuda"] else "") for b in report["backends"]
    )
    console.print(f"backends  {backends or 'none installed'}")
    gpus = ", ".join(
        f"{g['index']}: {g['name']} (cc {g['compute_capability']}" + (f", MIG {g['mig']}" if g.get("mig") else "") + ")"
        for g in report["gpus"]
    )
    console.print(f"gpus      {gpus or 'none found (builds with TensorRT-RTX still work on the CPU)'}")
    console.print(f"store     {report['store']}")
    console.print(f"catalog   {report['catalog']}")
    for backend in report["backends"]:
        _render_capabilities(console, backend)


STATE_STYLE = {"yes": "green", "deprecated": "yellow", "never": "red", "missing": "red", "removed": "red"}


def _render_capabilities(console: Console, backend: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(box=None, header_style="bold", title=f"{backend['flavor']} {backend['version']}: recipe options")
    table.add_column("option", no_wrap=True)
    for column in ("state", "since", "removed", "note"):
        table.add_column(column)
    for row in backend["capabilities"]:
        note = row["note"]
        if row["cpu_build_fails"]:
            unless = f" without {row['cpu_build_unless']}" if row.get("cpu_build_unless") else ""
            note = "; ".join(filter(None, [f"fails in a CPU-only build{unless}", note]))
        style = STATE_STYLE[row["state"]]
        table.add_row(
            row["option"], styled((row["state"], style)), row["since"] or "-", row["removed"] or "-", note or ""
        )
    console.print(table)


def version_text() -> str:
    """`trtforge --version`: trtforge, Python and each installed backend (from package metadata)."""
    from trtforge.rules.flavors import installed_backends, trtforge_version

    backends = ", ".join(b.label + (f" ({b.cuda})" if b.cuda else "") for b in installed_backends())
    return "\n".join(
        [
            f"trtforge {trtforge_version()}",
            f"Python {platform.python_version()} ({sys.executable})",
            f"backends: {backends or 'none installed'}",
        ]
    )
